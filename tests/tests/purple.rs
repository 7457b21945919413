//! The racing-telemetry pipeline of the repo's pipeline.toml against the
//! real broker: the telemetry topic is created with the collectors'
//! settings (LZ4, an hour's retention), and the stage's producer
//! compresses the laps with LZ4 as it is told; generated sessions, some frames
//! sent twice and some a frame out of order, give exactly the laps the
//! generator drove, once each, keyed by session; what is not a telemetry
//! frame is dead-lettered with its reason.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use weir::generate::purple::{Purple, PurpleSettings};
use weir::generate::{Generator, Settings};
use weir_integration_tests::*;
use weir_purple_telemetry::{LapSummary, TelemetryFrame};

const SESSIONS: usize = 4;
/// Laps of about 6 s, and 20 s of frames: three whole laps per session,
/// the fourth unfinished.
const LAP_MS: u64 = 6_000;
const SECONDS: usize = 20;
const SETTLE: Duration = Duration::from_secs(180);
/// 2024-01-15T10:00:00Z
const START_MS: i64 = 1_705_312_800_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_laps_are_summarised_exactly_once() {
    init_tracing();
    let ns = unique_prefix("purple");
    let group = unique_prefix("group");
    let config = repo_pipeline(&ns, &group);
    let (telemetry, laps, dlq) = (
        format!("{ns}.telemetry"),
        format!("{ns}.laps"),
        format!("{ns}.purple.dead-letter"),
    );
    let _weir = Weir::start(config);
    topics_exist(&[(&telemetry, 10), (&laps, 3), (&dlq, 1)]).await;
    // Created as the collectors' cluster has it: LZ4, kept an hour.
    for (name, value) in [("compression.type", "lz4"), ("retention.ms", "3600000")] {
        assert_eq!(
            topic_setting(&telemetry, name).await.as_deref(),
            Some(value),
            "{telemetry} {name}"
        );
    }

    let mut generator = Purple::new(
        &Settings::new(11, "it"),
        &PurpleSettings {
            sessions: SESSIONS,
            lap_ms: LAP_MS,
        },
    );
    let mut events: Vec<_> = (0..SESSIONS * 60 * SECONDS)
        .map(|_| generator.next(START_MS))
        .collect();
    let expected: BTreeMap<String, Vec<LapSummary>> = generator.completed().clone();
    // A few more frames per session, so that the plugin, which holds the
    // newest frames back to put late ones in order, folds the frame that
    // ends the last whole lap. None of them ends a lap.
    events.extend((0..SESSIONS * 10).map(|_| generator.next(START_MS)));
    assert_eq!(generator.completed(), &expected);
    for (session, laps) in &expected {
        assert_eq!(laps.len(), 3, "{session}: {laps:#?}");
    }

    // Every 50th event is sent twice, and every 70th swapped with the
    // next frame of its session (the session after the next event).
    let mut records: Vec<Record> = events
        .iter()
        .map(|e| (e.key.clone(), e.value.clone(), e.headers.clone()))
        .collect();
    for i in (70..records.len() - SESSIONS).step_by(70) {
        records.swap(i, i + SESSIONS);
    }
    let mut sent = Vec::with_capacity(records.len() + records.len() / 50);
    for (i, r) in records.into_iter().enumerate() {
        if i % 50 == 0 {
            sent.push(r.clone());
        }
        sent.push(r);
    }
    produce_records(&telemetry, &sent).await;

    let got = eventually("every whole lap summarised", SETTLE, || async {
        let found = read_all(&laps);
        let total: usize = expected.values().map(Vec::len).sum();
        if found.len() >= total {
            Ok(found)
        } else {
            Err(format!("{} of {total} laps", found.len()))
        }
    })
    .await;
    settled(&format!("{group}.purple-laps"), &[&telemetry], SETTLE).await;
    let got = if read_all(&laps).len() == got.len() {
        got
    } else {
        read_all(&laps)
    };
    let mut by_session: BTreeMap<String, Vec<LapSummary>> = BTreeMap::new();
    for m in &got {
        let lap: LapSummary = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(m.key(), Some(lap.session_id.as_bytes()), "keyed by session");
        by_session
            .entry(lap.session_id.clone())
            .or_default()
            .push(lap);
    }
    for laps in by_session.values_mut() {
        laps.sort_by_key(|l| l.lap_number);
    }
    // Exactly the generator's laps: times, sectors, speeds, shares, gears.
    assert_eq!(by_session, expected);
    // The stage's producer sends them LZ4-compressed (`compression =
    // "lz4"`), as the broker keeps them on disk.
    let mut codecs = Vec::new();
    for p in 0..3 {
        codecs.extend(codecs_on_disk(&laps, p).await);
    }
    assert!(!codecs.is_empty());
    assert!(codecs.iter().all(|c| *c == 3), "codecs on disk: {codecs:?}");
    assert!(
        read_all(&dlq).is_empty(),
        "repeated and reordered frames are not failures"
    );

    // What is not a frame, and a frame off the track, fail with reasons.
    let off_track = TelemetryFrame {
        timestamp: START_MS,
        normalized_position: 1.5,
        lap_number: 1,
        ..Default::default()
    };
    let session = expected.keys().next().unwrap().clone();
    produce_records(
        &telemetry,
        &[
            (session.clone(), b"{\"speed\": 212}".to_vec(), Vec::new()),
            (
                session.clone(),
                weir_purple_telemetry::Message::encode_to_vec(&off_track),
                Vec::new(),
            ),
        ],
    )
    .await;
    let letters = eventually("two dead letters", SETTLE, || async {
        let found = read_all(&dlq);
        if found.len() >= 2 {
            Ok(found)
        } else {
            Err(format!("{} dead letters", found.len()))
        }
    })
    .await;
    let mut reasons: Vec<String> = letters
        .iter()
        .map(|m| {
            assert_eq!(header(m, "weir.error.kind"), Some("plugin_error"));
            header(m, "weir.error").unwrap().to_string()
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("normalizedPosition 1.5 is outside 0..1"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("not a protobuf TelemetryFrame"),
        "{reasons:?}"
    );
}
