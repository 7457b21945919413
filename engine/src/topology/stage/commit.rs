//! Exactly-once: settling a stage's transaction, and what follows an
//! aborted one or a producer that cannot go on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::message::{OwnedMessage, Timestamp};
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;

use super::{Stage, max_record_bytes};
use crate::kafka::Refusal;
use crate::metrics::StageMetrics;
use crate::topology::TopologyError;
use crate::topology::ack::{Deliveries, Ledger};
use crate::topology::changelog;
use crate::topology::events::{InternalEvent, TransactionAborted};
use crate::topology::rebalance::Progress;
use crate::topology::transaction::{self, Ended, Fatal};

impl Stage {
    /// Exactly-once: handles refused records (their transaction can only
    /// abort) and commits the transaction when it is due.
    pub(super) fn settle_transaction(
        &mut self,
        progress: &mut Progress,
        force: bool,
    ) -> Result<(), TopologyError> {
        for d in std::mem::take(&mut progress.deferred) {
            let Some((error, record)) = d.failed else {
                continue;
            };
            // Purged by an abort: the records of a transaction that will
            // never commit, whose messages are processed again.
            if matches!(
                error,
                RdKafkaError::MessageProduction(
                    RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight
                )
            ) {
                continue;
            }
            let refusal = Refusal::of(&error);
            if d.tag.is_changelog() {
                return Err(self.changelog_failure(&changelog::ChangelogError {
                    topic: record.topic().to_string(),
                    source: error,
                }));
            }
            let timed_out =
                error == RdKafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
            let source = progress
                .ledger
                .source(d.tag.slot())
                .map(|(t, p)| (t.to_string(), p));
            let Some(txn) = progress.txn.as_mut() else {
                break;
            };
            if refusal.is_the_records() || refusal == Refusal::TooLarge {
                if let Some((topic, partition)) = source {
                    let reason = format!("{} refused an output record: {error}", record.topic());
                    txn.poisoned
                        .insert((topic, partition, d.tag.offset()), reason);
                }
                txn.doomed
                    .get_or_insert_with(|| format!("{} refused a record: {error}", record.topic()));
            } else if timed_out {
                txn.doomed.get_or_insert_with(|| {
                    format!("{} did not acknowledge in time", record.topic())
                });
            } else {
                let input = OwnedMessage::new(
                    None,
                    None,
                    source.map_or_else(String::new, |s| s.0),
                    Timestamp::NotAvailable,
                    -1,
                    d.tag.offset(),
                    None,
                );
                return Err(self.platform_failure(record.topic(), &input, &error));
            }
        }
        let interval = self.shared.commit_interval;
        let Some(txn) = progress.txn.as_ref() else {
            return Ok(());
        };
        if !(txn.due(interval) || (force && txn.open) || txn.doomed.is_some()) {
            return Ok(());
        }
        let written = progress.changelog.as_ref().map_or(0, |c| c.written);
        let ended = match transaction::commit(
            &self.producer,
            progress.txn.as_mut(),
            progress.changelog.as_mut(),
            &*self.shared.store,
            &*self.consumer,
        ) {
            Ok(ended) => ended,
            Err(fatal) => return self.replace_producer(progress, &fatal),
        };
        let written = progress.changelog.as_ref().map_or(0, |c| c.written) - written;
        StageMetrics::add(&self.metrics.changelog_records, written);
        match ended {
            Ended::Idle => {}
            Ended::Committed { messages } => {
                StageMetrics::add(&self.metrics.committed, messages);
                StageMetrics::add(&self.metrics.transactions, 1);
                progress.ledger.advance(|_, _, _, _| {});
            }
            Ended::Aborted { reason } => {
                TransactionAborted {
                    stage: &self.config.name,
                    reason: &reason,
                }
                .emit(&self.metrics);
                self.rewind(progress);
            }
        }
        Ok(())
    }

    /// After an abort: the state of every owned partition is restored from
    /// the changelog and the consumer goes back to the committed offsets.
    fn rewind(&self, progress: &mut Progress) {
        progress.ledger = Ledger::default();
        if let Some(changelog) = &mut progress.changelog {
            let owned: Vec<i32> = changelog.owned().collect();
            for p in owned {
                changelog.release(&*self.shared.store, p, true);
                progress.restoring.insert(p);
            }
        }
        progress.seek_committed = true;
    }

    /// A transactional producer in a fatal state (fenced when the broker
    /// aborted a transaction it let run past its timeout, say) is replaced
    /// by a new one with the same id, and the stage goes back to its
    /// committed offsets and state. More than a few in a short while stop
    /// the stage: something else (another live process with this instance
    /// id) keeps fencing it.
    pub(super) fn replace_producer(
        &mut self,
        progress: &mut Progress,
        fatal: &Fatal,
    ) -> Result<(), TopologyError> {
        let now = Instant::now();
        self.replaced_producers
            .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        self.replaced_producers.push(now);
        let Some(id) = self.shared.transactional_id.clone() else {
            return Err(self.transaction_failure(fatal));
        };
        if self.replaced_producers.len() > 3 {
            return Err(TopologyError::StageFailed {
                stage: self.config.name.clone(),
                reason: format!(
                    "{fatal}; its producer was replaced {} times in a minute: is another \
                     process running with the same --instance-id?",
                    self.replaced_producers.len() - 1
                ),
            });
        }
        tracing::warn!(stage = self.config.name, error = %fatal, "replacing the transactional producer");
        let producer = self
            .clients
            .transactional_producer(
                Deliveries::new(self.control.budget.clone()),
                max_record_bytes(&self.config),
                self.producer_queue_kb,
                &id,
                self.config.compression,
            )
            .map_err(|e| self.transaction_failure(&Fatal(e.to_string())))?;
        producer
            .init_transactions(Duration::from_secs(60))
            .map_err(|e| self.transaction_failure(&Fatal(e.to_string())))?;
        let producer = Arc::new(producer);
        self.shared.set_producer(producer.clone());
        self.producer = producer;
        if let Some(txn) = &mut progress.txn {
            txn.open = false;
            txn.positions.clear();
            txn.messages = 0;
            txn.doomed = None;
        }
        TransactionAborted {
            stage: &self.config.name,
            reason: fatal,
        }
        .emit(&self.metrics);
        self.rewind(progress);
        Ok(())
    }

    fn transaction_failure(&self, e: &Fatal) -> TopologyError {
        TopologyError::StageFailed {
            stage: self.config.name.clone(),
            reason: e.to_string(),
        }
    }
}
