//! The F1 Kafka demo's fault profile, applied live.

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use weir_config::request::{self as de, FieldError};

// `remote = "Self"` turns the derives into inherent functions, which the
// trait impls below wrap: reading must refuse what the derive accepts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, default)]
pub struct FaultProfile {
    /// Sleep before each generated publish.
    #[serde(deserialize_with = "de::whole")]
    pub latency_ms: u64,
    /// Share of generated events not published at all.
    pub drop_probability: f64,
    /// Share of generated events published twice (the copy marked
    /// `duplicate: true` where the scenario has the field).
    pub duplicate_ratio: f64,
    /// Sleep per consumed message in every stage (the campus food-ordering
    /// service's `CONSUMER_THROTTLE_MS`).
    #[serde(deserialize_with = "de::whole")]
    pub slow_consumer_ms: u64,
}

impl Serialize for FaultProfile {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        FaultProfile::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for FaultProfile {
    /// An object only: the derive alone also reads a struct from an array
    /// (`[]` would mean "all off"), which the document does not allow.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = FaultProfile;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of fault settings")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FaultProfile, A::Error> {
                FaultProfile::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Object)
    }
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
    fn only_an_object_is_a_fault_profile() {
        let parse = |json: &str| serde_json::from_str::<FaultProfile>(json);
        let p = parse(r#"{"latency_ms": 97.0, "duplicate_ratio": 0.5}"#).unwrap();
        assert_eq!((p.latency_ms, p.duplicate_ratio), (97, 0.5));
        assert_eq!(parse("{}").unwrap(), FaultProfile::default());
        for bad in [
            "[]",
            "[1, 0.5, 0.5, 1]",
            "null",
            r#"{"latency_ms": 1.5}"#,
            r#"{"x": 1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
        let p = FaultProfile {
            slow_consumer_ms: 5,
            ..FaultProfile::default()
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["slow_consumer_ms"], 5);
        assert_eq!(serde_json::from_value::<FaultProfile>(json).unwrap(), p);
    }

    #[test]
    fn draws_are_uniform_enough() {
        let mut rng = Rng::new(7);
        let hits = (0..10_000).filter(|_| rng.unit() < 0.2).count();
        assert!((1_800..2_200).contains(&hits), "{hits}");
    }
}
