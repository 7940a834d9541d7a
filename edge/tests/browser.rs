//! The liveness page (`web/`, built by `scripts/build-web.sh`) in headless Chromium, through the
//! edge in front of the real service and the vendor sandbox. Debian's `chromium` and
//! `chromium-driver` (`scripts/install-browser.sh`) play a `.y4m` the test writes as the camera:
//! a video performing the session's actions passes; a still image fails, and so does a video of
//! an action not asked for; a dark one is never sent. Screenshots of the final page go to
//! `target/browser/`. The seed's section 3.4 snippet runs in
//! the same browser against a ticket URL.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde_json::{Value, json};
use support::common;
use support::{CLIENT, Stack};

/// How long the page may take to reach a verdict: up to four actions of about 2.5 s each, plus
/// Chromium starting, with room for a loaded machine.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(90);

/// The seed's section 3.4 client, verbatim; the test points its URL at a ticket.
const SEED_SNIPPET: &str = r"// JavaScript客户端示例
const ws = new WebSocket('ws://localhost:8000/api/v1/kyc/liveness/ws');

ws.onopen = function() {
    console.log('WebSocket连接已建立');
    
    // 发送检测请求
    ws.send(JSON.stringify({
        action: 'blink'
    }));
};

ws.onmessage = function(event) {
    const result = JSON.parse(event.data);
    console.log('检测结果:', result);
    
    if (result.success) {
        console.log('活体检测通过');
    } else {
        console.log('活体检测失败:', result.error);
    }
};

ws.onerror = function(error) {
    console.error('WebSocket错误:', error);
};

ws.onclose = function() {
    console.log('WebSocket连接已关闭');
};
";

// --- the browser ---------------------------------------------------------------------------------

fn in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A chromedriver process of this test, on a free port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
}

impl Driver {
    async fn start() -> Self {
        let missing =
            "run `bash scripts/install-browser.sh` (Debian's chromium and chromium-driver)";
        let chromium = in_path("chromium").unwrap_or_else(|| {
            panic!("the browser test needs Chromium, not found in PATH: {missing}")
        });
        let driver = in_path("chromedriver").unwrap_or_else(|| {
            panic!("the browser test needs chromedriver, not found in PATH: {missing}")
        });
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver.display()));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = http
                .get(format!("{url}/status"))
                .send()
                .await
                .ok()
                .map(reqwest::Response::json::<Value>);
            if let Some(status) = ready
                && let Ok(status) = status.await
                && status["value"]["ready"] == true
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not become ready on {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            child,
            url,
            chromium,
        }
    }

    /// A new headless Chromium whose camera plays `video` (a `.y4m`), if given.
    async fn browser(&self, video: Option<&Path>) -> fantoccini::Client {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-gpu".to_owned(),
            "--window-size=900,1000".to_owned(),
            "--use-fake-ui-for-media-stream".to_owned(),
        ];
        if let Some(video) = video {
            args.push("--use-fake-device-for-media-stream".to_owned());
            args.push(format!(
                "--use-file-for-fake-video-capture={}",
                video.display()
            ));
        }
        let mut caps = fantoccini::wd::Capabilities::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({"binary": self.chromium, "args": args}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        fantoccini::ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("a Chromium session through {}: {e}", self.url))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` (a function body) in the page and returns its value.
async fn js(browser: &fantoccini::Client, script: &str) -> Value {
    browser
        .execute(script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// The page's state as the user sees it.
async fn page_state(browser: &fantoccini::Client) -> Value {
    js(
        browser,
        r"const text = (id) => document.getElementById(id).textContent;
        return {
          status: text('status'), challenge: text('challenge'), quality: text('quality'),
          quality_ok: document.getElementById('quality').dataset.ok,
          verdict: text('verdict'), verdict_state: document.getElementById('verdict').dataset.state,
          results: [...document.querySelectorAll('#results li')]
            .map((li) => ({text: li.textContent, success: li.dataset.success === 'true'})),
          log: text('log'),
        };",
    )
    .await
}

fn screenshot_path(name: &str) -> PathBuf {
    let dir = common::repo_root().join("target/browser");
    std::fs::create_dir_all(&dir).expect("target/browser");
    dir.join(name)
}

async fn screenshot(browser: &fantoccini::Client, name: &str) -> PathBuf {
    let png = browser.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = screenshot_path(name);
    std::fs::write(&path, png).expect("write the screenshot");
    path
}

/// Waits until `#verdict` leaves `pending`, then saves a screenshot as `shot`.
async fn final_state(browser: &fantoccini::Client, shot: &str) -> Value {
    let started = Instant::now();
    loop {
        let state = page_state(browser).await;
        if state["verdict_state"] != "pending" {
            screenshot(browser, shot).await;
            return state;
        }
        if started.elapsed() > VERDICT_TIMEOUT {
            let path = screenshot(browser, shot).await;
            panic!(
                "no verdict within {VERDICT_TIMEOUT:?} (screenshot {}): {state:#}",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// --- the camera ----------------------------------------------------------------------------------

/// A temporary file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The camera's frame rate; the sandbox's face alternates rest and acted poses every 0.1 s.
const CAMERA_FPS: u32 = 30;
/// How long each action lasts in the video. Chromium loops the file and nothing ties the page's
/// two seconds of frames per action to a point in it, so the whole challenge (four actions at
/// most) takes less than those two seconds: whenever the page starts an action, its frames hold
/// that action acted out, as a user acts when the prompt shows.
const SECONDS_PER_ACTION: f64 = 0.4;

fn person() -> kyc_sandbox::Person {
    kyc_sandbox::Person::new("张三", "11010519491231002X", None).expect("valid person")
}

fn parse_actions(actions: &[String]) -> Vec<kyc_sandbox::Action> {
    actions
        .iter()
        .map(|a| a.parse().expect("a sandbox action"))
        .collect()
}

/// The sandbox's face performing `actions` in order, as frames.
fn challenge_frames(actions: &[String]) -> Vec<RgbImage> {
    kyc_sandbox::acting::liveness_video_frames(
        &person(),
        &parse_actions(actions),
        CAMERA_FPS,
        SECONDS_PER_ACTION,
    )
    .collect()
}

/// `frames` as a `.y4m` for `--use-file-for-fake-video-capture`.
fn y4m(frames: Vec<RgbImage>) -> TempFile {
    let path = std::env::temp_dir().join(format!("kyc-camera-{}.y4m", uuid::Uuid::new_v4()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create the y4m"));
    kyc_sandbox::write_y4m(frames, CAMERA_FPS, &mut out).expect("write the y4m");
    TempFile(path)
}

// --- the service ---------------------------------------------------------------------------------

/// `POST /api/v1/kyc/liveness/sessions` through the edge: the session with its ticket and challenge.
async fn create_session(s: &Stack, token: &str) -> Value {
    let r = s
        .http
        .post(s.url("/api/v1/kyc/liveness/sessions"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .expect("session request");
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert_eq!(status, 201, "{body}");
    body
}

fn actions(session: &Value) -> Vec<String> {
    session["challenge"]["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| a.as_str().expect("action").to_owned())
        .collect()
}

fn page_url(s: &Stack, session: &Value) -> String {
    let ticket = session["ticket"].as_str().expect("ticket");
    s.url(&format!("/demo/liveness?ticket={ticket}"))
}

/// Runs the page for a fresh session with the camera playing `video(actions)`.
async fn run_page(
    s: &Stack,
    driver: &Driver,
    token: &str,
    video: impl FnOnce(&[String]) -> Vec<RgbImage>,
    shot: &str,
) -> (Vec<String>, Value) {
    let session = create_session(s, token).await;
    let actions = actions(&session);
    let file = y4m(video(&actions));
    let browser = driver.browser(Some(&file.0)).await;
    browser
        .goto(&page_url(s, &session))
        .await
        .expect("open the page");
    let state = final_state(&browser, shot).await;
    let _ = browser.close().await;
    (actions, state)
}

#[tokio::test]
async fn the_page_passes_a_performed_challenge_and_fails_a_still_image_through_the_edge() {
    let s = Stack::start().await;
    let driver = Driver::start().await;
    let token = s.token(CLIENT.0, CLIENT.1).await;

    // The page and its wasm are served through the edge's demo route.
    let r = s.get("/demo/quality_bg.wasm", None).await;
    assert_eq!(r.status(), 200, "run `bash scripts/build-web.sh` first");
    assert_eq!(
        support::header(&r, "content-type"),
        Some("application/wasm")
    );
    // Only the page's own files: anything else under /demo/ is the service's JSON 404.
    let r = s.get("/demo/Cargo.toml", None).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"]["code"],
        "ROUTE_NOT_FOUND"
    );

    // A face performing each action in turn: every action passes, and so does the session.
    let (actions, state) =
        run_page(&s, &driver, &token, challenge_frames, "liveness-pass.png").await;
    assert_eq!(state["verdict_state"], "passed", "{state:#}");
    assert!(
        state["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("passed")),
        "{state:#}"
    );
    let results = state["results"].as_array().expect("results");
    assert_eq!(results.len(), actions.len(), "{state:#}");
    assert!(results.iter().all(|r| r["success"] == true), "{state:#}");
    assert_eq!(state["quality_ok"], "true", "{state:#}");

    // The same face, frozen: a replayed photo fails on the first action.
    let (_, state) = run_page(
        &s,
        &driver,
        &token,
        |_| kyc_sandbox::acting::still_video_frames(&person(), CAMERA_FPS, 2.0).collect(),
        "liveness-fail.png",
    )
    .await;
    assert_eq!(state["verdict_state"], "failed", "{state:#}");
    assert!(
        state["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("failed")),
        "{state:#}"
    );
    let results = state["results"].as_array().expect("results");
    assert_eq!(
        results.len(),
        1,
        "the session ends at the first failed action: {state:#}"
    );
    assert_eq!(results[0]["success"], false, "{state:#}");

    // A face acting out an action the challenge does not ask for: the first action is not seen.
    let (actions, state) = run_page(
        &s,
        &driver,
        &token,
        |actions| {
            let other = ["blink", "open_mouth", "turn_left", "turn_right", "nod"]
                .into_iter()
                .find(|a| !actions.iter().any(|asked| asked == a))
                .expect("a challenge asks for four actions at most");
            challenge_frames(&[other.to_owned()])
        },
        "liveness-wrong-action.png",
    )
    .await;
    assert_eq!(state["verdict_state"], "failed", "{state:#}");
    let results = state["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{state:#}");
    assert!(
        results[0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("{}: failed, ACTION_NOT_DETECTED", actions[0]))),
        "{state:#}"
    );

    // A camera in the dark: no frame is good enough to send, and the page says why; the action
    // then ends with too few frames.
    let (_, state) = run_page(
        &s,
        &driver,
        &token,
        |actions| {
            challenge_frames(actions)
                .into_iter()
                .map(|mut f| {
                    f.pixels_mut().for_each(|p| p.0 = p.0.map(|c| c / 10));
                    f
                })
                .collect()
        },
        "liveness-dark.png",
    )
    .await;
    assert_eq!(state["quality_ok"], "false", "{state:#}");
    assert!(
        state["quality"]
            .as_str()
            .is_some_and(|q| q.contains("too dark") && q.contains("0 sent")),
        "{state:#}"
    );
    assert_eq!(state["verdict_state"], "error", "{state:#}");
    assert!(
        state["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("NOT_ENOUGH_FRAMES")),
        "{state:#}"
    );
}

#[tokio::test]
async fn the_seed_snippet_gets_a_well_formed_reply_to_blink() {
    let s = Stack::start().await;
    let driver = Driver::start().await;
    let token = s.token(CLIENT.0, CLIENT.1).await;
    let session = create_session(&s, &token).await;
    let ticket_url = format!(
        "ws://{}{}",
        s.edge.proxy_addr,
        session["ws_url"].as_str().expect("ws_url")
    );
    let snippet = SEED_SNIPPET.replace("ws://localhost:8000/api/v1/kyc/liveness/ws", &ticket_url);
    assert_ne!(snippet, SEED_SNIPPET, "the snippet's URL is replaced");

    // On the demo page's origin without a ticket: the page waits for a token and opens nothing.
    let browser = driver.browser(None).await;
    browser
        .goto(&s.url("/demo/liveness"))
        .await
        .expect("open the page");
    js(
        &browser,
        &format!(
            "window.__msgs = []; window.__logs = [];
            const log = console.log.bind(console);
            console.log = (...args) => {{
              window.__logs.push(args.map((a) => typeof a === 'string' ? a : JSON.stringify(a)).join(' '));
              log(...args);
            }};
            {snippet}
            ws.addEventListener('message', (event) => window.__msgs.push(event.data));
            return true;"
        ),
    )
    .await;

    let started = Instant::now();
    let msgs = loop {
        let msgs = js(&browser, "return window.__msgs;").await;
        if msgs.as_array().is_some_and(|m| m.len() >= 2) {
            break msgs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no reply to the snippet's blink: {msgs} {}",
            js(&browser, "return window.__logs;").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let msgs: Vec<Value> = msgs
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| serde_json::from_str(m.as_str().expect("a text message")).expect("JSON"))
        .collect();
    for m in &msgs {
        assert!(m["success"].is_boolean(), "{m}");
        assert!(m.get("error").is_some(), "{m}");
    }
    assert_eq!(msgs[0]["type"], "challenge", "{msgs:?}");
    // The reply to blink: started when blink is the challenge's first action, refused otherwise.
    let reply = &msgs[1];
    if actions(&session)[0] == "blink" {
        assert_eq!(reply["type"], "action_started", "{reply}");
        assert_eq!(reply["success"], true, "{reply}");
        assert!(reply["error"].is_null(), "{reply}");
    } else {
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["success"], false, "{reply}");
        assert_eq!(reply["error"]["code"], "UNEXPECTED_ACTION", "{reply}");
    }
    // The snippet's own handler ran on it.
    let logs = js(&browser, "return window.__logs;").await.to_string();
    assert!(
        logs.contains("WebSocket连接已建立") && logs.contains("检测结果:"),
        "{logs}"
    );
    let _ = browser.close().await;
}
