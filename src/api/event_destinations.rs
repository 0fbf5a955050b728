//! Event destinations (where a tenant's outbound events go) and the deliveries of one
//! notification: what was attempted, and resending it under the same id.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{IdempotencyKey, JsonBody, OptionalJsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::pagination::{Page, PageParams};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::notifications::catalogue;
use crate::notifications::destination::{Destination, DestinationStatus, Secret, PREFIX};
use crate::notifications::destinations::{
    self, CreateDestination, DestinationError, Resend, Resent, RotateDestinationSecret,
    UpdateDestination, MAX_EVENT_TYPES,
};
use crate::notifications::outbox::{self, Delivery};
use crate::webhooks::signature;

/// Longest description.
const MAX_DESCRIPTION_CHARS: usize = 500;

/// Body of `POST /v1/event-destinations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDestinationRequest {
    /// `https://…` (`http://` only with `notifications.allow_http`); must not resolve to a
    /// private address unless `notifications.allow_private_targets`.
    pub url: String,
    /// Catalogue types, or `["*"]` for every type.
    pub event_types: Vec<String>,
    /// A note for operators (at most 500 characters).
    pub description: Option<String>,
}

/// Body of `POST /v1/event-destinations/{id}`: absent fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDestinationRequest {
    /// New URL, checked like at creation.
    pub url: Option<String>,
    /// New event types.
    pub event_types: Option<Vec<String>>,
    /// `enabled` or `disabled`; enabling forgets the failure streak.
    pub status: Option<String>,
    /// New description; `null` clears it.
    pub description: Option<String>,
}

/// A destination as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationResponse {
    /// `evd_…`.
    pub id: String,
    /// Always `event_destination`.
    pub object: &'static str,
    /// Where events are POSTed.
    pub url: String,
    /// Catalogue types, or `["*"]`.
    pub event_types: Vec<String>,
    /// Note.
    pub description: Option<String>,
    /// `enabled` or `disabled`.
    pub status: &'static str,
    /// The signing secret: present only in the replies that create or rotate it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Secrets currently signing (two during a rotation overlap).
    pub signing_secrets: usize,
    /// When the previous secret stops signing, during an overlap.
    pub previous_secret_expires_at: Option<String>,
    /// Since when every delivery has failed (null while the last one succeeded).
    pub failing_since: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

fn destination_body(d: &Destination, reveal: bool, now_ms: i64) -> DestinationResponse {
    DestinationResponse {
        id: d.id.display(PREFIX),
        object: "event_destination",
        url: d.url.clone(),
        event_types: d.event_types.clone(),
        description: d.description.clone(),
        status: d.status.as_str(),
        secret: reveal
            .then(|| d.secrets.last().map(|s| s.value.clone()))
            .flatten(),
        signing_secrets: d.signing_secrets(now_ms).len(),
        previous_secret_expires_at: d
            .secrets
            .iter()
            .filter_map(|s| s.expires_at_ms)
            .filter(|x| *x > now_ms)
            .max()
            .map(crate::clock::rfc3339),
        failing_since: d.failing_since_ms.map(crate::clock::rfc3339),
        created_at: crate::clock::rfc3339(d.created_at_ms),
        updated_at: crate::clock::rfc3339(d.updated_at_ms),
    }
}

/// Checks a URL's form and, unless private targets are allowed, where it resolves.
async fn checked_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    let settings = &state.config.notifications;
    let parsed = destinations::check_url(url, settings.allow_http)
        .map_err(|e| ApiError::invalid_field("url", e.to_string()))?;
    if !settings.allow_private_targets {
        destinations::check_target(&parsed)
            .await
            .map_err(|e| ApiError::invalid_field("url", e.to_string()))?;
    }
    Ok(url.to_string())
}

fn checked_types(types: &[String]) -> Result<Vec<String>, ApiError> {
    if types.is_empty() {
        return Err(ApiError::invalid_field(
            "event_types",
            "must list at least one type, or [\"*\"] for all",
        ));
    }
    if types.len() > MAX_EVENT_TYPES {
        return Err(ApiError::invalid_field(
            "event_types",
            format!("must list at most {MAX_EVENT_TYPES} types"),
        ));
    }
    if types.iter().any(|t| t == "*") && types.len() > 1 {
        return Err(ApiError::invalid_field(
            "event_types",
            "\"*\" stands alone: it already means every type",
        ));
    }
    for (i, t) in types.iter().enumerate() {
        if t != "*" && !catalogue::is_known(t) {
            return Err(ApiError::invalid_field(
                format!("event_types[{i}]"),
                format!("{t:?} is not an event type (see the catalogue in the README)"),
            ));
        }
    }
    let mut unique: Vec<String> = Vec::with_capacity(types.len());
    for t in types {
        if !unique.contains(t) {
            unique.push(t.clone());
        }
    }
    Ok(unique)
}

fn checked_description(d: &Option<String>) -> Result<(), ApiError> {
    if d.as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        return Err(ApiError::invalid_field(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(())
}

fn new_secret() -> Result<String, ApiError> {
    signature::generate_secret().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "no randomness for a secret",
        )
    })
}

fn parse_id(id: &str) -> Result<Id, ApiError> {
    Id::parse(id, PREFIX).ok_or_else(|| ApiError::missing("event destination", id))
}

fn render_created(output: &Result<Destination, DestinationError>) -> StoredResponse {
    match output {
        Ok(d) => json_response(
            StatusCode::CREATED,
            &destination_body(d, true, d.created_at_ms),
        ),
        Err(e) => missing(e).to_stored(),
    }
}

/// Creates an event destination. The reply carries its signing secret, once.
#[utoipa::path(
    post, path = "/v1/event-destinations", tag = "events-out",
    request_body = CreateDestinationRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 201, body = DestinationResponse), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 409, description = "destination_limit", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<CreateDestinationRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let req = &body.value;
    let url = checked_url(&state, &req.url).await?;
    let event_types = checked_types(&req.event_types)?;
    checked_description(&req.description)?;
    let now_ms = crate::clock::now_ms();
    let d = Destination {
        id: Id::generate_at(now_ms),
        tenant: tenant.0,
        url,
        event_types,
        description: req.description.clone(),
        status: DestinationStatus::Enabled,
        secrets: vec![Secret {
            value: new_secret()?,
            created_at_ms: now_ms,
            expires_at_ms: None,
        }],
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        failing_since_ms: None,
    };
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/event-destinations",
            canonical_body: &body.canonical,
        },
        CreateDestination { destination: d },
        render_created,
    )
    .await
}

/// Retrieves a destination (never its secret).
#[utoipa::path(
    get, path = "/v1/event-destinations/{id}", tag = "events-out",
    params(("id" = String, Path)),
    responses((status = 200, body = DestinationResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = parse_id(&id)?;
    let tx = state.store.read()?;
    let d = destinations::get(&tx, tenant, parsed)?
        .ok_or_else(|| ApiError::missing("event destination", &id))?;
    Ok(Json(destination_body(&d, false, crate::clock::now_ms())).into_response())
}

/// A page of destinations.
#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationPage {
    /// Destinations, oldest first.
    pub data: Vec<DestinationResponse>,
    /// Whether another page follows.
    pub has_more: bool,
    /// Pass as `starting_after` for the next page.
    pub next_cursor: Option<String>,
}

/// Lists destinations, oldest first.
#[utoipa::path(
    get, path = "/v1/event-destinations", tag = "events-out",
    params(PageParams),
    responses((status = 200, body = DestinationPage)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(page): Query<PageParams>,
) -> Result<Response, ApiError> {
    let limit = page.limit()?;
    let after = page.after(PREFIX, "an event destination")?;
    let tx = state.store.read()?;
    let (items, has_more) = destinations::list(&tx, tenant, after, limit)?;
    let next_cursor = if has_more {
        items.last().map(|d| d.id.display(PREFIX))
    } else {
        None
    };
    let now_ms = crate::clock::now_ms();
    Ok(Json(Page {
        data: items
            .iter()
            .map(|d| destination_body(d, false, now_ms))
            .collect::<Vec<_>>(),
        has_more,
        next_cursor,
    })
    .into_response())
}

fn render_changed(output: &Result<Destination, DestinationError>) -> StoredResponse {
    match output {
        Ok(d) => json_response(StatusCode::OK, &destination_body(d, false, d.updated_at_ms)),
        Err(e) => missing(e).to_stored(),
    }
}

fn render_rotated(output: &Result<Destination, DestinationError>) -> StoredResponse {
    match output {
        Ok(d) => json_response(StatusCode::OK, &destination_body(d, true, d.updated_at_ms)),
        Err(e) => missing(e).to_stored(),
    }
}

fn missing(e: &DestinationError) -> ApiError {
    match e {
        DestinationError::NoDestination => ApiError::new(
            StatusCode::CONFLICT,
            "no_destination",
            "the notification was not meant for any destination; name one in destination",
        )
        .field("destination", e.to_string()),
        DestinationError::MissingDestination(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string())
                .field("destination", e.to_string())
        }
        DestinationError::MissingNotification(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string())
        }
        DestinationError::TooMany(_) => {
            ApiError::new(StatusCode::CONFLICT, "destination_limit", e.to_string())
        }
    }
}

/// Updates a destination's URL, event types, status or description.
#[utoipa::path(
    post, path = "/v1/event-destinations/{id}", tag = "events-out",
    request_body = UpdateDestinationRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 200, body = DestinationResponse), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = parse_id(&id)?;
    let clears_description = body
        .value
        .get("description")
        .is_some_and(serde_json::Value::is_null);
    let req: UpdateDestinationRequest = super::extract::deserialize_value(body.value.clone())?;
    let url = match &req.url {
        Some(u) => Some(checked_url(&state, u).await?),
        None => None,
    };
    let event_types = req.event_types.as_deref().map(checked_types).transpose()?;
    let status = match req.status.as_deref() {
        None => None,
        Some("enabled") => Some(DestinationStatus::Enabled),
        Some("disabled") => Some(DestinationStatus::Disabled),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "status",
                "must be enabled or disabled",
            ))
        }
    };
    checked_description(&req.description)?;
    let description = if clears_description {
        Some(None)
    } else {
        req.description.map(Some)
    };
    {
        let tx = state.store.read()?;
        if destinations::get(&tx, tenant, parsed)?.is_none() {
            return Err(ApiError::missing("event destination", &id));
        }
    }
    let path = format!("/v1/event-destinations/{id}");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        UpdateDestination {
            tenant,
            id: parsed,
            url,
            event_types,
            status,
            description,
            now_ms: crate::clock::now_ms(),
        },
        render_changed,
    )
    .await
}

/// Rotates the signing secret: the reply carries the new one; the previous one keeps signing
/// beside it for `notifications.rotation_overlap_secs`.
#[utoipa::path(
    post, path = "/v1/event-destinations/{id}/rotate-secret", tag = "events-out",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 200, body = DestinationResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<EmptyRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = parse_id(&id)?;
    {
        let tx = state.store.read()?;
        if destinations::get(&tx, tenant, parsed)?.is_none() {
            return Err(ApiError::missing("event destination", &id));
        }
    }
    let path = format!("/v1/event-destinations/{id}/rotate-secret");
    let overlap_ms = i64::try_from(
        state
            .config
            .notifications
            .rotation_overlap_secs
            .saturating_mul(1000),
    )
    .unwrap_or(i64::MAX);
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        RotateDestinationSecret {
            tenant,
            id: parsed,
            secret: new_secret()?,
            now_ms: crate::clock::now_ms(),
            overlap_ms,
        },
        render_rotated,
    )
    .await
}

/// A body with no fields (bodiless actions).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryAttemptBody {
    /// RFC 3339: when it started.
    pub at: String,
    /// The HTTP status, when one came back.
    pub status_code: Option<u16>,
    /// Why it failed without a usable answer (timeout, refused, private target…).
    pub error: Option<String>,
    /// How long it took.
    pub latency_ms: u64,
    /// The first KiB of the response body.
    pub response_excerpt: String,
}

/// One notification's delivery to one destination.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryBody {
    /// `evd_…`.
    pub destination: String,
    /// `pending`, `delivered` or `failed`.
    pub status: &'static str,
    /// Every attempt, oldest first.
    pub attempts: Vec<DeliveryAttemptBody>,
}

/// The deliveries of a notification.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// `ntf_…`.
    pub notification: String,
    /// One row per destination.
    pub data: Vec<DeliveryBody>,
}

fn delivery_body(d: &Delivery) -> DeliveryBody {
    DeliveryBody {
        destination: d.destination.display(PREFIX),
        status: d.status.as_str(),
        attempts: d
            .attempts
            .iter()
            .map(|a| DeliveryAttemptBody {
                at: crate::clock::rfc3339(a.at_ms),
                status_code: a.status_code,
                error: a.error.clone(),
                latency_ms: a.latency_ms,
                response_excerpt: a.response_excerpt.clone(),
            })
            .collect(),
    }
}

fn parse_notification(id: &str) -> Result<Id, ApiError> {
    Id::parse(id, outbox::PREFIX).ok_or_else(|| ApiError::missing("notification", id))
}

/// Every delivery of a notification, one row per destination, with every attempt.
#[utoipa::path(
    get, path = "/v1/notifications/{id}/deliveries", tag = "events-out",
    params(("id" = String, Path)),
    responses((status = 200, body = DeliveryList), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = parse_notification(&id)?;
    let tx = state.store.read()?;
    if outbox::get(&tx, tenant, parsed)?.is_none() {
        return Err(ApiError::missing("notification", &id));
    }
    let rows = outbox::deliveries(&tx, tenant, parsed)?;
    Ok(Json(DeliveryList {
        notification: parsed.display(outbox::PREFIX),
        data: rows.iter().map(delivery_body).collect(),
    })
    .into_response())
}

/// Body of the resend endpoint.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendRequest {
    /// Only this destination (`evd_…`); every destination the notification was meant for
    /// when absent.
    pub destination: Option<String>,
}

/// What a resend did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResendResponse {
    /// `ntf_…`: the `webhook-id` the new attempts carry, as before.
    pub notification: String,
    /// Every destination the resend was for (`queued` and `live` together).
    pub destinations: Vec<String>,
    /// The destinations a new delivery job was queued for (their delivery had finished).
    pub queued: Vec<String>,
    /// The destinations whose delivery was still live (queued, in flight or retrying): it
    /// goes on under its own job and nothing was added.
    pub live: Vec<String>,
}

/// Queues a new delivery of a notification, with the same `webhook-id`.
#[utoipa::path(
    post, path = "/v1/notifications/{id}/resend", tag = "events-out",
    request_body = ResendRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 202, body = ResendResponse),
        (status = 404, description = "no such notification or destination", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "no_destination: the notification was meant for none", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn resend(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<ResendRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = parse_notification(&id)?;
    let destination = match &body.value.destination {
        Some(d) => Some(Id::parse(d, PREFIX).ok_or_else(|| {
            ApiError::invalid_field("destination", "is not an event destination id (evd_…)")
        })?),
        None => None,
    };
    let path = format!("/v1/notifications/{id}/resend");
    let answer = idempotent::execute(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        Resend {
            tenant,
            notification: parsed,
            destination,
            now_ms: crate::clock::now_ms(),
        },
        render_resent,
    )
    .await?;
    if !answer.replayed {
        state.jobs_wake.notify_one();
    }
    Ok(idempotent::respond(answer.stored, answer.replayed))
}

fn render_resent(output: &Result<Resent, DestinationError>) -> StoredResponse {
    let shown = |ids: &[Id]| ids.iter().map(|d| d.display(PREFIX)).collect::<Vec<_>>();
    match output {
        Ok(r) => json_response(
            StatusCode::ACCEPTED,
            &ResendResponse {
                notification: r.notification.display(outbox::PREFIX),
                destinations: shown(&[r.queued.as_slice(), r.live.as_slice()].concat()),
                queued: shown(&r.queued),
                live: shown(&r.live),
            },
        ),
        Err(e) => missing(e).to_stored(),
    }
}
