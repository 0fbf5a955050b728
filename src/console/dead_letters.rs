//! Dead letters: jobs that exhausted their retries, with their payload, attempts and last error;
//! replay one, or every one matching a filter (which asks first, saying how many match).

use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use super::components::{self, Confirm};
use super::dispatch::{self, Reply};
use super::form::{self, Form, Outcome};
use super::page::{self, ConsoleError};
use super::session::{is_console_path, Operator};
use crate::api::AppState;

/// The list's own path.
const LIST_PATH: &str = "/console/dead-letters";
/// Dead letters per page.
const PAGE_LIMIT: &str = "25";
/// Most dead letters one "replay all" requeues, and counts before asking.
pub const REPLAY_ALL_LIMIT: usize = 500;

/// The dead letters' routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/dead-letters", get(list))
        .route("/dead-letters/replay", post(replay_all))
        .route("/dead-letters/{id}/replay", post(replay_one))
}

/// The list's filters, as the API takes them, and its cursor.
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    /// Only this job kind (`webhook.process`).
    pub kind: Option<String>,
    /// Died at or after (RFC 3339).
    pub from: Option<String>,
    /// Died before (RFC 3339).
    pub to: Option<String>,
    /// The page's cursor.
    pub starting_after: Option<String>,
}

impl Filters {
    fn from_form(form: &Form) -> Filters {
        Filters {
            kind: Some(form.text("kind")),
            from: Some(form.text("from")),
            to: Some(form.text("to")),
            starting_after: None,
        }
    }

    /// The non-empty filters, without the cursor.
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [("kind", &self.kind), ("from", &self.from), ("to", &self.to)]
            .into_iter()
            .filter_map(|(name, value)| {
                let value = value.as_deref().unwrap_or("").trim();
                (!value.is_empty()).then_some((name, value))
            })
            .collect()
    }

    /// The filters in words, for the confirmation.
    fn describe(&self) -> String {
        let pairs = self.pairs();
        if pairs.is_empty() {
            return "(every dead letter, no filter)".to_string();
        }
        let words: Vec<String> = pairs
            .iter()
            .map(|(name, value)| match *name {
                "kind" => format!("of kind {value}"),
                "from" => format!("dead at or after {value}"),
                _ => format!("dead before {value}"),
            })
            .collect();
        words.join(", ")
    }
}

#[derive(Debug, Deserialize)]
struct DeadLetter {
    id: String,
    kind: String,
    payload: String,
    last_error: Option<String>,
    attempts: Vec<Attempt>,
    replays: u32,
    finished_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Attempt {
    at: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DeadLetterPage {
    data: Vec<DeadLetter>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReplayReply {
    replayed: Vec<Replayed>,
}

#[derive(Debug, Deserialize)]
struct Replayed {
    id: String,
    kind: String,
}

/// The list of dead letters, filtered, one page at a time.
pub async fn list(op: Operator, Query(filters): Query<Filters>) -> Result<Response, ConsoleError> {
    let mut params = filters.pairs();
    params.push(("limit", PAGE_LIMIT));
    params.push((
        "starting_after",
        filters.starting_after.as_deref().unwrap_or(""),
    ));
    let page: DeadLetterPage =
        dispatch::get(&op, &dispatch::with_query("/v1/dead-letters", &params)).await?;
    let base = dispatch::with_query(LIST_PATH, &filters.pairs());
    let body = html! {
        (filter_form(&filters))
        section aria-labelledby="dead-letters-h" {
            h2 #dead-letters-h { "Jobs that ran out of retries" }
            @if page.data.is_empty() {
                (components::empty("No dead letters match."))
            } @else {
                (table(&op, &page.data, &base))
            }
            (components::pager(&base, page.next_cursor.as_deref(), filters.starting_after.is_some()))
        }
        @if !op.read_only() && !page.data.is_empty() {
            section aria-labelledby="replay-all-h" {
                h2 #replay-all-h { "Replay all matching" }
                p {
                    "Queues again every dead letter matching the filter above, "
                    (REPLAY_ALL_LIMIT) " at most at a time, with their attempts reset. "
                    "You are asked first, with how many match."
                }
                @let hidden = filters.pairs();
                (components::action_form(&op, "/console/dead-letters/replay", "Replay all matching", &hidden, Confirm::Ask))
            }
        }
    };
    Ok(page::page(&op, LIST_PATH, "Dead letters", body))
}

fn filter_form(filters: &Filters) -> Markup {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        form.filters method="get" action=(LIST_PATH) {
            div {
                label for="kind" { "Kind" }
                input #kind type="text" name="kind" value=(value(&filters.kind))
                    placeholder="webhook.process";
            }
            div {
                label for="from" { "Died from (RFC 3339)" }
                input #from type="text" name="from" value=(value(&filters.from))
                    placeholder="2026-12-01T00:00:00Z";
            }
            div {
                label for="to" { "Died before (RFC 3339)" }
                input #to type="text" name="to" value=(value(&filters.to))
                    placeholder="2026-12-02T00:00:00Z";
            }
            button type="submit" { "Filter" }
        }
    }
}

fn table(op: &Operator, rows: &[DeadLetter], back: &str) -> Markup {
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th { "Job" } th { "Kind" } th { "Died" } th.num { "Attempts" }
                    th.num { "Replays" } th { "Last error" } th { "Payload and attempts" } th { "Action" }
                } }
                tbody {
                    @for row in rows { (table_row(op, row, back)) }
                }
            }
        }
    }
}

fn table_row(op: &Operator, row: &DeadLetter, back: &str) -> Markup {
    let action = format!(
        "/console/dead-letters/{}/replay",
        dispatch::segment(&row.id)
    );
    html! {
        tr {
            td { code { (row.id) } }
            td { (row.kind) (subject_link(&row.payload)) }
            td { (row.finished_at.as_deref().map(components::time_text).unwrap_or_default()) }
            td.num { (row.attempts.len()) }
            td.num { (row.replays) }
            td.last-error { (row.last_error.as_deref().unwrap_or("")) }
            td {
                details {
                    summary { "Show" }
                    (payload_block(&row.payload))
                    ol.attempts {
                        @for attempt in &row.attempts {
                            li {
                                (components::time_text(&attempt.at)) ": "
                                (attempt.error.as_deref().unwrap_or("succeeded"))
                            }
                        }
                    }
                }
            }
            td { (components::action_form(op, &action, "Replay", &[("back", back)], Confirm::No)) }
        }
    }
}

/// A link to what the job was working on, when its payload names a receipt or a notification
/// (`whv_…`, `ntf_…:evd_…`).
fn subject_link(payload: &str) -> Markup {
    let head = payload.split(':').next().unwrap_or("").trim();
    let target = if head.starts_with("whv_") {
        Some(("/console/webhook-events", "Receipt"))
    } else if head.starts_with("ntf_") {
        Some(("/console/notifications", "Notification"))
    } else {
        None
    };
    match target {
        Some((base, label)) if head.len() <= 64 => html! {
            br;
            a href=(format!("{base}/{}", dispatch::segment(head))) { (label) " " (head) }
        },
        _ => html! {},
    }
}

/// A job's payload: pretty JSON when it is JSON, the text as it is otherwise.
fn payload_block(payload: &str) -> Markup {
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(value) => components::json_block(&value),
        Err(_) => html! { pre.json { code { (payload) } } },
    }
}

/// Where to go after an action: the list the form was on (its filters kept), if it says so.
fn back(form: &Form) -> String {
    let sent = form.text("back");
    if is_console_path(&sent) && sent.starts_with(LIST_PATH) {
        sent
    } else {
        LIST_PATH.to_string()
    }
}

/// Replays one dead letter.
pub async fn replay_one(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    let action = form::Action {
        api_path: format!("/v1/dead-letters/{}/replay", dispatch::segment(&id)),
        body: Some(json!({})),
        return_to: back(&form),
        done: "",
        confirm: None,
    };
    run_replay(&op, &form, &action).await
}

/// Replays every dead letter matching the form's filters, after saying how many match.
pub async fn replay_all(op: Operator, form: Form) -> Response {
    if let Err(e) = form.check_csrf(&op) {
        return e.into_response();
    }
    let filters = Filters::from_form(&form);
    let return_to = dispatch::with_query(LIST_PATH, &filters.pairs());
    let asking = !op.read_only() && form.get("confirmed") != Some("yes");
    let question = if asking {
        match count(&op, &filters).await {
            Ok((0, _)) => {
                op.flash(false, "Nothing to replay: no dead letter matches.");
                return Redirect::to(&return_to).into_response();
            }
            Ok((n, more)) => question(n, more, &filters),
            Err(e) => return e.into_response(),
        }
    } else {
        String::new()
    };
    let mut body = json!({ "limit": REPLAY_ALL_LIMIT });
    let pairs = filters.pairs();
    if pairs.is_empty() {
        body["all"] = json!(true);
    }
    for (name, value) in pairs {
        body[name] = json!(value);
    }
    let action = form::Action {
        api_path: "/v1/dead-letters/replay".to_string(),
        body: Some(body),
        return_to,
        done: "",
        confirm: Some(question),
    };
    run_replay(&op, &form, &action).await
}

/// How many dead letters match (at most `REPLAY_ALL_LIMIT`), and whether more do.
async fn count(op: &Operator, filters: &Filters) -> Result<(usize, bool), ConsoleError> {
    let limit = REPLAY_ALL_LIMIT.to_string();
    let mut params = filters.pairs();
    params.push(("limit", &limit));
    let page: DeadLetterPage =
        dispatch::get(op, &dispatch::with_query("/v1/dead-letters", &params)).await?;
    Ok((page.data.len(), page.next_cursor.is_some()))
}

fn question(n: usize, more: bool, filters: &Filters) -> String {
    let scope = filters.describe();
    if more {
        format!(
            "Replay the first {n} of more than {n} dead letters {scope}? They are queued again with their attempts reset; replay again for the rest."
        )
    } else if n == 1 {
        format!("Replay the 1 dead letter {scope}? It is queued again with its attempts reset.")
    } else {
        format!(
            "Replay the {n} dead letters {scope}? They are queued again with their attempts reset."
        )
    }
}

/// Runs a replay and leaves its result (which jobs were queued again) as the next message.
async fn run_replay(op: &Operator, form: &Form, action: &form::Action<'_>) -> Response {
    match form::run_reply(op, form, action).await {
        Ok(Outcome::Asked(page)) => page,
        Ok(Outcome::Done(reply)) => {
            form::report(op, &reply, &replay_text(&reply));
            Redirect::to(&action.return_to).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// What a replay did, in words.
fn replay_text(reply: &Reply) -> String {
    let Ok(done) = serde_json::from_slice::<ReplayReply>(&reply.body) else {
        return "Replayed.".to_string();
    };
    match done.replayed.as_slice() {
        [] => "Nothing was replayed: no dead letter matched.".to_string(),
        [one] => format!(
            "Replayed {} ({}): queued again with its attempts reset.",
            one.id, one.kind
        ),
        many => format!(
            "Replayed {} dead letters: queued again with their attempts reset.",
            many.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confirmation_says_how_many_and_which() {
        let filters = Filters {
            kind: Some("webhook.process".into()),
            from: Some(" ".into()),
            ..Filters::default()
        };
        assert_eq!(filters.pairs(), [("kind", "webhook.process")]);
        assert_eq!(
            question(3, false, &filters),
            "Replay the 3 dead letters of kind webhook.process? They are queued again with their attempts reset."
        );
        assert!(question(500, true, &Filters::default()).contains("first 500 of more than 500"));
        assert!(question(1, false, &Filters::default()).contains("every dead letter"));
    }

    #[test]
    fn payloads_link_to_the_receipt_or_notification_they_name() {
        let receipt = subject_link("whv_01ABC").into_string();
        assert!(
            receipt.contains("href=\"/console/webhook-events/whv_01ABC\""),
            "{receipt}"
        );
        let delivery = subject_link("ntf_01X:evd_01Y").into_string();
        assert!(
            delivery.contains("href=\"/console/notifications/ntf_01X\""),
            "{delivery}"
        );
        assert_eq!(subject_link("{\"a\":1}").into_string(), "");
        let odd = subject_link("whv_<b>/../x").into_string();
        assert!(!odd.contains("<b>") && odd.contains("%2F"), "{odd}");
    }

    #[test]
    fn only_the_list_is_returned_to() {
        let form = |back: &str| Form {
            pairs: vec![("back".into(), back.into())],
        };
        assert_eq!(
            back(&form("/console/dead-letters?kind=x")),
            "/console/dead-letters?kind=x"
        );
        assert_eq!(back(&form("https://evil.example/")), LIST_PATH);
        assert_eq!(back(&form("/console/keys")), LIST_PATH);
    }
}
