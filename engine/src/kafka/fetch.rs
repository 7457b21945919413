//! Reading one record back by its coordinates.
//!
//! A record an output topic refuses is only known by its delivery report,
//! long after the input it came from was handed to the plugin and released.
//! The input is still in its topic, so it is read again, once, to go to the
//! dead-letter topic whole. This is the rare path; the hot loop keeps no
//! copy of its inputs.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

/// Reads the record at `offset` of `topic`/`partition` with `consumer` (one
/// that belongs to no group), waiting at most `timeout`. `None` when it is
/// gone (retention, compaction) or did not arrive in time.
pub fn fetch_one(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
    timeout: Duration,
) -> Result<Option<OwnedMessage>, rdkafka::error::KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    let found = loop {
        let now = Instant::now();
        if now >= deadline {
            break None;
        }
        match consumer.poll(deadline - now) {
            Some(Ok(m)) if m.offset() == offset => break Some(m.detach()),
            // Compacted away: the next record is later.
            Some(Ok(m)) if m.offset() > offset => break None,
            Some(Ok(_)) | None => {}
            Some(Err(e)) => {
                tracing::debug!(topic, partition, offset, error = %e, "re-reading an input");
            }
        }
    };
    consumer.unassign()?;
    Ok(found)
}
