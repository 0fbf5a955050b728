//! The customer list: one search box over external id, name and email, paginated with the
//! API's cursors.

use std::sync::Arc;

use axum::extract::Query;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Deserialize;

use super::components;
use super::dispatch;
use super::page::{page, ConsoleError};
use super::session::Operator;
use crate::api::AppState;

/// Customers per page.
const PAGE_LIMIT: &str = "25";

/// The customer pages' routes (relative to `/console`).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/customers", get(list))
}

/// `?search=&starting_after=` of the list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Text to look for in external id, name or email.
    #[serde(default)]
    pub search: String,
    /// The API's cursor.
    pub starting_after: Option<String>,
}

/// One customer as the list shows it.
#[derive(Debug, Deserialize)]
struct Row {
    id: String,
    external_id: String,
    name: Option<String>,
    email: Option<String>,
    currency: String,
    created_at: String,
}

#[derive(Debug, Deserialize)]
struct RowPage {
    data: Vec<Row>,
    next_cursor: Option<String>,
}

/// The customer list, filtered by the search box.
pub async fn list(op: Operator, Query(q): Query<ListQuery>) -> Result<Response, ConsoleError> {
    let search = q.search.trim().to_string();
    let cursor = q.starting_after.unwrap_or_default();
    let api_path = dispatch::with_query(
        "/v1/customers",
        &[
            ("search", &search),
            ("limit", PAGE_LIMIT),
            ("starting_after", &cursor),
        ],
    );
    let rows: RowPage = dispatch::get(&op, &api_path).await?;
    let base = dispatch::with_query("/console/customers", &[("search", &search)]);
    let body = html! {
        form.filters method="get" action="/console/customers" role="search" {
            div {
                label for="search" { "External id, name or email" }
                input #search type="search" name="search" value=(search) maxlength="255"
                    placeholder="acme, Jane, @example.com";
            }
            button type="submit" { "Search" }
        }
        @if rows.data.is_empty() {
            @if rows.next_cursor.is_some() {
                (components::empty("No match in this stretch of customers; the next page searches further."))
            } @else if search.is_empty() {
                (components::empty("No customers yet."))
            } @else {
                (components::empty("No customer matches."))
            }
        } @else {
            div.table-wrap {
                table {
                    thead { tr {
                        th scope="col" { "External id" } th scope="col" { "Name" }
                        th scope="col" { "Email" } th scope="col" { "Currency" }
                        th scope="col" { "Created" }
                    } }
                    tbody {
                        @for c in &rows.data {
                            tr {
                                td { a href=(format!("/console/customers/{}", dispatch::segment(&c.id))) { (c.external_id) } }
                                td { (c.name.as_deref().unwrap_or("")) }
                                td { (c.email.as_deref().unwrap_or("")) }
                                td { (c.currency) }
                                td { (components::time_text(&c.created_at)) }
                            }
                        }
                    }
                }
            }
        }
        (components::pager(&base, rows.next_cursor.as_deref(), !cursor.is_empty()))
    };
    Ok(page(&op, "/console/customers", "Customers", body))
}
