//! Semantic checks, and the conversion of the raw items into the validated model.
//!
//! Every check runs even when an earlier one failed, so that one run reports every problem.
//! Where a broken value would only cause follow-on errors (a topic declared with a bad type,
//! say, is still a declared topic) the checks use what they can and stay quiet about the rest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;

use super::cycle::{MAX_CYCLES, find_cycles};
use super::diagnostic::{Report, in_range};
use super::env::{self, Env, Sourced};
use super::keypath::KeyPath;
use super::model::{
    AdminConfig, BatchConfig, Brokers, Compression, DEFAULT_COMMIT_INTERVAL, DEFAULT_GROUP_ID,
    DEFAULT_MAX_BUFFERED_BYTES, KafkaConfig, PipelineConfig, Processing, StageConfig, StateBackend,
    TopicConfig,
};
use super::partitions;
use super::raw::{
    self, Item, RawCompression, RawDocument, RawKafka, RawProcessing, RawStage, RawStateBackend,
    RawTopic,
};
use super::{bridge, sandbox};

const SECURITY_PROTOCOLS: [&str; 4] = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
const SASL_MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];
const PREFIX_PLACEHOLDER: &str = "{prefix}";
/// Kafka's own limit on topic name length.
const MAX_TOPIC_NAME_LEN: usize = 249;
const MAX_PARTITIONS: i64 = i32::MAX as i64;
/// Replication factors travel as 16-bit integers in Kafka's CreateTopics request.
const MAX_REPLICATION_FACTOR: i64 = i16::MAX as i64;
const MAX_BATCH_MESSAGES: i64 = 65_536;
const MAX_BATCH_WAIT_MS: i64 = 60_000;
const MAX_COMMIT_INTERVAL_MS: i64 = 60_000;

pub(super) fn validate(
    path: &Path,
    doc: RawDocument<'_>,
    env: &dyn Env,
    report: &mut Report<'_>,
) -> Option<PipelineConfig> {
    let kafka = kafka(doc.kafka, doc.salvaged_prefix, env, report);
    let admin = admin(doc.admin.map(|item| item.value), report);
    let topics = Topics::validate(
        &doc.topics,
        &doc.salvaged_topics,
        &kafka.topic_prefix,
        report,
    );

    if doc.stage_count == 0 {
        report.general("no stages declared: a pipeline needs at least one [[stage]]");
    }
    let base_dir = path.parent().unwrap_or(Path::new(""));
    let stages: Vec<Located> = doc
        .stages
        .into_iter()
        .map(|item| Located {
            path: item.path.clone(),
            header: item.span.clone(),
            name: item.value.name.span(),
            stage: stage(item, base_dir, &kafka, &topics, report),
        })
        .collect();
    unique_stage_names(&stages, report);
    cycles(&stages, report);
    copartitioned(&stages, &topics.configs, report);
    let bridges = bridge::bridges(doc.bridges, &kafka.topic_prefix, &topics, report);

    if report.has_errors() {
        return None;
    }
    Some(PipelineConfig {
        source: path.to_path_buf(),
        kafka,
        admin,
        topics: topics.configs,
        stages: stages.into_iter().map(|located| located.stage).collect(),
        bridges,
    })
}

/// A validated stage and where it is in the file, for the checks across stages.
struct Located {
    path: KeyPath,
    header: Range<usize>,
    name: Range<usize>,
    stage: StageConfig,
}

fn kafka(
    item: Option<Item<'_, RawKafka>>,
    salvaged_prefix: Option<Spanned<String>>,
    env: &dyn Env,
    report: &mut Report<'_>,
) -> KafkaConfig {
    let mut raw = item.map(|item| item.value).unwrap_or_default();
    if raw.topic_prefix.is_none() {
        raw.topic_prefix = salvaged_prefix;
    }
    let base = KeyPath::root().key("kafka");
    let setting = |var, file, key| env::overlay(env, var, file, base.key(key));
    let brokers = setting(env::BOOTSTRAP_SERVERS, raw.brokers, "brokers");
    let group_id = setting(env::CONSUMER_GROUP, raw.group_id, "group_id");
    let topic_prefix = setting(env::TOPIC_PREFIX, raw.topic_prefix, "topic_prefix");
    let security_protocol = setting(
        env::SECURITY_PROTOCOL,
        raw.security_protocol,
        "security_protocol",
    );
    let sasl_mechanism = setting(env::SASL_MECHANISM, raw.sasl_mechanism, "sasl_mechanism");
    let sasl_username = setting(env::SASL_USERNAME, raw.sasl_username, "sasl_username");
    let sasl_password = setting(env::SASL_PASSWORD, raw.sasl_password, "sasl_password");
    let ssl_ca_location = setting(env::SSL_CA_LOCATION, raw.ssl_ca_location, "ssl_ca_location");

    let max_buffered_bytes = raw
        .max_buffered_mb
        .as_ref()
        .and_then(|mb| in_range(mb, 1, 1 << 20, &base.key("max_buffered_mb"), report))
        .map_or(DEFAULT_MAX_BUFFERED_BYTES, |mb| (mb as usize) << 20);
    let commit_interval = raw
        .commit_interval_ms
        .as_ref()
        .and_then(|ms| {
            in_range(
                ms,
                1,
                MAX_COMMIT_INTERVAL_MS,
                &base.key("commit_interval_ms"),
                report,
            )
        })
        .map_or(DEFAULT_COMMIT_INTERVAL, |ms| {
            Duration::from_millis(ms as u64)
        });
    let mut check = |setting: Option<Sourced>, parse: &dyn Fn(&str) -> Result<String, String>| {
        let setting = setting?;
        parse(&setting.value)
            .map_err(|message| report.origin(&setting.origin, message))
            .ok()
    };
    KafkaConfig {
        brokers: check(brokers, &parse_brokers).map_or(Brokers::Embedded, |list| {
            if list == EMBEDDED {
                Brokers::Embedded
            } else {
                Brokers::Bootstrap(list)
            }
        }),
        group_id: check(group_id, &parse_group_id).unwrap_or_else(|| DEFAULT_GROUP_ID.to_owned()),
        topic_prefix: check(topic_prefix, &parse_topic_prefix).unwrap_or_default(),
        security_protocol: check(security_protocol, &|value| {
            one_of(
                value.to_ascii_lowercase(),
                &SECURITY_PROTOCOLS,
                "security protocol",
                value,
            )
        }),
        sasl_mechanism: check(sasl_mechanism, &|value| {
            one_of(
                value.to_ascii_uppercase(),
                &SASL_MECHANISMS,
                "SASL mechanism",
                value,
            )
        }),
        sasl_username: sasl_username.map(|setting| setting.value),
        sasl_password: sasl_password.map(|setting| setting.value),
        ssl_ca_location: check(ssl_ca_location, &|value| {
            non_empty(value, "ssl_ca_location").map(str::to_owned)
        })
        .map(PathBuf::from),
        options: kafka_options(
            raw.options.unwrap_or_default(),
            &base.key("options"),
            report,
        ),
        max_buffered_bytes,
        commit_interval,
        processing: raw.processing.map_or(Processing::AtLeastOnce, processing),
    }
}

const EMBEDDED: &str = "embedded";

/// Returns [`EMBEDDED`] or the bootstrap list with the blanks around its commas removed.
fn parse_brokers(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value == EMBEDDED {
        return Ok(value.to_owned());
    }
    let servers: Vec<&str> = value.split(',').map(str::trim).collect();
    let malformed = servers
        .iter()
        .any(|server| server.is_empty() || server.contains(char::is_whitespace));
    if malformed {
        return Err(format!(
            "invalid brokers {value:?}: expected \"{EMBEDDED}\" or a comma-separated list of \
             bootstrap servers such as \"h1:9092,h2:9092\""
        ));
    }
    Ok(servers.join(","))
}

fn parse_group_id(value: &str) -> Result<String, String> {
    non_empty(value, "group_id").map(str::to_owned)
}

fn parse_topic_prefix(value: &str) -> Result<String, String> {
    match invalid_topic_char(value) {
        Some(c) => Err(format!(
            "invalid topic prefix {value:?}: {c:?} is not allowed in topic names (use ASCII \
             letters, digits, '.', '_' and '-')"
        )),
        None => Ok(value.to_owned()),
    }
}

fn one_of(normalised: String, allowed: &[&str], what: &str, value: &str) -> Result<String, String> {
    if allowed.contains(&normalised.as_str()) {
        Ok(normalised)
    } else {
        Err(format!(
            "unknown {what} {value:?} (expected one of {})",
            allowed.join(", ")
        ))
    }
}

fn non_empty<'v>(value: &'v str, what: &str) -> Result<&'v str, String> {
    if value.trim().is_empty() {
        Err(format!("{what} must not be empty"))
    } else {
        Ok(value)
    }
}

fn kafka_options(
    options: BTreeMap<Spanned<String>, Spanned<String>>,
    base: &KeyPath,
    report: &mut Report<'_>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in options {
        let path = base.key(key.get_ref());
        // Both are set per client by weir itself; letting `options` override them would
        // silently break the embedded broker and the per-stage consumer groups.
        let managed = match key.get_ref().as_str() {
            "" => Some("option names must not be empty".to_owned()),
            "bootstrap.servers" | "metadata.broker.list" => Some(format!(
                "`{}` is set by weir; use kafka.brokers or {} instead",
                key.get_ref(),
                env::BOOTSTRAP_SERVERS
            )),
            "group.id" => Some(format!(
                "`group.id` is set by weir (each stage consumes as \"{{group_id}}.{{stage}}\"); \
                 use kafka.group_id or {} instead",
                env::CONSUMER_GROUP
            )),
            _ => None,
        };
        match managed {
            Some(message) => report.at(&key.span(), Some(&path), message),
            None => {
                out.insert(key.into_inner(), value.into_inner());
            }
        }
    }
    out
}

fn admin(raw: Option<raw::RawAdmin>, report: &mut Report<'_>) -> AdminConfig {
    let defaults = AdminConfig::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let autostart = raw.autostart.unwrap_or(defaults.autostart);
    let Some(listen) = raw.listen else {
        return AdminConfig {
            autostart,
            ..defaults
        };
    };
    match listen.get_ref().parse::<SocketAddr>() {
        Ok(listen) => AdminConfig { listen, autostart },
        Err(error) => {
            let path = KeyPath::root().key("admin").key("listen");
            report.at(
                &listen.span(),
                Some(&path),
                format!(
                    "invalid listen address {:?}: {error} (expected e.g. \"127.0.0.1:8080\")",
                    listen.get_ref()
                ),
            );
            AdminConfig {
                autostart,
                ..defaults
            }
        }
    }
}

/// The declared topics, and where each was declared.
pub(super) struct Topics {
    configs: Vec<TopicConfig>,
    /// Every declared name, including those of broken `[[topic]]`s, with its declaration.
    declared: HashMap<String, Range<usize>>,
}

impl Topics {
    fn validate(
        items: &[Item<'_, RawTopic>],
        salvaged: &[Spanned<String>],
        prefix: &str,
        report: &mut Report<'_>,
    ) -> Self {
        let mut topics = Topics {
            configs: Vec::new(),
            declared: HashMap::new(),
        };
        for name in salvaged {
            topics
                .declared
                .entry(substitute(name.get_ref(), prefix))
                .or_insert_with(|| name.span());
        }
        for item in items {
            let raw = &item.value;
            let name_path = item.path.key("name");
            let name = substitute(raw.name.get_ref(), prefix);
            if let Err(message) = check_topic_name(raw.name.get_ref(), &name) {
                report.at(&raw.name.span(), Some(&name_path), message);
            }
            match topics.declared.get(&name) {
                Some(first) => {
                    let (line, _) = report.position(first.start);
                    report.at(
                        &raw.name.span(),
                        Some(&name_path),
                        format!("topic {name:?} is already declared at line {line}"),
                    );
                }
                None => {
                    topics.declared.insert(name.clone(), raw.name.span());
                }
            }
            let partitions = raw.partitions.as_ref().and_then(|partitions| {
                in_range(
                    partitions,
                    1,
                    MAX_PARTITIONS,
                    &item.path.key("partitions"),
                    report,
                )
            });
            let replication_factor = match &raw.replication_factor {
                Some(factor) => in_range(
                    factor,
                    1,
                    MAX_REPLICATION_FACTOR,
                    &item.path.key("replication_factor"),
                    report,
                ),
                None => Some(1),
            };
            topics.configs.push(TopicConfig {
                name,
                partitions: partitions.and_then(|p| i32::try_from(p).ok()),
                replication_factor: replication_factor
                    .and_then(|r| i32::try_from(r).ok())
                    .unwrap_or(1),
                config: raw
                    .config
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                    .collect(),
            });
        }
        topics
    }

    /// Reports `topic` (already substituted) when it is not declared.
    pub(super) fn check_declared(
        &self,
        topic: &str,
        span: &Range<usize>,
        path: &KeyPath,
        report: &mut Report<'_>,
    ) {
        if !self.declared.contains_key(topic) {
            report.at(
                span,
                Some(path),
                format!("topic {topic:?} is not declared (add a [[topic]] with this name)"),
            );
        }
    }
}

pub(super) fn substitute(template: &str, prefix: &str) -> String {
    template.replace(PREFIX_PLACEHOLDER, prefix)
}

/// Checks a declared topic name. The template is checked apart from the prefix so that a bad
/// prefix, reported once where it is set, does not make every topic name an error too.
fn check_topic_name(template: &str, name: &str) -> Result<(), String> {
    if let Some(c) = invalid_topic_char(&template.replace(PREFIX_PLACEHOLDER, "")) {
        let hint = if c == '{' || c == '}' {
            " (the only placeholder is \"{prefix}\")"
        } else {
            ""
        };
        return Err(format!(
            "invalid topic name {template:?}: {c:?} is not allowed in topic names (use ASCII \
             letters, digits, '.', '_' and '-'){hint}"
        ));
    }
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("invalid topic name {name:?}"));
    }
    let len = name.chars().count();
    if len > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "topic name {name:?} is {len} characters long; Kafka allows at most \
             {MAX_TOPIC_NAME_LEN}"
        ));
    }
    Ok(())
}

fn invalid_topic_char(name: &str) -> Option<char> {
    name.chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
}

fn stage(
    item: Item<'_, RawStage>,
    base_dir: &Path,
    kafka: &KafkaConfig,
    topics: &Topics,
    report: &mut Report<'_>,
) -> StageConfig {
    let prefix = kafka.topic_prefix.as_str();
    let Item {
        path,
        span,
        value: raw,
        tree,
    } = item;

    if !is_stage_name(raw.name.get_ref()) {
        report.at(
            &raw.name.span(),
            Some(&path.key("name")),
            format!(
                "invalid stage name {:?}: must match ^[a-z0-9][a-z0-9_-]*$",
                raw.name.get_ref()
            ),
        );
    }

    let plugin = plugin(&raw.plugin, base_dir, &path.key("plugin"), report);

    let inputs_path = path.key("inputs");
    if raw.inputs.get_ref().is_empty() {
        report.at(
            &raw.inputs.span(),
            Some(&inputs_path),
            "inputs must list at least one topic",
        );
    }
    let mut inputs: Vec<String> = Vec::new();
    for (index, input) in raw.inputs.get_ref().iter().enumerate() {
        let input_path = inputs_path.index(index);
        let topic = substitute(input.get_ref(), prefix);
        topics.check_declared(&topic, &input.span(), &input_path, report);
        if inputs.contains(&topic) {
            report.at(
                &input.span(),
                Some(&input_path),
                format!("topic {topic:?} is listed more than once"),
            );
        } else {
            inputs.push(topic);
        }
    }

    let mut outputs = BTreeMap::new();
    for (name, topic) in raw.outputs.unwrap_or_default() {
        let output_path = path.key("outputs").key(name.get_ref());
        if !is_output_name(name.get_ref()) {
            report.at(
                &name.span(),
                Some(&output_path),
                format!(
                    "invalid output name {:?}: must match ^[a-z][a-z0-9_-]*$",
                    name.get_ref()
                ),
            );
        }
        let substituted = substitute(topic.get_ref(), prefix);
        topics.check_declared(&substituted, &topic.span(), &output_path, report);
        outputs.insert(name.into_inner(), substituted);
    }

    let dead_letter_path = path.key("dead_letter");
    let dead_letter = substitute(raw.dead_letter.get_ref(), prefix);
    topics.check_declared(
        &dead_letter,
        &raw.dead_letter.span(),
        &dead_letter_path,
        report,
    );
    if inputs.contains(&dead_letter) {
        report.at(
            &raw.dead_letter.span(),
            Some(&dead_letter_path),
            format!(
                "dead_letter topic {dead_letter:?} is also an input of this stage; failed \
                 messages would be consumed again"
            ),
        );
    }

    let batch = raw.batch.map_or_else(BatchConfig::default, |batch| {
        let defaults = BatchConfig::default();
        let batch_path = path.key("batch");
        let max_messages = batch.max_messages.and_then(|n| {
            in_range(
                &n,
                1,
                MAX_BATCH_MESSAGES,
                &batch_path.key("max_messages"),
                report,
            )
        });
        let max_wait_ms = batch.max_wait_ms.and_then(|ms| {
            in_range(
                &ms,
                0,
                MAX_BATCH_WAIT_MS,
                &batch_path.key("max_wait_ms"),
                report,
            )
        });
        BatchConfig {
            max_messages: max_messages
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(defaults.max_messages),
            max_wait: max_wait_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map_or(defaults.max_wait, Duration::from_millis),
        }
    });

    let config = match raw.config {
        Some(table) => {
            let relative = KeyPath::root().key("config");
            let mut problems = Vec::new();
            let config = table_to_json(table, &relative, &mut problems);
            for (relative, message) in problems {
                let span = raw::span_of_path(&tree, &relative).unwrap_or_else(|| span.clone());
                report.at(&span, Some(&path.join(&relative)), message);
            }
            config
        }
        None => serde_json::Map::new(),
    };

    StageConfig {
        name: raw.name.into_inner(),
        plugin,
        inputs,
        outputs,
        dead_letter,
        batch,
        on_error: sandbox::on_error(raw.on_error),
        state: state_backend(raw.state),
        processing: raw.processing.map_or(kafka.processing, processing),
        compression: raw.compression.map_or(Compression::None, compression),
        limits: sandbox::limits(raw.limits, &path.key("limits"), report),
        grants: sandbox::grants(raw.grants, &path.key("grants"), report),
        config,
        line: report.position(span.start).0,
    }
}

fn compression(raw: RawCompression) -> Compression {
    match raw {
        RawCompression::None => Compression::None,
        RawCompression::Gzip => Compression::Gzip,
        RawCompression::Snappy => Compression::Snappy,
        RawCompression::Lz4 => Compression::Lz4,
        RawCompression::Zstd => Compression::Zstd,
    }
}

fn processing(raw: RawProcessing) -> Processing {
    match raw {
        RawProcessing::AtLeastOnce => Processing::AtLeastOnce,
        RawProcessing::ExactlyOnce => Processing::ExactlyOnce,
    }
}

fn state_backend(raw: Option<RawStateBackend>) -> StateBackend {
    match raw {
        None | Some(RawStateBackend::Changelog) => StateBackend::Changelog,
        Some(RawStateBackend::Memory) => StateBackend::Memory,
        Some(RawStateBackend::None) => StateBackend::None,
    }
}

pub(super) fn is_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn is_output_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Resolves the plugin path against the pipeline's directory and checks that it is a file.
fn plugin(
    raw: &Spanned<String>,
    base_dir: &Path,
    path: &KeyPath,
    report: &mut Report<'_>,
) -> PathBuf {
    if raw.get_ref().is_empty() {
        report.at(&raw.span(), Some(path), "plugin must not be empty");
        return PathBuf::new();
    }
    let resolved = base_dir.join(raw.get_ref());
    let problem = match std::fs::metadata(&resolved) {
        Ok(metadata) if metadata.is_file() => None,
        Ok(_) => Some(format!("plugin {} is not a file", resolved.display())),
        // The OS wording of "not found" differs between platforms; this one is stable.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Some(format!("plugin file {} does not exist", resolved.display()))
        }
        Err(error) => Some(format!(
            "cannot access plugin file {}: {error}",
            resolved.display()
        )),
    };
    if let Some(message) = problem {
        report.at(&raw.span(), Some(path), message);
    }
    resolved
}

type Problems = Vec<(KeyPath, String)>;

fn table_to_json(
    table: toml::Table,
    path: &KeyPath,
    problems: &mut Problems,
) -> serde_json::Map<String, serde_json::Value> {
    table
        .into_iter()
        .map(|(key, value)| {
            let json = to_json(value, &path.key(&key), problems);
            (key, json)
        })
        .collect()
}

fn to_json(value: toml::Value, path: &KeyPath, problems: &mut Problems) -> serde_json::Value {
    use serde_json::Value as Json;
    match value {
        toml::Value::String(s) => Json::String(s),
        toml::Value::Integer(i) => Json::from(i),
        toml::Value::Float(f) => match serde_json::Number::from_f64(f) {
            Some(n) => Json::Number(n),
            None => {
                problems.push((
                    path.clone(),
                    format!("{f} cannot be passed to the plugin: JSON has no NaN or infinity"),
                ));
                Json::Null
            }
        },
        toml::Value::Boolean(b) => Json::Bool(b),
        // JSON has no date type; the TOML spelling is the least surprising string form.
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => Json::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_json(item, &path.index(i), problems))
                .collect(),
        ),
        toml::Value::Table(table) => Json::Object(table_to_json(table, path, problems)),
    }
}

fn unique_stage_names(stages: &[Located], report: &mut Report<'_>) {
    let mut first_line: HashMap<&str, usize> = HashMap::new();
    for located in stages {
        let name = located.stage.name.as_str();
        match first_line.get(name) {
            Some(line) => report.at(
                &located.name,
                Some(&located.path.key("name")),
                format!("duplicate stage name {name:?} (first declared at line {line})"),
            ),
            None => {
                first_line.insert(name, located.stage.line);
            }
        }
    }
}

/// Reports cycles in the graph where stage A feeds stage B when one of A's outputs (its dead
/// letter topic excluded: that is where failures go to be looked at) is one of B's inputs.
fn cycles(stages: &[Located], report: &mut Report<'_>) {
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, located) in stages.iter().enumerate() {
        for input in &located.stage.inputs {
            consumers.entry(input).or_default().push(index);
        }
    }
    let edges: Vec<Vec<usize>> = stages
        .iter()
        .map(|located| {
            let topics: HashSet<&str> =
                located.stage.outputs.values().map(String::as_str).collect();
            topics
                .into_iter()
                .flat_map(|topic| consumers.get(topic).into_iter().flatten().copied())
                .collect()
        })
        .collect();

    let (cycles, more) = find_cycles(&edges, MAX_CYCLES);
    for cycle in &cycles {
        let Some(&first) = cycle.first() else {
            continue;
        };
        let names: Vec<&str> = cycle
            .iter()
            .chain([&first])
            .map(|&i| stages[i].stage.name.as_str())
            .collect();
        let located = &stages[first];
        report.at(
            &located.header,
            Some(&located.path),
            format!("stages form a cycle: {}", names.join(" -> ")),
        );
    }
    if more {
        report.general(format!(
            "more than {MAX_CYCLES} cycles between stages; only the first {MAX_CYCLES} are listed"
        ));
    }
}

/// Reports stages with keyed state whose inputs are declared with different partition counts
/// ([`partitions::check_copartitioned`] does the same at run time with the broker's counts).
/// Inputs declared without `partitions`, or with a bad value, are left out.
fn copartitioned(stages: &[Located], topics: &[TopicConfig], report: &mut Report<'_>) {
    let declared = |name: &str| {
        topics
            .iter()
            .find(|topic| topic.name == name)
            .and_then(|topic| topic.partitions)
    };
    for located in stages {
        if let Some(message) = partitions::mismatch(&located.stage, &declared) {
            report.at(&located.header, Some(&located.path), message);
        }
    }
}
