//! The catalog's coupons page (read-only: coupons are made through the API).

use std::sync::Arc;

use axum::extract::Query;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Deserialize;

use super::catalog::{self, Cursor, ListPage, SECTION};
use super::components;
use super::dispatch;
use super::page::{page, ConsoleError};
use super::session::Operator;
use crate::api::AppState;

const PATH: &str = "/console/catalog/coupons";

/// The coupons page's route.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/catalog/coupons", get(list))
}

#[derive(Debug, Deserialize)]
struct AppliesTo {
    plans: Vec<String>,
    meters: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct CouponView {
    id: String,
    code: String,
    name: Option<String>,
    percent_off: Option<String>,
    amount_off_minor: Option<i64>,
    currency: Option<String>,
    duration: String,
    duration_periods: Option<u32>,
    max_redemptions: Option<u64>,
    redeem_by: Option<String>,
    applies_to: AppliesTo,
    times_redeemed: u64,
}

/// The coupons, one page.
pub async fn list(op: Operator, Query(cursor): Query<Cursor>) -> Result<Response, ConsoleError> {
    let after = cursor.starting_after.unwrap_or_default();
    let path = dispatch::with_query(
        "/v1/coupons",
        &[("limit", catalog::PAGE_LIMIT), ("starting_after", &after)],
    );
    let coupons: ListPage<CouponView> = dispatch::get(&op, &path).await?;
    let body = html! {
        (catalog::subnav(PATH))
        section {
            h2 { "Coupons" }
            @if coupons.data.is_empty() {
                (components::empty("No coupons yet."))
            } @else {
                div.table-wrap { table {
                    thead { tr {
                        th { "Code" } th { "Name" } th { "Discount" } th { "Duration" }
                        th { "Limited to" } th.num { "Redeemed" } th { "Redeem by" }
                    } }
                    tbody { @for c in &coupons.data { tr {
                        td { code { (c.code) } br; span.muted { (c.id) } }
                        td { (c.name.as_deref().unwrap_or("")) }
                        td { (discount(c)) }
                        td { (duration(c)) }
                        td { (applies_to(&c.applies_to)) }
                        td.num {
                            (c.times_redeemed)
                            @if let Some(max) = c.max_redemptions { " / " (max) }
                        }
                        td { (c.redeem_by.as_deref().map(components::time_text).unwrap_or_default()) }
                    } } }
                } }
            }
            (components::pager(PATH, coupons.next_cursor.as_deref(), !after.is_empty()))
        }
    };
    Ok(page(&op, SECTION, "Catalog: coupons", body))
}

fn discount(c: &CouponView) -> String {
    match (&c.percent_off, c.amount_off_minor, &c.currency) {
        (Some(p), _, _) => format!("{p} % off"),
        (None, Some(a), Some(cur)) => format!("{} off", components::money(a, cur)),
        _ => String::new(),
    }
}

fn duration(c: &CouponView) -> String {
    match c.duration_periods {
        Some(n) => format!("{} ({n} periods)", c.duration),
        None => c.duration.clone(),
    }
}

fn applies_to(a: &AppliesTo) -> String {
    let all: Vec<&str> = a
        .plans
        .iter()
        .chain(a.meters.iter())
        .map(String::as_str)
        .collect();
    if all.is_empty() {
        "everything".into()
    } else {
        all.join(", ")
    }
}
