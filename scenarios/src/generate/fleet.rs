//! The fleet-operations `raw_telemetry` frames, keyed by
//! `vehicle_id`: one scene of [`VEHICLES`] vehicles (five tracks and the
//! ego vehicle) recorded at 10 Hz and replayed.
//!
//! - Event `i` is frame `i / VEHICLES` of vehicle `i % VEHICLES`: the
//!   vehicles take turns, each with the same `frame_index`.
//! - A frame's `event_time` is the first `now_ms` the generator saw plus
//!   `frame_index * FRAME_MS` (100 ms); `processing_time` is `now_ms`.
//! - Speeds follow smooth profiles (a slow swell around a cruising speed,
//!   under 1 m/s² between frames), headings a slow weave.
//! - **Hard braking at known frames**: at every frame `f` that is a
//!   positive multiple of [`BRAKING_EVERY`] (200, 400, ...) *every* vehicle
//!   drops its speed at once, alternately by [`WARNING_DROP`] (0.4 m/s in
//!   100 ms, about -4 m/s²: a WARNING under the default thresholds of 3 and
//!   5 m/s²) at 200, 600, ... and by [`CRITICAL_DROP`] (0.7 m/s, about
//!   -7 m/s²: a CRITICAL) at 400, 800, .... The speed then recovers
//!   linearly over [`RECOVERY_FRAMES`] frames. [`braking_at`] and
//!   [`braking_frames`] say which frames brake and how hard; no other frame
//!   decelerates by 3 m/s² or more.
//!
//! A frame:
//!
//! ```json
//! {"event_id": "{run_id}-scene_123_track_456-00000042", "vehicle_id": "scene_123_track_456",
//!  "scene_id": "scene_123", "track_id": 456, "event_time": "...", "processing_time": "...",
//!  "frame_index": 42,
//!  "telemetry": {"position": {"x", "y", "z"}, "velocity": {"x", "y", "z", "magnitude"},
//!                "acceleration": {"x", "y", "z", "magnitude"}, "yaw": 1.23, "yaw_rate": 0.05,
//!                "label_probability": 0.95, "track_length": 43},
//!  "metadata": {"replay_session_id": "{run_id}", "replay_rate": 10.0}}
//! ```
//!
//! The ego vehicle (`{scene_id}_ego`) has `track_id` 0.

use std::f64::consts::{PI, TAU};

use serde_json::json;

use super::rng::Rng;
use super::{Destination, Event, Generator, Settings, format_rfc3339_ms, round, to_bytes};

/// Vehicles in the scene: five tracks and the ego vehicle (last).
pub const VEHICLES: usize = 6;

/// Time between two frames of a vehicle (10 Hz).
pub const FRAME_MS: i64 = 100;

/// Every vehicle brakes hard at each positive multiple of this frame.
pub const BRAKING_EVERY: u64 = 200;

/// Frames over which the speed lost in a braking comes back.
pub const RECOVERY_FRAMES: u64 = 40;

/// Speed lost in one frame by a WARNING-size braking (m/s).
pub const WARNING_DROP: f64 = 0.4;

/// Speed lost in one frame by a CRITICAL-size braking (m/s).
pub const CRITICAL_DROP: f64 = 0.7;

/// The generator's sub-stream of the seed.
const STREAM: u64 = 1;

/// A hard braking injected at a known frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Braking {
    /// [`WARNING_DROP`] in 100 ms: about -4 m/s².
    Warning,
    /// [`CRITICAL_DROP`] in 100 ms: about -7 m/s².
    Critical,
}

impl Braking {
    /// The speed lost in the braking frame (m/s).
    pub fn drop(self) -> f64 {
        match self {
            Braking::Warning => WARNING_DROP,
            Braking::Critical => CRITICAL_DROP,
        }
    }
}

/// The braking at `frame_index` (the same for every vehicle), if any:
/// WARNING at 200, 600, 1000, ...; CRITICAL at 400, 800, 1200, ....
pub fn braking_at(frame_index: u64) -> Option<Braking> {
    if frame_index == 0 || !frame_index.is_multiple_of(BRAKING_EVERY) {
        return None;
    }
    Some(if (frame_index / BRAKING_EVERY) % 2 == 1 {
        Braking::Warning
    } else {
        Braking::Critical
    })
}

/// The braking frames below `frames`, in order.
pub fn braking_frames(frames: u64) -> Vec<(u64, Braking)> {
    (BRAKING_EVERY..frames)
        .step_by(BRAKING_EVERY as usize)
        .filter_map(|f| braking_at(f).map(|b| (f, b)))
        .collect()
}

/// Speed still missing at `frame_index` because of the last braking.
fn deficit(frame_index: u64) -> f64 {
    let last = frame_index / BRAKING_EVERY * BRAKING_EVERY;
    let Some(braking) = braking_at(last) else {
        return 0.0;
    };
    let since = (frame_index - last) as f64;
    braking.drop() * (1.0 - since / RECOVERY_FRAMES as f64).max(0.0)
}

#[derive(Debug, Clone)]
struct Vehicle {
    id: String,
    track_id: u64,
    cruise: f64,
    swell: f64,
    swell_period: f64,
    swell_phase: f64,
    heading: f64,
    weave: f64,
    weave_period: f64,
    weave_phase: f64,
    label_probability: f64,
    position: (f64, f64),
    velocity: (f64, f64),
}

pub struct Fleet {
    rng: Rng,
    run_id: String,
    scene_id: String,
    vehicles: Vec<Vehicle>,
    start_ms: Option<i64>,
    n: u64,
}

impl Fleet {
    pub fn new(settings: &Settings) -> Self {
        let mut rng = Rng::derived(settings.seed, STREAM);
        let scene_id = format!("scene_{}", rng.between(100, 999));
        let mut track_ids: Vec<u64> = Vec::new();
        while track_ids.len() < VEHICLES - 1 {
            let id = rng.between(100, 999);
            if !track_ids.contains(&id) {
                track_ids.push(id);
            }
        }
        let vehicles = (0..VEHICLES)
            .map(|i| {
                let ego = i == VEHICLES - 1;
                let track_id = track_ids.get(i).copied().unwrap_or(0);
                Vehicle {
                    id: if ego {
                        format!("{scene_id}_ego")
                    } else {
                        format!("{scene_id}_track_{track_id}")
                    },
                    track_id,
                    cruise: if ego {
                        rng.range(12.0, 15.0)
                    } else {
                        rng.range(6.0, 16.0)
                    },
                    swell: rng.range(0.5, 1.5),
                    swell_period: rng.range(250.0, 600.0),
                    swell_phase: rng.range(0.0, TAU),
                    heading: rng.range(-PI, PI),
                    weave: rng.range(0.1, 0.4),
                    weave_period: rng.range(300.0, 800.0),
                    weave_phase: rng.range(0.0, TAU),
                    label_probability: if ego { 1.0 } else { rng.range(0.8, 0.99) },
                    position: (rng.range(-50.0, 50.0), rng.range(-50.0, 50.0)),
                    velocity: (0.0, 0.0),
                }
            })
            .collect();
        Fleet {
            rng,
            run_id: settings.run_id.clone(),
            scene_id,
            vehicles,
            start_ms: None,
            n: 0,
        }
    }

    /// The scene's vehicle ids, in the order the vehicles take turns.
    pub fn vehicle_ids(&self) -> Vec<String> {
        self.vehicles.iter().map(|v| v.id.clone()).collect()
    }

    pub fn scene_id(&self) -> &str {
        &self.scene_id
    }
}

impl Generator for Fleet {
    fn next(&mut self, now_ms: i64) -> Event {
        let start = *self.start_ms.get_or_insert(now_ms);
        let index = (self.n % VEHICLES as u64) as usize;
        let frame = self.n / VEHICLES as u64;
        self.n += 1;
        let dt = FRAME_MS as f64 / 1000.0;
        let jitter = self.rng.range(-0.01, 0.01);
        let v = &mut self.vehicles[index];

        let f = frame as f64;
        let speed = v.cruise + v.swell * (TAU * f / v.swell_period + v.swell_phase).sin()
            - deficit(frame)
            + jitter;
        let weave_angle = TAU * f / v.weave_period + v.weave_phase;
        let yaw = v.heading + v.weave * weave_angle.sin();
        let yaw = yaw.sin().atan2(yaw.cos());
        let yaw_rate = v.weave * TAU / (v.weave_period * dt) * weave_angle.cos();
        let velocity = (round(speed * yaw.cos(), 4), round(speed * yaw.sin(), 4));
        let acceleration = if frame == 0 {
            (0.0, 0.0)
        } else {
            (
                round((velocity.0 - v.velocity.0) / dt, 4),
                round((velocity.1 - v.velocity.1) / dt, 4),
            )
        };
        v.velocity = velocity;
        v.position.0 += velocity.0 * dt;
        v.position.1 += velocity.1 * dt;
        let label_probability = (v.label_probability + self.rng.range(-0.01, 0.01)).clamp(0.0, 1.0);

        let event_time = start + frame as i64 * FRAME_MS;
        let value = json!({
            "event_id": format!("{}-{}-{frame:08}", self.run_id, v.id),
            "vehicle_id": v.id,
            "scene_id": self.scene_id,
            "track_id": v.track_id,
            "event_time": format_rfc3339_ms(event_time),
            "processing_time": format_rfc3339_ms(now_ms),
            "frame_index": frame,
            "telemetry": {
                "position": {
                    "x": round(v.position.0, 3),
                    "y": round(v.position.1, 3),
                    "z": 0.0,
                },
                "velocity": {
                    "x": velocity.0,
                    "y": velocity.1,
                    "z": 0.0,
                    "magnitude": round(velocity.0.hypot(velocity.1), 4),
                },
                "acceleration": {
                    "x": acceleration.0,
                    "y": acceleration.1,
                    "z": 0.0,
                    "magnitude": round(acceleration.0.hypot(acceleration.1), 4),
                },
                "yaw": round(yaw, 4),
                "yaw_rate": round(yaw_rate, 4),
                "label_probability": round(label_probability, 3),
                "track_length": frame + 1,
            },
            "metadata": {
                "replay_session_id": self.run_id,
                "replay_rate": 10.0,
            },
        });
        Event {
            destination: Destination::FleetRaw,
            key: v.id.clone(),
            value: to_bytes(&value),
            headers: Vec::new(),
        }
    }

    fn duplicate(&self, event: &Event) -> Event {
        event.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::{HashMap, HashSet};

    const T0: i64 = 1_700_000_000_000;

    fn run(settings: &Settings, n: usize) -> Vec<Event> {
        let mut g = Fleet::new(settings);
        (0..n).map(|i| g.next(T0 + i as i64 * 7)).collect()
    }

    fn json(e: &Event) -> Value {
        serde_json::from_slice(&e.value).unwrap()
    }

    #[test]
    fn deterministic() {
        let s = Settings::new(4, "r");
        assert_eq!(run(&s, 3000), run(&s, 3000));
        assert_ne!(run(&s, 12), run(&Settings::new(5, "r"), 12));
    }

    #[test]
    fn braking_schedule() {
        assert_eq!(braking_at(0), None);
        assert_eq!(braking_at(199), None);
        assert_eq!(braking_at(200), Some(Braking::Warning));
        assert_eq!(braking_at(400), Some(Braking::Critical));
        assert_eq!(braking_at(600), Some(Braking::Warning));
        assert_eq!(
            braking_frames(801),
            vec![
                (200, Braking::Warning),
                (400, Braking::Critical),
                (600, Braking::Warning),
                (800, Braking::Critical)
            ]
        );
        assert_eq!(braking_frames(800).len(), 3);
        assert_eq!(deficit(199), 0.0);
        assert_eq!(deficit(200), WARNING_DROP);
        assert_eq!(deficit(200 + RECOVERY_FRAMES), 0.0);
    }

    #[test]
    fn frames_follow_the_seed_schema() {
        let g = Fleet::new(&Settings::new(6, "fleet-run"));
        let ids = g.vehicle_ids();
        let scene = g.scene_id().to_string();
        assert_eq!(ids.len(), VEHICLES);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), VEHICLES);
        assert_eq!(ids[VEHICLES - 1], format!("{scene}_ego"));
        let events = run(&Settings::new(6, "fleet-run"), 10_000);
        let mut event_ids = HashSet::new();
        for (i, e) in events.iter().enumerate() {
            let v = json(e);
            let frame = (i / VEHICLES) as i64;
            assert_eq!(e.destination, Destination::FleetRaw);
            assert_eq!(e.key, ids[i % VEHICLES]);
            assert_eq!(v["vehicle_id"], e.key.as_str());
            assert_eq!(v["scene_id"], scene.as_str());
            let track = v["track_id"].as_u64().unwrap();
            if i % VEHICLES == VEHICLES - 1 {
                assert_eq!(track, 0);
            } else {
                assert_eq!(e.key, format!("{scene}_track_{track}"));
            }
            assert_eq!(v["frame_index"], frame);
            assert_eq!(
                v["event_time"],
                format_rfc3339_ms(T0 + frame * FRAME_MS).as_str()
            );
            assert_eq!(
                v["processing_time"],
                format_rfc3339_ms(T0 + i as i64 * 7).as_str()
            );
            assert!(event_ids.insert(v["event_id"].as_str().unwrap().to_string()));
            assert!(v["event_id"].as_str().unwrap().starts_with("fleet-run-"));
            let t = &v["telemetry"];
            for part in ["position", "velocity", "acceleration"] {
                for axis in ["x", "y", "z"] {
                    assert!(t[part][axis].is_f64(), "{part}.{axis}");
                }
            }
            let (x, y) = (
                t["velocity"]["x"].as_f64().unwrap(),
                t["velocity"]["y"].as_f64().unwrap(),
            );
            assert!((t["velocity"]["magnitude"].as_f64().unwrap() - x.hypot(y)).abs() < 1e-3);
            let speed = x.hypot(y);
            assert!((3.0..20.0).contains(&speed), "{speed}");
            assert!(t["yaw"].as_f64().unwrap().abs() <= PI + 1e-3);
            assert!(t["yaw_rate"].is_f64());
            let p = t["label_probability"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p));
            assert_eq!(t["track_length"], frame + 1);
            assert_eq!(v["metadata"]["replay_session_id"], "fleet-run");
            assert!(v["metadata"]["replay_rate"].is_f64());
        }
    }

    /// Speeds and times of each vehicle's frames, as the deceleration stage
    /// reads them, then the acceleration between consecutive frames.
    #[test]
    fn brakes_hard_at_the_known_frames_and_nowhere_else() {
        let frames = 2000;
        let events = run(&Settings::new(8, "r"), frames * VEHICLES);
        let mut by_vehicle: HashMap<String, Vec<(u64, f64)>> = HashMap::new();
        for e in &events {
            let v = json(e);
            let speed = v["telemetry"]["velocity"]["x"]
                .as_f64()
                .unwrap()
                .hypot(v["telemetry"]["velocity"]["y"].as_f64().unwrap());
            by_vehicle
                .entry(e.key.clone())
                .or_default()
                .push((v["frame_index"].as_u64().unwrap(), speed));
        }
        assert_eq!(by_vehicle.len(), VEHICLES);
        let braking: HashMap<u64, Braking> = braking_frames(frames as u64).into_iter().collect();
        assert_eq!(braking.len(), 9);
        let dt = FRAME_MS as f64 / 1000.0;
        for (vehicle, speeds) in &by_vehicle {
            let mut found = Vec::new();
            for pair in speeds.windows(2) {
                let (frame, after) = pair[1];
                assert_eq!(frame, pair[0].0 + 1);
                let a = (after - pair[0].1) / dt;
                match braking.get(&frame) {
                    Some(Braking::Warning) => {
                        assert!((-5.0 + 1e-6..=-3.0).contains(&a), "{vehicle} {frame}: {a}");
                        assert!((a + 4.0).abs() < 1.0, "{vehicle} {frame}: {a}");
                        found.push(frame);
                    }
                    Some(Braking::Critical) => {
                        assert!(a <= -5.0, "{vehicle} {frame}: {a}");
                        assert!((a + 7.0).abs() < 1.0, "{vehicle} {frame}: {a}");
                        found.push(frame);
                    }
                    // Smooth everywhere else, including the recovery.
                    None => assert!(a.abs() < 1.0, "{vehicle} {frame}: {a}"),
                }
            }
            assert_eq!(found.len(), braking.len());
        }
    }

    #[test]
    fn reported_acceleration_matches_the_velocities() {
        let events = run(&Settings::new(3, "r"), 600);
        let mut last: HashMap<String, Value> = HashMap::new();
        for e in &events {
            let v = json(e);
            if let Some(prev) = last.get(&e.key) {
                for axis in ["x", "y"] {
                    let dv = v["telemetry"]["velocity"][axis].as_f64().unwrap()
                        - prev["telemetry"]["velocity"][axis].as_f64().unwrap();
                    let a = v["telemetry"]["acceleration"][axis].as_f64().unwrap();
                    assert!((a - dv / 0.1).abs() < 1e-3);
                }
            }
            last.insert(e.key.clone(), v);
        }
    }
}
