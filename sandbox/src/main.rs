//! The `kyc-sandbox` binary: `serve` (the default) runs the SANDBOX vendor; `fixtures` writes a
//! synthetic person's card, selfies and liveness frames; `liveness-video` writes a `.y4m` of the
//! face performing liveness actions, for a browser's fake camera.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use kyc_sandbox::faults::Faults;
use kyc_sandbox::{Action, Config, Person};

#[derive(Parser)]
#[command(
    name = "kyc-sandbox",
    version,
    about = "SANDBOX stand-in for the KYC vendors (ID-card OCR, face comparison, liveness). Not a real vendor.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the three vendor endpoints and the admin API (the default).
    Serve(ServeArgs),
    /// Write a synthetic person's fixtures: idcard.jpg, idcard_photocopy.jpg, face.jpg,
    /// face_other.jpg, liveness_N.jpg, liveness_<action>_N.jpg and README.txt.
    Fixtures(FixturesArgs),
    /// Write a 320x240 .y4m video of the person's face performing liveness actions in order
    /// (or, with --still, not moving), for Chromium's --use-file-for-fake-video-capture.
    LivenessVideo(LivenessVideoArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// An accepted X-Api-Key (repeatable). Default: the seed's ocr-api-key, face-api-key and
    /// liveness-api-key.
    #[arg(long = "api-key", value_name = "KEY")]
    api_keys: Vec<String>,
    /// Faults to start with, as the JSON of PUT /sandbox/faults.
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
}

#[derive(Args)]
struct FixturesArgs {
    /// The person's name, as the card prints it.
    #[arg(long)]
    name: String,
    /// An 18-character resident ID number (GB 11643, with a valid check digit).
    #[arg(long = "id", value_name = "ID_NUMBER")]
    id: String,
    /// Directory to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// The address on the card.
    #[arg(long, default_value = kyc_sandbox::fixtures::DEFAULT_ADDRESS)]
    address: String,
    /// The ethnicity on the card.
    #[arg(long, default_value = kyc_sandbox::fixtures::DEFAULT_ETHNICITY)]
    ethnicity: String,
}

#[derive(Args)]
struct LivenessVideoArgs {
    /// The actions, in order, comma-separated: blink, open_mouth, nod, shake_head, turn_left
    /// (the user's own left: the face turns towards the image's right), turn_right.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "still",
        conflicts_with = "still"
    )]
    actions: Vec<Action>,
    /// A still video instead: the face at rest, unchanging, like a replayed photo.
    #[arg(long)]
    still: bool,
    /// Seconds of each action (of the whole video with --still).
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    seconds_per_action: f64,
    /// Frames per second (1-60).
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Whose face: the person's name...
    #[arg(long, default_value = "张三")]
    name: String,
    /// ...and ID number (the face is drawn from it, as in the fixtures).
    #[arg(
        long = "id",
        value_name = "ID_NUMBER",
        default_value = "11010519491231002X"
    )]
    id: String,
    /// The .y4m file to write.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Fixtures(args)) => fixtures(&args),
        Some(Command::LivenessVideo(args)) => liveness_video(&args),
        Some(Command::Serve(args)) => serve(args),
        None => serve(cli.serve),
    }
}

fn fixtures(args: &FixturesArgs) -> ExitCode {
    let person = match Person::new(&args.name, &args.id, Some(&args.address))
        .and_then(|p| p.with_ethnicity(&args.ethnicity))
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kyc-sandbox: {e}");
            return ExitCode::from(2);
        }
    };
    let fixtures = kyc_sandbox::fixtures(&person);
    match fixtures.write(&args.out) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            println!(
                "face.jpg scores {:.4} against idcard.jpg, face_other.jpg {:.4} (synthetic SANDBOX fixtures)",
                fixtures.score_face, fixtures.score_other
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kyc-sandbox: cannot write {}: {e}", args.out.display());
            ExitCode::FAILURE
        }
    }
}

fn liveness_video(args: &LivenessVideoArgs) -> ExitCode {
    let person = match Person::new(&args.name, &args.id, None) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kyc-sandbox: {e}");
            return ExitCode::from(2);
        }
    };
    if !(1..=60).contains(&args.fps) {
        eprintln!("kyc-sandbox: --fps must be 1-60, got {}", args.fps);
        return ExitCode::from(2);
    }
    if !(args.seconds_per_action > 0.0 && args.seconds_per_action <= 600.0) {
        eprintln!(
            "kyc-sandbox: --seconds-per-action must be over 0 and at most 600, got {}",
            args.seconds_per_action
        );
        return ExitCode::from(2);
    }
    let written = std::fs::File::create(&args.out).and_then(|file| {
        let mut out = std::io::BufWriter::new(file);
        if args.still {
            kyc_sandbox::still_video(&person, args.fps, args.seconds_per_action, &mut out)
        } else {
            kyc_sandbox::liveness_video(
                &person,
                &args.actions,
                args.fps,
                args.seconds_per_action,
                &mut out,
            )
        }
    });
    if let Err(e) = written {
        eprintln!("kyc-sandbox: cannot write {}: {e}", args.out.display());
        return ExitCode::FAILURE;
    }
    let secs = args.seconds_per_action;
    let plan = if args.still {
        format!("still for {secs} s")
    } else {
        args.actions
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let at = |k: usize| (k as f64 * secs * 1000.0).round() / 1000.0;
                format!("{a} {}-{} s", at(i), at(i + 1))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{}: {}x{} at {} fps, {plan} (SANDBOX synthetic face; Chromium loops the file)",
        args.out.display(),
        kyc_sandbox::acting::WIDTH,
        kyc_sandbox::acting::HEIGHT,
        args.fps
    );
    ExitCode::SUCCESS
}

fn serve(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let mut config = Config::default();
    if !args.api_keys.is_empty() {
        config.api_keys = args.api_keys;
    }
    if let Some(path) = &args.faults {
        match Faults::load(path) {
            Ok(f) => config.faults = f,
            Err(e) => {
                eprintln!("kyc-sandbox: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kyc-sandbox: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("kyc-sandbox: cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        let addr = listener
            .local_addr()
            .map_or_else(|_| args.listen.to_string(), |a| a.to_string());
        tracing::warn!(
            "kyc-sandbox listening on http://{addr}: this is a SANDBOX, not a real vendor; its OCR, face and liveness answers are synthetic"
        );
        match kyc_sandbox::serve(listener, config, shutdown_signal()).await {
            Ok(()) => {
                tracing::info!("kyc-sandbox stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("kyc-sandbox: server failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
