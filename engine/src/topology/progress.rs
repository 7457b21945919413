//! What a stage has in flight and owes: the ledger of offsets waiting for
//! acknowledgements, the changelog's flushes, the partitions waiting for a
//! restore, and under exactly-once the open transaction.

use std::collections::BTreeSet;

use super::ack::{Delivery, Ledger};
use super::changelog::Changelog;
use super::transaction::Txn;

/// A stage's bookkeeping that both its loop and its rebalance callbacks
/// change; only the stage's thread ever locks it.
pub struct Progress {
    pub ledger: Ledger,
    pub changelog: Option<Changelog>,
    /// Partition numbers assigned and paused until their state is restored.
    pub restoring: BTreeSet<i32>,
    /// Input partitions revoked since the stage last looked: messages of
    /// them it has polled but not processed are dropped.
    pub revoked: Vec<(String, i32)>,
    /// Delivery reports the callback drained but could not act on (a
    /// refused record): the stage handles them in its next settle.
    pub deferred: Vec<Delivery>,
    /// Under exactly-once: the open transaction.
    pub txn: Option<Txn>,
    /// After an aborted transaction: every assigned partition goes back to
    /// its committed offset once its state is restored.
    pub seek_committed: bool,
    /// Messages polled and not processed (while a restore kept the group
    /// alive, or of a partition still waiting for its state), with the
    /// first such offset per partition: the stage seeks back there once
    /// the restore is done, so none is skipped.
    pub rewind: Vec<(String, i32, i64)>,
}

impl Progress {
    /// Notes that `topic`/`partition` must be read again from `offset`
    /// (the earliest noted offset wins).
    pub fn rewind_to(&mut self, topic: &str, partition: i32, offset: i64) {
        match self
            .rewind
            .iter_mut()
            .find(|(t, p, _)| t == topic && *p == partition)
        {
            Some((_, _, at)) => *at = (*at).min(offset),
            None => self.rewind.push((topic.to_string(), partition, offset)),
        }
    }
}
