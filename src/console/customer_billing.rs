//! A customer's billing on its page: subscriptions with their phases (and cancel), invoices,
//! their payments, ledger entries and notifications sent. Each is the first page of its list.

use std::collections::{BTreeMap, BTreeSet};

use maud::{html, Markup};
use serde::Deserialize;

use super::components::{self, money, Confirm};
use super::customer::CustomerView;
use super::dispatch;
use super::page::ConsoleError;
use super::session::Operator;

/// Rows each section shows (the first page of its list).
const SHOWN: &str = "10";

#[derive(Debug, Deserialize)]
struct List<T> {
    data: Vec<T>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Debug, Deserialize)]
struct Phase {
    plan: String,
    start_at: String,
    end_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Subscription {
    id: String,
    plan: String,
    status: String,
    phases: Vec<Phase>,
    scheduled_change: Option<Phase>,
    ends_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Plan {
    code: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Invoice {
    id: String,
    kind: String,
    status: String,
    currency: String,
    period_start: String,
    period_end: String,
    total_minor: i64,
    amount_due_minor: i64,
}

#[derive(Debug, Deserialize)]
struct Payment {
    id: String,
    invoice: String,
    attempt: u32,
    amount_minor: i64,
    currency: String,
    status: String,
    refunded_minor: i64,
    created_at: String,
}

#[derive(Debug, Deserialize)]
struct Entry {
    id: String,
    seq: u64,
    kind: String,
    reason: String,
    effective_at: String,
}

#[derive(Debug, Deserialize)]
struct Notification {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created_at: String,
}

/// The billing sections.
pub async fn sections(op: &Operator, c: &CustomerView) -> Result<Markup, ConsoleError> {
    let by_customer =
        |path: &str| dispatch::with_query(path, &[("customer", c.id.as_str()), ("limit", SHOWN)]);
    let subs: List<Subscription> = dispatch::get(op, &by_customer("/v1/subscriptions")).await?;
    let plans = plan_names(op, &subs.data).await?;
    let invoices: List<Invoice> = dispatch::get(op, &by_customer("/v1/invoices")).await?;
    let payments = payments_of(op, &invoices.data).await?;
    let entries: List<Entry> = dispatch::get(op, &by_customer("/v1/journal-entries")).await?;
    let notes: List<Notification> = dispatch::get(op, &by_customer("/v1/notifications")).await?;
    let list_link = |path: &str| dispatch::with_query(path, &[("customer", c.id.as_str())]);
    Ok(html! {
        section aria-labelledby="subscriptions" {
            h2 #subscriptions { "Subscriptions" }
            (subscriptions(op, c, &subs, &plans))
        }
        section aria-labelledby="invoices" {
            h2 #invoices { "Invoices" }
            (invoice_table(&invoices))
            p { a href=(list_link("/console/invoices")) { "All invoices of this customer" } }
        }
        section aria-labelledby="payments" {
            h2 #payments { "Payments" }
            (payment_table(&payments))
        }
        section aria-labelledby="ledger" {
            h2 #ledger { "Ledger entries" }
            (entry_table(&entries))
        }
        section aria-labelledby="notifications" {
            h2 #notifications { "Notifications sent" }
            (notification_table(&notes))
            p { a href=(list_link("/console/notifications")) { "All notifications of this customer" } }
        }
    })
}

/// `pln_…` → "Name (code)" for the plans the subscriptions name.
async fn plan_names(
    op: &Operator,
    subs: &[Subscription],
) -> Result<BTreeMap<String, String>, ConsoleError> {
    let mut ids: BTreeSet<String> = BTreeSet::new();
    for s in subs {
        ids.insert(s.plan.clone());
        ids.extend(s.phases.iter().map(|p| p.plan.clone()));
        ids.extend(s.scheduled_change.iter().map(|p| p.plan.clone()));
    }
    let mut names = BTreeMap::new();
    for id in ids {
        let plan: Plan =
            dispatch::get(op, &format!("/v1/plans/{}", dispatch::segment(&id))).await?;
        names.insert(id, format!("{} ({})", plan.name, plan.code));
    }
    Ok(names)
}

/// The payments of the invoices shown (their attempts, a few per invoice).
async fn payments_of(op: &Operator, invoices: &[Invoice]) -> Result<Vec<Payment>, ConsoleError> {
    let mut out = Vec::new();
    for inv in invoices {
        let query = [("invoice", inv.id.as_str()), ("limit", SHOWN)];
        let page: List<Payment> =
            dispatch::get(op, &dispatch::with_query("/v1/payments", &query)).await?;
        out.extend(page.data);
    }
    Ok(out)
}

fn subscriptions(
    op: &Operator,
    c: &CustomerView,
    subs: &List<Subscription>,
    plans: &BTreeMap<String, String>,
) -> Markup {
    let plan = |id: &str| plans.get(id).cloned().unwrap_or_else(|| id.to_string());
    html! {
        @if subs.data.is_empty() { (components::empty("No subscriptions.")) }
        @for s in &subs.data {
            h3 { code { (s.id) } " · " (plan(&s.plan)) " " (components::status(&s.status)) }
            @if let Some(end) = &s.ends_at { p { "Ends " (components::time_text(end)) "." } }
            div.table-wrap { table {
                caption { "Phases" }
                thead { tr { th scope="col" { "Plan" } th scope="col" { "From" } th scope="col" { "Until" } } }
                tbody { @for p in &s.phases { tr {
                    td { (plan(&p.plan)) }
                    td { (components::time_text(&p.start_at)) }
                    td { (p.end_at.as_deref().map(components::time_text).unwrap_or_else(|| "open".into())) }
                } } }
            } }
            @if let Some(change) = &s.scheduled_change {
                p { "Scheduled change: to " (plan(&change.plan)) " from " (components::time_text(&change.start_at)) "." }
            }
            @if s.status != "canceled" { (cancel_forms(op, c, s)) }
        }
        @if subs.has_more { p.hint { "The first " (SHOWN) " subscriptions." } }
    }
}

fn cancel_forms(op: &Operator, c: &CustomerView, s: &Subscription) -> Markup {
    let action = format!(
        "/console/customers/{}/subscriptions/{}/cancel",
        dispatch::segment(&c.id),
        dispatch::segment(&s.id)
    );
    html! {
        div.actions {
            (components::action_form(op, &action, "Cancel at period end", &[("at", "period_end")], Confirm::Ask))
            (components::action_form(op, &action, "Cancel now", &[("at", "now")], Confirm::Ask))
        }
    }
}

fn invoice_table(invoices: &List<Invoice>) -> Markup {
    html! {
        @if invoices.data.is_empty() { (components::empty("No invoices.")) } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Invoice" } th scope="col" { "Kind" } th scope="col" { "Status" }
                    th scope="col" { "Period" } th.num scope="col" { "Total" } th.num scope="col" { "Due" }
                } }
                tbody { @for i in &invoices.data { tr {
                    td { a href=(format!("/console/invoices/{}", dispatch::segment(&i.id))) { (i.id) } }
                    td { (i.kind) }
                    td { (components::status(&i.status)) }
                    td { (components::time_text(&i.period_start)) " – " (components::time_text(&i.period_end)) }
                    td.num { (money(i.total_minor, &i.currency)) }
                    td.num { (money(i.amount_due_minor, &i.currency)) }
                } } }
            } }
        }
    }
}

fn payment_table(payments: &[Payment]) -> Markup {
    html! {
        @if payments.is_empty() { (components::empty("No payments for the invoices shown.")) } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Payment" } th scope="col" { "Invoice" } th.num scope="col" { "Attempt" }
                    th.num scope="col" { "Amount" } th.num scope="col" { "Refunded" }
                    th scope="col" { "Status" } th scope="col" { "Created" }
                } }
                tbody { @for p in payments { tr {
                    td { a href=(format!("/console/payments/{}", dispatch::segment(&p.id))) { (p.id) } }
                    td { code { (p.invoice) } }
                    td.num { (p.attempt) }
                    td.num { (money(p.amount_minor, &p.currency)) }
                    td.num { (money(p.refunded_minor, &p.currency)) }
                    td { (components::status(&p.status)) }
                    td { (components::time_text(&p.created_at)) }
                } } }
            } }
        }
    }
}

fn entry_table(entries: &List<Entry>) -> Markup {
    html! {
        @if entries.data.is_empty() { (components::empty("No ledger entries.")) } @else {
            div.table-wrap { table {
                thead { tr {
                    th.num scope="col" { "Seq" } th scope="col" { "Entry" } th scope="col" { "Kind" }
                    th scope="col" { "Reason" } th scope="col" { "Effective" }
                } }
                tbody { @for e in &entries.data { tr {
                    td.num { (e.seq) }
                    td { code { (e.id) } }
                    td { (e.kind) }
                    td { (e.reason) }
                    td { (components::time_text(&e.effective_at)) }
                } } }
            } }
            @if entries.has_more { p.hint { "The first " (SHOWN) " entries." } }
        }
    }
}

fn notification_table(notes: &List<Notification>) -> Markup {
    html! {
        @if notes.data.is_empty() { (components::empty("None on the first page of the list.")) } @else {
            div.table-wrap { table {
                thead { tr { th scope="col" { "Type" } th scope="col" { "Notification" } th scope="col" { "Created" } } }
                tbody { @for n in &notes.data { tr {
                    td { (n.event_type) }
                    td { code { (n.id) } }
                    td { (components::time_text(&n.created_at)) }
                } } }
            } }
        }
    }
}
