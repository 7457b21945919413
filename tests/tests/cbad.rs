//! The DriftLock scenario of the repo's pipeline.toml against the real
//! broker: a stable log stream gives no CBAD anomaly, and the
//! same kind of stream whose event template changes after event 2,000 gives
//! an anomaly whose window starts within 100 events of the change.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use serde_json::Value;
use weir_cbad::synthetic::LogStream;
use weir_integration_tests::*;

const EVENTS: usize = 4_000;
const CHANGE_AT: usize = 2_000;

/// Produces one stream, keyed and headed by its id; returns the offset its
/// first event got, so window offsets map back to event indices.
async fn send_stream(topic: &str, id: &str, events: Vec<String>) -> (i32, i64) {
    let before = end_offsets(topic);
    let records: Vec<(String, Vec<u8>)> = events
        .into_iter()
        .map(|e| (id.to_string(), e.into_bytes()))
        .collect();
    produce_with_header(topic, Some(("X-Stream-Id", id)), &records).await;
    let after = end_offsets(topic);
    let (partition, base) = before
        .iter()
        .find(|(p, end)| after[*p] - **end == records.len() as i64)
        .map(|(p, end)| (*p, *end))
        .expect("one partition took the whole stream");
    (partition, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_is_detected_near_where_it_happens() {
    init_tracing();
    let ns = unique_prefix("cbad");
    let group = unique_prefix("group");
    let weir = Weir::start(repo_pipeline(&ns, &group));
    let events = format!("{ns}.driftlock-events");
    let anomalies = format!("{ns}.driftlock-anomalies");
    let dlq = format!("{ns}.driftlock.dead-letter");
    topics_exist(&[(&events, 3), (&dlq, 1)]).await;

    let mut stable = LogStream::new(7, None);
    let mut drift = LogStream::new(11, Some(CHANGE_AT));
    let stable_events = (0..EVENTS).map(|i| stable.event(i)).collect();
    let drift_events = (0..EVENTS).map(|i| drift.event(i)).collect();
    let (stable_p, stable_base) = send_stream(&events, "stable", stable_events).await;
    let (drift_p, drift_base) = send_stream(&events, "drift", drift_events).await;
    settled(
        &format!("{group}.cbad"),
        &[&events],
        Duration::from_secs(600),
    )
    .await;
    weir.stop().await.expect("clean shutdown");

    let mut found: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in read_all(&anomalies) {
        let a: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let id = a["stream_id"].as_str().unwrap().to_string();
        assert_eq!(m.key(), Some(id.as_bytes()), "keyed by stream id");
        found.entry(id).or_default().push(a);
    }
    assert!(
        !found.contains_key("stable"),
        "stable stream (partition {stable_p} from {stable_base}) flagged: {:#?}",
        found.get("stable")
    );
    let flagged = found.get("drift").expect("the change is detected");
    let index = |a: &Value, field: &str| {
        assert_eq!(a["partition"], drift_p);
        a[field].as_i64().unwrap() - drift_base
    };
    let first = flagged
        .iter()
        .min_by_key(|a| index(a, "window_start_offset"))
        .unwrap();
    let start = index(first, "window_start_offset");
    assert!(
        (start - CHANGE_AT as i64).abs() <= 100,
        "first anomalous window starts at event {start}: {first:#}"
    );
    for a in flagged {
        assert!(
            index(a, "window_end_offset") >= CHANGE_AT as i64,
            "a window entirely before the change was flagged: {a:#}"
        );
        assert!(a["explanation"].as_str().is_some_and(|e| !e.is_empty()));
        for metric in ["ncd", "p_value", "composite", "confidence"] {
            assert!(a[metric].is_number(), "{metric} in {a:#}");
        }
    }
    assert!(read_all(&dlq).is_empty(), "nothing dead-lettered");
}
