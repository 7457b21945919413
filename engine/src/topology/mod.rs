//! Turning a validated config into running stages.
//!
//! [`Topology::build`] does everything that can fail (loading and
//! initialising plugins, creating consumers) before anything runs, so a bad
//! pipeline never starts half-way; [`Topology::start`] then runs each stage
//! on a thread of its own.

mod ack;
mod budget;
pub mod changelog;
mod dead_letter;
mod events;
pub mod handle;
mod lag;
mod membership;
mod progress;
mod rebalance;
pub mod reload;
pub mod replay;
mod stage;
mod transaction;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::{PipelineConfig, Processing, StageConfig, StateBackend};
use crate::kafka::{ConsumerOptions, KafkaClients, KafkaError};
use crate::wasm::{Plugin, Runtime, StageContext, WasmError};

pub use budget::Budget;
pub use stage::{RestoreError, Stage};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Wasm(#[from] WasmError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("stage {stage} failed: {reason}")]
    StageFailed { stage: String, reason: String },
    #[error(
        "stage {stage} failed: cannot restore keyed state from the changelog topic {changelog} \
         for partitions {partitions:?}: {source}; it needs a partition for every input \
         partition of the stage"
    )]
    Restore {
        stage: String,
        changelog: String,
        partitions: Vec<i32>,
        #[source]
        source: stage::RestoreError,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// What the admin API shows of a stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageInfo {
    pub name: String,
    pub plugin: String,
    pub plugin_digest: String,
    pub inputs: Vec<String>,
    pub outputs: BTreeMap<String, String>,
    pub dead_letter: String,
    pub instances: usize,
}

/// Stages built and ready to start.
pub struct Topology {
    stages: Vec<(Stage, SyncSender<reload::Swap>)>,
}

/// Operator controls every stage reads between batches: run control and
/// the slow-consumer fault of the admin API.
#[derive(Debug, Default)]
pub struct StageControl {
    /// Stop consuming (offsets stay committed; acks keep flowing).
    pub paused: AtomicBool,
    /// Sleep this long per consumed message (the F1 Kafka demo's
    /// `slow_consumer_ms`, the campus food-ordering service's
    /// `CONSUMER_THROTTLE_MS`).
    pub slow_consumer_ms: AtomicU64,
    /// When the process stops, how long a stage waits for the broker to
    /// acknowledge what is in flight, milliseconds; 0 means the default.
    pub drain_timeout_ms: AtomicU64,
    /// What all stages may have enqueued and not yet had acknowledged.
    pub budget: Arc<Budget>,
}

/// How long a stopping process waits for acknowledgements by default:
/// within the 10 s a container is commonly given to stop, with room for the
/// final commit.
pub const DEFAULT_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

impl StageControl {
    pub fn drain_timeout(&self) -> std::time::Duration {
        match self
            .drain_timeout_ms
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => DEFAULT_DRAIN_TIMEOUT,
            ms => std::time::Duration::from_millis(ms),
        }
    }
}

/// A running stage, as the pipeline keeps track of it.
pub struct StageHandle {
    pub info: StageInfo,
    /// Stops this stage alone (it drains and commits).
    pub stop: CancellationToken,
    pub done: oneshot::Receiver<Result<(), TopologyError>>,
    /// Where the stage takes its next plugin instance from.
    pub swaps: SyncSender<reload::Swap>,
}

/// The stages running now, by name; reloads add and remove entries.
#[derive(Clone, Default)]
pub struct Running {
    stages: Arc<Mutex<BTreeMap<String, StageHandle>>>,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StageHandle>> {
        self.stages.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn infos(&self) -> Vec<StageInfo> {
        self.lock().values().map(|h| h.info.clone()).collect()
    }

    pub fn insert(&self, handle: StageHandle) {
        self.lock().insert(handle.info.name.clone(), handle);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    pub fn remove(&self, name: &str) -> Option<StageHandle> {
        self.lock().remove(name)
    }

    pub fn swaps(&self, name: &str) -> Option<SyncSender<reload::Swap>> {
        self.lock().get(name).map(|h| h.swaps.clone())
    }

    /// Updates what the admin API shows of a stage after a swap.
    pub fn set_digest(&self, name: &str, digest: &str) {
        if let Some(h) = self.lock().get_mut(name) {
            h.info.plugin_digest = digest.to_string();
        }
    }
}

/// Stages running, each on its own thread.
pub struct RunningTopology {
    pub running: Running,
    pipeline: CancellationToken,
}

/// What a stage's plugin instances are started with.
pub fn stage_context(stage: &StageConfig) -> StageContext {
    StageContext {
        stage: stage.name.clone(),
        // BTreeMap keys: sorted, as the WIT contract promises.
        outputs: stage.outputs.keys().cloned().collect(),
        config_json: serde_json::Value::Object(stage.config.clone()).to_string(),
        call_timeout: stage.limits.timeout,
        memory_limit: stage.limits.memory_bytes,
        // A granted variable that weir itself does not have is left out,
        // as an unset variable would be.
        env: stage
            .grants
            .env
            .iter()
            .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
            .collect(),
        clock: stage.grants.clock,
        quotas: crate::wasm::Quotas {
            state_max_bytes: stage.limits.state_max_bytes,
            state_max_keys: stage.limits.state_max_keys,
            max_metric_series: stage.limits.max_metric_series,
        },
    }
}

/// What a stage is built from, before its plugin is instantiated: the
/// compiled plugin and its Kafka clients.
pub struct StageParts {
    plugin: Arc<Plugin>,
    consumer: stage::StageConsumer,
    producer: Arc<stage::StageProducer>,
    shared: Arc<rebalance::Shared>,
    clients: KafkaClients,
    producer_queue_kb: usize,
    group: String,
    consumer_options: ConsumerOptions,
}

impl StageParts {
    /// The stage's consumer, before the stage starts with it.
    pub fn consumer(&self) -> &stage::StageConsumer {
        &self.consumer
    }
}

/// Compiles (or loads from the cache) a stage's plugin and creates its
/// consumer and producer. The consumer does not join its group until the
/// stage starts.
pub fn prepare_stage(
    sc: &StageConfig,
    config: &PipelineConfig,
    runtime: &Runtime,
    clients: &KafkaClients,
    control: &Arc<StageControl>,
) -> Result<StageParts, TopologyError> {
    let plugin = Arc::new(runtime.load(&sc.name, &sc.plugin)?);
    // The budget bounds what waits for the broker; a consumer's prefetch
    // is bounded too, to a share of it, so that buffers do not multiply
    // with the number of stages while the broker is away.
    let budget_kb = config.kafka.max_buffered_bytes / 1024;
    let prefetch_kb = (budget_kb / 4 / config.stages.len().max(1)).clamp(1024, 65536);
    let changelog = (sc.state == StateBackend::Changelog).then(|| {
        runtime.state().track_changes(&sc.name);
        changelog::Changelog::new(
            config.kafka.changelog_topic(&sc.name),
            &sc.name,
            config.kafka.commit_interval,
        )
    });
    let exactly_once = sc.processing == Processing::ExactlyOnce;
    let transactional_id =
        exactly_once.then(|| clients.transactional_id(&config.kafka.group_id, &sc.name));
    let shared = rebalance::Shared::new(
        &sc.name,
        changelog,
        transactional_id.clone(),
        config.kafka.commit_interval,
        runtime.state().clone(),
        runtime.metrics().stage(&sc.name),
        control.clone(),
    );
    let group = config.kafka.consumer_group(&sc.name);
    let consumer_options = ConsumerOptions {
        prefetch_kb,
        commit_interval: config.kafka.commit_interval,
        exactly_once,
    };
    let consumer = clients.consumer(
        &group,
        &sc.name,
        &consumer_options,
        rebalance::Rebalancer {
            shared: shared.clone(),
        },
    )?;
    // A producer per stage: its delivery reports go straight to the
    // stage that waits for them.
    let deliveries = ack::Deliveries::new(control.budget.clone());
    let producer = Arc::new(match &transactional_id {
        // Its transactions are initialised when the stage starts, after
        // any stage it replaces has stopped: initialising fences every
        // earlier producer with the same id.
        Some(id) => clients.transactional_producer(
            deliveries,
            stage::max_record_bytes(sc),
            budget_kb,
            id,
            sc.compression,
        )?,
        None => clients.producer(
            deliveries,
            stage::max_record_bytes(sc),
            budget_kb,
            sc.compression,
        )?,
    });
    shared.set_producer(producer.clone());
    Ok(StageParts {
        plugin,
        consumer,
        producer,
        shared,
        clients: clients.clone(),
        producer_queue_kb: budget_kb,
        group,
        consumer_options,
    })
}

/// Instantiates the plugin of prepared parts, which runs its `init`: a bad
/// [stage.config] fails here, before the stage consumes.
pub fn assemble_stage(
    sc: &StageConfig,
    parts: StageParts,
    runtime: &Arc<Runtime>,
    control: &Arc<StageControl>,
    generation: u64,
) -> Result<(Stage, SyncSender<reload::Swap>), TopologyError> {
    let ctx = stage_context(sc);
    let instance = runtime.instantiate(&parts.plugin, &ctx)?;
    // Room for a few generations; the stage takes them between batches.
    let (swap_tx, swap_rx) = sync_channel(4);
    let stage = Stage::new(
        sc.clone(),
        ctx,
        runtime.clone(),
        parts.plugin,
        instance,
        stage::StageIo {
            consumer: parts.consumer,
            producer: parts.producer,
            shared: parts.shared,
            clients: parts.clients,
            swaps: swap_rx,
            control: control.clone(),
            producer_queue_kb: parts.producer_queue_kb,
            group: parts.group,
            consumer_options: parts.consumer_options,
        },
        generation,
    );
    Ok((stage, swap_tx))
}

/// Builds one stage: loads and initialises its plugin, creates its
/// consumer and producer. Everything that can fail about a stage fails
/// here, before it runs.
pub fn build_stage(
    sc: &StageConfig,
    config: &PipelineConfig,
    runtime: &Arc<Runtime>,
    clients: &KafkaClients,
    control: &Arc<StageControl>,
    generation: u64,
) -> Result<(Stage, SyncSender<reload::Swap>), TopologyError> {
    let parts = prepare_stage(sc, config, runtime, clients, control)?;
    assemble_stage(sc, parts, runtime, control, generation)
}

/// Starts `stage` on a thread of its own. It stops when `pipeline` is
/// cancelled or its handle's `stop` is; if it fails, it cancels `pipeline`
/// so the other stages drain and commit rather than run on unwatched.
pub fn start_stage(
    stage: Stage,
    swaps: SyncSender<reload::Swap>,
    pipeline: &CancellationToken,
) -> Result<StageHandle, TopologyError> {
    let info = stage.info();
    stage.subscribe()?;
    let name = stage.name().to_string();
    let (done_tx, done) = oneshot::channel();
    let stop = pipeline.child_token();
    let (pipeline, stop_stage) = (pipeline.clone(), stop.clone());
    std::thread::Builder::new()
        .name(format!("weir-stage-{name}"))
        .spawn(move || {
            let stage_name = stage.name().to_string();
            let run = std::panic::AssertUnwindSafe(|| stage.run(stop_stage, pipeline.clone()));
            let result = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                Err(TopologyError::StageFailed {
                    stage: stage_name,
                    reason: "its thread panicked".into(),
                })
            });
            if result.is_err() {
                pipeline.cancel();
            }
            let _ = done_tx.send(result);
        })
        .map_err(|e| TopologyError::StageFailed {
            stage: name.clone(),
            reason: format!("cannot start its thread: {e}"),
        })?;
    Ok(StageHandle {
        info,
        stop,
        done,
        swaps,
    })
}

impl Topology {
    pub fn build(
        config: &PipelineConfig,
        runtime: &Arc<Runtime>,
        clients: &KafkaClients,
        control: &Arc<StageControl>,
    ) -> Result<Self, TopologyError> {
        let stages = config
            .stages
            .iter()
            .map(|sc| build_stage(sc, config, runtime, clients, control, 1))
            .collect::<Result<_, _>>()?;
        Ok(Topology { stages })
    }

    /// Starts every stage; `pipeline` stops them all.
    pub fn start(self, pipeline: CancellationToken) -> Result<RunningTopology, TopologyError> {
        let running = Running::default();
        for (stage, swaps) in self.stages {
            running.insert(start_stage(stage, swaps, &pipeline)?);
        }
        Ok(RunningTopology { running, pipeline })
    }
}

impl RunningTopology {
    /// Waits until the pipeline stops (its token is cancelled, by a signal
    /// or by a failing stage), then for every stage running then to drain
    /// and commit. Returns the first failure.
    pub async fn wait(self) -> Result<(), TopologyError> {
        self.pipeline.cancelled().await;
        let handles: Vec<StageHandle> = {
            let mut stages = self.running.lock();
            std::mem::take(&mut *stages).into_values().collect()
        };
        let mut first = Ok(());
        for handle in handles {
            let name = handle.info.name;
            let result = match handle.done.await {
                Ok(r) => r,
                Err(_) => Err(TopologyError::StageFailed {
                    stage: name.clone(),
                    reason: "its thread panicked".into(),
                }),
            };
            if let Err(e) = result {
                tracing::error!(stage = name, error = %e, "stage failed");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}
