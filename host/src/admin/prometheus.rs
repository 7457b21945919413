//! `GET /metrics` in Prometheus' text format.

use std::fmt::Write;

use crate::metrics::{PluginMetricValue, Registry, StageSnapshot};

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
        "swaps_total",
        "counter",
        "Plugin instances swapped in by reloads.",
        |s| s.swaps,
    ),
    (
        "lag",
        "gauge",
        "Messages behind the end of the inputs.",
        |s| s.lag,
    ),
    (
        "memory_high_water_bytes",
        "gauge",
        "Most linear memory an instance has had.",
        |s| s.memory_high_water_bytes,
    ),
];

pub fn render(registry: &Registry, extra: &[(&str, &str, u64)]) -> String {
    let stages = registry.stages();
    let mut out = String::new();
    for (name, kind, help, get) in STAGE_FIELDS {
        let _ = writeln!(out, "# HELP weir_stage_{name} {help}");
        let _ = writeln!(out, "# TYPE weir_stage_{name} {kind}");
        for (stage, snap) in &stages {
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
    for (stage, snap) in &stages {
        for (kind, n) in &snap.failures {
            let _ = writeln!(
                out,
                "weir_stage_failures_total{{stage=\"{}\",kind=\"{kind}\"}} {n}",
                escape(stage)
            );
        }
    }
    for (name, help, value) in extra {
        let _ = writeln!(out, "# HELP weir_{name} {help}");
        let _ = writeln!(out, "# TYPE weir_{name} counter");
        let _ = writeln!(out, "weir_{name} {value}");
    }
    let mut typed = std::collections::BTreeSet::new();
    for (key, value) in registry.plugin_metrics() {
        let name = format!("weir_plugin_{}", sanitise(&key.name));
        let kind = match value {
            PluginMetricValue::Counter(_) => "counter",
            PluginMetricValue::Gauge(_) => "gauge",
        };
        if typed.insert(name.clone()) {
            let _ = writeln!(out, "# TYPE {name} {kind}");
        }
        let mut labels = format!("stage=\"{}\"", escape(&key.stage));
        for (k, v) in &key.labels {
            let _ = write!(labels, ",{}=\"{}\"", sanitise(k), escape(v));
        }
        let v = match value {
            PluginMetricValue::Counter(c) => c.to_string(),
            PluginMetricValue::Gauge(g) => g.to_string(),
        };
        let _ = writeln!(out, "{name}{{{labels}}} {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{PluginMetricKey, StageMetrics};

    #[test]
    fn renders_stage_and_plugin_metrics() {
        let r = Registry::default();
        StageMetrics::add(&r.stage("deg").consumed, 5);
        r.stage("deg").failed("trap");
        r.counter_add(
            PluginMetricKey {
                stage: "inv".into(),
                name: "reservations".into(),
                labels: vec![("reason".into(), "OUT\"OF".into())],
            },
            2,
        );
        let text = render(&r, &[("generator_produced_total", "Produced.", 9)]);
        assert!(
            text.contains("weir_stage_consumed_total{stage=\"deg\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("weir_stage_failures_total{stage=\"deg\",kind=\"trap\"} 1\n"));
        assert!(text.contains("weir_plugin_reservations{stage=\"inv\",reason=\"OUT\\\"OF\"} 2\n"));
        assert!(text.contains("weir_generator_produced_total 9\n"));
        assert!(text.contains("# TYPE weir_stage_lag gauge\n"));
    }
}
