//! Chaos: the campus inventory pipeline (`order-intake`, a passthrough, then
//! `inventory`, plugins/campus-inventory) on three `weir run` processes of
//! one group, SIGKILLed and restarted every few seconds (seeded) while
//! orders arrive, some kills landing while a fresh process is being
//! assigned partitions and restores its state; and a process frozen with
//! SIGSTOP past its session timeout, then thawed (a zombie).
//!
//! What every answer must be is known without weir: a fold of the plugin's
//! own pure decision (`weir_campus_inventory::answer`, the same code the
//! plugin runs on keyed state) over the inventory stage's input topic in
//! offset order (one partition). Each test prints what it counted before it
//! asserts.
//!
//! Environment (all optional): `WEIR_CHAOS_ORDERS` (distinct orders of the
//! SIGKILL tests, 100,000), `WEIR_CHAOS_PRODUCE_SECS` (how long they take to
//! produce, 40), `WEIR_CHAOS_SEED`, `WEIR_CHAOS_ZOMBIE_ORDERS` (20,000).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use weir_campus_events::OrderPlaced;
use weir_campus_inventory::{AnsweredOrders, Outcome, StockLevels, answer, answered_at};
use weir_integration_tests::*;

/// How long a process may take to start (it compiles its plugins).
const READY: Duration = Duration::from_secs(180);
/// How long the pipeline may take to work off what is left once the chaos
/// stops: a debug build, two cores shared with other builds, and dead
/// members holding partitions until their session times out.
const SETTLE: Duration = Duration::from_secs(900);
/// At least this many SIGKILLs in each SIGKILL test.
const MIN_KILLS: usize = 10;
/// The share of orders sent a second time, later in the stream.
const RESEND_PERCENT: usize = 5;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn orders_count() -> usize {
    env_or("WEIR_CHAOS_ORDERS", 100_000)
}

fn seed() -> u64 {
    env_or("WEIR_CHAOS_SEED", 0x5_eedc_4a05)
}

/// splitmix64: a seeded generator, so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from + 1))
    }
}

// --- The pipeline and its input ------------------------------------------

struct Topics {
    orders: String,
    requests: String,
    events: String,
    dead_letter: String,
}

impl Topics {
    fn new(prefix: &str) -> Topics {
        let t = |name: &str| format!("{prefix}.{name}");
        Topics {
            orders: t("orders"),
            requests: t("inventory.requests"),
            events: t("inventory-events"),
            dead_letter: t("dead-letter"),
        }
    }
}

/// Orders `0..n` in order, and `n * RESEND_PERCENT / 100` distinct ones of
/// them sent again somewhere later in the stream (up to a fifth of the
/// stream later), chosen by `rng`.
fn order_stream(n: usize, rng: &mut Rng) -> Vec<usize> {
    let resends = n * RESEND_PERCENT / 100;
    let mut chosen = BTreeSet::new();
    while chosen.len() < resends {
        chosen.insert(rng.below(n));
    }
    let mut keyed: Vec<(usize, u8, usize)> = (0..n).map(|i| (i, 0, i)).collect();
    for j in chosen {
        let at = (j + 1 + rng.below(n / 5)).min(n);
        keyed.push((at, 1, j));
    }
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// Produces `stream`'s orders to `topic`, paced evenly over `over`, and
/// counts them in `produced` as they are acknowledged.
async fn produce_paced(
    topic: String,
    stream: Vec<usize>,
    over: Duration,
    produced: Arc<AtomicUsize>,
) {
    let producer = producer();
    let tick = Duration::from_millis(100);
    let ticks = (over.as_millis() / tick.as_millis()).max(1) as usize;
    let per_tick = stream.len().div_ceil(ticks);
    let started = Instant::now();
    for (n, chunk) in stream.chunks(per_tick).enumerate() {
        let due = started + tick * n as u32;
        tokio::time::sleep_until(due.into()).await;
        let records: Vec<(String, Vec<u8>)> = chunk.iter().map(|i| campus::order(*i)).collect();
        send_all(&producer, &topic, &records).await;
        produced.fetch_add(chunk.len(), Ordering::Relaxed);
    }
}

async fn send_all(producer: &FutureProducer, topic: &str, records: &[(String, Vec<u8>)]) {
    let mut deliveries = Vec::with_capacity(records.len());
    for (key, value) in records {
        loop {
            match producer.send_result(FutureRecord::to(topic).key(key).payload(value)) {
                Ok(d) => {
                    deliveries.push(d);
                    break;
                }
                Err((e, _)) => {
                    assert!(
                        matches!(
                            e,
                            KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "{e}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
}

// --- Reading topics as a read_committed consumer sees them ----------------

/// How a consumer reads: only committed transactions, or everything.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    ReadCommitted,
    ReadUncommitted,
}

/// Where a consumer reading a partition to its end stood at the end, and
/// the partition's high watermark. Under read_committed the end is the
/// last stable offset: `position < high` means a transaction is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct End {
    position: i64,
    high: i64,
}

/// Every record of `topic` from `from` (per partition; the beginning when
/// absent) to the end `isolation` lets a consumer see, and where it stood
/// there, partition by partition.
fn read_to_end(
    topic: &str,
    isolation: Isolation,
    from: &BTreeMap<i32, i64>,
) -> Result<(Vec<OwnedMessage>, BTreeMap<i32, End>), String> {
    let level = match isolation {
        Isolation::ReadCommitted => "read_committed",
        Isolation::ReadUncommitted => "read_uncommitted",
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique_prefix("chaos-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", level)
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("{topic} has no partitions (yet)"));
    }
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let offset = from
            .get(p)
            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
        tpl.add_partition_offset(topic, *p, offset)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut at_end: BTreeSet<i32> = BTreeSet::new();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while at_end.len() < partitions.len() {
        if Instant::now() > deadline {
            return Err(format!(
                "timed out reading {topic} ({level}): {} records, at the end of {at_end:?}",
                out.len()
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                last.insert(m.partition(), m.offset());
                out.push(m.detach());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
            None => {}
        }
    }
    let positions = consumer.position().map_err(|e| e.to_string())?;
    // librdkafka asks for the end with the client's isolation level: a
    // read_committed client is told the last stable offset. The high
    // watermark takes a read_uncommitted one.
    let uncommitted: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique_prefix("chaos-reader"))
        .set("isolation.level", "read_uncommitted")
        .create()
        .map_err(|e| e.to_string())?;
    let mut ends = BTreeMap::new();
    for p in partitions {
        let (_, high) = uncommitted
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| format!("end of {topic}/{p}: {e}"))?;
        // Nothing consumed from a partition: where it started (librdkafka
        // may not report a position it has not consumed from).
        let started = from.get(&p).copied().unwrap_or(0);
        let position = match positions.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => last.get(&p).map_or(started, |o| o + 1),
        };
        ends.insert(p, End { position, high });
    }
    Ok((out, ends))
}

fn read_committed(topic: &str) -> (Vec<OwnedMessage>, BTreeMap<i32, End>) {
    read_to_end(topic, Isolation::ReadCommitted, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether `group` has consumed `topic` to its end: for every partition,
/// nothing a read_committed consumer could read lies at or after the
/// committed offset (only transaction markers may: a transactional
/// consumer commits the offset after its last record, which can be a
/// commit marker's), and no transaction is open there.
fn consumed_to_end(group: &str, topic: &str) -> Result<BTreeMap<i32, (i64, End)>, String> {
    let committed = committed(group, topic);
    let ends = try_end_offsets(topic)?;
    // Far from the end: no need to read what is left.
    for (p, high) in &ends {
        let c = committed.get(p).copied().unwrap_or(0);
        if high - c > 1_000 {
            return Err(format!("{topic}/{p}: committed {c}, end {high}"));
        }
    }
    let (left, stable) = read_to_end(topic, Isolation::ReadCommitted, &committed)?;
    if !left.is_empty() {
        return Err(format!(
            "{} records of {topic} after the committed offsets {committed:?}",
            left.len()
        ));
    }
    let mut out = BTreeMap::new();
    for (p, end) in stable {
        if end.position != end.high {
            return Err(format!(
                "{topic}/{p}: a transaction is open (stable end {}, high watermark {})",
                end.position, end.high
            ));
        }
        out.insert(p, (committed.get(&p).copied().unwrap_or(0), end));
    }
    Ok(out)
}

/// Waits until [`consumed_to_end`]; panics after `timeout` with what it
/// last saw.
async fn settle(group: &str, topic: &str, timeout: Duration) -> BTreeMap<i32, (i64, End)> {
    let deadline = Instant::now() + timeout;
    loop {
        match consumed_to_end(group, topic) {
            Ok(v) => return v,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "timed out after {timeout:?} waiting for {group} to consume {topic}: {last}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

// --- The fold: what every answer must be ----------------------------------

struct Shelf(BTreeMap<String, i64>);

impl StockLevels for Shelf {
    fn available(&mut self, sku: &str) -> Option<i64> {
        self.0.get(sku).copied()
    }
    fn set(&mut self, sku: &str, remaining: i64) {
        self.0.insert(sku.to_string(), remaining);
    }
}

struct Seen(HashSet<String>);

impl AnsweredOrders for Seen {
    fn answered(&mut self, order_id: &str) -> bool {
        self.0.contains(order_id)
    }
    fn record(&mut self, order_id: &str, _: &Outcome) {
        self.0.insert(order_id.to_string());
    }
}

struct Fold {
    /// The answer each order id must get, as JSON.
    expected: BTreeMap<String, Value>,
    reserved: usize,
    failed: usize,
    /// Records of the input the fold skipped as already answered.
    skipped: usize,
    /// The stock the fold ends with; it never went below 0 if this is >= 0
    /// (it only goes down).
    stock_left: i64,
}

/// The plugin's decision folded over the inventory stage's input records
/// in offset order (one partition), from the configured stock.
fn fold(requests: &[OwnedMessage], stock: usize) -> Fold {
    let mut shelf = Shelf([(campus::SKU.to_string(), stock as i64)].into());
    let mut seen = Seen(HashSet::new());
    let mut fold = Fold {
        expected: BTreeMap::new(),
        reserved: 0,
        failed: 0,
        skipped: 0,
        stock_left: 0,
    };
    for m in requests {
        let order: OrderPlaced = serde_json::from_slice(m.payload().unwrap_or_default())
            .unwrap_or_else(|e| panic!("request at offset {}: {e}", m.offset()));
        let Some(outcome) = answer(&order, 0.0, &mut shelf, &mut seen) else {
            fold.skipped += 1;
            continue;
        };
        match outcome {
            Outcome::Reserved => fold.reserved += 1,
            Outcome::Failed { .. } => fold.failed += 1,
        }
        let at = answered_at(m.timestamp().to_millis(), &order);
        let event = weir_campus_inventory::inventory_event(&order, outcome, at);
        fold.expected
            .insert(order.order_id.clone(), serde_json::to_value(event).unwrap());
    }
    fold.stock_left = shelf.0[campus::SKU];
    fold
}

/// The answers on the output topic compared with the fold, order by order.
#[derive(Default)]
struct Verdict {
    answer_records: usize,
    answered_ids: usize,
    /// Order ids answered more than once (identically or not).
    answered_more_than_once: usize,
    /// Answers beyond the first, over all order ids.
    duplicate_records: usize,
    lost: Vec<String>,
    strangers: Vec<String>,
    two_ways: Vec<(String, Vec<Value>)>,
    wrong: Vec<(String, Value, Value)>,
    /// Order ids whose answer is `InventoryReserved`.
    reserved: usize,
}

fn judge(answers: &[OwnedMessage], fold: &Fold, distinct: &BTreeSet<String>) -> Verdict {
    let mut by_id: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in answers {
        let v: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_else(
            |_| json!({"unreadable": String::from_utf8_lossy(m.payload().unwrap_or_default())}),
        );
        let id = v["orderId"].as_str().unwrap_or("?").to_string();
        by_id.entry(id).or_default().push(v);
    }
    let mut verdict = Verdict {
        answer_records: answers.len(),
        answered_ids: by_id.len(),
        ..Verdict::default()
    };
    for (id, got) in &by_id {
        if got.len() > 1 {
            verdict.answered_more_than_once += 1;
            verdict.duplicate_records += got.len() - 1;
        }
        let kinds: Vec<Value> = got.iter().fold(Vec::<Value>::new(), |mut acc, v| {
            if !acc.contains(v) {
                acc.push(v.clone());
            }
            acc
        });
        if kinds.len() > 1 {
            verdict.two_ways.push((id.clone(), kinds.clone()));
        }
        if got.iter().any(|v| v["eventType"] == "InventoryReserved") {
            verdict.reserved += 1;
        }
        match fold.expected.get(id) {
            None => verdict.strangers.push(id.clone()),
            Some(want) => {
                if let Some(other) = kinds.iter().find(|v| *v != want) {
                    verdict
                        .wrong
                        .push((id.clone(), want.clone(), other.clone()));
                }
            }
        }
    }
    verdict.lost = distinct
        .iter()
        .filter(|id| !by_id.contains_key(*id))
        .cloned()
        .collect();
    verdict
}

fn first<T: std::fmt::Debug>(items: &[T]) -> String {
    format!(
        "{} (the first: {:?})",
        items.len(),
        &items[..items.len().min(3)]
    )
}

// --- The processes ---------------------------------------------------------

fn signal(p: &WeirProcess, sig: &str) {
    let pid = p.pid().expect("a running process");
    weir_integration_tests::signal(pid as i32, sig);
}

/// The log lines of `p` about partitions of `stage`: (assigned, partitions)
/// for every "partitions assigned" or "partitions revoked" line, in order.
/// An empty assignment reads `{}` or `[]`: see [`some`].
fn assignments(p: &WeirProcess, stage: &str) -> Vec<(bool, String)> {
    let text = std::fs::read_to_string(&p.log).unwrap_or_default();
    let quoted = format!("stage=\"{stage}\"");
    let bare = format!("stage={stage} ");
    text.lines()
        .filter(|l| l.contains(&quoted) || l.contains(&bare))
        .filter_map(|l| {
            let assigned = l.contains("partitions assigned");
            if !assigned && !l.contains("partitions revoked") {
                return None;
            }
            // `partitions={0, 1}` (a set) or `partitions=[0]` (a list).
            let parts = l.split("partitions=").nth(1).unwrap_or("");
            let end = parts.find(['}', ']']).map_or(parts.len(), |i| i + 1);
            Some((assigned, parts[..end].to_string()))
        })
        .collect()
}

/// Whether a partition list of [`assignments`] names a partition.
fn some(parts: &str) -> bool {
    parts.chars().any(|c| c.is_ascii_digit())
}

/// Whether `p`'s log says it was last given a partition of `stage`. A
/// revoke is left out: with the eager protocol every rebalance revokes
/// everything first, and with kills every few seconds the group spends
/// most of its time rebalancing, while the partition's last holder keeps
/// its state and its transaction and usually gets the partition back.
fn holds(p: &WeirProcess, stage: &str) -> bool {
    assignments(p, stage)
        .iter()
        .rev()
        .find(|(assigned, _)| *assigned)
        .is_some_and(|(_, parts)| some(parts))
}

fn log_has(p: &WeirProcess, what: &str) -> bool {
    std::fs::read_to_string(&p.log).is_ok_and(|t| t.contains(what))
}

/// Three processes of one pipeline, killed and restarted one at a time.
struct Fleet {
    pipeline: PathBuf,
    env: HashMap<String, String>,
    slots: Vec<WeirProcess>,
    spawned: usize,
}

impl Fleet {
    fn respawn(&mut self, slot: usize) {
        self.spawned += 1;
        let name = format!("w{slot}-{}", self.spawned);
        self.slots[slot] = WeirProcess::spawn(&name, &self.pipeline, &self.env);
    }

    fn assert_running(&mut self) {
        for p in &mut self.slots {
            assert!(
                p.running(),
                "weir {} exited on its own; its log:\n{}",
                p.name,
                p.log_tail(60)
            );
        }
    }
}

/// What the chaos did.
#[derive(Default, Debug)]
struct Chaos {
    kills: usize,
    /// Kills of a process that had just been assigned partitions.
    during_assignment: usize,
    /// Of those, kills before its log said "state restored".
    before_restored: usize,
    /// Kills of the process holding the inventory partition.
    of_inventory_holder: usize,
    /// Restarted processes that were never assigned partitions in time
    /// and were killed anyway.
    quick: usize,
}

/// SIGKILLs a process every 2-5 s (two times in three the one holding the
/// inventory partition, else a random one) and restarts it at once, until
/// `done()` and at least [`MIN_KILLS`] kills; every third kill is followed
/// by a second one of the restarted process as soon as its log says it was
/// assigned partitions (it is restoring or about to), or after 20 s.
async fn chaos(fleet: &mut Fleet, rng: &mut Rng, done: impl Fn() -> bool) -> Chaos {
    let mut c = Chaos::default();
    let started = Instant::now();
    let mut round = 0usize;
    while !(done() && c.kills >= MIN_KILLS) {
        round += 1;
        tokio::time::sleep(rng.millis(2_000, 5_000)).await;
        fleet.assert_running();
        // Two kills in three are aimed at the process holding the
        // stateful stage's partition, when one does: the others only move
        // work.
        let holder = (0..fleet.slots.len()).find(|s| holds(&fleet.slots[*s], "inventory"));
        let slot = match holder {
            Some(s) if round % 3 != 1 => s,
            _ => rng.below(fleet.slots.len()),
        };
        if holds(&fleet.slots[slot], "inventory") {
            c.of_inventory_holder += 1;
        }
        fleet.slots[slot].kill();
        c.kills += 1;
        fleet.respawn(slot);
        eprintln!(
            "[{:>5.1}s] kill {}: SIGKILLed slot {slot}, restarted as {}",
            started.elapsed().as_secs_f64(),
            c.kills,
            fleet.slots[slot].name
        );
        if c.kills % 3 == 0 {
            let p = &fleet.slots[slot];
            let deadline = Instant::now() + Duration::from_secs(20);
            let assigned = loop {
                if assignments(p, "order-intake")
                    .iter()
                    .chain(assignments(p, "inventory").iter())
                    .any(|(assigned, parts)| *assigned && some(parts))
                {
                    break true;
                }
                if Instant::now() > deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let restored = log_has(p, "state restored");
            let inventory = holds(p, "inventory");
            let name = p.name.clone();
            fleet.slots[slot].kill();
            c.kills += 1;
            if assigned {
                c.during_assignment += 1;
                if !restored {
                    c.before_restored += 1;
                }
                if inventory {
                    c.of_inventory_holder += 1;
                }
            } else {
                c.quick += 1;
            }
            fleet.respawn(slot);
            eprintln!(
                "[{:>5.1}s] kill {}: SIGKILLed {name} {} (restored: {restored}, holds \
                 inventory: {inventory}), restarted as {}",
                started.elapsed().as_secs_f64(),
                c.kills,
                if assigned {
                    "just assigned partitions"
                } else {
                    "20 s after start, never assigned"
                },
                fleet.slots[slot].name
            );
        }
    }
    c
}

// --- The tests ---------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    AtLeastOnce,
    ExactlyOnce,
}

/// Partition ends of `topic` as a read_committed consumer reaches them.
fn stable_ends(topic: &str) -> BTreeMap<i32, End> {
    read_committed(topic).1
}

async fn sigkill_chaos(mode: Mode) {
    let t0 = Instant::now();
    let n = orders_count();
    let stock = n / 2;
    let produce_for = Duration::from_secs(env_or("WEIR_CHAOS_PRODUCE_SECS", 40));
    let mut rng = Rng(seed());
    let prefix = unique_prefix("chaos");
    let group = unique_prefix("chaos-group");
    let env = test_env(&prefix, &group);
    let dir = tempfile::tempdir().unwrap();
    let kafka = match mode {
        Mode::AtLeastOnce => "",
        Mode::ExactlyOnce => "processing = \"exactly_once\"",
    };
    let pipeline = write_pipeline(dir.path(), &campus::inventory_pipeline(kafka, stock, ""));
    let topics = Topics::new(&prefix);
    eprintln!(
        "chaos {mode:?}: {n} orders (+{RESEND_PERCENT}% re-sent), stock {stock}, seed {:#x}, \
         logs in {}",
        seed(),
        dir.path().display()
    );

    let mut slots = Vec::new();
    for slot in 0..3 {
        slots.push(start_weir(&format!("w{slot}-0"), &pipeline, &env, READY).await);
    }
    let mut fleet = Fleet {
        pipeline: pipeline.clone(),
        env: env.clone(),
        slots,
        spawned: 0,
    };
    topics_exist(&[
        (&topics.orders, 3),
        (&topics.requests, 1),
        (&topics.events, 3),
    ])
    .await;
    let ready_at = t0.elapsed();

    let stream = order_stream(n, &mut rng);
    let total = stream.len();
    let produced = Arc::new(AtomicUsize::new(0));
    let producing = tokio::spawn(produce_paced(
        topics.orders.clone(),
        stream,
        produce_for,
        produced.clone(),
    ));
    let chaos_started = Instant::now();
    let c = chaos(&mut fleet, &mut rng, || producing.is_finished()).await;
    producing.await.unwrap();
    let chaos_took = chaos_started.elapsed();
    assert_eq!(produced.load(Ordering::Relaxed), total);
    eprintln!("chaos over after {chaos_took:?}: {total} orders produced, {c:?}; settling");

    let settle_started = Instant::now();
    let intake = settle(&format!("{group}.order-intake"), &topics.orders, SETTLE).await;
    let inventory = settle(&format!("{group}.inventory"), &topics.requests, SETTLE).await;
    let settle_took = settle_started.elapsed();
    fleet.assert_running();

    let (requests, requests_end) = read_committed(&topics.requests);
    let (answers, events_end) = read_committed(&topics.events);
    let (uncommitted, _) =
        read_to_end(&topics.events, Isolation::ReadUncommitted, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{e}"));
    let (dead, dead_end) = read_committed(&topics.dead_letter);
    assert_eq!(
        requests_end.len(),
        1,
        "the inventory input has one partition"
    );
    let distinct: BTreeSet<String> = (0..n).map(campus::order_id).collect();
    let requested: BTreeSet<String> = requests
        .iter()
        .filter_map(|m| m.key().map(|k| String::from_utf8_lossy(k).into_owned()))
        .collect();
    let lost_by_intake: Vec<&String> = distinct.difference(&requested).collect();
    let f = fold(&requests, stock);
    let v = judge(&answers, &f, &distinct);
    let changelogs: Vec<String> = ["order-intake", "inventory"]
        .iter()
        .map(|stage| format!("{group}-{stage}-changelog"))
        .filter(|t| try_end_offsets(t).is_ok_and(|e| !e.is_empty()))
        .collect();
    let mut open = Vec::new();
    let mut ends = vec![
        (topics.requests.clone(), requests_end),
        (topics.events.clone(), events_end),
        (topics.dead_letter.clone(), dead_end),
    ];
    for t in &changelogs {
        ends.push((t.clone(), stable_ends(t)));
    }
    for (topic, e) in &ends {
        for (p, end) in e {
            if end.position != end.high {
                open.push(format!(
                    "{topic}/{p}: stable end {} < high watermark {}",
                    end.position, end.high
                ));
            }
        }
    }

    eprintln!(
        "chaos {mode:?} done in {:?}: ready after {ready_at:?}, chaos {chaos_took:?}, settled \
         in {settle_took:?}\n  kills: {} ({} just after an assignment, {} of them before \
         \"state restored\", {} of the inventory partition's holder, {} never assigned)\n  \
         input: {total} orders ({n} distinct); inventory input {} records ({} lost by \
         order-intake), {} of them skipped by the fold as already answered\n  fold: {} \
         reserved, {} failed, stock left {}\n  output: {} answers (read_committed; {} \
         read_uncommitted) for {} order ids; {} ids answered more than once, {} duplicate \
         answers; {} lost, {} unknown ids, {} answered two ways, {} differ from the fold; \
         {} reserved; {} dead letters\n  group offsets (committed, end): order-intake \
         {intake:?}, inventory {inventory:?}\n  changelogs {changelogs:?}; partitions with a \
         transaction open: {open:?}",
        t0.elapsed(),
        c.kills,
        c.during_assignment,
        c.before_restored,
        c.of_inventory_holder,
        c.quick,
        requests.len(),
        lost_by_intake.len(),
        f.skipped,
        f.reserved,
        f.failed,
        f.stock_left,
        v.answer_records,
        uncommitted.len(),
        v.answered_ids,
        v.answered_more_than_once,
        v.duplicate_records,
        v.lost.len(),
        v.strangers.len(),
        v.two_ways.len(),
        v.wrong.len(),
        v.reserved,
        dead.len(),
    );

    assert!(c.kills >= MIN_KILLS, "only {} kills", c.kills);
    assert!(
        c.during_assignment > 0,
        "no kill landed just after an assignment: {c:?}"
    );
    assert!(
        c.of_inventory_holder >= 1,
        "the inventory partition's holder was never killed: {c:?}"
    );
    assert!(dead.is_empty(), "{} dead letters", dead.len());
    assert!(
        lost_by_intake.is_empty(),
        "orders order-intake never passed on: {}",
        first(&lost_by_intake)
    );
    assert!(
        v.lost.is_empty(),
        "orders never answered: {}",
        first(&v.lost)
    );
    assert!(
        v.strangers.is_empty(),
        "answers for orders never requested: {}",
        first(&v.strangers)
    );
    assert!(
        v.two_ways.is_empty(),
        "orders answered two different ways: {}",
        first(&v.two_ways)
    );
    assert!(
        v.wrong.is_empty(),
        "answers that differ from the fold (order, expected, got): {}",
        first(&v.wrong)
    );
    assert!(f.stock_left >= 0, "the fold's stock went negative");
    assert!(
        v.reserved <= stock,
        "{} orders reserved against a stock of {stock}",
        v.reserved
    );
    assert_eq!(
        v.reserved, f.reserved,
        "reserved orders: answers vs the fold"
    );
    assert_eq!(
        f.reserved + f.failed,
        n,
        "the fold answers every distinct order"
    );
    if mode == Mode::ExactlyOnce {
        assert_eq!(
            v.answered_more_than_once, 0,
            "order ids answered more than once under read_committed ({} duplicate answers)",
            v.duplicate_records
        );
        assert_eq!(v.answer_records, n, "one answer per order");
        // The first stage keeps no state to hide its repeats behind: at
        // least once, a killed order-intake forwards again what it had
        // forwarded since its last commit (the inventory stage then drops
        // them by order id). Exactly once, each order is forwarded once.
        assert_eq!(
            requests.len(),
            total,
            "orders forwarded to the inventory stage (read_committed) vs orders sent"
        );
        assert!(
            changelogs
                .iter()
                .any(|t| t.ends_with("-inventory-changelog")),
            "no inventory changelog among {changelogs:?}"
        );
        assert!(open.is_empty(), "transactions left open: {open:?}");
    }
}

/// 100,000 orders and 5% re-sent on three processes SIGKILLed at least ten
/// times: nothing lost, nothing answered two ways, every answer the fold's;
/// duplicates of an answer are allowed, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_at_least_once() {
    sigkill_chaos(Mode::AtLeastOnce).await;
}

/// The same with `processing = "exactly_once"`: under read_committed every
/// order is answered exactly once, no transaction is left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_exactly_once() {
    sigkill_chaos(Mode::ExactlyOnce).await;
}

/// Exactly-once: a process frozen past its session timeout loses its
/// partitions to the other; thawed, it must not get a single late write
/// past read_committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_is_fenced() {
    let t0 = Instant::now();
    let n: usize = env_or("WEIR_CHAOS_ZOMBIE_ORDERS", 20_000);
    let stock = n / 2;
    let mut rng = Rng(seed() ^ 0x2047);
    let prefix = unique_prefix("zombie");
    let group = unique_prefix("zombie-group");
    let env = test_env(&prefix, &group);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        dir.path(),
        &campus::inventory_pipeline("processing = \"exactly_once\"", stock, ""),
    );
    let topics = Topics::new(&prefix);
    let mut a = start_weir("a", &pipeline, &env, READY).await;
    let mut b = start_weir("b", &pipeline, &env, READY).await;
    topics_exist(&[
        (&topics.orders, 3),
        (&topics.requests, 1),
        (&topics.events, 3),
    ])
    .await;

    // Orders arrive all along: before the freeze, during it, after it.
    let stream = order_stream(n, &mut rng);
    let total = stream.len();
    let produced = Arc::new(AtomicUsize::new(0));
    let producing = tokio::spawn(produce_paced(
        topics.orders.clone(),
        stream,
        Duration::from_secs(45),
        produced.clone(),
    ));

    // Freeze whichever holds the inventory partition, mid-stream.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let holder_is_a = eventually(
        "one process to hold the inventory partition",
        Duration::from_secs(60),
        || async {
            match (holds(&a, "inventory"), holds(&b, "inventory")) {
                (true, false) => Ok(true),
                (false, true) => Ok(false),
                other => Err(format!("a, b hold it: {other:?}")),
            }
        },
    )
    .await;
    let (zombie, other) = if holder_is_a {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let takeovers_before = assignments(other, "inventory")
        .iter()
        .filter(|(assigned, parts)| *assigned && some(parts))
        .count();
    signal(zombie, "STOP");
    let frozen = Instant::now();
    let produced_at_freeze = produced.load(Ordering::Relaxed);
    eprintln!(
        "SIGSTOP {} (holds the inventory partition) at {:?}, {produced_at_freeze} orders \
         produced",
        zombie.name,
        t0.elapsed()
    );
    // The group gives its partitions to the other after the session
    // timeout (10 s).
    eventually(
        "the other process to take the inventory partition over",
        Duration::from_secs(90),
        || async {
            let now = assignments(other, "inventory")
                .iter()
                .filter(|(assigned, parts)| *assigned && some(parts))
                .count();
            if now > takeovers_before && holds(other, "inventory") {
                Ok(())
            } else {
                Err(format!(
                    "{} holds: {}",
                    other.name,
                    holds(other, "inventory")
                ))
            }
        },
    )
    .await;
    let took_over = frozen.elapsed();
    // Let the new holder write for a while, then thaw the zombie.
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(zombie, "CONT");
    let thawed_after = frozen.elapsed();
    eprintln!(
        "{} took the inventory partition over {took_over:?} after the freeze; SIGCONT {} \
         after {thawed_after:?}",
        other.name, zombie.name
    );
    producing.await.unwrap();
    assert_eq!(produced.load(Ordering::Relaxed), total);

    let intake = settle(&format!("{group}.order-intake"), &topics.orders, SETTLE).await;
    let inventory = settle(&format!("{group}.inventory"), &topics.requests, SETTLE).await;
    let zombie_running = zombie.running();
    assert!(
        other.running(),
        "weir {} exited; its log:\n{}",
        other.name,
        other.log_tail(60)
    );

    let (requests, _) = read_committed(&topics.requests);
    let (answers, events_end) = read_committed(&topics.events);
    let (uncommitted, _) =
        read_to_end(&topics.events, Isolation::ReadUncommitted, &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{e}"));
    let (dead, _) = read_committed(&topics.dead_letter);
    let distinct: BTreeSet<String> = (0..n).map(campus::order_id).collect();
    let f = fold(&requests, stock);
    let v = judge(&answers, &f, &distinct);
    let open: Vec<(i32, End)> = events_end
        .into_iter()
        .filter(|(_, e)| e.position != e.high)
        .collect();
    let zombie_log = std::fs::read_to_string(&zombie.log).unwrap_or_default();
    let fenced_lines = zombie_log
        .lines()
        .filter(|l| l.to_lowercase().contains("fenc"))
        .count();
    eprintln!(
        "zombie done in {:?}: {total} orders ({n} distinct), {} inventory input records; \
         fold {} reserved, {} failed; {} answers read_committed ({} read_uncommitted) for {} \
         ids, {} ids answered more than once, {} lost, {} answered two ways, {} differ from \
         the fold, {} dead letters; zombie {} still running: {zombie_running}, {fenced_lines} \
         log lines about fencing; group offsets order-intake {intake:?}, inventory \
         {inventory:?}; open transactions on the output: {open:?}",
        t0.elapsed(),
        requests.len(),
        f.reserved,
        f.failed,
        v.answer_records,
        uncommitted.len(),
        v.answered_ids,
        v.answered_more_than_once,
        v.lost.len(),
        v.two_ways.len(),
        v.wrong.len(),
        dead.len(),
        zombie.name,
    );
    assert!(dead.is_empty(), "{} dead letters", dead.len());
    assert!(
        v.lost.is_empty(),
        "orders never answered: {}",
        first(&v.lost)
    );
    assert!(
        v.strangers.is_empty(),
        "answers for orders never requested: {}",
        first(&v.strangers)
    );
    assert!(
        v.two_ways.is_empty(),
        "orders answered two different ways: {}",
        first(&v.two_ways)
    );
    assert_eq!(
        v.answered_more_than_once, 0,
        "order ids answered more than once under read_committed: the zombie's late writes \
         got through ({} duplicate answers)",
        v.duplicate_records
    );
    assert!(
        v.wrong.is_empty(),
        "answers that differ from the fold (order, expected, got): {}",
        first(&v.wrong)
    );
    assert_eq!(
        v.reserved, f.reserved,
        "reserved orders: answers vs the fold"
    );
    assert!(v.reserved <= stock);
    assert!(open.is_empty(), "transactions left open: {open:?}");
}

/// The check the exactly-once tests rely on, checked: a read_committed
/// consumer stops short of the high watermark while a transaction is open,
/// and reaches it once the transaction commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stable_end_sees_an_open_transaction() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let topic = unique_prefix("chaos-txn");
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    for r in admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", unique_prefix("chaos-txn-id"))
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let send = |n: usize| {
        producer.begin_transaction().unwrap();
        let records: Vec<(String, Vec<u8>)> =
            (0..n).map(|i| (format!("k{i}"), b"v".to_vec())).collect();
        records
    };
    let committed_records = send(3);
    send_all(&producer, &topic, &committed_records).await;
    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    let after_commit = stable_ends(&topic)[&0];
    let open_records = send(2);
    send_all(&producer, &topic, &open_records).await;
    let (seen_open, ends) = read_committed(&topic);
    let while_open = ends[&0];
    producer.abort_transaction(Duration::from_secs(30)).unwrap();
    let (seen_aborted, ends) = read_committed(&topic);
    let after_abort = ends[&0];
    eprintln!(
        "after a commit of 3: {after_commit:?}; with 2 more in an open transaction: \
         {while_open:?} ({} readable); after its abort: {after_abort:?} ({} readable)",
        seen_open.len(),
        seen_aborted.len()
    );
    assert_eq!(
        after_commit,
        End {
            position: 4,
            high: 4
        },
        "3 records and a commit marker"
    );
    assert_eq!(seen_open.len(), 3);
    assert!(while_open.position < while_open.high, "{while_open:?}");
    assert_eq!(seen_aborted.len(), 3);
    assert_eq!(
        after_abort,
        End {
            position: 7,
            high: 7
        },
        "2 aborted records and a marker"
    );
}
