//! The headers a dead-lettered record carries, so an operator can tell what
//! failed, where, and why without the host's logs.

use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders};

pub const ERROR: &str = "weir.error";
pub const ERROR_KIND: &str = "weir.error.kind";
pub const STAGE: &str = "weir.stage";
pub const PLUGIN_DIGEST: &str = "weir.plugin.digest";
pub const SOURCE_TOPIC: &str = "weir.source.topic";
pub const SOURCE_PARTITION: &str = "weir.source.partition";
pub const SOURCE_OFFSET: &str = "weir.source.offset";
/// On a dead letter sent without its value because the value was too large
/// to publish: the value's size in bytes. The original is still in its
/// input topic, at the `weir.source.*` coordinates.
pub const ORIGINAL_SIZE: &str = "weir.original.size";

/// The value of `weir.error.kind` for a message the plugin rejected.
/// (Outputs over the stage's limits are `output_limit`, a kind of
/// [`crate::wasm::CallErrorKind`]: the host refuses the call's result.)
pub const KIND_PLUGIN_ERROR: &str = "plugin_error";
/// A message larger than the stage's `max_payload_bytes`; the plugin never
/// saw it.
pub const KIND_OVERSIZE: &str = "oversize";
/// The plugin's result for the message broke the contract (bad spans,
/// unknown outputs).
pub const KIND_DECODE: &str = "decode";
/// The broker refused an output record for what it is (too large for the
/// topic, a null key on a compacted topic): the input is dead-lettered.
pub const KIND_PRODUCE_ERROR: &str = "produce_error";

/// The original headers followed by weir's.
pub fn headers(
    msg: &impl Message,
    stage: &str,
    digest: &str,
    kind: &str,
    reason: &str,
) -> OwnedHeaders {
    let original = msg.headers();
    let n = original.map_or(0, |h| h.count());
    let mut out = OwnedHeaders::new_with_capacity(n + 7);
    if let Some(h) = original {
        for header in h.iter() {
            out = out.insert(header);
        }
    }
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    // Every reason is cut where it is made; this also covers the host's
    // own (which name topics and broker errors), so a dead letter can
    // never be made too large to publish by its reason.
    let reason = crate::wasm::cap_reason(reason);
    for (key, value) in [
        (ERROR, reason.as_ref()),
        (ERROR_KIND, kind),
        (STAGE, stage),
        (PLUGIN_DIGEST, digest),
        (SOURCE_TOPIC, msg.topic()),
        (SOURCE_PARTITION, partition.as_str()),
        (SOURCE_OFFSET, offset.as_str()),
    ] {
        out = out.insert(Header {
            key,
            value: Some(value),
        });
    }
    out
}

/// The headers of a dead letter sent without its value, with the value's
/// size.
pub fn without_value(headers: OwnedHeaders, size: usize) -> OwnedHeaders {
    let size = size.to_string();
    headers.insert(Header {
        key: ORIGINAL_SIZE,
        value: Some(size.as_str()),
    })
}
