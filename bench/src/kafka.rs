//! Client settings every rung shares, and the few broker operations the
//! harness needs.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

/// The producer settings of every rung, weir's own defaults: idempotent,
/// `acks=all`, 5 ms linger. The Python rung and Kafka's perf tool get the
/// same values.
pub const PRODUCER: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "5"),
    ("batch.num.messages", "10000"),
    ("partitioner", "murmur2_random"),
];

pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in PRODUCER {
        c.set(*k, *v);
    }
    c
}

/// A consumer that stores offsets only when told to (after the derived
/// records are acknowledged) and auto-commits the stored ones, as weir does.
pub fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10");
    c
}

pub fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) -> Result<()> {
    create_topics_with(bootstrap, topics, &[])
}

/// [`create_topics`] with topic settings (`cleanup.policy`, ...).
pub fn create_topics_with(
    bootstrap: &str,
    topics: &[(&str, i32)],
    config: &[(&str, &str)],
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            config.iter().fold(
                NewTopic::new(name, *partitions, TopicReplication::Fixed(1)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    // The admin client completes its futures from its own thread.
    let results = futures::executor::block_on(admin.create_topics(&new, &AdminOptions::new()))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Reads the end offsets of a topic's partitions.
pub struct Watermarks {
    consumer: BaseConsumer,
}

impl Watermarks {
    pub fn new(bootstrap: &str) -> Result<Self> {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "weir-bench-watermarks")
            .create()?;
        Ok(Watermarks { consumer })
    }

    pub fn partitions(&self, topic: &str) -> Result<i32> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let t = md.topics().first().context("no metadata")?;
        Ok(t.partitions().len() as i32)
    }

    /// The number of records in `topic` (the sum of its high watermarks).
    pub fn total(&self, topic: &str, partitions: i32) -> Result<i64> {
        let mut sum = 0;
        for p in 0..partitions {
            let (_, high) = self
                .consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))?;
            sum += high;
        }
        Ok(sum)
    }
}
