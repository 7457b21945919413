//! Writing the benchmark's input: as fast as possible (preload), or at a
//! fixed rate with a send timestamp in a header (latency runs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message};

use crate::kafka::producer_config;
use crate::telemetry::Generator;

/// The header carrying the send time, in microseconds since the Unix epoch.
pub const SENT_HEADER: &str = "weir.bench.sent_us";

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64
}

#[derive(Default)]
struct Counting {
    failed: AtomicU64,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub struct Load<'a> {
    pub bootstrap: &'a str,
    pub topic: &'a str,
    pub partitions: i32,
    pub count: u64,
    /// Messages per second; `None` is as fast as the producer goes.
    pub rate: Option<f64>,
    pub stamp: bool,
    pub seed: u64,
}

/// Produces `count` telemetry messages, round-robin over the partitions,
/// and waits until all are acknowledged. Returns the elapsed time.
pub fn produce(load: &Load<'_>) -> Result<Duration> {
    Sender::new(load.bootstrap, load.rate.is_some())?.send(load)
}

/// A producer kept across loads, so that a timed load does not pay for the
/// connection and the idempotent producer's id.
pub struct Sender {
    producer: ThreadedProducer<Counting>,
}

impl Sender {
    /// `paced`: a latency load, where the generator sends each message at
    /// once (`linger.ms=0`) so that the measured time is the pipeline's,
    /// not the generator's own batching.
    pub fn new(bootstrap: &str, paced: bool) -> Result<Self> {
        let mut config = producer_config(bootstrap);
        config.set("queue.buffering.max.messages", "1000000");
        if paced {
            config.set("linger.ms", "0");
        }
        Ok(Sender {
            producer: config.create_with_context(Counting::default())?,
        })
    }

    pub fn send(&self, load: &Load<'_>) -> Result<Duration> {
        let producer = &self.producer;
        let mut generator = Generator::new(load.seed, "bench");
        let mut value = Vec::with_capacity(512);
        let start = Instant::now();
        for i in 0..load.count {
            if let Some(rate) = load.rate {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            let key = generator.next_message(&mut value);
            let partition = (i % load.partitions as u64) as i32;
            let mut record = BaseRecord::to(load.topic)
                .key(key)
                .payload(value.as_slice())
                .partition(partition);
            if load.stamp {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: SENT_HEADER,
                    value: Some(now_us().to_string().as_bytes()),
                }));
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => bail!("cannot produce to {}: {e}", load.topic),
                }
            }
        }
        producer.flush(Duration::from_secs(120))?;
        let failed = producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            bail!("{failed} messages to {} were not acknowledged", load.topic);
        }
        Ok(start.elapsed())
    }
}

/// The send time carried by a message, if any.
pub fn sent_us<M: Message>(m: &M) -> Option<i64> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == SENT_HEADER)
        .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
}
