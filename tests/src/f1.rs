//! The F1 Kafka demo's telemetry, generated deterministically, and its rules
//! restated independently of the plugins so tests can check them.

use serde_json::{Value, json};

pub const CARS: usize = 4;

/// A small deterministic generator (xorshift), so a failure reproduces.
pub struct Rng(pub u64);

impl Rng {
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

/// `n` telemetry messages over the ranges of `docs/schemas.md`, cars in turn, each car's
/// `seq` counting up. Returned as a JSON parser reads them back from their
/// text, since serde_json's float parsing does not round-trip every f64.
pub fn telemetry(n: usize, run_id: &str) -> Vec<Value> {
    let mut rng = Rng(0x5eed_f1f1);
    let modes = ["deploy", "harvest", "balanced"];
    let segments = ["straight", "chicane", "hairpin"];
    (0..n)
        .map(|i| {
            let car = i % CARS + 1;
            let seq = i / CARS;
            let t = json!({
                "car_id": format!("CAR-{car}"),
                "lap": seq / 50 % 60 + 1,
                "seq": seq,
                "speed_kph": rng.range(90.0, 320.0),
                "gear": 1 + (rng.unit() * 8.0) as u32 % 8,
                "throttle": rng.range(0.3, 1.0),
                "brake": rng.unit(),
                "tire_temp_fl": rng.range(70.0, 105.0),
                "tire_temp_fr": rng.range(70.0, 105.0),
                "tire_temp_rl": rng.range(70.0, 105.0),
                "tire_temp_rr": rng.range(70.0, 105.0),
                "battery_soc": rng.range(0.35, 0.95),
                "ers_mode": modes[(rng.unit() * 3.0) as usize % 3],
                "track_segment": segments[(rng.unit() * 3.0) as usize % 3],
                "timestamp": "2026-11-23T10:00:00Z",
                "run_id": run_id,
            });
            serde_json::from_str(&t.to_string()).unwrap()
        })
        .collect()
}

/// (car_id, seq): what identifies a telemetry message.
pub fn id(t: &Value) -> (String, u64) {
    (
        t["car_id"].as_str().unwrap().to_string(),
        t["seq"].as_u64().unwrap(),
    )
}

/// The degradation score and fault flags the formula of `docs/schemas.md` gives.
pub fn expected_score(t: &Value) -> (f64, Vec<&'static str>) {
    let temps = [
        "tire_temp_fl",
        "tire_temp_fr",
        "tire_temp_rl",
        "tire_temp_rr",
    ];
    let mean: f64 = temps.iter().map(|k| t[k].as_f64().unwrap()).sum::<f64>() / 4.0;
    let score = (((mean - 80.0) / 35.0).clamp(0.0, 1.0) * 1000.0).round() / 1000.0;
    let mut flags = Vec::new();
    if score > 0.65 {
        flags.push("tire_wear");
    }
    let soc = t["battery_soc"].as_f64().unwrap_or(0.5);
    if soc < 0.4 && t["ers_mode"] == "deploy" {
        flags.push("low_battery_on_deploy");
    }
    (score, flags)
}

/// The reasons an alert must name, empty when none fires.
pub fn expected_reasons(score: f64, flags: &[&'static str]) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    if score > 0.7 {
        reasons.push("degradation_high");
    }
    reasons.extend_from_slice(flags);
    reasons
}
