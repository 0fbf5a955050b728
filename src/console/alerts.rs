//! Alerts: the list, an alert with its firings, creating one and archiving one — all through
//! `/v1/alerts`.

use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use super::components::{self, Confirm};
use super::dispatch::{self, segment, with_query};
use super::form::{self, Action, Form, Outcome};
use super::page::{page, ConsoleError};
use super::session::Operator;
use crate::api::AppState;

/// Rows per page.
const PAGE_LIMIT: &str = "25";

/// The alert types the create form offers, with what their thresholds mean.
const TYPES: &[(&str, &str)] = &[
    ("usage_exceeded", "Usage exceeded (meter quantity)"),
    ("credit_balance_below", "Credit balance below (minor units)"),
    (
        "credit_balance_depleted",
        "Credit balance depleted (no threshold)",
    ),
    ("spend_exceeded", "Spend exceeded (minor units)"),
    (
        "entitlement_exhausted",
        "Entitlement exhausted (% of allowance)",
    ),
];

/// The alerts' routes (relative to `/console`).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/alerts", get(list).post(create))
        .route("/alerts/{id}", get(show))
        .route("/alerts/{id}/archive", post(archive))
}

/// An alert as the page shows it.
#[derive(Debug, Deserialize)]
struct AlertView {
    id: String,
    #[serde(rename = "type")]
    alert_type: String,
    customer: Option<String>,
    meter: Option<String>,
    feature: Option<String>,
    currency: Option<String>,
    thresholds: Vec<Value>,
    name: Option<String>,
    active: bool,
    created_at: String,
    archived_at: Option<String>,
}

/// A page of a list.
#[derive(Debug, Deserialize)]
struct PageView<T> {
    data: Vec<T>,
    next_cursor: Option<String>,
}

/// A firing's window.
#[derive(Debug, Deserialize)]
struct WindowView {
    start: String,
    end: Option<String>,
}

/// A firing as the page shows it.
#[derive(Debug, Deserialize)]
struct FiringView {
    id: String,
    customer: String,
    threshold: Value,
    value: Value,
    currency: Option<String>,
    window: WindowView,
    triggered_at: String,
    recovered_at: Option<String>,
}

/// The cursor of a paginated page.
#[derive(Debug, Deserialize)]
pub struct Cursor {
    starting_after: Option<String>,
}

/// A JSON scalar as plain text (`"10"` → `10`).
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn thresholds_text(a: &AlertView) -> String {
    let values: Vec<String> = a.thresholds.iter().map(plain).collect();
    let unit = match (a.alert_type.as_str(), &a.currency) {
        ("entitlement_exhausted", _) => " %".to_string(),
        ("credit_balance_below" | "spend_exceeded" | "credit_balance_depleted", Some(c)) => {
            format!(" (minor units, {c})")
        }
        ("credit_balance_below" | "spend_exceeded" | "credit_balance_depleted", None) => {
            " (minor units)".to_string()
        }
        _ => String::new(),
    };
    format!("{}{unit}", values.join(", "))
}

fn customer_link(customer: Option<&str>) -> Markup {
    match customer {
        Some(c) => html! { a href=(format!("/console/customers/{}", segment(c))) { code { (c) } } },
        None => html! { "every customer" },
    }
}

fn active_status(a: &AlertView) -> Markup {
    components::status(if a.active { "active" } else { "archived" })
}

/// The list of alerts, with the create form.
pub async fn list(op: Operator, Query(cursor): Query<Cursor>) -> Result<Response, ConsoleError> {
    let after = cursor.starting_after.unwrap_or_default();
    let path = with_query(
        "/v1/alerts",
        &[("limit", PAGE_LIMIT), ("starting_after", &after)],
    );
    let alerts: PageView<AlertView> = dispatch::get(&op, &path).await?;
    let body = html! {
        section aria-labelledby="alerts-h" {
            h2 #alerts-h { "Alerts" }
            @if alerts.data.is_empty() {
                (components::empty("No alerts yet."))
            } @else {
                div.table-wrap {
                    table #alerts {
                        thead { tr {
                            th { "Alert" } th { "Type" } th { "Thresholds" } th { "Customer" }
                            th { "Meter or feature" } th { "Status" } th { "Created" }
                        } }
                        tbody {
                            @for a in &alerts.data {
                                tr {
                                    td { a href=(format!("/console/alerts/{}", segment(&a.id))) {
                                        (a.name.as_deref().unwrap_or(&a.id))
                                    } }
                                    td { (a.alert_type) }
                                    td { (thresholds_text(a)) }
                                    td { (customer_link(a.customer.as_deref())) }
                                    td { (a.meter.as_deref().or(a.feature.as_deref()).unwrap_or("")) }
                                    td { (active_status(a)) }
                                    td { (components::time_text(&a.created_at)) }
                                }
                            }
                        }
                    }
                }
            }
            (components::pager("/console/alerts", alerts.next_cursor.as_deref(), !after.is_empty()))
        }
        @if !op.read_only() { (create_form(&op)) }
    };
    Ok(page(&op, "/console/alerts", "Alerts", body))
}

fn text_input(id: &str, label: &str, hint: &str) -> Markup {
    html! {
        label for=(id) { (label) }
        input #(id) type="text" name=(id) aria-describedby=(format!("{id}-hint"));
        span.hint #(format!("{id}-hint")) { " " (hint) }
    }
}

fn create_form(op: &Operator) -> Markup {
    html! {
        section aria-labelledby="new-alert-h" {
            h2 #new-alert-h { "New alert" }
            form #new-alert method="post" action="/console/alerts" {
                (components::form_tokens(op))
                label for="type" { "Type" }
                select #type name="type" {
                    @for (value, label) in TYPES { option value=(value) { (label) } }
                }
                (text_input("thresholds", "Thresholds", "comma-separated, ascending: quantities for usage, minor units (cents) for balances and spend"))
                (text_input("meter", "Meter", "usage_exceeded: the meter's key or id"))
                (text_input("feature", "Feature", "entitlement_exhausted: the feature's key or id"))
                (text_input("customer", "Customer", "external id or cus_…; empty watches every customer"))
                (text_input("currency", "Currency", "balances and spend: ISO 4217; empty means each customer's own"))
                (text_input("name", "Name", "optional label"))
                p { button type="submit" { "Create alert" } }
            }
        }
    }
}

/// Whether an alert type's thresholds are amounts in minor units.
fn is_money(alert_type: &str) -> bool {
    matches!(alert_type, "credit_balance_below" | "spend_exceeded")
}

/// The `POST /v1/alerts` body from the form: empty fields are left out, so the API's defaults
/// and its own validation apply; money thresholds that are whole numbers are sent as numbers.
fn create_body(form: &Form) -> Value {
    let alert_type = form.text("type");
    let mut body = json!({ "type": alert_type });
    for field in ["customer", "meter", "feature", "currency", "name"] {
        let value = form.text(field);
        if !value.is_empty() {
            body[field] = Value::String(value);
        }
    }
    let thresholds = form.text("thresholds");
    if !thresholds.is_empty() {
        let values: Vec<Value> = thresholds
            .split(',')
            .map(str::trim)
            .map(|t| match t.parse::<i64>() {
                Ok(n) if is_money(&alert_type) => Value::from(n),
                _ => Value::String(t.to_string()),
            })
            .collect();
        body["thresholds"] = Value::Array(values);
    }
    body
}

/// Creates an alert and opens it (or goes back to the list with the API's objection).
pub async fn create(op: Operator, form: Form) -> Response {
    let action = Action {
        api_path: "/v1/alerts".into(),
        body: Some(create_body(&form)),
        return_to: "/console/alerts".into(),
        done: "Alert created.",
        confirm: None,
    };
    match form::run_reply(&op, &form, &action).await {
        Ok(Outcome::Asked(page)) => page,
        Ok(Outcome::Done(reply)) => {
            form::report(&op, &reply, action.done);
            let id = reply.json().get("id").and_then(Value::as_str).map(segment);
            match id {
                Some(id) if reply.status.is_success() => {
                    Redirect::to(&format!("/console/alerts/{id}")).into_response()
                }
                _ => Redirect::to(&action.return_to).into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

/// An alert with its firings.
pub async fn show(
    op: Operator,
    Path(id): Path<String>,
    Query(cursor): Query<Cursor>,
) -> Result<Response, ConsoleError> {
    let alert: AlertView = dispatch::get(&op, &format!("/v1/alerts/{}", segment(&id))).await?;
    let after = cursor.starting_after.unwrap_or_default();
    let firings: PageView<FiringView> = dispatch::get(
        &op,
        &with_query(
            &format!("/v1/alerts/{}/firings", segment(&id)),
            &[("limit", PAGE_LIMIT), ("starting_after", &after)],
        ),
    )
    .await?;
    let own = format!("/console/alerts/{}", segment(&alert.id));
    let title = match &alert.name {
        Some(name) => format!("Alert {name}"),
        None => format!("Alert {}", alert.id),
    };
    let body = html! {
        section aria-labelledby="alert-h" {
            h2 #alert-h { "Alert" }
            (details(&alert))
            @if alert.active {
                div.actions {
                    (components::action_form(&op, &format!("{own}/archive"), "Archive alert", &[], Confirm::Ask))
                }
            }
        }
        section aria-labelledby="firings-h" {
            h2 #firings-h { "Firings" }
            (firings_table(&firings.data))
            (components::pager(&own, firings.next_cursor.as_deref(), !after.is_empty()))
        }
        p { a href="/console/alerts" { "« All alerts" } }
    };
    Ok(page(&op, "/console/alerts", &title, body))
}

fn details(a: &AlertView) -> Markup {
    components::fields(&[
        ("Id", html! { code { (a.id) } }),
        ("Type", html! { (a.alert_type) }),
        ("Thresholds", html! { (thresholds_text(a)) }),
        ("Customer", customer_link(a.customer.as_deref())),
        ("Meter", html! { (a.meter.as_deref().unwrap_or("—")) }),
        ("Feature", html! { (a.feature.as_deref().unwrap_or("—")) }),
        (
            "Currency",
            html! { (a.currency.as_deref().unwrap_or("each customer's own")) },
        ),
        ("Status", active_status(a)),
        ("Created", html! { (components::time_text(&a.created_at)) }),
        (
            "Archived",
            html! { (a.archived_at.as_deref().map(components::time_text).unwrap_or_else(|| "—".into())) },
        ),
    ])
}

fn firings_table(firings: &[FiringView]) -> Markup {
    if firings.is_empty() {
        return components::empty("It has not fired.");
    }
    html! {
        div.table-wrap {
            table #firings {
                thead { tr {
                    th { "Firing" } th { "Customer" } th.num { "Threshold" } th.num { "Value" }
                    th { "Window" } th { "Triggered" } th { "Recovered" }
                } }
                tbody {
                    @for f in firings {
                        tr {
                            td { code { (f.id) } }
                            td { (customer_link(Some(&f.customer))) }
                            td.num { (plain(&f.threshold)) " " (f.currency.as_deref().unwrap_or("")) }
                            td.num { (plain(&f.value)) " " (f.currency.as_deref().unwrap_or("")) }
                            td {
                                (components::time_text(&f.window.start)) " – "
                                (f.window.end.as_deref().map(components::time_text).unwrap_or_else(|| "open".into()))
                            }
                            td { (components::time_text(&f.triggered_at)) }
                            td { (f.recovered_at.as_deref().map(components::time_text).unwrap_or_else(|| "—".into())) }
                        }
                    }
                }
            }
        }
    }
}

/// Archives an alert, after asking.
pub async fn archive(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    let action = Action {
        api_path: format!("/v1/alerts/{}/archive", segment(&id)),
        body: None,
        return_to: format!("/console/alerts/{}", segment(&id)),
        done: "Alert archived.",
        confirm: Some(format!(
            "Archive alert {id}? It stops firing at once and cannot be re-activated; its firings stay."
        )),
    };
    form::run(&op, &form, action).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        Form {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_create_body_leaves_out_empty_fields_and_types_money_thresholds() {
        let body = create_body(&form(&[
            ("type", "credit_balance_below"),
            ("thresholds", " 500, 1000 "),
            ("customer", ""),
            ("currency", "EUR"),
        ]));
        assert_eq!(
            body,
            json!({"type": "credit_balance_below", "thresholds": [500, 1000], "currency": "EUR"})
        );
        let body = create_body(&form(&[
            ("type", "usage_exceeded"),
            ("thresholds", "10,2.5"),
            ("meter", "api_calls"),
            ("customer", "acme"),
        ]));
        assert_eq!(
            body,
            json!({"type": "usage_exceeded", "thresholds": ["10", "2.5"], "meter": "api_calls", "customer": "acme"})
        );
        assert_eq!(
            create_body(&form(&[("type", "credit_balance_depleted")])),
            json!({"type": "credit_balance_depleted"})
        );
    }
}
