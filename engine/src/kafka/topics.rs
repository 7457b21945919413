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

/// Partitions and replicas (of partition 0) of each of `topics` that
/// exists.
pub fn topic_layouts(
    clients: &KafkaClients,
    topics: &[String],
) -> Result<std::collections::HashMap<String, (i32, i32)>, KafkaError> {
    let admin = clients.admin()?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|source| KafkaError::Metadata {
            bootstrap: clients.bootstrap.clone(),
            source,
        })?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && topics.iter().any(|n| n == t.name()))
        .map(|t| {
            let replicas = t
                .partitions()
                .iter()
                .find(|p| p.id() == 0)
                .map_or(1, |p| p.replicas().len() as i32);
            (
                t.name().to_string(),
                (t.partitions().len() as i32, replicas.max(1)),
            )
        })
        .collect())
}

/// Deletes every record of `topic` (all partitions, up to their ends now);
/// a topic that does not exist has nothing to delete. Kafka refuses this
/// for a topic whose `cleanup.policy` lacks `delete`.
pub async fn delete_all_records(clients: &KafkaClients, topic: &str) -> Result<(), KafkaError> {
    let admin = clients.admin()?;
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|source| KafkaError::Metadata {
            bootstrap: clients.bootstrap.clone(),
            source,
        })?;
    let Some(t) = metadata.topics().iter().find(|t| t.error().is_none()) else {
        return Ok(());
    };
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in t.partitions() {
        tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::End)
            .map_err(|e| delete_failed(topic, &e.to_string()))?;
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let result = admin
        .delete_records(&tpl, &opts)
        .await
        .map_err(|e| delete_failed(topic, &e.to_string()))?;
    for e in result.elements() {
        if let Err(err) = e.error() {
            return Err(delete_failed(
                topic,
                &format!("partition {}: {err}", e.partition()),
            ));
        }
    }
    Ok(())
}

fn delete_failed(topic: &str, reason: &str) -> KafkaError {
    KafkaError::DeleteRecords {
        topic: topic.to_string(),
        reason: reason.to_string(),
    }
}
