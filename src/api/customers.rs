//! `/v1/customers`: the first protected create, and the model for every later resource.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{IdempotencyKey, JsonBody, Query, Tenant};
use super::idempotent::{self, json_response};
use super::pagination::{Page, PageParams};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::customers::{self, CreateCustomer, Customer, CustomerError, PREFIX};
use crate::id::Id;
use crate::idempotency::StoredResponse;

/// Body of `POST /v1/customers`. Unknown fields are refused so a typo never silently drops data.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomerRequest {
    /// The tenant's own id for the customer; unique per tenant; 1-255 bytes.
    #[schema(min_length = 1, max_length = 255)]
    pub external_id: String,
    /// ISO 4217 code, upper case; invoices for this customer are in this currency.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// Display name, at most 512 characters.
    #[schema(max_length = 512)]
    pub name: Option<String>,
    /// Billing email, at most 512 characters.
    #[schema(max_length = 512)]
    pub email: Option<String>,
    /// Up to 50 string pairs; keys 1-40 characters, values at most 500.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A customer as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerResponse {
    /// `cus_…`.
    pub id: String,
    /// Always `customer`.
    pub object: &'static str,
    /// The tenant's id for the customer.
    pub external_id: String,
    /// Display name.
    pub name: Option<String>,
    /// Billing email.
    pub email: Option<String>,
    /// ISO 4217 code.
    pub currency: String,
    /// String pairs.
    pub metadata: BTreeMap<String, String>,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&Customer> for CustomerResponse {
    fn from(c: &Customer) -> Self {
        Self {
            id: c.id.display(PREFIX),
            object: "customer",
            external_id: c.external_id.clone(),
            name: c.name.clone(),
            email: c.email.clone(),
            currency: c.currency.clone(),
            metadata: c.metadata.clone(),
            created_at: crate::clock::rfc3339(c.created_at_ms),
        }
    }
}

/// Query of `GET /v1/customers`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListCustomersParams {
    /// Page size, 1-500 (default 50).
    pub limit: Option<i64>,
    /// Return customers after this id.
    pub starting_after: Option<String>,
    /// Only the customer with this external id.
    pub external_id: Option<String>,
}

fn validate(req: &CreateCustomerRequest) -> Result<(), ApiError> {
    let ext = &req.external_id;
    if ext.is_empty() || ext.len() > customers::MAX_EXTERNAL_ID_BYTES {
        return Err(ApiError::invalid_field(
            "external_id",
            format!("must be 1-{} bytes", customers::MAX_EXTERNAL_ID_BYTES),
        ));
    }
    if ext.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "external_id",
            "must not contain control characters",
        ));
    }
    if !crate::currency::is_known(&req.currency) {
        return Err(ApiError::invalid_field(
            "currency",
            format!(
                "{:?} is not an ISO 4217 currency code (upper case, e.g. USD)",
                req.currency
            ),
        ));
    }
    for (field, value) in [("name", &req.name), ("email", &req.email)] {
        if let Some(v) = value {
            if v.chars().count() > customers::MAX_TEXT_CHARS {
                return Err(ApiError::invalid_field(
                    field,
                    format!("must be at most {} characters", customers::MAX_TEXT_CHARS),
                ));
            }
        }
    }
    if let Some(email) = &req.email {
        let valid = email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
            && !email.chars().any(char::is_whitespace);
        if !valid {
            return Err(ApiError::invalid_field("email", "is not an email address"));
        }
    }
    if req.metadata.len() > customers::MAX_METADATA_ENTRIES {
        return Err(ApiError::invalid_field(
            "metadata",
            format!("at most {} entries", customers::MAX_METADATA_ENTRIES),
        ));
    }
    for (k, v) in &req.metadata {
        if k.is_empty() || k.chars().count() > customers::MAX_METADATA_KEY_CHARS {
            return Err(ApiError::invalid_field(
                format!("metadata.{k}"),
                format!(
                    "keys must be 1-{} characters",
                    customers::MAX_METADATA_KEY_CHARS
                ),
            ));
        }
        if v.chars().count() > customers::MAX_METADATA_VALUE_CHARS {
            return Err(ApiError::invalid_field(
                format!("metadata.{k}"),
                format!(
                    "values must be at most {} characters",
                    customers::MAX_METADATA_VALUE_CHARS
                ),
            ));
        }
    }
    Ok(())
}

fn render(output: &Result<Customer, CustomerError>) -> StoredResponse {
    match output {
        Ok(customer) => json_response(StatusCode::CREATED, &CustomerResponse::from(customer)),
        Err(e @ CustomerError::Exists { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "customer_exists", e.to_string())
                .field("external_id", "already used by another customer")
                .to_stored()
        }
    }
}

/// Creates a customer.
#[utoipa::path(
    post,
    path = "/v1/customers",
    tag = "customers",
    request_body = CreateCustomerRequest,
    params(("Idempotency-Key" = String, Header, description = "1-255 characters; required")),
    responses(
        (status = 201, description = "Created (or replayed)", body = CustomerResponse),
        (status = 400, description = "Invalid request or key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "customer_exists or idempotency_key_in_use", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "idempotency_key_reused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<CreateCustomerRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let req = body.value;
    validate(&req)?;
    let now_ms = crate::clock::now_ms();
    let customer = Customer {
        id: Id::generate_at(now_ms),
        external_id: req.external_id,
        name: req.name,
        email: req.email,
        currency: req.currency,
        metadata: req.metadata,
        created_at_ms: now_ms,
    };
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/customers",
            canonical_body: &body.canonical,
        },
        CreateCustomer { tenant, customer },
        render,
    )
    .await
}

/// Retrieves a customer.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}",
    tag = "customers",
    params(("id" = String, Path, description = "cus_…")),
    responses(
        (status = 200, body = CustomerResponse),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("customer", &id))?;
    let tx = state.store.read()?;
    let customer =
        customers::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("customer", &id))?;
    Ok(Json(CustomerResponse::from(&customer)).into_response())
}

/// Lists customers, oldest first.
#[utoipa::path(
    get,
    path = "/v1/customers",
    tag = "customers",
    params(ListCustomersParams),
    responses(
        (status = 200, body = Page<CustomerResponse>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Query(params): Query<ListCustomersParams>,
) -> Result<Response, ApiError> {
    let page = PageParams {
        limit: params.limit,
        starting_after: params.starting_after,
    };
    let limit = page.limit()?;
    let after = match &page.starting_after {
        Some(cursor) => Some(Id::parse(cursor, PREFIX).ok_or_else(|| {
            ApiError::invalid_field("starting_after", "is not a customer id (cus_…)")
        })?),
        None => None,
    };
    let tx = state.store.read()?;
    let (items, has_more) = match &params.external_id {
        Some(external_id) => {
            let found = customers::by_external_id(&tx, tenant, external_id)?
                .filter(|c| after.is_none_or(|a| c.id > a));
            (found.into_iter().collect(), false)
        }
        None => customers::list(&tx, tenant, after, limit)?,
    };
    let next_cursor = if has_more {
        items.last().map(|c| c.id.display(PREFIX))
    } else {
        None
    };
    Ok(Json(Page {
        data: items.iter().map(CustomerResponse::from).collect(),
        has_more,
        next_cursor,
    })
    .into_response())
}
