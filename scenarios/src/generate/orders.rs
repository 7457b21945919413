//! The `OrderPlaced` events of campus food ordering, keyed by
//! `orderId`:
//!
//! ```json
//! {"eventId": "{run_id}-evt-00000000", "eventType": "OrderPlaced",
//!  "orderId": "{run_id}-00000000", "items": [{"sku": "bowl", "qty": 2}],
//!  "createdAt": "2024-01-15T10:23:45.123Z"}
//! ```
//!
//! Order `n` (from 0) has `orderId` `{run_id}-{n:08}` and `eventId`
//! `{run_id}-evt-{n:08}`: unique within a run, and across runs as long as
//! their `run_id`s differ. Each order has 1-3 lines of distinct SKUs (as
//! many as there are SKUs, if fewer) drawn from [`Settings::skus`], each
//! with a `qty` in `1..=max_qty`.

use serde_json::{Value, json};

use super::rng::Rng;
use super::{DEFAULT_SKUS, Destination, Event, Generator, Settings, format_rfc3339_ms, to_bytes};

/// The generator's sub-stream of the seed.
const STREAM: u64 = 2;

/// Most lines in a generated order.
pub const MAX_LINES: u64 = 3;

pub struct Orders {
    rng: Rng,
    settings: Settings,
    n: u64,
}

impl Orders {
    pub fn new(settings: &Settings) -> Self {
        Orders {
            rng: Rng::derived(settings.seed, STREAM),
            settings: settings.clone(),
            n: 0,
        }
    }
}

/// The SKUs to draw from: the settings', or the defaults when there are
/// none.
fn skus(settings: &Settings) -> Vec<&str> {
    if settings.skus.is_empty() {
        DEFAULT_SKUS.to_vec()
    } else {
        settings.skus.iter().map(String::as_str).collect()
    }
}

/// A quantity in `1..=max_qty` (1 when `max_qty` is 0).
fn qty(rng: &mut Rng, settings: &Settings) -> u64 {
    rng.between(1, u64::from(settings.max_qty.max(1)))
}

/// One random order line (sku, qty).
pub(super) fn line(rng: &mut Rng, settings: &Settings) -> (String, u64) {
    let skus = skus(settings);
    let sku = rng.pick(&skus).to_string();
    (sku, qty(rng, settings))
}

/// An `OrderPlaced` event.
pub(super) fn order_placed(event_id: String, order_id: String, items: Value, now_ms: i64) -> Event {
    let value = json!({
        "eventId": event_id,
        "eventType": "OrderPlaced",
        "orderId": order_id,
        "items": items,
        "createdAt": format_rfc3339_ms(now_ms),
    });
    Event {
        destination: Destination::Orders,
        key: order_id,
        value: to_bytes(&value),
        headers: Vec::new(),
    }
}

impl Generator for Orders {
    fn next(&mut self, now_ms: i64) -> Event {
        let n = self.n;
        self.n += 1;
        let mut skus = skus(&self.settings);
        let lines = self.rng.between(1, MAX_LINES).min(skus.len() as u64) as usize;
        // A partial Fisher-Yates shuffle: `lines` distinct SKUs.
        for i in 0..lines {
            let j = i + self.rng.below((skus.len() - i) as u64) as usize;
            skus.swap(i, j);
        }
        let items: Vec<Value> = skus[..lines]
            .iter()
            .map(|sku| json!({"sku": sku, "qty": qty(&mut self.rng, &self.settings)}))
            .collect();
        let run = &self.settings.run_id;
        order_placed(
            format!("{run}-evt-{n:08}"),
            format!("{run}-{n:08}"),
            Value::Array(items),
            now_ms,
        )
    }

    fn duplicate(&self, event: &Event) -> Event {
        event.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn run(settings: &Settings, n: usize) -> Vec<Event> {
        let mut g = Orders::new(settings);
        (0..n)
            .map(|i| g.next(1_700_000_000_000 + i as i64))
            .collect()
    }

    #[test]
    fn deterministic() {
        let s = Settings::new(9, "r");
        assert_eq!(run(&s, 2000), run(&s, 2000));
        assert_ne!(run(&s, 50), run(&Settings::new(10, "r"), 50));
    }

    #[test]
    fn orders_follow_the_schema_and_the_settings() {
        let mut s = Settings::new(3, "load-1");
        s.skus = vec!["a".into(), "b".into(), "c".into(), "d".into()];
        s.max_qty = 5;
        let mut order_ids = HashSet::new();
        let mut event_ids = HashSet::new();
        let mut lines = HashMap::new();
        let mut qtys = HashSet::new();
        let mut skus_seen = HashSet::new();
        for (n, e) in run(&s, 10_000).into_iter().enumerate() {
            assert_eq!(e.destination, Destination::Orders);
            let v: Value = serde_json::from_slice(&e.value).unwrap();
            assert_eq!(v["eventType"], "OrderPlaced");
            assert_eq!(v["orderId"], e.key.as_str());
            assert_eq!(e.key, format!("load-1-{n:08}"));
            assert_eq!(v["eventId"], format!("load-1-evt-{n:08}"));
            assert_eq!(
                v["createdAt"],
                format_rfc3339_ms(1_700_000_000_000 + n as i64).as_str()
            );
            assert!(order_ids.insert(e.key.clone()));
            assert!(event_ids.insert(v["eventId"].as_str().unwrap().to_string()));
            let items = v["items"].as_array().unwrap();
            *lines.entry(items.len()).or_insert(0) += 1;
            let mut in_order = HashSet::new();
            for item in items {
                let sku = item["sku"].as_str().unwrap();
                assert!(s.skus.iter().any(|k| k == sku), "{sku}");
                assert!(in_order.insert(sku.to_string()), "repeated {sku}");
                skus_seen.insert(sku.to_string());
                let q = item["qty"].as_u64().unwrap();
                assert!((1..=5).contains(&q));
                qtys.insert(q);
            }
        }
        assert_eq!(
            lines.keys().copied().collect::<HashSet<_>>(),
            HashSet::from([1, 2, 3])
        );
        assert_eq!(qtys.len(), 5);
        assert_eq!(skus_seen.len(), 4);
    }

    #[test]
    fn few_skus_and_odd_settings() {
        let mut s = Settings::new(3, "r");
        s.skus = vec!["only".into()];
        s.max_qty = 0;
        for e in run(&s, 200) {
            let v: Value = serde_json::from_slice(&e.value).unwrap();
            assert_eq!(v["items"], json!([{"sku": "only", "qty": 1}]));
        }
        s.skus.clear();
        for e in run(&s, 200) {
            let v: Value = serde_json::from_slice(&e.value).unwrap();
            for item in v["items"].as_array().unwrap() {
                assert!(DEFAULT_SKUS.contains(&item["sku"].as_str().unwrap()));
            }
        }
    }

    #[test]
    fn two_runs_never_share_ids() {
        let a: HashSet<String> = run(&Settings::new(1, "run-a"), 1000)
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert!(
            run(&Settings::new(1, "run-b"), 1000)
                .iter()
                .all(|e| !a.contains(&e.key))
        );
    }
}
