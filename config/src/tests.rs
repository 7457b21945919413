//! Tests of whole-file parsing. Error output for bad files is covered by the golden tests in
//! `tests/ui`; these cover what a golden file cannot: successful parses, the environment, and
//! the model's helpers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::*;

/// A pipeline path whose directory holds `empty.wasm`, so plugin checks pass. The file itself
/// need not exist: `parse` is given the text.
pub(crate) fn pipeline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/pipeline.toml")
}

pub(crate) fn no_env() -> HashMap<String, String> {
    HashMap::new()
}

fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse_ok(source: &str, env: &dyn Env) -> PipelineConfig {
    match parse(&pipeline_path(), source, env) {
        Ok(config) => config,
        Err(error) => panic!("expected a valid pipeline, got:\n{error}"),
    }
}

fn parse_err(source: &str, env: &dyn Env) -> String {
    match parse(Path::new("pipeline.toml"), source, env) {
        Ok(config) => panic!("expected an error, got {config:#?}"),
        Err(error) => error.to_string(),
    }
}

const FULL: &str = r#"
[kafka]
brokers = "h1:9092, h2:9092"
group_id = "f1"
topic_prefix = "dev"
security_protocol = "SASL_SSL"
sasl_mechanism = "scram-sha-512"
sasl_username = "weir"
sasl_password = "hunter2"
ssl_ca_location = "/etc/ssl/ca.pem"
max_buffered_mb = 64
commit_interval_ms = 250
processing = "exactly_once"

[kafka.options]
"linger.ms" = "5"

[admin]
listen = "0.0.0.0:9000"
autostart = false

[[topic]]
name = "{prefix}.telemetry.raw"
partitions = 3

[[topic]]
name = "{prefix}.telemetry.analytics"
replication_factor = 3

[[topic]]
name = "{prefix}.telemetry.dead-letter"
config = { "retention.ms" = "604800000" }

[[stage]]
name = "degradation"
plugin = "empty.wasm"
inputs = ["{prefix}.telemetry.raw"]
outputs = { default = "{prefix}.telemetry.analytics" }
dead_letter = "{prefix}.telemetry.dead-letter"

on_error = "halt"
state = "memory"
processing = "at_least_once"
compression = "lz4"

[stage.batch]
max_messages = 64
max_wait_ms = 0

[stage.limits]
memory_mb = 16
timeout_ms = 250
max_payload_bytes = 4096

[stage.grants]
env = ["TZ", "LANG"]
clock = true

[stage.config]
threshold = 0.7
laps = [1, 2]
since = 2024-05-01T10:00:00Z
nested = { on = true, label = "x" }

[[stage]]
name = "alerts"
plugin = "empty.wasm"
inputs = ["{prefix}.telemetry.analytics"]
dead_letter = "{prefix}.telemetry.dead-letter"
"#;

#[test]
fn full_file_parses_to_the_expected_model() {
    let config = parse_ok(FULL, &no_env());
    let dir = pipeline_path().parent().unwrap().to_path_buf();

    let expected = PipelineConfig {
        source: pipeline_path(),
        kafka: KafkaConfig {
            brokers: Brokers::Bootstrap("h1:9092,h2:9092".into()),
            group_id: "f1".into(),
            topic_prefix: "dev".into(),
            security_protocol: Some("sasl_ssl".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("weir".into()),
            sasl_password: Some("hunter2".into()),
            ssl_ca_location: Some("/etc/ssl/ca.pem".into()),
            options: BTreeMap::from([("linger.ms".into(), "5".into())]),
            max_buffered_bytes: 64 << 20,
            commit_interval: Duration::from_millis(250),
            processing: Processing::ExactlyOnce,
        },
        admin: AdminConfig {
            listen: "0.0.0.0:9000".parse().unwrap(),
            autostart: false,
        },
        topics: vec![
            TopicConfig {
                name: "dev.telemetry.raw".into(),
                partitions: Some(3),
                replication_factor: 1,
                config: BTreeMap::new(),
            },
            TopicConfig {
                name: "dev.telemetry.analytics".into(),
                partitions: None,
                replication_factor: 3,
                config: BTreeMap::new(),
            },
            TopicConfig {
                name: "dev.telemetry.dead-letter".into(),
                partitions: None,
                replication_factor: 1,
                config: BTreeMap::from([("retention.ms".into(), "604800000".into())]),
            },
        ],
        stages: vec![
            StageConfig {
                name: "degradation".into(),
                plugin: dir.join("empty.wasm"),
                inputs: vec!["dev.telemetry.raw".into()],
                outputs: BTreeMap::from([("default".into(), "dev.telemetry.analytics".into())]),
                dead_letter: "dev.telemetry.dead-letter".into(),
                batch: BatchConfig {
                    max_messages: 64,
                    max_wait: Duration::ZERO,
                },
                on_error: OnError::Halt,
                state: StateBackend::Memory,
                processing: Processing::AtLeastOnce,
                compression: Compression::Lz4,
                limits: Limits {
                    memory_bytes: 16 << 20,
                    timeout: Duration::from_millis(250),
                    max_payload_bytes: 4096,
                    ..Limits::default()
                },
                grants: Grants {
                    env: vec!["TZ".into(), "LANG".into()],
                    clock: true,
                },
                config: json!({
                    "threshold": 0.7,
                    "laps": [1, 2],
                    "since": "2024-05-01T10:00:00Z",
                    "nested": { "on": true, "label": "x" },
                })
                .as_object()
                .unwrap()
                .clone(),
                line: 34,
            },
            StageConfig {
                name: "alerts".into(),
                plugin: dir.join("empty.wasm"),
                inputs: vec!["dev.telemetry.analytics".into()],
                outputs: BTreeMap::new(),
                dead_letter: "dev.telemetry.dead-letter".into(),
                batch: BatchConfig::default(),
                on_error: OnError::DeadLetter,
                state: StateBackend::Changelog,
                processing: Processing::ExactlyOnce,
                compression: Compression::None,
                limits: Limits::default(),
                grants: Grants::default(),
                config: serde_json::Map::new(),
                line: 65,
            },
        ],
        bridges: Vec::new(),
    };
    assert_eq!(config, expected);

    assert_eq!(config.stage("alerts").map(|s| s.line), Some(65));
    assert!(config.stage("missing").is_none());
    assert_eq!(
        config.topic("dev.telemetry.raw").and_then(|t| t.partitions),
        Some(3)
    );
    assert!(config.topic("{prefix}.telemetry.raw").is_none());
}

const MINIMAL: &str = r#"
[[topic]]
name = "{prefix}in"

[[topic]]
name = "{prefix}dlq"

[[stage]]
name = "a"
plugin = "empty.wasm"
inputs = ["{prefix}in"]
dead_letter = "{prefix}dlq"
"#;

#[test]
fn defaults() {
    let config = parse_ok(MINIMAL, &no_env());
    assert_eq!(config.kafka, KafkaConfig::default());
    assert_eq!(config.kafka.brokers, Brokers::Embedded);
    assert_eq!(config.kafka.group_id, "weir");
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.stages[0].batch.max_messages, 256);
    assert_eq!(config.stages[0].batch.max_wait, Duration::from_millis(2));
    assert_eq!(config.kafka.consumer_group("a"), "weir.a");
    assert_eq!(config.kafka.commit_interval, Duration::from_millis(100));
    assert_eq!(config.kafka.commit_interval, DEFAULT_COMMIT_INTERVAL);
    assert_eq!(config.stages[0].state, StateBackend::Changelog);
    assert_eq!(config.kafka.changelog_topic("a"), "weir-a-changelog");
    // With no prefix, "{prefix}" disappears.
    assert_eq!(config.stages[0].inputs, ["in"]);
}

#[test]
fn quotas_default_and_may_be_set_or_zero() {
    let limits = &parse_ok(MINIMAL, &no_env()).stages[0].limits;
    assert_eq!(limits.state_max_bytes, 64 << 20);
    assert_eq!(limits.state_max_keys, 1_000_000);
    assert_eq!(limits.max_metric_series, 1_000);

    let source = format!(
        "{MINIMAL}\n[stage.limits]\nstate_max_bytes = 1048576\nstate_max_keys = 0\nmax_metric_series = 5\n"
    );
    let limits = &parse_ok(&source, &no_env()).stages[0].limits;
    assert_eq!(limits.state_max_bytes, 1 << 20);
    assert_eq!(limits.state_max_keys, 0, "a stage that must keep no state");
    assert_eq!(limits.max_metric_series, 5);
    assert_eq!(limits.memory_bytes, Limits::default().memory_bytes);
}

#[test]
fn state_backends_and_commit_interval_bounds() {
    for (written, expected) in [
        ("changelog", StateBackend::Changelog),
        ("memory", StateBackend::Memory),
        ("none", StateBackend::None),
    ] {
        let source = MINIMAL.replace(
            "dead_letter = \"{prefix}dlq\"",
            &format!("dead_letter = \"{{prefix}}dlq\"\nstate = \"{written}\""),
        );
        let config = parse_ok(&source, &no_env());
        assert_eq!(config.stages[0].state, expected);
        assert_eq!(expected.as_str(), written);
    }
    for (ms, expected) in [(1, Some(1)), (60_000, Some(60_000)), (60_001, None)] {
        let source = format!("[kafka]\ncommit_interval_ms = {ms}\n{MINIMAL}");
        match parse(&pipeline_path(), &source, &no_env()) {
            Ok(config) => assert_eq!(
                Some(config.kafka.commit_interval),
                expected.map(Duration::from_millis)
            ),
            Err(error) => {
                assert_eq!(expected, None, "{error}");
                assert!(
                    error.to_string().contains(
                        "kafka.commit_interval_ms: commit_interval_ms must be between 1 and \
                         60000, got 60001"
                    ),
                    "{error}"
                );
            }
        }
    }
}

#[test]
fn environment_overrides_the_file() {
    let vars = env(&[
        ("KAFKA_BOOTSTRAP_SERVERS", "broker:9092"),
        ("KAFKA_SECURITY_PROTOCOL", "SSL"),
        ("KAFKA_SASL_MECHANISM", "plain"),
        ("KAFKA_SASL_USERNAME", "env-user"),
        ("KAFKA_SASL_PASSWORD", "env-pass"),
        ("KAFKA_SSL_CA_LOCATION", "/env/ca.pem"),
        ("KAFKA_TOPIC_PREFIX", "prod"),
        ("KAFKA_CONSUMER_GROUP", "env-group"),
    ]);
    let config = parse_ok(FULL, &vars);
    let kafka = &config.kafka;
    assert_eq!(kafka.brokers, Brokers::Bootstrap("broker:9092".into()));
    assert_eq!(kafka.security_protocol.as_deref(), Some("ssl"));
    assert_eq!(kafka.sasl_mechanism.as_deref(), Some("PLAIN"));
    assert_eq!(kafka.sasl_username.as_deref(), Some("env-user"));
    assert_eq!(kafka.sasl_password.as_deref(), Some("env-pass"));
    assert_eq!(kafka.ssl_ca_location, Some(PathBuf::from("/env/ca.pem")));
    assert_eq!(kafka.group_id, "env-group");
    assert_eq!(kafka.topic_prefix, "prod");
    assert_eq!(config.stages[0].inputs, ["prod.telemetry.raw"]);
    assert_eq!(
        config.stages[0].outputs["default"],
        "prod.telemetry.analytics"
    );
    assert_eq!(config.stages[0].dead_letter, "prod.telemetry.dead-letter");
    assert!(config.topic("prod.telemetry.raw").is_some());
}

#[test]
fn empty_environment_variables_are_ignored() {
    let vars = env(&[("KAFKA_TOPIC_PREFIX", ""), ("KAFKA_BOOTSTRAP_SERVERS", "")]);
    let config = parse_ok(FULL, &vars);
    assert_eq!(config.kafka.topic_prefix, "dev");
    assert_eq!(
        config.kafka.brokers,
        Brokers::Bootstrap("h1:9092,h2:9092".into())
    );
}

#[test]
fn embedded_brokers_from_the_environment() {
    let vars = env(&[("KAFKA_BOOTSTRAP_SERVERS", "embedded")]);
    assert_eq!(parse_ok(FULL, &vars).kafka.brokers, Brokers::Embedded);
}

#[test]
fn prefix_substitution_applies_to_every_topic_reference() {
    let source = MINIMAL.replace("{prefix}in", "{prefix}.in-{prefix}");
    let vars = env(&[("KAFKA_TOPIC_PREFIX", "f1")]);
    let config = parse_ok(&source, &vars);
    assert_eq!(config.topics[0].name, "f1.in-f1");
    assert_eq!(config.topics[1].name, "f1dlq");
    assert_eq!(config.stages[0].inputs, ["f1.in-f1"]);
    assert_eq!(config.stages[0].dead_letter, "f1dlq");
}

#[test]
fn plugin_paths_resolve_against_the_pipeline_directory() {
    let config = parse_ok(MINIMAL, &no_env());
    let expected = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/empty.wasm");
    assert_eq!(config.stages[0].plugin, expected);

    // Absolute paths are kept as written.
    let absolute = MINIMAL.replace(
        "\"empty.wasm\"",
        &format!("{:?}", expected.to_string_lossy()),
    );
    let elsewhere = Path::new("/nonexistent/dir/pipeline.toml");
    let config = parse(elsewhere, &absolute, &no_env()).unwrap();
    assert_eq!(config.stages[0].plugin, expected);

    // Relative paths are joined, not canonicalised.
    let nested = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/../ui/pipeline.toml");
    let config = parse(&nested, MINIMAL, &no_env()).unwrap();
    assert_eq!(
        config.stages[0].plugin,
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/../ui/empty.wasm")
    );
}

#[test]
fn environment_errors_name_the_variable() {
    let vars = env(&[
        ("KAFKA_SECURITY_PROTOCOL", "foo"),
        ("KAFKA_TOPIC_PREFIX", "a/b"),
    ]);
    let error = parse(&pipeline_path(), MINIMAL, &vars).unwrap_err();
    let diagnostics = error.diagnostics();
    assert_eq!(diagnostics.len(), 2);
    assert!(
        diagnostics
            .iter()
            .all(|d| d.line.is_none() && d.column.is_none() && d.key.is_none())
    );
    // Unlocated diagnostics keep the order of the [kafka] keys.
    assert!(
        diagnostics[0]
            .message
            .starts_with("environment variable KAFKA_TOPIC_PREFIX: invalid topic prefix \"a/b\"")
    );
    assert_eq!(
        diagnostics[1].to_string(),
        format!(
            "{}: environment variable KAFKA_SECURITY_PROTOCOL: unknown security protocol \"foo\" \
             (expected one of plaintext, ssl, sasl_plaintext, sasl_ssl)",
            pipeline_path().display()
        )
    );
}

#[test]
fn environment_errors_come_with_file_errors() {
    let vars = env(&[("KAFKA_BOOTSTRAP_SERVERS", ",")]);
    let source = "[admin]\nlisten = \"nope\"\n";
    let rendered = parse_err(source, &vars);
    assert_eq!(
        rendered,
        "pipeline.toml: 3 errors\n\
         pipeline.toml: environment variable KAFKA_BOOTSTRAP_SERVERS: invalid brokers \",\": \
         expected \"embedded\" or a comma-separated list of bootstrap servers such as \
         \"h1:9092,h2:9092\"\n\
         pipeline.toml: no stages declared: a pipeline needs at least one [[stage]]\n\
         pipeline.toml:2:10: admin.listen: invalid listen address \"nope\": invalid socket \
         address syntax (expected e.g. \"127.0.0.1:8080\")"
    );
}

#[test]
fn client_properties_put_options_last_and_let_them_win() {
    let kafka = KafkaConfig {
        brokers: Brokers::Bootstrap("b:9092".into()),
        security_protocol: Some("sasl_ssl".into()),
        sasl_mechanism: Some("PLAIN".into()),
        sasl_username: Some("u".into()),
        sasl_password: Some("p".into()),
        ssl_ca_location: Some("/ca.pem".into()),
        options: BTreeMap::from([
            ("linger.ms".into(), "5".into()),
            ("sasl.username".into(), "override".into()),
        ]),
        ..KafkaConfig::default()
    };
    let props = kafka.client_properties();
    let pairs: Vec<(&str, &str)> = props
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.password", "p"),
            ("ssl.ca.location", "/ca.pem"),
            ("linger.ms", "5"),
            ("sasl.username", "override"),
        ]
    );
    assert!(KafkaConfig::default().client_properties().is_empty());
}

#[test]
fn debug_redacts_the_password() {
    let config = parse_ok(FULL, &no_env());
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("sasl_password: Some(<redacted>)"), "{debug}");
    assert!(debug.contains("sasl_username: Some(\"weir\")"), "{debug}");
    assert!(debug.contains("commit_interval: 250ms"), "{debug}");
    let pretty = format!("{:#?}", config.kafka);
    assert!(!pretty.contains("hunter2"), "{pretty}");
}

#[test]
fn reading_a_missing_file_is_a_read_error() {
    let error = load(Path::new("/nonexistent/pipeline.toml"), &no_env()).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("cannot read /nonexistent/pipeline.toml: ")
    );
    assert!(error.diagnostics().is_empty());
}

#[test]
fn load_reads_the_file() {
    let path = std::env::temp_dir().join(format!("weir-config-load-{}.toml", std::process::id()));
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/empty.wasm");
    let source = MINIMAL.replace("\"empty.wasm\"", &format!("{:?}", wasm.to_string_lossy()));
    std::fs::write(&path, source).unwrap();
    let loaded = load(&path, &no_env());
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.unwrap().source, path);
}

#[test]
fn one_error_per_item_but_every_item_checked() {
    let source = r#"
[kafka]
nope = 1

[admin]
nope = 1

[[topic]]
nope = 1

[[stage]]
nope = 1
"#;
    let error = parse(Path::new("p.toml"), source, &no_env()).unwrap_err();
    let keys: Vec<_> = error
        .diagnostics()
        .iter()
        .map(|d| d.key.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        keys,
        ["kafka.nope", "admin.nope", "topic[0].nope", "stage[0].nope"]
    );
}

#[test]
fn broken_topics_still_count_as_declared() {
    // The bad `partitions` is the only problem: stage `a` may still use topic `in`.
    let source = MINIMAL.replace(
        "name = \"{prefix}in\"",
        "name = \"{prefix}in\"\npartitions = \"x\"",
    );
    let error = parse(&pipeline_path(), &source, &no_env()).unwrap_err();
    assert_eq!(error.diagnostics().len(), 1, "{error}");
    assert_eq!(
        error.diagnostics()[0].key.as_deref(),
        Some("topic[0].partitions")
    );
}

#[test]
fn broken_kafka_table_keeps_its_prefix() {
    let source = format!(
        "[kafka]\ntopic_prefix = \"p\"\nnope = 1\n{}",
        MINIMAL.replace("{prefix}", "p")
    );
    let error = parse(&pipeline_path(), &source, &no_env()).unwrap_err();
    assert_eq!(error.diagnostics().len(), 1, "{error}");
}

#[test]
fn strange_inputs_do_not_panic() {
    let deep = format!("x = {}{}", "[".repeat(5000), "]".repeat(5000));
    let inputs = [
        "",
        "\u{feff}",
        "\u{feff}[[stage]]\nname = \"é\"",
        "[[stage]]",
        "stage = []",
        "stage = [[]]",
        "stage = 1",
        "topic = [{ name = 1 }]",
        "[kafka]\noptions = []",
        "[kafka.options]\n\"\" = \"x\"",
        "[[stage]]\ninputs = {}\noutputs = []\nconfig = [1]\nbatch.max_messages = 99999999999999999999",
        "[[stage]]\nbatch = { max_messages = -9223372036854775808 }",
        "[[stage]]\nconfig = { a = nan, b = [-inf, { c = +inf }] }",
        "[stage.batch]\n[[stage.config]]",
        "[[stage]]\nname = \"a\"\n[[stage]]\nname = \"a\"\n[[stage]]\nname = \"a\"",
        "a.b.c.d = 1\n[a]\n",
        "[[topic]]\nname = \"{prefix}\"",
        "[[topic]]\nname = \"..\"",
        &deep,
        "\"\u{0}\" = 1",
        "x = \"\\uD800\"",
        "[admin]\nlisten = \"[::1]:80\"",
    ];
    for input in inputs {
        let _ = parse(Path::new("p.toml"), input, &no_env());
    }
}

#[test]
fn mutated_files_do_not_panic() {
    // Every single-character deletion and a few replacements of a full file: cheap coverage of
    // the paths where parsing half-succeeds.
    let chars: Vec<char> = FULL.chars().collect();
    for i in 0..chars.len() {
        let deleted: String = chars
            .iter()
            .take(i)
            .chain(chars.iter().skip(i + 1))
            .collect();
        let _ = parse(&pipeline_path(), &deleted, &no_env());
        for replacement in ['"', '[', '=', '\n', '1'] {
            let replaced: String = chars
                .iter()
                .enumerate()
                .map(|(j, &c)| if i == j { replacement } else { c })
                .collect();
            let _ = parse(&pipeline_path(), &replaced, &no_env());
        }
    }
}

#[test]
fn cycles_are_reported_once_each_in_order() {
    let source = r#"
[[topic]]
name = "x"
[[topic]]
name = "y"
[[topic]]
name = "dlq"

[[stage]]
name = "b"
plugin = "empty.wasm"
inputs = ["x"]
outputs = { out = "y", dlq-copy = "dlq" }
dead_letter = "dlq"

[[stage]]
name = "a"
plugin = "empty.wasm"
inputs = ["y"]
outputs = { out = "x", again = "x" }
dead_letter = "dlq"
"#;
    let error = parse(&pipeline_path(), source, &no_env()).unwrap_err();
    let messages: Vec<_> = error
        .diagnostics()
        .iter()
        .map(|d| (d.line, d.message.as_str()))
        .collect();
    assert_eq!(messages, [(Some(9), "stages form a cycle: b -> a -> b")]);
}

#[test]
fn dead_letter_topics_do_not_form_cycles() {
    let source = r#"
[[topic]]
name = "in"
[[topic]]
name = "dlq"

[[stage]]
name = "a"
plugin = "empty.wasm"
inputs = ["in"]
dead_letter = "dlq"

[[stage]]
name = "retry"
plugin = "empty.wasm"
inputs = ["dlq"]
outputs = { default = "in" }
dead_letter = "in"
"#;
    parse_ok(source, &no_env());
}

/// Two stages with two inputs each, of 6 and 3 partitions; `other` has no declared count.
const COPARTITION: &str = r#"
[[topic]]
name = "orders"
partitions = 6

[[topic]]
name = "returns"
partitions = 3

[[topic]]
name = "other"

[[topic]]
name = "dlq"

[[stage]]
name = "inventory"
plugin = "empty.wasm"
inputs = ["orders", "returns", "other"]
dead_letter = "dlq"

[[stage]]
name = "router"
plugin = "empty.wasm"
inputs = ["orders", "returns"]
dead_letter = "dlq"
state = "none"

[[stage]]
name = "single"
plugin = "empty.wasm"
inputs = ["orders"]
dead_letter = "dlq"
"#;

#[test]
fn declared_partition_mismatch_is_an_error_unless_the_stage_is_stateless() {
    let error = parse(&pipeline_path(), COPARTITION, &no_env()).unwrap_err();
    let file = pipeline_path();
    let file = file.display();
    assert_eq!(
        error.to_string(),
        format!(
            "{file}: 1 error\n\
             {file}:16:1: stage[0]: stage \"inventory\": inputs must have the same number of \
             partitions because its keyed state is scoped by partition: orders has 6, returns \
             has 3"
        )
    );
    // Memory-only state is scoped by partition too.
    let memory = COPARTITION.replacen(
        "dead_letter = \"dlq\"\n",
        "dead_letter = \"dlq\"\nstate = \"memory\"\n",
        1,
    );
    let error = parse(&pipeline_path(), &memory, &no_env()).unwrap_err();
    assert_eq!(
        error.diagnostics().len(),
        1,
        "a memory stage is checked too: {error}"
    );
    assert_eq!(error.diagnostics()[0].key.as_deref(), Some("stage[0]"));
    // Equal declared counts, or counts left to the broker, are fine.
    let equal = COPARTITION.replace("partitions = 3", "partitions = 6");
    parse_ok(&equal, &no_env());
    let undeclared = COPARTITION.replace("partitions = 3", "");
    parse_ok(&undeclared, &no_env());
}

#[test]
fn check_copartitioned_reports_every_mismatch_with_known_counts() {
    let mut config = parse_ok(&COPARTITION.replace("partitions = 3", ""), &no_env());
    let counts = |topic: &str| match topic {
        "orders" => Some(6),
        "returns" => Some(3),
        _ => None,
    };
    assert_eq!(
        check_copartitioned(&config, &counts).map_err(|e| e.to_string()),
        {
            let path = pipeline_path();
            let file = path.display();
            Err(format!(
                "{file}: 1 error\n\
             {file}:16: stage[0]: stage \"inventory\": inputs must have the same number of \
             partitions because its keyed state is scoped by partition: orders has 6, returns \
             has 3"
            ))
        }
    );

    config.stages[1].state = StateBackend::Memory;
    let error = check_copartitioned(&config, &counts).unwrap_err();
    let found: Vec<(Option<usize>, Option<&str>)> = error
        .diagnostics()
        .iter()
        .map(|d| (d.line, d.key.as_deref()))
        .collect();
    assert_eq!(
        found,
        [(Some(16), Some("stage[0]")), (Some(22), Some("stage[1]"))],
        "every mismatched stage, at its [[stage]] line"
    );

    assert!(check_copartitioned(&config, &|_| Some(4)).is_ok());
    assert!(check_copartitioned(&config, &|_| None).is_ok());
    // One known count has nothing to differ from.
    assert!(check_copartitioned(&config, &|t| (t == "orders").then_some(6)).is_ok());
}

#[test]
fn a_bridge_relays_a_declared_topic_with_defaults_filled_in() {
    let config = parse_ok(
        r#"
[kafka]
brokers = "h1:9092"
topic_prefix = "p"

[[topic]]
name = "{prefix}.telemetry"
[[topic]]
name = "events"
[[topic]]
name = "dlq"

[[stage]]
name = "s"
plugin = "empty.wasm"
inputs = ["{prefix}.telemetry"]
dead_letter = "dlq"

[[bridge]]
name = "live"
topic = "{prefix}.telemetry"
key = "sessionId"

[[bridge]]
name = "events"
topic = "events"
schema = "json"
queue = 16
max_clients = 2
behind_ms = 250
"#,
        &no_env(),
    );
    assert_eq!(
        config.bridges,
        [
            BridgeConfig {
                name: "live".into(),
                topic: "p.telemetry".into(),
                key: Some("sessionId".into()),
                schema: BridgeSchema::TelemetryFrame,
                queue: 1024,
                max_clients: 100,
                behind: Duration::from_secs(5),
            },
            BridgeConfig {
                name: "events".into(),
                topic: "events".into(),
                key: None,
                schema: BridgeSchema::Json,
                queue: 16,
                max_clients: 2,
                behind: Duration::from_millis(250),
            },
        ]
    );
}
