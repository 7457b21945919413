//! Replay: one stage reprocesses its inputs from the beginning, with its
//! keyed state cleared, so what it derives is rebuilt rather than doubled.
//!
//! The stage is stopped (it drains and commits), its group's offsets are
//! moved to the start of each input partition, its state is dropped (and
//! its changelog's records deleted), and a
//! fresh instance of the same plugin build starts from there. What can fail
//! before anything stops (compiling the plugin, creating clients) is done
//! first; if the offsets cannot be moved, the stage resumes as it was.
//!
//! Outputs are published again. Downstream consumers see each derived
//! record twice unless they are idempotent by its key or id, as weir's own
//! plugins are (deterministic event ids, compacted tables).

use std::time::Instant;

use serde::Serialize;

use super::reload::{Controller, stop_and_wait};
use super::{TopologyError, assemble_stage, prepare_stage, start_stage};
use crate::kafka::{KafkaError, PartitionRewind, delete_all_records, rewind_group};
use crate::metrics::StageMetrics;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no stage named {0:?}")]
    UnknownStage(String),
    #[error("stage {0} is not running; reload the pipeline to start it")]
    NotRunning(String),
    #[error(
        "stage {stage}: the plugin file changed since it was loaded \
         (running {running}, on disk {on_disk}); reload first, so the replay runs the build you expect"
    )]
    PluginChanged {
        stage: String,
        running: String,
        on_disk: String,
    },
    #[error("stage {stage}: cannot prepare the replay: {source}")]
    Prepare {
        stage: String,
        #[source]
        source: TopologyError,
    },
    #[error(
        "stage {stage}: {source}; the stage resumed from its committed offsets with its state kept"
    )]
    Rewind {
        stage: String,
        #[source]
        source: KafkaError,
    },
    #[error(
        "stage {stage} is stopped: its offsets were rewound, but its changelog could not be \
         cleared ({source}); a changelog created by weir allows it (cleanup.policy \
         compact,delete); fix the topic and reload to start the stage"
    )]
    Changelog {
        stage: String,
        #[source]
        source: KafkaError,
    },
    #[error(
        "stage {stage} is stopped: its offsets were rewound and its state cleared, but it could \
         not start again: {source}; fix the cause and reload to start it"
    )]
    Restart {
        stage: String,
        #[source]
        source: TopologyError,
    },
    #[error(
        "stage {stage} is stopped: the replay was refused ({refused}), and the stage could not \
         start again with its offsets and state as they were: {source}; fix the cause and \
         reload to start it"
    )]
    Resume {
        stage: String,
        refused: String,
        #[source]
        source: TopologyError,
    },
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayOutcome {
    pub stage: String,
    /// Keys of keyed state dropped, over all partitions.
    pub state_keys_cleared: usize,
    /// Where each input partition starts again.
    pub partitions: Vec<PartitionRewind>,
    /// Committed messages the stage will read again.
    pub rewound_messages: i64,
    /// The stage stays paused if the pipeline is stopped; `start` resumes it.
    pub paused: bool,
    /// From the request to the stage running again.
    pub duration_ms: u64,
}

impl Controller {
    /// Replays `name` from the beginning of its inputs. Blocking: it waits
    /// for the stage to drain and for its group to be empty.
    pub fn replay(&mut self, name: &str) -> Result<ReplayOutcome, ReplayError> {
        let started = Instant::now();
        let sc = self
            .config
            .stage(name)
            .ok_or_else(|| ReplayError::UnknownStage(name.to_string()))?
            .clone();
        if !self.running.contains(name) {
            return Err(ReplayError::NotRunning(name.to_string()));
        }
        let prepare = |source| ReplayError::Prepare {
            stage: name.to_string(),
            source,
        };
        let parts = prepare_stage(
            &sc,
            &self.config,
            &self.runtime,
            &self.clients,
            &self.control,
        )
        .map_err(prepare)?;
        let (generation, running_digest) = {
            let status = self.status.read().unwrap_or_else(|e| e.into_inner());
            (status.generation, status.digests.get(name).cloned())
        };
        if running_digest.as_deref() != Some(parts.plugin.digest.as_str()) {
            return Err(ReplayError::PluginChanged {
                stage: name.to_string(),
                running: running_digest.unwrap_or_default(),
                on_disk: parts.plugin.digest.clone(),
            });
        }

        let state = self.runtime.state();
        // Counted while the stage holds its partitions: a stopped stage
        // leaves its state to the changelog.
        let held = state.len(name);
        if let Some(handle) = self.running.remove(name) {
            stop_and_wait(handle, "replay");
        }
        let group = self.config.kafka.consumer_group(name);
        let rewound = rewind_group(parts.consumer(), &group, &sc.inputs);
        let state_keys_cleared = match &rewound {
            Ok(_) => {
                state.clear_stage(name);
                if sc.state == crate::config::StateBackend::Changelog {
                    let topic = self.config.kafka.changelog_topic(name);
                    let deleted = tokio::runtime::Handle::current()
                        .block_on(delete_all_records(&self.clients, &topic));
                    if let Err(source) = deleted {
                        // Started now, the stage would restore the state
                        // of the messages it is about to read again.
                        tracing::error!(stage = name, changelog = topic, error = %source, "replay cannot clear the changelog; the stage stays stopped");
                        return Err(ReplayError::Changelog {
                            stage: name.to_string(),
                            source,
                        });
                    }
                }
                held
            }
            // Nothing moved: the stage goes on from where it was, with the
            // state that goes with those offsets.
            Err(e) => {
                tracing::warn!(stage = name, error = %e, "replay refused; the stage resumes unchanged");
                0
            }
        };
        let restart = assemble_stage(&sc, parts, &self.runtime, &self.control, generation)
            .and_then(|(stage, swaps)| start_stage(stage, swaps, &self.pipeline));
        let handle = match (restart, &rewound) {
            (Ok(handle), _) => handle,
            (Err(source), Ok(_)) => {
                tracing::error!(stage = name, error = %source, "stage cannot start after the replay reset");
                return Err(ReplayError::Restart {
                    stage: name.to_string(),
                    source,
                });
            }
            (Err(source), Err(refused)) => {
                tracing::error!(stage = name, error = %source, "stage cannot start again after a refused replay");
                return Err(ReplayError::Resume {
                    stage: name.to_string(),
                    refused: refused.to_string(),
                    source,
                });
            }
        };
        self.running.insert(handle);
        let partitions = rewound.map_err(|source| ReplayError::Rewind {
            stage: name.to_string(),
            source,
        })?;
        StageMetrics::add(&self.runtime.metrics().stage(name).replays, 1);
        let outcome = ReplayOutcome {
            stage: name.to_string(),
            state_keys_cleared,
            rewound_messages: partitions
                .iter()
                .map(|p| p.committed_before.map_or(0, |c| (c - p.from).max(0)))
                .sum(),
            partitions,
            paused: self
                .control
                .paused
                .load(std::sync::atomic::Ordering::Relaxed),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(
            stage = name,
            state_keys_cleared,
            rewound_messages = outcome.rewound_messages,
            duration_ms = outcome.duration_ms,
            "stage replaying from the beginning of its inputs"
        );
        Ok(outcome)
    }
}
