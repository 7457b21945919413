//! F1 alerts: raises an alert for scored telemetry whose
//! `degradation_score` is above the threshold or that carries any fault flag.
//! Unlike the F1 Kafka demo, which reported a single `degradation_high`, an alert's
//! `reasons` names every trigger that fired.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_plugin::{Emitter, InitContext, Message, OutputId, Processor, export_processor};

/// `[stage.config]` of the alerts stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Scores above this raise `degradation_high`.
    pub degradation_threshold: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            degradation_threshold: 0.7,
        }
    }
}

/// Scored telemetry, as the degradation stage emits it.
#[derive(Debug, Deserialize)]
pub struct Analytics {
    pub car_id: String,
    pub degradation_score: f64,
    #[serde(default)]
    pub fault_flags: Vec<String>,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub lap: Option<Value>,
    #[serde(default)]
    pub seq: Option<Value>,
    #[serde(default)]
    pub battery_soc: Option<f64>,
    #[serde(default)]
    pub ers_mode: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Alert {
    pub run_id: Option<String>,
    pub car_id: String,
    pub lap: Option<Value>,
    pub seq: Option<Value>,
    pub degradation_score: f64,
    pub battery_soc: Option<f64>,
    pub ers_mode: Option<String>,
    pub timestamp: Option<String>,
    pub reasons: Vec<String>,
}

pub const DEGRADATION_HIGH: &str = "degradation_high";

/// The alert for a scored record, if any trigger fires.
pub fn evaluate(a: Analytics, config: &Config) -> Option<Alert> {
    let mut reasons = Vec::new();
    if a.degradation_score > config.degradation_threshold {
        reasons.push(DEGRADATION_HIGH.to_string());
    }
    reasons.extend(a.fault_flags);
    if reasons.is_empty() {
        return None;
    }
    Some(Alert {
        run_id: a.run_id,
        car_id: a.car_id,
        lap: a.lap,
        seq: a.seq,
        degradation_score: a.degradation_score,
        battery_soc: a.battery_soc,
        ers_mode: a.ers_mode,
        timestamp: a.timestamp,
        reasons,
    })
}

pub struct Alerts {
    out: OutputId,
    config: Config,
}

impl Processor for Alerts {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        Ok(Alerts {
            out: ctx.output("default")?,
            config: ctx.config()?,
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        let analytics: Analytics = msg.json()?;
        if let Some(alert) = evaluate(analytics, &self.config) {
            out.emit_json(self.out, &alert)?;
        }
        Ok(())
    }
}

export_processor!(Alerts);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weir_plugin::testing::{Harness, TestMessage};

    fn scored(score: f64, flags: &[&str]) -> TestMessage {
        TestMessage::json(&json!({
            "car_id": "CAR-3", "lap": 12, "seq": 99, "run_id": "r1",
            "degradation_score": score, "fault_flags": flags,
            "battery_soc": 0.38, "ers_mode": "deploy", "timestamp": "2026-11-23T10:00:00Z"
        }))
        .key("CAR-3")
    }

    #[test]
    fn alerts_name_every_trigger() {
        let mut h = Harness::<Alerts>::new(&["default"], json!({})).unwrap();
        let out = h
            .process_one(scored(0.8, &["tire_wear", "low_battery_on_deploy"]))
            .unwrap();
        assert_eq!(out.len(), 1);
        let alert = out[0].json();
        assert_eq!(
            alert["reasons"],
            json!(["degradation_high", "tire_wear", "low_battery_on_deploy"])
        );
        assert_eq!(alert["car_id"], "CAR-3");
        assert_eq!(alert["run_id"], "r1");
        assert_eq!(alert["lap"], 12);
        assert_eq!(alert["seq"], 99);
        assert_eq!(alert["battery_soc"], 0.38);
        // The alert keeps the car's key, so alerts stay in order per car.
        assert_eq!(out[0].key, None);
    }

    #[test]
    fn battery_flag_alone_alerts() {
        let mut h = Harness::<Alerts>::new(&["default"], json!({})).unwrap();
        let out = h
            .process_one(scored(0.2, &["low_battery_on_deploy"]))
            .unwrap();
        assert_eq!(out[0].json()["reasons"], json!(["low_battery_on_deploy"]));
    }

    #[test]
    fn no_trigger_no_alert() {
        let mut h = Harness::<Alerts>::new(&["default"], json!({})).unwrap();
        assert!(h.process_one(scored(0.7, &[])).unwrap().is_empty());
    }

    #[test]
    fn threshold_is_configurable_and_bad_input_rejected() {
        let mut h =
            Harness::<Alerts>::new(&["default"], json!({"degradation_threshold": 0.5})).unwrap();
        let out = h.process(&[
            scored(0.6, &[]),
            TestMessage::new("{}"),
            TestMessage::new("x"),
        ]);
        assert_eq!(out[0].as_ref().unwrap().len(), 1);
        assert!(
            out[1]
                .as_ref()
                .unwrap_err()
                .contains("missing field `car_id`")
        );
        assert!(out[2].as_ref().unwrap_err().contains("invalid JSON"));
        assert!(Harness::<Alerts>::new(&["default"], json!({"nope": 1})).is_err());
    }
}
