//! Kafka I/O: client settings, the embedded development broker, topic
//! creation, and the producer and consumers the topology uses.

mod client;
mod embedded;
mod topics;

pub use client::{KafkaClients, KafkaError};
pub use embedded::EmbeddedBroker;
pub use topics::ensure_topics;
