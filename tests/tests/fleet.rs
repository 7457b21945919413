//! The fleet scenario of the repo's pipeline.toml against the real broker:
//! a generated replay with hard braking at known frames gives exactly those
//! anomalies, with their severities, also when sent twice; an alert goes
//! OPEN -> ACKNOWLEDGED -> RESOLVED through operator actions, and invalid
//! actions land in the dead-letter topic.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use serde_json::{Value, json};
use weir_integration_tests::*;

const FRAMES: i64 = 300;
const SETTLE: Duration = Duration::from_secs(180);
/// 2024-01-15T10:00:00Z
const START_MS: i64 = 1_705_312_800_000;

/// (vehicle, frame, speed drop over 100 ms, severity)
const BRAKING: &[(&str, i64, f64, &str)] = &[
    ("scene_7_track_1", 100, 0.35, "WARNING"),
    ("scene_7_track_2", 150, 0.70, "CRITICAL"),
    ("scene_7_track_3", 200, 0.45, "WARNING"),
    ("scene_7_ego", 250, 0.55, "CRITICAL"),
];
const CALM: &[&str] = &["scene_7_track_4", "scene_7_track_5"];

/// RFC 3339 for a time on the replay's day, restated here rather than
/// borrowed from the plugin SDK the test checks.
fn iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    assert_eq!(days, 19_737, "the replay stays on 2024-01-15");
    format!(
        "2024-01-15T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// 10 Hz frames at ~12 m/s with a little jitter (under 1 m/s² between
/// frames); a braking vehicle drops its speed once, at its frame.
fn replay() -> Vec<(String, Value)> {
    let vehicles: Vec<(&str, Option<(i64, f64)>)> = BRAKING
        .iter()
        .map(|(v, f, drop, _)| (*v, Some((*f, *drop))))
        .chain(CALM.iter().map(|v| (*v, None)))
        .collect();
    let mut out = Vec::new();
    for frame in 0..FRAMES {
        for (n, (vehicle, braking)) in vehicles.iter().enumerate() {
            let jitter = ((frame * 7 + n as i64 * 3) % 5) as f64 * 0.01;
            let drop = match braking {
                Some((at, drop)) if frame >= *at => *drop,
                _ => 0.0,
            };
            let speed = 12.0 + jitter - drop;
            let heading = 0.3 + n as f64 * 0.5;
            let t = START_MS + frame * 100;
            out.push((
                vehicle.to_string(),
                json!({
                    "event_id": format!("{vehicle}-f{frame}"),
                    "vehicle_id": vehicle,
                    "scene_id": "scene_7",
                    "event_time": iso(t),
                    "processing_time": iso(t + 2),
                    "frame_index": frame,
                    "telemetry": {
                        "position": {"x": 0.0, "y": 0.0, "z": 0.0},
                        "velocity": {"x": speed * heading.cos(), "y": speed * heading.sin(), "z": 0.0},
                        "yaw": heading, "yaw_rate": 0.0
                    },
                    "metadata": {"replay_session_id": "it", "replay_rate": 10.0}
                }),
            ));
        }
    }
    out
}

fn records(values: &[(String, Value)]) -> Vec<(String, Vec<u8>)> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string().into_bytes()))
        .collect()
}

fn json_of(m: &rdkafka::message::OwnedMessage) -> Value {
    serde_json::from_slice(m.payload().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn braking_anomalies_and_the_alert_lifecycle() {
    init_tracing();
    let ns = unique_prefix("fleet");
    let group = unique_prefix("group");
    let config = repo_pipeline(&ns, &group);
    let t = |name: &str| format!("{ns}.{name}");
    let (raw, anomalies, alerts, actions, commands, dlq) = (
        t("raw_telemetry"),
        t("anomalies"),
        t("operator_alerts"),
        t("operator_actions"),
        t("fleet.alert-commands"),
        t("fleet.dead-letter"),
    );
    let group_of = |stage: &str| format!("{group}.{stage}");
    let settle_all = || async {
        settled(&group_of("deceleration"), &[&raw], SETTLE).await;
        settled(&group_of("alert-router"), &[&anomalies, &actions], SETTLE).await;
        settled(&group_of("alert-lifecycle"), &[&commands], SETTLE).await;
    };

    let weir = Weir::start(config);
    topics_exist(&[(&raw, 6), (&dlq, 1)]).await;

    // (a) The replay, then the same replay again.
    let frames = records(&replay());
    for _ in 0..2 {
        produce(&raw, &frames).await;
        settle_all().await;
    }
    let found = read_all(&anomalies);
    let mut by_vehicle: BTreeMap<String, Value> = BTreeMap::new();
    for m in &found {
        let a = json_of(m);
        let vehicle = a["vehicle_id"].as_str().unwrap().to_string();
        assert_eq!(m.key(), Some(vehicle.as_bytes()), "keyed by vehicle_id");
        assert!(
            by_vehicle.insert(vehicle, a).is_none(),
            "two anomalies for a vehicle"
        );
    }
    assert_eq!(found.len(), BRAKING.len(), "{by_vehicle:#?}");
    for (vehicle, frame, drop, severity) in BRAKING {
        let a = &by_vehicle[*vehicle];
        assert_eq!(a["severity"], *severity, "{a}");
        assert_eq!(a["event_id"], format!("{vehicle}-f{frame}"), "{a}");
        assert_eq!(a["anomaly_type"], "sudden_deceleration");
        let accel = a["features"]["acceleration"].as_f64().unwrap();
        // The drop plus at most the jitter's change, over 0.1 s.
        assert!((accel + drop * 10.0).abs() <= 0.5, "{accel} for {a}");
        assert_eq!(
            a["evidence"]["frame_indices"].as_array().unwrap().last(),
            Some(&json!(frame))
        );
    }

    // (b) Each anomaly opened one alert.
    let opened = read_all(&alerts);
    assert_eq!(opened.len(), BRAKING.len());
    let alert = opened
        .iter()
        .map(json_of)
        .find(|a| a["vehicle_id"] == "scene_7_track_2")
        .unwrap();
    assert_eq!(alert["alert_status"], "OPEN");
    assert_eq!(alert["severity"], "CRITICAL");
    let alert_id = alert["alert_id"].as_str().unwrap().to_string();
    let action = |id: &str, kind: &str, vehicle: &str| {
        (
            id.to_string(),
            json!({
                "action_id": id, "alert_id": alert_id, "vehicle_id": vehicle,
                "operator_id": "operator_007", "action_type": kind,
                "metadata": {"comment": "integration test"}
            })
            .to_string()
            .into_bytes(),
        )
    };
    // Actions are keyed by action_id (as the fleet-operations design keys
    // them), so two actions on one alert sent together may reach it in
    // either order; an operator sends the next after seeing the last
    // transition, and so does the test.
    let mut statuses = vec!["OPEN".to_string()];
    for (id, kind, expect) in [
        ("act-1", "ACKNOWLEDGE", "ACKNOWLEDGED"),
        ("act-2", "RESOLVE", "RESOLVED"),
    ] {
        produce(&actions, &[action(id, kind, "scene_7_track_2")]).await;
        settle_all().await;
        let latest: Vec<Value> = read_all(&alerts)
            .iter()
            .map(json_of)
            .filter(|a| a["alert_id"] == alert_id.as_str())
            .collect();
        let last = latest.last().unwrap();
        assert_eq!(last["alert_status"], expect, "{latest:#?}");
        assert_eq!(last["previous_status"], statuses.last().unwrap().as_str());
        assert_eq!(last["action_id"], id);
        assert_eq!(last["assigned_operator_id"], "operator_007");
        statuses.push(expect.to_string());
    }
    // Invalid: acknowledging a resolved alert, and an action naming another
    // vehicle; plus an action for an alert that does not exist.
    let mut unknown = action("act-5", "DISMISS", "scene_7_track_2");
    unknown.1 = String::from_utf8(unknown.1)
        .unwrap()
        .replace(&alert_id, "no-such-alert")
        .into_bytes();
    produce(
        &actions,
        &[
            action("act-3", "ACKNOWLEDGE", "scene_7_track_2"),
            action("act-4", "DISMISS", "scene_7_track_9"),
            unknown,
        ],
    )
    .await;
    settle_all().await;
    let dead = read_all(&dlq);
    let reasons: BTreeMap<String, String> = dead
        .iter()
        .map(|m| {
            assert_eq!(header(m, "weir.stage"), Some("alert-lifecycle"));
            let v = json_of(m);
            (
                v["action_id"].as_str().unwrap().to_string(),
                header(m, "weir.error").unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert_eq!(
        reasons["act-3"],
        "invalid_transition: ACKNOWLEDGE is not allowed from RESOLVED"
    );
    assert!(
        reasons["act-4"].starts_with("vehicle_mismatch:"),
        "{reasons:?}"
    );
    assert!(
        reasons["act-5"].starts_with("unknown_alert:"),
        "{reasons:?}"
    );
    // The rejected actions changed nothing.
    let transitions = read_all(&alerts)
        .iter()
        .map(json_of)
        .filter(|a| a["alert_id"] == alert_id.as_str())
        .count();
    assert_eq!(transitions, 3);
    weir.stop().await.expect("clean shutdown");
}
