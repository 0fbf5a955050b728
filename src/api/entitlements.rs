//! Entitlements over HTTP: a plan version's entitlements, a customer's overrides and grants,
//! and the check (`GET /v1/customers/{id}/entitlements[/{feature}]`).

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
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::billing::plan::{self, Plan};
use crate::decimal;
use crate::entitlements::check::{self, Check, ReadTables};
use crate::entitlements::entitlement::{
    self, Config, Entitlement, EntitlementError, PlanEntitlementsError, RemoveEntitlement,
    SetEntitlement, Spec, SpecKind, Target, MAX_PER_PLAN, MAX_STATIC_BYTES,
};
use crate::entitlements::feature;
use crate::entitlements::grant::{self, CreateGrant, Grant};
use crate::entitlements::window::Reset;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::ingest::meter;
use crate::store::tables;

/// An entitlement as a request states it (in a plan body, on a plan, or as an override).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntitlementBody {
    /// `feat_…` or the feature's key.
    pub feature: String,
    /// `boolean`, `static` or `metered`.
    #[serde(rename = "type")]
    pub kind: String,
    /// False denies the feature (an override taking a plan's access away); default true.
    pub enabled: Option<bool>,
    /// static: any JSON value (at most 4096 bytes as canonical JSON), e.g. `{"seats": 5}`.
    #[schema(value_type = Object)]
    pub config: Option<serde_json::Value>,
    /// metered: `mtr_…` or meter key (a count, sum or unique_count meter).
    pub meter: Option<String>,
    /// metered: allowance per reset window, a decimal ≥ 0 (string or number).
    #[schema(value_type = String, example = "1000")]
    pub limit: Option<serde_json::Value>,
    /// metered: `billing_period` (default), `day` or `month` (UTC calendar).
    pub reset: Option<String>,
    /// metered: whether reaching the limit removes access (default true).
    pub hard: Option<bool>,
}

/// An entitlement as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntitlementResponse {
    /// Always `entitlement`.
    pub object: &'static str,
    /// `feat_…`.
    pub feature: String,
    /// `boolean`, `static` or `metered`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// False when it denies the feature.
    pub enabled: bool,
    /// static: the config value.
    #[schema(value_type = Object)]
    pub config: Option<serde_json::Value>,
    /// metered: `mtr_…`.
    pub meter: Option<String>,
    /// metered: exact decimal string.
    pub limit: Option<String>,
    /// metered: the reset rule.
    pub reset: Option<&'static str>,
    /// metered: hard or soft.
    pub hard: Option<bool>,
    /// RFC 3339.
    pub updated_at: String,
}

/// The config value of a static entitlement (stored as canonical JSON).
fn config_value(config: &Config) -> Option<serde_json::Value> {
    match config {
        Config::Static { value } => serde_json::from_str(value).ok(),
        _ => None,
    }
}

impl From<&Entitlement> for EntitlementResponse {
    fn from(e: &Entitlement) -> Self {
        let (meter, limit, reset, hard) = match &e.config {
            Config::Metered {
                meter,
                limit,
                reset,
                hard,
            } => (
                Some(meter.display(meter::PREFIX)),
                Some(decimal::to_text(limit.0)),
                Some(reset.as_str()),
                Some(*hard),
            ),
            _ => (None, None, None, None),
        };
        Self {
            object: "entitlement",
            feature: e.feature.display(feature::PREFIX),
            kind: e.config.type_name(),
            enabled: e.enabled,
            config: config_value(&e.config),
            meter,
            limit,
            reset,
            hard,
            updated_at: crate::clock::rfc3339(e.updated_at_ms),
        }
    }
}

/// Joins a field prefix and a name.
fn at(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A 422 naming one field.
fn unprocessable(code: &'static str, field: String, detail: impl Into<String>) -> ApiError {
    let detail = detail.into();
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        code,
        format!("{field}: {detail}"),
    )
    .field(field, detail)
}

/// A decimal ≥ 0 (`positive`: > 0) within the exact range, or a 422 `code` naming `field`.
fn quantity(
    value: &serde_json::Value,
    field: String,
    code: &'static str,
    positive: bool,
) -> Result<Decimal, ApiError> {
    let d = decimal::from_json(value).map_err(|_| {
        unprocessable(
            code,
            field.clone(),
            "must be a decimal such as \"1000\" or \"2.5\"",
        )
    })?;
    if decimal::check_range(d).is_err() {
        return Err(unprocessable(
            code,
            field,
            "is out of the exact decimal range",
        ));
    }
    if d.is_sign_negative() && !d.is_zero() {
        return Err(unprocessable(code, field, "must not be negative"));
    }
    if positive && d.is_zero() {
        return Err(unprocessable(code, field, "must be greater than zero"));
    }
    Ok(d.normalize())
}

/// Checks an entitlement body's shape (no reads): `prefix` is its place in the request.
pub fn parse_spec(body: &EntitlementBody, prefix: &str) -> Result<Spec, ApiError> {
    if body.feature.is_empty() || body.feature.len() > 255 {
        return Err(ApiError::invalid_field(
            at(prefix, "feature"),
            "must be a feature id or key",
        ));
    }
    let only = |allowed: &[&str]| -> Result<(), ApiError> {
        let present = [
            ("config", body.config.is_some()),
            ("meter", body.meter.is_some()),
            ("limit", body.limit.is_some()),
            ("reset", body.reset.is_some()),
            ("hard", body.hard.is_some()),
        ];
        match present
            .iter()
            .find(|(name, set)| *set && !allowed.contains(name))
        {
            Some((name, _)) => Err(ApiError::invalid_field(
                at(prefix, name),
                format!("does not apply to a {} entitlement", body.kind),
            )),
            None => Ok(()),
        }
    };
    let kind = match body.kind.as_str() {
        "boolean" => {
            only(&[])?;
            SpecKind::Boolean
        }
        "static" => {
            only(&["config"])?;
            let Some(value) = &body.config else {
                return Err(ApiError::invalid_field(
                    at(prefix, "config"),
                    "is required for a static entitlement",
                ));
            };
            let canonical = crate::identity::canonical_json(value);
            if canonical.len() > MAX_STATIC_BYTES {
                return Err(ApiError::invalid_field(
                    at(prefix, "config"),
                    format!("must be at most {MAX_STATIC_BYTES} bytes as canonical JSON"),
                ));
            }
            SpecKind::Static(canonical)
        }
        "metered" => {
            only(&["meter", "limit", "reset", "hard"])?;
            let meter = body.meter.clone().ok_or_else(|| {
                ApiError::invalid_field(
                    at(prefix, "meter"),
                    "is required for a metered entitlement",
                )
            })?;
            let limit = body.limit.as_ref().ok_or_else(|| {
                ApiError::invalid_field(
                    at(prefix, "limit"),
                    "is required for a metered entitlement",
                )
            })?;
            let limit = quantity(limit, at(prefix, "limit"), "invalid_limit", false)?;
            let reset = match &body.reset {
                None => Reset::BillingPeriod,
                Some(r) => Reset::parse(r).ok_or_else(|| {
                    ApiError::invalid_field(
                        at(prefix, "reset"),
                        "must be billing_period, day or month",
                    )
                })?,
            };
            SpecKind::Metered {
                meter,
                limit,
                reset,
                hard: body.hard.unwrap_or(true),
            }
        }
        _ => {
            return Err(ApiError::invalid_field(
                at(prefix, "type"),
                "must be boolean, static or metered",
            ))
        }
    };
    Ok(Spec {
        feature: body.feature.clone(),
        enabled: body.enabled.unwrap_or(true),
        kind,
    })
}

/// Checks a plan body's `entitlements` (absent stays `None`).
pub fn parse_plan_specs(
    bodies: &Option<Vec<EntitlementBody>>,
) -> Result<Option<Vec<Spec>>, ApiError> {
    let Some(bodies) = bodies else {
        return Ok(None);
    };
    if bodies.len() > MAX_PER_PLAN {
        return Err(ApiError::invalid_field(
            "entitlements",
            format!("at most {MAX_PER_PLAN} entitlements"),
        ));
    }
    bodies
        .iter()
        .enumerate()
        .map(|(i, b)| parse_spec(b, &format!("entitlements.{i}")))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The problem an entitlement command's refusal renders to.
pub fn entitlement_error(e: &EntitlementError) -> ApiError {
    let field = e.field().unwrap_or("feature").to_string();
    let (status, code) = match e {
        EntitlementError::UnknownFeature { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "unknown_feature")
        }
        EntitlementError::FeatureArchived { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "feature_archived")
        }
        EntitlementError::UnknownMeter { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "unknown_meter")
        }
        EntitlementError::NotLimitable { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "meter_not_limitable")
        }
        EntitlementError::MeterBackfilling { .. } => (StatusCode::CONFLICT, "meter_backfilling"),
        EntitlementError::DuplicateFeature { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "duplicate_feature")
        }
        EntitlementError::UnknownPlan(_)
        | EntitlementError::UnknownCustomer(_)
        | EntitlementError::NotSet(_) => (StatusCode::NOT_FOUND, "resource_missing"),
    };
    ApiError::new(status, code, e.to_string()).field(field, e.to_string())
}

/// Renders a plan created with its entitlements.
pub fn render_plan(output: &Result<Plan, PlanEntitlementsError>) -> StoredResponse {
    match output {
        Ok(p) => super::plans::render(&Ok(p.clone())),
        Err(PlanEntitlementsError::Plan(e)) => super::plans::render(&Err(e.clone())),
        Err(PlanEntitlementsError::Entitlement(e)) => entitlement_error(e).to_stored(),
    }
}

fn render_set(output: &Result<Entitlement, EntitlementError>) -> StoredResponse {
    match output {
        Ok(e) => json_response(StatusCode::OK, &EntitlementResponse::from(e)),
        Err(e) => entitlement_error(e).to_stored(),
    }
}

/// A list of entitlements.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntitlementList {
    /// Always `list`.
    pub object: &'static str,
    /// In feature id order.
    pub data: Vec<EntitlementResponse>,
}

fn plan_id(id: &str) -> Result<Id, ApiError> {
    Id::parse(id, plan::PREFIX).ok_or_else(|| ApiError::missing("plan", id))
}

fn customer_id(state: &AppState, tenant: crate::store::TenantId, id: &str) -> Result<Id, ApiError> {
    let tx = state.store.read()?;
    resolve_customer(&tx, tenant, id)?
        .map(|c| c.id)
        .ok_or_else(|| ApiError::missing("customer", id).field("customer", "does not exist"))
}

/// Sets one entitlement of a plan version (replacing the feature's previous one). Entitlements
/// are not pricing: existing subscriptions on the version see the change at once.
#[utoipa::path(
    post, path = "/v1/plans/{id}/entitlements", tag = "entitlements",
    request_body = EntitlementBody,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = EntitlementResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "meter_backfilling: the meter's backfill is still running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unknown_feature, unknown_meter, meter_not_limitable, invalid_limit, feature_archived", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn set_for_plan(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<EntitlementBody>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let plan = plan_id(&id)?;
    let spec = parse_spec(&body.value, "")?;
    let path = format!("/v1/plans/{id}/entitlements");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        SetEntitlement {
            tenant,
            target: Target::Plan(plan),
            spec,
            now_ms: crate::clock::now_ms(),
        },
        render_set,
    )
    .await
}

/// Lists a plan version's entitlements.
#[utoipa::path(
    get, path = "/v1/plans/{id}/entitlements", tag = "entitlements",
    params(("id" = String, Path)),
    responses((status = 200, body = EntitlementList), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list_for_plan(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let plan = plan_id(&id)?;
    let tx = state.store.read()?;
    plan::get(&tx, tenant, plan)?.ok_or_else(|| ApiError::missing("plan", &id))?;
    let table = tx.open_table(tables::PLAN_ENTITLEMENTS)?;
    let data = entitlement::of_owner(&table, tenant, plan)?;
    Ok(Json(EntitlementList {
        object: "list",
        data: data.iter().map(EntitlementResponse::from).collect(),
    })
    .into_response())
}

/// Sets a customer's override of one feature: it replaces the entitlement of the customer's
/// plans to that feature (`enabled: false` denies it).
#[utoipa::path(
    post, path = "/v1/customers/{id}/entitlement-overrides", tag = "entitlements",
    request_body = EntitlementBody,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = EntitlementResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "meter_backfilling: the meter's backfill is still running", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn set_override(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<EntitlementBody>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let customer = customer_id(&state, tenant, &id)?;
    let spec = parse_spec(&body.value, "")?;
    let path = format!("/v1/customers/{id}/entitlement-overrides");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        SetEntitlement {
            tenant,
            target: Target::Customer(customer),
            spec,
            now_ms: crate::clock::now_ms(),
        },
        render_set,
    )
    .await
}

/// Removes a customer's override of one feature: its plans' entitlement applies again.
#[utoipa::path(
    post, path = "/v1/customers/{id}/entitlement-overrides/{feature}/remove", tag = "entitlements",
    params(("id" = String, Path), ("feature" = String, Path, description = "`feat_…` or key"), ("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 200, body = EntitlementResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn remove_override(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path((id, feature)): Path<(String, String)>,
    key: IdempotencyKey,
    body: OptionalJsonBody<EmptyRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let customer = customer_id(&state, tenant, &id)?;
    let path = format!("/v1/customers/{id}/entitlement-overrides/{feature}/remove");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        RemoveEntitlement {
            tenant,
            target: Target::Customer(customer),
            feature,
        },
        render_set,
    )
    .await
}

/// Lists a customer's overrides.
#[utoipa::path(
    get, path = "/v1/customers/{id}/entitlement-overrides", tag = "entitlements",
    params(("id" = String, Path)),
    responses((status = 200, body = EntitlementList), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list_overrides(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let customer = customer_id(&state, tenant, &id)?;
    let tx = state.store.read()?;
    let table = tx.open_table(tables::ENTITLEMENT_OVERRIDES)?;
    let data = entitlement::of_owner(&table, tenant, customer)?;
    Ok(Json(EntitlementList {
        object: "list",
        data: data.iter().map(EntitlementResponse::from).collect(),
    })
    .into_response())
}

/// Body of `POST /v1/customers/{id}/entitlement-grants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrantRequest {
    /// `feat_…` or key.
    pub feature: String,
    /// Extra allowance, a decimal > 0 in the meter's unit.
    #[schema(value_type = String, example = "500")]
    pub amount: serde_json::Value,
    /// RFC 3339; default now. The grant belongs to the reset window containing it.
    pub effective_at: Option<String>,
    /// RFC 3339, after `effective_at`; the grant also ends with its window.
    pub expires_at: Option<String>,
}

/// A grant as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantResponse {
    /// `entg_…`.
    pub id: String,
    /// Always `entitlement_grant`.
    pub object: &'static str,
    /// `cus_…`.
    pub customer: String,
    /// `feat_…`.
    pub feature: String,
    /// Exact decimal string.
    pub amount: String,
    /// RFC 3339.
    pub effective_at: String,
    /// RFC 3339.
    pub expires_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&Grant> for GrantResponse {
    fn from(g: &Grant) -> Self {
        Self {
            id: g.id.display(grant::PREFIX),
            object: "entitlement_grant",
            customer: g.customer.display(crate::customers::PREFIX),
            feature: g.feature.display(feature::PREFIX),
            amount: decimal::to_text(g.amount.0),
            effective_at: crate::clock::rfc3339(g.effective_at_ms),
            expires_at: g.expires_at_ms.map(crate::clock::rfc3339),
            created_at: crate::clock::rfc3339(g.created_at_ms),
        }
    }
}

fn render_grant(output: &Result<Grant, EntitlementError>) -> StoredResponse {
    match output {
        Ok(g) => json_response(StatusCode::CREATED, &GrantResponse::from(g)),
        Err(e) => entitlement_error(e).to_stored(),
    }
}

/// Grants a customer extra allowance on a metered feature: the amount adds to the limit of the
/// one reset window containing `effective_at`, until `expires_at` or that window's end,
/// whichever comes first (a grant starting exactly at a reset belongs to the new window only).
#[utoipa::path(
    post, path = "/v1/customers/{id}/entitlement-grants", tag = "entitlements",
    request_body = CreateGrantRequest,
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = GrantResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unknown_feature, invalid_amount, feature_archived", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create_grant(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<CreateGrantRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let customer = customer_id(&state, tenant, &id)?;
    let req = &body.value;
    let amount = quantity(&req.amount, "amount".into(), "invalid_amount", true)?;
    let now_ms = crate::clock::now_ms();
    let effective_at_ms = time_param("effective_at", &req.effective_at)?.unwrap_or(now_ms);
    let expires_at_ms = time_param("expires_at", &req.expires_at)?;
    if expires_at_ms.is_some_and(|e| e <= effective_at_ms) {
        return Err(ApiError::invalid_field(
            "expires_at",
            "must be after effective_at",
        ));
    }
    let path = format!("/v1/customers/{id}/entitlement-grants");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        CreateGrant {
            tenant,
            feature: req.feature.clone(),
            grant: Grant {
                id: Id::generate_at(now_ms),
                customer,
                feature: Id(0),
                amount: decimal::Stored(amount),
                effective_at_ms,
                expires_at_ms,
                created_at_ms: now_ms,
            },
        },
        render_grant,
    )
    .await
}

/// A customer's grants.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantList {
    /// Always `list`.
    pub object: &'static str,
    /// By feature, then creation.
    pub data: Vec<GrantResponse>,
}

/// Lists a customer's grants, expired ones included.
#[utoipa::path(
    get, path = "/v1/customers/{id}/entitlement-grants", tag = "entitlements",
    params(("id" = String, Path)),
    responses((status = 200, body = GrantList), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn list_grants(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let customer = customer_id(&state, tenant, &id)?;
    let tx = state.store.read()?;
    let table = tx.open_table(tables::ENTITLEMENT_GRANTS)?;
    let mut data = Vec::new();
    grant::for_each(&table, tenant, customer, None, |g| {
        data.push(GrantResponse::from(&g))
    })?;
    Ok(Json(GrantList {
        object: "list",
        data,
    })
    .into_response())
}

/// Query of the checks.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CheckParams {
    /// RFC 3339: answer for this instant (default now): the subscriptions running then, the
    /// reset window containing it, the grants counted then.
    pub at: Option<String>,
}

/// A grant counted by a check.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckGrant {
    /// `entg_…`.
    pub id: String,
    /// Exact decimal string.
    pub amount: String,
    /// RFC 3339.
    pub effective_at: String,
    /// RFC 3339.
    pub expires_at: Option<String>,
}

/// The answer of a check.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResponse {
    /// Always `entitlement_check`.
    pub object: &'static str,
    /// `feat_…`.
    pub feature: String,
    /// The feature's key.
    pub feature_key: String,
    /// `boolean`, `static`, `metered`, or null when nothing grants the feature.
    #[serde(rename = "type")]
    pub kind: Option<&'static str>,
    /// May the customer use the feature at the instant.
    pub has_access: bool,
    /// metered: usage in the reset window up to the instant (decimal string).
    pub usage: Option<String>,
    /// metered: the entitlement's limit, grants excluded (summed over subscriptions).
    pub limit: Option<String>,
    /// metered: limit + grants − usage; ≤ 0 once used up (a soft limit keeps access).
    pub remaining: Option<String>,
    /// metered: whether reaching the limit removes access.
    pub hard: Option<bool>,
    /// metered: RFC 3339 start of the reset window.
    pub window_start: Option<String>,
    /// metered: RFC 3339 end of the window, when usage resets.
    pub resets_at: Option<String>,
    /// `plan`, `override` or `none`.
    pub source: &'static str,
    /// static: the config value.
    #[schema(value_type = Object)]
    pub config: Option<serde_json::Value>,
    /// metered: the grants counted at the instant.
    pub grants: Vec<CheckGrant>,
    /// RFC 3339: the instant answered for.
    pub at: String,
}

/// The response body of one check.
pub fn check_response(c: &Check, at_ms: i64) -> CheckResponse {
    let m = c.metered.as_ref();
    let text = |d: Decimal| decimal::to_text(d);
    CheckResponse {
        object: "entitlement_check",
        feature: c.feature.id.display(feature::PREFIX),
        feature_key: c.feature.key.clone(),
        kind: c.config.as_ref().map(Config::type_name),
        has_access: c.has_access,
        usage: m.map(|m| text(m.usage)),
        limit: m.map(|m| text(m.limit)),
        remaining: m.map(|m| text(m.remaining)),
        hard: m.map(|m| m.hard),
        window_start: m.map(|m| crate::clock::rfc3339(m.window.start_ms)),
        resets_at: m.map(|m| crate::clock::rfc3339(m.window.end_ms)),
        source: c.source.as_str(),
        config: c.config.as_ref().and_then(config_value),
        grants: m
            .map(|m| {
                m.grants
                    .iter()
                    .map(|g| CheckGrant {
                        id: g.id.display(grant::PREFIX),
                        amount: text(g.amount.0),
                        effective_at: crate::clock::rfc3339(g.effective_at_ms),
                        expires_at: g.expires_at_ms.map(crate::clock::rfc3339),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        at: crate::clock::rfc3339(at_ms),
    }
}

/// Checks one feature for a customer: access, usage and what is left in the current reset
/// window, answered from a read snapshot (no write, no queue).
#[utoipa::path(
    get, path = "/v1/customers/{id}/entitlements/{feature}", tag = "entitlements",
    params(("id" = String, Path), ("feature" = String, Path, description = "`feat_…` or key"), CheckParams),
    responses(
        (status = 200, body = CheckResponse),
        (status = 400, description = "bad `at`", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn check_one(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path((id, feature_ref)): Path<(String, String)>,
    Query(params): Query<CheckParams>,
) -> Result<Response, ApiError> {
    let at_ms = time_param("at", &params.at)?.unwrap_or_else(crate::clock::now_ms);
    let tx = state.store.read()?;
    let customer = resolve_customer(&tx, tenant, &id)?
        .ok_or_else(|| ApiError::missing("customer", &id).field("customer", "does not exist"))?;
    let f = feature::find(&tx, tenant, &feature_ref)?.ok_or_else(|| {
        ApiError::missing("feature", &feature_ref).field("feature", "does not exist")
    })?;
    let tables = ReadTables::open(&tx)?;
    let c = check::check(&tables, tenant, customer.id, f.id, at_ms)?
        .ok_or_else(|| ApiError::missing("customer", &id))?;
    Ok(Json(check_response(&c, at_ms)).into_response())
}

/// Every feature's check for a customer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckList {
    /// Always `list`.
    pub object: &'static str,
    /// One per feature of the tenant, in creation order.
    pub data: Vec<CheckResponse>,
}

/// Checks every feature for a customer at once.
#[utoipa::path(
    get, path = "/v1/customers/{id}/entitlements", tag = "entitlements",
    params(("id" = String, Path), CheckParams),
    responses(
        (status = 200, body = CheckList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn check_all(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(params): Query<CheckParams>,
) -> Result<Response, ApiError> {
    let at_ms = time_param("at", &params.at)?.unwrap_or_else(crate::clock::now_ms);
    let tx = state.store.read()?;
    let customer = resolve_customer(&tx, tenant, &id)?
        .ok_or_else(|| ApiError::missing("customer", &id).field("customer", "does not exist"))?;
    let tables = ReadTables::open(&tx)?;
    let checks = check::check_all(&tables, tenant, customer.id, at_ms)?
        .ok_or_else(|| ApiError::missing("customer", &id))?;
    Ok(Json(CheckList {
        object: "list",
        data: checks.iter().map(|c| check_response(c, at_ms)).collect(),
    })
    .into_response())
}
