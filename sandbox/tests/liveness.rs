//! Liveness over HTTP: frames that perform the asked action pass; frames that move otherwise fail
//! with ACTION_NOT_DETECTED, and a replayed still (identical frames) with STATIC_FRAMES.

mod common;

use common::{Sandbox, b64, error};
use kyc_sandbox::{Action, Person, fixtures};
use serde_json::{Value, json};

async fn check(sandbox: &Sandbox, frames: &[&[u8]]) -> reqwest::Response {
    check_action(sandbox, "blink", frames).await
}

async fn check_action(sandbox: &Sandbox, action: &str, frames: &[&[u8]]) -> reqwest::Response {
    let frames: Vec<String> = frames.iter().map(|f| b64(f)).collect();
    sandbox
        .post(
            "/v1/liveness/check",
            &json!({"action": action, "frames": frames}),
        )
        .await
}

#[tokio::test]
async fn each_action_passes_on_frames_performing_it_and_fails_on_a_blink() {
    let sandbox = Sandbox::start().await;
    let f = fixtures(&Person::new("李四", "110101199003074514", None).expect("valid"));
    let blink: Vec<&[u8]> = f.liveness.iter().map(Vec::as_slice).collect();
    for (action, frames) in &f.liveness_actions {
        let frames: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let live: Value = check_action(&sandbox, action.as_str(), &frames)
            .await
            .json()
            .await
            .expect("JSON");
        assert_eq!(live["passed"], true, "{action}: {live}");
        assert_eq!(live["reason"], Value::Null);
        assert!(live["score"].as_f64().expect("score") >= 0.5);
        if *action == Action::Blink {
            continue;
        }
        let wrong: Value = check_action(&sandbox, action.as_str(), &blink)
            .await
            .json()
            .await
            .expect("JSON");
        assert_eq!(wrong["passed"], false, "blink frames for {action}: {wrong}");
        assert_eq!(wrong["reason"], "ACTION_NOT_DETECTED");
        assert!(wrong["score"].as_f64().expect("score") < 0.5);
    }
}

#[tokio::test]
async fn frames_that_blink_pass_and_identical_frames_fail_as_static() {
    let sandbox = Sandbox::start().await;
    let f = fixtures(&Person::new("张三", "11010519491231002X", None).expect("valid"));
    let frames: Vec<&[u8]> = f.liveness.iter().map(Vec::as_slice).collect();
    let live: Value = check(&sandbox, &frames).await.json().await.expect("JSON");
    assert_eq!(live["passed"], true, "{live}");
    assert_eq!(live["reason"], Value::Null);
    assert!(live["score"].as_f64().expect("score") > 0.5);

    let still = f.liveness[0].as_slice();
    let replay: Value = check(&sandbox, &[still, still, still])
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(replay["passed"], false, "{replay}");
    assert_eq!(replay["reason"], "STATIC_FRAMES");
    assert!(replay["score"].as_f64().expect("score") < 0.5);
}

#[tokio::test]
async fn a_frame_count_outside_2_to_30_or_an_unknown_action_is_bad_request() {
    let sandbox = Sandbox::start().await;
    let frame = common::png(image::RgbImage::new(8, 8));
    assert_eq!(
        error(check(&sandbox, &[&frame]).await).await,
        (400, "BAD_REQUEST".into())
    );
    let many = vec![frame.as_slice(); 31];
    assert_eq!(
        error(check(&sandbox, &many).await).await,
        (400, "BAD_REQUEST".into())
    );
    let dance = sandbox
        .post(
            "/v1/liveness/check",
            &json!({"action": "dance", "frames": [b64(&frame), b64(&frame)]}),
        )
        .await;
    assert_eq!(error(dance).await, (400, "BAD_REQUEST".into()));
    let bad_frame = sandbox
        .post(
            "/v1/liveness/check",
            &json!({"action": "nod", "frames": [b64(&frame), b64(b"nope")]}),
        )
        .await;
    assert_eq!(error(bad_frame).await, (400, "INVALID_IMAGE".into()));
}
