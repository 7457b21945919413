//! Moving a consumer group's committed offsets, for replays.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::KafkaError;

/// How long one metadata or offset request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a rewind waits for the group to be empty: a member that just
/// left may still be listed until the coordinator has processed it, and
/// one that died until its session (weir's: 10 s) times out.
const EMPTY_GROUP_WAIT: Duration = Duration::from_secs(15);

/// Where one partition of a rewound group starts again.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionRewind {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset before the rewind, if it had one.
    pub committed_before: Option<i64>,
    /// The first offset the log still holds: where the group starts again.
    pub from: i64,
}

/// Commits the beginning of every partition of `topics` as `group`'s
/// offset, through `consumer` (of that group, not subscribed). The group
/// must have no active member, or the coordinator refuses the commit; a
/// member that is leaving is waited for.
pub fn rewind_group<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    group: &str,
    topics: &[String],
) -> Result<Vec<PartitionRewind>, KafkaError> {
    let err = |source| KafkaError::Rewind {
        group: group.to_string(),
        source,
    };
    let mut all = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(err)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                all.add_partition(t.name(), p.id());
            }
        }
    }
    let committed = consumer
        .committed_offsets(all.clone(), REQUEST_TIMEOUT)
        .map_err(err)?;
    let mut rewinds = Vec::new();
    let mut target = TopicPartitionList::new();
    for e in all.elements() {
        let (low, _) = consumer
            .fetch_watermarks(e.topic(), e.partition(), REQUEST_TIMEOUT)
            .map_err(err)?;
        let committed_before = committed
            .find_partition(e.topic(), e.partition())
            .and_then(|c| match c.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        target
            .add_partition_offset(e.topic(), e.partition(), Offset::Offset(low))
            .map_err(err)?;
        rewinds.push(PartitionRewind {
            topic: e.topic().to_string(),
            partition: e.partition(),
            committed_before,
            from: low,
        });
    }
    let deadline = Instant::now() + EMPTY_GROUP_WAIT;
    loop {
        match consumer.commit(&target, CommitMode::Sync) {
            Ok(()) => return Ok(rewinds),
            Err(RdKafkaError::ConsumerCommit(code)) if still_has_members(code) => {
                if Instant::now() >= deadline {
                    return Err(KafkaError::GroupNotEmpty {
                        group: group.to_string(),
                        waited: EMPTY_GROUP_WAIT,
                        code,
                    });
                }
                tracing::debug!(group, error = %code, "group not empty yet; retrying the rewind");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(err(e)),
        }
    }
}

/// The coordinator still sees a member, or is rebalancing.
fn still_has_members(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorNotAvailable
    )
}
