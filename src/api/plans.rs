//! `/v1/plans`: immutable price definitions.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{IdempotencyKey, JsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::pagination::{Page, PageParams};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::billing::period::Interval;
use crate::billing::plan::{
    self, Charge, CreatePlan, CreatePlanVersion, FeeTiming, FixedFee, Plan, PlanError, PREFIX,
};
use crate::billing::pricing::{Model, Tier};
use crate::decimal::{self, Stored};
use crate::entitlements::entitlement::WithEntitlements;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::ingest::meter;
use crate::ledger::journal::MAX_AMOUNT_MINOR;

/// A fixed fee.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FixedFeeBody {
    /// Per period, minor units.
    pub amount_minor: i64,
    /// `in_advance` or `in_arrears` (default).
    pub timing: Option<String>,
}

/// A tier.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierBody {
    /// Inclusive upper bound (decimal string); null for the last tier.
    pub up_to: Option<String>,
    /// Major units per unit (decimal string).
    pub unit_price: String,
    /// Flat fee of the tier, minor units.
    #[serde(default)]
    pub flat_fee_minor: i64,
}

/// A usage charge.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeBody {
    /// `mtr_…` or meter key.
    pub meter: String,
    /// `per_unit`, `graduated`, `volume` or `package`.
    pub model: String,
    /// Units free each period (decimal string, default "0").
    pub free_units: Option<String>,
    /// per_unit: price per unit; package: price per package (major units, decimal string).
    pub unit_price: Option<String>,
    /// package: units per package (decimal string).
    pub package_size: Option<String>,
    /// graduated and volume: ascending tiers, the last with `up_to: null`.
    pub tiers: Option<Vec<TierBody>>,
}

/// Body of `POST /v1/plans`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlanRequest {
    /// Unique per tenant: letters, digits, `_`, `-`, `.`; 1-255 characters.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,255}$")]
    pub code: String,
    /// Display name, 1-255 characters.
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    /// ISO 4217.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// `day`, `week`, `month`, `quarter` or `year`.
    pub interval: String,
    /// Units per period (default 1).
    pub interval_count: Option<u32>,
    /// Optional fixed fee.
    pub fixed_fee: Option<FixedFeeBody>,
    /// Usage charges.
    #[serde(default)]
    pub charges: Vec<ChargeBody>,
    /// Minimum amount per full period, minor units (0 to 10^15): a period invoice whose own
    /// lines after discounts fall short carries a `minimum_commitment` line for the rest.
    pub minimum_minor: Option<i64>,
    /// Whether usage during a subscription's trial is billed (default false: the trial is
    /// free; the fixed fee is never billed in a trial).
    #[serde(default)]
    pub bill_usage_in_trial: bool,
    /// Progressive billing, minor units (1 to 10^12): once a running period's usage not yet
    /// invoiced reaches it, an interim invoice bills that usage and the period's invoice bills
    /// only the rest.
    pub threshold_minor: Option<i64>,
    /// The version's entitlements, one per feature (see `/v1/plans/{id}/entitlements`).
    pub entitlements: Option<Vec<super::entitlements::EntitlementBody>>,
}

/// Body of `POST /v1/plans/{id}/versions`: a full plan without its code (the new version keeps
/// the code of the one it follows).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlanVersionRequest {
    /// Display name, 1-255 characters.
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    /// ISO 4217.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// `day`, `week`, `month`, `quarter` or `year`.
    pub interval: String,
    /// Units per period (default 1).
    pub interval_count: Option<u32>,
    /// Optional fixed fee.
    pub fixed_fee: Option<FixedFeeBody>,
    /// Usage charges.
    #[serde(default)]
    pub charges: Vec<ChargeBody>,
    /// Minimum amount per full period, minor units (0 to 10^15).
    pub minimum_minor: Option<i64>,
    /// Whether usage during a subscription's trial is billed (default false).
    #[serde(default)]
    pub bill_usage_in_trial: bool,
    /// Progressive billing threshold, minor units (1 to 10^12).
    pub threshold_minor: Option<i64>,
    /// The version's entitlements; absent, the new version keeps those of the one it follows.
    pub entitlements: Option<Vec<super::entitlements::EntitlementBody>>,
}

impl CreatePlanVersionRequest {
    /// The same fields as a plan body, under the code of the version it follows.
    fn with_code(&self, code: String) -> CreatePlanRequest {
        CreatePlanRequest {
            code,
            name: self.name.clone(),
            currency: self.currency.clone(),
            interval: self.interval.clone(),
            interval_count: self.interval_count,
            fixed_fee: self.fixed_fee.clone(),
            charges: self.charges.clone(),
            minimum_minor: self.minimum_minor,
            bill_usage_in_trial: self.bill_usage_in_trial,
            threshold_minor: self.threshold_minor,
            entitlements: self.entitlements.clone(),
        }
    }
}

/// A plan as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanResponse {
    /// `pln_…`.
    pub id: String,
    /// Always `plan`.
    pub object: &'static str,
    /// Code.
    pub code: String,
    /// Name.
    pub name: String,
    /// ISO 4217.
    pub currency: String,
    /// Interval.
    pub interval: &'static str,
    /// Units per period.
    pub interval_count: u32,
    /// Fixed fee.
    pub fixed_fee: Option<FixedFeeBody>,
    /// Charges.
    pub charges: Vec<ChargeBody>,
    /// Minimum amount per full period, minor units.
    pub minimum_minor: Option<i64>,
    /// 1 for the first plan of a code, then previous + 1.
    pub version: u32,
    /// `pln_…` of the version this one follows.
    pub previous_version: Option<String>,
    /// Whether usage during a trial is billed.
    pub bill_usage_in_trial: bool,
    /// Progressive billing threshold, minor units.
    pub threshold_minor: Option<i64>,
    /// RFC 3339.
    pub created_at: String,
}

fn text(d: Stored) -> String {
    decimal::to_text(d.0)
}

impl From<&Plan> for PlanResponse {
    fn from(p: &Plan) -> Self {
        let tiers_body = |tiers: &Vec<Tier>| {
            tiers
                .iter()
                .map(|t| TierBody {
                    up_to: t.up_to.map(text),
                    unit_price: text(t.unit_price),
                    flat_fee_minor: t.flat_fee_minor,
                })
                .collect()
        };
        Self {
            id: p.id.display(PREFIX),
            object: "plan",
            code: p.code.clone(),
            name: p.name.clone(),
            currency: p.currency.clone(),
            interval: p.interval.as_str(),
            interval_count: p.interval_count,
            fixed_fee: p.fixed_fee.as_ref().map(|f| FixedFeeBody {
                amount_minor: f.amount_minor,
                timing: Some(f.timing.as_str().to_string()),
            }),
            charges: p
                .charges
                .iter()
                .map(|c| {
                    let (model, unit_price, package_size, tiers) = match &c.model {
                        Model::PerUnit { unit_price } => {
                            ("per_unit", Some(text(*unit_price)), None, None)
                        }
                        Model::Package {
                            package_size,
                            unit_price,
                        } => (
                            "package",
                            Some(text(*unit_price)),
                            Some(text(*package_size)),
                            None,
                        ),
                        Model::Graduated { tiers } => {
                            ("graduated", None, None, Some(tiers_body(tiers)))
                        }
                        Model::Volume { tiers } => ("volume", None, None, Some(tiers_body(tiers))),
                    };
                    ChargeBody {
                        meter: c.meter.display(meter::PREFIX),
                        model: model.to_string(),
                        free_units: Some(text(c.free_units)),
                        unit_price,
                        package_size,
                        tiers,
                    }
                })
                .collect(),
            bill_usage_in_trial: p.bill_usage_in_trial,
            threshold_minor: p.threshold_minor,
            minimum_minor: p.minimum_minor,
            version: p.version,
            previous_version: p.previous_version.map(|v| v.display(PREFIX)),
            created_at: crate::clock::rfc3339(p.created_at_ms),
        }
    }
}

fn dec(field: String, value: &str, positive: bool) -> Result<Decimal, ApiError> {
    let d = decimal::parse(value).map_err(|e| match e {
        decimal::DecimalError::OutOfRange => out_of_range(field.clone(), e.to_string()),
        decimal::DecimalError::NotANumber => ApiError::invalid_field(
            field.clone(),
            format!("{e}; send a decimal string such as \"0.0025\""),
        ),
    })?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(ApiError::invalid_field(field, "must not be negative"));
    }
    if let Err(e) = decimal::check_range(d) {
        return Err(out_of_range(field, e.to_string()));
    }
    if positive && d.is_zero() {
        return Err(ApiError::invalid_field(field, "must be greater than zero"));
    }
    Ok(d)
}

/// An amount in minor units: 0 to 10^15 (the most one posting moves).
fn amount(field: String, value: i64) -> Result<i64, ApiError> {
    if value < 0 {
        return Err(ApiError::invalid_field(
            field,
            "must be a non-negative integer",
        ));
    }
    if value > MAX_AMOUNT_MINOR {
        return Err(out_of_range(
            field,
            format!("is out of range: at most {MAX_AMOUNT_MINOR} minor units"),
        ));
    }
    Ok(value)
}

/// A 400 `value_out_of_range` naming the field: a well-formed value outside its documented range.
fn out_of_range(field: String, detail: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "value_out_of_range",
        format!("{field}: {detail}"),
    )
    .field(field, detail)
}

fn tiers(field: &str, body: &Option<Vec<TierBody>>) -> Result<Vec<Tier>, ApiError> {
    let Some(items) = body else {
        return Err(ApiError::invalid_field(
            field,
            "is required for tiered models",
        ));
    };
    if items.is_empty() || items.len() > 50 {
        return Err(ApiError::invalid_field(field, "must have 1 to 50 tiers"));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut previous = Decimal::ZERO;
    for (i, t) in items.iter().enumerate() {
        let last = i + 1 == items.len();
        let up_to = match (&t.up_to, last) {
            (None, true) => None,
            (None, false) => {
                return Err(ApiError::invalid_field(
                    format!("{field}.{i}.up_to"),
                    "only the last tier may be unbounded",
                ))
            }
            (Some(_), true) => {
                return Err(ApiError::invalid_field(
                    format!("{field}.{i}.up_to"),
                    "the last tier must be unbounded (null)",
                ))
            }
            (Some(v), false) => {
                let bound = dec(format!("{field}.{i}.up_to"), v, true)?;
                if bound <= previous {
                    return Err(ApiError::invalid_field(
                        format!("{field}.{i}.up_to"),
                        "tiers must be strictly ascending and must not overlap",
                    ));
                }
                previous = bound;
                Some(Stored(bound))
            }
        };
        amount(format!("{field}.{i}.flat_fee_minor"), t.flat_fee_minor)?;
        out.push(Tier {
            up_to,
            unit_price: Stored(dec(
                format!("{field}.{i}.unit_price"),
                &t.unit_price,
                false,
            )?),
            flat_fee_minor: t.flat_fee_minor,
        });
    }
    Ok(out)
}

pub(crate) fn render(output: &Result<Plan, PlanError>) -> StoredResponse {
    match output {
        Ok(p) => json_response(StatusCode::CREATED, &PlanResponse::from(p)),
        Err(e @ PlanError::Exists { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "plan_exists", e.to_string())
                .field("code", "already used by another plan")
                .to_stored()
        }
        Err(e @ PlanError::UnknownMeter { index, .. }) => {
            ApiError::invalid_field(format!("charges.{index}.meter"), e.to_string()).to_stored()
        }
        Err(e @ PlanError::MeterBackfilling { index, .. }) => {
            ApiError::new(StatusCode::CONFLICT, "meter_backfilling", e.to_string())
                .field(
                    format!("charges.{index}.meter"),
                    "its backfill is still running",
                )
                .to_stored()
        }
        Err(e @ PlanError::Missing(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string()).to_stored()
        }
        Err(e @ PlanError::NotNewest { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "plan_version_stale", e.to_string()).to_stored()
        }
    }
}

/// Creates a plan. Plans are immutable: a new price is a new plan.
#[utoipa::path(
    post, path = "/v1/plans", tag = "billing",
    request_body = CreatePlanRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = PlanResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "plan_exists, or meter_backfilling: a charge or metered entitlement names a meter whose backfill is running", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<CreatePlanRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let plan = build(&state, tenant, &body.value)?;
    let specs = super::entitlements::parse_plan_specs(&body.value.entitlements)?;
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/plans",
            canonical_body: &body.canonical,
        },
        WithEntitlements {
            tenant,
            inner: CreatePlan { tenant, plan },
            specs,
            inherit_from: None,
            now_ms: crate::clock::now_ms(),
        },
        super::entitlements::render_plan,
    )
    .await
}

/// Creates the next version of a plan under the same code: the code then names the new
/// version (new subscriptions by code get it), while existing subscriptions keep theirs.
#[utoipa::path(
    post, path = "/v1/plans/{id}/versions", tag = "billing",
    request_body = CreatePlanVersionRequest,
    params(("id" = String, Path, description = "the newest version of the plan"), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = PlanResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "plan_version_stale: the plan is not the newest version of its code; meter_backfilling: a charge or metered entitlement names a meter whose backfill is running", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create_version(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<CreatePlanVersionRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let previous = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("plan", &id))?;
    let code = {
        let tx = state.store.read()?;
        plan::get(&tx, tenant, previous)?
            .ok_or_else(|| ApiError::missing("plan", &id))?
            .code
    };
    let plan = build(&state, tenant, &body.value.with_code(code))?;
    let specs = super::entitlements::parse_plan_specs(&body.value.entitlements)?;
    let path = format!("/v1/plans/{id}/versions");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        WithEntitlements {
            tenant,
            inner: CreatePlanVersion {
                tenant,
                previous,
                plan,
            },
            specs,
            inherit_from: Some(previous),
            now_ms: crate::clock::now_ms(),
        },
        super::entitlements::render_plan,
    )
    .await
}

/// Validates a plan body into a first version (no writes).
fn build(
    state: &AppState,
    tenant: crate::store::TenantId,
    req: &CreatePlanRequest,
) -> Result<Plan, ApiError> {
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
    if req.name.trim().is_empty() || req.name.chars().count() > 255 {
        return Err(ApiError::invalid_field("name", "must be 1-255 characters"));
    }
    if !crate::currency::is_known(&req.currency) {
        return Err(ApiError::invalid_field(
            "currency",
            "is not an ISO 4217 currency code",
        ));
    }
    let interval = Interval::parse(&req.interval).ok_or_else(|| {
        ApiError::invalid_field("interval", "must be day, week, month, quarter or year")
    })?;
    let interval_count = req.interval_count.unwrap_or(1);
    if !(1..=365).contains(&interval_count) {
        return Err(ApiError::invalid_field(
            "interval_count",
            "must be between 1 and 365",
        ));
    }
    let fixed_fee = match &req.fixed_fee {
        Some(f) => {
            amount("fixed_fee.amount_minor".into(), f.amount_minor)?;
            let timing = match f.timing.as_deref() {
                None | Some("in_arrears") => FeeTiming::InArrears,
                Some("in_advance") => FeeTiming::InAdvance,
                Some(_) => {
                    return Err(ApiError::invalid_field(
                        "fixed_fee.timing",
                        "must be in_advance or in_arrears",
                    ))
                }
            };
            Some(FixedFee {
                amount_minor: f.amount_minor,
                timing,
            })
        }
        None => None,
    };
    if req.charges.len() > 50 {
        return Err(ApiError::invalid_field("charges", "at most 50 charges"));
    }
    let mut charges = Vec::with_capacity(req.charges.len());
    {
        let tx = state.store.read()?;
        for (i, c) in req.charges.iter().enumerate() {
            let meter_ref = match Id::parse(&c.meter, meter::PREFIX) {
                Some(id) => meter::get(&tx, tenant, id)?,
                None => meter::by_key(&tx, tenant, &c.meter)?,
            };
            let Some(m) = meter_ref else {
                return Err(ApiError::invalid_field(
                    format!("charges.{i}.meter"),
                    format!("no meter {:?}", c.meter),
                ));
            };
            if charges.iter().any(|x: &Charge| x.meter == m.id) {
                return Err(ApiError::invalid_field(
                    format!("charges.{i}.meter"),
                    "each meter may be charged once per plan",
                ));
            }
            let field = |name: &str| format!("charges.{i}.{name}");
            let need = |name: &str, v: &Option<String>| -> Result<String, ApiError> {
                v.clone().ok_or_else(|| {
                    ApiError::invalid_field(
                        field(name),
                        format!("is required for model {}", c.model),
                    )
                })
            };
            let model = match c.model.as_str() {
                "per_unit" => Model::PerUnit {
                    unit_price: Stored(dec(
                        field("unit_price"),
                        &need("unit_price", &c.unit_price)?,
                        false,
                    )?),
                },
                "package" => Model::Package {
                    package_size: Stored(dec(
                        field("package_size"),
                        &need("package_size", &c.package_size)?,
                        true,
                    )?),
                    unit_price: Stored(dec(
                        field("unit_price"),
                        &need("unit_price", &c.unit_price)?,
                        false,
                    )?),
                },
                "graduated" => Model::Graduated {
                    tiers: tiers(&field("tiers"), &c.tiers)?,
                },
                "volume" => Model::Volume {
                    tiers: tiers(&field("tiers"), &c.tiers)?,
                },
                _ => {
                    return Err(ApiError::invalid_field(
                        field("model"),
                        "must be per_unit, graduated, volume or package",
                    ))
                }
            };
            let free_units = match &c.free_units {
                Some(v) => dec(field("free_units"), v, false)?,
                None => Decimal::ZERO,
            };
            charges.push(Charge {
                meter: m.id,
                model,
                free_units: Stored(free_units),
            });
        }
    }
    let minimum_minor = req
        .minimum_minor
        .map(|m| amount("minimum_minor".into(), m))
        .transpose()?;
    let threshold_minor = req.threshold_minor.map(threshold).transpose()?;
    let now_ms = crate::clock::now_ms();
    Ok(Plan {
        id: Id::generate_at(now_ms),
        code: req.code.clone(),
        name: req.name.clone(),
        currency: req.currency.clone(),
        interval,
        interval_count,
        fixed_fee,
        charges,
        created_at_ms: now_ms,
        minimum_minor,
        version: 1,
        previous_version: None,
        bill_usage_in_trial: req.bill_usage_in_trial,
        threshold_minor,
    })
}

/// A progressive billing threshold: positive, at most
/// [`crate::billing::progressive::THRESHOLD_MAX_MINOR`].
fn threshold(value: i64) -> Result<i64, ApiError> {
    let max = crate::billing::progressive::THRESHOLD_MAX_MINOR;
    if value <= 0 {
        return Err(ApiError::invalid_field(
            "threshold_minor",
            "must be a positive integer (minor units)",
        ));
    }
    if value > max {
        return Err(out_of_range(
            "threshold_minor".into(),
            format!("is out of range: at most {max} minor units"),
        ));
    }
    Ok(value)
}

/// Retrieves a plan.
#[utoipa::path(
    get, path = "/v1/plans/{id}", tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = PlanResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("plan", &id))?;
    let tx = state.store.read()?;
    let p = plan::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("plan", &id))?;
    Ok(Json(PlanResponse::from(&p)).into_response())
}

/// Query of `GET /v1/plans`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListPlansParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this id.
    pub starting_after: Option<String>,
    /// Only the versions of this plan code, oldest first.
    pub code: Option<String>,
}

/// Lists plans.
#[utoipa::path(
    get, path = "/v1/plans", tag = "billing",
    params(ListPlansParams),
    responses((status = 200, body = Page<PlanResponse>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListPlansParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        starting_after: params.starting_after,
    };
    let limit = page.limit()?;
    let after = match &page.starting_after {
        Some(c) => Some(Id::parse(c, PREFIX).ok_or_else(|| {
            ApiError::invalid_field("starting_after", "is not a plan id (pln_…)")
        })?),
        None => None,
    };
    let tx = state.store.read()?;
    let (items, has_more) = plan::list(&tx, tenant, params.code.as_deref(), after, limit)?;
    Ok(Json(Page::of(
        &items,
        has_more,
        |p| p.id.display(PREFIX),
        |x| PlanResponse::from(x),
    ))
    .into_response())
}
