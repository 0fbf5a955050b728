//! `/v1/tax-rates`: creating, reading and archiving tax rates.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{IdempotencyKey, JsonBody, OptionalJsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::invoices::EmptyRequest;
use super::pagination::{Page, PageParams};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::decimal::{self, Stored};
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::tax_rates::{self, ArchiveTaxRate, CreateTaxRate, TaxRate, TaxRateError, PREFIX};

/// Longest `display_name` and `jurisdiction`, in characters.
const MAX_TEXT_CHARS: usize = 100;

/// Body of `POST /v1/tax-rates`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTaxRateRequest {
    /// What invoices print, 1-100 characters.
    pub display_name: String,
    /// 0 to 100, exact decimal string (or number).
    #[schema(value_type = String, example = "19")]
    pub percentage: serde_json::Value,
    /// Whether line prices already contain the tax.
    pub inclusive: bool,
    /// The state, province or authority, 1-100 characters.
    pub jurisdiction: Option<String>,
    /// ISO 3166-1 alpha-2, upper case.
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
}

/// A tax rate as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaxRateResponse {
    /// `txr_…`.
    pub id: String,
    /// Always `tax_rate`.
    pub object: &'static str,
    /// Name.
    pub display_name: String,
    /// Exact decimal string.
    pub percentage: String,
    /// Whether line prices contain it.
    pub inclusive: bool,
    /// Jurisdiction.
    pub jurisdiction: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    /// False once archived (no longer assignable to customers).
    pub active: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub archived_at: Option<String>,
}

impl From<&TaxRate> for TaxRateResponse {
    fn from(r: &TaxRate) -> Self {
        Self {
            id: r.id.display(PREFIX),
            object: "tax_rate",
            display_name: r.display_name.clone(),
            percentage: decimal::to_text(r.percentage.0),
            inclusive: r.inclusive,
            jurisdiction: r.jurisdiction.clone(),
            country: r.country.clone(),
            active: r.archived_at_ms.is_none(),
            created_at: crate::clock::rfc3339(r.created_at_ms),
            archived_at: r.archived_at_ms.map(crate::clock::rfc3339),
        }
    }
}

fn check_text(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty()
        || value.chars().count() > MAX_TEXT_CHARS
        || value.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_field(
            field,
            format!("must be 1-{MAX_TEXT_CHARS} characters, no control characters"),
        ));
    }
    Ok(())
}

fn build(req: &CreateTaxRateRequest) -> Result<TaxRate, ApiError> {
    check_text("display_name", &req.display_name)?;
    if let Some(j) = &req.jurisdiction {
        check_text("jurisdiction", j)?;
    }
    let percentage = decimal::from_json(&req.percentage).map_err(|_| {
        ApiError::invalid_field(
            "percentage",
            "must be a decimal such as \"19\" or \"8.875\"",
        )
    })?;
    if percentage < Decimal::ZERO || percentage > Decimal::ONE_HUNDRED {
        return Err(ApiError::invalid_field(
            "percentage",
            "must be between 0 and 100",
        ));
    }
    if let Some(country) = &req.country {
        if !crate::country::is_assigned(country) {
            return Err(ApiError::invalid_field(
                "country",
                "is not an ISO 3166-1 alpha-2 code (upper case, e.g. DE)",
            ));
        }
    }
    let now_ms = crate::clock::now_ms();
    Ok(TaxRate {
        id: Id::generate_at(now_ms),
        display_name: req.display_name.clone(),
        percentage: Stored(percentage.normalize()),
        inclusive: req.inclusive,
        jurisdiction: req.jurisdiction.clone(),
        country: req.country.clone(),
        created_at_ms: now_ms,
        archived_at_ms: None,
    })
}

fn render_created(rate: &TaxRate) -> StoredResponse {
    json_response(StatusCode::CREATED, &TaxRateResponse::from(rate))
}

fn render_archived(output: &Result<TaxRate, TaxRateError>) -> StoredResponse {
    match output {
        Ok(rate) => json_response(StatusCode::OK, &TaxRateResponse::from(rate)),
        Err(e) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string()).to_stored()
        }
    }
}

/// Creates a tax rate. Rates never change; archive one to stop assigning it.
#[utoipa::path(
    post, path = "/v1/tax-rates", tag = "billing",
    request_body = CreateTaxRateRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = TaxRateResponse),
        (status = 400, description = "invalid_field (percentage, country…)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<CreateTaxRateRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let rate = build(&body.value)?;
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/tax-rates",
            canonical_body: &body.canonical,
        },
        CreateTaxRate { tenant, rate },
        render_created,
    )
    .await
}

/// Retrieves a tax rate.
#[utoipa::path(
    get, path = "/v1/tax-rates/{id}", tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = TaxRateResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("tax rate", &id))?;
    let tx = state.store.read()?;
    let rate =
        tax_rates::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("tax rate", &id))?;
    Ok(Json(TaxRateResponse::from(&rate)).into_response())
}

/// Query of `GET /v1/tax-rates`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListTaxRatesParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this id.
    pub starting_after: Option<String>,
}

/// Lists tax rates in creation order, archived ones included.
#[utoipa::path(
    get, path = "/v1/tax-rates", tag = "billing",
    params(ListTaxRatesParams),
    responses((status = 200, body = Page<TaxRateResponse>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListTaxRatesParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        starting_after: params.starting_after,
    };
    let limit = page.limit()?;
    let after = page.after(PREFIX, "a tax rate")?;
    let tx = state.store.read()?;
    let (items, has_more) = tax_rates::list(&tx, tenant, after, limit)?;
    Ok(Json(Page::of(
        &items,
        has_more,
        |r| r.id.display(PREFIX),
        |x| TaxRateResponse::from(x),
    ))
    .into_response())
}

/// Archives a tax rate: it can no longer be assigned to customers; customers that have it and
/// invoices that applied it keep it.
#[utoipa::path(
    post, path = "/v1/tax-rates/{id}/archive", tag = "billing",
    params(("id" = String, Path), ("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 200, body = TaxRateResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
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
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("tax rate", &id))?;
    let path = format!("/v1/tax-rates/{id}/archive");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        ArchiveTaxRate {
            tenant,
            id: parsed,
            now_ms: crate::clock::now_ms(),
        },
        render_archived,
    )
    .await
}
