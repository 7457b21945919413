use crate::bindings::weir::plugin::types::{Header, Span};

/// One input message: borrowed views into the batch, no copies.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: i64,
    pub(crate) key: Option<Span>,
    pub(crate) value: Option<Span>,
    pub(crate) headers: &'a [Header],
    pub(crate) data: &'a [u8],
}

pub(crate) fn slice(data: &[u8], span: Span) -> &[u8] {
    // The host builds spans inside the arena; `get` keeps a malformed batch
    // from panicking the plugin all the same.
    data.get(span.offset as usize..(span.offset as usize).saturating_add(span.len as usize))
        .unwrap_or(&[])
}

impl<'a> Message<'a> {
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Milliseconds since the Unix epoch, if the record has a timestamp.
    pub fn timestamp_ms(&self) -> Option<i64> {
        (self.timestamp_ms >= 0).then_some(self.timestamp_ms)
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        self.key.map(|s| slice(self.data, s))
    }

    pub fn value(&self) -> Option<&'a [u8]> {
        self.value.map(|s| slice(self.data, s))
    }

    /// The headers, in record order; names are not necessarily unique.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let data = self.data;
        self.headers
            .iter()
            .map(move |h| (slice(data, h.name), slice(data, h.value)))
    }

    /// The value of the last header called `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .filter(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
            .last()
    }

    /// Parses the value as JSON into `T`, with an error fit for a
    /// dead-letter reason.
    pub fn json<T: serde::de::Deserialize<'a>>(&self) -> Result<T, String> {
        let value = self.value().ok_or_else(|| "null value".to_string())?;
        serde_json::from_slice(value).map_err(|e| format!("invalid JSON: {e}"))
    }
}
