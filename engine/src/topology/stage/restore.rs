//! Restoring a stage's keyed state from its changelog when partitions are
//! assigned, and going back to the committed offsets after an abort.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use rdkafka::error::KafkaError as RdKafkaError;

use super::{Coordinates, OPEN_TRANSACTION_PATIENCE, RESTORE_PATIENCE, Stage};
use crate::kafka::KafkaError;
use crate::topology::events::{InternalEvent, StateRestored};
use crate::topology::{TopologyError, changelog};

/// Why keyed state could not be read back from a changelog (yet).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{source}")]
    Client {
        #[source]
        source: KafkaError,
    },
    #[error("cannot read the offsets of {topic} partition {partition}: {source}")]
    Watermarks {
        topic: String,
        partition: i32,
        #[source]
        source: RdKafkaError,
    },
    #[error("cannot read {topic}: {source}")]
    Read {
        topic: String,
        #[source]
        source: RdKafkaError,
    },
    #[error("the stage is stopping")]
    Stopping,
}

impl Stage {
    /// Restores the state of the partitions assigned since the last batch
    /// from the changelog, then resumes them. Everything assigned stays
    /// paused meanwhile, and the consumer is polled between reads so that
    /// this process stays in its group through a long restore.
    pub(super) fn restore_pending(
        &mut self,
        abandon: &CancellationToken,
    ) -> Result<(), TopologyError> {
        let shared = self.shared.clone();
        let (topic, todo, seek_committed) = {
            let mut progress = shared.lock();
            let seek = std::mem::take(&mut progress.seek_committed);
            match &progress.changelog {
                Some(c) if !progress.restoring.is_empty() => {
                    (c.topic.clone(), progress.restoring.clone(), seek)
                }
                _ if seek || !progress.rewind.is_empty() => {
                    (String::new(), Default::default(), seek)
                }
                _ => return Ok(()),
            }
        };
        let consumer = self.consumer.clone();
        let started = Instant::now();
        // Only a read of the changelog polls the group consumer meanwhile;
        // a rewind or a seek alone has nothing to hold back.
        let outcome = if todo.is_empty() {
            Ok(changelog::Restored::default())
        } else {
            let assignment = consumer.assignment().unwrap_or_default();
            if let Err(e) = consumer.pause(&assignment) {
                tracing::warn!(stage = self.config.name, error = %e, "cannot pause for a restore");
            }
            self.read_changelog(&topic, &todo, abandon)
        };
        // Resume all that is assigned and not waiting for a restore; a
        // message polled while paused is read again from where it was.
        let restored = match outcome {
            Ok(r) => {
                self.restore_failing_since = None;
                r
            }
            Err(e) => {
                // A topic just created can take a moment to be known; a
                // changelog that stays unreadable (deleted, too few
                // partitions) stops the stage rather than let it wait
                // unseen.
                let since = *self.restore_failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= RESTORE_PATIENCE {
                    return Err(TopologyError::Restore {
                        stage: self.config.name.clone(),
                        changelog: topic,
                        partitions: todo.into_iter().collect(),
                        source: e,
                    });
                }
                tracing::warn!(stage = self.config.name, changelog = topic, error = %e, "cannot restore state yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
                changelog::Restored::default()
            }
        };
        self.resume_ready();
        let rewind = std::mem::take(&mut shared.lock().rewind);
        let rewind = if seek_committed {
            self.committed_positions()
        } else {
            rewind
        };
        for (topic, partition, offset) in rewind {
            if let Err(e) = consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(5),
            ) {
                tracing::warn!(stage = self.config.name, topic, partition, offset, error = %e, "cannot rewind after a restore");
            }
        }
        if !todo.is_empty() || seek_committed {
            // A plugin may keep what it read of its state in its instance
            // (a cache of dedup windows, say); the state just changed under
            // it, so the next batch gets a fresh instance.
            self.instance = self.runtime.instantiate(&self.plugin, &self.ctx).ok();
        }
        if restored.partitions > 0 {
            StateRestored {
                stage: &self.config.name,
                changelog: &topic,
                partitions: restored.partitions,
                records: restored.records,
                took: started.elapsed(),
            }
            .emit(&self.metrics);
        }
        Ok(())
    }

    /// Resumes every assigned partition that is not waiting for its state.
    ///
    /// Called after each restore and again every [`super::RESUME_EVERY`]: a
    /// resume can be lost in librdkafka when the partition's fetcher starts
    /// at the same moment (its version barrier is taken before the op is
    /// queued, so the fetch-start op queued in between makes the resume
    /// outdated, and it is dropped), which would leave the partition
    /// paused for good. Resuming a partition that is not paused does
    /// nothing, so repeating it is safe.
    pub(super) fn resume_ready(&mut self) {
        self.resumed_at = Instant::now();
        let consumer = &self.consumer;
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let mut resume = TopicPartitionList::new();
        {
            let progress = self.shared.lock();
            for e in assignment.elements() {
                if !progress.restoring.contains(&e.partition()) {
                    resume.add_partition(e.topic(), e.partition());
                }
            }
        }
        if resume.count() == 0 {
            return;
        }
        if let Err(e) = consumer.resume(&resume) {
            tracing::warn!(stage = self.config.name, error = %e, "cannot resume partitions");
        }
    }

    /// Where each assigned partition's committed offset is (the beginning
    /// if none is committed): where an aborted transaction resumes from.
    fn committed_positions(&self) -> Vec<Coordinates> {
        let consumer = &self.consumer;
        let committed = consumer
            .assignment()
            .and_then(|a| consumer.committed_offsets(a, Duration::from_secs(10)));
        match committed {
            Ok(tpl) => tpl
                .elements()
                .iter()
                .map(|e| {
                    let offset = match e.offset() {
                        Offset::Offset(o) => o,
                        _ => 0,
                    };
                    (e.topic().to_string(), e.partition(), offset)
                })
                .collect(),
            Err(e) => {
                tracing::warn!(stage = self.config.name, error = %e, "cannot read committed offsets to rewind to");
                Vec::new()
            }
        }
    }

    /// Reads `todo`'s changelog partitions into the store; the input
    /// messages polled meanwhile are noted in `Progress::rewind`.
    fn read_changelog(
        &self,
        topic: &str,
        todo: &std::collections::BTreeSet<i32>,
        abandon: &CancellationToken,
    ) -> Result<changelog::Restored, RestoreError> {
        let shared = &self.shared;
        let store = &*shared.store;
        let client = |source| RestoreError::Client { source };
        let restorer = self.clients.restore_consumer().map_err(client)?;
        let uncommitted = self.clients.uncommitted_watermarks().map_err(client)?;
        let mut ends = std::collections::BTreeMap::new();
        for &p in todo {
            // A transaction left open in the changelog (by a process that
            // died, or one fenced a moment ago) hides every record after it
            // from a read_committed reader, those committed since by the
            // partition's next owner included. Only one process at a time
            // writes a partition's changelog, so such a transaction is a
            // dead one's, aborted by the broker within its timeout: the
            // restore waits for it rather than miss what follows.
            let waited = Instant::now();
            let (low, high) = loop {
                let timeout = Duration::from_secs(10);
                let watermarks = |source| RestoreError::Watermarks {
                    topic: topic.to_string(),
                    partition: p,
                    source,
                };
                let (low, stable) = restorer
                    .fetch_watermarks(topic, p, timeout)
                    .map_err(watermarks)?;
                let (_, high) = uncommitted
                    .fetch_watermarks(topic, p, timeout)
                    .map_err(watermarks)?;
                if stable >= high || waited.elapsed() >= OPEN_TRANSACTION_PATIENCE {
                    if stable < high {
                        tracing::warn!(
                            stage = self.config.name,
                            changelog = topic,
                            partition = p,
                            stable,
                            high,
                            "restoring past a transaction still open"
                        );
                    }
                    break (low, stable);
                }
                if abandon.is_cancelled() {
                    return Err(RestoreError::Stopping);
                }
                self.keep_alive();
                std::thread::sleep(Duration::from_millis(200));
            };
            let mut progress = shared.lock();
            let Some(changelog) = &mut progress.changelog else {
                break;
            };
            if changelog.still_current(p, high) {
                // Revoked and assigned back with nobody writing meanwhile:
                // the state in memory is the changelog's.
                changelog.adopt(p, high);
                progress.restoring.remove(&p);
                continue;
            }
            changelog.forget_suspended(p);
            store.drop_partition(&crate::state::Scope {
                stage: self.config.name.as_str().into(),
                partition: p,
            });
            ends.insert(p, (low, high));
        }
        let restored =
            changelog::restore(&restorer, topic, &self.config.name, &ends, store, || {
                if abandon.is_cancelled() {
                    return ends.keys().copied().collect();
                }
                self.keep_alive();
                let progress = shared.lock();
                ends.keys()
                    .copied()
                    .filter(|p| !progress.restoring.contains(p))
                    .collect()
            })
            .map_err(|source| RestoreError::Read {
                topic: topic.to_string(),
                source,
            })?;
        let mut progress = shared.lock();
        let progress = &mut *progress;
        for (&p, &(_, end)) in &ends {
            let done = !abandon.is_cancelled() && progress.restoring.remove(&p);
            match &mut progress.changelog {
                Some(changelog) if done => changelog.adopt(p, end),
                // Revoked while it was read: what was read is no one's.
                _ if !progress.restoring.contains(&p) => {
                    store.drop_partition(&crate::state::Scope {
                        stage: self.config.name.as_str().into(),
                        partition: p,
                    })
                }
                _ => {}
            }
        }
        Ok(restored)
    }

    /// Polls the group consumer during a restore, with everything paused,
    /// so that the process stays in its group and hears of rebalances; a
    /// message it returns anyway is noted, to be read again.
    fn keep_alive(&self) {
        if let Some(Ok(m)) = self.consumer.poll(Duration::ZERO) {
            self.shared
                .lock()
                .rewind_to(m.topic(), m.partition(), m.offset());
        }
    }
}
