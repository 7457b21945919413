//! The repo pipeline's `live` bridge against the real broker: WebSocket
//! clients of the admin listener get the telemetry topic's records as they
//! arrive, only the sessions they asked for, in order per session, as JSON
//! with the frame decoded or as the protobuf bytes on the topic; status and
//! `/metrics` count them.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use weir::generate::purple::{Purple, PurpleSettings};
use weir::generate::{Generator, Settings};
use weir_integration_tests::*;
use weir_purple_telemetry::decode;

const SESSIONS: usize = 3;
const FRAMES: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(60);

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next `n` data messages of `client` (text or binary), in order.
async fn take(client: &mut Client, n: usize) -> Vec<Message> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let message = tokio::time::timeout(TIMEOUT, client.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} messages after {TIMEOUT:?}", got.len()))
            .expect("the bridge closed the connection")
            .unwrap();
        if matches!(message, Message::Text(_) | Message::Binary(_)) {
            got.push(message);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_their_sessions_live_in_order() {
    init_tracing();
    let ns = unique_prefix("bridge");
    let group = unique_prefix("group");
    let mut config = repo_pipeline(&ns, &group);
    let admin = free_local_addr();
    config.admin.listen = admin;
    let telemetry = format!("{ns}.telemetry");
    let _weir = Weir::start(config);
    topics_exist(&[(&telemetry, 10)]).await;
    admin_up(admin, TIMEOUT).await;

    let mut generator = Purple::new(
        &Settings::new(3, "ws"),
        &PurpleSettings {
            sessions: SESSIONS,
            lap_ms: 6_000,
        },
    );
    let events: Vec<_> = (0..SESSIONS * FRAMES)
        .map(|_| generator.next(1_705_312_800_000))
        .collect();
    let watched = events[0].key.clone();

    let url = |query: &str| format!("ws://{admin}/ws/live?{query}");
    let (mut one, _) = tokio_tungstenite::connect_async(url(&format!("sessions={watched}")))
        .await
        .unwrap();
    let (mut all, _) = tokio_tungstenite::connect_async(url("format=protobuf"))
        .await
        .unwrap();
    eventually("both clients counted", TIMEOUT, || async {
        let (_, status) = http(admin, "GET", "/api/v1/status", None).await;
        match status["bridges"]["live"]["clients_connected"].as_u64() {
            Some(2) => Ok(()),
            other => Err(format!("{other:?} clients")),
        }
    })
    .await;

    let records: Vec<Record> = events
        .iter()
        .map(|e| (e.key.clone(), e.value.clone(), e.headers.clone()))
        .collect();
    produce_records(&telemetry, &records).await;

    // One session, as JSON, frame by frame in the order produced.
    let expected: Vec<_> = events
        .iter()
        .filter(|e| e.key == watched)
        .map(|e| decode(&e.value).unwrap())
        .collect();
    let got = take(&mut one, FRAMES).await;
    for (message, frame) in got.iter().zip(&expected) {
        let Message::Text(text) = message else {
            panic!("a JSON client got {message:?}");
        };
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["session"], watched.as_str(), "{v}");
        assert_eq!(v["frame"]["timestamp"], frame.timestamp, "{v}");
        assert_eq!(v["frame"]["lapTime"], frame.lap_time, "{v}");
        assert_eq!(
            // A float32 written in its shortest form reads back as itself.
            v["frame"]["speed"].as_f64().map(|s| s as f32),
            Some(frame.speed),
            "{v}"
        );
        assert_eq!(v["frame"]["gear"], frame.gear, "{v}");
    }

    // Every session, as the bytes on the topic, each session in order.
    let position: BTreeMap<Vec<u8>, (String, usize)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.value.clone(), (e.key.clone(), i)))
        .collect();
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for message in take(&mut all, SESSIONS * FRAMES).await {
        let Message::Binary(bytes) = message else {
            panic!("a protobuf client got {message:?}");
        };
        let (session, i) = position
            .get(bytes.as_ref())
            .unwrap_or_else(|| panic!("bytes that were not produced: {bytes:?}"));
        if let Some(before) = last.insert(session.clone(), *i) {
            assert!(before < *i, "{session}: record {i} after {before}");
        }
    }
    assert_eq!(last.len(), SESSIONS);

    let (_, status) = http(admin, "GET", "/api/v1/status", None).await;
    let live = &status["bridges"]["live"];
    assert_eq!(live["messages_received"], SESSIONS * FRAMES, "{live}");
    assert_eq!(
        live["messages_relayed"],
        FRAMES + SESSIONS * FRAMES,
        "{live}"
    );
    assert_eq!(live["messages_dropped"], 0, "{live}");
    assert_eq!(live["sessions"][&watched]["count"], FRAMES, "{live}");
    let (_, metrics) = http_text(admin, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("weir_bridge_clients{bridge=\"live\"} 2\n"),
        "{metrics}"
    );

    drop(one);
    eventually(
        "a client that leaves is no longer counted",
        TIMEOUT,
        || async {
            let (_, status) = http(admin, "GET", "/api/v1/status", None).await;
            match status["bridges"]["live"]["clients_connected"].as_u64() {
                Some(1) => Ok(()),
                other => Err(format!("{other:?} clients")),
            }
        },
    )
    .await;
}
