//! `/v1/notifications`: the outbound events Tally recorded, each as its effect left its object.
//!
//! A notification stores its subject as the domain record of the moment; it is rendered here
//! with the same body the resource's own endpoint answers, so an event's `data.object` reads
//! like a `GET` of that object at the time of the effect.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::Tenant;
use super::pagination::PageParams;
use super::problem::ApiError;
use super::AppState;
use crate::id::Id;
use crate::notifications::catalogue;
use crate::notifications::outbox::{self, Filter, Notification, PREFIX};
use crate::store::{codec, StoreError};

/// Rows a filtered listing examines per request (a short page then carries a cursor).
const LIST_BUDGET: usize = 10_000;

/// An outbound event.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationResponse {
    /// `ntf_…`: also the `webhook-id` of every delivery of it.
    pub id: String,
    /// Always `event`.
    pub object: &'static str,
    /// A catalogue type (`invoice.paid`, …).
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339: when its effect committed.
    pub created_at: String,
    /// Per tenant, increasing in commit order: the order to apply events in.
    pub sequence: u64,
    /// `{"object": …}`: the object as the effect left it.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// Why a stored subject could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("notification subject {kind}: {reason}")]
pub struct RenderError {
    kind: String,
    reason: String,
}

fn object(n: &Notification) -> Result<serde_json::Value, RenderError> {
    let fail = |reason: String| RenderError {
        kind: n.subject.kind.clone(),
        reason,
    };
    let bytes = n.subject.record.as_slice();
    let json = |v: Result<serde_json::Value, serde_json::Error>| v.map_err(|e| fail(e.to_string()));
    match n.subject.kind.as_str() {
        "customer" => {
            let c = crate::customers::decode(bytes).map_err(|e| fail(e.to_string()))?;
            json(serde_json::to_value(
                super::customers::CustomerResponse::from(&c),
            ))
        }
        "subscription" => {
            let s: crate::billing::subscription::Subscription =
                codec::decode(bytes).map_err(|e| fail(e.to_string()))?;
            json(serde_json::to_value(super::subscriptions::response_at(
                &s,
                None,
                Vec::new(),
                n.created_at_ms,
            )))
        }
        "invoice" => {
            let i: crate::billing::invoice::Invoice =
                codec::decode(bytes).map_err(|e| fail(e.to_string()))?;
            json(serde_json::to_value(super::invoices::invoice_body(&i)))
        }
        "credit_note" => {
            let c: crate::credit_notes::CreditNote =
                codec::decode(bytes).map_err(|e| fail(e.to_string()))?;
            json(serde_json::to_value(super::credit_notes::body(&c)))
        }
        "payment" => {
            let p: crate::payments::payment::Payment =
                codec::decode(bytes).map_err(|e| fail(e.to_string()))?;
            json(serde_json::to_value(super::payments::payment_body(&p)))
        }
        "credit_grant" => {
            let (g, remaining): (crate::ledger::grant::Grant, i64) =
                codec::decode(bytes).map_err(|e| fail(e.to_string()))?;
            json(serde_json::to_value(super::grants::grant_response(
                &g, remaining,
            )))
        }
        "top_up" => {
            let t: crate::wallet::record::TopUp =
                codec::decode(bytes).map_err(|e| fail(e.to_string()))?;
            json(serde_json::to_value(super::wallet::top_up_body(&t)))
        }
        "reconciliation" => {
            let r: crate::payments::reconcile::Reconciliation =
                codec::decode(bytes).map_err(|e| fail(e.to_string()))?;
            json(serde_json::to_value(super::payments::reconciliation_body(
                &r,
            )))
        }
        "dead_letter" => {
            let j: crate::jobs::Job = codec::decode(bytes).map_err(|e| fail(e.to_string()))?;
            json(serde_json::to_value(super::dead_letters::body(&j)))
        }
        "destination" => {
            let d: crate::notifications::destination::Destination =
                codec::decode(bytes).map_err(|e| fail(e.to_string()))?;
            Ok(serde_json::json!({
                "id": d.id.display(crate::notifications::destination::PREFIX),
                "object": "event_destination",
                "url": d.url,
                "status": d.status.as_str(),
            }))
        }
        crate::alerts::firing::KIND => {
            let f: crate::alerts::firing::Firing =
                codec::decode(bytes).map_err(|e| fail(e.to_string()))?;
            json(serde_json::to_value(super::alerts::firing_body(&f)))
        }
        other => Err(fail(format!("unknown kind {other}"))),
    }
}

/// A notification as the API (and every delivery) shows it. A subject recorded in a layout
/// this binary no longer reads (a record type changed without its stored subjects being
/// migrated) is shown by kind and id rather than failing the whole listing or delivery.
pub fn render(n: &Notification) -> Result<NotificationResponse, RenderError> {
    let object = object(n).unwrap_or_else(|e| {
        tracing::warn!(notification = %n.id.display(PREFIX), error = %e, "subject shown by id only");
        serde_json::json!({ "object": n.subject.kind, "id": subject_id(n) })
    });
    Ok(NotificationResponse {
        id: n.id.display(PREFIX),
        object: "event",
        event_type: n.event_type.clone(),
        created_at: crate::clock::rfc3339(n.created_at_ms),
        sequence: n.sequence,
        data: serde_json::json!({ "object": object }),
    })
}

/// The subject's id with its kind's prefix.
fn subject_id(n: &Notification) -> String {
    let prefix = match n.subject.kind.as_str() {
        "customer" => crate::customers::PREFIX,
        "subscription" => crate::billing::subscription::PREFIX,
        "invoice" => crate::billing::invoice::PREFIX,
        "payment" => crate::payments::payment::PREFIX,
        "credit_grant" => crate::ledger::grant::PREFIX,
        "credit_note" => crate::credit_notes::PREFIX,
        "top_up" => crate::wallet::record::PREFIX,
        "reconciliation" => crate::payments::reconcile::PREFIX,
        "dead_letter" => crate::jobs::PREFIX,
        "destination" => crate::notifications::destination::PREFIX,
        crate::alerts::firing::KIND => crate::alerts::firing::PREFIX,
        _ => "obj",
    };
    n.subject.id.display(prefix)
}

/// A notification's JSON body, as delivered.
pub fn render_body(n: &Notification) -> Result<Vec<u8>, String> {
    let body = render(n).map_err(|e| e.to_string())?;
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

/// Query of `GET /v1/notifications`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this notification (`ntf_…`).
    pub starting_after: Option<String>,
    /// Only this catalogue type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Only events about this customer (`cus_…`).
    pub customer: Option<String>,
    /// Created at or after (RFC 3339).
    pub from: Option<String>,
    /// Created before (RFC 3339).
    pub to: Option<String>,
}

/// A page of notifications.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationPage {
    /// Oldest first.
    pub data: Vec<NotificationResponse>,
    /// Whether more follow.
    pub has_more: bool,
    /// Pass as `starting_after` for the next page.
    pub next_cursor: Option<String>,
}

fn filter(params: &ListParams) -> Result<Filter, ApiError> {
    if let Some(t) = &params.event_type {
        if !catalogue::is_known(t) {
            return Err(ApiError::invalid_field(
                "type",
                "is not an event type of the catalogue",
            ));
        }
    }
    let customer =
        match &params.customer {
            Some(c) => Some(Id::parse(c, crate::customers::PREFIX).ok_or_else(|| {
                ApiError::invalid_field("customer", "is not a customer id (cus_…)")
            })?),
            None => None,
        };
    Ok(Filter {
        event_type: params.event_type.clone(),
        customer,
        from_ms: super::events::time_param("from", &params.from)?,
        to_ms: super::events::time_param("to", &params.to)?,
    })
}

/// Lists the outbound events, oldest first, by type, customer or time.
#[utoipa::path(
    get, path = "/v1/notifications", tag = "notifications",
    params(ListParams),
    responses(
        (status = 200, body = NotificationPage),
        (status = 400, body = super::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        starting_after: params.starting_after.clone(),
    };
    let (limit, after) = (page.limit()?, page.after(PREFIX, "a notification")?);
    let filter = filter(&params)?;
    let tx = state.store.read()?;
    let (items, cursor) = outbox::list(&tx, tenant, &filter, after, limit, LIST_BUDGET)?;
    let data = items
        .iter()
        .map(render)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::internal(&StoreError::Corrupt(e.to_string())))?;
    Ok(Json(NotificationPage {
        data,
        has_more: cursor.is_some(),
        next_cursor: cursor.map(|c| c.display(PREFIX)),
    })
    .into_response())
}

/// Retrieves one outbound event.
#[utoipa::path(
    get, path = "/v1/notifications/{id}", tag = "notifications",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = NotificationResponse),
        (status = 404, body = super::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("notification", &id))?;
    let tx = state.store.read()?;
    let n =
        outbox::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("notification", &id))?;
    Ok(
        Json(render(&n).map_err(|e| ApiError::internal(&StoreError::Corrupt(e.to_string())))?)
            .into_response(),
    )
}
