//! Raw F1 telemetry as the scenario generator produces it: the
//! input of every rung.

use std::time::{SystemTime, UNIX_EPOCH};

pub const CARS: [&str; 4] = ["CAR-1", "CAR-2", "CAR-3", "CAR-4"];
const ERS: [&str; 3] = ["deploy", "harvest", "balanced"];
const SEGMENTS: [&str; 3] = ["straight", "chicane", "hairpin"];

/// A deterministic stream of telemetry messages, keyed by car.
pub struct Generator {
    rng: fastrand::Rng,
    seq: [u64; 4],
    run_id: String,
}

impl Generator {
    pub fn new(seed: u64, run_id: &str) -> Self {
        Generator {
            rng: fastrand::Rng::with_seed(seed),
            seq: [0; 4],
            run_id: run_id.to_string(),
        }
    }

    /// The next message: (key, JSON value). Values are 300-340 bytes.
    pub fn next_message(&mut self, out: &mut Vec<u8>) -> &'static str {
        use std::io::Write;
        let car = self.rng.usize(..CARS.len());
        self.seq[car] += 1;
        let r = &mut self.rng;
        let mut f = |lo: f64, hi: f64| lo + r.f64() * (hi - lo);
        let (speed, throttle, brake) = (f(90.0, 320.0), f(0.3, 1.0), f(0.0, 1.0));
        let temps = [
            f(70.0, 105.0),
            f(70.0, 105.0),
            f(70.0, 105.0),
            f(70.0, 105.0),
        ];
        let soc = f(0.35, 0.95);
        let lap = 1 + self.rng.u32(..60);
        let gear = 1 + self.rng.u32(..8);
        let ers = ERS[self.rng.usize(..3)];
        let segment = SEGMENTS[self.rng.usize(..3)];
        out.clear();
        write!(
            out,
            r#"{{"car_id":"{}","lap":{lap},"seq":{},"speed_kph":{speed:.1},"gear":{gear},"throttle":{throttle:.3},"brake":{brake:.3},"tire_temp_fl":{:.2},"tire_temp_fr":{:.2},"tire_temp_rl":{:.2},"tire_temp_rr":{:.2},"battery_soc":{soc:.3},"ers_mode":"{ers}","track_segment":"{segment}","timestamp":"{}","run_id":"{}"}}"#,
            CARS[car],
            self.seq[car],
            temps[0],
            temps[1],
            temps[2],
            temps[3],
            iso8601_now(),
            self.run_id,
        )
        .expect("writing to a Vec cannot fail");
        CARS[car]
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn iso8601_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_valid_telemetry_of_the_benchmark_size() {
        let mut g = Generator::new(7, "bench-0");
        let mut buf = Vec::new();
        for _ in 0..1000 {
            g.next_message(&mut buf);
            assert!((200..=400).contains(&buf.len()), "{} bytes", buf.len());
            let scored =
                weir_f1_degradation::enrich(&buf, &weir_f1_degradation::Config::default()).unwrap();
            assert!((0.0..=1.0).contains(&scored.degradation_score));
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
    }
}
