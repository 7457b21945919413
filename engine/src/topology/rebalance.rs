//! What a stage does when its group moves partitions.
//!
//! librdkafka calls the consumer context on the stage's own thread, inside
//! a poll, before partitions are taken away and after new ones are given.
//!
//! - **Revoked**: what is in flight for the stage is waited for (up to the
//!   drain timeout), the revoked partitions' state changes are flushed to
//!   the changelog, the offsets that are complete are committed, and their
//!   state is let go. Messages of those partitions already polled are
//!   dropped by the stage; their new owner reads them from the commit.
//!   When the assignment was *lost* (this process was too slow and the
//!   group moved on), nothing is written or committed: another process
//!   may already own the partitions.
//! - **Assigned**: the new partitions are paused at once; the stage
//!   restores their state from the changelog and then resumes them, so no
//!   message is processed against state that is not there yet.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::Producer;
use rdkafka::{ClientContext, TopicPartitionList};

use super::StageControl;
use super::ack::StageProducer;
use super::ack::{Delivery, Ledger};
use super::changelog::Changelog;
use super::membership::Membership;
pub use super::progress::Progress;
use super::transaction::{self, Ended, Txn};
use crate::metrics::StageMetrics;
use crate::state::StateStore;

/// What a stage's consumer context shares with the stage.
pub struct Shared {
    pub stage: String,
    progress: Mutex<Progress>,
    /// Set by a rebalance, for the stage to look at `revoked` and
    /// `restoring` without taking the lock after every poll.
    pub rebalanced: AtomicBool,
    /// Set once the producer exists (it is made after the consumer).
    producer: Mutex<Option<Arc<StageProducer>>>,
    /// Under exactly-once: the producer's `transactional.id`, for a new
    /// producer after a fatal error.
    pub transactional_id: Option<String>,
    pub store: Arc<dyn StateStore>,
    pub metrics: Arc<StageMetrics>,
    pub control: Arc<StageControl>,
    /// How often state is flushed and offsets (or transactions) commit.
    pub commit_interval: Duration,
    /// Whether the consumer is in its group, from its statistics.
    pub membership: Membership,
}

impl Shared {
    pub fn new(
        stage: &str,
        changelog: Option<Changelog>,
        transactional_id: Option<String>,
        commit_interval: Duration,
        store: Arc<dyn StateStore>,
        metrics: Arc<StageMetrics>,
        control: Arc<StageControl>,
    ) -> Arc<Self> {
        let exactly_once = transactional_id.is_some();
        // Under exactly-once the transaction orders state and offsets;
        // under at-least-once offsets wait for the changelog.
        let ledger = if changelog.is_some() && !exactly_once {
            Ledger::holding()
        } else {
            Ledger::default()
        };
        Arc::new(Shared {
            stage: stage.to_string(),
            progress: Mutex::new(Progress {
                ledger,
                changelog,
                restoring: BTreeSet::new(),
                revoked: Vec::new(),
                deferred: Vec::new(),
                txn: exactly_once.then(Txn::default),
                seek_committed: false,
                rewind: Vec::new(),
            }),
            rebalanced: AtomicBool::new(false),
            producer: Mutex::new(None),
            transactional_id,
            store,
            metrics,
            control,
            commit_interval,
            membership: Membership::default(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stage's producer, once made.
    pub fn producer(&self) -> Option<Arc<StageProducer>> {
        self.producer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `producer` the one the callbacks use (at start, and after a
    /// fatal error replaced it).
    pub fn set_producer(&self, producer: Arc<StageProducer>) {
        *self.producer.lock().unwrap_or_else(|e| e.into_inner()) = Some(producer);
    }
}

/// The consumer context of a stage.
pub struct Rebalancer {
    pub shared: Arc<Shared>,
}

impl ClientContext for Rebalancer {
    fn stats_raw(&self, statistics: &[u8]) {
        self.shared.membership.observe(statistics);
    }
}

impl ConsumerContext for Rebalancer {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let lost = consumer.assignment_lost();
            self.revoke(consumer, tpl, lost);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // What the state query serves follows the assignment at once.
        let mut held: Vec<i32> = consumer
            .assignment()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        held.sort_unstable();
        held.dedup();
        *self
            .shared
            .metrics
            .assigned
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = held;
        match rebalance {
            Rebalance::Assign(tpl) => {
                StageMetrics::add(&self.shared.metrics.rebalances, 1);
                self.assign(consumer, tpl);
                self.shared.rebalanced.store(true, Ordering::Release);
            }
            Rebalance::Revoke(_) => self.shared.rebalanced.store(true, Ordering::Release),
            Rebalance::Error(e) => {
                tracing::warn!(stage = self.shared.stage, error = %e, "rebalance failed");
            }
        }
    }
}

impl Rebalancer {
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, lost: bool) {
        let shared = &self.shared;
        let partitions: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let partitions: Vec<i32> = partitions.into_iter().collect();
        tracing::info!(
            stage = shared.stage,
            ?partitions,
            lost,
            "partitions revoked"
        );
        let mut progress = shared.lock();
        let exactly_once = progress.txn.is_some();
        if exactly_once {
            self.end_transaction(consumer, &mut progress, lost);
        } else if !lost {
            self.finish(consumer, &mut progress, &partitions);
        }
        let progress = &mut *progress;
        if let Some(txn) = &mut progress.txn {
            txn.forget(&partitions);
        }
        for e in tpl.elements() {
            progress
                .revoked
                .push((e.topic().to_string(), e.partition()));
            // Its next owner reads it from the commit.
            progress
                .rewind
                .retain(|(t, p, _)| t != e.topic() || *p != e.partition());
        }
        for &p in &partitions {
            progress.ledger.forget(p);
            progress.restoring.remove(&p);
            if let Some(changelog) = &mut progress.changelog {
                // Under exactly-once the changelog's end moves with every
                // commit marker: a returning partition is restored.
                changelog.release(&*shared.store, p, lost || exactly_once);
            }
        }
    }

    /// Exactly-once: commits the open transaction (its offsets are those of
    /// the revoked partitions too), or aborts it if the assignment was lost.
    fn end_transaction(&self, consumer: &BaseConsumer<Self>, progress: &mut Progress, lost: bool) {
        let shared = &self.shared;
        let Some(producer) = shared.producer() else {
            return;
        };
        let producer = &*producer;
        let ended = if lost {
            match progress.txn.as_mut() {
                Some(txn) if txn.open => {
                    transaction::abort(producer, txn).map(|()| Ended::Aborted {
                        reason: "the assignment was lost".into(),
                    })
                }
                _ => Ok(Ended::Idle),
            }
        } else {
            transaction::commit(
                producer,
                progress.txn.as_mut(),
                progress.changelog.as_mut(),
                &*shared.store,
                consumer,
            )
        };
        match ended {
            Ok(Ended::Committed { messages }) => {
                StageMetrics::add(&shared.metrics.committed, messages);
            }
            Ok(Ended::Idle) => {}
            Ok(Ended::Aborted { reason }) => {
                tracing::warn!(
                    stage = shared.stage,
                    reason,
                    "transaction aborted on revoke"
                );
                // What it covered is processed again by the partitions'
                // next owner; what this process keeps is restored.
                progress.seek_committed = true;
            }
            Err(e) => {
                tracing::error!(stage = shared.stage, error = %e, "transaction failed on revoke");
                if let Some(txn) = &mut progress.txn {
                    txn.doomed = Some(e.to_string());
                }
            }
        }
        // Late acknowledgements of the transaction count for nothing.
        progress.ledger = Ledger::default();
    }

    /// Waits for what is in flight, flushes the revoked partitions' state
    /// and commits what is complete, within the drain timeout.
    fn finish(&self, consumer: &BaseConsumer<Self>, progress: &mut Progress, partitions: &[i32]) {
        let shared = &self.shared;
        let Some(producer) = shared.producer() else {
            return;
        };
        let producer = &*producer;
        let deadline = Instant::now() + shared.control.drain_timeout();
        let mut scratch = Vec::new();
        loop {
            let _ = producer.flush(Duration::from_millis(100));
            apply(shared, producer, progress, &mut scratch);
            let store = &*shared.store;
            let Progress {
                ledger, changelog, ..
            } = progress;
            let Some(changelog) = changelog else {
                break;
            };
            let sent = changelog.step(ledger, store, Some(partitions), |r| {
                super::ack::enqueue(producer, r)
            });
            if let Err(e) = sent {
                tracing::warn!(stage = shared.stage, error = %e, "state of revoked partitions not flushed");
                break;
            }
            if !changelog.pending(store, Some(partitions)) || Instant::now() >= deadline {
                break;
            }
        }
        store_offsets(consumer, &shared.metrics, &mut progress.ledger);
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => {}
            Err(e) => tracing::warn!(stage = shared.stage, error = %e, "commit on revoke failed"),
        }
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let shared = &self.shared;
        let mut progress = shared.lock();
        let partitions: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        tracing::info!(stage = shared.stage, partitions = ?partitions, "partitions assigned");
        let assigned: BTreeSet<i32> = match consumer.assignment() {
            Ok(all) => all.elements().iter().map(|e| e.partition()).collect(),
            Err(_) => partitions.clone(),
        };
        let Some(changelog) = &mut progress.changelog else {
            return;
        };
        changelog.drop_suspended(&*shared.store, &assigned);
        let new: BTreeSet<i32> = partitions
            .into_iter()
            .filter(|p| !changelog.owns(*p))
            .collect();
        if new.is_empty() {
            return;
        }
        // Paused before a message of theirs is fetched; the stage resumes
        // them once their state is restored.
        let mut pause = TopicPartitionList::new();
        for e in tpl
            .elements()
            .iter()
            .filter(|e| new.contains(&e.partition()))
        {
            pause.add_partition(e.topic(), e.partition());
        }
        if let Err(e) = consumer.pause(&pause) {
            tracing::warn!(stage = shared.stage, error = %e, "cannot pause partitions to restore");
        }
        progress.restoring.extend(new);
    }
}

/// Drains the producer's delivery reports into the ledger and changelog;
/// refusals are kept for the stage to handle.
pub fn apply(
    shared: &Shared,
    producer: &StageProducer,
    progress: &mut Progress,
    scratch: &mut Vec<Delivery>,
) {
    {
        let mut by_topic = shared
            .metrics
            .acknowledged_by_topic
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        producer.context().drain(scratch, &mut by_topic);
    }
    for d in scratch.drain(..) {
        if d.failed.is_some() {
            progress.deferred.push(d);
            continue;
        }
        if d.tag.is_changelog() {
            if let Some(changelog) = &mut progress.changelog {
                changelog.ack(&mut progress.ledger, d.tag, d.offset);
            }
        } else if progress.ledger.ack(d.tag) {
            let counter = if d.tag.dead_letter() {
                &shared.metrics.dead_lettered
            } else {
                &shared.metrics.emitted
            };
            StageMetrics::add(counter, 1);
        }
    }
}

/// Stores the offsets the ledger says are complete, for the next commit.
pub fn store_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    metrics: &StageMetrics,
    ledger: &mut Ledger,
) {
    ledger.advance(|topic, partition, last, n| {
        // librdkafka stores `last + 1`: the next message to read.
        match consumer.store_offset(topic, partition, last) {
            Ok(()) => StageMetrics::add(&metrics.committed, n),
            // Revoked in a rebalance: its new owner re-reads from the
            // last commit.
            Err(e) => tracing::debug!(topic, partition, error = %e, "offset not stored"),
        }
    });
}
