//! The events of the fleet-operations scenario, with the topic keys and
//! field names of its Kafka design. `docs/schemas.md` has the same in tables.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A frame of a vehicle's telemetry, on `raw_telemetry`, keyed by
/// `vehicle_id` (`{scene_id}_track_{track_id}` or `{scene_id}_ego`). Only the
/// fields the rules read are typed; the rest is ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RawTelemetry {
    pub event_id: String,
    pub vehicle_id: String,
    /// ISO 8601.
    pub event_time: String,
    pub frame_index: i64,
    pub telemetry: Telemetry,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Telemetry {
    pub velocity: Vector,
}

/// A velocity in m/s; `z` and `magnitude` may be present and are not used
/// (speed is the planar hypot(x, y)).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Vector {
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// A detected anomaly, on `anomalies`, keyed by `vehicle_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Derived from `event_id`: a redelivered frame yields the same id.
    pub anomaly_id: String,
    /// The frame that completed the anomaly.
    pub event_id: String,
    pub vehicle_id: String,
    pub event_time: String,
    /// The Kafka timestamp of the frame's record (plugins have no clock).
    pub processing_time: String,
    pub anomaly_type: String,
    pub severity: Severity,
    pub triggered_rule: String,
    pub features: Value,
    pub thresholds: Value,
    pub evidence: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Resolved,
    Dismissed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActionType {
    Acknowledge,
    Resolve,
    Dismiss,
    Intervene,
}

/// An operator's command, on `operator_actions`, keyed by `action_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorAction {
    pub action_id: String,
    pub alert_id: String,
    pub vehicle_id: String,
    pub operator_id: String,
    pub action_type: ActionType,
    #[serde(default)]
    pub processing_time: Option<String>,
    #[serde(default)]
    pub metadata: Value,
}

/// A state of an alert, on `operator_alerts`, keyed by `alert_id`: one
/// record per transition (and per intervention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorAlert {
    pub alert_id: String,
    pub anomaly_id: String,
    pub vehicle_id: String,
    /// The anomaly's event time.
    pub event_time: String,
    /// The Kafka timestamp of the record that caused this transition.
    pub processing_time: String,
    pub alert_status: AlertStatus,
    /// `None` when the alert opens.
    pub previous_status: Option<AlertStatus>,
    pub severity: Severity,
    pub anomaly_type: String,
    /// The operator who acknowledged the alert, once one has.
    pub assigned_operator_id: Option<String>,
    pub created_at: String,
    /// What caused this record: `None` for the opening anomaly.
    pub action_id: Option<String>,
    pub action_type: Option<ActionType>,
    pub operator_id: Option<String>,
    /// How many `INTERVENE` actions the alert has had.
    pub interventions: u32,
}

/// A stable id in UUID form from `parts`: the same input gives the same id
/// on every run, so a redelivery or replay repeats ids instead of minting
/// new ones. (A hash, not a registered UUID version.)
pub fn derived_id(parts: &[&str]) -> String {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x84222325_cbf29ce4;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            a = (a ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            b = (b ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3 ^ 0x9e37);
        }
    }
    let (a, b) = (fmix(a), fmix(b ^ a.rotate_left(17)));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The alert an anomaly opens: derived from its id, so the stage that
/// routes anomalies and the one that keeps alerts agree without talking.
pub fn alert_id_for(anomaly_id: &str) -> String {
    derived_id(&["alert", anomaly_id])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn derived_ids_are_stable_distinct_and_uuid_shaped() {
        let a = derived_id(&["sudden_deceleration", "evt-1"]);
        assert_eq!(a, derived_id(&["sudden_deceleration", "evt-1"]));
        assert_ne!(a, derived_id(&["sudden_deceleration", "evt-2"]));
        // Parts are delimited: ("ab", "c") is not ("a", "bc").
        assert_ne!(derived_id(&["ab", "c"]), derived_id(&["a", "bc"]));
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, vec![8, 4, 4, 4, 12]);
        assert!(a.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
    }

    #[test]
    fn reads_the_seed_examples() {
        let raw: RawTelemetry = serde_json::from_value(json!({
            "event_id": "e", "vehicle_id": "scene_123_track_456", "scene_id": "scene_123",
            "track_id": 456, "event_time": "2024-01-15T10:23:45.123Z",
            "processing_time": "2024-01-15T10:23:45.125Z", "frame_index": 42,
            "telemetry": {
                "position": {"x": 1.0, "y": 2.0, "z": 0.0},
                "velocity": {"x": 5.2, "y": 0.1, "z": 0.0, "magnitude": 5.2},
                "acceleration": {"x": -0.5, "y": 0.0, "z": 0.0, "magnitude": 0.5},
                "yaw": 1.23, "yaw_rate": 0.05, "label_probability": 0.95, "track_length": 120
            },
            "metadata": {"replay_session_id": "s", "replay_rate": 10.0}
        }))
        .unwrap();
        assert_eq!(raw.frame_index, 42);
        assert_eq!(raw.telemetry.velocity.x, 5.2);
        let action: OperatorAction = serde_json::from_value(json!({
            "action_id": "a", "alert_id": "al", "vehicle_id": "v", "operator_id": "operator_001",
            "action_type": "ACKNOWLEDGE", "processing_time": "2024-01-15T10:23:50.200Z",
            "metadata": {"comment": "Investigating anomaly"}
        }))
        .unwrap();
        assert_eq!(action.action_type, ActionType::Acknowledge);
    }
}
