//! Hot reload: turning a changed pipeline.toml or plugin file into a new
//! generation of the running stages, without stopping what works.
//!
//! Everything that can fail (parsing, compiling, linking, `init`) happens
//! here, off the stages' threads; only then are the new instances handed to
//! their stages, which swap them in between two batches. A failed reload
//! changes nothing and is reported.

use std::collections::BTreeMap;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::stage_context;
use crate::config::{self, Env, PipelineConfig, StageConfig};
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

pub struct Controller {
    config: PipelineConfig,
    env: Arc<dyn Env + Send + Sync>,
    runtime: Arc<Runtime>,
    swaps: BTreeMap<String, SyncSender<Swap>>,
    status: SharedStatus,
}

fn file_digest(path: &std::path::Path) -> Result<String, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read plugin {}: {e}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Why `new` cannot be reached from `old` by swapping plugins: anything
/// that would need consumers, producers or topics changed.
fn restart_needed(old: &PipelineConfig, new: &PipelineConfig) -> Option<String> {
    if old.kafka != new.kafka {
        return Some("[kafka] changed".into());
    }
    if old.topics != new.topics {
        return Some("[[topic]] declarations changed".into());
    }
    let names = |c: &PipelineConfig| c.stages.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    if names(old) != names(new) {
        return Some(format!(
            "stages changed from {:?} to {:?}",
            names(old),
            names(new)
        ));
    }
    for (o, n) in old.stages.iter().zip(&new.stages) {
        if o.inputs != n.inputs
            || o.outputs != n.outputs
            || o.dead_letter != n.dead_letter
            || o.batch != n.batch
        {
            return Some(format!(
                "stage {}'s inputs, outputs, dead_letter or batch changed",
                n.name
            ));
        }
    }
    None
}

impl Controller {
    pub fn new(
        config: PipelineConfig,
        env: Arc<dyn Env + Send + Sync>,
        runtime: Arc<Runtime>,
        swaps: BTreeMap<String, SyncSender<Swap>>,
        digests: BTreeMap<String, String>,
    ) -> Self {
        let status = Arc::new(RwLock::new(ReloadStatus {
            generation: 1,
            digests,
            last: None,
        }));
        Controller {
            config,
            env,
            runtime,
            swaps,
            status,
        }
    }

    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// The files whose change should trigger a reload.
    pub fn watched_files(&self) -> Vec<std::path::PathBuf> {
        std::iter::once(self.config.source.clone())
            .chain(self.config.stages.iter().map(|s| s.plugin.clone()))
            .collect()
    }

    /// Reads pipeline.toml and the plugins again and swaps in what changed.
    /// Blocking: it compiles plugins.
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
                swapped = ?outcome.swapped,
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

    fn try_reload(&mut self, requested_at: Instant) -> Result<Vec<String>, String> {
        let new = config::load(&self.config.source, &*self.env).map_err(|e| format!("{e:#}"))?;
        if let Some(why) = restart_needed(&self.config, &new) {
            return Err(format!(
                "{why}: that takes a restart (hot reload swaps plugins, their \
                 [stage.config], limits, grants and on_error)"
            ));
        }
        let digests = self
            .status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .digests
            .clone();
        // Build every changed stage's instance before touching any stage,
        // so a reload is all or nothing.
        let mut ready = Vec::new();
        for (old, sc) in self.config.stages.iter().zip(&new.stages) {
            let digest = file_digest(&sc.plugin).map_err(|e| format!("stage {}: {e}", sc.name))?;
            if old == sc && digests.get(&sc.name) == Some(&digest) {
                continue;
            }
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
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        status.generation += 1;
        let generation = status.generation;
        let mut swapped = Vec::new();
        for (config, ctx, plugin, instance) in ready {
            let name = config.name.clone();
            status.digests.insert(name.clone(), plugin.digest.clone());
            let swap = Swap {
                config,
                ctx,
                plugin,
                instance,
                generation,
                requested_at,
            };
            // A stage that has stopped has nothing to swap.
            if let Some(tx) = self.swaps.get(&name) {
                let _ = tx.send(swap);
            }
            swapped.push(name);
        }
        drop(status);
        self.config = new;
        Ok(swapped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plugin_level_changes_are_hot() {
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
        let config_only = parse(&format!("{base}[stage.config]\nx = 1\n"));
        assert_eq!(restart_needed(&old, &config_only), None);
        let limits = parse(&format!("{base}[stage.limits]\ntimeout_ms = 5\n"));
        assert_eq!(restart_needed(&old, &limits), None);
        let inputs = parse(
            &base
                .replace("inputs = [\"in\"]", "inputs = [\"out\"]\n")
                .replace(
                    "outputs = { default = \"out\" }",
                    "outputs = { default = \"in\" }",
                ),
        );
        assert!(restart_needed(&old, &inputs).unwrap().contains("stage a"));
        let topics = parse(&base.replace("name = \"dlq\"", "name = \"dlq\"\npartitions = 2"));
        assert!(restart_needed(&old, &topics).unwrap().contains("topic"));
    }
}
