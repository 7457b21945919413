//! The two-stage F1 pipeline end to end against a real broker: 10,000
//! telemetry messages in, each scored exactly once, alerts exactly where the
//! rule says, bad messages dead-lettered with reasons, and the committed
//! offsets at the end of every input.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::Headers;
use serde_json::{Value, json};
use weir_integration_tests::*;

const MESSAGES: usize = 10_000;
const CARS: usize = 4;

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

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
}

fn telemetry(n: usize) -> Vec<Value> {
    let mut rng = Rng(0x5eed_f1f1);
    let modes = ["deploy", "harvest", "balanced"];
    (0..n)
        .map(|i| {
            let car = i % CARS + 1;
            let seq = i / CARS;
            json!({
                "car_id": format!("CAR-{car}"),
                "lap": seq / 50 + 1,
                "seq": seq,
                "speed_kph": rng.range(90.0, 320.0),
                "gear": 1 + (rng.next() * 8.0) as u32 % 8,
                "throttle": rng.range(0.3, 1.0),
                "brake": rng.next(),
                "tire_temp_fl": rng.range(70.0, 105.0),
                "tire_temp_fr": rng.range(70.0, 105.0),
                "tire_temp_rl": rng.range(70.0, 105.0),
                "tire_temp_rr": rng.range(70.0, 105.0),
                "battery_soc": rng.range(0.35, 0.95),
                "ers_mode": modes[(rng.next() * 3.0) as usize % 3],
                "track_segment": "straight",
                "timestamp": "2026-11-23T10:00:00Z",
                "run_id": "it-run",
            })
        })
        .collect()
}

/// The rules, restated independently of the plugin.
fn expected(t: &Value) -> (f64, Vec<&'static str>) {
    let temps = [
        "tire_temp_fl",
        "tire_temp_fr",
        "tire_temp_rl",
        "tire_temp_rr",
    ];
    let mean: f64 = temps.iter().map(|k| t[k].as_f64().unwrap()).sum::<f64>() / 4.0;
    let score = (((mean - 80.0) / 35.0).clamp(0.0, 1.0) * 1000.0).round() / 1000.0;
    let mut flags = Vec::new();
    if score > 0.65 {
        flags.push("tire_wear");
    }
    if t["battery_soc"].as_f64().unwrap() < 0.4 && t["ers_mode"] == "deploy" {
        flags.push("low_battery_on_deploy");
    }
    (score, flags)
}

fn header<'a>(m: &'a rdkafka::message::OwnedMessage, name: &str) -> Option<&'a str> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
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

    // Compare against what a JSON parser reads back from the produced text,
    // not the generator's f64s: serde_json's default float parsing does not
    // round-trip every value exactly.
    let inputs: Vec<Value> = telemetry(MESSAGES)
        .iter()
        .map(|t| serde_json::from_str(&t.to_string()).unwrap())
        .collect();
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
    eventually("topics to exist", Duration::from_secs(60), || async {
        let ends = end_offsets(&raw);
        if ends.len() == 3 {
            Ok(())
        } else {
            Err(format!("{ends:?}"))
        }
    })
    .await;
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
        let (score, flags) = expected(input);
        assert_eq!(v["degradation_score"].as_f64().unwrap(), score, "{v}");
        assert_eq!(v["fault_flags"], json!(flags), "{v}");
        for (k, val) in input.as_object().unwrap() {
            assert_eq!(&v[k], val, "field {k} kept");
        }
        let mut reasons: Vec<&str> = Vec::new();
        if score > 0.7 {
            reasons.push("degradation_high");
        }
        reasons.extend(flags);
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
