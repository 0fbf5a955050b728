//! `/v1/tenant/settings`: the seller details printed on the tenant's invoices and how its
//! documents are numbered.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::customers::{AddressBody, TaxIdBody};
use super::extract::{IdempotencyKey, JsonBody, Tenant};
use super::idempotent::{self, json_response};
use super::parties::{tax_id_body, LogoRefBody};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::customers::{Address, TaxId};
use crate::idempotency::StoredResponse;
use crate::tenant_settings::{self, number_format, Changes, Logo, UpdateSettings, View};

/// A logo as sent and shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoBody {
    /// `image/png` or `image/svg+xml`.
    pub media_type: String,
    /// The image, base64 (standard alphabet, padded); at most 256 KiB decoded.
    pub data: String,
}

/// Body of `POST /v1/tenant/settings`. Absent fields keep their value; `null` clears one (a
/// prefix or the format goes back to its default).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettingsRequest {
    /// Registered name, 1-512 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 512)]
    pub legal_name: Option<Option<String>>,
    /// Address (replaced whole).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<AddressBody>)]
    pub address: Option<Option<AddressBody>>,
    /// Tax registration.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<TaxIdBody>)]
    pub tax_id: Option<Option<TaxIdBody>>,
    /// Contact email, at most 512 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 512)]
    pub email: Option<Option<String>>,
    /// PNG or SVG logo, at most 256 KiB decoded; SVGs may not hold scripts, event handlers or
    /// references outside themselves.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<LogoBody>)]
    pub logo: Option<Option<LogoBody>>,
    /// Printed at the foot of invoices, at most 2000 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    pub invoice_footer: Option<Option<String>>,
    /// How to pay, at most 2000 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 2000)]
    pub payment_instructions: Option<Option<String>>,
    /// `{prefix}` of invoice numbers: 1-20 letters, digits, `-`, `_`, `/`, `.` (default INV).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 20)]
    pub invoice_prefix: Option<Option<String>>,
    /// `{prefix}` of credit-note numbers (default CN).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 20)]
    pub credit_note_prefix: Option<Option<String>>,
    /// Number format: literal letters, digits, `-_/.#` and the tokens `{prefix}`, `{year}`,
    /// `{seq}`, `{seq:0N}` (N 1-12), exactly one sequence token (default
    /// `{prefix}-{year}-{seq:06}`). With `{year}` the sequence restarts every UTC year.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 64)]
    pub invoice_number_format: Option<Option<String>>,
}

/// A present field is `Some` (its value, `None` for null); an absent one stays `None`.
fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The settings as the API shows them (prefixes and format with their defaults filled in).
#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsResponse {
    /// Always `tenant_settings`.
    pub object: &'static str,
    /// Registered name.
    pub legal_name: Option<String>,
    /// Address.
    pub address: Option<AddressBody>,
    /// Tax registration.
    pub tax_id: Option<TaxIdBody>,
    /// Contact email.
    pub email: Option<String>,
    /// The logo with its bytes.
    pub logo: Option<LogoBody>,
    /// The logo's type, hash and size (what invoices record).
    pub logo_ref: Option<LogoRefBody>,
    /// Footer.
    pub invoice_footer: Option<String>,
    /// Payment instructions.
    pub payment_instructions: Option<String>,
    /// Invoice prefix in force.
    pub invoice_prefix: String,
    /// Credit-note prefix in force.
    pub credit_note_prefix: String,
    /// Number format in force.
    pub invoice_number_format: String,
    /// 0 until first set, one more per change.
    pub version: u64,
    /// RFC 3339; null until first set.
    pub updated_at: Option<String>,
}

fn response(view: &View) -> SettingsResponse {
    let s = &view.settings;
    SettingsResponse {
        object: "tenant_settings",
        legal_name: s.legal_name.clone(),
        address: s.address.as_ref().map(AddressBody::from),
        tax_id: s.tax_id.as_ref().map(tax_id_body),
        email: s.email.clone(),
        logo: view.logo.as_ref().map(|l| LogoBody {
            media_type: l.media_type.clone(),
            data: base64::engine::general_purpose::STANDARD.encode(&l.data),
        }),
        logo_ref: s.logo.as_ref().map(LogoRefBody::from),
        invoice_footer: s.invoice_footer.clone(),
        payment_instructions: s.payment_instructions.clone(),
        invoice_prefix: s.invoice_prefix().to_string(),
        credit_note_prefix: s.credit_note_prefix().to_string(),
        invoice_number_format: s
            .invoice_number_format
            .clone()
            .unwrap_or_else(|| number_format::DEFAULT_FORMAT.to_string()),
        version: s.version,
        updated_at: (s.version > 0).then(|| crate::clock::rfc3339(s.updated_at_ms)),
    }
}

/// Decodes the logo's base64 (the content is checked with the other fields).
fn logo(body: LogoBody) -> Result<Logo, ApiError> {
    let data = base64::engine::general_purpose::STANDARD
        .decode(body.data.as_bytes())
        .map_err(|_| ApiError::invalid_field("logo.data", "is not base64 (standard, padded)"))?;
    Ok(Logo {
        media_type: body.media_type,
        data,
    })
}

/// Turns a request into checked changes.
fn changes(req: UpdateSettingsRequest) -> Result<Changes, ApiError> {
    let logo = match req.logo {
        Some(Some(body)) => Some(Some(logo(body)?)),
        Some(None) => Some(None),
        None => None,
    };
    let changes = Changes {
        legal_name: req.legal_name,
        address: req.address.map(|a| a.map(Address::from)),
        tax_id: req.tax_id.map(|t| t.map(TaxId::from)),
        email: req.email,
        logo,
        invoice_footer: req.invoice_footer,
        payment_instructions: req.payment_instructions,
        invoice_prefix: req.invoice_prefix,
        credit_note_prefix: req.credit_note_prefix,
        invoice_number_format: req.invoice_number_format,
    };
    changes
        .check()
        .map_err(|e| ApiError::invalid_field(e.field, e.detail))?;
    Ok(changes)
}

fn render(view: &View) -> StoredResponse {
    json_response(StatusCode::OK, &response(view))
}

/// Changes the tenant's settings. Absent fields keep their value, `null` clears one; a change
/// that changes nothing writes nothing. Invoices already issued keep the settings they were
/// issued with.
#[utoipa::path(
    post,
    path = "/v1/tenant/settings",
    tag = "tenant",
    request_body = UpdateSettingsRequest,
    params(("Idempotency-Key" = String, Header, description = "1-255 characters; required")),
    responses(
        (status = 200, description = "Updated, unchanged, or replayed", body = SettingsResponse),
        (status = 400, description = "A field out of its range, named in errors[]", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "idempotency_key_in_use", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "idempotency_key_reused", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    key: IdempotencyKey,
    body: JsonBody<UpdateSettingsRequest>,
) -> Result<Response, ApiError> {
    let key = key.required()?;
    let changes = changes(body.value)?;
    idempotent::run(
        &state,
        idempotent::Request {
            tenant,
            key,
            method: "POST",
            path: "/v1/tenant/settings",
            canonical_body: &body.canonical,
        },
        UpdateSettings {
            tenant,
            changes,
            now_ms: crate::clock::now_ms(),
        },
        render,
    )
    .await
}

/// Retrieves the tenant's settings.
#[utoipa::path(
    get,
    path = "/v1/tenant/settings",
    tag = "tenant",
    responses((status = 200, body = SettingsResponse)),
    security(("api_key" = []))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
) -> Result<Response, ApiError> {
    let tx = state.store.read()?;
    let view = tenant_settings::view(&tx, tenant)?;
    Ok(Json(response(&view)).into_response())
}
