//! What becomes of a polled batch, decided without Kafka or wasm: how it
//! splits into runs the plugin is called on, which messages never reach
//! the plugin, and how a failed call is narrowed down to the messages that
//! fail on their own. The stage does the I/O around these.

use std::collections::{BTreeMap, HashMap};

use rdkafka::Message;

use super::TIMEOUT_RETRIES;
use crate::topology::dead_letter;
use crate::wasm::{CallError, CallErrorKind};

/// Consecutive messages of one partition, in offset order: one plugin call.
pub(super) struct Run<'m, M> {
    pub topic: &'m str,
    pub partition: i32,
    pub messages: Vec<&'m M>,
}

/// Splits a batch into runs. A plugin call sees one partition at a time,
/// so its state scope is unambiguous, and order within each partition is
/// kept. A partition revoked and assigned again while the batch was polled
/// starts over from its last commit: its offsets go back, and the messages
/// from there on are a run of their own.
pub(super) fn runs<M: Message>(messages: &[M]) -> Vec<Run<'_, M>> {
    let mut by_partition: BTreeMap<(&str, i32), Vec<Vec<&M>>> = BTreeMap::new();
    for m in messages {
        let runs = by_partition.entry((m.topic(), m.partition())).or_default();
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|l| l.offset() < m.offset()) => run.push(m),
            _ => runs.push(vec![m]),
        }
    }
    by_partition
        .into_iter()
        .flat_map(|((topic, partition), runs)| {
            runs.into_iter().map(move |messages| Run {
                topic,
                partition,
                messages,
            })
        })
        .collect()
}

/// What `max_payload_bytes` measures: the key and the value.
pub(super) fn payload_size(m: &impl Message) -> usize {
    m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len)
}

/// Why a message fails without reaching the plugin, if it does: its
/// records were lost with an aborted transaction (`poisoned`, which fails
/// it as at-least-once would have), or it is over `max_payload_bytes` (it
/// could make the plugin do nothing but run out of memory or time).
pub(super) fn refused_before_call(
    m: &impl Message,
    limit: usize,
    poisoned: &HashMap<i64, String>,
) -> Option<(&'static str, String)> {
    if let Some(reason) = poisoned.get(&m.offset()) {
        return Some((dead_letter::KIND_PRODUCE_ERROR, reason.clone()));
    }
    let size = payload_size(m);
    (size > limit).then(|| {
        (
            dead_letter::KIND_OVERSIZE,
            format!(
                "message of {size} bytes (key and value) is over the stage's max_payload_bytes \
                 of {limit}"
            ),
        )
    })
}

/// A run's results: one call's for all of it, or one per message.
pub(super) enum Results<R> {
    Batch(R),
    Singles(Vec<Result<R, CallError>>),
}

/// What became of one input message.
pub(super) enum Fate<'r, R> {
    /// Its outcome is the `usize`th of the result.
    Processed(&'r R, usize),
    Failed {
        kind: &'static str,
        reason: String,
    },
}

/// Calls the plugin on a run of `n` messages at once (`call(None)`). If
/// that fails, calls it on each message alone (`call(Some(i))`), so that
/// only a message that fails on its own is failed. The deadline is wall
/// time, and a host starved of CPU can miss it through no fault of the
/// message, so a timeout gets [`TIMEOUT_RETRIES`] more tries before the
/// message is failed.
pub(super) fn isolate<R>(
    n: usize,
    mut call: impl FnMut(Option<usize>) -> Result<R, CallError>,
) -> Results<R> {
    if let Ok(result) = call(None) {
        return Results::Batch(result);
    }
    let singles = (0..n)
        .map(|i| {
            let mut timeouts = 0;
            loop {
                match call(Some(i)) {
                    Err(e) if e.kind == CallErrorKind::Timeout && timeouts < TIMEOUT_RETRIES => {
                        timeouts += 1;
                    }
                    outcome => return outcome,
                }
            }
        })
        .collect();
    Results::Singles(singles)
}

/// The fate of each of the `n` messages `results` are for.
pub(super) fn fates<R>(results: &Results<R>, n: usize) -> Vec<Fate<'_, R>> {
    match results {
        Results::Batch(r) => (0..n).map(|i| Fate::Processed(r, i)).collect(),
        Results::Singles(rs) => rs
            .iter()
            .map(|r| match r {
                Ok(r) => Fate::Processed(r, 0),
                Err(e) => Fate::Failed {
                    kind: e.kind.as_str(),
                    reason: e.message.clone(),
                },
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;

    fn message(topic: &str, partition: i32, offset: i64, value: &[u8]) -> OwnedMessage {
        OwnedMessage::new(
            Some(value.to_vec()),
            Some(b"k".to_vec()),
            topic.into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    /// (topic, partition, offsets) of each run.
    fn shape(runs: &[Run<'_, OwnedMessage>]) -> Vec<(String, i32, Vec<i64>)> {
        runs.iter()
            .map(|r| {
                let offsets = r.messages.iter().map(|m| m.offset()).collect();
                (r.topic.to_string(), r.partition, offsets)
            })
            .collect()
    }

    #[test]
    fn a_batch_runs_per_partition_in_offset_order() {
        let batch = [
            message("b", 0, 5, b""),
            message("a", 1, 7, b""),
            message("a", 0, 3, b""),
            message("a", 1, 8, b""),
            message("a", 0, 4, b""),
        ];
        assert_eq!(
            shape(&runs(&batch)),
            vec![
                ("a".into(), 0, vec![3, 4]),
                ("a".into(), 1, vec![7, 8]),
                ("b".into(), 0, vec![5]),
            ]
        );
    }

    #[test]
    fn a_partition_that_went_back_starts_a_new_run() {
        // Revoked and assigned again mid-poll: 10, 11, then from the
        // commit at 9 again.
        let batch = [
            message("a", 0, 10, b""),
            message("a", 0, 11, b""),
            message("a", 0, 9, b""),
            message("a", 0, 10, b""),
            message("a", 0, 10, b""),
        ];
        assert_eq!(
            shape(&runs(&batch)),
            vec![
                ("a".into(), 0, vec![10, 11]),
                ("a".into(), 0, vec![9, 10]),
                ("a".into(), 0, vec![10]),
            ]
        );
    }

    #[test]
    fn poisoned_and_oversized_messages_never_reach_the_plugin() {
        let poisoned = HashMap::from([(2, "lost with an aborted transaction".to_string())]);
        // The key counts: "k" and 9 bytes of value make 10.
        let fits = message("a", 0, 1, b"123456789");
        assert!(refused_before_call(&fits, 10, &poisoned).is_none());
        let (kind, reason) = refused_before_call(&message("a", 0, 1, b"1234567890"), 10, &poisoned)
            .expect("over the limit");
        assert_eq!(kind, dead_letter::KIND_OVERSIZE);
        assert!(
            reason.contains("11 bytes") && reason.contains("of 10"),
            "{reason}"
        );
        let (kind, reason) =
            refused_before_call(&message("a", 0, 2, b""), 10, &poisoned).expect("poisoned");
        assert_eq!(kind, dead_letter::KIND_PRODUCE_ERROR);
        assert_eq!(reason, "lost with an aborted transaction");
    }

    fn failure(kind: CallErrorKind) -> CallError {
        CallError {
            stage: "s".into(),
            kind,
            message: format!("{kind:?}"),
        }
    }

    /// `isolate` over scripted answers; the calls it made, in order.
    fn scripted(
        n: usize,
        script: Vec<(Option<usize>, Result<u32, CallErrorKind>)>,
    ) -> (Results<u32>, Vec<Option<usize>>) {
        let mut script = VecDeque::from(script);
        let mut calls = Vec::new();
        let results = isolate(n, |one| {
            calls.push(one);
            let (expected, answer) = script.pop_front().expect("no more calls scripted");
            assert_eq!(one, expected, "calls so far: {calls:?}");
            answer.map_err(failure)
        });
        assert!(script.is_empty(), "calls not made: {script:?}");
        (results, calls)
    }

    #[test]
    fn a_batch_that_succeeds_is_called_once() {
        let (results, calls) = scripted(3, vec![(None, Ok(7))]);
        assert!(matches!(results, Results::Batch(7)));
        assert_eq!(calls, vec![None]);
        let fates = fates(&results, 3);
        let indexes: Vec<usize> = fates
            .iter()
            .map(|f| match f {
                Fate::Processed(7, i) => *i,
                _ => panic!("every message is processed by the batch's result"),
            })
            .collect();
        assert_eq!(indexes, vec![0, 1, 2]);
    }

    #[test]
    fn a_failed_batch_fails_only_the_messages_that_fail_alone() {
        use CallErrorKind::*;
        let (results, _) = scripted(
            4,
            vec![
                (None, Err(Trap)),
                (Some(0), Ok(10)),
                (Some(1), Err(Memory)),
                // A timeout is tried again, twice more at most.
                (Some(2), Err(Timeout)),
                (Some(2), Ok(12)),
                (Some(3), Err(Timeout)),
                (Some(3), Err(Timeout)),
                (Some(3), Err(Timeout)),
            ],
        );
        let fates: Vec<String> = fates(&results, 4)
            .iter()
            .map(|f| match f {
                Fate::Processed(r, i) => format!("ok {r} {i}"),
                Fate::Failed { kind, .. } => format!("failed {kind}"),
            })
            .collect();
        assert_eq!(
            fates,
            vec!["ok 10 0", "failed memory", "ok 12 0", "failed timeout"]
        );
    }

    #[test]
    fn a_trap_alone_is_not_tried_again() {
        let (results, calls) = scripted(
            1,
            vec![
                (None, Err(CallErrorKind::Trap)),
                (Some(0), Err(CallErrorKind::Trap)),
            ],
        );
        assert_eq!(calls, vec![None, Some(0)]);
        assert!(matches!(&results, Results::Singles(s) if s.len() == 1 && s[0].is_err()));
    }
}
