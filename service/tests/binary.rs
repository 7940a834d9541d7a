//! The `kyc-service` binary as an operator runs it: config errors, the `migrate` and `clients`
//! subcommands, the log file (masked), and graceful shutdown on SIGTERM.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{create_database, drop_database, repo_root, seed_config};
use serde_json::{Value, json};

fn kyc_service() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kyc-service"));
    c.current_dir(repo_root()).env_remove("RUST_LOG");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("KYC__")) {
        c.env_remove(k);
    }
    c
}

#[test]
fn an_invalid_value_stops_start_up_with_one_line_naming_the_key() {
    let out = kyc_service()
        .env("KYC__DATABASE__PORT", "not-a-port")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("database.port"), "{stderr}");

    let out = kyc_service()
        .env("KYC__GIN_MODE", "release")
        .output()
        .expect("runs");
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("security.jwt_secret") && stderr.contains("placeholder"),
        "{stderr}"
    );
}

#[test]
fn a_missing_key_is_named() {
    let seed = std::fs::read_to_string(seed_config()).expect("seed");
    let without_host = seed.replacen("  host: localhost\n", "", 1);
    assert_ne!(seed, without_host);
    let dir = std::env::temp_dir().join(format!("kyc-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("config.yaml");
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(without_host.as_bytes()))
        .expect("write");
    let out = kyc_service()
        .arg("--config")
        .arg(&file)
        .output()
        .expect("runs");
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr.trim(),
        "kyc-service: invalid configuration: database.host: is required but missing"
    );
    let out = kyc_service()
        .arg("--config")
        .arg(dir.join("absent.yaml"))
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    std::fs::remove_dir_all(dir).expect("cleanup");
}

#[tokio::test]
async fn migrate_and_clients_subcommands_manage_the_database() {
    let db = create_database().await;
    let run = |args: &[&str]| {
        let out = kyc_service()
            .args(args)
            .env("KYC__DATABASE__DBNAME", &db)
            .output()
            .expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, _) = run(&["migrate"]);
    let latest = kyc_service::store::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .expect("migrations exist");
    assert!(
        ok && stdout.contains(&format!("schema version {latest}")),
        "{stdout}"
    );
    let (ok, stdout, stderr) = run(&[
        "clients",
        "create",
        "--id",
        "bank-app",
        "--scopes",
        "kyc:read kyc:pii",
        "--name",
        "Bank",
    ]);
    assert!(ok, "{stderr}");
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("secret printed once")
        .to_owned();
    let (ok, _, stderr) = run(&["clients", "create", "--id", "bank-app"]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    let (ok, _, stderr) = run(&["clients", "create", "--id", "x", "--scopes", "root"]);
    assert!(!ok && stderr.contains("unknown scope"), "{stderr}");
    let (_, stdout, _) = run(&["clients", "list"]);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("bank-app"))
        .expect("listed");
    assert!(
        line.contains("kyc:read kyc:pii") && line.contains("active") && !stdout.contains(&secret),
        "{stdout}"
    );

    // The created client can get a token from a running app on the same database.
    let settings = common::settings_with(&[("KYC__DATABASE__DBNAME", db.clone())]);
    let state = kyc_service::AppState::new(settings).expect("state");
    let tokens = state.tokens.clone();
    let got = kyc_service::auth::oauth::token(
        &state.db,
        &tokens,
        kyc_service::auth::oauth::TokenRequest {
            grant_type: Some("client_credentials".into()),
            client_id: Some("bank-app".into()),
            client_secret: Some(secret.clone()),
            ..Default::default()
        },
        None,
    )
    .await
    .expect("token for the new client");
    assert_eq!(got.0.scope, "kyc:read kyc:pii");

    let (ok, stdout, _) = run(&["clients", "disable", "--id", "bank-app"]);
    assert!(ok && stdout.contains("disabled"), "{stdout}");
    let (_, stdout, _) = run(&["clients", "list"]);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("bank-app") && l.contains("disabled")),
        "{stdout}"
    );
    let (ok, _, stderr) = run(&["clients", "disable", "--id", "nobody"]);
    assert!(!ok && stderr.contains("no client"), "{stderr}");
    state.db.close().await;
    drop_database(db);
}

#[tokio::test]
async fn the_log_file_masks_pii_and_sigterm_shuts_down_cleanly() {
    let db = create_database().await;
    let logs = std::env::temp_dir().join(format!("kyc-logs-{}", uuid::Uuid::new_v4()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = kyc_service()
        .env("KYC__DATABASE__DBNAME", &db)
        .env("KYC__HOST", "127.0.0.1")
        .env("KYC__PORT", port.to_string())
        .env("KYC__LOG__DIR", &logs)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/health")).send().await.is_err() {
        assert!(Instant::now() < deadline, "service did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token: Value = http
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({"grant_type":"client_credentials","client_id":"kyc-client","client_secret":"kyc-client-secret"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = token["access_token"].as_str().expect("token");
    // Requests whose path, query and headers carry an ID number and a phone number.
    let r = http
        .get(format!(
            "{base}/api/v1/kyc/status/11010519491231002X?phone=13800138000"
        ))
        .bearer_auth(token)
        .header("x-request-id", "13900139000")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 404);
    http.get(format!("{base}/api/v1/kyc/status/440524188001010014"))
        .send()
        .await
        .expect("request");

    let started = Instant::now();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = child.wait().expect("exits");
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let log = std::fs::read_to_string(logs.join("kyc-service.log")).expect("log file written");
    assert!(log.contains("110105********002X"), "{log}");
    assert!(log.contains("440524********0014"), "{log}");
    assert!(log.contains("139****9000"), "{log}");
    for plain in [
        "11010519491231002X",
        "440524188001010014",
        "13800138000",
        "13900139000",
        "kyc-client-secret",
    ] {
        assert!(!log.contains(plain), "{plain} in log:\n{log}");
    }
    for line in log
        .lines()
        .filter(|l| l.contains("path=/api/v1/kyc/status"))
    {
        assert!(
            line.contains("INFO") && line.contains("request_id=") && line.contains("status="),
            "{line}"
        );
    }
    assert!(log.contains("shutting down"), "{log}");
    std::fs::remove_dir_all(logs).expect("cleanup");
    drop_database(db);
}

#[tokio::test]
async fn a_request_cut_off_by_kill_9_reaches_a_terminal_status_after_restart() {
    let sandbox = common::sandbox::Sandbox::start().await;
    sandbox.faults(json!({"ocr": {"latency_ms": 30_000}})).await;
    let logs = std::env::temp_dir().join(format!("kyc-kill-logs-{}", uuid::Uuid::new_v4()));
    let db = create_database().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let start = || {
        kyc_service()
            .env("KYC__DATABASE__DBNAME", &db)
            .env("KYC__HOST", "127.0.0.1")
            .env("KYC__PORT", port.to_string())
            .env("KYC__LOG__DIR", &logs)
            .env("KYC__HTTP__REQUEST_TIMEOUT", "1s")
            .env("KYC__THIRD_PARTY__OCR_SERVICE__URL", &sandbox.url)
            .env("KYC__THIRD_PARTY__FACE_SERVICE__URL", &sandbox.url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts")
    };
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let wait_up = || async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/health")).send().await.is_err() {
            assert!(Instant::now() < deadline, "service did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut child = start();
    wait_up().await;
    let token: Value = http
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({"grant_type":"client_credentials","client_id":"kyc-client","client_secret":"kyc-client-secret"}))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = token["access_token"].as_str().expect("token").to_owned();
    let form = reqwest::multipart::Form::new()
        .part(
            "idcard_image",
            reqwest::multipart::Part::bytes(sandbox.fixture("idcard.jpg")).file_name("a.jpg"),
        )
        .part(
            "face_image",
            reqwest::multipart::Part::bytes(sandbox.fixture("face.jpg")).file_name("b.jpg"),
        )
        .text("name", "张三")
        .text("idcard", "11010519491231002X")
        .text("phone", "13800138000");
    // The request is accepted (its row is written) and then the process dies under it.
    let pending = tokio::spawn(
        http.post(format!("{base}/api/v1/kyc/verify"))
            .bearer_auth(&token)
            .multipart(form)
            .send(),
    );
    let row = async {
        loop {
            let settings = common::settings_with(&[("KYC__DATABASE__DBNAME", db.clone())]);
            let pool = kyc_service::store::pool(&settings.database, Duration::from_secs(5));
            let found: Option<(uuid::Uuid, String)> =
                sqlx::query_as("SELECT id, status FROM kyc_requests LIMIT 1")
                    .fetch_optional(&pool)
                    .await
                    .expect("select");
            pool.close().await;
            if let Some(found) = found {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (id, status) = tokio::time::timeout(Duration::from_secs(10), row)
        .await
        .expect("the request was recorded");
    assert_eq!(status, "processing");
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .expect("kill");
    let _ = child.wait();
    let _ = pending.await;

    let mut child = start();
    wait_up().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let body: Value = http
            .get(format!("{base}/api/v1/kyc/status/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        if body["status"] != "processing" {
            break body;
        }
        assert!(Instant::now() < deadline, "still processing: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(body["status"], "error");
    assert_eq!(body["reasons"], json!(["INTERRUPTED"]));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let _ = child.wait();
    drop_database(db);
}
