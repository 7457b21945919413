//! Inventory reservation for campus food orders. Reads
//! `OrderPlaced` events, reserves every line of an order from a stock model
//! held in keyed state, or none, and answers each order once with an
//! `InventoryReserved` or `InventoryFailed` event keyed by `orderId`.
//!
//! Stock is one model shared by every order, so this stage must read a
//! single-partition topic: the repo's pipeline routes `orders` into one
//! through a passthrough stage. README.md explains why.

mod reserve;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use weir_campus_events::{ORDER_PLACED, OrderPlaced};
use weir_plugin::time::format_rfc3339_ms;
use weir_plugin::{Emitter, InitContext, Message, OutputId, Processor, export_processor};
use weir_plugin::{metrics, state};

pub use reserve::{
    AnsweredOrders, Outcome, StockLevels, answer, inventory_event, reserve, unit_hash,
};

/// `[stage.config]` of the inventory stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Initial stock per SKU; the SKUs listed are the ones sold.
    pub stock: BTreeMap<String, i64>,
    /// The share of valid orders failed on purpose (the campus food-ordering
    /// service's `INVENTORY_FAIL_RATE`), chosen by a hash of `orderId`.
    #[serde(default)]
    pub fail_rate: f64,
    /// How long an order id is remembered to answer a re-sent order once
    /// (24 h by default). Memory grows with the order rate times this.
    #[serde(default = "default_dedup_ttl_ms")]
    pub dedup_ttl_ms: u64,
}

fn default_dedup_ttl_ms() -> u64 {
    24 * 3600 * 1000
}

/// Stock in keyed state: `stock/{sku}` holds what is left (i64, little
/// endian); a SKU not yet touched has its configured initial stock.
struct StateStock<'a> {
    initial: &'a BTreeMap<String, i64>,
}

fn stock_key(sku: &str) -> Vec<u8> {
    [b"stock/", sku.as_bytes()].concat()
}

fn order_key(order_id: &str) -> Vec<u8> {
    [b"order/", order_id.as_bytes()].concat()
}

impl StockLevels for StateStock<'_> {
    fn available(&mut self, sku: &str) -> Option<i64> {
        let initial = *self.initial.get(sku)?;
        Some(
            state::get(&stock_key(sku))
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map_or(initial, i64::from_le_bytes),
        )
    }

    fn set(&mut self, sku: &str, remaining: i64) {
        state::set(&stock_key(sku), &remaining.to_le_bytes());
        metrics::gauge_set("stock_remaining", &[("sku", sku)], remaining as f64);
    }
}

/// The time an answer carries: the order record's timestamp, else the
/// order's own `createdAt`.
pub fn answered_at(record_timestamp_ms: Option<i64>, order: &OrderPlaced) -> String {
    record_timestamp_ms
        .map(format_rfc3339_ms)
        .or_else(|| order.created_at.clone())
        .unwrap_or_default()
}

/// Answered order ids in keyed state: `order/{orderId}` holds 0 if
/// reserved, 1 if failed, for `ttl` after the answer.
struct StateAnswered {
    ttl: Duration,
}

impl AnsweredOrders for StateAnswered {
    fn answered(&mut self, order_id: &str) -> bool {
        state::get(&order_key(order_id)).is_some()
    }

    fn record(&mut self, order_id: &str, outcome: &Outcome) {
        state::set_with_ttl(
            &order_key(order_id),
            &[u8::from(*outcome != Outcome::Reserved)],
            self.ttl,
        );
    }
}

pub struct Inventory {
    out: OutputId,
    config: Config,
}

impl Processor for Inventory {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config: Config = ctx.config()?;
        if config.stock.is_empty() {
            return Err("stock is empty: list the SKUs sold and their initial stock".into());
        }
        if let Some((sku, n)) = config.stock.iter().find(|(_, n)| **n < 0) {
            return Err(format!("stock.{sku} is {n}: stock cannot be negative"));
        }
        if config.dedup_ttl_ms == 0 {
            return Err("dedup_ttl_ms must be greater than 0".into());
        }
        if !(0.0..=1.0).contains(&config.fail_rate) {
            return Err(format!(
                "fail_rate must be between 0 and 1, got {}",
                config.fail_rate
            ));
        }
        Ok(Inventory {
            out: ctx.output("default")?,
            config,
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        if msg.partition() != 0 {
            return Err(format!(
                "order on partition {} of {}: the inventory stage keeps one stock model \
                 and must read a single-partition topic",
                msg.partition(),
                msg.topic()
            ));
        }
        let order: OrderPlaced = msg.json()?;
        if order.event_type != ORDER_PLACED {
            return Err(format!(
                "eventType is {:?}, expected {ORDER_PLACED:?}",
                order.event_type
            ));
        }
        if order.order_id.is_empty() {
            return Err("orderId is empty".into());
        }
        // Idempotent by order id: a redelivered or re-sent order is answered
        // once and takes stock once.
        let Some(outcome) = answer(
            &order,
            self.config.fail_rate,
            &mut StateStock {
                initial: &self.config.stock,
            },
            &mut StateAnswered {
                ttl: Duration::from_millis(self.config.dedup_ttl_ms),
            },
        ) else {
            metrics::counter_add("duplicate_orders", &[], 1);
            return Ok(());
        };

        // No clock in the sandbox: the time of the answer is the order
        // record's own timestamp, which also makes a replay byte-identical.
        let at = answered_at(msg.timestamp_ms(), &order);
        match &outcome {
            Outcome::Reserved => {
                metrics::counter_add("reservations", &[("outcome", "reserved")], 1);
            }
            Outcome::Failed { reason, .. } => {
                let reason_label = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                metrics::counter_add(
                    "reservations",
                    &[("outcome", "failed"), ("reason", &reason_label)],
                    1,
                );
            }
        }
        let event = inventory_event(&order, outcome, at);
        out.emit_json(self.out, &event)?
            .key(order.order_id.as_bytes());
        Ok(())
    }
}

export_processor!(Inventory);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use weir_plugin::testing::{Harness, TestMessage, counter, gauge};

    fn order(id: &str, sku: &str, qty: i64) -> TestMessage {
        TestMessage::json(&json!({
            "eventId": format!("evt-{id}"), "eventType": "OrderPlaced", "orderId": id,
            "items": [{"sku": sku, "qty": qty}], "createdAt": "2026-11-23T10:00:00Z"
        }))
        .key(id)
    }

    fn harness(config: Value) -> Harness<Inventory> {
        Harness::<Inventory>::new(&["default"], config).unwrap()
    }

    #[test]
    fn answers_each_order_once_and_keeps_stock_in_state() {
        let mut h = harness(json!({"stock": {"burrito": 2}}));
        let results = h.process(&[
            order("o1", "burrito", 1),
            order("o2", "burrito", 1),
            order("o3", "burrito", 1),
            order("o1", "burrito", 1),
        ]);
        let events: Vec<Vec<Value>> = results
            .iter()
            .map(|r| r.as_ref().unwrap().iter().map(|o| o.json()).collect())
            .collect();
        assert_eq!(events[0][0]["eventType"], "InventoryReserved");
        assert_eq!(events[0][0]["eventId"], "inv-o1");
        assert_eq!(events[0][0]["orderId"], "o1");
        assert_eq!(events[1][0]["eventType"], "InventoryReserved");
        assert_eq!(events[2][0]["eventType"], "InventoryFailed");
        assert_eq!(events[2][0]["reason"], "OUT_OF_STOCK");
        assert_eq!(events[2][0]["sku"], "burrito");
        assert!(events[3].is_empty(), "a re-sent order is answered once");
        assert_eq!(counter("duplicate_orders", &[]), 1);
        assert_eq!(gauge("stock_remaining", &[("sku", "burrito")]), Some(0.0));

        // Another instance (after a restart or a plugin swap) sees the same
        // stock and the same answered orders.
        let mut again = harness(json!({"stock": {"burrito": 2}}));
        assert!(
            again
                .process_one(order("o2", "burrito", 1))
                .unwrap()
                .is_empty()
        );
        let out = again.process_one(order("o4", "burrito", 1)).unwrap();
        assert_eq!(out[0].json()["reason"], "OUT_OF_STOCK");
        assert_eq!(out[0].key.as_deref(), Some(&b"o4"[..]));
    }

    #[test]
    fn an_order_id_is_remembered_for_the_dedup_ttl_only() {
        use weir_plugin::testing::advance_clock;
        let mut h = harness(json!({"stock": {"burrito": 5}, "dedup_ttl_ms": 1000}));
        assert_eq!(h.process_one(order("o1", "burrito", 1)).unwrap().len(), 1);
        advance_clock(Duration::from_millis(999));
        assert!(h.process_one(order("o1", "burrito", 1)).unwrap().is_empty());
        advance_clock(Duration::from_millis(1));
        let late = h.process_one(order("o1", "burrito", 1)).unwrap();
        assert_eq!(late[0].json()["eventType"], "InventoryReserved");
        // Stock is kept for good: the late copy took a second unit.
        assert_eq!(gauge("stock_remaining", &[("sku", "burrito")]), Some(3.0));
    }

    #[test]
    fn an_invalid_order_is_answered_not_dead_lettered() {
        let mut h = harness(json!({"stock": {"burrito": 2}}));
        let out = h.process_one(order("o1", "pizza", 1)).unwrap();
        let event = out[0].json();
        assert_eq!(event["reason"], "INVALID_ORDER");
        assert_eq!(event["sku"], "pizza");
        let out = h.process_one(order("o2", "burrito", -1)).unwrap();
        assert_eq!(out[0].json()["reason"], "INVALID_ORDER");
    }

    #[test]
    fn unreadable_events_are_rejected_with_the_reason() {
        let mut h = harness(json!({"stock": {"burrito": 2}}));
        let err = h.process_one(TestMessage::new("nope")).unwrap_err();
        assert!(err.contains("invalid JSON"), "{err}");
        let err = h
            .process_one(TestMessage::json(
                &json!({"eventId": "e", "eventType": "OrderPlaced"}),
            ))
            .unwrap_err();
        assert!(err.contains("orderId"), "{err}");
        let err = h
            .process_one(TestMessage::json(&json!({
                "eventId": "e", "eventType": "InventoryReserved", "orderId": "o"
            })))
            .unwrap_err();
        assert!(err.contains("expected \"OrderPlaced\""), "{err}");
        let err = h
            .process_one(order("o9", "burrito", 1).partition(1))
            .unwrap_err();
        assert!(err.contains("single-partition"), "{err}");
    }

    #[test]
    fn the_answer_is_timed_by_the_order_record() {
        let mut h = harness(json!({"stock": {"burrito": 2}}));
        let out = h
            .process_one(order("o1", "burrito", 1).timestamp(1_795_435_200_123))
            .unwrap();
        assert_eq!(out[0].json()["reservedAt"], "2026-11-23T12:00:00.123Z");
    }

    #[test]
    fn bad_settings_stop_the_stage() {
        for (config, why) in [
            (json!({}), "missing field `stock`"),
            (json!({"stock": {}}), "stock is empty"),
            (json!({"stock": {"a": -1}}), "cannot be negative"),
            (json!({"stock": {"a": 1}, "fail_rate": 2}), "fail_rate"),
            (
                json!({"stock": {"a": 1}, "dedup_ttl_ms": 0}),
                "dedup_ttl_ms",
            ),
            (json!({"stock": {"a": 1}, "other": 1}), "unknown field"),
        ] {
            let err = Harness::<Inventory>::new(&["default"], config.clone())
                .err()
                .unwrap();
            assert!(err.contains(why), "{config}: {err}");
        }
    }
}
