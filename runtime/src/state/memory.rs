//! The live copy of keyed state, in process memory.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Change, Scope, StateStore, Usage};

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
    /// Keys changed since the changelog last took them; `None` when the
    /// stage has no changelog.
    changed: Option<HashSet<Vec<u8>>>,
}

impl Keys {
    fn new(tally: Arc<Tally>, tracked: bool) -> Self {
        Keys {
            entries: HashMap::new(),
            expiring: 0,
            next_sweep: None,
            bytes: 0,
            tally,
            changed: tracked.then(HashSet::new),
        }
    }

    fn mark(&mut self, key: &[u8]) {
        if let Some(changed) = &mut self.changed
            && !changed.contains(key)
        {
            changed.insert(key.to_vec());
        }
    }

    fn insert(&mut self, key: &[u8], entry: Entry) {
        self.mark(key);
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
            self.mark(key);
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
        if let Some(changed) = &mut self.changed {
            changed.clear();
        }
    }

    /// Drops the expired entries if a sweep is due; returns how many.
    fn sweep(&mut self, now: Instant) -> u64 {
        if self.expiring == 0 || self.next_sweep.is_some_and(|at| now < at) {
            return 0;
        }
        self.next_sweep = Some(now + SWEEP_EVERY);
        let before = (self.entries.len(), self.bytes);
        let mut bytes = self.bytes;
        let changed = &mut self.changed;
        self.entries.retain(|k, e| {
            let live = e.live(|| now);
            if !live {
                bytes -= k.len() + e.value.len();
                // Its tombstone goes to the changelog.
                if let Some(changed) = changed {
                    changed.insert(k.clone());
                }
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

/// State in process memory; durable when a changelog takes its changes.
pub struct MemoryState {
    /// Stages whose partitions remember their changed keys.
    tracked: Mutex<HashSet<Arc<str>>>,
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
            tracked: Mutex::default(),
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
        let tracked = scope.partition >= 0 && {
            let tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
            tracked.contains(&scope.stage)
        };
        let p = Arc::new(Mutex::new(Keys::new(self.tally(&scope.stage), tracked)));
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
        // A read makes no partition: a query must not leave one behind.
        let partition = self.existing(scope)?;
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

    fn track_changes(&self, stage: &str) {
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        tracked.insert(stage.into());
        drop(tracked);
        let scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        for (scope, p) in scopes.iter() {
            if &*scope.stage == stage && scope.partition >= 0 {
                lock(p).changed.get_or_insert_with(HashSet::new);
            }
        }
    }

    fn take_changes(&self, scope: &Scope) -> Vec<Change> {
        let Some(partition) = self.existing(scope) else {
            return Vec::new();
        };
        let mut keys = lock(&partition);
        if keys.changed.is_none() {
            return Vec::new();
        }
        let now = (self.clock)();
        // Keys whose time ran out go to the changelog as tombstones, even
        // in a partition no longer written.
        let swept = keys.sweep(now);
        let Some(changed) = keys.changed.as_mut().map(std::mem::take) else {
            return Vec::new();
        };
        let wall = wall_ms();
        let mut expired = Vec::new();
        let changes = changed
            .into_iter()
            .map(|key| {
                let entry = keys.entries.get(&key);
                match entry {
                    Some(e) if e.live(|| now) => {
                        let expires_at_ms = e.expires.map(|at| {
                            wall.saturating_add(
                                    at.saturating_duration_since(now).as_millis() as i64
                                )
                        });
                        Change {
                            value: Some(e.value.clone()),
                            key,
                            expires_at_ms,
                        }
                    }
                    found => {
                        if found.is_some() {
                            expired.push(key.clone());
                        }
                        Change {
                            key,
                            value: None,
                            expires_at_ms: None,
                        }
                    }
                }
            })
            .collect();
        // An expired key leaves memory with its tombstone.
        for key in &expired {
            keys.remove(key);
        }
        if let Some(changed) = &mut keys.changed {
            for key in &expired {
                changed.remove(key);
            }
        }
        drop(keys);
        self.count_expired(&scope.stage, swept + expired.len() as u64);
        changes
    }

    fn has_changes(&self, scope: &Scope) -> bool {
        self.existing(scope)
            .is_some_and(|p| lock(&p).changed.as_ref().is_some_and(|c| !c.is_empty()))
    }

    fn restore(&self, scope: &Scope, change: Change) {
        let partition = self.partition(scope);
        let mut keys = lock(&partition);
        let Some(value) = change.value else {
            keys.remove(&change.key);
            // Restoring a tombstone changes nothing the changelog lacks.
            if let Some(changed) = &mut keys.changed {
                changed.remove(&change.key);
            }
            return;
        };
        let now = (self.clock)();
        let expires = match change.expires_at_ms {
            None => None,
            Some(at) => {
                let left = at.saturating_sub(wall_ms());
                if left <= 0 {
                    // Expired while nobody held the partition: dropped,
                    // and its tombstone written at the next flush.
                    keys.remove(&change.key);
                    keys.mark(&change.key);
                    return;
                }
                now.checked_add(Duration::from_millis(left as u64))
            }
        };
        keys.insert(&change.key, Entry { value, expires });
        if let Some(changed) = &mut keys.changed {
            changed.remove(&change.key);
        }
    }

    fn drop_partition(&self, scope: &Scope) {
        let mut scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = scopes.remove(scope) {
            lock(&p).clear();
        }
    }
}

impl MemoryState {
    fn existing(&self, scope: &Scope) -> Option<Partition> {
        let scopes = self.scopes.lock().unwrap_or_else(|e| e.into_inner());
        scopes.get(scope).cloned()
    }
}

/// Milliseconds since the Unix epoch, now.
fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::STAGE_SCOPE;

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

    fn sorted(mut changes: Vec<Change>) -> Vec<Change> {
        changes.sort_by(|a, b| a.key.cmp(&b.key));
        changes
    }

    #[test]
    fn a_tracked_partition_hands_its_changed_keys_over_once() {
        use std::sync::atomic::Ordering;
        let (clock, now_ms) = manual_clock();
        let s = MemoryState::with_clock(clock);
        let p0 = scope("a", 0);
        s.set(&p0, b"before", b"untracked", None);
        s.track_changes("a");
        s.set(&scope("a", STAGE_SCOPE), b"init", b"x", None);
        assert!(s.take_changes(&scope("a", STAGE_SCOPE)).is_empty());
        assert!(!s.has_changes(&p0));
        s.set(&p0, b"stock", b"9", None);
        s.set(&p0, b"stock", b"8", None);
        s.set(&p0, b"dedup", b"", Some(Duration::from_secs(60)));
        s.set(&p0, b"gone", b"x", None);
        s.delete(&p0, b"gone");
        assert!(s.has_changes(&p0));
        let changes = sorted(s.take_changes(&p0));
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert_eq!(changes[0].key, b"dedup");
        let deadline = changes[0].expires_at_ms.expect("a ttl becomes a deadline");
        let in_a_minute = wall_ms() + 60_000;
        assert!((in_a_minute - 1_000..=in_a_minute).contains(&deadline));
        assert_eq!(
            (changes[1].key.as_slice(), changes[1].value.as_deref()),
            (&b"gone"[..], None)
        );
        assert_eq!(changes[2].value.as_deref(), Some(&b"8"[..]));
        assert_eq!(changes[2].expires_at_ms, None);
        assert!(s.take_changes(&p0).is_empty(), "taken once");

        // An expired key is handed over as a tombstone, and leaves memory.
        now_ms.store(61_000, Ordering::SeqCst);
        s.set(&p0, b"dedup2", b"", Some(Duration::from_secs(1)));
        let changes = sorted(s.take_changes(&p0));
        let keys: Vec<_> = changes
            .iter()
            .map(|c| (c.key.as_slice(), c.value.is_some()))
            .collect();
        assert_eq!(keys, vec![(&b"dedup"[..], false), (&b"dedup2"[..], true)]);
        now_ms.store(63_000, Ordering::SeqCst);
        let changes = s.take_changes(&p0);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].key.as_slice(), changes[0].value.as_deref()),
            (&b"dedup2"[..], None)
        );
        assert_eq!(s.len("a"), 3, "before, stock, and init's stage-wide key");
        assert_eq!(s.expired("a"), 2);
    }

    #[test]
    fn restoring_applies_values_deadlines_and_tombstones() {
        let s = MemoryState::default();
        s.track_changes("a");
        let p1 = scope("a", 1);
        let change = |key: &[u8], value: Option<&[u8]>, expires_at_ms| Change {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            expires_at_ms,
        };
        s.restore(&p1, change(b"stock", Some(b"300"), None));
        s.restore(&p1, change(b"stock", Some(b"299"), None));
        s.restore(&p1, change(b"old", Some(b"x"), None));
        s.restore(&p1, change(b"old", None, None));
        s.restore(&p1, change(b"live", Some(b"1"), Some(wall_ms() + 60_000)));
        s.restore(&p1, change(b"stale", Some(b"1"), Some(wall_ms() - 1)));
        assert_eq!(s.get(&p1, b"stock").as_deref(), Some(&b"299"[..]));
        assert_eq!(s.get(&p1, b"old"), None);
        assert!(s.get(&p1, b"live").is_some());
        assert_eq!(s.get(&p1, b"stale"), None);
        assert_eq!(s.usage("a"), Usage { bytes: 13, keys: 2 });
        // Only the key that expired while nobody held it needs writing.
        let changes = s.take_changes(&p1);
        assert_eq!(changes, vec![change(b"stale", None, None)]);
        s.drop_partition(&p1);
        assert_eq!(s.get(&p1, b"stock"), None);
        assert_eq!(s.usage("a"), Usage::default());
        assert!(s.partitions("a").is_empty());
    }
}
