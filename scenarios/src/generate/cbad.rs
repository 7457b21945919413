//! JSON log lines for DriftLock's anomaly detection, on `driftlock-events`,
//! for the streams [`STREAMS`] (`checkout`, `search`, `payments`) in turn.
//!
//! Event `i` is event `j = i / 3` of stream `STREAMS[i % 3]`. Each line
//! comes from a handful of templates per stream, with the ids, latencies,
//! amounts, timestamps and addresses that make real logs noisy. It is keyed
//! by the stream id, carries it in the `X-Stream-Id` header and in
//! `metadata.stream_id`, and has a unique `event_id`
//! (`{run_id}-{stream}-{j:08}`) and `timestamp` = `now_ms`.
//!
//! **Change points**: events `j` of a stream with `j % BURST_EVERY` in
//! `BURST_START..BURST_START + BURST_LEN` (2000..2300, 7000..7300, ...) are a
//! burst of a changed template: `ERROR` lines with a Java stack trace
//! ([`in_burst`]). No other line is an `ERROR` or has a `stack_trace`.
//! With the pipeline's `baseline = 400` and `window = 50`, each burst is
//! long enough for several windows to see it.

use std::ops::Range;

use serde_json::{Value, json};

use super::rng::Rng;
use super::{Destination, Event, Generator, Settings, format_rfc3339_ms, to_bytes};

/// The streams, in the order they take turns.
pub const STREAMS: [&str; 3] = ["checkout", "search", "payments"];

/// Bursts repeat every this many events of a stream.
pub const BURST_EVERY: u64 = 5000;

/// A burst starts at this event of a stream (modulo [`BURST_EVERY`]).
pub const BURST_START: u64 = 2000;

/// Events in a burst.
pub const BURST_LEN: u64 = 300;

/// The header DriftLock reads the stream id from.
pub const STREAM_HEADER: &str = "X-Stream-Id";

/// The generator's sub-stream of the seed.
const STREAM: u64 = 4;

/// Whether event `j` of a stream (counting from 0) is in a burst of the
/// changed template.
pub fn in_burst(j: u64) -> bool {
    (BURST_START..BURST_START + BURST_LEN).contains(&(j % BURST_EVERY))
}

/// The bursts among the first `events` events of each stream.
pub fn bursts(events: u64) -> Vec<Range<u64>> {
    (0..events.div_ceil(BURST_EVERY))
        .map(|k| k * BURST_EVERY + BURST_START)
        .filter(|&start| start < events)
        .map(|start| start..(start + BURST_LEN).min(events))
        .collect()
}

pub struct Cbad {
    rng: Rng,
    run_id: String,
    n: u64,
}

impl Cbad {
    pub fn new(settings: &Settings) -> Self {
        Cbad {
            rng: Rng::derived(settings.seed, STREAM),
            run_id: settings.run_id.clone(),
            n: 0,
        }
    }

    fn n(&mut self, below: u64) -> u64 {
        self.rng.below(below)
    }

    fn uuid(&mut self) -> String {
        let r = &mut self.rng;
        format!(
            "{}-{}-4{}-a{}-{}",
            r.hex(8),
            r.hex(4),
            r.hex(3),
            r.hex(3),
            r.hex(12)
        )
    }

    fn amount(&mut self) -> String {
        format!("{}.{:02}", 1 + self.n(300), self.n(100))
    }

    /// (level, logger, message) of a usual line of `stream`.
    fn usual(&mut self, stream: &str) -> (&'static str, String, String) {
        let pick = self.n(10);
        match (stream, pick) {
            ("checkout", 0..=3) => {
                let (id, ms) = (self.n(100_000), 5 + self.n(300));
                let m = format!("POST /api/checkout/{id} 200 in {ms}ms");
                ("INFO", "checkout-api".into(), m)
            }
            ("checkout", 4 | 5) => {
                let (order, user) = (self.uuid(), self.n(100_000));
                let m = format!("order {order} created for user u{user}");
                ("INFO", "checkout-orders".into(), m)
            }
            ("checkout", 6 | 7) => {
                let (cart, items, total) = (self.n(100_000), 1 + self.n(8), self.amount());
                let m = format!("cart {cart} priced: {items} items, total {total} EUR");
                ("DEBUG", "checkout-pricing".into(), m)
            }
            ("checkout", _) => {
                let ms = 1000 + self.n(4000);
                let m = format!("slow payment authorization took {ms}ms");
                ("WARN", "checkout-api".into(), m)
            }
            ("search", 0..=3) => {
                let terms = [
                    "shoes",
                    "laptop",
                    "coffee",
                    "desk lamp",
                    "headphones",
                    "tent",
                ];
                let term = *self.rng.pick(&terms);
                let (ms, hits) = (2 + self.n(150), self.n(5000));
                let m = format!("GET /api/search?q={term} 200 in {ms}ms, {hits} hits");
                ("INFO", "search-api".into(), m)
            }
            ("search", 4..=6) => {
                let hash = self.rng.hex(16);
                let m = format!("cache hit for query {hash}");
                ("DEBUG", "search-cache".into(), m)
            }
            ("search", 7 | 8) => {
                let (shard, ms) = (self.n(32), 10 + self.n(900));
                let m = format!("index shard {shard} refreshed in {ms}ms");
                ("INFO", "search-indexer".into(), m)
            }
            ("search", _) => {
                let (shard, ms) = (self.n(32), 500 + self.n(2000));
                let m = format!("query timed out on shard {shard} after {ms}ms");
                ("WARN", "search-api".into(), m)
            }
            (_, 0..=3) => {
                let (pid, amount, merchant) = (self.rng.hex(24), self.amount(), self.n(500));
                let m = format!(
                    "authorized payment pay_{pid} of {amount} EUR for merchant m{merchant}"
                );
                ("INFO", "payments-auth".into(), m)
            }
            (_, 4 | 5) => {
                let (merchant, ms) = (self.n(500), 20 + self.n(800));
                let m = format!(
                    "webhook delivered to https://merchant{merchant}.example.com/hooks in {ms}ms"
                );
                ("INFO", "payments-webhooks".into(), m)
            }
            (_, 6) => {
                let last4 = 1000 + self.n(9000);
                let m = format!("3DS challenge started for card ****{last4}");
                ("DEBUG", "payments-3ds".into(), m)
            }
            (_, 7 | 8) => {
                let (user, a, b) = (self.n(100_000), self.n(256), self.n(256));
                let m = format!("user u{user}@example.com logged in from 10.0.{a}.{b}");
                ("INFO", "payments-auth".into(), m)
            }
            (_, _) => {
                let (pid, attempt) = (self.rng.hex(24), 2 + self.n(3));
                let m = format!("retrying capture pay_{pid}: attempt {attempt}");
                ("WARN", "payments-capture".into(), m)
            }
        }
    }

    /// An `ERROR` line with a stack trace: the changed template.
    fn burst(&mut self, stream: &str, base: &mut serde_json::Map<String, Value>) {
        let (package, controller) = match stream {
            "checkout" => ("com.shop.checkout", "CheckoutController"),
            "search" => ("com.shop.search", "SearchController"),
            _ => ("com.shop.payments", "PaymentController"),
        };
        let (class, exception, message) = match self.n(3) {
            0 => (
                "OrderService",
                "java.lang.NullPointerException",
                "Cannot invoke \"com.shop.Order.getItems()\" because \"order\" is null".to_string(),
            ),
            1 => (
                "OrderRepository",
                "java.sql.SQLTransientConnectionException",
                format!(
                    "HikariPool-1 - Connection is not available, request timed out after {}ms",
                    30_000 + self.n(5) * 1000
                ),
            ),
            _ => (
                "InventoryClient",
                "java.lang.IllegalStateException",
                format!("reservation {} failed", self.uuid()),
            ),
        };
        let (line, caller, thread) = (20 + self.n(400), 10 + self.n(200), self.n(200));
        base.insert("level".into(), json!("ERROR"));
        base.insert("logger".into(), json!(format!("{package}.{class}")));
        base.insert("message".into(), json!(format!("{exception}: {message}")));
        base.insert("exception".into(), json!(exception));
        base.insert(
            "stack_trace".into(),
            json!(format!(
                "{exception}: {message}\n\tat {package}.{class}.process({class}.java:{line})\n\tat {package}.{controller}.handle({controller}.java:{caller})\n\tat org.springframework.web.servlet.FrameworkServlet.service(FrameworkServlet.java:897)\n\tat org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:166)"
            )),
        );
        base.insert(
            "thread".into(),
            json!(format!("http-nio-8080-exec-{thread}")),
        );
    }
}

impl Generator for Cbad {
    fn next(&mut self, now_ms: i64) -> Event {
        let stream = STREAMS[(self.n % STREAMS.len() as u64) as usize];
        let j = self.n / STREAMS.len() as u64;
        self.n += 1;
        let trace_id = self.rng.hex(32);
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), json!(format_rfc3339_ms(now_ms)));
        line.insert(
            "event_id".into(),
            json!(format!("{}-{stream}-{j:08}", self.run_id)),
        );
        line.insert("trace_id".into(), json!(trace_id));
        line.insert("metadata".into(), json!({ "stream_id": stream }));
        if in_burst(j) {
            self.burst(stream, &mut line);
        } else {
            let (level, logger, message) = self.usual(stream);
            line.insert("level".into(), json!(level));
            line.insert("logger".into(), json!(logger));
            line.insert("message".into(), json!(message));
        }
        Event {
            destination: Destination::CbadEvents,
            key: stream.to_string(),
            value: to_bytes(&Value::Object(line)),
            headers: vec![(STREAM_HEADER.to_string(), stream.to_string())],
        }
    }

    fn duplicate(&self, event: &Event) -> Event {
        event.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    const T0: i64 = 1_700_000_000_000;

    fn run(settings: &Settings, n: usize) -> Vec<Event> {
        let mut g = Cbad::new(settings);
        (0..n).map(|i| g.next(T0 + i as i64)).collect()
    }

    #[test]
    fn deterministic() {
        let s = Settings::new(21, "r");
        assert_eq!(run(&s, 3000), run(&s, 3000));
        assert_ne!(run(&s, 30), run(&Settings::new(22, "r"), 30));
    }

    #[test]
    fn burst_schedule() {
        assert!(!in_burst(1999));
        assert!(in_burst(2000));
        assert!(in_burst(2299));
        assert!(!in_burst(2300));
        assert!(in_burst(7000));
        assert_eq!(bursts(2000), vec![]);
        assert_eq!(bursts(2100), vec![2000..2100]);
        assert_eq!(bursts(10_000), vec![2000..2300, 7000..7300]);
    }

    #[test]
    fn streams_take_turns_with_ids_and_changes_where_documented() {
        let per_stream = 7_400;
        let events = run(&Settings::new(5, "cbad-run"), per_stream * 3);
        let mut ids = HashSet::new();
        let mut messages: HashMap<&str, HashSet<String>> = HashMap::new();
        let mut errors: HashMap<&str, Vec<u64>> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            let stream = STREAMS[i % 3];
            let j = (i / 3) as u64;
            assert_eq!(e.destination, Destination::CbadEvents);
            assert_eq!(e.key, stream);
            assert_eq!(
                e.headers,
                vec![("X-Stream-Id".to_string(), stream.to_string())]
            );
            let v: Value = serde_json::from_slice(&e.value).unwrap();
            assert_eq!(v["metadata"]["stream_id"], stream);
            assert_eq!(v["event_id"], format!("cbad-run-{stream}-{j:08}").as_str());
            assert!(ids.insert(v["event_id"].as_str().unwrap().to_string()));
            assert_eq!(v["timestamp"], format_rfc3339_ms(T0 + i as i64).as_str());
            assert_eq!(v["trace_id"].as_str().unwrap().len(), 32);
            let level = v["level"].as_str().unwrap();
            let changed = level == "ERROR";
            assert_eq!(changed, v.get("stack_trace").is_some());
            assert_eq!(changed, in_burst(j), "{stream} {j}");
            if changed {
                errors.entry(stream).or_default().push(j);
                assert!(v["stack_trace"].as_str().unwrap().contains("\n\tat "));
            } else {
                assert!(["INFO", "DEBUG", "WARN"].contains(&level));
                messages
                    .entry(stream)
                    .or_default()
                    .insert(v["message"].as_str().unwrap().to_string());
            }
        }
        let expected: Vec<u64> = bursts(per_stream as u64).into_iter().flatten().collect();
        for stream in STREAMS {
            assert_eq!(errors[stream], expected, "{stream}");
            // Noisy: the ids and latencies make most lines distinct.
            assert!(messages[stream].len() > 5000, "{stream}");
        }
    }
}
