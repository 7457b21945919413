//! The admin API's own description: the OpenAPI document and a page that
//! renders it and sends requests, both compiled into the binary so they
//! work with no network.

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::Value;

use super::AdminState;

/// The OpenAPI 3.1 document of the admin API, kept by hand beside the
/// router; the tests hold the two together, and the integration tests check
/// every answer they get against it. As written it describes weir with
/// `WEIR_ADMIN_TOKEN` set and the `scenarios` feature built in;
/// [`document`] gives the one for each build and mode.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Marks an operation that exists only in a build with this cargo feature.
const FEATURE: &str = "x-weir-feature";
const PAGE: &str = include_str!("docs.html");

/// Served when no token is set: the same operations with no security
/// requirement, no bearer scheme and no 401, since then none is asked for
/// and none is ever answered.
static WITHOUT_TOKEN: LazyLock<String> = LazyLock::new(|| document(false).to_string());
static WITH_TOKEN: LazyLock<String> = LazyLock::new(|| document(true).to_string());

/// The document as true for this build, with (`token_set`) or without a
/// token.
pub fn document(token_set: bool) -> Value {
    let mut doc: Value = serde_json::from_str(OPENAPI).unwrap_or_default();
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            item.retain(|_, op| op[FEATURE].as_str().is_none_or(built_in));
        }
        paths.retain(|_, item| item.as_object().is_some_and(|ops| !ops.is_empty()));
    }
    if token_set {
        return doc;
    }
    if let Some(paths) = doc["paths"].as_object_mut() {
        for operation in paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(Value::as_object_mut)
        {
            operation.remove("security");
            if let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            {
                responses.remove("401");
            }
        }
    }
    if let Some(components) = doc["components"].as_object_mut() {
        components.remove("securitySchemes");
    }
    doc["info"]["description"] = Value::String(format!(
        "{} This weir has no token set: it listens on loopback and no operation asks for one.",
        doc["info"]["description"].as_str().unwrap_or_default()
    ));
    doc
}

/// Whether this build has cargo feature `feature`.
fn built_in(feature: &str) -> bool {
    feature == "scenarios" && cfg!(feature = "scenarios")
}

pub async fn openapi(State(state): State<AdminState>) -> impl IntoResponse {
    let body = if state.inner.token.is_some() {
        WITH_TOKEN.as_str()
    } else {
        WITHOUT_TOKEN.as_str()
    };
    ([(CONTENT_TYPE, "application/json")], body)
}

pub async fn page() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::router;
    use crate::tests::test_state;

    fn spec() -> Value {
        serde_json::from_str::<Value>(OPENAPI).expect("openapi.json is JSON");
        document(true)
    }

    /// (METHOD, path) of every operation the document describes.
    fn documented() -> BTreeSet<(String, String)> {
        let spec = spec();
        let mut out = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    /// The body of the function that `signature` starts in `source`.
    fn body<'a>(source: &'a str, signature: &str) -> &'a str {
        let start = &source[source.find(signature).expect(signature)..];
        &start[..start.find("\n}\n").unwrap()]
    }

    /// (METHOD, path) of every `.route(...)` in the router's source, the
    /// run-control routes only in a build that serves them.
    fn routed() -> BTreeSet<(String, String)> {
        let source = include_str!("lib.rs");
        let mut routes = body(source, "pub fn router(").to_string();
        if cfg!(feature = "scenarios") {
            routes += body(
                source,
                "#[cfg(feature = \"scenarios\")]\nfn with_run_control(",
            );
        }
        routes
            .split(".route(")
            .skip(1)
            .map(|rest| {
                // rustfmt puts a long route's arguments on lines of their own.
                let rest = rest.trim_start().strip_prefix('"').unwrap();
                let (path, rest) = rest.split_once('"').unwrap();
                let method = rest
                    .trim_start_matches([',', ' ', '\n'])
                    .split('(')
                    .next()
                    .unwrap();
                (method.to_uppercase(), path.to_string())
            })
            .collect()
    }

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let (documented, routed) = (documented(), routed());
        let least = if cfg!(feature = "scenarios") { 20 } else { 11 };
        assert!(routed.len() >= least, "the source scan found {routed:?}");
        assert_eq!(
            routed.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "routes missing from openapi.json"
        );
        assert_eq!(
            documented.difference(&routed).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "documented operations with no route"
        );
    }

    /// Every documented operation answers (a router 404 has no body), and
    /// every request example gets past the handler's validation.
    #[tokio::test]
    async fn operations_answer_and_examples_are_valid() {
        let spec = spec();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let mut uri = path.clone();
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["in"] == "path" {
                        let name = p["name"].as_str().unwrap();
                        let example = p["example"].as_str().expect("path params have examples");
                        uri = uri.replace(&format!("{{{name}}}"), example);
                    }
                }
                let example = &op["requestBody"]["content"]["application/json"]["example"];
                let body = if example.is_null() {
                    Body::empty()
                } else {
                    Body::from(example.to_string())
                };
                let request = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&uri)
                    .header("content-type", "application/json")
                    .body(body)
                    .unwrap();
                let response = router(test_state()).oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let what = format!(
                    "{method} {uri}: {status} {}",
                    String::from_utf8_lossy(&bytes)
                );
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
                assert!(
                    !(status == StatusCode::NOT_FOUND && bytes.is_empty()),
                    "not routed: {what}"
                );
                assert_ne!(
                    status,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "example refused: {what}"
                );
                let documented = op["responses"]
                    .as_object()
                    .unwrap()
                    .contains_key(status.as_str());
                assert!(documented, "undocumented status: {what}");
            }
        }
    }

    #[tokio::test]
    async fn the_docs_page_is_served_without_external_assets() {
        let response = router(test_state())
            .oneshot(Request::get("/api-docs").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let html = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let html = String::from_utf8(html.to_vec()).unwrap();
        assert!(html.contains("/api-docs/openapi.json"));
        for external in ["src=\"http", "href=\"http", "@import", "//cdn", "url(http"] {
            assert!(!html.contains(external), "the page loads {external}…");
        }
        assert_eq!(served(test_state()).await["openapi"], "3.1.0");
    }

    async fn served(state: AdminState) -> Value {
        let response = router(state)
            .oneshot(
                Request::get("/api-docs/openapi.json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Every operation's (security, documents 401) pair.
    fn auth_of(doc: &Value) -> Vec<(String, bool, bool)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((
                    format!("{} {path}", method.to_uppercase()),
                    op.get("security").is_some(),
                    op["responses"].get("401").is_some(),
                ));
            }
        }
        out
    }

    /// With a token, every POST and the bridges declare the bearer
    /// requirement and its 401; without one, nothing does, since nothing
    /// is asked.
    #[tokio::test]
    async fn the_served_document_says_what_auth_each_mode_needs() {
        let with = served(test_state().with_token(Some("s3cret".into()))).await;
        assert_eq!(with, spec());
        assert!(with["components"]["securitySchemes"]["bearer"].is_object());
        for (op, security, unauthorized) in auth_of(&with) {
            let guarded = op.starts_with("POST ") || op.starts_with("GET /ws/");
            assert_eq!((security, unauthorized), (guarded, guarded), "{op}");
        }

        let without = served(test_state()).await;
        assert!(without["components"].get("securitySchemes").is_none());
        for (op, security, unauthorized) in auth_of(&without) {
            assert_eq!((security, unauthorized), (false, false), "{op}");
        }
        assert!(
            without["info"]["description"]
                .as_str()
                .unwrap()
                .contains("no token set")
        );
        // Otherwise the same document.
        assert_eq!(auth_of(&with).len(), auth_of(&without).len());
        assert_eq!(
            with["components"]["schemas"],
            without["components"]["schemas"]
        );
    }
}
