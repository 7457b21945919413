//! The results of one run, and how they read in BENCHMARKS.md.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::broker::Ceiling;
use crate::latency::Latency;
use crate::load::LoadTime;
use crate::restore::Restore;
use crate::throughput::Throughput;

#[derive(Debug, Serialize)]
pub struct Results {
    pub date: String,
    pub machine: String,
    pub versions: Vec<(String, String)>,
    pub messages: u64,
    pub rounds: u32,
    pub python_messages: u64,
    pub message_bytes: usize,
    pub partitions: i32,
    pub ceiling: Option<Ceiling>,
    pub throughput: Vec<Throughput>,
    pub latency: Vec<Latency>,
    pub load: Vec<LoadTime>,
    /// (benchmark, ns per message), from criterion.
    pub micro: Vec<(String, f64)>,
    /// The restore rung, one per round.
    pub restore: Vec<Restore>,
    /// What was skipped or is to be read with care, and why.
    pub notes: Vec<String>,
    pub seconds: f64,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Results {
    fn runs<'a>(&'a self, rung: &'a str) -> impl Iterator<Item = &'a Throughput> + 'a {
        self.throughput.iter().filter(move |t| t.rung == rung)
    }

    pub fn median_rate(&self, rung: &str) -> Option<f64> {
        median(self.runs(rung).map(|t| t.msgs_per_sec).collect())
    }

    fn rungs(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for t in &self.throughput {
            if !names.contains(&t.rung.as_str()) {
                names.push(&t.rung);
            }
        }
        names
    }

    /// The median over rounds of `a / b` within a round. B4 runs in the
    /// first round only, so it is compared with that round's `a`.
    fn ratio(&self, a: &str, b: &str) -> Option<f64> {
        let per_round: Vec<f64> = self
            .runs(b)
            .filter_map(|tb| {
                let ta = self.runs(a).find(|ta| ta.round == tb.round)?;
                Some(ta.msgs_per_sec / tb.msgs_per_sec)
            })
            .collect();
        median(per_round)
    }

    fn micro(&self, name: &str) -> Option<f64> {
        self.micro.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// (ratio, value, target)
    pub fn ratios(&self) -> Vec<(String, Option<f64>, f64)> {
        vec![
            (
                "B3 passthrough / B1".into(),
                self.ratio("B3-pass", "B1"),
                0.95,
            ),
            (
                "B3 F1 degradation / B2".into(),
                self.ratio("B3-f1", "B2"),
                0.8,
            ),
            (
                "B3 F1 degradation / B4".into(),
                self.ratio("B3-f1", "B4"),
                20.0,
            ),
            (
                "B3 F1 dedup, state in a changelog (at-least-once) / in memory".into(),
                self.ratio("B3-f1-dedup", "B3-f1-dedup-mem"),
                0.9,
            ),
            (
                "B3 F1 dedup, changelog + exactly-once / in memory".into(),
                self.ratio("B3-f1-dedup-eos", "B3-f1-dedup-mem"),
                0.8,
            ),
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
            "- Input: {} F1 telemetry messages of about {} bytes (JSON) in a topic of {} partitions, keyed by car; the Python rung reads the first {}. {} rounds. Every producer: idempotent, `acks=all`, `linger.ms=5`.\n",
            self.messages, self.message_bytes, self.partitions, self.python_messages, self.rounds
        );
        s.push_str("### Throughput\n\nMedian over the rounds, with the range and the number of runs. CPU is the processor's own (user + system) per million messages.\n\n| rung | what | msg/s | range (runs) | CPU-s per M msgs | peak RSS (MiB) |\n|---|---|---:|---:|---:|---:|\n");
        if let Some(c) = &self.ceiling {
            let _ = writeln!(
                s,
                "| B0 | Kafka ProducerPerformance (produce only) | {:.0} | | | |",
                c.produce_msgs_per_sec
            );
            let _ = writeln!(
                s,
                "| B0 | Kafka ConsumerPerformance (consume only) | {:.0} | | | |",
                c.consume_msgs_per_sec
            );
        }
        for rung in self.rungs() {
            let runs: Vec<&Throughput> = self.runs(rung).collect();
            let rates: Vec<f64> = runs.iter().map(|t| t.msgs_per_sec).collect();
            let (lo, hi) = rates
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
            let _ = writeln!(
                s,
                "| {rung} | {} | {:.0} | {lo:.0}-{hi:.0} ({}) | {:.1} | {:.1} |",
                runs[0].what,
                median(rates.clone()).unwrap_or(0.0),
                rates.len(),
                median(runs.iter().map(|t| t.cpu_s_per_million).collect()).unwrap_or(0.0),
                runs.iter().map(|t| t.peak_rss_mib).fold(0.0, f64::max),
            );
        }
        s.push_str(
            "\n### Ratios\n\nEach ratio is taken within a round (the rungs side by side), then the median over the rounds.\n\n| ratio | value | target | |\n|---|---:|---:|---|\n",
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
        if let Some(r) = self.ratio("B3-f1-dedup-mem", "B3-f1") {
            let _ = writeln!(
                s,
                "\nF1 degradation with its (car_id, seq) deduplication in keyed state (in memory) on / off (B3-f1-dedup-mem / B3-f1, same rounds): {r:.2}."
            );
        }
        if let Some(r) = self.ratio("B3-f1-dedup", "B3-f1") {
            let _ = writeln!(
                s,
                "\nThe same with its state in a changelog topic, the default (B3-f1-dedup / B3-f1): {r:.2}. The plugin keeps each car's window of seen sequence numbers in a few bitmap keys, so a flush (every `commit_interval_ms`, 100 ms) writes a few records per car, not one per message: the count is below."
            );
        }
        for note in &self.notes {
            let _ = writeln!(s, "\n{note}");
        }
        if !self.restore.is_empty() {
            let _ = writeln!(
                s,
                "\n### Restore of keyed state\n\n{} distinct keys (16-byte keys, 8-byte values) written straight into a stage's changelog topic ({} partitions, `cleanup.policy=compact,delete`), then `weir run` started on that group and stage (the F1 plugin with deduplication on). `restore (ms)` is the stage's `last_restore_ms` (the assignment paused, the changelog read from its beginning into the store, resumed), checked against `state_restored_records` and `state_keys`; `from start (s)` is from `weir run` to the admin API showing the restore done (process start, plugin compilation and the group join included).\n\n| round | keys | restore (ms) | keys/s | from start (s) | peak RSS (MiB) | changelog written at (records/s) |\n|---:|---:|---:|---:|---:|---:|---:|",
                self.restore[0].keys, self.restore[0].partitions
            );
            for r in &self.restore {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.0} |",
                    r.round,
                    r.keys,
                    r.restore_ms,
                    r.keys_per_sec,
                    r.wall_s,
                    r.peak_rss_mib,
                    r.write_records_per_sec
                );
            }
            if let Some(m) = median(self.restore.iter().map(|r| r.keys_per_sec).collect()) {
                let _ = writeln!(s, "\nMedian: {m:.0} keys restored per second.");
            }
        }
        if !self.latency.is_empty() {
            s.push_str("\n### End-to-end latency\n\nFrom a send-time header set by the load generator (which sends each message at once, `linger.ms=0`) to arrival at a consumer of the output topic: the broker twice, the processor and its producer's linger. The load is a fraction of B1's median rate; the generator and the latency consumer run on the same two cores as the broker and the processor.\n\n| rung | what | load | msg/s asked | msg/s sent | samples | p50 (ms) | p99 (ms) | max (ms) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
            for l in &self.latency {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0}% | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} |",
                    l.rung,
                    l.what,
                    l.load * 100.0,
                    l.rate,
                    l.sent_rate,
                    l.samples,
                    l.p50_ms,
                    l.p99_ms,
                    l.max_ms
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
            for op in ["set", "get"] {
                if let (Some(ttl), Some(none)) = (
                    self.micro(&format!("state_store/{op}/ttl")),
                    self.micro(&format!("state_store/{op}/no_ttl")),
                ) {
                    let _ = writeln!(
                        s,
                        "\nKeyed state, {op} of a key with a ttl / without: {:.2}x the time (+{:.0} ns).",
                        ttl / none,
                        ttl - none
                    );
                }
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
