use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::client::KafkaError;
use crate::config::TopicConfig;

/// librdkafka's in-process mock cluster: the zero-setup default of
/// `weir run`. It is a development broker, not a durable one.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedBroker {
    pub fn start() -> Result<Self, KafkaError> {
        let cluster = MockCluster::new(1).map_err(KafkaError::Embedded)?;
        Ok(EmbeddedBroker { cluster })
    }

    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates the declared topics. The mock cluster does not answer the
    /// CreateTopics admin request, so this goes through its own API.
    pub fn create_topics(&self, topics: &[TopicConfig]) -> Result<(), KafkaError> {
        for t in topics {
            self.cluster
                .create_topic(&t.name, t.partitions.unwrap_or(1), 1)
                .map_err(|e| KafkaError::CreateTopic {
                    topic: t.name.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(())
    }
}
