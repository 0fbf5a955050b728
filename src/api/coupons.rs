//! `/v1/coupons` and discounts: redeeming a coupon on a subscription or a customer, listing and
//! removing the discounts.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::{resolve_customer, time_param};
use super::extract::{IdempotencyKey, JsonBody, OptionalJsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::invoices::EmptyRequest;
use super::pagination::{Page, PageParams};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::billing::coupon::{
    self, AppliesTo, Coupon, CouponError, CreateCoupon, Duration, Off, MAX_DURATION_PERIODS, PREFIX,
};
use crate::billing::discount::{
    self, ApplyDiscount, Discount, DiscountError, RemoveDiscount, Target,
};
use crate::billing::{plan, subscription};
use crate::decimal::{self, Stored};
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::ingest::meter;
use crate::ledger::journal::MAX_AMOUNT_MINOR;
use crate::store::TenantId;

/// What a coupon is limited to.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppliesToBody {
    /// Plans by `pln_…` or code (every version of a plan shares its code); empty: any plan.
    #[serde(default)]
    pub plans: Vec<String>,
    /// Meters by `mtr_…` or key: only usage lines of these meters are discounted; empty: every
    /// usage and fixed-fee line.
    #[serde(default)]
    pub meters: Vec<String>,
}

/// Body of `POST /v1/coupons`: `percent_off`, or `amount_off_minor` with `currency`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCouponRequest {
    /// Unique per tenant: letters, digits, `_`, `-`, `.`; 1-255 characters.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,255}$")]
    pub code: String,
    /// Display name, 1-255 characters.
    pub name: Option<String>,
    /// Percent off, greater than 0 and at most 100 (exact decimal string or number).
    #[schema(value_type = Option<String>, example = "12.5")]
    pub percent_off: Option<serde_json::Value>,
    /// Amount off per invoice, minor units (1 to 10^15).
    pub amount_off_minor: Option<i64>,
    /// ISO 4217, with `amount_off_minor` only.
    pub currency: Option<String>,
    /// `once`, `repeating` (with `duration_periods`) or `forever`.
    pub duration: String,
    /// Periods a repeating coupon lasts, 1-120.
    pub duration_periods: Option<u32>,
    /// Redemptions allowed in total (at least 1; default unlimited).
    pub max_redemptions: Option<u64>,
    /// No redemption after this instant (RFC 3339).
    pub redeem_by: Option<String>,
    /// What it is limited to.
    pub applies_to: Option<AppliesToBody>,
}

/// A coupon as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CouponResponse {
    /// `cpn_…`.
    pub id: String,
    /// Always `coupon`.
    pub object: &'static str,
    /// Code.
    pub code: String,
    /// Name.
    pub name: Option<String>,
    /// Percent off (decimal string), or null.
    pub percent_off: Option<String>,
    /// Amount off, minor units, or null.
    pub amount_off_minor: Option<i64>,
    /// Currency of `amount_off_minor`.
    pub currency: Option<String>,
    /// `once`, `repeating` or `forever`.
    pub duration: &'static str,
    /// Periods of a repeating coupon.
    pub duration_periods: Option<u32>,
    /// Redemptions allowed in total.
    pub max_redemptions: Option<u64>,
    /// RFC 3339.
    pub redeem_by: Option<String>,
    /// Plan codes and `mtr_…` ids it is limited to.
    pub applies_to: AppliesToBody,
    /// Redemptions so far.
    pub times_redeemed: u64,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&Coupon> for CouponResponse {
    fn from(c: &Coupon) -> Self {
        let (percent_off, amount_off_minor, currency) = match &c.off {
            Off::Percent(p) => (Some(decimal::to_text(p.0)), None, None),
            Off::Amount {
                amount_minor,
                currency,
            } => (None, Some(*amount_minor), Some(currency.clone())),
        };
        Self {
            id: c.id.display(PREFIX),
            object: "coupon",
            code: c.code.clone(),
            name: c.name.clone(),
            percent_off,
            amount_off_minor,
            currency,
            duration: c.duration.as_str(),
            duration_periods: match c.duration {
                Duration::Repeating(n) => Some(n),
                _ => None,
            },
            max_redemptions: c.max_redemptions,
            redeem_by: c.redeem_by_ms.map(crate::clock::rfc3339),
            applies_to: AppliesToBody {
                plans: c.applies_to.plans.clone(),
                meters: c
                    .applies_to
                    .meters
                    .iter()
                    .map(|m| m.display(meter::PREFIX))
                    .collect(),
            },
            times_redeemed: c.times_redeemed,
            created_at: crate::clock::rfc3339(c.created_at_ms),
        }
    }
}

fn render_coupon(output: &Result<Coupon, CouponError>) -> StoredResponse {
    match output {
        Ok(c) => json_response(StatusCode::CREATED, &CouponResponse::from(c)),
        Err(e @ CouponError::Exists { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "coupon_exists", e.to_string())
                .field("code", "already used by another coupon")
                .to_stored()
        }
    }
}

fn off_of(req: &CreateCouponRequest) -> Result<Off, ApiError> {
    match (&req.percent_off, req.amount_off_minor) {
        (Some(_), Some(_)) => Err(ApiError::invalid_field(
            "percent_off",
            "send percent_off or amount_off_minor, not both",
        )),
        (None, None) => Err(ApiError::invalid_field(
            "percent_off",
            "send percent_off or amount_off_minor (with currency)",
        )),
        (Some(p), None) => {
            if req.currency.is_some() {
                return Err(ApiError::invalid_field(
                    "currency",
                    "is only allowed with amount_off_minor",
                ));
            }
            let pct = decimal::from_json(p).map_err(|_| {
                ApiError::invalid_field("percent_off", "must be a decimal such as \"12.5\"")
            })?;
            if pct <= Decimal::ZERO || pct > Decimal::ONE_HUNDRED {
                return Err(ApiError::invalid_field(
                    "percent_off",
                    "must be greater than 0 and at most 100",
                ));
            }
            Ok(Off::Percent(Stored(pct)))
        }
        (None, Some(amount)) => {
            if !(1..=MAX_AMOUNT_MINOR).contains(&amount) {
                return Err(ApiError::invalid_field(
                    "amount_off_minor",
                    format!("must be between 1 and {MAX_AMOUNT_MINOR} minor units"),
                ));
            }
            let currency = req.currency.clone().ok_or_else(|| {
                ApiError::invalid_field("currency", "is required with amount_off_minor")
            })?;
            if !crate::currency::is_known(&currency) {
                return Err(ApiError::invalid_field(
                    "currency",
                    "is not an ISO 4217 currency code",
                ));
            }
            Ok(Off::Amount {
                amount_minor: amount,
                currency,
            })
        }
    }
}

fn duration_of(req: &CreateCouponRequest) -> Result<Duration, ApiError> {
    let periods = req.duration_periods;
    match (req.duration.as_str(), periods) {
        ("once", None) => Ok(Duration::Once),
        ("forever", None) => Ok(Duration::Forever),
        ("repeating", Some(n)) if (1..=MAX_DURATION_PERIODS).contains(&n) => {
            Ok(Duration::Repeating(n))
        }
        ("repeating", _) => Err(ApiError::invalid_field(
            "duration_periods",
            format!("is required with duration repeating: 1 to {MAX_DURATION_PERIODS}"),
        )),
        ("once" | "forever", Some(_)) => Err(ApiError::invalid_field(
            "duration_periods",
            "is only allowed with duration repeating",
        )),
        _ => Err(ApiError::invalid_field(
            "duration",
            "must be once, repeating or forever",
        )),
    }
}

fn applies_to_of(
    state: &AppState,
    tenant: TenantId,
    body: &Option<AppliesToBody>,
) -> Result<AppliesTo, ApiError> {
    let Some(body) = body else {
        return Ok(AppliesTo::default());
    };
    if body.plans.len() > 100 || body.meters.len() > 100 {
        return Err(ApiError::invalid_field(
            "applies_to",
            "at most 100 plans and 100 meters",
        ));
    }
    let tx = state.store.read()?;
    let mut out = AppliesTo::default();
    for (i, reference) in body.plans.iter().enumerate() {
        let by_id = match Id::parse(reference, plan::PREFIX) {
            Some(id) => plan::get(&tx, tenant, id)?.map(|p| p.code),
            None => None,
        };
        let code = match by_id {
            Some(code) => code,
            None => {
                let (found, _) = plan::list(&tx, tenant, Some(reference), None, 1)?;
                found.into_iter().next().map(|p| p.code).ok_or_else(|| {
                    ApiError::invalid_field(
                        format!("applies_to.plans.{i}"),
                        format!("no plan {reference:?}"),
                    )
                })?
            }
        };
        if !out.plans.contains(&code) {
            out.plans.push(code);
        }
    }
    for (i, reference) in body.meters.iter().enumerate() {
        let found = match Id::parse(reference, meter::PREFIX) {
            Some(id) => meter::get(&tx, tenant, id)?,
            None => meter::by_key(&tx, tenant, reference)?,
        };
        let m = found.ok_or_else(|| {
            ApiError::invalid_field(
                format!("applies_to.meters.{i}"),
                format!("no meter {reference:?}"),
            )
        })?;
        if !out.meters.contains(&m.id) {
            out.meters.push(m.id);
        }
    }
    Ok(out)
}

/// Validates a coupon body (no writes).
fn build(
    state: &AppState,
    tenant: TenantId,
    req: &CreateCouponRequest,
) -> Result<Coupon, ApiError> {
    let code_ok = !req.code.is_empty()
        && req.code.len() <= 255
        && req
            .code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !code_ok {
        return Err(ApiError::invalid_field(
            "code",
            "must be 1-255 characters of letters, digits, '_', '-' and '.'",
        ));
    }
    if req
        .name
        .as_ref()
        .is_some_and(|n| n.trim().is_empty() || n.chars().count() > 255)
    {
        return Err(ApiError::invalid_field("name", "must be 1-255 characters"));
    }
    let off = off_of(req)?;
    let duration = duration_of(req)?;
    if req.max_redemptions == Some(0) {
        return Err(ApiError::invalid_field(
            "max_redemptions",
            "must be at least 1",
        ));
    }
    let redeem_by_ms = time_param("redeem_by", &req.redeem_by)?;
    let applies_to = applies_to_of(state, tenant, &req.applies_to)?;
    let now_ms = crate::clock::now_ms();
    Ok(Coupon {
        id: Id::generate_at(now_ms),
        code: req.code.clone(),
        name: req.name.clone(),
        off,
        duration,
        max_redemptions: req.max_redemptions,
        redeem_by_ms,
        applies_to,
        times_redeemed: 0,
        created_at_ms: now_ms,
    })
}

/// Creates a coupon.
#[utoipa::path(
    post, path = "/v1/coupons", tag = "billing",
    request_body = CreateCouponRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = CouponResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "coupon_exists", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<CreateCouponRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let coupon = build(&state, tenant, &body.value)?;
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/coupons",
            canonical_body: &body.canonical,
        },
        CreateCoupon { tenant, coupon },
        render_coupon,
    )
    .await
}

/// Retrieves a coupon.
#[utoipa::path(
    get, path = "/v1/coupons/{id}", tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = CouponResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("coupon", &id))?;
    let tx = state.store.read()?;
    let c = coupon::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("coupon", &id))?;
    Ok(Json(CouponResponse::from(&c)).into_response())
}

/// Query of `GET /v1/coupons`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListCouponsParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this id.
    pub starting_after: Option<String>,
}

/// Lists coupons in creation order.
#[utoipa::path(
    get, path = "/v1/coupons", tag = "billing",
    params(ListCouponsParams),
    responses((status = 200, body = Page<CouponResponse>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListCouponsParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        starting_after: params.starting_after,
    };
    let limit = page.limit()?;
    let after = page.after(PREFIX, "a coupon")?;
    let tx = state.store.read()?;
    let (items, has_more) = coupon::list(&tx, tenant, after, limit)?;
    Ok(Json(Page::of(
        &items,
        has_more,
        |c| c.id.display(PREFIX),
        |x| CouponResponse::from(x),
    ))
    .into_response())
}

/// Body of the discount endpoints.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyDiscountRequest {
    /// The coupon, by `cpn_…` or code.
    pub coupon: String,
}

/// A schedule period by position and start.
#[derive(Debug, Serialize, ToSchema)]
pub struct PeriodRefBody {
    /// Position in the subscription's schedule, from 0.
    pub index: u64,
    /// RFC 3339.
    pub start: String,
}

/// A discount as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiscountResponse {
    /// `dsc_…`.
    pub id: String,
    /// Always `discount`.
    pub object: &'static str,
    /// `active` or `removed`.
    pub status: &'static str,
    /// The coupon as it was when redeemed.
    pub coupon: CouponResponse,
    /// `sub_…`, or null for a customer discount (every subscription of the customer).
    pub subscription: Option<String>,
    /// `cus_…`.
    pub customer: String,
    /// RFC 3339.
    pub redeemed_at: String,
    /// The subscription period it starts with (subscription discounts).
    pub starts_with_period: Option<PeriodRefBody>,
    /// RFC 3339: invoices computed from then on leave it out.
    pub removed_at: Option<String>,
}

impl From<&Discount> for DiscountResponse {
    fn from(d: &Discount) -> Self {
        Self {
            id: d.id.display(discount::PREFIX),
            object: "discount",
            status: if d.removed_at_ms.is_some() {
                "removed"
            } else {
                "active"
            },
            coupon: CouponResponse::from(&d.coupon),
            subscription: d.subscription.map(|s| s.display(subscription::PREFIX)),
            customer: d.customer.display(crate::customers::PREFIX),
            redeemed_at: crate::clock::rfc3339(d.redeemed_at_ms),
            starts_with_period: d.starts_with.map(|p| PeriodRefBody {
                index: p.index,
                start: crate::clock::rfc3339(p.start_ms),
            }),
            removed_at: d.removed_at_ms.map(crate::clock::rfc3339),
        }
    }
}

/// The discounts of a subscription or customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiscountList {
    /// In redemption order.
    pub data: Vec<DiscountResponse>,
}

fn render_discount_error(e: &DiscountError) -> ApiError {
    let (status, code, field) = match e {
        DiscountError::UnknownCoupon(_) => (StatusCode::NOT_FOUND, "resource_missing", true),
        DiscountError::UnknownSubscription(_)
        | DiscountError::UnknownCustomer(_)
        | DiscountError::Missing(_) => (StatusCode::NOT_FOUND, "resource_missing", false),
        DiscountError::Expired { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "coupon_expired", true),
        DiscountError::Exhausted { .. } => (StatusCode::CONFLICT, "coupon_exhausted", true),
        DiscountError::CurrencyMismatch { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch", true)
        }
        DiscountError::NotApplicable { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "coupon_not_applicable",
            true,
        ),
        DiscountError::AlreadyActive { .. } => (StatusCode::CONFLICT, "discount_exists", true),
        DiscountError::Canceled(_) => (StatusCode::CONFLICT, "subscription_canceled", false),
    };
    let err = ApiError::new(status, code, e.to_string());
    if field {
        err.field("coupon", e.to_string())
    } else {
        err
    }
}

fn render_applied(output: &Result<Discount, DiscountError>) -> StoredResponse {
    match output {
        Ok(d) => json_response(StatusCode::CREATED, &DiscountResponse::from(d)),
        Err(e) => render_discount_error(e).to_stored(),
    }
}

fn render_removed(output: &Result<Discount, DiscountError>) -> StoredResponse {
    match output {
        Ok(d) => json_response(StatusCode::OK, &DiscountResponse::from(d)),
        Err(e) => render_discount_error(e).to_stored(),
    }
}

async fn apply(
    state: &AppState,
    tenant: TenantId,
    key: IdempotencyKey,
    path: &str,
    body: &JsonBody<ApplyDiscountRequest>,
    target: Target,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    if body.value.coupon.is_empty() || body.value.coupon.len() > 255 {
        return Err(ApiError::invalid_field(
            "coupon",
            "must be 1-255 characters",
        ));
    }
    let now_ms = crate::clock::now_ms();
    idempotent::run(
        state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path,
            canonical_body: &body.canonical,
        },
        ApplyDiscount {
            tenant,
            id: Id::generate_at(now_ms),
            coupon: body.value.coupon.clone(),
            target,
            now_ms,
        },
        render_applied,
    )
    .await
}

/// Redeems a coupon on one subscription.
#[utoipa::path(
    post, path = "/v1/subscriptions/{id}/discounts", tag = "billing",
    request_body = ApplyDiscountRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = DiscountResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "coupon_exhausted, discount_exists or subscription_canceled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "coupon_expired, currency_mismatch or coupon_not_applicable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn apply_to_subscription(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<ApplyDiscountRequest>,
) -> Result<Response, ApiError> {
    let sub = Id::parse(&id, subscription::PREFIX)
        .ok_or_else(|| ApiError::missing("subscription", &id))?;
    let path = format!("/v1/subscriptions/{id}/discounts");
    apply(&state, tenant, key, &path, &body, Target::Subscription(sub)).await
}

/// Redeems a coupon on a customer: it discounts every subscription of the customer.
#[utoipa::path(
    post, path = "/v1/customers/{id}/discounts", tag = "billing",
    request_body = ApplyDiscountRequest,
    params(("id" = String, Path, description = "`cus_…` or external id"), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = DiscountResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "coupon_exhausted or discount_exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "coupon_expired or currency_mismatch", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn apply_to_customer(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<ApplyDiscountRequest>,
) -> Result<Response, ApiError> {
    let customer = {
        let tx = state.store.read()?;
        resolve_customer(&tx, tenant, &id)?.ok_or_else(|| ApiError::missing("customer", &id))?
    };
    let path = format!("/v1/customers/{id}/discounts");
    apply(
        &state,
        tenant,
        key,
        &path,
        &body,
        Target::Customer(customer.id),
    )
    .await
}

/// Lists the discounts redeemed on a subscription (not those of its customer).
#[utoipa::path(
    get, path = "/v1/subscriptions/{id}/discounts", tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = DiscountList), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list_for_subscription(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let sub = Id::parse(&id, subscription::PREFIX)
        .ok_or_else(|| ApiError::missing("subscription", &id))?;
    let tx = state.store.read()?;
    subscription::get(&tx, tenant, sub)?.ok_or_else(|| ApiError::missing("subscription", &id))?;
    let data = discount::list(&tx, tenant, sub)?;
    Ok(Json(DiscountList {
        data: data.iter().map(DiscountResponse::from).collect(),
    })
    .into_response())
}

/// Lists the discounts redeemed on a customer.
#[utoipa::path(
    get, path = "/v1/customers/{id}/discounts", tag = "billing",
    params(("id" = String, Path, description = "`cus_…` or external id")),
    responses((status = 200, body = DiscountList), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list_for_customer(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tx = state.store.read()?;
    let customer =
        resolve_customer(&tx, tenant, &id)?.ok_or_else(|| ApiError::missing("customer", &id))?;
    let data = discount::list(&tx, tenant, customer.id)?;
    Ok(Json(DiscountList {
        data: data.iter().map(DiscountResponse::from).collect(),
    })
    .into_response())
}

/// Removes a discount: invoices computed from now on leave it out; invoices already issued
/// keep it. Removing it again answers the same discount.
#[utoipa::path(
    post, path = "/v1/discounts/{id}/remove", tag = "billing",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = DiscountResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn remove(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<EmptyRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed =
        Id::parse(&id, discount::PREFIX).ok_or_else(|| ApiError::missing("discount", &id))?;
    let path = format!("/v1/discounts/{id}/remove");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        RemoveDiscount {
            tenant,
            id: parsed,
            now_ms: crate::clock::now_ms(),
        },
        render_removed,
    )
    .await
}
