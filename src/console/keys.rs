//! The API keys page: the tenant's keys, creating one (its secret shown once), revoking one.
//!
//! A new key's secret is on the page that answers the create form and nowhere else: the API
//! never stores it, so a refresh or a resubmitted form (a replay) finds only the key's id.

use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use serde::Deserialize;

use super::components::{self, Confirm};
use super::dispatch::{self, Reply};
use super::form::{self, Action, Form, Outcome};
use super::page::{page, ConsoleError};
use super::session::Operator;
use crate::api::AppState;

/// The section this page belongs to.
const SECTION: &str = "/console/keys";

/// Keys per page.
const PAGE_LIMIT: &str = "50";

/// The API keys page's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/keys", get(list).post(create))
        .route("/keys/{id}/revoke", post(revoke))
}

/// `?starting_after=` of the list.
#[derive(Debug, Default, Deserialize)]
pub struct Cursor {
    /// The previous page's last key id.
    pub starting_after: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KeyView {
    id: String,
    label: String,
    read_only: bool,
    created_at: String,
    revoked_at: Option<String>,
    secret: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KeyPage {
    data: Vec<KeyView>,
    next_cursor: Option<String>,
}

/// The list of keys with the create form.
pub async fn list(op: Operator, Query(cursor): Query<Cursor>) -> Result<Response, ConsoleError> {
    let after = cursor.starting_after.unwrap_or_default();
    let path = dispatch::with_query(
        "/v1/api-keys",
        &[("limit", PAGE_LIMIT), ("starting_after", &after)],
    );
    let keys: KeyPage = dispatch::get(&op, &path).await?;
    let own_id = op.principal.key_id.display(crate::tenants::KEY_ID_PREFIX);
    let body = html! {
        section {
            h2 { "Keys" }
            @if keys.data.is_empty() {
                (components::empty("No keys on this page."))
            } @else {
                div.table-wrap {
                    table {
                        thead { tr {
                            th { "Label" } th { "Id" } th { "Access" } th { "Created" }
                            th { "Status" } th { span.visually-hidden { "Actions" } }
                        } }
                        tbody {
                            @for key in &keys.data { (row(&op, key, &own_id)) }
                        }
                    }
                }
            }
            (components::pager(SECTION, keys.next_cursor.as_deref(), !after.is_empty()))
        }
        @if !op.read_only() { (create_form(&op)) }
    };
    Ok(page(&op, SECTION, "API keys", body))
}

fn row(op: &Operator, key: &KeyView, own_id: &str) -> maud::Markup {
    let action = format!("/console/keys/{}/revoke", dispatch::segment(&key.id));
    html! {
        tr {
            td {
                @if key.label.is_empty() { span.muted { "(no label)" } } @else { (key.label) }
                @if key.id == own_id { " " span.badge { "this session" } }
            }
            td { code { (key.id) } }
            td { @if key.read_only { "read-only" } @else { "read-write" } }
            td { (components::time_text(&key.created_at)) }
            td {
                @match &key.revoked_at {
                    Some(at) => { (components::status("revoked")) " " (components::time_text(at)) }
                    None => (components::status("active")),
                }
            }
            td {
                @if key.revoked_at.is_none() {
                    (components::action_form(op, &action, "Revoke", &[], Confirm::Ask))
                }
            }
        }
    }
}

fn create_form(op: &Operator) -> maud::Markup {
    html! {
        section {
            h2 { "Create a key" }
            form.stack method="post" action=(SECTION) {
                (components::form_tokens(op))
                label for="label" { "Label" }
                input #label type="text" name="label" maxlength="64" autocomplete="off"
                    placeholder="e.g. ci, support";
                div.check {
                    input #read_only type="checkbox" name="read_only" value="yes";
                    label for="read_only" { "Read-only (can look at everything, change nothing)" }
                }
                button type="submit" { "Create key" }
            }
        }
    }
}

/// Creates a key and shows its secret, once.
pub async fn create(op: Operator, form: Form) -> Response {
    let body = serde_json::json!({
        "label": form.text("label"),
        "read_only": form.get("read_only") == Some("yes"),
    });
    let action = Action {
        api_path: "/v1/api-keys".into(),
        body: Some(body),
        return_to: SECTION.into(),
        done: "Key created.",
        confirm: None,
    };
    match form::run_reply(&op, &form, &action).await {
        Ok(Outcome::Asked(page)) => page,
        Ok(Outcome::Done(reply)) => created(&op, &reply),
        Err(e) => e.into_response(),
    }
}

/// The answer to the create form: the secret page for the request that made the key; a replay
/// (a refresh, a second click) or a failure goes back to the list with a message.
fn created(op: &Operator, reply: &Reply) -> Response {
    let key: Option<KeyView> = serde_json::from_slice(&reply.body).ok();
    match key {
        Some(
            key @ KeyView {
                secret: Some(_), ..
            },
        ) if reply.status.is_success() => secret_page(op, &key),
        Some(key) if reply.status.is_success() => {
            op.flash(
                false,
                format!(
                    "This form was already submitted: key {} was created once, and its secret was shown only in the answer to the first submission. It cannot be shown again: if you did not see it, revoke the key and create another.",
                    key.id
                ),
            );
            Redirect::to(SECTION).into_response()
        }
        _ => {
            form::report(op, reply, "Key created.");
            Redirect::to(SECTION).into_response()
        }
    }
}

fn secret_page(op: &Operator, key: &KeyView) -> Response {
    let secret = key.secret.as_deref().unwrap_or_default();
    let body = html! {
        section {
            h2 { "Your new key" }
            p.flash.error role="alert" {
                strong { "Copy the secret now: it is shown once. " }
                "Tally stores only its hash; reloading this page or going back will not show it again."
            }
            (components::fields(&[
                ("Id", html! { code { (key.id) } }),
                ("Label", html! { (key.label) }),
                ("Access", html! { @if key.read_only { "read-only" } @else { "read-write" } }),
                ("Secret", html! { code.secret { (secret) } }),
            ]))
            p { a href=(SECTION) { "Done, back to the keys" } }
        }
    };
    let mut response = page(op, SECTION, "API key created", body);
    // The secret must not be kept by any cache, the back button included.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// Revokes a key after asking; revoking the session's own key signs the operator out.
pub async fn revoke(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    let own = id == op.principal.key_id.display(crate::tenants::KEY_ID_PREFIX);
    let question = if own {
        format!("Revoke key {id}? It is the key this console session signed in with: you will be signed out, and everything using it stops working at once.")
    } else {
        format!(
            "Revoke key {id}? Everything using it stops working at once; this cannot be undone."
        )
    };
    let action = Action {
        api_path: format!("/v1/api-keys/{}/revoke", dispatch::segment(&id)),
        body: None,
        return_to: SECTION.into(),
        done: "Key revoked.",
        confirm: Some(question),
    };
    form::run(&op, &form, action).await
}
