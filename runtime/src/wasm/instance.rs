use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::ClosedInputStream;

use super::bindings::Processor;
use super::bindings::weir::plugin::types::{Batch, BatchResult, InitContext};
use super::clocks::{MonotonicClock, WallClock};
use super::error::{CallError, CallErrorKind, WasmError, cap_reason};
use super::host::{HostState, Quotas, StateLimitExceeded};
use super::limiter::{Limiter, MemoryLimitExceeded};
use super::runtime::{EPOCH_TICK, Plugin, Runtime};
use super::stdio::Capture;
use crate::state::{STAGE_SCOPE, Scope};

/// The least time a plugin's `init` gets, whatever the stage's call
/// timeout: it runs once per instance, off the per-message path.
const INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most random bytes a plugin gets in one `wasi:random` call.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

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
    /// What the plugin may hold in the host, outside its linear memory.
    pub quotas: Quotas,
}

/// A live plugin instance with its own store. Not reusable after a
/// [`CallError`]: the component may be in any state, so the caller drops it
/// and instantiates afresh.
pub struct Instance {
    store: Store<HostState>,
    bindings: Processor,
    plugin: Arc<Plugin>,
    deadline_ticks: u64,
    call_timeout: Duration,
}

impl Instance {
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The most linear memory this instance has had, in bytes (all its
    /// memories together; never more than the stage's memory limit). It
    /// only grows: wasm memory does not shrink.
    pub fn memory_high_water(&self) -> usize {
        self.store.data().limiter.high_water()
    }

    /// Lines of stdout and stderr dropped by the rate limit so far.
    pub fn stdio_lines_dropped(&self) -> u64 {
        self.store.data().stdio.dropped_lines()
    }

    /// Runs `process` on one batch; state calls during it see the scope of
    /// the batch's partition, and its state writes take effect only if it
    /// returns.
    pub fn process(&mut self, batch: &Batch) -> Result<BatchResult, CallError> {
        self.process_with(batch, Ok)
    }

    /// Runs `process`, and applies its state writes only if `accept` takes
    /// what it returned: a result the host refuses (outputs over the
    /// stage's limits) leaves no state behind, as a trap does, and fails
    /// with kind `output_limit`. The instance stays usable.
    pub fn process_with<T>(
        &mut self,
        batch: &Batch,
        accept: impl FnOnce(BatchResult) -> Result<T, String>,
    ) -> Result<T, CallError> {
        let host = self.store.data_mut();
        host.scope.partition = batch.partition;
        host.begin_call();
        host.stdio.begin_call();
        host.limiter.clear_refused();
        host.deadline = Instant::now() + self.call_timeout;
        self.store.set_epoch_deadline(self.deadline_ticks);
        let result = self.bindings.call_process(&mut self.store, batch);
        let result = match result {
            Ok(r) => accept(r).map_err(|message| CallError {
                stage: self.store.data().scope.stage.to_string(),
                kind: CallErrorKind::OutputLimit,
                message,
            }),
            Err(e) => {
                self.store.data_mut().end_call(false);
                return Err(classify(self.store.data(), e));
            }
        };
        self.store.data_mut().end_call(result.is_ok());
        result
    }
}

fn classify(host: &HostState, error: wasmtime::Error) -> CallError {
    // The limiter turns a refused growth into a trap and remembers it, so
    // a memory error is known without reading the error's text.
    let kind =
        if host.state_refused.is_some() || error.downcast_ref::<StateLimitExceeded>().is_some() {
            CallErrorKind::StateLimit
        } else if host.limiter.refused() || error.downcast_ref::<MemoryLimitExceeded>().is_some() {
            CallErrorKind::Memory
        } else if let Some(wasmtime::Trap::Interrupt) = error.downcast_ref::<wasmtime::Trap>() {
            CallErrorKind::Timeout
        } else {
            CallErrorKind::Trap
        };
    CallError {
        stage: host.scope.stage.to_string(),
        kind,
        message: match (kind, error.downcast_ref::<MemoryLimitExceeded>()) {
            (CallErrorKind::Timeout, _) => {
                "interrupted: the call ran past its deadline".to_string()
            }
            (CallErrorKind::Memory, Some(exceeded)) => exceeded.to_string(),
            (CallErrorKind::StateLimit, _) => match &host.state_refused {
                Some(exceeded) => exceeded.to_string(),
                None => error.root_cause().to_string(),
            },
            _ => cap_reason(&trap_message(host, &error)).into_owned(),
        },
    }
}

/// One line for the `weir.error` header: the trap, and what the plugin
/// wrote to stderr during the call (a Rust panic's message and location).
/// The wasm backtrace goes to the log instead.
fn trap_message(host: &HostState, error: &wasmtime::Error) -> String {
    tracing::debug!(
        stage = &*host.scope.stage,
        error = format!("{error:?}"),
        "plugin call trapped"
    );
    let cause = error.root_cause().to_string();
    match host.stdio.recent_stderr() {
        Some(stderr) => format!("{cause}; stderr: {stderr}"),
        None => cause,
    }
}

impl Runtime {
    /// Makes a fresh instance of `plugin` and calls its `init`.
    ///
    /// The instance gets the least privilege: no preopened directories (so no files), no arguments, no
    /// environment but the variables in `ctx.env`, no sockets or name
    /// lookups, a closed stdin, stdout and stderr captured into `tracing`,
    /// and clocks frozen at zero unless `ctx.clock`. Its linear memory is
    /// capped at `ctx.memory_limit` and each call at `ctx.call_timeout`.
    pub fn instantiate(
        &self,
        plugin: &Arc<Plugin>,
        ctx: &StageContext,
    ) -> Result<Instance, WasmError> {
        let stage: Arc<str> = ctx.stage.as_str().into();
        let stage_metrics = self.metrics.stage(&ctx.stage);
        // The latest instance's limit holds: a reload may change it.
        stage_metrics.plugin.set_limit(ctx.quotas.max_metric_series);
        let stdio = Capture::new(stage.clone());
        let monotonic = MonotonicClock::new(!ctx.clock);
        let wasi = WasiCtx::builder()
            .stdin(ClosedInputStream)
            .stdout(stdio.stdout())
            .stderr(stdio.stderr())
            .envs(&ctx.env)
            .wall_clock(WallClock { frozen: !ctx.clock })
            .monotonic_clock(monotonic)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // Random bytes stay available: std's `HashMap` seeds itself
            // from `wasi:random`, and they reveal nothing of the host. A
            // request is capped, as the host allocates it outside the
            // plugin's memory limit.
            .max_random_size(MAX_RANDOM_BYTES)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(ctx.memory_limit),
            stdio,
            monotonic,
            deadline: Instant::now() + ctx.call_timeout,
            scope: Scope {
                stage,
                partition: STAGE_SCOPE,
            },
            state: self.state.clone(),
            quotas: ctx.quotas,
            pending: Default::default(),
            usage_before: Default::default(),
            state_refused: None,
            in_call: false,
            metrics: stage_metrics,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks = |d: Duration| (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        let deadline_ticks = ticks(ctx.call_timeout);
        // Instantiating and `init` run once per instance and may build
        // tables from the config: they get at least INIT_TIMEOUT.
        let init_timeout = ctx.call_timeout.max(INIT_TIMEOUT);
        store.set_epoch_deadline(ticks(init_timeout));

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
        // Counted afresh: instantiating is slow on a loaded machine.
        store.data_mut().deadline = Instant::now() + init_timeout;
        store.set_epoch_deadline(ticks(init_timeout));
        // The reason is the plugin's to choose, and shown in the status and
        // the log: it is cut like a rejection reason.
        bindings
            .call_init(&mut store, &init)
            .map_err(|e| init_err(cap_reason(&format!("trapped: {e:#}")).into_owned()))?
            .map_err(|reason| init_err(cap_reason(&reason).into_owned()))?;
        store.set_epoch_deadline(deadline_ticks);
        Ok(Instance {
            store,
            bindings,
            plugin: plugin.clone(),
            deadline_ticks,
            call_timeout: ctx.call_timeout,
        })
    }
}
