//! Lap summaries from racing telemetry. Reads protobuf `TelemetryFrame`s
//! (60 Hz per session, keyed by session id), follows each session's laps in
//! keyed state, and emits a [`LapSummary`] as JSON, keyed by session, when
//! a lap completes: on a new `lapNumber`, or when `normalizedPosition` wraps
//! from the end of the lap to its start.
//!
//! Frames a little out of order are put in order first (up to
//! `reorder_frames` are held back); a frame seen before is dropped; one
//! later than that is dead-lettered as `too_late`. A frame that does not
//! decode, or holds impossible values, is rejected with the reason.

mod lap;

use serde::Deserialize;
use weir_plugin::{Emitter, InitContext, Message, OutputId, Processor, export_processor};
use weir_plugin::{metrics, state};
use weir_purple_telemetry::{HEADER_SESSION, TelemetryFrame, decode};

pub use lap::{Frame, Placed, Rules, Session, TooLate};
pub use weir_purple_telemetry::LapSummary;

/// `[stage.config]` of the laps stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Frames held back per session to put late ones in order (at 60 Hz,
    /// 3 frames are 50 ms).
    pub reorder_frames: usize,
    /// How far back folded frames are remembered to recognise repeats.
    pub dedup_window_ms: i64,
    /// Throttle at or above this counts as full throttle.
    pub full_throttle: f32,
    /// Brake above this counts as braking.
    pub braking: f32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            reorder_frames: 3,
            dedup_window_ms: 2_000,
            full_throttle: 0.98,
            braking: 0.05,
        }
    }
}

fn session_key(session: &str) -> Vec<u8> {
    format!("session/{session}").into_bytes()
}

/// Why a decoded frame cannot be folded, if it cannot.
fn implausible(f: &TelemetryFrame) -> Option<String> {
    let finite = [
        f.throttle,
        f.brake,
        f.steering,
        f.speed,
        f.normalized_position,
    ];
    if finite.iter().any(|v| !v.is_finite()) {
        return Some("a value is not finite".into());
    }
    if !(0.0..=1.0).contains(&f.normalized_position) {
        return Some(format!(
            "normalizedPosition {} is outside 0..1",
            f.normalized_position
        ));
    }
    if f.timestamp <= 0 {
        return Some(format!("timestamp {} is not a time", f.timestamp));
    }
    None
}

pub struct Laps {
    out: OutputId,
    rules: Rules,
}

impl Processor for Laps {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config: Config = ctx.config()?;
        if config.dedup_window_ms < 0 {
            return Err("dedup_window_ms must not be negative".into());
        }
        Ok(Laps {
            out: ctx.output("default")?,
            rules: Rules {
                reorder_frames: config.reorder_frames,
                full_throttle: config.full_throttle,
                braking: config.braking,
                dedup_window_ms: config.dedup_window_ms,
            },
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        let session = msg
            .key()
            .or_else(|| msg.header(HEADER_SESSION))
            .ok_or("no session id: neither a key nor a sessionId header")?;
        let session =
            std::str::from_utf8(session).map_err(|_| "the session id is not UTF-8".to_string())?;
        let frame = decode(msg.value().unwrap_or_default())?;
        if let Some(why) = implausible(&frame) {
            return Err(why);
        }
        let key = session_key(session);
        let mut folding: Session = state::get_json(&key).unwrap_or_default();
        let laps = match folding.place(session, Frame::from(&frame), &self.rules) {
            Ok(Placed::Held(laps)) => laps,
            Ok(Placed::Duplicate) => {
                metrics::counter_add("duplicates_dropped", &[], 1);
                return Ok(());
            }
            Err(TooLate { ts, folded_ts }) => {
                metrics::counter_add("too_late_total", &[], 1);
                return Err(format!(
                    "too_late: frame at {ts} is {} ms behind the newest frame counted \
                     ({folded_ts}), and its lap may be summarised already",
                    folded_ts - ts
                ));
            }
        };
        state::set_json(&key, &folding);
        for lap in &laps {
            metrics::counter_add("laps_total", &[], 1);
            out.emit_json(self.out, lap)?.key(session.as_bytes());
        }
        Ok(())
    }
}

export_processor!(Laps);

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weir_plugin::testing::{Harness, TestMessage, counter};
    use weir_purple_telemetry::{Message as _, TelemetryMessage};

    use super::*;

    /// Frame `i` of a session whose laps are `n` frames, 60 Hz.
    fn frame(i: i64, n: i64) -> TelemetryFrame {
        let in_lap = i % n;
        TelemetryFrame {
            timestamp: 1_700_000_000_000 + i * 1000 / 60,
            lap_time: (in_lap * 1000 / 60) as i32,
            throttle: 1.0,
            brake: 0.0,
            steering: 0.0,
            speed: 150.0 + in_lap as f32,
            gear: 5,
            rpm: 10_000,
            normalized_position: in_lap as f32 / n as f32,
            lap_number: (i / n + 1) as i32,
        }
    }

    fn message(session: &str, f: &TelemetryFrame) -> TestMessage {
        TestMessage::new(f.encode_to_vec())
            .key(session)
            .header("sessionId", session)
            .header("encoding", "protobuf")
    }

    fn harness() -> Harness<Laps> {
        Harness::<Laps>::new(&["default"], json!({})).unwrap()
    }

    #[test]
    fn each_session_gets_its_laps() {
        let mut h = harness();
        let mut msgs = Vec::new();
        // Two sessions interleaved, two laps of 30 frames and a few more.
        for i in 0..66 {
            msgs.push(message("a", &frame(i, 30)));
            msgs.push(message("b", &frame(i, 30)));
        }
        let outputs: Vec<_> = h
            .process(&msgs)
            .into_iter()
            .flat_map(|r| r.unwrap())
            .collect();
        let laps: Vec<LapSummary> = outputs
            .iter()
            .map(|o| serde_json::from_value(o.json()).unwrap())
            .collect();
        assert_eq!(laps.len(), 4, "{laps:?}");
        for (o, lap) in outputs.iter().zip(&laps) {
            assert_eq!(o.key.as_deref(), Some(lap.session_id.as_bytes()));
            assert_eq!(lap.frames, 30);
            // 30 frames at 60 Hz, on whole milliseconds: 500 ms.
            assert_eq!(lap.lap_time_ms, 500);
            assert_eq!(lap.max_speed, 179.0);
            assert_eq!(lap.full_throttle_share, 1.0);
            assert_eq!(lap.gear_changes, 0);
            assert_eq!(lap.sectors_ms.iter().sum::<i64>(), 500);
        }
        assert_eq!(counter("laps_total", &[]), 4);
    }

    #[test]
    fn a_wrapped_frame_is_read_and_a_replayed_one_dropped() {
        let mut h = harness();
        let wrapped = TelemetryMessage {
            telemetry: Some(frame(0, 30)),
        };
        h.process_one(TestMessage::new(wrapped.encode_to_vec()).key("a"))
            .unwrap();
        // The same frame again, from a fresh instance over the same state.
        let mut again = Harness::<Laps>::new(&["default"], json!({})).unwrap();
        assert!(again.process_one(message("a", &frame(0, 30))).is_ok());
        assert_eq!(counter("duplicates_dropped", &[]), 1);
    }

    #[test]
    fn what_cannot_be_a_frame_is_rejected_with_a_reason() {
        let mut h = harness();
        let err = h
            .process_one(TestMessage::new(&b"{\"speed\": 1}"[..]).key("a"))
            .unwrap_err();
        assert!(err.contains("not a protobuf TelemetryFrame"), "{err}");
        let err = h
            .process_one(TestMessage::new(frame(0, 30).encode_to_vec()))
            .unwrap_err();
        assert!(err.contains("no session id"), "{err}");
        let mut bad = frame(0, 30);
        bad.normalized_position = 1.5;
        let err = h.process_one(message("a", &bad)).unwrap_err();
        assert!(err.contains("normalizedPosition"), "{err}");
        bad.normalized_position = f32::NAN;
        assert!(h.process_one(message("a", &bad)).is_err());
    }

    #[test]
    fn a_frame_too_late_is_dead_lettered_as_such() {
        let mut h = harness();
        for i in 0..10 {
            h.process_one(message("a", &frame(i, 30))).unwrap();
        }
        let mut late = frame(2, 30);
        late.timestamp += 3;
        let err = h.process_one(message("a", &late)).unwrap_err();
        assert!(err.starts_with("too_late:"), "{err}");
        assert_eq!(counter("too_late_total", &[]), 1);
    }

    #[test]
    fn bad_settings_stop_the_stage() {
        assert!(Harness::<Laps>::new(&["default"], json!({"dedup_window_ms": -1})).is_err());
        assert!(Harness::<Laps>::new(&["default"], json!({"nope": 1})).is_err());
    }
}
