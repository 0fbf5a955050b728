//! An invoice's document inside the console: the HTML page framed by the invoice's page, and
//! the PDF as a download. Both come from `GET /v1/invoices/{id}/document`.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::dispatch::{self, segment};
use super::invoices::InvoiceView;
use super::page::ConsoleError;
use super::session::Operator;
use crate::api::AppState;

/// The policy of the framed document only: its own inline `<style>` and `data:` logo, no
/// script, nothing fetched, and framed by console pages alone.
pub const DOCUMENT_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; form-action 'none'; base-uri 'none'";

/// The routes of the invoice documents, relative to `/console`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/invoices/{id}/document", get(document))
        .route("/invoices/{id}/pdf", get(pdf))
}

/// The invoice's HTML document, to be shown in the sandboxed frame of its page.
pub async fn document(op: Operator, Path(id): Path<String>) -> Result<Response, ConsoleError> {
    let path = format!("/v1/invoices/{}/document", segment(&id));
    let reply = dispatch::call(&op, Method::GET, &path, None, None).await?;
    if !reply.status.is_success() {
        return Err(ConsoleError::from_reply(&reply));
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(DOCUMENT_POLICY),
            ),
            (
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("SAMEORIGIN"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-cache"),
            ),
        ],
        reply.body,
    )
        .into_response())
}

/// The invoice as a PDF download (`…/document?format=pdf`).
pub async fn pdf(op: Operator, Path(id): Path<String>) -> Result<Response, ConsoleError> {
    let seg = segment(&id);
    let inv: InvoiceView = dispatch::get(&op, &format!("/v1/invoices/{seg}")).await?;
    let path = format!("/v1/invoices/{seg}/document?format=pdf");
    let reply = dispatch::call(&op, Method::GET, &path, None, None).await?;
    if !reply.status.is_success() {
        return Err(ConsoleError::from_reply(&reply));
    }
    let disposition = format!("attachment; filename=\"{}\"", file_name(inv.label()));
    let disposition = HeaderValue::from_str(&disposition)
        .map_err(|_| ConsoleError::internal("the file name is not a header value"))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/pdf"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            ),
        ],
        reply.body,
    )
        .into_response())
}

/// `invoice-<number>.pdf`, with anything but letters, digits, `-` and `_` replaced.
fn file_name(label: &str) -> String {
    let stem: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("invoice-{stem}.pdf")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_header_safe() {
        assert_eq!(file_name("INV-2026-0042"), "invoice-INV-2026-0042.pdf");
        assert_eq!(file_name("A/1 \"x\"\r\n"), "invoice-A_1__x___.pdf");
    }

    #[test]
    fn the_document_may_style_itself_but_never_run_script() {
        assert!(DOCUMENT_POLICY.contains("style-src 'unsafe-inline'"));
        assert!(DOCUMENT_POLICY.contains("frame-ancestors 'self'"));
        assert!(!DOCUMENT_POLICY.contains("script"));
        assert!(!super::super::CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
    }
}
