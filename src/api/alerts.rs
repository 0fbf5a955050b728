//! `/v1/alerts`: thresholds on usage and credit balances, and the firings they recorded.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::resolve_customer;
use super::extract::{IdempotencyKey, JsonBody, OptionalJsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::invoices::EmptyRequest;
use super::pagination::{Page, PageParams};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::alerts::firing::{self, Firing};
use crate::alerts::{
    self, Alert, AlertError, AlertKind, ArchiveAlert, CreateAlert, MAX_THRESHOLDS, PREFIX,
};
use crate::decimal::{self, Stored};
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::ingest::meter::{self, Meter};
use crate::store::TenantId;

/// Longest `name`, in characters.
const MAX_NAME_CHARS: usize = 100;

/// Body of `POST /v1/alerts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAlertRequest {
    /// The customer watched (`cus_…` or external id); absent watches every customer.
    pub customer: Option<String>,
    /// `usage_exceeded`, `spend_exceeded`, `credit_balance_below`, `credit_balance_depleted`
    /// or `entitlement_exhausted`.
    #[serde(rename = "type")]
    pub alert_type: String,
    /// `usage_exceeded` only: the meter (`mtr_…` or key).
    pub meter: Option<String>,
    /// `entitlement_exhausted` only: the feature (`feat_…` or key).
    pub feature: Option<String>,
    /// Money types only: ISO 4217; default each customer's own currency.
    pub currency: Option<String>,
    /// Ascending, distinct, above zero, at most 20: decimal strings for `usage_exceeded`,
    /// minor-unit integers for `spend_exceeded` and `credit_balance_below`, percentages of the
    /// allowance (decimal strings, at most 1000; default `["100"]`) for
    /// `entitlement_exhausted`; absent for `credit_balance_depleted`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub thresholds: Option<Vec<serde_json::Value>>,
    /// A label, 1-100 characters.
    pub name: Option<String>,
}

/// An alert as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertResponse {
    /// `alr_…`.
    pub id: String,
    /// Always `alert`.
    pub object: &'static str,
    /// The alert type.
    #[serde(rename = "type")]
    pub alert_type: &'static str,
    /// `cus_…`, or null for every customer.
    pub customer: Option<String>,
    /// `mtr_…` for `usage_exceeded`.
    pub meter: Option<String>,
    /// `feat_…` for `entitlement_exhausted`.
    pub feature: Option<String>,
    /// The currency of a money alert; null means each customer's own.
    pub currency: Option<String>,
    /// Decimal strings (usage) or minor-unit integers (balances).
    #[schema(value_type = Vec<Object>)]
    pub thresholds: Vec<serde_json::Value>,
    /// Label.
    pub name: Option<String>,
    /// False once archived.
    pub active: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub archived_at: Option<String>,
}

fn show(kind: &AlertKind, value: Decimal) -> serde_json::Value {
    if kind.is_money() {
        i64::try_from(value)
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| serde_json::Value::String(decimal::to_text(value)))
    } else {
        serde_json::Value::String(decimal::to_text(value))
    }
}

impl From<&Alert> for AlertResponse {
    fn from(a: &Alert) -> Self {
        let (meter, feature, currency) = match &a.kind {
            AlertKind::UsageExceeded { meter } => (Some(meter.display(meter::PREFIX)), None, None),
            AlertKind::EntitlementExhausted { feature } => (
                None,
                Some(feature.display(crate::entitlements::feature::PREFIX)),
                None,
            ),
            AlertKind::CreditBalanceBelow { currency }
            | AlertKind::CreditBalanceDepleted { currency }
            | AlertKind::SpendExceeded { currency } => (None, None, currency.clone()),
        };
        let thresholds = match a.kind {
            AlertKind::CreditBalanceDepleted { .. } => vec![serde_json::Value::from(0)],
            _ => a.thresholds.iter().map(|t| show(&a.kind, t.0)).collect(),
        };
        Self {
            id: a.id.display(PREFIX),
            object: "alert",
            alert_type: a.kind.as_str(),
            customer: a.customer.map(|c| c.display(crate::customers::PREFIX)),
            meter,
            feature,
            currency,
            thresholds,
            name: a.name.clone(),
            active: a.archived_at_ms.is_none(),
            created_at: crate::clock::rfc3339(a.created_at_ms),
            archived_at: a.archived_at_ms.map(crate::clock::rfc3339),
        }
    }
}

/// The window a firing belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct WindowBody {
    /// RFC 3339: the billing period's start (usage), or when the threshold was armed
    /// (balances).
    pub start: String,
    /// RFC 3339: the period's end (usage), or when the balance recovered; null while it has
    /// not.
    pub end: Option<String>,
}

/// A firing as the API (and the `alert.triggered` and `credit_balance.recovered` events)
/// show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FiringResponse {
    /// `alf_…`.
    pub id: String,
    /// Always `alert_firing`.
    pub object: &'static str,
    /// `alr_…`.
    pub alert: String,
    /// The alert's type.
    #[serde(rename = "type")]
    pub alert_type: String,
    /// `cus_…`.
    pub customer: String,
    /// Position in the alert's thresholds (from 0).
    pub threshold_index: u8,
    /// The threshold (decimal string, or minor units for balances).
    #[schema(value_type = Object)]
    pub threshold: serde_json::Value,
    /// The value that crossed it.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// The currency of a balance alert.
    pub currency: Option<String>,
    /// Where it fires at most once.
    pub window: WindowBody,
    /// RFC 3339: the crossing write's time.
    pub triggered_at: String,
    /// RFC 3339: when the balance rose back to or above the threshold.
    pub recovered_at: Option<String>,
    /// The balance then.
    #[schema(value_type = Option<Object>)]
    pub recovered_value: Option<serde_json::Value>,
}

/// A firing's body.
pub fn firing_body(f: &Firing) -> FiringResponse {
    let money = f.currency.is_some();
    let show = |v: Decimal| match money {
        true => show(
            &AlertKind::CreditBalanceBelow {
                currency: f.currency.clone(),
            },
            v,
        ),
        false => serde_json::Value::String(decimal::to_text(v)),
    };
    FiringResponse {
        id: f.id.display(firing::PREFIX),
        object: "alert_firing",
        alert: f.alert.display(PREFIX),
        alert_type: f.alert_type.clone(),
        customer: f.customer.display(crate::customers::PREFIX),
        threshold_index: f.threshold_index,
        threshold: show(f.threshold.0),
        value: show(f.value.0),
        currency: f.currency.clone(),
        window: WindowBody {
            start: crate::clock::rfc3339(f.window_start_ms),
            end: f.window_end_ms.map(crate::clock::rfc3339),
        },
        triggered_at: crate::clock::rfc3339(f.triggered_at_ms),
        recovered_at: f.recovered.map(|(at, _)| crate::clock::rfc3339(at)),
        recovered_value: f.recovered.map(|(_, v)| show(v.0)),
    }
}

/// A 422 `validation_failed` naming the field.
fn invalid(field: impl Into<String>, detail: impl Into<String>) -> ApiError {
    let mut e = ApiError::invalid_field(field, detail);
    e.status = StatusCode::UNPROCESSABLE_ENTITY;
    e
}

fn forbid<T>(value: &Option<T>, field: &str, kind: &str) -> Result<(), ApiError> {
    match value {
        Some(_) => Err(invalid(field, format!("does not belong to a {kind} alert"))),
        None => Ok(()),
    }
}

/// Parses one threshold: a decimal (usage) or an integer of minor units (money), above zero.
fn threshold(field: &str, value: &serde_json::Value, money: bool) -> Result<Decimal, ApiError> {
    let parsed = if money {
        value
            .as_i64()
            .map(Decimal::from)
            .ok_or_else(|| invalid(field, "must be an integer amount in minor units"))?
    } else {
        decimal::from_json(value)
            .map_err(|_| invalid(field, "must be a decimal such as \"1000\" or \"2.5\""))?
    };
    if parsed <= Decimal::ZERO {
        return Err(invalid(field, "must be greater than zero"));
    }
    decimal::check_range(parsed).map_err(|_| {
        invalid(
            field,
            "must be at most 10^15 with at most 12 digits after the point",
        )
    })?;
    Ok(parsed.normalize())
}

/// Checks the thresholds: present, 1 to [`MAX_THRESHOLDS`], each valid, strictly ascending.
fn thresholds(
    values: &Option<Vec<serde_json::Value>>,
    money: bool,
) -> Result<Vec<Stored>, ApiError> {
    let Some(values) = values else {
        return Err(invalid("thresholds", "is required for this type"));
    };
    if values.is_empty() || values.len() > MAX_THRESHOLDS {
        return Err(invalid(
            "thresholds",
            format!("must have 1 to {MAX_THRESHOLDS} values"),
        ));
    }
    let mut out: Vec<Stored> = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let field = format!("thresholds.{i}");
        let t = threshold(&field, v, money)?;
        if out.iter().any(|p| p.0 == t) {
            return Err(invalid(field, "repeats an earlier threshold"));
        }
        if out.last().is_some_and(|p| t < p.0) {
            return Err(invalid(field, "thresholds must be in ascending order"));
        }
        out.push(Stored(t));
    }
    Ok(out)
}

fn currency(value: &Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(c) if !crate::currency::is_known(c) => Err(invalid(
            "currency",
            "is not a known ISO 4217 code (upper case, e.g. USD)",
        )),
        other => Ok(other.clone()),
    }
}

fn resolve_meter(
    tx: &crate::store::ReadTxn,
    tenant: TenantId,
    reference: &str,
) -> Result<Option<Meter>, ApiError> {
    if let Some(id) = Id::parse(reference, meter::PREFIX) {
        if let Some(m) = meter::get(tx, tenant, id)? {
            return Ok(Some(m));
        }
    }
    Ok(meter::by_key(tx, tenant, reference)?)
}

/// The alert's type and the fields that belong to it.
fn kind(
    state: &AppState,
    tenant: TenantId,
    req: &CreateAlertRequest,
) -> Result<(AlertKind, Vec<Stored>), ApiError> {
    let name = req.alert_type.as_str();
    match name {
        "usage_exceeded" => {
            forbid(&req.currency, "currency", name)?;
            forbid(&req.feature, "feature", name)?;
            let reference = req
                .meter
                .as_deref()
                .ok_or_else(|| invalid("meter", "is required for a usage_exceeded alert"))?;
            let levels = thresholds(&req.thresholds, false)?;
            let tx = state.store.read()?;
            let meter = resolve_meter(&tx, tenant, reference)?
                .ok_or_else(|| invalid("meter", format!("no meter {reference:?}")))?;
            // A backfill only ever completes, so a meter found complete here stays so.
            if crate::ingest::backfill::is_running(&tx, tenant, meter.id)? {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "meter_backfilling",
                    format!(
                        "meter {:?} is still counting the events stored before it \
                         (backfill_status running); retry when it is complete",
                        meter.key
                    ),
                )
                .field("meter", "its backfill is still running"));
            }
            Ok((AlertKind::UsageExceeded { meter: meter.id }, levels))
        }
        "credit_balance_below" => {
            forbid(&req.meter, "meter", name)?;
            forbid(&req.feature, "feature", name)?;
            let currency = currency(&req.currency)?;
            let levels = thresholds(&req.thresholds, true)?;
            Ok((AlertKind::CreditBalanceBelow { currency }, levels))
        }
        "credit_balance_depleted" => {
            forbid(&req.meter, "meter", name)?;
            forbid(&req.feature, "feature", name)?;
            forbid(&req.thresholds, "thresholds", name)?;
            let currency = currency(&req.currency)?;
            Ok((AlertKind::CreditBalanceDepleted { currency }, Vec::new()))
        }
        "spend_exceeded" => {
            forbid(&req.meter, "meter", name)?;
            forbid(&req.feature, "feature", name)?;
            let currency = currency(&req.currency)?;
            let levels = thresholds(&req.thresholds, true)?;
            Ok((AlertKind::SpendExceeded { currency }, levels))
        }
        "entitlement_exhausted" => entitlement_kind(state, tenant, req),
        _ => Err(invalid(
            "type",
            "must be usage_exceeded, spend_exceeded, credit_balance_below, \
             credit_balance_depleted or entitlement_exhausted",
        )),
    }
}

/// Largest `entitlement_exhausted` threshold, percent (a soft limit can be passed).
const MAX_PERCENT: Decimal = Decimal::from_parts(1000, 0, 0, false, 0);

/// `entitlement_exhausted`: a feature, and percentages of its allowance (default 100).
fn entitlement_kind(
    state: &AppState,
    tenant: TenantId,
    req: &CreateAlertRequest,
) -> Result<(AlertKind, Vec<Stored>), ApiError> {
    let name = "entitlement_exhausted";
    forbid(&req.meter, "meter", name)?;
    forbid(&req.currency, "currency", name)?;
    let reference = req
        .feature
        .as_deref()
        .ok_or_else(|| invalid("feature", "is required for an entitlement_exhausted alert"))?;
    let levels = match &req.thresholds {
        None => vec![Stored(Decimal::ONE_HUNDRED)],
        some => thresholds(some, false)?,
    };
    if let Some(i) = levels.iter().position(|t| t.0 > MAX_PERCENT) {
        return Err(invalid(
            format!("thresholds.{i}"),
            "is a percentage of the allowance, at most 1000",
        ));
    }
    let tx = state.store.read()?;
    let feature = crate::entitlements::feature::find(&tx, tenant, reference)?
        .ok_or_else(|| invalid("feature", format!("no feature {reference:?}")))?;
    if feature.archived_at_ms.is_some() {
        return Err(invalid("feature", "is archived"));
    }
    Ok((
        AlertKind::EntitlementExhausted {
            feature: feature.id,
        },
        levels,
    ))
}

fn build(state: &AppState, tenant: TenantId, req: &CreateAlertRequest) -> Result<Alert, ApiError> {
    let (kind, thresholds) = kind(state, tenant, req)?;
    if let Some(name) = &req.name {
        if name.trim().is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(invalid(
                "name",
                format!("must be 1-{MAX_NAME_CHARS} characters, no control characters"),
            ));
        }
    }
    let customer = match &req.customer {
        Some(reference) => {
            let tx = state.store.read()?;
            let c = resolve_customer(&tx, tenant, reference)?
                .ok_or_else(|| invalid("customer", format!("no customer {reference:?}")))?;
            Some(c.id)
        }
        None => None,
    };
    let now_ms = crate::clock::now_ms();
    Ok(Alert {
        id: Id::generate_at(now_ms),
        customer,
        kind,
        thresholds,
        name: req.name.clone(),
        created_at_ms: now_ms,
        archived_at_ms: None,
    })
}

fn render_created(alert: &Alert) -> StoredResponse {
    json_response(StatusCode::CREATED, &AlertResponse::from(alert))
}

fn render_archived(output: &Result<Alert, AlertError>) -> StoredResponse {
    match output {
        Ok(alert) => json_response(StatusCode::OK, &AlertResponse::from(alert)),
        Err(e) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string()).to_stored()
        }
    }
}

/// Creates an alert. A customer's alert is evaluated at once; every alert is evaluated again
/// in the transaction of each write that changes a watched value.
#[utoipa::path(
    post, path = "/v1/alerts", tag = "alerts",
    request_body = CreateAlertRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = AlertResponse),
        (status = 409, description = "meter_backfilling: the meter's backfill is still running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "validation_failed naming the field (type, customer, meter, currency, thresholds.N, name)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<CreateAlertRequest>,
) -> Result<Response, ApiError> {
    let request = idempotent::Request {
        tenant,
        key: key.required()?,
        method: "POST",
        path: "/v1/alerts",
        canonical_body: &body.canonical,
    };
    // Its customer, meter or feature may be gone or archived by the time a retry arrives.
    if let Some(replayed) = idempotent::replay(&state, &request)? {
        return Ok(replayed);
    }
    let alert = build(&state, tenant, &body.value)?;
    idempotent::run(
        &state,
        request,
        CreateAlert {
            tenant,
            alert,
            policy: state.config.billing_policy(),
        },
        render_created,
    )
    .await
}

/// Retrieves an alert.
#[utoipa::path(
    get, path = "/v1/alerts/{id}", tag = "alerts",
    params(("id" = String, Path)),
    responses((status = 200, body = AlertResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("alert", &id))?;
    let tx = state.store.read()?;
    let alert = alerts::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("alert", &id))?;
    Ok(Json(AlertResponse::from(&alert)).into_response())
}

/// Lists alerts in creation order, archived ones included.
#[utoipa::path(
    get, path = "/v1/alerts", tag = "alerts",
    params(PageParams),
    responses((status = 200, body = Page<AlertResponse>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(page): Query<PageParams>,
) -> Result<Response, ApiError> {
    let limit = page.limit()?;
    let after = page.after(PREFIX, "an alert")?;
    let tx = state.store.read()?;
    let (items, has_more) = alerts::list(&tx, tenant, after, limit)?;
    Ok(Json(Page::of(
        &items,
        has_more,
        |a| a.id.display(PREFIX),
        |a| AlertResponse::from(a),
    ))
    .into_response())
}

/// Archives an alert: it stops firing; its firings stay.
#[utoipa::path(
    post, path = "/v1/alerts/{id}/archive", tag = "alerts",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 200, body = AlertResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn archive(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<EmptyRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("alert", &id))?;
    let path = format!("/v1/alerts/{id}/archive");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        ArchiveAlert {
            tenant,
            id: parsed,
            now_ms: crate::clock::now_ms(),
        },
        render_archived,
    )
    .await
}

/// Query of `GET /v1/alerts/{id}/firings`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListFiringsParams {
    /// Only this customer's (`cus_…`).
    pub customer: Option<String>,
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this firing id.
    pub starting_after: Option<String>,
}

/// Lists an alert's firings, oldest first.
#[utoipa::path(
    get, path = "/v1/alerts/{id}/firings", tag = "alerts",
    params(("id" = String, Path), ListFiringsParams),
    responses((status = 200, body = Page<FiringResponse>), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn firings(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(params): Query<ListFiringsParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        starting_after: params.starting_after,
    };
    let limit = page.limit()?;
    let after = page.after(firing::PREFIX, "an alert firing")?;
    let customer =
        match &params.customer {
            Some(c) => Some(Id::parse(c, crate::customers::PREFIX).ok_or_else(|| {
                ApiError::invalid_field("customer", "is not a customer id (cus_…)")
            })?),
            None => None,
        };
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("alert", &id))?;
    let tx = state.store.read()?;
    if alerts::get(&tx, tenant, parsed)?.is_none() {
        return Err(ApiError::missing("alert", &id));
    }
    let (items, has_more) = firing::list(&tx, tenant, parsed, customer, after, limit)?;
    Ok(Json(Page::of(
        &items,
        has_more,
        |f| f.id.display(firing::PREFIX),
        firing_body,
    ))
    .into_response())
}
