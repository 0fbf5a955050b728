//! `/v1/api-keys`: the caller's tenant's API keys — list, create (the secret shown once),
//! revoke.
//!
//! Keys are only ever stored hashed, and that includes the idempotency record: the stored reply
//! of a create carries `secret: null` and `secret_shown: false`. Only the request that executed
//! the create gets the secret, patched into its own reply after the commit; a replay of the
//! same request answers the same key without it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{IdempotencyKey, OptionalJsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::invoices::EmptyRequest;
use super::pagination::{Page, PageParams};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::id::Id;
use crate::idempotency::StoredResponse;
use crate::tenants::{
    self, ApiKey, CreateTenantKey, RevokeTenantKey, TenantError, KEY_ID_PREFIX, MAX_KEY_LABEL_CHARS,
};

/// Body of `POST /v1/api-keys` (may be empty: an unlabelled read-write key).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// The operator's name for the key, 0-64 characters without control characters.
    #[schema(max_length = 64)]
    pub label: Option<String>,
    /// A read-only key reads everything and changes nothing (default false).
    pub read_only: Option<bool>,
}

/// An API key as the API shows it: never its hash, and its secret only once.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    /// `key_…`.
    pub id: String,
    /// Always `api_key`.
    pub object: &'static str,
    /// The operator's name for it (may be empty).
    pub label: String,
    /// Whether it may only read.
    pub read_only: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<String>,
    /// The secret (`tally_sk_…`): only in the reply of the request that created the key.
    /// Null everywhere else, including a replay of that request: it is never stored.
    pub secret: Option<String>,
    /// Whether this reply carries the secret.
    pub secret_shown: bool,
}

impl From<&ApiKey> for ApiKeyResponse {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: k.id.display(KEY_ID_PREFIX),
            object: "api_key",
            label: k.label.clone(),
            read_only: k.read_only,
            created_at: crate::clock::rfc3339(k.created_at_ms),
            revoked_at: k.revoked_at_ms.map(crate::clock::rfc3339),
            secret: None,
            secret_shown: false,
        }
    }
}

fn render_created(output: &Result<ApiKey, TenantError>) -> StoredResponse {
    render(StatusCode::CREATED, output)
}

fn render_revoked(output: &Result<ApiKey, TenantError>) -> StoredResponse {
    render(StatusCode::OK, output)
}

fn render(status: StatusCode, output: &Result<ApiKey, TenantError>) -> StoredResponse {
    match output {
        Ok(k) => json_response(status, &ApiKeyResponse::from(k)),
        Err(TenantError::UnknownKey(id)) => ApiError::missing("API key", id).to_stored(),
        Err(e) => ApiError::invalid_field("label", e.to_string()).to_stored(),
    }
}

/// The first reply of a create: the stored (redacted) reply with the secret put back in.
fn with_secret(stored: StoredResponse, secret: &str) -> StoredResponse {
    let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&stored.body) else {
        return stored;
    };
    if let Some(object) = body.as_object_mut() {
        object.insert("secret".into(), serde_json::Value::from(secret));
        object.insert("secret_shown".into(), serde_json::Value::from(true));
    }
    StoredResponse {
        body: serde_json::to_vec(&body).unwrap_or(stored.body),
        ..stored
    }
}

/// Creates an API key for the caller's tenant. The secret is in this reply only.
#[utoipa::path(
    post, path = "/v1/api-keys", tag = "api keys",
    request_body = CreateApiKeyRequest,
    params(("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 201, description = "The key with its `secret` (`secret_shown: true`). A replay with the same Idempotency-Key answers the same key with `secret: null` and `secret_shown: false`: secrets are never stored, not even in idempotency records.", body = ApiKeyResponse),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "read_only_key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: OptionalJsonBody<CreateApiKeyRequest>,
) -> Result<Response, ApiError> {
    let idempotency_key = key.required()?;
    let label = body.value.label.clone().unwrap_or_default();
    if !tenants::valid_label(&label) {
        return Err(ApiError::invalid_field(
            "label",
            format!("must be 0-{MAX_KEY_LABEL_CHARS} characters without control characters"),
        ));
    }
    let mut new_key = tenants::generate_key().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_randomness",
            "the server could not draw random bytes for a key; try again",
        )
    })?;
    new_key.label = label;
    new_key.read_only = body.value.read_only.unwrap_or(false);
    let secret = new_key.secret.clone();
    let answer = idempotent::execute(
        &state,
        idempotent::Request {
            tenant,
            key: idempotency_key,
            method: "POST",
            path: "/v1/api-keys",
            canonical_body: &body.canonical,
        },
        CreateTenantKey {
            tenant,
            key: new_key,
            now_ms: crate::clock::now_ms(),
        },
        render_created,
    )
    .await?;
    let first = !answer.replayed && answer.stored.status == StatusCode::CREATED.as_u16();
    let stored = if first {
        with_secret(answer.stored, &secret)
    } else {
        answer.stored
    };
    Ok(idempotent::respond(stored, answer.replayed))
}

/// Query of `GET /v1/api-keys`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListApiKeysParams {
    /// Page size, 1-500.
    pub limit: Option<i64>,
    /// After this id.
    pub starting_after: Option<String>,
}

/// Lists the caller's tenant's keys in creation order, revoked ones included; never a secret.
#[utoipa::path(
    get, path = "/v1/api-keys", tag = "api keys",
    params(ListApiKeysParams),
    responses((status = 200, body = Page<ApiKeyResponse>)),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListApiKeysParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        starting_after: params.starting_after,
    };
    let limit = page.limit()?;
    let after = page.after(KEY_ID_PREFIX, "an API key")?;
    let tx = state.store.read()?;
    let (items, has_more) = tenants::list_keys(&tx, tenant, after, limit)?;
    Ok(Json(Page::of(
        &items,
        has_more,
        |k| k.id.display(KEY_ID_PREFIX),
        |k| ApiKeyResponse::from(k),
    ))
    .into_response())
}

/// Revokes one of the caller's tenant's keys; it authenticates nothing from then on (the key
/// making the request may revoke itself). Revoking a revoked key answers it unchanged.
#[utoipa::path(
    post, path = "/v1/api-keys/{id}/revoke", tag = "api keys",
    params(("id" = String, Path, description = "`key_…`"), ("Idempotency-Key" = String, Header, description = "required")),
    responses(
        (status = 200, body = ApiKeyResponse),
        (status = 403, description = "read_only_key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such key for this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJsonBody<EmptyRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed: Id =
        Id::parse(&id, KEY_ID_PREFIX).ok_or_else(|| ApiError::missing("API key", &id))?;
    let path = format!("/v1/api-keys/{id}/revoke");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        RevokeTenantKey {
            tenant,
            key_id: parsed,
            now_ms: crate::clock::now_ms(),
        },
        render_revoked,
    )
    .await
}
