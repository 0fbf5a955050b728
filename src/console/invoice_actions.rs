//! What an operator can do to an invoice from its page: pay it, void it, credit it. Each posts
//! to the public API with the idempotency key minted when the form was rendered.

use std::sync::Arc;

use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::Router;
use maud::{html, Markup};
use serde_json::{json, Map, Value};

use super::amount::{major_text, minor_units};
use super::components::{form_tokens, money};
use super::dispatch::{self, segment};
use super::form::{self, Action, Form};
use super::invoices::InvoiceView;
use super::session::Operator;
use crate::api::AppState;

/// The routes of the invoice actions, relative to `/console`.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/invoices/{id}/pay", post(pay))
        .route("/invoices/{id}/void", post(void))
        .route("/invoices/{id}/credit-notes", post(credit_note))
}

fn invoice_page(id: &str) -> String {
    format!("/console/invoices/{}", segment(id))
}

/// The Pay form: an optional payment method (the customer's default when blank) and the button.
/// Nothing for read-only operators.
pub fn pay_form(op: &Operator, inv: &InvoiceView) -> Markup {
    if op.read_only() {
        return html! {};
    }
    html! {
        form.action.pay method="post" action=(format!("{}/pay", invoice_page(&inv.id))) {
            (form_tokens(op))
            label for="payment_method" { "Payment method (blank: the customer's)" }
            input #payment_method type="text" name="payment_method" autocomplete="off";
            button type="submit" { "Pay" }
        }
    }
}

/// Starts collecting the invoice (`POST /v1/invoices/{id}/pay`).
pub async fn pay(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    let method = form.text("payment_method");
    let body = (!method.is_empty()).then(|| json!({ "payment_method": method }));
    let action = Action {
        api_path: format!("/v1/invoices/{}/pay", segment(&id)),
        body,
        return_to: invoice_page(&id),
        done: "Payment started: the provider is being charged; this page shows the outcome once it is recorded.",
        confirm: None,
    };
    form::run(&op, &form, action).await
}

/// Voids the invoice (`POST /v1/invoices/{id}/void`), after asking.
pub async fn void(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    let action = Action {
        api_path: format!("/v1/invoices/{}/void", segment(&id)),
        body: None,
        return_to: invoice_page(&id),
        done: "Invoice voided.",
        confirm: Some(format!(
            "Void invoice {id}? It can no longer be paid; its receivable is reversed in the ledger."
        )),
    };
    form::run(&op, &form, action).await
}

/// The credit-note form: an amount per line, or one amount (tax included), a reason and, for
/// a paid invoice, whether to refund the payment. Nothing for read-only operators or invoices
/// that cannot be credited.
pub fn credit_note_form(op: &Operator, inv: &InvoiceView) -> Markup {
    if op.read_only() || !["finalized", "paid"].contains(&inv.status.as_str()) {
        return html! {};
    }
    let c = inv.currency.as_str();
    let remaining = inv.total_minor.saturating_sub(inv.credited_minor);
    html! {
        section aria-labelledby="credit-note-h" {
            h2 #credit-note-h { "Create a credit note" }
            p.hint {
                "Credit some lines (their exclusive tax is credited with them) or one amount, tax included — one of the two. "
                "Amounts in " (c) ", e.g. " (major_text(1250, c)) ". Up to " (money(remaining, c)) " remains creditable."
            }
            form.credit-note method="post" action=(format!("{}/credit-notes", invoice_page(&inv.id))) {
                (form_tokens(op))
                @if !inv.lines.is_empty() {
                    fieldset {
                        legend { "By line (before exclusive tax)" }
                        @for (i, l) in inv.lines.iter().enumerate() {
                            @let field = format!("line_{i}");
                            label for=(field) { "Line " (i) ": " (l.description) " (" (money(l.amount_minor, c)) ")" }
                            input id=(field) type="text" name=(field) inputmode="decimal" autocomplete="off";
                        }
                    }
                }
                label for="cn_amount" { "Or an amount, tax included" }
                input #cn_amount type="text" name="amount" inputmode="decimal" autocomplete="off";
                label for="cn_reason" { "Reason" }
                input #cn_reason type="text" name="reason" maxlength="500";
                @if inv.status == "paid" {
                    label for="cn_refund" {
                        input #cn_refund type="checkbox" name="refund" value="yes";
                        " Refund the payment (otherwise the customer keeps a credit balance)"
                    }
                }
                div { button type="submit" { "Create credit note" } }
            }
        }
    }
}

/// The API body of a credit-note form, or what is wrong with the amounts typed.
pub fn credit_note_body(form: &Form, currency: &str, line_count: usize) -> Result<Value, String> {
    let mut body = Map::new();
    let mut lines = Vec::new();
    for i in 0..line_count {
        let text = form.text(&format!("line_{i}"));
        if text.is_empty() {
            continue;
        }
        let amount = minor_units(&text, currency).map_err(|e| format!("line {i}: {e}"))?;
        lines.push(json!({ "line": i, "amount_minor": amount }));
    }
    if !lines.is_empty() {
        body.insert("lines".into(), Value::Array(lines));
    }
    let amount = form.text("amount");
    if !amount.is_empty() {
        let minor = minor_units(&amount, currency).map_err(|e| format!("amount: {e}"))?;
        body.insert("amount_minor".into(), json!(minor));
    }
    let reason = form.text("reason");
    if !reason.is_empty() {
        body.insert("reason".into(), json!(reason));
    }
    if form.get("refund") == Some("yes") {
        body.insert("refund".into(), json!(true));
    }
    Ok(Value::Object(body))
}

/// Creates a credit note (`POST /v1/invoices/{id}/credit-notes`); one that refunds asks first.
pub async fn credit_note(op: Operator, Path(id): Path<String>, form: Form) -> Response {
    if let Err(e) = form.check_csrf(&op) {
        return e.into_response();
    }
    let inv: InvoiceView = match dispatch::get(&op, &format!("/v1/invoices/{}", segment(&id))).await
    {
        Ok(inv) => inv,
        Err(e) => return e.into_response(),
    };
    let body = match credit_note_body(&form, &inv.currency, inv.lines.len()) {
        Ok(body) => body,
        Err(problem) => {
            op.flash(true, format!("Not done: {problem}"));
            return Redirect::to(&invoice_page(&id)).into_response();
        }
    };
    let refunds = body.get("refund").is_some();
    let action = Action {
        api_path: format!("/v1/invoices/{}/credit-notes", segment(&id)),
        body: Some(body),
        return_to: invoice_page(&id),
        done: "Credit note created.",
        confirm: refunds.then(|| {
            format!(
                "Create a credit note for invoice {} and refund its payment to the customer?",
                inv.label()
            )
        }),
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
    fn credit_note_bodies_take_what_was_typed_as_the_api_takes_it() {
        let body = credit_note_body(
            &form(&[("line_1", "2.50"), ("line_0", ""), ("reason", " late ")]),
            "EUR",
            2,
        );
        assert_eq!(
            body,
            Ok(json!({"lines": [{"line": 1, "amount_minor": 250}], "reason": "late"}))
        );
        let body = credit_note_body(&form(&[("amount", "11.9"), ("refund", "yes")]), "EUR", 1);
        assert_eq!(body, Ok(json!({"amount_minor": 1190, "refund": true})));
        assert_eq!(credit_note_body(&form(&[]), "EUR", 3), Ok(json!({})));
        assert!(credit_note_body(&form(&[("amount", "1.234")]), "EUR", 0).is_err());
        assert!(credit_note_body(&form(&[("line_0", "x")]), "EUR", 1).is_err());
    }
}
