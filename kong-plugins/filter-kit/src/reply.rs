//! The project's JSON error body, `{"success":false,"error":{"code":"…","message":"…"},"request_id":"…"}`,
//! the same shape kyc-service answers with, so a client cannot tell a gateway refusal from a
//! service one. Owns the body only; status lines and headers belong to each policy.

use serde::Serialize;

/// A reply a filter sends itself instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The HTTP status.
    pub status: u16,
    /// The stable machine-readable code, e.g. `RATE_LIMITED`.
    pub code: &'static str,
    /// A message safe to show the client: never a token, a key's secret or PII.
    pub message: String,
}

impl ErrorReply {
    /// The JSON body for this reply, carrying the request's id.
    #[must_use]
    pub fn json_body(&self, request_id: &str) -> Vec<u8> {
        error_body(self.code, &self.message, request_id)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    success: bool,
    error: Detail<'a>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
}

/// `{"success":false,"error":{"code":…,"message":…},"request_id":…}`, with every string escaped.
#[must_use]
pub fn error_body(code: &str, message: &str, request_id: &str) -> Vec<u8> {
    let body = Body {
        success: false,
        error: Detail { code, message },
        request_id,
    };
    serde_json::to_vec(&body).expect("a struct of strings always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_has_the_services_shape_and_key_order() {
        let body = error_body("RATE_LIMITED", "slow down", "req-1");
        assert_eq!(
            String::from_utf8(body).expect("utf-8"),
            r#"{"success":false,"error":{"code":"RATE_LIMITED","message":"slow down"},"request_id":"req-1"}"#
        );
    }

    #[test]
    fn a_hostile_request_id_cannot_break_the_json() {
        let body = error_body("X", "m", "a\"},\"success\":true,\"x\":\"\n");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid json");
        assert_eq!(v["success"], false);
        assert_eq!(v["request_id"], "a\"},\"success\":true,\"x\":\"\n");
    }
}
