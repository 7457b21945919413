//! The plugin end to end, natively, through the SDK's test harness.

use std::time::Instant;

use serde_json::{Value, json};
use weir_plugin::testing::{Harness, TestMessage, counter};

use crate::Cbad;
use crate::buffer::{Event, Meta, event_key};
use crate::synthetic::LogStream;

fn harness(config: Value) -> Harness<Cbad> {
    Harness::<Cbad>::new(&["default"], config).unwrap()
}

/// Feeds events `range` of `stream` in batches of 100, with offset = index,
/// and returns each anomaly with the index of the event that produced it.
fn feed(
    h: &mut Harness<Cbad>,
    stream: &mut LogStream,
    range: std::ops::Range<usize>,
    partition: i32,
) -> Vec<(usize, Value)> {
    let mut anomalies = Vec::new();
    let indices: Vec<usize> = range.collect();
    for batch in indices.chunks(100) {
        let messages: Vec<TestMessage> = batch
            .iter()
            .map(|&i| {
                TestMessage::new(stream.event(i))
                    .offset(i as i64)
                    .partition(partition)
            })
            .collect();
        for (&i, result) in batch.iter().zip(h.process(&messages)) {
            let outputs = result.unwrap();
            for o in outputs {
                assert_eq!(o.output, "default");
                let event = o.json();
                assert_eq!(
                    o.key.as_deref(),
                    event["stream_id"].as_str().map(str::as_bytes)
                );
                anomalies.push((i, event));
            }
        }
    }
    anomalies
}

fn analyses() -> u64 {
    ["skipped", "complete", "stopped_early"]
        .iter()
        .map(|o| counter("analyses_total", &[("permutation_test", o)]))
        .sum()
}

#[test]
fn bad_settings_stop_the_stage() {
    for (config, why) in [
        (json!({"bogus": 1}), "unknown field `bogus`"),
        (json!({"compressor": "brotli"}), "unknown variant `brotli`"),
        (
            json!({"baseline": 60, "window": 50}),
            "at least twice the window",
        ),
        (json!({"window": 0}), "at least 1"),
        (json!({"hop": 0}), "at least 1"),
        (json!({"max_events": 20000}), "at most 10000"),
        (json!({"max_events": 400}), "exceeds max_events"),
        (json!({"permutations": 100000}), "permutations"),
        (
            json!({"permutation_budget_bytes": 1000}),
            "permutation_budget_bytes",
        ),
        (json!({"ncd_threshold": 1.5}), "ncd_threshold"),
        (json!({"p_value_threshold": -0.1}), "p_value_threshold"),
        (json!({"novelty_threshold": -1.0}), "novelty_threshold"),
        (json!({"max_payload_bytes": 0}), "max_payload_bytes"),
        (json!({"max_event_bytes": 8}), "max_event_bytes"),
        (json!({"stream_id_header": ""}), "stream_id_header is empty"),
        (json!({"stream_id_field": "a..b"}), "dotted path"),
    ] {
        let err = Harness::<Cbad>::new(&["default"], config.clone())
            .err()
            .unwrap();
        assert!(err.contains(why), "{config}: {err}");
        assert!(err.contains("stage test"), "{err}");
    }
    let err = Harness::<Cbad>::new(&["alerts"], json!({})).err().unwrap();
    assert!(err.contains("no output \"default\""), "{err}");
    assert!(Harness::<Cbad>::new(&["default"], json!({})).is_ok());
    assert!(
        Harness::<Cbad>::new(
            &["default"],
            json!({"compressor": "deflate", "baseline": 100, "window": 50, "max_events": 150})
        )
        .is_ok()
    );
}

#[test]
fn oversize_and_null_payloads_are_dead_lettered_without_a_trace() {
    let mut h = harness(json!({"max_payload_bytes": 100}));
    let err = h
        .process_one(TestMessage::new(vec![b'x'; 101]))
        .unwrap_err();
    assert_eq!(err, "payload of 101 bytes exceeds max_payload_bytes (100)");
    let mut null = TestMessage::new("");
    null.value = None;
    assert!(h.process_one(null).unwrap_err().contains("null value"));
    assert_eq!(counter("events_processed_total", &[]), 0);
    assert_eq!(weir_plugin::state::get(b"meta/default"), None);
    assert!(
        h.process_one(TestMessage::new(vec![b'x'; 100]))
            .unwrap()
            .is_empty()
    );
    assert_eq!(counter("events_processed_total", &[]), 1);
}

#[test]
fn stream_ids_come_from_the_header_then_the_field_then_default() {
    let mut h = harness(json!({
        "stream_id_header": "X-Stream-Id",
        "stream_id_field": "metadata.stream_id",
    }));
    let doc = json!({"metadata": {"stream_id": "from-field"}, "data": "x"});
    let results = h.process(&[
        TestMessage::json(&doc)
            .header("X-Stream-Id", "from-header")
            .offset(1),
        TestMessage::json(&doc).offset(2),
        TestMessage::json(&json!({"data": "x"})).offset(3),
        TestMessage::new("plain text").offset(4),
        TestMessage::new("x")
            .header("X-Stream-Id", vec![b's'; 300])
            .offset(5),
    ]);
    assert!(results[..4].iter().all(Result::is_ok));
    assert!(results[4].as_ref().unwrap_err().contains("300 bytes"));
    for (stream, n) in [("from-header", 1), ("from-field", 1), ("default", 2)] {
        assert_eq!(
            counter("stream_events_total", &[("stream_id", stream)]),
            n,
            "{stream}"
        );
    }
    assert_eq!(counter("events_processed_total", &[]), 4);
}

#[test]
fn events_are_stored_preprocessed_one_key_each() {
    let mut h = harness(json!({}));
    let secret = json!({"password": "hunter2", "at": "2025-12-11T10:00:00Z", "n": 123456});
    h.process_one(TestMessage::json(&secret).offset(7)).unwrap();
    let stored =
        Event::decode(&weir_plugin::state::get(&event_key("default", 0)).unwrap()).unwrap();
    assert_eq!(stored.offset, 7);
    assert_eq!(
        String::from_utf8(stored.bytes).unwrap(),
        r#"{"at":"<TS>","n":<NUM>,"password":"<REDACTED>"}"#
    );
    // A redelivered offset is not buffered twice.
    assert!(
        h.process_one(TestMessage::json(&secret).offset(7))
            .unwrap()
            .is_empty()
    );
    assert_eq!(counter("duplicates_skipped_total", &[]), 1);
    assert_eq!(Meta::load("default", 400).next, 1);
}

#[test]
fn ready_at_baseline_plus_window_then_every_hop_and_the_buffer_slides() {
    let config = json!({"baseline": 20, "window": 10, "hop": 5, "permutations": 20});
    let mut h = harness(config.clone());
    let mut s = LogStream::new(1, None);
    feed(&mut h, &mut s, 0..29, 0);
    assert_eq!(analyses(), 0, "29 events: not ready");
    feed(&mut h, &mut s, 29..30, 0);
    assert_eq!(analyses(), 1, "ready at B+W = 30");
    feed(&mut h, &mut s, 30..34, 0);
    assert_eq!(analyses(), 1);
    feed(&mut h, &mut s, 34..35, 0);
    assert_eq!(analyses(), 2, "next one a hop later");

    // The buffer holds the next baseline and what came after it, no more.
    let meta = Meta::load("default", 20);
    assert_eq!(
        meta,
        Meta {
            next: 35,
            head: 10,
            window_start: 30,
            last_offset: 34
        }
    );
    assert!(weir_plugin::state::get(&event_key("default", 9)).is_none());
    assert!(weir_plugin::state::get(&event_key("default", 10)).is_some());

    // A new instance (after a restart or a trap) carries on from state.
    let mut again = harness(config.clone());
    feed(&mut again, &mut s, 35..40, 0);
    assert_eq!(analyses(), 3);
    // ...and the first one, whose cache is now stale, notices.
    feed(&mut h, &mut s, 40..45, 0);
    assert_eq!(analyses(), 4);
    assert_eq!(Meta::load("default", 20).head, 20);
    for n in 0..20 {
        assert!(weir_plugin::state::get(&event_key("default", n)).is_none());
    }
    assert!(counter("events_processed_total", &[]) == 45);
}

#[test]
fn instances_that_take_turns_decide_as_one_instance_does() {
    let config = json!({"baseline": 100, "window": 20, "hop": 5, "permutations": 50});
    // Partition 0: one instance. Partition 1: three instances taking turns,
    // each with its own cache, over the same state.
    let mut one = harness(config.clone());
    let a = feed(&mut one, &mut LogStream::new(5, Some(300)), 0..500, 0);
    let mut turns = [
        harness(config.clone()),
        harness(config.clone()),
        harness(config),
    ];
    let mut s = LogStream::new(5, Some(300));
    let mut b = Vec::new();
    for (k, start) in (0..500).step_by(37).enumerate() {
        let end = (start + 37).min(500);
        b.extend(feed(&mut turns[k % 3], &mut s, start..end, 1));
    }
    assert!(!a.is_empty(), "the change is detected");
    let strip = |v: &[(usize, Value)]| -> Vec<(usize, Value)> {
        v.iter()
            .map(|(i, e)| {
                let mut e = e.clone();
                let o = e.as_object_mut().unwrap();
                o.remove("partition");
                o.remove("anomaly_id");
                (*i, e)
            })
            .collect()
    };
    assert_eq!(strip(&a), strip(&b));
}

#[test]
fn anomaly_events_carry_every_metric() {
    let config = json!({"baseline": 100, "window": 20, "hop": 5, "permutations": 50});
    let mut h = harness(config);
    let found = feed(&mut h, &mut LogStream::new(9, Some(200)), 0..260, 0);
    let (i, e) = found.first().expect("an anomaly");
    for field in [
        "anomaly_id",
        "stream_id",
        "window_start_offset",
        "window_end_offset",
        "baseline_start_offset",
        "baseline_end_offset",
        "baseline_compression_ratio",
        "window_compression_ratio",
        "compression_ratio_change",
        "baseline_entropy",
        "window_entropy",
        "entropy_change",
        "ncd",
        "ncd_raw",
        "ncd_floor",
        "conditional_novelty",
        "p_value",
        "composite",
        "votes",
        "strong",
        "confidence",
        "explanation",
    ] {
        assert!(!e[field].is_null(), "{field} in {e}");
    }
    assert_eq!(e["stream_id"], "default");
    assert_eq!(e["window_end_offset"].as_u64(), Some(*i as u64));
    assert_eq!(
        e["window_start_offset"].as_u64().unwrap() + 19,
        e["window_end_offset"].as_u64().unwrap()
    );
    assert_eq!(
        e["baseline_end_offset"].as_u64().unwrap() + 1,
        e["window_start_offset"].as_u64().unwrap()
    );
    assert_eq!(e["window_events"], 20);
    assert_eq!(e["baseline_events"], 100);
    assert_eq!(e["compressor"], "zstd");
    assert_eq!(e["permutations"], 50);
    let ncd = e["ncd"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ncd));
    assert!(e["explanation"].as_str().unwrap().contains("NCD"));
    assert_eq!(counter("anomalies_detected_total", &[]), found.len() as u64);
    assert_eq!(
        counter("stream_anomalies_total", &[("stream_id", "default")]),
        found.len() as u64
    );
}

/// A stable stream gives no anomaly and a template change is found where it
/// happens, at the logic level, with the spec's defaults: B = 400,
/// W = 50, H = 10, N = 200, zstd.
#[test]
fn a_stable_stream_is_quiet_and_a_template_change_is_found_where_it_happens() {
    let started = Instant::now();
    let mut h = harness(json!({}));
    let stable = feed(&mut h, &mut LogStream::new(2024, None), 0..4000, 0);
    let stable_time = started.elapsed();
    assert!(
        stable.is_empty(),
        "stable stream flagged: {:?}",
        stable.first()
    );
    assert_eq!(analyses(), (4000 - 450) / 10 + 1);

    // Each flagged window costs a full permutation test (200 shuffles of
    // 450 events), seconds in a debug build: stop at the first one, which
    // is what (c) is about. `examples/cost.rs` runs the whole stream.
    let started = Instant::now();
    let mut h = harness(json!({}));
    let mut s = LogStream::new(2024, Some(2000));
    let mut changed = Vec::new();
    for start in (0..4000).step_by(10) {
        changed = feed(&mut h, &mut s, start..start + 10, 1);
        if !changed.is_empty() {
            break;
        }
    }
    let changed_time = started.elapsed();
    let (_, first) = changed.first().expect("the change is detected");
    let start = first["window_start_offset"].as_i64().unwrap();
    println!(
        "stable: 4000 events, no anomaly, in {stable_time:?}; changed: first anomaly in \
         window {start}..={}, after {changed_time:?}: {first}",
        first["window_end_offset"]
    );
    // No anomaly before the change: every flagged window holds changed
    // events. The first starts within 100 events of the change.
    for (_, e) in &changed {
        assert!(e["window_end_offset"].as_i64().unwrap() >= 2000, "{e}");
    }
    assert!((start - 2000).abs() <= 100, "{first}");
    assert!(first["p_value"].as_f64().unwrap() <= 0.05);
}

#[test]
fn damaged_state_costs_a_window_not_the_stream() {
    let config = json!({"baseline": 20, "window": 10, "hop": 5, "permutations": 20});
    let mut s = LogStream::new(3, None);
    let mut h = harness(config.clone());
    feed(&mut h, &mut s, 0..29, 0);
    // An event of the first window vanishes; a fresh instance (no cache)
    // cannot analyse that window, says so, and goes on.
    weir_plugin::state::delete(&event_key("default", 3));
    let mut again = harness(config.clone());
    feed(&mut again, &mut s, 29..30, 0);
    assert_eq!(counter("windows_skipped_total", &[]), 1);
    assert_eq!(analyses(), 0);
    feed(&mut again, &mut s, 30..35, 0);
    assert_eq!(analyses(), 1, "the next window is whole");

    // An unreadable `Meta` starts the stream afresh.
    weir_plugin::state::set(b"meta/default", b"{not json");
    feed(&mut again, &mut s, 35..36, 0);
    assert_eq!(Meta::load("default", 20).next, 1);
}
