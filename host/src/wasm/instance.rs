use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtx;

use super::bindings::Processor;
use super::bindings::weir::plugin::types::{Batch, BatchResult, InitContext};
use super::error::{CallError, CallErrorKind, WasmError};
use super::host::HostState;
use super::runtime::{EPOCH_TICK, Plugin, Runtime};
use crate::state::{STAGE_SCOPE, Scope};

/// What an instance of a stage's plugin is started with.
#[derive(Debug, Clone)]
pub struct StageContext {
    pub stage: String,
    /// Logical output names, sorted; `output.target` indexes this list.
    pub outputs: Vec<String>,
    /// `[stage.config]` as a JSON object.
    pub config_json: String,
    /// How long one `process` call may run.
    pub call_timeout: Duration,
    /// The most linear memory the instance may have, in bytes.
    pub memory_limit: usize,
    /// Environment variables the plugin is granted, with their values.
    pub env: Vec<(String, String)>,
    /// Whether the plugin sees the real clocks (otherwise they read zero).
    pub clock: bool,
}

/// A live plugin instance with its own store. Not reusable after a
/// [`CallError`]: the component may be in any state, so the caller drops it
/// and instantiates afresh.
pub struct Instance {
    store: Store<HostState>,
    bindings: Processor,
    plugin: Arc<Plugin>,
    deadline_ticks: u64,
}

impl Instance {
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// Runs `process` on one batch; state calls during it see the scope of
    /// the batch's partition, and its state writes take effect only if it
    /// returns.
    pub fn process(&mut self, batch: &Batch) -> Result<BatchResult, CallError> {
        let host = self.store.data_mut();
        host.scope.partition = batch.partition;
        host.begin_call();
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = self.bindings.call_process(&mut self.store, batch);
        self.store.data_mut().end_call(result.is_ok());
        result.map_err(|e| classify(&self.store.data().scope.stage, e))
    }
}

fn classify(stage: &str, error: wasmtime::Error) -> CallError {
    let kind = match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => CallErrorKind::Timeout,
        _ if format!("{error:?}").contains("forcing trap when growing memory") => {
            CallErrorKind::Memory
        }
        _ => CallErrorKind::Trap,
    };
    CallError {
        stage: stage.to_string(),
        kind,
        message: match kind {
            CallErrorKind::Timeout => "interrupted: the call ran past its deadline".to_string(),
            _ => format!("{error:#}"),
        },
    }
}

impl Runtime {
    /// Makes a fresh instance of `plugin` and calls its `init`.
    pub fn instantiate(
        &self,
        plugin: &Arc<Plugin>,
        ctx: &StageContext,
    ) -> Result<Instance, WasmError> {
        // Least privilege: no preopened directories, environment, arguments
        // or sockets; stdin is empty and stdout/stderr are discarded.
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(ctx.memory_limit)
            .instances(16)
            .tables(64)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limits,
            scope: Scope {
                stage: ctx.stage.as_str().into(),
                partition: STAGE_SCOPE,
            },
            state: self.state.clone(),
            pending: Default::default(),
            in_call: false,
            metrics: self.metrics.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let deadline_ticks = (ctx.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(deadline_ticks);

        let instantiate_err = |reason: String| WasmError::Instantiate {
            stage: ctx.stage.clone(),
            reason,
        };
        let bindings = plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| instantiate_err(format!("{e:#}")))?;
        let init = InitContext {
            stage: ctx.stage.clone(),
            outputs: ctx.outputs.clone(),
            config: ctx.config_json.clone(),
        };
        let init_err = |reason: String| WasmError::Init {
            stage: ctx.stage.clone(),
            reason,
        };
        bindings
            .call_init(&mut store, &init)
            .map_err(|e| init_err(format!("trapped: {e:#}")))?
            .map_err(init_err)?;
        Ok(Instance {
            store,
            bindings,
            plugin: plugin.clone(),
            deadline_ticks,
        })
    }
}
