//! Shared data as ngx_wasm_module keeps it: `shm_kv` zones shared by every worker, a key `zone/…`
//! stored in the zone named `zone` (else in the `*` zone), and its CAS rule — a key's cas is 1 after
//! its first write and rises by one on each write; a write must pass the current cas (0 for a key
//! that does not exist), so cas 0 means "only if absent". A null value deletes. A full zone evicts
//! its least recently used keys. A key with no zone is the caller's error: the host traps.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Per-entry bookkeeping counted against a zone's size, roughly nginx's node overhead.
const ENTRY_OVERHEAD: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub enum SetResult {
    Ok,
    CasMismatch,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShmError {
    #[error("failed getting value from shm (could not resolve namespace) for key {0:?}")]
    NoZone(String),
    #[error("value for {key:?} ({size} bytes) is larger than shm zone {zone:?}")]
    TooLarge {
        key: String,
        zone: String,
        size: usize,
    },
}

struct Entry {
    value: Vec<u8>,
    cas: u32,
    tick: u64,
}

struct Zone {
    capacity: usize,
    used: usize,
    tick: u64,
    entries: HashMap<String, Entry>,
    /// tick of last use → key, for least-recently-used eviction.
    order: BTreeMap<u64, String>,
}

impl Zone {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn touch(&mut self, key: &str) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.entries.get_mut(key) {
            self.order.remove(&e.tick);
            e.tick = tick;
            self.order.insert(tick, key.to_owned());
        }
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.order.remove(&e.tick);
        self.used -= key.len() + e.value.len() + ENTRY_OVERHEAD;
        Some(e)
    }
}

pub struct Shm {
    zones: HashMap<String, Mutex<Zone>>,
}

impl Shm {
    /// `zones`: name (`*` for the catch-all) → bytes.
    pub fn new<'a>(zones: impl IntoIterator<Item = (&'a String, &'a usize)>) -> Self {
        Self {
            zones: zones
                .into_iter()
                .map(|(name, &size)| (name.clone(), Mutex::new(Zone::new(size))))
                .collect(),
        }
    }

    pub fn zone_names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.zones.keys().cloned().collect();
        names.sort();
        names
    }

    fn zone_for(&self, key: &str) -> Result<(&str, &Mutex<Zone>), ShmError> {
        if let Some((ns, _)) = key.split_once('/')
            && let Some((name, zone)) = self.zones.get_key_value(ns)
        {
            return Ok((name, zone));
        }
        self.zones
            .get_key_value("*")
            .map(|(n, z)| (n.as_str(), z))
            .ok_or_else(|| ShmError::NoZone(key.to_owned()))
    }

    /// The value and its cas, or `None` for a missing key.
    pub fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, ShmError> {
        let (_, zone) = self.zone_for(key)?;
        let mut z = lock(zone);
        let found = z.entries.get(key).map(|e| (e.value.clone(), e.cas));
        if found.is_some() {
            z.touch(key);
        }
        Ok(found)
    }

    /// Writes `value` (deletes on `None`) when `cas` is the key's current cas (0: absent).
    pub fn set(&self, key: &str, value: Option<&[u8]>, cas: u32) -> Result<SetResult, ShmError> {
        let (zone_name, zone) = self.zone_for(key)?;
        let mut z = lock(zone);
        let current = z.entries.get(key).map_or(0, |e| e.cas);
        if cas != current {
            return Ok(SetResult::CasMismatch);
        }
        let Some(value) = value else {
            z.remove(key);
            return Ok(SetResult::Ok);
        };
        let size = key.len() + value.len() + ENTRY_OVERHEAD;
        if size > z.capacity {
            return Err(ShmError::TooLarge {
                key: key.to_owned(),
                zone: zone_name.to_owned(),
                size,
            });
        }
        z.remove(key);
        while z.used + size > z.capacity {
            let Some((_, oldest)) = z.order.pop_first() else {
                break;
            };
            if let Some(e) = z.entries.remove(&oldest) {
                z.used -= oldest.len() + e.value.len() + ENTRY_OVERHEAD;
            }
        }
        z.tick += 1;
        let tick = z.tick;
        z.used += size;
        z.order.insert(tick, key.to_owned());
        z.entries.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                cas: current.wrapping_add(1).max(1),
                tick,
            },
        );
        Ok(SetResult::Ok)
    }

    /// Empties every zone (a configuration reload does this in Kong).
    pub fn clear(&self) {
        for zone in self.zones.values() {
            let mut z = lock(zone);
            let capacity = z.capacity;
            *z = Zone::new(capacity);
        }
    }
}

fn lock(zone: &Mutex<Zone>) -> std::sync::MutexGuard<'_, Zone> {
    zone.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shm(zones: &[(&str, usize)]) -> Shm {
        let owned: Vec<(String, usize)> =
            zones.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect();
        Shm::new(owned.iter().map(|(n, s)| (n, s)))
    }

    #[test]
    fn cas_follows_ngx_wasm_module() {
        let s = shm(&[("rl", 16 * 1024)]);
        assert_eq!(s.get("rl/a"), Ok(None));
        assert_eq!(s.set("rl/a", Some(b"1"), 0), Ok(SetResult::Ok));
        assert_eq!(s.get("rl/a"), Ok(Some((b"1".to_vec(), 1))));
        // cas 0 means "only if absent"; a stale cas loses.
        assert_eq!(s.set("rl/a", Some(b"2"), 0), Ok(SetResult::CasMismatch));
        assert_eq!(s.set("rl/a", Some(b"2"), 1), Ok(SetResult::Ok));
        assert_eq!(s.set("rl/a", Some(b"3"), 1), Ok(SetResult::CasMismatch));
        assert_eq!(s.get("rl/a"), Ok(Some((b"2".to_vec(), 2))));
        // A null value deletes; the key starts over.
        assert_eq!(s.set("rl/a", None, 2), Ok(SetResult::Ok));
        assert_eq!(s.get("rl/a"), Ok(None));
    }

    #[test]
    fn keys_without_a_zone_fail_and_the_star_zone_catches_the_rest() {
        let s = shm(&[("rl", 16 * 1024)]);
        assert!(matches!(s.get("idem/x"), Err(ShmError::NoZone(_))));
        assert!(matches!(
            s.set("plain", Some(b"v"), 0),
            Err(ShmError::NoZone(_))
        ));
        let s = shm(&[("*", 16 * 1024)]);
        assert_eq!(s.set("idem/x", Some(b"v"), 0), Ok(SetResult::Ok));
    }

    #[test]
    fn a_full_zone_evicts_the_least_recently_used() {
        let s = shm(&[("z", 16 * 1024)]);
        let big = vec![7u8; 5000];
        for k in ["z/a", "z/b", "z/c"] {
            assert_eq!(s.set(k, Some(&big), 0), Ok(SetResult::Ok));
        }
        let _ = s.get("z/a"); // b is now the oldest
        assert_eq!(s.set("z/d", Some(&big), 0), Ok(SetResult::Ok));
        assert_eq!(s.get("z/b"), Ok(None));
        assert!(s.get("z/a").expect("zone").is_some());
        assert!(matches!(
            s.set("z/e", Some(&vec![0; 20_000]), 0),
            Err(ShmError::TooLarge { .. })
        ));
    }
}
