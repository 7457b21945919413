use crate::OutputId;
use crate::bindings::weir::plugin::types::{BatchResult, Header, Output, Span};
use crate::message::Message;

/// Collects the records a plugin emits for one input message. They are
/// written straight into the batch result's arena.
pub struct Emitter<'a> {
    pub(crate) result: &'a mut BatchResult,
    pub(crate) output_count: u32,
}

fn push_bytes(data: &mut Vec<u8>, bytes: &[u8]) -> Span {
    let offset = data.len() as u32;
    data.extend_from_slice(bytes);
    Span {
        offset,
        len: bytes.len() as u32,
    }
}

impl<'a> Emitter<'a> {
    /// Emits `value` to `to`, keyed like the input message. Returns a handle
    /// to set a key or add headers.
    pub fn emit(&mut self, to: OutputId, value: &[u8]) -> Emitted<'_> {
        let value = push_bytes(&mut self.result.data, value);
        self.push(to, Some(value))
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
        let span = Span {
            offset: start as u32,
            len: (self.result.data.len() - start) as u32,
        };
        Ok(self.push(to, Some(span)))
    }

    /// Emits a tombstone (null value) to `to`.
    pub fn emit_tombstone(&mut self, to: OutputId) -> Emitted<'_> {
        self.push(to, None)
    }

    /// Emits a copy of `msg`: key, value and headers.
    pub fn forward(&mut self, to: OutputId, msg: &Message<'_>) -> Emitted<'_> {
        let value = msg.value().map(|v| push_bytes(&mut self.result.data, v));
        let key = msg.key();
        let mut emitted = self.push(to, value);
        if let Some(key) = key {
            emitted = emitted.key(key);
        }
        for (name, value) in msg.headers() {
            emitted = emitted.header_bytes(name, value);
        }
        emitted
    }

    fn push(&mut self, to: OutputId, value: Option<Span>) -> Emitted<'_> {
        debug_assert!(to.0 < self.output_count, "OutputId from another stage");
        let headers = Span {
            offset: self.result.headers.len() as u32,
            len: 0,
        };
        self.result.outputs.push(Output {
            target: to.0,
            key: None,
            value,
            headers,
        });
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
    fn last(&mut self) -> &mut Output {
        self.result
            .outputs
            .last_mut()
            .expect("Emitted exists only after a push")
    }

    /// Sets the record's key (by default it keeps the input's key).
    pub fn key(mut self, key: &[u8]) -> Self {
        let span = push_bytes(&mut self.result.data, key);
        self.last().key = Some(span);
        self
    }

    /// Adds a header.
    pub fn header(self, name: &str, value: &[u8]) -> Self {
        self.header_bytes(name.as_bytes(), value)
    }

    fn header_bytes(mut self, name: &[u8], value: &[u8]) -> Self {
        let name = push_bytes(&mut self.result.data, name);
        let value = push_bytes(&mut self.result.data, value);
        // Headers of one output are contiguous: this output is the last one
        // and `Emitted` borrows the emitter, so no other output interleaves.
        self.result.headers.push(Header { name, value });
        self.last().headers.len += 1;
        self
    }
}
