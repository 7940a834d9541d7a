//! The rate limiter's arithmetic: the Generic Cell Rate Algorithm over one stored number, the
//! theoretical arrival time (TAT, in µs), plus its shared-data encoding, its key and the response
//! headers. Owns the decision only; reading and CAS-writing the shared data is the filter's.
//!
//! With an emission interval `T = 1/rate` and a burst `B`, a request at `now` is admitted when
//! `max(TAT, now) + T <= now + B·T`, and the TAT then becomes `max(TAT, now) + T`. From an empty
//! state exactly `B` requests pass at once, then one per `T`. It is the same algorithm, with the same
//! numbers, as kyc-service's cluster-wide Redis limiter.

use crate::config::RateLimitConfig;
use crate::reply::ErrorReply;

/// The `shm_kv` zone the limiter's keys live in (`nginx_wasm_shm_kv_ratelimit` in kong.conf).
/// Kong traps on a key whose zone is not declared, so every key [`key`] builds starts with it.
pub const ZONE: &str = "ratelimit";

/// Response header names, lower-case as HTTP/2 requires.
pub const RETRY_AFTER: &str = "retry-after";
/// The IETF draft-10 policy field.
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
/// The IETF draft-10 state field.
pub const RATELIMIT: &str = "ratelimit";
/// The burst, for clients that read the older `X-` pair.
pub const X_RATELIMIT_LIMIT: &str = "x-ratelimit-limit";
/// The requests left right now.
pub const X_RATELIMIT_REMAINING: &str = "x-ratelimit-remaining";

const MICROS: u64 = 1_000_000;

/// The outcome of one request against the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether to let the request through.
    pub allowed: bool,
    /// The TAT to store (with the CAS just read) when allowed; `None` when refused, since a
    /// refusal changes nothing.
    pub new_tat: Option<u64>,
    /// Requests that would still be admitted right now.
    pub remaining: u32,
    /// How long until a request would be admitted (0 when allowed).
    pub retry_after_us: u64,
    /// How long until the full burst is available again.
    pub reset_after_us: u64,
}

/// The emission interval `1/rate` in µs (at least 1 µs; a rate of 0 counts as 1).
#[must_use]
pub fn interval_us(rate_per_sec: u32) -> u64 {
    (MICROS / u64::from(rate_per_sec.max(1))).max(1)
}

/// Decides one request. `stored_tat` is what shared data holds for the key (`None` when absent or
/// unreadable: a fresh state); `now_us` is the host's clock in µs.
///
/// A stored TAT further ahead than a full burst (`now + B·T`) cannot come from this limit at this
/// time: only a clock stepping back or a lowered burst produce one. It counts as a fresh state, so a
/// clock step never locks clients out (the cost is at most one extra burst per step).
#[must_use]
pub fn decide(stored_tat: Option<u64>, now_us: u64, rate_per_sec: u32, burst: u32) -> Decision {
    let interval = interval_us(rate_per_sec);
    // The furthest ahead a TAT may be for a request to pass.
    let horizon = now_us.saturating_add(interval.saturating_mul(u64::from(burst)));
    let tat = stored_tat
        .filter(|tat| *tat <= horizon)
        .unwrap_or(now_us)
        .max(now_us);
    let new_tat = tat.saturating_add(interval);
    if new_tat <= horizon {
        Decision {
            allowed: true,
            new_tat: Some(new_tat),
            remaining: u32::try_from((horizon - new_tat) / interval).unwrap_or(u32::MAX),
            retry_after_us: 0,
            reset_after_us: new_tat - now_us,
        }
    } else {
        Decision {
            allowed: false,
            new_tat: None,
            remaining: 0,
            retry_after_us: new_tat - horizon,
            reset_after_us: tat - now_us,
        }
    }
}

/// The bytes to store for a TAT: 8 bytes, big-endian.
#[must_use]
pub fn encode_state(tat: u64) -> [u8; 8] {
    tat.to_be_bytes()
}

/// The TAT in stored bytes; `None` (a fresh state) for anything but exactly 8 bytes.
#[must_use]
pub fn decode_state(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

/// The shared-data key of a client on a route: `ratelimit/<route>/client/<client_id>` when the
/// JWT filter verified a client, else `ratelimit/<route>/addr/<source_addr>`. `/` and `%` inside the
/// parts are percent-encoded, so no two (route, client) pairs share a key.
#[must_use]
pub fn key(route: &str, client_id: Option<&str>, source_addr: &str) -> String {
    let (kind, id) = match client_id.filter(|c| !c.is_empty()) {
        Some(client) => ("client", client),
        None => ("addr", source_addr),
    };
    format!("{ZONE}/{}/{kind}/{}", escape_part(route), escape_part(id))
}

/// Percent-encodes `/` and `%`, the only characters that could make two keys collide.
pub(crate) fn escape_part(part: &str) -> std::borrow::Cow<'_, str> {
    if part.contains(['/', '%']) {
        part.replace('%', "%25").replace('/', "%2F").into()
    } else {
        part.into()
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1.
#[must_use]
pub fn retry_after_secs(d: &Decision) -> u64 {
    d.retry_after_us.div_ceil(MICROS).max(1)
}

/// The window of the policy: the seconds a full burst takes to refill, at least 1.
#[must_use]
pub fn window_secs(rate_per_sec: u32, burst: u32) -> u64 {
    u64::from(burst)
        .div_ceil(u64::from(rate_per_sec.max(1)))
        .max(1)
}

/// `RateLimit-Policy: "<name>";q=<burst>;w=<window secs>` (draft-ietf-httpapi-ratelimit-headers-10).
#[must_use]
pub fn ratelimit_policy(name: &str, rate_per_sec: u32, burst: u32) -> String {
    format!(
        "\"{name}\";q={burst};w={}",
        window_secs(rate_per_sec, burst)
    )
}

/// `RateLimit: "<name>";r=<remaining>;t=<seconds until the full burst is back, rounded up>`.
#[must_use]
pub fn ratelimit(name: &str, d: &Decision) -> String {
    format!(
        "\"{name}\";r={};t={}",
        d.remaining,
        d.reset_after_us.div_ceil(MICROS)
    )
}

/// Every header for a decision: the draft-10 pair and the `X-RateLimit-*` pair, plus `Retry-After`
/// on a refusal. Add them to the 429, and to admitted responses when `emit_headers` is on.
#[must_use]
pub fn headers(cfg: &RateLimitConfig, d: &Decision) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (
            RATELIMIT_POLICY,
            ratelimit_policy(&cfg.policy_name, cfg.rate_per_sec, cfg.burst),
        ),
        (RATELIMIT, ratelimit(&cfg.policy_name, d)),
        (X_RATELIMIT_LIMIT, cfg.burst.to_string()),
        (X_RATELIMIT_REMAINING, d.remaining.to_string()),
    ];
    if !d.allowed {
        out.push((RETRY_AFTER, retry_after_secs(d).to_string()));
    }
    out
}

/// The 429 reply for a refusal: code `RATE_LIMITED`, as kyc-service words it.
#[must_use]
pub fn reply(d: &Decision) -> ErrorReply {
    ErrorReply {
        status: 429,
        code: "RATE_LIMITED",
        message: format!("too many requests; retry after {} s", retry_after_secs(d)),
    }
}

/// `Retry-After` on the 503 of a limiter that fails closed: shared data is the host's own memory,
/// so a failure is rare and short, and the client may try again at once.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// The 503 reply when the limit's state could not be read or settled and the config says
/// `fail_closed`: code `RATE_LIMIT_UNAVAILABLE`. Send it with `retry-after`
/// [`UNAVAILABLE_RETRY_AFTER_SECS`]; it carries no `RateLimit` fields, since there is no decision.
#[must_use]
pub fn unavailable_reply() -> ErrorReply {
    ErrorReply {
        status: 503,
        code: "RATE_LIMIT_UNAVAILABLE",
        message: format!(
            "the rate limit could not be checked; retry after {UNAVAILABLE_RETRY_AFTER_SECS} s"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs requests at the given instants against one key, like the filter would.
    fn admitted(times_us: impl IntoIterator<Item = u64>, rate: u32, burst: u32) -> u64 {
        let mut stored: Option<[u8; 8]> = None;
        let mut count = 0;
        for now in times_us {
            let d = decide(stored.and_then(|s| decode_state(&s)), now, rate, burst);
            if let Some(tat) = d.new_tat {
                assert!(d.allowed);
                stored = Some(encode_state(tat));
                count += 1;
            }
        }
        count
    }

    #[test]
    fn exactly_the_burst_passes_at_once_from_an_empty_state() {
        for burst in [1, 2, 5, 200] {
            assert_eq!(
                admitted(std::iter::repeat_n(1_000, 1000), 10, burst),
                u64::from(burst)
            );
        }
    }

    #[test]
    fn remaining_counts_down_to_zero_then_refusals_say_when_to_retry() {
        let (rate, burst) = (10, 3);
        let mut tat = None;
        let mut seen = Vec::new();
        for _ in 0..3 {
            let d = decide(tat, 0, rate, burst);
            seen.push(d.remaining);
            tat = d.new_tat;
        }
        assert_eq!(seen, vec![2, 1, 0]);
        let refused = decide(tat, 0, rate, burst);
        assert!(!refused.allowed && refused.new_tat.is_none());
        assert_eq!(refused.retry_after_us, 100_000);
        assert_eq!(refused.reset_after_us, 300_000);
        assert!(!decide(tat, refused.retry_after_us - 1, rate, burst).allowed);
        assert!(decide(tat, refused.retry_after_us, rate, burst).allowed);
    }

    #[test]
    fn after_the_reset_time_the_whole_burst_is_back() {
        let (rate, burst) = (4, 5);
        let mut tat = None;
        let mut last = decide(None, 0, rate, burst);
        for _ in 0..burst {
            last = decide(tat, 0, rate, burst);
            tat = last.new_tat;
        }
        let reset = last.reset_after_us;
        assert_eq!(decide(tat, reset, rate, burst).remaining, burst - 1);
        assert_eq!(decide(tat, reset - 1, rate, burst).remaining, burst - 2);
    }

    #[test]
    fn at_twice_the_rate_the_admitted_count_is_rate_times_time_plus_burst() {
        for rate in [1_u32, 2, 3, 7, 10, 100, 1000] {
            for burst in [1_u32, 2, 5, 200] {
                for secs in [1_u64, 10, 60] {
                    // Rounded up: with a burst of 1 GCRA tolerates no early arrival at all, and an
                    // arrival 1 µs before its emission time (from rounding down) would be refused.
                    let step = interval_us(rate).div_ceil(2);
                    let end = secs * MICROS;
                    let times: Vec<u64> =
                        (0..).map(|k| k * step).take_while(|t| *t <= end).collect();
                    let offered = times.len() as u64;
                    let got = admitted(times, rate, burst);
                    // When twice the rate is still less than the burst can absorb, all pass.
                    let expected = (u64::from(rate) * secs + u64::from(burst)).min(offered);
                    assert!(
                        got.abs_diff(expected) <= 1,
                        "rate {rate} burst {burst} over {secs} s: admitted {got}, expected {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn irregular_arrivals_never_beat_the_limit() {
        // A deterministic jittered timeline averaging twice the rate.
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        for (rate, burst) in [(5_u32, 10_u32), (50, 1), (50, 2), (200, 400)] {
            let mean = interval_us(rate) / 2;
            let mut now = 0;
            let mut times = Vec::new();
            while now <= 30 * MICROS {
                times.push(now);
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                now += (seed >> 33) % (2 * mean + 1);
            }
            let got = admitted(times, rate, burst);
            let most = u64::from(rate) * 30 + u64::from(burst);
            assert!(got <= most + 1, "rate {rate} burst {burst}: {got} > {most}");
            // Gaps never exceed one interval, so from a burst of 2 up, jitter is absorbed and
            // nothing is lost; a burst of 1 tolerates no jitter at all, by design.
            if burst >= 2 {
                assert!(
                    got + 2 >= most,
                    "rate {rate} burst {burst}: only {got} of {most}"
                );
            }
        }
    }

    #[test]
    fn a_stale_tat_is_a_fresh_state() {
        let d = decide(Some(5), 10_000_000, 10, 3);
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
        assert_eq!(d.new_tat, Some(10_100_000));
    }

    #[test]
    fn a_clock_stepping_back_never_locks_a_client_out() {
        // The TAT was written an hour "later" than now: it counts as a fresh state.
        let far = 3_600 * MICROS;
        let d = decide(Some(far), 0, 10, 3);
        assert!(d.allowed);
        assert_eq!((d.remaining, d.new_tat), (2, Some(interval_us(10))));
        // A TAT exactly a full burst ahead is lawful, and means "no room left".
        assert!(!decide(Some(3 * interval_us(10)), 0, 10, 3).allowed);
    }

    #[test]
    fn huge_clocks_and_rates_do_not_overflow() {
        let d = decide(Some(u64::MAX - 1), u64::MAX - 10, 1, 1_000_000);
        assert!(!d.allowed || d.new_tat.is_some());
        let d = decide(None, 0, 10_000_000, 1);
        assert!(d.allowed);
        assert_eq!(interval_us(0), MICROS);
    }

    #[test]
    fn state_round_trips_and_anything_malformed_is_fresh() {
        for tat in [0, 1, 1_700_000_000_000_000, u64::MAX] {
            assert_eq!(decode_state(&encode_state(tat)), Some(tat));
        }
        assert_eq!(decode_state(b""), None);
        assert_eq!(decode_state(b"1700000000"), None);
        assert_eq!(decode_state(&[0; 7]), None);
    }

    #[test]
    fn the_headers_follow_the_ietf_draft_and_the_x_pair() {
        let cfg = RateLimitConfig {
            rate_per_sec: 100,
            burst: 200,
            ..RateLimitConfig::default()
        };
        let ok = decide(None, 0, 100, 200);
        assert_eq!(
            headers(&cfg, &ok),
            vec![
                (RATELIMIT_POLICY, "\"edge\";q=200;w=2".to_owned()),
                (RATELIMIT, "\"edge\";r=199;t=1".to_owned()),
                (X_RATELIMIT_LIMIT, "200".to_owned()),
                (X_RATELIMIT_REMAINING, "199".to_owned()),
            ]
        );
        let refused = Decision {
            allowed: false,
            new_tat: None,
            remaining: 0,
            retry_after_us: 1_500_000,
            reset_after_us: 2_000_001,
        };
        let h = headers(&cfg, &refused);
        assert!(h.contains(&(RETRY_AFTER, "2".to_owned())));
        assert!(h.contains(&(RATELIMIT, "\"edge\";r=0;t=3".to_owned())));
    }

    #[test]
    fn retry_after_is_whole_seconds_and_never_zero() {
        let with = |us| Decision {
            allowed: false,
            new_tat: None,
            remaining: 0,
            retry_after_us: us,
            reset_after_us: us,
        };
        assert_eq!(retry_after_secs(&with(1)), 1);
        assert_eq!(retry_after_secs(&with(0)), 1);
        assert_eq!(retry_after_secs(&with(1_000_000)), 1);
        assert_eq!(retry_after_secs(&with(1_000_001)), 2);
        assert_eq!(window_secs(100, 1), 1);
        assert_eq!(window_secs(3, 10), 4);
    }

    #[test]
    fn the_refusal_reply_is_a_429_in_the_projects_shape() {
        let r = reply(&Decision {
            allowed: false,
            new_tat: None,
            remaining: 0,
            retry_after_us: 2_300_000,
            reset_after_us: 0,
        });
        assert_eq!((r.status, r.code), (429, "RATE_LIMITED"));
        assert_eq!(r.message, "too many requests; retry after 3 s");
    }

    #[test]
    fn the_fail_closed_reply_is_a_503_in_the_projects_shape() {
        let r = unavailable_reply();
        assert_eq!((r.status, r.code), (503, "RATE_LIMIT_UNAVAILABLE"));
        assert_eq!(
            r.message,
            "the rate limit could not be checked; retry after 1 s"
        );
        let body: serde_json::Value = serde_json::from_slice(&r.json_body("req-1")).expect("json");
        assert_eq!(body["error"]["code"], "RATE_LIMIT_UNAVAILABLE");
        assert_eq!(body["request_id"], "req-1");
    }

    #[test]
    fn the_key_prefers_the_verified_client_and_falls_back_to_the_address() {
        assert_eq!(
            key("route-1", Some("kyc-client"), "10.0.0.1"),
            "ratelimit/route-1/client/kyc-client"
        );
        assert_eq!(
            key("route-1", None, "10.0.0.1"),
            "ratelimit/route-1/addr/10.0.0.1"
        );
        assert_eq!(
            key("route-1", Some(""), "::1"),
            "ratelimit/route-1/addr/::1"
        );
    }

    #[test]
    fn keys_of_different_clients_or_routes_never_collide() {
        assert_ne!(key("a/b", Some("c"), "x"), key("a", Some("b/c"), "x"));
        assert_ne!(key("r", Some("a%2Fb"), "x"), key("r", Some("a/b"), "x"));
        assert_ne!(key("r", Some("addr"), "x"), key("r", None, "addr"));
        assert!(key("r/1", Some("c/2"), "x").starts_with("ratelimit/r%2F1/"));
    }
}
