//! The two-stage F1 pipeline end to end against a real broker: 10,000
//! telemetry messages in, each scored exactly once, alerts exactly where the
//! rule says, bad messages dead-lettered with reasons, and the committed
//! offsets at the end of every input.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use serde_json::{Value, json};
use weir_integration_tests::*;

const MESSAGES: usize = 10_000;

fn pipeline_toml() -> String {
    format!(
        r#"
[kafka]
topic_prefix = "unused"

[admin]
listen = "127.0.0.1:0"

[[topic]]
name = "{{prefix}}.raw"
partitions = 3
[[topic]]
name = "{{prefix}}.analytics"
partitions = 3
[[topic]]
name = "{{prefix}}.alerts"
partitions = 2
[[topic]]
name = "{{prefix}}.dlq"
partitions = 1

[[stage]]
name = "degradation"
plugin = "{degradation}"
inputs = ["{{prefix}}.raw"]
outputs = {{ default = "{{prefix}}.analytics" }}
dead_letter = "{{prefix}}.dlq"
batch = {{ max_messages = 256, max_wait_ms = 5 }}

[[stage]]
name = "alerts"
plugin = "{alerts}"
inputs = ["{{prefix}}.analytics"]
outputs = {{ default = "{{prefix}}.alerts" }}
dead_letter = "{{prefix}}.dlq"
[stage.config]
degradation_threshold = 0.7
"#,
        degradation = weir_test_programs::F1_DEGRADATION,
        alerts = weir_test_programs::F1_ALERTS,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_flow_through_both_stages_exactly_once() {
    init_tracing();
    let prefix = unique_prefix("f1");
    let group = unique_prefix("group");
    let config = pipeline(
        &pipeline_toml(),
        &[
            ("KAFKA_BOOTSTRAP_SERVERS", &bootstrap()),
            ("KAFKA_TOPIC_PREFIX", &prefix),
            ("KAFKA_CONSUMER_GROUP", &group),
        ],
    );
    let raw = format!("{prefix}.raw");
    let analytics = format!("{prefix}.analytics");
    let alerts = format!("{prefix}.alerts");
    let dlq = format!("{prefix}.dlq");

    let weir = Weir::start(config);

    let inputs: Vec<Value> = f1::telemetry(MESSAGES, "it-run");
    let mut records: Vec<(String, Vec<u8>)> = inputs
        .iter()
        .map(|t| {
            (
                t["car_id"].as_str().unwrap().to_string(),
                t.to_string().into_bytes(),
            )
        })
        .collect();
    // Bad messages among the good ones: not JSON, no car_id, a missing tyre.
    let bad = [
        ("CAR-1", "not json at all".to_string()),
        ("CAR-2", json!({"seq": 1, "tire_temp_fl": 90}).to_string()),
        (
            "CAR-3",
            json!({"car_id": "CAR-3", "tire_temp_fl": 90, "tire_temp_fr": 90, "tire_temp_rl": 90})
                .to_string(),
        ),
    ];
    for (i, (key, value)) in bad.iter().enumerate() {
        records.insert(
            1000 * (i + 1),
            (key.to_string(), value.clone().into_bytes()),
        );
    }
    // Redeliveries: 50 good messages sent again, as the duplicate fault or
    // a producer retry would. The degradation stage must analyse each once.
    let duplicates: Vec<(String, Vec<u8>)> = inputs
        .iter()
        .step_by(200)
        .map(|t| {
            (
                t["car_id"].as_str().unwrap().to_string(),
                t.to_string().into_bytes(),
            )
        })
        .collect();
    assert_eq!(duplicates.len(), 50);
    records.extend(duplicates.iter().cloned());
    // Topics are created by weir at start; wait for them before producing.
    topics_exist(&[(&raw, 3)]).await;
    produce(&raw, &records).await;
    let raw_end = end_offsets(&raw);
    assert_eq!(
        raw_end.values().sum::<i64>(),
        (MESSAGES + bad.len() + duplicates.len()) as i64
    );

    // Committed offsets reach the end of the input: every message was
    // processed and everything derived from it acknowledged.
    let degradation_group = format!("{group}.degradation");
    eventually(
        "degradation offsets at the end of the input",
        Duration::from_secs(120),
        || async {
            let c = committed(&degradation_group, &raw);
            if c == raw_end {
                Ok(())
            } else {
                Err(format!("committed {c:?}, end {raw_end:?}"))
            }
        },
    )
    .await;
    let analytics_end = end_offsets(&analytics);
    let alerts_group = format!("{group}.alerts");
    eventually(
        "alerts offsets at the end of analytics",
        Duration::from_secs(120),
        || async {
            let c = committed(&alerts_group, &analytics);
            if c == analytics_end {
                Ok(())
            } else {
                Err(format!("committed {c:?}, end {analytics_end:?}"))
            }
        },
    )
    .await;
    weir.stop().await.expect("clean shutdown");

    // Each input appears exactly once downstream, correctly scored.
    let by_id: BTreeMap<(String, u64), &Value> = inputs
        .iter()
        .map(|t| {
            (
                (
                    t["car_id"].as_str().unwrap().to_string(),
                    t["seq"].as_u64().unwrap(),
                ),
                t,
            )
        })
        .collect();
    let out = read_all(&analytics);
    assert_eq!(out.len(), MESSAGES, "analytics records");
    let mut seen = BTreeMap::new();
    let mut expected_alerts = BTreeMap::new();
    for m in &out {
        let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let id = (
            v["car_id"].as_str().unwrap().to_string(),
            v["seq"].as_u64().unwrap(),
        );
        assert_eq!(m.key(), Some(id.0.as_bytes()), "output keeps the input key");
        *seen.entry(id.clone()).or_insert(0) += 1;
        let input = by_id[&id];
        let (score, flags) = f1::expected_score(input);
        assert_eq!(v["degradation_score"].as_f64().unwrap(), score, "{v}");
        assert_eq!(v["fault_flags"], json!(flags), "{v}");
        for (k, val) in input.as_object().unwrap() {
            assert_eq!(&v[k], val, "field {k} kept");
        }
        let reasons = f1::expected_reasons(score, &flags);
        if !reasons.is_empty() {
            expected_alerts.insert(id, reasons);
        }
    }
    assert_eq!(seen.len(), MESSAGES);
    assert!(seen.values().all(|&n| n == 1), "a message was duplicated");

    // Alerts exactly where the rule says, naming every trigger.
    let alert_records = read_all(&alerts);
    assert!(!expected_alerts.is_empty() && expected_alerts.len() < MESSAGES);
    assert_eq!(alert_records.len(), expected_alerts.len(), "alert count");
    for m in &alert_records {
        let a: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let id = (
            a["car_id"].as_str().unwrap().to_string(),
            a["seq"].as_u64().unwrap(),
        );
        assert_eq!(a["reasons"], json!(expected_alerts[&id]), "{a}");
        assert_eq!(a["run_id"], "it-run");
    }

    // Bad messages are dead-lettered unchanged, with the reason.
    let dead = read_all(&dlq);
    assert_eq!(dead.len(), bad.len());
    for m in &dead {
        assert_eq!(header(m, "weir.error.kind"), Some("plugin_error"));
        assert_eq!(header(m, "weir.stage"), Some("degradation"));
        assert_eq!(header(m, "weir.source.topic"), Some(raw.as_str()));
        assert!(
            header(m, "weir.source.offset")
                .unwrap()
                .parse::<i64>()
                .is_ok()
        );
        assert_eq!(header(m, "weir.plugin.digest").map(str::len), Some(64));
        let value = std::str::from_utf8(m.payload().unwrap()).unwrap();
        let (_, original) = bad
            .iter()
            .find(|(_, v)| v == value)
            .expect("original value kept");
        let reason = header(m, "weir.error").unwrap();
        match original.as_str() {
            "not json at all" => {
                assert!(reason.contains("not a telemetry JSON object"), "{reason}")
            }
            v if v.contains("CAR-3") => assert_eq!(reason, "missing tire_temp_rr"),
            _ => assert_eq!(reason, "missing car_id"),
        }
    }
}
