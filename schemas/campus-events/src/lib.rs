//! The events of the campus food-ordering scenario, as they
//! travel on the `orders` and `inventory-events` topics, keyed by `orderId`.
//! Field names are the ordering service's (camelCase), so its producers and consumers
//! keep working. `docs/schemas.md` has the same in tables.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const ORDER_PLACED: &str = "OrderPlaced";
pub const INVENTORY_RESERVED: &str = "InventoryReserved";
pub const INVENTORY_FAILED: &str = "InventoryFailed";

/// An order, on `orders`. Read leniently: `items` stays raw JSON so that an
/// order with bad items gets an `InventoryFailed` answer with reason
/// `INVALID_ORDER` instead of being dead-lettered as unreadable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPlaced {
    pub event_id: String,
    pub event_type: String,
    pub order_id: String,
    /// `[{sku, qty}]`; see [`OrderPlaced::lines`].
    #[serde(default)]
    pub items: Value,
    #[serde(default)]
    pub created_at: Option<String>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub qty: i64,
}

impl OrderPlaced {
    /// The order's lines, or why the order is invalid: no items, an item
    /// that is not `{sku, qty}`, or a quantity that is not a positive integer.
    pub fn lines(&self) -> Result<Vec<Item>, String> {
        let items = match &self.items {
            Value::Array(items) if !items.is_empty() => items,
            Value::Array(_) | Value::Null => return Err("the order has no items".into()),
            other => return Err(format!("items is not a list: {other}")),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let sku = item.get("sku").and_then(Value::as_str);
                let qty = item.get("qty").and_then(Value::as_i64);
                match (sku, qty) {
                    (Some(sku), Some(qty)) if qty > 0 && !sku.is_empty() => Ok(Item {
                        sku: sku.to_string(),
                        qty,
                    }),
                    (Some(_), Some(qty)) if qty <= 0 => {
                        Err(format!("item {i}: qty must be positive, got {qty}"))
                    }
                    _ => Err(format!(
                        "item {i} is not {{sku: string, qty: positive integer}}: {item}"
                    )),
                }
            })
            .collect()
    }
}

/// Why a reservation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureReason {
    /// A SKU has less stock than the order asks for (`sku` names it).
    OutOfStock,
    /// No items, a quantity ≤ 0, or a SKU the stock does not know.
    InvalidOrder,
    /// Failed on purpose by the stage's `fail_rate` (the ordering service's
    /// `INVENTORY_FAIL_RATE`).
    SimulatedFailure,
}

/// The answer to an order, on `inventory-events`, keyed by `orderId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "eventType")]
pub enum InventoryEvent {
    #[serde(rename_all = "camelCase")]
    InventoryReserved {
        event_id: String,
        order_id: String,
        reserved_at: String,
        created_at: String,
    },
    #[serde(rename_all = "camelCase")]
    InventoryFailed {
        event_id: String,
        order_id: String,
        reason: FailureReason,
        /// The SKU that was short or unknown, when one was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sku: Option<String>,
        /// A sentence for people.
        detail: String,
        created_at: String,
    },
}

/// What order analytics needs of any event on either topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventHeader {
    pub event_id: String,
    pub event_type: String,
    #[serde(default)]
    pub created_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(items: Value) -> OrderPlaced {
        serde_json::from_value(json!({
            "eventId": "e1", "eventType": "OrderPlaced", "orderId": "o1",
            "items": items, "createdAt": "2026-11-23T10:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn lines_accept_positive_integer_quantities_only() {
        assert_eq!(
            order(json!([{"sku": "burrito", "qty": 2}]))
                .lines()
                .unwrap(),
            vec![Item {
                sku: "burrito".into(),
                qty: 2
            }]
        );
        for (items, why) in [
            (json!([]), "no items"),
            (Value::Null, "no items"),
            (json!("burrito"), "not a list"),
            (json!([{"sku": "burrito", "qty": 0}]), "must be positive"),
            (json!([{"sku": "burrito", "qty": -1}]), "must be positive"),
            (json!([{"sku": "burrito", "qty": 1.5}]), "is not"),
            (json!([{"sku": "burrito"}]), "is not"),
            (json!([{"qty": 1}]), "is not"),
        ] {
            let err = order(items.clone()).lines().unwrap_err();
            assert!(err.contains(why), "{items}: {err}");
        }
    }

    #[test]
    fn inventory_events_have_the_seed_shape() {
        let failed = InventoryEvent::InventoryFailed {
            event_id: "inv-o1".into(),
            order_id: "o1".into(),
            reason: FailureReason::OutOfStock,
            sku: Some("burrito".into()),
            detail: "burrito: 0 left, 1 asked".into(),
            created_at: "2026-11-23T10:00:00.000Z".into(),
        };
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            json!({
                "eventType": "InventoryFailed", "eventId": "inv-o1", "orderId": "o1",
                "reason": "OUT_OF_STOCK", "sku": "burrito",
                "detail": "burrito: 0 left, 1 asked", "createdAt": "2026-11-23T10:00:00.000Z"
            })
        );
        let reserved = InventoryEvent::InventoryReserved {
            event_id: "inv-o1".into(),
            order_id: "o1".into(),
            reserved_at: "t".into(),
            created_at: "t".into(),
        };
        let v = serde_json::to_value(&reserved).unwrap();
        assert_eq!(v["eventType"], "InventoryReserved");
        assert_eq!(v["reservedAt"], "t");
        let header: EventHeader = serde_json::from_value(v).unwrap();
        assert_eq!(header.event_id, "inv-o1");
    }
}
