//! Run control, load, state and Prometheus endpoints.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{AdminState, AppError};
use crate::control::de::{self, Object};
use crate::control::{FaultProfile, FieldError, RunControl, StartRequest, parse_scenario};
use crate::generate::Scenario;
use crate::state::Scope;
use crate::topology::replay::{ReplayError, ReplayOutcome};

/// `Json<T>` from a JSON object only, and a body that does not parse gets
/// 422 naming what is wrong.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match Json::<Object<T>>::from_request(req, state).await {
            Ok(Json(Object(v))) => Ok(Body(v)),
            Err(rejection) => Err(invalid(rejection.body_text(), "body")),
        }
    }
}

/// `Query<T>`, but a query string that does not parse gets the same JSON
/// 422 as a bad body rather than axum's plain-text 400.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Params(v)),
            Err(rejection) => Err(invalid(rejection.body_text(), "query")),
        }
    }
}

/// `Path<T>`, with a segment that does not decode (percent-encoded bytes
/// that are not UTF-8) answered like a bad body too.
pub struct Segments<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segments<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Segments(v)),
            Err(rejection) => Err(invalid(rejection.body_text(), "path")),
        }
    }
}

/// A 422 for `message`, naming the field it is about (else `whole`).
fn invalid(message: String, whole: &str) -> AppError {
    AppError::Invalid(vec![FieldError {
        field: field_in(&message, whole),
        message,
    }])
}

/// The field serde names in its message (`missing field `x``, `unknown
/// field `x``), or the path axum puts before it (`fault.latency_ms: invalid
/// type ...`), else `whole`.
fn field_in(text: &str, whole: &str) -> String {
    const PREFIXES: [&str; 2] = [
        "Failed to deserialize the JSON body into the target type: ",
        "Failed to deserialize query string: ",
    ];
    let detail = PREFIXES
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .unwrap_or(text);
    let named = detail.split('`').nth(1).filter(|_| {
        ["missing field `", "unknown field `", "duplicate field `"]
            .iter()
            .any(|p| detail.starts_with(p))
    });
    if let Some(name) = named {
        return name.to_string();
    }
    match detail.split_once(": ") {
        Some((path, _)) if !path.is_empty() && !path.contains(' ') && path != "." => {
            path.to_string()
        }
        _ => whole.to_string(),
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
    Segments((stage, key)): Segments<(String, String)>,
    Params(q): Params<StateQuery>,
) -> Result<Json<Value>, AppError> {
    if let Some(p) = q.partition.filter(|p| *p < 0) {
        return Err(AppError::Invalid(vec![FieldError {
            field: "partition".into(),
            message: format!("must be >= 0, got {p}"),
        }]));
    }
    if !state.stages().iter().any(|s| s.name == stage) {
        return Err(AppError::NotFound(format!("no stage named {stage:?}")));
    }
    let store = state
        .inner
        .state
        .as_ref()
        .ok_or_else(|| AppError::Unavailable("state is not available".into()))?;
    // Only partitions this process holds: state of a partition another
    // process owns is served by that process, and what may linger here of
    // a partition given away is stale.
    let assigned = state
        .inner
        .metrics
        .stage(&stage)
        .snapshot()
        .assigned_partitions;
    if let Some(p) = q.partition
        && !assigned.contains(&p)
    {
        let owner = match state.inner.owners.clone() {
            Some(owners) => {
                let stage = stage.clone();
                tokio::task::spawn_blocking(move || owners(&stage, p))
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        };
        let held_by = match owner {
            Some(m) => format!("the group member {} at {} holds it", m.client_id, m.host),
            None => "the group names no member holding it".to_string(),
        };
        return Err(AppError::NotFound(format!(
            "partition {p} of stage {stage} is not held by this process (it holds \
             {assigned:?}); {held_by}"
        )));
    }
    let partitions = match q.partition {
        Some(p) => vec![p],
        None => store
            .partitions(&stage)
            .into_iter()
            .filter(|p| assigned.contains(p))
            .collect(),
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
            "stage {stage} holds no key {key:?} in the partitions this process holds \
             ({assigned:?})"
        )));
    }
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
        ReplayError::Restart { .. }
        | ReplayError::Resume { .. }
        | ReplayError::Changelog { .. } => AppError::Internal(e.to_string()),
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
            (
                "Failed to deserialize query string: partition: invalid digit found in string"
                    .to_string(),
                "partition",
            ),
            (
                "Failed to deserialize query string: duplicate field `partition`".to_string(),
                "partition",
            ),
        ] {
            assert_eq!(field_in(&text, "body"), field, "{text}");
        }
    }

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use crate::admin::router;
    use crate::admin::tests::test_state;

    /// Status and JSON body (`Null` if not JSON) of `method uri` with `body`.
    async fn send(method: &str, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = router(test_state()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// The fields a 422 names.
    fn fields(body: &serde_json::Value) -> Vec<&str> {
        body["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["field"].as_str())
            .collect()
    }

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

    #[tokio::test]
    async fn a_bad_query_string_or_path_is_a_json_422() {
        for (uri, field) in [
            (
                "/api/v1/stages/degradation/state/k?partition=x",
                "partition",
            ),
            (
                "/api/v1/stages/degradation/state/k?partition=null&partition=null",
                "partition",
            ),
            (
                "/api/v1/stages/degradation/state/k?partition=99999999999",
                "partition",
            ),
            (
                "/api/v1/stages/degradation/state/k?partition=-1",
                "partition",
            ),
            ("/api/v1/stages/degradation/state/%FF", "path"),
            ("/api/v1/stages/%FF", "path"),
        ] {
            let (code, json) = send("GET", uri, "").await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {json}");
            assert_eq!(fields(&json), vec![field], "{uri}: {json}");
        }
    }
}
