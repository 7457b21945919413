//! The file as written: serde shapes for each top-level item, and the splitting of a parsed
//! document into those items.
//!
//! Every item (`[kafka]`, `[admin]`, each `[[topic]]`, each `[[stage]]`) is deserialized on its
//! own from the spanned document, so a bad key in one item cannot hide problems in another.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diagnostic::Report;
use super::keypath::{KeyPath, Segment};

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawKafka {
    pub(super) brokers: Option<Spanned<String>>,
    pub(super) group_id: Option<Spanned<String>>,
    pub(super) topic_prefix: Option<Spanned<String>>,
    pub(super) security_protocol: Option<Spanned<String>>,
    pub(super) sasl_mechanism: Option<Spanned<String>>,
    pub(super) sasl_username: Option<Spanned<String>>,
    pub(super) sasl_password: Option<Spanned<String>>,
    pub(super) ssl_ca_location: Option<Spanned<String>>,
    pub(super) options: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub(super) max_buffered_mb: Option<Spanned<i64>>,
    pub(super) commit_interval_ms: Option<Spanned<i64>>,
    pub(super) processing: Option<RawProcessing>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawAdmin {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) autostart: Option<bool>,
}

// Integers are read as i64 (TOML's own integer type) so that out-of-range values get a message
// stating the allowed range instead of serde's "expected i32".
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTopic {
    pub(super) name: Spanned<String>,
    pub(super) partitions: Option<Spanned<i64>>,
    pub(super) replication_factor: Option<Spanned<i64>>,
    pub(super) config: Option<BTreeMap<String, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawStage {
    pub(super) name: Spanned<String>,
    pub(super) plugin: Spanned<String>,
    pub(super) inputs: Spanned<Vec<Spanned<String>>>,
    pub(super) outputs: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub(super) dead_letter: Spanned<String>,
    pub(super) batch: Option<RawBatch>,
    pub(super) on_error: Option<RawOnError>,
    pub(super) state: Option<RawStateBackend>,
    pub(super) processing: Option<RawProcessing>,
    pub(super) compression: Option<RawCompression>,
    pub(super) limits: Option<RawLimits>,
    pub(super) grants: Option<RawGrants>,
    pub(super) config: Option<toml::Table>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawOnError {
    DeadLetter,
    Skip,
    Halt,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawProcessing {
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawCompression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawStateBackend {
    Changelog,
    Memory,
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawLimits {
    pub(super) memory_mb: Option<Spanned<i64>>,
    pub(super) timeout_ms: Option<Spanned<i64>>,
    pub(super) max_payload_bytes: Option<Spanned<i64>>,
    pub(super) max_outputs_per_message: Option<Spanned<i64>>,
    pub(super) max_output_bytes_per_message: Option<Spanned<i64>>,
    pub(super) state_max_bytes: Option<Spanned<i64>>,
    pub(super) state_max_keys: Option<Spanned<i64>>,
    pub(super) max_metric_series: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawGrants {
    pub(super) env: Option<Vec<Spanned<String>>>,
    pub(super) clock: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawBatch {
    pub(super) max_messages: Option<Spanned<i64>>,
    pub(super) max_wait_ms: Option<Spanned<i64>>,
}

/// One top-level item that deserialized cleanly.
pub(super) struct Item<'i, T> {
    /// `kafka`, `topic[2]`, ...
    pub(super) path: KeyPath,
    /// The item's header (`[[stage]]`) or, for inline tables, the whole value.
    pub(super) span: Range<usize>,
    pub(super) value: T,
    /// The item as parsed, kept to locate keys that the serde shape does not carry spans for.
    pub(super) tree: Spanned<DeValue<'i>>,
}

/// The document split into items. Items that failed to deserialize have already been reported
/// and are absent, but leave behind what later checks need to avoid piling follow-on errors
/// onto the one already reported.
#[derive(Default)]
pub(super) struct RawDocument<'i> {
    pub(super) kafka: Option<Item<'i, RawKafka>>,
    /// `kafka.topic_prefix`, recovered from a `[kafka]` table that failed to deserialize, so
    /// that topic names still resolve the way the user meant.
    pub(super) salvaged_prefix: Option<Spanned<String>>,
    pub(super) admin: Option<Item<'i, RawAdmin>>,
    pub(super) topics: Vec<Item<'i, RawTopic>>,
    /// Names of `[[topic]]`s that failed to deserialize; stages may still refer to them.
    pub(super) salvaged_topics: Vec<Spanned<String>>,
    pub(super) stages: Vec<Item<'i, RawStage>>,
    /// How many `[[stage]]` items the file has, including broken ones.
    pub(super) stage_count: usize,
    pub(super) bridges: Vec<Item<'i, RawBridge>>,
}

const TOP_LEVEL_KEYS: &str = "`kafka`, `admin`, `topic`, `stage`, `bridge`";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawBridge {
    pub(super) name: Spanned<String>,
    pub(super) topic: Spanned<String>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) schema: Option<RawBridgeSchema>,
    pub(super) queue: Option<Spanned<i64>>,
    pub(super) max_clients: Option<Spanned<i64>>,
    pub(super) behind_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawBridgeSchema {
    TelemetryFrame,
    Json,
}

pub(super) fn split<'i>(root: &DeTable<'i>, report: &mut Report<'_>) -> RawDocument<'i> {
    let mut doc = RawDocument::default();
    for (key, value) in root.iter() {
        let name = key.get_ref().as_ref();
        let path = KeyPath::root().key(name);
        match name {
            "kafka" => match deserialize(value, &path, &[], report) {
                Some(item) => doc.kafka = Some(item),
                None => doc.salvaged_prefix = salvage_string(value, "topic_prefix"),
            },
            "admin" => doc.admin = deserialize(value, &path, &[], report),
            "topic" => {
                for (index, element) in array_of_tables(value, &path, report).iter().enumerate() {
                    match deserialize(element, &path.index(index), &[], report) {
                        Some(item) => doc.topics.push(item),
                        None => doc.salvaged_topics.extend(salvage_string(element, "name")),
                    }
                }
            }
            "stage" => {
                // A `stage` that is not an array still declares a (broken) stage; counting it
                // keeps "no stages" from being reported on top of the type error.
                if !matches!(value.get_ref(), DeValue::Array(_)) {
                    doc.stage_count += 1;
                }
                for (index, element) in array_of_tables(value, &path, report).iter().enumerate() {
                    doc.stage_count += 1;
                    doc.stages
                        .extend(deserialize(element, &path.index(index), &["batch"], report));
                }
            }
            "bridge" => {
                for (index, element) in array_of_tables(value, &path, report).iter().enumerate() {
                    doc.bridges
                        .extend(deserialize(element, &path.index(index), &[], report));
                }
            }
            _ => report.at(
                &key.span(),
                Some(&path),
                format!("unknown field `{name}`, expected one of {TOP_LEVEL_KEYS}"),
            ),
        }
    }
    doc
}

/// The elements of `[[name]]`; anything else is reported.
fn array_of_tables<'v, 'i>(
    value: &'v Spanned<DeValue<'i>>,
    path: &KeyPath,
    report: &mut Report<'_>,
) -> &'v [Spanned<DeValue<'i>>] {
    match value.get_ref() {
        DeValue::Array(array) => array,
        other => {
            report.at(
                &value.span(),
                Some(path),
                format!(
                    "invalid type: {}, expected an array of tables (declare each one with `[[{path}]]`)",
                    other.type_str()
                ),
            );
            &[]
        }
    }
}

/// Deserializes one item. `tables` names the item's keys that hold nested structs.
fn deserialize<'i, T: DeserializeOwned>(
    tree: &Spanned<DeValue<'i>>,
    path: &KeyPath,
    tables: &[&str],
    report: &mut Report<'_>,
) -> Option<Item<'i, T>> {
    // serde's derived structs also accept an array of their fields in order, which would let
    // `batch = [1, 2]` through as a batch of 1 message waiting 2 ms.
    let nested = tables
        .iter()
        .filter_map(|key| Some((path.key(key), tree.get_ref().get(*key)?)));
    for (path, value) in std::iter::once((path.clone(), tree)).chain(nested) {
        if !value.get_ref().is_table() {
            let found = value.get_ref().type_str();
            report.at(
                &value.span(),
                Some(&path),
                format!("invalid type: {found}, expected a table"),
            );
            return None;
        }
    }
    match T::deserialize(ValueDeserializer::from(tree.clone())) {
        Ok(value) => Some(Item {
            path: path.clone(),
            span: tree.span(),
            value,
            tree: tree.clone(),
        }),
        Err(error) => {
            // toml attaches the span of the offending key (unknown field), value (wrong type)
            // or table (missing field); mapping that span back onto the tree recovers the key
            // path, including array indices that toml's own error does not record.
            let span = error.span().unwrap_or_else(|| tree.span());
            let key = match path_of_span(tree, &span) {
                Some(relative) => path.join(&relative),
                None => path.clone(),
            };
            report.at(&span, Some(&key), plain_words(error.message()));
            None
        }
    }
}

/// Rewords serde's type errors in TOML's vocabulary: users write arrays and tables, not
/// sequences, maps and `i64`s.
fn plain_words(message: &str) -> String {
    let Some((found, expected)) = message.split_once(", expected ") else {
        return message.to_owned();
    };
    if !found.starts_with("invalid type: ") && !found.starts_with("invalid value: ") {
        return message.to_owned();
    }
    // An integer too large for i64 arrives as i128/u128 and is reported as a type mismatch.
    if expected == "i64"
        && let Some(integer) = found
            .strip_prefix("invalid type: integer ")
            .or_else(|| found.strip_prefix("invalid value: integer "))
    {
        let integer = integer
            .trim_end_matches(" as i128")
            .trim_end_matches(" as u128");
        return format!("integer {integer} is out of range");
    }
    let found = match found.strip_prefix("invalid type: ") {
        Some("sequence") => "invalid type: array",
        Some("map") => "invalid type: table",
        _ => found,
    };
    let expected = match expected {
        "i64" => "an integer",
        "a sequence" => "an array",
        "a map" => "a table",
        other => other,
    };
    format!("{found}, expected {expected}")
}

/// The path, relative to `tree`, of the key or value spanning exactly `span`.
fn path_of_span(tree: &Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<KeyPath> {
    if tree.span() == *span {
        return Some(KeyPath::root());
    }
    // Children are searched exhaustively rather than by containment: the span of a table
    // declared with a `[header]` covers only the header, not the keys below it.
    match tree.get_ref() {
        DeValue::Table(table) => table.iter().find_map(|(key, value)| {
            let here = KeyPath::root().key(key.get_ref());
            if key.span() == *span {
                Some(here)
            } else {
                path_of_span(value, span).map(|rest| here.join(&rest))
            }
        }),
        DeValue::Array(array) => array.iter().enumerate().find_map(|(index, value)| {
            path_of_span(value, span).map(|rest| KeyPath::root().index(index).join(&rest))
        }),
        _ => None,
    }
}

/// The span of the value at `path` (relative to `tree`), if there is one.
pub(super) fn span_of_path(tree: &Spanned<DeValue<'_>>, path: &KeyPath) -> Option<Range<usize>> {
    let mut node = tree;
    for segment in path.segments() {
        node = match (node.get_ref(), segment) {
            (DeValue::Table(table), Segment::Key(key)) => table.get(key.as_str())?,
            (DeValue::Array(array), Segment::Index(index)) => array.get(*index)?,
            _ => return None,
        };
    }
    Some(node.span())
}

fn salvage_string(tree: &Spanned<DeValue<'_>>, key: &str) -> Option<Spanned<String>> {
    let value = tree.get_ref().as_table()?.get(key)?;
    let text = value.get_ref().as_str()?;
    Some(Spanned::new(value.span(), text.to_owned()))
}
