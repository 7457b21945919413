//! B1 and B2: a consume -> (transform) -> produce loop on rdkafka with no
//! wasm, with the same delivery guarantee as weir (an input offset is
//! stored for commit only once its output is acknowledged). It is the
//! ceiling for any consume-transform-produce program on this machine.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message};

use crate::kafka::{consumer_config, producer_config};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Copy each message (B1).
    Pass,
    /// Score each message with the F1 degradation logic, compiled natively (B2).
    F1,
}

/// Acknowledged (partition, offset) pairs, handed from the delivery
/// callback to the loop.
#[derive(Default)]
struct Acks(Mutex<Vec<(i32, i64)>>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        match result {
            Ok(_) => self
                .0
                .lock()
                .unwrap()
                .push(((opaque >> 48) as i32, (opaque & ((1 << 48) - 1)) as i64)),
            // The loop never stores past it: the input is read again.
            Err((e, _)) => eprintln!("delivery failed: {e}"),
        }
    }
}

/// The contiguous prefix of acknowledged offsets of one partition.
struct Tracker {
    next: i64,
    acked: BTreeSet<i64>,
}

impl Tracker {
    /// Records an ack; returns the new last contiguous offset, if it moved.
    fn ack(&mut self, offset: i64) -> Option<i64> {
        self.acked.insert(offset);
        let before = self.next;
        while self.acked.remove(&self.next) {
            self.next += 1;
        }
        (self.next > before).then_some(self.next - 1)
    }
}

pub fn run(
    bootstrap: &str,
    input: &str,
    output: &str,
    dead_letter: &str,
    group: &str,
    mode: Mode,
) -> Result<()> {
    let consumer: BaseConsumer = consumer_config(bootstrap, group).create()?;
    consumer.subscribe(&[input])?;
    let producer: BaseProducer<Acks> = producer_config(bootstrap)
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Acks::default())?;
    let config = weir_f1_degradation::Config::default();
    let mut trackers: HashMap<i32, Tracker> = HashMap::new();
    let mut drained = Vec::new();
    loop {
        if let Some(polled) = consumer.poll(Duration::from_millis(50)) {
            let m = match polled {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("consume error: {e}");
                    continue;
                }
            };
            trackers.entry(m.partition()).or_insert_with(|| Tracker {
                next: m.offset(),
                acked: BTreeSet::new(),
            });
            let opaque = ((m.partition() as usize) << 48) | m.offset() as usize;
            let headers = m.headers().map(|h| h.detach());
            let scored;
            let mut record = match mode {
                Mode::Pass => BaseRecord::with_opaque_to(output, opaque)
                    .payload(m.payload().unwrap_or_default()),
                Mode::F1 => {
                    match weir_f1_degradation::enrich(m.payload().unwrap_or_default(), &config) {
                        Ok(e) => {
                            scored = e.json;
                            BaseRecord::with_opaque_to(output, opaque).payload(scored.as_slice())
                        }
                        Err(reason) => {
                            let h: OwnedHeaders =
                                headers.clone().unwrap_or_default().insert(Header {
                                    key: "weir.error",
                                    value: Some(&reason),
                                });
                            BaseRecord::with_opaque_to(dead_letter, opaque)
                                .payload(m.payload().unwrap_or_default())
                                .headers(h)
                        }
                    }
                }
            };
            if let Some(key) = m.key() {
                record = record.key(key);
            }
            if record.headers.is_none()
                && let Some(h) = headers
            {
                record = record.headers(h);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(1));
                    }
                    Err((e, _)) => anyhow::bail!("cannot produce: {e}"),
                }
            }
        }
        producer.poll(Duration::ZERO);
        std::mem::swap(&mut drained, &mut *producer.context().0.lock().unwrap());
        for (partition, offset) in drained.drain(..) {
            if let Some(last) = trackers.get_mut(&partition).and_then(|t| t.ack(offset)) {
                // Stores `last + 1`, the next message to read.
                if let Err(e) = consumer.store_offset(input, partition, last) {
                    eprintln!("store_offset: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_moves_only_over_contiguous_acks() {
        let mut t = Tracker {
            next: 10,
            acked: BTreeSet::new(),
        };
        assert_eq!(t.ack(11), None);
        assert_eq!(t.ack(10), Some(11));
        assert_eq!(t.ack(13), None);
        assert_eq!(t.ack(12), Some(13));
    }
}
