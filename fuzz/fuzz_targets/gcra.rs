//! filter-kit's GCRA arithmetic over a run of requests on a clock that only moves forward, with
//! the state passing through its shared-data encoding as in the filter. The input: rate (4
//! bytes), burst (2 bytes), start (6 bytes), then one byte per request: the time to wait first.
//!
//! Invariants: at one instant at most `burst` requests pass, and from a fresh state exactly
//! `burst`; over any run at most `burst + elapsed / T` pass; a refusal's `retry_after` is
//! exactly the wait after which the request passes; decisions are self-consistent.

#![no_main]

use filter_kit::gcra::{self, Decision};
use libfuzzer_sys::fuzz_target;

fn check(d: &Decision, burst: u32) {
    if d.allowed {
        assert!(d.new_tat.is_some() && d.retry_after_us == 0, "{d:?}");
        assert!(d.remaining < burst, "{d:?}");
    } else {
        assert!(
            d.new_tat.is_none() && d.remaining == 0 && d.retry_after_us > 0,
            "{d:?}"
        );
    }
    assert!(gcra::retry_after_secs(d) >= 1);
    let _ = gcra::ratelimit("fuzz", d);
    let _ = gcra::reply(d);
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    // The filter's config accepts 1 to 1 000 000 for both.
    let rate = 1 + u32::from_le_bytes([data[0], data[1], data[2], data[3]]) % 1_000_000;
    let burst = u32::from(u16::from_le_bytes([data[4], data[5]])).max(1);
    let mut start_bytes = [0u8; 8];
    start_bytes[..6].copy_from_slice(&data[6..12]);
    let start = u64::from_le_bytes(start_bytes); // below 2^48 µs: no clock near overflow
    let interval = gcra::interval_us(rate);
    let _ = gcra::ratelimit_policy("fuzz", rate, burst);
    assert!(gcra::window_secs(rate, burst) >= 1);

    let (mut now, mut stored): (u64, Option<[u8; 8]>) = (start, None);
    let (mut admitted, mut at_this_instant) = (0u64, 0u64);
    for (i, &step) in data[12..].iter().enumerate() {
        // Small steps mostly; a step of 255 waits a whole second.
        let wait = if step == 255 {
            1_000_000
        } else {
            u64::from(step) * u64::from(step)
        };
        if wait > 0 {
            now += wait;
            at_this_instant = 0;
        }
        let tat = stored.and_then(|b| gcra::decode_state(&b));
        let d = gcra::decide(tat, now, rate, burst);
        check(&d, burst);
        if d.allowed {
            admitted += 1;
            at_this_instant += 1;
            stored = d.new_tat.map(gcra::encode_state);
        } else {
            let later = gcra::decide(tat, now + d.retry_after_us, rate, burst);
            assert!(
                later.allowed,
                "refused, and still refused after retry_after: {d:?}"
            );
            if d.retry_after_us > 1 {
                let sooner = gcra::decide(tat, now + d.retry_after_us - 1, rate, burst);
                assert!(
                    !sooner.allowed,
                    "retry_after is not the shortest wait: {d:?}"
                );
            }
        }
        assert!(
            at_this_instant <= u64::from(burst),
            "{at_this_instant} passed at one instant, burst {burst}"
        );
        if i < burst as usize && now == start {
            assert!(
                d.allowed,
                "a fresh state refused request {i} of a burst of {burst}"
            );
        }
        let bound = u64::from(burst) + (now - start) / interval;
        assert!(admitted <= bound, "{admitted} passed, bound {bound}");
    }
});
