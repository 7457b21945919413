//! The headers a dead-lettered record carries, so an operator can tell what
//! failed, where, and why without the host's logs.

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};

pub const ERROR: &str = "weir.error";
pub const ERROR_KIND: &str = "weir.error.kind";
pub const STAGE: &str = "weir.stage";
pub const PLUGIN_DIGEST: &str = "weir.plugin.digest";
pub const SOURCE_TOPIC: &str = "weir.source.topic";
pub const SOURCE_PARTITION: &str = "weir.source.partition";
pub const SOURCE_OFFSET: &str = "weir.source.offset";

/// The value of `weir.error.kind` for a message the plugin rejected.
pub const KIND_PLUGIN_ERROR: &str = "plugin_error";
/// Outputs over the stage's limits, or one the broker refuses outright.
pub const KIND_OUTPUT_LIMIT: &str = "output_limit";
/// A message larger than the stage's `max_payload_bytes`; the plugin never
/// saw it.
pub const KIND_OVERSIZE: &str = "oversize";
/// The plugin's result for the message broke the contract (bad spans,
/// unknown outputs).
pub const KIND_DECODE: &str = "decode";

/// The original headers followed by weir's.
pub fn headers(
    msg: &BorrowedMessage<'_>,
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
    for (key, value) in [
        (ERROR, reason),
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
