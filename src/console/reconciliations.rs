//! Reconciliations with the payment provider: start one for a range and read its report, one
//! table per category.

use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::components::{self, form_tokens, time_text};
use super::dispatch::{self, segment, with_query};
use super::form::{self, Action, Form, Outcome};
use super::invoices::PageView;
use super::page::{page, ConsoleError};
use super::session::Operator;
use crate::api::AppState;

/// The range a new reconciliation covers unless the operator says otherwise.
const DEFAULT_RANGE_MS: i64 = 30 * 86_400_000;

/// The routes of the reconciliation pages, relative to `/console`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/reconciliations", get(index).post(start))
        .route("/reconciliations/{id}", get(show))
}

/// One line of a report.
#[derive(Debug, Deserialize)]
struct ItemView {
    payment: Option<String>,
    provider_id: Option<String>,
    tally_amount_minor: Option<i64>,
    provider_amount_minor: Option<i64>,
    tally_status: Option<String>,
    provider_status: Option<String>,
    resolved: bool,
    note: String,
}

#[derive(Debug, Deserialize)]
struct ReportView {
    matched: Vec<ItemView>,
    missing_internally: Vec<ItemView>,
    missing_at_provider: Vec<ItemView>,
    amount_mismatch: Vec<ItemView>,
    status_mismatch: Vec<ItemView>,
}

#[derive(Debug, Deserialize)]
struct ReconciliationView {
    id: String,
    status: String,
    from: String,
    to: String,
    report: Option<ReportView>,
    failure: Option<String>,
    created_at: String,
    completed_at: Option<String>,
}

/// `?id=` of the look-up form, `?starting_after=` of the list.
#[derive(Debug, Default, Deserialize)]
pub struct LookUp {
    id: Option<String>,
    starting_after: Option<String>,
}

/// `/console/reconciliations`: the form that starts one, and a look-up by id.
pub async fn index(op: Operator, Query(q): Query<LookUp>) -> Result<Response, ConsoleError> {
    if let Some(id) = q.id.map(|i| i.trim().to_string()).filter(|i| !i.is_empty()) {
        return Ok(
            Redirect::to(&format!("/console/reconciliations/{}", segment(&id))).into_response(),
        );
    }
    let cursor = q.starting_after.unwrap_or_default();
    let listed: PageView<ReconciliationView> = dispatch::get(
        &op,
        &with_query(
            "/v1/reconciliations",
            &[("limit", "25"), ("starting_after", &cursor)],
        ),
    )
    .await?;
    let now = crate::clock::now_ms();
    let from = crate::clock::rfc3339(now.saturating_sub(DEFAULT_RANGE_MS));
    let body = html! {
        p { "A reconciliation pages through the provider's records of this tenant in a range and compares them with Tally's payments. Successes Tally missed are resolved automatically; the rest are listed for you." }
        @if !op.read_only() {
            section aria-labelledby="start-h" {
                h2 #start-h { "Start a reconciliation" }
                form method="post" action="/console/reconciliations" {
                    (form_tokens(&op))
                    label for="from" { "From (RFC 3339)" }
                    input #from type="text" name="from" value=(from) required;
                    label for="to" { "To, exclusive (RFC 3339; blank: now)" }
                    input #to type="text" name="to";
                    div { button type="submit" { "Start reconciliation" } }
                }
            }
        }
        section aria-labelledby="list-h" {
            h2 #list-h { "Reconciliations" }
            (list_table(&listed.data))
            (components::pager("/console/reconciliations", listed.next_cursor.as_deref(), !cursor.is_empty()))
        }
        section aria-labelledby="find-h" {
            h2 #find-h { "Open a report" }
            form.filters method="get" action="/console/reconciliations" {
                div {
                    label for="rec_id" { "Reconciliation id (rec_…)" }
                    input #rec_id type="text" name="id";
                }
                button type="submit" { "Open" }
            }
        }
    };
    Ok(page(&op, "/console/payments", "Reconciliations", body))
}

fn list_table(list: &[ReconciliationView]) -> Markup {
    if list.is_empty() {
        return components::empty("No reconciliation yet.");
    }
    let count = |r: &ReconciliationView, of: fn(&ReportView) -> usize| {
        r.report
            .as_ref()
            .map(of)
            .map(|n| n.to_string())
            .unwrap_or_default()
    };
    html! {
        div.table-wrap { table {
            thead { tr {
                th { "Reconciliation" } th { "Status" } th { "Range" } th.num { "Matched" }
                th.num { "Missing internally" } th.num { "Missing at provider" }
                th.num { "Amount mismatch" } th.num { "Status mismatch" }
            } }
            tbody {
                @for r in list {
                    tr {
                        td { a href=(format!("/console/reconciliations/{}", segment(&r.id))) { (r.id) } }
                        td { (components::status(&r.status)) }
                        td { (time_text(&r.from)) " – " (time_text(&r.to)) }
                        td.num { (count(r, |x| x.matched.len())) }
                        td.num { (count(r, |x| x.missing_internally.len())) }
                        td.num { (count(r, |x| x.missing_at_provider.len())) }
                        td.num { (count(r, |x| x.amount_mismatch.len())) }
                        td.num { (count(r, |x| x.status_mismatch.len())) }
                    }
                }
            }
        } }
    }
}

/// Starts a reconciliation (`POST /v1/reconciliations`) and opens its report.
pub async fn start(op: Operator, form: Form) -> Response {
    let mut body = json!({ "from": form.text("from") });
    let to = form.text("to");
    if !to.is_empty() {
        body["to"] = json!(to);
    }
    let action = Action {
        api_path: "/v1/reconciliations".into(),
        body: Some(body),
        return_to: "/console/reconciliations".into(),
        done: "Reconciliation started.",
        confirm: None,
    };
    match form::run_reply(&op, &form, &action).await {
        Ok(Outcome::Asked(page)) => page,
        Ok(Outcome::Done(reply)) => {
            form::report(&op, &reply, action.done);
            let id = reply.json()["id"].as_str().map(str::to_string);
            match id.filter(|_| reply.status.is_success()) {
                Some(id) => Redirect::to(&format!("/console/reconciliations/{}", segment(&id))),
                None => Redirect::to(&action.return_to),
            }
            .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `/console/reconciliations/{id}`: its status and, once completed, each category's lines.
pub async fn show(op: Operator, Path(id): Path<String>) -> Result<Response, ConsoleError> {
    let r: ReconciliationView =
        dispatch::get(&op, &format!("/v1/reconciliations/{}", segment(&id))).await?;
    let rows = [
        ("Status", components::status(&r.status)),
        (
            "Range",
            html! { (time_text(&r.from)) " – " (time_text(&r.to)) },
        ),
        ("Started", html! { (time_text(&r.created_at)) }),
        (
            "Completed",
            html! { (r.completed_at.as_deref().map(time_text).unwrap_or_else(|| "—".into())) },
        ),
    ];
    let body = html! {
        p { a href="/console/reconciliations" { "« Reconciliations" } }
        section aria-labelledby="summary-h" {
            h2 #summary-h { "Summary" }
            (components::fields(&rows))
            @if let Some(f) = &r.failure { p.flash.error role="alert" { "It failed: " (f) } }
            @if r.status == "pending" {
                p { "The report is being made. " a href=(format!("/console/reconciliations/{}", segment(&r.id))) { "Refresh" } }
            }
        }
        @if let Some(report) = &r.report {
            (category("Matched", "Tally and the provider agree.", &report.matched))
            (category("Missing internally", "The provider collected while Tally had the attempt open (resolved), or the payment is unknown to Tally.", &report.missing_internally))
            (category("Missing at the provider", "Tally recorded a success the provider has no record of.", &report.missing_at_provider))
            (category("Amount mismatch", "The amounts differ.", &report.amount_mismatch))
            (category("Status mismatch", "The statuses disagree otherwise.", &report.status_mismatch))
        }
    };
    Ok(page(
        &op,
        "/console/payments",
        &format!("Reconciliation {}", r.id),
        body,
    ))
}

fn category(title: &str, meaning: &str, items: &[ItemView]) -> Markup {
    let amount = |a: Option<i64>| a.map(|a| a.to_string()).unwrap_or_default();
    html! {
        section {
            h2 { (title) " (" (items.len()) ")" }
            p.hint { (meaning) " Amounts in minor units." }
            @if items.is_empty() { (components::empty("None.")) } @else {
                div.table-wrap { table {
                    thead { tr {
                        th { "Payment" } th { "Provider id" } th.num { "Tally amount" }
                        th.num { "Provider amount" } th { "Tally status" } th { "Provider status" }
                        th { "Resolved" } th { "Note" }
                    } }
                    tbody {
                        @for i in items {
                            tr {
                                td { @if let Some(p) = &i.payment { a href=(format!("/console/payments/{}", segment(p))) { (p) } } }
                                td { code { (i.provider_id.as_deref().unwrap_or("")) } }
                                td.num { (amount(i.tally_amount_minor)) }
                                td.num { (amount(i.provider_amount_minor)) }
                                td { (i.tally_status.as_deref().unwrap_or("")) }
                                td { (i.provider_status.as_deref().unwrap_or("")) }
                                td { @if i.resolved { "yes" } @else { "no" } }
                                td { (i.note) }
                            }
                        }
                    }
                } }
            }
        }
    }
}
