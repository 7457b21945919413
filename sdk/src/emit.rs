use crate::OutputId;
use crate::bindings::weir::plugin::types::BatchResult;
use crate::message::{Message, NULL_LEN};

/// Collects the records a plugin emits for one input message. They are
/// written straight into the batch result's columns.
pub struct Emitter<'a> {
    pub(crate) result: &'a mut BatchResult,
    pub(crate) output_count: u32,
}

fn push_bytes(data: &mut Vec<u8>, bytes: &[u8]) -> [u32; 2] {
    let start = data.len() as u32;
    data.extend_from_slice(bytes);
    [start, bytes.len() as u32]
}

const NULL: [u32; 2] = [0, NULL_LEN];

impl<'a> Emitter<'a> {
    /// Emits `value` to `to`, keyed like the input message. Returns a handle
    /// to set a key or add headers.
    pub fn emit(&mut self, to: OutputId, value: &[u8]) -> Emitted<'_> {
        let value = push_bytes(&mut self.result.data, value);
        self.push(to, value)
    }

    /// Emits `value` serialised as JSON, without an intermediate buffer.
    pub fn emit_json<T: serde::Serialize + ?Sized>(
        &mut self,
        to: OutputId,
        value: &T,
    ) -> Result<Emitted<'_>, String> {
        let start = self.result.data.len();
        if let Err(e) = serde_json::to_writer(&mut self.result.data, value) {
            self.result.data.truncate(start);
            return Err(format!("cannot serialise output: {e}"));
        }
        let span = [start as u32, (self.result.data.len() - start) as u32];
        Ok(self.push(to, span))
    }

    /// Emits a tombstone (null value) to `to`.
    pub fn emit_tombstone(&mut self, to: OutputId) -> Emitted<'_> {
        self.push(to, NULL)
    }

    /// Emits a copy of `msg`: key, value and headers.
    pub fn forward(&mut self, to: OutputId, msg: &Message<'_>) -> Emitted<'_> {
        let value = msg
            .value()
            .map_or(NULL, |v| push_bytes(&mut self.result.data, v));
        let mut emitted = self.push(to, value);
        if let Some(key) = msg.key() {
            emitted = emitted.key(key);
        }
        emitted.headers_from(msg)
    }

    fn push(&mut self, to: OutputId, value: [u32; 2]) -> Emitted<'_> {
        debug_assert!(to.0 < self.output_count, "OutputId from another stage");
        let r = &mut *self.result;
        r.targets.push(to.0);
        r.keys.extend_from_slice(&NULL);
        r.values.extend_from_slice(&value);
        r.headers
            .extend_from_slice(&[(r.header_spans.len() / 4) as u32, 0]);
        Emitted {
            result: self.result,
        }
    }
}

/// The record just emitted; set its key or add headers.
pub struct Emitted<'a> {
    result: &'a mut BatchResult,
}

impl Emitted<'_> {
    /// Sets the record's key (by default it keeps the input's key).
    pub fn key(self, key: &[u8]) -> Self {
        let span = push_bytes(&mut self.result.data, key);
        let n = self.result.keys.len();
        self.result.keys[n - 2..].copy_from_slice(&span);
        self
    }

    /// Adds a header.
    pub fn header(self, name: &str, value: &[u8]) -> Self {
        self.header_bytes(name.as_bytes(), value)
    }

    /// Copies every header of `msg`, so that trace context and the like
    /// follow a message through an enriching stage.
    pub fn headers_from(mut self, msg: &Message<'_>) -> Self {
        for (name, value) in msg.headers() {
            self = self.header_bytes(name, value);
        }
        self
    }

    fn header_bytes(self, name: &[u8], value: &[u8]) -> Self {
        let name = push_bytes(&mut self.result.data, name);
        let value = push_bytes(&mut self.result.data, value);
        // Headers of one record are contiguous: this record is the last one
        // and `Emitted` borrows the emitter, so no other record interleaves.
        self.result.header_spans.extend_from_slice(&name);
        self.result.header_spans.extend_from_slice(&value);
        if let Some(count) = self.result.headers.last_mut() {
            *count += 1;
        }
        self
    }
}
