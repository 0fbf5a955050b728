//! One customer's page: its fields and metadata, usage per meter over the last 30 days,
//! entitlements, then the credit, wallet and billing sections (`customer_credits`,
//! `customer_billing`). Every section reads the first page of its API list only.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::Path;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::chart::{self, Bar};
use super::components;
use super::dispatch;
use super::page::{page, ConsoleError};
use super::session::Operator;
use super::{customer_billing, customer_credits};
use crate::api::AppState;

/// Days of usage the charts show.
const USAGE_DAYS: i64 = 30;
/// Meters charted at most (the first page of the tenant's meters).
const MAX_METERS: &str = "10";
/// Entitlement rows shown at most.
const MAX_ENTITLEMENTS: usize = 25;
const DAY_MS: i64 = 86_400_000;

/// The customer page's route (relative to `/console`).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/customers/{id}", get(show))
}

/// A customer as its page shows it.
#[derive(Debug, Deserialize)]
pub struct CustomerView {
    /// `cus_…`.
    pub id: String,
    /// The tenant's id for it.
    pub external_id: String,
    name: Option<String>,
    email: Option<String>,
    /// Its billing currency.
    pub currency: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    legal_name: Option<String>,
    locale: Option<String>,
    version: u64,
    created_at: String,
}

#[derive(Debug, Deserialize)]
struct Meter {
    id: String,
    key: String,
    name: Option<String>,
    aggregation: String,
}

#[derive(Debug, Deserialize)]
struct MeterPage {
    data: Vec<Meter>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    data: Vec<UsageBucket>,
    total: Option<String>,
}

#[derive(Debug, Deserialize)]
struct UsageBucket {
    from: String,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Check {
    feature_key: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    has_access: bool,
    usage: Option<String>,
    limit: Option<String>,
    remaining: Option<String>,
    source: String,
}

#[derive(Debug, Deserialize)]
struct CheckList {
    data: Vec<Check>,
}

/// The customer page.
pub async fn show(op: Operator, Path(id): Path<String>) -> Result<Response, ConsoleError> {
    let path = format!("/v1/customers/{}", dispatch::segment(&id));
    let customer: CustomerView = dispatch::get(&op, &path).await?;
    let usage = usage_section(&op, &customer).await?;
    let entitlements = entitlements_section(&op, &path).await?;
    let credits = customer_credits::sections(&op, &customer).await?;
    let billing = customer_billing::sections(&op, &customer).await?;
    let title = customer
        .name
        .clone()
        .unwrap_or_else(|| customer.external_id.clone());
    let body = html! {
        (details_section(&customer))
        (usage)
        (entitlements)
        (credits)
        (billing)
    };
    Ok(page(&op, "/console/customers", &title, body))
}

fn details_section(c: &CustomerView) -> Markup {
    let text = |v: &Option<String>| html! { (v.as_deref().unwrap_or("—")) };
    html! {
        section aria-labelledby="details" {
            h2 #details { "Details" }
            (components::fields(&[
                ("Id", html! { code { (c.id) } }),
                ("External id", html! { (c.external_id) }),
                ("Name", text(&c.name)),
                ("Email", text(&c.email)),
                ("Legal name", text(&c.legal_name)),
                ("Currency", html! { (c.currency) }),
                ("Locale", text(&c.locale)),
                ("Version", html! { (c.version) }),
                ("Created", html! { (components::time_text(&c.created_at)) }),
            ]))
            h3 { "Metadata" }
            @if c.metadata.is_empty() {
                (components::empty("No metadata."))
            } @else {
                div.table-wrap { table {
                    thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } } }
                    tbody { @for (k, v) in &c.metadata { tr { td { code { (k) } } td { (v) } } } }
                } }
            }
        }
    }
}

/// Usage per meter, one daily bar chart each, over the last [`USAGE_DAYS`] days (UTC).
async fn usage_section(op: &Operator, c: &CustomerView) -> Result<Markup, ConsoleError> {
    let meters: MeterPage = dispatch::get(
        op,
        &dispatch::with_query("/v1/meters", &[("limit", MAX_METERS)]),
    )
    .await?;
    let today_ms = crate::clock::now_ms().div_euclid(DAY_MS) * DAY_MS;
    let from = crate::clock::rfc3339(today_ms - (USAGE_DAYS - 1) * DAY_MS);
    let mut charts = Vec::with_capacity(meters.data.len());
    for m in &meters.data {
        let query = [
            ("customer", c.id.as_str()),
            ("meter", m.id.as_str()),
            ("from", from.as_str()),
            ("granularity", "day"),
        ];
        let usage: Usage = dispatch::get(op, &dispatch::with_query("/v1/usage", &query)).await?;
        charts.push(meter_chart(m, &usage));
    }
    Ok(html! {
        section aria-labelledby="usage" {
            h2 #usage { "Usage, last " (USAGE_DAYS) " days" }
            @if charts.is_empty() { (components::empty("No meters defined.")) }
            @for chart in &charts { (chart) }
        }
    })
}

fn meter_chart(m: &Meter, usage: &Usage) -> Markup {
    let bars: Vec<Bar> = usage
        .data
        .iter()
        .map(|b| Bar {
            label: b.from.get(..10).unwrap_or(&b.from).to_string(),
            value: b
                .value
                .as_deref()
                .and_then(|v| v.parse::<Decimal>().ok())
                .unwrap_or(Decimal::ZERO),
        })
        .collect();
    let title = match &m.name {
        Some(name) => format!("{name} ({})", m.key),
        None => m.key.clone(),
    };
    html! {
        h3 { (title) }
        p.hint { (m.aggregation) " per day; over the range: " (usage.total.as_deref().unwrap_or("no value")) }
        (chart::bars(&title, &m.key, &bars))
    }
}

async fn entitlements_section(op: &Operator, path: &str) -> Result<Markup, ConsoleError> {
    let checks: CheckList = dispatch::get(op, &format!("{path}/entitlements")).await?;
    Ok(html! {
        section aria-labelledby="entitlements" {
            h2 #entitlements { "Entitlements" }
            @if checks.data.is_empty() {
                (components::empty("No features defined."))
            } @else {
                div.table-wrap { table {
                    thead { tr {
                        th scope="col" { "Feature" } th scope="col" { "Type" }
                        th scope="col" { "Access" } th.num scope="col" { "Usage" }
                        th.num scope="col" { "Limit" } th.num scope="col" { "Remaining" }
                        th scope="col" { "Source" }
                    } }
                    tbody { @for e in checks.data.iter().take(MAX_ENTITLEMENTS) { tr {
                        td { code { (e.feature_key) } }
                        td { (e.kind.as_deref().unwrap_or("—")) }
                        td { (components::status(if e.has_access { "ok" } else { "no access" })) }
                        td.num { (e.usage.as_deref().unwrap_or("")) }
                        td.num { (e.limit.as_deref().unwrap_or("")) }
                        td.num { (e.remaining.as_deref().unwrap_or("")) }
                        td { (e.source) }
                    } } }
                } }
                @if checks.data.len() > MAX_ENTITLEMENTS {
                    p.hint { "The first " (MAX_ENTITLEMENTS) " features of " (checks.data.len()) "." }
                }
            }
        }
    })
}
