//! Order analytics for campus food ordering. Counts `OrderPlaced`,
//! `InventoryReserved` and `InventoryFailed` events once each (by `eventId`)
//! in keyed state, and publishes the running numbers as a table: after each
//! counted event, the record keyed `totals` and, for an order, the record
//! keyed `minute/{YYYY-MM-DDTHH:MM}` of its minute. A compacted output topic
//! then holds the latest of each.
//!
//! The numbers are global, so this stage reads a single-partition topic that
//! both event topics are routed into (README.md explains the design).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_campus_events::{EventHeader, INVENTORY_FAILED, INVENTORY_RESERVED, ORDER_PLACED};
use weir_plugin::time::minute_bucket;
use weir_plugin::{Emitter, InitContext, Message, OutputId, Processor, export_processor};
use weir_plugin::{metrics, state};

/// `[stage.config]` of the order-analytics stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How long an event id is remembered to drop a redelivery of it (24 h
    /// by default). Memory grows with the event rate times this.
    #[serde(default = "default_dedup_ttl_ms")]
    pub dedup_ttl_ms: u64,
}

fn default_dedup_ttl_ms() -> u64 {
    24 * 3600 * 1000
}

/// The bucket of an order whose `createdAt` is missing or not a date-time.
pub const UNKNOWN_MINUTE: &str = "unknown";

/// The counters, kept in state under `totals` as the `totals` record's
/// JSON, so an interactive state query reads them as they are published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total_orders: u64,
    pub total_reservations: u64,
    pub failed_reservations: u64,
}

/// The `totals` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub total_orders: u64,
    /// Reservation answers: `InventoryReserved` plus `InventoryFailed`.
    pub total_reservations: u64,
    pub failed_reservations: u64,
    /// failed / total reservation answers, to 4 decimals; 0 when none.
    pub failure_rate: f64,
}

/// A `minute/{bucket}` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteOrders {
    pub minute: String,
    pub orders: u64,
}

impl Counts {
    fn decode(bytes: &[u8]) -> Counts {
        serde_json::from_slice::<Totals>(bytes)
            .map(|t| Counts {
                total_orders: t.total_orders,
                total_reservations: t.total_reservations,
                failed_reservations: t.failed_reservations,
            })
            .unwrap_or_default()
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.totals()).unwrap_or_default()
    }

    pub fn totals(&self) -> Totals {
        let failure_rate = if self.total_reservations == 0 {
            0.0
        } else {
            let rate = self.failed_reservations as f64 / self.total_reservations as f64;
            (rate * 10_000.0).round() / 10_000.0
        };
        Totals {
            total_orders: self.total_orders,
            total_reservations: self.total_reservations,
            failed_reservations: self.failed_reservations,
            failure_rate,
        }
    }
}

const TOTALS: &[u8] = b"totals";

fn u64_at(key: &[u8]) -> u64 {
    state::get(key)
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_le_bytes)
}

pub struct OrderAnalytics {
    out: OutputId,
    dedup_ttl: Duration,
}

impl Processor for OrderAnalytics {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config: Config = ctx.config()?;
        if config.dedup_ttl_ms == 0 {
            return Err("dedup_ttl_ms must be greater than 0".into());
        }
        Ok(OrderAnalytics {
            out: ctx.output("default")?,
            dedup_ttl: Duration::from_millis(config.dedup_ttl_ms),
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        if msg.partition() != 0 {
            return Err(format!(
                "event on partition {} of {}: order analytics keeps global counts \
                 and must read a single-partition topic",
                msg.partition(),
                msg.topic()
            ));
        }
        let event: EventHeader = msg.json()?;
        if event.event_id.is_empty() {
            return Err("eventId is empty".into());
        }
        let mut counts = Counts::decode(&state::get(TOTALS).unwrap_or_default());
        let mut minute = None;
        match event.event_type.as_str() {
            ORDER_PLACED => {
                counts.total_orders += 1;
                minute = Some(
                    event
                        .created_at
                        .as_deref()
                        .and_then(minute_bucket)
                        .unwrap_or_else(|| UNKNOWN_MINUTE.to_string()),
                );
            }
            INVENTORY_RESERVED => counts.total_reservations += 1,
            INVENTORY_FAILED => {
                counts.total_reservations += 1;
                counts.failed_reservations += 1;
            }
            other => return Err(format!("unknown eventType {other:?}")),
        }
        // Idempotent by event id: a redelivered or replayed event counts once.
        let seen = [b"event/", event.event_id.as_bytes()].concat();
        if state::get(&seen).is_some() {
            metrics::counter_add("duplicate_events", &[], 1);
            return Ok(());
        }
        state::set_with_ttl(&seen, &[], self.dedup_ttl);
        state::set(TOTALS, &counts.encode());
        out.emit_json(self.out, &counts.totals())?.key(TOTALS);
        if let Some(minute) = minute {
            let key = format!("minute/{minute}");
            let orders = u64_at(key.as_bytes()) + 1;
            state::set(key.as_bytes(), &orders.to_le_bytes());
            out.emit_json(self.out, &MinuteOrders { minute, orders })?
                .key(key.as_bytes());
        }
        Ok(())
    }
}

export_processor!(OrderAnalytics);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use weir_plugin::testing::{Harness, TestMessage, TestOutput, counter};

    fn event(id: &str, kind: &str, created_at: &str) -> TestMessage {
        TestMessage::json(&json!({
            "eventId": id, "eventType": kind, "orderId": "o", "createdAt": created_at
        }))
    }

    fn harness() -> Harness<OrderAnalytics> {
        Harness::<OrderAnalytics>::new(&["default"], json!({})).unwrap()
    }

    fn last_totals(outputs: &[TestOutput]) -> Value {
        outputs
            .iter()
            .rev()
            .find(|o| o.key.as_deref() == Some(TOTALS))
            .unwrap()
            .json()
    }

    #[test]
    fn counts_each_event_once() {
        let mut h = harness();
        let t = "2026-11-23T10:00:30Z";
        let results = h.process(&[
            event("e1", "OrderPlaced", t),
            event("e2", "OrderPlaced", "2026-11-23T10:01:00Z"),
            event("r1", "InventoryReserved", t),
            event("r2", "InventoryFailed", t),
            event("e1", "OrderPlaced", t),
            event("e3", "OrderPlaced", "not a time"),
        ]);
        let outputs: Vec<TestOutput> = results.into_iter().flat_map(Result::unwrap).collect();
        assert_eq!(
            last_totals(&outputs),
            json!({
                "total_orders": 3, "total_reservations": 2,
                "failed_reservations": 1, "failure_rate": 0.5
            })
        );
        assert_eq!(counter("duplicate_events", &[]), 1);
        let minutes: Vec<Value> = outputs
            .iter()
            .filter(|o| o.key.as_deref().is_some_and(|k| k.starts_with(b"minute/")))
            .map(TestOutput::json)
            .collect();
        assert_eq!(
            minutes,
            vec![
                json!({"minute": "2026-11-23T10:00", "orders": 1}),
                json!({"minute": "2026-11-23T10:01", "orders": 1}),
                json!({"minute": "unknown", "orders": 1}),
            ]
        );

        // A new instance continues from state, and still skips e1.
        let mut again = harness();
        assert!(
            again
                .process_one(event("e1", "OrderPlaced", t))
                .unwrap()
                .is_empty()
        );
        let out = again.process_one(event("e4", "OrderPlaced", t)).unwrap();
        assert_eq!(last_totals(&out)["total_orders"], 4);
        assert_eq!(
            out[1].json(),
            json!({"minute": "2026-11-23T10:00", "orders": 2})
        );
    }

    #[test]
    fn an_event_id_is_remembered_for_the_dedup_ttl_only() {
        use weir_plugin::testing::advance_clock;
        let config = json!({"dedup_ttl_ms": 60_000});
        let mut h = Harness::<OrderAnalytics>::new(&["default"], config).unwrap();
        let t = "2026-11-23T10:00:30Z";
        h.process_one(event("e1", "OrderPlaced", t)).unwrap();
        advance_clock(Duration::from_millis(59_999));
        assert!(
            h.process_one(event("e1", "OrderPlaced", t))
                .unwrap()
                .is_empty()
        );
        // A minute after it was counted, e1 is no longer known: a copy
        // arriving that late counts again (the totals themselves never expire).
        advance_clock(Duration::from_millis(1));
        let out = h.process_one(event("e1", "OrderPlaced", t)).unwrap();
        assert_eq!(last_totals(&out)["total_orders"], 2);

        let err = Harness::<OrderAnalytics>::new(&["default"], json!({"dedup_ttl_ms": 0}))
            .err()
            .unwrap();
        assert!(err.contains("dedup_ttl_ms"), "{err}");
    }

    #[test]
    fn failure_rate_has_four_decimals_and_is_zero_without_answers() {
        assert_eq!(Counts::default().totals().failure_rate, 0.0);
        let c = Counts {
            total_orders: 3,
            total_reservations: 3,
            failed_reservations: 1,
        };
        assert_eq!(c.totals().failure_rate, 0.3333);
        assert_eq!(Counts::decode(&c.encode()), c);
    }

    #[test]
    fn unknown_or_unreadable_events_are_rejected() {
        let mut h = harness();
        let err = h
            .process_one(event("x", "OrderCancelled", "2026-11-23T10:00:00Z"))
            .unwrap_err();
        assert!(err.contains("unknown eventType"), "{err}");
        assert!(
            h.process_one(TestMessage::new("{}"))
                .unwrap_err()
                .contains("eventId")
        );
        let err = h
            .process_one(event("e", "OrderPlaced", "").partition(2))
            .unwrap_err();
        assert!(err.contains("single-partition"), "{err}");
        // A rejected event is not marked seen.
        let out = h.process_one(event("x", "OrderPlaced", "")).unwrap();
        assert_eq!(last_totals(&out)["total_orders"], 1);
    }
}
