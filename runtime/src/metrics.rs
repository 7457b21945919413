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
    /// Dead letters sent without their value, which was too large to
    /// publish.
    pub dead_letters_without_value: AtomicU64,
    /// Time spent waiting to enqueue records because the process's buffer
    /// budget (or the producer's queue) was full, milliseconds.
    pub backpressure_ms: AtomicU64,
    /// Records written to the stage's changelog topic.
    pub changelog_records: AtomicU64,
    /// Changelog records read to restore state, and how long the last
    /// restore took, milliseconds.
    pub state_restored_records: AtomicU64,
    pub last_restore_ms: AtomicU64,
    /// Rebalances that assigned this stage's consumer partitions (its
    /// first join included).
    pub rebalances: AtomicU64,
    /// Group consumers replaced after staying out of their group too long.
    pub consumers_replaced: AtomicU64,
    /// Exactly-once: transactions committed and aborted.
    pub transactions: AtomicU64,
    pub aborted_transactions: AtomicU64,
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
    /// The metrics the stage's plugin reports through the `metrics` import.
    pub plugin: PluginSeries,
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
pub const FAILURE_KINDS: [&str; 9] = [
    "plugin_error",
    "trap",
    "timeout",
    "memory",
    "oversize",
    "decode",
    "output_limit",
    "produce_error",
    "state_limit",
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
    pub dead_letters_without_value: u64,
    pub backpressure_ms: u64,
    pub changelog_records: u64,
    pub state_restored_records: u64,
    pub last_restore_ms: u64,
    pub rebalances: u64,
    pub consumers_replaced: u64,
    pub transactions: u64,
    pub aborted_transactions: u64,
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
    /// Plugin metric updates dropped (series over `max_metric_series`, an
    /// invalid name or label); in `/metrics` only.
    #[serde(skip)]
    pub metric_series_dropped: u64,
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
            dead_letters_without_value: get(&self.dead_letters_without_value),
            backpressure_ms: get(&self.backpressure_ms),
            changelog_records: get(&self.changelog_records),
            state_restored_records: get(&self.state_restored_records),
            last_restore_ms: get(&self.last_restore_ms),
            rebalances: get(&self.rebalances),
            consumers_replaced: get(&self.consumers_replaced),
            transactions: get(&self.transactions),
            aborted_transactions: get(&self.aborted_transactions),
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
            metric_series_dropped: get(&self.plugin.dropped),
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

/// How many series a stage's plugin may report unless its limits say.
pub const DEFAULT_MAX_SERIES: usize = 1_000;
/// The longest metric or label name a plugin may use, bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// The longest label value, bytes: each series is held and rendered, so its
/// size is bounded as well as their number.
pub const MAX_LABEL_VALUE_BYTES: usize = 1024;
/// The most labels of one series.
pub const MAX_LABELS: usize = 16;

/// Why a plugin's metric update was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricRejection {
    #[error(
        "invalid metric name {0:?}: it must match [a-zA-Z_][a-zA-Z0-9_]* (at most {MAX_NAME_BYTES} bytes)"
    )]
    Name(String),
    #[error(
        "invalid label name {0:?}: it must match [a-zA-Z_][a-zA-Z0-9_]* (at most {MAX_NAME_BYTES} bytes), \
         not start with `__`, and not be `stage`, which the host adds"
    )]
    LabelName(String),
    #[error("label {0:?} appears twice")]
    DuplicateLabel(String),
    #[error("label {name:?} has a value of {len} bytes, over {MAX_LABEL_VALUE_BYTES}")]
    LabelValue { name: String, len: usize },
    #[error("{0} labels, over {MAX_LABELS}")]
    TooManyLabels(usize),
    #[error("metric {0:?} is already a {1}")]
    Kind(String, &'static str),
    #[error("the stage has {0} series, its max_metric_series")]
    Full(usize),
}

/// Whether `name` is a metric name Prometheus accepts; the host prefixes
/// `weir_plugin_`, so a colon (for recording rules) is not allowed either.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_BYTES
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `name` is a label name a plugin may use: Prometheus' rules,
/// without the reserved `__` prefix, and not `stage`, the host's label.
pub fn valid_label_name(name: &str) -> bool {
    valid_metric_name(name) && !name.starts_with("__") && name != "stage"
}

/// Checks a plugin's metric update; returns its labels sorted.
fn check_series(
    name: &str,
    mut labels: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, MetricRejection> {
    if !valid_metric_name(name) {
        return Err(MetricRejection::Name(cut(name)));
    }
    if labels.len() > MAX_LABELS {
        return Err(MetricRejection::TooManyLabels(labels.len()));
    }
    labels.sort();
    for (i, (label, value)) in labels.iter().enumerate() {
        if !valid_label_name(label) {
            return Err(MetricRejection::LabelName(cut(label)));
        }
        if i > 0 && labels[i - 1].0 == *label {
            return Err(MetricRejection::DuplicateLabel(label.clone()));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(MetricRejection::LabelValue {
                name: label.clone(),
                len: value.len(),
            });
        }
    }
    Ok(labels)
}

/// A plugin-chosen name, short enough for a log line.
fn cut(name: &str) -> String {
    let mut end = name.len().min(64);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// A series' labels, sorted by name.
type Labels = Vec<(String, String)>;

/// The series of one metric name.
#[derive(Debug)]
struct Family {
    kind: &'static str,
    series: BTreeMap<Vec<(String, String)>, PluginMetricValue>,
}

#[derive(Debug)]
struct SeriesInner {
    families: BTreeMap<String, Family>,
    /// Series over all families.
    count: usize,
    limit: usize,
    /// Whether the stage was told, once, that it reached its limit, and
    /// that it used an invalid name.
    warned_full: bool,
    warned_invalid: bool,
}

/// One stage's plugin metrics, behind a lock of their own so stages do
/// not contend on one another's updates.
#[derive(Debug)]
pub struct PluginSeries {
    inner: Mutex<SeriesInner>,
    /// Updates dropped: a new series over the limit, an invalid name or
    /// label, or a name used as both counter and gauge.
    pub dropped: AtomicU64,
}

impl Default for PluginSeries {
    fn default() -> Self {
        PluginSeries {
            inner: Mutex::new(SeriesInner {
                families: BTreeMap::new(),
                count: 0,
                limit: DEFAULT_MAX_SERIES,
                warned_full: false,
                warned_invalid: false,
            }),
            dropped: AtomicU64::new(0),
        }
    }
}

impl PluginSeries {
    fn lock(&self) -> std::sync::MutexGuard<'_, SeriesInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the most series the stage may hold. Series already held over a
    /// lowered limit are kept; only new ones are refused.
    pub fn set_limit(&self, limit: usize) {
        self.lock().limit = limit;
    }

    /// How many series the stage holds.
    pub fn len(&self) -> usize {
        self.lock().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn counter_add(
        &self,
        stage: &str,
        name: String,
        labels: Vec<(String, String)>,
        delta: u64,
    ) -> Result<(), MetricRejection> {
        self.update(stage, name, labels, PluginMetricValue::Counter(delta))
    }

    pub fn gauge_set(
        &self,
        stage: &str,
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    ) -> Result<(), MetricRejection> {
        self.update(stage, name, labels, PluginMetricValue::Gauge(value))
    }

    /// Applies an update, or drops it: counted, and logged the first time
    /// for each reason (the limit, or an invalid name) in the stage.
    fn update(
        &self,
        stage: &str,
        name: String,
        labels: Vec<(String, String)>,
        update: PluginMetricValue,
    ) -> Result<(), MetricRejection> {
        let mut inner = self.lock();
        let result = inner.apply(name, labels, update);
        if let Err(rejection) = &result {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            let full = matches!(rejection, MetricRejection::Full(_));
            let warned = if full {
                &mut inner.warned_full
            } else {
                &mut inner.warned_invalid
            };
            if !std::mem::replace(warned, true) {
                drop(inner);
                tracing::warn!(
                    stage,
                    reason = %rejection,
                    "plugin metric update dropped; later ones dropped for this reason are \
                     only counted, in weir_stage_metric_series_dropped_total"
                );
            }
        }
        result
    }

    /// `(name, labels, value)` of every series, sorted.
    fn snapshot(&self) -> Vec<(String, Labels, PluginMetricValue)> {
        let inner = self.lock();
        inner
            .families
            .iter()
            .flat_map(|(name, f)| {
                f.series
                    .iter()
                    .map(move |(labels, v)| (name.clone(), labels.clone(), *v))
            })
            .collect()
    }
}

fn kind_of(v: PluginMetricValue) -> &'static str {
    match v {
        PluginMetricValue::Counter(_) => "counter",
        PluginMetricValue::Gauge(_) => "gauge",
    }
}

impl SeriesInner {
    fn apply(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        update: PluginMetricValue,
    ) -> Result<(), MetricRejection> {
        let labels = check_series(&name, labels)?;
        let kind = kind_of(update);
        let (count, limit) = (self.count, self.limit);
        let family = match self.families.get_mut(&name) {
            Some(f) => f,
            None => {
                if count >= limit {
                    return Err(MetricRejection::Full(limit));
                }
                self.families.entry(name.clone()).or_insert(Family {
                    kind,
                    series: BTreeMap::new(),
                })
            }
        };
        // A name keeps the kind it was first used as: a family of mixed
        // kinds cannot be exposed.
        if family.kind != kind {
            return Err(MetricRejection::Kind(name, family.kind));
        }
        let slot = match family.series.get_mut(&labels) {
            Some(slot) => slot,
            None => {
                if count >= limit {
                    return Err(MetricRejection::Full(limit));
                }
                self.count += 1;
                family.series.entry(labels).or_insert(match update {
                    PluginMetricValue::Counter(_) => PluginMetricValue::Counter(0),
                    gauge => gauge,
                })
            }
        };
        match (slot, update) {
            (PluginMetricValue::Counter(c), PluginMetricValue::Counter(delta)) => {
                *c = c.saturating_add(delta)
            }
            (PluginMetricValue::Gauge(g), PluginMetricValue::Gauge(v)) => *g = v,
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    stages: Mutex<BTreeMap<String, Arc<StageMetrics>>>,
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

    /// Adds to a plugin counter of `key.stage` (what the `metrics` import
    /// does, for callers outside a plugin).
    pub fn counter_add(&self, key: PluginMetricKey, delta: u64) {
        let _ = self
            .stage(&key.stage)
            .plugin
            .counter_add(&key.stage, key.name, key.labels, delta);
    }

    pub fn gauge_set(&self, key: PluginMetricKey, value: f64) {
        let _ = self
            .stage(&key.stage)
            .plugin
            .gauge_set(&key.stage, key.name, key.labels, value);
    }

    /// Every stage's plugin series, sorted by stage, name and labels.
    pub fn plugin_metrics(&self) -> Vec<(PluginMetricKey, PluginMetricValue)> {
        let stages: Vec<(String, Arc<StageMetrics>)> = {
            let stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
            stages.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        stages
            .into_iter()
            .flat_map(|(stage, m)| {
                m.plugin
                    .snapshot()
                    .into_iter()
                    .map(move |(name, labels, v)| {
                        (
                            PluginMetricKey {
                                stage: stage.clone(),
                                name,
                                labels,
                            },
                            v,
                        )
                    })
            })
            .collect()
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

    #[test]
    fn label_and_metric_names_follow_prometheus_rules() {
        for ok in ["a", "_x", "sku", "A_1", "reason"] {
            assert!(valid_label_name(ok), "{ok}");
            assert!(valid_metric_name(ok), "{ok}");
        }
        for bad in ["", "9x", "a-b", "a.b", "é", "a b", "a:b", &"x".repeat(201)] {
            assert!(!valid_label_name(bad), "{bad}");
            assert!(!valid_metric_name(bad), "{bad}");
        }
        assert!(!valid_label_name("stage"), "the host's label");
        assert!(!valid_label_name("__name__"), "reserved");
        assert!(valid_metric_name("stage") && valid_metric_name("__x"));
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn invalid_updates_are_dropped_and_counted() {
        let s = PluginSeries::default();
        let bad = [
            ("9x", labels(&[])),
            ("ok", labels(&[("stage", "x")])),
            ("ok", labels(&[("9x", "x")])),
            ("ok", labels(&[("", "x")])),
            ("ok", labels(&[("a", "1"), ("a", "2")])),
            (
                "ok",
                labels(&[("a", &"v".repeat(MAX_LABEL_VALUE_BYTES + 1))]),
            ),
        ];
        for (name, l) in bad {
            assert!(s.counter_add("st", name.into(), l, 1).is_err(), "{name}");
        }
        assert_eq!(s.dropped.load(Ordering::Relaxed), 6);
        assert!(s.is_empty());
        // A name keeps its first kind.
        s.counter_add("st", "n".into(), labels(&[("b", "1"), ("a", "2")]), 2)
            .unwrap();
        s.counter_add("st", "n".into(), labels(&[("a", "2"), ("b", "1")]), 3)
            .unwrap();
        assert!(matches!(
            s.gauge_set("st", "n".into(), labels(&[]), 1.0),
            Err(MetricRejection::Kind(..))
        ));
        assert_eq!(
            s.snapshot(),
            vec![(
                "n".to_string(),
                labels(&[("a", "2"), ("b", "1")]),
                PluginMetricValue::Counter(5)
            )]
        );
        assert_eq!(s.dropped.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn series_past_the_limit_are_dropped_and_counted() {
        let r = Registry::default();
        let m = r.stage("a");
        m.plugin.set_limit(10);
        for i in 0..25 {
            let _ = m
                .plugin
                .gauge_set("a", "g".into(), labels(&[("i", &i.to_string())]), 1.0);
        }
        // Known series still update when the stage is full.
        m.plugin
            .gauge_set("a", "g".into(), labels(&[("i", "0")]), 7.0)
            .unwrap();
        assert!(
            m.plugin
                .counter_add("a", "other".into(), labels(&[]), 1)
                .is_err()
        );
        assert_eq!(m.plugin.len(), 10);
        assert_eq!(m.snapshot().metric_series_dropped, 16);
        // Stages are counted apart.
        r.counter_add(
            PluginMetricKey {
                stage: "b".into(),
                name: "c".into(),
                labels: vec![],
            },
            1,
        );
        let all = r.plugin_metrics();
        assert_eq!(all.len(), 11);
        assert_eq!(all[0].1, PluginMetricValue::Gauge(7.0));
        assert_eq!(all[10].0.stage, "b");
    }
}
