//! The console's invoice and payment pages: the document in its frame, verify, pay, void,
//! credit notes, refunds, dunning and reconciliation, in a real browser and over plain HTTP.
//! Every effect is checked through the API; the simulated provider collects.

use std::time::Duration;

use fantoccini::Locator;
use serde_json::{json, Value};

use crate::browser::Browser;
use crate::console::{http_sign_in, new_key, HttpSession};
use crate::harness::Daemon;

/// A customer taxed at 19 % with a 10.00 EUR daily fee in advance, billed: its invoice
/// (total 11.90 EUR).
async fn invoiced(d: &Daemon, name: &str) -> Value {
    let vat = d
        .post(
            "/v1/tax-rates",
            Some(&format!("vat-{name}")),
            &json!({"display_name": "VAT", "percentage": "19", "inclusive": false}),
        )
        .await;
    assert_eq!(vat.status, 201, "{}", vat.json);
    let c = d
        .post(
            "/v1/customers",
            Some(&format!("c-{name}")),
            &json!({"external_id": name, "name": format!("{name} GmbH"), "currency": "EUR",
                "tax_rates": [vat.json["id"]]}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.json);
    let plan = json!({"code": format!("plan-{name}"), "name": "Daily", "currency": "EUR",
        "interval": "day", "fixed_fee": {"amount_minor": 1000, "timing": "in_advance"}});
    let p = d.post("/v1/plans", Some(&format!("p-{name}")), &plan).await;
    assert_eq!(p.status, 201, "{}", p.json);
    let s = d
        .post(
            "/v1/subscriptions",
            Some(&format!("s-{name}")),
            &json!({"customer": name, "plan": format!("plan-{name}")}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    let run = d
        .post("/v1/billing-runs", Some(&format!("r-{name}")), &json!({}))
        .await;
    assert_eq!(run.status, 201, "{}", run.json);
    let customer = c.json["id"].as_str().expect("id");
    let inv = d
        .get(&format!("/v1/invoices?customer={customer}"))
        .await
        .json["data"][0]
        .clone();
    assert_eq!(inv["total_minor"], 1190, "{inv}");
    inv
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

async fn invoice(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/v1/invoices/{id}")).await.json
}

async fn payments_of(d: &Daemon, invoice: &str) -> Vec<Value> {
    d.get(&format!("/v1/payments?invoice={invoice}")).await.json["data"]
        .as_array()
        .expect("payments")
        .clone()
}

async fn credit_notes_of(d: &Daemon, invoice: &str) -> Vec<Value> {
    d.get(&format!("/v1/credit-notes?invoice={invoice}"))
        .await
        .json["data"]
        .as_array()
        .expect("credit notes")
        .clone()
}

/// Pays an invoice through the API and waits until it is paid: its payment.
async fn paid(d: &Daemon, inv: &str) -> Value {
    let p = d
        .post(
            &format!("/v1/invoices/{inv}/pay"),
            Some(&format!("pay-{inv}")),
            &json!({}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    d.eventually("the invoice paid", || async {
        invoice(d, inv).await["status"] == "paid"
    })
    .await;
    d.get(&format!("/v1/payments/{}", id_of(&p.json)))
        .await
        .json
}

/// The fields of the form on a page that posts to `action`, with what the operator types.
fn form_fields(html: &str, action: &str, typed: &[(&str, &str)]) -> Vec<(String, String)> {
    // The confirmation page's form posts back to where it came from: it has no action.
    let marker = if action.is_empty() {
        "<form method=\"post\"".to_string()
    } else {
        format!("action=\"{action}\"")
    };
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no form posting to {action} in {html}"));
    let end = html[start..].find("</form>").expect("form end") + start;
    let mut fields = Vec::new();
    for input in html[start..end].split("<input").skip(1) {
        let attr = |name: &str| {
            let m = format!(" {name}=\"");
            let s = input.find(&m)? + m.len();
            Some(input[s..s + input[s..].find('"')?].to_string())
        };
        if attr("type").as_deref() == Some("hidden") {
            if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
                fields.push((n, v));
            }
        }
    }
    fields.extend(typed.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    fields
}

/// Posts a form's fields as they are.
async fn post_fields(
    s: &HttpSession,
    d: &Daemon,
    action: &str,
    fields: &[(String, String)],
) -> (u16, String, String) {
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    s.post(d, action, &pairs).await
}

/// Waits (bounded) until the browser is at `path`: a click returns before its navigation ends.
async fn at_path(b: &Browser, path: &str) {
    for _ in 0..50 {
        if b.path().await == path && b.has("main#main").await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.path().await, path);
}

#[tokio::test]
async fn an_invoice_is_read_verified_paid_and_credited_in_the_browser() {
    let d = Daemon::start().await;
    let inv = invoiced(&d, "acme").await;
    let id = id_of(&inv);
    let number = inv["number"].as_str().expect("number").to_string();
    let Some(b) = Browser::open(&d.base).await else {
        return;
    };
    b.sign_in(&d.key).await;
    b.goto("/console/invoices?status=finalized").await;
    b.click_link(&number).await;
    assert_eq!(b.path().await, format!("/console/invoices/{id}"));
    let page = b.body().await;
    for shown in [
        "finalized",
        "acme",
        "VAT",
        "19 %",
        "10.00 EUR",
        "1.90 EUR",
        "11.90 EUR",
    ] {
        assert!(page.contains(shown), "{shown} in {page}");
    }
    // The document renders inside its sandboxed frame.
    let frame = b
        .client
        .find(Locator::Css("iframe.document[sandbox]"))
        .await
        .expect("the document frame");
    frame.clone().enter_frame().await.expect("enter the frame");
    let document = b.body().await;
    assert!(document.contains(&number), "{document}");
    b.client.enter_parent_frame().await.expect("back out");

    b.click_button("Verify").await;
    at_path(&b, &format!("/console/invoices/{id}?verify=1")).await;
    assert!(
        b.text("section.verification").await.contains("passed"),
        "{}",
        b.body().await
    );
    b.screenshot("invoice").await;

    b.double_click_button("Pay").await;
    d.eventually("the invoice paid", || async {
        invoice(&d, &id).await["status"] == "paid"
    })
    .await;
    assert_eq!(
        payments_of(&d, &id).await.len(),
        1,
        "one attempt for two clicks"
    );
    b.goto(&format!("/console/invoices/{id}")).await;
    assert!(b.text("dl.fields").await.contains("paid"));
    assert!(b
        .text("section[aria-labelledby=payments-h]")
        .await
        .contains("succeeded"));

    // A credit note, its button clicked twice: one credit note.
    b.fill("#cn_amount", "1.00").await;
    b.fill("#cn_reason", "goodwill").await;
    b.double_click_button("Create credit note").await;
    at_path(&b, &format!("/console/invoices/{id}")).await;
    assert!(b
        .text("section[aria-labelledby=credit-notes-h]")
        .await
        .contains("goodwill"));
    let notes = credit_notes_of(&d, &id).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["amount_minor"], 100);
    b.close().await;
}

#[tokio::test]
async fn a_refund_asks_first_and_a_double_click_refunds_once() {
    let d = Daemon::start().await;
    let inv = invoiced(&d, "acme").await;
    let payment = paid(&d, &id_of(&inv)).await;
    let pay_id = id_of(&payment);
    let Some(b) = Browser::open(&d.base).await else {
        return;
    };
    b.sign_in(&d.key).await;
    b.goto("/console/payments").await;
    b.click_link(&pay_id).await;
    let page = b.body().await;
    for shown in ["succeeded", "11.90 EUR", "collected: the invoice is paid"] {
        assert!(page.contains(shown), "{shown} in {page}");
    }
    b.fill("#refund_amount", "2.00").await;
    b.click_button("Refund").await;
    assert!(
        b.text("p.question").await.contains("Refund 2.00 EUR"),
        "{}",
        b.body().await
    );
    assert!(
        payment_refunds(&d, &pay_id).await.is_empty(),
        "nothing before the answer"
    );
    b.double_click_button("Yes, do it").await;
    d.eventually("the refund settled", || async {
        payment_refunds(&d, &pay_id)
            .await
            .first()
            .map(|r| r["status"].clone())
            == Some(json!("succeeded"))
    })
    .await;
    let refunds = payment_refunds(&d, &pay_id).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0]["amount_minor"], 200);
    b.goto(&format!("/console/payments/{pay_id}")).await;
    assert!(b
        .text("section[aria-labelledby=refunds-h]")
        .await
        .contains("2.00 EUR"));
    b.screenshot("payment").await;
    b.close().await;
}

async fn payment_refunds(d: &Daemon, id: &str) -> Vec<Value> {
    d.get(&format!("/v1/payments/{id}")).await.json["refunds"]
        .as_array()
        .expect("refunds")
        .clone()
}

#[tokio::test]
async fn pay_credit_note_and_refund_forms_posted_twice_act_once() {
    let d = Daemon::start().await;
    let inv = id_of(&invoiced(&d, "acme").await);
    let s = http_sign_in(&d, &d.key).await.expect("signed in");
    let page = format!("/console/invoices/{inv}");
    let html = s.get(&d, &page).await.2;

    let pay = form_fields(&html, &format!("{page}/pay"), &[("payment_method", "")]);
    for time in 0..2 {
        let (status, location, body) = post_fields(&s, &d, &format!("{page}/pay"), &pay).await;
        assert_eq!((status, location.as_str()), (303, page.as_str()), "{body}");
        let shown = s.get(&d, &page).await.2;
        assert!(shown.contains("Payment started"), "{shown}");
        assert_eq!(
            shown.contains("already submitted"),
            time == 1,
            "only the second post is a replay: {shown}"
        );
    }
    assert_eq!(payments_of(&d, &inv).await.len(), 1);
    d.eventually("the invoice paid", || async {
        invoice(&d, &inv).await["status"] == "paid"
    })
    .await;

    let html = s.get(&d, &page).await.2;
    let credit = form_fields(
        &html,
        &format!("{page}/credit-notes"),
        &[("line_0", "1.00"), ("amount", ""), ("reason", "twice")],
    );
    for _ in 0..2 {
        let (status, _, body) = post_fields(&s, &d, &format!("{page}/credit-notes"), &credit).await;
        assert_eq!(status, 303, "{body}");
    }
    let notes = credit_notes_of(&d, &inv).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["lines"], json!([{"line": 0, "amount_minor": 100}]));
    assert_eq!(
        notes[0]["amount_minor"], 119,
        "the line's tax is credited with it"
    );

    let pay_id = id_of(&payments_of(&d, &inv).await[0]);
    let payment_page = format!("/console/payments/{pay_id}");
    let html = s.get(&d, &payment_page).await.2;
    let refund = form_fields(
        &html,
        &format!("{payment_page}/refund"),
        &[("amount", "0.50"), ("confirmed", "yes")],
    );
    for _ in 0..2 {
        let (status, _, body) =
            post_fields(&s, &d, &format!("{payment_page}/refund"), &refund).await;
        assert_eq!(status, 303, "{body}");
    }
    let refunds = payment_refunds(&d, &pay_id).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0]["amount_minor"], 50);
}

#[tokio::test]
async fn void_asks_for_confirmation_then_voids() {
    let d = Daemon::start().await;
    let inv = id_of(&invoiced(&d, "acme").await);
    let s = http_sign_in(&d, &d.key).await.expect("signed in");
    let page = format!("/console/invoices/{inv}");
    let html = s.get(&d, &page).await.2;
    let void = form_fields(&html, &format!("{page}/void"), &[]);
    let (status, _, asked) = post_fields(&s, &d, &format!("{page}/void"), &void).await;
    assert_eq!(status, 200);
    assert!(
        asked.contains("Please confirm") && asked.contains(&inv),
        "{asked}"
    );
    assert_eq!(invoice(&d, &inv).await["status"], "finalized", "not yet");
    let confirmed = form_fields(&asked, "", &[]);
    assert!(confirmed.contains(&("confirmed".to_string(), "yes".to_string())));
    let (status, location, _) = post_fields(&s, &d, &format!("{page}/void"), &confirmed).await;
    assert_eq!((status, location.as_str()), (303, page.as_str()));
    assert_eq!(invoice(&d, &inv).await["status"], "void");
    let shown = s.get(&d, &page).await.2;
    assert!(shown.contains("Invoice voided."), "{shown}");
    assert!(
        !shown.contains("Void invoice</button>"),
        "no second void offered"
    );
}

#[tokio::test]
async fn read_only_keys_see_no_actions_and_forged_forms_do_nothing() {
    let d = Daemon::start().await;
    let inv = id_of(&invoiced(&d, "acme").await);
    let page = format!("/console/invoices/{inv}");
    // A forged pay form (no or a wrong CSRF token) is refused and pays nothing.
    let s = http_sign_in(&d, &d.key).await.expect("signed in");
    let html = s.get(&d, &page).await.2;
    let mut forged = form_fields(&html, &format!("{page}/pay"), &[]);
    forged.retain(|(k, _)| k != "csrf");
    let (status, _, body) = post_fields(&s, &d, &format!("{page}/pay"), &forged).await;
    assert_eq!(status, 403, "{body}");
    forged.push(("csrf".into(), "forged".into()));
    let (status, _, body) = post_fields(&s, &d, &format!("{page}/pay"), &forged).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("CSRF"), "{body}");
    assert!(payments_of(&d, &inv).await.is_empty(), "nothing was paid");

    let (_, key) = new_key(&d, &["--read-only"]);
    let ro = http_sign_in(&d, &key)
        .await
        .expect("a read-only key signs in");
    let (status, _, html) = ro.get(&d, &page).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("11.90 EUR") && html.contains("Verify"),
        "it reads"
    );
    for action in ["/pay\"", "/void\"", "/credit-notes\"", ">Pay<"] {
        assert!(
            !html.contains(action),
            "{action} offered to a read-only key"
        );
    }
    let attempt = [
        ("csrf", ro.csrf.as_str()),
        ("idempotency_key", "console-ro-1"),
    ];
    let (status, _, body) = ro.post(&d, &format!("{page}/pay"), &attempt).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    assert!(payments_of(&d, &inv).await.is_empty(), "nothing was paid");

    let pay_id = id_of(&paid(&d, &inv).await);
    let payment_page = format!("/console/payments/{pay_id}");
    let html = ro.get(&d, &payment_page).await.2;
    assert!(
        html.contains("succeeded") && !html.contains("/refund\""),
        "{html}"
    );
    let (status, _, _) = ro
        .post(
            &d,
            &format!("{payment_page}/refund"),
            &[attempt[0], attempt[1], ("confirmed", "yes")],
        )
        .await;
    assert_eq!(status, 403);
    assert!(payment_refunds(&d, &pay_id).await.is_empty());
}

#[tokio::test]
async fn the_document_frame_and_the_pdf_have_their_own_headers() {
    let d = Daemon::start().await;
    let inv = invoiced(&d, "acme").await;
    let id = id_of(&inv);
    let s = http_sign_in(&d, &d.key).await.expect("signed in");
    let fetch = |path: String| {
        s.client
            .get(d.url(&path))
            .header("cookie", &s.cookie)
            .send()
    };
    let doc = fetch(format!("/console/invoices/{id}/document"))
        .await
        .expect("document");
    assert_eq!(doc.status(), 200);
    let h = doc.headers().clone();
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(
        csp.contains("style-src 'unsafe-inline'")
            && csp.contains("frame-ancestors 'self'")
            && csp.contains("default-src 'none'")
            && !csp.contains("script"),
        "{csp}"
    );
    assert_eq!(h["x-frame-options"], "SAMEORIGIN");
    let html = doc.text().await.expect("html");
    assert!(
        html.contains(inv["number"].as_str().expect("number")),
        "{html}"
    );

    let page = fetch(format!("/console/invoices/{id}"))
        .await
        .expect("page");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        !csp.contains("unsafe-inline") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.expect("html");
    assert!(
        html.contains("<iframe class=\"document\" sandbox=\"\""),
        "{html}"
    );

    let pdf = fetch(format!("/console/invoices/{id}/pdf"))
        .await
        .expect("pdf");
    assert_eq!(pdf.status(), 200);
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    let disposition = pdf.headers()["content-disposition"]
        .to_str()
        .expect("disposition")
        .to_string();
    assert_eq!(
        disposition,
        format!(
            "attachment; filename=\"invoice-{}.pdf\"",
            inv["number"].as_str().expect("number")
        )
    );
    assert!(pdf.bytes().await.expect("bytes").starts_with(b"%PDF-"));

    let missing = fetch("/console/invoices/inv_nope/document".into())
        .await
        .expect("404");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn lists_filter_and_a_declined_payment_shows_its_dunning_and_reconciliation_reports() {
    let d = Daemon::start().await;
    let first = id_of(&invoiced(&d, "acme").await);
    let second = id_of(&invoiced(&d, "globex").await);
    let s = http_sign_in(&d, &d.key).await.expect("signed in");
    let html = s.get(&d, "/console/invoices?customer=globex").await.2;
    assert!(html.contains(&second) && !html.contains(&first), "{html}");
    let html = s.get(&d, "/console/invoices?status=paid").await.2;
    assert!(html.contains("No invoices match."), "{html}");
    let (status, _, html) = s.get(&d, "/console/invoices?customer=nobody").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("could not be read") && html.contains("nobody"),
        "{html}"
    );
    let html = s
        .get(&d, &format!("/console/invoices?starting_after={first}"))
        .await
        .2;
    assert!(html.contains(&second) && !html.contains(&first), "{html}");
    assert!(html.contains("First page"), "{html}");

    // A decline: the payment page names the retry dunning scheduled.
    let declined = d
        .post(
            &format!("/v1/invoices/{first}/pay"),
            Some("decline"),
            &json!({"payment_method": "sim_decline"}),
        )
        .await;
    assert_eq!(declined.status, 201, "{}", declined.json);
    d.eventually("the retry scheduled", || async {
        payments_of(&d, &first).await.len() == 2
    })
    .await;
    let html = s
        .get(&d, &format!("/console/payments/{}", id_of(&declined.json)))
        .await
        .2;
    assert!(html.contains("attempt 2 is scheduled for"), "{html}");
    assert!(
        html.contains("retried after 3, 5, 7 days (4 attempts in all)"),
        "{html}"
    );
    assert!(html.contains("declined"), "{html}");
    let html = s
        .get(&d, &format!("/console/payments?invoice={first}"))
        .await
        .2;
    assert_eq!(
        html.matches("<tr>").count(),
        3,
        "two attempts and the header: {html}"
    );

    // A reconciliation started from the form opens its report.
    paid(&d, &second).await;
    let html = s.get(&d, "/console/reconciliations").await.2;
    let from = crate::harness::at(-86_400);
    let form = form_fields(
        &html,
        "/console/reconciliations",
        &[("from", from.as_str()), ("to", "")],
    );
    let (status, location, body) = post_fields(&s, &d, "/console/reconciliations", &form).await;
    assert_eq!(status, 303, "{body}");
    assert!(
        location.starts_with("/console/reconciliations/rec_"),
        "{location}"
    );
    let rec = location.rsplit('/').next().expect("id").to_string();
    d.eventually("the reconciliation completed", || async {
        d.get(&format!("/v1/reconciliations/{rec}")).await.json["status"] == "completed"
    })
    .await;
    let html = s.get(&d, &location).await.2;
    assert!(html.contains("Reconciliation started.") && !html.contains("already submitted"));
    for category in [
        "Matched (2)",
        "Missing internally (0)",
        "Missing at the provider (0)",
        "Amount mismatch (0)",
        "Status mismatch (0)",
    ] {
        assert!(html.contains(category), "{category} in {html}");
    }
}

#[tokio::test]
async fn reconciliations_are_listed_in_pages_through_the_api_and_the_console() {
    let d = Daemon::start().await;
    let empty = d.get("/v1/reconciliations").await;
    assert_eq!(empty.status, 200, "{}", empty.json);
    assert_eq!(empty.json["data"], json!([]));
    let mut ids = Vec::new();
    for n in 0..2 {
        let r = d
            .post(
                "/v1/reconciliations",
                Some(&format!("rec-{n}")),
                &json!({"from": crate::harness::at(-86_400)}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        ids.push(id_of(&r.json));
    }
    let first = d.get("/v1/reconciliations?limit=1").await.json;
    assert_eq!(first["data"][0]["id"], ids[0].as_str());
    assert_eq!(first["has_more"], true);
    let cursor = first["next_cursor"].as_str().expect("cursor");
    let second = d
        .get(&format!(
            "/v1/reconciliations?limit=1&starting_after={cursor}"
        ))
        .await
        .json;
    assert_eq!(second["data"][0]["id"], ids[1].as_str());
    assert_eq!(second["has_more"], false);
    d.get("/v1/reconciliations?starting_after=pay_x")
        .await
        .assert_problem(400, "validation_failed");

    let s = http_sign_in(&d, &d.key).await.expect("signed in");
    d.eventually("both completed", || async {
        d.get("/v1/reconciliations").await.json["data"]
            .as_array()
            .is_some_and(|l| l.iter().all(|r| r["status"] == "completed"))
    })
    .await;
    let html = s.get(&d, "/console/reconciliations").await.2;
    for id in &ids {
        assert!(
            html.contains(&format!("/console/reconciliations/{id}")),
            "{html}"
        );
    }
}
