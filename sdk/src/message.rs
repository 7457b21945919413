use crate::bindings::weir::plugin::types::Batch;

/// The `len` of a null span.
pub(crate) const NULL_LEN: u32 = u32::MAX;

/// Resolves span `i` of a span column (two words per span). `None` for a
/// null span; a span outside the arena (never sent by the host) reads as
/// empty rather than panicking the plugin.
pub(crate) fn span<'a>(column: &[u32], i: usize, data: &'a [u8]) -> Option<&'a [u8]> {
    let (start, len) = (*column.get(2 * i)?, *column.get(2 * i + 1)?);
    if len == NULL_LEN {
        return None;
    }
    let start = start as usize;
    Some(
        data.get(start..start.saturating_add(len as usize))
            .unwrap_or(&[]),
    )
}

/// The headers `first .. first + count` of a header-span column.
pub(crate) fn headers<'a>(
    header_spans: &'a [u32],
    first: u32,
    count: u32,
    data: &'a [u8],
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    (first as usize..first as usize + count as usize).map(move |h| {
        (
            span(header_spans, 2 * h, data).unwrap_or(&[]),
            span(header_spans, 2 * h + 1, data).unwrap_or(&[]),
        )
    })
}

/// One input message: borrowed views into the batch, no copies.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub(crate) batch: &'a Batch,
    pub(crate) index: usize,
}

impl<'a> Message<'a> {
    pub fn topic(&self) -> &'a str {
        &self.batch.topic
    }

    pub fn partition(&self) -> i32 {
        self.batch.partition
    }

    pub fn offset(&self) -> i64 {
        self.batch.offsets.get(self.index).copied().unwrap_or(-1)
    }

    /// Milliseconds since the Unix epoch, if the record has a timestamp.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.batch
            .timestamps
            .get(self.index)
            .copied()
            .filter(|t| *t >= 0)
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        span(&self.batch.keys, self.index, &self.batch.data)
    }

    pub fn value(&self) -> Option<&'a [u8]> {
        span(&self.batch.values, self.index, &self.batch.data)
    }

    /// The headers, in record order; names are not necessarily unique.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let h = &self.batch.headers;
        let first = h.get(2 * self.index).copied().unwrap_or(0);
        let count = h.get(2 * self.index + 1).copied().unwrap_or(0);
        headers(&self.batch.header_spans, first, count, &self.batch.data)
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
