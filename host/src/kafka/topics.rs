use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use super::client::{KafkaClients, KafkaError};
use crate::config::TopicConfig;

/// Creates the declared topics that do not exist yet. A topic declared
/// without `partitions` must already exist.
pub async fn ensure_topics(
    clients: &KafkaClients,
    topics: &[TopicConfig],
) -> Result<(), KafkaError> {
    let admin = clients.admin()?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|source| KafkaError::Metadata {
            bootstrap: clients.bootstrap.clone(),
            source,
        })?;
    let existing: std::collections::HashSet<&str> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name())
        .collect();

    let mut new = Vec::new();
    for t in topics
        .iter()
        .filter(|t| !existing.contains(t.name.as_str()))
    {
        match t.partitions {
            Some(p) => new.push(t.config.iter().fold(
                NewTopic::new(&t.name, p, TopicReplication::Fixed(t.replication_factor)),
                |topic, (k, v)| topic.set(k, v),
            )),
            None => {
                return Err(KafkaError::MissingTopic {
                    topic: t.name.clone(),
                });
            }
        }
    }
    if new.is_empty() {
        return Ok(());
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| KafkaError::CreateTopic {
            topic: new.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
            reason: e.to_string(),
        })?;
    for r in results {
        match r {
            Ok(topic) => tracing::info!(topic, "created topic"),
            // Another instance may have created it meanwhile.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::CreateTopic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}
