//! Per-call cost of what the filters run on every request, printed in µs. Nothing here fails on a
//! number. `cargo bench -p filter-kit --bench hot_paths` measures the optimised build; add
//! `--profile dev` for a quick, pessimistic look.

use std::hint::black_box;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek_nostd::pkcs8::DecodePrivateKey as _;
use filter_kit::config::{IdempotencyConfig, JwtConfig, MaskConfig};
use filter_kit::{gcra, idempotency, jwt, mask};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const SECRET: &str = "your-secret-key-here-must-be-32-bytes-long";
const ED_PEM: &str = include_str!("../../../service/tests/fixtures/ed25519.pem");
const EC_PEM: &str = include_str!("../../../service/tests/fixtures/p256.pem");
const NOW: u64 = 1_764_000_000;

fn time<T>(name: &str, iterations: u32, mut f: impl FnMut() -> T) {
    for _ in 0..iterations / 10 {
        black_box(f());
    }
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(f());
    }
    let per_call = start.elapsed() / iterations;
    println!("{name:<44} {:>10.2} µs", per_call.as_secs_f64() * 1e6);
}

fn token(alg: Algorithm, key: &EncodingKey, kid: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    header.typ = Some("at+jwt".to_owned());
    let claims = serde_json::json!({
        "iss": "kyc-service", "sub": "kyc-client", "aud": "kyc-api",
        "exp": NOW + 86_400, "iat": NOW, "nbf": NOW,
        "jti": "0193a5b2-7c1d-7000-8000-000000000001",
        "scope": "kyc:read kyc:write", "client_id": "kyc-client",
    });
    jsonwebtoken::encode(&header, &claims, key).expect("minting works")
}

fn jwt_config() -> JwtConfig {
    let ed = ed25519_dalek_nostd::SigningKey::from_pkcs8_pem(ED_PEM).expect("fixture key");
    let ec = {
        use p256_nostd::pkcs8::DecodePrivateKey as _;
        p256_nostd::ecdsa::SigningKey::from_pkcs8_pem(EC_PEM).expect("fixture key")
    };
    let point = ec.verifying_key().to_encoded_point(false);
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let json = serde_json::json!({
        "algorithms": ["HS256", "EdDSA", "ES256"],
        "secret": SECRET,
        "issuer": "kyc-service", "audience": "kyc-api", "required_scopes": ["kyc:read"],
        "jwks": { "keys": [
            { "kty": "OKP", "crv": "Ed25519", "x": b64(ed.verifying_key().as_bytes()), "kid": "ed" },
            { "kty": "EC", "crv": "P-256", "kid": "ec",
              "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")) },
        ]},
    });
    JwtConfig::from_json(json.to_string().as_bytes()).expect("valid config")
}

fn main() {
    let cfg = jwt_config();
    let hs = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        "hs",
    );
    let ed = token(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_pem(ED_PEM.as_bytes()).expect("pem"),
        "ed",
    );
    let es = token(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(EC_PEM.as_bytes()).expect("pem"),
        "ec",
    );
    for (name, t) in [("HS256", &hs), ("EdDSA", &ed), ("ES256", &es)] {
        let header = format!("Bearer {t}");
        assert!(jwt::authenticate(&cfg, Some(&header), None, NOW).is_ok());
        time(&format!("jwt::authenticate {name}"), 2_000, || {
            jwt::authenticate(&cfg, Some(&header), None, NOW)
        });
    }
    let mut cache = jwt::TokenCache::new(1024);
    for (name, t) in [("EdDSA", &ed), ("ES256", &es)] {
        let header = format!("Bearer {t}");
        time(
            &format!("jwt::TokenCache::authenticate {name}, hit"),
            100_000,
            || cache.authenticate(&cfg, Some(&header), None, NOW),
        );
    }
    time("jwt::authenticate, no token", 100_000, || {
        jwt::authenticate(&cfg, None, None, NOW)
    });

    let mut tat = None;
    let mut now = 1_764_000_000_000_000_u64;
    time("gcra::key + decide + encode", 200_000, || {
        now += 7_000;
        let key = gcra::key("route-1", Some("kyc-client"), "10.0.0.1");
        let d = gcra::decide(tat, now, 100, 200);
        if let Some(t) = d.new_tat {
            tat = gcra::decode_state(&gcra::encode_state(t));
        }
        (key, d)
    });

    let icfg = IdempotencyConfig::default();
    let body = vec![b'x'; 1024];
    let key = idempotency::IdempotencyKey::parse(Some("8e03978e-40d5-43e8-bc93-6894a57f9324"))
        .expect("valid");
    let response = vec![b'y'; 2048];
    let sk = idempotency::storage_key("kyc-client", &key);
    let fp = idempotency::Fingerprint::new(&sk, "POST", "/api/v1/kyc/verify", None, &body);
    let stored =
        match idempotency::on_response(&icfg, &fp, 200, Some("application/json"), &response, NOW) {
            idempotency::ResponseDecision::Store(bytes) => bytes,
            idempotency::ResponseDecision::Release => unreachable!("a 200 is stored"),
        };
    time("idempotency fingerprint (1 KiB body)", 50_000, || {
        idempotency::Fingerprint::new(&sk, "POST", "/api/v1/kyc/verify", None, &body)
    });
    let boundary = "------------------------d74496d66958873e";
    let form = format!("multipart/form-data; boundary={boundary}");
    let mut upload = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"idcard.jpg\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    upload.extend((0..64 * 1024_u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    upload.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    time("idempotency fingerprint (64 KiB multipart)", 2_000, || {
        idempotency::Fingerprint::new(&sk, "POST", "/api/v1/kyc/ocr", Some(&form), &upload)
    });
    time("idempotency fingerprint (64 KiB raw)", 2_000, || {
        idempotency::Fingerprint::new(&sk, "POST", "/api/v1/kyc/ocr", None, &upload)
    });
    time("idempotency::on_request, fresh key", 100_000, || {
        idempotency::on_request(&icfg, None, &fp, NOW)
    });
    time("idempotency::on_request, replay 2 KiB", 100_000, || {
        idempotency::on_request(&icfg, Some(&stored), &fp, NOW)
    });

    let mcfg = MaskConfig::default();
    let ocr = r#"{"success":true,"id_card":"11010519491231002X","name":"张三","sex":"男","ethnicity":"汉","birth_date":"1949-12-31","address":"北京市朝阳区建国路88号","confidence":0.98,"warnings":[],"request_id":"0193a5b2-7c1d-7000-8000-000000000001"}"#;
    time("mask::mask_json, OCR response (~250 B)", 50_000, || {
        mask::mask_json(ocr.as_bytes(), &mcfg)
    });
    let list = format!("{{\"items\":[{}]}}", vec![ocr; 250].join(","));
    time(
        &format!("mask::mask_json, list ({} KiB)", list.len() / 1024),
        200,
        || mask::mask_json(list.as_bytes(), &mcfg),
    );
    let plain = r#"{"success":true,"status":"pending","request_id":"0193a5b2-7c1d-7000-8000-000000000001"}"#;
    time("mask::mask_json, nothing to mask", 100_000, || {
        mask::mask_json(plain.as_bytes(), &mcfg)
    });
}
