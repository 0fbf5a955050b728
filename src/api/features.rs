//! `/v1/features`: the named capabilities entitlements grant.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{IdempotencyKey, JsonBody, OptionalJsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::invoices::EmptyRequest;
use super::pagination::{Page, PageParams};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::entitlements::feature::{
    self, ArchiveFeature, CreateFeature, Feature, FeatureError, PREFIX,
};
use crate::id::Id;
use crate::idempotency::StoredResponse;

/// Longest `name`, in characters.
const MAX_NAME_CHARS: usize = 255;

/// Body of `POST /v1/features`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFeatureRequest {
    /// Unique per tenant: 1-64 characters of `a-z`, `0-9`, `_`, `.`, `-`.
    #[schema(pattern = "^[a-z0-9_.-]{1,64}$")]
    pub key: String,
    /// Display name, 1-255 characters.
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
}

/// A feature as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeatureResponse {
    /// `feat_…`.
    pub id: String,
    /// Always `feature`.
    pub object: &'static str,
    /// Key.
    pub key: String,
    /// Name.
    pub name: String,
    /// False once archived (no new entitlements, overrides or grants may name it).
    pub active: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub archived_at: Option<String>,
}

impl From<&Feature> for FeatureResponse {
    fn from(f: &Feature) -> Self {
        Self {
            id: f.id.display(PREFIX),
            object: "feature",
            key: f.key.clone(),
            name: f.name.clone(),
            active: f.archived_at_ms.is_none(),
            created_at: crate::clock::rfc3339(f.created_at_ms),
            archived_at: f.archived_at_ms.map(crate::clock::rfc3339),
        }
    }
}

fn build(req: &CreateFeatureRequest) -> Result<Feature, ApiError> {
    if !feature::valid_key(&req.key) {
        return Err(ApiError::invalid_field(
            "key",
            "must be 1-64 characters of a-z, 0-9, _, . and -",
        ));
    }
    if req.name.trim().is_empty()
        || req.name.chars().count() > MAX_NAME_CHARS
        || req.name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1-{MAX_NAME_CHARS} characters, no control characters"),
        ));
    }
    let now_ms = crate::clock::now_ms();
    Ok(Feature {
        id: Id::generate_at(now_ms),
        key: req.key.clone(),
        name: req.name.clone(),
        created_at_ms: now_ms,
        archived_at_ms: None,
    })
}

fn render_created(output: &Result<Feature, FeatureError>) -> StoredResponse {
    render(StatusCode::CREATED, output)
}

fn render_archived(output: &Result<Feature, FeatureError>) -> StoredResponse {
    render(StatusCode::OK, output)
}

fn render(status: StatusCode, output: &Result<Feature, FeatureError>) -> StoredResponse {
    match output {
        Ok(f) => json_response(status, &FeatureResponse::from(f)),
        Err(e @ FeatureError::Exists { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "feature_exists", e.to_string())
                .field("key", "already used by another feature")
                .to_stored()
        }
        Err(e @ FeatureError::Missing(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string()).to_stored()
        }
    }
}

/// Creates a feature.
#[utoipa::path(
    post, path = "/v1/features", tag = "entitlements",
    request_body = CreateFeatureRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, body = FeatureResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "feature_exists", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<CreateFeatureRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let feature = build(&body.value)?;
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/features",
            canonical_body: &body.canonical,
        },
        CreateFeature { tenant, feature },
        render_created,
    )
    .await
}

/// Retrieves a feature by id or key.
#[utoipa::path(
    get, path = "/v1/features/{id}", tag = "entitlements",
    params(("id" = String, Path, description = "`feat_…` or the feature's key")),
    responses((status = 200, body = FeatureResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tx = state.store.read()?;
    let f = feature::find(&tx, tenant, &id)?.ok_or_else(|| ApiError::missing("feature", &id))?;
    Ok(Json(FeatureResponse::from(&f)).into_response())
}

/// Query of `GET /v1/features`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListFeaturesParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this id.
    pub starting_after: Option<String>,
}

/// Lists features in creation order, archived ones included.
#[utoipa::path(
    get, path = "/v1/features", tag = "entitlements",
    params(ListFeaturesParams),
    responses((status = 200, body = Page<FeatureResponse>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListFeaturesParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        starting_after: params.starting_after,
    };
    let limit = page.limit()?;
    let after = page.after(PREFIX, "a feature")?;
    let tx = state.store.read()?;
    let table = tx.open_table(crate::store::tables::FEATURES)?;
    let (items, has_more) = feature::list(&table, tenant, after, limit)?;
    Ok(Json(Page::of(
        &items,
        has_more,
        |f| f.id.display(PREFIX),
        |x| FeatureResponse::from(x),
    ))
    .into_response())
}

/// Archives a feature: no new entitlement, override or grant may name it; those that exist
/// keep answering checks.
#[utoipa::path(
    post, path = "/v1/features/{id}/archive", tag = "entitlements",
    params(("id" = String, Path, description = "`feat_…` or key"), ("Idempotency-Key" = String, Header, description = "required")),
    responses((status = 200, body = FeatureResponse), (status = 404, body = Problem, content_type = "application/problem+json")),
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
    let found = {
        let tx = state.store.read()?;
        feature::find(&tx, tenant, &id)?.ok_or_else(|| ApiError::missing("feature", &id))?
    };
    let path = format!("/v1/features/{id}/archive");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        ArchiveFeature {
            tenant,
            id: found.id,
            now_ms: crate::clock::now_ms(),
        },
        render_archived,
    )
    .await
}
