//! RFC 9457 problem details: the one shape of every error the server produces.
//!
//! `code` is the stable, machine-readable name clients switch on; `type` is the same code as a
//! URN; `detail` is for humans; `errors[]` names the offending fields of a validation failure.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::idempotency::StoredResponse;
use crate::store::writer::WriteError;
use crate::store::StoreError;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field-level problem.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as a dotted path into the request (`metadata.plan`, `events.3.timestamp`).
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URN naming the problem type: `urn:tally:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Short summary of the status.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What happened, for a human.
    pub detail: String,
    /// Stable snake_case code.
    pub code: String,
    /// Field-level problems; empty when the problem is not about fields.
    pub errors: Vec<FieldError>,
}

/// An error on its way to becoming a problem+json response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Human detail.
    pub detail: String,
    /// Field problems.
    pub errors: Vec<FieldError>,
    /// Seconds for a `Retry-After` header (back-pressure replies).
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    /// A problem with a status, a code and a detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// Adds a field problem.
    pub fn field(mut self, field: impl Into<String>, detail: impl Into<String>) -> Self {
        self.errors.push(FieldError {
            field: field.into(),
            detail: detail.into(),
        });
        self
    }

    /// A 400 `validation_failed` naming one field.
    pub fn invalid_field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let field = field.into();
        let detail = detail.into();
        Self::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            format!("{field}: {detail}"),
        )
        .field(field, detail)
    }

    /// 404 for an id that does not exist for this tenant (another tenant's id included).
    pub fn missing(kind: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "resource_missing",
            format!("no {kind} with id {id:?}"),
        )
    }

    /// 500 for a storage failure; the detail never carries internals.
    pub fn internal(error: &StoreError) -> Self {
        tracing::error!(%error, "request failed on storage");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server failed to read or write its database; the request may be retried",
        )
    }

    /// The document this error renders to.
    pub fn problem(&self) -> Problem {
        Problem {
            type_uri: format!("urn:tally:problem:{}", self.code),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_string(),
            errors: self.errors.clone(),
        }
    }

    /// The response to store for replay when this error happened after execution began.
    pub fn to_stored(&self) -> StoredResponse {
        StoredResponse {
            status: self.status.as_u16(),
            content_type: PROBLEM_JSON.to_string(),
            body: serde_json::to_vec(&self.problem()).unwrap_or_default(),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Overloaded => {
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "the write queue is full; retry after the indicated delay with the same idempotency key",
                );
                err.retry_after_secs = Some(1);
                err
            }
            WriteError::Unavailable => {
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the write could not be confirmed as committed; retry with the same idempotency key (a write that did commit is replayed, not repeated)",
                );
                err.retry_after_secs = Some(1);
                err
            }
            WriteError::Failed => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the request failed inside the server and wrote nothing; other requests are unaffected",
            ),
            WriteError::Stopped => {
                let mut err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "the server is shutting down; retry against the next instance",
                );
                err.retry_after_secs = Some(1);
                err
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            // The database is out of reach for the moment (reopening, or PostgreSQL lost or
            // restarting): retryable, not a defect.
            StoreError::Reopening | StoreError::Postgres(_) | StoreError::Conflict => {
                if let StoreError::Postgres(reason) = &e {
                    tracing::warn!(%reason, "a read found the database unavailable");
                }
                ApiError::from(WriteError::Unavailable)
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
