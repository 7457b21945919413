//! The generators' producer: enqueue without waiting per record, count
//! what the broker acknowledges.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::generate::Event;
use crate::kafka::{KafkaClients, KafkaError};

#[derive(Default)]
pub struct Counts {
    produced: AtomicU64,
    failed: AtomicU64,
}

#[derive(Default, Clone)]
pub struct Counting(Arc<Counts>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = match result {
            Ok(_) => &self.0.produced,
            Err(_) => &self.0.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub produced: u64,
    pub failed: u64,
}

pub struct Publisher {
    producer: ThreadedProducer<Counting>,
}

impl Publisher {
    pub fn new(clients: &KafkaClients) -> Result<Self, KafkaError> {
        Ok(Publisher {
            producer: clients.generator_producer(Counting::default())?,
        })
    }

    pub fn counters(&self) -> Snapshot {
        let c = &self.producer.context().0;
        Snapshot {
            produced: c.produced.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// Enqueues `event`, waiting while the producer's queue is full.
    pub async fn send(&self, topic: &str, event: &Event) -> Result<(), String> {
        let mut headers = OwnedHeaders::new_with_capacity(event.headers.len());
        for (k, v) in &event.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = BaseRecord::to(topic)
            .key(event.key.as_bytes())
            .payload(event.value.as_slice())
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(format!("cannot publish to {topic}: {e}")),
            }
        }
    }

    /// Waits (up to 30 s) until everything enqueued is acknowledged.
    pub async fn flush(&self) {
        let _ = tokio::task::block_in_place(|| self.producer.flush(Duration::from_secs(30)));
    }
}
