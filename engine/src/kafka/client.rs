use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::producer::{ProducerContext, ThreadedProducer};

use crate::config::{Compression, KafkaConfig};

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot create the Kafka {what} for {bootstrap}: {source}")]
    Client {
        what: &'static str,
        bootstrap: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("stage {stage}: cannot subscribe to {topics:?}: {source}")]
    Subscribe {
        stage: String,
        topics: Vec<String>,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot create topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error(
        "topic {topic} does not exist and pipeline.toml gives it no `partitions` to create it with"
    )]
    MissingTopic { topic: String },
    #[error("cannot read metadata from {bootstrap}: {source}")]
    Metadata {
        bootstrap: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot move the committed offsets of group {group}: {source}")]
    Rewind {
        group: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error(
        "group {group} still has members after {waited:?} ({code}): another process consumes \
         as this group; stop it first"
    )]
    GroupNotEmpty {
        group: String,
        waited: std::time::Duration,
        code: rdkafka::types::RDKafkaErrorCode,
    },
    #[error("cannot delete the records of {topic}: {reason}")]
    DeleteRecords { topic: String, reason: String },
    #[error("cannot start the embedded broker: {0}")]
    Embedded(#[source] rdkafka::error::KafkaError),
    #[error("bridge {bridge}: cannot read {topic}: {source}")]
    Bridge {
        bridge: String,
        topic: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Settings shared by every client of one pipeline.
#[derive(Debug, Clone)]
pub struct KafkaClients {
    pub bootstrap: String,
    base: Vec<(String, String)>,
    /// This process's static group membership id (`--instance-id`), if any.
    instance_id: Option<String>,
}

/// How a stage's consumer takes part in its group.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Bytes of messages it may prefetch, KiB.
    pub prefetch_kb: usize,
    /// How often stored offsets are committed.
    pub commit_interval: std::time::Duration,
    /// Offsets are committed in the stage's transactions, not by the
    /// consumer.
    pub exactly_once: bool,
}

impl KafkaClients {
    pub fn new(bootstrap: String, kafka: &KafkaConfig) -> Self {
        KafkaClients {
            bootstrap,
            base: kafka.client_properties(),
            instance_id: None,
        }
    }

    /// The same settings against another cluster.
    pub fn with_bootstrap(&self, bootstrap: String) -> Self {
        KafkaClients {
            bootstrap,
            ..self.clone()
        }
    }

    /// New settings from a reloaded pipeline.toml, against the same cluster
    /// and with the same instance id.
    pub fn with_settings(&self, kafka: &KafkaConfig) -> Self {
        KafkaClients {
            bootstrap: self.bootstrap.clone(),
            base: kafka.client_properties(),
            instance_id: self.instance_id.clone(),
        }
    }

    /// Stage consumers join their groups as static members named after
    /// `id` (`group.instance.id` = `<id>.<stage>`): a process restarted
    /// with the same id within the session timeout gets its partitions
    /// back without a rebalance.
    pub fn with_instance_id(mut self, id: Option<String>) -> Self {
        self.instance_id = id.filter(|id| !id.is_empty());
        self
    }

    fn config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        // The user's settings (security, [kafka.options]) win over ours.
        for (k, v) in &self.base {
            c.set(k, v);
        }
        c
    }

    fn client_err(
        &self,
        what: &'static str,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError + '_ {
        move |source| KafkaError::Client {
            what,
            bootstrap: self.bootstrap.clone(),
            source,
        }
    }

    /// A stage's producer: idempotent with `acks=all`, so a retried send
    /// neither duplicates nor reorders, and Java-compatible key
    /// partitioning (murmur2), so weir's outputs co-partition with other
    /// Kafka clients'.
    ///
    /// `message.timeout.ms` is unbounded: librdkafka retries a retriable
    /// error (a broker away, a leader moving) in order for as long as it
    /// takes, and a full queue holds the stage back. A delivery report with
    /// an error is therefore final, and a re-send (which would be a new
    /// produce, out of order) is never needed. `max_record_bytes` is the
    /// largest record the stage may write, from its limits: librdkafka's
    /// default of 1,000,000 bytes would refuse records the stage accepts.
    pub fn producer<C: ProducerContext>(
        &self,
        context: C,
        max_record_bytes: usize,
        queue_kb: usize,
        compression: Compression,
    ) -> Result<ThreadedProducer<C>, KafkaError> {
        self.producer_with_timeout(context, max_record_bytes, queue_kb, 0, compression, &[])
    }

    /// An exactly-once stage's producer: transactional, with a
    /// `transactional.id` that names the stage and this process, so a
    /// restarted process fences its previous incarnation.
    ///
    /// A transaction left open by a process that died is aborted by the
    /// broker after `transaction.timeout.ms`; until then read_committed
    /// consumers wait at it, so it is short (Kafka Streams uses 10 s).
    /// librdkafka requires `message.timeout.ms` not to exceed it: a record
    /// not acknowledged in time fails its transaction, which is aborted
    /// and processed again.
    pub fn transactional_producer<C: ProducerContext>(
        &self,
        context: C,
        max_record_bytes: usize,
        queue_kb: usize,
        transactional_id: &str,
        compression: Compression,
    ) -> Result<ThreadedProducer<C>, KafkaError> {
        self.producer_with_timeout(
            context,
            max_record_bytes,
            queue_kb,
            10_000,
            compression,
            &[
                ("transactional.id", transactional_id),
                ("transaction.timeout.ms", "10000"),
            ],
        )
    }

    /// The `transactional.id` of a stage in this process: stable across
    /// restarts when the process has an instance id, unique otherwise.
    pub fn transactional_id(&self, group_id: &str, stage: &str) -> String {
        match &self.instance_id {
            Some(id) => format!("{group_id}.{stage}.{id}"),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                format!("{group_id}.{stage}.{}-{nanos}", std::process::id())
            }
        }
    }

    /// The producer of the load generators and `produce`: like a stage's,
    /// but a record still undelivered after 30 s fails (and is counted),
    /// so that a generator pointed at an unreachable cluster gives up
    /// instead of holding its queue for ever.
    pub fn generator_producer<C: ProducerContext>(
        &self,
        context: C,
    ) -> Result<ThreadedProducer<C>, KafkaError> {
        self.producer_with_timeout(context, 1_000_000, 262_144, 30_000, Compression::None, &[])
    }

    fn producer_with_timeout<C: ProducerContext>(
        &self,
        context: C,
        max_record_bytes: usize,
        queue_kb: usize,
        timeout_ms: u64,
        compression: Compression,
        extra: &[(&str, &str)],
    ) -> Result<ThreadedProducer<C>, KafkaError> {
        let max = max_record_bytes.clamp(1_000_000, 1_000_000_000).to_string();
        let queue_kb = queue_kb.clamp(1024, 2_097_151).to_string();
        let timeout_ms = timeout_ms.to_string();
        let mut settings = vec![
            ("compression.type", compression.as_str()),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("partitioner", "murmur2_random"),
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.kbytes", queue_kb.as_str()),
            ("message.timeout.ms", timeout_ms.as_str()),
            ("message.max.bytes", max.as_str()),
        ];
        settings.extend_from_slice(extra);
        self.config(&settings)
            .create_with_context(context)
            .map_err(self.client_err("producer"))
    }

    /// A consumer in no group, to read single records back by offset.
    pub fn fetcher(&self) -> Result<BaseConsumer, KafkaError> {
        self.config(&[
            ("group.id", "weir-fetch"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "false"),
            ("fetch.wait.max.ms", "10"),
        ])
        .create()
        .map_err(self.client_err("consumer"))
    }

    /// A stage's consumer. Offsets are stored by the stage only once every
    /// record derived from a message is acknowledged (and its state changes
    /// are in the changelog), and auto-commit then commits only stored
    /// offsets: at-least-once.
    ///
    /// The range assignor gives one member partition p of every input
    /// topic, which a stage whose keyed state is scoped by partition number
    /// across its inputs needs; `context` sees every rebalance.
    pub fn consumer<C: ConsumerContext>(
        &self,
        group_id: &str,
        stage: &str,
        options: &ConsumerOptions,
        context: C,
    ) -> Result<BaseConsumer<C>, KafkaError> {
        let prefetch_kb = options.prefetch_kb.to_string();
        let commit_ms = options.commit_interval.as_millis().max(1).to_string();
        let mut config = self.config(&[
            ("queued.max.messages.kbytes", &prefetch_kb),
            ("group.id", group_id),
            ("enable.auto.commit", "true"),
            ("enable.auto.offset.store", "false"),
            ("auto.commit.interval.ms", &commit_ms),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("fetch.wait.max.ms", "10"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
            ("partition.assignment.strategy", "range"),
            ("isolation.level", "read_committed"),
            // The stage reads the group state from these reports, to
            // replace a consumer stuck out of its group.
            ("statistics.interval.ms", "5000"),
        ]);
        // Named so that the group's description says which process holds
        // what (the state query names the owner of a partition).
        let member = match &self.instance_id {
            Some(id) => {
                config.set("group.instance.id", format!("{id}.{stage}"));
                format!("weir-{stage}-{id}")
            }
            None => format!("weir-{stage}-pid{}", std::process::id()),
        };
        config.set("client.id", &member);
        if options.exactly_once {
            config.set("enable.auto.commit", "false");
        }
        config
            .create_with_context(context)
            .map_err(self.client_err("consumer"))
    }

    /// A client that sees uncommitted records: its watermarks are the high
    /// watermarks, where a read_committed one's stop at the last stable
    /// offset (the first record of a transaction still open).
    pub fn uncommitted_watermarks(&self) -> Result<BaseConsumer, KafkaError> {
        self.config(&[
            ("group.id", "weir-watermarks"),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_uncommitted"),
        ])
        .create()
        .map_err(self.client_err("consumer"))
    }

    /// A consumer in no group that reads changelog partitions from their
    /// beginning, committed transactions only, and says when it reaches the
    /// end of each.
    pub fn restore_consumer(&self) -> Result<BaseConsumer, KafkaError> {
        self.config(&[
            ("group.id", "weir-restore"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "true"),
            ("auto.offset.reset", "earliest"),
            ("isolation.level", "read_committed"),
            ("fetch.wait.max.ms", "10"),
            ("fetch.max.bytes", "52428800"),
            ("max.partition.fetch.bytes", "10485760"),
            // Enough to keep a restore going at its pace; more only costs
            // memory (a restore of a million keys peaked past 400 MiB).
            ("queued.max.messages.kbytes", "65536"),
        ])
        .create()
        .map_err(self.client_err("consumer"))
    }

    /// A bridge's consumer: assigned partitions (no group membership),
    /// from their ends, committing nothing, fetching with little delay.
    pub fn bridge_consumer(&self, bridge: &str) -> Result<BaseConsumer, KafkaError> {
        self.config(&[
            ("group.id", &format!("weir-bridge-{bridge}")),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "latest"),
            ("fetch.wait.max.ms", "10"),
        ])
        .create()
        .map_err(self.client_err("consumer"))
    }

    pub fn admin(
        &self,
    ) -> Result<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>, KafkaError>
    {
        self.config(&[])
            .create()
            .map_err(self.client_err("admin client"))
    }
}
