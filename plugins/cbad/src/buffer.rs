//! Per-stream event buffers in the host's keyed state, and an instance-local
//! cache of them.
//!
//! State layout, per partition (the host scopes keys to stage + partition):
//!
//! - `meta/{stream}`: JSON [`Meta`], a few dozen bytes;
//! - `ev/{stream}/{n:016x}`: event `n` of the stream: its Kafka offset (8
//!   bytes, little endian) then its preprocessed bytes.
//!
//! One event is one key, so an event costs one small write and a hop's worth
//! of old events one delete each: nothing is rewritten as the buffer slides.
//! The fixed-width index at the end keeps keys of different streams apart
//! whatever the stream id contains.
//!
//! State is the source of truth. The cache saves reading B+W events back at
//! every analysis; an entry is used only while the stream's `Meta` in state
//! is exactly the one this instance last wrote, so events written by another
//! instance (after a rebalance, or after this one was replaced following a
//! trap) are never missed.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use weir_plugin::state;

/// Where a stream's buffer stands. Indices count the stream's events from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The index the next event gets.
    pub next: u64,
    /// The oldest event still stored.
    pub head: u64,
    /// The first event of the next window to analyse.
    pub window_start: u64,
    /// The Kafka offset of the last event stored; -1 before any.
    pub last_offset: i64,
}

impl Meta {
    pub fn new(baseline: usize) -> Self {
        Meta {
            next: 0,
            head: 0,
            window_start: baseline as u64,
            last_offset: -1,
        }
    }

    /// The stream's `Meta`, or a fresh one if it has none or an unreadable
    /// or inconsistent one (events it pointed at are then orphaned, which
    /// costs space, never a wrong analysis).
    pub fn load(stream: &str, baseline: usize) -> Self {
        state::get_json::<Meta>(&meta_key(stream))
            .filter(|m| m.head <= m.next && m.last_offset >= -1)
            .unwrap_or_else(|| Meta::new(baseline))
    }

    pub fn store(&self, stream: &str) {
        state::set_json(&meta_key(stream), self);
    }
}

pub fn meta_key(stream: &str) -> Vec<u8> {
    [b"meta/", stream.as_bytes()].concat()
}

pub fn event_key(stream: &str, n: u64) -> Vec<u8> {
    format!("ev/{stream}/{n:016x}").into_bytes()
}

/// One buffered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub offset: i64,
    pub bytes: Vec<u8>,
}

impl AsRef<[u8]> for Event {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        [&self.offset.to_le_bytes()[..], &self.bytes].concat()
    }

    pub fn decode(value: &[u8]) -> Option<Event> {
        let (offset, bytes) = value.split_first_chunk::<8>()?;
        Some(Event {
            offset: i64::from_le_bytes(*offset),
            bytes: bytes.to_vec(),
        })
    }

    pub fn store(&self, stream: &str, n: u64) {
        state::set(&event_key(stream, n), &self.encode());
    }

    pub fn load(stream: &str, n: u64) -> Option<Event> {
        Event::decode(&state::get(&event_key(stream, n))?)
    }
}

/// Reads events `from..to` of a stream from state; `None` if one is
/// missing or unreadable.
pub fn load_range(stream: &str, from: u64, to: u64) -> Option<VecDeque<Event>> {
    (from..to).map(|n| Event::load(stream, n)).collect()
}

struct Entry {
    /// The stream's `Meta` as this instance last stored it.
    synced: Meta,
    /// The index of `events[0]`; the entry holds `first..synced.next`.
    first: u64,
    events: VecDeque<Event>,
    bytes: usize,
    used: u64,
}

/// Recently analysed streams' events, bounded in bytes.
pub struct Cache {
    entries: HashMap<(i32, String), Entry>,
    budget: usize,
    bytes: usize,
    clock: u64,
}

impl Cache {
    pub fn new(budget: usize) -> Self {
        Cache {
            entries: HashMap::new(),
            budget,
            bytes: 0,
            clock: 0,
        }
    }

    fn remove(&mut self, key: &(i32, String)) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.bytes;
        }
    }

    /// Drops the entry unless `meta` (just read from state) is what this
    /// instance last wrote: anything else means another writer.
    pub fn check(&mut self, key: &(i32, String), meta: &Meta) {
        if self.entries.get(key).is_some_and(|e| e.synced != *meta) {
            self.remove(key);
        }
    }

    /// Appends an event the stream just stored, if the stream is cached.
    pub fn push(&mut self, key: &(i32, String), event: &Event) {
        if let Some(e) = self.entries.get_mut(key) {
            e.bytes += event.bytes.len();
            self.bytes += event.bytes.len();
            e.events.push_back(event.clone());
        }
    }

    /// Events `from..to` if cached.
    pub fn range(&self, key: &(i32, String), from: u64, to: u64) -> Option<Vec<&Event>> {
        let e = self.entries.get(key)?;
        if from < e.first {
            return None;
        }
        let lo = usize::try_from(from - e.first).ok()?;
        let hi = usize::try_from(to - e.first).ok()?;
        (hi <= e.events.len()).then(|| e.events.range(lo..hi).collect())
    }

    /// Caches events read from state, starting at index `first`.
    pub fn insert(&mut self, key: (i32, String), first: u64, events: VecDeque<Event>, meta: Meta) {
        self.remove(&key);
        let bytes = events.iter().map(|e| e.bytes.len()).sum();
        self.bytes += bytes;
        self.entries.insert(
            key,
            Entry {
                synced: meta,
                first,
                events,
                bytes,
                used: 0,
            },
        );
    }

    /// Records the stream's new `Meta` after this instance stored it,
    /// forgets events before `meta.head`, and keeps the cache in budget.
    pub fn sync(&mut self, key: &(i32, String), meta: Meta) {
        self.clock += 1;
        let clock = self.clock;
        let mut freed = 0;
        if let Some(e) = self.entries.get_mut(key) {
            while e.first < meta.head {
                let Some(old) = e.events.pop_front() else {
                    break;
                };
                e.bytes -= old.bytes.len();
                freed += old.bytes.len();
                e.first += 1;
            }
            e.synced = meta;
            e.used = clock;
            if e.first + e.events.len() as u64 != meta.next {
                // Cannot happen while callers keep the invariant; if it
                // did, state is still right and only the cache goes.
                self.bytes -= freed;
                self.remove(key);
                return;
            }
        }
        self.bytes -= freed;
        while self.bytes > self.budget {
            let Some(lru) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.remove(&lru);
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(offset: i64, text: &str) -> Event {
        Event {
            offset,
            bytes: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn keys_and_event_encoding() {
        assert_eq!(event_key("s", 255), b"ev/s/00000000000000ff");
        assert_ne!(event_key("a/1", 0), event_key("a", 0));
        assert_eq!(meta_key("s"), b"meta/s");
        let e = ev(-7, "hello");
        assert_eq!(Event::decode(&e.encode()), Some(e));
        assert_eq!(Event::decode(b"short"), None);
    }

    #[test]
    fn the_cache_follows_state_and_stays_in_budget() {
        let key = (0, "s".to_string());
        let mut c = Cache::new(20);
        let mut meta = Meta {
            next: 2,
            head: 0,
            window_start: 2,
            last_offset: 1,
        };
        c.insert(
            key.clone(),
            0,
            VecDeque::from([ev(0, "aaaa"), ev(1, "bbbb")]),
            meta,
        );
        c.push(&key, &ev(2, "cccc"));
        meta.next = 3;
        meta.head = 1;
        c.sync(&key, meta);
        assert_eq!(c.bytes(), 8);
        let got: Vec<i64> = c
            .range(&key, 1, 3)
            .unwrap()
            .iter()
            .map(|e| e.offset)
            .collect();
        assert_eq!(got, vec![1, 2]);
        assert!(c.range(&key, 0, 2).is_none(), "evicted");
        assert!(c.range(&key, 1, 4).is_none(), "not there yet");

        // Another writer moved the stream on: the entry goes.
        let mut other = meta;
        other.next += 5;
        c.check(&key, &other);
        assert!(c.range(&key, 1, 3).is_none());
        assert_eq!(c.bytes(), 0);

        // Over budget, the least recently used stream goes first.
        let k2 = (0, "t".to_string());
        c.insert(
            key.clone(),
            0,
            VecDeque::from([ev(0, "0123456789")]),
            Meta { next: 1, ..meta },
        );
        c.sync(
            &key,
            Meta {
                next: 1,
                head: 0,
                ..meta
            },
        );
        c.insert(
            k2.clone(),
            0,
            VecDeque::from([ev(0, "0123456789abc")]),
            Meta { next: 1, ..meta },
        );
        c.sync(
            &k2,
            Meta {
                next: 1,
                head: 0,
                ..meta
            },
        );
        assert!(c.range(&key, 0, 1).is_none());
        assert!(c.range(&k2, 0, 1).is_some());
        assert!(c.bytes() <= 20);
    }
}
