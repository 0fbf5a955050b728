//! The events explorer: stored usage events by customer, type and time; one event with its
//! identity and properties; late events with the invoice that absorbed them; duplicates and
//! conflicts with the original they matched.

use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

use super::components::{self, fields, json_block, pager, time_text};
use super::dispatch::{self, segment, with_query};
use super::page::{page, ConsoleError};
use super::session::Operator;
use crate::api::AppState;

/// The explorer's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/events", get(list))
        .route("/events/{id}", get(show))
}

/// The explorer's filters, as the API takes them.
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    /// `cus_…` or an external id.
    #[serde(default)]
    customer: String,
    /// Event type.
    #[serde(default, rename = "type")]
    event_type: String,
    /// Usage time at or after (RFC 3339).
    #[serde(default)]
    from: String,
    /// Usage time before (RFC 3339).
    #[serde(default)]
    to: String,
    /// The previous page's cursor.
    #[serde(default)]
    starting_after: String,
}

#[derive(Debug, Deserialize)]
struct Identity {
    kind: String,
    source: String,
    id: Option<String>,
    window_secs: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    identity: Identity,
    customer: String,
    customer_id: String,
    #[serde(rename = "type")]
    event_type: String,
    timestamp: String,
    received_at: String,
    properties: serde_json::Value,
    late: bool,
    #[serde(default)]
    absorbed_by: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct EventPage {
    data: Vec<Event>,
    next_cursor: Option<String>,
}

/// Rows per page.
const PAGE_SIZE: &str = "50";

async fn list(op: Operator, Query(f): Query<Filters>) -> Result<Response, ConsoleError> {
    let filters = [
        ("customer", f.customer.as_str()),
        ("type", f.event_type.as_str()),
        ("from", f.from.as_str()),
        ("to", f.to.as_str()),
    ];
    let mut api = filters.to_vec();
    api.push(("limit", PAGE_SIZE));
    api.push(("starting_after", f.starting_after.as_str()));
    let events: EventPage = dispatch::get(&op, &with_query("/v1/events", &api)).await?;
    let base = with_query("/console/events", &filters);
    let body = html! {
        (filter_form(&f))
        @if events.data.is_empty() {
            (components::empty("No events match."))
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th { "Event" } th { "Customer" } th { "Type" } th { "Usage time" }
                    th { "Received" } th { "Late" }
                } }
                tbody { @for e in &events.data { (row(e)) } }
            } }
        }
        (pager(&base, events.next_cursor.as_deref(), !f.starting_after.is_empty()))
    };
    Ok(page(&op, "/console/events", "Events", body))
}

fn filter_form(f: &Filters) -> Markup {
    html! {
        form.filters method="get" action="/console/events" {
            div { label for="f-customer" { "Customer" }
                input #f-customer name="customer" value=(f.customer) placeholder="cus_… or external id"; }
            div { label for="f-type" { "Type" }
                input #f-type name="type" value=(f.event_type); }
            div { label for="f-from" { "From (RFC 3339)" }
                input #f-from name="from" value=(f.from) placeholder="2026-11-01T00:00:00Z"; }
            div { label for="f-to" { "To" }
                input #f-to name="to" value=(f.to); }
            button type="submit" { "Filter" }
        }
    }
}

fn row(e: &Event) -> Markup {
    html! {
        tr {
            td { a href=(format!("/console/events/{}", segment(&e.id))) { code { (e.id) } } }
            td { a href=(format!("/console/customers/{}", segment(&e.customer_id))) { (e.customer) } }
            td { (e.event_type) }
            td { (time_text(&e.timestamp)) }
            td { (time_text(&e.received_at)) }
            td { @if e.late { (components::status("late")) } }
        }
    }
}

async fn show(op: Operator, Path(id): Path<String>) -> Result<Response, ConsoleError> {
    let e: Event = dispatch::get(&op, &format!("/v1/events/{}", segment(&id))).await?;
    let identity = match (&e.identity.id, e.identity.window_secs) {
        (Some(client_id), _) => format!("stable: source {} id {}", e.identity.source, client_id),
        (None, Some(w)) => format!(
            "derived from the payload within {w} s (source {})",
            e.identity.source
        ),
        _ => e.identity.kind.clone(),
    };
    let body = html! {
        section {
            (fields(&[
                ("Id", html! { code { (e.id) } }),
                ("Customer", html! { a href=(format!("/console/customers/{}", segment(&e.customer_id))) { (e.customer) } }),
                ("Type", html! { (e.event_type) }),
                ("Identity", html! { (identity) }),
                ("Usage time", html! { (time_text(&e.timestamp)) }),
                ("Received", html! { (time_text(&e.received_at)) }),
                ("Late", late(&e)),
            ]))
        }
        section {
            h2 { "Properties" }
            (json_block(&e.properties))
        }
    };
    Ok(page(&op, "/console/events", &format!("Event {}", e.id), body))
}

/// Whether the event came after its period was invoiced, and which invoice then billed it.
fn late(e: &Event) -> Markup {
    if !e.late {
        return html! { "no: it was on time for its period's invoice" };
    }
    let invoice = e
        .absorbed_by
        .as_ref()
        .and_then(|a| a.get("id").or(Some(a)))
        .and_then(|v| v.as_str());
    html! {
        (components::status("late"))
        " its period was already invoiced when it arrived; "
        @match invoice {
            Some(id) => { "billed on " a href=(format!("/console/invoices/{}", segment(id))) { (id) } }
            None => { "not billed yet (the next invoice of its subscription takes it)" }
        }
    }
}
