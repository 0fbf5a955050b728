//! Prepaid wallets: `/v1/customers/{id}/top-ups`, `/v1/top-ups/{id}` and
//! `/v1/customers/{id}/auto-recharge`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::events::{resolve_customer, time_param};
use super::extract::{IdempotencyKey, JsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::pagination::{Page, PageParams};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::ledger::grant::Category;
use crate::wallet::auto_recharge::{self, DeleteRule, Rule, RuleError, Set, SetRule, MAX_PER_DAY};
use crate::wallet::record::{self, TopUp, Trigger, PREFIX};
use crate::wallet::top_up::{CreateTopUp, NewTopUp, TopUpError, MAX_TOP_UP_MINOR};

/// Body of `POST /v1/customers/{id}/top-ups`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopUpRequest {
    /// Credit to buy, positive minor units (at most 10^15).
    pub amount_minor: i64,
    /// ISO 4217; must be the customer's (the default).
    pub currency: Option<String>,
    /// `true`: invoiced and collected, credited when the payment succeeds; `false`: a
    /// promotional grant at once, no invoice.
    pub paid: bool,
    /// The grant's expiry (RFC 3339, in the future; default never). A paid top-up whose payment
    /// settles later keeps the lifetime bought: its grant expires at the later of this and the
    /// settlement plus (this − the request).
    pub expires_at: Option<String>,
    /// The grant's category: `paid` (required for a paid top-up, the default) or
    /// `promotional` (required for a free one, the default).
    pub category: Option<String>,
    /// The payment method the attempt charges (the provider's default when absent).
    pub payment_method: Option<String>,
}

/// A top-up as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopUpResponse {
    /// `tup_…`.
    pub id: String,
    /// Always `top_up`.
    pub object: &'static str,
    /// `cus_…`.
    pub customer: String,
    /// Credit bought.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// Invoiced and collected, or given.
    pub paid: bool,
    /// The grant's category.
    pub category: &'static str,
    /// pending, succeeded or failed.
    pub status: &'static str,
    /// `api` or `auto_recharge`.
    pub trigger: &'static str,
    /// `inv_…` (paid top-ups).
    pub invoice: Option<String>,
    /// `pay_…`: the attempt opened with it, or the one that paid it.
    pub payment: Option<String>,
    /// `grt_…`, once succeeded.
    pub grant: Option<String>,
    /// The grant's expiry (RFC 3339).
    pub expires_at: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// When it succeeded or failed (RFC 3339).
    pub settled_at: Option<String>,
}

/// The API body of a top-up.
pub fn top_up_body(t: &TopUp) -> TopUpResponse {
    let rfc = crate::clock::rfc3339;
    TopUpResponse {
        id: t.id.display(PREFIX),
        object: "top_up",
        customer: t.customer.display(crate::customers::PREFIX),
        amount_minor: t.amount_minor,
        currency: t.currency.clone(),
        paid: t.paid,
        category: t.category.as_str(),
        status: t.status.as_str(),
        trigger: t.trigger.as_str(),
        invoice: t
            .invoice
            .map(|i| i.display(crate::billing::invoice::PREFIX)),
        payment: t
            .payment
            .map(|p| p.display(crate::payments::payment::PREFIX)),
        grant: t.grant.map(|g| g.display(crate::ledger::grant::PREFIX)),
        expires_at: t.expires_at_ms.map(rfc),
        failure: t.failure.clone(),
        created_at: rfc(t.created_at_ms),
        settled_at: t.settled_at_ms.map(rfc),
    }
}

fn amount_problem(field: &str, max: i64) -> ApiError {
    ApiError::invalid_field(
        field,
        format!("must be a positive integer of at most {max}"),
    )
}

fn currency_problem(expected: &str, got: &str) -> ApiError {
    let detail = format!("is {got}, not the customer's currency {expected}");
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "currency_mismatch",
        format!("currency: {detail}"),
    )
    .field("currency", detail)
}

fn render_top_up(output: &Result<TopUp, TopUpError>) -> StoredResponse {
    match output {
        Ok(t) => json_response(StatusCode::CREATED, &top_up_body(t)),
        Err(e @ TopUpError::UnknownCustomer(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string())
                .field("customer", e.to_string())
                .to_stored()
        }
        Err(TopUpError::CurrencyMismatch { expected, got }) => {
            currency_problem(expected, got).to_stored()
        }
        Err(TopUpError::Amount) => amount_problem("amount_minor", MAX_TOP_UP_MINOR).to_stored(),
        Err(TopUpError::ExpiresAt) => {
            ApiError::invalid_field("expires_at", "must be in the future").to_stored()
        }
        Err(e @ TopUpError::Refused(_)) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ledger_refused",
            e.to_string(),
        )
        .to_stored(),
    }
}

/// The customer a path names (`cus_…` or external id), or 404.
fn customer_of(state: &AppState, tenant: crate::store::TenantId, id: &str) -> Result<Id, ApiError> {
    let tx = state.store.read()?;
    Ok(resolve_customer(&tx, tenant, id)?
        .ok_or_else(|| ApiError::missing("customer", id))?
        .id)
}

/// The validated category of a top-up.
fn category_of(req: &CreateTopUpRequest) -> Result<Category, ApiError> {
    match (req.paid, req.category.as_deref()) {
        (true, None | Some("paid")) => Ok(Category::Paid),
        (false, None | Some("promotional")) => Ok(Category::Promotional),
        _ => Err(ApiError::invalid_field(
            "category",
            "a paid top-up's credit is paid; a free one's is promotional",
        )),
    }
}

/// Buys prepaid credit: an invoice collected through the payment provider, whose credit grant
/// is issued when (and only when) the payment succeeds. `paid: false` grants promotional
/// credit at once.
#[utoipa::path(
    post, path = "/v1/customers/{id}/top-ups", tag = "credits",
    request_body = CreateTopUpRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = TopUpResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown customer", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "currency_mismatch", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create_top_up(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<CreateTopUpRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let req = &body.value;
    if req.amount_minor <= 0 || req.amount_minor > MAX_TOP_UP_MINOR {
        return Err(amount_problem("amount_minor", MAX_TOP_UP_MINOR));
    }
    if let Some(c) = &req.currency {
        if !crate::currency::is_known(c) {
            return Err(ApiError::invalid_field(
                "currency",
                "is not an ISO 4217 currency code (upper case)",
            ));
        }
    }
    let category = category_of(req)?;
    let now_ms = crate::clock::now_ms();
    // Whether it is in the future is checked by the command, after the idempotency lookup.
    let expires_at_ms = time_param("expires_at", &req.expires_at)?;
    if req
        .payment_method
        .as_ref()
        .is_some_and(|m| m.is_empty() || m.len() > 255)
    {
        return Err(ApiError::invalid_field(
            "payment_method",
            "must be 1 to 255 characters",
        ));
    }
    let customer = customer_of(&state, tenant, &id)?;
    let path = format!("/v1/customers/{id}/top-ups");
    let new = NewTopUp {
        tenant,
        customer,
        currency: req.currency.clone(),
        amount_minor: req.amount_minor,
        paid: req.paid,
        category,
        expires_at_ms,
        payment_method: req.payment_method.clone(),
        psp: state.config.payments.provider_name().to_string(),
        trigger: Trigger::Api,
        now_ms,
        origin: format!("api:POST {path} idempotency-key={key}"),
    };
    let answer = idempotent::execute(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        CreateTopUp(new),
        render_top_up,
    )
    .await?;
    if !answer.replayed {
        state.jobs_wake.notify_one();
    }
    Ok(idempotent::respond(answer.stored, answer.replayed))
}

/// A customer's top-ups, oldest first.
#[utoipa::path(
    get, path = "/v1/customers/{id}/top-ups", tag = "credits",
    params(("id" = String, Path), PageParams),
    responses((status = 200, body = Page<TopUpResponse>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list_top_ups(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(page): Query<PageParams>,
) -> Result<Response, ApiError> {
    let limit = page.limit()?;
    let after = page.after(PREFIX, "a top-up")?;
    let customer = customer_of(&state, tenant, &id)?;
    let tx = state.store.read()?;
    let (items, has_more) = record::list(&tx, tenant, customer, after, limit)?;
    Ok(Json(Page::of(
        &items,
        has_more,
        |t| t.id.display(PREFIX),
        top_up_body,
    ))
    .into_response())
}

/// One top-up: its status, invoice, payment and grant.
#[utoipa::path(
    get, path = "/v1/top-ups/{id}", tag = "credits",
    params(("id" = String, Path)),
    responses((status = 200, body = TopUpResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_top_up(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("top-up", &id))?;
    let tx = state.store.read()?;
    let t = record::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("top-up", &id))?;
    Ok(Json(top_up_body(&t)).into_response())
}

/// Body of `POST /v1/customers/{id}/auto-recharge`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoRechargeRequest {
    /// Top up when the available credit is below this (positive minor units).
    pub below_minor: i64,
    /// The top-up's amount: at least `below_minor`, at most 10^15.
    pub amount_minor: i64,
    /// ISO 4217; must be the customer's (the default).
    pub currency: Option<String>,
    /// Top-ups started per UTC day, 1 to 100.
    pub max_per_day: u32,
    /// Default true; false keeps the rule without firing.
    pub enabled: Option<bool>,
    /// The payment method its top-ups charge.
    pub payment_method: Option<String>,
}

/// An auto-recharge rule as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AutoRechargeResponse {
    /// Always `auto_recharge`.
    pub object: &'static str,
    /// `cus_…`.
    pub customer: String,
    /// ISO 4217.
    pub currency: String,
    /// Threshold.
    pub below_minor: i64,
    /// Top-up amount.
    pub amount_minor: i64,
    /// Per UTC day, at most.
    pub max_per_day: u32,
    /// On or off.
    pub enabled: bool,
    /// The payment method charged.
    pub payment_method: Option<String>,
    /// `armed` (fires on the next drop below the threshold) or `fired` (waits for the
    /// balance to recover).
    pub state: &'static str,
    /// Top-ups started on the current UTC day.
    pub started_today: u32,
    /// The auto top-up not yet settled (`tup_…`).
    pub pending_top_up: Option<String>,
    /// The last top-up it started.
    pub last_top_up: Option<String>,
    /// The top-up this request started (the wallet was already below the threshold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fired_top_up: Option<String>,
    /// RFC 3339.
    pub updated_at: String,
}

fn rule_body(r: &Rule, fired: Option<&TopUp>, now_ms: i64) -> AutoRechargeResponse {
    let today = now_ms.div_euclid(86_400_000) == r.day;
    AutoRechargeResponse {
        object: "auto_recharge",
        customer: r.customer.display(crate::customers::PREFIX),
        currency: r.currency.clone(),
        below_minor: r.below_minor,
        amount_minor: r.amount_minor,
        max_per_day: r.max_per_day,
        enabled: r.enabled,
        payment_method: r.payment_method.clone(),
        state: if r.armed { "armed" } else { "fired" },
        started_today: if today { r.started_today } else { 0 },
        pending_top_up: r.pending.map(|t| t.display(PREFIX)),
        last_top_up: r.last_top_up.map(|t| t.display(PREFIX)),
        fired_top_up: fired.map(|t| t.id.display(PREFIX)),
        updated_at: crate::clock::rfc3339(r.updated_at_ms),
    }
}

fn render_rule(output: &Result<Set, RuleError>) -> StoredResponse {
    match output {
        Ok(set) => json_response(
            StatusCode::OK,
            &rule_body(&set.rule, set.fired.as_ref(), set.rule.updated_at_ms),
        ),
        Err(e @ RuleError::UnknownCustomer(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string()).to_stored()
        }
        Err(RuleError::CurrencyMismatch { expected, got }) => {
            currency_problem(expected, got).to_stored()
        }
        Err(e @ RuleError::BelowThreshold { .. }) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "below_own_threshold",
            e.to_string(),
        )
        .field("amount_minor", "must be at least below_minor")
        .to_stored(),
    }
}

/// Validates a rule's fields (shape and ranges; the customer's currency and the threshold rule
/// are checked by the command).
fn check_rule(req: &AutoRechargeRequest) -> Result<(), ApiError> {
    if req.below_minor <= 0 || req.below_minor > MAX_TOP_UP_MINOR {
        return Err(amount_problem("below_minor", MAX_TOP_UP_MINOR));
    }
    if req.amount_minor <= 0 || req.amount_minor > MAX_TOP_UP_MINOR {
        return Err(amount_problem("amount_minor", MAX_TOP_UP_MINOR));
    }
    if req.amount_minor < req.below_minor {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "below_own_threshold",
            format!(
                "amount_minor {} is below the rule's own threshold below_minor {}: one top-up must bring an empty wallet back to the threshold",
                req.amount_minor, req.below_minor
            ),
        )
        .field("amount_minor", "must be at least below_minor"));
    }
    if req.max_per_day == 0 || req.max_per_day > MAX_PER_DAY {
        return Err(ApiError::invalid_field(
            "max_per_day",
            format!("must be between 1 and {MAX_PER_DAY}"),
        ));
    }
    if let Some(c) = &req.currency {
        if !crate::currency::is_known(c) {
            return Err(ApiError::invalid_field(
                "currency",
                "is not an ISO 4217 currency code (upper case)",
            ));
        }
    }
    if req
        .payment_method
        .as_ref()
        .is_some_and(|m| m.is_empty() || m.len() > 255)
    {
        return Err(ApiError::invalid_field(
            "payment_method",
            "must be 1 to 255 characters",
        ));
    }
    Ok(())
}

/// Creates or replaces a customer's auto-recharge rule, and evaluates it at once: a wallet
/// already below the threshold is topped up in the same write.
#[utoipa::path(
    post, path = "/v1/customers/{id}/auto-recharge", tag = "credits",
    request_body = AutoRechargeRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = AutoRechargeResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "currency_mismatch, below_own_threshold", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn set_auto_recharge(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<AutoRechargeRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let req = &body.value;
    check_rule(req)?;
    let customer = customer_of(&state, tenant, &id)?;
    let path = format!("/v1/customers/{id}/auto-recharge");
    let answer = idempotent::execute(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        SetRule {
            tenant,
            customer,
            currency: req.currency.clone(),
            below_minor: req.below_minor,
            amount_minor: req.amount_minor,
            max_per_day: req.max_per_day,
            enabled: req.enabled.unwrap_or(true),
            payment_method: req.payment_method.clone(),
            psp: state.config.payments.provider_name().to_string(),
            now_ms: crate::clock::now_ms(),
        },
        render_rule,
    )
    .await?;
    if !answer.replayed {
        state.jobs_wake.notify_one();
    }
    Ok(idempotent::respond(answer.stored, answer.replayed))
}

/// A customer's auto-recharge rule and its state.
#[utoipa::path(
    get, path = "/v1/customers/{id}/auto-recharge", tag = "credits",
    params(("id" = String, Path)),
    responses((status = 200, body = AutoRechargeResponse), (status = 404, description = "no customer or no rule", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get_auto_recharge(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let customer = customer_of(&state, tenant, &id)?;
    let tx = state.store.read()?;
    let rule = auto_recharge::get(&tx, tenant, customer)?
        .ok_or_else(|| ApiError::missing("auto-recharge rule of customer", &id))?;
    Ok(Json(rule_body(&rule, None, crate::clock::now_ms())).into_response())
}

/// Removes a customer's auto-recharge rule (idempotent by nature: removing it again answers
/// 404). A pending auto top-up still completes, and the rule's state is kept for a rule set
/// again.
#[utoipa::path(
    delete, path = "/v1/customers/{id}/auto-recharge", tag = "credits",
    params(("id" = String, Path)),
    responses((status = 200, body = AutoRechargeResponse), (status = 404, description = "no customer or no rule", body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn delete_auto_recharge(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let customer = customer_of(&state, tenant, &id)?;
    let removed = state
        .writer
        .submit(DeleteRule { tenant, customer })
        .await?
        .ok_or_else(|| ApiError::missing("auto-recharge rule of customer", &id))?;
    let mut body = rule_body(&removed, None, crate::clock::now_ms());
    body.enabled = false;
    Ok(Json(body).into_response())
}
