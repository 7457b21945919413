//! Hot reload: turning a changed pipeline.toml or plugin file into a new
//! generation of the running stages, without stopping what works.
//!
//! Everything that can fail (parsing, compiling, linking, `init`) happens
//! here, off the stages' threads; only then are the new instances handed to
//! their stages, which swap them in between two batches. A failed reload
//! changes nothing and is reported.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};

use tokio_util::sync::CancellationToken;

use super::{Running, StageControl, build_stage, stage_context, start_stage};
use crate::config::{self, ConfigDiff, Env, PipelineConfig, StageConfig};
use crate::kafka::{KafkaClients, ensure_topics};
use crate::wasm::{Instance, Plugin, Runtime, StageContext};

/// A stage's next plugin instance, ready to run.
pub struct Swap {
    pub config: StageConfig,
    pub ctx: StageContext,
    pub plugin: Arc<Plugin>,
    pub instance: Instance,
    pub generation: u64,
    /// When the change that led here was first seen.
    pub requested_at: Instant,
}

/// The last reload attempt, for the admin status.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReloadOutcome {
    pub ok: bool,
    /// `watch`, `api`, `signal`, ...
    pub trigger: String,
    pub error: Option<String>,
    /// The generation running after the attempt.
    pub generation: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// From the change being seen to the new instances handed to stages.
    pub duration_ms: u64,
    /// Stages that got a new instance.
    pub swapped: Vec<String>,
}

/// What runs now: the generation number and each stage's plugin digest.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ReloadStatus {
    pub generation: u64,
    pub digests: BTreeMap<String, String>,
    pub last: Option<ReloadOutcome>,
}

pub type SharedStatus = Arc<RwLock<ReloadStatus>>;

/// Why a reload did not apply in full.
enum ReloadError {
    /// Refused before anything running was touched: nothing changed.
    Refused(String),
    /// Applied, except for stages that could not start.
    Partial {
        changed: Vec<String>,
        failed: String,
    },
}

/// Owns changes to the running topology: reloads, and replays
/// (`super::replay`). One change at a time.
pub struct Controller {
    pub(super) config: PipelineConfig,
    env: Arc<dyn Env + Send + Sync>,
    pub(super) runtime: Arc<Runtime>,
    pub(super) clients: KafkaClients,
    pub(super) running: Running,
    pub(super) control: Arc<StageControl>,
    /// Cancelling it stops the pipeline; new stages stop with it.
    pub(super) pipeline: CancellationToken,
    pub(super) status: SharedStatus,
}

/// Stops a running stage and waits until it has drained and committed
/// (and its consumer has left the group).
pub(super) fn stop_and_wait(handle: super::StageHandle, why: &str) {
    let name = handle.info.name.clone();
    handle.stop.cancel();
    match handle.done.blocking_recv() {
        Ok(Ok(())) => tracing::info!(stage = name, why, "stage stopped"),
        Ok(Err(e)) => tracing::warn!(stage = name, why, error = %e, "stage stopped with an error"),
        Err(_) => tracing::warn!(stage = name, why, "stage thread ended without a result"),
    }
}

fn file_digest(path: &std::path::Path) -> Result<String, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read plugin {}: {e}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

impl Controller {
    pub fn new(
        config: PipelineConfig,
        env: Arc<dyn Env + Send + Sync>,
        runtime: Arc<Runtime>,
        clients: KafkaClients,
        running: Running,
        control: Arc<StageControl>,
        pipeline: CancellationToken,
    ) -> Self {
        let digests = running
            .infos()
            .into_iter()
            .map(|i| (i.name, i.plugin_digest))
            .collect();
        let status = Arc::new(RwLock::new(ReloadStatus {
            generation: 1,
            digests,
            last: None,
        }));
        Controller {
            config,
            env,
            runtime,
            clients,
            running,
            control,
            pipeline,
            status,
        }
    }

    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    pub fn running(&self) -> &Running {
        &self.running
    }

    /// The files whose change should trigger a reload.
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        std::iter::once(self.config.source.clone())
            .chain(self.config.stages.iter().map(|s| s.plugin.clone()))
            .collect()
    }

    /// Reads pipeline.toml and the plugins again and applies what changed.
    /// Blocking: it compiles plugins and waits for removed stages to drain.
    pub fn reload(&mut self, trigger: &str, requested_at: Instant) -> ReloadOutcome {
        let result = self.try_reload(requested_at);
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        let (error, changed) = match result {
            Ok(changed) => (None, changed),
            Err(ReloadError::Refused(e)) => (Some(e), Vec::new()),
            Err(ReloadError::Partial { changed, failed }) => (Some(failed), changed),
        };
        let outcome = ReloadOutcome {
            ok: error.is_none(),
            trigger: trigger.to_string(),
            error,
            generation: status.generation,
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            duration_ms: requested_at.elapsed().as_millis() as u64,
            swapped: changed,
        };
        match &outcome.error {
            None => tracing::info!(
                trigger,
                generation = outcome.generation,
                changed = ?outcome.swapped,
                change_to_ready_ms = outcome.duration_ms,
                "reload done"
            ),
            Some(error) if outcome.swapped.is_empty() => tracing::error!(
                trigger,
                generation = outcome.generation,
                error,
                "reload failed; the running pipeline is unchanged"
            ),
            Some(error) => tracing::error!(
                trigger,
                generation = outcome.generation,
                changed = ?outcome.swapped,
                error,
                "reload applied in part: the stages named in the error are not running; \
                 the next reload starts them"
            ),
        }
        status.last = Some(outcome.clone());
        outcome
    }

    /// What reloading to `new` changes. Reads the plugin files' digests;
    /// the comparison itself is [`ConfigDiff`]'s.
    fn diff(&self, new: &PipelineConfig) -> Result<ConfigDiff, String> {
        let running: BTreeMap<String, String> = {
            let status = self.status.read().unwrap_or_else(|e| e.into_inner());
            status
                .digests
                .iter()
                .filter(|(name, _)| self.running.contains(name))
                .map(|(name, digest)| (name.clone(), digest.clone()))
                .collect()
        };
        let mut on_disk = BTreeMap::new();
        for sc in &new.stages {
            let digest = file_digest(&sc.plugin).map_err(|e| format!("stage {}: {e}", sc.name))?;
            on_disk.insert(sc.name.clone(), digest);
        }
        Ok(ConfigDiff::new(&self.config, new, &running, &on_disk))
    }

    fn try_reload(&mut self, requested_at: Instant) -> Result<Vec<String>, ReloadError> {
        let refused = ReloadError::Refused;
        let new =
            config::load(&self.config.source, &*self.env).map_err(|e| refused(format!("{e:#}")))?;
        if let Some(why) = config::restart_needed(&self.config, &new) {
            return Err(refused(format!("{why}: that takes a restart of weir")));
        }
        let plan = self.diff(&new).map_err(refused)?;
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        let clients = if new.kafka == self.config.kafka {
            self.clients.clone()
        } else {
            self.control
                .budget
                .set_limit(new.kafka.max_buffered_bytes as u64);
            self.clients.with_settings(&new.kafka)
        };
        let generation = self
            .status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation
            + 1;

        // Build everything new before touching anything that runs, so a
        // reload is all or nothing: topics, whole stages, plugin instances.
        if new.topics != self.config.topics {
            tokio::runtime::Handle::current()
                .block_on(ensure_topics(&clients, &new.topics))
                .map_err(|e| refused(e.to_string()))?;
        }
        if !plan.added.is_empty() || !plan.restarted.is_empty() {
            tokio::runtime::Handle::current()
                .block_on(super::changelog::ensure(&clients, &new, false))
                .map_err(|e| refused(e.to_string()))?;
        }
        let mut built = Vec::new();
        for name in plan.added.iter().chain(&plan.restarted) {
            let sc = new.stage(name).expect("planned from the new config");
            let stage = build_stage(sc, &new, &self.runtime, &clients, &self.control, generation)
                .map_err(|e| refused(e.to_string()))?;
            built.push(stage);
        }
        let mut ready = Vec::new();
        for name in &plan.swapped {
            let sc = new.stage(name).expect("planned from the new config");
            let plugin = Arc::new(
                self.runtime
                    .load(&sc.name, &sc.plugin)
                    .map_err(|e| refused(e.to_string()))?,
            );
            let ctx = stage_context(sc);
            let instance = self
                .runtime
                .instantiate(&plugin, &ctx)
                .map_err(|e| refused(e.to_string()))?;
            ready.push((sc.clone(), ctx, plugin, instance));
        }

        // Apply. Stages going away (or being rebuilt) drain and commit
        // first, so their replacements resume from their last offsets.
        for name in plan.removed.iter().chain(&plan.restarted) {
            if let Some(handle) = self.running.remove(name) {
                stop_and_wait(handle, "reload");
            }
        }
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        for name in &plan.removed {
            status.digests.remove(name);
        }
        // Past this point the old stages are gone: a stage that cannot
        // start is reported, and the rest of the reload still applies
        // (the stage stays declared but not running; the next reload
        // starts it).
        let mut failed = Vec::new();
        for (stage, swaps) in built {
            let name = stage.name().to_string();
            match start_stage(stage, swaps, &self.pipeline) {
                Ok(handle) => {
                    status
                        .digests
                        .insert(name, handle.info.plugin_digest.clone());
                    self.running.insert(handle);
                }
                Err(e) => failed.push(format!("stage {name} did not start: {e}")),
            }
        }
        let mut swaps = Vec::with_capacity(ready.len());
        for (config, ctx, plugin, instance) in ready {
            let name = config.name.clone();
            status.digests.insert(name.clone(), plugin.digest.clone());
            self.running.set_digest(&name, &plugin.digest);
            let swap = Swap {
                config,
                ctx,
                plugin,
                instance,
                generation,
                requested_at,
            };
            swaps.push((self.running.swaps(&name), swap));
        }
        status.generation = generation;
        drop(status);
        // A stage busy with a long batch may not take its swaps at once;
        // waiting for it must not hold the status that the admin API reads.
        for (tx, swap) in swaps {
            if let Some(tx) = tx {
                let _ = tx.send(swap);
            }
        }
        self.config = new;
        self.clients = clients;
        let changed = plan.describe();
        if failed.is_empty() {
            Ok(changed)
        } else {
            Err(ReloadError::Partial {
                changed,
                failed: failed.join("; "),
            })
        }
    }
}
