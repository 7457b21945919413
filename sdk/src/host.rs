//! The host's imports. In a component they call the weir host; in a native
//! build (plugin unit tests) they use in-memory fakes that
//! [`crate::testing`] can inspect.

/// Keyed state held by the host, scoped to the stage and to the partition of
/// the batch being processed (the stage as a whole during `init`).
pub mod state {
    use super::imp;

    pub fn get(key: &[u8]) -> Option<Vec<u8>> {
        imp::state_get(key)
    }

    /// Sets a key, kept until deleted or set again.
    pub fn set(key: &[u8], value: &[u8]) {
        imp::state_set(key, value)
    }

    /// Sets a key that the host drops `ttl` after this write unless it is
    /// written again first: for keys that matter only for a while, such as
    /// the ids kept to drop duplicates. Reads do not extend it; a zero `ttl`
    /// deletes the key. In unit tests, [`crate::testing::advance_clock`]
    /// moves the time expiry reads.
    pub fn set_with_ttl(key: &[u8], value: &[u8], ttl: std::time::Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        // A sub-millisecond ttl is not a delete.
        imp::state_set_with_ttl(key, value, if ttl.is_zero() { 0 } else { ms.max(1) })
    }

    pub fn delete(key: &[u8]) {
        imp::state_delete(key)
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
            let scope = f.scope;
            f.state.insert((scope, k.to_vec()), (v.to_vec(), None));
        })
    }
    pub fn state_set_with_ttl(k: &[u8], v: &[u8], ttl_ms: u64) {
        if ttl_ms == 0 {
            return state_delete(k);
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
