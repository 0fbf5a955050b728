//! The HTTP surface: axum routers, authentication, problem+json errors, one file per resource.
//!
//! This layer parses and validates (no writes), builds a command, and hands it to the writer or
//! reads a snapshot. It knows nothing of redb tables: storage goes through the domain modules.

pub mod alerts;
pub mod api_keys;
pub mod coupons;
pub mod credit_notes;
pub mod customers;
pub mod dead_letters;
pub mod documents;
pub mod entitlements;
pub mod event_anomalies;
pub mod event_destinations;
pub mod events;
pub mod extract;
pub mod features;
pub mod grants;
pub mod health;
pub mod idempotent;
pub mod invoices;
pub mod ledger;
pub mod meters;
pub mod notifications;
pub mod openapi;
pub mod pagination;
pub mod panic_guard;
pub mod parties;
pub mod payments;
pub mod plans;
pub mod problem;
pub mod subscription_changes;
pub mod subscriptions;
pub mod tax_rates;
pub mod tenant_settings;
pub mod usage;
pub mod wallet;
pub mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::idempotency::InFlight;
use crate::store::writer::WriterHandle;
use crate::store::Store;
use problem::{ApiError, PROBLEM_JSON};

/// Everything a handler needs, shared behind an `Arc`.
pub struct AppState {
    /// Reads.
    pub store: Arc<Store>,
    /// Writes.
    pub writer: WriterHandle,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Idempotency keys currently executing.
    pub in_flight: InFlight,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Wakes the job workers when something was enqueued.
    pub jobs_wake: Arc<tokio::sync::Notify>,
    /// Becomes true when the daemon stops: work detached from a request (a billing run's
    /// continuation) ends then, so it never holds the shutdown.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// The operator console's sessions and its in-process route to this API.
    pub console: crate::console::Console,
}

/// The complete router: the API, and the console when it is enabled.
pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = usize::try_from(state.config.http.body_limit_bytes).unwrap_or(usize::MAX);
    let api = api_routes()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Extractors that read raw bodies (the webhook receiver) obey the same limit.
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(observe))
        .with_state(Arc::clone(&state));
    if !state.config.console.enabled {
        return api;
    }
    state.console.set_api(api.clone());
    let console = crate::console::router()
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(Arc::clone(&state));
    api.nest("/console", console)
}

/// Every API route, without the layers.
fn api_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::serve))
        .route(
            "/v1/customers",
            get(customers::list).post(customers::create),
        )
        .route(
            "/v1/customers/{id}",
            get(customers::get).post(customers::update),
        )
        .route("/v1/customers/{id}/balance", get(grants::balance))
        .route(
            "/v1/customers/{id}/top-ups",
            get(wallet::list_top_ups).post(wallet::create_top_up),
        )
        .route("/v1/top-ups/{id}", get(wallet::get_top_up))
        .route(
            "/v1/customers/{id}/auto-recharge",
            get(wallet::get_auto_recharge)
                .post(wallet::set_auto_recharge)
                .delete(wallet::delete_auto_recharge),
        )
        .route("/v1/credit-grants", post(grants::create))
        .route("/v1/credit-grants/{id}", get(grants::get))
        .route("/v1/credit-grants/{id}/void", post(grants::void))
        .route("/v1/accounts", get(ledger::list_accounts))
        .route(
            "/v1/journal-entries",
            get(ledger::list_entries).post(ledger::create_entry),
        )
        .route("/v1/journal-entries/{id}", get(ledger::get_entry))
        .route("/v1/ledger/verify", get(ledger::verify_ledger))
        .route("/v1/plans", get(plans::list).post(plans::create))
        .route("/v1/plans/{id}", get(plans::get))
        .route("/v1/plans/{id}/versions", post(plans::create_version))
        .route(
            "/v1/tax-rates",
            get(tax_rates::list).post(tax_rates::create),
        )
        .route("/v1/tax-rates/{id}", get(tax_rates::get))
        .route("/v1/tax-rates/{id}/archive", post(tax_rates::archive))
        .route("/v1/alerts", get(alerts::list).post(alerts::create))
        .route("/v1/alerts/{id}", get(alerts::get))
        .route("/v1/alerts/{id}/archive", post(alerts::archive))
        .route("/v1/alerts/{id}/firings", get(alerts::firings))
        .route("/v1/features", get(features::list).post(features::create))
        .route("/v1/features/{id}", get(features::get))
        .route("/v1/features/{id}/archive", post(features::archive))
        .route(
            "/v1/plans/{id}/entitlements",
            get(entitlements::list_for_plan).post(entitlements::set_for_plan),
        )
        .route(
            "/v1/customers/{id}/entitlement-overrides",
            get(entitlements::list_overrides).post(entitlements::set_override),
        )
        .route(
            "/v1/customers/{id}/entitlement-overrides/{feature}/remove",
            post(entitlements::remove_override),
        )
        .route(
            "/v1/customers/{id}/entitlement-grants",
            get(entitlements::list_grants).post(entitlements::create_grant),
        )
        .route(
            "/v1/customers/{id}/entitlements",
            get(entitlements::check_all),
        )
        .route(
            "/v1/customers/{id}/entitlements/{feature}",
            get(entitlements::check_one),
        )
        .route("/v1/coupons", get(coupons::list).post(coupons::create))
        .route("/v1/coupons/{id}", get(coupons::get))
        .route(
            "/v1/subscriptions/{id}/discounts",
            get(coupons::list_for_subscription).post(coupons::apply_to_subscription),
        )
        .route(
            "/v1/customers/{id}/discounts",
            get(coupons::list_for_customer).post(coupons::apply_to_customer),
        )
        .route("/v1/discounts/{id}/remove", post(coupons::remove))
        .route(
            "/v1/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route("/v1/subscriptions/{id}", get(subscriptions::get))
        .route("/v1/subscriptions/{id}/cancel", post(subscriptions::cancel))
        .route(
            "/v1/subscriptions/{id}/change",
            post(subscription_changes::change),
        )
        .route(
            "/v1/subscriptions/{id}/change/preview",
            post(subscription_changes::preview),
        )
        .route(
            "/v1/subscriptions/{id}/scheduled-change/cancel",
            post(subscription_changes::cancel_scheduled),
        )
        .route(
            "/v1/subscriptions/{id}/end-trial",
            post(subscription_changes::end_trial),
        )
        .route(
            "/v1/subscriptions/{id}/resume",
            post(subscription_changes::resume),
        )
        .route("/v1/billing-runs", post(invoices::create_run))
        .route("/v1/billing-runs/{id}", get(invoices::get_run))
        .route(
            "/v1/tenant/settings",
            get(tenant_settings::get).post(tenant_settings::update),
        )
        .route("/v1/invoices", get(invoices::list))
        .route("/v1/invoices/{id}", get(invoices::get))
        .route("/v1/invoices/{id}/void", post(invoices::void))
        .route("/v1/invoices/{id}/credit-notes", post(credit_notes::create))
        .route("/v1/credit-notes", get(credit_notes::list))
        .route("/v1/credit-notes/{id}", get(credit_notes::get))
        .route(
            "/v1/credit-notes/{id}/document",
            get(documents::credit_note_document),
        )
        .route("/v1/invoices/{id}/verify", get(invoices::verify))
        .route("/v1/invoices/{id}/document", get(documents::document))
        .route(
            "/v1/customers/{id}/upcoming-invoice",
            get(invoices::upcoming),
        )
        .route(
            "/v1/webhook-endpoints",
            get(webhooks::list_endpoints).post(webhooks::create_endpoint),
        )
        .route("/v1/webhook-endpoints/{id}", get(webhooks::get_endpoint))
        .route(
            "/v1/webhook-endpoints/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route(
            "/v1/event-destinations",
            get(event_destinations::list).post(event_destinations::create),
        )
        .route(
            "/v1/event-destinations/{id}",
            get(event_destinations::get).post(event_destinations::update),
        )
        .route(
            "/v1/event-destinations/{id}/rotate-secret",
            post(event_destinations::rotate_secret),
        )
        .route(
            "/v1/notifications/{id}/deliveries",
            get(event_destinations::deliveries),
        )
        .route(
            "/v1/notifications/{id}/resend",
            post(event_destinations::resend),
        )
        .route("/v1/hooks/{endpoint_id}", post(webhooks::receive))
        .route("/v1/webhook-events", get(webhooks::list_events))
        .route("/v1/webhook-events/{id}", get(webhooks::get_event))
        .route(
            "/v1/webhook-events/{id}/replay",
            post(webhooks::replay_event),
        )
        .route("/v1/invoices/{id}/pay", post(payments::pay))
        .route("/v1/payments", get(payments::list))
        .route("/v1/payments/{id}", get(payments::get))
        .route("/v1/payments/{id}/refund", post(payments::refund))
        .route("/v1/payments/{id}/cancel", post(payments::cancel))
        .route("/v1/notifications", get(notifications::list))
        .route("/v1/notifications/{id}", get(notifications::get))
        .route(
            "/v1/reconciliations",
            get(payments::reconcile_list).post(payments::reconcile_start),
        )
        .route("/v1/reconciliations/{id}", get(payments::reconcile_get))
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/replay", post(dead_letters::replay_bulk))
        .route(
            "/v1/dead-letters/{id}/replay",
            post(dead_letters::replay_one),
        )
        .route("/v1/meters", get(meters::list).post(meters::create))
        .route("/v1/meters/{id}", get(meters::get).post(meters::update))
        .route("/v1/events", get(events::list).post(events::ingest))
        .route("/v1/events/{id}", get(events::get))
        .route("/v1/event-anomalies", get(event_anomalies::list))
        .route("/v1/usage", get(usage::get))
        .route("/v1/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/v1/api-keys/{id}/revoke", post(api_keys::revoke))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not support that method",
    )
}

/// Counts every request by route and status, and turns any error response that is not already
/// problem+json (one produced inside axum or hyper) into one, so clients see one error shape. A
/// handler that panics is answered 500 `internal_error` rather than dropping the connection.
async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let mut response = match panic_guard::PanicGuard::new(next.run(request)).await {
        Ok(response) => response,
        Err(()) => {
            tracing::error!(route, "a request handler panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the request failed inside the server; other requests are unaffected",
            )
            .into_response()
        }
    };
    let status = response.status();
    if status.as_u16() >= 400 {
        let is_problem = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
        if !is_problem {
            let code = match status {
                StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                StatusCode::NOT_FOUND => "not_found",
                s if s.is_server_error() => "internal_error",
                _ => "bad_request",
            };
            response = ApiError::new(
                status,
                code,
                status.canonical_reason().unwrap_or("error").to_string(),
            )
            .into_response();
        }
    }
    metrics::counter!(
        "tally_http_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status" => status.as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!("tally_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
