//! The operator console: server-rendered pages at `/console` for the people who run billing.
//!
//! It is a client of the public API that lives in the process: pages read through the same
//! endpoints a client would (`dispatch`), and every action posts to them with an idempotency key
//! minted when its form was rendered (`form`). Templates are `maud` macros compiled into the
//! binary; the one stylesheet is embedded; there is no script. Every response carries a strict
//! Content-Security-Policy and refuses to be framed.

pub mod alerts;
pub mod amount;
pub mod assets;
pub mod catalog;
pub mod chart;
pub mod components;
pub mod coupons;
pub mod customer;
pub mod customer_actions;
pub mod customer_billing;
pub mod customer_credits;
pub mod customers;
pub mod dead_letters;
pub mod dispatch;
pub mod events;
pub mod features;
pub mod form;
pub mod invoice_actions;
pub mod invoice_document;
pub mod invoices;
pub mod keys;
pub mod meters;
pub mod notifications;
pub mod overview;
pub mod page;
pub mod payments;
pub mod plans;
pub mod reconciliations;
pub mod session;
pub mod sign_in;
pub mod webhook_events;

use std::sync::{Arc, RwLock};

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::AppState;

/// The policy every console page is served with: nothing but this origin's stylesheet, images
/// and forms; no script at all; never framed (except the invoice document, which sets its own).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's shared state: its sessions and the API router it calls in-process.
#[derive(Debug, Default)]
pub struct Console {
    /// Who is signed in.
    pub sessions: session::Sessions,
    api: RwLock<Option<Router>>,
}

impl Console {
    /// Hands the console the API router once it is built (the console is part of the router it
    /// calls, so it gets it after construction).
    pub fn set_api(&self, router: Router) {
        *self.api.write().unwrap_or_else(|p| p.into_inner()) = Some(router);
    }

    /// The API router, while serving.
    pub fn api(&self) -> Option<Router> {
        self.api.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Drops the router when serving ends. The router holds the shared state, which holds the
    /// console: without this the cycle would keep the writer's handle alive and the daemon
    /// would never finish draining.
    pub fn clear_api(&self) {
        *self.api.write().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The console's routes, to be nested at `/console`.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .merge(overview::routes())
        .merge(alerts::routes())
        .route("/sign-in", get(sign_in::show).post(sign_in::submit))
        .route("/sign-out", post(sign_in::sign_out))
        .merge(events::routes())
        .merge(catalog::routes())
        .merge(keys::routes())
        .route(
            assets::STYLESHEET_PATH.trim_start_matches("/console"),
            get(assets::stylesheet),
        )
        .merge(dead_letters::routes())
        .merge(webhook_events::routes())
        .merge(notifications::routes())
        .merge(customers::routes())
        .merge(customer::routes())
        .merge(customer_actions::routes())
        .merge(invoices::routes())
        .merge(invoice_actions::routes())
        .merge(invoice_document::routes())
        .merge(payments::routes())
        .merge(reconciliations::routes())
        .fallback(not_found)
        .layer(middleware::from_fn(security_headers))
}

async fn not_found() -> Response {
    page::ConsoleError::not_found("there is no such console page").into_response()
}

/// Adds the security headers to every console response that has not set its own, and answers
/// a page whose handler panicked with a 500 page instead of a dropped connection.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = match crate::api::panic_guard::PanicGuard::new(next.run(request)).await {
        Ok(response) => response,
        Err(()) => {
            tracing::error!("a console page handler panicked");
            page::ConsoleError::internal(
                "the page failed inside the server; other requests are unaffected",
            )
            .into_response()
        }
    };
    let headers = response.headers_mut();
    let defaults = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, value);
        }
    }
    response
}
