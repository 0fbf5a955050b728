//! The catalog's features page: the features entitlements grant, creating one, archiving one.

use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

use super::catalog::{self, Cursor, ListPage, SECTION};
use super::components::{self, Confirm};
use super::dispatch;
use super::form::{self, Action, Form};
use super::page::{page, ConsoleError};
use super::session::Operator;
use crate::api::AppState;

const PATH: &str = "/console/catalog/features";

/// The features page's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/catalog/features", get(list).post(create))
        .route("/catalog/features/{id}/archive", post(archive))
}

#[derive(Debug, Deserialize)]
struct FeatureView {
    id: String,
    key: String,
    name: String,
    active: bool,
    created_at: String,
    archived_at: Option<String>,
}

/// The features, one page, with the create form.
pub async fn list(op: Operator, Query(cursor): Query<Cursor>) -> Result<Response, ConsoleError> {
    let after = cursor.starting_after.unwrap_or_default();
    let path = dispatch::with_query(
        "/v1/features",
        &[("limit", catalog::PAGE_LIMIT), ("starting_after", &after)],
    );
    let features: ListPage<FeatureView> = dispatch::get(&op, &path).await?;
    let body = html! {
        (catalog::subnav(PATH))
        section {
            h2 { "Features" }
            @if features.data.is_empty() {
                (components::empty("No features yet."))
            } @else {
                div.table-wrap { table {
                    thead { tr {
                        th { "Key" } th { "Name" } th { "Status" } th { "Created" }
                        th { span.visually-hidden { "Actions" } }
                    } }
                    tbody { @for f in &features.data { (row(&op, f)) } }
                } }
            }
            (components::pager(PATH, features.next_cursor.as_deref(), !after.is_empty()))
        }
        @if !op.read_only() { (create_form(&op)) }
    };
    Ok(page(&op, SECTION, "Catalog: features", body))
}

fn row(op: &Operator, f: &FeatureView) -> Markup {
    let action = format!("{PATH}/{}/archive", dispatch::segment(&f.id));
    html! { tr {
        td { code { (f.key) } br; span.muted { (f.id) } }
        td { (f.name) }
        td {
            @match &f.archived_at {
                Some(at) => { (components::status("archived")) " " (components::time_text(at)) }
                None => (components::status("active")),
            }
        }
        td { (components::time_text(&f.created_at)) }
        td { @if f.active { (components::action_form(op, &action, "Archive", &[], Confirm::Ask)) } }
    } }
}

fn create_form(op: &Operator) -> Markup {
    html! {
        section {
            h2 { "Create a feature" }
            form.stack method="post" action=(PATH) {
                (components::form_tokens(op))
                label for="key" { "Key" }
                input #key type="text" name="key" required maxlength="64" autocomplete="off"
                    pattern="[a-z0-9_.\\-]{1,64}" placeholder="e.g. sso";
                p.hint { "1-64 characters of a-z, 0-9, _, . and -; cannot change later." }
                label for="name" { "Name" }
                input #name type="text" name="name" required maxlength="255" autocomplete="off";
                button type="submit" { "Create feature" }
            }
        }
    }
}

/// Creates a feature through the API.
pub async fn create(op: Operator, form: Form) -> Response {
    let body = serde_json::json!({ "key": form.text("key"), "name": form.text("name") });
    let action = Action {
        api_path: "/v1/features".into(),
        body: Some(body),
        return_to: PATH.into(),
        done: "Feature created.",
        confirm: None,
    };
    form::run(&op, &form, action).await
}

/// Archives a feature after asking.
pub async fn archive(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    let action = Action {
        api_path: format!("/v1/features/{}/archive", dispatch::segment(&id)),
        body: None,
        return_to: PATH.into(),
        done: "Feature archived.",
        confirm: Some(format!(
            "Archive feature {id}? No new entitlement, override or grant may name it; those that exist keep answering checks. This cannot be undone."
        )),
    };
    form::run(&op, &form, action).await
}
