//! The catalog's meters page: what usage is measured and how, and creating a meter.

use std::sync::Arc;

use axum::extract::Query;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

use super::catalog::{self, Cursor, ListPage, SECTION};
use super::components;
use super::dispatch;
use super::form::{self, Action, Form};
use super::page::{page, ConsoleError};
use super::session::Operator;
use crate::api::AppState;

const PATH: &str = "/console/catalog/meters";

/// The aggregations a meter may use, as the API names them.
const AGGREGATIONS: &[&str] = &["count", "sum", "max", "min", "unique_count", "latest"];

/// The meters page's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/catalog/meters", get(list).post(create))
}

#[derive(Debug, Deserialize)]
struct MeterView {
    id: String,
    key: String,
    name: Option<String>,
    event_type: String,
    aggregation: String,
    value_property: Option<String>,
    unique_property: Option<String>,
    created_at: String,
}

/// The meters, one page, with the create form.
pub async fn list(op: Operator, Query(cursor): Query<Cursor>) -> Result<Response, ConsoleError> {
    let after = cursor.starting_after.unwrap_or_default();
    let path = dispatch::with_query(
        "/v1/meters",
        &[("limit", catalog::PAGE_LIMIT), ("starting_after", &after)],
    );
    let meters: ListPage<MeterView> = dispatch::get(&op, &path).await?;
    let body = html! {
        (catalog::subnav(PATH))
        section {
            h2 { "Meters" }
            @if meters.data.is_empty() {
                (components::empty("No meters yet."))
            } @else {
                div.table-wrap { table {
                    thead { tr {
                        th { "Key" } th { "Name" } th { "Event type" } th { "Aggregation" }
                        th { "Property" } th { "Created" }
                    } }
                    tbody { @for m in &meters.data { tr {
                        td { code { (m.key) } br; span.muted { (m.id) } }
                        td { (m.name.as_deref().unwrap_or("")) }
                        td { code { (m.event_type) } }
                        td { (m.aggregation) }
                        td {
                            @if let Some(p) = m.value_property.as_deref().or(m.unique_property.as_deref()) {
                                code { (p) }
                            }
                        }
                        td { (components::time_text(&m.created_at)) }
                    } } }
                } }
            }
            (components::pager(PATH, meters.next_cursor.as_deref(), !after.is_empty()))
        }
        @if !op.read_only() { (create_form(&op)) }
    };
    Ok(page(&op, SECTION, "Catalog: meters", body))
}

fn create_form(op: &Operator) -> Markup {
    html! {
        section {
            h2 { "Create a meter" }
            form.stack method="post" action=(PATH) {
                (components::form_tokens(op))
                label for="key" { "Key" }
                input #key type="text" name="key" required maxlength="255" autocomplete="off"
                    placeholder="e.g. api_calls";
                label for="name" { "Name (optional)" }
                input #name type="text" name="name" maxlength="255" autocomplete="off";
                label for="event_type" { "Event type" }
                input #event_type type="text" name="event_type" required maxlength="255"
                    autocomplete="off";
                label for="aggregation" { "Aggregation" }
                select #aggregation name="aggregation" {
                    @for a in AGGREGATIONS { option value=(a) { (a) } }
                }
                label for="property" { "Property (for sum, max, min, latest and unique_count)" }
                input #property type="text" name="property" maxlength="255" autocomplete="off"
                    placeholder="e.g. tokens.input";
                p.hint { "Stored events of the type are counted into a new meter (backfill)." }
                button type="submit" { "Create meter" }
            }
        }
    }
}

/// The API body for the form: the property goes to `unique_property` for `unique_count` and
/// to `value_property` for the value aggregations; empty optional fields are left out.
fn request_body(form: &Form) -> serde_json::Value {
    let aggregation = form.text("aggregation");
    let mut body = serde_json::json!({
        "key": form.text("key"),
        "event_type": form.text("event_type"),
        "aggregation": aggregation,
    });
    let name = form.text("name");
    if !name.is_empty() {
        body["name"] = name.into();
    }
    let property = form.text("property");
    if !property.is_empty() {
        let field = if aggregation == "unique_count" {
            "unique_property"
        } else {
            "value_property"
        };
        body[field] = property.into();
    }
    body
}

/// Creates a meter through the API.
pub async fn create(op: Operator, form: Form) -> Response {
    let action = Action {
        api_path: "/v1/meters".into(),
        body: Some(request_body(&form)),
        return_to: PATH.into(),
        done: "Meter created.",
        confirm: None,
    };
    form::run(&op, &form, action).await
}
