//! `[[bridge]]`: a declared topic relayed live to WebSocket clients of the
//! admin listener.

use std::collections::HashSet;
use std::time::Duration;

use super::diagnostic::{Report, in_range};
use super::model::{BridgeConfig, BridgeSchema};
use super::raw::{Item, RawBridge, RawBridgeSchema};
use super::validate::{Topics, is_stage_name, substitute};

const DEFAULT_QUEUE: i64 = 1024;
const DEFAULT_MAX_CLIENTS: i64 = 100;
const DEFAULT_BEHIND_MS: i64 = 5_000;

pub(super) fn bridges(
    items: Vec<Item<'_, RawBridge>>,
    prefix: &str,
    topics: &Topics,
    report: &mut Report<'_>,
) -> Vec<BridgeConfig> {
    let mut names = HashSet::new();
    let mut bridges = Vec::new();
    for Item {
        path, value: raw, ..
    } in items
    {
        let name = raw.name.get_ref().clone();
        if !is_stage_name(&name) {
            report.at(
                &raw.name.span(),
                Some(&path.key("name")),
                format!("invalid bridge name {name:?}: must match ^[a-z0-9][a-z0-9_-]*$"),
            );
        } else if !names.insert(name.clone()) {
            report.at(
                &raw.name.span(),
                Some(&path.key("name")),
                format!("duplicate bridge name {name:?}"),
            );
        }
        let topic = substitute(raw.topic.get_ref(), prefix);
        topics.check_declared(&topic, &raw.topic.span(), &path.key("topic"), report);
        if let Some(empty) = raw.key.as_ref().filter(|k| k.get_ref().is_empty()) {
            report.at(
                &empty.span(),
                Some(&path.key("key")),
                "key must name a header; leave it out to use the record key",
            );
        }
        let key = raw.key.map(serde_spanned::Spanned::into_inner);
        let mut get = |value: Option<serde_spanned::Spanned<i64>>, key: &str, min, max, default| {
            value
                .and_then(|v| in_range(&v, min, max, &path.key(key), report))
                .unwrap_or(default)
        };
        let queue = get(raw.queue, "queue", 1, 65_536, DEFAULT_QUEUE);
        let max_clients = get(
            raw.max_clients,
            "max_clients",
            1,
            10_000,
            DEFAULT_MAX_CLIENTS,
        );
        let behind_ms = get(raw.behind_ms, "behind_ms", 100, 600_000, DEFAULT_BEHIND_MS);
        bridges.push(BridgeConfig {
            name,
            topic,
            key,
            schema: match raw.schema {
                None | Some(RawBridgeSchema::TelemetryFrame) => BridgeSchema::TelemetryFrame,
                Some(RawBridgeSchema::Json) => BridgeSchema::Json,
            },
            queue: queue as usize,
            max_clients: max_clients as usize,
            behind: Duration::from_millis(behind_ms as u64),
        });
    }
    bridges
}
