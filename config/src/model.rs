//! The validated pipeline: what the rest of weir codes against.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// The `pipeline.toml` path as given.
    pub source: PathBuf,
    pub kafka: KafkaConfig,
    pub admin: AdminConfig,
    pub topics: Vec<TopicConfig>,
    pub stages: Vec<StageConfig>,
    pub bridges: Vec<BridgeConfig>,
}

/// `[[bridge]]`: a topic relayed live to WebSocket clients of the admin
/// listener, at `/ws/{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    pub name: String,
    /// After prefix substitution.
    pub topic: String,
    /// The header that names a record's session; `None`: the record key.
    pub key: Option<String>,
    /// How `format=json` clients get the values.
    pub schema: BridgeSchema,
    /// Records held per client; a slow client loses the oldest.
    pub queue: usize,
    pub max_clients: usize,
    /// A client that goes on losing records this long (its queue never
    /// more than half free) is disconnected.
    pub behind: Duration,
}

/// What a bridged topic's values are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BridgeSchema {
    /// Protobuf `TelemetryFrame`s (racing telemetry), decoded for JSON
    /// clients.
    #[default]
    TelemetryFrame,
    /// JSON, relayed as it is.
    Json,
}

impl BridgeSchema {
    pub fn as_str(self) -> &'static str {
        match self {
            BridgeSchema::TelemetryFrame => "telemetry_frame",
            BridgeSchema::Json => "json",
        }
    }
}

impl PipelineConfig {
    pub fn stage(&self, name: &str) -> Option<&StageConfig> {
        self.stages.iter().find(|stage| stage.name == name)
    }

    /// A declared topic, by its name after prefix substitution.
    pub fn topic(&self, name: &str) -> Option<&TopicConfig> {
        self.topics.iter().find(|topic| topic.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Brokers {
    /// The in-process development broker.
    Embedded,
    /// A bootstrap list such as `h1:9092,h2:9092`.
    Bootstrap(String),
}

#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    pub brokers: Brokers,
    pub group_id: String,
    pub topic_prefix: String,
    /// Lowercase: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: Option<String>,
    /// Uppercase: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    pub ssl_ca_location: Option<PathBuf>,
    /// Raw librdkafka properties.
    pub options: BTreeMap<String, String>,
    /// What all stages together may have enqueued and not yet had
    /// acknowledged, bytes of keys and values; past it they wait.
    pub max_buffered_bytes: usize,
    /// How often a stage flushes its keyed state changes to its changelog
    /// topic and commits its offsets.
    pub commit_interval: Duration,
    /// What stages guarantee unless they say otherwise.
    pub processing: Processing,
}

pub(super) const DEFAULT_GROUP_ID: &str = "weir";
/// The default of `[kafka] max_buffered_mb`.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 << 20;
/// The default of `[kafka] commit_interval_ms`.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Brokers::Embedded,
            group_id: DEFAULT_GROUP_ID.to_owned(),
            topic_prefix: String::new(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            options: BTreeMap::new(),
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            processing: Processing::AtLeastOnce,
        }
    }
}

impl KafkaConfig {
    /// librdkafka properties for the security settings followed by `options`.
    ///
    /// `bootstrap.servers` is not included: the caller knows whether it is talking to the
    /// embedded broker and where that listens. A key set both by a dedicated setting and in
    /// `options` appears once, with the `options` value, so that `options` can override
    /// anything.
    pub fn client_properties(&self) -> Vec<(String, String)> {
        let ca_location = self
            .ssl_ca_location
            .as_ref()
            .map(|path| path.to_string_lossy().into_owned());
        let dedicated = [
            ("security.protocol", self.security_protocol.clone()),
            ("sasl.mechanism", self.sasl_mechanism.clone()),
            ("sasl.username", self.sasl_username.clone()),
            ("sasl.password", self.sasl_password.clone()),
            ("ssl.ca.location", ca_location),
        ];
        dedicated
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .filter(|(key, _)| !self.options.contains_key(key))
            .chain(self.options.clone())
            .collect()
    }

    /// The consumer group of a stage.
    pub fn consumer_group(&self, stage: &str) -> String {
        format!("{}.{stage}", self.group_id)
    }

    /// The compacted topic backing the keyed state of a stage with
    /// `state = "changelog"`.
    pub fn changelog_topic(&self, stage: &str) -> String {
        format!("{}-{stage}-changelog", self.group_id)
    }
}

// Hand-written so that the password never reaches logs. Options are printed by key only:
// librdkafka properties such as `sasl.oauthbearer.client.secret` are secrets too.
impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("topic_prefix", &self.topic_prefix)
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("commit_interval", &self.commit_interval)
            .field("processing", &self.processing)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| Redacted),
            )
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Start consuming at once; otherwise the stages wait, paused, for
    /// `POST /api/v1/start`.
    pub autostart: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            autostart: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// After prefix substitution.
    pub name: String,
    /// When set, the topic is created at start if missing.
    pub partitions: Option<i32>,
    pub replication_factor: i32,
    /// Topic-level settings (`cleanup.policy`, `retention.ms`, ...) used
    /// when weir creates the topic; an existing topic is left as it is.
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    pub max_messages: usize,
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_messages: 256,
            max_wait: Duration::from_millis(2),
        }
    }
}

/// How a stage's producer compresses the batches it sends (librdkafka's
/// `compression.type`); the broker stores them so unless the topic's own
/// `compression.type` says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The librdkafka and pipeline.toml name.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// What a stage does with a message that fails (a plugin error, a trap, a
/// timeout, an oversized payload, an output over its limits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnError {
    /// Send it to the stage's dead-letter topic with the reason in headers.
    #[default]
    DeadLetter,
    /// Drop it: logged and counted, its offset committed.
    Skip,
    /// Stop the pipeline; nothing is committed past the message.
    Halt,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::DeadLetter => "dead_letter",
            OnError::Skip => "skip",
            OnError::Halt => "halt",
        }
    }
}

/// What a stage guarantees about its outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Processing {
    /// Every input's records are published at least once: after a crash,
    /// messages since the last commit are processed again.
    #[default]
    AtLeastOnce,
    /// Outputs, dead letters, changelog records and input offsets commit
    /// together in one Kafka transaction: a read_committed consumer sees
    /// each input's records exactly once.
    ExactlyOnce,
}

impl Processing {
    pub fn as_str(self) -> &'static str {
        match self {
            Processing::AtLeastOnce => "at_least_once",
            Processing::ExactlyOnce => "exactly_once",
        }
    }
}

/// Where a stage's keyed state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StateBackend {
    /// Backed by the compacted topic [`KafkaConfig::changelog_topic`] and
    /// restored from it after a restart or a partition move.
    #[default]
    Changelog,
    /// Process memory only, lost on restart: for state that is a cache.
    Memory,
    /// The stage keeps no keyed state (a router, a filter), so its inputs
    /// need not be co-partitioned.
    None,
}

impl StateBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            StateBackend::Changelog => "changelog",
            StateBackend::Memory => "memory",
            StateBackend::None => "none",
        }
    }
}

/// `[stage.limits]`: what one plugin instance may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory of an instance, bytes.
    pub memory_bytes: usize,
    /// Wall time of one `process` call (one batch).
    pub timeout: Duration,
    /// A message with a larger value (plus key) is failed as `oversize`
    /// without reaching the plugin.
    pub max_payload_bytes: usize,
    /// Records one input message may produce.
    pub max_outputs_per_message: usize,
    /// Bytes (keys, values, headers) one input message may produce.
    pub max_output_bytes_per_message: usize,
    /// Bytes of keyed state (keys and values) the stage may hold, all
    /// partitions together; a write past it fails the message as
    /// `state_limit`.
    pub state_max_bytes: usize,
    /// Keys of keyed state the stage may hold, all partitions together.
    pub state_max_keys: usize,
    /// Distinct plugin metric series (name and label set) the stage may
    /// report; updates to further series are dropped and counted.
    pub max_metric_series: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            timeout: Duration::from_millis(100),
            max_payload_bytes: 1 << 20,
            max_outputs_per_message: 100,
            max_output_bytes_per_message: 4 << 20,
            state_max_bytes: 64 << 20,
            state_max_keys: 1_000_000,
            max_metric_series: 1_000,
        }
    }
}

/// `[stage.grants]`: what a plugin gets beyond the default of nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Environment variables passed through, by name, with weir's value at
    /// start (unset ones are left out).
    pub env: Vec<String>,
    /// The real wall and monotonic clocks; without it both read zero.
    pub clock: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StageConfig {
    pub name: String,
    /// Joined with the pipeline file's directory when relative; not canonicalised.
    pub plugin: PathBuf,
    /// Topic names, prefix substituted.
    pub inputs: Vec<String>,
    /// Logical output name -> topic, prefix substituted.
    pub outputs: BTreeMap<String, String>,
    pub dead_letter: String,
    pub batch: BatchConfig,
    pub on_error: OnError,
    pub state: StateBackend,
    /// `processing`, or `[kafka] processing` when the stage does not say.
    pub processing: Processing,
    /// How its producer compresses outputs, dead letters and changelog
    /// records.
    pub compression: Compression,
    pub limits: Limits,
    pub grants: Grants,
    /// `[stage.config]` as JSON, for the plugin's init. TOML datetimes become strings.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// 1-based line of the `[[stage]]` header, for later error messages.
    pub line: usize,
}
