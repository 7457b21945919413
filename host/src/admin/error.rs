use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Every error the admin API returns, rendered as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("this request changes state and needs `Authorization: Bearer <WEIR_ADMIN_TOKEN>`")]
    Unauthorized,
    /// The request was understood but failed (a reload that was refused).
    #[error("{0}")]
    Unprocessable(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
