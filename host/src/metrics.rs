//! Counters the host keeps per stage, and the metrics plugins report through
//! the `metrics` import. The admin API renders both.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct StageMetrics {
    /// Messages read from the input topics.
    pub consumed: AtomicU64,
    /// Records published to outputs and acknowledged by the broker.
    pub emitted: AtomicU64,
    /// Messages published to the dead-letter topic and acknowledged.
    pub dead_lettered: AtomicU64,
    /// Input offsets stored for commit.
    pub committed: AtomicU64,
    pub batches: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub instance_restarts: AtomicU64,
    /// Failed messages dropped by `on_error = "skip"`.
    pub skipped: AtomicU64,
    /// Failed messages by `weir.error.kind`, indexed like [`FAILURE_KINDS`]
    /// (counted when the failure is handled, whatever `on_error` does).
    pub failures: [AtomicU64; FAILURE_KINDS.len()],
    /// The most linear memory any instance of the stage has had, bytes.
    pub memory_high_water: AtomicU64,
    /// Messages behind the end of the inputs, sampled every few seconds.
    pub lag: AtomicU64,
    /// Plugin instances swapped in by reloads.
    pub swaps: AtomicU64,
    /// The last swap: from the file change to the new version running, and
    /// the pause between two batches it took.
    pub last_change_to_live_ms: AtomicU64,
    pub last_swap_pause_us: AtomicU64,
    /// Times the stage was replayed from the beginning of its inputs.
    pub replays: AtomicU64,
    /// How long a batch takes, from polled to its records enqueued.
    pub batch_duration: Histogram,
    /// The input partitions this process's consumer holds, as last sampled
    /// with the lag: whose keyed state this process serves.
    pub assigned: Mutex<Vec<i32>>,
    /// Records the broker acknowledged, per topic written (outputs and the
    /// dead-letter topic).
    pub acknowledged_by_topic: Mutex<Vec<(String, u64)>>,
}

/// Upper bounds of the batch-duration buckets, microseconds: 100 µs to 10 s,
/// which spans a passthrough batch and a CBAD permutation test.
pub const BATCH_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A fixed-bucket latency histogram, lock-free to record into.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket of [`BATCH_BUCKETS_US`], plus one for everything above.
    counts: [AtomicU64; BATCH_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A histogram read at one moment: counts per bucket (not cumulative).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    pub counts: Vec<u64>,
    pub sum_us: u64,
}

impl Histogram {
    pub fn record(&self, elapsed: std::time::Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = BATCH_BUCKETS_US.partition_point(|&bound| bound < us);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The bucket bound at or below which quantile `q` of the observations
    /// fall; `None` with no observations, `u64::MAX` above the last bound.
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(BATCH_BUCKETS_US.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }
}

/// The values of `weir.error.kind`.
pub const FAILURE_KINDS: [&str; 7] = [
    "plugin_error",
    "trap",
    "timeout",
    "memory",
    "oversize",
    "decode",
    "output_limit",
];

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct StageSnapshot {
    pub consumed: u64,
    pub emitted: u64,
    pub dead_lettered: u64,
    pub committed: u64,
    pub batches: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub instance_restarts: u64,
    pub skipped: u64,
    /// Failed messages by kind; kinds that never happened are left out.
    pub failures: BTreeMap<&'static str, u64>,
    pub memory_high_water_bytes: u64,
    pub lag: u64,
    pub swaps: u64,
    pub last_change_to_live_ms: u64,
    pub last_swap_pause_us: u64,
    pub replays: u64,
    /// Batch duration, as bucket bounds: half the batches took at most
    /// `batch_p50_us`, 99% at most `batch_p99_us`. `/metrics` has the
    /// whole histogram.
    pub batch_p50_us: Option<u64>,
    pub batch_p99_us: Option<u64>,
    #[serde(skip)]
    pub batch_duration: HistogramSnapshot,
    /// Input partitions assigned to this process (sorted, deduplicated
    /// over the inputs, as state is scoped by partition number).
    pub assigned_partitions: Vec<i32>,
    /// Records acknowledged per topic written: each output and the
    /// dead-letter topic.
    pub by_topic: BTreeMap<String, u64>,
    /// Keys the stage holds in keyed state, and how many have expired
    /// (filled in from the state store by the admin API).
    pub state_keys: u64,
    pub state_expired: u64,
}

impl StageMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a failed message of `kind` (one of [`FAILURE_KINDS`]).
    pub fn failed(&self, kind: &str) {
        if let Some(i) = FAILURE_KINDS.iter().position(|k| *k == kind) {
            Self::add(&self.failures[i], 1);
        }
    }

    pub fn memory_seen(&self, bytes: usize) {
        self.memory_high_water
            .fetch_max(bytes as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StageSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let batch_duration = self.batch_duration.snapshot();
        StageSnapshot {
            consumed: get(&self.consumed),
            emitted: get(&self.emitted),
            dead_lettered: get(&self.dead_lettered),
            committed: get(&self.committed),
            batches: get(&self.batches),
            traps: get(&self.traps),
            timeouts: get(&self.timeouts),
            instance_restarts: get(&self.instance_restarts),
            skipped: get(&self.skipped),
            failures: FAILURE_KINDS
                .iter()
                .zip(&self.failures)
                .map(|(k, c)| (*k, get(c)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            memory_high_water_bytes: get(&self.memory_high_water),
            lag: get(&self.lag),
            swaps: get(&self.swaps),
            last_change_to_live_ms: get(&self.last_change_to_live_ms),
            last_swap_pause_us: get(&self.last_swap_pause_us),
            replays: get(&self.replays),
            batch_p50_us: batch_duration.quantile_bound_us(0.5),
            batch_p99_us: batch_duration.quantile_bound_us(0.99),
            batch_duration,
            assigned_partitions: self
                .assigned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            by_topic: self
                .acknowledged_by_topic
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect(),
            state_keys: 0,
            state_expired: 0,
        }
    }
}

/// A plugin metric's identity: stage, name and sorted labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PluginMetricKey {
    pub stage: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum PluginMetricValue {
    Counter(u64),
    Gauge(f64),
}

#[derive(Debug, Default)]
pub struct Registry {
    stages: Mutex<BTreeMap<String, Arc<StageMetrics>>>,
    plugin: Mutex<BTreeMap<PluginMetricKey, PluginMetricValue>>,
}

impl Registry {
    pub fn stage(&self, name: &str) -> Arc<StageMetrics> {
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        stages.entry(name.to_string()).or_default().clone()
    }

    pub fn stages(&self) -> BTreeMap<String, StageSnapshot> {
        let stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        stages
            .iter()
            .map(|(k, v)| (k.clone(), v.snapshot()))
            .collect()
    }

    pub fn counter_add(&self, key: PluginMetricKey, delta: u64) {
        let mut plugin = self.plugin.lock().unwrap_or_else(|e| e.into_inner());
        match plugin.entry(key).or_insert(PluginMetricValue::Counter(0)) {
            PluginMetricValue::Counter(c) => *c = c.saturating_add(delta),
            // A name used as a gauge first stays a gauge; the plugin's
            // mistake must not crash or corrupt anything.
            PluginMetricValue::Gauge(_) => {}
        }
    }

    pub fn gauge_set(&self, key: PluginMetricKey, value: f64) {
        let mut plugin = self.plugin.lock().unwrap_or_else(|e| e.into_inner());
        let slot = plugin.entry(key).or_insert(PluginMetricValue::Gauge(value));
        if let PluginMetricValue::Gauge(g) = slot {
            *g = value;
        }
    }

    pub fn plugin_metrics(&self) -> Vec<(PluginMetricKey, PluginMetricValue)> {
        let plugin = self.plugin.lock().unwrap_or_else(|e| e.into_inner());
        plugin.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile_bound_us(0.5), None);
        h.record(Duration::from_micros(100)); // on a bound: that bucket
        h.record(Duration::from_micros(101));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60)); // above every bound
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[5], 1);
        assert_eq!(s.counts[BATCH_BUCKETS_US.len()], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(s.sum_us, 100 + 101 + 3_000 + 60_000_000);
        assert_eq!(s.quantile_bound_us(0.5), Some(250));
        assert_eq!(s.quantile_bound_us(0.75), Some(5_000));
        assert_eq!(s.quantile_bound_us(0.99), Some(u64::MAX));
    }
}
