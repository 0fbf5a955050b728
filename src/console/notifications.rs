//! Outbound notifications: the events Tally sent, each with its deliveries to the event
//! destinations and a resend; and the destinations themselves (disabled ones marked).

use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::components::{self, Confirm};
use super::dispatch::{self, Reply};
use super::form::{self, Form, Outcome};
use super::page::{self, ConsoleError};
use super::session::Operator;
use crate::api::AppState;
use crate::notifications::catalogue::TYPES;

/// The list's own path.
const LIST_PATH: &str = "/console/notifications";
/// Notifications per page.
const PAGE_LIMIT: &str = "25";
/// Destinations listed (a tenant has at most 50).
const DESTINATION_LIMIT: &str = "50";

/// The notifications' routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/notifications", get(list))
        .route("/notifications/{id}", get(show))
        .route("/notifications/{id}/resend", post(resend))
}

/// The list's filters, as the API takes them, and its cursor.
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    /// Only this catalogue type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Only events about this customer (`cus_…`).
    pub customer: Option<String>,
    /// Created at or after (RFC 3339).
    pub from: Option<String>,
    /// Created before (RFC 3339).
    pub to: Option<String>,
    /// The page's cursor.
    pub starting_after: Option<String>,
}

impl Filters {
    /// The non-empty filters, without the cursor.
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("type", &self.event_type),
            ("customer", &self.customer),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter_map(|(name, value)| {
            let value = value.as_deref().unwrap_or("").trim();
            (!value.is_empty()).then_some((name, value))
        })
        .collect()
    }
}

#[derive(Debug, Deserialize)]
struct Notification {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created_at: String,
    sequence: u64,
    data: serde_json::Value,
}

impl Notification {
    /// The id of the object the event is about, when it has one.
    fn subject(&self) -> &str {
        self.data
            .pointer("/object/id")
            .and_then(|v| v.as_str())
            .unwrap_or("")
    }
}

#[derive(Debug, Deserialize)]
struct NotificationPage {
    data: Vec<Notification>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DeliveryList {
    data: Vec<Delivery>,
}

#[derive(Debug, Deserialize)]
struct Delivery {
    destination: String,
    status: String,
    attempts: Vec<DeliveryAttempt>,
}

impl Delivery {
    fn last_error(&self) -> String {
        match self.attempts.last() {
            Some(a) => match (&a.error, a.status_code) {
                (Some(e), _) => e.clone(),
                (None, Some(code)) if !(200..300).contains(&code) => format!("HTTP {code}"),
                _ => String::new(),
            },
            None => String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct DeliveryAttempt {
    at: String,
    status_code: Option<u16>,
    error: Option<String>,
    latency_ms: u64,
    response_excerpt: String,
}

#[derive(Debug, Deserialize)]
struct Destination {
    id: String,
    url: String,
    event_types: Vec<String>,
    description: Option<String>,
    status: String,
    failing_since: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DestinationPage {
    data: Vec<Destination>,
}

#[derive(Debug, Deserialize)]
struct ResendReply {
    queued: Vec<String>,
    live: Vec<String>,
}

/// The notifications, filtered, one page at a time; then the event destinations.
pub async fn list(op: Operator, Query(filters): Query<Filters>) -> Result<Response, ConsoleError> {
    let mut params = filters.pairs();
    params.push(("limit", PAGE_LIMIT));
    params.push((
        "starting_after",
        filters.starting_after.as_deref().unwrap_or(""),
    ));
    let page: NotificationPage =
        dispatch::get(&op, &dispatch::with_query("/v1/notifications", &params)).await?;
    let destinations: DestinationPage = dispatch::get(
        &op,
        &dispatch::with_query("/v1/event-destinations", &[("limit", DESTINATION_LIMIT)]),
    )
    .await?;
    let base = dispatch::with_query(LIST_PATH, &filters.pairs());
    let body = html! {
        (filter_form(&filters))
        section aria-labelledby="notifications-h" {
            h2 #notifications-h { "Events sent" }
            @if page.data.is_empty() {
                (components::empty("No notifications match."))
            } @else {
                (table(&page.data))
            }
            (components::pager(&base, page.next_cursor.as_deref(), filters.starting_after.is_some()))
        }
        section aria-labelledby="destinations-h" {
            h2 #destinations-h { "Event destinations" }
            (destination_table(&destinations.data))
        }
    };
    Ok(page::page(&op, LIST_PATH, "Notifications", body))
}

fn filter_form(filters: &Filters) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let chosen = filters.event_type.as_deref().unwrap_or("");
    html! {
        form.filters method="get" action=(LIST_PATH) {
            div {
                label for="type" { "Type" }
                select #type name="type" {
                    option value="" selected[chosen.is_empty()] { "any" }
                    @for t in TYPES {
                        option value=(t) selected[chosen == *t] { (t) }
                    }
                }
            }
            div {
                label for="customer" { "Customer (cus_…)" }
                input #customer type="text" name="customer" value=(value(&filters.customer));
            }
            div {
                label for="from" { "Created from (RFC 3339)" }
                input #from type="text" name="from" value=(value(&filters.from))
                    placeholder="2026-12-01T00:00:00Z";
            }
            div {
                label for="to" { "Created before (RFC 3339)" }
                input #to type="text" name="to" value=(value(&filters.to))
                    placeholder="2026-12-02T00:00:00Z";
            }
            button type="submit" { "Filter" }
        }
    }
}

fn table(rows: &[Notification]) -> Markup {
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th { "Notification" } th { "Type" } th { "About" } th.num { "Sequence" } th { "Created" }
                } }
                tbody {
                    @for n in rows {
                        tr {
                            td { a href=(format!("{LIST_PATH}/{}", dispatch::segment(&n.id))) { (n.id) } }
                            td { (n.event_type) }
                            td { code { (n.subject()) } }
                            td.num { (n.sequence) }
                            td { (components::time_text(&n.created_at)) }
                        }
                    }
                }
            }
        }
    }
}

fn destination_table(rows: &[Destination]) -> Markup {
    if rows.is_empty() {
        return components::empty(
            "No event destinations: notifications are recorded but sent nowhere.",
        );
    }
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th { "Destination" } th { "URL" } th { "Event types" } th { "Status" }
                    th { "Failing since" } th { "Description" }
                } }
                tbody {
                    @for d in rows {
                        tr class=[(d.status == "disabled").then_some("disabled")] {
                            td { code { (d.id) } }
                            td { code { (d.url) } }
                            td { (d.event_types.join(", ")) }
                            td { (destination_status(&d.status)) }
                            td { (d.failing_since.as_deref().map(components::time_text).unwrap_or_default()) }
                            td { (d.description.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

/// A destination's status; a disabled one is marked as bad.
fn destination_status(status: &str) -> Markup {
    let class = if status == "disabled" {
        "status bad"
    } else {
        "status good"
    };
    html! { span class=(class) { (status) } }
}

/// One notification: what it says, and its deliveries with every attempt; resend.
pub async fn show(op: Operator, Path(id): Path<String>) -> Result<Response, ConsoleError> {
    let path = format!("/v1/notifications/{}", dispatch::segment(&id));
    let n: Notification = dispatch::get(&op, &path).await?;
    let deliveries: DeliveryList = dispatch::get(&op, &format!("{path}/deliveries")).await?;
    let action = format!("{LIST_PATH}/{}/resend", dispatch::segment(&n.id));
    let body = html! {
        p { a href=(LIST_PATH) { "« All notifications" } }
        section aria-labelledby="notification-h" {
            h2 #notification-h { "Event" }
            (components::fields(&[
                ("Id (webhook-id)", html! { code { (n.id) } }),
                ("Type", html! { (n.event_type) }),
                ("About", html! { code { (n.subject()) } }),
                ("Sequence", html! { (n.sequence) }),
                ("Created", html! { (components::time_text(&n.created_at)) }),
            ]))
            @if !deliveries.data.is_empty() {
                div.actions {
                    (components::action_form(&op, &action, "Resend to every destination", &[], Confirm::No))
                }
            }
        }
        section aria-labelledby="deliveries-h" {
            h2 #deliveries-h { "Deliveries" }
            (delivery_table(&op, &deliveries.data, &action))
        }
        section aria-labelledby="payload-h" {
            h2 #payload-h { "Payload" }
            (components::json_block(&n.data))
        }
    };
    Ok(page::page(
        &op,
        LIST_PATH,
        &format!("Notification {}", n.id),
        body,
    ))
}

fn delivery_table(op: &Operator, rows: &[Delivery], action: &str) -> Markup {
    if rows.is_empty() {
        return components::empty("Not meant for any destination: nothing was delivered.");
    }
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th { "Destination" } th { "Status" } th.num { "Attempts" } th { "Last error" }
                    th { "Every attempt" } th { "Action" }
                } }
                tbody {
                    @for d in rows {
                        tr {
                            td { code { (d.destination) } }
                            td { (components::status(&d.status)) }
                            td.num { (d.attempts.len()) }
                            td { (d.last_error()) }
                            td { (attempts(&d.attempts)) }
                            td { (components::action_form(op, action, "Resend", &[("destination", &d.destination)], Confirm::No)) }
                        }
                    }
                }
            }
        }
    }
}

fn attempts(rows: &[DeliveryAttempt]) -> Markup {
    html! {
        details {
            summary { "Show" }
            ol.attempts {
                @for a in rows {
                    li {
                        (components::time_text(&a.at)) ": "
                        @match (a.status_code, &a.error) {
                            (_, Some(e)) => (e),
                            (Some(code), None) => { "HTTP " (code) },
                            (None, None) => "in flight",
                        }
                        " (" (a.latency_ms) " ms)"
                        @if !a.response_excerpt.is_empty() {
                            pre.json { code { (a.response_excerpt) } }
                        }
                    }
                }
            }
        }
    }
}

/// Queues a new delivery of a notification (to one destination, or every one it was for).
pub async fn resend(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    let destination = form.text("destination");
    let body = if destination.is_empty() {
        json!({})
    } else {
        json!({ "destination": destination })
    };
    let action = form::Action {
        api_path: format!("/v1/notifications/{}/resend", dispatch::segment(&id)),
        body: Some(body),
        return_to: format!("{LIST_PATH}/{}", dispatch::segment(&id)),
        done: "",
        confirm: None,
    };
    match form::run_reply(&op, &form, &action).await {
        Ok(Outcome::Asked(page)) => page,
        Ok(Outcome::Done(reply)) => {
            form::report(&op, &reply, &resend_text(&reply));
            Redirect::to(&action.return_to).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// What a resend did, in words.
fn resend_text(reply: &Reply) -> String {
    let Ok(done) = serde_json::from_slice::<ResendReply>(&reply.body) else {
        return "Resend queued.".to_string();
    };
    let mut parts = Vec::new();
    if !done.queued.is_empty() {
        parts.push(format!(
            "Resend queued to {} (same webhook-id).",
            done.queued.join(", ")
        ));
    }
    if !done.live.is_empty() {
        parts.push(format!(
            "Still being delivered, nothing added: {}.",
            done.live.join(", ")
        ));
    }
    parts.join(" ")
}
