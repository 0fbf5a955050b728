//! `/v1/dead-letters`: jobs that exhausted their retries, and their replay.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::time_param;
use super::extract::{IdempotencyKey, OptionalJsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::pagination::PageParams;
use super::problem::{ApiError, Problem};
use super::webhooks::AttemptBody;
use super::AppState;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::jobs::{self, Job, ReplayDead, ReplayError, PREFIX};

/// A dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterResponse {
    /// `job_…`.
    pub id: String,
    /// Always `dead_letter` (or `job` after a replay).
    pub object: &'static str,
    /// The job kind, e.g. `webhook.process`.
    pub kind: String,
    /// The job's input.
    pub payload: String,
    /// pending, leased, done or dead.
    pub status: &'static str,
    /// The last error.
    pub last_error: Option<String>,
    /// Every attempt.
    pub attempts: Vec<AttemptBody>,
    /// Times replayed.
    pub replays: u32,
    /// RFC 3339.
    pub created_at: String,
    /// When it died (or finished).
    pub finished_at: Option<String>,
}

/// The API body of a dead letter.
pub fn body(j: &Job) -> DeadLetterResponse {
    DeadLetterResponse {
        id: j.id.display(PREFIX),
        object: if j.status == jobs::JobStatus::Dead {
            "dead_letter"
        } else {
            "job"
        },
        kind: j.kind.clone(),
        payload: j.payload.clone(),
        status: j.status.as_str(),
        last_error: j.last_error().map(str::to_string),
        attempts: j
            .log
            .iter()
            .map(|a| AttemptBody {
                at: crate::clock::rfc3339(a.at_ms),
                error: a.error.clone(),
            })
            .collect(),
        replays: j.replays,
        created_at: crate::clock::rfc3339(j.created_at_ms),
        finished_at: j.finished_at_ms.map(crate::clock::rfc3339),
    }
}

/// Query of `GET /v1/dead-letters`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this job.
    pub starting_after: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Died at or after (RFC 3339).
    pub from: Option<String>,
    /// Died before (RFC 3339).
    pub to: Option<String>,
}

/// A page of dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    /// Dead letters, oldest first.
    pub data: Vec<DeadLetterResponse>,
    /// Whether to ask again.
    pub has_more: bool,
    /// Cursor.
    pub next_cursor: Option<String>,
}

/// Lists dead letters.
#[utoipa::path(
    get, path = "/v1/dead-letters", tag = "operations",
    params(ListParams),
    responses((status = 200, body = DeadLetterPage)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let limit = PageParams {
        limit: params.limit,
        starting_after: None,
    }
    .limit()?;
    let after =
        match &params.starting_after {
            Some(c) => Some(Id::parse(c, PREFIX).ok_or_else(|| {
                ApiError::invalid_field("starting_after", "is not a job id (job_…)")
            })?),
            None => None,
        };
    let from = time_param("from", &params.from)?;
    let to = time_param("to", &params.to)?;
    let tx = state.store.read()?;
    let (items, has_more) =
        jobs::dead_letters(&tx, tenant, params.kind.as_deref(), from, to, after, limit)?;
    let next_cursor = if has_more {
        items.last().map(|j| j.id.display(PREFIX))
    } else {
        None
    };
    Ok(Json(DeadLetterPage {
        data: items.iter().map(body).collect(),
        has_more,
        next_cursor,
    })
    .into_response())
}

/// A replay's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResponse {
    /// Always `dead_letter_replay`.
    pub object: &'static str,
    /// Jobs requeued.
    pub replayed: Vec<DeadLetterResponse>,
}

fn render_replay(output: &Result<Vec<Job>, ReplayError>) -> StoredResponse {
    match output {
        Ok(jobs) => json_response(
            StatusCode::OK,
            &ReplayResponse {
                object: "dead_letter_replay",
                replayed: jobs.iter().map(body).collect(),
            },
        ),
        Err(e) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string()).to_stored()
        }
    }
}

/// Requeues one dead letter with its attempts reset.
#[utoipa::path(
    post, path = "/v1/dead-letters/{id}/replay", tag = "operations",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 200, body = ReplayResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn replay_one(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    req: OptionalJsonBody<super::invoices::EmptyRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("dead letter", &id))?;
    let path = format!("/v1/dead-letters/{id}/replay");
    let response = idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &req.canonical,
        },
        ReplayDead {
            tenant,
            ids: vec![parsed],
            kind: None,
            died_from_ms: None,
            died_to_ms: None,
            limit: 1,
            now_ms: crate::clock::now_ms(),
        },
        render_replay,
    )
    .await?;
    state.jobs_wake.notify_one();
    Ok(response)
}

/// Body of a bulk replay.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkReplayRequest {
    /// Only this kind.
    pub kind: Option<String>,
    /// Died at or after (RFC 3339).
    pub from: Option<String>,
    /// Died before (RFC 3339).
    pub to: Option<String>,
    /// Most jobs (default 1000, at most 10000).
    pub limit: Option<u32>,
    /// `true` to replay every dead letter; required when no filter (`kind`, `from`, `to`) is
    /// given, so an empty body never replays everything.
    pub all: Option<bool>,
}

impl BulkReplayRequest {
    /// A replay must say what it replays: a filter, or `"all": true`.
    fn check_scope(&self) -> Result<(), ApiError> {
        let filtered = self.kind.is_some() || self.from.is_some() || self.to.is_some();
        if filtered || self.all == Some(true) {
            return Ok(());
        }
        Err(ApiError::invalid_field(
            "all",
            "give a filter (kind, from, to) or \"all\": true to replay every dead letter",
        ))
    }
}

/// Requeues every dead letter matching the filter (up to `limit`); a body without a filter must
/// say `"all": true`.
#[utoipa::path(
    post, path = "/v1/dead-letters/replay", tag = "operations",
    request_body = BulkReplayRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 200, body = ReplayResponse), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn replay_bulk(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    req: OptionalJsonBody<BulkReplayRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    req.value.check_scope()?;
    let limit = req.value.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 10000",
        ));
    }
    let command = ReplayDead {
        tenant,
        ids: Vec::new(),
        kind: req.value.kind.clone(),
        died_from_ms: time_param("from", &req.value.from)?,
        died_to_ms: time_param("to", &req.value.to)?,
        limit: limit as usize,
        now_ms: crate::clock::now_ms(),
    };
    let response = idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/dead-letters/replay",
            canonical_body: &req.canonical,
        },
        command,
        render_replay,
    )
    .await?;
    state.jobs_wake.notify_one();
    Ok(response)
}
