//! DriftLock CBAD: compression-based anomaly detection over event
//! streams. Each message is one event of a stream (named by a header, a JSON
//! field or `default`); the stage keeps each stream's recent events in keyed
//! state and, every `hop` events once it holds `baseline + window` of them,
//! compares the newest `window` events with the `baseline` events before
//! them. A window judged anomalous is published to the `default` output as
//! one JSON event keyed by stream id. README.md documents the settings, the
//! output, the state layout and the cost.

pub mod buffer;
pub mod compress;
pub mod config;
pub mod detect;
pub mod matcher;
pub mod metrics;
pub mod preprocess;
pub mod stream_id;
#[doc(hidden)]
pub mod synthetic;
#[cfg(test)]
mod tests;

use buffer::{Cache, Event, Meta, event_key, load_range};
use config::Config;
use detect::{AnomalyEvent, TestPlan, Thresholds, Verdict};
use metrics::Measure;
use weir_plugin::{Emitter, InitContext, Message, OutputId, Processor, export_processor};
use weir_plugin::{log, state};

/// Bytes of events an instance keeps cached, across streams. Analysis
/// buffers take a few more MiB at most; the default instance has 64 MiB.
const CACHE_BYTES: usize = 16 << 20;

pub struct Cbad {
    out: OutputId,
    config: Config,
    thresholds: Thresholds,
    measure: Measure,
    cache: Cache,
}

impl Processor for Cbad {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config: Config = ctx.config()?;
        config
            .validate()
            .map_err(|e| format!("invalid [stage.config] for stage {}: {e}", ctx.stage))?;
        Ok(Cbad {
            out: ctx.output("default")?,
            thresholds: config.thresholds(),
            measure: Measure::new(config.compressor.compressor()),
            cache: Cache::new(CACHE_BYTES),
            config,
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        // Everything that can refuse the message comes before the first
        // state write: a refused message must leave no trace.
        let value = msg.value().ok_or("null value: no event to analyse")?;
        if value.len() > self.config.max_payload_bytes {
            return Err(format!(
                "payload of {} bytes exceeds max_payload_bytes ({})",
                value.len(),
                self.config.max_payload_bytes
            ));
        }
        let header = self
            .config
            .stream_id_header
            .as_deref()
            .and_then(|name| msg.header(name));
        let stream = stream_id::resolve(header, value, self.config.stream_id_field.as_deref())?;

        let (b, w, h) = (
            self.config.baseline as u64,
            self.config.window as u64,
            self.config.hop as u64,
        );
        let key = (msg.partition(), stream.clone());
        let mut meta = Meta::load(&stream, self.config.baseline);
        let offset = msg.offset();
        // Offsets only grow within a partition, and a stream's state lives
        // in one: an offset already stored is a redelivery.
        if offset >= 0 && offset <= meta.last_offset {
            weir_plugin::metrics::counter_add("duplicates_skipped_total", &[], 1);
            return Ok(());
        }
        self.cache.check(&key, &meta);

        let mut bytes = preprocess::preprocess(value);
        bytes.truncate(self.config.max_event_bytes);
        let event = Event { offset, bytes };
        event.store(&stream, meta.next);
        self.cache.push(&key, &event);
        meta.next += 1;
        meta.last_offset = meta.last_offset.max(offset);

        // Only a smaller max_events than the buffer was built with gets here.
        while meta.next.saturating_sub(meta.head) > self.config.max_events as u64 {
            state::delete(&event_key(&stream, meta.head));
            meta.head += 1;
        }
        // After a change of settings (or a `Meta` from elsewhere): wait for
        // a full baseline, never for a window further off than one hop, and
        // skip windows already stale rather than analysing a backlog.
        let earliest = meta.head + b;
        meta.window_start = meta
            .window_start
            .clamp(earliest, earliest.max(meta.next + h));
        if meta.next > meta.window_start + w {
            meta.window_start = meta.next - w;
        }

        let mut anomaly = None;
        if meta.next == meta.window_start + w {
            anomaly = self.analyse(&key, meta, msg.partition());
            meta.window_start += h;
            let new_head = meta.window_start - b;
            for n in meta.head..new_head {
                state::delete(&event_key(&stream, n));
            }
            meta.head = meta.head.max(new_head);
        }
        meta.store(&stream);
        self.cache.sync(&key, meta);

        use weir_plugin::metrics::counter_add;
        counter_add("events_processed_total", &[], 1);
        counter_add("stream_events_total", &[("stream_id", &stream)], 1);
        if let Some(report) = anomaly {
            counter_add("anomalies_detected_total", &[], 1);
            counter_add("stream_anomalies_total", &[("stream_id", &stream)], 1);
            // The event is stored and analysed: failing to serialise the
            // report (which holds only plain numbers and strings) must not
            // dead-letter the input.
            match out.emit_json(self.out, &report) {
                Ok(emitted) => {
                    emitted.key(stream.as_bytes());
                }
                Err(e) => log::error(&format!("anomaly on stream {stream} not published: {e}")),
            }
        }
        Ok(())
    }
}

impl Cbad {
    /// Analyses the window that starts at `meta.window_start`; returns the
    /// event to publish if it is an anomaly.
    fn analyse(&mut self, key: &(i32, String), meta: Meta, partition: i32) -> Option<AnomalyEvent> {
        let stream = key.1.as_str();
        let (b, w) = (self.config.baseline, self.config.window);
        let from = meta.window_start - b as u64;
        let to = meta.window_start + w as u64;
        if self.cache.range(key, from, to).is_none() {
            let Some(events) = load_range(stream, from, to) else {
                log::warn(&format!(
                    "stream {stream}: events {from}..{to} missing from state; window skipped"
                ));
                weir_plugin::metrics::counter_add("windows_skipped_total", &[], 1);
                return None;
            };
            self.cache.insert(key.clone(), from, events, meta);
        }
        let events = self.cache.range(key, from, to)?;
        let (baseline, window) = events.split_at(b);
        let window_start_offset = window.first().map_or(-1, |e| e.offset);
        let plan = TestPlan {
            permutations: self.config.permutations,
            budget_bytes: self.config.permutation_budget_bytes,
            seed: metrics::seed(stream, window_start_offset),
        };
        let verdict = detect::analyse(&mut self.measure, baseline, window, &plan, &self.thresholds);
        record_cost(&verdict);
        if !verdict.decision.anomaly {
            return None;
        }
        let p = verdict.p_value()?;
        let shuffles = verdict.permutations.map_or(0, |t| t.requested);
        let o = &verdict.observed;
        let d = &verdict.decision;
        Some(AnomalyEvent {
            anomaly_id: format!("{stream}:{partition}:{window_start_offset}"),
            stream_id: stream.to_string(),
            partition,
            window_start_offset,
            window_end_offset: window.last().map_or(-1, |e| e.offset),
            window_events: window.len(),
            baseline_start_offset: baseline.first().map_or(-1, |e| e.offset),
            baseline_end_offset: baseline.last().map_or(-1, |e| e.offset),
            baseline_events: baseline.len(),
            compressor: self.config.compressor.name(),
            baseline_compression_ratio: o.baseline_compression_ratio,
            window_compression_ratio: o.window_compression_ratio,
            compression_ratio_change: o.compression_ratio_change,
            baseline_entropy: o.baseline_entropy,
            window_entropy: o.window_entropy,
            entropy_change: o.entropy_change,
            ncd: o.ncd,
            ncd_raw: o.ncd_raw,
            ncd_floor: o.ncd_floor,
            conditional_novelty: o.conditional_novelty,
            p_value: p,
            permutations: shuffles,
            composite: d.composite,
            votes: d.votes,
            strong: d.strong,
            confidence: detect::confidence(d, p),
            explanation: detect::explanation(o, d, p, &self.thresholds),
        })
    }
}

fn record_cost(v: &Verdict) {
    use weir_plugin::metrics::counter_add;
    let outcome = match v.permutations {
        None => "skipped",
        Some(p) if p.complete() => "complete",
        Some(_) => "stopped_early",
    };
    counter_add("analyses_total", &[("permutation_test", outcome)], 1);
    if let Some(p) = v.permutations {
        counter_add("permutations_total", &[], p.run as u64);
    }
}

export_processor!(Cbad);
