//! Invoice documents over HTTP: the PDF's text read back with `pdftotext`, its first page
//! rendered with `pdftoppm`, the HTML page's escaping, and the errors.

use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{at, Daemon, Resp};

/// A German customer with billing details and a display name that is markup, billed one
/// closed day with usage; returns the id of the invoice that carries the usage.
async fn invoiced_customer(d: &Daemon) -> Value {
    let c = d
        .post(
            "/v1/customers",
            Some("c"),
            &json!({"external_id": "acme", "currency": "EUR",
                    "name": "<script>alert(1)</script>", "legal_name": "Acme Müller GmbH",
                    "email": "rechnung@acme.example",
                    "address": {"line1": "Friedrichstraße 123", "city": "Berlin",
                                "postal_code": "10117", "country": "DE"},
                    "tax_ids": [{"type": "eu_vat", "value": "DE123456789"}],
                    "locale": "de-DE"}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.json);
    let m = d
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "calls", "name": "API calls", "event_type": "call", "aggregation": "count"}),
        )
        .await;
    assert_eq!(m.status, 201, "{}", m.json);
    let p = d
        .post(
            "/v1/plans",
            Some("p"),
            &json!({"code": "daily", "name": "Daily", "currency": "EUR", "interval": "day",
                    "fixed_fee": {"amount_minor": 123456, "timing": "in_arrears"},
                    "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "0.25"}]}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    let today = &at(0)[..10];
    let start = format!("{today}T00:00:00Z");
    let day_ms = 86_400_000;
    let two_days_ago =
        tally::clock::rfc3339(tally::clock::parse_rfc3339(&start).expect("t") - 2 * day_ms);
    let s = d
        .post(
            "/v1/subscriptions",
            Some("s"),
            &json!({"customer": "acme", "plan": "daily", "start_at": two_days_ago}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    let yesterday = at(-86_400);
    let events: Vec<Value> = (0..7)
        .map(|i| json!({"id": format!("e{i}"), "customer": "acme", "type": "call", "timestamp": yesterday}))
        .collect();
    let e = d.post("/v1/events", None, &json!({"events": events})).await;
    assert!(e.status < 300, "{}", e.json);
    let run = d.post("/v1/billing-runs", Some("r"), &json!({})).await;
    assert_eq!(run.status, 201, "{}", run.json);
    let invoices = d.get("/v1/invoices").await.json["data"].clone();
    invoices
        .as_array()
        .expect("data")
        .iter()
        .find(|i| {
            i["lines"]
                .as_array()
                .is_some_and(|l| l.iter().any(|line| line["quantity"] == "7"))
        })
        .expect("an invoice with a usage line")
        .clone()
}

/// Spaces of every kind as one ASCII space, so text compares whatever `pdftotext` made of
/// no-break spaces and line breaks.
fn squash(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c == '\u{a0}' || c == '\u{202f}')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(tool: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is needed for this test (Debian: poppler-utils): {e}"));
    assert!(
        out.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn assert_document_headers(r: &Resp, content_type: &str, file_name: &str) {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.content_type(), content_type);
    assert_eq!(
        r.header("content-disposition"),
        Some(format!("inline; filename=\"{file_name}\"").as_str())
    );
    assert_eq!(r.header("cache-control"), Some("private"));
}

#[tokio::test]
async fn an_invoice_reads_back_from_its_pdf_with_figures_for_the_customer_locale() {
    let d = Daemon::start().await;
    let invoice = invoiced_customer(&d).await;
    let id = invoice["id"].as_str().expect("id");
    let pdf = d
        .get(&format!("/v1/invoices/{id}/document?format=pdf"))
        .await;
    // Named by the invoice's number.
    let number = invoice["number"].as_str().expect("number");
    assert_document_headers(&pdf, "application/pdf", &format!("invoice-{number}.pdf"));
    assert!(pdf.bytes.starts_with(b"%PDF-"));
    let again = d
        .get(&format!("/v1/invoices/{id}/document?format=pdf"))
        .await;
    assert_eq!(
        again.bytes, pdf.bytes,
        "the same invoice gives the same bytes"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let pdf_path = dir.path().join("invoice.pdf");
    std::fs::write(&pdf_path, &pdf.bytes).expect("write");
    let pdf_arg = pdf_path.to_str().expect("path");
    let text = squash(&String::from_utf8_lossy(
        &run("pdftotext", &[pdf_arg, "-"]).stdout,
    ));
    assert!(text.contains("Acme Müller GmbH"), "{text}");
    assert!(text.contains("Friedrichstraße 123"), "{text}");
    assert!(text.contains("VAT DE123456789"), "{text}");
    let lines = invoice["lines"].as_array().expect("lines");
    assert!(lines.len() >= 2);
    for line in lines {
        let description = line["description"].as_str().expect("description");
        assert!(
            text.contains(&squash(description)),
            "{description} in {text}"
        );
    }
    // 1,234.56 fixed fee and 7 calls at 0.25 = 1,236.31, written the German way.
    assert_eq!(invoice["subtotal_minor"], 123_631, "{invoice}");
    assert!(text.contains("Subtotal 1.236,31 €"), "{text}");
    assert!(text.contains("1.234,56 €"), "{text}");
    assert!(text.contains("0,25 €"), "{text}");
    assert!(text.contains("Amount due 1.236,31 €"), "{text}");

    let png_stem = dir.path().join("page");
    run(
        "pdftoppm",
        &[
            "-png",
            "-r",
            "50",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            pdf_arg,
            png_stem.to_str().expect("path"),
        ],
    );
    let png = std::fs::read(dir.path().join("page.png")).expect("page 1 rendered");
    assert!(png.starts_with(b"\x89PNG"));
}

#[tokio::test]
async fn the_html_page_escapes_what_customers_wrote() {
    let d = Daemon::start().await;
    let invoice = invoiced_customer(&d).await;
    let id = invoice["id"].as_str().expect("id");
    for path in [
        format!("/v1/invoices/{id}/document"),
        format!("/v1/invoices/{id}/document?format=html"),
    ] {
        let page = d.get(&path).await;
        assert_document_headers(
            &page,
            "text/html; charset=utf-8",
            &format!(
                "invoice-{}.html",
                invoice["number"].as_str().expect("number")
            ),
        );
        let html = String::from_utf8(page.bytes.clone()).expect("utf-8");
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script"), "no script element");
        assert!(html.contains("Acme Müller GmbH"));
        assert!(html.contains("1.236,31\u{a0}€"));
    }
}

#[tokio::test]
async fn documents_of_unknown_or_foreign_invoices_are_404_and_a_bad_format_is_400() {
    let d = Daemon::start().await;
    let invoice = invoiced_customer(&d).await;
    let id = invoice["id"].as_str().expect("id");
    let bad = d
        .get(&format!("/v1/invoices/{id}/document?format=docx"))
        .await;
    bad.assert_problem(400, "validation_failed");
    assert_eq!(bad.fields(), vec!["format".to_string()]);
    d.get("/v1/invoices/inv_00000000000000000000000000/document")
        .await
        .assert_problem(404, "resource_missing");
    d.get("/v1/invoices/nonsense/document?format=pdf")
        .await
        .assert_problem(404, "resource_missing");
    let tenant = d.cli(&["tenant", "create", "other"]);
    let stdout = String::from_utf8_lossy(&tenant.stdout).to_string();
    let other_key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("api key")
        .to_string();
    for format in ["html", "pdf"] {
        d.get_as(
            &other_key,
            &format!("/v1/invoices/{id}/document?format={format}"),
        )
        .await
        .assert_problem(404, "resource_missing");
    }
}

#[tokio::test]
async fn the_document_shows_the_number_and_seller_and_keeps_the_parties_it_was_issued_with() {
    let d = Daemon::start().await;
    let settings = d
        .post(
            "/v1/tenant/settings",
            Some("settings"),
            &json!({"legal_name": "Tally Test GmbH", "email": "billing@tally.example",
                    "address": {"line1": "Unter den Linden 1", "city": "Berlin",
                                "postal_code": "10117", "country": "DE"},
                    "invoice_footer": "Vielen Dank.",
                    "payment_instructions": "IBAN DE00 0000 0000 0000 0000 00"}),
        )
        .await;
    assert_eq!(settings.status, 200, "{}", settings.json);
    let invoice = invoiced_customer(&d).await;
    let id = invoice["id"].as_str().expect("id");
    let number = invoice["number"].as_str().expect("number").to_string();
    let pdf = d
        .get(&format!("/v1/invoices/{id}/document?format=pdf"))
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pdf_path = dir.path().join("invoice.pdf");
    std::fs::write(&pdf_path, &pdf.bytes).expect("write");
    let text = squash(&String::from_utf8_lossy(
        &run("pdftotext", &[pdf_path.to_str().expect("path"), "-"]).stdout,
    ));
    for expected in [
        number.as_str(),
        "Tally Test GmbH",
        "Unter den Linden 1",
        "Acme Müller GmbH",
        "IBAN DE00",
        "Vielen Dank.",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    // Later edits of the customer and the seller change neither the invoice nor its document.
    let json_before = d.get(&format!("/v1/invoices/{id}")).await.json;
    let moved = d
        .post(
            &format!(
                "/v1/customers/{}",
                invoice["customer"].as_str().expect("customer")
            ),
            Some("move"),
            &json!({"address": {"line1": "Neue Straße 9", "city": "Hamburg",
                                "postal_code": "20095", "country": "DE"},
                    "legal_name": "Acme Nord GmbH"}),
        )
        .await;
    assert!(moved.status < 300, "{}", moved.json);
    let renamed = d
        .post(
            "/v1/tenant/settings",
            Some("rename"),
            &json!({"legal_name": "Someone Else AG"}),
        )
        .await;
    assert_eq!(renamed.status, 200, "{}", renamed.json);
    assert_eq!(d.get(&format!("/v1/invoices/{id}")).await.json, json_before);
    let again = d
        .get(&format!("/v1/invoices/{id}/document?format=pdf"))
        .await;
    assert_eq!(again.bytes, pdf.bytes, "the issued document is unchanged");
}

#[tokio::test]
async fn a_credit_note_renders_with_its_number_and_the_invoice_it_corrects() {
    let d = Daemon::start().await;
    let invoice = invoiced_customer(&d).await;
    let id = invoice["id"].as_str().expect("id");
    let note = d
        .post(
            &format!("/v1/invoices/{id}/credit-notes"),
            Some("cn"),
            &json!({"amount_minor": 500, "reason": "Goodwill for the outage"}),
        )
        .await;
    assert_eq!(note.status, 201, "{}", note.json);
    let note_id = note.json["id"].as_str().expect("id");
    let number = note.json["number"].as_str().expect("number");
    let pdf = d
        .get(&format!("/v1/credit-notes/{note_id}/document?format=pdf"))
        .await;
    assert_document_headers(
        &pdf,
        "application/pdf",
        &format!("credit-note-{number}.pdf"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let pdf_path = dir.path().join("note.pdf");
    std::fs::write(&pdf_path, &pdf.bytes).expect("write");
    let text = squash(&String::from_utf8_lossy(
        &run("pdftotext", &[pdf_path.to_str().expect("path"), "-"]).stdout,
    ));
    let invoice_number = invoice["number"].as_str().expect("invoice number");
    for expected in [
        "Credit note",
        number,
        invoice_number,
        "Goodwill for the outage",
        "Acme Müller GmbH",
        "5,00 €",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    let missing = d
        .get("/v1/credit-notes/cn_00000000000000000000000000/document")
        .await;
    missing.assert_problem(404, "resource_missing");
}
