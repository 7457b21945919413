//! Kafka I/O: client settings, the embedded development broker, topic
//! creation, and the producer and consumers the topology uses.

mod client;
mod embedded;
mod offsets;
mod topics;

pub use client::{KafkaClients, KafkaError};
pub use embedded::EmbeddedBroker;
pub use offsets::{PartitionRewind, rewind_group};
pub use topics::ensure_topics;
