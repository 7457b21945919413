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
use crate::config::{self, Env, PipelineConfig, StageConfig};
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

/// Why `new` cannot be reached from `old` while running, if it cannot:
/// the cluster itself (weir resolved it, embedded or not, at start), or the
/// consumer groups. A new group has no committed offsets, so its stages
/// would start from the beginning of every input with the state of the old
/// group's progress: everything retained would be processed again.
fn restart_needed(old: &PipelineConfig, new: &PipelineConfig) -> Option<String> {
    if old.kafka.brokers != new.kafka.brokers {
        return Some("[kafka].brokers changed".to_string());
    }
    (old.kafka.group_id != new.kafka.group_id).then(|| {
        format!(
            "[kafka].group_id changed from {:?} to {:?} (a new group would reprocess every \
             input from the beginning)",
            old.kafka.group_id, new.kafka.group_id
        )
    })
}

/// Whether a stage must be rebuilt (new consumer or producer) rather than
/// get a new plugin instance.
fn io_changed(o: &StageConfig, n: &StageConfig) -> bool {
    o.inputs != n.inputs
        || o.outputs != n.outputs
        || o.dead_letter != n.dead_letter
        || o.batch != n.batch
        || o.state != n.state
}

/// What a reload does to each stage.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    added: Vec<String>,
    removed: Vec<String>,
    /// Rebuilt: new consumer and producer as well as plugin.
    restarted: Vec<String>,
    /// A new plugin instance in the running stage.
    swapped: Vec<String>,
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
        let outcome = ReloadOutcome {
            ok: result.is_ok(),
            trigger: trigger.to_string(),
            error: result.as_ref().err().cloned(),
            generation: status.generation,
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            duration_ms: requested_at.elapsed().as_millis() as u64,
            swapped: result.unwrap_or_default(),
        };
        match &outcome.error {
            None => tracing::info!(
                trigger,
                generation = outcome.generation,
                changed = ?outcome.swapped,
                change_to_ready_ms = outcome.duration_ms,
                "reload done"
            ),
            Some(error) => tracing::error!(
                trigger,
                generation = outcome.generation,
                error,
                "reload failed; the running pipeline is unchanged"
            ),
        }
        status.last = Some(outcome.clone());
        outcome
    }

    fn plan(&self, new: &PipelineConfig) -> Result<Plan, String> {
        let digests = self
            .status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .digests
            .clone();
        let mut plan = Plan::default();
        for old in &self.config.stages {
            if new.stage(&old.name).is_none() {
                plan.removed.push(old.name.clone());
            }
        }
        for sc in &new.stages {
            // A stage that is declared but not running (a replay that
            // could not restart it) is started afresh.
            let old = self
                .config
                .stage(&sc.name)
                .filter(|_| self.running.contains(&sc.name));
            let Some(old) = old else {
                plan.added.push(sc.name.clone());
                continue;
            };
            // Client settings are shared by every stage's consumer and
            // producer: a change rebuilds them all.
            if io_changed(old, sc) || self.config.kafka != new.kafka {
                plan.restarted.push(sc.name.clone());
                continue;
            }
            let digest = file_digest(&sc.plugin).map_err(|e| format!("stage {}: {e}", sc.name))?;
            if old != sc || digests.get(&sc.name) != Some(&digest) {
                plan.swapped.push(sc.name.clone());
            }
        }
        Ok(plan)
    }

    fn try_reload(&mut self, requested_at: Instant) -> Result<Vec<String>, String> {
        let new = config::load(&self.config.source, &*self.env).map_err(|e| format!("{e:#}"))?;
        if let Some(why) = restart_needed(&self.config, &new) {
            return Err(format!("{why}: that takes a restart of weir"));
        }
        let plan = self.plan(&new)?;
        if plan == Plan::default() {
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
                .map_err(|e| e.to_string())?;
        }
        if !plan.added.is_empty() || !plan.restarted.is_empty() {
            tokio::runtime::Handle::current()
                .block_on(super::changelog::ensure(&clients, &new, false))
                .map_err(|e| e.to_string())?;
        }
        let mut built = Vec::new();
        for name in plan.added.iter().chain(&plan.restarted) {
            let sc = new.stage(name).expect("planned from the new config");
            let stage = build_stage(sc, &new, &self.runtime, &clients, &self.control, generation)
                .map_err(|e| e.to_string())?;
            built.push(stage);
        }
        let mut ready = Vec::new();
        for name in &plan.swapped {
            let sc = new.stage(name).expect("planned from the new config");
            let plugin = Arc::new(
                self.runtime
                    .load(&sc.name, &sc.plugin)
                    .map_err(|e| e.to_string())?,
            );
            let ctx = stage_context(sc);
            let instance = self
                .runtime
                .instantiate(&plugin, &ctx)
                .map_err(|e| e.to_string())?;
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
        for (stage, swaps) in built {
            let name = stage.name().to_string();
            let handle = start_stage(stage, swaps, &self.pipeline).map_err(|e| e.to_string())?;
            status
                .digests
                .insert(name, handle.info.plugin_digest.clone());
            self.running.insert(handle);
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
        let mut changed = Vec::new();
        for (what, names) in [
            ("added", &plan.added),
            ("removed", &plan.removed),
            ("restarted", &plan.restarted),
            ("swapped", &plan.swapped),
        ] {
            changed.extend(names.iter().map(|n| format!("{what} {n}")));
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_swapped_rebuilt_or_left_alone() {
        let env = std::collections::HashMap::<String, String>::new();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
        let parse =
            |text: &str| config::parse(&dir.path().join("pipeline.toml"), text, &env).unwrap();
        let base = r#"
[[topic]]
name = "in"
[[topic]]
name = "out"
[[topic]]
name = "dlq"
[[stage]]
name = "a"
plugin = "p.wasm"
inputs = ["in"]
outputs = { default = "out" }
dead_letter = "dlq"
"#;
        let old = parse(base);
        assert_eq!(restart_needed(&old, &parse(base)), None);
        let group = parse(&format!("[kafka]\ngroup_id = \"other\"\n{base}"));
        let why = restart_needed(&old, &group).unwrap();
        assert!(
            why.contains("group_id") && why.contains("\"other\""),
            "{why}"
        );
        let options = parse(&format!("[kafka.options]\n\"linger.ms\" = \"1\"\n{base}"));
        assert_eq!(
            restart_needed(&old, &options),
            None,
            "rebuilds stages instead"
        );
        let brokers = parse(&format!("[kafka]\nbrokers = \"h:9092\"\n{base}"));
        assert!(restart_needed(&old, &brokers).unwrap().contains("brokers"));
        let a = |c: &PipelineConfig| c.stage("a").unwrap().clone();
        let config_only = parse(&format!("{base}[stage.config]\nx = 1\n"));
        assert!(!io_changed(&a(&old), &a(&config_only)));
        assert_ne!(a(&old), a(&config_only));
        let batch = parse(&format!("{base}[stage.batch]\nmax_messages = 5\n"));
        assert!(io_changed(&a(&old), &a(&batch)));
    }
}
