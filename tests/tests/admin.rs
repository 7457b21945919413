//! The admin API end to end against the real broker: run control
//! with the F1 generator, the duplicate fault absorbed by dedup, stop twice,
//! an orders load test read back through the state query, and the
//! slow-consumer fault showing up as lag.

use std::time::Duration;

use serde_json::{Value, json};
use weir_integration_tests::*;

const WAIT: Duration = Duration::from_secs(120);

fn stage_metric(status: &Value, stage: &str, field: &str) -> u64 {
    status["metrics"]["stages"][stage][field]
        .as_u64()
        .unwrap_or(0)
}

/// `POST /api/v1/replay` with `body`.
async fn post_replay(admin: std::net::SocketAddr, body: Value) -> (u16, Value) {
    http(admin, "POST", "/api/v1/replay", Some(&body)).await
}

async fn admin_up(admin: std::net::SocketAddr) {
    weir_integration_tests::admin_up(admin, WAIT).await;
}

/// The order-analytics `totals` state query: status code and body.
async fn totals(admin: std::net::SocketAddr) -> (u16, Value) {
    http(
        admin,
        "GET",
        "/api/v1/stages/order-analytics/state/totals",
        None,
    )
    .await
}

async fn total_reaches(admin: std::net::SocketAddr, n: u64, what: &str) {
    eventually(what, WAIT, || async {
        match analytics_total(admin).await {
            Some(t) if t == n => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

async fn status_until(
    admin: std::net::SocketAddr,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, WAIT, || async {
        let (code, status) = http(admin, "GET", "/api/v1/status", None).await;
        if code == 200 && check(&status) {
            Ok(status)
        } else {
            Err(format!("{code} {status:#}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_control_generators_faults_and_state() {
    init_tracing();
    let ns = unique_prefix("admin");
    let group = unique_prefix("group");
    let admin = free_local_addr();
    let mut config = repo_pipeline(&ns, &group);
    config.admin.listen = admin;
    let weir = Weir::start(config);
    let analytics = format!("{ns}-f1.telemetry.analytics");
    admin_up(admin).await;

    // Validation: every bad field is named, with 422.
    let (code, body) = http(
        admin,
        "POST",
        "/api/v1/start",
        Some(&json!({"rate_per_sec": 0, "scenario": "tennis"})),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["rate_per_sec", "scenario"]);
    let (code, body) = http(
        admin,
        "POST",
        "/api/v1/start",
        Some(&json!({"scenario": "f1"})),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(body["fields"][0]["field"], "rate_per_sec", "{body}");

    // f1: 200 messages at 1,000/s, with Swagger's placeholders (as the F1
    // Kafka demo's clients sent them) ignored;
    // all 200 produced and analysed.
    let (code, _) = http(
        admin,
        "POST",
        "/api/v1/kafka-demo/start",
        Some(
            &json!({"rate_per_sec": 1000, "max_messages": 200, "scenario": "f1",
                     "bootstrap_servers": "string", "topic_prefix": ""}),
        ),
    )
    .await;
    assert_eq!(code, 200);
    // ...and the run over: a start while a run is going leaves it as it is.
    status_until(admin, "200 produced and analysed, the run over", |s| {
        s["run"]["generator"]["produced"] == 200
            && s["run"]["generating"] == false
            && stage_metric(s, "degradation", "emitted") == 200
    })
    .await;

    // The duplicate fault: 200 more, about a fifth sent twice; dedup keeps
    // the analysed count at 200 more.
    let (code, _) = http(
        admin,
        "POST",
        "/api/v1/fault",
        Some(&json!({"fault": {"duplicate_ratio": 0.2}})),
    )
    .await;
    assert_eq!(code, 200);
    http(
        admin,
        "POST",
        "/api/v1/start",
        Some(&json!({"rate_per_sec": 1000, "max_messages": 200, "scenario": "f1"})),
    )
    .await;
    let s = status_until(admin, "the duplicated run to be analysed", |s| {
        let duplicated = s["run"]["generator"]["duplicated"].as_u64().unwrap_or(0);
        duplicated > 0
            && s["run"]["generator"]["produced"].as_u64() == Some(400 + duplicated)
            && stage_metric(s, "degradation", "consumed") == 400 + duplicated
            // Stored for commit only once all their outputs are
            // acknowledged: `emitted` is final then.
            && stage_metric(s, "degradation", "committed") == 400 + duplicated
    })
    .await;
    assert_eq!(stage_metric(&s, "degradation", "emitted"), 400, "{s:#}");
    let by_topic = &s["metrics"]["stages"]["degradation"]["by_topic"];
    assert_eq!(by_topic[&analytics], 400, "emitted per output: {s:#}");
    settled(
        &format!("{group}.degradation"),
        &[&format!("{ns}-f1.telemetry.raw")],
        WAIT,
    )
    .await;
    assert_eq!(read_all(&analytics).len(), 400);
    http(admin, "POST", "/api/v1/fault", Some(&json!({"fault": {}}))).await;

    // Stop is idempotent.
    for _ in 0..2 {
        let (code, body) = http(admin, "POST", "/api/v1/stop", None).await;
        assert_eq!(code, 200);
        assert_eq!(body["running"], false);
    }
    let (code, _) = http(
        admin,
        "POST",
        "/api/v1/start",
        Some(&json!({"rate_per_sec": 1, "scenario": "none"})),
    )
    .await;
    assert_eq!(code, 200);

    // Orders: a load test of 10,000, then the analytics totals through the
    // interactive state query.
    let (code, body) = http(
        admin,
        "POST",
        "/api/v1/load-test",
        Some(&json!({"count": 10_000})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["produced"], 10_000);
    assert_eq!(body["remaining_in_queue"], 0);
    eventually("order analytics to count 10,000", WAIT, || async {
        let (code, body) = totals(admin).await;
        let total = body["values"][0]["value"]["total_orders"].as_u64();
        // One process holds the single partition of the analytics input.
        let served = &body["served_by"]["assigned_partitions"];
        if code == 200 && total == Some(10_000) && *served == json!([0]) {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    })
    .await;
    let (code, _) = http(admin, "GET", "/api/v1/stages/nope/state/totals", None).await;
    assert_eq!(code, 404);

    // Replay: order-analytics reads its input again from the beginning with
    // its state cleared. The totals are rebuilt, not doubled; the stage
    // really re-read (consumed) and re-derived (emitted) everything.
    // Settled: all 20,000 events of its input (each order and its
    // inventory answer) processed and their records acknowledged. The lag
    // is sampled every few seconds, so a lag of 0 can predate the last
    // inventory answers.
    let before = status_until(admin, "analytics to settle", |s| {
        stage_metric(s, "order-analytics", "committed") >= 20_000
    })
    .await;
    let consumed_before = stage_metric(&before, "order-analytics", "consumed");
    let committed_before = stage_metric(&before, "order-analytics", "committed");
    let emitted_before = stage_metric(&before, "order-analytics", "emitted");
    let (code, body) = post_replay(admin, json!({"stage": "nope"})).await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = post_replay(admin, json!({"stage": 3})).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "stage", "{body}");
    let (code, replay) = post_replay(admin, json!({"stage": "order-analytics"})).await;
    assert_eq!(code, 200, "{replay}");
    assert!(
        replay["state_keys_cleared"].as_u64().unwrap() > 10_000,
        "{replay}"
    );
    let rewound = replay["rewound_messages"].as_u64().unwrap();
    assert!(rewound >= 10_000, "{replay}");
    assert!(
        replay["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["from"] == 0),
        "{replay}"
    );
    let after = status_until(admin, "the replay to re-read every message", |s| {
        stage_metric(s, "order-analytics", "consumed") >= consumed_before + rewound
            && stage_metric(s, "order-analytics", "committed") >= committed_before + rewound
    })
    .await;
    assert!(
        stage_metric(&after, "order-analytics", "emitted") > emitted_before,
        "the replay re-derived the table: {after:#}"
    );
    total_reaches(admin, 10_000, "replayed totals to read 10,000 again").await;
    // The rebuilt state has the keys the cleared one had: an id per event
    // (orders and inventory answers), the totals and the minute buckets.
    let keys = stage_metric(&after, "order-analytics", "state_keys");
    assert!(keys > 20_000, "{after:#}");
    assert_eq!(
        Some(keys),
        replay["state_keys_cleared"].as_u64(),
        "{replay}"
    );

    // Slow consumers: lag rises while the fault is on, and falls after.
    http(
        admin,
        "POST",
        "/api/v1/fault",
        Some(&json!({"fault": {"slow_consumer_ms": 20}})),
    )
    .await;
    http(
        admin,
        "POST",
        "/api/v1/load-test",
        Some(&json!({"count": 2_000, "scenario": "f1"})),
    )
    .await;
    status_until(admin, "lag to rise", |s| {
        stage_metric(s, "degradation", "lag") > 0
    })
    .await;
    let (code, metrics) = http_text(admin, "GET", "/metrics", None).await;
    assert_eq!(code, 200);
    let lag: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weir_stage_lag{stage=\"degradation\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no degradation lag in {metrics}"));
    assert!(lag > 0, "lag in /metrics");
    assert!(metrics.contains("weir_plugin_duplicates_dropped{stage=\"degradation\"}"));
    assert!(metrics.contains("weir_stage_replays_total{stage=\"order-analytics\"} 1\n"));
    assert!(
        metrics.contains(&format!(
            "weir_stage_state_keys{{stage=\"order-analytics\"}} {keys}\n"
        )),
        "{metrics}"
    );
    let batches: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("weir_stage_batch_duration_seconds_count{stage=\"degradation\"} ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no degradation batch histogram in {metrics}"));
    assert!(batches > 0, "batches timed");
    http(admin, "POST", "/api/v1/fault", Some(&json!({"fault": {}}))).await;
    status_until(admin, "lag to fall", |s| {
        stage_metric(s, "degradation", "lag") == 0
    })
    .await;

    weir.stop().await.expect("clean shutdown");
}

/// `[admin].autostart = false`: the stages wait, paused, while input piles
/// up (lag is still sampled), until `POST /api/v1/start`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autostart_off_waits_for_start() {
    init_tracing();
    let ns = unique_prefix("paused");
    let group = unique_prefix("group");
    let admin = free_local_addr();
    let mut config = repo_pipeline(&ns, &group);
    config.admin.listen = admin;
    config.admin.autostart = false;
    let weir = Weir::start(config);
    admin_up(admin).await;
    let (code, body) = http(
        admin,
        "POST",
        "/api/v1/load-test",
        Some(&json!({"count": 300, "scenario": "f1"})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let paused = status_until(admin, "the paused stage to see its lag", |s| {
        stage_metric(s, "degradation", "lag") == 300
    })
    .await;
    assert_eq!(paused["running"], false, "{paused:#}");
    assert_eq!(stage_metric(&paused, "degradation", "consumed"), 0);

    let (code, body) = http(
        admin,
        "POST",
        "/api/v1/start",
        Some(&json!({"rate_per_sec": 1, "scenario": "none"})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    status_until(admin, "the started stage to consume", |s| {
        stage_metric(s, "degradation", "consumed") == 300 && s["running"] == true
    })
    .await;
    weir.stop().await.expect("clean shutdown");
}

async fn analytics_total(admin: std::net::SocketAddr) -> Option<u64> {
    let (code, body) = totals(admin).await;
    (code == 200)
        .then(|| body["values"][0]["value"]["total_orders"].as_u64())
        .flatten()
}

/// A replay that cannot move the offsets (another process is a member of
/// the stage's group) changes nothing: 503 naming the cause, the stage runs
/// on with its state. Once the other member leaves, the replay goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rolls_back_while_another_member_holds_the_group() {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    init_tracing();
    let ns = unique_prefix("replay");
    let group = unique_prefix("group");
    let admin = free_local_addr();
    let mut config = repo_pipeline(&ns, &group);
    config.admin.listen = admin;
    let input = config.stage("order-analytics").unwrap().inputs[0].clone();
    let weir = Weir::start(config);
    admin_up(admin).await;
    let (code, body) = http(
        admin,
        "POST",
        "/api/v1/load-test",
        Some(&json!({"count": 1_000})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    total_reaches(admin, 1_000, "analytics to count 1,000").await;

    // Another consumer joins the stage's group and stays in it.
    let stage_group = format!("{group}.order-analytics");
    let other: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", &stage_group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    other.subscribe(&[input.as_str()]).unwrap();
    eventually("the other member to join", WAIT, || {
        let _ = other.poll(Duration::from_millis(100));
        let members = other
            .client()
            .fetch_group_list(Some(&stage_group), Duration::from_secs(5))
            .map(|l| l.groups().first().map_or(0, |g| g.members().len()))
            .unwrap_or(0);
        async move {
            if members == 2 {
                Ok(())
            } else {
                Err(format!("{members} members"))
            }
        }
    })
    .await;

    let (code, body) = post_replay(admin, json!({"stage": "order-analytics"})).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("still has members"),
        "{body}"
    );
    // The stage is back, with nothing replayed.
    let (code, stage) = http(admin, "GET", "/api/v1/stages/order-analytics", None).await;
    assert_eq!(code, 200, "{stage}");
    assert_eq!(stage["metrics"]["replays"], 0, "{stage}");

    // Nothing was cleared: once the other member leaves, the stage holds
    // the partition again, with its state restored from the changelog.
    drop(other);
    total_reaches(admin, 1_000, "analytics to hold its total again").await;
    assert_eq!(analytics_total(admin).await, Some(1_000));
    let (code, body) = post_replay(admin, json!({"stage": "order-analytics"})).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body["state_keys_cleared"].as_u64().unwrap() > 1_000,
        "{body}"
    );
    total_reaches(admin, 1_000, "replayed totals to read 1,000 again").await;
    weir.stop().await.expect("clean shutdown");
}
