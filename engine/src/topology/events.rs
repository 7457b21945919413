//! What a stage reports as it runs, one struct per event: `emit` writes the
//! event's log line and updates its metrics together, so what an operator
//! reads in the logs and what `/metrics` counts cannot drift apart (Vector's
//! `internal_events`). A new event gets both, here.

use std::fmt::Display;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::dead_letter::KIND_PLUGIN_ERROR;
use crate::config::OnError;
use crate::metrics::StageMetrics;
use crate::wasm::CallErrorKind;

pub(crate) trait InternalEvent {
    fn emit(self, metrics: &StageMetrics);
}

/// A message failed (the plugin rejected it, its call trapped, or its
/// outputs were refused) and is handled as the stage's `on_error` says.
pub(crate) struct MessageFailed<'a> {
    pub stage: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The `weir.error.kind` header's value.
    pub kind: &'a str,
    pub policy: &'a OnError,
    pub reason: &'a str,
}

impl InternalEvent for MessageFailed<'_> {
    fn emit(self, metrics: &StageMetrics) {
        metrics.failed(self.kind);
        if matches!(self.policy, OnError::Skip) {
            StageMetrics::add(&metrics.skipped, 1);
        }
        let MessageFailed {
            stage,
            topic,
            partition,
            offset,
            kind,
            policy,
            reason,
        } = self;
        let policy = policy.as_str();
        // The plugin's own verdict on bad data is routine, and may be
        // frequent; anything else is the operator's business.
        if kind == KIND_PLUGIN_ERROR {
            tracing::debug!(
                stage,
                topic,
                partition,
                offset,
                kind,
                policy,
                error = reason,
                "message failed"
            );
        } else {
            tracing::warn!(
                stage,
                topic,
                partition,
                offset,
                kind,
                policy,
                error = reason,
                "message failed"
            );
        }
    }
}

/// A plugin call trapped or ran out of time. Its instance is discarded and
/// the call's messages are tried one at a time on a new one.
pub(crate) struct PluginCallFailed<'a> {
    pub stage: &'a str,
    pub kind: CallErrorKind,
    pub messages: usize,
    pub error: &'a str,
}

impl InternalEvent for PluginCallFailed<'_> {
    fn emit(self, metrics: &StageMetrics) {
        let counter = match self.kind {
            CallErrorKind::Timeout => &metrics.timeouts,
            // The plugin is fine; only its answer was refused, and each
            // message it concerns is counted when it fails.
            CallErrorKind::OutputLimit => return,
            _ => &metrics.traps,
        };
        StageMetrics::add(counter, 1);
        tracing::info!(
            stage = self.stage,
            kind = self.kind.as_str(),
            messages = self.messages,
            error = self.error,
            "plugin call failed; its instance is discarded"
        );
    }
}

/// A new plugin instance replaces one discarded after a failed call.
pub(crate) struct InstanceRestarted<'a> {
    pub stage: &'a str,
}

impl InternalEvent for InstanceRestarted<'_> {
    fn emit(self, metrics: &StageMetrics) {
        StageMetrics::add(&metrics.instance_restarts, 1);
        tracing::debug!(stage = self.stage, "new plugin instance");
    }
}

/// A reload's new plugin version took over, between two batches.
pub(crate) struct PluginSwapped<'a> {
    pub stage: &'a str,
    pub generation: u64,
    pub digest: &'a str,
    /// From the change (file event, API call) to the swap.
    pub change_to_live: Duration,
    /// How long the stage stood still for it.
    pub pause: Duration,
}

impl InternalEvent for PluginSwapped<'_> {
    fn emit(self, metrics: &StageMetrics) {
        let change_to_live_ms = self.change_to_live.as_millis() as u64;
        let swap_pause_us = self.pause.as_micros() as u64;
        StageMetrics::add(&metrics.swaps, 1);
        metrics
            .last_change_to_live_ms
            .store(change_to_live_ms, Ordering::Relaxed);
        metrics
            .last_swap_pause_us
            .store(swap_pause_us, Ordering::Relaxed);
        tracing::info!(
            stage = self.stage,
            generation = self.generation,
            digest = &self.digest[..self.digest.len().min(12)],
            change_to_live_ms,
            swap_pause_us,
            "plugin swapped in"
        );
    }
}

/// A stage's consumer was out of its group for too long and is replaced by
/// a new one.
pub(crate) struct ConsumerReplaced<'a> {
    pub stage: &'a str,
    pub out_for: Duration,
    /// librdkafka's group state while it was out.
    pub state: &'a str,
}

impl InternalEvent for ConsumerReplaced<'_> {
    fn emit(self, metrics: &StageMetrics) {
        StageMetrics::add(&metrics.consumers_replaced, 1);
        tracing::warn!(
            stage = self.stage,
            out_for_s = self.out_for.as_secs(),
            state = self.state,
            "consumer out of its group for too long; replacing it"
        );
    }
}

/// A dead letter too large for its topic goes without its value; the
/// original stays in its input topic, at the coordinates its headers name.
pub(crate) struct DeadLetterWithoutValue<'a> {
    pub stage: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The value's size.
    pub size: usize,
    pub error: &'a dyn Display,
}

impl InternalEvent for DeadLetterWithoutValue<'_> {
    fn emit(self, metrics: &StageMetrics) {
        StageMetrics::add(&metrics.dead_letters_without_value, 1);
        tracing::warn!(
            stage = self.stage,
            topic = self.topic,
            partition = self.partition,
            offset = self.offset,
            size = self.size,
            error = %self.error,
            "dead letter sent without its value"
        );
    }
}

/// Keyed state read back from a stage's changelog, for the partitions
/// assigned to it.
pub(crate) struct StateRestored<'a> {
    pub stage: &'a str,
    pub changelog: &'a str,
    pub partitions: usize,
    pub records: u64,
    pub took: Duration,
}

impl InternalEvent for StateRestored<'_> {
    fn emit(self, metrics: &StageMetrics) {
        let duration_ms = self.took.as_millis() as u64;
        StageMetrics::add(&metrics.state_restored_records, self.records);
        metrics
            .last_restore_ms
            .store(duration_ms, Ordering::Relaxed);
        tracing::info!(
            stage = self.stage,
            changelog = self.changelog,
            partitions = self.partitions,
            records = self.records,
            duration_ms,
            "state restored"
        );
    }
}

/// A transaction was aborted (or its producer replaced): its messages are
/// processed again from the committed offsets, on restored state.
pub(crate) struct TransactionAborted<'a> {
    pub stage: &'a str,
    pub reason: &'a dyn Display,
}

impl InternalEvent for TransactionAborted<'_> {
    fn emit(self, metrics: &StageMetrics) {
        StageMetrics::add(&metrics.aborted_transactions, 1);
        tracing::warn!(
            stage = self.stage,
            reason = %self.reason,
            "transaction aborted; its messages are processed again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_counts_what_it_logs() {
        let m = StageMetrics::default();
        let failed = |kind, policy| MessageFailed {
            stage: "s",
            topic: "t",
            partition: 0,
            offset: 1,
            kind,
            policy,
            reason: "r",
        };
        failed("trap", &OnError::DeadLetter).emit(&m);
        failed(KIND_PLUGIN_ERROR, &OnError::Skip).emit(&m);
        let snap = m.snapshot();
        assert_eq!(snap.failures["trap"], 1);
        assert_eq!(snap.failures[KIND_PLUGIN_ERROR], 1);
        assert_eq!(snap.skipped, 1);

        for kind in [
            CallErrorKind::Trap,
            CallErrorKind::Memory,
            CallErrorKind::Timeout,
            CallErrorKind::OutputLimit,
        ] {
            PluginCallFailed {
                stage: "s",
                kind,
                messages: 3,
                error: "e",
            }
            .emit(&m);
        }
        InstanceRestarted { stage: "s" }.emit(&m);
        PluginSwapped {
            stage: "s",
            generation: 2,
            digest: "abc",
            change_to_live: Duration::from_millis(40),
            pause: Duration::from_micros(7),
        }
        .emit(&m);
        ConsumerReplaced {
            stage: "s",
            out_for: Duration::from_secs(61),
            state: "query-coord",
        }
        .emit(&m);
        DeadLetterWithoutValue {
            stage: "s",
            topic: "t",
            partition: 0,
            offset: 1,
            size: 9,
            error: &"too large",
        }
        .emit(&m);
        StateRestored {
            stage: "s",
            changelog: "c",
            partitions: 2,
            records: 500,
            took: Duration::from_millis(30),
        }
        .emit(&m);
        TransactionAborted {
            stage: "s",
            reason: &"fenced",
        }
        .emit(&m);
        let snap = m.snapshot();
        assert_eq!(
            (snap.state_restored_records, snap.last_restore_ms),
            (500, 30)
        );
        assert_eq!(snap.aborted_transactions, 1);
        assert_eq!((snap.traps, snap.timeouts), (2, 1));
        assert_eq!(snap.instance_restarts, 1);
        assert_eq!(snap.swaps, 1);
        assert_eq!(
            (snap.last_change_to_live_ms, snap.last_swap_pause_us),
            (40, 7)
        );
        assert_eq!(snap.consumers_replaced, 1);
        assert_eq!(snap.dead_letters_without_value, 1);
    }
}
