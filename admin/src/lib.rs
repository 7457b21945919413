//! The REST admin API, as a value: [`router`] builds it from an
//! [`AdminState`], so tests drive it with `tower::ServiceExt::oneshot` and
//! `weir run` serves it.

mod bridge;
mod docs;
pub use docs::OPENAPI;
mod error;
mod extract;
mod prometheus;
mod query;
#[cfg(feature = "scenarios")]
mod run;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

pub use error::AppError;

use weir_engine::bridge::Hub;
use weir_engine::topology::handle::ReloadHandle;
use weir_engine::topology::reload::ReloadOutcome;
use weir_engine::topology::{Running, StageInfo};
use weir_runtime::metrics::{Registry, StageSnapshot};
use weir_runtime::state::StateStore;
#[cfg(feature = "scenarios")]
use weir_scenarios::control::RunControl;

/// `(stage, partition)` to the group member that holds it, if known.
pub type Owners =
    Arc<dyn Fn(&str, i32) -> Option<weir_engine::kafka::Member> + Send + Sync + 'static>;

#[derive(Clone)]
pub struct AdminState {
    inner: Arc<Inner>,
}

struct Inner {
    started_at: SystemTime,
    bootstrap_servers: String,
    embedded_broker: bool,
    metrics: Arc<Registry>,
    stages: RwLock<Vec<StageInfo>>,
    /// The live set of stages, which reloads change; `stages` until set.
    running: RwLock<Option<Running>>,
    reload: ReloadHandle,
    /// When set, requests that change state must carry it as a bearer token.
    token: Option<String>,
    #[cfg(feature = "scenarios")]
    control: Option<RunControl>,
    state: Option<Arc<dyn StateStore>>,
    /// Which member of a stage's group holds a partition, for a state
    /// query this process cannot answer.
    owners: Option<Owners>,
    /// Where this API listens, for answers that say who serves what.
    admin_listen: Option<std::net::SocketAddr>,
    /// The pipeline's bridges, by name.
    bridges: BTreeMap<String, Arc<Hub>>,
}

impl AdminState {
    pub fn new(bootstrap_servers: String, embedded_broker: bool, metrics: Arc<Registry>) -> Self {
        AdminState {
            inner: Arc::new(Inner {
                started_at: SystemTime::now(),
                bootstrap_servers,
                embedded_broker,
                metrics,
                stages: RwLock::new(Vec::new()),
                running: RwLock::new(None),
                reload: ReloadHandle::default(),
                token: None,
                #[cfg(feature = "scenarios")]
                control: None,
                state: None,
                owners: None,
                admin_listen: None,
                bridges: BTreeMap::new(),
            }),
        }
    }

    /// Reloads go through `handle`.
    pub fn with_reload(mut self, handle: ReloadHandle) -> Self {
        self.inner_mut().reload = handle;
        self
    }

    /// The bridges served at `/ws/{bridge}`.
    pub fn with_bridges(mut self, bridges: impl IntoIterator<Item = Arc<Hub>>) -> Self {
        self.inner_mut().bridges = bridges
            .into_iter()
            .map(|hub| (hub.config().name.clone(), hub))
            .collect();
        self
    }

    /// The address this API is served on.
    pub fn with_listen(mut self, listen: std::net::SocketAddr) -> Self {
        self.inner_mut().admin_listen = Some(listen);
        self
    }

    /// Requests that change state need `token`.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.inner_mut().token = token;
        self
    }

    /// Run control (start, stop, faults, generators).
    #[cfg(feature = "scenarios")]
    pub fn with_control(mut self, control: RunControl) -> Self {
        self.inner_mut().control = Some(control);
        self
    }

    /// Keyed state, for interactive queries.
    pub fn with_state(mut self, state: Arc<dyn StateStore>) -> Self {
        self.inner_mut().state = Some(state);
        self
    }

    /// How to find the member of a stage's group that holds a partition
    /// (a blocking call to the group coordinator).
    pub fn with_owners(mut self, owners: Owners) -> Self {
        self.inner_mut().owners = Some(owners);
        self
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).expect("configured before it is shared")
    }

    pub fn set_stages(&self, stages: Vec<StageInfo>) {
        *self.inner.stages.write().unwrap_or_else(|e| e.into_inner()) = stages;
    }

    /// Shows the stages of a running pipeline, as reloads change them.
    pub fn set_running(&self, running: Running) {
        *self
            .inner
            .running
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(running);
    }

    fn stages(&self) -> Vec<StageInfo> {
        if let Some(running) = &*self.inner.running.read().unwrap_or_else(|e| e.into_inner()) {
            return running.infos();
        }
        self.inner
            .stages
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

pub fn router(state: AdminState) -> Router {
    // Everything that changes state sits behind the token check. Every
    // route is in `openapi.json`; `docs::tests` checks both ways.
    let changes = Router::new()
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/replay", post(query::replay));
    let changes = with_run_control(changes)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(changes)
        .route("/api/v1/status", get(status))
        .route("/api/v1/kafka-demo/status", get(status))
        .route("/api/v1/stages", get(stages))
        .route("/api/v1/stages/{stage}", get(stage))
        .route(
            "/api/v1/stages/{stage}/state/{key}",
            get(query::state_value),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api-docs/openapi.json", get(docs::openapi))
        .route("/api-docs", get(docs::page))
        // Reading, but off loopback a bridge needs the token too; the
        // handler checks it, since a browser's WebSocket cannot send a
        // header.
        .route("/ws/{bridge}", get(bridge::connect))
        .with_state(state)
}

/// The scenario runs' routes. The F1 Kafka demo's `kafka-demo` paths
/// answer too, so its clients keep working.
#[cfg(feature = "scenarios")]
fn with_run_control(changes: Router<AdminState>) -> Router<AdminState> {
    changes
        .route("/api/v1/start", post(run::start))
        .route("/api/v1/stop", post(run::stop))
        .route("/api/v1/fault", post(run::fault))
        .route("/api/v1/kafka-demo/start", post(run::start))
        .route("/api/v1/kafka-demo/stop", post(run::stop))
        .route("/api/v1/kafka-demo/fault", post(run::fault))
        .route("/api/v1/produce", post(run::produce))
        .route("/api/v1/load-test", post(run::load_test))
}

#[cfg(not(feature = "scenarios"))]
fn with_run_control(changes: Router<AdminState>) -> Router<AdminState> {
    changes
}

async fn require_token(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    if let Some(token) = &state.inner.token
        && bearer(request.headers()) != Some(token.as_str())
    {
        return Err(AppError::Unauthorized);
    }
    Ok(next.run(request).await)
}

/// The bearer token of a request's `Authorization` header, if it has one.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Reads pipeline.toml and the plugin files again and swaps in what
/// changed, as a file change would; answers with the outcome.
async fn reload(State(state): State<AdminState>) -> Result<Json<ReloadOutcome>, AppError> {
    let outcome = state
        .inner
        .reload
        .reload("api")
        .await
        .ok_or_else(|| AppError::Unavailable("no pipeline is running".into()))?;
    match &outcome.error {
        Some(error) => Err(AppError::Unprocessable(format!("reload failed: {error}"))),
        None => Ok(Json(outcome)),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        {
            let mut text = prometheus::render(
                &state.inner.metrics,
                &snapshots(&state),
                &generator_counters(&state),
            );
            let bridges: Vec<_> = state
                .inner
                .bridges
                .iter()
                .map(|(name, hub)| (name.as_str(), hub.stats()))
                .collect();
            prometheus::render_bridges(&mut text, &bridges);
            text
        },
    )
}

/// The scenario generators' counters, as extra Prometheus series.
#[cfg(feature = "scenarios")]
fn generator_counters(state: &AdminState) -> Vec<(&'static str, &'static str, u64)> {
    let generator = state
        .inner
        .control
        .as_ref()
        .map(|c| c.status().generator)
        .unwrap_or_default();
    vec![
        (
            "generator_produced_total",
            "Generated records the broker acknowledged.",
            generator.produced,
        ),
        (
            "generator_dropped_total",
            "Generated records dropped by the fault profile.",
            generator.dropped,
        ),
        (
            "generator_duplicated_total",
            "Generated records sent twice by the fault profile.",
            generator.duplicated,
        ),
    ]
}

#[cfg(not(feature = "scenarios"))]
fn generator_counters(_: &AdminState) -> Vec<(&'static str, &'static str, u64)> {
    Vec::new()
}

/// The status: pipeline, stages with metrics, reload and run control.
pub(crate) fn full_status(state: &AdminState) -> serde_json::Value {
    let stages: Vec<StageStatus> = state
        .stages()
        .into_iter()
        .map(|i| stage_status(state, i))
        .collect();
    let mut v = serde_json::json!({
        "running": !stages.is_empty(),
        "bootstrap_servers": state.inner.bootstrap_servers,
        "embedded_broker": state.inner.embedded_broker,
        "uptime_seconds": state.inner.started_at.elapsed().map(|d| d.as_secs()).unwrap_or(0),
        "reload": state.inner.reload.status(),
        "stages": stages,
        "bridges": state
            .inner
            .bridges
            .iter()
            .map(|(name, hub)| (name.clone(), serde_json::to_value(hub.stats()).unwrap_or_default()))
            .collect::<serde_json::Map<_, _>>(),
    });
    add_run(state, &stages, &mut v);
    v
}

/// What run control adds to the status: the run, its generator and faults.
#[cfg(feature = "scenarios")]
fn add_run(state: &AdminState, stages: &[StageStatus], v: &mut serde_json::Value) {
    if let Some(control) = &state.inner.control {
        let run = control.status();
        v["running"] = serde_json::json!(run.running && !stages.is_empty());
        v["run"] = serde_json::to_value(&run).unwrap_or_default();
        v["metrics"] = serde_json::json!({
            "produced": run.generator.produced,
            "stages": stages.iter().map(|s| (s.info.name.clone(), serde_json::to_value(&s.metrics).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
        });
        v["run_id"] = serde_json::json!(run.run_id);
        v["topics"] = serde_json::json!(run.topics);
        v["fault"] = serde_json::to_value(&run.fault).unwrap_or_default();
        v["last_message_at"] = serde_json::json!(run.last_message_at);
        v["last_error"] = serde_json::json!(run.last_error);
    }
}

#[cfg(not(feature = "scenarios"))]
fn add_run(_: &AdminState, _: &[StageStatus], _: &mut serde_json::Value) {}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AdminState>) -> Result<&'static str, AppError> {
    if state.stages().is_empty() {
        return Err(AppError::Unavailable("no stage is running yet".into()));
    }
    Ok("ready")
}

#[derive(Debug, Serialize)]
struct StageStatus {
    #[serde(flatten)]
    info: StageInfo,
    metrics: StageSnapshot,
}

fn stage_status(state: &AdminState, info: StageInfo) -> StageStatus {
    let mut metrics = state.inner.metrics.stage(&info.name).snapshot();
    with_state(state, &info.name, &mut metrics);
    StageStatus { info, metrics }
}

/// Every stage's metrics, with its keyed state counted.
fn snapshots(state: &AdminState) -> BTreeMap<String, StageSnapshot> {
    let mut stages = state.inner.metrics.stages();
    for (name, snap) in &mut stages {
        with_state(state, name, snap);
    }
    stages
}

fn with_state(state: &AdminState, stage: &str, snap: &mut StageSnapshot) {
    if let Some(store) = &state.inner.state {
        snap.state_keys = store.len(stage) as u64;
        snap.state_expired = store.expired(stage);
    }
}

async fn status(State(state): State<AdminState>) -> Json<serde_json::Value> {
    Json(full_status(&state))
}

async fn stages(State(state): State<AdminState>) -> Json<Vec<StageStatus>> {
    Json(
        state
            .stages()
            .into_iter()
            .map(|i| stage_status(&state, i))
            .collect(),
    )
}

async fn stage(
    State(state): State<AdminState>,
    extract::Segments(name): extract::Segments<String>,
) -> Result<Json<StageStatus>, AppError> {
    let info = state
        .stages()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| AppError::NotFound(format!("no stage named {name:?}")))?;
    Ok(Json(stage_status(&state, info)))
}

#[cfg(test)]
pub(crate) mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    fn state() -> AdminState {
        let s = AdminState::new(
            "127.0.0.1:9092".into(),
            false,
            Arc::new(Registry::default()),
        );
        s.set_stages(vec![StageInfo {
            name: "degradation".into(),
            plugin: "p.wasm".into(),
            plugin_digest: "abc".into(),
            inputs: vec!["in".into()],
            outputs: [("default".to_string(), "out".to_string())].into(),
            dead_letter: "dlq".into(),
            instances: 1,
        }]);
        s
    }

    /// The status and JSON body (`Null` when not JSON) of one request.
    async fn send(router: Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let resp = router.oneshot(request).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    async fn get_json(router: Router, uri: &str) -> (StatusCode, serde_json::Value) {
        send(router, Request::get(uri).body(Body::empty()).unwrap()).await
    }

    pub(crate) fn test_state() -> AdminState {
        state()
    }

    /// Status and JSON body (`Null` if not JSON) of `method uri` with a
    /// JSON `body`, on the test state.
    pub(crate) async fn send_json(
        method: &str,
        uri: &str,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        send(router(test_state()), request).await
    }

    /// The fields a 422 names.
    pub(crate) fn fields(body: &serde_json::Value) -> Vec<&str> {
        body["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["field"].as_str())
            .collect()
    }

    #[tokio::test]
    async fn status_lists_stages_with_metrics() {
        let s = state();
        weir_runtime::metrics::StageMetrics::add(&s.inner.metrics.stage("degradation").consumed, 7);
        let (code, body) = get_json(router(s), "/api/v1/status").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["running"], true);
        assert_eq!(body["stages"][0]["name"], "degradation");
        assert_eq!(body["stages"][0]["metrics"]["consumed"], 7);
    }

    #[tokio::test]
    async fn unknown_stage_is_404_with_json_error() {
        let (code, body) = get_json(router(state()), "/api/v1/stages/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "no stage named \"nope\"");
    }

    #[tokio::test]
    async fn readyz_waits_for_stages() {
        let empty = AdminState::new("x".into(), true, Arc::new(Registry::default()));
        let resp = router(empty)
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let resp = router(state())
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    async fn post(
        router: Router,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::post(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        send(router, req.body(Body::empty()).unwrap()).await
    }

    /// A build without the scenarios feature has no run control to serve
    /// and does not pretend to: the routes and their documentation are gone.
    #[cfg(not(feature = "scenarios"))]
    #[tokio::test]
    async fn without_scenarios_run_control_is_not_served() {
        for uri in [
            "/api/v1/start",
            "/api/v1/stop",
            "/api/v1/fault",
            "/api/v1/load-test",
        ] {
            let (code, _) = post(router(state()), uri, None).await;
            assert_eq!(code, StatusCode::NOT_FOUND, "{uri}");
        }
        let (_, doc) = get_json(router(state()), "/api-docs/openapi.json").await;
        assert!(doc["paths"].get("/api/v1/start").is_none(), "{doc}");
        assert!(doc["paths"].get("/api/v1/status").is_some(), "{doc}");
    }

    fn with_bridge(state: AdminState) -> AdminState {
        state.with_bridges([Hub::new(weir_config::BridgeConfig {
            name: "live".into(),
            topic: "telemetry".into(),
            key: None,
            schema: weir_config::BridgeSchema::TelemetryFrame,
            queue: 8,
            max_clients: 1,
            behind: std::time::Duration::from_secs(5),
        })])
    }

    #[tokio::test]
    async fn a_bridge_answers_what_is_not_a_websocket_handshake_with_json() {
        let (code, body) = get_json(router(with_bridge(state())), "/ws/live").await;
        assert_eq!(code, StatusCode::UPGRADE_REQUIRED, "{body}");
        assert!(body["error"].as_str().unwrap().contains("WebSocket"));
        let (code, body) = get_json(router(with_bridge(state())), "/ws/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
        let (code, body) = get_json(router(with_bridge(state())), "/ws/live?format=avro").await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["fields"][0]["field"], "format");
        let (code, _) = get_json(router(with_bridge(state())), "/ws/live?nope=1").await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[tokio::test]
    async fn a_bridge_needs_the_token_when_one_is_set() {
        let guarded = || router(with_bridge(state().with_token(Some("s3cret".into()))));
        let (code, body) = get_json(guarded(), "/ws/live").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body["error"].as_str().unwrap().contains("access_token"));
        let (code, _) = get_json(guarded(), "/ws/live?access_token=wrong").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        // Past the token, as a query parameter or a header: not a handshake.
        let (code, _) = get_json(guarded(), "/ws/live?access_token=s3cret").await;
        assert_eq!(code, StatusCode::UPGRADE_REQUIRED);
        let request = Request::get("/ws/live")
            .header("authorization", "Bearer s3cret")
            .body(Body::empty())
            .unwrap();
        let (code, _) = send(guarded(), request).await;
        assert_eq!(code, StatusCode::UPGRADE_REQUIRED);
    }

    #[tokio::test]
    async fn changes_need_the_token_when_one_is_set() {
        let open = router(state());
        // No token configured (loopback): the request reaches the handler,
        // which has no running pipeline to reload.
        let (code, body) = post(open, "/api/v1/reload", None).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");

        let guarded = || router(state().with_token(Some("s3cret".into())));
        let (code, body) = post(guarded(), "/api/v1/reload", None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        assert!(body["error"].as_str().unwrap().contains("Bearer"));
        let (code, _) = post(guarded(), "/api/v1/reload", Some("wrong")).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let (code, _) = post(guarded(), "/api/v1/reload", Some("s3cret")).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        // Reading needs no token.
        let (code, _) = get_json(guarded(), "/api/v1/status").await;
        assert_eq!(code, StatusCode::OK);
    }
}
