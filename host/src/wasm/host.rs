//! What a plugin's store holds, and the host side of the `log`, `state` and
//! `metrics` imports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::weir::plugin::{log, metrics, state, types};
use super::clocks::MonotonicClock;
use super::limiter::Limiter;
use super::stdio::Capture;
use crate::metrics::{PluginMetricKey, Registry};
use crate::state::{Scope, StateStore};

/// A buffered write: the value and its ttl.
pub(crate) type Pending = (Vec<u8>, Option<Duration>);

pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// The plugin's stdout and stderr.
    pub(crate) stdio: Capture,
    /// The monotonic clock the plugin sees (also installed in `wasi`).
    pub(crate) monotonic: MonotonicClock,
    /// When the call under way (`init` or `process`) must end: timers the
    /// plugin waits on do not run past it (see `clocks`).
    pub(crate) deadline: Instant,
    pub(crate) scope: Scope,
    pub(crate) state: Arc<dyn StateStore>,
    /// State writes of the `process` call under way, applied only when it
    /// returns: a call that traps leaves no trace, so retrying its messages
    /// on a fresh instance does not find their effects already done.
    pub(crate) pending: HashMap<Vec<u8>, Option<Pending>>,
    /// Whether a `process` call is under way; during `init` writes go
    /// straight to the store.
    pub(crate) in_call: bool,
    pub(crate) metrics: Arc<Registry>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: types::Level, message: String) {
        let stage = &*self.scope.stage;
        let partition = self.scope.partition;
        match level {
            types::Level::Trace => tracing::trace!(stage, partition, "{message}"),
            types::Level::Debug => tracing::debug!(stage, partition, "{message}"),
            types::Level::Info => tracing::info!(stage, partition, "{message}"),
            types::Level::Warn => tracing::warn!(stage, partition, "{message}"),
            types::Level::Error => tracing::error!(stage, partition, "{message}"),
        }
    }
}

impl state::Host for HostState {
    fn get(&mut self, key: Vec<u8>) -> Option<Vec<u8>> {
        if let Some(written) = self.pending.get(&key) {
            return written.as_ref().map(|(value, _)| value.clone());
        }
        self.state.get(&self.scope, &key)
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.write(key, value, None)
    }

    fn set_with_ttl(&mut self, key: Vec<u8>, value: Vec<u8>, ttl_ms: u64) {
        if ttl_ms == 0 {
            return self.delete(key);
        }
        self.write(key, value, Some(Duration::from_millis(ttl_ms)))
    }

    fn delete(&mut self, key: Vec<u8>) {
        if self.in_call {
            self.pending.insert(key, None);
        } else {
            self.state.delete(&self.scope, &key)
        }
    }
}

impl HostState {
    fn write(&mut self, key: Vec<u8>, value: Vec<u8>, ttl: Option<Duration>) {
        if self.in_call {
            self.pending.insert(key, Some((value, ttl)));
        } else {
            self.state.set(&self.scope, &key, &value, ttl)
        }
    }

    /// Starts buffering state writes for one `process` call.
    pub(crate) fn begin_call(&mut self) {
        self.pending.clear();
        self.in_call = true;
    }

    /// Ends a `process` call: applies its writes if it returned, drops them
    /// if it trapped.
    pub(crate) fn end_call(&mut self, returned: bool) {
        self.in_call = false;
        if !returned {
            self.pending.clear();
            return;
        }
        for (key, value) in self.pending.drain() {
            match value {
                Some((value, ttl)) => self.state.set(&self.scope, &key, &value, ttl),
                None => self.state.delete(&self.scope, &key),
            }
        }
    }
}

impl HostState {
    fn metric_key(&self, name: String, labels: Vec<metrics::Label>) -> PluginMetricKey {
        let mut labels: Vec<(String, String)> =
            labels.into_iter().map(|l| (l.name, l.value)).collect();
        labels.sort();
        PluginMetricKey {
            stage: self.scope.stage.to_string(),
            name,
            labels,
        }
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, labels: Vec<metrics::Label>, delta: u64) {
        let key = self.metric_key(name, labels);
        self.metrics.counter_add(key, delta)
    }

    fn gauge_set(&mut self, name: String, labels: Vec<metrics::Label>, value: f64) {
        let key = self.metric_key(name, labels);
        self.metrics.gauge_set(key, value)
    }
}
