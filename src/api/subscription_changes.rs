//! `/v1/subscriptions/{id}/…`: the lifecycle after creation — plan changes and their preview,
//! canceling a scheduled change, ending a trial early, resuming a cancellation.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{IdempotencyKey, JsonBody, Tenant};
use super::idempotent::{self, json_response};
use super::invoices::{line_body, LineBody};
use super::problem::{ApiError, Problem};
use super::subscriptions::{api_error, render_error, response, SubscriptionResponse};
use super::AppState;
use crate::billing::change::{
    self, CancelScheduledChange, ChangeRequest, ChangeSubscription, Changed, Effective, EndTrial,
    ResumeSubscription,
};
use crate::billing::phase::Proration;
use crate::billing::plan;
use crate::billing::subscription::{self, SubscriptionError, PREFIX};
use crate::id::Id;
use crate::idempotency::StoredResponse;

/// Body of `POST /v1/subscriptions/{id}/change` and its preview.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    /// The new plan: `pln_…` or its code (the newest version of that code).
    pub plan: String,
    /// `now` (default), `period_end`, or an RFC 3339 instant (inside the current period or
    /// later).
    #[serde(default)]
    pub effective: Option<String>,
    /// `prorate` (default), `none` or `invoice_now`.
    #[serde(default)]
    pub proration: Option<String>,
}

/// What a lifecycle request did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangedBody {
    /// The subscription after it.
    pub subscription: SubscriptionResponse,
    /// When the change takes effect (plan changes).
    pub effective_at: Option<String>,
    /// Invoices issued at once (`inv_…`).
    pub invoices: Vec<String>,
}

/// What a change would bill.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewBody {
    /// When the change would take effect.
    pub effective_at: String,
    /// `immediate`: the invoice the change issues at once (`invoice_now` effective now);
    /// `next`: the next invoice of the period the change falls in, with the usage so far.
    pub invoice: &'static str,
    /// The invoice's period start.
    pub period_start: String,
    /// Its end.
    pub period_end: String,
    /// The lines, exactly as they would be billed.
    pub lines: Vec<LineBody>,
    /// Their sum, minor units.
    pub subtotal_minor: i64,
    /// Tax per rate, at the customer's rates as of now.
    pub tax_lines: Vec<super::invoices::TaxLineBody>,
    /// Every tax, inclusive and exclusive.
    pub tax_minor: i64,
    /// `subtotal_minor` plus exclusive tax.
    pub total_minor: i64,
}

/// Parses a change body into the request (ids and instants resolved; no writes).
fn parse_change(
    state: &AppState,
    tenant: crate::store::TenantId,
    body: &ChangeBody,
    now_ms: i64,
) -> Result<ChangeRequest, ApiError> {
    let effective = match body.effective.as_deref() {
        None | Some("now") => Effective::Now,
        Some("period_end") => Effective::PeriodEnd,
        Some(text) => Effective::At(crate::clock::parse_rfc3339(text).ok_or_else(|| {
            ApiError::invalid_field(
                "effective",
                "must be \"now\", \"period_end\" or an RFC 3339 timestamp",
            )
        })?),
    };
    let proration = match body.proration.as_deref() {
        None => Proration::Prorate,
        Some(text) => Proration::parse(text).ok_or_else(|| {
            ApiError::invalid_field(
                "proration",
                "must be \"prorate\", \"none\" or \"invoice_now\"",
            )
        })?,
    };
    let tx = state.store.read()?;
    let plan = match Id::parse(&body.plan, plan::PREFIX) {
        Some(id) => Some(id),
        None => super::subscriptions::plan_by_code(&tx, tenant, &body.plan)?,
    }
    .ok_or_else(|| ApiError::missing("plan", &body.plan).field("plan", "no such plan"))?;
    Ok(ChangeRequest {
        plan,
        effective,
        proration,
        change: Id::generate_at(now_ms),
        now_ms,
    })
}

fn render_changed(output: &Result<Changed, SubscriptionError>) -> StoredResponse {
    match output {
        Ok(c) => json_response(
            StatusCode::OK,
            &ChangedBody {
                subscription: response(&c.subscription, None, Vec::new()),
                effective_at: c.effective_at_ms.map(crate::clock::rfc3339),
                invoices: c
                    .invoices
                    .iter()
                    .map(|i| i.display(crate::billing::invoice::PREFIX))
                    .collect(),
            },
        ),
        Err(e) => render_error(e),
    }
}

fn subscription_id(id: &str) -> Result<Id, ApiError> {
    Id::parse(id, PREFIX).ok_or_else(|| ApiError::missing("subscription", id))
}

/// Changes a subscription's plan: now, at period end or at an instant, with the proration the
/// caller chooses. See the README's lifecycle section for the lines each mode produces.
#[utoipa::path(
    post, path = "/v1/subscriptions/{id}/change", tag = "billing",
    request_body = ChangeBody,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = ChangedBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "subscription_canceled, change_scheduled, already_on_plan, subscription_canceling, billing_backlog", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "currency_mismatch, interval_mismatch, value_out_of_range (effective)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn change(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<ChangeBody>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = subscription_id(&id)?;
    let request = parse_change(&state, tenant, &body.value, crate::clock::now_ms())?;
    let path = format!("/v1/subscriptions/{id}/change");
    let origin = format!("api:POST {path} idempotency-key={key}");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        ChangeSubscription {
            tenant,
            id: parsed,
            request,
            policy: state.config.billing_policy(),
            origin,
        },
        render_changed,
    )
    .await
}

/// Previews a change: the exact lines it would bill, computed from a read snapshot. Writes
/// nothing and takes no Idempotency-Key.
#[utoipa::path(
    post, path = "/v1/subscriptions/{id}/change/preview", tag = "billing",
    request_body = ChangeBody,
    params(("id" = String, Path)),
    responses(
        (status = 200, body = PreviewBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn preview(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: JsonBody<ChangeBody>,
) -> Result<Response, ApiError> {
    let parsed = subscription_id(&id)?;
    let request = parse_change(&state, tenant, &body.value, crate::clock::now_ms())?;
    let tx = state.store.read()?;
    let sub = subscription::get(&tx, tenant, parsed)?
        .ok_or_else(|| ApiError::missing("subscription", &id))?;
    let policy = state.config.billing_policy();
    let preview =
        change::preview(&tx, tenant, &sub, &request, &policy)?.map_err(|e| api_error(&e))?;
    let failed = |e: crate::billing::invoice::InvoiceError| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invoice_failed",
            e.to_string(),
        )
    };
    let subtotal_minor = crate::billing::invoice::subtotal(&preview.lines).map_err(failed)?;
    let currency = crate::billing::plan::get(&tx, tenant, sub.plan)?
        .map(|p| p.currency)
        .unwrap_or_default();
    let taxes = crate::billing::tax::preview(&tx, tenant, sub.customer, &preview.lines, &currency)?
        .map_err(failed)?;
    let total_minor = subtotal_minor
        .checked_add(taxes.exclusive_minor)
        .ok_or(crate::billing::invoice::InvoiceError::OutOfRange)
        .map_err(failed)?;
    let rfc = crate::clock::rfc3339;
    Ok(Json(PreviewBody {
        effective_at: rfc(preview.effective_at_ms),
        invoice: if preview.immediate {
            "immediate"
        } else {
            "next"
        },
        period_start: rfc(preview.period_start_ms),
        period_end: rfc(preview.period_end_ms),
        lines: preview.lines.iter().map(line_body).collect(),
        subtotal_minor,
        tax_lines: super::invoices::tax_line_bodies(&taxes.lines),
        tax_minor: taxes.tax_minor,
        total_minor,
    })
    .into_response())
}

/// Runs a lifecycle command with no body under an Idempotency-Key.
async fn lifecycle<C>(
    state: &AppState,
    tenant: crate::store::TenantId,
    key: IdempotencyKey,
    path: String,
    command: C,
) -> Result<Response, ApiError>
where
    C: crate::store::writer::Command<Output = Result<Changed, SubscriptionError>>,
{
    let key = key.required()?;
    idempotent::run(
        state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: "{}",
        },
        command,
        render_changed,
    )
    .await
}

/// Cancels the change scheduled for a later instant.
#[utoipa::path(
    post, path = "/v1/subscriptions/{id}/scheduled-change/cancel", tag = "billing",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = ChangedBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "no_scheduled_change", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn cancel_scheduled(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
) -> Result<Response, ApiError> {
    let parsed = subscription_id(&id)?;
    let command = CancelScheduledChange {
        tenant,
        id: parsed,
        now_ms: crate::clock::now_ms(),
    };
    let path = format!("/v1/subscriptions/{id}/scheduled-change/cancel");
    lifecycle(&state, tenant, key, path, command).await
}

/// Ends a trial now: the trial's last period is invoiced at once and paid periods follow from
/// now.
#[utoipa::path(
    post, path = "/v1/subscriptions/{id}/end-trial", tag = "billing",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = ChangedBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "not_trialing", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn end_trial(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
) -> Result<Response, ApiError> {
    let parsed = subscription_id(&id)?;
    let path = format!("/v1/subscriptions/{id}/end-trial");
    let command = EndTrial {
        tenant,
        id: parsed,
        now_ms: crate::clock::now_ms(),
        policy: state.config.billing_policy(),
        origin: format!("api:POST {path}"),
    };
    lifecycle(&state, tenant, key, path, command).await
}

/// Resumes a subscription canceled at period end, before that end.
#[utoipa::path(
    post, path = "/v1/subscriptions/{id}/resume", tag = "billing",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = ChangedBody),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "not_canceling", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn resume(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
) -> Result<Response, ApiError> {
    let parsed = subscription_id(&id)?;
    let command = ResumeSubscription {
        tenant,
        id: parsed,
        now_ms: crate::clock::now_ms(),
    };
    let path = format!("/v1/subscriptions/{id}/resume");
    lifecycle(&state, tenant, key, path, command).await
}
