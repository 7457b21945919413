//! Run control: starting and stopping scenario runs (and the stages with
//! them), fault injection, and producing scenario events on demand.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use weir_config::request::{self as de, FieldError, Object};
use weir_scenarios::control::{FaultProfile, RunControl, StartRequest, parse_scenario};
use weir_scenarios::generate::Scenario;

use crate::extract::{Body, invalid};
use crate::{AdminState, AppError};

fn control(state: &AdminState) -> Result<&RunControl, AppError> {
    state
        .inner
        .control
        .as_ref()
        .ok_or_else(|| AppError::Unavailable("run control is not available".into()))
}

pub async fn start(
    State(state): State<AdminState>,
    Body(req): Body<StartRequest>,
) -> Result<Json<Value>, AppError> {
    let errors = req.validate();
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    control(&state)?
        .start(&req)
        .map_err(AppError::Unprocessable)?;
    Ok(Json(crate::full_status(&state)))
}

pub async fn stop(State(state): State<AdminState>) -> Result<Json<Value>, AppError> {
    let was_generating = control(&state)?.stop();
    Ok(Json(json!({
        "running": false,
        "message": if was_generating {
            "generator stopped; stages paused with their offsets committed"
        } else {
            "stages paused with their offsets committed; no generator was running"
        },
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    pub fault: FaultProfile,
}

pub async fn fault(
    State(state): State<AdminState>,
    Body(req): Body<FaultRequest>,
) -> Result<Json<Value>, AppError> {
    let errors = req.fault.validate("fault.");
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    control(&state)?.set_fault(req.fault);
    Ok(Json(crate::full_status(&state)))
}

// Every field may be left out, none may be `null`: the document says so,
// and `null` meaning "default" would be a second way to say it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceRequest {
    #[serde(rename = "orderId", default, deserialize_with = "de::present")]
    pub order_id: Option<String>,
    #[serde(default, deserialize_with = "de::present")]
    pub items: Option<Vec<Map<String, Value>>>,
    /// Defaults to the current run's scenario, else `orders`.
    #[serde(default, deserialize_with = "de::present")]
    pub scenario: Option<String>,
}

fn scenario_of(name: Option<&str>, control: &RunControl) -> Result<Scenario, AppError> {
    match name {
        None => Ok(control.scenario().unwrap_or(Scenario::Orders)),
        Some(name) => match parse_scenario(name) {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(AppError::Invalid(vec![FieldError {
                field: "scenario".into(),
                message: "\"none\" produces nothing".into(),
            }])),
            Err(message) => Err(AppError::Invalid(vec![FieldError {
                field: "scenario".into(),
                message,
            }])),
        },
    }
}

pub async fn produce(
    State(state): State<AdminState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AppError> {
    // The body is optional: the campus food-ordering service's `/produce`
    // took an empty one.
    let req: ProduceRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ProduceRequest::default()
    } else {
        Json::<Object<ProduceRequest>>::from_bytes(&body)
            .map(|Json(Object(req))| req)
            .map_err(|rejection| invalid(rejection.body_text(), "body"))?
    };
    let items = req
        .items
        .map(|items| Value::Array(items.into_iter().map(Value::Object).collect()));
    let control = control(&state)?;
    let scenario = scenario_of(req.scenario.as_deref(), control)?;
    let event = control
        .produce_one(scenario, req.order_id, items)
        .await
        .map_err(AppError::Internal)?;
    Ok(Json(json!({
        "topic": control.topic(event.destination),
        "key": event.key,
        "event": event.json(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadTestRequest {
    #[serde(default = "default_count", deserialize_with = "de::whole")]
    pub count: u64,
    #[serde(default, deserialize_with = "de::present")]
    pub scenario: Option<String>,
}

fn default_count() -> u64 {
    10_000
}

/// The most one load test may produce.
pub const MAX_LOAD_TEST: u64 = 10_000_000;

#[derive(Debug, Serialize)]
pub struct LoadTestResult {
    pub produced: u64,
    pub remaining_in_queue: u64,
    pub elapsed_ms: u64,
}

pub async fn load_test(
    State(state): State<AdminState>,
    Body(req): Body<LoadTestRequest>,
) -> Result<Json<LoadTestResult>, AppError> {
    if req.count == 0 || req.count > MAX_LOAD_TEST {
        return Err(AppError::Invalid(vec![FieldError {
            field: "count".into(),
            message: format!("must be between 1 and {MAX_LOAD_TEST}, got {}", req.count),
        }]));
    }
    let control = control(&state)?;
    let scenario = scenario_of(req.scenario.as_deref().or(Some("orders")), control)?;
    let (produced, elapsed_ms) = control
        .load_test(scenario, req.count)
        .await
        .map_err(AppError::Internal)?;
    Ok(Json(LoadTestResult {
        produced,
        remaining_in_queue: req.count.saturating_sub(produced),
        elapsed_ms,
    }))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::tests::{fields, send_json as send};

    // The test state has no run control: a body that gets past parsing
    // and validation is answered 503, one that does not is answered 422.

    #[tokio::test]
    async fn null_is_refused_where_the_document_does_not_allow_it() {
        for (uri, body, field) in [
            (
                "/api/v1/start",
                r#"{"rate_per_sec": 1, "scenario": "f1", "fault": null}"#,
                "fault",
            ),
            ("/api/v1/load-test", r#"{"scenario": null}"#, "scenario"),
            ("/api/v1/produce", r#"{"orderId": null}"#, "orderId"),
            ("/api/v1/produce", r#"{"items": null}"#, "items"),
            ("/api/v1/produce", r#"{"scenario": null}"#, "scenario"),
            ("/api/v1/fault", r#"{"fault": null}"#, "fault"),
        ] {
            let (code, json) = send("POST", uri, body).await;
            assert_eq!(
                code,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{uri} {body}: {json}"
            );
            assert_eq!(fields(&json), vec![field], "{uri} {body}: {json}");
        }
        // Where the document allows null, it still means "default".
        let (code, json) = send(
            "POST",
            "/api/v1/start",
            r#"{"rate_per_sec": 1, "scenario": "f1", "max_messages": null,
                "bootstrap_servers": null, "topic_prefix": null}"#,
        )
        .await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    }

    #[tokio::test]
    async fn the_orders_skus_are_checked_one_by_one() {
        let long = "x".repeat(65);
        for (skus, named) in [
            ("[]".to_string(), vec!["skus"]),
            (
                format!(r#"["taco", "", "{long}"]"#),
                vec!["skus[1]", "skus[2]"],
            ),
        ] {
            let body = format!(r#"{{"rate_per_sec": 1, "scenario": "orders", "skus": {skus}}}"#);
            let (code, json) = send("POST", "/api/v1/start", &body).await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {json}");
            assert_eq!(fields(&json), named, "{body}: {json}");
        }
        // 64 characters, not bytes, as the document's maxLength counts.
        let body = format!(
            r#"{{"rate_per_sec": 1, "scenario": "orders", "skus": ["taco", "{}"]}}"#,
            "é".repeat(64)
        );
        let (code, json) = send("POST", "/api/v1/start", &body).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}: {json}");
    }

    #[tokio::test]
    async fn arrays_are_not_objects() {
        for (uri, body, field) in [
            ("/api/v1/fault", r#"{"fault": []}"#, "fault"),
            ("/api/v1/fault", r#"{"fault": [0, 0.5, 0.5, 0]}"#, "fault"),
            (
                "/api/v1/start",
                r#"{"rate_per_sec": 1, "scenario": "f1", "fault": []}"#,
                "fault",
            ),
            ("/api/v1/load-test", "[]", "body"),
            ("/api/v1/start", r#"[1, "f1"]"#, "body"),
            ("/api/v1/replay", r#"["degradation"]"#, "body"),
            ("/api/v1/produce", "[]", "body"),
            (
                "/api/v1/produce",
                r#"{"items": [[null, null]]}"#,
                "items[0]",
            ),
            ("/api/v1/produce", r#"{"items": {"sku": "x"}}"#, "items"),
        ] {
            let (code, json) = send("POST", uri, body).await;
            assert_eq!(
                code,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{uri} {body}: {json}"
            );
            assert_eq!(fields(&json), vec![field], "{uri} {body}: {json}");
        }
    }

    #[tokio::test]
    async fn integral_floats_are_integers() {
        for (uri, body) in [
            ("/api/v1/load-test", r#"{"count": 97.0}"#),
            (
                "/api/v1/start",
                r#"{"rate_per_sec": 97.0, "scenario": "f1", "max_messages": 146973.0,
                    "fault": {"latency_ms": 5.0, "slow_consumer_ms": 0.0}}"#,
            ),
            ("/api/v1/fault", r#"{"fault": {"latency_ms": 97.0}}"#),
        ] {
            let (code, json) = send("POST", uri, body).await;
            assert_eq!(
                code,
                StatusCode::SERVICE_UNAVAILABLE,
                "{uri} {body}: {json}"
            );
        }
        let (code, json) = send("POST", "/api/v1/load-test", r#"{"count": 97.5}"#).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
        assert_eq!(fields(&json), vec!["count"]);
        // The document's maximum for max_messages, and one past it.
        for (max, code) in [
            ("9007199254740991", StatusCode::SERVICE_UNAVAILABLE),
            ("9007199254740991.0", StatusCode::SERVICE_UNAVAILABLE),
            ("9007199254740992", StatusCode::UNPROCESSABLE_ENTITY),
        ] {
            let body = format!(r#"{{"rate_per_sec": 1, "scenario": "f1", "max_messages": {max}}}"#);
            let (got, json) = send("POST", "/api/v1/start", &body).await;
            assert_eq!(got, code, "{body}: {json}");
        }
    }
}
