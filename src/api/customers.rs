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
use crate::billing::customer_update::UpdateCustomer;
use crate::customers::details::{self, Invalid};
use crate::customers::search;
use crate::customers::{
    self, Address, Changes, CreateCustomer, Customer, CustomerError, TaxId, PREFIX,
};
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
    /// Registered name for invoices, 1-512 characters.
    #[schema(min_length = 1, max_length = 512)]
    pub legal_name: Option<String>,
    /// Billing address.
    pub address: Option<AddressBody>,
    /// Tax registrations, at most 5.
    #[serde(default)]
    #[schema(max_items = 5)]
    pub tax_ids: Vec<TaxIdBody>,
    /// BCP 47 language tag (`en`, `de-DE`), at most 35 characters.
    #[schema(max_length = 35)]
    pub locale: Option<String>,
    /// Default tax rates of its invoices (`txr_…`, active ones), at most 5; an inclusive rate
    /// must stand alone.
    #[serde(default)]
    #[schema(max_items = 5)]
    pub tax_rates: Vec<String>,
    /// With a tax id: invoices carry no tax and the reverse-charge note.
    #[serde(default)]
    pub reverse_charge: bool,
}

/// A postal address.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressBody {
    /// Street and number, 1-200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub line1: String,
    /// Apartment, suite, building; at most 200 characters.
    #[schema(max_length = 200)]
    pub line2: Option<String>,
    /// City, 1-100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub city: String,
    /// Postal code, 1-20 characters.
    #[schema(min_length = 1, max_length = 20)]
    pub postal_code: String,
    /// State, province or county; at most 100 characters.
    #[schema(max_length = 100)]
    pub region: Option<String>,
    /// ISO 3166-1 alpha-2 code, upper case (an assigned one: `DE`, `GB`, `US`…).
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: String,
}

impl From<AddressBody> for Address {
    fn from(a: AddressBody) -> Self {
        Address {
            line1: a.line1,
            line2: a.line2,
            city: a.city,
            postal_code: a.postal_code,
            region: a.region,
            country: a.country,
        }
    }
}

impl From<&Address> for AddressBody {
    fn from(a: &Address) -> Self {
        AddressBody {
            line1: a.line1.clone(),
            line2: a.line2.clone(),
            city: a.city.clone(),
            postal_code: a.postal_code.clone(),
            region: a.region.clone(),
            country: a.country.clone(),
        }
    }
}

/// A tax registration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaxIdBody {
    /// eu_vat, gb_vat, ch_vat, no_vat, us_ein, ca_bn, au_abn, nz_gst, in_gst, jp_cn, sg_uen,
    /// za_vat, br_cnpj or kr_brn.
    #[serde(rename = "type")]
    pub kind: String,
    /// The number, 1-64 characters, of the type's shape (see the README).
    #[schema(min_length = 1, max_length = 64)]
    pub value: String,
}

impl From<TaxIdBody> for TaxId {
    fn from(t: TaxIdBody) -> Self {
        TaxId {
            kind: t.kind,
            value: t.value,
        }
    }
}

/// Body of `POST /v1/customers/{id}`. Absent fields keep their value; `null` clears an
/// optional one (`metadata` and `tax_ids` become empty); `external_id` can only repeat the
/// current value; `currency` cannot be null.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCustomerRequest {
    /// Never changes: a different value (or null) is refused (422 `field_immutable`).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub external_id: Option<Option<String>>,
    /// Display name, at most 512 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 512)]
    pub name: Option<Option<String>>,
    /// Billing email, at most 512 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 512)]
    pub email: Option<Option<String>>,
    /// Replaces every pair (null or `{}` removes them all).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<Option<BTreeMap<String, String>>>,
    /// Registered name, 1-512 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 512)]
    pub legal_name: Option<Option<String>>,
    /// Billing address (replaced whole).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<AddressBody>)]
    pub address: Option<Option<AddressBody>>,
    /// Replaces every tax id (null or `[]` removes them all); at most 5.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<TaxIdBody>>, max_items = 5)]
    pub tax_ids: Option<Option<Vec<TaxIdBody>>>,
    /// BCP 47 language tag, at most 35 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 35)]
    pub locale: Option<Option<String>>,
    /// ISO 4217 code; 409 `currency_locked` once the customer has an invoice or a subscription
    /// that is not canceled.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = "^[A-Z]{3}$")]
    pub currency: Option<Option<String>>,
    /// Replaces the default tax rates (null or `[]` removes them); at most 5.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, max_items = 5)]
    pub tax_rates: Option<Option<Vec<String>>>,
    /// Reverse charge.
    #[serde(default)]
    pub reverse_charge: Option<bool>,
}

/// A field that is present is `Some` (its value, `None` for JSON null); an absent one stays
/// `None` through `#[serde(default)]`.
fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
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
    /// Registered name.
    pub legal_name: Option<String>,
    /// Billing address.
    pub address: Option<AddressBody>,
    /// Tax registrations.
    pub tax_ids: Vec<TaxIdBody>,
    /// BCP 47 language tag.
    pub locale: Option<String>,
    /// Default tax rates (`txr_…`).
    pub tax_rates: Vec<String>,
    /// Reverse charge (applies when the customer has a tax id).
    pub reverse_charge: bool,
    /// 1 when created, one more per update that changed something.
    pub version: u64,
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
            legal_name: c.legal_name.clone(),
            address: c.address.as_ref().map(AddressBody::from),
            tax_ids: c
                .tax_ids
                .iter()
                .map(|t| TaxIdBody {
                    kind: t.kind.clone(),
                    value: t.value.clone(),
                })
                .collect(),
            locale: c.locale.clone(),
            tax_rates: c
                .tax_rates
                .iter()
                .map(|r| r.display(crate::tax_rates::PREFIX))
                .collect(),
            reverse_charge: c.reverse_charge,
            version: c.version,
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
    /// Only customers whose external id, name or email contains this text (1-255 characters,
    /// case-insensitive). A search examines at most 10,000 customers per request and may answer
    /// a short (even empty) page with a cursor that continues where it stopped.
    pub search: Option<String>,
}

/// Parses tax rate ids; existence and archive state are checked in the writing command.
fn parse_tax_rates(ids: &[String]) -> Result<Vec<Id>, ApiError> {
    if ids.len() > crate::tax_rates::MAX_PER_CUSTOMER {
        return Err(ApiError::invalid_field(
            "tax_rates",
            format!("at most {} rates", crate::tax_rates::MAX_PER_CUSTOMER),
        ));
    }
    ids.iter()
        .map(|id| {
            Id::parse(id, crate::tax_rates::PREFIX).ok_or_else(|| {
                ApiError::invalid_field("tax_rates", format!("{id:?} is not a txr_… id"))
            })
        })
        .collect()
}

fn field_error(e: Invalid) -> ApiError {
    ApiError::invalid_field(e.field, e.detail)
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
    validate_currency(&req.currency)?;
    validate_name("name", req.name.as_deref())?;
    validate_name("email", req.email.as_deref())?;
    validate_email(req.email.as_deref())?;
    validate_metadata(&req.metadata)?;
    validate_details(
        req.legal_name.as_deref(),
        req.address.as_ref(),
        Some(&req.tax_ids),
        req.locale.as_deref(),
    )
}

fn validate_currency(currency: &str) -> Result<(), ApiError> {
    if !crate::currency::is_known(currency) {
        return Err(ApiError::invalid_field(
            "currency",
            format!("{currency:?} is not an ISO 4217 currency code (upper case, e.g. USD)"),
        ));
    }
    Ok(())
}

fn validate_name(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    if value.is_some_and(|v| v.chars().count() > customers::MAX_TEXT_CHARS) {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at most {} characters", customers::MAX_TEXT_CHARS),
        ));
    }
    Ok(())
}

fn validate_email(email: Option<&str>) -> Result<(), ApiError> {
    if let Some(email) = email {
        let valid = email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
            && !email.chars().any(char::is_whitespace);
        if !valid {
            return Err(ApiError::invalid_field("email", "is not an email address"));
        }
    }
    Ok(())
}

fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if metadata.len() > customers::MAX_METADATA_ENTRIES {
        return Err(ApiError::invalid_field(
            "metadata",
            format!("at most {} entries", customers::MAX_METADATA_ENTRIES),
        ));
    }
    for (k, v) in metadata {
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

/// The billing details' ranges (each given field; `None` is not given or cleared).
fn validate_details(
    legal_name: Option<&str>,
    address: Option<&AddressBody>,
    tax_ids: Option<&Vec<TaxIdBody>>,
    locale: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(legal_name) = legal_name {
        details::check_text("legal_name", legal_name, customers::MAX_TEXT_CHARS, true)
            .map_err(field_error)?;
    }
    if let Some(address) = address {
        details::check_address(&Address::from(address.clone())).map_err(field_error)?;
    }
    if let Some(tax_ids) = tax_ids {
        let tax_ids: Vec<TaxId> = tax_ids.iter().cloned().map(TaxId::from).collect();
        details::check_tax_ids(&tax_ids).map_err(field_error)?;
    }
    if let Some(locale) = locale {
        details::check_locale(locale).map_err(field_error)?;
    }
    Ok(())
}

/// Checks an update's fields and turns it into the command's changes.
fn changes(req: UpdateCustomerRequest) -> Result<Changes, ApiError> {
    if req.external_id == Some(None) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_immutable",
            "external_id cannot change once the customer exists",
        )
        .field("external_id", "cannot change"));
    }
    let currency = match req.currency {
        Some(None) => {
            return Err(ApiError::invalid_field(
                "currency",
                "cannot be null: a customer is always billed in a currency",
            ))
        }
        Some(Some(c)) => {
            validate_currency(&c)?;
            Some(c)
        }
        None => None,
    };
    let flat =
        |v: &Option<Option<String>>| v.as_ref().and_then(|v| v.as_deref().map(str::to_string));
    validate_name("name", flat(&req.name).as_deref())?;
    validate_name("email", flat(&req.email).as_deref())?;
    validate_email(flat(&req.email).as_deref())?;
    if let Some(Some(metadata)) = &req.metadata {
        validate_metadata(metadata)?;
    }
    validate_details(
        flat(&req.legal_name).as_deref(),
        req.address.as_ref().and_then(Option::as_ref),
        req.tax_ids.as_ref().and_then(Option::as_ref),
        flat(&req.locale).as_deref(),
    )?;
    Ok(Changes {
        external_id: req.external_id.flatten(),
        name: req.name,
        email: req.email,
        metadata: req.metadata.map(Option::unwrap_or_default),
        legal_name: req.legal_name,
        address: req.address.map(|a| a.map(Address::from)),
        tax_ids: req
            .tax_ids
            .map(|t| t.unwrap_or_default().into_iter().map(TaxId::from).collect()),
        locale: req.locale,
        currency,
        tax_rates: match req.tax_rates {
            Some(ids) => Some(parse_tax_rates(&ids.unwrap_or_default())?),
            None => None,
        },
        reverse_charge: req.reverse_charge,
    })
}

fn render(output: &Result<Customer, CustomerError>) -> StoredResponse {
    match output {
        Ok(customer) => json_response(StatusCode::CREATED, &CustomerResponse::from(customer)),
        Err(e) => render_error(e),
    }
}

fn render_error(e: &CustomerError) -> StoredResponse {
    match e {
        CustomerError::Exists { .. } => {
            ApiError::new(StatusCode::CONFLICT, "customer_exists", e.to_string())
                .field("external_id", "already used by another customer")
        }
        CustomerError::Missing(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "resource_missing", e.to_string())
        }
        CustomerError::Immutable { field } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "field_immutable",
            e.to_string(),
        )
        .field(*field, "cannot change"),
        CustomerError::TaxRates(reason) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_tax_rates",
            e.to_string(),
        )
        .field("tax_rates", reason.to_string()),
        CustomerError::CurrencyLocked { reason } => {
            ApiError::new(StatusCode::CONFLICT, "currency_locked", e.to_string())
                .field("currency", reason.clone())
        }
    }
    .to_stored()
}

fn render_update(output: &Result<Customer, CustomerError>) -> StoredResponse {
    match output {
        Ok(customer) => json_response(StatusCode::OK, &CustomerResponse::from(customer)),
        Err(e) => render_error(e),
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
    let tax_rates = parse_tax_rates(&req.tax_rates)?;
    let now_ms = crate::clock::now_ms();
    let customer = Customer {
        tax_rates,
        reverse_charge: req.reverse_charge,
        name: req.name,
        email: req.email,
        metadata: req.metadata,
        legal_name: req.legal_name,
        address: req.address.map(Address::from),
        tax_ids: req.tax_ids.into_iter().map(TaxId::from).collect(),
        locale: req.locale,
        ..Customer::new(
            Id::generate_at(now_ms),
            req.external_id,
            req.currency,
            now_ms,
        )
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

/// Changes a customer's details. Absent fields keep their value, `null` clears an optional
/// one; an update that changes nothing writes nothing. Each update that changes something
/// advances `version` and records one `customer.updated`.
#[utoipa::path(
    post,
    path = "/v1/customers/{id}",
    tag = "customers",
    request_body = UpdateCustomerRequest,
    params(
        ("id" = String, Path, description = "cus_…"),
        ("Idempotency-Key" = String, Header, description = "1-255 characters; required"),
    ),
    responses(
        (status = 200, description = "Updated, unchanged, or replayed", body = CustomerResponse),
        (status = 400, description = "A field out of its range, named in errors[]", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "currency_locked: the customer has an invoice or a subscription that is not canceled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "field_immutable (external_id) or idempotency_key_reused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: JsonBody<UpdateCustomerRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("customer", &id))?;
    let changes = changes(body.value)?;
    {
        let tx = state.store.read()?;
        if customers::get(&tx, tenant, parsed)?.is_none() {
            return Err(ApiError::missing("customer", &id));
        }
    }
    let path = format!("/v1/customers/{id}");
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: &path,
            canonical_body: &body.canonical,
        },
        UpdateCustomer {
            tenant,
            id: parsed,
            changes,
            now_ms: crate::clock::now_ms(),
        },
        render_update,
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

/// Lists customers, oldest first, optionally only those whose external id, name or email
/// contains `search`. A search examines at most 10,000 customers per request and may answer a
/// short (even empty) page with `has_more` and a cursor: follow it to continue the scan.
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
    let needle = params.search.as_deref().map(needle).transpose()?;
    let tx = state.store.read()?;
    let (items, cursor) = match (&params.external_id, &needle) {
        (Some(external_id), _) => {
            let found = customers::by_external_id(&tx, tenant, external_id)?.filter(|c| {
                after.is_none_or(|a| c.id > a) && needle.as_ref().is_none_or(|n| n.matches(c))
            });
            (found.into_iter().collect(), None)
        }
        (None, Some(needle)) => {
            search::search(&tx, tenant, needle, after, limit, search::SEARCH_SCAN_ROWS)?
        }
        (None, None) => {
            let (items, has_more) = customers::list(&tx, tenant, after, limit)?;
            let cursor = if has_more {
                items.last().map(|c: &Customer| c.id)
            } else {
                None
            };
            (items, cursor)
        }
    };
    Ok(Json(Page {
        data: items.iter().map(CustomerResponse::from).collect(),
        has_more: cursor.is_some(),
        next_cursor: cursor.map(|c| c.display(PREFIX)),
    })
    .into_response())
}

/// The validated search text of a customer list.
fn needle(text: &str) -> Result<search::Needle, ApiError> {
    let chars = text.chars().count();
    if chars == 0 || chars > search::MAX_SEARCH_CHARS {
        return Err(ApiError::invalid_field(
            "search",
            format!("must be 1-{} characters", search::MAX_SEARCH_CHARS),
        ));
    }
    Ok(search::Needle::new(text))
}
