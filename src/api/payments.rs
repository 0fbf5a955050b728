//! `POST /v1/invoices/{id}/pay`, `/v1/payments`, refunds and `/v1/reconciliations`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::time_param;
use super::extract::{IdempotencyKey, JsonBody, OptionalJsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::pagination::{Page, PageParams};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::payments::payment::{
    self, Pay, PayError, Payment, RequestCancel, RequestRefund, PREFIX, REFUND_PREFIX,
};
use crate::payments::reconcile::{self, Item, Reconciliation, Start};

/// Body of `POST /v1/invoices/{id}/pay` (may be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// The provider's payment method to charge (default: the customer's `psp_payment_method`
    /// metadata). With the simulator: `sim_decline`, `sim_timeout`, `sim_error`,
    /// `sim_requires_action`.
    pub payment_method: Option<String>,
}

/// A refund.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundBody {
    /// `re_…`.
    pub id: String,
    /// Minor units.
    pub amount_minor: i64,
    /// pending, succeeded or failed.
    pub status: String,
    /// The provider's refund id.
    pub provider_id: Option<String>,
    /// The ledger entry.
    pub journal_entry: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// A payment attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentResponse {
    /// `pay_…`.
    pub id: String,
    /// Always `payment`.
    pub object: &'static str,
    /// `inv_…`.
    pub invoice: String,
    /// `cus_…`.
    pub customer: String,
    /// 1, 2, … (dunning retries are new attempts).
    pub attempt: u32,
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// pending, processing, succeeded, failed, requires_action, unknown, canceled,
    /// needs_review (collected with another amount or currency) or unapplied (collected for an
    /// invoice that needed no payment; refunded).
    pub status: &'static str,
    /// intent_recorded, provider_called or outcome_recorded.
    pub recovery_point: &'static str,
    /// `stripe` or `simulated`.
    pub provider: String,
    /// The idempotency key sent to the provider on every call of this attempt.
    pub provider_idempotency_key: String,
    /// The provider's id.
    pub provider_id: Option<String>,
    /// Decline or error code.
    pub failure_code: Option<String>,
    /// Decline or error message.
    pub failure_message: Option<String>,
    /// The ledger entry of the collection.
    pub journal_entry: Option<String>,
    /// Refunded so far.
    pub refunded_minor: i64,
    /// Refunds.
    pub refunds: Vec<RefundBody>,
    /// When it runs (dunning attempts are scheduled).
    pub scheduled_at: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The attempt waiting for customer action that this one replaced (canceled at the
    /// provider before this one was charged).
    pub supersedes: Option<String>,
    /// What the provider reported collecting, once it did (minor units).
    pub received_minor: Option<i64>,
    /// The currency of `received_minor`.
    pub received_currency: Option<String>,
    /// Why collected money was held in `suspense` (`needs_review`, `unapplied`).
    pub held_reason: Option<String>,
}

/// The API body of a payment.
pub fn payment_body(p: &Payment) -> PaymentResponse {
    let rfc = crate::clock::rfc3339;
    PaymentResponse {
        id: p.id.display(PREFIX),
        object: "payment",
        invoice: p.invoice.display(crate::billing::invoice::PREFIX),
        customer: p.customer.display(crate::customers::PREFIX),
        attempt: p.attempt,
        amount_minor: p.amount_minor,
        currency: p.currency.clone(),
        status: p.status.as_str(),
        recovery_point: p.recovery_point.as_str(),
        provider: p.psp.clone(),
        provider_idempotency_key: p.psp_key.clone(),
        provider_id: p.provider_id.clone(),
        failure_code: p.failure.as_ref().map(|f| f.0.clone()),
        failure_message: p.failure.as_ref().map(|f| f.1.clone()),
        journal_entry: p.entry.map(|e| e.display(crate::ledger::journal::PREFIX)),
        refunded_minor: p.refunded_minor(),
        refunds: p
            .refunds
            .iter()
            .map(|r| RefundBody {
                id: r.id.display(REFUND_PREFIX),
                amount_minor: r.amount_minor,
                status: r.status.clone(),
                provider_id: r.provider_id.clone(),
                journal_entry: r.entry.map(|e| e.display(crate::ledger::journal::PREFIX)),
                failure: r.failure.clone(),
                created_at: rfc(r.created_at_ms),
            })
            .collect(),
        scheduled_at: rfc(p.scheduled_at_ms),
        created_at: rfc(p.created_at_ms),
        updated_at: rfc(p.updated_at_ms),
        supersedes: p.supersedes.map(|s| s.display(PREFIX)),
        received_minor: p.received_minor,
        received_currency: p.received_currency.clone(),
        held_reason: p.held_reason.clone(),
    }
}

fn render(output: &Result<Payment, PayError>, ok: StatusCode) -> StoredResponse {
    match output {
        Ok(p) => json_response(ok, &payment_body(p)),
        Err(e @ (PayError::UnknownInvoice(_) | PayError::UnknownPayment(_))) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string()).to_stored()
        }
        Err(e @ PayError::NotPayable { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "invoice_state", e.to_string()).to_stored()
        }
        Err(e @ PayError::InProgress(_)) => {
            ApiError::new(StatusCode::CONFLICT, "payment_in_progress", e.to_string()).to_stored()
        }
        Err(e @ PayError::NotRefundable(_)) => {
            ApiError::new(StatusCode::CONFLICT, "not_refundable", e.to_string())
                .field("amount_minor", e.to_string())
                .to_stored()
        }
        Err(e @ PayError::NotCancelable(_)) => {
            ApiError::new(StatusCode::CONFLICT, "not_cancelable", e.to_string()).to_stored()
        }
    }
}

fn render_created(output: &Result<Payment, PayError>) -> StoredResponse {
    render(output, StatusCode::CREATED)
}

fn render_ok(output: &Result<Payment, PayError>) -> StoredResponse {
    render(output, StatusCode::OK)
}

/// Starts collecting an invoice: records a payment attempt and its job in one write. The
/// provider is called by the job with the attempt's deterministic key.
#[utoipa::path(
    post, path = "/v1/invoices/{id}/pay", tag = "payments",
    request_body = PayRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = PaymentResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "invoice_state or payment_in_progress", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn pay(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<PayRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = Id::parse(&id, crate::billing::invoice::PREFIX)
        .ok_or_else(|| ApiError::missing("invoice", &id))?;
    if body
        .value
        .payment_method
        .as_ref()
        .is_some_and(|m| m.is_empty() || m.len() > 255)
    {
        return Err(ApiError::invalid_field(
            "payment_method",
            "must be 1-255 characters",
        ));
    }
    let path = format!("/v1/invoices/{id}/pay");
    let response = idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        Pay {
            tenant,
            invoice: parsed,
            payment_method: body.value.payment_method.clone(),
            psp: state.config.payments.provider_name().to_string(),
            now_ms: crate::clock::now_ms(),
        },
        render_created,
    )
    .await?;
    state.jobs_wake.notify_one();
    Ok(response)
}

/// Retrieves a payment.
#[utoipa::path(
    get, path = "/v1/payments/{id}", tag = "payments",
    params(("id" = String, Path)),
    responses((status = 200, body = PaymentResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("payment", &id))?;
    let tx = state.store.read()?;
    let p = payment::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("payment", &id))?;
    Ok(Json(payment_body(&p)).into_response())
}

/// Query of `GET /v1/payments`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this payment.
    pub starting_after: Option<String>,
    /// Only attempts of this invoice (`inv_…`).
    pub invoice: Option<String>,
}

/// A page of payments.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentPage {
    /// Payments, oldest first.
    pub data: Vec<PaymentResponse>,
    /// Whether to ask again.
    pub has_more: bool,
    /// Cursor.
    pub next_cursor: Option<String>,
}

/// Lists payments.
#[utoipa::path(
    get, path = "/v1/payments", tag = "payments",
    params(ListParams),
    responses((status = 200, body = PaymentPage)),
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
    let after = match &params.starting_after {
        Some(c) => Some(Id::parse(c, PREFIX).ok_or_else(|| {
            ApiError::invalid_field("starting_after", "is not a payment id (pay_…)")
        })?),
        None => None,
    };
    let invoice = match &params.invoice {
        Some(i) => Some(
            Id::parse(i, crate::billing::invoice::PREFIX).ok_or_else(|| {
                ApiError::invalid_field("invoice", "is not an invoice id (inv_…)")
            })?,
        ),
        None => None,
    };
    let tx = state.store.read()?;
    let (items, has_more) = payment::list(&tx, tenant, invoice, after, limit)?;
    let next_cursor = if has_more {
        items.last().map(|p| p.id.display(PREFIX))
    } else {
        None
    };
    Ok(Json(PaymentPage {
        data: items.iter().map(payment_body).collect(),
        has_more,
        next_cursor,
    })
    .into_response())
}

/// Body of the refund endpoint (may be empty: the whole remaining amount).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequestBody {
    /// Minor units (default: everything still refundable).
    pub amount_minor: Option<i64>,
}

/// Refunds a succeeded payment, fully or partly. The reversal is posted when the provider
/// confirms.
#[utoipa::path(
    post, path = "/v1/payments/{id}/refund", tag = "payments",
    request_body = RefundRequestBody,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = PaymentResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "not_refundable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn refund(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<RefundRequestBody>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("payment", &id))?;
    if body.value.amount_minor.is_some_and(|a| a <= 0) {
        return Err(ApiError::invalid_field(
            "amount_minor",
            "must be a positive integer",
        ));
    }
    let path = format!("/v1/payments/{id}/refund");
    let response = idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        crate::credit_notes::RefundPayment {
            request: RequestRefund {
                tenant,
                payment: parsed,
                amount_minor: body.value.amount_minor,
                now_ms: crate::clock::now_ms(),
            },
        },
        render_ok,
    )
    .await?;
    state.jobs_wake.notify_one();
    Ok(response)
}

/// Cancels an attempt: one never sent is canceled at once; one waiting for the customer
/// (`requires_action`) is canceled at the provider by a job, after which it reads `canceled`
/// (or `succeeded`, if the customer completed it first). Settling or settled attempts cannot be
/// canceled (409 `not_cancelable`). An invoice whose attempt waits for the customer can be
/// voided once the attempt is canceled.
#[utoipa::path(
    post, path = "/v1/payments/{id}/cancel", tag = "payments",
    request_body = super::invoices::EmptyRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = PaymentResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "not_cancelable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<super::invoices::EmptyRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("payment", &id))?;
    let path = format!("/v1/payments/{id}/cancel");
    let response = idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        RequestCancel {
            tenant,
            payment: parsed,
            now_ms: crate::clock::now_ms(),
        },
        render_ok,
    )
    .await?;
    state.jobs_wake.notify_one();
    Ok(response)
}

/// Body of `POST /v1/reconciliations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    /// Range start (RFC 3339).
    pub from: String,
    /// Range end, exclusive (RFC 3339; default now).
    pub to: Option<String>,
}

/// One report line.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemBody {
    /// `pay_…`.
    pub payment: Option<String>,
    /// The provider's id.
    pub provider_id: Option<String>,
    /// Tally's amount.
    pub tally_amount_minor: Option<i64>,
    /// The provider's amount.
    pub provider_amount_minor: Option<i64>,
    /// Tally's status (before any resolution).
    pub tally_status: Option<String>,
    /// The provider's status.
    pub provider_status: Option<String>,
    /// Resolved automatically by this run.
    pub resolved: bool,
    /// Explanation.
    pub note: String,
}

/// The report.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReportBody {
    /// Agree.
    pub matched: Vec<ItemBody>,
    /// Provider collected while Tally had the attempt open (resolved), or unknown to Tally.
    pub missing_internally: Vec<ItemBody>,
    /// Tally succeeded, the provider has no record.
    pub missing_at_provider: Vec<ItemBody>,
    /// Amounts differ.
    pub amount_mismatch: Vec<ItemBody>,
    /// Statuses disagree otherwise.
    pub status_mismatch: Vec<ItemBody>,
}

/// A reconciliation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReconciliationResponse {
    /// `rec_…`.
    pub id: String,
    /// Always `reconciliation`.
    pub object: &'static str,
    /// pending, completed or failed.
    pub status: String,
    /// RFC 3339.
    pub from: String,
    /// RFC 3339.
    pub to: String,
    /// The report once completed.
    pub report: Option<ReportBody>,
    /// Why it failed.
    pub failure: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub completed_at: Option<String>,
}

fn items(list: &[Item]) -> Vec<ItemBody> {
    list.iter()
        .map(|i| ItemBody {
            payment: i.payment.map(|p| p.display(PREFIX)),
            provider_id: i.provider_id.clone(),
            tally_amount_minor: i.tally_amount_minor,
            provider_amount_minor: i.provider_amount_minor,
            tally_status: i.tally_status.clone(),
            provider_status: i.provider_status.clone(),
            resolved: i.resolved,
            note: i.note.clone(),
        })
        .collect()
}

/// The API form of a reconciliation.
pub fn reconciliation_body(r: &Reconciliation) -> ReconciliationResponse {
    let rfc = crate::clock::rfc3339;
    ReconciliationResponse {
        id: r.id.display(reconcile::PREFIX),
        object: "reconciliation",
        status: r.status.clone(),
        from: rfc(r.from_ms),
        to: rfc(r.to_ms),
        report: r.report.as_ref().map(|rep| ReportBody {
            matched: items(&rep.matched),
            missing_internally: items(&rep.missing_internally),
            missing_at_provider: items(&rep.missing_at_provider),
            amount_mismatch: items(&rep.amount_mismatch),
            status_mismatch: items(&rep.status_mismatch),
        }),
        failure: r.failure.clone(),
        created_at: rfc(r.created_at_ms),
        completed_at: r.completed_at_ms.map(rfc),
    }
}

fn render_rec(r: &Reconciliation) -> StoredResponse {
    json_response(StatusCode::CREATED, &reconciliation_body(r))
}

/// Starts a reconciliation of the provider's records in a range against Tally's payments; the
/// report is ready when its status is `completed`.
#[utoipa::path(
    post, path = "/v1/reconciliations", tag = "payments",
    request_body = ReconcileRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 201, body = ReconciliationResponse), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn reconcile_start(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<ReconcileRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let now_ms = crate::clock::now_ms();
    let from_ms = time_param("from", &Some(body.value.from.clone()))?.unwrap_or(0);
    let to_ms = time_param("to", &body.value.to)?.unwrap_or(now_ms);
    if to_ms <= from_ms {
        return Err(ApiError::invalid_field("to", "must be after from"));
    }
    let rec = Reconciliation {
        id: Id::generate_at(now_ms),
        tenant: tenant.0,
        from_ms,
        to_ms,
        status: "pending".into(),
        created_at_ms: now_ms,
        completed_at_ms: None,
        report: None,
        failure: None,
    };
    let response = idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/reconciliations",
            canonical_body: &body.canonical,
        },
        Start {
            reconciliation: rec,
        },
        render_rec,
    )
    .await?;
    state.jobs_wake.notify_one();
    Ok(response)
}

/// Lists the tenant's reconciliations, oldest first, each with its report once completed.
#[utoipa::path(
    get, path = "/v1/reconciliations", tag = "payments",
    params(PageParams),
    responses(
        (status = 200, body = Page<ReconciliationResponse>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn reconcile_list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<PageParams>,
) -> Result<Response, ApiError> {
    let limit = params.limit()?;
    let after = params.after(reconcile::PREFIX, "a reconciliation")?;
    let tx = state.store.read()?;
    let (items, has_more) = reconcile::list(&tx, tenant, after, limit)?;
    Ok(Json(Page::of(
        &items,
        has_more,
        |r| r.id.display(reconcile::PREFIX),
        reconciliation_body,
    ))
    .into_response())
}

/// Retrieves a reconciliation and its report.
#[utoipa::path(
    get, path = "/v1/reconciliations/{id}", tag = "payments",
    params(("id" = String, Path)),
    responses((status = 200, body = ReconciliationResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn reconcile_get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, reconcile::PREFIX)
        .ok_or_else(|| ApiError::missing("reconciliation", &id))?;
    let tx = state.store.read()?;
    let r = reconcile::get(&tx, tenant, parsed)?
        .ok_or_else(|| ApiError::missing("reconciliation", &id))?;
    Ok(Json(reconciliation_body(&r)).into_response())
}
