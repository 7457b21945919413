//! What the broker refuses never stops, wedges or silently drops a
//! pipeline, on the real broker: records of any size a stage accepts are
//! dead-lettered (without their value when it cannot be published), an
//! output topic that refuses a record for good has the input dead-lettered
//! with kind `produce_error` while commits move on. On the mock cluster,
//! which can take one topic's leader away or refuse requests: a stage
//! rebuilt by a reload delivers everything it owes before its replacement
//! reads on, and a topic that refuses every write stops the stage even
//! with `on_error = "skip"`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use weir_integration_tests::*;

const SETTLE: Duration = Duration::from_secs(120);

/// A producer that may send records up to 4 MiB, as a client configured
/// for a topic with a raised `max.message.bytes` would.
fn large_producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("message.max.bytes", "4194304")
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, value: &[u8]) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(value),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("producing {} bytes to {topic}: {e}", value.len()));
}

fn f1_records(n: usize) -> Vec<(String, Vec<u8>)> {
    f1::telemetry(n, "delivery")
        .iter()
        .map(|t| {
            (
                t["car_id"].as_str().unwrap().to_string(),
                t.to_string().into_bytes(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_any_accepted_size_are_dead_lettered_and_the_rest_flows() {
    init_tracing();
    let prefix = unique_prefix("sizes");
    let group = unique_prefix("group");
    // The input topic takes records of up to 3 MiB; the dead-letter topic
    // has the broker's default of about 1 MiB.
    let toml = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[topic]]
name = "{{prefix}}.raw"
partitions = 1
config = {{ "max.message.bytes" = "3145728" }}
[[topic]]
name = "{{prefix}}.analytics"
partitions = 1
[[topic]]
name = "{{prefix}}.dlq"
partitions = 1

[[stage]]
name = "degradation"
plugin = "{degradation}"
inputs = ["{{prefix}}.raw"]
outputs = {{ default = "{{prefix}}.analytics" }}
dead_letter = "{{prefix}}.dlq"
[stage.config]
dedup_window = 0
"#,
        degradation = weir_test_programs::F1_DEGRADATION,
    );
    let weir = Weir::start(test_pipeline(&toml, &prefix, &group));
    let (raw, analytics, dlq) = (
        format!("{prefix}.raw"),
        format!("{prefix}.analytics"),
        format!("{prefix}.dlq"),
    );
    topics_exist(&[(&raw, 1), (&dlq, 1)]).await;

    let producer = large_producer();
    let good = f1_records(150);
    for (k, v) in &good[..50] {
        send(&producer, &raw, k, v).await;
    }
    // Legal at the broker's defaults and under max_payload_bytes (1 MiB),
    // but over librdkafka's default message.max.bytes once it carries the
    // dead-letter headers: the plugin rejects it as not JSON.
    let near_limit = vec![b'x'; 1_020_000];
    send(&producer, &raw, "CAR-1", &near_limit).await;
    // Over max_payload_bytes, so never handed to the plugin, and too large
    // for the dead-letter topic.
    let oversized = vec![b'y'; 2 << 20];
    send(&producer, &raw, "CAR-1", &oversized).await;
    for (k, v) in &good[50..] {
        send(&producer, &raw, k, v).await;
    }

    settled(&format!("{group}.degradation"), &[&raw], SETTLE).await;
    assert_eq!(
        read_all(&analytics).len(),
        150,
        "every good message analysed"
    );
    let dead = read_all(&dlq);
    assert_eq!(dead.len(), 2, "two dead letters");
    let kinds: Vec<&str> = dead
        .iter()
        .map(|m| header(m, "weir.error.kind").unwrap())
        .collect();
    assert_eq!(kinds, ["plugin_error", "oversize"]);
    // The first kept its value; the second could not, and says how large
    // it was and where the original is.
    assert_eq!(dead[0].payload().map(<[u8]>::len), Some(1_020_000));
    assert_eq!(header(&dead[0], "weir.original.size"), None);
    assert_eq!(dead[1].payload(), None);
    assert_eq!(dead[1].key(), Some(&b"CAR-1"[..]));
    assert_eq!(
        header(&dead[1], "weir.original.size"),
        Some((2 << 20).to_string().as_str())
    );
    assert_eq!(header(&dead[1], "weir.source.topic"), Some(raw.as_str()));
    assert_eq!(header(&dead[1], "weir.source.offset"), Some("51"));
    weir.stop().await.expect("the pipeline was still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_topic_that_refuses_records_has_their_inputs_dead_lettered() {
    init_tracing();
    let prefix = unique_prefix("refused");
    let group = unique_prefix("group");
    let toml = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[topic]]
name = "{{prefix}}.in"
partitions = 2
[[topic]]
name = "{{prefix}}.out"
partitions = 1
config = {{ "max.message.bytes" = "200" }}
[[topic]]
name = "{{prefix}}.dlq"
partitions = 1

[[stage]]
name = "pass"
plugin = "{passthrough}"
inputs = ["{{prefix}}.in"]
outputs = {{ default = "{{prefix}}.out" }}
dead_letter = "{{prefix}}.dlq"
"#,
        passthrough = weir_test_programs::PASSTHROUGH,
    );
    let weir = Weir::start(test_pipeline(&toml, &prefix, &group));
    let (input, out, dlq) = (
        format!("{prefix}.in"),
        format!("{prefix}.out"),
        format!("{prefix}.dlq"),
    );
    topics_exist(&[(&input, 2), (&out, 1), (&dlq, 1)]).await;
    let records: Vec<(String, Vec<u8>)> = (0..21)
        .map(|i| (format!("k{i}"), format!("{i:0>300}").into_bytes()))
        .collect();
    produce(&input, &records).await;

    // Commits reach the end: nothing is stuck behind a refused record.
    settled(&format!("{group}.pass"), &[&input], SETTLE).await;
    assert!(read_all(&out).is_empty());
    let dead = read_all(&dlq);
    let by_key: BTreeMap<String, &rdkafka::message::OwnedMessage> = dead
        .iter()
        .map(|m| (String::from_utf8_lossy(m.key().unwrap()).into_owned(), m))
        .collect();
    assert_eq!(by_key.len(), 21, "each input dead-lettered once");
    for (key, value) in &records {
        let m = by_key[key];
        assert_eq!(header(m, "weir.error.kind"), Some("produce_error"));
        // The input itself, read back, not the refused output.
        assert_eq!(m.payload(), Some(value.as_slice()), "{key}");
        let reason = header(m, "weir.error").unwrap();
        assert!(
            reason.contains(&out) && reason.contains("MessageSizeTooLarge"),
            "{reason}"
        );
    }
    weir.stop().await.expect("the pipeline was still running");
}

/// Orders sent before the reload, and in all.
const FIRST: usize = 1_020;
const TOTAL: usize = 1_100;

fn inventory_toml(admin: std::net::SocketAddr, max_messages: usize) -> String {
    format!(
        r#"
[admin]
listen = "{admin}"

[[topic]]
name = "orders"
[[topic]]
name = "answers"
[[topic]]
name = "dlq"

[[stage]]
name = "inventory"
plugin = "{plugin}"
inputs = ["orders"]
outputs = {{ default = "answers" }}
dead_letter = "dlq"
batch = {{ max_messages = {max_messages}, max_wait_ms = 5 }}
[stage.config.stock]
burrito = 100000
"#,
        plugin = weir_test_programs::CAMPUS_INVENTORY,
    )
}

fn order(i: usize) -> (String, Vec<u8>) {
    let id = format!("order-{i}");
    let value = json!({
        "eventId": format!("evt-{i}"), "eventType": "OrderPlaced",
        "orderId": id, "items": [{"sku": "burrito", "qty": 1}],
        "createdAt": "2026-11-23T10:00:15.250Z",
    });
    (id, value.to_string().into_bytes())
}

/// The answers on `bootstrap`'s `answers` topic, by order id.
fn answers(bootstrap: &str) -> BTreeMap<String, usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, end) = consumer
        .fetch_watermarks("answers", 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("answers", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut answered = BTreeMap::new();
    let mut next = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while next < end {
        assert!(std::time::Instant::now() < deadline, "reading answers");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            next = m.offset() + 1;
            let e: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            assert_eq!(e["eventType"], "InventoryReserved", "{e}");
            *answered
                .entry(e["orderId"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    answered
}

async fn send_orders(producer: &FutureProducer, range: std::ops::Range<usize>) {
    for i in range {
        let (key, value) = order(i);
        producer
            .send(
                FutureRecord::to("orders").key(&key).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("producing order {i}: {e}"));
    }
}

/// On librdkafka's mock cluster, the one place a single topic's leader can
/// be taken away while the group coordinator stays up: the answers topic
/// has no leader for longer than the drain timeout while a reload rebuilds
/// the stateful stage that owes answers to it. The old stage must deliver
/// them before its replacement reads on; a replacement that re-read the
/// orders would find them done in keyed state and never answer them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_stage_delivers_what_it_owes_before_its_replacement_reads() {
    init_tracing();
    let cluster = MockCluster::new(2).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    // The mock cluster does not answer CreateTopics: the stage's changelog
    // is made here too.
    for topic in ["orders", "answers", "dlq", "weir-inventory-changelog"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    cluster.partition_leader("orders", 0, Some(1)).unwrap();
    cluster
        .partition_leader("weir-inventory-changelog", 0, Some(1))
        .unwrap();
    cluster.partition_leader("dlq", 0, Some(1)).unwrap();
    cluster.partition_leader("answers", 0, Some(2)).unwrap();
    cluster
        .coordinator(MockCoordinator::Group("weir.inventory".into()), 1)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let admin = free_local_addr();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, inventory_toml(admin, 16)).unwrap();
    let env = std::collections::HashMap::<String, String>::new();
    let config = weir::config::load(&path, &env).unwrap_or_else(|e| panic!("{e}"));
    let options = weir::app::RunOptions {
        env: Arc::new(env),
        watch: false,
        // Short, so that a rebuild bounded by it would show here.
        drain_timeout: Duration::from_secs(1),
        ..weir::app::RunOptions::default()
    };
    let reload = options.reload.clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let weir = tokio::spawn(weir::app::run(
        config,
        bootstrap.clone(),
        false,
        options,
        shutdown.clone(),
    ));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();

    // Some orders answered: the stage runs and the topic works.
    send_orders(&producer, 0..20).await;
    eventually("the first answers", SETTLE, || async {
        match answers(&bootstrap).len() {
            20 => Ok(()),
            n => Err(format!("{n} answers")),
        }
    })
    .await;

    // The answers topic loses its leader; the stage processes the orders
    // (the stock is taken in keyed state) and its answers wait.
    cluster.broker_down(2).unwrap();
    send_orders(&producer, 20..FIRST).await;
    eventually("the orders to be processed", SETTLE, || async {
        let (_, status) = http(admin, "GET", "/api/v1/status", None).await;
        let consumed = status["metrics"]["stages"]["inventory"]["consumed"]
            .as_u64()
            .unwrap_or(0);
        if consumed >= FIRST as u64 {
            Ok(())
        } else {
            Err(format!("consumed {consumed}"))
        }
    })
    .await;

    // A batch change rebuilds the stage while its answers are owed, for
    // longer than the drain timeout.
    std::fs::write(&path, inventory_toml(admin, 8)).unwrap();
    let reloaded = tokio::spawn(async move { reload.reload("test").await });
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.broker_up(2).unwrap();
    let outcome = tokio::time::timeout(SETTLE, reloaded)
        .await
        .expect("the reload finished")
        .unwrap()
        .expect("a pipeline to reload");
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.swapped, ["restarted inventory"]);

    send_orders(&producer, FIRST..TOTAL).await;
    let answered = eventually("every order answered", SETTLE, || async {
        let answered = answers(&bootstrap);
        if (0..TOTAL).all(|i| answered.contains_key(&order(i).0)) {
            Ok(answered)
        } else {
            let missing = (0..TOTAL)
                .filter(|i| !answered.contains_key(&order(*i).0))
                .count();
            Err(format!("{missing} orders not answered"))
        }
    })
    .await;
    let twice: Vec<&String> = answered
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(twice.is_empty(), "orders answered twice: {twice:?}");
    assert_eq!(answered.len(), TOTAL);
    shutdown.cancel();
    weir.await.unwrap().expect("clean shutdown");
}

/// On the mock cluster, whose produce requests can be made to fail: a
/// topic the stage is not authorized to write is not the message's fault,
/// so even `on_error = "skip"` must not drop the messages behind it. The
/// stage stops with the topic and the cause, and commits nothing past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_failure_stops_the_stage_even_with_on_error_skip() {
    init_tracing();
    let cluster = MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    for topic in ["in", "out", "dlq"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    for i in 0..10 {
        producer
            .send(
                FutureRecord::to("in")
                    .key(&format!("k{i}"))
                    .payload(&format!("v{i}")),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    // Every produce request from here on is refused.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 100],
    );
    let toml = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[topic]]
name = "in"
[[topic]]
name = "out"
[[topic]]
name = "dlq"
[[stage]]
name = "pass"
plugin = "{passthrough}"
inputs = ["in"]
outputs = {{ default = "out" }}
dead_letter = "dlq"
on_error = "skip"
state = "none"
"#,
        passthrough = weir_test_programs::PASSTHROUGH,
    );
    let config = pipeline(&toml, &[]);
    let ended = tokio::time::timeout(
        SETTLE,
        weir::app::run(
            config,
            bootstrap.clone(),
            false,
            weir::app::RunOptions {
                watch: false,
                drain_timeout: Duration::from_secs(1),
                ..weir::app::RunOptions::default()
            },
            tokio_util::sync::CancellationToken::new(),
        ),
    )
    .await
    .expect("the stage stopped by itself");
    let err = format!(
        "{:#}",
        ended.expect_err("a platform failure stops the pipeline")
    );
    assert!(
        err.contains("cannot publish to out")
            && err.contains("TopicAuthorizationFailed")
            && err.contains("on_error does not apply"),
        "{err}"
    );
    // Nothing was committed: after the permissions are fixed, every
    // message is processed.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "weir.pass")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("in", 0);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let offset = committed.elements()[0].offset();
    assert!(
        matches!(offset, Offset::Invalid | Offset::Offset(0)),
        "committed {offset:?}"
    );
}
