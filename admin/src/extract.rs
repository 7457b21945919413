//! Extractors that answer a request the admin API cannot read with the
//! same JSON 422 as a body that fails validation, naming the field.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use weir_config::request::{FieldError, Object};

use crate::AppError;

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
pub(crate) fn invalid(message: String, whole: &str) -> AppError {
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
}
