//! Sudden-deceleration detection for fleet telemetry. Reads frames
//! from `raw_telemetry` (keyed by `vehicle_id`), keeps each vehicle's last
//! frames in keyed state, and emits an anomaly to `anomalies` when the speed
//! between the last two frames drops at 3 m/s² or more (WARNING) or 5 m/s²
//! or more (CRITICAL).
//!
//! A repeated frame is dropped; a frame a little late is put in event-time
//! order; one later than that is dead-lettered as `too_late`.

mod dedup;
mod history;
mod rule;

use serde::Deserialize;
use serde_json::json;
use weir_fleet_events::{Anomaly, RawTelemetry, Severity, derived_id};
use weir_plugin::time::{format_rfc3339_ms, parse_rfc3339_ms};
use weir_plugin::{Emitter, InitContext, Message, OutputId, Processor, export_processor};
use weir_plugin::{metrics, state};

pub use history::{Frame, Placed, Tolerance, TooLate, place};
pub use rule::{Finding, Thresholds, evaluate};

pub const ANOMALY_TYPE: &str = "sudden_deceleration";

/// `[stage.config]` of the sudden-deceleration stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Frames kept per vehicle.
    pub history_frames: usize,
    /// A repeat of (`vehicle_id`, `event_id`) within this much event time
    /// is dropped.
    pub dedup_window_ms: i64,
    /// A frame at most this many frames behind the newest is reordered...
    pub reorder_max_frames: i64,
    /// ...or at most this many ms behind; older ones are `too_late`.
    pub reorder_max_ms: i64,
    pub window_ms: i64,
    pub max_dt_ms: i64,
    pub warning_decel_ms2: f64,
    pub critical_decel_ms2: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            history_frames: 10,
            dedup_window_ms: 60_000,
            reorder_max_frames: 2,
            reorder_max_ms: 500,
            window_ms: 1000,
            max_dt_ms: 500,
            warning_decel_ms2: 3.0,
            critical_decel_ms2: 5.0,
        }
    }
}

impl Config {
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            window_ms: self.window_ms,
            max_dt_ms: self.max_dt_ms,
            warning_decel_ms2: self.warning_decel_ms2,
            critical_decel_ms2: self.critical_decel_ms2,
        }
    }
}

fn frames_key(vehicle: &str) -> Vec<u8> {
    format!("frames/{vehicle}").into_bytes()
}

pub struct Deceleration {
    out: OutputId,
    config: Config,
    thresholds: Thresholds,
}

impl Deceleration {
    fn anomaly(&self, t: &RawTelemetry, finding: &Finding, msg: &Message<'_>) -> Anomaly {
        let th = &self.thresholds;
        Anomaly {
            anomaly_id: derived_id(&[ANOMALY_TYPE, &t.event_id]),
            event_id: t.event_id.clone(),
            vehicle_id: t.vehicle_id.clone(),
            event_time: t.event_time.clone(),
            processing_time: msg
                .timestamp_ms()
                .map(format_rfc3339_ms)
                .unwrap_or_default(),
            anomaly_type: ANOMALY_TYPE.to_string(),
            severity: finding.severity,
            triggered_rule: match finding.severity {
                Severity::Critical => "critical_decel_threshold_exceeded",
                _ => "decel_threshold_exceeded",
            }
            .to_string(),
            features: json!({
                "velocity_delta": finding.velocity_delta,
                "acceleration": finding.acceleration,
                "acceleration_magnitude": finding.acceleration.abs(),
                "time_window_ms": finding.dt_ms,
                "speed_before": finding.speed_before,
                "speed_after": finding.speed_after,
            }),
            thresholds: json!({
                "warning_decel_ms2": th.warning_decel_ms2,
                "critical_decel_ms2": th.critical_decel_ms2,
                "max_dt_ms": th.max_dt_ms,
                "window_ms": th.window_ms,
            }),
            evidence: json!({
                "frame_indices": finding.frame_indices,
                "velocity_history": finding.velocity_history,
                "acceleration_history": finding.acceleration_history,
            }),
        }
    }
}

impl Processor for Deceleration {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config: Config = ctx.config()?;
        let th = config.thresholds();
        if config.history_frames < 2 {
            return Err("history_frames must be at least 2".into());
        }
        if th.warning_decel_ms2 <= 0.0 || th.critical_decel_ms2 < th.warning_decel_ms2 {
            return Err(format!(
                "need 0 < warning_decel_ms2 <= critical_decel_ms2, got {} and {}",
                th.warning_decel_ms2, th.critical_decel_ms2
            ));
        }
        if th.max_dt_ms <= 0 || th.window_ms <= 0 || config.dedup_window_ms < 0 {
            return Err(
                "max_dt_ms and window_ms must be positive, dedup_window_ms not negative".into(),
            );
        }
        Ok(Deceleration {
            out: ctx.output("default")?,
            config,
            thresholds: th,
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        let t: RawTelemetry = msg.json()?;
        let t_ms = parse_rfc3339_ms(&t.event_time).ok_or_else(|| {
            format!(
                "event_time is not an ISO 8601 date-time: {:?}",
                t.event_time
            )
        })?;
        let (vx, vy) = (t.telemetry.velocity.x, t.telemetry.velocity.y);
        if !vx.is_finite() || !vy.is_finite() {
            return Err("velocity is not finite".into());
        }
        let vehicle = t.vehicle_id.as_str();
        if dedup::seen(vehicle, &t.event_id, t_ms) {
            metrics::counter_add("duplicates_dropped", &[], 1);
            return Ok(());
        }

        let key = frames_key(vehicle);
        let mut frames: Vec<Frame> = state::get(&key)
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default();
        let frame = Frame {
            frame_index: t.frame_index,
            t_ms,
            speed: vx.hypot(vy),
        };
        let tolerance = Tolerance {
            capacity: self.config.history_frames,
            max_frames: self.config.reorder_max_frames,
            max_ms: self.config.reorder_max_ms,
        };
        let placed = match place(&mut frames, frame, tolerance) {
            Ok(placed) => placed,
            Err(late) => {
                metrics::counter_add("too_late_total", &[], 1);
                return Err(format!(
                    "too_late: frame {} is {} frames and {} ms behind the newest (frame {})",
                    t.frame_index, late.frames_behind, late.ms_behind, late.newest_frame
                ));
            }
        };
        dedup::remember(vehicle, &t.event_id, t_ms, self.config.dedup_window_ms);
        let bytes = serde_json::to_vec(&frames).map_err(|e| e.to_string())?;
        state::set(&key, &bytes);

        // Only a frame that becomes the newest completes a new pair; a
        // reordered one fills in history for later frames' evidence.
        if placed == Placed::Reordered {
            metrics::counter_add("reordered_total", &[], 1);
            return Ok(());
        }
        if let Some(finding) = evaluate(&frames, &self.thresholds) {
            let severity = format!("{:?}", finding.severity).to_uppercase();
            metrics::counter_add("anomalies_total", &[("severity", &severity)], 1);
            let anomaly = self.anomaly(&t, &finding, msg);
            out.emit_json(self.out, &anomaly)?.key(vehicle.as_bytes());
        }
        Ok(())
    }
}

export_processor!(Deceleration);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use weir_plugin::testing::{Harness, TestMessage, counter};

    fn frame(vehicle: &str, i: i64, speed: f64) -> TestMessage {
        let ms = 1_705_314_225_000 + i * 100;
        TestMessage::json(&json!({
            "event_id": format!("{vehicle}-{i}"), "vehicle_id": vehicle,
            "event_time": format_rfc3339_ms(ms), "frame_index": i,
            "telemetry": {"velocity": {"x": speed * 0.6, "y": speed * 0.8, "z": 0.0}}
        }))
        .key(vehicle)
        .timestamp(ms + 5)
    }

    fn harness() -> Harness<Deceleration> {
        Harness::<Deceleration>::new(&["default"], json!({})).unwrap()
    }

    fn anomalies(h: &mut Harness<Deceleration>, msgs: &[TestMessage]) -> Vec<Value> {
        h.process(msgs)
            .into_iter()
            .flat_map(|r| r.unwrap())
            .map(|o| o.json())
            .collect()
    }

    #[test]
    fn hard_braking_raises_one_anomaly_with_its_severity() {
        let mut h = harness();
        let mut msgs: Vec<TestMessage> = (0..20).map(|i| frame("s1_ego", i, 15.0)).collect();
        // Frame 10: -0.4 m/s in 100 ms = -4 m/s², WARNING.
        msgs[10] = frame("s1_ego", 10, 14.6);
        for m in msgs.iter_mut().skip(11) {
            *m = frame("s1_ego", m.offset, 14.6);
        }
        let found = anomalies(&mut h, &msgs);
        assert_eq!(found.len(), 1, "{found:?}");
        let a = &found[0];
        assert_eq!(a["severity"], "WARNING");
        assert_eq!(a["event_id"], "s1_ego-10");
        assert_eq!(a["anomaly_type"], "sudden_deceleration");
        assert_eq!(a["anomaly_id"], derived_id(&[ANOMALY_TYPE, "s1_ego-10"]));
        assert!((a["features"]["acceleration"].as_f64().unwrap() + 4.0).abs() < 1e-6);
        assert_eq!(
            a["evidence"]["frame_indices"],
            json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        );
        assert_eq!(a["processing_time"], "2024-01-15T10:23:46.005Z");
    }

    #[test]
    fn critical_and_redelivery() {
        let mut h = harness();
        let msgs: Vec<TestMessage> = (0..5)
            .map(|i| frame("v", i, if i < 3 { 20.0 } else { 19.0 }))
            .collect();
        let first = anomalies(&mut h, &msgs);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["severity"], "CRITICAL");
        // The same frames again, from a fresh instance: all dropped.
        let mut again = harness();
        assert!(anomalies(&mut again, &msgs).is_empty());
        assert_eq!(counter("duplicates_dropped", &[]), 5);
    }

    #[test]
    fn late_frames_are_reordered_or_dead_lettered() {
        let mut h = harness();
        for i in [0, 1, 2, 4, 5, 6, 7, 8, 9, 10] {
            h.process_one(frame("v", i, 10.0)).unwrap();
        }
        // Frame 3 is 7 frames and 700 ms behind: too late.
        let err = h.process_one(frame("v", 3, 10.0)).unwrap_err();
        assert!(err.starts_with("too_late:"), "{err}");
        assert_eq!(counter("too_late_total", &[]), 1);
        // Frame 9.5-ish: a frame 2 behind is reordered, raises nothing.
        let mut h = harness();
        for i in [20, 21, 23] {
            h.process_one(frame("w", i, 10.0)).unwrap();
        }
        assert!(h.process_one(frame("w", 22, 1.0)).unwrap().is_empty());
        assert_eq!(counter("reordered_total", &[]), 1);
    }

    #[test]
    fn unreadable_frames_are_rejected() {
        let mut h = harness();
        assert!(h.process_one(TestMessage::new("{")).is_err());
        let err = h
            .process_one(TestMessage::json(&json!({
                "event_id": "e", "vehicle_id": "v", "event_time": "soon", "frame_index": 1,
                "telemetry": {"velocity": {"x": 1.0, "y": 1.0}}
            })))
            .unwrap_err();
        assert!(err.contains("event_time"), "{err}");
    }

    #[test]
    fn bad_thresholds_stop_the_stage() {
        let err = Harness::<Deceleration>::new(
            &["default"],
            json!({"warning_decel_ms2": 6.0, "critical_decel_ms2": 5.0}),
        )
        .err()
        .unwrap();
        assert!(err.contains("warning_decel_ms2"), "{err}");
        assert!(Harness::<Deceleration>::new(&["default"], json!({"nope": 1})).is_err());
        assert!(
            Harness::<Deceleration>::new(
                &["default"],
                json!({"history_frames": 12, "warning_decel_ms2": 2.5})
            )
            .is_ok()
        );
    }
}
