//! The `kyc-sandbox` binary: it says SANDBOX when it starts, loads a faults file, its
//! `fixtures` subcommand writes the files or explains what is wrong with its input, and
//! `liveness-video` writes a `.y4m` whose stretches pass their actions.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kyc_sandbox::{Action, liveness};

const BIN: &str = env!("CARGO_BIN_EXE_kyc-sandbox");

/// Kills the child (this test's own process) when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_logs_sandbox_at_startup_and_loads_the_faults_file() {
    let dir = tempdir("serve");
    let faults = dir.join("faults.json");
    std::fs::write(&faults, r#"{"face":{"fail_first":3}}"#).expect("write");
    let mut child = Running(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--api-key", "k1"])
            .arg("--faults")
            .arg(&faults)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("listening on"))
    })
    .await
    .expect("reader")
    .expect("a startup line");
    assert!(line.contains("SANDBOX"), "{line}");
    let url = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .map(|a| format!("http://{}", a.trim_end_matches(':')))
        .expect("the address in the startup line");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let faults: serde_json::Value = client
        .get(format!("{url}/sandbox/faults"))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(faults["face"]["fail_first"], 3);
    let seed_key = client
        .post(format!("{url}/v1/face/compare"))
        .header("X-Api-Key", "face-api-key")
        .body("{}")
        .send()
        .await
        .expect("answers");
    assert_eq!(seed_key.status(), 401);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fixtures_writes_the_card_selfies_frames_and_readme() {
    let dir = tempdir("fixtures");
    let out = Command::new(BIN)
        .args([
            "fixtures",
            "--name",
            "王五",
            "--id",
            "320583199512314569",
            "--out",
        ])
        .arg(&dir)
        .args(["--address", "江苏省昆山市前进中路88号"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "idcard.jpg",
        "idcard_photocopy.jpg",
        "face.jpg",
        "face_other.jpg",
        "liveness_1.jpg",
        "liveness_3.jpg",
        "liveness_blink_1.jpg",
        "liveness_open_mouth_4.jpg",
        "liveness_turn_left_2.jpg",
        "liveness_nod_3.jpg",
    ] {
        let bytes = std::fs::read(dir.join(file)).expect(file);
        assert!(bytes.starts_with(&[0xFF, 0xD8, 0xFF]), "{file} is a JPEG");
    }
    let readme = std::fs::read_to_string(dir.join("README.txt")).expect("README.txt");
    for expected in [
        "王五",
        "320583199512314569",
        "1995-12-31",
        "女",
        "江苏省昆山市前进中路88号",
        "SANDBOX",
    ] {
        assert!(readme.contains(expected), "README.txt lacks {expected}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fixtures_explains_an_invalid_id_number_or_empty_name() {
    let dir = tempdir("invalid");
    for (name, id, expected) in [
        ("王五", "12345", "18 characters"),
        ("王五", "320583199512314560", "check digit should be 9"),
        ("王五", "320583199513314569", "not a date"),
        ("  ", "320583199512314569", "name must not be empty"),
    ] {
        let out = Command::new(BIN)
            .args(["fixtures", "--name", name, "--id", id, "--out"])
            .arg(&dir)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
    assert!(!dir.join("idcard.jpg").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn liveness_video_writes_a_y4m_whose_stretches_pass_their_actions() {
    let dir = tempdir("video");
    let path = dir.join("challenge.y4m");
    let out = Command::new(BIN)
        .args([
            "liveness-video",
            "--actions",
            "turn_left,open_mouth",
            "--fps",
            "15",
            "--seconds-per-action",
            "1",
            "--out",
        ])
        .arg(&path)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&path).expect("the video");
    assert!(bytes.starts_with(b"YUV4MPEG2 W320 H240 F15:1 Ip A1:1 C420jpeg\n"));
    let (fps, frames) = kyc_sandbox::y4m::read_y4m(&bytes).expect("a y4m");
    assert_eq!((fps, frames.len()), (15, 30));
    for (stretch, action) in [(0, Action::TurnLeft), (1, Action::OpenMouth)] {
        let frames = &frames[stretch * 15 + 4..stretch * 15 + 8];
        let o = liveness::check(frames, action);
        assert!(o.passed, "{action}: {o:?}");
    }

    let still = dir.join("still.y4m");
    let out = Command::new(BIN)
        .args(["liveness-video", "--still", "--fps", "10", "--out"])
        .arg(&still)
        .output()
        .expect("runs");
    assert!(out.status.success());
    let (_, frames) =
        kyc_sandbox::y4m::read_y4m(&std::fs::read(&still).expect("the video")).expect("a y4m");
    assert_eq!(frames.len(), 30);
    let o = liveness::check(&frames[..5], Action::Blink);
    assert_eq!(o.reason, Some(liveness::Reason::StaticFrames));

    let out = Command::new(BIN)
        .args(["liveness-video", "--actions", "blink,dance", "--out"])
        .arg(dir.join("bad.y4m"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown action"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("kyc-sandbox-test-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
