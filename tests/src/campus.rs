//! The campus food-ordering scenario as the durable-state tests run it:
//! `order-intake` (passthrough) feeding `inventory` (campus-inventory) one
//! SKU with a stock that runs out, and the orders and answers around it.

use std::collections::BTreeMap;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use serde_json::{Value, json};

/// The one SKU the orders buy.
pub const SKU: &str = "burrito";

/// The pipeline: `orders` (3 partitions) -> order-intake ->
/// `inventory.requests` (1 partition: one stock model) -> inventory ->
/// `inventory-events`, dead letters to `dead-letter`. `kafka` is the body of
/// the `[kafka]` table (empty for the defaults; the broker, prefix and group
/// come from the environment); `intake` adds settings to the order-intake
/// stage (`state = "none"`, say).
pub fn inventory_pipeline(kafka: &str, stock: usize, intake: &str) -> String {
    format!(
        r#"
[kafka]
{kafka}

[[topic]]
name = "{{prefix}}.orders"
partitions = 3
# One partition: one stock model (plugins/campus-inventory/README.md).
[[topic]]
name = "{{prefix}}.inventory.requests"
partitions = 1
[[topic]]
name = "{{prefix}}.inventory-events"
partitions = 3
[[topic]]
name = "{{prefix}}.dead-letter"
partitions = 1

[[stage]]
name = "order-intake"
plugin = "{passthrough}"
inputs = ["{{prefix}}.orders"]
outputs = {{ default = "{{prefix}}.inventory.requests" }}
dead_letter = "{{prefix}}.dead-letter"
{intake}

[[stage]]
name = "inventory"
plugin = "{inventory}"
inputs = ["{{prefix}}.inventory.requests"]
outputs = {{ default = "{{prefix}}.inventory-events" }}
dead_letter = "{{prefix}}.dead-letter"

[stage.config]
fail_rate = 0.0

[stage.config.stock]
{SKU} = {stock}
"#,
        passthrough = weir_test_programs::PASSTHROUGH,
        inventory = weir_test_programs::CAMPUS_INVENTORY,
    )
}

pub fn order_id(i: usize) -> String {
    format!("order-{i:06}")
}

/// An `OrderPlaced` for one burrito, keyed by its order id, as the campus
/// food-ordering service's producer sends it; the same `i` gives the same
/// record (a re-send).
pub fn order(i: usize) -> (String, Vec<u8>) {
    let id = order_id(i);
    let value = json!({
        "eventId": format!("evt-{id}"), "eventType": "OrderPlaced", "orderId": id,
        "items": [{"sku": SKU, "qty": 1}], "createdAt": "2026-11-23T10:00:00Z"
    });
    (id, value.to_string().into_bytes())
}

/// The answers among `messages`, by order id: their kinds
/// (`InventoryReserved`, or `InventoryFailed/REASON`), in order.
pub fn answers<'m>(
    messages: impl IntoIterator<Item = &'m OwnedMessage>,
) -> BTreeMap<String, Vec<String>> {
    let mut by_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in messages {
        let v: Value =
            serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or(Value::Null);
        let id = v["orderId"].as_str().unwrap_or("?").to_string();
        let kind = match (v["eventType"].as_str(), v["reason"].as_str()) {
            (Some(t), Some(reason)) => format!("{t}/{reason}"),
            (Some(t), None) => t.to_string(),
            _ => format!("unreadable: {v}"),
        };
        by_order.entry(id).or_default().push(kind);
    }
    by_order
}
