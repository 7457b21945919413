//! Run control, load, state and Prometheus endpoints.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AdminState, AppError};
use crate::control::{FaultProfile, FieldError, RunControl, StartRequest, parse_scenario};
use crate::generate::Scenario;
use crate::state::Scope;
use crate::topology::replay::{ReplayError, ReplayOutcome};

/// `Json<T>`, but a body that does not parse gets 422 naming what is wrong.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(AppError::Invalid(vec![FieldError {
                field: field_of(&rejection),
                message: rejection.body_text(),
            }])),
        }
    }
}

/// The field serde names in its message (`missing field `x``, `unknown
/// field `x``), or the path axum puts before it (`fault.latency_ms: invalid
/// type ...`), else `body`.
fn field_of(rejection: &JsonRejection) -> String {
    field_in(&rejection.body_text())
}

fn field_in(text: &str) -> String {
    const PREFIX: &str = "Failed to deserialize the JSON body into the target type: ";
    let detail = text.strip_prefix(PREFIX).unwrap_or(text);
    let named = detail
        .split('`')
        .nth(1)
        .filter(|_| detail.starts_with("missing field `") || detail.starts_with("unknown field `"));
    if let Some(name) = named {
        return name.to_string();
    }
    match detail.split_once(": ") {
        Some((path, _)) if !path.is_empty() && !path.contains(' ') && path != "." => {
            path.to_string()
        }
        _ => "body".to_string(),
    }
}

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
    Ok(Json(super::full_status(&state)))
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
    Ok(Json(super::full_status(&state)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceRequest {
    #[serde(rename = "orderId", default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub items: Option<Value>,
    /// Defaults to the current run's scenario, else `orders`.
    #[serde(default)]
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
    // The body is optional: seed 002's `/produce` took an empty one.
    let req: ProduceRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ProduceRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            let message = e.to_string();
            AppError::Invalid(vec![FieldError {
                field: field_in(&message),
                message,
            }])
        })?
    };
    let control = control(&state)?;
    let scenario = scenario_of(req.scenario.as_deref(), control)?;
    let event = control
        .produce_one(scenario, req.order_id, req.items)
        .await
        .map_err(AppError::Internal)?;
    let value: Value = serde_json::from_slice(&event.value).unwrap_or(Value::Null);
    Ok(Json(json!({
        "topic": control.topic(event.destination),
        "key": event.key,
        "event": value,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadTestRequest {
    #[serde(default = "default_count")]
    pub count: u64,
    #[serde(default)]
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

#[derive(Debug, Deserialize)]
pub struct StateQuery {
    pub partition: Option<i32>,
}

/// A stage's keyed state under `key`, in each partition that has it (or
/// the one asked for). This process serves the partitions its stages are
/// assigned, and says which; with several weir processes in a group, each
/// serves its own, as Kafka Streams' interactive queries do.
pub async fn state_value(
    State(state): State<AdminState>,
    Path((stage, key)): Path<(String, String)>,
    Query(q): Query<StateQuery>,
) -> Result<Json<Value>, AppError> {
    if !state.stages().iter().any(|s| s.name == stage) {
        return Err(AppError::NotFound(format!("no stage named {stage:?}")));
    }
    let store = state
        .inner
        .state
        .as_ref()
        .ok_or_else(|| AppError::Unavailable("state is not available".into()))?;
    let partitions = match q.partition {
        Some(p) => vec![p],
        None => store.partitions(&stage),
    };
    let mut found = Vec::new();
    for partition in partitions {
        let scope = Scope {
            stage: stage.as_str().into(),
            partition,
        };
        if let Some(bytes) = store.get(&scope, key.as_bytes()) {
            found.push(json!({ "partition": partition, "value": render(&bytes) }));
        }
    }
    if found.is_empty() {
        return Err(AppError::NotFound(format!(
            "stage {stage} holds no key {key:?} in this process"
        )));
    }
    let assigned = state
        .inner
        .metrics
        .stage(&stage)
        .snapshot()
        .assigned_partitions;
    Ok(Json(json!({
        "stage": stage,
        "key": key,
        "served_by": {
            "process": std::process::id(),
            "admin_listen": state.inner.admin_listen.map(|a| a.to_string()),
            // Partitions another process of the group holds are served
            // by that process's admin API.
            "assigned_partitions": assigned,
        },
        "values": found,
    })))
}

/// JSON stays JSON; other UTF-8 is a string; anything else is hex.
fn render(bytes: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return v;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "hex": hex::encode(bytes) }),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub stage: String,
}

/// Reprocesses a stage's inputs from the beginning with its state cleared.
pub async fn replay(
    State(state): State<AdminState>,
    Body(req): Body<ReplayRequest>,
) -> Result<Json<ReplayOutcome>, AppError> {
    let outcome = state
        .inner
        .reload
        .replay(req.stage)
        .await
        .ok_or_else(|| AppError::Unavailable("no pipeline is running".into()))?;
    outcome.map(Json).map_err(|e| match e {
        ReplayError::UnknownStage(_) => AppError::NotFound(e.to_string()),
        ReplayError::NotRunning(_) | ReplayError::PluginChanged { .. } => {
            AppError::Conflict(e.to_string())
        }
        ReplayError::Prepare { .. } => AppError::Unprocessable(e.to_string()),
        ReplayError::Rewind { .. } => AppError::Unavailable(e.to_string()),
        ReplayError::Restart { .. } => AppError::Internal(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::field_in;

    #[test]
    fn the_bad_field_is_named() {
        let p = "Failed to deserialize the JSON body into the target type: ";
        for (text, field) in [
            (
                format!(
                    "{p}stage: invalid type: integer `3`, expected a string at line 1 column 10"
                ),
                "stage",
            ),
            (
                format!("{p}fault.latency_ms: invalid type: string \"x\", expected u64"),
                "fault.latency_ms",
            ),
            (
                format!("{p}missing field `stage` at line 1 column 2"),
                "stage",
            ),
            (
                format!("{p}unknown field `stag`, expected `stage` at line 1 column 7"),
                "stag",
            ),
            (
                "unknown field `nope`, expected one of `orderId`, `items`".to_string(),
                "nope",
            ),
            (
                "invalid type: integer `3`, expected struct ReplayRequest".to_string(),
                "body",
            ),
            (
                "EOF while parsing a value at line 1 column 0".to_string(),
                "body",
            ),
        ] {
            assert_eq!(field_in(&text), field, "{text}");
        }
    }
}
