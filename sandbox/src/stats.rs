//! Call counters per vendor endpoint: every call that passed the API key check, including those
//! answered by an injected fault. Tests read them to prove that a request made (or made no) call.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::faults::Endpoint;

#[derive(Debug, Default)]
struct Counters {
    total: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Stats {
    ocr: Counters,
    face: Counters,
    liveness: Counters,
    holding: AtomicU64,
}

/// `GET /sandbox/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub total: u64,
    pub calls: Calls,
    /// Calls held open right now by the timeout fault.
    pub holding: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Calls {
    pub ocr: Count,
    pub face: Count,
    pub liveness: Count,
}

/// `ok`: answered 2xx with a JSON body. `failed`: everything else, counted when the answer is
/// decided (a held call counts as failed when the hold starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Count {
    pub total: u64,
    pub ok: u64,
    pub failed: u64,
}

impl Stats {
    fn counters(&self, e: Endpoint) -> &Counters {
        match e {
            Endpoint::Ocr => &self.ocr,
            Endpoint::Face => &self.face,
            Endpoint::Liveness => &self.liveness,
        }
    }

    pub fn begin(&self, e: Endpoint) {
        self.counters(e).total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finish(&self, e: Endpoint, ok: bool) {
        let c = self.counters(e);
        if ok { &c.ok } else { &c.failed }.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a held call for as long as the guard lives.
    pub fn hold(&self) -> HoldGuard<'_> {
        self.holding.fetch_add(1, Ordering::Relaxed);
        HoldGuard(&self.holding)
    }

    pub fn reset(&self) {
        for e in Endpoint::ALL {
            let c = self.counters(e);
            for n in [&c.total, &c.ok, &c.failed] {
                n.store(0, Ordering::Relaxed);
            }
        }
    }

    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let count = |e| {
            let c = self.counters(e);
            Count {
                total: c.total.load(Ordering::Relaxed),
                ok: c.ok.load(Ordering::Relaxed),
                failed: c.failed.load(Ordering::Relaxed),
            }
        };
        let calls = Calls {
            ocr: count(Endpoint::Ocr),
            face: count(Endpoint::Face),
            liveness: count(Endpoint::Liveness),
        };
        Snapshot {
            total: calls.ocr.total + calls.face.total + calls.liveness.total,
            calls,
            holding: self.holding.load(Ordering::Relaxed),
        }
    }
}

pub struct HoldGuard<'a>(&'a AtomicU64);

impl Drop for HoldGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
