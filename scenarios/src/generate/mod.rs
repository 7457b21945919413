//! Scenario event generators: seeded, pure and deterministic.
//!
//! A [`Generator`] turns a seed and a wall clock into the events of one of
//! the repo's scenarios, in the schemas of `docs/schemas.md`:
//!
//! - [`Scenario::F1`]: the F1 Kafka demo's raw telemetry ([`f1`]);
//! - [`Scenario::Orders`]: campus food ordering's `OrderPlaced` ([`orders`]);
//! - [`Scenario::Fleet`]: fleet operations' `raw_telemetry` frames, with hard
//!   braking at known frames ([`fleet`]);
//! - [`Scenario::Cbad`]: JSON log lines for DriftLock's anomaly detection,
//!   with bursts of a changed template at known points ([`cbad`]);
//! - [`Scenario::Purple`]: racing telemetry, protobuf frames of cars lapping
//!   a track at 60 Hz, with known lap boundaries ([`purple`]).
//!
//! Nothing here does I/O or reads a clock: the caller passes `now_ms`, maps
//! each [`Destination`] to a topic and produces the event. The same
//! [`Settings`] and the same `now_ms` values give the same events, byte for
//! byte.

pub mod cbad;
pub mod f1;
pub mod fleet;
pub mod orders;
pub mod purple;
pub mod rng;

use serde_json::Value;

/// Which scenario a generator produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    F1,
    Orders,
    Fleet,
    Cbad,
    Purple,
}

impl Scenario {
    /// Every scenario, in the order of the enum.
    pub const ALL: [Scenario; 5] = [
        Scenario::F1,
        Scenario::Orders,
        Scenario::Fleet,
        Scenario::Cbad,
        Scenario::Purple,
    ];

    /// The name used in JSON (`f1`, `orders`, `fleet`, `cbad`, `purple`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::F1 => "f1",
            Scenario::Orders => "orders",
            Scenario::Fleet => "fleet",
            Scenario::Cbad => "cbad",
            Scenario::Purple => "purple",
        }
    }

    /// Where this scenario's generated events go.
    pub fn destination(self) -> Destination {
        match self {
            Scenario::F1 => Destination::F1Raw,
            Scenario::Orders => Destination::Orders,
            Scenario::Fleet => Destination::FleetRaw,
            Scenario::Cbad => Destination::CbadEvents,
            Scenario::Purple => Destination::PurpleTelemetry,
        }
    }
}

/// The logical topic an event goes to; the caller maps it to a topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `{prefix}.telemetry.raw` (F1).
    F1Raw,
    /// `orders` (campus).
    Orders,
    /// `raw_telemetry` (fleet).
    FleetRaw,
    /// `driftlock-events` (DriftLock).
    CbadEvents,
    /// `telemetry` (racing telemetry, protobuf).
    PurpleTelemetry,
}

/// One event to produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub destination: Destination,
    pub key: String,
    /// JSON; a protobuf `TelemetryFrame` for the purple scenario.
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Event {
    /// The event's value as JSON: itself, or a protobuf frame decoded
    /// (`Null` if it is neither).
    pub fn json(&self) -> Value {
        match self.destination {
            Destination::PurpleTelemetry => weir_purple_telemetry::decode(&self.value)
                .ok()
                .and_then(|f| serde_json::to_value(weir_purple_telemetry::FrameJson::from(&f)).ok())
                .unwrap_or(Value::Null),
            _ => serde_json::from_slice(&self.value).unwrap_or(Value::Null),
        }
    }
}

/// What a generator is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    /// A label unique to this run, used in ids (orderId, run_id, event ids) so
    /// that two runs never collide (the campus food-ordering service's load test reused ids and a second run was silently deduplicated).
    pub run_id: String,
    /// SKUs orders draw from (e.g. the inventory stage's stock keys); default ["burrito","bowl","salad"].
    pub skus: Vec<String>,
    /// Max quantity per order line (default 3).
    pub max_qty: u32,
    /// The purple scenario's sessions and lap time.
    pub purple: purple::PurpleSettings,
}

/// The SKUs orders draw from when none are given.
pub const DEFAULT_SKUS: [&str; 3] = ["burrito", "bowl", "salad"];

/// The default max quantity per order line.
pub const DEFAULT_MAX_QTY: u32 = 3;

impl Settings {
    /// Settings with the default SKUs and max quantity.
    pub fn new(seed: u64, run_id: impl Into<String>) -> Self {
        Settings {
            seed,
            run_id: run_id.into(),
            skus: DEFAULT_SKUS.iter().map(|s| s.to_string()).collect(),
            max_qty: DEFAULT_MAX_QTY,
            purple: purple::PurpleSettings::default(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::new(0, "run")
    }
}

/// A scenario's event source. (`Sync` as well as `Send`, so a task may hold
/// `&dyn Generator` across an `.await`; every generator here is plain data.)
pub trait Generator: Send + Sync {
    /// The next event; `now_ms` is the wall clock (ms since the Unix epoch) used for event times.
    fn next(&mut self, now_ms: i64) -> Event;
    /// A copy of `event` marked as a duplicate, as the F1 Kafka demo's duplicate fault re-sends it
    /// (for F1: the same JSON with `"duplicate": true`; for other scenarios the same bytes).
    fn duplicate(&self, event: &Event) -> Event;
}

/// A generator of `scenario`'s events.
pub fn generator(scenario: Scenario, settings: &Settings) -> Box<dyn Generator> {
    match scenario {
        Scenario::F1 => Box::new(f1::F1::new(settings)),
        Scenario::Orders => Box::new(orders::Orders::new(settings)),
        Scenario::Fleet => Box::new(fleet::Fleet::new(settings)),
        Scenario::Cbad => Box::new(cbad::Cbad::new(settings)),
        Scenario::Purple => Box::new(purple::Purple::new(settings, &settings.purple)),
    }
}

/// Builds one `OrderPlaced` from a `/produce` body `{orderId?, items?}`, as the campus food-ordering service took it: missing orderId gets a
/// fresh unique id (`{run_id}-manual-{n}`), missing items one random line.
///
/// `items`, when given, is passed through as it is (the inventory stage
/// answers bad items with `InventoryFailed` / `INVALID_ORDER`). The
/// `eventId` is `{run_id}-manual-evt-{n}`, so it is unique even when the
/// caller repeats an `orderId`. The random line depends only on
/// `settings.seed` and `n`.
pub fn order_from_request(
    order_id: Option<String>,
    items: Option<Value>,
    settings: &Settings,
    n: u64,
    now_ms: i64,
) -> Event {
    let run = &settings.run_id;
    let order_id = order_id.unwrap_or_else(|| format!("{run}-manual-{n}"));
    let items = items.unwrap_or_else(|| {
        let mut rng = rng::Rng::derived(settings.seed, 0x6d61_6e75_616c ^ n);
        let (sku, qty) = orders::line(&mut rng, settings);
        serde_json::json!([{ "sku": sku, "qty": qty }])
    });
    orders::order_placed(format!("{run}-manual-evt-{n}"), order_id, items, now_ms)
}

/// Generated timestamps are formatted as plugins format theirs.
pub use weir_time::format_rfc3339_ms;

/// `x` rounded to `decimals` places, for readable JSON.
fn round(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// `value` as JSON bytes (serializing a `Value` cannot fail).
fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scenario_names_round_trip() {
        for s in Scenario::ALL {
            let text = serde_json::to_string(&s).unwrap();
            assert_eq!(text, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Scenario>(&text).unwrap(), s);
        }
        assert!(serde_json::from_str::<Scenario>("\"F1\"").is_err());
    }

    #[test]
    fn every_scenario_is_deterministic_and_goes_to_its_destination() {
        let settings = Settings::new(42, "r1");
        for s in Scenario::ALL {
            let (mut a, mut b) = (generator(s, &settings), generator(s, &settings));
            let mut c = generator(s, &Settings::new(43, "r1"));
            let mut differs = false;
            for i in 0..500 {
                let now = 1_700_000_000_000 + i * 10;
                let (ea, eb, ec) = (a.next(now), b.next(now), c.next(now));
                assert_eq!(ea, eb, "{s:?} event {i}");
                assert_eq!(ea.destination, s.destination());
                if s == Scenario::Purple {
                    weir_purple_telemetry::decode(&ea.value).unwrap();
                } else {
                    serde_json::from_slice::<Value>(&ea.value).unwrap();
                }
                differs |= ea.value != ec.value;
            }
            assert!(differs, "{s:?}: another seed gave the same events");
        }
    }

    #[test]
    fn every_event_reads_as_a_json_object() {
        let settings = Settings::new(3, "r");
        for s in Scenario::ALL {
            let e = generator(s, &settings).next(1_700_000_000_000);
            assert!(e.json().is_object(), "{s:?}: {}", e.json());
        }
        let mut purple = generator(Scenario::Purple, &settings);
        purple.next(1_700_000_000_000);
        let second = purple.next(1_700_000_000_000).json();
        assert_eq!(second["lapNumber"], 1);
        assert!(second["normalizedPosition"].is_number(), "{second}");
    }

    #[test]
    fn duplicates_of_non_f1_events_are_the_same_bytes() {
        let settings = Settings::new(1, "r");
        for s in [
            Scenario::Orders,
            Scenario::Fleet,
            Scenario::Cbad,
            Scenario::Purple,
        ] {
            let mut g = generator(s, &settings);
            let e = g.next(1_700_000_000_000);
            assert_eq!(g.duplicate(&e), e);
        }
    }

    #[test]
    fn order_from_request_fills_in_what_is_missing() {
        let mut settings = Settings::new(5, "run-7");
        settings.skus = vec!["taco".into(), "pho".into()];
        settings.max_qty = 4;
        let now = 1_700_000_000_123;

        // Nothing given: a fresh id and one random line from the SKUs.
        let e = order_from_request(None, None, &settings, 3, now);
        assert_eq!(e.destination, Destination::Orders);
        assert_eq!(e.key, "run-7-manual-3");
        let v: Value = serde_json::from_slice(&e.value).unwrap();
        assert_eq!(v["eventType"], "OrderPlaced");
        assert_eq!(v["orderId"], "run-7-manual-3");
        assert_eq!(v["eventId"], "run-7-manual-evt-3");
        assert_eq!(v["createdAt"], "2023-11-14T22:13:20.123Z");
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert!(settings.skus.iter().any(|s| items[0]["sku"] == s.as_str()));
        assert!((1..=4).contains(&items[0]["qty"].as_u64().unwrap()));
        // Deterministic in (seed, n).
        assert_eq!(order_from_request(None, None, &settings, 3, now), e);

        // Both given: kept as they are, whatever the items.
        let items = json!([{"sku": "unknown", "qty": 0}]);
        let e = order_from_request(Some("o-1".into()), Some(items.clone()), &settings, 4, now);
        assert_eq!(e.key, "o-1");
        let v: Value = serde_json::from_slice(&e.value).unwrap();
        assert_eq!(v["orderId"], "o-1");
        assert_eq!(v["items"], items);
        assert_eq!(v["eventId"], "run-7-manual-evt-4");

        // The same orderId twice still gives two events.
        let again = order_from_request(Some("o-1".into()), Some(items), &settings, 5, now);
        let w: Value = serde_json::from_slice(&again.value).unwrap();
        assert_ne!(w["eventId"], v["eventId"]);

        // Ids never collide across n, nor with the generator's ids.
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|n| order_from_request(None, None, &settings, n, now).key)
            .collect();
        assert_eq!(ids.len(), 1000);
        let mut g = generator(Scenario::Orders, &settings);
        for _ in 0..1000 {
            assert!(!ids.contains(&g.next(now).key));
        }
    }
}
