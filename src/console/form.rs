//! Console form posts: parsing, the CSRF check, and running an action through the API with the
//! form's idempotency key.
//!
//! Every action follows one path: the form's CSRF token is compared in constant time with the
//! session's (403 and nothing done otherwise), a read-only operator is refused, a destructive
//! action shows a confirmation page first, then the API is called with the key minted when the
//! form was rendered and the browser is sent back (303) to a page that shows what happened. A
//! double click, a refresh or the back button sends the same key again: the API replays.

use axum::extract::{FromRequest, Request};
use axum::http::{header, Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, DOCTYPE};
use subtle::ConstantTimeEq;

use super::dispatch::{self, Reply};
use super::page::{head, ConsoleError};
use super::session::Operator;

/// Largest form body accepted.
pub const MAX_FORM_BYTES: usize = 256 * 1024;

/// A posted form's fields, in order.
#[derive(Debug, Clone, Default)]
pub struct Form {
    /// The `name=value` pairs as sent.
    pub pairs: Vec<(String, String)>,
}

impl Form {
    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a field, trimmed; empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_string()
    }

    /// Every value of a repeated field.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Refuses the form unless its CSRF token is the session's.
    pub fn check_csrf(&self, op: &Operator) -> Result<(), ConsoleError> {
        let sent = self.get("csrf").unwrap_or("");
        let matches: bool = sent.as_bytes().ct_eq(op.csrf.as_bytes()).into();
        if sent.is_empty() || !matches {
            return Err(ConsoleError::forbidden(
                "this form is not from your console session (its CSRF token is missing or wrong); nothing was done. Reload the page and try again.",
            ));
        }
        Ok(())
    }

    /// The idempotency key minted when the form was rendered.
    pub fn idempotency_key(&self) -> Result<String, ConsoleError> {
        crate::idempotency::parse_key(self.text("idempotency_key").as_bytes()).ok_or_else(|| {
            ConsoleError::bad_request(
                "the form has no valid idempotency key; reload the page and try again",
            )
        })
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let media = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !media.starts_with("application/x-www-form-urlencoded") {
            return Err(ConsoleError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                detail: "console forms are posted as application/x-www-form-urlencoded".into(),
            });
        }
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| ConsoleError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                detail: format!("the form exceeds {MAX_FORM_BYTES} bytes"),
            })?;
        let pairs = form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Ok(Form { pairs })
    }
}

/// One action a form asks for.
#[derive(Debug, Clone)]
pub struct Action<'a> {
    /// The API path to post to.
    pub api_path: String,
    /// The JSON body, if the endpoint takes one.
    pub body: Option<serde_json::Value>,
    /// Where to send the browser afterwards (a console path).
    pub return_to: String,
    /// What to say when it worked (`"Invoice voided."`).
    pub done: &'a str,
    /// For destructive actions: the question to ask first.
    pub confirm: Option<String>,
}

/// Runs an action: CSRF, read-only, confirmation, the API call, then back to `return_to` with
/// a message. Returns the API's reply too for handlers that show more (a new key's secret).
pub async fn run(op: &Operator, form: &Form, action: Action<'_>) -> Response {
    match run_reply(op, form, &action).await {
        Ok(Outcome::Asked(page)) => page,
        Ok(Outcome::Done(reply)) => {
            report(op, &reply, action.done);
            Redirect::to(&action.return_to).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// What `run_reply` did.
#[derive(Debug)]
pub enum Outcome {
    /// It showed the confirmation page (nothing done yet).
    Asked(Response),
    /// It called the API.
    Done(Reply),
}

/// The checks and the call of `run`, without the redirect.
pub async fn run_reply(
    op: &Operator,
    form: &Form,
    action: &Action<'_>,
) -> Result<Outcome, ConsoleError> {
    form.check_csrf(op)?;
    if op.read_only() {
        return Err(ConsoleError::forbidden(
            "you are signed in with a read-only key: it can look at everything and change nothing",
        ));
    }
    let key = form.idempotency_key()?;
    if let Some(question) = &action.confirm {
        if form.get("confirmed") != Some("yes") {
            return Ok(Outcome::Asked(confirmation(
                form,
                question,
                &action.return_to,
            )));
        }
    }
    let reply = dispatch::call(
        op,
        Method::POST,
        &action.api_path,
        action.body.as_ref(),
        Some(&key),
    )
    .await?;
    Ok(Outcome::Done(reply))
}

/// Leaves the result of an API call as the next page's message.
pub fn report(op: &Operator, reply: &Reply, done: &str) {
    if reply.status.is_success() {
        let text = if reply.replayed {
            format!("{done} (This form was already submitted: nothing was done twice.)")
        } else {
            done.to_string()
        };
        op.flash(false, text);
    } else if reply.problem_code().as_deref() == Some("idempotency_key_in_use") {
        // The first submission of this form is still executing: it may yet take effect, so
        // this must not read as "not done" (which invites a second, fresh submission).
        op.flash(
            true,
            "This form was already submitted and is still being processed. Check the result on this page in a moment before doing it again.",
        );
    } else {
        op.flash(
            true,
            format!(
                "Not done: {} ({})",
                reply.problem_text(),
                reply.status.as_u16()
            ),
        );
    }
}

/// The page that asks before a destructive action: the same fields again, plus `confirmed`.
fn confirmation(form: &Form, question: &str, return_to: &str) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head("Please confirm"))
            body {
                main #main.confirm {
                    h1 { "Please confirm" }
                    p.question { (question) }
                    form method="post" {
                        @for (name, value) in &form.pairs {
                            @if name != "confirmed" {
                                input type="hidden" name=(name) value=(value);
                            }
                        }
                        input type="hidden" name="confirmed" value="yes";
                        button.danger type="submit" autofocus { "Yes, do it" }
                        " "
                        a href=(return_to) { "No, go back" }
                    }
                }
            }
        }
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(markup.into_string()),
    )
        .into_response()
}
