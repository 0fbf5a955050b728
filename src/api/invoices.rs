//! `/v1/invoices`, `/v1/billing-runs` and the upcoming-invoice preview.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::{resolve_customer, time_param};
use super::extract::{IdempotencyKey, OptionalJsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::pagination::PageParams;
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::billing::invoice::{self, Invoice, InvoiceError, Line, PREFIX};
use crate::billing::run::{self, BillingRun, Run};
use crate::billing::{plan, preview, subscription};
use crate::decimal;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::ledger::journal;
use crate::payments::void::VoidInvoice;

/// One tier's share of a line.
#[derive(Debug, Serialize, ToSchema)]
pub struct TierLineBody {
    /// Tier position, from 0.
    pub tier: u32,
    /// Units in the tier.
    pub quantity: String,
    /// Unit price.
    pub unit_price: String,
    /// Flat fee applied, minor units.
    pub flat_fee_minor: i64,
    /// Exact amount, major units.
    pub amount: String,
}

/// An invoice line.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineBody {
    /// usage, fixed_fee, adjustment, fee_credit, discount or minimum_commitment.
    pub kind: &'static str,
    /// Description.
    pub description: String,
    /// `mtr_…`.
    pub meter: Option<String>,
    /// The period it bills (RFC 3339).
    pub period_start: String,
    /// End of that period.
    pub period_end: String,
    /// Quantity (adjustments: the difference; on an invoice of a period that interim invoices
    /// billed part of: the period's quantity minus what they billed).
    pub quantity: String,
    /// Adjustments: billed before.
    pub quantity_before: Option<String>,
    /// Adjustments: recomputed.
    pub quantity_after: Option<String>,
    /// Fixed fees: fraction of the period, as a decimal.
    pub proration: Option<String>,
    /// Unit price (per_unit and package).
    pub unit_price: Option<String>,
    /// Tier breakdown.
    pub tiers: Vec<TierLineBody>,
    /// Exact amount, major units.
    pub amount_exact: String,
    /// Rounded once, minor units.
    pub amount_minor: i64,
    /// Events counted.
    pub events: u64,
}

/// Credits drawn from one grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditBody {
    /// `grt_…`.
    pub grant: String,
    /// Drawn.
    pub amount_minor: i64,
}

/// The tax of one rate on an invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaxLineBody {
    /// `txr_…`.
    pub tax_rate: String,
    /// The rate's name as issued.
    pub display_name: String,
    /// Exact decimal string.
    pub percentage: String,
    /// Whether the line amounts contain it.
    pub inclusive: bool,
    /// What it was computed on (net of the tax when inclusive), minor units.
    pub taxable_minor: i64,
    /// The sum of the lines' rounded taxes at this rate.
    pub tax_minor: i64,
}

/// The API body of an invoice's tax lines.
pub fn tax_line_bodies(lines: &[crate::billing::tax::TaxLine]) -> Vec<TaxLineBody> {
    lines
        .iter()
        .map(|t| TaxLineBody {
            tax_rate: t.tax_rate.display(crate::tax_rates::PREFIX),
            display_name: t.display_name.clone(),
            percentage: decimal::to_text(t.percentage.0),
            inclusive: t.inclusive,
            taxable_minor: t.taxable_minor,
            tax_minor: t.tax_minor,
        })
        .collect()
}

/// An invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceResponse {
    /// `inv_…`.
    pub id: String,
    /// Always `invoice`.
    pub object: &'static str,
    /// `cus_…`.
    pub customer: String,
    /// `sub_…`; null for a top-up invoice.
    pub subscription: Option<String>,
    /// `pln_…`: the plan version priced with; null for a top-up invoice.
    pub plan: Option<String>,
    /// `tup_…`: the top-up a `top_up` invoice bills.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_up: Option<String>,
    /// ISO 4217.
    pub currency: String,
    /// opening, period, final, adjustment or interim (progressive billing: usage a running
    /// period accrued up to `period_end`, once it reached the plan's `threshold_minor`).
    pub kind: &'static str,
    /// finalized, paid, void or uncollectible (`draft` on previews).
    pub status: &'static str,
    /// RFC 3339.
    pub period_start: String,
    /// RFC 3339.
    pub period_end: String,
    /// Lines.
    pub lines: Vec<LineBody>,
    /// Sum of rounded lines: net of discounts, before exclusive tax.
    pub subtotal_minor: i64,
    /// Tax per rate.
    pub tax_lines: Vec<TaxLineBody>,
    /// Every tax, inclusive and exclusive.
    pub tax_minor: i64,
    /// `subtotal_minor` plus exclusive tax.
    pub total_minor: i64,
    /// Whether the reverse charge applied (no tax; the note is in `notes`).
    pub reverse_charge: bool,
    /// Legal notes.
    pub notes: Vec<String>,
    /// What credit notes took back, tax included.
    pub credited_minor: i64,
    /// Its credit notes (`cn_…`).
    pub credit_notes: Vec<String>,
    /// Credits applied, in burn order.
    pub credits_applied: Vec<CreditBody>,
    /// Their sum.
    pub credits_applied_minor: i64,
    /// What remains to collect.
    pub amount_due_minor: i64,
    /// RFC 3339.
    pub issued_at: Option<String>,
    /// Events committed up to this sequence number were counted.
    pub events_through: u64,
    /// Hex blake3 digest of the inputs.
    pub inputs_digest: Option<String>,
    /// Journal entries posted.
    pub journal_entries: Vec<String>,
    /// The voided invoice this re-issues.
    pub replaces: Option<String>,
    /// The invoice that re-issued this one.
    pub replaced_by: Option<String>,
    /// The billing run that created it.
    pub billing_run: Option<String>,
    /// RFC 3339.
    pub voided_at: Option<String>,
    /// RFC 3339.
    pub paid_at: Option<String>,
    /// The invoice number (`INV-2026-000042`), from the tenant's gapless sequence; null on
    /// drafts and on invoices issued before numbering.
    pub number: Option<String>,
    /// The buyer as issued to (a copy: later customer edits do not change it).
    pub buyer: Option<super::parties::BuyerBody>,
    /// The seller as issued by (a copy of the tenant settings; the logo by its hash).
    pub seller: Option<super::parties::SellerBody>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The API body of one invoice line.
pub fn line_body(l: &Line) -> LineBody {
    let t = |d: crate::decimal::Stored| decimal::to_text(d.0);
    LineBody {
        kind: l.kind.as_str(),
        description: l.description.clone(),
        meter: l.meter.map(|m| m.display(crate::ingest::meter::PREFIX)),
        period_start: crate::clock::rfc3339(l.period_start_ms),
        period_end: crate::clock::rfc3339(l.period_end_ms),
        quantity: t(l.quantity),
        quantity_before: l.quantity_before.map(t),
        quantity_after: l.quantity_after.map(t),
        proration: l.proration.map(|(n, d)| {
            decimal::to_text(rust_decimal::Decimal::from(n) / rust_decimal::Decimal::from(d.max(1)))
        }),
        unit_price: l.unit_price.map(t),
        tiers: l
            .tiers
            .iter()
            .map(|x| TierLineBody {
                tier: x.tier,
                quantity: t(x.quantity),
                unit_price: t(x.unit_price),
                flat_fee_minor: x.flat_fee_minor,
                amount: t(x.amount),
            })
            .collect(),
        amount_exact: t(l.amount_exact),
        amount_minor: l.amount_minor,
        events: l.events,
    }
}

/// The API form of a stored invoice.
pub fn invoice_body(i: &Invoice) -> InvoiceResponse {
    let rfc = crate::clock::rfc3339;
    // A top-up invoice bills no subscription: its `subscription` field holds the top-up.
    let top_up = i.kind == crate::billing::invoice::InvoiceKind::TopUp;
    InvoiceResponse {
        id: i.id.display(PREFIX),
        object: "invoice",
        customer: i.customer.display(crate::customers::PREFIX),
        subscription: (!top_up).then(|| i.subscription.display(subscription::PREFIX)),
        plan: (!top_up).then(|| i.plan.display(plan::PREFIX)),
        top_up: top_up.then(|| i.subscription.display(crate::wallet::record::PREFIX)),
        currency: i.currency.clone(),
        kind: i.kind.as_str(),
        status: i.status.as_str(),
        period_start: rfc(i.period_start_ms),
        period_end: rfc(i.period_end_ms),
        lines: i.lines.iter().map(line_body).collect(),
        subtotal_minor: i.subtotal_minor,
        tax_lines: tax_line_bodies(&i.tax_lines),
        tax_minor: i.tax_minor,
        total_minor: i.total_minor,
        reverse_charge: i.reverse_charge,
        notes: i.notes.clone(),
        credited_minor: i.credited_minor,
        credit_notes: i
            .credit_notes
            .iter()
            .map(|c| c.display(crate::credit_notes::PREFIX))
            .collect(),
        credits_applied: i
            .credits
            .iter()
            .map(|(g, a)| CreditBody {
                grant: g.display(crate::ledger::grant::PREFIX),
                amount_minor: *a,
            })
            .collect(),
        credits_applied_minor: i.credits_applied_minor,
        amount_due_minor: i.amount_due_minor,
        issued_at: Some(rfc(i.issued_at_ms)),
        events_through: i.events_through,
        inputs_digest: Some(hex(&i.inputs_digest)),
        journal_entries: i
            .entries
            .iter()
            .map(|e| e.display(journal::PREFIX))
            .collect(),
        replaces: i.replaces.map(|x| x.display(PREFIX)),
        replaced_by: i.replaced_by.map(|x| x.display(PREFIX)),
        billing_run: i.billing_run.map(|x| x.display(run::PREFIX)),
        voided_at: i.voided_at_ms.map(rfc),
        paid_at: i.paid_at_ms.map(rfc),
        number: i.number.clone(),
        buyer: i.buyer.as_ref().map(super::parties::buyer_body),
        seller: i.seller.as_ref().map(super::parties::seller_body),
    }
}

/// Retrieves an invoice.
#[utoipa::path(
    get, path = "/v1/invoices/{id}", tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = InvoiceResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("invoice", &id))?;
    let tx = state.store.read()?;
    let inv =
        invoice::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("invoice", &id))?;
    Ok(Json(invoice_body(&inv)).into_response())
}

/// Query of `GET /v1/invoices`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListInvoicesParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this invoice.
    pub starting_after: Option<String>,
    /// Only this customer (`cus_…` or external id).
    pub customer: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only invoices created by this billing run (`brn_…`).
    pub billing_run: Option<String>,
}

/// A page of invoices.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoicePage {
    /// Invoices, oldest first.
    pub data: Vec<InvoiceResponse>,
    /// Whether to ask again.
    pub has_more: bool,
    /// Cursor.
    pub next_cursor: Option<String>,
}

/// Lists invoices.
#[utoipa::path(
    get, path = "/v1/invoices", tag = "billing",
    params(ListInvoicesParams),
    responses((status = 200, body = InvoicePage), (status = 400, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListInvoicesParams>,
) -> Result<Response, ApiError> {
    let limit = PageParams {
        limit: params.limit,
        starting_after: None,
    }
    .limit()?;
    let after = match &params.starting_after {
        Some(c) => Some(Id::parse(c, PREFIX).ok_or_else(|| {
            ApiError::invalid_field("starting_after", "is not an invoice id (inv_…)")
        })?),
        None => None,
    };
    let billing_run = match &params.billing_run {
        Some(r) => Some(Id::parse(r, run::PREFIX).ok_or_else(|| {
            ApiError::invalid_field("billing_run", "is not a billing run id (brn_…)")
        })?),
        None => None,
    };
    // A run's invoices are created at or after its start: begin the scan there.
    let after = after.or_else(|| {
        billing_run.and_then(|r| {
            let started = (r.0 >> 80) << 80;
            started.checked_sub(1).map(Id)
        })
    });
    if let Some(s) = &params.status {
        if !["finalized", "paid", "void", "uncollectible"].contains(&s.as_str()) {
            return Err(ApiError::invalid_field(
                "status",
                "must be finalized, paid, void or uncollectible",
            ));
        }
    }
    let tx = state.store.read()?;
    let customer = match &params.customer {
        Some(r) => Some(
            resolve_customer(&tx, tenant, r)?
                .ok_or_else(|| ApiError::missing("customer", r))?
                .id,
        ),
        None => None,
    };
    // The status filter is applied to pages read in id order; a short page may carry a cursor.
    let (items, has_more) = invoice::list(&tx, tenant, customer, after, limit)?;
    let next_cursor = if has_more {
        items.last().map(|i| i.id.display(PREFIX))
    } else {
        None
    };
    let data = items
        .iter()
        .filter(|i| {
            params
                .status
                .as_deref()
                .is_none_or(|s| s == i.status.as_str())
        })
        .filter(|i| billing_run.is_none_or(|r| i.billing_run == Some(r)))
        .map(invoice_body)
        .collect();
    Ok(Json(InvoicePage {
        data,
        has_more,
        next_cursor,
    })
    .into_response())
}

fn render_void(output: &Result<Invoice, InvoiceError>) -> StoredResponse {
    match output {
        Ok(inv) => json_response(StatusCode::OK, &invoice_body(inv)),
        Err(e @ InvoiceError::Missing(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string()).to_stored()
        }
        Err(
            e @ (InvoiceError::WrongState { .. }
            | InvoiceError::AdjustedLater { .. }
            | InvoiceError::InterimDeducted { .. }
            | InvoiceError::Credited(_)),
        ) => ApiError::new(StatusCode::CONFLICT, "invoice_state", e.to_string()).to_stored(),
        Err(e @ InvoiceError::PaymentInProgress { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "payment_in_progress", e.to_string()).to_stored()
        }
        Err(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invoice_error",
            e.to_string(),
        )
        .to_stored(),
    }
}

/// Body of action endpoints that take no parameters (may be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyRequest {}

/// Voids a finalized invoice with reversing entries and frees its period for one re-issue
/// (the next billing run issues it again, linked to this one).
#[utoipa::path(
    post, path = "/v1/invoices/{id}/void", tag = "billing",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = InvoiceResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "invoice_state: not finalized; payment_in_progress: an attempt is at the provider", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn void(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<EmptyRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("invoice", &id))?;
    let path = format!("/v1/invoices/{id}/void");
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
        VoidInvoice {
            tenant,
            id: parsed,
            now_ms: crate::clock::now_ms(),
            origin,
        },
        render_void,
    )
    .await
}

/// Result of re-deriving an invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceVerification {
    /// Always `invoice_verification`.
    pub object: &'static str,
    /// `inv_…`.
    pub invoice: String,
    /// True when the invoice equals its recomputation.
    pub matches: bool,
    /// The first difference.
    pub difference: Option<String>,
}

/// Recomputes an invoice from its stored inputs (plan version, events up to its cutoff, credits
/// drawn) and reports a match or the first difference.
#[utoipa::path(
    get, path = "/v1/invoices/{id}/verify", tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = InvoiceVerification), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn verify(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("invoice", &id))?;
    let tx = state.store.read()?;
    let inv =
        invoice::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("invoice", &id))?;
    let outcome = crate::billing::verify::verify_invoice(&tx, tenant, &inv)?;
    Ok(Json(InvoiceVerification {
        object: "invoice_verification",
        invoice: id,
        matches: outcome.is_ok(),
        difference: outcome.err(),
    })
    .into_response())
}

/// The preview of the next invoice of each running subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpcomingResponse {
    /// Always `upcoming_invoice`.
    pub object: &'static str,
    /// `cus_…`.
    pub customer: String,
    /// One draft per running subscription.
    pub invoices: Vec<InvoiceResponse>,
}

/// Previews the open (or in-grace) period of each of the customer's subscriptions, computed as
/// a billing run would compute it now. Writes nothing; credits are not drawn.
#[utoipa::path(
    get, path = "/v1/customers/{id}/upcoming-invoice", tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = UpcomingResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn upcoming(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tx = state.store.read()?;
    let customer_id = Id::parse(&id, crate::customers::PREFIX)
        .ok_or_else(|| ApiError::missing("customer", &id))?;
    let customer = crate::customers::get(&tx, tenant, customer_id)?
        .ok_or_else(|| ApiError::missing("customer", &id))?;
    let drafts = preview::upcoming(&tx, tenant, customer.id, &state.config.billing_policy())?;
    let mut invoices = Vec::new();
    let failed = |e: InvoiceError| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invoice_error",
            e.to_string(),
        )
    };
    for draft in drafts {
        let draft = draft.map_err(failed)?;
        let subtotal = invoice::subtotal(&draft.lines).map_err(failed)?;
        let total = subtotal
            .checked_add(draft.taxes.exclusive_minor)
            .ok_or(InvoiceError::OutOfRange)
            .map_err(failed)?;
        let rfc = crate::clock::rfc3339;
        invoices.push(InvoiceResponse {
            id: String::new(),
            object: "invoice",
            customer: customer.id.display(crate::customers::PREFIX),
            subscription: Some(draft.subscription.id.display(subscription::PREFIX)),
            plan: Some(draft.plan.id.display(plan::PREFIX)),
            top_up: None,
            currency: draft.plan.currency.clone(),
            kind: "period",
            status: "draft",
            period_start: rfc(draft.spec.period.start_ms),
            period_end: rfc(draft.spec.period.end_ms),
            lines: draft.lines.iter().map(line_body).collect(),
            subtotal_minor: subtotal,
            tax_lines: tax_line_bodies(&draft.taxes.lines),
            tax_minor: draft.taxes.tax_minor,
            total_minor: total,
            reverse_charge: draft.taxes.reverse_charge,
            notes: draft.taxes.notes.clone(),
            credited_minor: 0,
            credit_notes: Vec::new(),
            credits_applied: Vec::new(),
            credits_applied_minor: 0,
            amount_due_minor: total.max(0),
            issued_at: None,
            events_through: draft.spec.cutoff,
            inputs_digest: None,
            journal_entries: Vec::new(),
            replaces: None,
            replaced_by: None,
            billing_run: None,
            voided_at: None,
            paid_at: None,
            number: None,
            buyer: None,
            seller: None,
        });
    }
    Ok(Json(UpcomingResponse {
        object: "upcoming_invoice",
        customer: customer.id.display(crate::customers::PREFIX),
        invoices,
    })
    .into_response())
}

/// Body of `POST /v1/billing-runs`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunRequest {
    /// Close periods whose end plus grace is at or before this instant (RFC 3339; default now;
    /// not in the future).
    pub as_of: Option<String>,
}

/// One invoice a run created.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClosedBody {
    /// `sub_…`.
    pub subscription: String,
    /// `inv_…`.
    pub invoice: String,
    /// Invoice kind.
    pub kind: String,
    /// RFC 3339.
    pub period_start: String,
    /// RFC 3339.
    pub period_end: String,
}

/// Something a run skipped.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedBody {
    /// `sub_…`.
    pub subscription: String,
    /// RFC 3339.
    pub period_start: Option<String>,
    /// Why.
    pub reason: String,
}

/// A billing run's report.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunResponse {
    /// `brn_…`.
    pub id: String,
    /// Always `billing_run`.
    pub object: &'static str,
    /// RFC 3339.
    pub as_of: String,
    /// RFC 3339.
    pub ran_at: String,
    /// api or scheduler.
    pub trigger: String,
    /// `completed`, or `running` while further transactions continue it.
    pub status: &'static str,
    /// Subscriptions examined.
    pub subscriptions: u64,
    /// The first 100 invoices created (all of them: `GET /v1/invoices?billing_run=`).
    pub closed: Vec<ClosedBody>,
    /// How many invoices it created.
    pub closed_count: u64,
    /// The first 100 things not invoiced, and why.
    pub skipped: Vec<SkippedBody>,
    /// How many things were not invoiced.
    pub skipped_count: u64,
    /// Write transactions used so far.
    pub transactions: u32,
}

fn run_body(r: &Run) -> RunResponse {
    let rfc = crate::clock::rfc3339;
    RunResponse {
        id: r.id.display(run::PREFIX),
        object: "billing_run",
        as_of: rfc(r.as_of_ms),
        ran_at: rfc(r.ran_at_ms),
        trigger: r.trigger.clone(),
        status: if r.complete { "completed" } else { "running" },
        subscriptions: r.subscriptions,
        closed_count: r.closed_count,
        skipped_count: r.skipped_count,
        transactions: r.transactions,
        closed: r
            .closed
            .iter()
            .map(|c| ClosedBody {
                subscription: c.subscription.display(subscription::PREFIX),
                invoice: c.invoice.display(PREFIX),
                kind: c.kind.clone(),
                period_start: rfc(c.period_start_ms),
                period_end: rfc(c.period_end_ms),
            })
            .collect(),
        skipped: r
            .skipped
            .iter()
            .map(|s| SkippedBody {
                subscription: s.subscription.display(subscription::PREFIX),
                period_start: s.period_start_ms.map(rfc),
                reason: s.reason.clone(),
            })
            .collect(),
    }
}

/// 201 with the report when the run completed in its first transaction; 202 with the report so
/// far when it continues in further ones (follow it with `GET /v1/billing-runs/{id}`).
fn render_run(r: &Run) -> StoredResponse {
    let status = if r.complete {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    json_response(status, &run_body(r))
}

/// Closes every due period of this tenant into invoices (one per subscription and period, ever),
/// at most `billing.run_chunk_periods` per write transaction.
#[utoipa::path(
    post, path = "/v1/billing-runs", tag = "billing",
    request_body = CreateRunRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, description = "completed in one transaction", body = RunResponse),
        (status = 202, description = "continues in further transactions", body = RunResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create_run(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: OptionalJsonBody<CreateRunRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let now_ms = crate::clock::now_ms();
    let as_of_ms = time_param("as_of", &body.value.as_of)?.unwrap_or(now_ms);
    if as_of_ms > now_ms {
        return Err(ApiError::invalid_field(
            "as_of",
            "must not be in the future: usage of open periods is not final",
        ));
    }
    let origin = format!("api:POST /v1/billing-runs idempotency-key={key}");
    let command = BillingRun {
        tenant,
        id: Id::generate_at(now_ms),
        as_of_ms,
        now_ms,
        policy: state.config.billing_policy(),
        trigger: "api".into(),
        origin,
    };
    let answer = idempotent::execute(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/billing-runs",
            canonical_body: &body.canonical,
        },
        command.clone(),
        render_run,
    )
    .await?;
    if !answer.replayed {
        count_issued(&answer.stored);
    }
    if answer.stored.status == StatusCode::ACCEPTED.as_u16() {
        // The run needs more transactions. A replayed 202 names a run that a restart may have
        // stopped: continue the run the stored reply names (continuing a complete run does
        // nothing).
        let named = serde_json::from_slice::<serde_json::Value>(&answer.stored.body)
            .ok()
            .and_then(|v| v["id"].as_str().and_then(|id| Id::parse(id, run::PREFIX)));
        // A replay naming a run that has completed meanwhile has nothing to continue.
        let unfinished = named.filter(|id| {
            state
                .store
                .read()
                .ok()
                .and_then(|tx| run::get(&tx, tenant, *id).ok().flatten())
                .is_none_or(|r| !r.complete)
        });
        if let Some(id) = unfinished {
            continue_run(&state, BillingRun { id, ..command });
        }
    }
    Ok(idempotent::respond(answer.stored, answer.replayed))
}

/// Counts the invoices the first transaction of a committed run issued (its stored report's
/// `closed_count`); [`continue_run`] counts the rest, as the scheduler does for its runs.
fn count_issued(stored: &StoredResponse) {
    let closed = serde_json::from_slice::<serde_json::Value>(&stored.body)
        .ok()
        .and_then(|report| report["closed_count"].as_u64())
        .unwrap_or(0);
    if closed > 0 {
        metrics::counter!("tally_invoices_issued_total").increment(closed);
    }
}

/// Continues a run in further bounded transactions, detached from the request so a client
/// that goes away does not stop it. Counts the invoices the continuation issues.
fn continue_run(state: &AppState, command: BillingRun) {
    let writer = state.writer.clone();
    let stop = state.stop.clone();
    let before = state
        .store
        .read()
        .ok()
        .and_then(|tx| run::get(&tx, command.tenant, command.id).ok().flatten())
        .map_or(0, |r| r.closed_count);
    tokio::spawn(async move {
        let id = command.id.display(run::PREFIX);
        let keep_going = || !*stop.borrow();
        let outcome = match writer.submit(command.clone()).await {
            Ok(first) => run::complete(&writer, command, first, keep_going).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(done) => {
                let issued = done.closed_count.saturating_sub(before);
                if issued > 0 {
                    metrics::counter!("tally_invoices_issued_total").increment(issued);
                }
            }
            Err(error) => {
                tracing::warn!(%error, run = %id, "billing run stopped before completing")
            }
        }
    });
}

/// Retrieves a billing run's report.
#[utoipa::path(
    get, path = "/v1/billing-runs/{id}", tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = RunResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_run(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed =
        Id::parse(&id, run::PREFIX).ok_or_else(|| ApiError::missing("billing run", &id))?;
    let tx = state.store.read()?;
    let r = run::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("billing run", &id))?;
    Ok(Json(run_body(&r)).into_response())
}
