//! `/v1/events`: usage ingest with a result per event, and event reads.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{read_limited, IdempotencyKey, Query, Tenant};
use super::idempotent::{self, json_response};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::customers;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::ingest::event::{self, Event, Filter, Identity, IngestBatch, Rejection, Status, PREFIX};
use crate::ingest::parse::{self, Format};
use crate::store::TenantId;

/// One event's outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResult {
    /// Position in the request.
    pub index: usize,
    /// `accepted`, `duplicate`, `conflict` or `rejected`.
    pub status: &'static str,
    /// The stored event (the original one for duplicates and conflicts); null when rejected.
    pub id: Option<String>,
    /// Whether its period had already been invoiced (billed later as an adjustment).
    pub late: bool,
    /// Why it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

/// Reply of `POST /v1/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestResponse {
    /// One result per input event, in order.
    pub results: Vec<EventResult>,
}

fn rejection_problem(r: &Rejection) -> Problem {
    rejection_error(r).problem()
}

fn results(statuses: &[Status]) -> IngestResponse {
    let results = statuses
        .iter()
        .enumerate()
        .map(|(index, status)| match status {
            Status::Accepted { id, late } => EventResult {
                index,
                status: "accepted",
                id: Some(id.display(PREFIX)),
                late: *late,
                error: None,
            },
            Status::Duplicate { id, late } => EventResult {
                index,
                status: "duplicate",
                id: Some(id.display(PREFIX)),
                late: *late,
                error: None,
            },
            Status::Conflict { id, late } => EventResult {
                index,
                status: "conflict",
                id: Some(id.display(PREFIX)),
                late: *late,
                error: None,
            },
            Status::Rejected(r) => EventResult {
                index,
                status: "rejected",
                id: None,
                late: false,
                error: Some(rejection_problem(r)),
            },
        })
        .collect();
    IngestResponse { results }
}

#[allow(clippy::ptr_arg)] // The signature is fixed by `Render<Vec<Status>>`.
fn render(statuses: &Vec<Status>) -> StoredResponse {
    json_response(StatusCode::OK, &results(statuses))
}

/// A binary-mode CloudEvent is one event carried by the request itself: its rejection is the
/// reply's status, so a broker never counts a refused event as delivered.
#[allow(clippy::ptr_arg)] // The signature is fixed by `Render<Vec<Status>>`.
fn render_binary(statuses: &Vec<Status>) -> StoredResponse {
    match statuses.as_slice() {
        [Status::Rejected(r)] => rejection_error(r).to_stored(),
        _ => render(statuses),
    }
}

fn rejection_error(r: &Rejection) -> ApiError {
    let status = match r.code {
        "unknown_customer" | "invalid_meter_value" | "value_out_of_range" => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, r.code, r.detail.clone()).field(r.field.clone(), r.detail.clone())
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// How the request frames its events: the body's format, and whether the CloudEvent's
/// attributes travel in `ce-` headers (binary mode: any `ce-` header with a JSON body).
fn format_of(headers: &HeaderMap) -> Result<(Format, bool), ApiError> {
    let binary = headers.keys().any(|name| name.as_str().starts_with("ce-"));
    match media_type(headers).as_deref() {
        Some("application/cloudevents+json") => Ok((Format::CloudEvent, false)),
        Some("application/cloudevents-batch+json") => Ok((Format::CloudEventBatch, false)),
        Some(m) if binary && (m == "application/json" || m.ends_with("+json")) => {
            Ok((Format::CloudEvent, true))
        }
        Some("application/json") => Ok((Format::Native, false)),
        _ if binary => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a binary-mode CloudEvent's data must be JSON: send it as application/json",
        )),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json, application/cloudevents+json or application/cloudevents-batch+json",
        )),
    }
}

fn parse_json(raw: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(raw).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// The body as one JSON value: for binary mode, the structured CloudEvent its headers and body
/// describe (an empty body is an event without data).
fn body_value(
    headers: &HeaderMap,
    raw: &[u8],
    binary: bool,
) -> Result<serde_json::Value, ApiError> {
    if !binary {
        return parse_json(raw);
    }
    let data = if raw.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_json(raw)?)
    };
    let attributes = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()));
    parse::binary_event(attributes, data).map_err(|e| ApiError::invalid_field(e.header, e.detail))
}

/// Ingests one event, a `{"events": [...]}` batch, or CloudEvents (structured, batch or binary
/// mode). Replies after the accepted events are durable, with one result per event; a
/// binary-mode event that is rejected is answered with its problem instead.
#[utoipa::path(
    post, path = "/v1/events", tag = "events",
    request_body(
        description = "A native event or {\"events\": [...]}; a structured CloudEvent; a CloudEvents batch (may be empty); or, in binary mode, `ce-specversion`, `ce-id`, `ce-source`, `ce-type`, `ce-subject` and optional `ce-time` headers with the event's data as application/json",
        content(
            (serde_json::Value = "application/json"),
            (serde_json::Value = "application/cloudevents+json"),
            (Vec<serde_json::Value> = "application/cloudevents-batch+json"),
        )
    ),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "optional: makes the whole request replayable"),
        ("ce-specversion" = Option<String>, Header, description = "binary mode: `1.0`"),
        ("ce-id" = Option<String>, Header, description = "binary mode, required: the event's id (1-255 bytes)"),
        ("ce-source" = Option<String>, Header, description = "binary mode, required: the id's namespace (1-255 bytes)"),
        ("ce-type" = Option<String>, Header, description = "binary mode, required: the event type (1-255 bytes)"),
        ("ce-subject" = Option<String>, Header, description = "binary mode, required: the customer's external id (1-255 bytes)"),
        ("ce-time" = Option<String>, Header, format = DateTime, description = "binary mode, optional: when the usage happened (RFC 3339); receipt time otherwise"),
    ),
    responses(
        (status = 200, body = IngestResponse),
        (status = 400, description = "not an event or a batch; a binary-mode event with bad ce- headers or rejected", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "a binary-mode event rejected by the writer (unknown customer, meter value)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn ingest(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    request: Request,
) -> Result<Response, ApiError> {
    let (format, binary) = format_of(request.headers())?;
    let limit = usize::try_from(state.config.http.body_limit_bytes).unwrap_or(usize::MAX);
    let (parts, body) = request.into_parts();
    let raw = read_limited(body, limit).await?;
    let value = body_value(&parts.headers, &raw, binary)?;
    let canonical = key
        .0
        .as_ref()
        .map(|_| crate::identity::canonical_json(&value));
    let now_ms = crate::clock::now_ms();
    let ctx = parse::Context {
        tenant,
        now_ms,
        config: &state.config.ingest,
    };
    let events = parse::parse_body(value, format, &ctx).map_err(|e| {
        let field = match e {
            parse::ShapeError::Shape(_) => ".",
            _ => "events",
        };
        ApiError::invalid_field(field, e.to_string())
    })?;
    if binary {
        if let [Err(rejection)] = events.as_slice() {
            return Err(rejection_error(rejection));
        }
    }
    metrics::counter!("tally_events_received_total").increment(events.len() as u64);
    let command = IngestBatch {
        tenant,
        events,
        now_ms,
        idempotency_key: key.0.clone(),
    };
    let render = if binary { render_binary } else { render };
    match (key.0, canonical) {
        (Some(key), Some(canonical)) => {
            let answer = idempotent::execute(
                &state,
                idempotent::Request {
                    tenant,
                    key,
                    method: "POST",
                    path: "/v1/events",
                    canonical_body: &canonical,
                },
                command,
                render,
            )
            .await?;
            if !answer.replayed {
                count_stored_outcomes(&answer.stored);
            }
            Ok(idempotent::respond(answer.stored, answer.replayed))
        }
        _ => {
            let all_rejected = command.events.iter().all(Result::is_err);
            let statuses = if all_rejected {
                // Nothing to write: answer without queueing behind the writer.
                command
                    .events
                    .into_iter()
                    .filter_map(Result::err)
                    .map(Status::Rejected)
                    .collect()
            } else {
                state.writer.submit(command).await?
            };
            count_outcomes(&statuses);
            let mut response = idempotent::respond(render(&statuses), false);
            // Without a key there is nothing to replay: no replay marker.
            response.headers_mut().remove(idempotent::REPLAYED_HEADER);
            Ok(response)
        }
    }
}

fn count_outcomes(statuses: &[Status]) {
    for s in statuses {
        let outcome = match s {
            Status::Accepted { .. } => "accepted",
            Status::Duplicate { .. } => "duplicate",
            Status::Conflict { .. } => "conflict",
            Status::Rejected(_) => "rejected",
        };
        metrics::counter!("tally_events_total", "outcome" => outcome).increment(1);
    }
}

/// Counts the outcomes of a keyed request's first execution, which reach the handler only as
/// the stored reply: its results, or the one rejected binary-mode event's problem.
fn count_stored_outcomes(stored: &StoredResponse) {
    #[derive(Deserialize)]
    struct Reply {
        results: Vec<Outcome>,
    }
    #[derive(Deserialize)]
    struct Outcome {
        status: String,
    }
    let statuses: Vec<String> = match serde_json::from_slice::<Reply>(&stored.body) {
        Ok(reply) => reply.results.into_iter().map(|r| r.status).collect(),
        Err(_) if stored.status >= 400 => vec!["rejected".to_string()],
        Err(_) => Vec::new(),
    };
    for status in statuses {
        let outcome = match status.as_str() {
            "accepted" => "accepted",
            "duplicate" => "duplicate",
            "conflict" => "conflict",
            _ => "rejected",
        };
        metrics::counter!("tally_events_total", "outcome" => outcome).increment(1);
    }
}

/// How an event was identified.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityResponse {
    /// `stable` (client id) or `derived` (payload hash within a window).
    pub kind: &'static str,
    /// The source namespace.
    pub source: String,
    /// The client's id (stable identities).
    pub id: Option<String>,
    /// The window (derived identities).
    pub window_secs: Option<i64>,
}

/// A stored event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResponse {
    /// `evt_…`.
    pub id: String,
    /// Always `event`.
    pub object: &'static str,
    /// Identity.
    pub identity: IdentityResponse,
    /// The customer's external id.
    pub customer: String,
    /// `cus_…`.
    pub customer_id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// When the usage happened (RFC 3339).
    pub timestamp: String,
    /// When Tally stored it.
    pub received_at: String,
    /// Properties as stored (canonical form).
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    /// Whether its period was already invoiced when it arrived.
    pub late: bool,
}

impl From<&Event> for EventResponse {
    fn from(e: &Event) -> Self {
        let identity = match &e.identity {
            Identity::Stable { id } => IdentityResponse {
                kind: "stable",
                source: e.source.clone(),
                id: Some(id.clone()),
                window_secs: None,
            },
            Identity::Derived { window_ms, .. } => IdentityResponse {
                kind: "derived",
                source: e.source.clone(),
                id: None,
                window_secs: Some(window_ms / 1000),
            },
        };
        Self {
            id: e.id.display(PREFIX),
            object: "event",
            identity,
            customer: e.customer_external_id.clone(),
            customer_id: e.customer.display(customers::PREFIX),
            event_type: e.event_type.clone(),
            timestamp: crate::clock::rfc3339(e.timestamp_ms),
            received_at: crate::clock::rfc3339(e.received_at_ms),
            properties: serde_json::from_str(&e.properties).unwrap_or(serde_json::Value::Null),
            late: e.late,
        }
    }
}

/// One event with what only a single read derives.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventDetail {
    /// The event.
    #[serde(flatten)]
    pub event: EventResponse,
    /// For a late event: the invoice (`inv_…`) that billed it, the first one not void of its
    /// customer issued after it arrived with a usage or adjustment line for a meter it feeds
    /// over its timestamp. Null while no invoice has billed it yet, when its arrival changed
    /// no billed quantity (so no line shows it), and for events that were not late.
    pub absorbed_by: Option<String>,
}

/// Retrieves an event; a late one names the invoice that billed it (`absorbed_by`).
#[utoipa::path(
    get, path = "/v1/events/{id}", tag = "events",
    params(("id" = String, Path)),
    responses((status = 200, body = EventDetail), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("event", &id))?;
    let tx = state.store.read()?;
    let e = event::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("event", &id))?;
    let absorbed_by = crate::billing::absorbed::absorbed_by(&tx, tenant, &e)?
        .map(|invoice| invoice.id.display(crate::billing::invoice::PREFIX));
    Ok(Json(EventDetail {
        event: EventResponse::from(&e),
        absorbed_by,
    })
    .into_response())
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListEventsParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this event id.
    pub starting_after: Option<String>,
    /// Customer: `cus_…` or external id.
    pub customer: Option<String>,
    /// Event type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Usage time at or after (RFC 3339).
    pub from: Option<String>,
    /// Usage time before (RFC 3339).
    pub to: Option<String>,
    /// `true`: only late events (their period was already invoiced when they arrived);
    /// `false`: only events that were not late.
    pub late: Option<bool>,
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// Events in receipt order.
    pub data: Vec<EventResponse>,
    /// Whether to ask again with `next_cursor`.
    pub has_more: bool,
    /// Cursor for the next page.
    pub next_cursor: Option<String>,
}

/// Resolves a `cus_…` id or an external id to a customer of the tenant.
pub fn resolve_customer(
    tx: &crate::store::ReadTxn,
    tenant: TenantId,
    reference: &str,
) -> Result<Option<customers::Customer>, ApiError> {
    if let Some(id) = Id::parse(reference, customers::PREFIX) {
        if let Some(c) = customers::get(tx, tenant, id)? {
            return Ok(Some(c));
        }
    }
    Ok(customers::by_external_id(tx, tenant, reference)?)
}

/// Parses an RFC 3339 query parameter.
pub fn time_param(field: &str, value: &Option<String>) -> Result<Option<i64>, ApiError> {
    match value {
        Some(text) => crate::clock::parse_rfc3339(text)
            .map(Some)
            .ok_or_else(|| ApiError::invalid_field(field, "must be an RFC 3339 timestamp")),
        None => Ok(None),
    }
}

/// Lists stored events in receipt order, filtered by customer, type, usage time (`from`/`to`)
/// and lateness. The filters scan rather than use an index: a sparse filter may return a short
/// (even empty) page with `has_more`, since each request examines at most 10,000 events.
#[utoipa::path(
    get, path = "/v1/events", tag = "events",
    params(ListEventsParams),
    responses((status = 200, body = EventPage), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListEventsParams>,
) -> Result<Response, ApiError> {
    let limit = super::pagination::PageParams {
        limit: params.limit,
        starting_after: None,
    }
    .limit()?;
    let after = match &params.starting_after {
        Some(c) => Some(Id::parse(c, PREFIX).ok_or_else(|| {
            ApiError::invalid_field("starting_after", "is not an event id (evt_…)")
        })?),
        None => None,
    };
    let tx = state.store.read()?;
    let customer = match &params.customer {
        Some(reference) => match resolve_customer(&tx, tenant, reference)? {
            Some(c) => Some(c.id),
            None => {
                return Ok(Json(EventPage {
                    data: Vec::new(),
                    has_more: false,
                    next_cursor: None,
                })
                .into_response())
            }
        },
        None => None,
    };
    let filter = Filter {
        customer,
        event_type: params.event_type.clone(),
        from_ms: time_param("from", &params.from)?,
        to_ms: time_param("to", &params.to)?,
        late: params.late,
    };
    let (items, cursor) = event::list(&tx, tenant, &filter, after, limit)?;
    Ok(Json(EventPage {
        data: items.iter().map(EventResponse::from).collect(),
        has_more: cursor.is_some(),
        next_cursor: cursor.map(|c| c.display(PREFIX)),
    })
    .into_response())
}
