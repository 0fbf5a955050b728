//! The invoices list and an invoice's page: the rendered document, its lines and tax, its
//! verification, its credit notes and payments, and the actions on it (see `invoice_actions`).

use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

use super::components::{self, money, time_text, Confirm};
use super::dispatch::{self, segment, with_query};
use super::page::{page, ConsoleError};
use super::payments::{self, PaymentView};
use super::session::Operator;
use crate::api::AppState;

/// Invoices per page of the list.
const PAGE_LIMIT: &str = "25";

/// The routes of the invoice pages, relative to `/console`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/invoices", get(list))
        .route("/invoices/{id}", get(show))
}

/// One invoice line, as shown.
#[derive(Debug, Deserialize)]
pub struct LineView {
    /// usage, fixed_fee, discount …
    pub kind: String,
    /// What it bills.
    pub description: String,
    /// Its period.
    pub period_start: String,
    /// End of that period.
    pub period_end: String,
    /// Exact quantity.
    pub quantity: String,
    /// Unit price, when it has one.
    pub unit_price: Option<String>,
    /// Minor units.
    pub amount_minor: i64,
}

/// One tax rate's share of an invoice.
#[derive(Debug, Deserialize)]
pub struct TaxLineView {
    /// The rate's name.
    pub display_name: String,
    /// Exact percentage.
    pub percentage: String,
    /// Whether the lines contain it.
    pub inclusive: bool,
    /// What it was levied on.
    pub taxable_minor: i64,
    /// The tax.
    pub tax_minor: i64,
}

/// The buyer as the invoice was issued to.
#[derive(Debug, Deserialize)]
pub struct BuyerView {
    /// Display name.
    pub name: Option<String>,
    /// Billing email.
    pub email: Option<String>,
}

/// The fields of an invoice the console shows.
#[derive(Debug, Deserialize)]
pub struct InvoiceView {
    /// `inv_…`.
    pub id: String,
    /// `cus_…`.
    pub customer: String,
    /// `sub_…`.
    pub subscription: Option<String>,
    /// ISO 4217.
    pub currency: String,
    /// opening, period, final …
    pub kind: String,
    /// finalized, paid, void or uncollectible.
    pub status: String,
    /// RFC 3339.
    pub period_start: String,
    /// RFC 3339.
    pub period_end: String,
    /// Its lines.
    pub lines: Vec<LineView>,
    /// Net of discounts, before exclusive tax.
    pub subtotal_minor: i64,
    /// Tax per rate.
    pub tax_lines: Vec<TaxLineView>,
    /// All tax.
    pub tax_minor: i64,
    /// Subtotal plus exclusive tax.
    pub total_minor: i64,
    /// Legal notes.
    pub notes: Vec<String>,
    /// What credit notes took back.
    pub credited_minor: i64,
    /// Credits drawn.
    pub credits_applied_minor: i64,
    /// What remains to collect.
    pub amount_due_minor: i64,
    /// RFC 3339.
    pub issued_at: Option<String>,
    /// RFC 3339.
    pub paid_at: Option<String>,
    /// RFC 3339.
    pub voided_at: Option<String>,
    /// The invoice number.
    pub number: Option<String>,
    /// The voided invoice it re-issues.
    pub replaces: Option<String>,
    /// The invoice that re-issued it.
    pub replaced_by: Option<String>,
    /// The buyer as issued to.
    pub buyer: Option<BuyerView>,
}

impl InvoiceView {
    /// The number, or the id for invoices issued before numbering.
    pub fn label(&self) -> &str {
        self.number.as_deref().unwrap_or(&self.id)
    }

    /// The buyer's name as issued, or the customer id.
    pub fn buyer_name(&self) -> &str {
        self.buyer
            .as_ref()
            .and_then(|b| b.name.as_deref())
            .unwrap_or(&self.customer)
    }
}

/// A credit note of an invoice, as listed.
#[derive(Debug, Deserialize)]
struct CreditNoteView {
    id: String,
    number: String,
    currency: String,
    amount_minor: i64,
    tax_minor: i64,
    reason: Option<String>,
    credit_grant: Option<String>,
    refund: Option<String>,
    created_at: String,
}

/// A page of a list endpoint.
#[derive(Debug, Deserialize)]
pub struct PageView<T> {
    /// The items.
    pub data: Vec<T>,
    /// The next page's cursor.
    pub next_cursor: Option<String>,
}

/// Filters of the invoices list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    customer: Option<String>,
    starting_after: Option<String>,
}

const STATUSES: &[&str] = &["finalized", "paid", "void", "uncollectible"];

/// `/console/invoices`: one page of invoices, filtered by status and customer.
pub async fn list(op: Operator, Query(q): Query<ListQuery>) -> Result<Response, ConsoleError> {
    let status = q.status.unwrap_or_default();
    let customer = q.customer.unwrap_or_default().trim().to_string();
    let cursor = q.starting_after.unwrap_or_default();
    let filters = [("status", status.as_str()), ("customer", customer.as_str())];
    let base = with_query("/console/invoices", &filters);
    let mut params = filters.to_vec();
    params.extend([("limit", PAGE_LIMIT), ("starting_after", cursor.as_str())]);
    let reply = dispatch::call(
        &op,
        axum::http::Method::GET,
        &with_query("/v1/invoices", &params),
        None,
        None,
    )
    .await?;
    let listed: Result<PageView<InvoiceView>, String> = if reply.status.is_success() {
        serde_json::from_slice(&reply.body).map_err(|e| e.to_string())
    } else {
        Err(reply.problem_text())
    };
    let body = html! {
        form.filters method="get" action="/console/invoices" {
            div {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" { "any" }
                    @for s in STATUSES {
                        option value=(s) selected[status == *s] { (s) }
                    }
                }
            }
            div {
                label for="customer" { "Customer (cus_… or external id)" }
                input #customer type="text" name="customer" value=(customer);
            }
            button type="submit" { "Filter" }
        }
        @match &listed {
            Err(problem) => p.flash.error role="alert" { "The list could not be read: " (problem) },
            Ok(listed) => {
                (invoice_table(&listed.data))
                (components::pager(&base, listed.next_cursor.as_deref(), !cursor.is_empty()))
            }
        }
    };
    Ok(page(&op, "/console/invoices", "Invoices", body))
}

/// A table of invoices, each linked to its page.
pub fn invoice_table(invoices: &[InvoiceView]) -> Markup {
    if invoices.is_empty() {
        return components::empty("No invoices match.");
    }
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th { "Invoice" } th { "Customer" } th { "Kind" } th { "Status" }
                    th { "Period" } th.num { "Total" } th.num { "Amount due" } th { "Issued" }
                } }
                tbody {
                    @for inv in invoices {
                        tr {
                            td { a href=(format!("/console/invoices/{}", segment(&inv.id))) { (inv.label()) } }
                            td { a href=(format!("/console/customers/{}", segment(&inv.customer))) { (inv.buyer_name()) } }
                            td { (inv.kind) }
                            td { (components::status(&inv.status)) }
                            td { (time_text(&inv.period_start)) " – " (time_text(&inv.period_end)) }
                            td.num { (money(inv.total_minor, &inv.currency)) }
                            td.num { (money(inv.amount_due_minor, &inv.currency)) }
                            td { (inv.issued_at.as_deref().map(time_text).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

/// `?verify=1` on an invoice's page: show the verification's result.
#[derive(Debug, Default, Deserialize)]
pub struct ShowQuery {
    verify: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Verification {
    matches: bool,
    difference: Option<String>,
}

/// `/console/invoices/{id}`: the invoice, its document, lines, tax, credit notes, payments and
/// actions.
pub async fn show(
    op: Operator,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, ConsoleError> {
    let seg = segment(&id);
    let inv: InvoiceView = dispatch::get(&op, &format!("/v1/invoices/{seg}")).await?;
    let notes: PageView<CreditNoteView> = dispatch::get(
        &op,
        &with_query("/v1/credit-notes", &[("invoice", &inv.id), ("limit", "50")]),
    )
    .await?;
    let attempts: PageView<PaymentView> = dispatch::get(
        &op,
        &with_query("/v1/payments", &[("invoice", &inv.id), ("limit", "50")]),
    )
    .await?;
    let verification = match q.verify.as_deref() {
        Some(_) => {
            Some(dispatch::get::<Verification>(&op, &format!("/v1/invoices/{seg}/verify")).await?)
        }
        None => None,
    };
    let title = format!("Invoice {}", inv.label());
    let body = html! {
        @if let Some(v) = &verification { (verification_result(v)) }
        (actions(&op, &inv, &attempts.data))
        div.invoice-top {
            (summary(&inv))
            section aria-labelledby="document-h" {
                h2 #document-h { "Document" }
                iframe.document sandbox="" title=(format!("Invoice document {}", inv.label()))
                    src=(format!("/console/invoices/{seg}/document")) {}
            }
        }
        (lines_table(&inv))
        (tax_table(&inv))
        section aria-labelledby="payments-h" {
            h2 #payments-h { "Payments" }
            (payments::payment_table(&attempts.data))
        }
        (credit_notes_table(&notes.data))
        (super::invoice_actions::credit_note_form(&op, &inv))
    };
    Ok(page(&op, "/console/invoices", &title, body))
}

fn verification_result(v: &Verification) -> Markup {
    html! {
        section.verification aria-labelledby="verify-h" {
            h2 #verify-h { "Verification" }
            @if v.matches {
                p role="status" { (components::status("passed")) " The invoice equals its recomputation from the stored inputs." }
            } @else {
                p role="alert" { (components::status("failed")) " The recomputation differs: " (v.difference.as_deref().unwrap_or("no detail")) }
            }
        }
    }
}

fn summary(inv: &InvoiceView) -> Markup {
    let c = inv.currency.as_str();
    let link = |path: &str, id: &str| html! { a href=(format!("{path}{}", segment(id))) { (id) } };
    let opt_time = |t: &Option<String>| t.as_deref().map(time_text).unwrap_or_else(|| "—".into());
    let mut rows = vec![
        ("Status", components::status(&inv.status)),
        ("Number", html! { (inv.number.as_deref().unwrap_or("—")) }),
        ("Id", html! { code { (inv.id) } }),
        (
            "Customer",
            html! {
                a href=(format!("/console/customers/{}", segment(&inv.customer))) { (inv.buyer_name()) }
                " " code { (inv.customer) }
                @if let Some(email) = inv.buyer.as_ref().and_then(|b| b.email.as_deref()) { " · " (email) }
            },
        ),
        ("Kind", html! { (inv.kind) }),
        (
            "Period",
            html! { (time_text(&inv.period_start)) " – " (time_text(&inv.period_end)) },
        ),
        ("Issued", html! { (opt_time(&inv.issued_at)) }),
        ("Subtotal", html! { (money(inv.subtotal_minor, c)) }),
        ("Tax", html! { (money(inv.tax_minor, c)) }),
        ("Total", html! { strong { (money(inv.total_minor, c)) } }),
        (
            "Credits applied",
            html! { (money(inv.credits_applied_minor, c)) },
        ),
        ("Credited", html! { (money(inv.credited_minor, c)) }),
        (
            "Amount due",
            html! { strong { (money(inv.amount_due_minor, c)) } },
        ),
    ];
    if let Some(s) = &inv.subscription {
        rows.push(("Subscription", html! { code { (s) } }));
    }
    if inv.paid_at.is_some() {
        rows.push(("Paid", html! { (opt_time(&inv.paid_at)) }));
    }
    if inv.voided_at.is_some() {
        rows.push(("Voided", html! { (opt_time(&inv.voided_at)) }));
    }
    if let Some(r) = &inv.replaces {
        rows.push(("Re-issues", link("/console/invoices/", r)));
    }
    if let Some(r) = &inv.replaced_by {
        rows.push(("Re-issued as", link("/console/invoices/", r)));
    }
    html! {
        section aria-labelledby="summary-h" {
            h2 #summary-h { "Summary" }
            (components::fields(&rows))
            @for note in &inv.notes { p.hint { (note) } }
        }
    }
}

/// Verify, PDF, Pay and Void: each shown only where it can apply.
fn actions(op: &Operator, inv: &InvoiceView, attempts: &[PaymentView]) -> Markup {
    let seg = segment(&inv.id);
    let payable = inv.status == "finalized" && inv.amount_due_minor > 0;
    let in_flight = attempts.iter().any(|p| p.is_in_flight());
    html! {
        section aria-labelledby="actions-h" {
            h2 #actions-h { "Actions" }
            div.actions {
                form.action method="get" action=(format!("/console/invoices/{seg}")) {
                    input type="hidden" name="verify" value="1";
                    button.secondary type="submit" { "Verify" }
                }
                a.button href=(format!("/console/invoices/{seg}/pdf")) download { "Download PDF" }
                @if payable && !in_flight {
                    (super::invoice_actions::pay_form(op, inv))
                }
                @if inv.status == "finalized" {
                    (components::action_form(op, &format!("/console/invoices/{seg}/void"), "Void invoice", &[], Confirm::Ask))
                }
            }
            @if payable && in_flight {
                p.hint { "A payment attempt is in progress; Pay returns once it settles." }
            }
        }
    }
}

fn lines_table(inv: &InvoiceView) -> Markup {
    let c = inv.currency.as_str();
    html! {
        section aria-labelledby="lines-h" {
            h2 #lines-h { "Lines" }
            @if inv.lines.is_empty() { (components::empty("No lines.")) } @else {
                div.table-wrap { table {
                    thead { tr {
                        th.num { "#" } th { "Description" } th { "Kind" } th { "Period" }
                        th.num { "Quantity" } th.num { "Unit price" } th.num { "Amount" }
                    } }
                    tbody {
                        @for (i, l) in inv.lines.iter().enumerate() {
                            tr {
                                td.num { (i) }
                                td { (l.description) }
                                td { (l.kind) }
                                td { (time_text(&l.period_start)) " – " (time_text(&l.period_end)) }
                                td.num { (l.quantity) }
                                td.num { (l.unit_price.as_deref().unwrap_or("")) }
                                td.num { (money(l.amount_minor, c)) }
                            }
                        }
                    }
                } }
            }
        }
    }
}

fn tax_table(inv: &InvoiceView) -> Markup {
    let c = inv.currency.as_str();
    html! {
        section aria-labelledby="tax-h" {
            h2 #tax-h { "Tax" }
            @if inv.tax_lines.is_empty() { (components::empty("No tax on this invoice.")) } @else {
                div.table-wrap { table {
                    thead { tr {
                        th { "Rate" } th.num { "Percentage" } th { "Inclusive" }
                        th.num { "Taxable" } th.num { "Tax" }
                    } }
                    tbody {
                        @for t in &inv.tax_lines {
                            tr {
                                td { (t.display_name) }
                                td.num { (t.percentage) " %" }
                                td { @if t.inclusive { "yes" } @else { "no" } }
                                td.num { (money(t.taxable_minor, c)) }
                                td.num { (money(t.tax_minor, c)) }
                            }
                        }
                    }
                } }
            }
        }
    }
}

fn credit_notes_table(notes: &[CreditNoteView]) -> Markup {
    html! {
        section aria-labelledby="credit-notes-h" {
            h2 #credit-notes-h { "Credit notes" }
            @if notes.is_empty() { (components::empty("No credit notes.")) } @else {
                div.table-wrap { table {
                    thead { tr {
                        th { "Number" } th.num { "Amount" } th.num { "Tax" } th { "Reason" }
                        th { "Settled as" } th { "Created" }
                    } }
                    tbody {
                        @for n in notes {
                            tr {
                                td { (n.number) " " code { (n.id) } }
                                td.num { (money(n.amount_minor, &n.currency)) }
                                td.num { (money(n.tax_minor, &n.currency)) }
                                td { (n.reason.as_deref().unwrap_or("")) }
                                td {
                                    @if let Some(r) = &n.refund { "refund " code { (r) } }
                                    @else if let Some(g) = &n.credit_grant { "credit balance " code { (g) } }
                                    @else { "amount due reduced" }
                                }
                                td { (time_text(&n.created_at)) }
                            }
                        }
                    }
                } }
            }
        }
    }
}
