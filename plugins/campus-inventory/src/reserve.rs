//! The reservation rule, apart from where stock and answered orders are
//! kept: pure functions the plugin runs on keyed state and a test can fold
//! over a topic with plain maps.

use std::collections::BTreeMap;

use weir_campus_events::{FailureReason, InventoryEvent, OrderPlaced};

/// Stock levels by SKU. `None` means the SKU is not sold here.
pub trait StockLevels {
    fn available(&mut self, sku: &str) -> Option<i64>;
    fn set(&mut self, sku: &str, remaining: i64);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every line was reserved and the stock decremented.
    Reserved,
    Failed {
        reason: FailureReason,
        sku: Option<String>,
        detail: String,
    },
}

fn failed(reason: FailureReason, sku: Option<&str>, detail: String) -> Outcome {
    Outcome::Failed {
        reason,
        sku: sku.map(str::to_string),
        detail,
    }
}

/// Reserves all of an order's lines or none. `fail_rate` fails that share
/// of valid orders, chosen by a hash of the order id, so that the same
/// order always gets the same answer (a replay agrees with the first run).
pub fn reserve(order: &OrderPlaced, fail_rate: f64, stock: &mut impl StockLevels) -> Outcome {
    let lines = match order.lines() {
        Ok(lines) => lines,
        Err(why) => return failed(FailureReason::InvalidOrder, None, why),
    };
    // A SKU may appear on several lines; it is the total that must be there.
    let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
    for line in &lines {
        let total = wanted.entry(&line.sku).or_default();
        *total = total.saturating_add(line.qty);
    }
    let mut levels = Vec::with_capacity(wanted.len());
    for (&sku, &qty) in &wanted {
        match stock.available(sku) {
            Some(available) => levels.push((sku, qty, available)),
            None => {
                return failed(
                    FailureReason::InvalidOrder,
                    Some(sku),
                    format!("unknown SKU {sku:?}"),
                );
            }
        }
    }
    if fail_rate > 0.0 && unit_hash(&order.order_id) < fail_rate {
        return failed(
            FailureReason::SimulatedFailure,
            None,
            format!("failed by fail_rate = {fail_rate}"),
        );
    }
    if let Some(&(sku, qty, available)) = levels.iter().find(|(_, qty, avail)| qty > avail) {
        return failed(
            FailureReason::OutOfStock,
            Some(sku),
            format!("{sku}: {available} left, {qty} asked"),
        );
    }
    for (sku, qty, available) in levels {
        stock.set(sku, available - qty);
    }
    Outcome::Reserved
}

/// The order ids already answered. The plugin keeps them in keyed state
/// for `dedup_ttl_ms`.
pub trait AnsweredOrders {
    fn answered(&mut self, order_id: &str) -> bool;
    fn record(&mut self, order_id: &str, outcome: &Outcome);
}

/// The whole decision for one order: `None` for an order id already
/// answered (a redelivery or a re-send: no second answer, no stock taken),
/// else what [`reserve`] decides, recorded as answered.
pub fn answer(
    order: &OrderPlaced,
    fail_rate: f64,
    stock: &mut impl StockLevels,
    answered: &mut impl AnsweredOrders,
) -> Option<Outcome> {
    if answered.answered(&order.order_id) {
        return None;
    }
    let outcome = reserve(order, fail_rate, stock);
    answered.record(&order.order_id, &outcome);
    Some(outcome)
}

/// The answer published for `order`, timed `at` (the order record's time).
pub fn inventory_event(order: &OrderPlaced, outcome: Outcome, at: String) -> InventoryEvent {
    let event_id = format!("inv-{}", order.order_id);
    let order_id = order.order_id.clone();
    match outcome {
        Outcome::Reserved => InventoryEvent::InventoryReserved {
            event_id,
            order_id,
            reserved_at: at.clone(),
            created_at: at,
        },
        Outcome::Failed {
            reason,
            sku,
            detail,
        } => InventoryEvent::InventoryFailed {
            event_id,
            order_id,
            reason,
            sku,
            detail,
            created_at: at,
        },
    }
}

/// The order id hashed onto [0, 1): FNV-1a, then MurmurHash3's 64-bit
/// finaliser, without which ids that differ in their last characters (as
/// generated ids do) crowd together.
pub fn unit_hash(order_id: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in order_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    struct Shelf(HashMap<String, i64>);

    impl StockLevels for Shelf {
        fn available(&mut self, sku: &str) -> Option<i64> {
            self.0.get(sku).copied()
        }
        fn set(&mut self, sku: &str, remaining: i64) {
            self.0.insert(sku.to_string(), remaining);
        }
    }

    fn shelf(levels: &[(&str, i64)]) -> Shelf {
        Shelf(levels.iter().map(|(s, n)| (s.to_string(), *n)).collect())
    }

    fn order(id: &str, items: serde_json::Value) -> OrderPlaced {
        serde_json::from_value(json!({
            "eventId": format!("e-{id}"), "eventType": "OrderPlaced",
            "orderId": id, "items": items
        }))
        .unwrap()
    }

    #[test]
    fn reserves_every_line_or_none() {
        let mut s = shelf(&[("burrito", 3), ("soda", 1)]);
        let o = order(
            "o1",
            json!([{"sku": "burrito", "qty": 2}, {"sku": "soda", "qty": 1}]),
        );
        assert_eq!(reserve(&o, 0.0, &mut s), Outcome::Reserved);
        assert_eq!((s.0["burrito"], s.0["soda"]), (1, 0));

        // The burrito line fits, the soda line does not: nothing is taken.
        let o = order(
            "o2",
            json!([{"sku": "burrito", "qty": 1}, {"sku": "soda", "qty": 1}]),
        );
        assert_eq!(
            reserve(&o, 0.0, &mut s),
            Outcome::Failed {
                reason: FailureReason::OutOfStock,
                sku: Some("soda".into()),
                detail: "soda: 0 left, 1 asked".into()
            }
        );
        assert_eq!((s.0["burrito"], s.0["soda"]), (1, 0));
    }

    struct Answered(HashMap<String, Outcome>);

    impl AnsweredOrders for Answered {
        fn answered(&mut self, order_id: &str) -> bool {
            self.0.contains_key(order_id)
        }
        fn record(&mut self, order_id: &str, outcome: &Outcome) {
            self.0.insert(order_id.to_string(), outcome.clone());
        }
    }

    #[test]
    fn an_order_id_is_answered_once() {
        let mut s = shelf(&[("burrito", 1)]);
        let mut done = Answered(HashMap::new());
        let one = json!([{"sku": "burrito", "qty": 1}]);
        let o1 = order("o1", one.clone());
        assert_eq!(answer(&o1, 0.0, &mut s, &mut done), Some(Outcome::Reserved));
        assert_eq!(answer(&o1, 0.0, &mut s, &mut done), None);
        let o2 = order("o2", one);
        assert!(matches!(
            answer(&o2, 0.0, &mut s, &mut done),
            Some(Outcome::Failed {
                reason: FailureReason::OutOfStock,
                ..
            })
        ));
        assert_eq!(answer(&o2, 0.0, &mut s, &mut done), None);
        assert_eq!(s.0["burrito"], 0);
        assert_eq!(done.0.len(), 2);
        match inventory_event(&o1, Outcome::Reserved, "t".into()) {
            InventoryEvent::InventoryReserved {
                event_id, order_id, ..
            } => assert_eq!((event_id.as_str(), order_id.as_str()), ("inv-o1", "o1")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lines_of_one_sku_add_up() {
        let mut s = shelf(&[("burrito", 3)]);
        let o = order(
            "o1",
            json!([{"sku": "burrito", "qty": 2}, {"sku": "burrito", "qty": 2}]),
        );
        assert!(matches!(
            reserve(&o, 0.0, &mut s),
            Outcome::Failed {
                reason: FailureReason::OutOfStock,
                ..
            }
        ));
        assert_eq!(s.0["burrito"], 3);
    }

    #[test]
    fn invalid_orders_take_nothing() {
        let mut s = shelf(&[("burrito", 3)]);
        for items in [
            json!([]),
            json!([{"sku": "burrito", "qty": 0}]),
            json!([{"sku": "burrito", "qty": 1}, {"sku": "pizza", "qty": 1}]),
        ] {
            match reserve(&order("o", items.clone()), 0.0, &mut s) {
                Outcome::Failed { reason, .. } => {
                    assert_eq!(reason, FailureReason::InvalidOrder, "{items}")
                }
                other => panic!("{items}: {other:?}"),
            }
        }
        assert_eq!(s.0["burrito"], 3);
    }

    #[test]
    fn fail_rate_is_a_deterministic_share_of_orders() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("order-{i:06}")).collect();
        let failed = ids.iter().filter(|id| unit_hash(id) < 0.3).count();
        assert!((2_800..3_200).contains(&failed), "{failed}");
        let mut s = shelf(&[("burrito", 1_000_000)]);
        let o = order("order-000042", json!([{"sku": "burrito", "qty": 1}]));
        let first = reserve(&o, 0.3, &mut s);
        for _ in 0..3 {
            assert_eq!(reserve(&o, 0.3, &mut shelf(&[("burrito", 1)])), first);
        }
        assert_eq!(reserve(&o, 0.0, &mut s), Outcome::Reserved);
        assert!(matches!(
            reserve(&o, 1.0, &mut s),
            Outcome::Failed {
                reason: FailureReason::SimulatedFailure,
                ..
            }
        ));
    }
}
