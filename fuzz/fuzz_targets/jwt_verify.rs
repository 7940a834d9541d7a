//! filter-kit's JWT parsing and verification. The first byte picks the mode and the clock: any
//! bytes as a compact token, or a header and claims (split at the first newline) that the target
//! signs with the configured HS256 secret, so the claim checks behind the signature run too.
//! Never panics; only a signed input may verify; every rejection renders a JSON body.

#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use filter_kit::config::JwtConfig;
use filter_kit::jwt;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const SECRET: &str = "fuzz-secret-that-is-at-least-32-bytes-long";
const NOW: u64 = 1_800_000_000;

static CFG: LazyLock<JwtConfig> = LazyLock::new(|| {
    let json = format!(
        r#"{{"secret":"{SECRET}","issuer":"kyc-service","audience":"kyc-api","required_scopes":["kyc:read"],"allow_query_token":true}}"#
    );
    JwtConfig::from_json(json.as_bytes()).expect("the target's config is valid")
});

fn sign(header: &str, claims: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("HMAC takes any key");
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let signed = mode & 1 == 1;
    let token = if signed {
        let (header, claims) = text
            .split_once('\n')
            .unwrap_or((r#"{"alg":"HS256","typ":"at+jwt"}"#, &text));
        sign(header, claims)
    } else {
        text.into_owned()
    };
    let now = NOW + u64::from(mode >> 1) * 3_600;
    match jwt::verify(&CFG, &token, now) {
        Ok(identity) => {
            assert!(signed, "a token the target did not sign verified");
            let _ = jwt::check_scopes(&CFG, &identity);
        }
        Err(e) => {
            let body = e.rejection(&CFG).json_body("fuzz-request");
            serde_json::from_slice::<serde_json::Value>(&body).expect("the rejection is JSON");
        }
    }
    let _ = jwt::bearer_token(&token);
    let _ = jwt::query_token(&token);
});
