//! Keyed state that plugins read and write through the `state` import.
//!
//! State is host-held so it survives instance restarts and plugin swaps. The
//! [`StateStore`] trait is the seam for a durable backend; the in-memory store
//! is the only one today.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whose state: a stage, and one partition of its input (or `STAGE_SCOPE`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub stage: Arc<str>,
    pub partition: i32,
}

/// The partition number of stage-wide state, used during `init`.
pub const STAGE_SCOPE: i32 = -1;

pub trait StateStore: Send + Sync + 'static {
    fn get(&self, scope: &Scope, key: &[u8]) -> Option<Vec<u8>>;
    /// Sets a key, to be dropped `ttl` after this call if given (a zero
    /// `ttl` deletes it).
    fn set(&self, scope: &Scope, key: &[u8], value: &[u8], ttl: Option<Duration>);
    fn delete(&self, scope: &Scope, key: &[u8]);
    /// Drops every key of a stage (all partitions).
    fn clear_stage(&self, stage: &str);
    /// The number of live keys a stage holds.
    fn len(&self, stage: &str) -> usize;
    /// The partitions a stage holds state for, sorted.
    fn partitions(&self, stage: &str) -> Vec<i32>;
    /// How many keys of a stage have been dropped at the end of their ttl
    /// since the process started (an expired key written again before a
    /// sweep reached it is replaced, not counted).
    fn expired(&self, stage: &str) -> u64;
}

/// How often a partition with expiring keys is swept. Expired keys read as
/// absent at once; the sweep only returns their memory, so its cost (a pass
/// over the partition) is paid at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: impl FnOnce() -> Instant) -> bool {
        self.expires.is_none_or(|at| now() < at)
    }
}

#[derive(Default)]
struct Keys {
    entries: HashMap<Vec<u8>, Entry>,
    /// Entries with an expiry; while there are none, nothing reads the clock.
    expiring: usize,
    next_sweep: Option<Instant>,
}

impl Keys {
    fn insert(&mut self, key: &[u8], entry: Entry) {
        let expiring = entry.expires.is_some();
        if let Some(old) = self.entries.insert(key.to_vec(), entry) {
            self.expiring -= usize::from(old.expires.is_some());
        }
        self.expiring += usize::from(expiring);
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.entries.remove(key) {
            self.expiring -= usize::from(old.expires.is_some());
        }
    }

    /// Drops the expired entries if a sweep is due; returns how many.
    fn sweep(&mut self, now: Instant) -> u64 {
        if self.expiring == 0 || self.next_sweep.is_some_and(|at| now < at) {
            return 0;
        }
        self.next_sweep = Some(now + SWEEP_EVERY);
        let before = self.entries.len();
        self.entries.retain(|_, e| e.live(|| now));
        let removed = before - self.entries.len();
        self.expiring -= removed;
        removed as u64
    }
}

type Partition = Arc<Mutex<Keys>>;

/// Where expiry reads the time; a test moves it by hand.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// State in process memory: lost on restart.
pub struct MemoryState {
    scopes: Mutex<HashMap<Scope, Partition>>,
    /// Per stage; kept apart from the keys so a replay's clear keeps it
    /// monotonic.
    expired: Mutex<HashMap<Arc<str>, u64>>,
    clock: Clock,
}

impl Default for MemoryState {
    fn default() -> Self {
        MemoryState::with_clock(Arc::new(Instant::now))
    }
}

impl MemoryState {
    pub fn with_clock(clock: Clock) -> Self {
        MemoryState {
            scopes: Mutex::default(),
            expired: Mutex::default(),
            clock,
        }
    }

    fn partition(&self, scope: &Scope) -> Partition {
        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        scopes.entry(scope.clone()).or_default().clone()
    }

    fn count_expired(&self, stage: &str, n: u64) {
        if n == 0 {
            return;
        }
        let mut expired = self.expired.lock().unwrap_or_else(|e| e.into_inner());
        match expired.get_mut(stage) {
            Some(count) => *count += n,
            None => {
                expired.insert(stage.into(), n);
            }
        }
    }
}

fn lock(p: &Partition) -> std::sync::MutexGuard<'_, Keys> {
    // A panic elsewhere while holding the lock leaves a consistent map: each
    // operation is a single insert or remove.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl StateStore for MemoryState {
    fn get(&self, scope: &Scope, key: &[u8]) -> Option<Vec<u8>> {
        let partition = self.partition(scope);
        let keys = lock(&partition);
        keys.entries
            .get(key)
            .filter(|e| e.live(|| (self.clock)()))
            .map(|e| e.value.clone())
    }

    fn set(&self, scope: &Scope, key: &[u8], value: &[u8], ttl: Option<Duration>) {
        let partition = self.partition(scope);
        let mut keys = lock(&partition);
        if ttl == Some(Duration::ZERO) {
            keys.remove(key);
            return;
        }
        let now = (ttl.is_some() || keys.expiring > 0).then(|| (self.clock)());
        let expires = ttl.zip(now).and_then(|(ttl, now)| now.checked_add(ttl));
        keys.insert(
            key,
            Entry {
                value: value.to_vec(),
                expires,
            },
        );
        if let Some(now) = now {
            let swept = keys.sweep(now);
            drop(keys);
            self.count_expired(&scope.stage, swept);
        }
    }

    fn delete(&self, scope: &Scope, key: &[u8]) {
        lock(&self.partition(scope)).remove(key);
    }

    fn clear_stage(&self, stage: &str) {
        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        scopes.retain(|s, _| &*s.stage != stage);
    }

    fn partitions(&self, stage: &str) -> Vec<i32> {
        let scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<i32> = scopes
            .keys()
            .filter(|s| &*s.stage == stage)
            .map(|s| s.partition)
            .collect();
        out.sort_unstable();
        out
    }

    /// Also sweeps the stage's partitions that are due, so that the count,
    /// scraped as a gauge, and the memory come down in partitions that are
    /// no longer written.
    fn len(&self, stage: &str) -> usize {
        let partitions: Vec<Partition> = {
            let scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
            scopes
                .iter()
                .filter(|(s, _)| &*s.stage == stage)
                .map(|(_, p)| p.clone())
                .collect()
        };
        let now = (self.clock)();
        let mut live = 0;
        for partition in partitions {
            let mut keys = lock(&partition);
            let swept = keys.sweep(now);
            live += if keys.expiring == 0 {
                keys.entries.len()
            } else {
                keys.entries.values().filter(|e| e.live(|| now)).count()
            };
            drop(keys);
            self.count_expired(stage, swept);
        }
        live
    }

    fn expired(&self, stage: &str) -> u64 {
        let expired = self.expired.lock().unwrap_or_else(|e| e.into_inner());
        expired.get(stage).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(stage: &str, partition: i32) -> Scope {
        Scope {
            stage: stage.into(),
            partition,
        }
    }

    #[test]
    fn scopes_are_isolated() {
        let s = MemoryState::default();
        s.set(&scope("a", 0), b"k", b"a0", None);
        s.set(&scope("a", 1), b"k", b"a1", None);
        s.set(&scope("b", 0), b"k", b"b0", None);
        assert_eq!(s.get(&scope("a", 0), b"k").as_deref(), Some(&b"a0"[..]));
        assert_eq!(s.get(&scope("a", 1), b"k").as_deref(), Some(&b"a1"[..]));
        assert_eq!(s.get(&scope("b", 0), b"k").as_deref(), Some(&b"b0"[..]));
        s.delete(&scope("a", 0), b"k");
        assert_eq!(s.get(&scope("a", 0), b"k"), None);
        assert_eq!(s.len("a"), 1);
        assert_eq!(s.partitions("a"), vec![0, 1]);
        s.clear_stage("a");
        assert_eq!(s.len("a"), 0);
        assert_eq!(s.len("b"), 1);
    }

    /// A clock that moves only when told to.
    fn manual_clock() -> (Clock, Arc<std::sync::atomic::AtomicU64>) {
        use std::sync::atomic::{AtomicU64, Ordering};
        let base = Instant::now();
        let offset_ms = Arc::new(AtomicU64::new(0));
        let offset = offset_ms.clone();
        let clock: Clock =
            Arc::new(move || base + Duration::from_millis(offset.load(Ordering::SeqCst)));
        (clock, offset_ms)
    }

    #[test]
    fn keys_with_a_ttl_expire_and_are_swept() {
        use std::sync::atomic::Ordering;
        let (clock, now_ms) = manual_clock();
        let s = MemoryState::with_clock(clock);
        let p0 = scope("a", 0);
        let ttl = Some(Duration::from_secs(10));
        s.set(&p0, b"dedup/1", b"", ttl);
        s.set(&p0, b"dedup/2", b"", ttl);
        s.set(&p0, b"totals", b"7", None);
        now_ms.store(5_000, Ordering::SeqCst);
        // Written again: its ten seconds start over.
        s.set(&p0, b"dedup/2", b"", ttl);
        assert_eq!(s.len("a"), 3);

        now_ms.store(10_000, Ordering::SeqCst);
        assert_eq!(s.get(&p0, b"dedup/1"), None, "expired at its deadline");
        assert!(s.get(&p0, b"dedup/2").is_some());
        assert_eq!(s.get(&p0, b"totals").as_deref(), Some(&b"7"[..]));
        assert_eq!(s.len("a"), 2, "the expired key is not counted");
        assert_eq!(s.expired("a"), 1, "and the sweep dropped it");

        now_ms.store(15_000, Ordering::SeqCst);
        assert_eq!(s.get(&p0, b"dedup/2"), None);
        assert_eq!(s.len("a"), 1);
        assert_eq!(s.expired("a"), 2);

        // A plain set takes the expiry away; a zero ttl deletes.
        s.set(&p0, b"dedup/3", b"", ttl);
        s.set(&p0, b"dedup/3", b"", None);
        s.set(&p0, b"totals", b"", Some(Duration::ZERO));
        now_ms.store(60_000, Ordering::SeqCst);
        assert!(s.get(&p0, b"dedup/3").is_some());
        assert_eq!(s.get(&p0, b"totals"), None);
        assert_eq!(s.len("a"), 1);

        // The count of expired keys survives a replay's clear.
        s.clear_stage("a");
        assert_eq!(s.expired("a"), 2);
        assert_eq!(s.expired("b"), 0);
    }

    #[test]
    fn writes_sweep_at_most_once_a_second() {
        use std::sync::atomic::Ordering;
        let (clock, now_ms) = manual_clock();
        let s = MemoryState::with_clock(clock);
        let p0 = scope("a", 0);
        for i in 0..100u32 {
            s.set(&p0, &i.to_le_bytes(), b"", Some(Duration::from_millis(10)));
        }
        now_ms.store(500, Ordering::SeqCst);
        s.set(&p0, b"next", b"", None);
        assert_eq!(s.expired("a"), 0, "the first write's sweep was 500 ms ago");
        now_ms.store(1_000, Ordering::SeqCst);
        s.set(&p0, b"next", b"", None);
        assert_eq!(s.expired("a"), 100);
        assert_eq!(lock(&s.partition(&p0)).entries.len(), 1);
    }
}
