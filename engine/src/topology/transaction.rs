//! Exactly-once: a stage's outputs, dead letters, changelog records and
//! input offsets commit together, in one Kafka transaction every commit
//! interval.
//!
//! A consumer reading weir's outputs with `isolation.level=read_committed`
//! then sees the records of each input message exactly once, and the
//! changelog always matches the committed offsets, so a restart or a
//! rebalance resumes with the state of exactly the messages committed.
//!
//! - **Commit**: every owned partition's state changes are written to the
//!   changelog, the next offsets are added with the consumer's group
//!   metadata (so a member the group has moved on from is fenced), and the
//!   transaction is committed, waiting as long as the broker takes.
//! - **Abort** (an error the transaction cannot survive): the transaction
//!   is aborted; the state of every owned partition is dropped and
//!   restored from the changelog, and the consumer goes back to the
//!   committed offsets, so the messages since are processed again.
//! - An input whose output the broker refused for what it is (too large,
//!   say) is remembered across the abort and fails as `produce_error` when
//!   processed again, so one record cannot stop the stage.
//! - The producer's `transactional.id` is stable per stage and instance,
//!   so a restarted process fences its previous incarnation at once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::producer::Producer;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use super::ack::StageProducer;
use super::changelog::Changelog;
use crate::state::StateStore;

/// The open transaction of an exactly-once stage, and what it covers.
#[derive(Debug, Default)]
pub struct Txn {
    /// Begun and not yet committed or aborted.
    pub open: bool,
    pub begun_at: Option<Instant>,
    /// The next offset to read of each input partition processed in it.
    pub positions: BTreeMap<(String, i32), i64>,
    /// Why it can only be aborted, if something made it so.
    pub doomed: Option<String>,
    /// Inputs whose records the broker refused for what they are, with
    /// the reason: after the abort they fail instead of being retried.
    pub poisoned: HashMap<(String, i32, i64), String>,
    /// Input messages it covers, for the committed count.
    pub messages: u64,
}

/// How a commit ended.
#[derive(Debug)]
pub enum Ended {
    /// Nothing was open.
    Idle,
    Committed {
        messages: u64,
    },
    /// Aborted: state must be restored and the consumer rewound.
    Aborted {
        reason: String,
    },
}

/// The producer cannot go on (fenced by a newer incarnation, or a fatal
/// error): the stage stops with this.
#[derive(Debug, thiserror::Error)]
#[error("the stage's transactional producer failed for good: {0}")]
pub struct Fatal(pub String);

impl Txn {
    /// Begins a transaction unless one is open.
    pub fn begin(&mut self, producer: &StageProducer) -> Result<(), Fatal> {
        if self.open {
            return Ok(());
        }
        producer
            .begin_transaction()
            .map_err(|e| Fatal(e.to_string()))?;
        self.open = true;
        self.begun_at = Some(Instant::now());
        Ok(())
    }

    /// Whether the open transaction has run for `interval`.
    pub fn due(&self, interval: Duration) -> bool {
        self.open && self.begun_at.is_some_and(|t| t.elapsed() >= interval)
    }

    /// Records that input messages up to `offset` of a partition are done.
    pub fn processed(&mut self, topic: &str, partition: i32, offset: i64, messages: u64) {
        self.positions
            .insert((topic.to_string(), partition), offset + 1);
        self.messages += messages;
    }

    /// Closes a committed transaction; returns the messages it covered.
    /// A poisoned input stays so until the stage has moved past it.
    fn committed(&mut self) -> u64 {
        self.open = false;
        let positions = std::mem::take(&mut self.positions);
        self.poisoned.retain(|(topic, partition, offset), _| {
            positions
                .get(&(topic.clone(), *partition))
                .is_none_or(|next| offset >= next)
        });
        std::mem::take(&mut self.messages)
    }

    /// Forgets the positions of partitions no longer held (revoked).
    pub fn forget(&mut self, partitions: &[i32]) {
        self.positions.retain(|(_, p), _| !partitions.contains(p));
    }
}

/// Writes the state changes of every owned partition, adds the offsets and
/// commits; aborts if the transaction cannot commit.
pub fn commit<C: ConsumerContext>(
    producer: &StageProducer,
    txn: Option<&mut Txn>,
    changelog: Option<&mut Changelog>,
    store: &dyn StateStore,
    consumer: &BaseConsumer<C>,
) -> Result<Ended, Fatal> {
    let Some(txn) = txn else {
        return Ok(Ended::Idle);
    };
    if !txn.open {
        return Ok(Ended::Idle);
    }
    let started = Instant::now();
    let outcome = (|| {
        if let Some(reason) = &txn.doomed {
            return Err(Step::Abort(reason.clone()));
        }
        if let Some(changelog) = changelog {
            write_changes(changelog, store, producer).map_err(Step::from)?;
        }
        if !txn.positions.is_empty() {
            let mut offsets = TopicPartitionList::new();
            for ((topic, partition), next) in &txn.positions {
                offsets
                    .add_partition_offset(topic, *partition, Offset::Offset(*next))
                    .map_err(Step::from)?;
            }
            let metadata = consumer
                .group_metadata()
                .ok_or_else(|| Step::Abort("the consumer has no group metadata".into()))?;
            // A rebalance under way makes this fail until the consumer
            // polls again, which it cannot while this waits: a few tries,
            // then the transaction is aborted and the group settles.
            retrying(3, || {
                producer.send_offsets_to_transaction(&offsets, &metadata, Duration::from_secs(30))
            })?;
        }
        wait_delivered(producer);
        retrying(5, || producer.commit_transaction(Timeout::Never))
    })();
    tracing::debug!(
        duration_us = started.elapsed().as_micros() as u64,
        "transaction ended"
    );
    match outcome {
        Ok(()) => Ok(Ended::Committed {
            messages: txn.committed(),
        }),
        Err(Step::Abort(reason)) => {
            abort(producer, txn)?;
            Ok(Ended::Aborted { reason })
        }
        Err(Step::Fatal(reason)) => Err(Fatal(reason)),
    }
}

/// Waits, briefly polling, until the producer has nothing in flight.
///
/// `commit_transaction` flushes first, and rdkafka's flush, when records
/// are still in flight, waits for events in slices of up to 100 ms that
/// the threaded producer's own poll thread takes first: a commit then took
/// 100 ms however fast the broker was. With nothing left in flight the
/// flush returns at once. A record the broker never acknowledges fails
/// after `message.timeout.ms`, so this ends.
fn wait_delivered(producer: &StageProducer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Aborts the open transaction.
pub fn abort(producer: &StageProducer, txn: &mut Txn) -> Result<(), Fatal> {
    txn.open = false;
    txn.positions.clear();
    txn.messages = 0;
    txn.doomed = None;
    match producer.abort_transaction(Timeout::Never) {
        Ok(()) => Ok(()),
        Err(e) => Err(Fatal(format!("cannot abort the transaction: {e}"))),
    }
}

/// Sends the changes of every owned partition to the changelog.
fn write_changes(
    changelog: &mut Changelog,
    store: &dyn StateStore,
    producer: &StageProducer,
) -> Result<(), RdKafkaError> {
    let owned: Vec<i32> = changelog.owned().collect();
    changelog.write_all(store, &owned, |record| {
        super::ack::enqueue(producer, record)
    })
}

enum Step {
    Abort(String),
    Fatal(String),
}

impl From<RdKafkaError> for Step {
    fn from(e: RdKafkaError) -> Self {
        match &e {
            RdKafkaError::Transaction(t) if t.is_fatal() => Step::Fatal(e.to_string()),
            _ => Step::Abort(e.to_string()),
        }
    }
}

/// Runs a transactional call again, up to `attempts` times in all, while
/// librdkafka says it may be retried; then the transaction is aborted.
/// Never without end: the stage thread is also the one that must poll its
/// consumer for a rebalance to finish.
fn retrying(attempts: u32, mut call: impl FnMut() -> Result<(), RdKafkaError>) -> Result<(), Step> {
    let mut tried = 0;
    loop {
        tried += 1;
        match call() {
            Ok(()) => return Ok(()),
            Err(RdKafkaError::Transaction(t)) if t.is_retriable() && tried < attempts => {
                tracing::debug!(error = %t, tried, "transactional call retried");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(Step::from(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_keeps_the_poisoned_inputs_not_yet_passed() {
        let mut txn = Txn {
            open: true,
            begun_at: Some(Instant::now()),
            ..Txn::default()
        };
        for offset in [5, 9] {
            txn.poisoned
                .insert(("in".into(), 0, offset), "too large".into());
        }
        txn.poisoned.insert(("in".into(), 1, 3), "too large".into());
        txn.processed("in", 0, 6, 7);
        assert!(txn.due(Duration::ZERO));
        assert_eq!(txn.committed(), 7);
        assert!(!txn.open && txn.positions.is_empty());
        let left: Vec<_> = txn
            .poisoned
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        // Offset 5 is behind the commit (next 7); 9 is ahead, and
        // partition 1 was not in the transaction.
        assert_eq!(
            left,
            vec![("in".to_string(), 0, 9), ("in".to_string(), 1, 3)]
        );
        txn.processed("in", 1, 0, 1);
        txn.forget(&[1]);
        assert!(txn.positions.is_empty());
    }
}
