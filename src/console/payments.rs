//! The payments list and a payment's page: its status, refunds, the invoice's attempts and
//! where dunning stands, with Refund and Cancel where the API allows them.

use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::amount::{major_text, minor_units};
use super::components::{self, form_tokens, money, time_text, Confirm};
use super::dispatch::{self, segment, with_query};
use super::form::{self, Action, Form};
use super::invoices::{InvoiceView, PageView};
use super::page::{page, ConsoleError};
use super::session::Operator;
use crate::api::AppState;

/// Payments per page of the list.
const PAGE_LIMIT: &str = "25";

/// The routes of the payment pages, relative to `/console`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/payments", get(list))
        .route("/payments/{id}", get(show))
        .route("/payments/{id}/refund", post(refund))
        .route("/payments/{id}/cancel", post(cancel))
}

/// A refund, as shown.
#[derive(Debug, Deserialize)]
pub struct RefundView {
    /// `re_…`.
    pub id: String,
    /// Minor units.
    pub amount_minor: i64,
    /// pending, succeeded or failed.
    pub status: String,
    /// Why it failed.
    pub failure: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// The fields of a payment attempt the console shows.
#[derive(Debug, Deserialize)]
pub struct PaymentView {
    /// `pay_…`.
    pub id: String,
    /// `inv_…`.
    pub invoice: String,
    /// `cus_…`.
    pub customer: String,
    /// 1, 2, … (dunning retries are new attempts).
    pub attempt: u32,
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// pending, processing, succeeded …
    pub status: String,
    /// `simulated` or `stripe`.
    pub provider: String,
    /// The provider's id.
    pub provider_id: Option<String>,
    /// Decline or error code.
    pub failure_code: Option<String>,
    /// Decline or error message.
    pub failure_message: Option<String>,
    /// Refunded so far.
    pub refunded_minor: i64,
    /// Its refunds.
    pub refunds: Vec<RefundView>,
    /// When it runs.
    pub scheduled_at: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Why collected money was held in suspense.
    pub held_reason: Option<String>,
}

impl PaymentView {
    /// Whether the attempt is at the provider or about to be (Pay is refused meanwhile).
    pub fn is_in_flight(&self) -> bool {
        ["pending", "processing", "unknown"].contains(&self.status.as_str())
    }

    /// Whether the API would take a cancel: never sent, or waiting for the customer.
    fn is_cancelable(&self) -> bool {
        ["pending", "requires_action"].contains(&self.status.as_str())
    }

    /// What may still be refunded (the API takes back at most this).
    fn refundable_minor(&self) -> i64 {
        if self.status == "succeeded" {
            self.amount_minor.saturating_sub(self.refunded_minor).max(0)
        } else {
            0
        }
    }
}

fn payment_page(id: &str) -> String {
    format!("/console/payments/{}", segment(id))
}

/// A table of payment attempts, each linked to its page.
pub fn payment_table(payments: &[PaymentView]) -> Markup {
    if payments.is_empty() {
        return components::empty("No payments.");
    }
    html! {
        div.table-wrap { table {
            thead { tr {
                th { "Payment" } th { "Invoice" } th.num { "Attempt" } th { "Status" }
                th.num { "Amount" } th.num { "Refunded" } th { "Scheduled" } th { "Failure" }
            } }
            tbody {
                @for p in payments {
                    tr {
                        td { a href=(payment_page(&p.id)) { (p.id) } }
                        td { a href=(format!("/console/invoices/{}", segment(&p.invoice))) { (p.invoice) } }
                        td.num { (p.attempt) }
                        td { (components::status(&p.status)) }
                        td.num { (money(p.amount_minor, &p.currency)) }
                        td.num { (money(p.refunded_minor, &p.currency)) }
                        td { (time_text(&p.scheduled_at)) }
                        td { (p.failure_code.as_deref().unwrap_or("")) }
                    }
                }
            }
        } }
    }
}

/// Filters of the payments list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    invoice: Option<String>,
    starting_after: Option<String>,
}

/// `/console/payments`: one page of payment attempts, optionally of one invoice.
pub async fn list(op: Operator, Query(q): Query<ListQuery>) -> Result<Response, ConsoleError> {
    let invoice = q.invoice.unwrap_or_default().trim().to_string();
    let cursor = q.starting_after.unwrap_or_default();
    let base = with_query("/console/payments", &[("invoice", &invoice)]);
    let path = with_query(
        "/v1/payments",
        &[
            ("invoice", &invoice),
            ("limit", PAGE_LIMIT),
            ("starting_after", &cursor),
        ],
    );
    let reply = dispatch::call(&op, axum::http::Method::GET, &path, None, None).await?;
    let listed: Result<PageView<PaymentView>, String> = if reply.status.is_success() {
        serde_json::from_slice(&reply.body).map_err(|e| e.to_string())
    } else {
        Err(reply.problem_text())
    };
    let body = html! {
        p { a href="/console/reconciliations" { "Reconciliations with the provider »" } }
        form.filters method="get" action="/console/payments" {
            div {
                label for="invoice" { "Invoice (inv_…)" }
                input #invoice type="text" name="invoice" value=(invoice);
            }
            button type="submit" { "Filter" }
        }
        @match &listed {
            Err(problem) => p.flash.error role="alert" { "The list could not be read: " (problem) },
            Ok(listed) => {
                (payment_table(&listed.data))
                (components::pager(&base, listed.next_cursor.as_deref(), !cursor.is_empty()))
            }
        }
    };
    Ok(page(&op, "/console/payments", "Payments", body))
}

/// `/console/payments/{id}`: the attempt, its refunds, the invoice's attempts and dunning.
pub async fn show(op: Operator, Path(id): Path<String>) -> Result<Response, ConsoleError> {
    let p: PaymentView = dispatch::get(&op, &format!("/v1/payments/{}", segment(&id))).await?;
    let inv: InvoiceView =
        dispatch::get(&op, &format!("/v1/invoices/{}", segment(&p.invoice))).await?;
    let attempts: PageView<PaymentView> = dispatch::get(
        &op,
        &with_query("/v1/payments", &[("invoice", &p.invoice), ("limit", "50")]),
    )
    .await?;
    let retry_days = op.state.config.payments.dunning_retry_days.clone();
    let body = html! {
        (summary(&p, &inv))
        (actions(&op, &p))
        (refunds_table(&p))
        section aria-labelledby="dunning-h" {
            h2 #dunning-h { "Dunning" }
            (dunning(&inv, &attempts.data, &retry_days, crate::clock::now_ms()))
            h3 { "Attempts for this invoice" }
            (payment_table(&attempts.data))
        }
    };
    Ok(page(
        &op,
        "/console/payments",
        &format!("Payment {}", p.id),
        body,
    ))
}

fn summary(p: &PaymentView, inv: &InvoiceView) -> Markup {
    let c = p.currency.as_str();
    let mut rows = vec![
        ("Status", components::status(&p.status)),
        (
            "Invoice",
            html! { a href=(format!("/console/invoices/{}", segment(&inv.id))) { (inv.label()) } " " (components::status(&inv.status)) },
        ),
        (
            "Customer",
            html! { a href=(format!("/console/customers/{}", segment(&p.customer))) { (inv.buyer_name()) } " " code { (p.customer) } },
        ),
        ("Attempt", html! { (p.attempt) }),
        ("Amount", html! { strong { (money(p.amount_minor, c)) } }),
        ("Refunded", html! { (money(p.refunded_minor, c)) }),
        (
            "Provider",
            html! { (p.provider) " " code { (p.provider_id.as_deref().unwrap_or("—")) } },
        ),
        ("Scheduled", html! { (time_text(&p.scheduled_at)) }),
        ("Created", html! { (time_text(&p.created_at)) }),
        ("Updated", html! { (time_text(&p.updated_at)) }),
    ];
    if p.failure_code.is_some() || p.failure_message.is_some() {
        rows.push(("Failure", html! {
            code { (p.failure_code.as_deref().unwrap_or("")) } " " (p.failure_message.as_deref().unwrap_or(""))
        }));
    }
    if let Some(reason) = &p.held_reason {
        rows.push(("Held in suspense", html! { (reason) }));
    }
    html! {
        section aria-labelledby="summary-h" {
            h2 #summary-h { "Summary" }
            (components::fields(&rows))
        }
    }
}

/// Refund (an amount, or everything left; asks first) and Cancel, where they apply.
fn actions(op: &Operator, p: &PaymentView) -> Markup {
    let refundable = p.refundable_minor();
    if op.read_only() || (refundable == 0 && !p.is_cancelable()) {
        return html! {};
    }
    html! {
        section aria-labelledby="actions-h" {
            h2 #actions-h { "Actions" }
            div.actions {
                @if refundable > 0 {
                    form.action.refund method="post" action=(format!("{}/refund", payment_page(&p.id))) {
                        (form_tokens(op))
                        label for="refund_amount" { "Amount to refund in " (p.currency) " (blank: all " (major_text(refundable, &p.currency)) ")" }
                        input #refund_amount type="text" name="amount" inputmode="decimal" autocomplete="off";
                        button.danger type="submit" { "Refund" }
                    }
                }
                @if p.is_cancelable() {
                    (components::action_form(op, &format!("{}/cancel", payment_page(&p.id)), "Cancel payment", &[], Confirm::Ask))
                }
            }
        }
    }
}

fn refunds_table(p: &PaymentView) -> Markup {
    html! {
        section aria-labelledby="refunds-h" {
            h2 #refunds-h { "Refunds" }
            @if p.refunds.is_empty() { (components::empty("No refunds.")) } @else {
                div.table-wrap { table {
                    thead { tr { th { "Refund" } th.num { "Amount" } th { "Status" } th { "Failure" } th { "Created" } } }
                    tbody {
                        @for r in &p.refunds {
                            tr {
                                td { code { (r.id) } }
                                td.num { (money(r.amount_minor, &p.currency)) }
                                td { (components::status(&r.status)) }
                                td { (r.failure.as_deref().unwrap_or("")) }
                                td { (time_text(&r.created_at)) }
                            }
                        }
                    }
                } }
            }
        }
    }
}

/// Where collection of the invoice stands: the schedule, the next attempt, or how it ended.
pub fn dunning(
    inv: &InvoiceView,
    attempts: &[PaymentView],
    retry_days: &[u64],
    now_ms: i64,
) -> Markup {
    let schedule = if retry_days.is_empty() {
        "a declined invoice is written off at once (no retries)".to_string()
    } else {
        let days: Vec<String> = retry_days.iter().map(u64::to_string).collect();
        format!(
            "a decline is retried after {} days ({} attempts in all), then the invoice is written off",
            days.join(", "),
            retry_days.len() + 1
        )
    };
    let next = attempts
        .iter()
        .filter(|a| a.status == "pending")
        .min_by(|a, b| a.scheduled_at.cmp(&b.scheduled_at));
    let state = match (inv.status.as_str(), next) {
        ("paid", _) => "collected: the invoice is paid".to_string(),
        ("void", _) => "stopped: the invoice is void".to_string(),
        ("uncollectible", _) => {
            "exhausted: every attempt failed and the invoice was written off".to_string()
        }
        (_, Some(n)) => {
            let due = crate::clock::parse_rfc3339(&n.scheduled_at).is_some_and(|t| t > now_ms);
            if due {
                format!(
                    "attempt {} is scheduled for {}",
                    n.attempt,
                    time_text(&n.scheduled_at)
                )
            } else {
                format!("attempt {} is being sent now", n.attempt)
            }
        }
        _ if attempts.iter().any(PaymentView::is_in_flight) => {
            "an attempt is at the provider".to_string()
        }
        _ if attempts.iter().any(|a| a.status == "requires_action") => {
            "waiting for the customer to complete an attempt".to_string()
        }
        _ if attempts.is_empty() => "not started: no attempt yet".to_string(),
        _ => "no attempt scheduled".to_string(),
    };
    components::fields(&[
        ("State", html! { (state) }),
        ("Schedule", html! { (schedule) }),
    ])
}

/// Refunds the payment (`POST /v1/payments/{id}/refund`), after asking.
pub async fn refund(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    if let Err(e) = form.check_csrf(&op) {
        return e.into_response();
    }
    let p: PaymentView = match dispatch::get(&op, &format!("/v1/payments/{}", segment(&id))).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let typed = form.text("amount");
    let amount_minor = if typed.is_empty() {
        None
    } else {
        match minor_units(&typed, &p.currency) {
            Ok(a) => Some(a),
            Err(problem) => {
                op.flash(true, format!("Not done: amount: {problem}"));
                return Redirect::to(&payment_page(&id)).into_response();
            }
        }
    };
    let shown = amount_minor.map_or_else(
        || {
            format!(
                "everything left ({})",
                money(p.refundable_minor(), &p.currency)
            )
        },
        |a| money(a, &p.currency),
    );
    let action = Action {
        api_path: format!("/v1/payments/{}/refund", segment(&id)),
        body: amount_minor.map(|a| json!({ "amount_minor": a })),
        return_to: payment_page(&id),
        done: "Refund requested: it is booked once the provider confirms it.",
        confirm: Some(format!(
            "Refund {shown} of payment {} to the customer?",
            p.id
        )),
    };
    form::run(&op, &form, action).await
}

/// Cancels an attempt that was never sent or waits for the customer, after asking.
pub async fn cancel(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    let action = Action {
        api_path: format!("/v1/payments/{}/cancel", segment(&id)),
        body: None,
        return_to: payment_page(&id),
        done: "Payment canceled.",
        confirm: Some(format!(
            "Cancel payment {id}? The customer is not charged by this attempt."
        )),
    };
    form::run(&op, &form, action).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(n: u32, status: &str, scheduled_at: &str) -> PaymentView {
        serde_json::from_value(json!({
            "id": format!("pay_{n}"), "invoice": "inv_1", "customer": "cus_1", "attempt": n,
            "amount_minor": 1000, "currency": "EUR", "status": status, "provider": "simulated",
            "provider_id": null, "failure_code": null, "failure_message": null,
            "refunded_minor": 0, "refunds": [], "scheduled_at": scheduled_at,
            "created_at": "2026-12-01T00:00:00Z", "updated_at": "2026-12-01T00:00:00Z",
            "held_reason": null
        }))
        .expect("a payment")
    }

    fn invoice(status: &str) -> InvoiceView {
        serde_json::from_value(json!({
            "id": "inv_1", "customer": "cus_1", "subscription": null, "currency": "EUR",
            "kind": "period", "status": status, "period_start": "2026-11-01T00:00:00Z",
            "period_end": "2026-12-01T00:00:00Z", "lines": [], "subtotal_minor": 1000,
            "tax_lines": [], "tax_minor": 0, "total_minor": 1000, "notes": [],
            "credited_minor": 0, "credits_applied_minor": 0, "amount_due_minor": 1000,
            "issued_at": null, "paid_at": null, "voided_at": null, "number": null,
            "replaces": null, "replaced_by": null, "buyer": null
        }))
        .expect("an invoice")
    }

    #[test]
    fn dunning_names_the_next_attempt_and_the_schedule() {
        let now = crate::clock::parse_rfc3339("2026-12-02T00:00:00Z").expect("time");
        let attempts = [
            attempt(1, "failed", "2026-12-01T00:00:00Z"),
            attempt(2, "pending", "2026-12-04T00:00:00Z"),
        ];
        let text = dunning(&invoice("finalized"), &attempts, &[3, 5, 7], now).into_string();
        assert!(
            text.contains("attempt 2 is scheduled for 2026-12-04 00:00 UTC"),
            "{text}"
        );
        assert!(
            text.contains("retried after 3, 5, 7 days (4 attempts in all)"),
            "{text}"
        );
        let text = dunning(&invoice("uncollectible"), &attempts[..1], &[3], now).into_string();
        assert!(text.contains("written off"), "{text}");
        let text = dunning(&invoice("finalized"), &[], &[], now).into_string();
        assert!(
            text.contains("no attempt yet") && text.contains("(no retries)"),
            "{text}"
        );
    }
}
