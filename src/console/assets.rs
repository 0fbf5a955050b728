//! The console's static files, compiled into the binary: one stylesheet, no scripts, no fonts.

use axum::http::header;
use axum::response::IntoResponse;

/// Where the stylesheet is served (versioned so a new release is never styled by a cached one).
pub const STYLESHEET_PATH: &str = concat!(
    "/console/static/console-",
    env!("CARGO_PKG_VERSION"),
    ".css"
);

const STYLESHEET: &str = include_str!("static/console.css");

/// Serves the stylesheet.
pub async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400, immutable"),
        ],
        STYLESHEET,
    )
}
