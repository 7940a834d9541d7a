//! `kyc-vision fixtures --name .. --id ..`, the binary as `scripts/run.sh` runs it: the files the
//! seed's section 3 commands send, read back by the real reader (PP-OCRv4) and compared by the
//! real face engine (dlib); and a number that breaks GB 11643 refused with one line and exit 2.

use std::path::{Path, PathBuf};
use std::process::Command;

use kyc_vision::face::{FaceEngine, THRESHOLD};
use kyc_vision::imaging::{self, DecodeLimits};
use kyc_vision::{models, ocr, reader};

const BIN: &str = env!("CARGO_BIN_EXE_kyc-vision");

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    TempDir(std::env::temp_dir().join(format!(
        "kyc-vision-{tag}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )))
}

fn image(dir: &Path, file: &str) -> image::RgbImage {
    let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    imaging::decode(&bytes, DecodeLimits::default()).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn the_seed_persons_card_reads_back_as_that_name_and_number_and_the_selfie_matches_it() {
    let out = temp_dir("demo");
    let run = Command::new(BIN)
        .args([
            "fixtures",
            "--name",
            "张三",
            "--id",
            "11010519491231002X",
            "--out",
        ])
        .arg(&out.0)
        .output()
        .expect("kyc-vision runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let listed = String::from_utf8_lossy(&run.stdout);
    for file in kyc_vision::fixtures::demo::FILES {
        assert!(out.0.join(file).is_file(), "{file} missing: {listed}");
        assert!(listed.contains(file), "{listed}");
    }

    let dir = models::dir(None);
    models::verify(&dir, &models::OCR_FILES).unwrap_or_else(|e| panic!("{e}"));
    let mut engine = ocr::Engine::load(&dir, 2).expect("OCR models load");
    let card = image(&out.0, "idcard.jpg");
    let front = serde_json::to_value(reader::front(&mut engine, &card).expect("the card reads"))
        .expect("json");
    assert_eq!(front["name"], "张三", "{front}");
    assert_eq!(front["id_number"], "11010519491231002X", "{front}");
    assert_eq!(front["sex"], "女", "{front}");
    assert_eq!(front["birth_date"], "1949-12-31", "{front}");
    assert_eq!(front["ethnicity"], "汉", "{front}");
    let address = front["address"].as_str().unwrap_or_default();
    assert!(address.starts_with("北京市朝阳区"), "{front}");
    assert_eq!(front["reasons"], serde_json::json!([]), "{front}");
    assert_eq!(
        front["warnings"],
        serde_json::json!({"photocopy": false, "screen_reshoot": false, "edited": false, "low_quality": false}),
        "{front}"
    );
    let readme = std::fs::read_to_string(out.0.join("README.txt")).expect("README.txt");
    assert!(readme.contains(address), "{readme}");

    let copy = image(&out.0, "idcard_photocopy.jpg");
    let copy = serde_json::to_value(reader::front(&mut engine, &copy).expect("the copy reads"))
        .expect("json");
    assert_eq!(copy["id_number"], "11010519491231002X", "{copy}");
    assert_eq!(copy["warnings"]["photocopy"], true, "{copy}");

    let back = image(&out.0, "idcard_back.jpg");
    let back = serde_json::to_value(
        reader::back(&mut engine, &back, "2026-12-01").expect("the back reads"),
    )
    .expect("json");
    assert_eq!(back["issuing_authority"], "北京市公安局朝阳分局", "{back}");
    assert_eq!(back["valid_until"], "长期", "{back}");

    let faces = FaceEngine::load(&dir).expect("face models load");
    let same = faces
        .compare(&card, &image(&out.0, "face.jpg"))
        .expect("card vs face.jpg");
    let other = faces
        .compare(&card, &image(&out.0, "face_other.jpg"))
        .expect("card vs face_other.jpg");
    eprintln!(
        "card vs face.jpg {:.4}, card vs face_other.jpg {:.4}",
        same.score, other.score
    );
    assert!(same.score >= THRESHOLD, "{same:?}");
    assert!(other.score < THRESHOLD, "{other:?}");
}

#[test]
fn a_number_that_breaks_gb_11643_is_refused_with_one_line_and_exit_2() {
    let out = temp_dir("refused");
    for (id, says) in [
        ("110105194912310021", "check digit should be X, not 1"),
        ("11010519491331002X", "birth date"),
        ("1101051949", "18 characters"),
    ] {
        let run = Command::new(BIN)
            .args(["fixtures", "--name", "张三", "--id", id, "--out"])
            .arg(&out.0)
            .output()
            .expect("kyc-vision runs");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{id}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{id}: {stderr}");
        assert!(
            stderr.starts_with("kyc-vision: invalid ID number: ") && stderr.contains(says),
            "{id}: {stderr}"
        );
        assert!(!out.0.exists(), "{id}: nothing is written");
    }
    // --name without --id is a usage error, not a half-made set
    let run = Command::new(BIN)
        .args(["fixtures", "--name", "张三", "--out"])
        .arg(&out.0)
        .output()
        .expect("kyc-vision runs");
    assert_eq!(run.status.code(), Some(2));
    assert!(!out.0.exists());
}
