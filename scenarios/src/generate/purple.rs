//! Racing telemetry as Purple Sector's collectors publish it: `sessions`
//! cars lapping one track at 60 Hz, each frame a protobuf `TelemetryFrame`
//! keyed by session id, with the headers `sessionId`, `userId` and
//! `encoding`.
//!
//! - Event `i` is frame `i / sessions` of session `i % sessions`: the
//!   sessions take turns. Frame `k`'s timestamp is the first `now_ms` the
//!   generator saw plus `k * 1000 / 60` (whole ms), so at
//!   `60 * sessions` events a second the frames keep pace with the clock.
//! - The track is a loop with five corners. A car's speed follows the
//!   track's speed profile (scaled by the driver, ±3%), braking into
//!   each corner and accelerating out of it; throttle, brake, gear, rpm and
//!   steering follow from the speed and the corner. Its position advances
//!   with its speed, and a lap takes [`PurpleSettings::lap_ms`] (90 s by
//!   default) at the profile's speed.
//! - **Known lap boundaries**: a lap ends when the position wraps past 1,
//!   and the next frame has the next `lapNumber` and `lapTime` 0. The
//!   generator keeps the [`LapSummary`] of every lap it completed
//!   ([`Purple::completed`]), worked out from the frames as they were
//!   encoded, for tests to compare with the `laps` plugin's.

use std::collections::BTreeMap;

use weir_purple_telemetry::{
    ENCODING_PROTOBUF, FRAME_HZ, HEADER_ENCODING, HEADER_SESSION, HEADER_USER, LapSummary, Message,
    TelemetryFrame, round,
};

use super::rng::Rng;
use super::{Destination, Event, Generator, Settings};

/// The generator's sub-stream of the seed.
const STREAM: u64 = 5;

/// (centre, speed at the apex in km/h, half-width), as shares of the lap.
const CORNERS: [(f64, f64, f64); 5] = [
    (0.12, 95.0, 0.05),
    (0.30, 160.0, 0.04),
    (0.48, 80.0, 0.05),
    (0.70, 130.0, 0.05),
    (0.88, 110.0, 0.04),
];

/// Top speed on the straights, km/h.
const TOP_SPEED: f64 = 300.0;

/// Upper speed of each gear, km/h (gear 8 above the last).
const GEAR_TOPS: [f64; 7] = [80.0, 115.0, 150.0, 185.0, 220.0, 255.0, 285.0];

/// The purple scenario's own settings.
#[derive(Debug, Clone)]
pub struct PurpleSettings {
    pub sessions: usize,
    /// A lap at the profile's speed (a driver's pace moves it by ±3%).
    pub lap_ms: u64,
}

/// Sessions when a start request names none.
pub const DEFAULT_SESSIONS: usize = 10;

/// The most sessions a run may have.
pub const MAX_SESSIONS: usize = 10_000;

impl Default for PurpleSettings {
    fn default() -> Self {
        PurpleSettings {
            sessions: DEFAULT_SESSIONS,
            lap_ms: 90_000,
        }
    }
}

/// The track's speed at `pos` (0..1), km/h: the top speed, dipping to
/// each corner's apex speed over its width.
fn profile(pos: f64) -> f64 {
    CORNERS
        .iter()
        .map(|&(centre, apex, half)| {
            let d = (pos - centre).abs().min(1.0 - (pos - centre).abs());
            let x = (d / half).min(1.0);
            // Smoothstep from the apex (x = 0) to the top speed (x = 1).
            apex + (TOP_SPEED - apex) * x * x * (3.0 - 2.0 * x)
        })
        .fold(TOP_SPEED, f64::min)
}

/// How far the car's steering is turned at `pos` (-1..1): into each
/// corner, left and right in turn.
fn steering(pos: f64) -> f64 {
    CORNERS
        .iter()
        .enumerate()
        .map(|(i, &(centre, apex, half))| {
            let d = (pos - centre).abs().min(1.0 - (pos - centre).abs());
            let lock = (1.0 - d / half).max(0.0) * (1.0 - apex / TOP_SPEED);
            if i % 2 == 0 { lock } else { -lock }
        })
        .sum::<f64>()
        .clamp(-1.0, 1.0)
}

fn gear(speed: f64) -> i32 {
    GEAR_TOPS.iter().take_while(|top| speed > **top).count() as i32 + 1
}

fn rpm(speed: f64, gear: i32) -> i32 {
    let top = GEAR_TOPS
        .get(gear as usize - 1)
        .copied()
        .unwrap_or(TOP_SPEED + 20.0);
    let bottom = if gear == 1 {
        0.0
    } else {
        GEAR_TOPS[gear as usize - 2]
    };
    (4_000.0 + 8_500.0 * ((speed - bottom) / (top - bottom)).clamp(0.0, 1.0)) as i32
}

/// The track's length in profile units: a lap at the profile's speed
/// takes `lap_ms`.
fn track_length(lap_ms: u64) -> f64 {
    const STEPS: usize = 10_000;
    let hours_per_unit: f64 = (0..STEPS)
        .map(|i| 1.0 / profile((i as f64 + 0.5) / STEPS as f64))
        .sum::<f64>()
        / STEPS as f64;
    lap_ms as f64 / 3_600_000.0 / hours_per_unit
}

/// The lap a session is on, as the `laps` plugin sums it up.
#[derive(Debug, Clone)]
struct LapSoFar {
    number: i32,
    start_ts: i64,
    frames: u64,
    speed_sum: f64,
    speed_max: f32,
    full_throttle: u64,
    braking: u64,
    gear_changes: u32,
    last_gear: i32,
    sector1: Option<i64>,
    sector2: Option<i64>,
}

impl LapSoFar {
    fn new(number: i32, start_ts: i64) -> Self {
        LapSoFar {
            number,
            start_ts,
            frames: 0,
            speed_sum: 0.0,
            speed_max: f32::MIN,
            full_throttle: 0,
            braking: 0,
            gear_changes: 0,
            last_gear: 0,
            sector1: None,
            sector2: None,
        }
    }

    fn add(&mut self, f: &TelemetryFrame) {
        if self.frames > 0 && f.gear != self.last_gear {
            self.gear_changes += 1;
        }
        self.last_gear = f.gear;
        self.frames += 1;
        self.speed_sum += f64::from(f.speed);
        self.speed_max = self.speed_max.max(f.speed);
        self.full_throttle += u64::from(f.throttle >= 0.98);
        self.braking += u64::from(f.brake > 0.05);
        let pos = f.normalized_position;
        if self.sector1.is_none() && pos >= 1.0 / 3.0 {
            self.sector1 = Some(f.timestamp - self.start_ts);
        }
        if self.sector2.is_none() && pos >= 2.0 / 3.0 {
            self.sector2 = Some(f.timestamp - self.start_ts);
        }
    }

    fn summary(&self, session: &str, next_ts: i64) -> LapSummary {
        let lap_time = next_ts - self.start_ts;
        let n = self.frames as f64;
        let (s1, s2) = (
            self.sector1.unwrap_or(lap_time),
            self.sector2.unwrap_or(lap_time),
        );
        LapSummary {
            session_id: session.to_string(),
            lap_number: self.number,
            started_at_ms: self.start_ts,
            lap_time_ms: lap_time,
            frames: self.frames,
            max_speed: f64::from(self.speed_max),
            avg_speed: round(self.speed_sum / n, 3),
            full_throttle_share: round(self.full_throttle as f64 / n, 4),
            braking_share: round(self.braking as f64 / n, 4),
            gear_changes: self.gear_changes,
            sectors_ms: [s1, s2 - s1, lap_time - s2],
        }
    }
}

/// One car on track.
#[derive(Debug, Clone)]
struct Car {
    session: String,
    user: String,
    /// The driver's pace: the profile's speed times this.
    pace: f64,
    frame: i64,
    pos: f64,
    lap: LapSoFar,
    last_speed: f64,
}

pub struct Purple {
    cars: Vec<Car>,
    next: usize,
    start_ms: Option<i64>,
    /// km of track per lap, at the profile's speed in `lap_ms`.
    length_km: f64,
    completed: BTreeMap<String, Vec<LapSummary>>,
}

impl Purple {
    pub fn new(settings: &Settings, purple: &PurpleSettings) -> Self {
        let mut rng = Rng::derived(settings.seed, STREAM);
        let cars = (0..purple.sessions.max(1))
            .map(|n| Car {
                session: format!("{}-session-{n}", settings.run_id),
                user: format!("user-{}", n % 7),
                pace: 0.97 + 0.06 * rng.unit(),
                frame: 0,
                pos: 0.0,
                lap: LapSoFar::new(1, 0),
                last_speed: profile(0.0),
            })
            .collect();
        Purple {
            cars,
            next: 0,
            start_ms: None,
            length_km: track_length(purple.lap_ms),
            completed: BTreeMap::new(),
        }
    }

    /// The laps completed so far, by session, in order.
    pub fn completed(&self) -> &BTreeMap<String, Vec<LapSummary>> {
        &self.completed
    }

    /// The sessions, in the order they take turns.
    pub fn sessions(&self) -> impl Iterator<Item = &str> {
        self.cars.iter().map(|c| c.session.as_str())
    }

    fn frame(&mut self, n: usize, start_ms: i64) -> TelemetryFrame {
        let length_km = self.length_km;
        let car = &mut self.cars[n];
        let ts = start_ms + car.frame * 1000 / i64::from(FRAME_HZ);
        if car.frame == 0 {
            car.lap = LapSoFar::new(1, ts);
        } else {
            // Advance by the speed held over the last frame's interval.
            let prev_ts = start_ms + (car.frame - 1) * 1000 / i64::from(FRAME_HZ);
            let hours = (ts - prev_ts) as f64 / 3_600_000.0;
            car.pos += car.last_speed * hours / length_km;
            if car.pos >= 1.0 {
                car.pos -= 1.0;
                let done = car.lap.summary(&car.session, ts);
                self.completed
                    .entry(car.session.clone())
                    .or_default()
                    .push(done);
                car.lap = LapSoFar::new(car.lap.number + 1, ts);
            }
        }
        let speed = profile(car.pos) * car.pace;
        // Seen over the next 0.2 s of track: slower ahead is braking,
        // faster is accelerating.
        let ahead = car.pos + speed * 0.2 / 3_600.0 / length_km;
        let change = profile(ahead % 1.0) * car.pace - speed;
        let (throttle, brake) = if change < -1.0 {
            (0.0, (-change / 40.0).clamp(0.1, 1.0))
        } else if change > 1.0 || speed >= TOP_SPEED * car.pace - 1.0 {
            (1.0, 0.0)
        } else {
            (0.6, 0.0)
        };
        let gear = gear(speed);
        let frame = TelemetryFrame {
            timestamp: ts,
            lap_time: (ts - car.lap.start_ts) as i32,
            throttle: throttle as f32,
            brake: brake as f32,
            steering: steering(car.pos) as f32,
            speed: speed as f32,
            gear,
            rpm: rpm(speed, gear),
            normalized_position: car.pos as f32,
            lap_number: car.lap.number,
        };
        car.lap.add(&frame);
        car.last_speed = speed;
        car.frame += 1;
        frame
    }
}

impl Generator for Purple {
    fn next(&mut self, now_ms: i64) -> Event {
        let start_ms = *self.start_ms.get_or_insert(now_ms);
        let n = self.next;
        self.next = (n + 1) % self.cars.len();
        let frame = self.frame(n, start_ms);
        let car = &self.cars[n];
        Event {
            destination: Destination::PurpleTelemetry,
            key: car.session.clone(),
            value: frame.encode_to_vec(),
            headers: vec![
                (HEADER_SESSION.into(), car.session.clone()),
                (HEADER_USER.into(), car.user.clone()),
                (HEADER_ENCODING.into(), ENCODING_PROTOBUF.into()),
            ],
        }
    }

    /// A frame sent twice is the same bytes: the `laps` plugin drops it.
    fn duplicate(&self, event: &Event) -> Event {
        event.clone()
    }
}

#[cfg(test)]
mod tests {
    use weir_purple_telemetry::decode;

    use super::*;

    fn purple(sessions: usize, lap_ms: u64) -> Purple {
        Purple::new(&Settings::new(7, "t"), &PurpleSettings { sessions, lap_ms })
    }

    #[test]
    fn frames_are_protobuf_keyed_by_session_with_the_seeds_headers() {
        let mut g = purple(3, 90_000);
        let events: Vec<Event> = (0..6).map(|_| g.next(1_000)).collect();
        assert_eq!(events[0].key, "t-session-0");
        assert_eq!(events[4].key, "t-session-1");
        let f = decode(&events[3].value).unwrap();
        assert_eq!((f.timestamp, f.lap_number, f.lap_time), (1_016, 1, 16));
        let headers: Vec<&str> = events[0].headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(headers, ["sessionId", "userId", "encoding"]);
        assert_eq!(events[0].headers[2].1, "protobuf");
        assert_eq!(events[0].destination, Destination::PurpleTelemetry);
    }

    #[test]
    fn a_lap_takes_about_the_lap_time_and_its_boundary_is_known() {
        let mut g = purple(2, 90_000);
        // Three minutes of both sessions.
        let mut frames: BTreeMap<String, Vec<TelemetryFrame>> = BTreeMap::new();
        for _ in 0..2 * 60 * 180 {
            let e = g.next(0);
            frames
                .entry(e.key)
                .or_default()
                .push(decode(&e.value).unwrap());
        }
        for (session, laps) in g.completed() {
            assert!(!laps.is_empty(), "{session} finished no lap");
            let lap = &laps[0];
            assert_eq!(lap.lap_number, 1);
            assert!(
                (85_000..=95_000).contains(&lap.lap_time_ms),
                "{session}: {lap:?}"
            );
            // The boundary: the next frame is lap 2, at lap time 0.
            let f = &frames[session];
            let first = f.iter().position(|f| f.lap_number == 2).unwrap();
            assert_eq!(f[first].lap_time, 0);
            assert_eq!(f[first].timestamp - f[0].timestamp, lap.lap_time_ms);
            assert!(f[first - 1].normalized_position > 0.99);
            assert!(f[first].normalized_position < 0.01);
            assert_eq!(lap.frames as usize, first);
            // A racing lap: braking and full throttle both happen, the
            // speed ranges from the slowest apex to near the top.
            assert!(
                lap.braking_share > 0.05 && lap.full_throttle_share > 0.3,
                "{lap:?}"
            );
            assert!(lap.max_speed > 280.0 && lap.avg_speed < 260.0, "{lap:?}");
            assert!(lap.gear_changes >= 10, "{lap:?}");
            assert_eq!(lap.sectors_ms.iter().sum::<i64>(), lap.lap_time_ms);
        }
    }

    #[test]
    fn the_speed_follows_the_track() {
        assert_eq!(profile(0.0), TOP_SPEED);
        assert!((profile(0.48) - 80.0).abs() < 1e-9);
        assert!(profile(0.46) > 80.0 && profile(0.46) < profile(0.44));
        assert_eq!(gear(50.0), 1);
        assert_eq!(gear(299.0), 8);
        assert!(rpm(150.0, 3) > rpm(120.0, 3));
    }
}
