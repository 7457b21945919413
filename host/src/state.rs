//! Keyed state that plugins read and write through the `state` import.
//!
//! State is host-held so it survives instance restarts and plugin swaps. The
//! [`StateStore`] trait is the seam for a durable backend; the in-memory store
//! is the only one today.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// What a stage's keyed state takes, all partitions together, for its
    /// quota: keys whose ttl has run out count until a sweep drops them.
    fn usage(&self, stage: &str) -> Usage;
    /// The bytes (key and value) of the entry stored under `key`, counted
    /// in [`StateStore::usage`] whether or not its ttl has run out.
    fn stored_size(&self, scope: &Scope, key: &[u8]) -> Option<usize>;
}

/// How much keyed state a stage holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Keys and values, bytes.
    pub bytes: u64,
    pub keys: u64,
}

/// A stage's usage, kept up to date by every partition of the stage.
#[derive(Debug, Default)]
struct Tally {
    bytes: AtomicU64,
    keys: AtomicU64,
}

impl Tally {
    fn add(&self, bytes: usize, keys: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.keys.fetch_add(keys as u64, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize, keys: usize) {
        self.bytes.fetch_sub(bytes as u64, Ordering::Relaxed);
        self.keys.fetch_sub(keys as u64, Ordering::Relaxed);
    }

    fn get(&self) -> Usage {
        Usage {
            bytes: self.bytes.load(Ordering::Relaxed),
            keys: self.keys.load(Ordering::Relaxed),
        }
    }
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

struct Keys {
    entries: HashMap<Vec<u8>, Entry>,
    /// Entries with an expiry; while there are none, nothing reads the clock.
    expiring: usize,
    next_sweep: Option<Instant>,
    /// Keys and values of `entries`, bytes.
    bytes: usize,
    /// The stage's usage, which this partition's changes go to.
    tally: Arc<Tally>,
}

impl Keys {
    fn new(tally: Arc<Tally>) -> Self {
        Keys {
            entries: HashMap::new(),
            expiring: 0,
            next_sweep: None,
            bytes: 0,
            tally,
        }
    }

    fn insert(&mut self, key: &[u8], entry: Entry) {
        let expiring = entry.expires.is_some();
        let size = key.len() + entry.value.len();
        self.bytes += size;
        self.tally.add(size, 1);
        if let Some(old) = self.entries.insert(key.to_vec(), entry) {
            self.expiring -= usize::from(old.expires.is_some());
            self.forget(key.len() + old.value.len());
        }
        self.expiring += usize::from(expiring);
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.entries.remove(key) {
            self.expiring -= usize::from(old.expires.is_some());
            self.forget(key.len() + old.value.len());
        }
    }

    /// Takes an entry of `size` bytes out of the counts.
    fn forget(&mut self, size: usize) {
        self.bytes -= size;
        self.tally.sub(size, 1);
    }

    /// Drops every entry (the partition is being thrown away).
    fn clear(&mut self) {
        self.tally.sub(self.bytes, self.entries.len());
        self.bytes = 0;
        self.expiring = 0;
        self.entries.clear();
    }

    /// Drops the expired entries if a sweep is due; returns how many.
    fn sweep(&mut self, now: Instant) -> u64 {
        if self.expiring == 0 || self.next_sweep.is_some_and(|at| now < at) {
            return 0;
        }
        self.next_sweep = Some(now + SWEEP_EVERY);
        let before = (self.entries.len(), self.bytes);
        let mut bytes = self.bytes;
        self.entries.retain(|k, e| {
            let live = e.live(|| now);
            if !live {
                bytes -= k.len() + e.value.len();
            }
            live
        });
        self.bytes = bytes;
        let removed = before.0 - self.entries.len();
        self.tally.sub(before.1 - bytes, removed);
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
    /// Per stage: bytes and keys, for the stage's quota.
    tallies: Mutex<HashMap<Arc<str>, Arc<Tally>>>,
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
            tallies: Mutex::default(),
            clock,
        }
    }

    fn partition(&self, scope: &Scope) -> Partition {
        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = scopes.get(scope) {
            return p.clone();
        }
        let p = Arc::new(Mutex::new(Keys::new(self.tally(&scope.stage))));
        scopes.insert(scope.clone(), p.clone());
        p
    }

    fn tally(&self, stage: &Arc<str>) -> Arc<Tally> {
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        tallies.entry(stage.clone()).or_default().clone()
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
        scopes.retain(|s, p| {
            if &*s.stage != stage {
                return true;
            }
            // Emptied, not only unlinked, so the stage's usage comes down
            // by what it held.
            lock(p).clear();
            false
        });
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

    fn usage(&self, stage: &str) -> Usage {
        let tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        tallies.get(stage).map(|t| t.get()).unwrap_or_default()
    }

    fn stored_size(&self, scope: &Scope, key: &[u8]) -> Option<usize> {
        let scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        let partition = scopes.get(scope)?.clone();
        drop(scopes);
        let keys = lock(&partition);
        keys.entries.get(key).map(|e| key.len() + e.value.len())
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

    #[test]
    fn usage_counts_keys_and_values_of_every_partition() {
        use std::sync::atomic::Ordering;
        let (clock, now_ms) = manual_clock();
        let s = MemoryState::with_clock(clock);
        let (p0, p1) = (scope("a", 0), scope("a", 1));
        assert_eq!(s.usage("a"), Usage::default());
        s.set(&p0, b"k1", b"12345", None);
        s.set(&p1, b"k1", b"1", None);
        s.set(&scope("b", 0), b"other", b"stage", None);
        assert_eq!(
            s.usage("a"),
            Usage {
                bytes: 7 + 3,
                keys: 2
            }
        );
        assert_eq!(s.stored_size(&p0, b"k1"), Some(7));
        assert_eq!(s.stored_size(&p0, b"nope"), None);
        // An overwrite counts the new value only.
        s.set(&p0, b"k1", b"1234567890", None);
        assert_eq!(
            s.usage("a"),
            Usage {
                bytes: 12 + 3,
                keys: 2
            }
        );
        s.delete(&p1, b"k1");
        s.delete(&p1, b"k1");
        assert_eq!(s.usage("a"), Usage { bytes: 12, keys: 1 });
        // An expired key counts until it is swept.
        s.set(&p1, b"ttl", b"x", Some(Duration::from_millis(10)));
        assert_eq!(s.usage("a"), Usage { bytes: 16, keys: 2 });
        now_ms.store(2_000, Ordering::SeqCst);
        assert_eq!(s.len("a"), 1);
        assert_eq!(s.usage("a"), Usage { bytes: 12, keys: 1 });
        s.set(&p1, b"gone", b"", Some(Duration::ZERO));
        assert_eq!(s.usage("a"), Usage { bytes: 12, keys: 1 });
        s.clear_stage("a");
        assert_eq!(s.usage("a"), Usage::default());
        assert_eq!(s.usage("b"), Usage { bytes: 10, keys: 1 });
    }
}
