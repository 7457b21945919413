//! What a plugin's store holds, and the host side of the `log`, `state` and
//! `metrics` imports.

use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::weir::plugin::{log, metrics, state, types};
use crate::metrics::{PluginMetricKey, Registry};
use crate::state::{Scope, StateStore};

pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) scope: Scope,
    pub(crate) state: Arc<dyn StateStore>,
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
        self.state.get(&self.scope, &key)
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.state.set(&self.scope, &key, &value)
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.state.delete(&self.scope, &key)
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
