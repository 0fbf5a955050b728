//! The catalog section: plans, meters, coupons and features, one list page each, joined by a
//! sub-navigation.

use std::sync::Arc;

use axum::Router;
use maud::{html, Markup};

use crate::api::AppState;

/// The section every catalog page marks in the main navigation.
pub const SECTION: &str = "/console/catalog";

/// Rows per list page.
pub const PAGE_LIMIT: &str = "50";

/// The catalog's pages: `(path, label)`.
const PAGES: &[(&str, &str)] = &[
    ("/console/catalog", "Plans"),
    ("/console/catalog/meters", "Meters"),
    ("/console/catalog/coupons", "Coupons"),
    ("/console/catalog/features", "Features"),
];

/// Every catalog route.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .merge(super::plans::routes())
        .merge(super::meters::routes())
        .merge(super::coupons::routes())
        .merge(super::features::routes())
}

/// The links between the catalog's pages, `current` marked.
pub fn subnav(current: &str) -> Markup {
    html! {
        nav.subnav aria-label="Catalog" {
            @for (path, label) in PAGES {
                @if *path == current {
                    a href=(path) aria-current="page" { (label) }
                } @else {
                    a href=(path) { (label) }
                }
            }
        }
    }
}

/// `?starting_after=` of a catalog list.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Cursor {
    /// The previous page's last id.
    pub starting_after: Option<String>,
}

/// One page of a list as the API answers it.
#[derive(Debug, serde::Deserialize)]
pub struct ListPage<T> {
    /// The items.
    pub data: Vec<T>,
    /// The cursor of the next page.
    pub next_cursor: Option<String>,
}

/// "yes" / "no".
pub fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}
