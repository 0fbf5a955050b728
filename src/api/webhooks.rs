//! Webhook endpoints, the receiver providers call, and the received-event log with replay.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{IdempotencyKey, JsonBody, OptionalJsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::pagination::PageParams;
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::jobs::{self, Job};
use crate::webhooks::endpoint::{
    self, CreateEndpoint, Endpoint, EndpointError, Provider, RotateSecret, Secret,
};
use crate::webhooks::event::{
    self, EventStatus, Receipt, Receive, Replay, ReplayError, WebhookEvent,
};
use crate::webhooks::signature::{self, SignatureError};

/// Body of `POST /v1/webhook-endpoints`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// `stripe` or `standard`.
    pub provider: String,
    /// The signing secret the provider uses. Required for `stripe`: Stripe's own signing secret
    /// (`whsec_…`, from its dashboard), since Stripe signs with a secret it generates. For
    /// `standard`, generated (`whsec_` + base64 of 32 random bytes) when absent.
    pub secret: Option<String>,
    /// A note for operators.
    pub description: Option<String>,
}

/// Body of the rotate endpoint.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// The new secret. Required for `stripe` endpoints (Stripe's new signing secret); generated
    /// for `standard` ones when absent.
    pub secret: Option<String>,
}

/// An endpoint as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointResponse {
    /// `whe_…`.
    pub id: String,
    /// Always `webhook_endpoint`.
    pub object: &'static str,
    /// stripe or standard.
    pub provider: &'static str,
    /// Path the provider posts to.
    pub url_path: String,
    /// The new secret: present only in the reply that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// A recognisable hint of the current secret.
    pub secret_hint: String,
    /// Secrets currently accepted (more than one during a rotation overlap).
    pub active_secrets: usize,
    /// When the previous secret stops being accepted, during an overlap.
    pub previous_secret_expires_at: Option<String>,
    /// Note.
    pub description: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

fn endpoint_body(e: &Endpoint, reveal: bool, now_ms: i64) -> EndpointResponse {
    EndpointResponse {
        id: e.id.display(endpoint::PREFIX),
        object: "webhook_endpoint",
        provider: e.provider.as_str(),
        url_path: format!("/v1/hooks/{}", e.id.display(endpoint::PREFIX)),
        secret: reveal
            .then(|| e.secrets.last().map(|s| s.value.clone()))
            .flatten(),
        secret_hint: e.secret_hint(),
        active_secrets: e.active_secrets(now_ms).len(),
        previous_secret_expires_at: e
            .secrets
            .iter()
            .filter_map(|s| s.expires_at_ms)
            .filter(|x| *x > now_ms)
            .max()
            .map(crate::clock::rfc3339),
        description: e.description.clone(),
        created_at: crate::clock::rfc3339(e.created_at_ms),
    }
}

fn validate_secret(provider: Provider, secret: &str) -> Result<(), ApiError> {
    if secret.len() < 16 || secret.len() > 256 || secret.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "secret",
            "must be 16-256 printable characters",
        ));
    }
    if provider == Provider::Stripe && !secret.starts_with("whsec_") {
        return Err(ApiError::invalid_field(
            "secret",
            "a stripe secret is Stripe's signing secret, starting with whsec_",
        ));
    }
    if provider == Provider::Standard
        && signature::standard_key(secret).is_none_or(|k| k.len() < 16)
    {
        return Err(ApiError::invalid_field(
            "secret",
            "a standard secret is whsec_ followed by base64 of at least 16 bytes",
        ));
    }
    Ok(())
}

fn new_secret(given: &Option<String>, provider: Provider) -> Result<String, ApiError> {
    match given {
        Some(s) => {
            validate_secret(provider, s)?;
            Ok(s.clone())
        }
        // Stripe signs with a secret only Stripe knows; one made up here would fail every
        // delivery.
        None if provider == Provider::Stripe => Err(ApiError::invalid_field(
            "secret",
            "is required for provider stripe: Stripe's signing secret (whsec_…) from its dashboard",
        )),
        None => signature::generate_secret().map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "no randomness for a secret",
            )
        }),
    }
}

fn render_created(e: &Endpoint) -> StoredResponse {
    json_response(
        StatusCode::CREATED,
        &endpoint_body(e, true, e.created_at_ms),
    )
}

/// Creates a webhook endpoint. The reply carries the secret once.
#[utoipa::path(
    post, path = "/v1/webhook-endpoints", tag = "webhooks",
    request_body = CreateEndpointRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 201, body = EndpointResponse), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn create_endpoint(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<CreateEndpointRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let req = &body.value;
    let provider = Provider::parse(&req.provider)
        .ok_or_else(|| ApiError::invalid_field("provider", "must be stripe or standard"))?;
    if req
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 500)
    {
        return Err(ApiError::invalid_field(
            "description",
            "must be at most 500 characters",
        ));
    }
    let secret = new_secret(&req.secret, provider)?;
    let now_ms = crate::clock::now_ms();
    let e = Endpoint {
        id: Id::generate_at(now_ms),
        tenant: tenant.0,
        provider,
        secrets: vec![Secret {
            value: secret,
            created_at_ms: now_ms,
            expires_at_ms: None,
        }],
        description: req.description.clone(),
        created_at_ms: now_ms,
    };
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/webhook-endpoints",
            canonical_body: &body.canonical,
        },
        CreateEndpoint { endpoint: e },
        render_created,
    )
    .await
}

/// Retrieves an endpoint (never its secret).
#[utoipa::path(
    get, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, body = EndpointResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_endpoint(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, endpoint::PREFIX)
        .ok_or_else(|| ApiError::missing("webhook endpoint", &id))?;
    let tx = state.store.read()?;
    let e = endpoint::get(&tx, tenant, parsed)?
        .ok_or_else(|| ApiError::missing("webhook endpoint", &id))?;
    Ok(Json(endpoint_body(&e, false, crate::clock::now_ms())).into_response())
}

/// The tenant's endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    /// Endpoints, oldest first.
    pub data: Vec<EndpointResponse>,
    /// Always false (endpoints are few).
    pub has_more: bool,
    /// Always null.
    pub next_cursor: Option<String>,
}

/// Lists endpoints.
#[utoipa::path(
    get, path = "/v1/webhook-endpoints", tag = "webhooks",
    responses((status = 200, body = EndpointList)),
    security(("api_key" = []))
)]
pub async fn list_endpoints(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
) -> Result<Response, ApiError> {
    let tx = state.store.read()?;
    let now_ms = crate::clock::now_ms();
    let data = endpoint::list(&tx, tenant)?
        .iter()
        .map(|e| endpoint_body(e, false, now_ms))
        .collect();
    Ok(Json(EndpointList {
        data,
        has_more: false,
        next_cursor: None,
    })
    .into_response())
}

fn render_rotated(output: &Result<Endpoint, EndpointError>) -> StoredResponse {
    match output {
        Ok(e) => {
            let now = e.secrets.last().map_or(0, |s| s.created_at_ms);
            json_response(StatusCode::OK, &endpoint_body(e, true, now))
        }
        Err(e) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string()).to_stored()
        }
    }
}

/// Rotates the secret: the reply carries the new one; the previous one stays valid for the
/// configured overlap.
#[utoipa::path(
    post, path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    request_body = RotateRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 200, body = EndpointResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<RotateRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = Id::parse(&id, endpoint::PREFIX)
        .ok_or_else(|| ApiError::missing("webhook endpoint", &id))?;
    let provider = {
        let tx = state.store.read()?;
        endpoint::get(&tx, tenant, parsed)?
            .ok_or_else(|| ApiError::missing("webhook endpoint", &id))?
            .provider
    };
    let secret = new_secret(&body.value.secret, provider)?;
    let path = format!("/v1/webhook-endpoints/{id}/rotate-secret");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        RotateSecret {
            tenant,
            id: parsed,
            secret,
            now_ms: crate::clock::now_ms(),
            overlap_ms: i64::try_from(
                state
                    .config
                    .webhooks
                    .rotation_overlap_secs
                    .saturating_mul(1000),
            )
            .unwrap_or(i64::MAX),
        },
        render_rotated,
    )
    .await
}

/// Acknowledgement of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceivedResponse {
    /// Always true.
    pub received: bool,
    /// `whv_…`.
    pub id: String,
    /// True when this delivery was seen before (nothing new was stored).
    pub duplicate: bool,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn rejected(e: SignatureError) -> ApiError {
    let (status, code, reason) = match &e {
        SignatureError::MissingHeader(_) => {
            (StatusCode::BAD_REQUEST, "signature_missing", "missing")
        }
        SignatureError::Malformed { .. } => {
            (StatusCode::BAD_REQUEST, "signature_malformed", "malformed")
        }
        SignatureError::Tolerance(_) => {
            (StatusCode::UNAUTHORIZED, "signature_expired", "tolerance")
        }
        SignatureError::NoMatch => (StatusCode::UNAUTHORIZED, "signature_invalid", "mismatch"),
    };
    metrics::counter!("tally_webhooks_rejected_total", "reason" => reason).increment(1);
    let field = match &e {
        SignatureError::MissingHeader(h) | SignatureError::Malformed { header: h, .. } => {
            h.to_string()
        }
        _ => "signature".to_string(),
    };
    ApiError::new(status, code, e.to_string()).field(field, e.to_string())
}

/// The receiver a provider calls. Authenticated by signature, not API key. A valid delivery is
/// stored with its processing job in one commit and acknowledged at once; a redelivery is
/// acknowledged without storing anything.
#[utoipa::path(
    post, path = "/v1/hooks/{endpoint_id}", tag = "webhooks",
    params(("endpoint_id" = String, Path)),
    request_body(content = String, description = "the provider's raw payload", content_type = "application/json"),
    responses(
        (status = 200, body = ReceivedResponse),
        (status = 400, description = "missing or malformed signature headers", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "signature invalid or outside the tolerance", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn receive(
    State(state): State<Arc<AppState>>,
    Path(endpoint_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&endpoint_id, endpoint::PREFIX)
        .ok_or_else(|| ApiError::missing("webhook endpoint", &endpoint_id))?;
    let endpoint = {
        let tx = state.store.read()?;
        endpoint::get_any(&tx, parsed)?
            .ok_or_else(|| ApiError::missing("webhook endpoint", &endpoint_id))?
    };
    let now_ms = crate::clock::now_ms();
    let secrets = endpoint.active_secrets(now_ms);
    let tolerance = i64::try_from(state.config.webhooks.tolerance_secs).unwrap_or(300);
    let now_s = now_ms.div_euclid(1000);
    let mut kept = Vec::new();
    match endpoint.provider {
        Provider::Stripe => {
            let t = signature::verify_stripe(
                header(&headers, "stripe-signature"),
                &body,
                &secrets,
                now_s,
                tolerance,
            )
            .map_err(rejected)?;
            kept.push(("stripe-signature-t".to_string(), t.to_string()));
        }
        Provider::Standard => {
            signature::verify_standard(
                header(&headers, "webhook-id"),
                header(&headers, "webhook-timestamp"),
                header(&headers, "webhook-signature"),
                &body,
                &secrets,
                now_s,
                tolerance,
            )
            .map_err(rejected)?;
            for name in ["webhook-id", "webhook-timestamp"] {
                if let Some(v) = header(&headers, name) {
                    kept.push((name.to_string(), v.to_string()));
                }
            }
        }
    }
    if let Some(ct) = header(&headers, "content-type") {
        kept.push(("content-type".into(), ct.to_string()));
    }
    // Signed, so the body is the provider's: still refuse what Tally cannot store as text.
    let payload = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::invalid_field(".", "the payload is not UTF-8"))?;
    let json: Option<serde_json::Value> = serde_json::from_str(&payload).ok();
    let event_type = json
        .as_ref()
        .and_then(|v| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("unknown")
        .chars()
        .take(255)
        .collect::<String>();
    let provider_id = match endpoint.provider {
        Provider::Stripe => json
            .as_ref()
            .and_then(|v| v.get("id"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
        Provider::Standard => header(&headers, "webhook-id").map(str::to_string),
    }
    .filter(|id| !id.is_empty() && id.len() <= 255);
    let window_ms = i64::try_from(
        state
            .config
            .webhooks
            .derived_window_secs
            .saturating_mul(1000),
    )
    .unwrap_or(i64::MAX);
    let (identity, lookup) = match provider_id {
        Some(id) => (format!("id:{id}"), vec![format!("id:{id}")]),
        None => {
            // No provider id: the body's hash within a time window, looking in the previous
            // window too so a retry straddling the edge is still caught.
            let hash = blake3::hash(&body).to_hex().to_string();
            let bucket = now_ms.div_euclid(window_ms);
            let current = format!("derived:{hash}:{bucket}");
            (
                current.clone(),
                vec![current, format!("derived:{hash}:{}", bucket - 1)],
            )
        }
    };
    let event = WebhookEvent {
        id: Id::generate_at(now_ms),
        tenant: endpoint.tenant,
        endpoint: endpoint.id,
        provider: endpoint.provider,
        provider_event_id: identity,
        event_type,
        payload,
        headers: kept,
        received_at_ms: now_ms,
        status: EventStatus::Received,
        job: Id::generate_at(now_ms),
        processed_at_ms: None,
        replays: 0,
    };
    let tenant = crate::store::TenantId(endpoint.tenant);
    let receipt = state
        .writer
        .submit(Receive {
            tenant,
            event,
            lookup,
        })
        .await?;
    let (id, duplicate) = match receipt {
        Receipt::New(id) => {
            state.jobs_wake.notify_one();
            metrics::counter!("tally_webhooks_received_total", "outcome" => "new").increment(1);
            (id, false)
        }
        Receipt::Duplicate(id) => {
            metrics::counter!("tally_webhooks_received_total", "outcome" => "duplicate")
                .increment(1);
            (id, true)
        }
    };
    Ok(Json(ReceivedResponse {
        received: true,
        id: id.display(event::PREFIX),
        duplicate,
    })
    .into_response())
}

/// One processing attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptBody {
    /// RFC 3339.
    pub at: String,
    /// Why it failed; null for a success (or one in progress).
    pub error: Option<String>,
}

/// A received event.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventResponse {
    /// `whv_…`.
    pub id: String,
    /// Always `webhook_event`.
    pub object: &'static str,
    /// `whe_…`.
    pub endpoint: String,
    /// stripe or standard.
    pub provider: &'static str,
    /// The provider's event id (`id:…`) or a derived identity (`derived:…`).
    pub provider_event_id: String,
    /// The payload's type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// received, processed, ignored, invalid_payload, retrying or dead.
    pub status: &'static str,
    /// The payload as received; null when it is not a JSON object (status `invalid_payload`).
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
    /// The received body as text, only when it is not a JSON object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
    /// The headers that matter.
    pub headers: std::collections::BTreeMap<String, String>,
    /// `job_…` processing it.
    pub job: String,
    /// Attempts of that job.
    pub attempts: Vec<AttemptBody>,
    /// Times replayed.
    pub replays: u32,
    /// RFC 3339.
    pub received_at: String,
    /// RFC 3339.
    pub processed_at: Option<String>,
}

fn event_body(e: &WebhookEvent, job: Option<&Job>) -> WebhookEventResponse {
    let payload = crate::webhooks::process::payload_object(&e.payload);
    WebhookEventResponse {
        id: e.id.display(event::PREFIX),
        object: "webhook_event",
        endpoint: e.endpoint.display(endpoint::PREFIX),
        provider: e.provider.as_str(),
        provider_event_id: e.provider_event_id.clone(),
        event_type: e.event_type.clone(),
        status: event::display_status(e, job),
        payload_text: payload.is_none().then(|| e.payload.clone()),
        payload,
        headers: e.headers.iter().cloned().collect(),
        job: e.job.display(jobs::PREFIX),
        attempts: job
            .map(|j| {
                j.log
                    .iter()
                    .map(|a| AttemptBody {
                        at: crate::clock::rfc3339(a.at_ms),
                        error: a.error.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        replays: e.replays,
        received_at: crate::clock::rfc3339(e.received_at_ms),
        processed_at: e.processed_at_ms.map(crate::clock::rfc3339),
    }
}

/// Retrieves a received event with its processing attempts.
#[utoipa::path(
    get, path = "/v1/webhook-events/{id}", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, body = WebhookEventResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_event(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed =
        Id::parse(&id, event::PREFIX).ok_or_else(|| ApiError::missing("webhook event", &id))?;
    let tx = state.store.read()?;
    let e =
        event::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("webhook event", &id))?;
    let job = jobs::get(&tx, e.job)?;
    Ok(Json(event_body(&e, job.as_ref())).into_response())
}

/// Query of `GET /v1/webhook-events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListEventsParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this event.
    pub starting_after: Option<String>,
    /// received, processed, ignored, invalid_payload, retrying or dead.
    pub status: Option<String>,
}

/// A page of received events.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventPage {
    /// Events, oldest first.
    pub data: Vec<WebhookEventResponse>,
    /// Whether to ask again.
    pub has_more: bool,
    /// Cursor.
    pub next_cursor: Option<String>,
}

/// Lists received events.
#[utoipa::path(
    get, path = "/v1/webhook-events", tag = "webhooks",
    params(ListEventsParams),
    responses((status = 200, body = WebhookEventPage), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list_events(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListEventsParams>,
) -> Result<Response, ApiError> {
    let limit = PageParams {
        limit: params.limit,
        starting_after: None,
    }
    .limit()?;
    if let Some(s) = &params.status {
        if !event::DISPLAY_STATUSES.contains(&s.as_str()) {
            return Err(ApiError::invalid_field(
                "status",
                format!("must be one of {}", event::DISPLAY_STATUSES.join(", ")),
            ));
        }
    }
    let after = match &params.starting_after {
        Some(c) => Some(Id::parse(c, event::PREFIX).ok_or_else(|| {
            ApiError::invalid_field("starting_after", "is not a webhook event id (whv_…)")
        })?),
        None => None,
    };
    let tx = state.store.read()?;
    let (items, has_more) = event::list(&tx, tenant, after, limit, params.status.as_deref())?;
    let next_cursor = if has_more {
        items.last().map(|(e, _)| e.id.display(event::PREFIX))
    } else {
        None
    };
    Ok(Json(WebhookEventPage {
        data: items
            .iter()
            .map(|(e, j)| event_body(e, j.as_ref()))
            .collect(),
        has_more,
        next_cursor,
    })
    .into_response())
}

fn render_replay(output: &Result<WebhookEvent, ReplayError>) -> StoredResponse {
    match output {
        Ok(e) => json_response(StatusCode::OK, &event_body(e, None)),
        Err(e @ ReplayError::Missing(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string()).to_stored()
        }
        Err(e @ ReplayError::Queued(_)) => {
            ApiError::new(StatusCode::CONFLICT, "already_queued", e.to_string()).to_stored()
        }
    }
}

/// Re-runs processing from the durable record. Handlers are idempotent, so replaying a
/// processed event has no second effect.
#[utoipa::path(
    post, path = "/v1/webhook-events/{id}/replay", tag = "webhooks",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = WebhookEventResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "already_queued", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn replay_event(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<super::invoices::EmptyRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed =
        Id::parse(&id, event::PREFIX).ok_or_else(|| ApiError::missing("webhook event", &id))?;
    let now_ms = crate::clock::now_ms();
    let path = format!("/v1/webhook-events/{id}/replay");
    let response = idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        Replay {
            tenant,
            id: parsed,
            job: Id::generate_at(now_ms),
            now_ms,
        },
        render_replay,
    )
    .await?;
    state.jobs_wake.notify_one();
    Ok(response)
}
