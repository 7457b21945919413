//! Consumer lag, sampled off the stage's thread.
//!
//! Sampling asks the broker for watermarks (and, without an assignment,
//! for committed offsets); against a slow broker that takes up to a
//! request timeout per partition, which must not stall the hot loop. A
//! sampler thread per stage shares the stage's consumer (librdkafka's
//! handle is thread-safe) and stops before the stage drops it, so the
//! consumer still leaves its group as soon as the stage ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

use crate::metrics::StageMetrics;

/// How often lag is sampled.
const INTERVAL: Duration = Duration::from_secs(2);
/// How long one broker request of a sample may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How quickly the sampler notices it should stop.
const TICK: Duration = Duration::from_millis(50);

/// Stops and joins the sampler when dropped.
pub struct LagSampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LagSampler {
    pub fn spawn<C: ConsumerContext + 'static>(
        stage: &str,
        consumer: Arc<BaseConsumer<C>>,
        inputs: Vec<String>,
        metrics: Arc<StageMetrics>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("weir-lag-{stage}"))
            .spawn(move || {
                let mut next = Instant::now() + INTERVAL;
                while !flag.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        sample(&consumer, &inputs, &metrics);
                        next = Instant::now() + INTERVAL;
                    }
                    std::thread::sleep(TICK);
                }
            })
            // Without a sampler the stage still runs; lag stays unreported.
            .map_err(|e| tracing::warn!(stage, error = %e, "cannot start the lag sampler"))
            .ok();
        LagSampler { stop, thread }
    }
}

impl Drop for LagSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// High watermark minus position, over the assigned partitions. A
/// partition not fetched yet counts from the group's committed offset; a
/// consumer with no assignment (paused before its first poll, or out of
/// the group after a long pause) counts from the committed offsets over
/// all of its inputs' partitions, as `kafka-consumer-groups.sh` does.
fn sample<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    inputs: &[String],
    metrics: &StageMetrics,
) {
    let assignment = consumer.assignment().unwrap_or_default();
    let (positions, held) = if assignment.count() > 0 {
        let mut held: Vec<i32> = assignment
            .elements()
            .iter()
            .map(|e| e.partition())
            .collect();
        held.sort_unstable();
        held.dedup();
        (consumer.position(), held)
    } else {
        (all_partitions(consumer, inputs), Vec::new())
    };
    *metrics.assigned.lock().unwrap_or_else(|e| e.into_inner()) = held;
    let Ok(mut positions) = positions else {
        return;
    };
    let unknown: TopicPartitionList = {
        let mut t = TopicPartitionList::new();
        for e in positions.elements() {
            if !matches!(e.offset(), Offset::Offset(_)) {
                t.add_partition(e.topic(), e.partition());
            }
        }
        t
    };
    if unknown.count() > 0
        && let Ok(committed) = consumer.committed_offsets(unknown, REQUEST_TIMEOUT)
    {
        for e in committed.elements() {
            let _ = positions.set_partition_offset(e.topic(), e.partition(), e.offset());
        }
    }
    let mut lag = 0i64;
    for e in positions.elements() {
        let Ok((low, high)) = consumer.fetch_watermarks(e.topic(), e.partition(), REQUEST_TIMEOUT)
        else {
            continue;
        };
        let position = match e.offset() {
            Offset::Offset(o) => o,
            // Nothing consumed or committed: all that is there is behind.
            _ => low,
        };
        lag += (high - position).max(0);
    }
    metrics.lag.store(lag as u64, Ordering::Relaxed);
}

fn all_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    inputs: &[String],
) -> KafkaResult<TopicPartitionList> {
    let mut all = TopicPartitionList::new();
    for topic in inputs {
        let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                all.add_partition(t.name(), p.id());
            }
        }
    }
    Ok(all)
}
