//! `/v1/credit-grants` and `GET /v1/customers/{id}/balance`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::{resolve_customer, time_param};
use super::extract::{IdempotencyKey, JsonBody, OptionalJsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::ledger::account::AccountRef;
use crate::ledger::grant::{
    self, status_str, Category, CreateGrant, Funding, Grant, GrantError, GrantStatus, VoidGrant,
    PREFIX,
};
use crate::ledger::journal::{self, MAX_AMOUNT_MINOR};
use crate::store::tables;

/// Body of `POST /v1/credit-grants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrantRequest {
    /// `cus_…` or external id.
    pub customer: String,
    /// Positive minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// `paid` or `promotional`.
    pub category: String,
    /// 0 (default) burns first.
    pub priority: Option<u32>,
    /// Usable from (RFC 3339; default now).
    pub effective_at: Option<String>,
    /// Usable until, exclusive (RFC 3339; default never).
    pub expires_at: Option<String>,
    /// For paid grants: `cash` (default, paid up front) or `receivable` (to be invoiced).
    pub funding: Option<String>,
    /// Recorded on the journal entry.
    pub reason: Option<String>,
}

/// A grant as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantResponse {
    /// `grt_…`.
    pub id: String,
    /// Always `credit_grant`.
    pub object: &'static str,
    /// `cus_…`.
    pub customer: String,
    /// Granted amount.
    pub amount_minor: i64,
    /// Still available (minus its ledger account's balance).
    pub remaining_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// paid or promotional.
    pub category: &'static str,
    /// cash, receivable or promotional_expense.
    pub funding: &'static str,
    /// 0 burns first.
    pub priority: u32,
    /// RFC 3339.
    pub effective_at: String,
    /// RFC 3339 or null.
    pub expires_at: Option<String>,
    /// active, voided or expired.
    pub status: &'static str,
    /// The ledger account holding it.
    pub account: String,
    /// The entry that issued it.
    pub issue_entry: String,
    /// The entry that voided or expired it.
    pub close_entry: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// The API body of a grant with its remainder.
pub fn grant_response(g: &Grant, remaining_minor: i64) -> GrantResponse {
    GrantResponse {
        id: g.id.display(PREFIX),
        object: "credit_grant",
        customer: g.customer.display(crate::customers::PREFIX),
        amount_minor: g.amount_minor,
        remaining_minor,
        currency: g.currency.clone(),
        category: g.category.as_str(),
        funding: g.funding.as_str(),
        priority: g.priority,
        effective_at: crate::clock::rfc3339(g.effective_at_ms),
        expires_at: g.expires_at_ms.map(crate::clock::rfc3339),
        status: status_str(g.status),
        account: g.account().code(),
        issue_entry: g.issue_entry.display(journal::PREFIX),
        close_entry: g.close_entry.map(|e| e.display(journal::PREFIX)),
        created_at: crate::clock::rfc3339(g.created_at_ms),
    }
}

fn render(output: &Result<Grant, GrantError>, created: StatusCode) -> StoredResponse {
    match output {
        Ok(g) => {
            let remaining = match g.status {
                GrantStatus::Active => g.amount_minor,
                _ => 0,
            };
            json_response(created, &grant_response(g, remaining))
        }
        Err(e @ GrantError::UnknownCustomer(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string())
                .field("customer", e.to_string())
                .to_stored()
        }
        Err(e @ GrantError::Missing(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string()).to_stored()
        }
        Err(e @ GrantError::NotActive { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "grant_not_active", e.to_string()).to_stored()
        }
        Err(e @ GrantError::TopUp(_)) => {
            ApiError::new(StatusCode::CONFLICT, "top_up_grant", e.to_string()).to_stored()
        }
        Err(GrantError::Ledger(e)) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_entry",
            e.to_string(),
        )
        .to_stored(),
    }
}

fn render_created(output: &Result<Grant, GrantError>) -> StoredResponse {
    render(output, StatusCode::CREATED)
}

/// Issues a credit grant and posts its journal entry (paid: cash or receivable debited;
/// promotional: promotional expense debited; the grant's liability account credited).
#[utoipa::path(
    post, path = "/v1/credit-grants", tag = "credits",
    request_body = CreateGrantRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = GrantResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown customer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<CreateGrantRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let req = &body.value;
    if req.amount_minor <= 0 {
        return Err(ApiError::invalid_field(
            "amount_minor",
            format!("must be a positive integer of at most {MAX_AMOUNT_MINOR}"),
        ));
    }
    if req.amount_minor > MAX_AMOUNT_MINOR {
        let detail = format!("is out of range: at most {MAX_AMOUNT_MINOR} minor units");
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "value_out_of_range",
            format!("amount_minor: {detail}"),
        )
        .field("amount_minor", detail));
    }
    if !crate::currency::is_known(&req.currency) {
        return Err(ApiError::invalid_field(
            "currency",
            "is not an ISO 4217 currency code (upper case)",
        ));
    }
    let category = match req.category.as_str() {
        "paid" => Category::Paid,
        "promotional" => Category::Promotional,
        _ => {
            return Err(ApiError::invalid_field(
                "category",
                "must be paid or promotional",
            ))
        }
    };
    let funding = match (category, req.funding.as_deref()) {
        (Category::Paid, None | Some("cash")) => Funding::Cash,
        (Category::Paid, Some("receivable")) => Funding::Receivable,
        (Category::Promotional, None | Some("promotional_expense")) => {
            Funding::PromotionalExpense
        }
        _ => {
            return Err(ApiError::invalid_field(
                "funding",
                "paid grants are funded by cash or receivable; promotional grants by promotional_expense",
            ))
        }
    };
    let priority = req.priority.unwrap_or(0);
    if priority > 1000 {
        return Err(ApiError::invalid_field(
            "priority",
            "must be between 0 and 1000",
        ));
    }
    let now_ms = crate::clock::now_ms();
    let effective_at_ms = time_param("effective_at", &req.effective_at)?.unwrap_or(now_ms);
    let expires_at_ms = time_param("expires_at", &req.expires_at)?;
    if expires_at_ms.is_some_and(|e| e <= effective_at_ms) {
        return Err(ApiError::invalid_field(
            "expires_at",
            "must be after effective_at",
        ));
    }
    if let Some(reason) = &req.reason {
        if reason.chars().count() > 500 {
            return Err(ApiError::invalid_field(
                "reason",
                "must be at most 500 characters",
            ));
        }
    }
    let customer = {
        let tx = state.store.read()?;
        resolve_customer(&tx, tenant, &req.customer)?.ok_or_else(|| {
            ApiError::missing("customer", &req.customer).field("customer", "no such customer")
        })?
    };
    let grant = Grant {
        id: Id::generate_at(now_ms),
        customer: customer.id,
        currency: req.currency.clone(),
        amount_minor: req.amount_minor,
        category,
        funding,
        priority,
        effective_at_ms,
        expires_at_ms,
        created_at_ms: now_ms,
        status: GrantStatus::Active,
        closed_at_ms: None,
        issue_entry: Id::generate_at(now_ms),
        close_entry: None,
    };
    let reason = req
        .reason
        .clone()
        .unwrap_or_else(|| format!("{} credit grant", category.as_str()));
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key: key.clone(),
            method: "POST",
            path: "/v1/credit-grants",
            canonical_body: &body.canonical,
        },
        CreateGrant {
            tenant,
            grant,
            reason,
            origin: format!("api:POST /v1/credit-grants idempotency-key={key}"),
        },
        render_created,
    )
    .await
}

/// Body of `POST /v1/credit-grants/{id}/void` (may be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidGrantRequest {}

fn render_void(output: &Result<Grant, GrantError>) -> StoredResponse {
    render(output, StatusCode::OK)
}

/// Voids a grant: its remainder is reversed to its funding account by a new entry.
#[utoipa::path(
    post, path = "/v1/credit-grants/{id}/void", tag = "credits",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = GrantResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "grant_not_active, top_up_grant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn void(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<VoidGrantRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("credit grant", &id))?;
    let now_ms = crate::clock::now_ms();
    let path = format!("/v1/credit-grants/{id}/void");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key: key.clone(),
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        VoidGrant {
            tenant,
            grant: parsed,
            entry_id: Id::generate_at(now_ms),
            now_ms,
            origin: format!("api:POST {path} idempotency-key={key}"),
        },
        render_void,
    )
    .await
}

/// Retrieves a grant with its current remainder.
#[utoipa::path(
    get, path = "/v1/credit-grants/{id}", tag = "credits",
    params(("id" = String, Path)),
    responses((status = 200, body = GrantResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("credit grant", &id))?;
    let tx = state.store.read()?;
    let g =
        grant::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("credit grant", &id))?;
    let balances = tx.open_table(tables::BALANCES)?;
    let left = grant::remaining(&balances, tenant, &g)?;
    Ok(Json(grant_response(&g, left)).into_response())
}

/// Query of the balance endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BalanceParams {
    /// A past instant (RFC 3339): the balance from the journal up to it. Default now.
    pub at: Option<String>,
}

/// One grant inside a balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantBalance {
    /// `grt_…`.
    pub id: String,
    /// paid or promotional.
    pub category: &'static str,
    /// 0 burns first.
    pub priority: u32,
    /// Remaining at the instant.
    pub remaining_minor: i64,
    /// RFC 3339.
    pub effective_at: String,
    /// RFC 3339 or null.
    pub expires_at: Option<String>,
    /// `available`, `pending` (not yet effective), `expired` or `voided` at the instant.
    pub status: &'static str,
}

/// Balances of one currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrencyBalance {
    /// ISO 4217.
    pub currency: String,
    /// Sum of available grants' remainders.
    pub credits_available_minor: i64,
    /// What the customer owes (receivable account balance).
    pub receivable_minor: i64,
    /// Credits available minus the total (tax included) of the current periods' draft invoices
    /// in this currency, computed like the upcoming invoice (what interim invoices already billed
    /// left out): what would remain if those invoices were issued now, negative when they would
    /// owe more than the credits cover. `null` for a balance `at` a given instant.
    pub projected_available_minor: Option<i64>,
    /// Grants in burn order.
    pub grants: Vec<GrantBalance>,
}

/// Reply of `GET /v1/customers/{id}/balance`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceResponse {
    /// Always `customer_balance`.
    pub object: &'static str,
    /// `cus_…`.
    pub customer: String,
    /// The instant (RFC 3339).
    pub at: String,
    /// The journal position the answer is computed through.
    pub journal_seq: u64,
    /// Per currency.
    pub balances: Vec<CurrencyBalance>,
}

/// A customer's credits and receivable at an instant, recomputed from the journal up to it.
#[utoipa::path(
    get, path = "/v1/customers/{id}/balance", tag = "credits",
    params(("id" = String, Path), BalanceParams),
    responses((status = 200, body = BalanceResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn balance(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(params): Query<BalanceParams>,
) -> Result<Response, ApiError> {
    let now_ms = crate::clock::now_ms();
    let at_ms = time_param("at", &params.at)?.unwrap_or(now_ms);
    let tx = state.store.read()?;
    let customer_id = Id::parse(&id, crate::customers::PREFIX)
        .ok_or_else(|| ApiError::missing("customer", &id))?;
    let customer = crate::customers::get(&tx, tenant, customer_id)?
        .ok_or_else(|| ApiError::missing("customer", &id))?;
    let seq = journal::seq_at(&tx, tenant, at_ms)?;
    let mut grants = grant::at_seq(&tx, tenant, customer.id, seq)?;
    grants.sort_by_key(|(g, _)| g.burn_key());
    let mut per_currency: BTreeMap<String, CurrencyBalance> = BTreeMap::new();
    let mut currencies: Vec<String> = grants.iter().map(|(g, _)| g.currency.clone()).collect();
    currencies.push(customer.currency.clone());
    currencies.sort();
    currencies.dedup();
    for currency in currencies {
        let receivable = journal::balance_through(
            &tx,
            tenant,
            &currency,
            AccountRef::Receivable {
                customer: customer.id,
            },
            seq,
        )?;
        per_currency.insert(
            currency.clone(),
            CurrencyBalance {
                currency,
                credits_available_minor: 0,
                receivable_minor: receivable,
                projected_available_minor: None,
                grants: Vec::new(),
            },
        );
    }
    for (g, left) in grants {
        let closed_by_then = g.closed_at_ms.is_some_and(|c| c <= at_ms);
        let status = if closed_by_then && g.status == GrantStatus::Voided {
            "voided"
        } else if closed_by_then || g.expires_at_ms.is_some_and(|e| e <= at_ms) {
            "expired"
        } else if g.effective_at_ms > at_ms {
            "pending"
        } else {
            "available"
        };
        if let Some(entry) = per_currency.get_mut(&g.currency) {
            if status == "available" {
                entry.credits_available_minor += left;
            }
            entry.grants.push(GrantBalance {
                id: g.id.display(PREFIX),
                category: g.category.as_str(),
                priority: g.priority,
                remaining_minor: left,
                effective_at: crate::clock::rfc3339(g.effective_at_ms),
                expires_at: g.expires_at_ms.map(crate::clock::rfc3339),
                status,
            });
        }
    }
    if params.at.is_none() {
        let policy = state.config.billing_policy();
        let drafts =
            crate::billing::draft::of_customer(&*tx, tenant, customer.id, now_ms, &policy)?;
        // A draft that cannot be computed (a missing plan or meter) leaves the projection out.
        let computable = drafts.iter().all(|d| d.is_ok());
        for entry in per_currency.values_mut().filter(|_| computable) {
            let due = crate::billing::draft::total_minor(&drafts, &entry.currency);
            entry.projected_available_minor =
                Some(entry.credits_available_minor.saturating_sub(due));
        }
    }
    Ok(Json(BalanceResponse {
        object: "customer_balance",
        customer: customer.id.display(crate::customers::PREFIX),
        at: crate::clock::rfc3339(at_ms),
        journal_seq: seq,
        balances: per_currency.into_values().collect(),
    })
    .into_response())
}
