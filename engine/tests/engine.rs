//! The engine on librdkafka's mock cluster, in process and without Java:
//! batching, a failing message isolated from its batch, the failure
//! policies, and offsets that wait for the broker's acknowledgements. The
//! same behaviours are tested against a real broker in `tests/`; these run
//! in seconds while working on the engine.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use weir_engine::kafka::KafkaClients;
use weir_engine::topology::{StageControl, Topology, TopologyError};
use weir_runtime::metrics::{Registry, StageSnapshot};
use weir_runtime::state::MemoryState;
use weir_runtime::wasm::{Runtime, RuntimeOptions};

const PATIENCE: Duration = Duration::from_secs(30);

/// A mock cluster with the topics `in`, `out` and `dlq` (one partition
/// each) and `values` already in `in`.
fn cluster(values: &[String]) -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    for topic in ["in", "out", "dlq"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    for (i, value) in values.iter().enumerate() {
        let key = format!("k{i}");
        producer
            .send(BaseRecord::to("in").key(&key).payload(value))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    cluster
}

/// One stage from `in` to `out` running `plugin` with the stage settings
/// `extra`, on `cluster`.
struct Engine {
    metrics: Arc<Registry>,
    shutdown: CancellationToken,
    ended: tokio::task::JoinHandle<Result<(), TopologyError>>,
}

impl Engine {
    fn start(
        cluster: &MockCluster<'static, DefaultProducerContext>,
        plugin: &str,
        extra: &str,
    ) -> Engine {
        let toml = format!(
            r#"
[[topic]]
name = "in"
[[topic]]
name = "out"
[[topic]]
name = "dlq"
[[stage]]
name = "s"
plugin = "{plugin}"
inputs = ["in"]
outputs = {{ default = "out" }}
dead_letter = "dlq"
state = "memory"
{extra}
"#
        );
        let config = weir_config::parse(
            Path::new("pipeline.toml"),
            &toml,
            &HashMap::<String, String>::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let clients = KafkaClients::new(cluster.bootstrap_servers(), &config.kafka);
        let metrics = Arc::new(Registry::default());
        let runtime = Arc::new(
            Runtime::new(
                RuntimeOptions::default(),
                Arc::new(MemoryState::default()),
                metrics.clone(),
            )
            .unwrap(),
        );
        let control = Arc::new(StageControl::default());
        let topology = Topology::build(&config, &runtime, &clients, &control).unwrap();
        let shutdown = CancellationToken::new();
        let running = topology.start(shutdown.clone()).unwrap();
        Engine {
            metrics,
            shutdown,
            ended: tokio::spawn(running.wait()),
        }
    }

    fn stage(&self) -> StageSnapshot {
        self.metrics.stages().remove("s").unwrap_or_default()
    }

    /// Polls the stage's counters until `done` holds.
    async fn until(&self, what: &str, done: impl Fn(&StageSnapshot) -> bool) -> StageSnapshot {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let s = self.stage();
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Result<(), TopologyError> {
        self.shutdown.cancel();
        self.ended.await.unwrap()
    }
}

/// Every record of `topic`: (value, `weir.error.kind` header).
fn read_all(
    cluster: &MockCluster<'static, DefaultProducerContext>,
    topic: &str,
    expected: usize,
) -> Vec<(String, Option<String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "reader")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while out.len() < expected || Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let kind = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "weir.error.kind")
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                out.push((value, kind));
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) if out.len() >= expected => {
                break;
            }
            _ if Instant::now() >= deadline => break,
            _ => {}
        }
    }
    out
}

fn values(n: usize, bad: &[usize], how: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            if bad.contains(&i) {
                how.to_string()
            } else {
                format!("v{i}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_hold_at_most_max_messages() {
    let cluster = cluster(&values(100, &[], ""));
    let engine = Engine::start(
        &cluster,
        weir_test_programs::PASSTHROUGH,
        "batch = { max_messages = 16, max_wait_ms = 1000 }",
    );
    let s = engine.until("100 committed", |s| s.committed == 100).await;
    assert_eq!(s.consumed, 100);
    assert!(
        s.batches >= 7,
        "100 messages in batches of 16 or fewer: {s:?}"
    );
    engine.stop().await.unwrap();
    let out = read_all(&cluster, "out", 100);
    assert_eq!(out.len(), 100);
    assert!(
        out.iter()
            .enumerate()
            .all(|(i, (v, _))| *v == format!("v{i}"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_message_fails_alone_and_its_batch_goes_on() {
    let cluster = cluster(&values(50, &[10, 30], "panic"));
    let engine = Engine::start(
        &cluster,
        weir_test_programs::HOSTILE,
        "batch = { max_messages = 64 }",
    );
    let s = engine.until("50 committed", |s| s.committed == 50).await;
    assert_eq!(s.dead_lettered, 2, "{s:?}");
    engine.stop().await.unwrap();
    let dead = read_all(&cluster, "dlq", 2);
    assert_eq!(
        dead,
        vec![
            ("panic".to_string(), Some("trap".to_string())),
            ("panic".to_string(), Some("trap".to_string()))
        ]
    );
    let out: Vec<String> = read_all(&cluster, "out", 48)
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(
        out,
        values(50, &[], "")
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i != 10 && *i != 30)
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_drops_the_failed_message_and_moves_on() {
    let cluster = cluster(&values(20, &[5], "panic"));
    let engine = Engine::start(&cluster, weir_test_programs::HOSTILE, "on_error = \"skip\"");
    let s = engine.until("20 committed", |s| s.committed == 20).await;
    assert_eq!(s.dead_lettered, 0);
    assert_eq!(s.skipped, 1, "{s:?}");
    engine.stop().await.unwrap();
    assert_eq!(read_all(&cluster, "out", 19).len(), 19);
    assert!(read_all(&cluster, "dlq", 0).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_stops_the_stage_and_commits_nothing_past_the_failure() {
    let cluster = cluster(&values(20, &[5], "panic"));
    let engine = Engine::start(
        &cluster,
        weir_test_programs::HOSTILE,
        "on_error = \"halt\"\nbatch = { max_messages = 1 }",
    );
    let ended = tokio::time::timeout(PATIENCE, engine.ended)
        .await
        .expect("the stage stopped by itself")
        .unwrap();
    let err = ended.expect_err("halt stops the pipeline").to_string();
    assert!(
        err.contains("on_error = \"halt\": in/0@5 failed (trap)"),
        "{err}"
    );
    let committed = engine.metrics.stages()["s"].committed;
    assert!(
        committed <= 5,
        "committed {committed} messages, the fifth failed"
    );
    assert!(read_all(&cluster, "out", 5).len() <= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_wait_for_the_broker_to_acknowledge_the_outputs() {
    let cluster = cluster(&values(30, &[], ""));
    // Every produce is refused, retriably, for a while: the stage consumes
    // and processes, but nothing it derived is acknowledged.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 8],
    );
    let engine = Engine::start(&cluster, weir_test_programs::PASSTHROUGH, "");
    let s = engine.until("30 consumed", |s| s.consumed == 30).await;
    assert_eq!(
        s.committed, 0,
        "offsets stored before the outputs were acknowledged: {s:?}"
    );
    let s = engine.until("30 committed", |s| s.committed == 30).await;
    assert_eq!(s.emitted, 30, "{s:?}");
    engine.stop().await.unwrap();
    assert_eq!(read_all(&cluster, "out", 30).len(), 30);
}
