//! Helpers for tests against the real broker that `scripts/test.sh` starts
//! and names in `WEIR_TEST_KAFKA_BOOTSTRAP`.

pub mod campus;
pub mod exposition;
pub mod f1;
pub mod openapi;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use weir::config::PipelineConfig;

pub const BOOTSTRAP_ENV: &str = "WEIR_TEST_KAFKA_BOOTSTRAP";

/// The real broker's address. Integration tests need one: run them through
/// `scripts/test.sh`, which starts Apache Kafka and sets the variable.
pub fn bootstrap() -> String {
    std::env::var(BOOTSTRAP_ENV).unwrap_or_else(|_| {
        panic!(
            "{BOOTSTRAP_ENV} is not set: these tests need a real Kafka broker; \
             run them with scripts/test.sh, which starts one"
        )
    })
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,weir=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A topic prefix no other test or run has used, so tests share a broker.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Parses a pipeline from TOML text, as `weir run` would with these
/// environment variables.
pub fn pipeline(toml: &str, env: &[(&str, &str)]) -> PipelineConfig {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse_pipeline(toml, &env)
}

/// [`pipeline`] on the test broker, with the topic prefix and consumer
/// group of [`test_env`].
pub fn test_pipeline(toml: &str, prefix: &str, group: &str) -> PipelineConfig {
    parse_pipeline(toml, &test_env(prefix, group))
}

fn parse_pipeline(toml: &str, env: &HashMap<String, String>) -> PipelineConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.test.toml");
    weir::config::parse(&path, toml, env).unwrap_or_else(|e| panic!("{e}"))
}

/// A pipeline running in this process against the test broker.
pub struct Weir {
    pub shutdown: CancellationToken,
    pub reload: weir::topology::handle::ReloadHandle,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Weir {
    pub fn start(config: PipelineConfig) -> Weir {
        // The fixtures do not change under a test; reloads are tested with
        // `start_with`.
        let options = weir::app::RunOptions {
            watch: false,
            ..weir::app::RunOptions::default()
        };
        Self::start_with(config, options)
    }

    /// Starts it with `options`; its reload handle stays reachable.
    pub fn start_with(config: PipelineConfig, options: weir::app::RunOptions) -> Weir {
        let shutdown = CancellationToken::new();
        let reload = options.reload.clone();
        let task = tokio::spawn(weir::app::run(
            config,
            bootstrap(),
            false,
            options,
            shutdown.clone(),
        ));
        Weir {
            shutdown,
            task,
            reload,
        }
    }

    /// Waits, up to `timeout`, for it to end on its own (a halted stage
    /// stops the pipeline) and returns how it ended.
    pub async fn ended(self, timeout: Duration) -> anyhow::Result<()> {
        match tokio::time::timeout(timeout, self.task).await {
            Ok(joined) => joined?,
            Err(_) => {
                self.shutdown.cancel();
                panic!("weir was still running after {timeout:?}")
            }
        }
    }

    /// Stops it as Ctrl-C would and returns how it ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await?
    }
}

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Produces `(key, value)` records and waits for every acknowledgement.
pub async fn produce(topic: &str, records: &[(String, Vec<u8>)]) {
    produce_with_header(topic, None, records).await
}

/// Like [`produce`], with header `name: value` (when given) on every record.
pub async fn produce_with_header(
    topic: &str,
    header: Option<(&str, &str)>,
    records: &[(String, Vec<u8>)],
) {
    let headers: Vec<(String, String)> = header
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into_iter()
        .collect();
    let records: Vec<Record> = records
        .iter()
        .map(|(k, v)| (k.clone(), v.clone(), headers.clone()))
        .collect();
    produce_records(topic, &records).await
}

/// A record to produce: key, value and headers.
pub type Record = (String, Vec<u8>, Vec<(String, String)>);

/// Produces `records` in order and waits for every acknowledgement.
pub async fn produce_records(topic: &str, records: &[Record]) {
    let producer = producer();
    let mut deliveries = Vec::with_capacity(records.len());
    for (key, value, headers) in records {
        loop {
            let mut record = FutureRecord::to(topic).key(key).payload(value);
            if !headers.is_empty() {
                let mut owned = rdkafka::message::OwnedHeaders::new();
                for (name, v) in headers {
                    owned = owned.insert(rdkafka::message::Header {
                        key: name,
                        value: Some(v),
                    });
                }
                record = record.headers(owned);
            }
            match producer.send_result(record) {
                Ok(d) => {
                    deliveries.push(d);
                    break;
                }
                Err((e, _)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "{e}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
}

fn reader() -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique_prefix("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap()
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> Vec<i32> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0].partitions().iter().map(|p| p.id()).collect()
}

/// The high watermark (end offset) of every partition of `topic`.
pub fn end_offsets(topic: &str) -> BTreeMap<i32, i64> {
    try_end_offsets(topic).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`end_offsets`], but an error while the topic is being created
/// (no metadata yet, no leader yet) is returned rather than a panic, for
/// [`eventually`].
pub fn try_end_offsets(topic: &str) -> Result<BTreeMap<i32, i64>, String> {
    let consumer = reader();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions
        .into_iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(_, high)| (p, high))
                .map_err(|e| format!("end of {topic}/{p}: {e}"))
        })
        .collect()
}

/// Every record of `topic` from the beginning to its current end.
pub fn read_all(topic: &str) -> Vec<OwnedMessage> {
    let consumer = reader();
    let ends = end_offsets(topic);
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let total: i64 = ends.values().sum();
    let mut out = Vec::new();
    let mut positions: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while positions.iter().any(|(p, pos)| *pos < ends[p]) {
        assert!(
            Instant::now() < deadline,
            "timed out reading {topic}: {} of {total}",
            out.len()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            positions.insert(m.partition(), m.offset() + 1);
            out.push(m.detach());
        }
    }
    out
}

/// The offsets a consumer group has committed for `topic`, per partition;
/// a partition with no commit counts as 0, where an empty partition's end is.
pub fn committed(group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in partitions(&consumer, topic) {
        tpl.add_partition(topic, p);
    }
    // The coordinator can be briefly unknown (a broker just resumed, a
    // group just formed): asked again until it answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let committed = loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("committed offsets of {group}: {e}; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("committed offsets of {group}: {e}"),
        }
    };
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => (e.partition(), o),
            _ => (e.partition(), 0),
        })
        .collect()
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with
/// what the last check saw.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}: {last}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits until `group` has committed the end of every partition of each of
/// `topics`, as the ends are now: everything in them was processed and all
/// that came of it acknowledged. Call it stage by stage, upstream first, so
/// that a topic's end is final when it is read.
pub async fn settled(group: &str, topics: &[&str], timeout: Duration) {
    for topic in topics {
        let end = end_offsets(topic);
        eventually(
            &format!("{group} to commit the end of {topic}"),
            timeout,
            || async {
                let c = committed(group, topic);
                if c == end {
                    Ok(())
                } else {
                    Err(format!("committed {c:?}, end {end:?}"))
                }
            },
        )
        .await;
    }
}

/// The repo's own pipeline.toml, made to run beside other tests on the
/// shared broker: plugins from the fixtures `weir-test-programs` built, the
/// admin API on a free port, the F1 topics under `{namespace}-f1` (through
/// `KAFKA_TOPIC_PREFIX`, as an operator would) and the other scenarios'
/// topics, which have plain names (`orders`, `raw_telemetry`, ...), renamed
/// under `namespace`.
pub fn repo_pipeline(namespace: &str, group: &str) -> PipelineConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut text = std::fs::read_to_string(root.join("pipeline.toml")).unwrap();
    let fixtures = Path::new(weir_test_programs::PASSTHROUGH).parent().unwrap();
    let renames = [
        (
            "\"target/wasm32-wasip2/release/".to_string(),
            format!("\"{}/", fixtures.display()),
        ),
        (
            "\"127.0.0.1:8080\"".to_string(),
            "\"127.0.0.1:0\"".to_string(),
        ),
        ("\"orders\"".to_string(), format!("\"{namespace}.orders\"")),
        (
            "\"inventory-events\"".to_string(),
            format!("\"{namespace}.inventory-events\""),
        ),
        (
            "\"raw_telemetry\"".to_string(),
            format!("\"{namespace}.raw_telemetry\""),
        ),
        (
            "\"anomalies\"".to_string(),
            format!("\"{namespace}.anomalies\""),
        ),
        (
            "\"operator_alerts\"".to_string(),
            format!("\"{namespace}.operator_alerts\""),
        ),
        (
            "\"operator_actions\"".to_string(),
            format!("\"{namespace}.operator_actions\""),
        ),
        ("\"campus.".to_string(), format!("\"{namespace}.campus.")),
        ("\"fleet.".to_string(), format!("\"{namespace}.fleet.")),
        (
            "\"driftlock-events\"".to_string(),
            format!("\"{namespace}.driftlock-events\""),
        ),
        (
            "\"driftlock-anomalies\"".to_string(),
            format!("\"{namespace}.driftlock-anomalies\""),
        ),
        (
            "\"driftlock.".to_string(),
            format!("\"{namespace}.driftlock."),
        ),
        (
            "\"telemetry\"".to_string(),
            format!("\"{namespace}.telemetry\""),
        ),
        (
            "\"commands\"".to_string(),
            format!("\"{namespace}.commands\""),
        ),
        ("\"laps\"".to_string(), format!("\"{namespace}.laps\"")),
        ("\"purple.".to_string(), format!("\"{namespace}.purple.")),
    ];
    for (from, to) in renames {
        assert!(text.contains(&from), "pipeline.toml no longer has {from}");
        text = text.replace(&from, &to);
    }
    let f1_prefix = format!("{namespace}-f1");
    pipeline(
        &text,
        &[
            ("KAFKA_BOOTSTRAP_SERVERS", &bootstrap()),
            ("KAFKA_TOPIC_PREFIX", &f1_prefix),
            ("KAFKA_CONSUMER_GROUP", group),
        ],
    )
}

/// The value of header `name` of `m`, as UTF-8.
pub fn header<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// Waits until each `(topic, partitions)` exists with that many partitions
/// (weir creates its topics at start).
pub async fn topics_exist(topics: &[(&str, usize)]) {
    eventually("topics to exist", Duration::from_secs(60), || async {
        for (topic, partitions) in topics {
            let ends = try_end_offsets(topic)?;
            if ends.len() != *partitions {
                return Err(format!("{topic}: {ends:?}"));
            }
        }
        Ok(())
    })
    .await
}

/// The environment a test pipeline is read with: the test broker, and a
/// topic prefix and consumer group of its own.
pub fn test_env(prefix: &str, group: &str) -> HashMap<String, String> {
    [
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap()),
        ("KAFKA_TOPIC_PREFIX", prefix.to_string()),
        ("KAFKA_CONSUMER_GROUP", group.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A loopback address no one listens on now, for an admin API under test.
pub fn free_local_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// One HTTP/1.1 request with a JSON body (or none); the status and the
/// body parsed as JSON (`Null` when it is not JSON). Small on purpose: the
/// tests need nothing more from a client. Every answer is checked against
/// the OpenAPI document (see [`openapi`]).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, text) = http_text(addr, method, path, body).await;
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    let errors = openapi::Spec::default().check_response(method, path, status, &json);
    assert!(
        errors.is_empty(),
        "the answer departs from openapi.json:\n  {}\nanswer: {json:#}",
        errors.join("\n  ")
    );
    (status, json)
}

/// Like [`http`], with the body as text and not checked against the
/// OpenAPI document.
pub async fn http_text(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// Where the `weir` binary is: `WEIR_TEST_BIN` (`scripts/test.sh` builds it
/// and sets it), else `target/debug/weir` of this workspace.
pub const WEIR_BIN_ENV: &str = "WEIR_TEST_BIN";

/// The `weir` binary tests run as a child process, to kill it for real.
pub fn weir_bin() -> std::path::PathBuf {
    let bin = std::env::var_os(WEIR_BIN_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .join("target/debug/weir")
        });
    assert!(
        bin.is_file(),
        "no weir binary at {}: build it with `cargo build -p weir --bin weir` or set \
         {WEIR_BIN_ENV} (scripts/test.sh does both)",
        bin.display()
    );
    bin
}

/// `weir run` as a child process against the test broker, its log in a
/// file. Dropping it SIGKILLs it, so a failing test leaves nothing behind.
pub struct WeirProcess {
    pub name: String,
    pub admin: std::net::SocketAddr,
    pub log: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl WeirProcess {
    /// Starts `weir run pipeline --admin-listen <free port> --no-watch` with
    /// `env` (e.g. [`test_env`]) added to this process's environment; the
    /// log goes to `{name}.log` beside the pipeline file.
    pub fn spawn(name: &str, pipeline: &Path, env: &HashMap<String, String>) -> WeirProcess {
        let admin = free_local_addr();
        let log = pipeline.with_file_name(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(weir_bin())
            .arg("run")
            .arg(pipeline)
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--no-watch")
            .envs(env)
            .env(
                "RUST_LOG",
                std::env::var("WEIR_TEST_CHILD_LOG")
                    .unwrap_or_else(|_| "info,librdkafka=warn".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", weir_bin().display()));
        WeirProcess {
            name: name.to_string(),
            admin,
            log,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `/readyz` answers 200 (its stages run); panics, with the
    /// end of its log, if it exits first or `timeout` passes.
    pub async fn ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "weir {} exited with {status} before it was ready; its log:\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            // Connect first: `http_text` panics when nothing listens yet.
            if tokio::net::TcpStream::connect(self.admin).await.is_ok()
                && let Ok((200, _)) = tokio::time::timeout(
                    Duration::from_secs(5),
                    http_text(self.admin, "GET", "/readyz", None),
                )
                .await
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "weir {} not ready after {timeout:?}; its log:\n{}",
                self.name,
                self.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no drain, no commit, no flush; waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of setting `name` of `topic`, as the broker describes it.
pub async fn topic_setting(topic: &str, name: &str) -> Option<String> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap();
    let resource = described.into_iter().next()?.ok()?;
    resource.get(name)?.value.clone()
}

/// The compression codec of every record batch on the broker's disk for
/// `topic` partition `partition` (Kafka's batch attributes, bits 0-2: 0
/// none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), read from its first segment.
/// The broker is the test broker, whose `log.dirs` is one directory.
pub async fn codecs_on_disk(topic: &str, partition: i32) -> Vec<u8> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let described = admin
        .describe_configs(&[ResourceSpecifier::Broker(1)], &AdminOptions::new())
        .await
        .unwrap();
    let broker = described.into_iter().next().unwrap().unwrap();
    let dir = broker
        .get("log.dirs")
        .and_then(|e| e.value.clone())
        .unwrap();
    let segment = Path::new(&dir)
        .join(format!("{topic}-{partition}"))
        .join("00000000000000000000.log");
    let bytes = std::fs::read(&segment).unwrap_or_default();
    let mut codecs = Vec::new();
    let mut at = 0;
    // baseOffset (8), batchLength (4), then the batch: partitionLeaderEpoch
    // (4), magic (1), crc (4), attributes (2), ...
    while at + 23 <= bytes.len() {
        let length = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let attributes = u16::from_be_bytes(bytes[at + 21..at + 23].try_into().unwrap());
        codecs.push((attributes & 0x7) as u8);
        at += 12 + length;
    }
    codecs
}

/// A topic to create: its name, partitions and settings.
pub type NewTopicSpec<'a> = (&'a str, i32, &'a [(&'a str, &'a str)]);

/// Creates `(name, partitions, topic config)` topics with one replica and
/// waits for the answer; a topic that already exists is an error (tests
/// make their own, under a unique prefix).
pub async fn create_topics(topics: &[NewTopicSpec<'_>]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions, config)| {
            config.iter().fold(
                NewTopic::new(name, *partitions, TopicReplication::Fixed(1)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        if let Err((topic, code)) = r {
            panic!("cannot create topic {topic}: {code}");
        }
    }
}

/// Waits until something listens on `addr` (a weir starting up binds its
/// admin API once its topics and changelogs are ready).
pub async fn admin_up(addr: std::net::SocketAddr, timeout: Duration) {
    eventually("the admin API", timeout, || async {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

/// Every record of `topic` a `read_committed` consumer sees: records of
/// committed transactions (and non-transactional ones), up to the last
/// stable offset of each partition.
pub fn read_committed(topic: &str) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique_prefix("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let parts = partitions(&consumer, topic);
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut open: std::collections::BTreeSet<i32> = parts.into_iter().collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "timed out reading {topic} read_committed: {} records, partitions {open:?} not at their end",
            out.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Partitions of `topic` where a transaction is still open: where the
/// last stable offset (the end a read_committed consumer is told) is short
/// of the high watermark. Empty when every transaction has ended.
pub fn open_transactions(topic: &str) -> Vec<(i32, i64, i64)> {
    let client = |isolation: &str| -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", unique_prefix("lso"))
            .set("isolation.level", isolation)
            .create()
            .unwrap()
    };
    // ListOffsets answers with the isolation level of the asking client.
    let (committed, uncommitted) = (client("read_committed"), client("read_uncommitted"));
    let mut open = Vec::new();
    for p in partitions(&committed, topic) {
        let timeout = Duration::from_secs(10);
        let (_, lso) = committed.fetch_watermarks(topic, p, timeout).unwrap();
        let (_, high) = uncommitted.fetch_watermarks(topic, p, timeout).unwrap();
        if lso != high {
            open.push((p, lso, high));
        }
    }
    open
}

/// The broker's pid, as `scripts/test.sh` exports it, for tests that stop
/// and resume it.
pub fn broker_pid() -> i32 {
    let pid = std::env::var("WEIR_TEST_KAFKA_PID").unwrap_or_else(|_| {
        panic!("WEIR_TEST_KAFKA_PID is not set: run the tests with scripts/test.sh")
    });
    pid.trim().parse().expect("WEIR_TEST_KAFKA_PID is a pid")
}

/// Sends `sig` (`STOP`, `CONT`, ...) to process `pid`.
pub fn signal(pid: i32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Resumes the stopped broker when dropped, also when the test fails while
/// it is stopped.
pub struct ResumeBroker(pub i32);

impl Drop for ResumeBroker {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

/// How many times each key appears on `topic`.
pub fn counts_by_key(topic: &str) -> BTreeMap<Vec<u8>, usize> {
    let mut seen = BTreeMap::new();
    for m in read_all(topic) {
        *seen.entry(m.key().unwrap().to_vec()).or_default() += 1;
    }
    seen
}

/// One counter of one stage from the admin API's status.
pub async fn stage_metric(admin: std::net::SocketAddr, stage: &str, field: &str) -> u64 {
    let (_, status) = http(admin, "GET", "/api/v1/status", None).await;
    status["metrics"]["stages"][stage][field]
        .as_u64()
        .unwrap_or(0)
}

/// Starts the stages of a weir that was started with `autostart = false`
/// (no generator), and waits until `stage` has consumed something.
pub async fn start_stages(admin: std::net::SocketAddr, stage: &str) {
    let (code, _) = http(
        admin,
        "POST",
        "/api/v1/start",
        Some(&serde_json::json!({"rate_per_sec": 1, "scenario": "none"})),
    )
    .await;
    assert_eq!(code, 200);
    eventually(
        &format!("{stage} to start consuming"),
        Duration::from_secs(60),
        || async {
            match stage_metric(admin, stage, "consumed").await {
                0 => Err("nothing consumed".to_string()),
                _ => Ok(()),
            }
        },
    )
    .await;
}

/// Writes `toml` as `dir/pipeline.toml` and returns its path.
pub fn write_pipeline(dir: &Path, toml: &str) -> std::path::PathBuf {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// Spawns `weir run` as a child process named `name` and waits up to
/// `ready` for its admin API to say the stages run.
pub async fn start_weir(
    name: &str,
    pipeline: &Path,
    env: &HashMap<String, String>,
    ready: Duration,
) -> WeirProcess {
    let mut p = WeirProcess::spawn(name, pipeline, env);
    p.ready(ready).await;
    eprintln!(
        "weir {name} (pid {:?}) ready, admin {}, log {}",
        p.pid(),
        p.admin,
        p.log.display()
    );
    p
}

/// Fails with the log of any of `processes` that has exited.
pub fn assert_running(processes: &mut [&mut WeirProcess]) {
    for p in processes {
        assert!(
            p.running(),
            "weir {} exited; its log:\n{}",
            p.name,
            p.log_tail(60)
        );
    }
}
