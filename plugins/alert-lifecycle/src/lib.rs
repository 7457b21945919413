//! Operator alert lifecycle for fleet operations. Each anomaly
//! opens one alert; operator actions move it through
//! OPEN -> ACKNOWLEDGED -> RESOLVED or DISMISSED; every transition is
//! published to `operator_alerts`, keyed by `alert_id`.
//!
//! Anomalies arrive keyed by `vehicle_id` and actions by `action_id`, so the
//! two never meet in one partition. The plugin runs as two stages (README.md
//! explains the design): `role = "router"` re-keys both by `alert_id` into
//! an internal topic; `role = "lifecycle"` reads that topic and owns each
//! alert's state in the partition its id hashes to.

mod lifecycle;

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use weir_fleet_events::{
    ActionType, AlertStatus, Anomaly, OperatorAction, OperatorAlert, alert_id_for,
};
use weir_plugin::time::format_rfc3339_ms;
use weir_plugin::{Emitter, InitContext, Message, OutputId, Processor, export_processor};
use weir_plugin::{metrics, state};

pub use lifecycle::next_status;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Router,
    Lifecycle,
}

/// `[stage.config]`: which of the two stages this is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub role: Role,
    /// How long the lifecycle stage remembers an action id, to apply a
    /// re-sent action once, and a resolved or dismissed alert, to answer a
    /// late action on it (24 h by default). Open alerts are kept until they
    /// close. Memory grows with the action rate times this.
    #[serde(default = "default_dedup_ttl_ms")]
    pub dedup_ttl_ms: u64,
}

fn default_dedup_ttl_ms() -> u64 {
    24 * 3600 * 1000
}

/// What arrives: an anomaly (it has `anomaly_id` and no `action_id`) or an
/// operator action.
enum Input {
    Anomaly(Anomaly),
    Action(OperatorAction),
}

fn read(msg: &Message<'_>) -> Result<Input, String> {
    let value: Value = msg.json()?;
    if value.get("action_id").is_some() {
        serde_json::from_value(value)
            .map(Input::Action)
            .map_err(|e| format!("not an operator action: {e}"))
    } else if value.get("anomaly_id").is_some() {
        serde_json::from_value(value)
            .map(Input::Anomaly)
            .map_err(|e| format!("not an anomaly: {e}"))
    } else {
        Err("neither an anomaly (anomaly_id) nor an operator action (action_id)".into())
    }
}

fn alert_key(alert_id: &str) -> Vec<u8> {
    format!("alert/{alert_id}").into_bytes()
}

fn action_key(action_id: &str) -> Vec<u8> {
    format!("action/{action_id}").into_bytes()
}

/// The wire name of a status or an action type (`ACKNOWLEDGED`, ...).
fn wire_name<T: serde::Serialize>(s: T) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub struct AlertLifecycle {
    out: OutputId,
    role: Role,
    dedup_ttl: Duration,
}

impl AlertLifecycle {
    fn route(&self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        let alert_id = match read(msg)? {
            Input::Anomaly(a) => alert_id_for(&a.anomaly_id),
            Input::Action(a) => a.alert_id,
        };
        out.forward(self.out, msg).key(alert_id.as_bytes());
        Ok(())
    }

    fn open(&self, a: Anomaly, at: String, out: &mut Emitter<'_>) -> Result<(), String> {
        let alert_id = alert_id_for(&a.anomaly_id);
        let key = alert_key(&alert_id);
        // One alert per anomaly: a redelivered anomaly finds it open.
        if state::get(&key).is_some() {
            metrics::counter_add("duplicate_anomalies", &[], 1);
            return Ok(());
        }
        let alert = OperatorAlert {
            alert_id,
            anomaly_id: a.anomaly_id,
            vehicle_id: a.vehicle_id,
            event_time: a.event_time,
            processing_time: at.clone(),
            alert_status: AlertStatus::Open,
            previous_status: None,
            severity: a.severity,
            anomaly_type: a.anomaly_type,
            assigned_operator_id: None,
            created_at: at,
            action_id: None,
            action_type: None,
            operator_id: None,
            interventions: 0,
        };
        self.publish(&alert, out)
    }

    fn act(&self, a: OperatorAction, at: String, out: &mut Emitter<'_>) -> Result<(), String> {
        let done = action_key(&a.action_id);
        if state::get(&done).is_some() {
            metrics::counter_add("duplicate_actions", &[], 1);
            return Ok(());
        }
        let Some(current) = state::get(&alert_key(&a.alert_id))
            .and_then(|v| serde_json::from_slice::<OperatorAlert>(&v).ok())
        else {
            return Err(format!("unknown_alert: no alert {}", a.alert_id));
        };
        if current.vehicle_id != a.vehicle_id {
            return Err(format!(
                "vehicle_mismatch: alert {} is for {}, the action names {}",
                a.alert_id, current.vehicle_id, a.vehicle_id
            ));
        }
        let Some(status) = next_status(a.action_type, current.alert_status) else {
            return Err(format!(
                "invalid_transition: {} is not allowed from {}",
                wire_name(a.action_type),
                wire_name(current.alert_status)
            ));
        };
        let mut next = current.clone();
        next.previous_status = Some(current.alert_status);
        next.alert_status = status;
        next.processing_time = at;
        next.action_type = Some(a.action_type);
        next.action_id = Some(a.action_id);
        next.operator_id = Some(a.operator_id.clone());
        match a.action_type {
            ActionType::Acknowledge => next.assigned_operator_id = Some(a.operator_id),
            ActionType::Intervene => next.interventions += 1,
            ActionType::Resolve | ActionType::Dismiss => {}
        }
        state::set_with_ttl(&done, &[], self.dedup_ttl);
        self.publish(&next, out)
    }

    fn publish(&self, alert: &OperatorAlert, out: &mut Emitter<'_>) -> Result<(), String> {
        let bytes = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
        let key = alert_key(&alert.alert_id);
        match alert.alert_status {
            AlertStatus::Open | AlertStatus::Acknowledged => state::set(&key, &bytes),
            AlertStatus::Resolved | AlertStatus::Dismissed => {
                state::set_with_ttl(&key, &bytes, self.dedup_ttl)
            }
        }
        metrics::counter_add(
            "alert_transitions",
            &[("status", &wire_name(alert.alert_status))],
            1,
        );
        out.emit(self.out, &bytes).key(alert.alert_id.as_bytes());
        Ok(())
    }
}

impl Processor for AlertLifecycle {
    fn init(ctx: &InitContext) -> Result<Self, String> {
        let config: Config = ctx.config()?;
        if config.dedup_ttl_ms == 0 {
            return Err("dedup_ttl_ms must be greater than 0".into());
        }
        Ok(AlertLifecycle {
            out: ctx.output("default")?,
            role: config.role,
            dedup_ttl: Duration::from_millis(config.dedup_ttl_ms),
        })
    }

    fn process(&mut self, msg: &Message<'_>, out: &mut Emitter<'_>) -> Result<(), String> {
        if self.role == Role::Router {
            return self.route(msg, out);
        }
        // No clock in the sandbox: a transition is timed by its record.
        let at = msg
            .timestamp_ms()
            .map(format_rfc3339_ms)
            .unwrap_or_default();
        match read(msg)? {
            Input::Anomaly(a) => self.open(a, at, out),
            Input::Action(a) => self.act(a, at, out),
        }
    }
}

export_processor!(AlertLifecycle);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weir_plugin::testing::{Harness, TestMessage, counter};

    fn anomaly(id: &str, vehicle: &str) -> TestMessage {
        TestMessage::json(&json!({
            "anomaly_id": id, "event_id": "e", "vehicle_id": vehicle,
            "event_time": "2024-01-15T10:23:45.123Z", "processing_time": "2024-01-15T10:23:45.130Z",
            "anomaly_type": "sudden_deceleration", "severity": "CRITICAL",
            "triggered_rule": "critical_decel_threshold_exceeded",
            "features": {}, "thresholds": {}, "evidence": {}
        }))
        .key(vehicle)
        .timestamp(1_705_314_226_000)
    }

    fn action(id: &str, alert: &str, vehicle: &str, kind: &str) -> TestMessage {
        TestMessage::json(&json!({
            "action_id": id, "alert_id": alert, "vehicle_id": vehicle,
            "operator_id": "operator_001", "action_type": kind
        }))
        .key(id)
    }

    fn lifecycle() -> Harness<AlertLifecycle> {
        Harness::<AlertLifecycle>::new(&["default"], json!({"role": "lifecycle"})).unwrap()
    }

    fn one(h: &mut Harness<AlertLifecycle>, m: TestMessage) -> Result<Value, String> {
        let out = h.process_one(m)?;
        assert_eq!(out.len(), 1, "{out:?}");
        Ok(out[0].json())
    }

    #[test]
    fn the_router_keys_both_inputs_by_alert_id() {
        let mut h =
            Harness::<AlertLifecycle>::new(&["default"], json!({"role": "router"})).unwrap();
        let out = h.process_one(anomaly("an-1", "v1")).unwrap();
        assert_eq!(out[0].key.as_deref(), Some(alert_id_for("an-1").as_bytes()));
        let out = h
            .process_one(action("ac-1", "al-9", "v1", "RESOLVE"))
            .unwrap();
        assert_eq!(out[0].key.as_deref(), Some(&b"al-9"[..]));
        assert!(h.process_one(TestMessage::json(&json!({"x": 1}))).is_err());
    }

    #[test]
    fn open_acknowledge_resolve() {
        let mut h = lifecycle();
        let alert_id = alert_id_for("an-1");
        let opened = one(&mut h, anomaly("an-1", "v1")).unwrap();
        assert_eq!(opened["alert_status"], "OPEN");
        assert_eq!(opened["previous_status"], Value::Null);
        assert_eq!(opened["alert_id"], alert_id);
        assert_eq!(opened["severity"], "CRITICAL");
        assert_eq!(opened["created_at"], "2024-01-15T10:23:46.000Z");
        // Opening is idempotent by anomaly id.
        assert!(h.process_one(anomaly("an-1", "v1")).unwrap().is_empty());
        assert_eq!(counter("duplicate_anomalies", &[]), 1);

        let ack = one(&mut h, action("ac-1", &alert_id, "v1", "ACKNOWLEDGE")).unwrap();
        assert_eq!(ack["alert_status"], "ACKNOWLEDGED");
        assert_eq!(ack["previous_status"], "OPEN");
        assert_eq!(ack["assigned_operator_id"], "operator_001");
        let hands_on = one(&mut h, action("ac-2", &alert_id, "v1", "INTERVENE")).unwrap();
        assert_eq!(hands_on["alert_status"], "ACKNOWLEDGED");
        assert_eq!(hands_on["interventions"], 1);
        // A redelivered action is not applied twice.
        assert!(
            h.process_one(action("ac-2", &alert_id, "v1", "INTERVENE"))
                .unwrap()
                .is_empty()
        );
        // A new instance reads the alert from state.
        let mut again = lifecycle();
        let resolved = one(&mut again, action("ac-3", &alert_id, "v1", "RESOLVE")).unwrap();
        assert_eq!(resolved["alert_status"], "RESOLVED");
        assert_eq!(resolved["previous_status"], "ACKNOWLEDGED");
        assert_eq!(resolved["interventions"], 1);
    }

    #[test]
    fn closed_alerts_and_action_ids_expire_and_open_alerts_do_not() {
        use weir_plugin::testing::advance_clock;
        let config = json!({"role": "lifecycle", "dedup_ttl_ms": 1000});
        let mut h = Harness::<AlertLifecycle>::new(&["default"], config).unwrap();
        let open_id = alert_id_for("an-open");
        let closed_id = alert_id_for("an-closed");
        one(&mut h, anomaly("an-open", "v1")).unwrap();
        one(&mut h, anomaly("an-closed", "v2")).unwrap();
        one(&mut h, action("x1", &open_id, "v1", "ACKNOWLEDGE")).unwrap();
        one(&mut h, action("x2", &closed_id, "v2", "RESOLVE")).unwrap();
        advance_clock(Duration::from_millis(999));
        let err = h
            .process_one(action("x3", &closed_id, "v2", "ACKNOWLEDGE"))
            .unwrap_err();
        assert!(err.starts_with("invalid_transition:"), "{err}");
        assert!(
            h.process_one(action("x1", &open_id, "v1", "ACKNOWLEDGE"))
                .unwrap()
                .is_empty(),
            "a re-sent action within the window is applied once"
        );

        advance_clock(Duration::from_secs(3600));
        let err = h
            .process_one(action("x4", &closed_id, "v2", "ACKNOWLEDGE"))
            .unwrap_err();
        assert!(err.starts_with("unknown_alert:"), "{err}");
        let hands_on = one(&mut h, action("x5", &open_id, "v1", "INTERVENE")).unwrap();
        assert_eq!(hands_on["alert_status"], "ACKNOWLEDGED");
        assert!(
            Harness::<AlertLifecycle>::new(
                &["default"],
                json!({"role": "lifecycle", "dedup_ttl_ms": 0})
            )
            .is_err()
        );
    }

    #[test]
    fn bad_actions_are_rejected_with_the_reason() {
        let mut h = lifecycle();
        let alert_id = alert_id_for("an-2");
        one(&mut h, anomaly("an-2", "v2")).unwrap();
        let err = h
            .process_one(action("b1", "nope", "v2", "ACKNOWLEDGE"))
            .unwrap_err();
        assert!(err.starts_with("unknown_alert:"), "{err}");
        let err = h
            .process_one(action("b2", &alert_id, "v3", "ACKNOWLEDGE"))
            .unwrap_err();
        assert!(err.starts_with("vehicle_mismatch:"), "{err}");
        one(&mut h, action("b3", &alert_id, "v2", "DISMISS")).unwrap();
        let err = h
            .process_one(action("b4", &alert_id, "v2", "ACKNOWLEDGE"))
            .unwrap_err();
        assert_eq!(
            err,
            "invalid_transition: ACKNOWLEDGE is not allowed from DISMISSED"
        );
    }
}
