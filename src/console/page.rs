//! The page frame every console page shares (header, navigation, flash message, sign-out) and
//! the console's error pages.

use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::dispatch::Reply;
use super::session::Operator;

/// The sections of the navigation, in order: `(path, label)`.
pub const NAV: &[(&str, &str)] = &[
    ("/console", "Overview"),
    ("/console/customers", "Customers"),
    ("/console/invoices", "Invoices"),
    ("/console/payments", "Payments"),
    ("/console/events", "Events"),
    ("/console/dead-letters", "Dead letters"),
    ("/console/webhook-events", "Webhooks"),
    ("/console/notifications", "Notifications"),
    ("/console/catalog", "Catalog"),
    ("/console/alerts", "Alerts"),
    ("/console/keys", "API keys"),
];

/// Renders a whole page for a signed-in operator. `section` is the `NAV` path to mark current.
pub fn page(op: &Operator, section: &str, title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "Tally" }
                    span.tenant { "Tenant " strong { (op.tenant_name) } }
                    @if op.read_only() { span.badge.ro { "read-only" } }
                    form.signout method="post" action="/console/sign-out" {
                        input type="hidden" name="csrf" value=(op.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                nav.main aria-label="Sections" {
                    ul {
                        @for (path, label) in NAV {
                            li {
                                @if *path == section {
                                    a href=(path) aria-current="page" { (label) }
                                } @else {
                                    a href=(path) { (label) }
                                }
                            }
                        }
                    }
                }
                main #main {
                    @if let Some(flash) = &op.flash {
                        @if flash.is_error {
                            p.flash.error role="alert" { (flash.text) }
                        } @else {
                            p.flash.ok role="status" { (flash.text) }
                        }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    // Not `no-store`: the back button must show the page as rendered, with the idempotency
    // keys its forms were given, so resubmitting one replays instead of acting twice.
    // `private` keeps shared caches out; `no-cache` makes every ordinary visit fetch afresh.
    (
        [(header::CACHE_CONTROL, "private, no-cache")],
        Html(markup.into_string()),
    )
        .into_response()
}

/// The `<head>`: the title, the viewport and the one stylesheet.
pub fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Tally console" }
            link rel="stylesheet" href=(super::assets::STYLESHEET_PATH);
        }
    }
}

/// Why a console page could not be shown.
#[derive(Debug, Clone)]
pub struct ConsoleError {
    /// The status to answer with.
    pub status: StatusCode,
    /// What to tell the operator.
    pub detail: String,
}

impl ConsoleError {
    /// A failure inside the server.
    pub fn internal(detail: impl Into<String>) -> Self {
        ConsoleError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            detail: detail.into(),
        }
    }

    /// A page that does not exist.
    pub fn not_found(detail: impl Into<String>) -> Self {
        ConsoleError {
            status: StatusCode::NOT_FOUND,
            detail: detail.into(),
        }
    }

    /// A refused request (forged form, read-only key).
    pub fn forbidden(detail: impl Into<String>) -> Self {
        ConsoleError {
            status: StatusCode::FORBIDDEN,
            detail: detail.into(),
        }
    }

    /// A bad request (a malformed form).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ConsoleError {
            status: StatusCode::BAD_REQUEST,
            detail: detail.into(),
        }
    }

    /// The API's error reply, shown with its status and detail.
    pub fn from_reply(reply: &Reply) -> Self {
        ConsoleError {
            status: reply.status,
            detail: reply.problem_text(),
        }
    }
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(e: crate::store::StoreError) -> Self {
        ConsoleError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: format!("the store could not be read: {e}"),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body {
                    main #main.error-page {
                        h1 { (self.status.as_u16()) " " (title) }
                        p.detail { (self.detail) }
                        p { a href="/console" { "Back to the console" } }
                    }
                }
            }
        };
        (
            self.status,
            [(header::CACHE_CONTROL, "no-store")],
            Html(markup.into_string()),
        )
            .into_response()
    }
}
