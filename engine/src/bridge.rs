//! Bridges: a topic relayed live to WebSocket clients. A bridge reads its
//! topic with a consumer of its own, from the end, assigned every partition
//! and committing nothing, so that nothing it does can slow the pipeline's
//! stages or move their offsets. Each record goes to the [`Hub`], which
//! hands it to every client that wants its session.
//!
//! A client has a queue of its own, of `queue` records. A client that does
//! not keep up loses the oldest records and is told how many. One that
//! goes on losing records for `behind_ms`, its queue never more than half
//! free meanwhile, is disconnected. Records of a session
//! reach a client in the order of their partition, which is the order they
//! were produced in.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::Consumer;
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use weir_purple_telemetry::FrameJson;

use crate::config::{BridgeConfig, BridgeSchema};
use crate::kafka::{KafkaClients, KafkaError};

/// The most sessions whose counts a bridge keeps; records of others are
/// relayed but not counted by session.
const MAX_TRACKED_SESSIONS: usize = 10_000;

/// One record of the bridged topic.
#[derive(Debug)]
pub struct Record {
    pub session: String,
    pub partition: i32,
    pub offset: i64,
    pub value: Vec<u8>,
}

/// What a client gets next.
#[derive(Debug)]
pub enum Next {
    /// A record, and how many were dropped for this client since the last
    /// one it got.
    Record { record: Arc<Record>, dropped: u64 },
    /// The client stayed behind for too long and is cut off.
    Behind,
}

/// The bridge is full.
#[derive(Debug, PartialEq, Eq)]
pub struct Full {
    pub max_clients: usize,
}

struct Queue {
    records: VecDeque<Arc<Record>>,
    dropped: u64,
    full_since: Option<Instant>,
    behind: bool,
}

struct Client {
    /// `None`: every session.
    sessions: Option<HashSet<String>>,
    queue: Mutex<Queue>,
    ready: Notify,
}

impl Client {
    fn wants(&self, session: &str) -> bool {
        self.sessions.as_ref().is_none_or(|s| s.contains(session))
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionStats {
    pub count: u64,
    /// ms since the Unix epoch.
    pub last_seen: i64,
}

/// What a bridge reports, as the collectors' bridge did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BridgeStats {
    pub topic: String,
    pub clients_connected: usize,
    /// Records read from the topic.
    pub messages_received: u64,
    /// Records sent to clients, and their bytes.
    pub messages_relayed: u64,
    pub bytes_relayed: u64,
    /// Records slow clients lost.
    pub messages_dropped: u64,
    /// Clients cut off for staying behind.
    pub clients_behind: u64,
    pub sessions: BTreeMap<String, SessionStats>,
}

/// The clients of one bridge, and what the bridge has done.
pub struct Hub {
    config: BridgeConfig,
    clients: Mutex<Vec<Weak<Client>>>,
    connected: AtomicUsize,
    received: AtomicU64,
    relayed: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    behind: AtomicU64,
    sessions: Mutex<BTreeMap<String, SessionStats>>,
}

impl Hub {
    pub fn new(config: BridgeConfig) -> Arc<Hub> {
        Arc::new(Hub {
            config,
            clients: Mutex::new(Vec::new()),
            connected: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            relayed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            behind: AtomicU64::new(0),
            sessions: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// A new client, of `sessions` (or all); refused when the bridge has
    /// its `max_clients`.
    pub fn subscribe(
        self: &Arc<Self>,
        sessions: Option<HashSet<String>>,
    ) -> Result<Subscription, Full> {
        let max = self.config.max_clients;
        let counted = self
            .connected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if counted.is_err() {
            return Err(Full { max_clients: max });
        }
        let client = Arc::new(Client {
            sessions,
            queue: Mutex::new(Queue {
                records: VecDeque::with_capacity(self.config.queue.min(1024)),
                dropped: 0,
                full_since: None,
                behind: false,
            }),
            ready: Notify::new(),
        });
        let mut clients = lock(&self.clients);
        clients.retain(|c| c.strong_count() > 0);
        clients.push(Arc::downgrade(&client));
        Ok(Subscription {
            hub: self.clone(),
            client,
        })
    }

    /// Hands `record` to every client that wants its session, at `now`.
    pub fn publish(&self, record: Record, now: Instant) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.count_session(&record.session);
        let record = Arc::new(record);
        let clients: Vec<Arc<Client>> = lock(&self.clients)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|c| c.wants(&record.session))
            .collect();
        for client in clients {
            let mut q = lock(&client.queue);
            if q.behind {
                continue;
            }
            if q.records.len() >= self.config.queue {
                q.records.pop_front();
                q.dropped += 1;
                self.dropped.fetch_add(1, Ordering::Relaxed);
                let since = *q.full_since.get_or_insert(now);
                if now.duration_since(since) >= self.config.behind {
                    q.behind = true;
                    q.records.clear();
                    self.behind.fetch_add(1, Ordering::Relaxed);
                    drop(q);
                    client.ready.notify_one();
                    continue;
                }
            }
            q.records.push_back(record.clone());
            drop(q);
            client.ready.notify_one();
        }
    }

    fn count_session(&self, session: &str) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut sessions = lock(&self.sessions);
        if let Some(s) = sessions.get_mut(session) {
            s.count += 1;
            s.last_seen = now_ms;
        } else if sessions.len() < MAX_TRACKED_SESSIONS {
            sessions.insert(
                session.to_string(),
                SessionStats {
                    count: 1,
                    last_seen: now_ms,
                },
            );
        }
    }

    /// `record` for a JSON client: its session and coordinates, and its
    /// value decoded with the bridge's schema (`error` instead when it does
    /// not decode).
    pub fn json(&self, record: &Record) -> serde_json::Value {
        let mut out = serde_json::json!({
            "session": record.session,
            "partition": record.partition,
            "offset": record.offset,
        });
        match self.config.schema {
            BridgeSchema::TelemetryFrame => match weir_purple_telemetry::decode(&record.value) {
                Ok(frame) => {
                    out["frame"] =
                        serde_json::to_value(FrameJson::from(&frame)).unwrap_or_default();
                }
                Err(e) => out["error"] = e.into(),
            },
            BridgeSchema::Json => {
                out["value"] = serde_json::from_slice(&record.value)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&record.value).into_owned().into());
            }
        }
        out
    }

    /// A record of `bytes` bytes was sent to a client.
    pub fn relayed(&self, bytes: usize) {
        self.relayed.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn stats(&self) -> BridgeStats {
        BridgeStats {
            topic: self.config.topic.clone(),
            clients_connected: self.connected.load(Ordering::Relaxed),
            messages_received: self.received.load(Ordering::Relaxed),
            messages_relayed: self.relayed.load(Ordering::Relaxed),
            bytes_relayed: self.bytes.load(Ordering::Relaxed),
            messages_dropped: self.dropped.load(Ordering::Relaxed),
            clients_behind: self.behind.load(Ordering::Relaxed),
            sessions: lock(&self.sessions).clone(),
        }
    }
}

/// A connected client; dropping it disconnects it.
pub struct Subscription {
    hub: Arc<Hub>,
    client: Arc<Client>,
}

impl Subscription {
    /// The next record for this client, waiting for one.
    pub async fn next(&self) -> Next {
        loop {
            {
                let mut q = lock(&self.client.queue);
                if q.behind {
                    return Next::Behind;
                }
                if let Some(record) = q.records.pop_front() {
                    let dropped = std::mem::take(&mut q.dropped);
                    // Caught up only once half its queue is free: a client
                    // that reads, but slower than records come, stays
                    // behind.
                    if q.records.len() <= self.hub.config.queue / 2 {
                        q.full_since = None;
                    }
                    return Next::Record { record, dropped };
                }
            }
            // A notification sent meanwhile is kept as a permit.
            self.client.ready.notified().await;
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.connected.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The session a record belongs to: the header the bridge names, else the
/// record key (empty when there is neither).
fn session_of(m: &impl Message, header: Option<&str>) -> String {
    let from_header = header.and_then(|name| {
        m.headers()?
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
    });
    let bytes = from_header.or_else(|| m.key()).unwrap_or_default();
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts reading `hub`'s topic from its end on a thread of its own, until
/// `shutdown`.
pub fn start(
    hub: Arc<Hub>,
    clients: &KafkaClients,
    shutdown: CancellationToken,
) -> Result<(), KafkaError> {
    let config = hub.config().clone();
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| KafkaError::Bridge {
        bridge: config.name.clone(),
        topic: config.topic.clone(),
        source,
    };
    let consumer = clients.bridge_consumer(&config.name)?;
    let metadata = consumer
        .fetch_metadata(Some(&config.topic), Duration::from_secs(10))
        .map_err(|e| failed(e.into()))?;
    let mut assignment = TopicPartitionList::new();
    for topic in metadata.topics() {
        for p in topic.partitions() {
            assignment
                .add_partition_offset(&config.topic, p.id(), Offset::End)
                .map_err(|e| failed(e.into()))?;
        }
    }
    consumer.assign(&assignment).map_err(|e| failed(e.into()))?;
    let partitions = assignment.count();
    let thread = std::thread::Builder::new().name(format!("weir-bridge-{}", config.name));
    let (name, topic, key) = (
        config.name.clone(),
        config.topic.clone(),
        config.key.clone(),
    );
    thread
        .spawn(move || {
            tracing::info!(bridge = name, topic, partitions, "bridge reading");
            while !shutdown.is_cancelled() {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => hub.publish(
                        Record {
                            session: session_of(&m, key.as_deref()),
                            partition: m.partition(),
                            offset: m.offset(),
                            value: m.payload().unwrap_or_default().to_vec(),
                        },
                        Instant::now(),
                    ),
                    Some(Err(e)) => {
                        tracing::warn!(bridge = name, error = %e, "bridge read failed");
                    }
                    None => {}
                }
            }
        })
        .map_err(|e| failed(e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(queue: usize, max_clients: usize, behind_ms: u64) -> Arc<Hub> {
        Hub::new(BridgeConfig {
            name: "live".into(),
            topic: "telemetry".into(),
            key: None,
            schema: BridgeSchema::TelemetryFrame,
            queue,
            max_clients,
            behind: Duration::from_millis(behind_ms),
        })
    }

    fn record(session: &str, offset: i64) -> Record {
        Record {
            session: session.into(),
            partition: 0,
            offset,
            value: offset.to_be_bytes().to_vec(),
        }
    }

    /// What `sub` has now, without waiting.
    fn drain(sub: &Subscription) -> Vec<(i64, u64)> {
        let mut got = Vec::new();
        while let Some(next) = futures_lite_now(sub.next()) {
            match next {
                Next::Record { record, dropped } => got.push((record.offset, dropped)),
                Next::Behind => got.push((-1, 0)),
            }
            if got.last() == Some(&(-1, 0)) {
                break;
            }
        }
        got
    }

    /// Polls `f` once: its output if it is ready.
    fn futures_lite_now<F: std::future::Future>(f: F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn each_client_gets_its_sessions_in_order() {
        let hub = hub(100, 10, 5_000);
        let a = hub
            .subscribe(Some(HashSet::from(["a".to_string()])))
            .unwrap();
        let all = hub.subscribe(None).unwrap();
        let now = Instant::now();
        for (i, s) in ["a", "b", "a", "c", "a"].iter().enumerate() {
            hub.publish(record(s, i as i64), now);
        }
        assert_eq!(drain(&a), [(0, 0), (2, 0), (4, 0)]);
        assert_eq!(drain(&all), [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0)]);
        let stats = hub.stats();
        assert_eq!(stats.messages_received, 5);
        assert_eq!(stats.clients_connected, 2);
        assert_eq!(stats.sessions["a"].count, 3);
        assert_eq!(stats.sessions["c"].count, 1);
    }

    #[test]
    fn a_slow_client_gets_the_newest_and_the_count_of_the_rest() {
        let hub = hub(4, 10, 60_000);
        let slow = hub.subscribe(None).unwrap();
        let now = Instant::now();
        for i in 0..10 {
            hub.publish(record("a", i), now);
        }
        // 0..=5 dropped; the first record it gets says so.
        assert_eq!(drain(&slow), [(6, 6), (7, 0), (8, 0), (9, 0)]);
        assert_eq!(hub.stats().messages_dropped, 6);
        // Caught up: nothing more is dropped.
        hub.publish(record("a", 10), now);
        assert_eq!(drain(&slow), [(10, 0)]);
    }

    #[test]
    fn a_client_behind_for_too_long_is_cut_off() {
        let hub = hub(2, 10, 1_000);
        let stuck = hub.subscribe(None).unwrap();
        let keeping_up = hub.subscribe(None).unwrap();
        let t0 = Instant::now();
        for i in 0..3 {
            hub.publish(record("a", i), t0);
        }
        assert_eq!(drain(&keeping_up).len(), 2);
        // Full since t0; still within behind_ms.
        hub.publish(record("a", 3), t0 + Duration::from_millis(999));
        assert_eq!(drain(&keeping_up), [(3, 0)]);
        hub.publish(record("a", 4), t0 + Duration::from_millis(1_000));
        assert!(matches!(futures_lite_now(stuck.next()), Some(Next::Behind)));
        assert_eq!(drain(&keeping_up), [(4, 0)]);
        assert_eq!(hub.stats().clients_behind, 1);
    }

    #[test]
    fn a_client_that_reads_slower_than_records_come_is_cut_off_too() {
        let hub = hub(4, 10, 1_000);
        let slow = hub.subscribe(None).unwrap();
        let t0 = Instant::now();
        let mut offset = 0;
        let mut publish = |at: u64| {
            for _ in 0..2 {
                hub.publish(record("a", offset), t0 + Duration::from_millis(at));
                offset += 1;
            }
        };
        // Two records come for each one it reads: full from the third step.
        for step in 0..=10 {
            publish(step * 100);
            if let Some(Next::Behind) = futures_lite_now(slow.next()) {
                panic!("cut off at step {step}, before behind_ms");
            }
        }
        publish(1_300);
        assert!(matches!(futures_lite_now(slow.next()), Some(Next::Behind)));
    }

    #[test]
    fn clients_are_limited_and_leaving_frees_a_place() {
        let hub = hub(4, 2, 5_000);
        let first = hub.subscribe(None).unwrap();
        let _second = hub.subscribe(None).unwrap();
        assert_eq!(hub.subscribe(None).err(), Some(Full { max_clients: 2 }));
        drop(first);
        let _third = hub.subscribe(None).unwrap();
        assert_eq!(hub.stats().clients_connected, 2);
    }

    #[test]
    fn json_clients_get_the_frame_decoded_or_the_reason_it_is_not() {
        use weir_purple_telemetry::{Message as _, TelemetryFrame};
        let hub = hub(4, 2, 5_000);
        let frame = TelemetryFrame {
            timestamp: 1_000,
            speed: 212.5,
            lap_number: 2,
            ..Default::default()
        };
        let good = Record {
            session: "s".into(),
            partition: 3,
            offset: 9,
            value: frame.encode_to_vec(),
        };
        let json = hub.json(&good);
        assert_eq!(json["session"], "s");
        assert_eq!(
            (json["partition"].as_i64(), json["offset"].as_i64()),
            (Some(3), Some(9))
        );
        assert_eq!(json["frame"]["speed"], 212.5);
        assert_eq!(json["frame"]["lapNumber"], 2);
        let bad = Record {
            value: b"{".to_vec(),
            ..good
        };
        assert!(
            hub.json(&bad)["error"]
                .as_str()
                .unwrap()
                .contains("TelemetryFrame")
        );
    }

    #[test]
    fn a_waiting_client_wakes_for_a_record() {
        let hub = hub(4, 2, 5_000);
        let sub = hub.subscribe(None).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let publisher = {
                let hub = hub.clone();
                tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    hub.publish(record("a", 7), Instant::now());
                })
            };
            let next = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
            publisher.await.unwrap();
            next
        });
        assert!(matches!(got, Ok(Next::Record { record, dropped: 0 }) if record.offset == 7));
    }
}
