//! Signing in with an API key, and signing out.
//!
//! The sign-in form is protected against login CSRF by a double-submit token: a random value in
//! a short-lived `SameSite=Strict` cookie that the form must repeat. The key is checked against
//! its hash and forgotten; only the session's id goes back to the browser.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect, Response};
use maud::{html, DOCTYPE};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::form::Form;
use super::page::{head, ConsoleError};
use super::session::{self, cookie_value, is_console_path, random_token, set_cookie, Operator};
use crate::api::AppState;

/// The cookie holding the sign-in form's CSRF token.
pub const PRE_COOKIE: &str = "tally_console_signin";

/// `?next=` of the sign-in page: where to go once signed in.
#[derive(Debug, Default, Deserialize)]
pub struct Next {
    /// A console path.
    pub next: Option<String>,
}

/// The sign-in page.
pub async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(next): Query<Next>,
) -> Response {
    let target = next.next.filter(|n| is_console_path(n));
    form_page(&state, &headers, target.as_deref(), None)
}

fn form_page(
    state: &AppState,
    headers: &HeaderMap,
    next: Option<&str>,
    error: Option<&str>,
) -> Response {
    // One token per browser: a second sign-in tab must not invalidate the first one's form.
    let token = cookie_value(headers, PRE_COOKIE)
        .filter(|t| t.len() == 48 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(random_token);
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body.signin {
                main #main {
                    h1 { "Tally console" }
                    @if let Some(error) = error {
                        p.flash.error role="alert" { (error) }
                    }
                    @if next.is_some() {
                        p { "Sign in to continue to the page you asked for." }
                    }
                    form method="post" action="/console/sign-in" {
                        input type="hidden" name="csrf" value=(token);
                        @if let Some(next) = next {
                            input type="hidden" name="next" value=(next);
                        }
                        label for="api_key" { "API key" }
                        input #api_key type="password" name="api_key" required
                            autocomplete="off" autofocus spellcheck="false";
                        p.hint { "A read-write key can act; a read-only key can look at everything." }
                        button type="submit" { "Sign in" }
                    }
                }
            }
        }
    };
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    (
        status,
        [
            (
                header::SET_COOKIE,
                set_cookie(state, headers, PRE_COOKIE, &token),
            ),
            (
                header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            ),
        ],
        Html(markup.into_string()),
    )
        .into_response()
}

/// Checks the key and starts a session.
pub async fn submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Form,
) -> Response {
    let next = form
        .get("next")
        .filter(|n| is_console_path(n))
        .map(str::to_string);
    let sent = form.get("csrf").unwrap_or("");
    let expected = cookie_value(&headers, PRE_COOKIE).unwrap_or_default();
    let matches: bool = sent.as_bytes().ct_eq(expected.as_bytes()).into();
    if sent.is_empty() || !matches {
        return ConsoleError::forbidden(
            "the sign-in form was not served to this browser (its CSRF token is missing or wrong); nothing was done",
        )
        .into_response();
    }
    let secret = form.text("api_key");
    let principal = match authenticate(&state, &secret) {
        Ok(Some(p)) => p,
        Ok(None) => {
            tracing::info!("console sign-in refused: unknown or revoked key");
            return form_page(
                &state,
                &headers,
                next.as_deref(),
                Some("That API key is not valid or was revoked."),
            );
        }
        Err(e) => return e.into_response(),
    };
    let max = usize::try_from(state.config.console.max_sessions).unwrap_or(usize::MAX);
    let idle_ms = i64::try_from(state.config.console.session_idle_secs.saturating_mul(1000))
        .unwrap_or(i64::MAX);
    let created = state
        .console
        .sessions
        .create(principal, crate::clock::now_ms(), idle_ms, max);
    let Some(id) = created else {
        return ConsoleError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: "the console holds as many sessions as console.max_sessions allows; try again when one has ended".into(),
        }
        .into_response();
    };
    tracing::info!(key_id = %principal.key_id.display(crate::tenants::KEY_ID_PREFIX), "console sign-in");
    let target = next.unwrap_or_else(|| "/console".to_string());
    (
        AppendHeaders([
            (
                header::SET_COOKIE,
                set_cookie(&state, &headers, session::COOKIE, &id),
            ),
            (
                header::SET_COOKIE,
                set_cookie(&state, &headers, PRE_COOKIE, ""),
            ),
        ]),
        Redirect::to(&target),
    )
        .into_response()
}

fn authenticate(
    state: &AppState,
    secret: &str,
) -> Result<Option<crate::tenants::KeyPrincipal>, ConsoleError> {
    if secret.is_empty() || secret.len() > 256 {
        return Ok(None);
    }
    let tx = state.store.read()?;
    Ok(crate::tenants::authenticate(&tx, secret)?)
}

/// Ends the session.
pub async fn sign_out(op: Operator, headers: HeaderMap, form: Form) -> Response {
    if let Err(e) = form.check_csrf(&op) {
        return e.into_response();
    }
    op.state.console.sessions.remove(&op.session_id);
    (
        [(
            header::SET_COOKIE,
            set_cookie(&op.state, &headers, session::COOKIE, ""),
        )],
        Redirect::to("/console/sign-in"),
    )
        .into_response()
}
