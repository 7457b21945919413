//! The repo's pipeline.toml, both scenarios at once, against the real broker,
//! end to end:
//! - F1: 2,000 telemetry messages, sent twice, give 2,000 analytics records
//!   scored by the formula and alerts exactly where the rule says;
//! - campus food: 10,000 single-item orders against 9,000 in stock give
//!   9,000 `InventoryReserved` and 1,000 `InventoryFailed`; re-sending all
//!   of them changes nothing; order analytics reports 10,000 orders and a
//!   failure rate of 0.1.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::Message;
use serde_json::{Value, json};
use weir_integration_tests::*;

const F1_MESSAGES: usize = 2_000;
const ORDERS: usize = 10_000;
const SETTLE: Duration = Duration::from_secs(180);

fn records(values: &[(String, Value)]) -> Vec<(String, Vec<u8>)> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string().into_bytes()))
        .collect()
}

fn json_of(m: &rdkafka::message::OwnedMessage) -> Value {
    serde_json::from_slice(m.payload().unwrap()).unwrap()
}

/// Single-item orders: for each SKU its whole stock plus a share of 1,000
/// more, interleaved across SKUs, each in one of five minutes.
fn orders(
    stock: &BTreeMap<String, i64>,
    run: &str,
) -> (Vec<(String, Value)>, HashMap<String, i64>) {
    let total: i64 = stock.values().sum();
    let extra_total = ORDERS as i64 - total;
    let mut wanted: Vec<(String, i64)> = Vec::new();
    let mut extra = HashMap::new();
    for (i, (sku, n)) in stock.iter().enumerate() {
        let share = if i + 1 == stock.len() {
            extra_total - extra.values().sum::<i64>()
        } else {
            extra_total / stock.len() as i64
        };
        extra.insert(sku.clone(), share);
        wanted.push((sku.clone(), n + share));
    }
    let mut out = Vec::with_capacity(ORDERS);
    let mut i = 0;
    while wanted.iter().any(|(_, n)| *n > 0) {
        for (sku, n) in wanted.iter_mut().filter(|(_, n)| *n > 0) {
            *n -= 1;
            let order_id = format!("{run}-order-{i:06}");
            out.push((
                order_id.clone(),
                json!({
                    "eventId": format!("{run}-evt-{i:06}"),
                    "eventType": "OrderPlaced",
                    "orderId": order_id,
                    "items": [{"sku": sku, "qty": 1}],
                    "createdAt": format!("2026-11-23T10:0{}:15.250Z", i % 5),
                }),
            ));
            i += 1;
        }
    }
    (out, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repo_pipeline_runs_both_scenarios() {
    init_tracing();
    let ns = unique_prefix("repo");
    let group = unique_prefix("group");
    let config = repo_pipeline(&ns, &group);
    let stock: BTreeMap<String, i64> = serde_json::from_value(
        config
            .stages
            .iter()
            .find(|s| s.name == "inventory")
            .unwrap()
            .config["stock"]
            .clone(),
    )
    .unwrap();
    assert_eq!(
        stock.values().sum::<i64>(),
        9_000,
        "the acceptance test is written for pipeline.toml's 9,000 in stock"
    );
    let t = |name: &str| format!("{ns}.{name}");
    let f1 = |name: &str| format!("{ns}-f1.telemetry.{name}");
    let (raw, analytics, alerts) = (f1("raw"), f1("analytics"), f1("alerts"));
    let (orders_topic, inventory_events) = (t("orders"), t("inventory-events"));
    let (requests, analytics_events, table) = (
        t("campus.inventory.requests"),
        t("campus.analytics.events"),
        t("campus.order-analytics"),
    );
    let group_of = |stage: &str| format!("{group}.{stage}");

    let weir = Weir::start(config);
    topics_exist(&[(&raw, 3), (&table, 1)]).await;

    // Everything goes in twice: F1 messages and orders, identical both times.
    let telemetry = f1::telemetry(F1_MESSAGES, &ns);
    let telemetry: Vec<(String, Value)> = telemetry
        .into_iter()
        .map(|v| (v["car_id"].as_str().unwrap().to_string(), v))
        .collect();
    let (orders, extra) = orders(&stock, &ns);
    let (telemetry_records, order_records) = (records(&telemetry), records(&orders));
    for round in 0..2 {
        tokio::join!(
            produce(&raw, &telemetry_records),
            produce(&orders_topic, &order_records)
        );
        settled(&group_of("degradation"), &[&raw], SETTLE).await;
        settled(&group_of("alerts"), &[&analytics], SETTLE).await;
        settled(&group_of("order-intake"), &[&orders_topic], SETTLE).await;
        settled(&group_of("inventory"), &[&requests], SETTLE).await;
        settled(
            &group_of("analytics-intake"),
            &[&orders_topic, &inventory_events],
            SETTLE,
        )
        .await;
        settled(&group_of("order-analytics"), &[&analytics_events], SETTLE).await;
        tracing::info!(round, "settled");
    }
    weir.stop().await.expect("clean shutdown");

    // (a), (b): 2,000 analytics records, one per message, scored by the
    // formula; alerts exactly where the rule says, naming every trigger.
    let by_id: HashMap<(String, u64), &Value> =
        telemetry.iter().map(|(_, v)| (f1::id(v), v)).collect();
    let scored = read_all(&analytics);
    assert_eq!(scored.len(), F1_MESSAGES, "analytics records");
    let mut expected_alerts = HashMap::new();
    for m in &scored {
        let v = json_of(m);
        let id = f1::id(&v);
        let (score, flags) = f1::expected_score(by_id[&id]);
        assert_eq!(v["degradation_score"].as_f64(), Some(score), "{v}");
        assert_eq!(v["fault_flags"], json!(flags), "{v}");
        let reasons = f1::expected_reasons(score, &flags);
        if !reasons.is_empty() {
            assert!(expected_alerts.insert(id, reasons).is_none(), "{v} twice");
        }
    }
    let raised = read_all(&alerts);
    assert_eq!(raised.len(), expected_alerts.len(), "alerts");
    for m in &raised {
        let a = json_of(m);
        let id = f1::id(&a);
        let input = by_id[&id];
        assert_eq!(a["reasons"], json!(expected_alerts[&id]), "{a}");
        for field in ["run_id", "lap", "battery_soc", "ers_mode", "timestamp"] {
            assert_eq!(a[field], input[field], "{field} in {a}");
        }
        assert!(a["degradation_score"].is_number(), "{a}");
    }

    // (c): each order answered once, stock spent exactly, the rest failed
    // as out of stock; the second sending added nothing.
    let answers = read_all(&inventory_events);
    assert_eq!(answers.len(), ORDERS, "inventory events");
    let sku_of: HashMap<&str, &str> = orders
        .iter()
        .map(|(id, o)| (id.as_str(), o["items"][0]["sku"].as_str().unwrap()))
        .collect();
    let mut reserved: HashMap<&str, i64> = HashMap::new();
    let mut failed: HashMap<&str, i64> = HashMap::new();
    let mut answered = HashMap::new();
    for m in &answers {
        let e = json_of(m);
        let order_id = e["orderId"].as_str().unwrap();
        assert_eq!(m.key(), Some(order_id.as_bytes()), "keyed by orderId");
        assert_eq!(e["eventId"], format!("inv-{order_id}"));
        *answered.entry(order_id.to_string()).or_insert(0) += 1;
        let sku = sku_of[order_id];
        match e["eventType"].as_str().unwrap() {
            "InventoryReserved" => *reserved.entry(sku).or_default() += 1,
            "InventoryFailed" => {
                assert_eq!(e["reason"], "OUT_OF_STOCK", "{e}");
                assert_eq!(e["sku"], sku, "{e}");
                *failed.entry(sku).or_default() += 1;
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert_eq!(answered.len(), ORDERS);
    assert!(
        answered.values().all(|&n| n == 1),
        "an order answered twice"
    );
    for (sku, n) in &stock {
        assert_eq!(reserved.get(sku.as_str()), Some(n), "{sku} reserved");
        assert_eq!(failed.get(sku.as_str()), extra.get(sku), "{sku} failed");
    }
    assert_eq!(reserved.values().sum::<i64>(), 9_000);
    assert_eq!(failed.values().sum::<i64>(), 1_000);

    // (d): the analytics table's latest records.
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    for m in read_all(&table) {
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        latest.insert(key, json_of(&m));
    }
    assert_eq!(
        latest["totals"],
        json!({
            "total_orders": 10_000, "total_reservations": 10_000,
            "failed_reservations": 1_000, "failure_rate": 0.1
        })
    );
    let minutes: BTreeMap<&str, u64> = latest
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("minute/")?, v["orders"].as_u64()?)))
        .collect();
    let expected_minutes: BTreeMap<String, u64> = (0..5)
        .map(|m| (format!("2026-11-23T10:0{m}"), ORDERS as u64 / 5))
        .collect();
    assert_eq!(
        minutes,
        expected_minutes
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    );
    // Nothing was dead-lettered along the way.
    assert!(read_all(&t("campus.dead-letter")).is_empty());
    assert!(read_all(&f1("dead-letter")).is_empty());
}
