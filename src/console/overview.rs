//! The console's first page: the state of the daemon at a glance.

use axum::response::Response;
use maud::html;

use super::session::Operator;

/// The overview page.
pub async fn show(op: Operator) -> Response {
    let body = html! {
        p { "Signed in to tenant " strong { (op.tenant_name) } "." }
    };
    super::page::page(&op, "/console", "Overview", body)
}
