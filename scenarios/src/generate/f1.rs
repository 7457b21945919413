//! The F1 Kafka demo's raw telemetry, keyed by `car_id`, in the fields and ranges
//! of `docs/schemas.md`:
//!
//! - cars `CAR-1` .. `CAR-4` in turn; each car's `seq` counts from 0;
//! - `lap` = `seq / 50 % 60 + 1`: a lap is 50 samples, on a fixed layout of
//!   `straight`, `chicane` and `hairpin` segments ([`segment_at`]) that sets
//!   the band of `speed_kph` (90-320), `gear` (1-8, from the speed),
//!   `throttle` (0.3-1) and `brake` (0-1);
//! - the four tyre temperatures (70-105 °C) follow a slow heat cycle per car
//!   (a few hundred samples long, plus a little wander), so the degradation
//!   score runs from 0 to above 0.7 and back, smoothly, at different times
//!   for different cars;
//! - `battery_soc` (0.35-0.95) falls while deploying and rises while
//!   harvesting; each lap the car picks a strategy (push, normal, charge)
//!   that weighs `ers_mode`, so the charge swings across its range and now
//!   and then a car deploys on a low battery;
//! - `timestamp` is `now_ms` in RFC 3339 UTC, `run_id` the settings'.

use std::f64::consts::TAU;

use serde_json::{Value, json};

use super::rng::Rng;
use super::{Destination, Event, Generator, Settings, format_rfc3339_ms, round, to_bytes};

/// Number of cars.
pub const CARS: usize = 4;

/// Samples per lap.
pub const SAMPLES_PER_LAP: u64 = 50;

/// Laps in a race; `lap` wraps back to 1 after it.
pub const LAPS: u64 = 60;

/// The generator's sub-stream of the seed.
const STREAM: u64 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Straight,
    Chicane,
    Hairpin,
}

impl Segment {
    pub fn as_str(self) -> &'static str {
        match self {
            Segment::Straight => "straight",
            Segment::Chicane => "chicane",
            Segment::Hairpin => "hairpin",
        }
    }
}

/// The segment of sample `seq` of a car: every lap has the same layout.
pub fn segment_at(seq: u64) -> Segment {
    match seq % SAMPLES_PER_LAP {
        18..=23 => Segment::Chicane,
        36..=42 => Segment::Hairpin,
        _ => Segment::Straight,
    }
}

/// The lap of sample `seq` of a car.
pub fn lap_at(seq: u64) -> u64 {
    seq / SAMPLES_PER_LAP % LAPS + 1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Push,
    Normal,
    Charge,
}

#[derive(Debug, Clone)]
struct Car {
    seq: u64,
    /// Heat cycle: period in samples and phase.
    heat_period: f64,
    heat_phase: f64,
    /// A slow, bounded random walk added to the heat.
    wander: f64,
    /// Per-tyre offsets (fl, fr, rl, rr) of the heat.
    tyre_offsets: [f64; 4],
    speed_kph: f64,
    soc: f64,
    strategy: Strategy,
}

pub struct F1 {
    rng: Rng,
    run_id: String,
    cars: Vec<Car>,
    n: u64,
}

impl F1 {
    pub fn new(settings: &Settings) -> Self {
        let mut rng = Rng::derived(settings.seed, STREAM);
        let cars = (0..CARS)
            .map(|_| Car {
                seq: 0,
                heat_period: rng.range(400.0, 900.0),
                heat_phase: rng.range(0.0, TAU),
                wander: 0.0,
                tyre_offsets: [
                    rng.range(0.0, 0.03),
                    rng.range(0.0, 0.03),
                    rng.range(-0.02, 0.01),
                    rng.range(-0.02, 0.01),
                ],
                speed_kph: rng.range(200.0, 300.0),
                soc: rng.range(0.5, 0.9),
                strategy: Strategy::Normal,
            })
            .collect();
        F1 {
            rng,
            run_id: settings.run_id.clone(),
            cars,
            n: 0,
        }
    }
}

/// (deploy, harvest) probabilities; balanced is the rest.
fn ers_weights(strategy: Strategy, segment: Segment) -> (f64, f64) {
    let straight = segment == Segment::Straight;
    match (strategy, straight) {
        (Strategy::Push, true) => (0.75, 0.10),
        (Strategy::Push, false) => (0.30, 0.50),
        (Strategy::Normal, true) => (0.50, 0.20),
        (Strategy::Normal, false) => (0.10, 0.60),
        (Strategy::Charge, _) => (0.05, 0.70),
    }
}

impl Generator for F1 {
    fn next(&mut self, now_ms: i64) -> Event {
        let index = (self.n % CARS as u64) as usize;
        self.n += 1;
        let rng = &mut self.rng;
        let car = &mut self.cars[index];
        let seq = car.seq;
        car.seq += 1;
        let segment = segment_at(seq);

        // Speed: eased towards a target in the segment's band.
        let (lo, hi, throttle, brake) = match segment {
            Segment::Straight => (240.0, 320.0, (0.85, 1.0), (0.0, 0.05)),
            Segment::Chicane => (140.0, 220.0, (0.5, 0.8), (0.2, 0.6)),
            Segment::Hairpin => (90.0, 130.0, (0.3, 0.55), (0.5, 1.0)),
        };
        let target = rng.range(lo, hi);
        car.speed_kph = (0.5 * car.speed_kph + 0.5 * target).clamp(90.0, 320.0);
        let speed = round(car.speed_kph, 1);
        let gear = (1 + ((speed - 90.0) / 230.0 * 8.0) as u64).clamp(1, 8);
        let throttle = round(rng.range(throttle.0, throttle.1), 3).clamp(0.3, 1.0);
        let brake = round(rng.range(brake.0, brake.1), 3).clamp(0.0, 1.0);

        // Tyres: the car's heat cycle, its wander, per-tyre offsets, noise.
        car.wander = (car.wander + rng.range(-0.005, 0.005)) * 0.98;
        let heat =
            0.55 + 0.5 * (TAU * seq as f64 / car.heat_period + car.heat_phase).sin() + car.wander;
        let mut temps = [0.0; 4];
        for (t, offset) in temps.iter_mut().zip(car.tyre_offsets) {
            let h = (heat + offset + rng.range(-0.008, 0.008)).clamp(0.0, 1.0);
            *t = round(70.0 + 35.0 * h, 2).clamp(70.0, 105.0);
        }

        // ERS: a strategy per lap, a mode per sample, the charge follows.
        if seq.is_multiple_of(SAMPLES_PER_LAP) {
            car.strategy = if car.soc < 0.4 && rng.chance(0.8) {
                Strategy::Charge
            } else if car.soc > 0.85 {
                Strategy::Push
            } else {
                *rng.pick(&[Strategy::Push, Strategy::Normal, Strategy::Charge])
            };
        }
        let (deploy, harvest) = ers_weights(car.strategy, segment);
        let u = rng.unit();
        let (mode, delta) = if u < deploy {
            ("deploy", -0.006)
        } else if u < deploy + harvest {
            ("harvest", 0.006)
        } else {
            ("balanced", -0.001)
        };
        car.soc = (car.soc + delta + rng.range(-0.001, 0.001)).clamp(0.35, 0.95);
        let soc = round(car.soc, 3).clamp(0.35, 0.95);

        let car_id = format!("CAR-{}", index + 1);
        let value = json!({
            "car_id": car_id,
            "lap": lap_at(seq),
            "seq": seq,
            "speed_kph": speed,
            "gear": gear,
            "throttle": throttle,
            "brake": brake,
            "tire_temp_fl": temps[0],
            "tire_temp_fr": temps[1],
            "tire_temp_rl": temps[2],
            "tire_temp_rr": temps[3],
            "battery_soc": soc,
            "ers_mode": mode,
            "track_segment": segment.as_str(),
            "timestamp": format_rfc3339_ms(now_ms),
            "run_id": self.run_id,
        });
        Event {
            destination: Destination::F1Raw,
            key: car_id,
            value: to_bytes(&value),
            headers: Vec::new(),
        }
    }

    /// The same JSON object with `"duplicate": true`, the same key and
    /// headers. (A value that is not a JSON object is copied as it is.)
    fn duplicate(&self, event: &Event) -> Event {
        let mut copy = event.clone();
        if let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&event.value) {
            object.insert("duplicate".into(), Value::Bool(true));
            copy.value = to_bytes(&Value::Object(object));
        }
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    const T0: i64 = 1_700_000_000_000;

    fn run(settings: &Settings, n: usize) -> Vec<Event> {
        let mut g = F1::new(settings);
        (0..n).map(|i| g.next(T0 + i as i64 * 25)).collect()
    }

    fn json(e: &Event) -> Value {
        serde_json::from_slice(&e.value).unwrap()
    }

    /// The degradation score of docs/schemas.md.
    fn score(v: &Value) -> f64 {
        let mean = [
            "tire_temp_fl",
            "tire_temp_fr",
            "tire_temp_rl",
            "tire_temp_rr",
        ]
        .iter()
        .map(|k| v[k].as_f64().unwrap())
        .sum::<f64>()
            / 4.0;
        ((mean - 80.0) / 35.0).clamp(0.0, 1.0)
    }

    #[test]
    fn deterministic() {
        let s = Settings::new(11, "r");
        assert_eq!(run(&s, 3000), run(&s, 3000));
        assert_ne!(run(&s, 40), run(&Settings::new(12, "r"), 40));
    }

    #[test]
    fn fields_and_ranges_follow_the_schema() {
        let events = run(&Settings::new(1, "f1-run"), 10_000);
        let mut ids = HashSet::new();
        let mut modes = HashSet::new();
        let mut segments = HashSet::new();
        let mut gears = HashSet::new();
        for (i, e) in events.iter().enumerate() {
            let v = json(e);
            let car = format!("CAR-{}", i % 4 + 1);
            let seq = (i / 4) as u64;
            assert_eq!(e.destination, Destination::F1Raw);
            assert_eq!(e.key, car);
            assert_eq!(v["car_id"], car.as_str());
            assert_eq!(v["seq"], seq);
            assert_eq!(v["lap"], seq / 50 % 60 + 1);
            let lap = v["lap"].as_u64().unwrap();
            assert!((1..=60).contains(&lap));
            let within = |k: &str, lo: f64, hi: f64| {
                let x = v[k].as_f64().unwrap();
                assert!((lo..=hi).contains(&x), "{k} = {x} at {i}");
            };
            within("speed_kph", 90.0, 320.0);
            within("throttle", 0.3, 1.0);
            within("brake", 0.0, 1.0);
            within("battery_soc", 0.35, 0.95);
            for k in [
                "tire_temp_fl",
                "tire_temp_fr",
                "tire_temp_rl",
                "tire_temp_rr",
            ] {
                within(k, 70.0, 105.0);
            }
            let gear = v["gear"].as_u64().unwrap();
            assert!((1..=8).contains(&gear));
            gears.insert(gear);
            modes.insert(v["ers_mode"].as_str().unwrap().to_string());
            let segment = v["track_segment"].as_str().unwrap();
            assert_eq!(segment, segment_at(seq).as_str());
            segments.insert(segment.to_string());
            assert_eq!(
                v["timestamp"],
                format_rfc3339_ms(T0 + i as i64 * 25).as_str()
            );
            assert_eq!(v["run_id"], "f1-run");
            assert!(v.get("duplicate").is_none());
            assert!(ids.insert((car, seq)));
            assert_eq!(v.as_object().unwrap().len(), 16);
        }
        assert_eq!(
            modes,
            HashSet::from(["deploy", "harvest", "balanced"].map(String::from))
        );
        assert_eq!(segments.len(), 3);
        assert!(gears.len() >= 6, "{gears:?}");
        // 2,500 samples per car: laps 1 to 50.
        assert_eq!(json(&events[9_999])["lap"], 50);
    }

    #[test]
    fn degradation_and_battery_vary_realistically() {
        let events = run(&Settings::new(2, "r"), 10_000);
        let mut per_car: HashMap<String, Vec<Value>> = HashMap::new();
        for e in &events {
            per_car.entry(e.key.clone()).or_default().push(json(e));
        }
        let (mut high, mut low, mut low_deploy) = (0, 0, 0);
        for (car, samples) in &per_car {
            let scores: Vec<f64> = samples.iter().map(score).collect();
            // Every car gets hot (an alert) and cools down again.
            assert!(scores.iter().any(|&s| s > 0.7), "{car} never above 0.7");
            assert!(scores.iter().any(|&s| s < 0.2), "{car} never cool");
            high += scores.iter().filter(|&&s| s > 0.7).count();
            low += scores.iter().filter(|&&s| s < 0.3).count();
            // Smoothly: a tyre moves at most a couple of degrees a sample.
            for pair in samples.windows(2) {
                for k in [
                    "tire_temp_fl",
                    "tire_temp_fr",
                    "tire_temp_rl",
                    "tire_temp_rr",
                ] {
                    let d = pair[1][k].as_f64().unwrap() - pair[0][k].as_f64().unwrap();
                    assert!(d.abs() < 2.0, "{car} {k} jumped {d}");
                }
            }
            let socs: Vec<f64> = samples
                .iter()
                .map(|v| v["battery_soc"].as_f64().unwrap())
                .collect();
            let (min, max) = socs
                .iter()
                .fold((1.0f64, 0.0f64), |(a, b), &s| (a.min(s), b.max(s)));
            assert!(min < 0.45 && max > 0.8, "{car} soc stays in {min}..{max}");
            low_deploy += samples
                .iter()
                .filter(|v| v["battery_soc"].as_f64().unwrap() < 0.4 && v["ers_mode"] == "deploy")
                .count();
        }
        // Alerts are a minority, but not rare.
        assert!(high > 100 && high < 3000, "{high} above 0.7");
        assert!(low > 1000, "{low} below 0.3");
        assert!(low_deploy > 0 && low_deploy < 1000, "{low_deploy}");
    }

    #[test]
    fn duplicate_marks_the_copy_and_keeps_the_key() {
        let mut g = F1::new(&Settings::new(1, "r"));
        for _ in 0..10 {
            let e = g.next(T0);
            let d = g.duplicate(&e);
            assert_eq!(d.key, e.key);
            assert_eq!(d.destination, e.destination);
            assert_eq!(d.headers, e.headers);
            let (mut v, w) = (json(&e), json(&d));
            assert_eq!(w["duplicate"], true);
            v.as_object_mut()
                .unwrap()
                .insert("duplicate".into(), Value::Bool(true));
            assert_eq!(v, w);
        }
    }
}
