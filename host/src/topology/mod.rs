//! Turning a validated config into running stages.
//!
//! [`Topology::build`] does everything that can fail (loading and
//! initialising plugins, creating consumers) before anything runs, so a bad
//! pipeline never starts half-way; [`Topology::start`] then runs each stage
//! on a thread of its own.

mod ack;
mod dead_letter;
pub mod reload;
mod stage;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::{PipelineConfig, StageConfig};
use crate::kafka::{KafkaClients, KafkaError};
use crate::wasm::{Runtime, StageContext, WasmError};

pub use stage::Stage;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Wasm(#[from] WasmError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("stage {stage} failed: {reason}")]
    StageFailed { stage: String, reason: String },
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
    stages: Vec<Stage>,
    swaps: BTreeMap<String, SyncSender<reload::Swap>>,
}

/// Stages running, each on its own thread.
pub struct RunningTopology {
    tasks: Vec<(String, oneshot::Receiver<Result<(), TopologyError>>)>,
    pub stages: Vec<StageInfo>,
    /// Where a stage takes its next plugin instance from, by stage.
    pub swaps: BTreeMap<String, SyncSender<reload::Swap>>,
}

impl RunningTopology {
    /// Each stage's plugin digest.
    pub fn digests(&self) -> BTreeMap<String, String> {
        self.stages
            .iter()
            .map(|s| (s.name.clone(), s.plugin_digest.clone()))
            .collect()
    }
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
    }
}

impl Topology {
    pub fn build(
        config: &PipelineConfig,
        runtime: &Arc<Runtime>,
        clients: &KafkaClients,
    ) -> Result<Self, TopologyError> {
        let mut stages = Vec::new();
        let mut swaps = BTreeMap::new();
        for sc in &config.stages {
            let plugin = Arc::new(runtime.load(&sc.name, &sc.plugin)?);
            let ctx = stage_context(sc);
            // Instantiating runs the plugin's init: a bad [stage.config] fails
            // here, before any stage consumes.
            let instance = runtime.instantiate(&plugin, &ctx)?;
            let group = config.kafka.consumer_group(&sc.name);
            let consumer = clients.consumer(&group)?;
            // A producer per stage: its delivery reports go straight to the
            // stage that waits for them.
            let producer = clients.producer(ack::Deliveries::default())?;
            // Room for a few generations; the stage takes them between
            // batches.
            let (swap_tx, swap_rx) = sync_channel(4);
            swaps.insert(sc.name.clone(), swap_tx);
            stages.push(Stage::new(
                sc.clone(),
                ctx,
                runtime.clone(),
                plugin,
                instance,
                stage::StageIo {
                    consumer,
                    producer,
                    swaps: swap_rx,
                },
            ));
        }
        Ok(Topology { stages, swaps })
    }

    pub fn start(self, shutdown: CancellationToken) -> Result<RunningTopology, TopologyError> {
        let mut tasks = Vec::new();
        let mut infos = Vec::new();
        for stage in self.stages {
            infos.push(stage.info());
            stage.subscribe()?;
            let name = stage.name().to_string();
            let (done_tx, done_rx) = oneshot::channel();
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name(format!("weir-stage-{name}"))
                .spawn(move || {
                    let stage_name = stage.name().to_string();
                    let run = std::panic::AssertUnwindSafe(|| stage.run(shutdown.clone()));
                    let result = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                        Err(TopologyError::StageFailed {
                            stage: stage_name,
                            reason: "its thread panicked".into(),
                        })
                    });
                    // One failed stage stops the pipeline: the others drain
                    // and commit rather than run on unwatched.
                    if result.is_err() {
                        shutdown.cancel();
                    }
                    let _ = done_tx.send(result);
                })
                .map_err(|e| TopologyError::StageFailed {
                    stage: name.clone(),
                    reason: format!("cannot start its thread: {e}"),
                })?;
            tasks.push((name, done_rx));
        }
        Ok(RunningTopology {
            tasks,
            stages: infos,
            swaps: self.swaps,
        })
    }
}

impl RunningTopology {
    /// Waits for every stage to finish (after the shutdown token fires, or
    /// when one fails). Returns the first failure.
    pub async fn wait(self) -> Result<(), TopologyError> {
        let mut first = Ok(());
        for (name, task) in self.tasks {
            let result = match task.await {
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
