//! Encoding input messages into a WIT `batch`, and checking a plugin's
//! `batch-result` before anything in it is trusted. Both are columnar: see
//! `wit/plugin.wit`.

use std::ops::Range;

use super::bindings::weir::plugin::types::{Batch, BatchResult};

/// The `len` of a null span.
const NULL_LEN: u32 = u32::MAX;

/// Builds a [`Batch`] of one topic-partition.
#[derive(Debug)]
pub struct BatchBuilder {
    batch: Batch,
}

fn push_span(data: &mut Vec<u8>, column: &mut Vec<u32>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            column.extend_from_slice(&[data.len() as u32, b.len() as u32]);
            data.extend_from_slice(b);
        }
        None => column.extend_from_slice(&[0, NULL_LEN]),
    }
}

impl BatchBuilder {
    pub fn new(topic: &str, partition: i32, capacity: usize, data_capacity: usize) -> Self {
        BatchBuilder {
            batch: Batch {
                topic: topic.to_string(),
                partition,
                offsets: Vec::with_capacity(capacity),
                timestamps: Vec::with_capacity(capacity),
                keys: Vec::with_capacity(2 * capacity),
                values: Vec::with_capacity(2 * capacity),
                headers: Vec::with_capacity(2 * capacity),
                header_spans: Vec::new(),
                data: Vec::with_capacity(data_capacity),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.batch.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.offsets.is_empty()
    }

    /// Adds a message. A header with a null value is passed as an empty one.
    pub fn push<'a>(
        &mut self,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) {
        let b = &mut self.batch;
        b.offsets.push(offset);
        b.timestamps.push(timestamp_ms.unwrap_or(-1));
        push_span(&mut b.data, &mut b.keys, key);
        push_span(&mut b.data, &mut b.values, value);
        let first = (b.header_spans.len() / 4) as u32;
        for (name, value) in headers {
            push_span(&mut b.data, &mut b.header_spans, Some(name.as_bytes()));
            push_span(&mut b.data, &mut b.header_spans, Some(value.unwrap_or(&[])));
        }
        let count = (b.header_spans.len() / 4) as u32 - first;
        b.headers.extend_from_slice(&[first, count]);
    }

    pub fn batch(&self) -> &Batch {
        &self.batch
    }

    pub fn into_batch(self) -> Batch {
        self.batch
    }
}

/// Span `i` of a column, already validated: `None` if null.
fn span<'a>(column: &[u32], i: usize, data: &'a [u8]) -> Option<&'a [u8]> {
    let (start, len) = (column[2 * i] as usize, column[2 * i + 1]);
    (len != NULL_LEN).then(|| &data[start..start + len as usize])
}

/// Whether span `i` of a column is null or inside an arena of `len` bytes.
fn span_ok(column: &[u32], i: usize, len: usize) -> bool {
    let (start, l) = (column[2 * i] as usize, column[2 * i + 1]);
    l == NULL_LEN || start.checked_add(l as usize).is_some_and(|end| end <= len)
}

/// One record a plugin emitted, with every span checked.
#[derive(Debug, Clone)]
pub struct OutputRecord<'a> {
    /// Index into the stage's sorted output names.
    pub target: usize,
    /// `None`: use the input message's key.
    pub key: Option<&'a [u8]>,
    /// `None`: a tombstone.
    pub value: Option<&'a [u8]>,
    headers: Range<usize>,
    result: &'a BatchResult,
}

impl<'a> OutputRecord<'a> {
    /// Header names were checked to be UTF-8 when the result was validated.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let r = self.result;
        self.headers.clone().map(move |h| {
            let name = span(&r.header_spans, 2 * h, &r.data).unwrap_or_default();
            let value = span(&r.header_spans, 2 * h + 1, &r.data).unwrap_or_default();
            (std::str::from_utf8(name).unwrap_or_default(), value)
        })
    }
}

/// A plugin's result after validation: per input message, the range of
/// records it produced or why it failed. Nothing the plugin returns can
/// make the host index out of bounds.
#[derive(Debug)]
pub struct ValidatedResult {
    result: BatchResult,
    outcomes: Vec<Result<Range<usize>, String>>,
    /// Per input message: whether its failure is the plugin breaking the
    /// contract (a malformed result) rather than rejecting the message.
    invalid: Vec<bool>,
}

fn invalid(what: impl std::fmt::Display) -> String {
    format!("plugin returned an invalid result: {what}")
}

impl ValidatedResult {
    /// Checks `result` against a batch of `inputs` messages for a stage with
    /// `outputs` logical outputs. Columns of the wrong shape fail every
    /// message; a bad span or target fails only its message.
    pub fn new(result: BatchResult, inputs: usize, outputs: usize) -> Self {
        if let Err(reason) = check_shape(&result, inputs) {
            return ValidatedResult {
                outcomes: vec![Err(reason); inputs],
                invalid: vec![true; inputs],
                result,
            };
        }
        let mut outcomes = Vec::with_capacity(inputs);
        let mut start = 0usize;
        for &count in &result.counts {
            let range = start..start + count as usize;
            start = range.end;
            outcomes.push(check_records(&result, range, outputs));
        }
        let mut invalid: Vec<bool> = outcomes.iter().map(Result::is_err).collect();
        for r in &result.rejected {
            outcomes[r.index as usize] = Err(super::error::cap_reason(&r.reason).into_owned());
            invalid[r.index as usize] = false;
        }
        ValidatedResult {
            result,
            outcomes,
            invalid,
        }
    }

    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// Whether input message `i` failed because the plugin's result for it
    /// was malformed (`decode`), not because the plugin rejected it.
    pub fn is_invalid(&self, i: usize) -> bool {
        self.invalid[i]
    }

    /// The records of input message `i`, or the reason it failed.
    pub fn outcome(&self, i: usize) -> Result<impl Iterator<Item = OutputRecord<'_>>, &str> {
        match &self.outcomes[i] {
            Err(reason) => Err(reason.as_str()),
            Ok(range) => {
                let r = &self.result;
                Ok(range.clone().map(move |o| {
                    let first = r.headers[2 * o] as usize;
                    OutputRecord {
                        target: r.targets[o] as usize,
                        key: span(&r.keys, o, &r.data),
                        value: span(&r.values, o, &r.data),
                        headers: first..first + r.headers[2 * o + 1] as usize,
                        result: r,
                    }
                }))
            }
        }
    }
}

fn check_shape(r: &BatchResult, inputs: usize) -> Result<(), String> {
    if r.counts.len() != inputs {
        return Err(invalid(format_args!(
            "{} counts for a batch of {inputs} messages",
            r.counts.len()
        )));
    }
    let records: u64 = r.counts.iter().map(|&c| u64::from(c)).sum();
    let m = r.targets.len();
    if records != m as u64 {
        return Err(invalid(format_args!(
            "counts add up to {records} records but there are {m} targets"
        )));
    }
    for (name, column) in [
        ("keys", &r.keys),
        ("values", &r.values),
        ("headers", &r.headers),
    ] {
        if column.len() != 2 * m {
            return Err(invalid(format_args!(
                "{name} has {} words for {m} records",
                column.len()
            )));
        }
    }
    if !r.header_spans.len().is_multiple_of(4) {
        return Err(invalid("header-spans is not four words per header"));
    }
    if let Some(bad) = r.rejected.iter().find(|x| x.index as usize >= inputs) {
        return Err(invalid(format_args!(
            "rejected message {} of a batch of {inputs}",
            bad.index
        )));
    }
    Ok(())
}

fn check_records(
    r: &BatchResult,
    range: Range<usize>,
    outputs: usize,
) -> Result<Range<usize>, String> {
    let data = r.data.len();
    let header_count = r.header_spans.len() / 4;
    for o in range.clone() {
        if r.targets[o] as usize >= outputs {
            return Err(invalid(format_args!(
                "target {} of {outputs} outputs",
                r.targets[o]
            )));
        }
        if !span_ok(&r.keys, o, data) || !span_ok(&r.values, o, data) {
            return Err(invalid("key or value outside the data arena"));
        }
        let (first, count) = (r.headers[2 * o] as usize, r.headers[2 * o + 1] as usize);
        if first
            .checked_add(count)
            .is_none_or(|end| end > header_count)
        {
            return Err(invalid("headers out of range"));
        }
        for h in first..first + count {
            let (name, value) = (2 * h, 2 * h + 1);
            if !span_ok(&r.header_spans, name, data) || !span_ok(&r.header_spans, value, data) {
                return Err(invalid("header outside the data arena"));
            }
            let name = span(&r.header_spans, name, &r.data).unwrap_or_default();
            if std::str::from_utf8(name).is_err() {
                return Err(invalid("header name is not UTF-8"));
            }
        }
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::super::bindings::weir::plugin::types::Rejection;
    use super::*;

    /// A result with `records` as (target, value span) and one header
    /// ("h" = "v") on the first record.
    fn result(counts: Vec<u32>, records: &[(u32, [u32; 2])]) -> BatchResult {
        let m = records.len();
        let mut headers = vec![0; 2 * m];
        if m > 0 {
            headers[1] = 1;
        }
        BatchResult {
            counts,
            targets: records.iter().map(|r| r.0).collect(),
            keys: records.iter().flat_map(|_| [0, NULL_LEN]).collect(),
            values: records.iter().flat_map(|r| r.1).collect(),
            headers,
            header_spans: vec![0, 1, 1, 1],
            data: b"hv".to_vec(),
            rejected: vec![],
        }
    }

    #[test]
    fn builder_encodes_columns() {
        let mut b = BatchBuilder::new("t", 3, 2, 64);
        b.push(
            10,
            Some(5),
            Some(b"k"),
            Some(b"value"),
            [("h", Some(&b"x"[..]))].into_iter(),
        );
        b.push(11, None, None, None, std::iter::empty());
        let batch = b.into_batch();
        assert_eq!((batch.topic.as_str(), batch.partition), ("t", 3));
        assert_eq!(batch.offsets, vec![10, 11]);
        assert_eq!(batch.timestamps, vec![5, -1]);
        assert_eq!(span(&batch.keys, 0, &batch.data), Some(&b"k"[..]));
        assert_eq!(span(&batch.values, 0, &batch.data), Some(&b"value"[..]));
        assert_eq!(span(&batch.keys, 1, &batch.data), None);
        assert_eq!(span(&batch.values, 1, &batch.data), None);
        assert_eq!(batch.headers, vec![0, 1, 1, 0]);
        assert_eq!(span(&batch.header_spans, 0, &batch.data), Some(&b"h"[..]));
        assert_eq!(span(&batch.header_spans, 1, &batch.data), Some(&b"x"[..]));
    }

    #[test]
    fn valid_result_exposes_records() {
        let mut r = result(vec![1, 0, 0], &[(1, [0, 2])]);
        r.rejected.push(Rejection {
            index: 1,
            reason: "bad".into(),
        });
        let v = ValidatedResult::new(r, 3, 2);
        let outs: Vec<_> = v.outcome(0).unwrap().collect();
        assert_eq!(outs.len(), 1);
        assert_eq!(outs[0].target, 1);
        assert_eq!(outs[0].key, None);
        assert_eq!(outs[0].value, Some(&b"hv"[..]));
        assert_eq!(
            outs[0].headers().collect::<Vec<_>>(),
            vec![("h", &b"v"[..])]
        );
        assert_eq!(v.outcome(1).err(), Some("bad"));
        assert!(!v.is_invalid(1), "a rejection is the plugin's verdict");
        assert_eq!(v.outcome(2).unwrap().count(), 0);
        assert!(!v.is_invalid(0) && !v.is_invalid(2));
    }

    #[test]
    fn misshapen_columns_fail_every_message() {
        let cases = [
            (result(vec![0], &[]), "1 counts for a batch of 2"),
            (result(vec![1, 1], &[(0, [0, 1])]), "counts add up to 2"),
            (
                BatchResult {
                    keys: vec![],
                    ..result(vec![1, 0], &[(0, [0, 1])])
                },
                "keys has 0 words",
            ),
            (
                BatchResult {
                    rejected: vec![Rejection {
                        index: 7,
                        reason: "x".into(),
                    }],
                    ..result(vec![0, 0], &[])
                },
                "rejected message 7",
            ),
        ];
        for (r, expected) in cases {
            let v = ValidatedResult::new(r, 2, 1);
            for i in 0..2 {
                let err = v.outcome(i).err().unwrap();
                assert!(err.contains(expected), "{err} vs {expected}");
                assert!(v.is_invalid(i));
            }
        }
    }

    #[test]
    fn bad_records_fail_only_their_message() {
        let cases = [
            result(vec![1, 0], &[(5, [0, 1])]),        // unknown target
            result(vec![1, 0], &[(0, [1, 9])]),        // value past the arena
            result(vec![1, 0], &[(0, [u32::MAX, 2])]), // overflowing span
            BatchResult {
                headers: vec![0, 3],
                ..result(vec![1, 0], &[(0, [0, 1])])
            }, // headers past the list
            BatchResult {
                data: vec![0xff, b'v'],
                ..result(vec![1, 0], &[(0, [0, 1])])
            }, // header name not UTF-8
        ];
        for r in cases {
            let v = ValidatedResult::new(r, 2, 1);
            assert!(
                v.outcome(0)
                    .err()
                    .unwrap()
                    .starts_with("plugin returned an invalid result")
            );
            assert!(v.is_invalid(0));
            assert!(v.outcome(1).is_ok() && !v.is_invalid(1));
        }
    }

    #[test]
    fn a_long_rejection_reason_is_capped() {
        let mut r = result(vec![0], &[]);
        r.rejected.push(Rejection {
            index: 0,
            reason: "r".repeat(2 << 20),
        });
        let v = ValidatedResult::new(r, 1, 1);
        let reason = v.outcome(0).err().unwrap();
        assert!(reason.len() < 1100, "{} bytes", reason.len());
        assert!(reason.starts_with("rrrr"));
        assert!(reason.ends_with(" bytes cut)"), "{reason}");
    }
}
