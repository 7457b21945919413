use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use weir_config::request::FieldError;

/// Every error the admin API returns, rendered as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("this request changes state and needs `Authorization: Bearer <WEIR_ADMIN_TOKEN>`")]
    Unauthorized,
    /// A bridge off loopback: the token, as a bearer header or, for
    /// browsers, which cannot set headers on a WebSocket, `access_token`.
    #[error(
        "a bridge needs `Authorization: Bearer <WEIR_ADMIN_TOKEN>` or `?access_token=<WEIR_ADMIN_TOKEN>`"
    )]
    BridgeUnauthorized,
    /// A bridge route asked for without a WebSocket handshake.
    #[error("{0}")]
    UpgradeRequired(String),
    /// The request conflicts with the current state (a replay of a stage
    /// whose plugin changed on disk).
    #[error("{0}")]
    Conflict(String),
    /// The request was understood but failed (a reload that was refused).
    #[error("{0}")]
    Unprocessable(String),
    /// The body is not what the endpoint takes; every bad field is named.
    #[error("invalid request body")]
    Invalid(Vec<FieldError>),
    /// Something that should not happen; the id is in the log too.
    #[error("internal error")]
    Internal(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, body) = match self {
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, json!({ "error": message })),
            AppError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, json!({ "error": message }))
            }
            AppError::Unauthorized | AppError::BridgeUnauthorized => {
                (StatusCode::UNAUTHORIZED, json!({ "error": message }))
            }
            AppError::UpgradeRequired(_) => {
                (StatusCode::UPGRADE_REQUIRED, json!({ "error": message }))
            }
            AppError::Conflict(_) => (StatusCode::CONFLICT, json!({ "error": message })),
            AppError::Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error": message }),
            ),
            AppError::Invalid(fields) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error": message, "fields": fields }),
            ),
            AppError::Internal(detail) => {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                let request_id = format!(
                    "req-{}",
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                tracing::error!(request_id, error = detail, "admin request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": message, "request_id": request_id }),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}
