//! What a run against the stack needs from the seed's setup: the JWT secret the service signs
//! with (which the edge's kyc_jwt verifies) and a token for the seed's client.

use anyhow::Context as _;

/// `$DECK_KYC_JWT_SECRET`, else config.yaml's `security.jwt_secret`.
pub fn jwt_secret() -> anyhow::Result<String> {
    if let Ok(s) = std::env::var("DECK_KYC_JWT_SECRET") {
        return Ok(s);
    }
    let text = std::fs::read_to_string("config.yaml").context("reading config.yaml")?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("jwt_secret:"))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .context("config.yaml has no security.jwt_secret")
}

/// A token for the seed's client (the seed's section 2), from `base` (the edge or the service).
pub async fn token(base: &str) -> anyhow::Result<String> {
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/token"))
        .json(&serde_json::json!({
            "client_id": "kyc-client", "client_secret": "kyc-client-secret",
            "grant_type": "client_credentials", "scope": "kyc:read kyc:write"
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    resp["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token")
}
