//! What the customer page can do, each through the public API with the form's idempotency
//! key: grant credits, top up, cancel a subscription (asks first).

use std::sync::Arc;

use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};

use super::dispatch;
use super::form::{self, Action, Form};
use super::page::ConsoleError;
use super::session::Operator;
use crate::api::AppState;

/// The customer actions' routes (relative to `/console`).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/customers/{id}/grant", post(grant))
        .route("/customers/{id}/top-up", post(top_up))
        .route(
            "/customers/{id}/subscriptions/{sub}/cancel",
            post(cancel_subscription),
        )
}

fn customer_page(id: &str) -> String {
    format!("/console/customers/{}", dispatch::segment(id))
}

/// An amount typed in major units (`25`, `25.5`, `0.99`) as exact minor units of `currency`;
/// grants and top-ups must be positive.
pub fn minor_units(text: &str, currency: &str) -> Result<i64, String> {
    let minor = super::amount::minor_units(text, currency)?;
    if minor <= 0 {
        return Err("the amount must be positive".into());
    }
    Ok(minor)
}

/// A `YYYY-MM-DD` date field as the RFC 3339 start of that day (UTC); empty stays absent.
fn day_start(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| format!("{text}T00:00:00Z"))
}

/// The checks `form::run` makes, made before a field is read: a forged form or a read-only
/// operator is refused (403) rather than told about its amount.
fn precheck(op: &Operator, form: &Form) -> Result<(), ConsoleError> {
    form.check_csrf(op)?;
    if op.read_only() {
        return Err(ConsoleError::forbidden(
            "you are signed in with a read-only key: it can look at everything and change nothing",
        ));
    }
    Ok(())
}

/// Refuses a malformed field before anything is sent: back to the page with the problem.
fn refuse(op: &Operator, return_to: &str, problem: &str) -> Response {
    op.flash(true, format!("Not done: {problem}"));
    Redirect::to(return_to).into_response()
}

/// Grants credits to the customer (`POST /v1/credit-grants`).
pub async fn grant(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    if let Err(e) = precheck(&op, &form) {
        return e.into_response();
    }
    let return_to = customer_page(&id);
    let currency = form.text("currency").to_uppercase();
    let amount_minor = match minor_units(&form.text("amount"), &currency) {
        Ok(a) => a,
        Err(problem) => return refuse(&op, &return_to, &problem),
    };
    let mut body = Map::new();
    body.insert("customer".into(), json!(id));
    body.insert("amount_minor".into(), json!(amount_minor));
    body.insert("currency".into(), json!(currency));
    body.insert("category".into(), json!(form.text("category")));
    if let Some(expires) = day_start(&form.text("expires")) {
        body.insert("expires_at".into(), json!(expires));
    }
    let reason = form.text("reason");
    if !reason.is_empty() {
        body.insert("reason".into(), json!(reason));
    }
    let action = Action {
        api_path: "/v1/credit-grants".into(),
        body: Some(Value::Object(body)),
        return_to,
        done: "Credits granted.",
        confirm: None,
    };
    form::run(&op, &form, action).await
}

/// Tops up the customer's wallet (`POST /v1/customers/{id}/top-ups`).
pub async fn top_up(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    if let Err(e) = precheck(&op, &form) {
        return e.into_response();
    }
    let return_to = customer_page(&id);
    let path = format!("/v1/customers/{}", dispatch::segment(&id));
    let currency = match dispatch::get::<Value>(&op, &path).await {
        Ok(c) => c["currency"].as_str().unwrap_or_default().to_string(),
        Err(e) => return e.into_response(),
    };
    let amount_minor = match minor_units(&form.text("amount"), &currency) {
        Ok(a) => a,
        Err(problem) => return refuse(&op, &return_to, &problem),
    };
    let mut body = Map::new();
    body.insert("amount_minor".into(), json!(amount_minor));
    body.insert("paid".into(), json!(form.text("kind") != "free"));
    if let Some(expires) = day_start(&form.text("expires")) {
        body.insert("expires_at".into(), json!(expires));
    }
    let action = Action {
        api_path: format!("{path}/top-ups"),
        body: Some(Value::Object(body)),
        return_to,
        done: "Top-up created.",
        confirm: None,
    };
    form::run(&op, &form, action).await
}

/// Cancels a subscription at its period's end or now (`POST /v1/subscriptions/{id}/cancel`);
/// asks first.
pub async fn cancel_subscription(
    op: Operator,
    Path((id, sub)): Path<(String, String)>,
    form: Form,
) -> Response {
    let at = if form.text("at") == "now" {
        "now"
    } else {
        "period_end"
    };
    let (question, done) = if at == "now" {
        (
            format!("Cancel subscription {sub} now? It stops at once with a final invoice."),
            "Subscription canceled.",
        )
    } else {
        (
            format!("Cancel subscription {sub} at the end of its current period?"),
            "Subscription set to cancel at the end of its period.",
        )
    };
    let action = Action {
        api_path: format!("/v1/subscriptions/{}/cancel", dispatch::segment(&sub)),
        body: Some(json!({ "at": at })),
        return_to: customer_page(&id),
        done,
        confirm: Some(question),
    };
    form::run(&op, &form, action).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_typed_in_major_units_become_exact_minor_units() {
        assert_eq!(minor_units("25", "EUR"), Ok(2500));
        assert_eq!(minor_units(" 0.99 ", "USD"), Ok(99));
        assert_eq!(minor_units("25.50", "EUR"), Ok(2550));
        assert_eq!(minor_units("1234", "JPY"), Ok(1234));
        assert_eq!(minor_units("1.234", "BHD"), Ok(1234));
        assert!(minor_units("0.001", "EUR").is_err(), "too precise");
        assert!(minor_units("1.5", "JPY").is_err());
        assert!(minor_units("0", "EUR").is_err());
        assert!(minor_units("-3", "EUR").is_err());
        assert!(minor_units("abc", "EUR").is_err());
        assert!(minor_units("1e3", "EUR").is_err());
        assert!(minor_units("5", "eur").is_err(), "unknown currency");
        assert!(minor_units("99999999999999999999999", "EUR").is_err());
    }
}
