//! `pipeline.toml`: the declaration of a weir pipeline.
//!
//! This is the reference for the file format. [`load`] reads a file and [`parse`] validates its
//! text; both return either a complete [`PipelineConfig`] or a [`ConfigError`] listing *every*
//! problem found, each with its file, line, column and key path.
//!
//! ```toml
//! [kafka]                           # optional
//! brokers = "embedded"              # "embedded" (the default: the in-process development
//!                                   # broker) or a bootstrap list "h1:9092,h2:9092"
//! group_id = "weir"                 # default "weir"; stage S consumes as group "weir.S"
//! topic_prefix = "f1"               # default ""; replaces the literal "{prefix}" in every
//!                                   # topic name anywhere in the file
//! security_protocol = "plaintext"   # optional; plaintext, ssl, sasl_plaintext or sasl_ssl
//!                                   # (any case; normalised to lowercase)
//! sasl_mechanism = "PLAIN"          # optional; PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or
//!                                   # OAUTHBEARER (any case; normalised to uppercase)
//! sasl_username = "u"               # optional
//! sasl_password = "p"               # optional; never printed by Debug
//! ssl_ca_location = "/path/ca.pem"  # optional; passed to librdkafka as written
//! max_buffered_mb = 256             # default 256, 1..=1048576; keys and values all stages
//!                                   # together may have enqueued and not yet acknowledged
//! commit_interval_ms = 100          # default 100, 1..=60000; how often a stage flushes its
//!                                   # keyed state changes to its changelog and commits offsets
//! processing = "at_least_once"      # default; "exactly_once": each stage commits its outputs,
//!                                   # dead letters, changelog records and offsets in one Kafka
//!                                   # transaction every commit_interval_ms
//!
//! [kafka.options]                   # optional: librdkafka properties, string values,
//! "linger.ms" = "5"                 # applied last so they override the settings above
//!                                   # (`bootstrap.servers` and `group.id` are set by weir)
//!
//! [admin]                           # optional
//! listen = "127.0.0.1:8080"         # default 127.0.0.1:8080; an IP address and port
//! autostart = true                  # default true; false starts with every stage paused
//!                                   # until POST /api/v1/start (`weir run --no-autostart`)
//!
//! [[topic]]                         # zero or more; every topic a stage uses is declared
//! name = "{prefix}.telemetry.raw"   # required; after substitution a valid Kafka topic name
//! partitions = 3                    # optional, >= 1; if set, created at start when missing
//! replication_factor = 1            # optional, default 1, 1..=32767
//!
//! [[stage]]                         # one or more
//! name = "degradation"              # required, unique, ^[a-z0-9][a-z0-9_-]*$
//! plugin = "target/wasm32-wasip2/release/weir_f1_degradation.wasm"
//!                                   # required; a relative path is resolved against the
//!                                   # directory containing pipeline.toml; must be a file
//! inputs = ["{prefix}.telemetry.raw"]
//!                                   # required, non-empty, declared topics, no duplicates
//! outputs = { default = "{prefix}.telemetry.analytics" }
//!                                   # optional; logical name (^[a-z][a-z0-9_-]*$) -> topic
//! dead_letter = "{prefix}.telemetry.dead-letter"
//!                                   # required, declared, not one of this stage's inputs
//! state = "changelog"               # default "changelog": keyed state backed by the compacted
//!                                   # topic "{group_id}-{stage}-changelog" and restored after
//!                                   # restarts and partition moves; "memory": process memory
//!                                   # only, lost on restart (state that is a cache); "none":
//!                                   # the stage keeps no keyed state (a router, a filter)
//! processing = "exactly_once"       # optional; overrides [kafka] processing for this stage
//! compression = "lz4"               # default "none"; or "gzip", "snappy", "zstd": how the
//!                                   # stage's producer compresses what it sends
//! [stage.batch]                     # optional
//! max_messages = 256                # default 256, 1..=65536
//! max_wait_ms = 2                   # default 2, 0..=60000
//! [stage.config]                    # optional, free-form; given to the plugin's init as
//! threshold = 0.7                   # JSON (datetimes become strings; NaN and infinity are
//!                                   # rejected because JSON cannot carry them)
//!
//! [[bridge]]                        # zero or more: a topic relayed live to WebSocket
//!                                   # clients of the admin listener, at /ws/{name}
//! name = "live"                     # required, unique, ^[a-z0-9][a-z0-9_-]*$
//! topic = "telemetry"               # required, declared; read from its end, never committed
//! key = "sessionId"                 # optional: the header naming a record's session
//!                                   # (default: the record key)
//! schema = "telemetry_frame"        # default; protobuf TelemetryFrames, decoded for
//!                                   # format=json clients; "json": JSON values as they are
//! queue = 1024                      # default 1024, 1..=65536 records held per client; a
//!                                   # slow client loses the oldest and is told how many
//! max_clients = 100                 # default 100, 1..=10000
//! behind_ms = 5000                  # default 5000, 100..=600000: a client that goes on losing
//!                                   # records this long is disconnected
//! ```
//!
//! Stages must not form a cycle, where stage A feeds stage B when one of A's `outputs` is one
//! of B's `inputs` (a stage reading its own output is a cycle of one). Dead letter topics do
//! not count: they are where failures go to be inspected.
//!
//! A stage's keyed state is scoped by partition number across all of its inputs, so a stage
//! with two or more inputs and `state` other than `"none"` needs them to have the same number
//! of partitions. Validation compares the `partitions` declared in `[[topic]]` (inputs without
//! one are left out); [`check_copartitioned`] does the same at run time with the counts the
//! broker reports.
//!
//! # Environment
//!
//! After the file is read and before it is validated, these variables override `[kafka]`
//! keys. A variable that is set but empty counts as unset. A bad value is reported under the
//! variable's name rather than a line of the file.
//!
//! | variable                  | key                 |
//! |---------------------------|---------------------|
//! | `KAFKA_BOOTSTRAP_SERVERS` | `brokers`           |
//! | `KAFKA_SECURITY_PROTOCOL` | `security_protocol` |
//! | `KAFKA_SASL_MECHANISM`    | `sasl_mechanism`    |
//! | `KAFKA_SASL_USERNAME`     | `sasl_username`     |
//! | `KAFKA_SASL_PASSWORD`     | `sasl_password`     |
//! | `KAFKA_SSL_CA_LOCATION`   | `ssl_ca_location`   |
//! | `KAFKA_TOPIC_PREFIX`      | `topic_prefix`      |
//! | `KAFKA_CONSUMER_GROUP`    | `group_id`          |
//!
//! The environment is passed in as an [`Env`] ([`ProcessEnv`] for the real one), so that
//! parsing is pure apart from checking that plugin files exist.

mod bridge;
mod cycle;
mod diagnostic;
mod diff;
mod env;
mod keypath;
mod model;
mod partitions;
mod raw;
pub mod request;
mod sandbox;
mod validate;

use std::path::Path;

use toml::de::DeTable;

pub use diagnostic::{ConfigError, Diagnostic};
pub use diff::{ConfigDiff, restart_needed};
pub use env::{Env, ProcessEnv};
pub use model::{
    AdminConfig, BatchConfig, BridgeConfig, BridgeSchema, Brokers, Compression,
    DEFAULT_COMMIT_INTERVAL, DEFAULT_MAX_BUFFERED_BYTES, Grants, KafkaConfig, Limits, OnError,
    PipelineConfig, Processing, StageConfig, StateBackend, TopicConfig,
};
pub use partitions::check_copartitioned;

use diagnostic::Report;

/// Reads and validates the pipeline file at `path`.
pub fn load(path: &Path, env: &dyn Env) -> Result<PipelineConfig, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &source, env)
}

/// Validates `source`, the text of the pipeline file at `path`.
///
/// `path` locates diagnostics and is the base for relative plugin paths; the file itself is
/// not read. The only I/O is checking that each stage's plugin file exists.
pub fn parse(path: &Path, source: &str, env: &dyn Env) -> Result<PipelineConfig, ConfigError> {
    let mut report = Report::new(path, source);
    let root = match DeTable::parse(source) {
        Ok(root) => root,
        Err(error) => {
            // After a syntax error the rest of the document is guesswork; checking it would
            // mostly report consequences of the same mistake.
            let span = error.span().unwrap_or(0..0);
            let mut message = error.message().to_owned();
            // toml does not say which key is duplicated; its span covers the key's text.
            if message == "duplicate key"
                && let Some(key) = source.get(span.clone()).filter(|key| is_short_line(key))
            {
                message = format!("duplicate key `{key}`");
            }
            report.at(&span, None, message);
            return Err(report.into_error());
        }
    };
    let doc = raw::split(root.get_ref(), &mut report);
    match validate::validate(path, doc, env, &mut report) {
        Some(config) if !report.has_errors() => Ok(config),
        _ => Err(report.into_error()),
    }
}

fn is_short_line(text: &str) -> bool {
    !text.is_empty() && text.len() <= 80 && !text.contains('\n')
}

#[cfg(test)]
mod tests;
