//! The catalog's plans: the list (the catalog's first page) and a plan version's page with its
//! fixed fee, charges and prices exactly as stored, threshold, entitlements and other versions.

use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

use super::catalog::{self, yes_no, Cursor, ListPage, SECTION};
use super::components;
use super::dispatch;
use super::page::{page, ConsoleError};
use super::session::Operator;
use crate::api::AppState;

/// The plans page's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/catalog", get(list))
        .route("/catalog/plans/{id}", get(show))
}

#[derive(Debug, Deserialize)]
struct FixedFee {
    amount_minor: i64,
    timing: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Tier {
    up_to: Option<String>,
    unit_price: String,
    flat_fee_minor: i64,
}

#[derive(Debug, Deserialize)]
struct Charge {
    meter: String,
    model: String,
    free_units: Option<String>,
    unit_price: Option<String>,
    package_size: Option<String>,
    tiers: Option<Vec<Tier>>,
}

#[derive(Debug, Deserialize)]
struct PlanView {
    id: String,
    code: String,
    name: String,
    currency: String,
    interval: String,
    interval_count: u32,
    fixed_fee: Option<FixedFee>,
    charges: Vec<Charge>,
    minimum_minor: Option<i64>,
    version: u32,
    previous_version: Option<String>,
    bill_usage_in_trial: bool,
    threshold_minor: Option<i64>,
    created_at: String,
}

#[derive(Debug, Deserialize)]
struct Entitlement {
    feature: String,
    #[serde(rename = "type")]
    kind: String,
    enabled: bool,
    config: Option<serde_json::Value>,
    meter: Option<String>,
    limit: Option<String>,
    reset: Option<String>,
    hard: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct EntitlementList {
    data: Vec<Entitlement>,
}

#[derive(Debug, Deserialize)]
struct Keyed {
    key: String,
}

fn plan_link(p: &PlanView) -> String {
    format!("/console/catalog/plans/{}", dispatch::segment(&p.id))
}

fn period(p: &PlanView) -> String {
    if p.interval_count == 1 {
        p.interval.clone()
    } else {
        format!("every {} × {}", p.interval_count, p.interval)
    }
}

/// The plans (every version), one page.
pub async fn list(op: Operator, Query(cursor): Query<Cursor>) -> Result<Response, ConsoleError> {
    let after = cursor.starting_after.unwrap_or_default();
    let path = dispatch::with_query(
        "/v1/plans",
        &[("limit", catalog::PAGE_LIMIT), ("starting_after", &after)],
    );
    let plans: ListPage<PlanView> = dispatch::get(&op, &path).await?;
    let body = html! {
        (catalog::subnav(SECTION))
        section {
            h2 { "Plans" }
            @if plans.data.is_empty() {
                (components::empty("No plans yet."))
            } @else {
                div.table-wrap { table {
                    thead { tr {
                        th { "Code" } th { "Name" } th.num { "Version" } th { "Period" }
                        th.num { "Fixed fee" } th.num { "Charges" } th { "Created" }
                    } }
                    tbody { @for p in &plans.data { tr {
                        td { a href=(plan_link(p)) { code { (p.code) } } }
                        td { (p.name) }
                        td.num { (p.version) }
                        td { (period(p)) }
                        td.num {
                            @if let Some(f) = &p.fixed_fee { (components::money(f.amount_minor, &p.currency)) }
                        }
                        td.num { (p.charges.len()) }
                        td { (components::time_text(&p.created_at)) }
                    } } }
                } }
            }
            (components::pager(SECTION, plans.next_cursor.as_deref(), !after.is_empty()))
        }
    };
    Ok(page(&op, SECTION, "Catalog: plans", body))
}

/// One plan version.
pub async fn show(op: Operator, Path(id): Path<String>) -> Result<Response, ConsoleError> {
    let plan: PlanView =
        dispatch::get(&op, &format!("/v1/plans/{}", dispatch::segment(&id))).await?;
    let entitlements: EntitlementList = dispatch::get(
        &op,
        &format!("/v1/plans/{}/entitlements", dispatch::segment(&plan.id)),
    )
    .await?;
    let versions_path = dispatch::with_query(
        "/v1/plans",
        &[("code", &plan.code), ("limit", catalog::PAGE_LIMIT)],
    );
    let versions: ListPage<PlanView> = dispatch::get(&op, &versions_path).await?;
    let mut meter_keys = Vec::with_capacity(plan.charges.len());
    for c in &plan.charges {
        meter_keys.push(key_of(&op, "/v1/meters", &c.meter).await);
    }
    let mut feature_keys = Vec::with_capacity(entitlements.data.len());
    for e in &entitlements.data {
        feature_keys.push(key_of(&op, "/v1/features", &e.feature).await);
    }
    let title = format!("Plan {} (version {})", plan.code, plan.version);
    let body = html! {
        (catalog::subnav(SECTION))
        section { h2 { "Terms" } (terms(&plan)) }
        section { h2 { "Usage charges" } (charges(&plan, &meter_keys)) }
        section { h2 { "Entitlements" } (entitlement_table(&entitlements.data, &feature_keys)) }
        section { h2 { "Versions" } (version_list(&plan, &versions.data)) }
    };
    Ok(page(&op, SECTION, &title, body))
}

/// The key of a meter or feature named by id (the id when it cannot be read). Plans hold a
/// few charges and entitlements, so this stays a handful of in-process reads.
async fn key_of(op: &Operator, collection: &str, id: &str) -> String {
    let path = format!("{collection}/{}", dispatch::segment(id));
    match dispatch::get::<Keyed>(op, &path).await {
        Ok(k) => k.key,
        Err(_) => id.to_string(),
    }
}

fn terms(p: &PlanView) -> Markup {
    let minor = |m: Option<i64>| match m {
        Some(v) => components::money(v, &p.currency),
        None => "none".to_string(),
    };
    let fixed = match &p.fixed_fee {
        Some(f) => format!(
            "{} per period, {}",
            components::money(f.amount_minor, &p.currency),
            f.timing
                .as_deref()
                .unwrap_or("in_arrears")
                .replace('_', " ")
        ),
        None => "none".to_string(),
    };
    components::fields(&[
        ("Id", html! { code { (p.id) } }),
        ("Name", html! { (p.name) }),
        ("Currency", html! { (p.currency) }),
        ("Period", html! { (period(p)) }),
        ("Fixed fee", html! { span.fixed-fee { (fixed) } }),
        ("Minimum per period", html! { (minor(p.minimum_minor)) }),
        (
            "Progressive billing threshold",
            html! { span.threshold { (minor(p.threshold_minor)) } },
        ),
        (
            "Usage billed in trial",
            html! { (yes_no(p.bill_usage_in_trial)) },
        ),
        ("Created", html! { (components::time_text(&p.created_at)) }),
    ])
}

/// A unit price as stored (a decimal string in major units), with its currency.
fn unit_price(price: &str, currency: &str) -> String {
    format!("{price} {currency}")
}

fn charges(p: &PlanView, meter_keys: &[String]) -> Markup {
    if p.charges.is_empty() {
        return components::empty("No usage charges.");
    }
    html! {
        div.table-wrap { table.charges {
            thead { tr {
                th { "Meter" } th { "Model" } th.num { "Free units" } th { "Price" }
            } }
            tbody { @for (c, key) in p.charges.iter().zip(meter_keys) { tr {
                td { code { (key) } br; span.muted { (c.meter) } }
                td { (c.model.replace('_', " ")) }
                td.num { (c.free_units.as_deref().unwrap_or("0")) }
                td { (price(c, &p.currency)) }
            } } }
        } }
    }
}

fn price(c: &Charge, currency: &str) -> Markup {
    html! {
        @if let Some(u) = &c.unit_price {
            @match &c.package_size {
                Some(size) => span.price { (unit_price(u, currency)) " per package of " (size) " units" },
                None => span.price { (unit_price(u, currency)) " per unit" },
            }
        }
        @if let Some(tiers) = &c.tiers {
            table.tiers {
                thead { tr { th { "Up to" } th { "Per unit" } th.num { "Flat fee" } } }
                tbody { @for t in tiers { tr {
                    td { (t.up_to.as_deref().unwrap_or("and above")) }
                    td.price { (unit_price(&t.unit_price, currency)) }
                    td.num { (components::money(t.flat_fee_minor, currency)) }
                } } }
            }
        }
    }
}

fn entitlement_table(items: &[Entitlement], feature_keys: &[String]) -> Markup {
    if items.is_empty() {
        return components::empty("This version grants no entitlements.");
    }
    html! {
        div.table-wrap { table {
            thead { tr {
                th { "Feature" } th { "Kind" } th { "Enabled" } th { "Limit" } th { "Detail" }
            } }
            tbody { @for (e, key) in items.iter().zip(feature_keys) { tr {
                td { code { (key) } br; span.muted { (e.feature) } }
                td { (e.kind) }
                td { (yes_no(e.enabled)) }
                td {
                    @if let Some(l) = &e.limit {
                        (l)
                        @if let Some(m) = &e.meter { " of " code { (m) } }
                        @if let Some(r) = &e.reset { " per " (r) }
                        @if e.hard == Some(true) { " (hard)" }
                    }
                }
                td { @if let Some(c) = &e.config { (components::json_block(c)) } }
            } } }
        } }
    }
}

fn version_list(current: &PlanView, versions: &[PlanView]) -> Markup {
    html! {
        @if let Some(prev) = &current.previous_version {
            p { "Follows " a href=(format!("/console/catalog/plans/{}", dispatch::segment(prev))) { code { (prev) } } "." }
        }
        ul.versions { @for v in versions {
            li {
                @if v.id == current.id {
                    strong { "Version " (v.version) " (this page)" }
                } @else {
                    a href=(plan_link(v)) { "Version " (v.version) }
                }
                " · " (v.name) " · created " (components::time_text(&v.created_at))
            }
        } }
    }
}
