//! Encoding input messages into a WIT `batch`, and checking a plugin's
//! `batch-result` before anything in it is trusted.

use std::ops::Range;

use super::bindings::weir::plugin::types::{Batch, BatchResult, Header, Message, Span};

/// Builds a [`Batch`]: all bytes in one arena, spans into it.
#[derive(Debug)]
pub struct BatchBuilder {
    batch: Batch,
}

fn push(data: &mut Vec<u8>, bytes: &[u8]) -> Span {
    let offset = data.len() as u32;
    data.extend_from_slice(bytes);
    Span {
        offset,
        len: bytes.len() as u32,
    }
}

impl BatchBuilder {
    pub fn new(topic: &str, capacity: usize, data_capacity: usize) -> Self {
        BatchBuilder {
            batch: Batch {
                topics: vec![topic.to_string()],
                messages: Vec::with_capacity(capacity),
                headers: Vec::new(),
                data: Vec::with_capacity(data_capacity),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.batch.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.messages.is_empty()
    }

    /// Adds a message of the batch's topic. A header with a null value is
    /// passed as an empty one.
    pub fn push<'a>(
        &mut self,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) {
        let b = &mut self.batch;
        let key = key.map(|k| push(&mut b.data, k));
        let value = value.map(|v| push(&mut b.data, v));
        let first = b.headers.len() as u32;
        for (name, value) in headers {
            let name = push(&mut b.data, name.as_bytes());
            let value = push(&mut b.data, value.unwrap_or(&[]));
            b.headers.push(Header { name, value });
        }
        b.messages.push(Message {
            topic: 0,
            partition,
            offset,
            timestamp_ms: timestamp_ms.unwrap_or(-1),
            key,
            value,
            headers: Span {
                offset: first,
                len: b.headers.len() as u32 - first,
            },
        });
    }

    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    pub fn into_batch(self) -> Batch {
        self.batch
    }
}

/// One record a plugin emitted, with every span checked.
#[derive(Debug, Clone, Copy)]
pub struct OutputRecord<'a> {
    /// Index into the stage's sorted output names.
    pub target: usize,
    /// `None`: use the input message's key.
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers: &'a [Header],
    data: &'a [u8],
}

impl<'a> OutputRecord<'a> {
    /// Header names were checked to be UTF-8 when the result was validated.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let data = self.data;
        self.headers.iter().map(move |h| {
            (
                std::str::from_utf8(slice(data, h.name)).unwrap_or_default(),
                slice(data, h.value),
            )
        })
    }
}

fn slice(data: &[u8], span: Span) -> &[u8] {
    &data[span.offset as usize..span.offset as usize + span.len as usize]
}

fn span_ok(len: usize, span: Span) -> bool {
    (span.offset as usize)
        .checked_add(span.len as usize)
        .is_some_and(|end| end <= len)
}

/// A plugin's result after validation: per input message, the range of
/// outputs it produced or why it failed. Nothing the plugin returns can
/// make the host index out of bounds.
#[derive(Debug)]
pub struct ValidatedResult {
    result: BatchResult,
    outcomes: Vec<Result<Range<usize>, String>>,
}

impl ValidatedResult {
    /// Checks `result` against a batch of `inputs` messages for a stage with
    /// `outputs` logical outputs. A result with the wrong number of outcomes
    /// fails every message; a bad span fails only its message.
    pub fn new(result: BatchResult, inputs: usize, outputs: usize) -> Self {
        if result.outcomes.len() != inputs {
            let reason = format!(
                "plugin returned {} outcomes for a batch of {inputs} messages",
                result.outcomes.len()
            );
            return ValidatedResult {
                outcomes: vec![Err(reason); inputs],
                result,
            };
        }
        let outcomes = result
            .outcomes
            .iter()
            .map(|o| match o {
                Err(reason) => Err(reason.clone()),
                Ok(range) => check_range(&result, *range, outputs),
            })
            .collect();
        ValidatedResult { result, outcomes }
    }

    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// The outputs of input message `i`, or the reason it failed.
    pub fn outcome(&self, i: usize) -> Result<impl Iterator<Item = OutputRecord<'_>>, &str> {
        match &self.outcomes[i] {
            Err(reason) => Err(reason.as_str()),
            Ok(range) => Ok(self.result.outputs[range.clone()]
                .iter()
                .map(|o| OutputRecord {
                    target: o.target as usize,
                    key: o.key.map(|k| slice(&self.result.data, k)),
                    value: o.value.map(|v| slice(&self.result.data, v)),
                    headers: &self.result.headers
                        [o.headers.offset as usize..(o.headers.offset + o.headers.len) as usize],
                    data: &self.result.data,
                })),
        }
    }
}

fn check_range(result: &BatchResult, range: Span, outputs: usize) -> Result<Range<usize>, String> {
    let invalid = |what: String| Err(format!("plugin returned an invalid result: {what}"));
    if !span_ok(result.outputs.len(), range) {
        return invalid(format!(
            "outputs {}..+{} out of {}",
            range.offset,
            range.len,
            result.outputs.len()
        ));
    }
    let range = range.offset as usize..(range.offset + range.len) as usize;
    let data = result.data.len();
    for o in &result.outputs[range.clone()] {
        if o.target as usize >= outputs {
            return invalid(format!("output target {} of {outputs}", o.target));
        }
        if o.key.is_some_and(|k| !span_ok(data, k)) || o.value.is_some_and(|v| !span_ok(data, v)) {
            return invalid("key or value outside the data arena".into());
        }
        if !span_ok(result.headers.len(), o.headers) {
            return invalid("headers out of range".into());
        }
        let headers = &result.headers[o.headers.offset as usize..][..o.headers.len as usize];
        for h in headers {
            if !span_ok(data, h.name) || !span_ok(data, h.value) {
                return invalid("header outside the data arena".into());
            }
            if std::str::from_utf8(slice(&result.data, h.name)).is_err() {
                return invalid("header name is not UTF-8".into());
            }
        }
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::super::bindings::weir::plugin::types::Output;
    use super::*;

    fn span(offset: u32, len: u32) -> Span {
        Span { offset, len }
    }

    fn result(outcomes: Vec<Result<Span, String>>, outputs: Vec<Output>) -> BatchResult {
        BatchResult {
            outcomes,
            outputs,
            headers: vec![Header {
                name: span(0, 1),
                value: span(1, 1),
            }],
            data: b"hv".to_vec(),
        }
    }

    fn output(target: u32, value: Span, headers: Span) -> Output {
        Output {
            target,
            key: None,
            value: Some(value),
            headers,
        }
    }

    #[test]
    fn builder_encodes_spans() {
        let mut b = BatchBuilder::new("t", 2, 64);
        b.push(
            3,
            10,
            Some(5),
            Some(b"k"),
            Some(b"value"),
            [("h", Some(&b"x"[..]))].into_iter(),
        );
        b.push(3, 11, None, None, None, std::iter::empty());
        let batch = b.into_batch();
        assert_eq!(batch.messages.len(), 2);
        let m = &batch.messages[0];
        assert_eq!((m.partition, m.offset, m.timestamp_ms), (3, 10, 5));
        assert_eq!(slice(&batch.data, m.key.unwrap()), b"k");
        assert_eq!(slice(&batch.data, m.value.unwrap()), b"value");
        assert_eq!(m.headers, span(0, 1));
        assert_eq!(slice(&batch.data, batch.headers[0].name), b"h");
        let m = &batch.messages[1];
        assert_eq!((m.key, m.value, m.timestamp_ms), (None, None, -1));
        assert_eq!(m.headers, span(1, 0));
    }

    #[test]
    fn valid_result_exposes_outputs() {
        let r = ValidatedResult::new(
            result(
                vec![Ok(span(0, 1)), Err("bad".into()), Ok(span(1, 0))],
                vec![output(1, span(0, 2), span(0, 1))],
            ),
            3,
            2,
        );
        let outs: Vec<_> = r.outcome(0).unwrap().collect();
        assert_eq!(outs.len(), 1);
        assert_eq!(outs[0].target, 1);
        assert_eq!(outs[0].value, Some(&b"hv"[..]));
        assert_eq!(
            outs[0].headers().collect::<Vec<_>>(),
            vec![("h", &b"v"[..])]
        );
        assert_eq!(r.outcome(1).err(), Some("bad"));
        assert_eq!(r.outcome(2).unwrap().count(), 0);
    }

    #[test]
    fn wrong_outcome_count_fails_every_message() {
        let r = ValidatedResult::new(result(vec![Ok(span(0, 0))], vec![]), 2, 1);
        assert!(
            r.outcome(0)
                .err()
                .unwrap()
                .contains("1 outcomes for a batch of 2")
        );
        assert!(r.outcome(1).is_err());
    }

    #[test]
    fn bad_spans_fail_only_their_message() {
        let cases = [
            output(5, span(0, 1), span(0, 0)),        // unknown target
            output(0, span(1, 9), span(0, 0)),        // value past the arena
            output(0, span(u32::MAX, 2), span(0, 0)), // overflowing span
            output(0, span(0, 1), span(0, 2)),        // headers past the list
        ];
        for case in cases {
            let r = ValidatedResult::new(
                result(vec![Ok(span(0, 1)), Ok(span(1, 0))], vec![case]),
                2,
                1,
            );
            assert!(
                r.outcome(0)
                    .err()
                    .unwrap()
                    .starts_with("plugin returned an invalid result")
            );
            assert!(r.outcome(1).is_ok());
        }
        let r = ValidatedResult::new(result(vec![Ok(span(3, 1))], vec![]), 1, 1);
        assert!(r.outcome(0).is_err());
    }
}
