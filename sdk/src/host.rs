//! The host's imports. In a component they call the weir host; in a native
//! build (plugin unit tests) they use in-memory fakes that
//! [`crate::testing`] can inspect.

/// Keyed state held by the host, scoped to the stage and to the partition of
/// the batch being processed (the stage as a whole during `init`).
///
/// # A rejected message leaves no state behind
///
/// While the SDK runs one of the plugin's handlers ([`crate::Processor::process`]
/// for one message, or [`crate::Processor::init`]), the writes it makes
/// (`set`, `set_with_ttl`, `delete` and the JSON helpers) are held in the
/// plugin, keyed by state key, and reach the host only if the handler
/// returns `Ok`. A handler that returns `Err` (a message sent to the
/// dead-letter topic, or a failed `init`) leaves no state behind: when the
/// message is re-driven later it finds the state as it was before it, not
/// its own half-done effects. Reads see the handler's own writes first, then
/// what earlier messages (and the host) hold, so within a batch a message
/// sees every write of the messages before it that succeeded, and none of
/// the ones rejected.
///
/// When a handler succeeds, its writes are passed on as the calls it made,
/// in order, except that of several writes to one key only the last is
/// made (a `set` followed by a `delete` is a `delete`; a `set_with_ttl`
/// keeps its ttl, which the host counts from when the batch's writes take
/// effect). A handler that writes nothing costs no host call. The host in
/// turn applies a batch's writes when the whole call returns, and none if
/// it traps (a panic): the host then retries the batch's messages one by
/// one and dead-letters the one that traps.
///
/// A write past the stage's state quota (`state_max_bytes`,
/// `state_max_keys`) is refused by the host when the handler's writes are
/// passed on, which fails the message as `state_limit`. A handler's
/// buffered writes live in the plugin's own memory until then, so a single
/// message that writes more than the stage's `memory_mb` allows fails as out
/// of memory instead.
///
/// Outside a handler (in a native unit test that reads or seeds state
/// directly, for example) reads and writes go straight to the host. Only
/// state is held back: the logs and metrics of a rejected message, and
/// whatever it changed in the plugin's own fields, are kept.
pub mod state {
    use super::{imp, overlay};

    /// The value of `key`, or `None` if it was never set, was deleted or
    /// has expired. Sees the current handler's own writes.
    pub fn get(key: &[u8]) -> Option<Vec<u8>> {
        match overlay::get(key) {
            Some(written) => written,
            None => imp::state_get(key),
        }
    }

    /// Sets a key, kept until deleted or set again.
    pub fn set(key: &[u8], value: &[u8]) {
        if !overlay::put(key, overlay::Write::Set(value, None)) {
            imp::state_set(key, value)
        }
    }

    /// Sets a key that the host drops `ttl` after this write unless it is
    /// written again first: for keys that matter only for a while, such as
    /// the ids kept to drop duplicates. Time is the host's wall clock,
    /// counted from when the batch's writes take effect, and a deadline
    /// survives restarts. Reads do not extend it; a zero `ttl` deletes the
    /// key. In unit tests, [`crate::testing::advance_clock`] moves the time
    /// expiry reads.
    pub fn set_with_ttl(key: &[u8], value: &[u8], ttl: std::time::Duration) {
        if ttl.is_zero() {
            return delete(key);
        }
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        // A sub-millisecond ttl is not a delete.
        let ms = ms.max(1);
        if !overlay::put(key, overlay::Write::Set(value, Some(ms))) {
            imp::state_set_with_ttl(key, value, ms)
        }
    }

    /// Removes a key.
    pub fn delete(key: &[u8]) {
        if !overlay::put(key, overlay::Write::Delete) {
            imp::state_delete(key)
        }
    }

    /// Reads a JSON value; `None` when the key is absent or holds something
    /// that does not parse as `T` (for example after a schema change).
    pub fn get_json<T: serde::de::DeserializeOwned>(key: &[u8]) -> Option<T> {
        get(key).and_then(|v| serde_json::from_slice(&v).ok())
    }

    pub fn set_json<T: serde::Serialize + ?Sized>(key: &[u8], value: &T) {
        // Serialising plain data into a Vec cannot fail.
        if let Ok(bytes) = serde_json::to_vec(value) {
            set(key, &bytes)
        }
    }
}

/// The state writes of the handler under way, held in the plugin until the
/// handler returns (see [`state`]).
pub(crate) mod overlay {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::imp;

    /// A write as the plugin makes it.
    pub(crate) enum Write<'a> {
        /// A value and its ttl in ms (never 0).
        Set(&'a [u8], Option<u64>),
        Delete,
    }

    /// A buffered write.
    #[derive(Debug)]
    enum Held {
        Set(Vec<u8>, Option<u64>),
        Delete,
    }

    struct Overlay {
        /// Whether a handler is running: writes are held, not passed on.
        active: bool,
        /// Counts the handler's writes, so they are passed on in the order
        /// of each key's last write.
        seq: u64,
        /// Per key: the sequence number of its last write, and that write.
        /// A BTreeMap: no hashing (whose random keys a sandbox may not
        /// provide), and cheap for the few keys a message usually writes.
        writes: BTreeMap<Vec<u8>, (u64, Held)>,
    }

    thread_local! {
        // A component instance is single-threaded; natively, each test
        // thread has its own, like the fake host.
        static OVERLAY: RefCell<Overlay> = const {
            RefCell::new(Overlay { active: false, seq: 0, writes: BTreeMap::new() })
        };
    }

    /// The current handler's write of `key`: `Some(None)` for a delete,
    /// `None` if it has not written the key (or no handler is running).
    pub(crate) fn get(key: &[u8]) -> Option<Option<Vec<u8>>> {
        OVERLAY.with(|o| {
            let o = o.borrow();
            if o.writes.is_empty() {
                return None;
            }
            o.writes.get(key).map(|(_, held)| match held {
                Held::Set(value, _) => Some(value.clone()),
                Held::Delete => None,
            })
        })
    }

    /// Holds a write if a handler is running; `false` if none is, and the
    /// caller passes it straight to the host.
    pub(crate) fn put(key: &[u8], write: Write<'_>) -> bool {
        OVERLAY.with(|o| {
            let mut o = o.borrow_mut();
            if !o.active {
                return false;
            }
            let held = match write {
                Write::Set(value, ttl) => Held::Set(value.to_vec(), ttl),
                Write::Delete => Held::Delete,
            };
            o.seq += 1;
            let seq = o.seq;
            match o.writes.get_mut(key) {
                Some(slot) => *slot = (seq, held),
                None => {
                    o.writes.insert(key.to_vec(), (seq, held));
                }
            }
            true
        })
    }

    /// Runs a handler with its state writes held, and passes them to the
    /// host only if it returns `Ok`. An `Err`, or a panic unwinding out of
    /// it (natively; in a component a panic traps), drops them.
    pub(crate) fn run<T, E>(handler: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let guard = begin();
        let result = handler();
        if result.is_ok() {
            guard.commit();
        }
        result
    }

    /// The handler under way; dropping it without [`Guard::commit`]
    /// discards its writes.
    struct Guard;

    fn begin() -> Guard {
        OVERLAY.with(|o| {
            let mut o = o.borrow_mut();
            debug_assert!(!o.active, "state handlers do not nest");
            o.active = true;
            o.seq = 0;
            o.writes.clear();
        });
        Guard
    }

    impl Guard {
        /// Passes the handler's writes to the host: one call per key
        /// written, its last write, in the order of those last writes.
        fn commit(self) {
            let writes = OVERLAY.with(|o| {
                let mut o = o.borrow_mut();
                o.active = false;
                std::mem::take(&mut o.writes)
            });
            drop(self);
            if writes.is_empty() {
                return;
            }
            let mut writes: Vec<_> = writes.into_iter().collect();
            writes.sort_unstable_by_key(|(_, (seq, _))| *seq);
            for (key, (_, held)) in writes {
                match held {
                    Held::Set(value, None) => imp::state_set(&key, &value),
                    Held::Set(value, Some(ttl_ms)) => imp::state_set_with_ttl(&key, &value, ttl_ms),
                    Held::Delete => imp::state_delete(&key),
                }
            }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            // After a commit there is nothing left; otherwise (an `Err`, or
            // a panic unwinding natively) the handler's writes are dropped.
            OVERLAY.with(|o| {
                let mut o = o.borrow_mut();
                o.active = false;
                o.writes.clear();
            });
        }
    }
}

/// Logging into the host's structured logs, tagged with the stage.
pub mod log {
    use super::imp;
    pub use super::imp::Level;

    pub fn log(level: Level, message: &str) {
        imp::log(level, message)
    }

    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }

    pub fn info(message: &str) {
        log(Level::Info, message)
    }

    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }

    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// Counters and gauges, exported by the host with the stage as a label.
pub mod metrics {
    use super::imp;

    pub fn counter_add(name: &str, labels: &[(&str, &str)], delta: u64) {
        imp::counter_add(name, labels, delta)
    }

    pub fn gauge_set(name: &str, labels: &[(&str, &str)], value: f64) {
        imp::gauge_set(name, labels, value)
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    pub use crate::bindings::weir::plugin::types::Level;
    use crate::bindings::weir::plugin::{log, metrics, state};

    pub fn state_get(key: &[u8]) -> Option<Vec<u8>> {
        state::get(key)
    }
    pub fn state_set(key: &[u8], value: &[u8]) {
        state::set(key, value)
    }
    pub fn state_set_with_ttl(key: &[u8], value: &[u8], ttl_ms: u64) {
        state::set_with_ttl(key, value, ttl_ms)
    }
    pub fn state_delete(key: &[u8]) {
        state::delete(key)
    }
    pub fn log(level: Level, message: &str) {
        log::log(level, message)
    }
    fn labels(labels: &[(&str, &str)]) -> Vec<metrics::Label> {
        labels
            .iter()
            .map(|(n, v)| metrics::Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect()
    }
    pub fn counter_add(name: &str, l: &[(&str, &str)], delta: u64) {
        metrics::counter_add(name, &labels(l), delta)
    }
    pub fn gauge_set(name: &str, l: &[(&str, &str)], value: f64) {
        metrics::gauge_set(name, &labels(l), value)
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod imp {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    pub use crate::bindings::weir::plugin::types::Level;

    pub(crate) type MetricKey = (String, Vec<(String, String)>);
    /// A value and when it expires on the fake clock, in ms.
    pub(crate) type Stored = (Vec<u8>, Option<u64>);

    #[derive(Default)]
    pub(crate) struct Fake {
        /// The partition whose state is visible; -1 for the stage scope.
        pub scope: i32,
        /// Values, with the fake clock's time at which they expire.
        pub state: BTreeMap<(i32, Vec<u8>), Stored>,
        /// The fake clock expiry reads, in ms; moved by `testing::advance_clock`.
        pub now_ms: u64,
        pub counters: BTreeMap<MetricKey, u64>,
        pub gauges: BTreeMap<MetricKey, f64>,
        pub logs: Vec<(Level, String)>,
        /// Every state write that reached the fake host, in order.
        pub writes: Vec<StateWrite>,
    }

    /// A state write as the host received it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum StateWrite {
        Set(Vec<u8>, Vec<u8>),
        SetWithTtl(Vec<u8>, Vec<u8>, u64),
        Delete(Vec<u8>),
    }

    thread_local! {
        pub(crate) static FAKE: RefCell<Fake> = RefCell::new(Fake { scope: -1, ..Fake::default() });
    }

    fn key(name: &str, labels: &[(&str, &str)]) -> MetricKey {
        let mut labels: Vec<_> = labels
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        labels.sort();
        (name.to_string(), labels)
    }

    pub fn state_get(k: &[u8]) -> Option<Vec<u8>> {
        FAKE.with(|f| {
            let f = f.borrow();
            f.state
                .get(&(f.scope, k.to_vec()))
                .filter(|(_, expires)| expires.is_none_or(|at| f.now_ms < at))
                .map(|(v, _)| v.clone())
        })
    }
    pub fn state_set(k: &[u8], v: &[u8]) {
        FAKE.with(|f| {
            let mut f = f.borrow_mut();
            f.writes.push(StateWrite::Set(k.to_vec(), v.to_vec()));
            let scope = f.scope;
            f.state.insert((scope, k.to_vec()), (v.to_vec(), None));
        })
    }
    pub fn state_set_with_ttl(k: &[u8], v: &[u8], ttl_ms: u64) {
        FAKE.with(|f| {
            f.borrow_mut()
                .writes
                .push(StateWrite::SetWithTtl(k.to_vec(), v.to_vec(), ttl_ms))
        });
        if ttl_ms == 0 {
            return remove(k);
        }
        FAKE.with(|f| {
            let mut f = f.borrow_mut();
            let scope = f.scope;
            let expires = f.now_ms.saturating_add(ttl_ms);
            f.state
                .insert((scope, k.to_vec()), (v.to_vec(), Some(expires)));
        })
    }
    pub fn state_delete(k: &[u8]) {
        FAKE.with(|f| f.borrow_mut().writes.push(StateWrite::Delete(k.to_vec())));
        remove(k)
    }
    fn remove(k: &[u8]) {
        FAKE.with(|f| {
            let mut f = f.borrow_mut();
            let scope = f.scope;
            f.state.remove(&(scope, k.to_vec()));
        })
    }
    pub fn log(level: Level, message: &str) {
        FAKE.with(|f| f.borrow_mut().logs.push((level, message.to_string())))
    }
    pub fn counter_add(name: &str, labels: &[(&str, &str)], delta: u64) {
        FAKE.with(|f| {
            *f.borrow_mut()
                .counters
                .entry(key(name, labels))
                .or_default() += delta
        })
    }
    pub fn gauge_set(name: &str, labels: &[(&str, &str)], value: f64) {
        FAKE.with(|f| {
            f.borrow_mut().gauges.insert(key(name, labels), value);
        })
    }
    pub(crate) fn metric_key(name: &str, labels: &[(&str, &str)]) -> MetricKey {
        key(name, labels)
    }
}
