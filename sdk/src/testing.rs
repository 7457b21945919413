//! Run a [`Processor`] natively, as the host would, for unit tests.
//!
//! ```
//! use weir_plugin::testing::{Harness, TestMessage};
//! use weir_plugin::{Emitter, InitContext, Message, OutputId, Processor};
//!
//! struct Echo(OutputId);
//!
//! impl Processor for Echo {
//!     fn init(ctx: &InitContext) -> Result<Self, String> {
//!         Ok(Echo(ctx.output("default")?))
//!     }
//!     fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
//!         out.forward(self.0, msg);
//!         Ok(())
//!     }
//! }
//!
//! let mut h = Harness::<Echo>::new(&["default"], serde_json::json!({})).unwrap();
//! let out = h.process(&[TestMessage::json(&serde_json::json!({"a": 1}))]);
//! assert_eq!(out[0].as_ref().unwrap()[0].json()["a"], 1);
//! ```
//!
//! State, metrics and logs go to per-thread fakes; each test runs on its own
//! thread, so tests do not see each other's state.

use crate::bindings::weir::plugin::types::Batch;
use crate::message::{NULL_LEN, headers, span};
use crate::{InitContext, Processor};

/// An input message for a test.
#[derive(Debug, Clone, Default)]
pub struct TestMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl TestMessage {
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        TestMessage {
            topic: "input".into(),
            timestamp_ms: -1,
            value: Some(value.into()),
            ..TestMessage::default()
        }
    }

    pub fn json(value: &serde_json::Value) -> Self {
        Self::new(value.to_string())
    }

    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn offset(mut self, offset: i64) -> Self {
        self.offset = offset;
        self
    }

    /// The record's timestamp, in milliseconds since the Unix epoch.
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp_ms = ms;
        self
    }

    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = partition;
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A record the plugin emitted.
#[derive(Debug, Clone, PartialEq)]
pub struct TestOutput {
    /// The logical output's name.
    pub output: String,
    /// `None` means "the input's key".
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl TestOutput {
    /// The value parsed as JSON (`Null` if absent or invalid).
    pub fn json(&self) -> serde_json::Value {
        self.value
            .as_deref()
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// A plugin instance driven natively.
pub struct Harness<P> {
    plugin: P,
    outputs: Vec<String>,
}

impl<P: Processor> Harness<P> {
    /// Initialises the plugin as the host would for a stage with these
    /// outputs and `[stage.config]`.
    pub fn new(outputs: &[&str], config: serde_json::Value) -> Result<Self, String> {
        let mut outputs: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
        outputs.sort();
        let ctx = InitContext {
            stage: "test".into(),
            outputs: outputs.clone(),
            config_json: config.to_string(),
        };
        set_scope(-1);
        let plugin = crate::host::overlay::run(|| P::init(&ctx))?;
        Ok(Harness { plugin, outputs })
    }

    /// Processes one batch, encoded as the host encodes it. All messages
    /// should share a topic and partition, as in the host. Returns each
    /// message's records or its rejection reason.
    pub fn process(&mut self, messages: &[TestMessage]) -> Vec<Result<Vec<TestOutput>, String>> {
        let batch = encode(messages);
        set_scope(batch.partition);
        let result =
            crate::runtime::process_with(&mut self.plugin, &batch, self.outputs.len() as u32);
        let mut next = 0usize;
        result
            .counts
            .iter()
            .enumerate()
            .map(|(i, &count)| {
                let range = next..next + count as usize;
                next = range.end;
                if let Some(r) = result.rejected.iter().find(|r| r.index as usize == i) {
                    return Err(r.reason.clone());
                }
                Ok(range
                    .map(|o| TestOutput {
                        output: self.outputs[result.targets[o] as usize].clone(),
                        key: span(&result.keys, o, &result.data).map(<[u8]>::to_vec),
                        value: span(&result.values, o, &result.data).map(<[u8]>::to_vec),
                        headers: headers(
                            &result.header_spans,
                            result.headers[2 * o],
                            result.headers[2 * o + 1],
                            &result.data,
                        )
                        .map(|(n, v)| (n.to_vec(), v.to_vec()))
                        .collect(),
                    })
                    .collect())
            })
            .collect()
    }

    /// Processes one message.
    pub fn process_one(&mut self, message: TestMessage) -> Result<Vec<TestOutput>, String> {
        self.process(&[message]).remove(0)
    }

    pub fn plugin(&self) -> &P {
        &self.plugin
    }
}

fn set_scope(partition: i32) {
    crate::host::imp::FAKE.with(|f| f.borrow_mut().scope = partition);
}

/// The value of a counter the plugin has added to on this thread.
pub fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    let key = crate::host::imp::metric_key(name, labels);
    crate::host::imp::FAKE.with(|f| f.borrow().counters.get(&key).copied().unwrap_or(0))
}

/// The value of a gauge the plugin has set on this thread.
pub fn gauge(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let key = crate::host::imp::metric_key(name, labels);
    crate::host::imp::FAKE.with(|f| f.borrow().gauges.get(&key).copied())
}

/// Moves the clock that state expiry reads on this thread (see
/// [`crate::state::set_with_ttl`]); it starts at zero.
pub fn advance_clock(by: std::time::Duration) {
    let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
    crate::host::imp::FAKE.with(|f| {
        let mut f = f.borrow_mut();
        f.now_ms = f.now_ms.saturating_add(ms);
    });
}

/// The messages the plugin has logged on this thread.
pub fn logs() -> Vec<String> {
    crate::host::imp::FAKE.with(|f| f.borrow().logs.iter().map(|(_, m)| m.clone()).collect())
}

fn push(data: &mut Vec<u8>, column: &mut Vec<u32>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            column.extend_from_slice(&[data.len() as u32, b.len() as u32]);
            data.extend_from_slice(b);
        }
        None => column.extend_from_slice(&[0, NULL_LEN]),
    }
}

/// Encodes messages as the host does: columns over one arena.
fn encode(messages: &[TestMessage]) -> Batch {
    let first = messages.first();
    let mut b = Batch {
        topic: first.map_or_else(|| "input".to_string(), |m| m.topic.clone()),
        partition: first.map_or(0, |m| m.partition),
        offsets: Vec::new(),
        timestamps: Vec::new(),
        keys: Vec::new(),
        values: Vec::new(),
        headers: Vec::new(),
        header_spans: Vec::new(),
        data: Vec::new(),
    };
    for m in messages {
        b.offsets.push(m.offset);
        b.timestamps.push(m.timestamp_ms);
        push(&mut b.data, &mut b.keys, m.key.as_deref());
        push(&mut b.data, &mut b.values, m.value.as_deref());
        b.headers
            .extend_from_slice(&[(b.header_spans.len() / 4) as u32, m.headers.len() as u32]);
        for (n, v) in &m.headers {
            push(&mut b.data, &mut b.header_spans, Some(n.as_bytes()));
            push(&mut b.data, &mut b.header_spans, Some(v));
        }
    }
    b
}

#[cfg(test)]
mod tests {
    //! A message's state writes reach the host only if it is accepted.

    use std::time::Duration;

    use super::{Harness, TestMessage, advance_clock};
    use crate::host::imp::{FAKE, StateWrite};
    use crate::{Emitter, InitContext, Message, OutputId, Processor, state};

    /// Runs the `;`-separated commands of each message's value:
    /// `set K V`, `ttl K V MS`, `del K`, `json K` (sets K to the JSON
    /// string "K"), `get K` (emits `K=V`, or `K=-` when absent), `fail`
    /// (rejects the message) and `panic`.
    struct Script(OutputId);

    impl Processor for Script {
        fn init(ctx: &InitContext) -> Result<Self, String> {
            #[derive(serde::Deserialize)]
            struct Config {
                #[serde(default)]
                init: String,
            }
            let config: Config = ctx.config()?;
            for cmd in config.init.split(';').map(str::trim) {
                match cmd.split(' ').collect::<Vec<_>>()[..] {
                    ["set", k, v] => state::set(k.as_bytes(), v.as_bytes()),
                    ["get", k] if state::get(k.as_bytes()).is_none() => {
                        return Err(format!("{k} not visible in init"));
                    }
                    ["fail"] => return Err("init failed".into()),
                    _ => {}
                }
            }
            Ok(Script(ctx.output("default")?))
        }

        fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
            let script = std::str::from_utf8(msg.value().unwrap_or_default()).unwrap();
            for cmd in script.split(';').map(str::trim) {
                match cmd.split(' ').collect::<Vec<_>>()[..] {
                    ["set", k, v] => state::set(k.as_bytes(), v.as_bytes()),
                    ["ttl", k, v, ms] => state::set_with_ttl(
                        k.as_bytes(),
                        v.as_bytes(),
                        Duration::from_millis(ms.parse().unwrap()),
                    ),
                    ["del", k] => state::delete(k.as_bytes()),
                    ["json", k] => state::set_json(k.as_bytes(), k),
                    ["get", k] => {
                        let v = state::get(k.as_bytes());
                        let v = v.as_deref().map_or("-".into(), String::from_utf8_lossy);
                        out.emit(self.0, format!("{k}={v}").as_bytes());
                    }
                    ["fail"] => return Err("told to fail".into()),
                    ["panic"] => panic!("told to panic"),
                    _ => panic!("bad command {cmd:?}"),
                }
            }
            Ok(())
        }
    }

    fn harness() -> Harness<Script> {
        Harness::new(&["default"], serde_json::json!({})).unwrap()
    }

    /// Each message's emitted values, or `Err` for a rejection.
    fn run(h: &mut Harness<Script>, scripts: &[&str]) -> Vec<Result<Vec<String>, String>> {
        let batch: Vec<_> = scripts.iter().map(|s| TestMessage::new(*s)).collect();
        h.process(&batch)
            .into_iter()
            .map(|r| {
                r.map(|outs| {
                    outs.iter()
                        .map(|o| String::from_utf8(o.value.clone().unwrap()).unwrap())
                        .collect()
                })
            })
            .collect()
    }

    fn ok(values: &[&str]) -> Result<Vec<String>, String> {
        Ok(values.iter().map(|v| v.to_string()).collect())
    }

    /// The state writes that reached the host since the last call.
    fn host_writes() -> Vec<StateWrite> {
        FAKE.with(|f| std::mem::take(&mut f.borrow_mut().writes))
    }

    fn set(k: &str, v: &str) -> StateWrite {
        StateWrite::Set(k.into(), v.into())
    }

    /// What the host holds for `key` in partition 0, outside any handler.
    fn held(key: &str) -> Option<String> {
        state::get(key.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn a_rejected_message_leaves_no_state_behind() {
        let mut h = harness();
        let out = run(
            &mut h,
            &[
                "set a 1; del b; ttl c 1 60000; json d; get a; fail",
                "get a; get d",
            ],
        );
        assert_eq!(out[0], Err("told to fail".into()));
        assert_eq!(
            out[1],
            ok(&["a=-", "d=-"]),
            "a later message does not see it"
        );
        assert_eq!(host_writes(), vec![], "nothing reached the host");
        assert_eq!(held("a"), None);
    }

    #[test]
    fn a_rejected_message_does_not_undo_what_earlier_ones_wrote() {
        let mut h = harness();
        let out = run(
            &mut h,
            &[
                "set stock 10; set order/1 done",
                "get stock; set stock 9; set order/2 done; fail",
                "get stock; get order/2",
            ],
        );
        assert_eq!(out[0], ok(&[]));
        assert!(out[1].is_err());
        assert_eq!(out[2], ok(&["stock=10", "order/2=-"]));
        assert_eq!(
            host_writes(),
            vec![set("stock", "10"), set("order/1", "done")]
        );
        // Re-driven, the rejected order is not a duplicate.
        assert_eq!(run(&mut h, &["get order/2"])[0], ok(&["order/2=-"]));
    }

    #[test]
    fn an_accepted_message_s_writes_reach_the_host_and_later_messages() {
        let mut h = harness();
        let out = run(
            &mut h,
            &[
                "set a 1; get a",
                "get a; set a 2; set b 1",
                "get a; get b; del a",
                "get a",
            ],
        );
        assert_eq!(out[0], ok(&["a=1"]), "a message sees its own writes");
        assert_eq!(out[1], ok(&["a=1"]));
        assert_eq!(out[2], ok(&["a=2", "b=1"]));
        assert_eq!(out[3], ok(&["a=-"]));
        assert_eq!(
            host_writes(),
            vec![
                set("a", "1"),
                set("a", "2"),
                set("b", "1"),
                StateWrite::Delete(b"a".to_vec()),
            ]
        );
        assert_eq!((held("a"), held("b")), (None, Some("1".into())));
    }

    #[test]
    fn writes_to_one_key_collapse_to_the_last_in_the_order_of_last_writes() {
        let mut h = harness();
        // Seeded outside a handler: straight to the host.
        state::set(b"a", b"0");
        assert_eq!(host_writes(), vec![set("a", "0")]);
        let out = run(
            &mut h,
            &["set a 1; set b 1; del c; set a 2; get a; set c 3"],
        );
        assert_eq!(out[0], ok(&["a=2"]));
        assert_eq!(
            host_writes(),
            vec![set("b", "1"), set("a", "2"), set("c", "3")]
        );
    }

    #[test]
    fn set_then_delete_of_one_key_ends_as_a_delete() {
        let mut h = harness();
        state::set(b"a", b"0");
        host_writes();
        let out = run(&mut h, &["set a 1; get a; del a; get a", "get a"]);
        assert_eq!(out[0], ok(&["a=1", "a=-"]));
        assert_eq!(out[1], ok(&["a=-"]));
        assert_eq!(host_writes(), vec![StateWrite::Delete(b"a".to_vec())]);
        assert_eq!(held("a"), None);
    }

    #[test]
    fn set_with_ttl_keeps_its_ttl() {
        let mut h = harness();
        let out = run(
            &mut h,
            &[
                "ttl a 1 500; get a",
                "set b 1; ttl b 2 300",
                "ttl c 1 300; set c 2",
                "ttl d 1 0; get d",
            ],
        );
        assert_eq!(out[0], ok(&["a=1"]));
        assert_eq!(out[3], ok(&["d=-"]), "a zero ttl deletes");
        assert_eq!(
            host_writes(),
            vec![
                StateWrite::SetWithTtl(b"a".to_vec(), b"1".to_vec(), 500),
                StateWrite::SetWithTtl(b"b".to_vec(), b"2".to_vec(), 300),
                set("c", "2"),
                StateWrite::Delete(b"d".to_vec()),
            ]
        );
        advance_clock(Duration::from_millis(299));
        assert_eq!((held("a"), held("b")), (Some("1".into()), Some("2".into())));
        advance_clock(Duration::from_millis(1));
        assert_eq!(held("b"), None);
        assert_eq!(held("c"), Some("2".into()), "the last write had no ttl");
        advance_clock(Duration::from_millis(200));
        assert_eq!(held("a"), None);
    }

    #[test]
    fn a_message_that_writes_nothing_makes_no_write_call() {
        let mut h = harness();
        let out = run(&mut h, &["get a", "get b", "fail"]);
        assert_eq!(out[0], ok(&["a=-"]));
        assert_eq!(host_writes(), vec![]);
    }

    #[test]
    fn a_panicking_handler_leaves_no_state_and_the_next_call_works() {
        let mut h = harness();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(&mut h, &["set a 1", "set b 1; panic"])
        }));
        assert!(caught.is_err());
        // Natively the first message's write was passed on before the
        // panic (in a component the host drops the whole call's writes).
        assert_eq!(host_writes(), vec![set("a", "1")]);
        let out = run(&mut h, &["get b; set c 1", "get c"]);
        assert_eq!(out[0], ok(&["b=-"]));
        assert_eq!(out[1], ok(&["c=1"]));
        assert_eq!(host_writes(), vec![set("c", "1")]);
    }

    #[test]
    fn init_s_writes_reach_the_host_only_if_it_succeeds() {
        let failed =
            Harness::<Script>::new(&["default"], serde_json::json!({"init": "set i 1; fail"}));
        assert_eq!(failed.err(), Some("init failed".into()));
        assert_eq!(host_writes(), vec![]);

        let h = Harness::<Script>::new(
            &["default"],
            serde_json::json!({"init": "set i 1; get i; set i 2"}),
        );
        assert!(h.is_ok(), "init sees its own writes");
        assert_eq!(host_writes(), vec![set("i", "2")]);
        // Stage-wide: held outside any partition.
        super::set_scope(-1);
        assert_eq!(held("i"), Some("2".into()));
    }
}
