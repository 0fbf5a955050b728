//! `/v1/event-anomalies`: the duplicates and conflicts ingest answered, each with its original.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::{resolve_customer, EventResponse};
use super::extract::{Query, Tenant};
use super::pagination::PageParams;
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::customers;
use crate::id::Id;
use crate::ingest::anomaly::{self, Anomaly, AnomalyKind, Filter, PREFIX};
use crate::ingest::event;

/// Query of `GET /v1/event-anomalies`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListAnomaliesParams {
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// After this anomaly (`eva_…`, the previous page's `next_cursor`): older ones.
    pub starting_after: Option<String>,
    /// `duplicate` or `conflict`.
    pub kind: Option<String>,
    /// The original event's customer: `cus_…` or external id.
    pub customer: Option<String>,
    /// The original event (`evt_…`): its duplicates and conflicts.
    pub event: Option<String>,
}

/// The received event's identity.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceivedIdentity {
    /// `stable` (client id) or `derived` (payload hash within a window).
    pub kind: &'static str,
    /// The source namespace.
    pub source: String,
    /// The client's id (stable identities).
    pub id: Option<String>,
}

/// A duplicate or conflicting event as received, with the original it matched.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnomalyResponse {
    /// `eva_…`, ordered by receipt.
    pub id: String,
    /// Always `event_anomaly`.
    pub object: &'static str,
    /// `duplicate` (same payload: nothing new) or `conflict` (a different payload under an id
    /// already used: the original stands, this one was not counted).
    pub kind: &'static str,
    /// The original event's id (`evt_…`), as the ingest reply named it.
    pub original_id: String,
    /// The original event; null if it is no longer stored.
    pub original: Option<EventResponse>,
    /// The received event's identity.
    pub identity: ReceivedIdentity,
    /// The customer's external id as the received event named it.
    pub customer: String,
    /// The original's customer (`cus_…`).
    pub customer_id: String,
    /// The received event's type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The received event's usage time (RFC 3339).
    pub timestamp: String,
    /// When it was received (RFC 3339).
    pub received_at: String,
    /// Conflicts only: the received properties (canonical form).
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    /// Conflicts only: the received payload's digest (hex).
    pub digest: Option<String>,
    /// The request's `Idempotency-Key`, if it had one.
    pub idempotency_key: Option<String>,
}

/// A page of anomalies.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnomalyPage {
    /// Anomalies, newest first.
    pub data: Vec<AnomalyResponse>,
    /// Whether to ask again with `next_cursor`.
    pub has_more: bool,
    /// Cursor for the next (older) page.
    pub next_cursor: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn response(a: &Anomaly, original: Option<&event::Event>) -> AnomalyResponse {
    AnomalyResponse {
        id: a.id.display(PREFIX),
        object: "event_anomaly",
        kind: a.kind.as_str(),
        original_id: a.original.display(event::PREFIX),
        original: original.map(EventResponse::from),
        identity: ReceivedIdentity {
            kind: if a.client_id.is_some() {
                "stable"
            } else {
                "derived"
            },
            source: a.source.clone(),
            id: a.client_id.clone(),
        },
        customer: a.customer_external_id.clone(),
        customer_id: a.customer.display(customers::PREFIX),
        event_type: a.event_type.clone(),
        timestamp: crate::clock::rfc3339(a.timestamp_ms),
        received_at: crate::clock::rfc3339(a.received_at_ms),
        properties: a
            .properties
            .as_deref()
            .map(|p| serde_json::from_str(p).unwrap_or(serde_json::Value::Null)),
        digest: a.digest.as_ref().map(|d| hex(d)),
        idempotency_key: a.idempotency_key.clone(),
    }
}

fn empty_page() -> Response {
    Json(AnomalyPage {
        data: Vec::new(),
        has_more: false,
        next_cursor: None,
    })
    .into_response()
}

/// Lists the duplicates and conflicts ingest answered, newest first, each with its original
/// event. Kept as long as idempotency keys (`idempotency.retention_secs`). The filters scan: a
/// sparse filter may return a short (even empty) page with `has_more`, since each request
/// examines at most 10,000 anomalies.
#[utoipa::path(
    get, path = "/v1/event-anomalies", tag = "events",
    params(ListAnomaliesParams),
    responses((status = 200, body = AnomalyPage), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListAnomaliesParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        starting_after: params.starting_after.clone(),
    };
    let limit = page.limit()?;
    let before = page.after(PREFIX, "an event anomaly")?;
    let kind =
        match params.kind.as_deref() {
            Some(text) => Some(AnomalyKind::parse(text).ok_or_else(|| {
                ApiError::invalid_field("kind", "must be `duplicate` or `conflict`")
            })?),
            None => None,
        };
    let original = match params.event.as_deref() {
        Some(text) => Some(
            Id::parse(text, event::PREFIX)
                .ok_or_else(|| ApiError::invalid_field("event", "is not an event id (evt_…)"))?,
        ),
        None => None,
    };
    let tx = state.store.read()?;
    let customer = match &params.customer {
        Some(reference) => match resolve_customer(&tx, tenant, reference)? {
            Some(c) => Some(c.id),
            None => return Ok(empty_page()),
        },
        None => None,
    };
    let filter = Filter {
        kind,
        customer,
        original,
    };
    let (items, cursor) = anomaly::list(&tx, tenant, &filter, before, limit)?;
    let mut data = Vec::with_capacity(items.len());
    for a in &items {
        let original = event::get(&tx, tenant, a.original)?;
        data.push(response(a, original.as_ref()));
    }
    Ok(Json(AnomalyPage {
        data,
        has_more: cursor.is_some(),
        next_cursor: cursor.map(|c| c.display(PREFIX)),
    })
    .into_response())
}
