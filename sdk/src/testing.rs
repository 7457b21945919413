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
        let plugin = P::init(&ctx)?;
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
