//! The results of one run, and how they read in BENCHMARKS.md.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::broker::Ceiling;
use crate::latency::Latency;
use crate::load::LoadTime;
use crate::throughput::Throughput;

#[derive(Debug, Serialize)]
pub struct Results {
    pub date: String,
    pub machine: String,
    pub versions: Vec<(String, String)>,
    pub messages: u64,
    pub python_messages: u64,
    pub message_bytes: usize,
    pub partitions: i32,
    pub ceiling: Option<Ceiling>,
    pub throughput: Vec<Throughput>,
    pub latency: Vec<Latency>,
    pub load: Vec<LoadTime>,
    /// (benchmark, ns per message), from criterion.
    pub micro: Vec<(String, f64)>,
    pub seconds: f64,
}

impl Results {
    fn rate(&self, rung: &str) -> Option<f64> {
        self.throughput
            .iter()
            .find(|t| t.rung == rung)
            .map(|t| t.msgs_per_sec)
    }

    fn micro(&self, name: &str) -> Option<f64> {
        self.micro.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// (ratio, value, target, met)
    pub fn ratios(&self) -> Vec<(String, Option<f64>, f64)> {
        let r = |a: &str, b: &str| Some(self.rate(a)? / self.rate(b)?);
        vec![
            ("B3 passthrough / B1".into(), r("B3-pass", "B1"), 0.95),
            ("B3 F1 degradation / B2".into(), r("B3-f1", "B2"), 0.8),
            ("B3 F1 degradation / B4".into(), r("B3-f1", "B4"), 20.0),
        ]
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Run on {} ({:.0} s in all).\n", self.date, self.seconds);
        let _ = writeln!(s, "- Machine: {}", self.machine);
        for (k, v) in &self.versions {
            let _ = writeln!(s, "- {k}: {v}");
        }
        let _ = writeln!(
            s,
            "- Input: {} F1 telemetry messages of about {} bytes (JSON) in a topic of {} partitions, keyed by car; the Python rung reads the first {}. Every producer: idempotent, `acks=all`, `linger.ms=5`.\n",
            self.messages, self.message_bytes, self.partitions, self.python_messages
        );
        s.push_str("### Throughput\n\n| rung | what | msg/s | CPU-s per M msgs | peak RSS (MiB) |\n|---|---|---:|---:|---:|\n");
        if let Some(c) = &self.ceiling {
            let _ = writeln!(
                s,
                "| B0 | Kafka ProducerPerformance (produce only) | {:.0} | | |",
                c.produce_msgs_per_sec
            );
            let _ = writeln!(
                s,
                "| B0 | Kafka ConsumerPerformance (consume only) | {:.0} | | |",
                c.consume_msgs_per_sec
            );
        }
        for t in &self.throughput {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {:.1} | {:.1} |",
                t.rung, t.what, t.msgs_per_sec, t.cpu_s_per_million, t.peak_rss_mib
            );
        }
        s.push_str(
            "\n### Ratios (same run)\n\n| ratio | value | target | |\n|---|---:|---:|---|\n",
        );
        for (name, value, target) in self.ratios() {
            match value {
                Some(v) => {
                    let ok = if v >= target { "met" } else { "missed" };
                    let _ = writeln!(s, "| {name} | {v:.2} | ≥ {target} | {ok} |");
                }
                None => {
                    let _ = writeln!(s, "| {name} | n/a | ≥ {target} | not measured |");
                }
            }
        }
        if !self.latency.is_empty() {
            s.push_str("\n### End-to-end latency at 50% of B1's rate\n\nFrom a send-time header set by the load generator to arrival at a consumer of the output topic: both producers' linger, the broker twice, the processor.\n\n| rung | what | msg/s | samples | p50 (ms) | p99 (ms) | max (ms) |\n|---|---|---:|---:|---:|---:|---:|\n");
            for l in &self.latency {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} |",
                    l.rung, l.what, l.rate, l.samples, l.p50_ms, l.p99_ms, l.max_ms
                );
            }
        }
        if !self.load.is_empty() {
            s.push_str("\n### Plugin load\n\n| plugin | compile (ms) | restart, from the artifact cache (ms) | instantiate + init (ms) |\n|---|---:|---:|---:|\n");
            for l in &self.load {
                let _ = writeln!(
                    s,
                    "| {} | {:.1} | {:.1} | {:.2} |",
                    l.plugin, l.compile_ms, l.cached_ms, l.instantiate_ms
                );
            }
        }
        if !self.micro.is_empty() {
            s.push_str("\n### Micro-benchmarks (criterion, ns per message)\n\n| benchmark | ns/msg |\n|---|---:|\n");
            for (name, ns) in &self.micro {
                let _ = writeln!(s, "| {name} | {ns:.1} |");
            }
            if let (Some(w), Some(n)) = (
                self.micro("f1_degradation/wasm/256"),
                self.micro("f1_degradation/native/256"),
            ) {
                let _ = writeln!(
                    s,
                    "\nF1 degradation in wasm (batch 256, boundary included) / native: {:.2}x the time.",
                    w / n
                );
            }
        }
        s
    }
}

/// Replaces the text between the markers in `path` with `body`.
pub fn splice(path: &Path, body: &str) -> anyhow::Result<()> {
    const BEGIN: &str = "<!-- bench:begin -->";
    const END: &str = "<!-- bench:end -->";
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{BEGIN}\n{body}{}", &text[..b], &text[e..])
        }
        _ => format!("{text}\n{BEGIN}\n{body}{END}\n"),
    };
    std::fs::write(path, new)?;
    Ok(())
}

/// Per-message means from criterion's estimates, for the given
/// (group/function/parameter, batch size) pairs.
pub fn criterion(dir: &Path, benches: &[(&str, u64)]) -> Vec<(String, f64)> {
    benches
        .iter()
        .filter_map(|(name, batch)| {
            let file = dir.join(name).join("new/estimates.json");
            let text = std::fs::read_to_string(file).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            let ns = v["mean"]["point_estimate"].as_f64()?;
            Some((name.to_string(), ns / *batch as f64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn splice_replaces_only_between_the_markers() {
        let dir = std::env::temp_dir().join(format!("weir-bench-splice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("B.md");
        std::fs::write(
            &f,
            "# head\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n## log\n",
        )
        .unwrap();
        super::splice(&f, "new\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "# head\n<!-- bench:begin -->\nnew\n<!-- bench:end -->\n## log\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
