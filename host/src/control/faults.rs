//! Seed 000's fault profile, applied live.

use serde::{Deserialize, Serialize};

use super::FieldError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultProfile {
    /// Sleep before each generated publish.
    pub latency_ms: u64,
    /// Share of generated events not published at all.
    pub drop_probability: f64,
    /// Share of generated events published twice (the copy marked
    /// `duplicate: true` where the scenario has the field).
    pub duplicate_ratio: f64,
    /// Sleep per consumed message in every stage (seed 002's
    /// `CONSUMER_THROTTLE_MS`).
    pub slow_consumer_ms: u64,
}

impl FaultProfile {
    pub fn validate(&self, prefix: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (name, v) in [
            ("drop_probability", self.drop_probability),
            ("duplicate_ratio", self.duplicate_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                errors.push(FieldError {
                    field: format!("{prefix}{name}"),
                    message: format!("must be between 0 and 1, got {v}"),
                });
            }
        }
        for (name, v) in [
            ("latency_ms", self.latency_ms),
            ("slow_consumer_ms", self.slow_consumer_ms),
        ] {
            if v > 60_000 {
                errors.push(FieldError {
                    field: format!("{prefix}{name}"),
                    message: format!("must be at most 60000, got {v}"),
                });
            }
        }
        errors
    }
}

/// xorshift64*, seeded: fault draws repeat from run to run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_fields_are_named() {
        let bad = FaultProfile {
            drop_probability: 1.5,
            duplicate_ratio: -0.1,
            latency_ms: 70_000,
            slow_consumer_ms: 0,
        };
        let fields: Vec<String> = bad
            .validate("fault.")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            vec![
                "fault.drop_probability",
                "fault.duplicate_ratio",
                "fault.latency_ms"
            ]
        );
        assert!(FaultProfile::default().validate("").is_empty());
    }

    #[test]
    fn draws_are_uniform_enough() {
        let mut rng = Rng::new(7);
        let hits = (0..10_000).filter(|_| rng.unit() < 0.2).count();
        assert!((1_800..2_200).contains(&hits), "{hits}");
    }
}
