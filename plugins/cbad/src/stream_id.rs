//! Which DriftLock stream a message belongs to: the configured header if
//! the message has it, else the configured JSON path if the payload has it,
//! else `default`.

use serde_json::Value;

pub const DEFAULT_STREAM: &str = "default";
/// Stream ids name state keys and metric labels; longer ones are refused
/// rather than truncated, which could merge two streams.
pub const MAX_STREAM_ID_BYTES: usize = 256;

/// The value at a dotted path; a numeric segment also indexes an array.
fn at_path<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, segment| match v {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => items.get(segment.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A scalar as a stream id; objects, arrays, null and empty strings do not
/// name a stream.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Resolves the stream id. `header` is the configured header's value if the
/// message has it; `field` the configured JSON path. A payload that is not
/// JSON simply has no field.
pub fn resolve(
    header: Option<&[u8]>,
    payload: &[u8],
    field: Option<&str>,
) -> Result<String, String> {
    let from_header = header
        .filter(|h| !h.is_empty())
        .map(|h| String::from_utf8_lossy(h).into_owned());
    let id = from_header
        .or_else(|| {
            let path = field?;
            let value: Value = serde_json::from_slice(payload).ok()?;
            scalar(at_path(&value, path)?)
        })
        .unwrap_or_else(|| DEFAULT_STREAM.to_string());
    if id.len() > MAX_STREAM_ID_BYTES {
        return Err(format!(
            "stream id of {} bytes exceeds the {MAX_STREAM_ID_BYTES}-byte limit",
            id.len()
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = br#"{"metadata":{"stream_id":"550e8400-e29b-41d4-a716-446655440000","n":7,"list":["a","b"]},"data":"..."}"#;

    #[test]
    fn header_then_field_then_default() {
        let field = Some("metadata.stream_id");
        assert_eq!(resolve(Some(b"s-1"), DOC, field).unwrap(), "s-1");
        assert_eq!(
            resolve(None, DOC, field).unwrap(),
            "550e8400-e29b-41d4-a716-446655440000"
        );
        assert_eq!(
            resolve(Some(b""), DOC, field).unwrap(),
            "550e8400-e29b-41d4-a716-446655440000"
        );
        assert_eq!(resolve(None, DOC, None).unwrap(), "default");
        assert_eq!(
            resolve(None, DOC, Some("metadata.missing")).unwrap(),
            "default"
        );
        assert_eq!(resolve(None, b"not json", field).unwrap(), "default");
        assert_eq!(resolve(None, DOC, Some("metadata.n")).unwrap(), "7");
        assert_eq!(resolve(None, DOC, Some("metadata.list.1")).unwrap(), "b");
        assert_eq!(resolve(None, DOC, Some("metadata")).unwrap(), "default");
        assert_eq!(resolve(None, br#"{"s":""}"#, Some("s")).unwrap(), "default");
    }

    #[test]
    fn overlong_ids_are_refused() {
        let long = vec![b'x'; MAX_STREAM_ID_BYTES + 1];
        let err = resolve(Some(&long), DOC, None).unwrap_err();
        assert!(err.contains("257 bytes"), "{err}");
        assert!(resolve(Some(&long[1..]), DOC, None).is_ok());
    }
}
