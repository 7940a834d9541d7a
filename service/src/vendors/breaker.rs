//! A circuit breaker per vendor: closed → (N consecutive failures) → open → (after a pause) one
//! half-open probe → closed on success, open again on failure.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    #[must_use]
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            open_for,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a call may go out now. In half-open state only one probe at a time does.
    pub fn allow(&self) -> bool {
        let mut s = self.lock();
        match *s {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *s = State::HalfOpen { probing: true };
                true
            }
            State::Open { .. } | State::HalfOpen { probing: true } => false,
            State::HalfOpen { probing: false } => {
                *s = State::HalfOpen { probing: true };
                true
            }
        }
    }

    /// Claims a call: `None` when the circuit refuses it. The claim reports its own outcome;
    /// dropped without one (the call was cancelled), it counts as a failure, so a half-open
    /// probe can never be lost.
    pub fn claim(&self) -> Option<Claim<'_>> {
        // Not `then_some`, which builds its argument first: a claim built for a refused call would
        // be dropped unreported, count as a failure and keep an open circuit open for as long as
        // calls keep coming.
        if self.allow() {
            Some(Claim {
                breaker: self,
                reported: false,
            })
        } else {
            None
        }
    }

    pub fn on_success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    pub fn on_failure(&self) {
        let mut s = self.lock();
        *s = match *s {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open {
                until: Instant::now() + self.open_for,
            },
        };
    }

    /// 0 closed, 1 open, 2 half-open (the `vendor_circuit_state` gauge).
    #[must_use]
    pub fn gauge(&self) -> i64 {
        match *self.lock() {
            State::Closed { .. } => 0,
            State::Open { .. } => 1,
            State::HalfOpen { .. } => 2,
        }
    }
}

/// One call's pending outcome, from [`Breaker::claim`].
pub struct Claim<'a> {
    breaker: &'a Breaker,
    reported: bool,
}

impl Claim<'_> {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.on_success();
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.on_failure();
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.on_failure();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_opens_after_the_threshold_and_probes_once_after_the_pause() {
        let b = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            assert!(b.allow());
            b.on_failure();
        }
        assert_eq!(b.gauge(), 0, "two failures keep it closed");
        b.on_failure();
        assert_eq!(b.gauge(), 1);
        assert!(!b.allow(), "open: calls are refused at once");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "after the pause one probe goes out");
        assert!(!b.allow(), "and only one");
        b.on_failure();
        assert!(!b.allow(), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow());
        b.on_success();
        assert_eq!(b.gauge(), 0);
        assert!(b.allow() && b.allow());
    }

    #[test]
    fn refused_calls_do_not_keep_the_circuit_open() {
        let b = Breaker::new(1, Duration::from_millis(30));
        b.claim().expect("closed").failure();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(25) {
            assert!(b.claim().is_none(), "open: refused");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(35).saturating_sub(started.elapsed()));
        let probe = b
            .claim()
            .expect("the pause ran from the failure, not from the refusals");
        probe.success();
        assert_eq!(b.gauge(), 0);
    }

    #[test]
    fn an_abandoned_half_open_probe_counts_as_a_failure() {
        let b = Breaker::new(1, Duration::from_millis(20));
        b.on_failure();
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.claim().expect("the half-open probe");
        assert!(b.claim().is_none(), "one probe at a time");
        drop(probe);
        assert_eq!(b.gauge(), 1, "open again, not stuck half-open");
        std::thread::sleep(Duration::from_millis(30));
        b.claim().expect("a new probe after the pause").success();
        assert_eq!(b.gauge(), 0);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.on_failure();
        b.on_success();
        b.on_failure();
        assert!(b.allow(), "failures must be consecutive");
    }
}
