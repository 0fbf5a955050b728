//! Request extractors that turn every way a request can be malformed into a problem+json error
//! naming the cause, before anything executes.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::problem::ApiError;
use super::AppState;
use crate::store::TenantId;

/// The tenant the request's API key belongs to.
pub struct Tenant(pub TenantId);

/// The principal of a request the console makes in-process for a signed-in operator. It travels
/// as a request extension, which nothing outside the process can set, instead of a key: the
/// console keeps no secret after sign-in.
#[derive(Debug, Clone, Copy)]
pub struct InternalPrincipal(pub crate::tenants::KeyPrincipal);

/// Whether a request may change state. Everything but GET and HEAD does, except previews, which
/// are POSTs that compute without writing.
pub fn is_write(method: &axum::http::Method, path: &str) -> bool {
    let reads = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    !reads && !path.ends_with("/preview")
}

impl FromRequestParts<std::sync::Arc<AppState>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &std::sync::Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let principal = match parts.extensions.get::<InternalPrincipal>() {
            Some(internal) => internal.0,
            None => principal_from_header(parts, state)?,
        };
        if principal.read_only && is_write(&parts.method, parts.uri.path()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "read_only_key",
                "this API key is read-only; use a read-write key to change anything",
            ));
        }
        Ok(Tenant(principal.tenant))
    }
}

/// Authenticates the `Authorization: Bearer` header.
fn principal_from_header(
    parts: &Parts,
    state: &std::sync::Arc<AppState>,
) -> Result<crate::tenants::KeyPrincipal, ApiError> {
    {
        let unauthorized = |detail: &str| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail.to_string())
        };
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        let value = values
            .next()
            .ok_or_else(|| unauthorized("send `Authorization: Bearer <api key>`"))?;
        if values.next().is_some() {
            return Err(unauthorized("send exactly one Authorization header"));
        }
        let text = value
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
        let secret = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <api key>`"))?;
        if secret.len() > 256 {
            return Err(unauthorized("the API key is not valid"));
        }
        let tx = state.store.read()?;
        match crate::tenants::authenticate(&tx, secret)? {
            Some(principal) => Ok(principal),
            None => Err(unauthorized("the API key is not valid or was revoked")),
        }
    }
}

/// The `Idempotency-Key` header, parsed; `None` when absent.
pub struct IdempotencyKey(pub Option<String>);

impl IdempotencyKey {
    /// The key, or 400 `idempotency_key_missing` on endpoints that require one.
    pub fn required(self) -> Result<String, ApiError> {
        self.0.ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_missing",
                "this endpoint requires an Idempotency-Key header (1-255 characters)",
            )
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_idempotency_key(&parts.headers).map(IdempotencyKey)
    }
}

fn parse_idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let invalid = |detail: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "idempotency_key_invalid",
            detail.to_string(),
        )
        .field("Idempotency-Key", detail.to_string())
    };
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(invalid("send exactly one Idempotency-Key header"));
    }
    crate::idempotency::parse_key(value.as_bytes())
        .map(Some)
        .ok_or_else(|| {
            invalid("must be 1-255 visible ASCII characters, bare or as a quoted string")
        })
}

/// A JSON body: the typed value plus its canonical text (for fingerprints).
pub struct JsonBody<T> {
    /// The request, typed.
    pub value: T,
    /// Canonical JSON of the body.
    pub canonical: String,
}

impl<T: DeserializeOwned> FromRequest<std::sync::Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(
        req: Request,
        state: &std::sync::Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let limit = usize::try_from(state.config.http.body_limit_bytes).unwrap_or(usize::MAX);
        let raw = read_json_bytes(req, limit).await?;
        let value: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        let canonical = crate::identity::canonical_json(&value);
        let typed = deserialize_value(value)?;
        Ok(JsonBody {
            value: typed,
            canonical,
        })
    }
}

/// Reads a body that must be JSON, enforcing the media type and the size limit.
pub async fn read_json_bytes(req: Request, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    check_json_content_type(&parts.headers)?;
    read_limited(body, limit).await
}

/// Whether the request says its body is JSON (`application/json` or any `+json` type).
pub fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match media.as_deref() {
        Some("application/json") => Ok(()),
        Some(m) if m.starts_with("application/") && m.ends_with("+json") => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        )),
    }
}

/// Reads at most `limit` bytes; more is a 413 before any parsing.
pub async fn read_limited(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds the limit of {limit} bytes"),
        )
    })
}

/// Deserializes a parsed value into a request type, naming the offending field on failure.
pub fn deserialize_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let field = field_path(&path, &message);
        ApiError::invalid_field(field, message)
    })
}

/// The dotted path of the offending field. serde reports a missing field at its parent's path
/// (with the name only in the message); an unknown field's path already ends with its name.
fn field_path(path: &str, message: &str) -> String {
    let at_root = path.is_empty() || path == ".";
    match field_from_message(message) {
        Some(name) if message.starts_with("missing field") => {
            if at_root {
                name
            } else {
                format!("{path}.{name}")
            }
        }
        Some(name) if at_root => name,
        _ if at_root => String::from("."),
        _ => path.to_string(),
    }
}

/// serde names missing and unknown fields in backticks.
fn field_from_message(message: &str) -> Option<String> {
    for marker in ["missing field `", "unknown field `"] {
        if let Some(rest) = message.strip_prefix(marker) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    None
}

/// Query-string parameters, with failures as 400 `validation_failed`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.inner().to_string();
                let field = field_path(&path, &message);
                ApiError::invalid_field(field, message)
            })
    }
}

/// A body that may be empty (bodiless action endpoints such as `…/void`) or a JSON object.
pub struct OptionalJsonBody<T> {
    /// The typed body (`T::default()` when empty).
    pub value: T,
    /// Canonical JSON, or the empty string for an empty body.
    pub canonical: String,
}

impl<T: DeserializeOwned + Default> FromRequest<std::sync::Arc<AppState>> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(
        req: Request,
        state: &std::sync::Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let limit = usize::try_from(state.config.http.body_limit_bytes).unwrap_or(usize::MAX);
        let (parts, body) = req.into_parts();
        let raw = read_limited(body, limit).await?;
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody {
                value: T::default(),
                canonical: String::new(),
            });
        }
        check_json_content_type(&parts.headers)?;
        let value: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        let canonical = crate::identity::canonical_json(&value);
        Ok(OptionalJsonBody {
            value: deserialize_value(value)?,
            canonical,
        })
    }
}
