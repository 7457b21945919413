//! Storing input offsets only once everything derived from them is
//! acknowledged by the broker.
//!
//! The stage hands over one [`Pending`] per partition per batch, in
//! processing order, and this task awaits their deliveries in that order:
//! an offset is stored only after its own records and those of every
//! earlier message are acknowledged. A failed delivery is re-sent with
//! backoff and blocks the offsets behind it until it succeeds.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio::sync::mpsc;

use crate::metrics::StageMetrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Output,
    DeadLetter,
}

/// The records derived from a run of messages of one partition.
pub struct Pending {
    pub topic: String,
    pub partition: i32,
    /// The last input offset covered.
    pub last_offset: i64,
    pub inputs: u64,
    pub deliveries: Vec<(Sent, DeliveryFuture)>,
}

pub async fn run(
    stage: String,
    mut rx: mpsc::Receiver<Pending>,
    consumer: Arc<StreamConsumer>,
    producer: FutureProducer,
    metrics: Arc<StageMetrics>,
) {
    while let Some(p) = rx.recv().await {
        for (kind, delivery) in p.deliveries {
            if !deliver(&stage, &producer, delivery).await {
                // The producer is gone: we are shutting down. Nothing after
                // this point is stored, so it will be consumed again.
                return;
            }
            match kind {
                Sent::Output => StageMetrics::add(&metrics.emitted, 1),
                Sent::DeadLetter => StageMetrics::add(&metrics.dead_lettered, 1),
            }
        }
        // librdkafka stores `offset + 1`: the next message to read.
        match consumer.store_offset(&p.topic, p.partition, p.last_offset) {
            Ok(()) => StageMetrics::add(&metrics.committed, p.inputs),
            // The partition was revoked in a rebalance; its new owner
            // re-reads from the last commit.
            Err(e) => {
                tracing::debug!(stage, topic = p.topic, partition = p.partition, error = %e, "offset not stored")
            }
        }
    }
}

/// Awaits a delivery, re-sending until the broker acknowledges it.
/// Returns false if the producer was dropped.
async fn deliver(stage: &str, producer: &FutureProducer, mut delivery: DeliveryFuture) -> bool {
    let mut backoff = Duration::from_millis(100);
    loop {
        let failed: OwnedMessage = match delivery.await {
            Err(_canceled) => return false,
            Ok(Ok(_)) => return true,
            Ok(Err((error, msg))) => {
                tracing::warn!(stage, topic = msg.topic(), partition = msg.partition(), error = %error, "delivery failed; retrying");
                msg
            }
        };
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
        delivery = loop {
            let mut record = FutureRecord::to(failed.topic()).partition(failed.partition());
            if let Some(k) = failed.key() {
                record = record.key(k);
            }
            if let Some(v) = failed.payload() {
                record = record.payload(v);
            }
            if let Some(ts) = failed.timestamp().to_millis() {
                record = record.timestamp(ts);
            }
            if let Some(h) = failed.headers() {
                record = record.headers(h.clone());
            }
            match producer.send_result(record) {
                Ok(d) => break d,
                Err((e, _)) => {
                    tracing::warn!(stage, error = %e, "cannot enqueue retry");
                    tokio::time::sleep(backoff).await;
                }
            }
        };
    }
}
