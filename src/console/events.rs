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
        .route("/events/anomalies", get(anomalies))
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
    /// `true`: only events that arrived after their period was invoiced.
    #[serde(default)]
    late: String,
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
    absorbed_by: Option<String>,
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
        ("late", f.late.as_str()),
    ];
    let mut api = filters.to_vec();
    api.push(("limit", PAGE_SIZE));
    api.push(("starting_after", f.starting_after.as_str()));
    let events: EventPage = dispatch::get(&op, &with_query("/v1/events", &api)).await?;
    let base = with_query("/console/events", &filters);
    let body = html! {
        p { a href="/console/events/anomalies" { "Duplicates and conflicts »" } }
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
            div { label for="f-late" { "Arrival" }
                select #f-late name="late" {
                    option value="" selected[f.late.is_empty()] { "any" }
                    option value="true" selected[f.late == "true"] { "late only" }
                    option value="false" selected[f.late == "false"] { "on time only" }
                } }
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
    let matched: AnomalyPage = dispatch::get(
        &op,
        &with_query(
            "/v1/event-anomalies",
            &[("event", &e.id), ("limit", PAGE_SIZE)],
        ),
    )
    .await?;
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
        section {
            h2 { "Sent again" }
            @if matched.data.is_empty() {
                (components::empty("No duplicate or conflicting event has named this one."))
            } @else {
                (anomaly_table(&matched.data, false))
                @if matched.next_cursor.is_some() {
                    p { a href=(with_query("/console/events/anomalies", &[("event", &e.id)])) { "All of them »" } }
                }
            }
        }
    };
    Ok(page(
        &op,
        "/console/events",
        &format!("Event {}", e.id),
        body,
    ))
}

/// Whether the event came after its period was invoiced, and which invoice then billed it.
fn late(e: &Event) -> Markup {
    if !e.late {
        return html! { "no: it was on time for its period's invoice" };
    }
    let invoice = e.absorbed_by.as_deref();
    html! {
        (components::status("late"))
        " its period was already invoiced when it arrived; "
        @match invoice {
            Some(id) => { "billed on " a href=(format!("/console/invoices/{}", segment(id))) { (id) } }
            None => { "not billed yet (the next invoice of its subscription takes it)" }
        }
    }
}

#[derive(Debug, Deserialize)]
struct ReceivedIdentity {
    source: String,
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Anomaly {
    kind: String,
    original_id: String,
    original: Option<Event>,
    identity: ReceivedIdentity,
    customer: String,
    #[serde(rename = "type")]
    event_type: String,
    timestamp: String,
    received_at: String,
    properties: Option<serde_json::Value>,
    idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AnomalyPage {
    data: Vec<Anomaly>,
    next_cursor: Option<String>,
}

/// `?kind=&customer=&event=` of the anomalies page.
#[derive(Debug, Default, Deserialize)]
pub struct AnomalyFilters {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    customer: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    starting_after: String,
}

/// Duplicates and conflicts, newest first, each beside the original it matched.
async fn anomalies(
    op: Operator,
    Query(f): Query<AnomalyFilters>,
) -> Result<Response, ConsoleError> {
    let filters = [
        ("kind", f.kind.as_str()),
        ("customer", f.customer.as_str()),
        ("event", f.event.as_str()),
    ];
    let mut api = filters.to_vec();
    api.push(("limit", PAGE_SIZE));
    api.push(("starting_after", f.starting_after.as_str()));
    let found: AnomalyPage = dispatch::get(&op, &with_query("/v1/event-anomalies", &api)).await?;
    let base = with_query("/console/events/anomalies", &filters);
    let body = html! {
        p.hint { "An event sent again with the same identity: a duplicate (same payload, nothing new \
            counted) or a conflict (a different payload under an identity already used: the original \
            stands and the new one was not counted). Kept for the idempotency retention." }
        form.filters method="get" action="/console/events/anomalies" {
            div { label for="a-kind" { "Kind" }
                select #a-kind name="kind" {
                    option value="" selected[f.kind.is_empty()] { "any" }
                    option value="duplicate" selected[f.kind == "duplicate"] { "duplicates" }
                    option value="conflict" selected[f.kind == "conflict"] { "conflicts" }
                } }
            div { label for="a-customer" { "Customer" }
                input #a-customer name="customer" value=(f.customer) placeholder="cus_… or external id"; }
            div { label for="a-event" { "Original event" }
                input #a-event name="event" value=(f.event) placeholder="evt_…"; }
            button type="submit" { "Filter" }
        }
        @if found.data.is_empty() {
            (components::empty("No duplicates or conflicts match."))
        } @else {
            (anomaly_table(&found.data, true))
        }
        (pager(&base, found.next_cursor.as_deref(), !f.starting_after.is_empty()))
    };
    Ok(page(
        &op,
        "/console/events",
        "Duplicates and conflicts",
        body,
    ))
}

/// The anomalies as a table; with `with_original`, each row shows the original beside it.
fn anomaly_table(rows: &[Anomaly], with_original: bool) -> Markup {
    html! {
        div.table-wrap { table {
            thead { tr {
                th { "Kind" } th { "Received" } th { "Identity" } th { "Customer" } th { "Type" }
                th { "Usage time" } th { "Idempotency key" }
                @if with_original { th { "Original" } }
                th { "Payload sent" }
            } }
            tbody { @for a in rows { tr {
                td { (components::status(&a.kind)) }
                td { (time_text(&a.received_at)) }
                td { (a.identity.source) " / " (a.identity.id.as_deref().unwrap_or("(payload hash)")) }
                td { (a.customer) }
                td { (a.event_type) }
                td { (time_text(&a.timestamp)) }
                td { @if let Some(k) = &a.idempotency_key { code { (k) } } }
                @if with_original { td {
                    a href=(format!("/console/events/{}", segment(&a.original_id))) { code { (a.original_id) } }
                    @if let Some(o) = &a.original {
                        br; (o.event_type) ", " (time_text(&o.timestamp))
                        @if a.kind == "conflict" { (json_block(&o.properties)) }
                    }
                } }
                td { @match &a.properties {
                    Some(p) => { (json_block(p)) }
                    None => { "same as the original" }
                } }
            } } }
        } }
    }
}
