//! `GET /ws/{bridge}`: a bridge's records, live, over a WebSocket.
//!
//! A client names the sessions it wants (`sessions=a,b`, or all) and a
//! format: `json` (a text message per record, the value decoded with the
//! bridge's schema) or `protobuf` (a binary message per record, the value
//! as it is on the topic). A client that falls behind gets a text message
//! `{"dropped": n}` before the next record it gets, and is closed (1008)
//! if it goes on losing records for the bridge's `behind_ms`.

use std::collections::HashSet;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use weir_config::request::FieldError;
use weir_engine::bridge::{Next, Subscription};

use crate::extract::{Params, Segments};
use crate::{AdminState, AppError};

/// The most sessions one client may name.
const MAX_SESSIONS: usize = 1_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connect {
    /// Comma-separated session ids; absent or `*`: every session.
    sessions: Option<String>,
    format: Option<String>,
    access_token: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Json,
    Protobuf,
}

fn invalid(field: &str, message: String) -> AppError {
    AppError::Invalid(vec![FieldError {
        field: field.into(),
        message,
    }])
}

pub async fn connect(
    State(state): State<AdminState>,
    Segments(name): Segments<String>,
    Params(query): Params<Connect>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    if let Some(token) = &state.inner.token {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer != Some(token.as_str()) && query.access_token.as_deref() != Some(token.as_str()) {
            return Err(AppError::BridgeUnauthorized);
        }
    }
    let hub = state
        .inner
        .bridges
        .get(&name)
        .cloned()
        .ok_or_else(|| AppError::NotFound(format!("no bridge named {name:?}")))?;
    let format = match query.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("protobuf") => Format::Protobuf,
        Some(other) => {
            return Err(invalid(
                "format",
                format!("must be json or protobuf, got {other:?}"),
            ));
        }
    };
    let sessions: Option<HashSet<String>> = match query.sessions.as_deref().map(str::trim) {
        None | Some("*") => None,
        Some(list) => Some(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ),
    };
    if let Some(s) = sessions.as_ref().filter(|s| s.len() > MAX_SESSIONS) {
        return Err(invalid(
            "sessions",
            format!("at most {MAX_SESSIONS} sessions, got {}", s.len()),
        ));
    }
    let upgrade = upgrade.map_err(|_| {
        AppError::UpgradeRequired(format!(
            "bridge {name} speaks WebSocket: connect with a WebSocket client"
        ))
    })?;
    let subscription = hub.subscribe(sessions).map_err(|full| {
        AppError::Unavailable(format!(
            "bridge {name} has its {} clients (max_clients)",
            full.max_clients
        ))
    })?;
    Ok(upgrade.on_upgrade(move |socket| serve(socket, subscription, format)))
}

/// Relays records to `socket` until the client leaves or falls behind.
async fn serve(mut socket: WebSocket, sub: Subscription, format: Format) {
    let behind = sub.hub().config().behind;
    loop {
        let outgoing = tokio::select! {
            next = sub.next() => next,
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            },
        };
        let (record, dropped) = match outgoing {
            Next::Record { record, dropped } => (record, dropped),
            Next::Behind => {
                let close = CloseFrame {
                    code: 1008,
                    reason: "too far behind: it lost records for behind_ms".into(),
                };
                let _ = socket.send(Message::Close(Some(close))).await;
                return;
            }
        };
        if dropped > 0 {
            let notice = serde_json::json!({ "dropped": dropped }).to_string();
            if socket.send(Message::Text(notice.into())).await.is_err() {
                return;
            }
        }
        let message = match format {
            Format::Protobuf => Message::Binary(record.value.clone().into()),
            Format::Json => Message::Text(sub.hub().json(&record).to_string().into()),
        };
        let bytes = match &message {
            Message::Binary(b) => b.len(),
            Message::Text(t) => t.len(),
            _ => 0,
        };
        // A client that reads nothing fills its socket: it is left once
        // one send has waited as long as a client may stay behind.
        match tokio::time::timeout(behind, socket.send(message)).await {
            Ok(Ok(())) => sub.hub().relayed(bytes),
            _ => return,
        }
    }
}
