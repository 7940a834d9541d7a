//! Fault injection: the per-endpoint configuration set through the admin API (or `--faults`), the
//! per-call `X-Sandbox-*` headers that override it, and the decision for one call.

use std::path::Path;

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

/// The three vendor endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Ocr,
    Face,
    Liveness,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::Ocr, Endpoint::Face, Endpoint::Liveness];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Ocr => "ocr",
            Endpoint::Face => "face",
            Endpoint::Liveness => "liveness",
        }
    }
}

/// Latency and holds longer than this are refused (a hold lasts this long).
pub const MAX_HOLD_MS: u64 = 600_000;

/// Faults of one endpoint. Every field is optional in JSON; absent means no such fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSpec {
    /// Added before answering, in milliseconds.
    pub latency_ms: u64,
    /// Probability (0..=1) of answering 503.
    pub error_rate: f64,
    /// Answer this status (400..=599) with a JSON error body.
    pub status: Option<u16>,
    /// Never answer: hold the connection for 10 minutes or until the client goes away.
    pub timeout: bool,
    /// Answer 200 with a body that is not JSON.
    pub malformed: bool,
    /// Answer 429 with `Retry-After` set to this many seconds.
    pub rate_limit_retry_after: Option<u64>,
    /// The next N calls answer 503; counts down to 0, then calls succeed again.
    pub fail_first: u32,
}

/// Faults for every endpoint, as `PUT /sandbox/faults` takes and `GET` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    pub ocr: FaultSpec,
    pub face: FaultSpec,
    pub liveness: FaultSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum FaultsError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("invalid faults JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid faults: {0}")]
    Invalid(String),
}

impl FaultSpec {
    fn validate(&self, endpoint: Endpoint) -> Result<(), FaultsError> {
        let bad = |what: String| {
            Err(FaultsError::Invalid(format!(
                "{}.{what}",
                endpoint.as_str()
            )))
        };
        if !(0.0..=1.0).contains(&self.error_rate) {
            return bad(format!(
                "error_rate must be within 0..=1, got {}",
                self.error_rate
            ));
        }
        if let Some(s) = self.status
            && !(400..=599).contains(&s)
        {
            return bad(format!("status must be within 400..=599, got {s}"));
        }
        if self.latency_ms > MAX_HOLD_MS {
            return bad(format!("latency_ms must be at most {MAX_HOLD_MS}"));
        }
        if self.rate_limit_retry_after.is_some_and(|s| s > 86_400) {
            return bad("rate_limit_retry_after must be at most 86400".into());
        }
        Ok(())
    }
}

impl Faults {
    /// Parses and validates the JSON of `PUT /sandbox/faults` or a `--faults` file.
    ///
    /// # Errors
    /// When the JSON does not parse, has unknown fields, or holds out-of-range values.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FaultsError> {
        let faults: Faults = serde_json::from_slice(bytes)?;
        for e in Endpoint::ALL {
            faults.get(e).validate(e)?;
        }
        Ok(faults)
    }

    /// # Errors
    /// When the file cannot be read or [`Faults::from_json`] refuses it.
    pub fn load(path: &Path) -> Result<Self, FaultsError> {
        let bytes =
            std::fs::read(path).map_err(|e| FaultsError::Read(path.display().to_string(), e))?;
        Self::from_json(&bytes)
    }

    #[must_use]
    pub fn get(&self, endpoint: Endpoint) -> &FaultSpec {
        match endpoint {
            Endpoint::Ocr => &self.ocr,
            Endpoint::Face => &self.face,
            Endpoint::Liveness => &self.liveness,
        }
    }

    pub fn get_mut(&mut self, endpoint: Endpoint) -> &mut FaultSpec {
        match endpoint {
            Endpoint::Ocr => &mut self.ocr,
            Endpoint::Face => &mut self.face,
            Endpoint::Liveness => &mut self.liveness,
        }
    }
}

/// Per-call overrides from `X-Sandbox-*` request headers; each one present wins over the
/// endpoint's configured value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderFaults {
    pub latency_ms: Option<u64>,
    pub error_rate: Option<f64>,
    pub status: Option<u16>,
    pub timeout: Option<bool>,
    pub malformed: Option<bool>,
    pub rate_limit_retry_after: Option<u64>,
}

fn header<T>(
    headers: &HeaderMap,
    name: &str,
    parse: impl Fn(&str) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, String> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| parse(v.trim()))
        .map(Some)
        .ok_or_else(|| format!("{name} must be {expected}"))
}

fn boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

impl HeaderFaults {
    /// Reads the `X-Sandbox-*` headers.
    ///
    /// # Errors
    /// A message naming the first header whose value is out of range or unreadable.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, String> {
        Ok(Self {
            latency_ms: header(
                headers,
                "x-sandbox-latency-ms",
                |v| v.parse().ok().filter(|n| *n <= MAX_HOLD_MS),
                "milliseconds, at most 600000",
            )?,
            error_rate: header(
                headers,
                "x-sandbox-error-rate",
                |v| v.parse().ok().filter(|r: &f64| (0.0..=1.0).contains(r)),
                "a number within 0..=1",
            )?,
            status: header(
                headers,
                "x-sandbox-status",
                |v| v.parse().ok().filter(|s| (400..=599).contains(s)),
                "a status code within 400..=599",
            )?,
            timeout: header(headers, "x-sandbox-timeout", boolean, "true or false")?,
            malformed: header(headers, "x-sandbox-malformed", boolean, "true or false")?,
            rate_limit_retry_after: header(
                headers,
                "x-sandbox-rate-limit",
                |v| v.parse().ok().filter(|s| *s <= 86_400),
                "seconds, at most 86400",
            )?,
        })
    }
}

/// What one call does after its latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Answer normally.
    Proceed,
    /// Hold the connection without answering.
    Hold,
    /// 429 with `Retry-After`.
    RateLimited(u64),
    /// This status with a JSON error body.
    Status(u16),
    /// 503 because `fail_first` had calls left.
    FailFirst,
    /// 503 drawn by `error_rate`.
    ErrorRate,
    /// 200 with a body that is not JSON.
    Malformed,
}

/// Decides one call from the endpoint's configuration (counting `fail_first` down) and the call's
/// headers. Precedence: timeout, rate limit, status, fail_first, error_rate, malformed. `draw` is
/// a uniform number in [0, 1) for `error_rate`.
pub fn decide(config: &mut FaultSpec, headers: &HeaderFaults, draw: f64) -> (u64, Outcome) {
    let latency = headers.latency_ms.unwrap_or(config.latency_ms);
    let outcome = if headers.timeout.unwrap_or(config.timeout) {
        Outcome::Hold
    } else if let Some(secs) = headers
        .rate_limit_retry_after
        .or(config.rate_limit_retry_after)
    {
        Outcome::RateLimited(secs)
    } else if let Some(status) = headers.status.or(config.status) {
        Outcome::Status(status)
    } else if config.fail_first > 0 {
        config.fail_first -= 1;
        Outcome::FailFirst
    } else if draw < headers.error_rate.unwrap_or(config.error_rate) {
        Outcome::ErrorRate
    } else if headers.malformed.unwrap_or(config.malformed) {
        Outcome::Malformed
    } else {
        Outcome::Proceed
    };
    (latency, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_first_counts_down_then_calls_proceed() {
        let mut spec = FaultSpec {
            fail_first: 2,
            ..FaultSpec::default()
        };
        let none = HeaderFaults::default();
        assert_eq!(decide(&mut spec, &none, 0.5).1, Outcome::FailFirst);
        assert_eq!(decide(&mut spec, &none, 0.5).1, Outcome::FailFirst);
        assert_eq!(decide(&mut spec, &none, 0.5).1, Outcome::Proceed);
        assert_eq!(spec.fail_first, 0);
    }

    #[test]
    fn a_header_overrides_the_configured_value() {
        let mut spec = FaultSpec {
            error_rate: 1.0,
            latency_ms: 50,
            ..FaultSpec::default()
        };
        let headers = HeaderFaults {
            error_rate: Some(0.0),
            latency_ms: Some(0),
            ..HeaderFaults::default()
        };
        assert_eq!(decide(&mut spec, &headers, 0.0), (0, Outcome::Proceed));
        assert_eq!(
            decide(&mut spec, &HeaderFaults::default(), 0.999),
            (50, Outcome::ErrorRate)
        );
    }

    #[test]
    fn out_of_range_faults_are_refused_with_the_field_named() {
        let err = Faults::from_json(br#"{"face":{"error_rate":2}}"#).map(|_| ());
        assert!(
            matches!(&err, Err(FaultsError::Invalid(m)) if m.starts_with("face.error_rate")),
            "{err:?}"
        );
        assert!(Faults::from_json(br#"{"ocr":{"status":200}}"#).is_err());
        assert!(Faults::from_json(br#"{"ocr":{"typo":1}}"#).is_err());
        assert!(Faults::from_json(br#"{"ocr":{"fail_first":2}}"#).is_ok());
    }
}
