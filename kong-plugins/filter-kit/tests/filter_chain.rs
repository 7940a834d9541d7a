//! The four policies wired the way the proxy-wasm filters use them (kyc_jwt → kyc_rate_limit →
//! kyc_idempotency → upstream → kyc_pii_mask), against a stand-in for Kong's shared data with
//! ngx_wasm_module's semantics: a missing key reads as cas 0, a write must carry the current cas
//! (0 = "only if absent"), each write bumps it, and a key outside a declared zone traps.

use std::collections::HashMap;

use filter_kit::config::{IdempotencyConfig, JwtConfig, MaskConfig, RateLimitConfig};
use filter_kit::idempotency::{
    self, Fingerprint, IdempotencyKey, RequestDecision, ResponseDecision,
};
use filter_kit::jwt::{self, Identity};
use filter_kit::mask::{self, MaskOutcome};
use filter_kit::{ErrorReply, gcra};

const SECRET: &str = "your-secret-key-here-must-be-32-bytes-long";
const NOW: u64 = 1_764_000_000;

/// `nginx_wasm_shm_kv_ratelimit` and `nginx_wasm_shm_kv_idem` in kong.conf.
const DECLARED_ZONES: [&str; 2] = [gcra::ZONE, idempotency::ZONE];

#[derive(Default)]
struct SharedData {
    entries: HashMap<String, (Vec<u8>, u32)>,
}

#[derive(Debug, PartialEq)]
struct CasMismatch;

impl SharedData {
    fn check_zone(key: &str) {
        let zone = key.split_once('/').map(|(zone, _)| zone);
        assert!(
            zone.is_some_and(|z| DECLARED_ZONES.contains(&z)),
            "the host would trap: no shm_kv zone for {key}"
        );
    }

    fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        Self::check_zone(key);
        match self.entries.get(key) {
            Some((value, cas)) => (Some(value.clone()), *cas),
            None => (None, 0),
        }
    }

    fn set(&mut self, key: &str, value: Option<&[u8]>, cas: u32) -> Result<(), CasMismatch> {
        Self::check_zone(key);
        let current = self.entries.get(key).map_or(0, |(_, cas)| *cas);
        if cas != current {
            return Err(CasMismatch);
        }
        match value {
            Some(v) => {
                self.entries
                    .insert(key.to_owned(), (v.to_vec(), current + 1));
            }
            None => {
                self.entries.remove(key);
            }
        }
        Ok(())
    }
}

fn hs256_token(claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.kid = Some("hs256-0123456789abcdef".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("minting works")
}

fn access_token(scope: &str) -> String {
    hs256_token(&serde_json::json!({
        "iss": "kyc-service", "aud": "kyc-api", "sub": "kyc-client", "client_id": "kyc-client",
        "exp": NOW + 86_400, "iat": NOW, "nbf": NOW, "jti": "0193a5b2", "scope": scope,
    }))
}

type Headers = Vec<(&'static str, String)>;

/// kyc_rate_limit's request-headers step: read, decide, CAS-write, retry on a lost race.
fn rate_limit(
    shm: &mut SharedData,
    cfg: &RateLimitConfig,
    identity: Option<&Identity>,
    now_us: u64,
) -> Result<Headers, (ErrorReply, Headers)> {
    let key = gcra::key(
        "route-verify",
        identity.map(|i| i.client_id.as_str()),
        "10.0.0.7",
    );
    for _ in 0..10 {
        let (bytes, cas) = shm.get(&key);
        let d = gcra::decide(
            bytes.as_deref().and_then(gcra::decode_state),
            now_us,
            cfg.rate_per_sec,
            cfg.burst,
        );
        let headers = gcra::headers(cfg, &d);
        match d.new_tat {
            None => return Err((gcra::reply(&d), headers)),
            Some(tat) => {
                if shm.set(&key, Some(&gcra::encode_state(tat)), cas).is_ok() {
                    return Ok(headers);
                }
            }
        }
    }
    panic!("CAS never settled");
}

/// kyc_idempotency's request-body step, with the same retry on a lost race.
fn claim(
    shm: &mut SharedData,
    cfg: &IdempotencyConfig,
    key: &str,
    fp: &Fingerprint,
    now: u64,
) -> RequestDecision {
    loop {
        let (bytes, cas) = shm.get(key);
        let d = idempotency::on_request(cfg, bytes.as_deref(), fp, now);
        match &d {
            RequestDecision::Proceed { record_to_write } => {
                if shm.set(key, Some(record_to_write), cas).is_ok() {
                    return d;
                }
            }
            _ => return d,
        }
    }
}

/// kyc_idempotency's response step.
fn finish(shm: &mut SharedData, decision: ResponseDecision, key: &str) {
    let (_, cas) = shm.get(key);
    let value = match &decision {
        ResponseDecision::Store(bytes) => Some(bytes.as_slice()),
        ResponseDecision::Release => None,
    };
    shm.set(key, value, cas)
        .expect("no one else writes an in-flight key");
}

#[test]
fn a_verified_client_is_limited_made_idempotent_and_masked() {
    let jwt_cfg = JwtConfig::from_json(
        format!(
            r#"{{"secret":"{SECRET}","issuer":"kyc-service","audience":"kyc-api","required_scopes":["kyc:write"]}}"#
        )
        .as_bytes(),
    )
    .expect("valid jwt config");
    let rl_cfg = RateLimitConfig::from_json(br#"{"rate_per_sec":1,"burst":2}"#).expect("valid");
    let idem_cfg = IdempotencyConfig::from_json(br#"{"required":true}"#).expect("valid");
    let mask_cfg = MaskConfig::from_json(b"").expect("defaults");
    let mut shm = SharedData::default();
    let mut cache = jwt::TokenCache::new(64);
    let mut kong_ctx_shared: HashMap<&str, String> = HashMap::new();

    // kyc_jwt
    let authorization = format!("Bearer {}", access_token("kyc:read kyc:write"));
    let identity = cache
        .authenticate(&jwt_cfg, Some(&authorization), None, NOW)
        .expect("kyc-service's token is accepted");
    kong_ctx_shared.insert(
        "kyc_identity",
        serde_json::to_string(&identity).expect("json"),
    );
    let identity: Identity =
        serde_json::from_str(&kong_ctx_shared["kyc_identity"]).expect("the next filter reads it");

    // kyc_rate_limit: a burst of 2, then a 429 with Retry-After.
    let now_us = NOW * 1_000_000;
    assert!(rate_limit(&mut shm, &rl_cfg, Some(&identity), now_us).is_ok());
    let headers =
        rate_limit(&mut shm, &rl_cfg, Some(&identity), now_us).expect("second of the burst");
    assert!(
        headers.contains(&("ratelimit", "\"edge\";r=0;t=2".to_owned())),
        "{headers:?}"
    );
    let (reply, headers) = rate_limit(&mut shm, &rl_cfg, Some(&identity), now_us).expect_err("429");
    assert_eq!((reply.status, reply.code), (429, "RATE_LIMITED"));
    assert!(headers.contains(&("retry-after", "1".to_owned())));
    assert!(
        shm.entries
            .contains_key("ratelimit/route-verify/client/kyc-client")
    );

    // kyc_idempotency: the first request claims the key, a parallel retry gets 409.
    let key = IdempotencyKey::parse(Some("8e03978e-40d5-43e8-bc93-6894a57f9324")).expect("valid");
    let store_key = idempotency::storage_key(&identity.client_id, &key);
    let body = r#"{"name":"张三","idcard":"11010519491231002X","phone":"13800138000"}"#.as_bytes();
    let fp = Fingerprint::new(
        &store_key,
        "POST",
        "/api/v1/kyc/verify",
        Some("application/json"),
        body,
    );
    assert!(matches!(
        claim(&mut shm, &idem_cfg, &store_key, &fp, NOW),
        RequestDecision::Proceed { .. }
    ));
    assert_eq!(
        claim(&mut shm, &idem_cfg, &store_key, &fp, NOW + 1),
        RequestDecision::Conflict409
    );

    // upstream answers; kyc_idempotency keeps the raw response, kyc_pii_mask masks what the client sees.
    let upstream = r#"{"success":true,"request_id":"r-1","name":"张三","id_card":"11010519491231002X","phone":"13800138000"}"#;
    finish(
        &mut shm,
        idempotency::on_response(
            &idem_cfg,
            &fp,
            200,
            Some("application/json"),
            upstream.as_bytes(),
            NOW + 2,
        ),
        &store_key,
    );
    assert!(mask::is_json_content_type(
        "application/json; charset=utf-8"
    ));
    assert!(!mask::unmasked_for(&mask_cfg, &identity.scopes));
    let MaskOutcome::Masked(seen) = mask::mask_json(upstream.as_bytes(), &mask_cfg) else {
        panic!("the response has PII to mask");
    };
    assert_eq!(
        String::from_utf8(seen).expect("utf-8"),
        r#"{"success":true,"request_id":"r-1","name":"张*","id_card":"110105********002X","phone":"138****8000"}"#
    );

    // A retry replays the stored response (masked again on its way out, as the chain runs again).
    let RequestDecision::Replay {
        status,
        body: replayed,
        ..
    } = claim(&mut shm, &idem_cfg, &store_key, &fp, NOW + 60)
    else {
        panic!("expected a replay");
    };
    assert_eq!((status, replayed.as_slice()), (200, upstream.as_bytes()));

    // The same key with another body is refused.
    let other = Fingerprint::new(&store_key, "POST", "/api/v1/kyc/verify", None, b"{}");
    let d = claim(&mut shm, &idem_cfg, &store_key, &other, NOW + 60);
    assert_eq!(
        d.reply().map(|r| (r.status, r.code)),
        Some((422, "IDEMPOTENCY_KEY_REUSED"))
    );
}

#[test]
fn a_failed_upstream_releases_the_key_for_a_retry() {
    let cfg = IdempotencyConfig::default();
    let mut shm = SharedData::default();
    let key = idempotency::storage_key(
        "kyc-client",
        &IdempotencyKey::parse(Some("k-1")).expect("valid"),
    );
    let fp = Fingerprint::new(&key, "POST", "/api/v1/kyc/ocr", None, b"image");
    assert!(matches!(
        claim(&mut shm, &cfg, &key, &fp, NOW),
        RequestDecision::Proceed { .. }
    ));
    finish(
        &mut shm,
        idempotency::on_response(&cfg, &fp, 503, None, b"", NOW + 1),
        &key,
    );
    assert!(shm.entries.is_empty(), "the in-flight record is deleted");
    assert!(matches!(
        claim(&mut shm, &cfg, &key, &fp, NOW + 2),
        RequestDecision::Proceed { .. }
    ));
}

/// The seed's loop: `curl -X POST …/api/v1/kyc/ocr -H "Idempotency-Key: test-123" -F
/// "image=@idcard.jpg"` five times. curl picks a new multipart boundary on every run; the first
/// request reaches upstream and the other four replay its response.
#[test]
fn curl_uploads_with_a_new_boundary_each_time_replay_the_first_response() {
    let cfg = IdempotencyConfig::default();
    let mut shm = SharedData::default();
    let key = idempotency::storage_key(
        "kyc-client",
        &IdempotencyKey::parse(Some("test-123")).expect("valid"),
    );
    let jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01 scanned id card \xff\xd9";
    let upload = |boundary: &str, image: &[u8]| {
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; \
             filename=\"idcard.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(image);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        Fingerprint::new(&key, "POST", "/api/v1/kyc/ocr", Some(&content_type), &body)
    };
    let upstream = r#"{"success":true,"name":"张三","request_id":"r-1"}"#.as_bytes();
    for (run, hex) in [
        "d74496d66958873e",
        "0a1b2c3d4e5f6789",
        "5c7f00e1b2a39d44",
        "e3b0c44298fc1c14",
        "9a8b7c6d5e4f3a2b",
    ]
    .into_iter()
    .enumerate()
    {
        let fp = upload(&format!("------------------------{hex}"), jpeg);
        let now = NOW + run as u64;
        match claim(&mut shm, &cfg, &key, &fp, now) {
            RequestDecision::Proceed { .. } if run == 0 => finish(
                &mut shm,
                idempotency::on_response(&cfg, &fp, 200, Some("application/json"), upstream, now),
                &key,
            ),
            RequestDecision::Replay { status, body, .. } if run > 0 => {
                assert_eq!((status, body.as_slice()), (200, upstream));
            }
            other => panic!("run {run}: {other:?}"),
        }
    }
    // Another image under the same key is still refused, whatever its boundary.
    let other = upload("------------------------d74496d66958873e", b"another card");
    assert_eq!(
        claim(&mut shm, &cfg, &key, &other, NOW + 10)
            .reply()
            .map(|r| (r.status, r.code)),
        Some((422, "IDEMPOTENCY_KEY_REUSED"))
    );
}

#[test]
fn two_workers_racing_for_one_key_leave_exactly_one_winner() {
    let cfg = IdempotencyConfig::default();
    let mut shm = SharedData::default();
    let key = idempotency::storage_key(
        "kyc-client",
        &IdempotencyKey::parse(Some("race")).expect("valid"),
    );
    let fp = Fingerprint::new(&key, "POST", "/api/v1/kyc/verify", None, b"{}");
    // Both read before either writes.
    let (a_bytes, a_cas) = shm.get(&key);
    let (b_bytes, b_cas) = shm.get(&key);
    let RequestDecision::Proceed { record_to_write: a } =
        idempotency::on_request(&cfg, a_bytes.as_deref(), &fp, NOW)
    else {
        panic!("worker A may proceed");
    };
    let RequestDecision::Proceed { record_to_write: b } =
        idempotency::on_request(&cfg, b_bytes.as_deref(), &fp, NOW)
    else {
        panic!("worker B may proceed");
    };
    assert_eq!(shm.set(&key, Some(&a), a_cas), Ok(()));
    assert_eq!(
        shm.set(&key, Some(&b), b_cas),
        Err(CasMismatch),
        "cas 0 means only if absent"
    );
    // B reads again and now sees A's claim.
    assert_eq!(
        claim(&mut shm, &cfg, &key, &fp, NOW),
        RequestDecision::Conflict409
    );
}

#[test]
fn anonymous_callers_are_limited_by_address_and_the_pii_scope_sees_everything() {
    let cfg = RateLimitConfig::from_json(br#"{"rate_per_sec":10,"burst":1}"#).expect("valid");
    let mut shm = SharedData::default();
    assert!(rate_limit(&mut shm, &cfg, None, 0).is_ok());
    assert!(rate_limit(&mut shm, &cfg, None, 0).is_err());
    assert!(
        shm.entries
            .contains_key("ratelimit/route-verify/addr/10.0.0.7")
    );

    let mask_cfg = MaskConfig::default();
    assert!(mask::unmasked_for(
        &mask_cfg,
        &["kyc:read".to_owned(), "kyc:pii".to_owned()]
    ));
}
