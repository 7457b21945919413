//! What restoring durable keyed state costs: a stage's changelog topic is
//! filled directly with 1,000,000 live keys (16-byte keys, 8-byte values)
//! over 3 partitions, plus 1,000 keys whose `weir.expires.ms` deadline has
//! passed and 1,000 keys tombstoned later in the log; then `weir run`
//! starts on that group and stage and restores it before processing.
//!
//! It prints the restore's duration (`last_restore_ms`) and keys per
//! second, then checks that exactly the live keys came back: the stage
//! reports 1,000,000 keys, sampled keys answer the state query with their
//! value in their partition, and the expired and tombstoned ones do not.
//! The duration is reported, not asserted: on a shared 2-core machine it
//! is noise; `scripts/bench.sh` measures it in release (rung
//! `restore`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use serde_json::Value;
use weir_integration_tests::*;

/// Live keys: all of them must be restored.
const KEYS: usize = 1_000_000;
/// Keys whose deadline passed before the restore: none may be restored.
const EXPIRED: usize = 1_000;
/// Keys written, then deleted by a tombstone at the end of the log.
const TOMBSTONED: usize = 1_000;
/// Every record in the changelog: the tombstoned keys have two.
const RECORDS: u64 = (KEYS + EXPIRED + 2 * TOMBSTONED) as u64;
const PARTITIONS: i32 = 3;
const STAGE: &str = "keys";
/// How long weir may take to start (it compiles its plugin; debug build).
const READY: Duration = Duration::from_secs(180);
/// How long the restore may take on a debug build on a busy machine.
const RESTORE: Duration = Duration::from_secs(180);

/// 16 bytes.
fn live_key(i: usize) -> String {
    format!("key-{i:012}")
}

/// 8 bytes; not JSON, so the state query renders it as a string.
fn live_value(i: usize) -> String {
    format!("v{i:07}")
}

fn partition_of(i: usize) -> i32 {
    (i % PARTITIONS as usize) as i32
}

/// One live key in a thousand carries a deadline an hour ahead: restored
/// like the others.
fn has_future_deadline(i: usize) -> bool {
    i % 1000 == 7
}

fn expired_key(j: usize) -> String {
    format!("exp-{j:012}")
}

fn tombstoned_key(j: usize) -> String {
    format!("tmb-{j:012}")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Counts failed deliveries.
#[derive(Default)]
struct Failures(AtomicU64);

impl rdkafka::ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes the changelog straight to the topic, batched (no wait per
/// record); returns how many records each partition got.
fn write_changelog(topic: &str) -> BTreeMap<i32, i64> {
    let producer: BaseProducer<Failures> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "50")
        .set("batch.num.messages", "100000")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Failures::default())
        .unwrap();
    let mut counts: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    let mut sent = 0u64;
    let mut send = |partition: i32, key: &str, value: Option<&str>, deadline: Option<i64>| {
        let deadline = deadline.map(|d| d.to_string());
        loop {
            let mut record = BaseRecord::<str, str>::to(topic)
                .partition(partition)
                .key(key);
            if let Some(v) = value {
                record = record.payload(v);
            }
            if let Some(d) = &deadline {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: "weir.expires.ms",
                    value: Some(d.as_str()),
                }));
            }
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("cannot produce to {topic}: {e}"),
            }
        }
        *counts.get_mut(&partition).unwrap() += 1;
        sent += 1;
        if sent.is_multiple_of(50_000) {
            producer.poll(Duration::ZERO);
        }
    };
    let now = now_ms();
    // Keys deleted later: their values first...
    for j in 0..TOMBSTONED {
        send(partition_of(j), &tombstoned_key(j), Some("doomed!!"), None);
    }
    // ...keys whose deadline passed a minute ago...
    for j in 0..EXPIRED {
        send(
            partition_of(j),
            &expired_key(j),
            Some("expired!"),
            Some(now - 60_000),
        );
    }
    // ...the live keys...
    let later = now + 3_600_000;
    for i in 0..KEYS {
        let deadline = has_future_deadline(i).then_some(later);
        send(
            partition_of(i),
            &live_key(i),
            Some(&live_value(i)),
            deadline,
        );
    }
    // ...and the tombstones, last.
    for j in 0..TOMBSTONED {
        send(partition_of(j), &tombstoned_key(j), None, None);
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("the changelog records acknowledged within 120 s");
    assert_eq!(
        producer.context().0.load(Ordering::Relaxed),
        0,
        "changelog records failed to be delivered"
    );
    counts
}

fn pipeline_toml() -> String {
    format!(
        r#"
[[topic]]
name = "{{prefix}}.keys"
partitions = {PARTITIONS}
[[topic]]
name = "{{prefix}}.out"
partitions = {PARTITIONS}
[[topic]]
name = "{{prefix}}.dead-letter"
partitions = 1

# Any stateful plugin: no message arrives, the state is the changelog's.
[[stage]]
name = "{STAGE}"
plugin = "{plugin}"
inputs = ["{{prefix}}.keys"]
outputs = {{ default = "{{prefix}}.out" }}
dead_letter = "{{prefix}}.dead-letter"

# The default quota is 1,000,000 keys and 64 MiB.
[stage.limits]
state_max_keys = 2000000
state_max_bytes = 1073741824
"#,
        plugin = weir_test_programs::ORDER_ANALYTICS,
    )
}

async fn stage_status(admin: std::net::SocketAddr) -> Result<Value, String> {
    let (code, body) = http(admin, "GET", &format!("/api/v1/stages/{STAGE}"), None).await;
    if code == 200 {
        Ok(body)
    } else {
        Err(format!("GET /api/v1/stages/{STAGE}: {code} {body}"))
    }
}

fn metric(status: &Value, name: &str) -> u64 {
    status["metrics"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no metric {name} in {status}"))
}

/// The state query's values for `key`: `(partition, value)`; none on 404.
async fn state_of(admin: std::net::SocketAddr, key: &str) -> Vec<(i64, Value)> {
    let (code, body) = http(
        admin,
        "GET",
        &format!("/api/v1/stages/{STAGE}/state/{key}"),
        None,
    )
    .await;
    match code {
        200 => body["values"]
            .as_array()
            .unwrap_or_else(|| panic!("no values in {body}"))
            .iter()
            .map(|v| (v["partition"].as_i64().unwrap(), v["value"].clone()))
            .collect(),
        404 => Vec::new(),
        _ => panic!("state query for {key}: {code} {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_keys_restore_and_only_the_live_ones() {
    let prefix = unique_prefix("restore-cost");
    let group = unique_prefix("restore-cost-group");
    let env: HashMap<String, String> = test_env(&prefix, &group);
    let input = format!("{prefix}.keys");
    // `<group_id>-<stage>-changelog`, with weir's own settings. One segment
    // of 1 GiB (the test broker rolls at 64 MiB): the log cleaner cannot
    // compact anything before weir reads it, so every record written is
    // read.
    let changelog = format!("{group}-{STAGE}-changelog");
    create_topics(&[
        (&input, PARTITIONS, &[]),
        (
            &changelog,
            PARTITIONS,
            &[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "-1"),
                ("segment.bytes", "1073741824"),
            ],
        ),
    ])
    .await;
    topics_exist(&[
        (&input, PARTITIONS as usize),
        (&changelog, PARTITIONS as usize),
    ])
    .await;

    let started = Instant::now();
    let topic = changelog.clone();
    let counts = tokio::task::spawn_blocking(move || write_changelog(&topic))
        .await
        .unwrap();
    let wrote = started.elapsed();
    assert_eq!(counts.values().sum::<i64>() as u64, RECORDS);
    assert_eq!(
        end_offsets(&changelog),
        counts,
        "the changelog holds what was written, partition by partition"
    );
    eprintln!(
        "wrote {RECORDS} changelog records to {changelog} in {:.1} s ({:.0} records/s)",
        wrote.as_secs_f64(),
        RECORDS as f64 / wrote.as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, pipeline_toml()).unwrap();
    let spawned = Instant::now();
    let mut weir = WeirProcess::spawn("restore", Path::new(&pipeline), &env);
    weir.ready(READY).await;
    let admin = weir.admin;
    // The metrics are set once the restore of the assignment is done.
    let status = eventually("the changelog restored", RESTORE, || async {
        let s = stage_status(admin).await?;
        if metric(&s, "state_restored_records") >= RECORDS {
            Ok(s)
        } else {
            Err(format!("{}", s["metrics"]))
        }
    })
    .await;
    let seen_after = spawned.elapsed();
    let restored = metric(&status, "state_restored_records");
    let ms = metric(&status, "last_restore_ms");
    let keys = metric(&status, "state_keys");
    println!(
        "restore: {restored} changelog records read, {keys} keys restored in {ms} ms \
         (last_restore_ms): {:.0} keys/s, {:.0} records/s; {:.1} s from `weir run` to the \
         metrics showing it (start-up and plugin compilation included)",
        KEYS as f64 / (ms.max(1) as f64 / 1000.0),
        restored as f64 / (ms.max(1) as f64 / 1000.0),
        seen_after.as_secs_f64()
    );

    assert_eq!(
        restored, RECORDS,
        "every changelog record read once (tombstones and expired ones included)"
    );
    assert!(ms > 0, "a restore of {RECORDS} records took 0 ms: {status}");
    assert_eq!(
        status["metrics"]["assigned_partitions"],
        serde_json::json!([0, 1, 2]),
        "one process holds every partition: {status}"
    );
    assert_eq!(
        keys, KEYS as u64,
        "exactly the live keys, none expired or tombstoned: {status}"
    );

    // Sampled keys: the first and last of each partition, one with a
    // deadline ahead, some in between.
    for i in [
        0, 1, 2, 7, 1_007, 123_456, 499_999, 500_000, 999_997, 999_998, 999_999,
    ] {
        let key = live_key(i);
        assert_eq!(
            state_of(admin, &key).await,
            vec![(i64::from(partition_of(i)), Value::String(live_value(i)))],
            "the state of {key}"
        );
    }
    for j in [0, 1, 2, 500, 999] {
        let key = expired_key(j);
        assert_eq!(state_of(admin, &key).await, vec![], "{key} expired");
        let key = tombstoned_key(j);
        assert_eq!(state_of(admin, &key).await, vec![], "{key} was deleted");
    }

    // The expired keys were dropped on restore, and their deletion is
    // written back at the next flush: one tombstone each, nothing else.
    eventually(
        "the expired keys' tombstones in the changelog",
        Duration::from_secs(60),
        || async {
            let s = stage_status(admin).await?;
            match metric(&s, "changelog_records") {
                n if n == EXPIRED as u64 => Ok(()),
                n => Err(format!("changelog_records {n}")),
            }
        },
    )
    .await;
    let ends = end_offsets(&changelog);
    assert_eq!(
        ends.values().sum::<i64>() as u64,
        RECORDS + EXPIRED as u64,
        "{ends:?}"
    );
    assert!(
        weir.running(),
        "weir exited; its log:\n{}",
        weir.log_tail(60)
    );
}
