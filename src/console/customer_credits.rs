//! A customer's credits and wallet on its page: balance and grants (with the grant form),
//! top-ups and auto-recharge (with the top-up form).

use axum::http::{Method, StatusCode};
use maud::{html, Markup};
use serde::Deserialize;

use super::components::{self, form_tokens, money};
use super::customer::CustomerView;
use super::dispatch;
use super::page::ConsoleError;
use super::session::Operator;

/// Top-ups shown (the first page).
const TOP_UPS_SHOWN: &str = "10";

#[derive(Debug, Deserialize)]
struct Balance {
    balances: Vec<CurrencyBalance>,
}

#[derive(Debug, Deserialize)]
struct CurrencyBalance {
    currency: String,
    credits_available_minor: i64,
    receivable_minor: i64,
    projected_available_minor: Option<i64>,
    grants: Vec<GrantRow>,
}

#[derive(Debug, Deserialize)]
struct GrantRow {
    id: String,
    category: String,
    priority: u32,
    remaining_minor: i64,
    effective_at: String,
    expires_at: Option<String>,
    status: String,
}

#[derive(Debug, Deserialize)]
struct TopUp {
    id: String,
    amount_minor: i64,
    currency: String,
    paid: bool,
    status: String,
    trigger: String,
    invoice: Option<String>,
    created_at: String,
}

#[derive(Debug, Deserialize)]
struct TopUpPage {
    data: Vec<TopUp>,
    has_more: bool,
}

#[derive(Debug, Deserialize)]
struct AutoRecharge {
    currency: String,
    below_minor: i64,
    amount_minor: i64,
    max_per_day: u32,
    enabled: bool,
    state: String,
    started_today: u32,
}

/// The credits and wallet sections.
pub async fn sections(op: &Operator, c: &CustomerView) -> Result<Markup, ConsoleError> {
    let base = format!("/v1/customers/{}", dispatch::segment(&c.id));
    let balance: Balance = dispatch::get(op, &format!("{base}/balance")).await?;
    let top_ups: TopUpPage = dispatch::get(
        op,
        &dispatch::with_query(&format!("{base}/top-ups"), &[("limit", TOP_UPS_SHOWN)]),
    )
    .await?;
    let rule = auto_recharge(op, &format!("{base}/auto-recharge")).await?;
    Ok(html! {
        section aria-labelledby="credits" {
            h2 #credits { "Credits" }
            @for b in &balance.balances { (currency_balance(b)) }
            (grant_form(op, c))
        }
        section aria-labelledby="wallet" {
            h2 #wallet { "Wallet" }
            h3 { "Auto-recharge" }
            @match &rule {
                Some(r) => (rule_fields(r)),
                None => (components::empty("No auto-recharge rule.")),
            }
            h3 { "Top-ups" }
            (top_up_table(&top_ups))
            (top_up_form(op, c))
        }
    })
}

/// The rule, or `None` when the customer has none (the API answers 404).
async fn auto_recharge(op: &Operator, path: &str) -> Result<Option<AutoRecharge>, ConsoleError> {
    let reply = dispatch::call(op, Method::GET, path, None, None).await?;
    if reply.status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !reply.status.is_success() {
        return Err(ConsoleError::from_reply(&reply));
    }
    serde_json::from_slice(&reply.body)
        .map(Some)
        .map_err(|e| ConsoleError::internal(format!("unexpected auto-recharge shape: {e}")))
}

fn currency_balance(b: &CurrencyBalance) -> Markup {
    let cur = b.currency.as_str();
    html! {
        div.cards {
            div.card { div.value { (money(b.credits_available_minor, cur)) } div.label { "Credits available" } }
            div.card { div.value { (money(b.receivable_minor, cur)) } div.label { "Receivable" } }
            @if let Some(p) = b.projected_available_minor {
                div.card { div.value { (money(p, cur)) } div.label { "Projected after current drafts" } }
            }
        }
        @if b.grants.is_empty() {
            (components::empty(&format!("No credit grants in {cur}.")))
        } @else {
            div.table-wrap { table {
                caption { "Grants in " (cur) ", in burn order" }
                thead { tr {
                    th scope="col" { "Grant" } th scope="col" { "Category" } th.num scope="col" { "Priority" }
                    th.num scope="col" { "Remaining" } th scope="col" { "Effective" }
                    th scope="col" { "Expires" } th scope="col" { "Status" }
                } }
                tbody { @for g in &b.grants { tr {
                    td { code { (g.id) } }
                    td { (g.category) }
                    td.num { (g.priority) }
                    td.num { (money(g.remaining_minor, cur)) }
                    td { (components::time_text(&g.effective_at)) }
                    td { (g.expires_at.as_deref().map(components::time_text).unwrap_or_else(|| "never".into())) }
                    td { (components::status(&g.status)) }
                } } }
            } }
        }
    }
}

fn grant_form(op: &Operator, c: &CustomerView) -> Markup {
    if op.read_only() {
        return html! {};
    }
    html! {
        h3 { "Grant credits" }
        form.filters method="post" action=(format!("/console/customers/{}/grant", dispatch::segment(&c.id))) {
            (form_tokens(op))
            div { label for="grant_amount" { "Amount" }
                input #grant_amount type="text" name="amount" inputmode="decimal" required placeholder="25.00"; }
            div { label for="grant_currency" { "Currency" }
                input #grant_currency type="text" name="currency" value=(c.currency) required maxlength="3" size="4"; }
            div { label for="grant_category" { "Category" }
                select #grant_category name="category" {
                    option value="promotional" { "promotional" }
                    option value="paid" { "paid (cash received)" }
                } }
            div { label for="grant_expires" { "Expires (UTC, optional)" }
                input #grant_expires type="date" name="expires"; }
            div { label for="grant_reason" { "Reason (optional)" }
                input #grant_reason type="text" name="reason" maxlength="500"; }
            button type="submit" { "Grant credits" }
        }
    }
}

fn rule_fields(r: &AutoRecharge) -> Markup {
    let cur = r.currency.as_str();
    components::fields(&[
        ("Enabled", html! { (if r.enabled { "yes" } else { "no" }) }),
        ("Below", html! { (money(r.below_minor, cur)) }),
        ("Buys", html! { (money(r.amount_minor, cur)) }),
        (
            "Today",
            html! { (r.started_today) " of at most " (r.max_per_day) },
        ),
        ("State", html! { (components::status(&r.state)) }),
    ])
}

fn top_up_table(page: &TopUpPage) -> Markup {
    html! {
        @if page.data.is_empty() {
            (components::empty("No top-ups."))
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Top-up" } th.num scope="col" { "Amount" } th scope="col" { "Kind" }
                    th scope="col" { "Trigger" } th scope="col" { "Status" } th scope="col" { "Invoice" }
                    th scope="col" { "Created" }
                } }
                tbody { @for t in &page.data { tr {
                    td { code { (t.id) } }
                    td.num { (money(t.amount_minor, &t.currency)) }
                    td { (if t.paid { "paid" } else { "free" }) }
                    td { (t.trigger) }
                    td { (components::status(&t.status)) }
                    td { @if let Some(i) = &t.invoice {
                        a href=(format!("/console/invoices/{}", dispatch::segment(i))) { (i) }
                    } }
                    td { (components::time_text(&t.created_at)) }
                } } }
            } }
            @if page.has_more { p.hint { "The first " (TOP_UPS_SHOWN) " top-ups." } }
        }
    }
}

fn top_up_form(op: &Operator, c: &CustomerView) -> Markup {
    if op.read_only() {
        return html! {};
    }
    html! {
        h3 { "Top up" }
        form.filters method="post" action=(format!("/console/customers/{}/top-up", dispatch::segment(&c.id))) {
            (form_tokens(op))
            div { label for="top_up_amount" { "Amount (" (c.currency) ")" }
                input #top_up_amount type="text" name="amount" inputmode="decimal" required placeholder="50.00"; }
            div { label for="top_up_kind" { "Kind" }
                select #top_up_kind name="kind" {
                    option value="paid" { "paid: invoiced and collected" }
                    option value="free" { "free: promotional credit now" }
                } }
            div { label for="top_up_expires" { "Expires (UTC, optional)" }
                input #top_up_expires type="date" name="expires"; }
            button type="submit" { "Top up" }
        }
    }
}
