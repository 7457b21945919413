//! `GET /metrics` in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;

use weir_runtime::metrics::{BATCH_BUCKETS_US, PluginMetricValue, Registry, StageSnapshot};

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A plugin's metric name as Prometheus allows it.
fn sanitise(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

type Field = (
    &'static str,
    &'static str,
    &'static str,
    fn(&StageSnapshot) -> u64,
);

const STAGE_FIELDS: &[Field] = &[
    (
        "consumed_total",
        "counter",
        "Messages read from the stage's inputs.",
        |s| s.consumed,
    ),
    (
        "emitted_total",
        "counter",
        "Records published and acknowledged.",
        |s| s.emitted,
    ),
    (
        "dead_lettered_total",
        "counter",
        "Messages dead-lettered and acknowledged.",
        |s| s.dead_lettered,
    ),
    (
        "committed_total",
        "counter",
        "Input offsets stored for commit.",
        |s| s.committed,
    ),
    (
        "batches_total",
        "counter",
        "Plugin calls on batches.",
        |s| s.batches,
    ),
    (
        "traps_total",
        "counter",
        "Plugin calls that trapped.",
        |s| s.traps,
    ),
    (
        "timeouts_total",
        "counter",
        "Plugin calls past their deadline.",
        |s| s.timeouts,
    ),
    (
        "instance_restarts_total",
        "counter",
        "Fresh plugin instances after a failure.",
        |s| s.instance_restarts,
    ),
    (
        "skipped_total",
        "counter",
        "Failed messages dropped by on_error = skip.",
        |s| s.skipped,
    ),
    (
        "dead_letters_without_value_total",
        "counter",
        "Dead letters sent without their value, which was too large to publish.",
        |s| s.dead_letters_without_value,
    ),
    (
        "changelog_records_total",
        "counter",
        "Records written to the stage's changelog topic (keyed state changes, one per key per flush).",
        |s| s.changelog_records,
    ),
    (
        "state_restored_records_total",
        "counter",
        "Changelog records read to restore keyed state.",
        |s| s.state_restored_records,
    ),
    (
        "last_restore_ms",
        "gauge",
        "How long the last restore of keyed state from the changelog took, milliseconds.",
        |s| s.last_restore_ms,
    ),
    (
        "rebalances_total",
        "counter",
        "Rebalances that assigned the stage's consumer partitions, its first join included.",
        |s| s.rebalances,
    ),
    (
        "consumers_replaced_total",
        "counter",
        "Group consumers replaced after staying out of their group for a minute (librdkafka's group state in its statistics).",
        |s| s.consumers_replaced,
    ),
    (
        "transactions_total",
        "counter",
        "Exactly-once: transactions committed (outputs, dead letters, changelog and offsets together).",
        |s| s.transactions,
    ),
    (
        "aborted_transactions_total",
        "counter",
        "Exactly-once: transactions aborted; their messages were processed again.",
        |s| s.aborted_transactions,
    ),
    (
        "backpressure_ms_total",
        "counter",
        "Time spent waiting to enqueue records while the process's buffer budget was full.",
        |s| s.backpressure_ms,
    ),
    (
        "metric_series_dropped_total",
        "counter",
        "Plugin metric updates dropped: a new series past max_metric_series, or an invalid name or label.",
        |s| s.metric_series_dropped,
    ),
    (
        "swaps_total",
        "counter",
        "Plugin instances swapped in by reloads.",
        |s| s.swaps,
    ),
    (
        "replays_total",
        "counter",
        "Replays from the beginning of the inputs.",
        |s| s.replays,
    ),
    (
        "lag",
        "gauge",
        "Messages behind the end of the inputs.",
        |s| s.lag,
    ),
    (
        "state_keys",
        "gauge",
        "Keys held in the stage's keyed state.",
        |s| s.state_keys,
    ),
    (
        "state_expired_total",
        "counter",
        "Keys of the stage's state dropped at the end of their ttl.",
        |s| s.state_expired,
    ),
    (
        "memory_high_water_bytes",
        "gauge",
        "Most linear memory an instance has had.",
        |s| s.memory_high_water_bytes,
    ),
];

/// A sample value as the text format spells it (`+Inf`, not Rust's `inf`).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        v.to_string()
    }
}

/// The plugins' metrics, one family per name: all its samples together,
/// whichever stages report it, under one TYPE line (`untyped` if stages
/// disagree on the kind). Names and labels were checked when reported.
fn render_plugin_metrics(out: &mut String, registry: &Registry) {
    let mut metrics = registry.plugin_metrics();
    metrics.sort_by(|(a, _), (b, _)| {
        (&a.name, &a.stage, &a.labels).cmp(&(&b.name, &b.stage, &b.labels))
    });
    for family in metrics.chunk_by(|(a, _), (b, _)| a.name == b.name) {
        let name = format!("weir_plugin_{}", sanitise(&family[0].0.name));
        let kind = |v: &PluginMetricValue| match v {
            PluginMetricValue::Counter(_) => "counter",
            PluginMetricValue::Gauge(_) => "gauge",
        };
        let first = kind(&family[0].1);
        let kind = if family.iter().all(|(_, v)| kind(v) == first) {
            first
        } else {
            "untyped"
        };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (key, value) in family {
            let mut labels = format!("stage=\"{}\"", escape(&key.stage));
            for (k, v) in &key.labels {
                let _ = write!(labels, ",{}=\"{}\"", sanitise(k), escape(v));
            }
            let v = match value {
                PluginMetricValue::Counter(c) => c.to_string(),
                PluginMetricValue::Gauge(g) => float(*g),
            };
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// `stages` are the registry's snapshots, completed by the caller.
/// The bridges' series, appended to `out`: one family at a time.
pub fn render_bridges(out: &mut String, bridges: &[(&str, weir_engine::bridge::BridgeStats)]) {
    type Get = fn(&weir_engine::bridge::BridgeStats) -> u64;
    let families: [(&str, &str, &str, Get); 6] = [
        ("clients", "gauge", "WebSocket clients connected.", |s| {
            s.clients_connected as u64
        }),
        (
            "messages_received_total",
            "counter",
            "Records read from the bridged topic.",
            |s| s.messages_received,
        ),
        (
            "messages_relayed_total",
            "counter",
            "Records sent to clients.",
            |s| s.messages_relayed,
        ),
        (
            "bytes_relayed_total",
            "counter",
            "Bytes sent to clients.",
            |s| s.bytes_relayed,
        ),
        (
            "messages_dropped_total",
            "counter",
            "Records slow clients lost.",
            |s| s.messages_dropped,
        ),
        (
            "clients_behind_total",
            "counter",
            "Clients cut off for staying behind.",
            |s| s.clients_behind,
        ),
    ];
    if bridges.is_empty() {
        return;
    }
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP weir_bridge_{name} {help}");
        let _ = writeln!(out, "# TYPE weir_bridge_{name} {kind}");
        for (bridge, stats) in bridges {
            let _ = writeln!(
                out,
                "weir_bridge_{name}{{bridge=\"{}\"}} {}",
                escape(bridge),
                get(stats)
            );
        }
    }
}

pub fn render(
    registry: &Registry,
    stages: &BTreeMap<String, StageSnapshot>,
    extra: &[(&str, &str, u64)],
) -> String {
    let mut out = String::new();
    for (name, kind, help, get) in STAGE_FIELDS {
        let _ = writeln!(out, "# HELP weir_stage_{name} {help}");
        let _ = writeln!(out, "# TYPE weir_stage_{name} {kind}");
        for (stage, snap) in stages {
            let _ = writeln!(
                out,
                "weir_stage_{name}{{stage=\"{}\"}} {}",
                escape(stage),
                get(snap)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP weir_stage_failures_total Failed messages by weir.error.kind."
    );
    let _ = writeln!(out, "# TYPE weir_stage_failures_total counter");
    for (stage, snap) in stages {
        for (kind, n) in &snap.failures {
            let _ = writeln!(
                out,
                "weir_stage_failures_total{{stage=\"{}\",kind=\"{kind}\"}} {n}",
                escape(stage)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP weir_stage_records_total Records acknowledged by the broker, per topic written."
    );
    let _ = writeln!(out, "# TYPE weir_stage_records_total counter");
    for (stage, snap) in stages {
        for (topic, n) in &snap.by_topic {
            let _ = writeln!(
                out,
                "weir_stage_records_total{{stage=\"{}\",topic=\"{}\"}} {n}",
                escape(stage),
                escape(topic)
            );
        }
    }
    let name = "weir_stage_batch_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time a stage takes for a batch, from polled to its records enqueued."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (stage, snap) in stages {
        let stage = escape(stage);
        let h = &snap.batch_duration;
        let mut cumulative = 0;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative += n;
            let le = BATCH_BUCKETS_US
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |us| (*us as f64 / 1e6).to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{stage=\"{stage}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{stage=\"{stage}\"}} {}",
            h.sum_us as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{stage=\"{stage}\"}} {cumulative}");
    }
    for (name, help, value) in extra {
        let _ = writeln!(out, "# HELP weir_{name} {help}");
        let _ = writeln!(out, "# TYPE weir_{name} counter");
        let _ = writeln!(out, "weir_{name} {value}");
    }
    render_plugin_metrics(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_runtime::metrics::{PluginMetricKey, StageMetrics};

    #[test]
    fn renders_stage_and_plugin_metrics() {
        let r = Registry::default();
        StageMetrics::add(&r.stage("deg").consumed, 5);
        r.stage("deg").failed("trap");
        r.stage("deg")
            .acknowledged_by_topic
            .lock()
            .unwrap()
            .push(("out".into(), 4));
        r.stage("deg")
            .batch_duration
            .record(std::time::Duration::from_micros(300));
        r.stage("deg")
            .batch_duration
            .record(std::time::Duration::from_secs(20));
        r.counter_add(
            PluginMetricKey {
                stage: "inv".into(),
                name: "reservations".into(),
                labels: vec![("reason".into(), "OUT\"OF".into())],
            },
            2,
        );
        let text = render(
            &r,
            &r.stages(),
            &[("generator_produced_total", "Produced.", 9)],
        );
        assert!(
            text.contains("weir_stage_consumed_total{stage=\"deg\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("weir_stage_failures_total{stage=\"deg\",kind=\"trap\"} 1\n"));
        assert!(text.contains("weir_plugin_reservations{stage=\"inv\",reason=\"OUT\\\"OF\"} 2\n"));
        assert!(text.contains("weir_generator_produced_total 9\n"));
        assert!(text.contains("weir_stage_records_total{stage=\"deg\",topic=\"out\"} 4\n"));
        assert!(text.contains("# TYPE weir_stage_lag gauge\n"));
        let bucket = |le: &str| {
            format!("weir_stage_batch_duration_seconds_bucket{{stage=\"deg\",le=\"{le}\"}}")
        };
        assert!(
            text.contains(&format!("{} 0\n", bucket("0.00025"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1\n", bucket("0.0005"))),
            "{text}"
        );
        assert!(text.contains(&format!("{} 1\n", bucket("10"))), "{text}");
        assert!(text.contains(&format!("{} 2\n", bucket("+Inf"))), "{text}");
        assert!(text.contains("weir_stage_batch_duration_seconds_sum{stage=\"deg\"} 20.0003\n"));
        assert!(text.contains("weir_stage_batch_duration_seconds_count{stage=\"deg\"} 2\n"));
    }

    #[test]
    fn plugin_families_are_grouped_escaped_and_spelled_for_scrapers() {
        let r = Registry::default();
        let key = |stage: &str, name: &str, labels: &[(&str, &str)]| PluginMetricKey {
            stage: stage.into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        r.counter_add(key("a", "x", &[]), 1);
        r.counter_add(key("a", "y", &[]), 1);
        r.counter_add(
            key("b", "x", &[("v", "back\\slash \"quote\" new\nline")]),
            2,
        );
        r.gauge_set(key("b", "inf", &[]), f64::INFINITY);
        r.gauge_set(key("c", "inf", &[]), f64::NAN);
        r.gauge_set(key("c", "x", &[]), -1.5);
        // Refused: the host's own label, and a name scrapers reject.
        r.counter_add(key("a", "z", &[("stage", "spoof")]), 1);
        r.counter_add(key("a", "z", &[("9x", "1")]), 1);
        let text = render(&r, &r.stages(), &[]);
        let plugin: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("weir_plugin_"))
            .collect();
        assert_eq!(
            plugin,
            [
                "# TYPE weir_plugin_inf gauge",
                "weir_plugin_inf{stage=\"b\"} +Inf",
                "weir_plugin_inf{stage=\"c\"} NaN",
                "# TYPE weir_plugin_x untyped",
                "weir_plugin_x{stage=\"a\"} 1",
                "weir_plugin_x{stage=\"b\",v=\"back\\\\slash \\\"quote\\\" new\\nline\"} 2",
                "weir_plugin_x{stage=\"c\"} -1.5",
                "# TYPE weir_plugin_y counter",
                "weir_plugin_y{stage=\"a\"} 1",
            ],
            "{text}"
        );
        assert!(text.contains("weir_stage_metric_series_dropped_total{stage=\"a\"} 2\n"));
    }
}
