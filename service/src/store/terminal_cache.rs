//! A bounded in-process cache of KYC requests' status views once they are terminal. A terminal
//! row is never updated again (`finish` and `finish_abandoned` only move `pending`/`processing`),
//! so a cached view cannot go stale. It holds what the status query answers (no PII: the view
//! carries none) and the owning client, so the ownership check stays the same as the query's.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::kyc::model::KycRequestView;

/// Views kept per generation by default (`kyc.status_cache_entries`); at most twice this many
/// are held, a few hundred bytes each.
pub const DEFAULT_CAPACITY: usize = 8192;

/// What the cache knows of one id asked for by one client.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// The caller's own terminal request.
    Hit(KycRequestView),
    /// A terminal request of another client: the caller is answered as for an unknown id.
    Foreign,
    /// Not cached (unknown, not terminal, or evicted): ask the database.
    Miss,
}

struct Entry {
    client_id: Box<str>,
    view: KycRequestView,
}

struct Generations {
    current: HashMap<Uuid, Entry>,
    previous: HashMap<Uuid, Entry>,
}

/// Two generations: a full current generation becomes the previous one and the old previous
/// is dropped, so the recently read survive and the size stays bounded without per-entry
/// bookkeeping. A hit in the previous generation moves the entry to the current one.
pub struct TerminalCache {
    capacity: usize,
    gens: Mutex<Generations>,
}

impl TerminalCache {
    /// A cache of `capacity` views per generation; 0 keeps nothing.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            gens: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
            }),
        }
    }

    pub fn get(&self, client_id: &str, id: Uuid) -> Lookup {
        if self.capacity == 0 {
            return Lookup::Miss;
        }
        let Ok(mut g) = self.gens.lock() else {
            return Lookup::Miss;
        };
        let found = if let Some(e) = g.current.get(&id) {
            Some(Self::answer(e, client_id))
        } else if let Some(e) = g.previous.remove(&id) {
            let answer = Self::answer(&e, client_id);
            Self::insert(&mut g, self.capacity, id, e);
            Some(answer)
        } else {
            None
        };
        found.unwrap_or(Lookup::Miss)
    }

    /// Keeps `view` when its status is terminal; any other status is never cached.
    pub fn put(&self, client_id: &str, view: &KycRequestView) {
        if self.capacity == 0 || !view.status.is_terminal() {
            return;
        }
        let Ok(mut g) = self.gens.lock() else {
            return;
        };
        let entry = Entry {
            client_id: client_id.into(),
            view: view.clone(),
        };
        Self::insert(&mut g, self.capacity, view.id, entry);
    }

    fn answer(e: &Entry, client_id: &str) -> Lookup {
        if &*e.client_id == client_id {
            Lookup::Hit(e.view.clone())
        } else {
            Lookup::Foreign
        }
    }

    fn insert(g: &mut Generations, capacity: usize, id: Uuid, entry: Entry) {
        if g.current.len() >= capacity && !g.current.contains_key(&id) {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(id, entry);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.gens.lock().expect("test: cache lock");
        g.current.len() + g.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::kyc::model::{RequestType, Status};

    fn view(status: Status) -> KycRequestView {
        KycRequestView {
            id: Uuid::new_v4(),
            user_id: "u-1".into(),
            request_type: RequestType::Complete,
            status,
            reasons: vec![],
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn a_terminal_view_is_served_to_its_client_only() {
        let c = TerminalCache::new(4);
        let v = view(Status::Success);
        c.put("a", &v);
        assert_eq!(c.get("a", v.id), Lookup::Hit(v.clone()));
        assert_eq!(c.get("b", v.id), Lookup::Foreign);
        assert_eq!(c.get("a", Uuid::new_v4()), Lookup::Miss);
    }

    #[test]
    fn a_status_that_can_still_change_is_never_cached() {
        let c = TerminalCache::new(4);
        for s in [Status::Pending, Status::Processing] {
            let v = view(s);
            c.put("a", &v);
            assert_eq!(c.get("a", v.id), Lookup::Miss);
        }
        for s in Status::TERMINAL {
            let v = view(s);
            c.put("a", &v);
            assert_eq!(c.get("a", v.id), Lookup::Hit(v.clone()));
        }
    }

    #[test]
    fn a_cache_of_no_entries_keeps_nothing() {
        let c = TerminalCache::new(0);
        let v = view(Status::Success);
        c.put("a", &v);
        assert_eq!(c.get("a", v.id), Lookup::Miss);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_cache_stays_bounded_and_keeps_what_is_read() {
        let c = TerminalCache::new(2);
        let kept = view(Status::Failed);
        c.put("a", &kept);
        for _ in 0..10 {
            c.put("a", &view(Status::Success));
            assert_eq!(c.get("a", kept.id), Lookup::Hit(kept.clone()));
            assert!(c.len() <= 4);
        }
    }
}
