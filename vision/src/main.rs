//! `kyc-vision`: serve the vendor contract, write fixtures, or read one card.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "kyc-vision: an on-premises ID-card reader behind the KYC vendor contract"
)]
struct Cli {
    /// The models directory (default: $KYC_VISION_MODELS, else vision/models).
    #[arg(long, global = true)]
    models: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the vendor contract (POST /v1/idcard/ocr, POST /v1/face/compare, /health, /ready).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9200")]
        listen: std::net::SocketAddr,
        /// An accepted X-Api-Key (repeatable). Default: the seed's ocr-api-key, face-api-key and
        /// liveness-api-key.
        #[arg(long = "api-key", value_name = "KEY")]
        api_keys: Vec<String>,
        /// Inference workers, each with its own models.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Threads per job: ONNX Runtime's per model, and with 2 or more a face comparison
        /// reads its two images at once.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Requests waiting beyond those running; more answer 429 with Retry-After.
        #[arg(long, default_value_t = 4)]
        queue: usize,
        /// Largest image side accepted, checked in the header before decoding.
        #[arg(long, default_value_t = 8192)]
        max_side: u32,
        /// Largest image, in pixels, checked in the header before decoding.
        #[arg(long, default_value_t = 40_000_000)]
        max_pixels: u64,
    },
    /// Read one card image and print the answer as JSON.
    Read {
        image: PathBuf,
        #[arg(long, default_value = "front")]
        side: String,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Also print the recognised rows (text and score) to stderr.
        #[arg(long)]
        rows: bool,
    },
    /// Time face comparison per pair (each portrait against the other and against its own
    /// mirrored crop) and the landmarks of each liveness frame (detection and the 68-point
    /// predictor), on the installed portraits; print the medians as JSON.
    BenchFace {
        /// Rounds over the pairs and frames.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Time the OCR on images (one warm-up read, then each image once) and print, as JSON, the
    /// milliseconds per image and every image's lines: what scripts/vision-bench.sh compares
    /// with the Python reference.
    Bench {
        images: Vec<PathBuf>,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    /// Render cards for generated identities (front, back, degraded fronts, truth.json) and
    /// each portrait's liveness sequences (liveness/<portrait>/<action>_<i>.jpg, still_<i>.jpg); with
    /// --name and --id, the demo files of that person instead (idcard.jpg, idcard_photocopy.jpg,
    /// idcard_back.jpg, face.jpg, face_other.jpg, README.txt: kyc-sandbox's names).
    Fixtures {
        #[arg(long, default_value = "fixtures/vision")]
        out: PathBuf,
        /// The person's name, as the card prints it (with --id).
        #[arg(long, requires = "id", conflicts_with_all = ["count", "seed"])]
        name: Option<String>,
        /// The person's 18-character resident ID number (GB 11643); sex and birth date are
        /// taken from it (with --name).
        #[arg(long = "id", value_name = "ID_NUMBER", requires = "name")]
        id: Option<String>,
        #[arg(long, default_value_t = 50)]
        count: u64,
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        #[arg(long, default_value = kyc_vision::fixtures::render::DEFAULT_FONT)]
        font: PathBuf,
    },
}

/// glibc's allocator keeps what ONNX Runtime and dlib free (its mmap threshold grows after the
/// first large frees, and each thread gets an arena): measured, a server that had read one card
/// stayed at about 510 MiB resident. With a fixed 128 KiB mmap threshold, a 128 KiB trim
/// threshold and two arenas it stays near 200 MiB (peak about 320 MiB). These are set for `serve`
/// by re-executing itself once with them, unless the operator set any `MALLOC_*` variable.
const MALLOC_TUNING: [(&str, &str); 3] = [
    ("MALLOC_ARENA_MAX", "2"),
    ("MALLOC_MMAP_THRESHOLD_", "131072"),
    ("MALLOC_TRIM_THRESHOLD_", "131072"),
];

/// OpenBLAS (dlib's face network) starts a thread per core for each matrix product; the pool's
/// workers and a comparison's two images are already one thread each, so `serve` runs it
/// single-threaded (read when the library loads, hence also by re-executing), unless the operator
/// set it.
const OPENBLAS_THREADS: (&str, &str) = ("OPENBLAS_NUM_THREADS", "1");

fn tune_and_reexec() {
    use std::os::unix::process::CommandExt as _;
    let mut env: Vec<(&str, &str)> = Vec::new();
    if !std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_")) {
        env.extend(MALLOC_TUNING);
    }
    if std::env::var_os(OPENBLAS_THREADS.0).is_none() {
        env.push(OPENBLAS_THREADS);
    }
    if env.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(env)
        .exec();
    // exec only returns on failure: serve untuned rather than not at all
    eprintln!(
        "kyc-vision: could not re-execute with the allocator and BLAS settings ({err}); continuing"
    );
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve { .. }) {
        tune_and_reexec();
    }
    let dir = kyc_vision::models::dir(cli.models.as_deref());
    match cli.command {
        Command::Serve {
            listen,
            api_keys,
            workers,
            threads,
            queue,
            max_side,
            max_pixels,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            if let Err(e) = kyc_vision::models::verify(&dir, &kyc_vision::models::served_files()) {
                // one line naming the file and the command that installs it
                eprintln!("kyc-vision: {e}");
                std::process::exit(2);
            }
            let config = kyc_vision::pool::PoolConfig {
                workers,
                threads,
                queue,
            };
            let started = std::time::Instant::now();
            let pool = match kyc_vision::pool::Pool::start(&dir, config) {
                Ok(pool) => pool,
                Err(e) => {
                    eprintln!("kyc-vision: {e}");
                    std::process::exit(2);
                }
            };
            tracing::info!(?config, ms = started.elapsed().as_millis() as u64, models = %dir.display(), "models loaded");
            let api_keys = if api_keys.is_empty() {
                kyc_sandbox::app::SEED_API_KEYS
                    .iter()
                    .map(|k| (*k).to_owned())
                    .collect()
            } else {
                api_keys
            };
            let state = kyc_vision::http::AppState {
                pool,
                api_keys: std::sync::Arc::new(api_keys),
                limits: kyc_vision::imaging::DecodeLimits {
                    max_side,
                    max_pixels,
                },
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen).await?;
                tracing::info!(addr = %listener.local_addr()?, "kyc-vision listening");
                axum::serve(listener, kyc_vision::http::router(state))
                    .with_graceful_shutdown(async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await
            })?;
        }
        Command::Read {
            image,
            side,
            threads,
            rows,
        } => {
            kyc_vision::models::verify(&dir, &kyc_vision::models::OCR_FILES)?;
            let mut engine = kyc_vision::ocr::Engine::load(&dir, threads)?;
            let bytes = std::fs::read(&image)?;
            let img =
                kyc_vision::imaging::decode(&bytes, kyc_vision::imaging::DecodeLimits::default())?;
            let started = std::time::Instant::now();
            if rows {
                for (text, score) in kyc_vision::card::rows(&engine.read(&img)?) {
                    eprintln!("{score:.3} {text}");
                }
            }
            let answer = if side == "back" {
                serde_json::to_string_pretty(&kyc_vision::reader::back(
                    &mut engine,
                    &img,
                    "2026-12-01",
                )?)?
            } else {
                serde_json::to_string_pretty(&kyc_vision::reader::front(&mut engine, &img)?)?
            };
            eprintln!("read in {} ms", started.elapsed().as_millis());
            println!("{answer}");
        }
        Command::BenchFace { rounds } => {
            let mut engine = kyc_vision::face::FaceEngine::load_threads(&dir, 2)?;
            let photos = kyc_vision::fixtures::photographs(&dir)?;
            let selfie = kyc_vision::fixtures::demo::selfie;
            let pairs = [
                (photos[0].clone(), photos[1].clone()),
                (photos[0].clone(), selfie(&photos[0])),
                (photos[1].clone(), selfie(&photos[1])),
            ];
            let mut frames = Vec::new();
            for p in &photos {
                let rest = engine.frame(p, false)?;
                for a in kyc_vision::liveness::Action::ALL {
                    frames.extend(kyc_vision::fixtures::acting::sequence(
                        p,
                        &rest.landmarks,
                        a,
                    ));
                }
            }
            // The liveness page's own frames (web/liveness.js): 320x240, the portrait scaled into it.
            let camera: Vec<image::RgbImage> = frames
                .iter()
                .map(|f| {
                    let small =
                        image::imageops::resize(f, 240, 240, image::imageops::FilterType::Triangle);
                    let mut canvas =
                        image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]));
                    image::imageops::overlay(&mut canvas, &small, 40, 0);
                    canvas
                })
                .collect();
            engine.compare(&pairs[0].0, &pairs[0].1)?; // warm-up
            let median = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (mut compare, mut landmarks, mut camera_ms) = (Vec::new(), Vec::new(), Vec::new());
            let mut compare2 = Vec::new();
            for _ in 0..rounds.max(1) {
                for (a, b) in &pairs {
                    let started = std::time::Instant::now();
                    engine.compare(a, b)?;
                    compare.push(started.elapsed().as_secs_f64() * 1000.0);
                    // what the server does with --threads 2 (its default): both images at once
                    let started = std::time::Instant::now();
                    let (ea, eb) = engine.embeddings(a, b);
                    kyc_vision::face::distance(&ea?, &eb?);
                    compare2.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                for (f, c) in frames.iter().zip(&camera) {
                    let started = std::time::Instant::now();
                    engine.frame(f, false)?;
                    landmarks.push(started.elapsed().as_secs_f64() * 1000.0);
                    let started = std::time::Instant::now();
                    engine.frame(c, false)?;
                    camera_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
            println!(
                "{}",
                serde_json::json!({
                    "compare_ms": median(compare), "compare_2_threads_ms": median(compare2),
                    "pairs": pairs.len(),
                    "landmarks_ms": median(landmarks), "frames": frames.len(),
                    "landmarks_320x240_ms": median(camera_ms),
                    "frame_size": [photos[0].width(), photos[0].height()],
                })
            );
        }
        Command::Bench { images, threads } => {
            kyc_vision::models::verify(&dir, &kyc_vision::models::OCR_FILES)?;
            let mut engine = kyc_vision::ocr::Engine::load(&dir, threads)?;
            let limits = kyc_vision::imaging::DecodeLimits::default();
            let decoded = images
                .iter()
                .map(|p| Ok(kyc_vision::imaging::decode(&std::fs::read(p)?, limits)?))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if let Some(first) = decoded.first() {
                engine.read(first)?;
            }
            let mut results = Vec::new();
            for (path, img) in images.iter().zip(&decoded) {
                let started = std::time::Instant::now();
                let lines = engine.read(img)?;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
                results.push(serde_json::json!({"image": path, "ms": ms, "lines": texts}));
            }
            println!(
                "{}",
                serde_json::json!({"threads": threads, "results": results})
            );
        }
        Command::Fixtures {
            out,
            name: Some(name),
            id: Some(id),
            font,
            ..
        } => {
            let person = match kyc_vision::fixtures::Identity::for_person(&name, &id) {
                Ok(person) => person,
                Err(e) => {
                    eprintln!("kyc-vision: {e}");
                    std::process::exit(2);
                }
            };
            let font = kyc_vision::fixtures::CardFont::open(&font)?;
            let photos = kyc_vision::fixtures::photographs(&dir)?;
            let demo = kyc_vision::fixtures::demo::demo(&person, &font, &photos[0], &photos[1]);
            for path in demo.write(&out)? {
                println!("{}", path.display());
            }
        }
        Command::Fixtures {
            out,
            count,
            seed,
            font,
            ..
        } => {
            let font = kyc_vision::fixtures::CardFont::open(&font)?;
            let photos = kyc_vision::fixtures::photographs(&dir)?;
            let mut files = kyc_vision::fixtures::write(&out, count, seed, &font, &photos, |n| {
                eprint!("\r{n}/{count} identities");
            })?;
            eprintln!("\nliveness sequences of the {} portraits", photos.len());
            let engine = kyc_vision::face::FaceEngine::load(&dir)?;
            files.extend(kyc_vision::fixtures::acting::write(&out, &engine, &photos)?);
            eprintln!("wrote {} files to {}", files.len(), out.display());
        }
    }
    Ok(())
}
