//! `[stage.config]` of the cbad stage, with the spec's defaults.

use serde::Deserialize;

use crate::compress::Algorithm;
use crate::detect::Thresholds;

/// The spec's cap on a stream's buffer.
pub const MAX_EVENTS_LIMIT: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Header holding the stream id (DriftLock's `KAFKA_STREAM_ID_HEADER`).
    pub stream_id_header: Option<String>,
    /// Dotted JSON path to the stream id, e.g. `metadata.stream_id`
    /// (`KAFKA_STREAM_ID_FIELD`); used when the header is unset or absent.
    pub stream_id_field: Option<String>,
    /// Larger payloads go to the dead-letter topic.
    pub max_payload_bytes: usize,
    /// Bytes of each preprocessed event kept for analysis; bounds memory and
    /// the cost of an analysis whatever the payloads.
    pub max_event_bytes: usize,
    /// Baseline size B, in events.
    pub baseline: usize,
    /// Window size W, in events.
    pub window: usize,
    /// Hop H: events between analyses once the stream is ready.
    pub hop: usize,
    /// Cap on the events buffered per stream.
    pub max_events: usize,
    /// Shuffles in the permutation test (N).
    pub permutations: usize,
    /// Bytes one permutation test may compress; with large events fewer
    /// than N shuffles run, which bounds the cost of an analysis.
    pub permutation_budget_bytes: usize,
    pub compressor: Algorithm,
    pub ncd_threshold: f64,
    pub p_value_threshold: f64,
    pub compression_drop_threshold: f64,
    pub entropy_rise_threshold: f64,
    pub composite_threshold: f64,
    pub novelty_threshold: f64,
}

impl Default for Config {
    fn default() -> Self {
        let t = Thresholds::default();
        Config {
            stream_id_header: None,
            stream_id_field: None,
            max_payload_bytes: 1 << 20,
            max_event_bytes: 1024,
            baseline: 400,
            window: 50,
            hop: 10,
            max_events: MAX_EVENTS_LIMIT,
            permutations: 200,
            permutation_budget_bytes: 64 << 20,
            compressor: Algorithm::Zstd,
            ncd_threshold: t.ncd,
            p_value_threshold: t.p_value,
            compression_drop_threshold: t.compression_drop,
            entropy_rise_threshold: t.entropy_rise,
            composite_threshold: t.composite,
            novelty_threshold: t.novelty,
        }
    }
}

impl Config {
    /// Checks the settings together; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.stream_id_header.as_deref().is_some_and(str::is_empty) {
            return Err("stream_id_header is empty: name a header or leave it out".into());
        }
        if let Some(path) = &self.stream_id_field
            && (path.is_empty() || path.split('.').any(str::is_empty))
        {
            return Err(format!(
                "stream_id_field {path:?} is not a dotted path such as \"metadata.stream_id\""
            ));
        }
        if self.max_payload_bytes == 0 {
            return Err("max_payload_bytes must be at least 1".into());
        }
        if !(16..=1 << 20).contains(&self.max_event_bytes) {
            return Err(format!(
                "max_event_bytes is {}: it must be between 16 and 1048576",
                self.max_event_bytes
            ));
        }
        if self.window == 0 || self.hop == 0 {
            return Err(format!(
                "window ({}) and hop ({}) must be at least 1",
                self.window, self.hop
            ));
        }
        if self.baseline < 2 * self.window {
            return Err(format!(
                "baseline ({}) must be at least twice the window ({}): the window is \
                 compared with window-sized chunks of the baseline, and with at least two",
                self.baseline, self.window
            ));
        }
        if self.max_events > MAX_EVENTS_LIMIT {
            return Err(format!(
                "max_events is {}: at most {MAX_EVENTS_LIMIT} events are buffered per stream",
                self.max_events
            ));
        }
        if self.baseline + self.window > self.max_events {
            return Err(format!(
                "baseline + window ({}) exceeds max_events ({}): the stream could never be ready",
                self.baseline + self.window,
                self.max_events
            ));
        }
        if self.permutations > 10_000 {
            return Err(format!(
                "permutations is {}: at most 10000 (each costs about 3·baseline+window \
                 events compressed)",
                self.permutations
            ));
        }
        if self.permutation_budget_bytes < 1 << 20 {
            return Err(format!(
                "permutation_budget_bytes is {}: at least 1048576",
                self.permutation_budget_bytes
            ));
        }
        let unit = [
            ("ncd_threshold", self.ncd_threshold),
            ("p_value_threshold", self.p_value_threshold),
            (
                "compression_drop_threshold",
                self.compression_drop_threshold,
            ),
            ("composite_threshold", self.composite_threshold),
        ];
        for (name, v) in unit {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} is {v}: it must be between 0 and 1"));
            }
        }
        for (name, v) in [
            ("entropy_rise_threshold", self.entropy_rise_threshold),
            ("novelty_threshold", self.novelty_threshold),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name} is {v}: it must be a number of at least 0"));
            }
        }
        Ok(())
    }

    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            ncd: self.ncd_threshold,
            p_value: self.p_value_threshold,
            compression_drop: self.compression_drop_threshold,
            entropy_rise: self.entropy_rise_threshold,
            composite: self.composite_threshold,
            novelty: self.novelty_threshold,
        }
    }
}
