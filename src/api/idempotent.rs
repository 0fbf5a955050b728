//! Running a command under an `Idempotency-Key`: the HTTP side of [`crate::idempotency`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::problem::ApiError;
use super::AppState;
use crate::idempotency::{lookup, Idempotent, Lookup, Outcome, Render, StoredResponse};
use crate::store::writer::Command;
use crate::store::TenantId;

/// The header that tells a client whether it got a first execution or a replay.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// What identifies one idempotent request.
pub struct Request<'a> {
    /// Whose key.
    pub tenant: TenantId,
    /// The key.
    pub key: String,
    /// `POST`.
    pub method: &'a str,
    /// The request path.
    pub path: &'a str,
    /// Canonical JSON of the body (empty for bodiless requests).
    pub canonical_body: &'a str,
}

/// Executes `command` at most once for this key and answers with its (stored) response.
pub async fn run<C: Command>(
    state: &AppState,
    request: Request<'_>,
    command: C,
    render: Render<C::Output>,
) -> Result<Response, ApiError> {
    let answer = execute(state, request, command, render).await?;
    Ok(respond(answer.stored, answer.replayed))
}

/// The stored response of an idempotent request, and whether this request replayed it.
pub struct Answer {
    /// The response, as stored.
    pub stored: StoredResponse,
    /// False only for the request that executed (and committed) the command.
    pub replayed: bool,
}

/// [`run`] for handlers that act once the first execution has committed (metrics): the stored
/// response before it becomes HTTP.
pub async fn execute<C: Command>(
    state: &AppState,
    request: Request<'_>,
    command: C,
    render: Render<C::Output>,
) -> Result<Answer, ApiError> {
    let fingerprint =
        crate::identity::fingerprint(request.method, request.path, request.canonical_body);
    let now_ms = crate::clock::now_ms();
    // A stored record always answers, whatever else is executing: replays and mismatches come
    // from a snapshot without claiming the key or queueing a write.
    if let Some(answer) = answer_from_snapshot(state, &request, &fingerprint, now_ms)? {
        return answer;
    }
    let Some(_claim) = state.in_flight.claim(request.tenant, &request.key) else {
        // The first execution may have committed since the lookup: look again before 409.
        if let Some(answer) = answer_from_snapshot(state, &request, &fingerprint, now_ms)? {
            return answer;
        }
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still executing; retry after it completes",
        ));
    };
    let retention_ms = i64::try_from(state.config.idempotency.retention_secs.saturating_mul(1000))
        .unwrap_or(i64::MAX);
    let outcome = state
        .writer
        .submit(Idempotent {
            tenant: request.tenant,
            key: request.key,
            fingerprint,
            now_ms,
            retention_ms,
            inner: command,
            render,
        })
        .await?;
    match outcome {
        Outcome::Executed(stored) => Ok(Answer {
            stored,
            replayed: false,
        }),
        Outcome::Replayed(stored) => Ok(Answer {
            stored,
            replayed: true,
        }),
        Outcome::Mismatch => Err(reused()),
    }
}

/// The stored answer for this request when its key already has one. Handlers whose checks read
/// state that can change after the first execution (a reference archived since) ask first, so
/// a retry replays its answer instead of failing those checks.
pub fn replay(state: &AppState, request: &Request<'_>) -> Result<Option<Response>, ApiError> {
    let fingerprint =
        crate::identity::fingerprint(request.method, request.path, request.canonical_body);
    match answer_from_snapshot(state, request, &fingerprint, crate::clock::now_ms())? {
        Some(Ok(answer)) => Ok(Some(respond(answer.stored, answer.replayed))),
        Some(Err(e)) => Err(e),
        None => Ok(None),
    }
}

/// The answer a stored record gives (a replay or a mismatch), or `None` when there is none yet.
/// The writer checks again inside its transaction, so a stale snapshot is harmless.
fn answer_from_snapshot(
    state: &AppState,
    request: &Request<'_>,
    fingerprint: &[u8; 32],
    now_ms: i64,
) -> Result<Option<Result<Answer, ApiError>>, ApiError> {
    let tx = state.store.read()?;
    Ok(
        match lookup(&tx, request.tenant, &request.key, fingerprint, now_ms)? {
            Lookup::Replay(stored) => Some(Ok(Answer {
                stored,
                replayed: true,
            })),
            Lookup::Mismatch => Some(Err(reused())),
            Lookup::Absent => None,
        },
    )
}

fn reused() -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "this Idempotency-Key was used with a different request (method, path or body); use a new key for a new request",
    )
}

/// Builds the HTTP response from a stored one, byte for byte.
pub fn respond(stored: StoredResponse, replayed: bool) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&stored.content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(
        REPLAYED_HEADER,
        HeaderValue::from_static(if replayed { "true" } else { "false" }),
    );
    response
}

/// Renders a JSON body with a status, for storing.
pub fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> StoredResponse {
    StoredResponse {
        status: status.as_u16(),
        content_type: "application/json".to_string(),
        body: serde_json::to_vec(body).unwrap_or_default(),
    }
}
