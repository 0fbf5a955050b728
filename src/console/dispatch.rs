//! Calls the public API in-process on behalf of a signed-in operator.
//!
//! Every console page reads through the same endpoints a client would, and every action posts
//! to them with the `Idempotency-Key` minted when its form was rendered, so the console obeys
//! the same validation, idempotency and read-only rules as any client and adds none of its own.
//! The request never leaves the process: it is handed to the API router with the operator's
//! principal as a request extension (`api::extract::InternalPrincipal`).

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde::de::DeserializeOwned;
use tower::ServiceExt;

use super::page::ConsoleError;
use super::session::Operator;
use crate::api::extract::InternalPrincipal;

/// Most bytes of an API reply the console reads (a PDF or a large page).
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Longest the console waits for a request with the same key that is still executing (a double
/// click) before saying so.
const IN_FLIGHT_WAIT_MS: u64 = 5_000;

/// What the API answered.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The media type.
    pub content_type: String,
    /// Whether the answer is a stored reply to an earlier request with the same key.
    pub replayed: bool,
    /// The body as sent.
    pub body: axum::body::Bytes,
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// For an error reply: the problem's `detail`, with the offending fields.
    pub fn problem_text(&self) -> String {
        let problem = self.json();
        let detail = problem
            .get("detail")
            .and_then(|d| d.as_str())
            .unwrap_or("the request failed")
            .to_string();
        let fields: Vec<String> = problem
            .get("errors")
            .and_then(|e| e.as_array())
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| {
                        let field = e.get("field")?.as_str()?;
                        let detail = e.get("detail")?.as_str()?;
                        Some(format!("{field}: {detail}"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if fields.is_empty() {
            detail
        } else {
            format!("{detail} ({})", fields.join("; "))
        }
    }

    /// The problem's stable code, if the reply is one.
    pub fn problem_code(&self) -> Option<String> {
        self.json()
            .get("code")
            .and_then(|c| c.as_str())
            .map(str::to_string)
    }
}

/// Sends one request to the API as the operator. `path` includes the query string.
pub async fn call(
    op: &Operator,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
    idempotency_key: Option<&str>,
) -> Result<Reply, ConsoleError> {
    let waited_ms = 0u64;
    let mut waited_ms = waited_ms;
    loop {
        let reply = call_once(op, method.clone(), path, body, idempotency_key).await?;
        let in_flight = reply.status == StatusCode::CONFLICT
            && reply.problem_code().as_deref() == Some("idempotency_key_in_use");
        if !in_flight || waited_ms >= IN_FLIGHT_WAIT_MS {
            return Ok(reply);
        }
        // The same form was submitted twice and the first is still executing: its answer
        // (a replay) is what the second should show.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited_ms += 50;
    }
}

async fn call_once(
    op: &Operator,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
    idempotency_key: Option<&str>,
) -> Result<Reply, ConsoleError> {
    let router = op
        .state
        .console
        .api()
        .ok_or_else(|| ConsoleError::internal("the API router is not ready"))?;
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(key) = idempotency_key {
        builder = builder.header("idempotency-key", key);
    }
    let body = match body {
        Some(value) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(
                serde_json::to_vec(value).map_err(|e| ConsoleError::internal(e.to_string()))?,
            )
        }
        None => Body::empty(),
    };
    let mut request = builder
        .body(body)
        .map_err(|e| ConsoleError::internal(e.to_string()))?;
    request
        .extensions_mut()
        .insert(InternalPrincipal(op.principal));
    let response = router
        .oneshot(request)
        .await
        .map_err(|e| ConsoleError::internal(e.to_string()))?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // The API sets the header on every idempotent reply, `true` or `false`.
    let replayed = response
        .headers()
        .get(crate::api::idempotent::REPLAYED_HEADER)
        .is_some_and(|v| v.as_bytes() == b"true");
    let body = axum::body::to_bytes(response.into_body(), MAX_REPLY_BYTES)
        .await
        .map_err(|e| ConsoleError::internal(e.to_string()))?;
    Ok(Reply {
        status,
        content_type,
        replayed,
        body,
    })
}

/// GETs a path and parses a successful reply; an error reply becomes the page's error.
pub async fn get<T: DeserializeOwned>(op: &Operator, path: &str) -> Result<T, ConsoleError> {
    let reply = call(op, Method::GET, path, None, None).await?;
    if !reply.status.is_success() {
        return Err(ConsoleError::from_reply(&reply));
    }
    serde_json::from_slice(&reply.body).map_err(|e| {
        ConsoleError::internal(format!(
            "the API answered {path} with an unexpected shape: {e}"
        ))
    })
}

/// A path with its query string, the values percent-encoded; empty values are left out.
pub fn with_query(path: &str, params: &[(&str, &str)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        if !value.is_empty() {
            serializer.append_pair(name, value);
        }
    }
    let query = serializer.finish();
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// One path segment, percent-encoded (ids from a URL are never trusted to be plain).
pub fn segment(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_leave_out_empty_values_and_encode_the_rest() {
        assert_eq!(with_query("/v1/x", &[("a", ""), ("b", "")]), "/v1/x");
        assert_eq!(
            with_query("/v1/x", &[("q", "a b&c"), ("limit", "20")]),
            "/v1/x?q=a+b%26c&limit=20"
        );
        assert_eq!(segment("../v1/x"), "..%2Fv1%2Fx");
    }
}
