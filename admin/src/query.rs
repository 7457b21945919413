//! Reading a stage's keyed state, and replaying a stage from the start.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use weir_config::request::FieldError;
use weir_engine::topology::replay::{ReplayError, ReplayOutcome};
use weir_runtime::state::Scope;

use crate::extract::{Body, Params, Segments};
use crate::{AdminState, AppError};

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
    use axum::http::StatusCode;

    use crate::tests::{fields, send_json};

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
            let (code, json) = send_json("GET", uri, "").await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {json}");
            assert_eq!(fields(&json), vec![field], "{uri}: {json}");
        }
    }
}
