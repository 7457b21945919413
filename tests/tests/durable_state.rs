//! Durable keyed state: what a stateful stage has learnt survives the
//! process being killed (SIGKILL: no drain, no commit, no flush) and its
//! partitions moving to other processes of the same group. weir runs here
//! as real child processes (`weir run`, see [`WeirProcess`]) so they can be
//! killed for real; the broker is the real one `scripts/test.sh` starts.
//!
//! Each test runs, kills and restarts its own pipeline on its own topics
//! and consumer group, and prints what it counted before asserting.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use serde_json::{Value, json};
use weir_integration_tests::*;

/// How long a process may take to start (it compiles its plugins).
const READY: Duration = Duration::from_secs(180);
/// How long processing may take, a rebalance after a SIGKILL included (the
/// dead member holds its partitions until its session times out).
const WAIT: Duration = Duration::from_secs(240);

fn json_of(m: &OwnedMessage) -> Value {
    serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or(Value::Null)
}

/// `(weir.error, value)` of every record of a dead-letter topic.
fn dead_letters(topic: &str) -> Vec<(String, String)> {
    read_all(topic)
        .iter()
        .map(|m| {
            (
                header(m, "weir.error").unwrap_or("?").to_string(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            )
        })
        .collect()
}

/// How many dead letters, and the first few, for a failure message.
fn summary(dead: &[(String, String)]) -> String {
    let first: Vec<&String> = dead.iter().take(3).map(|(why, _)| why).collect();
    format!("{} dead-lettered, the first: {first:?}", dead.len())
}

// --- 1. Inventory: stock and answered orders survive a SIGKILL -------------

const STOCK: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_survives_sigkill_and_two_processes() {
    let prefix = unique_prefix("durable-inv");
    let group = unique_prefix("durable-inv-group");
    let env = test_env(&prefix, &group);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(dir.path(), &campus::inventory_pipeline("", STOCK, ""));
    let t = |name: &str| format!("{prefix}.{name}");
    let (orders, requests, events, dlq) = (
        t("orders"),
        t("inventory.requests"),
        t("inventory-events"),
        t("dead-letter"),
    );

    // (a) 200 orders, all answered: 200 reserved, 100 burritos left.
    let mut first = start_weir("first", &pipeline, &env, READY).await;
    topics_exist(&[(&orders, 3), (&requests, 1), (&events, 3)]).await;
    let first_orders: Vec<_> = (0..200).map(campus::order).collect();
    produce(&orders, &first_orders).await;
    let before = eventually("the first 200 orders answered", WAIT, || async {
        let a = campus::answers(&read_all(&events));
        if a.len() == 200 {
            Ok(a)
        } else {
            Err(format!("{} of 200 orders answered", a.len()))
        }
    })
    .await;
    let reserved_before = before
        .values()
        .filter(|k| k.iter().any(|k| k == "InventoryReserved"))
        .count();
    assert_eq!(reserved_before, 200, "stock {STOCK} covers the first 200");

    // (b) SIGKILL: no drain, no commit, no flush.
    first.kill();
    eprintln!("killed weir first after 200 answers ({reserved_before} reserved)");

    // (c) Two processes of the same pipeline and group.
    let mut second = start_weir("second", &pipeline, &env, READY).await;
    let mut third = start_weir("third", &pipeline, &env, READY).await;

    // (d) 200 new orders, and 50 of the first 200 sent again.
    let mut again: Vec<_> = (200..400).map(campus::order).collect();
    again.extend((0..50).map(campus::order));
    produce(&orders, &again).await;
    settled(&format!("{group}.order-intake"), &[&orders], WAIT).await;
    settled(&format!("{group}.inventory"), &[&requests], WAIT).await;
    assert_running(&mut [&mut second, &mut third]);

    let after = campus::answers(&read_all(&events));
    let distinct: BTreeSet<String> = (0..400).map(campus::order_id).collect();
    let reserved = after
        .iter()
        .filter(|(_, k)| k.iter().any(|k| k == "InventoryReserved"))
        .count();
    let out_of_stock = after
        .iter()
        .filter(|(_, k)| k.iter().any(|k| k == "InventoryFailed/OUT_OF_STOCK"))
        .count();
    let answered_twice_differently: Vec<(&String, &Vec<String>)> = after
        .iter()
        .filter(|(_, k)| k.iter().collect::<BTreeSet<_>>().len() > 1)
        .collect();
    let duplicates: usize = after.values().map(|k| k.len() - 1).sum();
    let resent_answered_again = (0..50)
        .filter(|i| {
            after
                .get(&campus::order_id(*i))
                .is_some_and(|k| k.len() > 1)
        })
        .count();
    let lost: Vec<&String> = distinct
        .iter()
        .filter(|id| !after.contains_key(*id))
        .collect();
    let strangers: Vec<&String> = after.keys().filter(|id| !distinct.contains(*id)).collect();
    let expected = STOCK.min(distinct.len());
    let dead = dead_letters(&dlq);
    eprintln!(
        "inventory after SIGKILL + 2 processes: stock {STOCK}, {} distinct orders \
         (+50 re-sent), {} answered, {reserved} reserved (expected {expected}), \
         {out_of_stock} out of stock, {} answered two different ways, {duplicates} \
         duplicate identical answers ({resent_answered_again} of the 50 re-sent orders \
         answered again), {} lost, {} dead-lettered",
        distinct.len(),
        after.len(),
        answered_twice_differently.len(),
        lost.len(),
        dead.len()
    );

    assert!(
        strangers.is_empty(),
        "answers for unknown orders: {strangers:?}"
    );
    assert!(lost.is_empty(), "orders never answered: {lost:?}");
    assert!(
        answered_twice_differently.is_empty(),
        "orders answered two different ways: {answered_twice_differently:?}"
    );
    assert!(dead.is_empty(), "{}", summary(&dead));
    assert!(
        reserved <= STOCK,
        "{reserved} orders reserved against a stock of {STOCK}: stock was not restored after \
         the SIGKILL"
    );
    assert_eq!(
        reserved,
        expected,
        "reserved orders: stock {STOCK}, {} distinct orders",
        distinct.len()
    );
    assert_eq!(out_of_stock, distinct.len() - expected);
}

// --- 2. Order analytics: the totals carry on across a SIGKILL --------------

fn analytics_toml() -> String {
    format!(
        r#"
[[topic]]
name = "{{prefix}}.analytics.events"
partitions = 1
[[topic]]
name = "{{prefix}}.order-analytics"
partitions = 1
config = {{ "cleanup.policy" = "compact" }}
[[topic]]
name = "{{prefix}}.dead-letter"
partitions = 1

[[stage]]
name = "order-analytics"
plugin = "{analytics}"
inputs = ["{{prefix}}.analytics.events"]
outputs = {{ default = "{{prefix}}.order-analytics" }}
dead_letter = "{{prefix}}.dead-letter"
"#,
        analytics = weir_test_programs::ORDER_ANALYTICS,
    )
}

const MINUTE: &str = "2026-11-23T10:00";

/// An `OrderPlaced` event with event id `evt-{i}`; the same `i` is a re-send.
fn placed(i: usize) -> (String, Vec<u8>) {
    let id = format!("order-{i:04}");
    let value = json!({
        "eventId": format!("evt-{i:04}"), "eventType": "OrderPlaced", "orderId": id,
        "items": [{"sku": "burrito", "qty": 1}], "createdAt": format!("{MINUTE}:30Z")
    });
    (id, value.to_string().into_bytes())
}

/// `(offset, total_orders)` of every `totals` record, and the last
/// `orders` of the record of `MINUTE`.
fn totals(topic: &str) -> (Vec<(i64, u64)>, Option<u64>) {
    let mut totals = Vec::new();
    let mut minute = None;
    let minute_key = format!("minute/{MINUTE}");
    for m in read_all(topic) {
        let v = json_of(&m);
        match m.key() {
            Some(b"totals") => totals.push((m.offset(), v["total_orders"].as_u64().unwrap())),
            Some(k) if k == minute_key.as_bytes() => minute = v["orders"].as_u64(),
            _ => {}
        }
    }
    (totals, minute)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_totals_survive_restart() {
    const BEFORE: usize = 300;
    const NEW: usize = 200;
    const RESENT: usize = 100;
    let prefix = unique_prefix("durable-analytics");
    let group = unique_prefix("durable-analytics-group");
    let env = test_env(&prefix, &group);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(dir.path(), &analytics_toml());
    let (input, output, dlq) = (
        format!("{prefix}.analytics.events"),
        format!("{prefix}.order-analytics"),
        format!("{prefix}.dead-letter"),
    );
    let stage_group = format!("{group}.order-analytics");

    let mut first = start_weir("first", &pipeline, &env, READY).await;
    topics_exist(&[(&input, 1), (&output, 1)]).await;
    produce(&input, &(0..BEFORE).map(placed).collect::<Vec<_>>()).await;
    // Counted, published and committed: everything before the kill is done.
    settled(&stage_group, &[&input], WAIT).await;
    let (published, _) = totals(&output);
    let total_before = published.last().map(|(_, t)| *t);
    assert_eq!(total_before, Some(BEFORE as u64), "before the kill");
    let end_before = end_offsets(&output)[&0];

    first.kill();
    eprintln!("killed weir first at total_orders = {BEFORE}");
    let mut second = start_weir("second", &pipeline, &env, READY).await;
    let mut more: Vec<_> = (BEFORE..BEFORE + NEW).map(placed).collect();
    more.extend((0..RESENT).map(placed));
    produce(&input, &more).await;
    settled(&stage_group, &[&input], WAIT).await;
    assert_running(&mut [&mut second]);

    let (published, minute) = totals(&output);
    let after: Vec<u64> = published
        .iter()
        .filter(|(offset, _)| *offset >= end_before)
        .map(|(_, t)| *t)
        .collect();
    let first_after = after.first().copied();
    let last_after = after.last().copied();
    let backwards = after.windows(2).filter(|w| w[1] < w[0]).count();
    let dead = dead_letters(&dlq);
    eprintln!(
        "order analytics after SIGKILL + restart: total_orders {BEFORE} before the kill; \
         after it {} totals records, the first {first_after:?}, the last {last_after:?} \
         (expected {}: {NEW} new events, {RESENT} re-sent ones counted once already), \
         {backwards} steps backwards, minute {MINUTE} at {minute:?}, {} dead-lettered",
        after.len(),
        BEFORE + NEW,
        dead.len()
    );
    assert!(dead.is_empty(), "{}", summary(&dead));
    assert!(
        after.iter().all(|t| *t > BEFORE as u64),
        "totals went back after the restart: {BEFORE} before the kill, the first after it \
         {first_after:?}, the lowest {:?}",
        after.iter().min()
    );
    assert_eq!(backwards, 0, "the totals went backwards: {after:?}");
    assert_eq!(
        last_after,
        Some((BEFORE + NEW) as u64),
        "final total_orders: every distinct event counted once"
    );
    assert_eq!(minute, Some((BEFORE + NEW) as u64), "orders of {MINUTE}");
}

// --- 3. Alert lifecycle: open alerts survive a restart ---------------------

fn alerts_toml() -> String {
    format!(
        r#"
[[topic]]
name = "{{prefix}}.anomalies"
partitions = 3
[[topic]]
name = "{{prefix}}.operator_actions"
partitions = 3
[[topic]]
name = "{{prefix}}.alert-commands"
partitions = 3
[[topic]]
name = "{{prefix}}.operator_alerts"
partitions = 3
[[topic]]
name = "{{prefix}}.dead-letter"
partitions = 1

[[stage]]
name = "alert-router"
plugin = "{lifecycle}"
inputs = ["{{prefix}}.anomalies", "{{prefix}}.operator_actions"]
outputs = {{ default = "{{prefix}}.alert-commands" }}
dead_letter = "{{prefix}}.dead-letter"

[stage.config]
role = "router"

[[stage]]
name = "alert-lifecycle"
plugin = "{lifecycle}"
inputs = ["{{prefix}}.alert-commands"]
outputs = {{ default = "{{prefix}}.operator_alerts" }}
dead_letter = "{{prefix}}.dead-letter"

[stage.config]
role = "lifecycle"
"#,
        lifecycle = weir_test_programs::ALERT_LIFECYCLE,
    )
}

fn vehicle(i: usize) -> String {
    format!("scene_{i}_track_1")
}

/// An anomaly of vehicle `i`, keyed by vehicle id; the same `i` is a re-send.
fn anomaly(i: usize) -> (String, Vec<u8>) {
    let v = vehicle(i);
    let value = json!({
        "anomaly_id": format!("anomaly-{i:03}"), "event_id": format!("{v}-f10"),
        "vehicle_id": v, "event_time": "2024-01-15T10:23:45.123Z",
        "processing_time": "2024-01-15T10:23:45.125Z",
        "anomaly_type": "sudden_deceleration", "severity": "WARNING",
        "triggered_rule": "integration test", "features": {}, "thresholds": {}, "evidence": {}
    });
    (v, value.to_string().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_lifecycle_open_alerts_survive_restart() {
    const ALERTS: usize = 30;
    let prefix = unique_prefix("durable-alerts");
    let group = unique_prefix("durable-alerts-group");
    let env = test_env(&prefix, &group);
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(dir.path(), &alerts_toml());
    let t = |name: &str| format!("{prefix}.{name}");
    let (anomalies, actions, commands, alerts, dlq) = (
        t("anomalies"),
        t("operator_actions"),
        t("alert-commands"),
        t("operator_alerts"),
        t("dead-letter"),
    );
    let settle = || async {
        settled(
            &format!("{group}.alert-router"),
            &[&anomalies, &actions],
            WAIT,
        )
        .await;
        settled(&format!("{group}.alert-lifecycle"), &[&commands], WAIT).await;
    };

    let mut first = start_weir("first", &pipeline, &env, READY).await;
    topics_exist(&[(&anomalies, 3), (&actions, 3), (&commands, 3), (&alerts, 3)]).await;
    produce(&anomalies, &(0..ALERTS).map(anomaly).collect::<Vec<_>>()).await;
    settle().await;
    let opened: BTreeMap<String, String> = read_all(&alerts)
        .iter()
        .map(json_of)
        .filter(|a| a["alert_status"] == "OPEN")
        .map(|a| {
            (
                a["vehicle_id"].as_str().unwrap().to_string(),
                a["alert_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(opened.len(), ALERTS, "alerts opened before the kill");

    first.kill();
    eprintln!("killed weir first with {ALERTS} open alerts");
    let mut second = start_weir("second", &pipeline, &env, READY).await;
    let mut third = start_weir("third", &pipeline, &env, READY).await;

    // Every open alert acknowledged; then a third of the anomalies re-sent
    // (a re-sent anomaly finds its alert and opens no other).
    let acks: Vec<(String, Vec<u8>)> = (0..ALERTS)
        .map(|i| {
            let id = format!("ack-{i:03}");
            let value = json!({
                "action_id": id, "alert_id": opened[&vehicle(i)], "vehicle_id": vehicle(i),
                "operator_id": "operator_007", "action_type": "ACKNOWLEDGE",
                "metadata": {"comment": "after the restart"}
            });
            (id, value.to_string().into_bytes())
        })
        .collect();
    produce(&actions, &acks).await;
    settle().await;
    produce(
        &anomalies,
        &(0..ALERTS / 3).map(anomaly).collect::<Vec<_>>(),
    )
    .await;
    settle().await;
    assert_running(&mut [&mut second, &mut third]);

    let records: Vec<Value> = read_all(&alerts).iter().map(json_of).collect();
    let acknowledged: BTreeSet<&str> = records
        .iter()
        .filter(|a| a["alert_status"] == "ACKNOWLEDGED" && a["previous_status"] == "OPEN")
        .filter_map(|a| a["alert_id"].as_str())
        .collect();
    let mut opens: BTreeMap<&str, usize> = BTreeMap::new();
    for a in records.iter().filter(|a| a["alert_status"] == "OPEN") {
        *opens.entry(a["alert_id"].as_str().unwrap()).or_default() += 1;
    }
    let opened_twice = opens.values().filter(|n| **n > 1).count();
    let dead = dead_letters(&dlq);
    let unknown = dead
        .iter()
        .filter(|(why, _)| why.starts_with("unknown_alert"))
        .count();
    eprintln!(
        "alert lifecycle after SIGKILL + 2 processes: {ALERTS} alerts open before the kill, \
         {} acknowledged after it, {unknown} actions dead-lettered as unknown_alert \
         ({} dead-lettered in all), {opened_twice} alerts opened again by a re-sent anomaly",
        acknowledged.len(),
        dead.len()
    );
    assert_eq!(
        unknown,
        0,
        "actions on alerts opened before the kill: {}",
        summary(&dead)
    );
    assert!(dead.is_empty(), "{}", summary(&dead));
    assert_eq!(acknowledged.len(), ALERTS, "alerts acknowledged");
    assert_eq!(opened_twice, 0, "alerts opened again: {opens:?}");
}
