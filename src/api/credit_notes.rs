//! `/v1/invoices/{id}/credit-notes` and `/v1/credit-notes`: correcting an issued invoice.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{IdempotencyKey, JsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::pagination::{Page, PageParams};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::billing::invoice;
use crate::credit_notes::{
    self, CreateCreditNote, CreditNote, CreditNoteError, Credited, MAX_LINES, MAX_REASON_CHARS,
    PREFIX,
};
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::ledger::journal::MAX_AMOUNT_MINOR;

/// One invoice line to credit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditLineBody {
    /// The line's index on the invoice (from 0).
    pub line: u32,
    /// How much of it, minor units, before exclusive tax (1 to the line's amount).
    pub amount_minor: i64,
}

/// Body of `POST /v1/invoices/{id}/credit-notes`: `lines` or `amount_minor`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCreditNoteRequest {
    /// Lines to credit (their exclusive tax is credited with them), at most 100.
    pub lines: Option<Vec<CreditLineBody>>,
    /// An amount to credit, tax included, minor units.
    pub amount_minor: Option<i64>,
    /// ISO 4217; when given, must be the invoice's.
    pub currency: Option<String>,
    /// Why, at most 500 characters.
    pub reason: Option<String>,
    /// Refund a paid invoice's payment instead of leaving a credit balance.
    #[serde(default)]
    pub refund: bool,
}

/// A credit note as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditNoteResponse {
    /// `cn_…`.
    pub id: String,
    /// Always `credit_note`.
    pub object: &'static str,
    /// Its number, from the credit-note sequence.
    pub number: String,
    /// `inv_…`.
    pub invoice: String,
    /// The invoice's number.
    pub invoice_number: Option<String>,
    /// `cus_…`.
    pub customer: String,
    /// ISO 4217.
    pub currency: String,
    /// Lines credited.
    pub lines: Vec<CreditLineBody>,
    /// What it credits, tax included.
    pub amount_minor: i64,
    /// Its tax share.
    pub tax_minor: i64,
    /// The amount less its tax.
    pub net_minor: i64,
    /// Why.
    pub reason: Option<String>,
    /// Taken off the invoice's amount due.
    pub due_reduced_minor: i64,
    /// The credit balance it left (`grt_…`).
    pub credit_grant: Option<String>,
    /// The payment refunded (`pay_…`).
    pub refund_payment: Option<String>,
    /// The refund (`re_…`).
    pub refund: Option<String>,
    /// Journal entries it posted.
    pub journal_entries: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// The API form of a credit note.
pub fn body(c: &CreditNote) -> CreditNoteResponse {
    CreditNoteResponse {
        id: c.id.display(PREFIX),
        object: "credit_note",
        number: c.number.clone(),
        invoice: c.invoice.display(invoice::PREFIX),
        invoice_number: c.invoice_number.clone(),
        customer: c.customer.display(crate::customers::PREFIX),
        currency: c.currency.clone(),
        lines: c
            .lines
            .iter()
            .map(|(line, amount_minor)| CreditLineBody {
                line: *line,
                amount_minor: *amount_minor,
            })
            .collect(),
        amount_minor: c.amount_minor,
        tax_minor: c.tax_minor,
        net_minor: c.net_minor,
        reason: c.reason.clone(),
        due_reduced_minor: c.due_reduced_minor,
        credit_grant: c.grant.map(|g| g.display(crate::ledger::grant::PREFIX)),
        refund_payment: c
            .refund
            .map(|(p, _)| p.display(crate::payments::payment::PREFIX)),
        refund: c
            .refund
            .map(|(_, r)| r.display(crate::payments::payment::REFUND_PREFIX)),
        journal_entries: c
            .entries
            .iter()
            .map(|e| e.display(crate::ledger::journal::PREFIX))
            .collect(),
        created_at: crate::clock::rfc3339(c.created_at_ms),
    }
}

fn credited_of(req: &CreateCreditNoteRequest) -> Result<Credited, ApiError> {
    let in_range = |a: i64| (1..=MAX_AMOUNT_MINOR).contains(&a);
    match (&req.lines, req.amount_minor) {
        (Some(_), Some(_)) | (None, None) => Err(ApiError::invalid_field(
            "amount_minor",
            "send lines or amount_minor, one of them",
        )),
        (None, Some(a)) if in_range(a) => Ok(Credited::Amount(a)),
        (None, Some(_)) => Err(ApiError::invalid_field(
            "amount_minor",
            format!("must be between 1 and {MAX_AMOUNT_MINOR}"),
        )),
        (Some(lines), None) => {
            if lines.is_empty() || lines.len() > MAX_LINES {
                return Err(ApiError::invalid_field(
                    "lines",
                    format!("1 to {MAX_LINES} lines"),
                ));
            }
            let mut out = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                if !in_range(l.amount_minor) {
                    return Err(ApiError::invalid_field(
                        format!("lines.{i}.amount_minor"),
                        "must be at least 1",
                    ));
                }
                if out.iter().any(|(line, _)| *line == l.line) {
                    return Err(ApiError::invalid_field(
                        format!("lines.{i}.line"),
                        "names a line twice",
                    ));
                }
                out.push((l.line, l.amount_minor));
            }
            Ok(Credited::Lines(out))
        }
    }
}

fn render(output: &Result<CreditNote, CreditNoteError>) -> StoredResponse {
    let e = match output {
        Ok(c) => return json_response(StatusCode::CREATED, &body(c)),
        Err(e) => e,
    };
    let detail = e.to_string();
    match e {
        CreditNoteError::MissingInvoice(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", detail)
        }
        CreditNoteError::WrongState { .. } => {
            ApiError::new(StatusCode::CONFLICT, "invoice_state", detail)
                .field("invoice", "must be finalized or paid")
        }
        CreditNoteError::Currency(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "currency_mismatch",
            detail.clone(),
        )
        .field("currency", detail),
        CreditNoteError::Line { field, .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_line",
            detail.clone(),
        )
        .field(field.clone(), detail),
        CreditNoteError::AboveRemaining { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "credit_exceeds_remaining",
            detail.clone(),
        )
        .field("amount_minor", detail),
        CreditNoteError::PaymentInProgress(_) => {
            ApiError::new(StatusCode::CONFLICT, "payment_in_progress", detail)
        }
        CreditNoteError::NotRefundable(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_refundable",
            detail.clone(),
        )
        .field("refund", detail),
        CreditNoteError::Ledger(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "ledger_refused", detail)
        }
        CreditNoteError::TopUp(_) => ApiError::new(StatusCode::CONFLICT, "top_up_invoice", detail)
            .field("invoice", "is a prepaid top-up invoice"),
    }
    .to_stored()
}

/// Creates a credit note for a finalized or paid invoice.
#[utoipa::path(
    post, path = "/v1/invoices/{id}/credit-notes", tag = "billing",
    request_body = CreateCreditNoteRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = CreditNoteResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "invoice_state, payment_in_progress", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "credit_exceeds_remaining, currency_mismatch, invalid_line, not_refundable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<CreateCreditNoteRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed =
        Id::parse(&id, invoice::PREFIX).ok_or_else(|| ApiError::missing("invoice", &id))?;
    let req = &body.value;
    let credited = credited_of(req)?;
    if let Some(c) = &req.currency {
        if !crate::currency::is_known(c) {
            return Err(ApiError::invalid_field(
                "currency",
                "is not an ISO 4217 currency code",
            ));
        }
    }
    if req
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(ApiError::invalid_field(
            "reason",
            format!("at most {MAX_REASON_CHARS} characters"),
        ));
    }
    let path = format!("/v1/invoices/{id}/credit-notes");
    let now_ms = crate::clock::now_ms();
    let command = CreateCreditNote {
        tenant,
        invoice: parsed,
        credited,
        currency: req.currency.clone(),
        reason: req.reason.clone(),
        refund: req.refund,
        id: Id::generate_at(now_ms),
        now_ms,
        origin: format!("api:POST {path} idempotency-key={}", key),
    };
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        command,
        render,
    )
    .await
}

/// Retrieves a credit note.
#[utoipa::path(
    get, path = "/v1/credit-notes/{id}", tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = CreditNoteResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("credit note", &id))?;
    let tx = state.store.read()?;
    let c = credit_notes::get(&tx, tenant, parsed)?
        .ok_or_else(|| ApiError::missing("credit note", &id))?;
    Ok(Json(body(&c)).into_response())
}

/// Query of `GET /v1/credit-notes`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListCreditNotesParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this id.
    pub starting_after: Option<String>,
    /// Only the credit notes of this invoice (`inv_…`).
    pub invoice: Option<String>,
}

/// Lists credit notes in creation order.
#[utoipa::path(
    get, path = "/v1/credit-notes", tag = "billing",
    params(ListCreditNotesParams),
    responses((status = 200, body = Page<CreditNoteResponse>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListCreditNotesParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        starting_after: params.starting_after,
    };
    let limit = page.limit()?;
    let after = page.after(PREFIX, "a credit note")?;
    let invoice = match &params.invoice {
        Some(i) => Some(
            Id::parse(i, invoice::PREFIX)
                .ok_or_else(|| ApiError::invalid_field("invoice", "is not an inv_… id"))?,
        ),
        None => None,
    };
    let tx = state.store.read()?;
    let (items, has_more) = credit_notes::list(&tx, tenant, invoice, after, limit)?;
    Ok(Json(Page::of(&items, has_more, |c| c.id.display(PREFIX), body)).into_response())
}
