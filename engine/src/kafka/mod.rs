//! Kafka I/O: client settings, the embedded development broker, topic
//! creation, and the producer and consumers the topology uses.

mod client;
mod embedded;
mod fetch;
mod groups;
mod offsets;
mod refusal;
mod topics;

pub use client::{ConsumerOptions, KafkaClients, KafkaError};
pub use embedded::EmbeddedBroker;
pub use fetch::fetch_one;
pub use groups::{Member, partition_owner};
pub use offsets::{PartitionRewind, rewind_group};
pub use refusal::Refusal;
pub use topics::{delete_all_records, ensure_topics, topic_layouts};
