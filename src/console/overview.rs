//! The console's first page: the state of the daemon at a glance — readiness, the writer's
//! recent batches and commit latency, the queues, dead letters and failing deliveries, when the
//! books last verified, and the ingest rate over the last hour.
//!
//! Readiness and verification go through the public API (`/readyz`, `/v1/ledger/verify`); the
//! figures no endpoint serves (writer statistics, queue counts) are read from the store and the
//! writer directly, each with a bounded read.

use std::sync::Arc;

use axum::http::Method;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use rust_decimal::Decimal;

use super::chart::{self, Bar};
use super::components;
use super::dispatch;
use super::form::Form;
use super::page::ConsoleError;
use super::session::Operator;
use crate::api::AppState;
use crate::ingest::rate;
use crate::jobs::queue::{self, Bounded, QueueCounts};
use crate::ledger::verification::{self, Verification};
use crate::notifications::backlog::{self, Backlog};
use crate::store::writer_stats::WriterSnapshot;

/// Most rows any one count on the page examines.
pub const COUNT_BUDGET: usize = 10_000;
/// Minutes the ingest chart covers.
pub const CHART_MINUTES: usize = 60;

/// The overview's routes (relative to `/console`).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(show))
        .route("/verify", post(verify))
}

/// Everything the page shows that is read from the store in one snapshot.
struct Figures {
    queue: QueueCounts,
    dead_letters: Bounded,
    deliveries: Backlog,
    verification: Option<Verification>,
    per_minute: Vec<(i64, u64)>,
}

fn figures(op: &Operator, now_ms: i64) -> Result<Figures, ConsoleError> {
    let tx = op.state.store.read()?;
    let tenant = op.principal.tenant;
    Ok(Figures {
        queue: queue::queue_counts(&tx, now_ms, COUNT_BUDGET)?,
        dead_letters: queue::dead_letter_count(&tx, tenant, COUNT_BUDGET)?,
        deliveries: backlog::backlog(&tx, tenant, COUNT_BUDGET)?,
        verification: verification::get(&tx, tenant)?,
        per_minute: rate::recent(&tx, tenant, now_ms, CHART_MINUTES)?,
    })
}

/// Whether the daemon takes traffic, and why not, as `/readyz` answers it.
async fn readiness(op: &Operator) -> Result<(bool, String), ConsoleError> {
    let reply = dispatch::call(op, Method::GET, "/readyz", None, None).await?;
    if reply.status.is_success() {
        Ok((
            true,
            "The database is open and the writer is running".into(),
        ))
    } else {
        Ok((false, format!("Not ready: {}", reply.problem_text())))
    }
}

/// The overview page.
pub async fn show(op: Operator) -> Result<Response, ConsoleError> {
    let (ready, why) = readiness(&op).await?;
    let now_ms = crate::clock::now_ms();
    let figures = figures(&op, now_ms)?;
    let writer = op.state.writer.stats();
    let depth = op.state.writer.queue_depth();
    let body = html! {
        (health_section(ready, &why, &writer, depth))
        (ingest_section(&figures.per_minute))
        (queues_section(&figures))
        (books_section(&op, figures.verification.as_ref()))
    };
    Ok(super::page::page(&op, "/console", "Overview", body))
}

fn card(value: Markup, label: &str) -> Markup {
    html! { div.card { div.value { (value) } div.label { (label) } } }
}

/// Microseconds as milliseconds text, exactly (`1.234 ms`).
fn ms_text(us: u64) -> String {
    let us = i64::try_from(us).unwrap_or(i64::MAX);
    format!("{} ms", Decimal::new(us, 3))
}

fn health_section(ready: bool, why: &str, writer: &WriterSnapshot, depth: usize) -> Markup {
    let latency = if writer.recent == 0 {
        "no commits yet".to_string()
    } else {
        format!(
            "{} / {}",
            ms_text(writer.commit_p50_us),
            ms_text(writer.commit_p99_us)
        )
    };
    html! {
        section #health aria-labelledby="health-h" {
            h2 #health-h { "Health" }
            div.cards {
                (card(
                    html! {
                        @if ready { span.status.good { "ready" } } @else { span.status.bad { "not ready" } }
                    },
                    "Readiness",
                ))
                (card(html! { (depth) }, "Writer queue (commands waiting)"))
                (card(
                    html! { (writer.mean_batch_size) " / " (writer.max_batch_size) },
                    &format!("Batch size, mean / max of the last {} commits", writer.recent),
                ))
                (card(html! { (latency) }, "Commit latency, p50 / p99"))
            }
            p.hint { (why) ". " (writer.commits_total) " commits since the daemon started." }
        }
    }
}

fn queues_section(f: &Figures) -> Markup {
    html! {
        section #queues aria-labelledby="queues-h" {
            h2 #queues-h { "Queues" }
            div.cards {
                (card(html! { (f.queue.due) }, "Jobs due now (all tenants)"))
                (card(html! { (f.queue.leased) }, "Jobs running (all tenants)"))
                (card(html! { (f.queue.scheduled) }, "Jobs scheduled later (all tenants)"))
                (card(html! { (f.deliveries.pending) }, "Deliveries pending"))
                (card(
                    html! { a #deliveries-failing href="/console/notifications" { (f.deliveries.failing) } },
                    "Deliveries failing",
                ))
                (card(
                    html! { a #dead-letters href="/console/dead-letters" { (f.dead_letters) } },
                    "Dead letters",
                ))
            }
            @if f.deliveries.more {
                p.hint { "Deliveries are counted among the newest " (f.deliveries.examined) " only." }
            }
        }
    }
}

fn books_section(op: &Operator, v: Option<&Verification>) -> Markup {
    html! {
        section #books aria-labelledby="books-h" {
            h2 #books-h { "Books" }
            @match v.and_then(|v| v.last_passed.as_ref()) {
                Some(passed) => p #last-verify {
                    "Last successful verification: " strong { (components::time_ms(passed.at_ms)) }
                    " (" (passed.entries) " journal entries)."
                },
                None => p #last-verify { "Last successful verification: " strong { "never" } "." },
            }
            @if let Some(last) = v.map(|v| &v.last).filter(|l| !l.passed) {
                p.flash.error role="alert" {
                    "The latest verification, " (components::time_ms(last.at_ms)) ", FAILED: "
                    (last.reason.as_deref().unwrap_or("no reason recorded"))
                }
            }
            form.action method="post" action="/console/verify" {
                (components::form_tokens(op))
                button.secondary type="submit" { "Verify the books now" }
            }
            p.hint { "Checks that every journal entry balances, the hash chain is intact and every balance equals its postings (GET /v1/ledger/verify; tally verify records too)." }
        }
    }
}

fn ingest_section(per_minute: &[(i64, u64)]) -> Markup {
    let total: u64 = per_minute.iter().map(|(_, n)| n).sum();
    let bars: Vec<Bar> = per_minute
        .iter()
        .map(|(minute, n)| Bar {
            label: minute_label(*minute),
            value: per_second(*n),
        })
        .collect();
    html! {
        section #ingest aria-labelledby="ingest-h" {
            h2 #ingest-h { "Ingest" }
            div.cards {
                (card(html! { (total) }, "Events stored in the last hour"))
                (card(html! { (per_second(per_minute.last().map_or(0, |(_, n)| *n))) }, "Events/s this minute"))
            }
            (chart::bars("Events per second, by minute, last hour", "events/s", &bars))
        }
    }
}

/// A minute's count as a rate per second, to two places (rounded half to even).
fn per_second(count: u64) -> Decimal {
    Decimal::from(count)
        .checked_div(Decimal::from(60))
        .unwrap_or(Decimal::ZERO)
        .round_dp(2)
        .normalize()
}

/// `14:05` (UTC).
fn minute_label(minute_ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(minute_ms) {
        Ok(ts) => ts.strftime("%H:%M").to_string(),
        Err(_) => minute_ms.to_string(),
    }
}

/// Verifies the tenant's books through the API and says how it went.
pub async fn verify(op: Operator, form: Form) -> Response {
    if let Err(e) = form.check_csrf(&op) {
        return e.into_response();
    }
    match dispatch::call(&op, Method::GET, "/v1/ledger/verify", None, None).await {
        Ok(reply) if reply.status.is_success() => {
            let json = reply.json();
            let entries = json.get("entries").and_then(|e| e.as_u64()).unwrap_or(0);
            if json.get("ok").and_then(|o| o.as_bool()) == Some(true) {
                op.flash(
                    false,
                    format!("The books verify: {entries} journal entries checked."),
                );
            } else {
                let reason = json
                    .pointer("/violation/reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("no reason given");
                op.flash(true, format!("The books do NOT verify: {reason}"));
            }
        }
        Ok(reply) => op.flash(true, format!("Not verified: {}", reply.problem_text())),
        Err(e) => return e.into_response(),
    }
    Redirect::to("/console").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_latencies_are_exact_text() {
        assert_eq!(per_second(0).to_string(), "0");
        assert_eq!(per_second(60).to_string(), "1");
        assert_eq!(per_second(90).to_string(), "1.5");
        assert_eq!(per_second(1).to_string(), "0.02");
        assert_eq!(ms_text(1234), "1.234 ms");
        assert_eq!(ms_text(5), "0.005 ms");
        assert_eq!(minute_label(1_800_000_000_000), "08:00");
    }
}
