//! Inbound webhook receipts: what the payment providers sent, how processing went, and replay.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::components::{self, Confirm};
use super::dispatch;
use super::form::{self, Form};
use super::page::{self, ConsoleError};
use super::session::Operator;
use crate::api::AppState;
use crate::webhooks::event::DISPLAY_STATUSES;

/// The list's own path.
const LIST_PATH: &str = "/console/webhook-events";
/// Receipts per page.
const PAGE_LIMIT: &str = "25";

/// The webhook receipts' routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/webhook-events", get(list))
        .route("/webhook-events/{id}", get(show))
        .route("/webhook-events/{id}/replay", post(replay))
}

/// The list's filter and cursor.
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    /// Only receipts in this processing status.
    pub status: Option<String>,
    /// The page's cursor.
    pub starting_after: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Receipt {
    id: String,
    endpoint: String,
    provider: String,
    provider_event_id: String,
    #[serde(rename = "type")]
    event_type: String,
    status: String,
    payload: Option<serde_json::Value>,
    payload_text: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    job: String,
    attempts: Vec<Attempt>,
    replays: u32,
    received_at: String,
    processed_at: Option<String>,
}

impl Receipt {
    /// The last attempt's error (none once an attempt succeeded).
    fn last_error(&self) -> &str {
        self.attempts
            .last()
            .and_then(|a| a.error.as_deref())
            .unwrap_or("")
    }
}

#[derive(Debug, Deserialize)]
struct Attempt {
    at: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReceiptPage {
    data: Vec<Receipt>,
    next_cursor: Option<String>,
}

/// The receipts, oldest first, one page at a time.
pub async fn list(op: Operator, Query(filters): Query<Filters>) -> Result<Response, ConsoleError> {
    let status = filters.status.as_deref().unwrap_or("").trim();
    let after = filters.starting_after.as_deref().unwrap_or("");
    let path = dispatch::with_query(
        "/v1/webhook-events",
        &[
            ("status", status),
            ("limit", PAGE_LIMIT),
            ("starting_after", after),
        ],
    );
    let page: ReceiptPage = dispatch::get(&op, &path).await?;
    let base = dispatch::with_query(LIST_PATH, &[("status", status)]);
    let body = html! {
        form.filters method="get" action=(LIST_PATH) {
            div {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" selected[status.is_empty()] { "any" }
                    @for s in DISPLAY_STATUSES {
                        option value=(s) selected[status == s] { (s) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        section aria-labelledby="receipts-h" {
            h2 #receipts-h { "Receipts" }
            @if page.data.is_empty() {
                (components::empty("No webhook receipts match."))
            } @else {
                (table(&page.data))
            }
            (components::pager(&base, page.next_cursor.as_deref(), !after.is_empty()))
        }
    };
    Ok(page::page(&op, LIST_PATH, "Webhook receipts", body))
}

fn table(rows: &[Receipt]) -> Markup {
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th { "Receipt" } th { "Type" } th { "Provider" } th { "Status" }
                    th { "Received" } th { "Processed" } th.num { "Attempts" } th { "Last error" }
                } }
                tbody {
                    @for r in rows {
                        tr {
                            td { a href=(format!("{LIST_PATH}/{}", dispatch::segment(&r.id))) { (r.id) } }
                            td { (r.event_type) }
                            td { (r.provider) }
                            td { (receipt_status(&r.status)) }
                            td { (components::time_text(&r.received_at)) }
                            td { (r.processed_at.as_deref().map(components::time_text).unwrap_or_default()) }
                            td.num { (r.attempts.len()) }
                            td { (r.last_error()) }
                        }
                    }
                }
            }
        }
    }
}

/// One receipt: its payload, headers, processing attempts and the replay button.
pub async fn show(op: Operator, Path(id): Path<String>) -> Result<Response, ConsoleError> {
    let path = format!("/v1/webhook-events/{}", dispatch::segment(&id));
    let r: Receipt = dispatch::get(&op, &path).await?;
    let action = format!("{LIST_PATH}/{}/replay", dispatch::segment(&r.id));
    let body = html! {
        p { a href=(LIST_PATH) { "« All receipts" } }
        section aria-labelledby="receipt-h" {
            h2 #receipt-h { "Receipt" }
            (components::fields(&[
                ("Id", html! { code { (r.id) } }),
                ("Type", html! { (r.event_type) }),
                ("Status", receipt_status(&r.status)),
                ("Provider", html! { (r.provider) }),
                ("Provider's event id", html! { code { (r.provider_event_id) } }),
                ("Endpoint", html! { code { (r.endpoint) } }),
                ("Processing job", html! { code { (r.job) } }),
                ("Received", html! { (components::time_text(&r.received_at)) }),
                ("Processed", html! { (r.processed_at.as_deref().map(components::time_text).unwrap_or_default()) }),
                ("Replays", html! { (r.replays) }),
                ("Last error", html! { (r.last_error()) }),
            ]))
            div.actions {
                (components::action_form(&op, &action, "Replay", &[], Confirm::No))
            }
            p.hint { "Replaying runs processing again from the stored receipt; processing is idempotent, so a receipt already processed has no second effect." }
        }
        section aria-labelledby="payload-h" {
            h2 #payload-h { "Payload" }
            @match (&r.payload, &r.payload_text) {
                (Some(value), _) => (components::json_block(value)),
                (None, Some(text)) => pre.json { code { (text) } },
                (None, None) => (components::empty("No payload.")),
            }
        }
        section aria-labelledby="headers-h" {
            h2 #headers-h { "Headers" }
            @let rows: Vec<(&str, Markup)> = r.headers.iter().map(|(k, v)| (k.as_str(), html! { code { (v) } })).collect();
            @if rows.is_empty() { (components::empty("No headers kept.")) } @else { (components::fields(&rows)) }
        }
        section aria-labelledby="attempts-h" {
            h2 #attempts-h { "Processing attempts" }
            (attempts(&r.attempts))
        }
    };
    Ok(page::page(
        &op,
        LIST_PATH,
        &format!("Webhook receipt {}", r.id),
        body,
    ))
}

/// A receipt's processing status, coloured by outcome.
fn receipt_status(status: &str) -> Markup {
    let class = match status {
        "processed" => "status good",
        "dead" | "invalid_payload" => "status bad",
        _ => "status neutral",
    };
    html! { span class=(class) { (status) } }
}

fn attempts(rows: &[Attempt]) -> Markup {
    if rows.is_empty() {
        return components::empty("No attempt yet.");
    }
    html! {
        div.table-wrap {
            table {
                thead { tr { th { "At" } th { "Outcome" } } }
                tbody {
                    @for a in rows {
                        tr {
                            td { (components::time_text(&a.at)) }
                            td { (a.error.as_deref().unwrap_or("succeeded")) }
                        }
                    }
                }
            }
        }
    }
}

/// Queues a receipt's processing again.
pub async fn replay(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    let action = form::Action {
        api_path: format!("/v1/webhook-events/{}/replay", dispatch::segment(&id)),
        body: Some(json!({})),
        return_to: format!("{LIST_PATH}/{}", dispatch::segment(&id)),
        done: "Receipt queued for processing again.",
        confirm: None,
    };
    form::run(&op, &form, action).await
}
