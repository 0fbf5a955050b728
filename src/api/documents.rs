//! `GET /v1/invoices/{id}/document` and `GET /v1/credit-notes/{id}/document`: an invoice or a
//! credit note as a printable HTML page or a PDF.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Query, Tenant};
use super::problem::{ApiError, Problem};
use super::AppState;
use crate::billing::invoice::{self, PREFIX};
use crate::documents::{html, pdf, source};
use crate::id::Id;

/// Query of `GET /v1/invoices/{id}/document`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DocumentParams {
    /// `html` (default) or `pdf`.
    pub format: Option<String>,
}

/// A PDF file, for the OpenAPI document.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct PdfFile(pub Vec<u8>);

/// The two renderings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Html,
    Pdf,
}

fn parse_format(format: Option<&str>) -> Result<Format, ApiError> {
    match format {
        None | Some("html") => Ok(Format::Html),
        Some("pdf") => Ok(Format::Pdf),
        Some(other) => Err(ApiError::invalid_field(
            "format",
            format!("{other:?} is not a document format; use html or pdf"),
        )),
    }
}

/// Renders an invoice as a document.
#[utoipa::path(
    get, path = "/v1/invoices/{id}/document", tag = "billing",
    params(("id" = String, Path), DocumentParams),
    responses(
        (status = 200, description = "The invoice as a self-contained HTML page (`format=html`) or a PDF (`format=pdf`)",
            content((String = "text/html; charset=utf-8"), (PdfFile = "application/pdf"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")
    ),
    security(("api_key" = []))
)]
pub async fn document(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(params): Query<DocumentParams>,
) -> Result<Response, ApiError> {
    let format = parse_format(params.format.as_deref())?;
    let parsed = Id::parse(&id, PREFIX).ok_or_else(|| ApiError::missing("invoice", &id))?;
    let tx = state.store.read()?;
    let inv =
        invoice::get(&tx, tenant, parsed)?.ok_or_else(|| ApiError::missing("invoice", &id))?;
    let doc = source::invoice_document(&tx, tenant, &inv)?;
    drop(tx);
    respond(doc, inv.id.display(PREFIX), format).await
}

/// Renders a credit note as a document.
#[utoipa::path(
    get, path = "/v1/credit-notes/{id}/document", tag = "billing",
    params(("id" = String, Path), DocumentParams),
    responses(
        (status = 200, description = "The credit note as a self-contained HTML page (`format=html`) or a PDF (`format=pdf`)",
            content((String = "text/html; charset=utf-8"), (PdfFile = "application/pdf"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")
    ),
    security(("api_key" = []))
)]
pub async fn credit_note_document(
    State(state): State<Arc<AppState>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(params): Query<DocumentParams>,
) -> Result<Response, ApiError> {
    let format = parse_format(params.format.as_deref())?;
    let prefix = crate::credit_notes::PREFIX;
    let parsed = Id::parse(&id, prefix).ok_or_else(|| ApiError::missing("credit note", &id))?;
    let tx = state.store.read()?;
    let note = crate::credit_notes::get(&tx, tenant, parsed)?
        .ok_or_else(|| ApiError::missing("credit note", &id))?;
    let inv = invoice::get(&tx, tenant, note.invoice)?
        .ok_or_else(|| ApiError::missing("invoice", &note.invoice.display(PREFIX)))?;
    let doc = source::credit_note_document(&tx, tenant, &note, &inv)?;
    drop(tx);
    respond(doc, note.id.display(prefix), format).await
}

/// The rendered document with its headers.
async fn respond(
    doc: crate::documents::model::Document,
    fallback: String,
    format: Format,
) -> Result<Response, ApiError> {
    let (body, content_type, file_name) = match format {
        Format::Html => (
            html::render(&doc).into_bytes(),
            "text/html; charset=utf-8",
            doc.file_name(&fallback, "html"),
        ),
        Format::Pdf => {
            // Layout and font subsetting are CPU work: keep them off the async workers.
            let rendered = tokio::task::spawn_blocking(move || pdf::render(&doc).map(|b| (b, doc)))
                .await
                .map_err(|_| render_failed("the PDF renderer stopped"))?
                .map_err(|e| render_failed(&e.to_string()))?;
            let (bytes, doc) = rendered;
            (bytes, "application/pdf", doc.file_name(&fallback, "pdf"))
        }
    };
    let disposition = HeaderValue::from_str(&format!("inline; filename=\"{file_name}\""))
        .map_err(|_| render_failed("the file name is not a header value"))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("private")),
        ],
        body,
    )
        .into_response())
}

fn render_failed(detail: &str) -> ApiError {
    tracing::error!(detail, "document rendering failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the document could not be rendered",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(parse_format(None).ok(), Some(Format::Html));
        assert_eq!(parse_format(Some("html")).ok(), Some(Format::Html));
        assert_eq!(parse_format(Some("pdf")).ok(), Some(Format::Pdf));
        let bad = parse_format(Some("PDF")).err().map(|e| e.problem());
        assert_eq!(
            bad.map(|p| p.errors[0].field.clone()),
            Some("format".to_string())
        );
    }

    #[test]
    fn the_openapi_document_lists_both_renderings() {
        let doc = super::super::openapi::document();
        let get = &doc["paths"]["/v1/invoices/{id}/document"]["get"];
        assert_eq!(get["operationId"], "getInvoiceDocument");
        let content = &get["responses"]["200"]["content"];
        assert!(content.get("application/pdf").is_some(), "{content}");
        assert!(
            content.get("text/html; charset=utf-8").is_some(),
            "{content}"
        );
        assert!(get["responses"]["400"].is_object());
        assert!(get["responses"]["404"].is_object());
    }
}
