//! Invoice numbers, seller settings and the parties an invoice is issued with, over HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::harness::{at, Daemon};

/// Midnight UTC `days` days ago, RFC 3339.
fn days_ago(days: i64) -> String {
    let today = &at(0)[..10];
    let midnight = tally::clock::parse_rfc3339(&format!("{today}T00:00:00Z")).expect("t");
    tally::clock::rfc3339(midnight - days * 86_400_000)
}

async fn daily_plan(d: &Daemon) {
    let p = d
        .post(
            "/v1/plans",
            Some("plan-d"),
            &json!({"code": "d", "name": "Daily", "currency": "USD", "interval": "day",
                    "fixed_fee": {"amount_minor": 1000}}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
}

async fn subscribe(d: &Daemon, customer: &str, days: i64) {
    let s = d
        .post(
            "/v1/subscriptions",
            Some(&format!("sub-{customer}")),
            &json!({"customer": customer, "plan": "d", "start_at": days_ago(days)}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
}

/// Every invoice of the tenant, oldest first.
async fn all_invoices(d: &Daemon) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/invoices?limit=500&starting_after={a}"),
            None => "/v1/invoices?limit=500".to_string(),
        };
        let r = d.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.json);
        out.extend(r.json["data"].as_array().expect("data").iter().cloned());
        match r.json["next_cursor"].as_str() {
            Some(c) => after = Some(c.to_string()),
            None => return out,
        }
    }
}

/// A billing run to completion (following its continuation).
async fn run_to_completion(d: &Daemon, key: &str) {
    let r = d.post("/v1/billing-runs", Some(key), &json!({})).await;
    assert!(r.status == 201 || r.status == 202, "{}", r.json);
    let id = r.json["id"].as_str().expect("run id").to_string();
    d.eventually("the run completes", || async {
        d.get(&format!("/v1/billing-runs/{id}")).await.json["status"] == "completed"
    })
    .await;
}

/// Asserts that the numbers (`INV-<year>-<seq>`) are, per year, exactly 1..N each once.
fn assert_gapless(invoices: &[Value]) {
    let mut by_year: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for inv in invoices {
        let number = inv["number"]
            .as_str()
            .unwrap_or_else(|| panic!("no number: {inv}"));
        let parts: Vec<&str> = number.split('-').collect();
        assert_eq!(parts.len(), 3, "{number}");
        assert_eq!(parts[0], "INV");
        assert_eq!(parts[2].len(), 6, "{number}");
        by_year
            .entry(parts[1].to_string())
            .or_default()
            .push(parts[2].parse().expect("seq"));
    }
    for (year, mut seqs) in by_year {
        seqs.sort_unstable();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "year {year}");
    }
}

/// Fifty tasks at once: billing runs and `pay` requests on finalized invoices, until `stop`.
fn storm(d: &Daemon, round: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..50)
        .map(|task| {
            let client = d.client.clone();
            let base = d.base.clone();
            let key = d.key.clone();
            tokio::spawn(async move {
                for i in 0..4 {
                    let post = |path: String, idem: String, body: Value| {
                        client
                            .post(format!("{base}{path}"))
                            .bearer_auth(&key)
                            .header("content-type", "application/json")
                            .header("Idempotency-Key", idem)
                            .body(body.to_string())
                            .send()
                    };
                    if task % 2 == 0 {
                        let idem = format!("run-{round}-{task}-{i}");
                        if post("/v1/billing-runs".into(), idem, json!({}))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    let listed = client
                        .get(format!("{base}/v1/invoices?status=finalized&limit=20"))
                        .bearer_auth(&key)
                        .send()
                        .await;
                    let Ok(listed) = listed else { return };
                    let Ok(page) = listed.json::<Value>().await else {
                        return;
                    };
                    let ids: Vec<String> = page["data"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v["id"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    if let Some(inv) = ids.get((task + i) % ids.len().max(1)) {
                        let path = format!("/v1/invoices/{inv}/pay");
                        if post(path, format!("pay-{inv}"), json!({})).await.is_err() {
                            return;
                        }
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn numbers_stay_gapless_through_concurrent_runs_payments_and_kills() {
    let mut d = Daemon::start_with("[billing]\nrun_chunk_periods = 40\n").await;
    daily_plan(&d).await;
    for round in 0..4usize {
        for n in 0..50 {
            let customer = format!("c{round}-{n}");
            d.customer(&customer, "USD").await;
            subscribe(&d, &customer, 3).await;
        }
        let tasks = storm(&d, round);
        if round < 3 {
            tokio::time::sleep(Duration::from_millis(150 + 100 * round as u64)).await;
            d.kill9();
            for t in tasks {
                let _ = t.await;
            }
            d.restart().await;
        } else {
            for t in tasks {
                t.await.expect("task");
            }
        }
    }
    run_to_completion(&d, "final-run").await;
    // A run detached before the last one may still be finishing: wait for a stable count.
    let mut invoices = all_invoices(&d).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = all_invoices(&d).await;
        if again.len() == invoices.len() {
            break;
        }
        invoices = again;
    }
    // 200 subscriptions started three days ago: three closed days each.
    let live = invoices.iter().filter(|i| i["status"] != "void").count();
    assert_eq!(live, 600, "one invoice per closed day");
    assert_gapless(&invoices);
    let numbers = |all: &[Value]| -> Vec<(Value, Value)> {
        all.iter()
            .map(|i| (i["id"].clone(), i["number"].clone()))
            .collect()
    };
    d.restart().await;
    assert_eq!(
        numbers(&all_invoices(&d).await),
        numbers(&invoices),
        "numbers survive a restart"
    );
}

#[tokio::test]
async fn a_custom_prefix_and_year_format_number_invoices_and_previews_take_none() {
    let d = Daemon::start().await;
    let r = d
        .post(
            "/v1/tenant/settings",
            Some("fmt"),
            &json!({"invoice_prefix": "ACME", "invoice_number_format": "{prefix}/{year}/{seq:04}"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["invoice_prefix"], "ACME");
    assert_eq!(r.json["credit_note_prefix"], "CN");
    daily_plan(&d).await;
    let customer = d.customer("acme-buyer", "USD").await;
    subscribe(&d, "acme-buyer", 2).await;
    // Previews never take a number.
    let upcoming = d
        .get(&format!("/v1/customers/{customer}/upcoming-invoice"))
        .await;
    assert_eq!(upcoming.status, 200, "{}", upcoming.json);
    assert!(upcoming.json["invoices"][0]["number"].is_null());
    run_to_completion(&d, "run-1").await;
    let year = &at(0)[..4];
    let numbers: Vec<String> = all_invoices(&d)
        .await
        .iter()
        .map(|i| i["number"].as_str().expect("number").to_string())
        .collect();
    assert_eq!(
        numbers,
        [format!("ACME/{year}/0001"), format!("ACME/{year}/0002")]
    );
    // Void one: it keeps its number; its re-issue takes the next.
    let first = all_invoices(&d).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let v = d
        .post(
            &format!("/v1/invoices/{first}/void"),
            Some("void-1"),
            &json!({}),
        )
        .await;
    assert_eq!(v.status, 200, "{}", v.json);
    assert_eq!(v.json["number"], format!("ACME/{year}/0001"));
    run_to_completion(&d, "run-2").await;
    let all = all_invoices(&d).await;
    assert_eq!(all.len(), 3);
    assert_eq!(all[2]["replaces"], first.as_str());
    assert_eq!(all[2]["number"], format!("ACME/{year}/0003"));
    // The finalized event carries the number.
    let events = d
        .get("/v1/notifications?type=invoice.finalized&limit=100")
        .await;
    let numbers: Vec<&str> = events.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|n| n["data"]["object"]["number"].as_str())
        .collect();
    assert_eq!(numbers.len(), 3, "{}", events.json);
    assert!(numbers.contains(&format!("ACME/{year}/0003").as_str()));
}

/// A 1×1 PNG.
fn tiny_png() -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, body) in [
        (&b"IHDR"[..], &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0][..]),
        (
            b"IDAT",
            &[0x78, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01],
        ),
        (b"IEND", &[]),
    ] {
        png.extend_from_slice(&(body.len() as u32).to_be_bytes());
        png.extend_from_slice(kind);
        png.extend_from_slice(body);
        png.extend_from_slice(&crc32(&[kind, body].concat()).to_be_bytes());
    }
    png
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn settings_are_validated_field_by_field_and_bad_input_writes_nothing() {
    let d = Daemon::start().await;
    let initial = d.get("/v1/tenant/settings").await;
    assert_eq!(initial.status, 200);
    assert_eq!(
        initial.json["invoice_number_format"],
        "{prefix}-{year}-{seq:06}"
    );
    assert_eq!(initial.json["invoice_prefix"], "INV");
    assert_eq!(initial.json["version"], 0);
    let bad = [
        (
            json!({"invoice_number_format": "{prefix}-{year}"}),
            "invoice_number_format",
        ),
        (
            json!({"invoice_number_format": "{seq:013}"}),
            "invoice_number_format",
        ),
        (
            json!({"invoice_number_format": "INV {seq}"}),
            "invoice_number_format",
        ),
        (json!({"invoice_prefix": ""}), "invoice_prefix"),
        (json!({"credit_note_prefix": "C N"}), "credit_note_prefix"),
        (
            json!({"invoice_footer": "x".repeat(2001)}),
            "invoice_footer",
        ),
        (
            json!({"payment_instructions": "y".repeat(2001)}),
            "payment_instructions",
        ),
        (json!({"legal_name": ""}), "legal_name"),
        (json!({"email": "not-an-email"}), "email"),
        (
            json!({"tax_id": {"type": "eu_vat", "value": "XX1"}}),
            "tax_id.value",
        ),
        (
            json!({"tax_id": {"type": "nope", "value": "1"}}),
            "tax_id.type",
        ),
        (
            json!({"address": {"line1": "1 Road", "city": "Berlin", "postal_code": "10115", "country": "ZZ"}}),
            "address.country",
        ),
        (
            json!({"logo": {"media_type": "image/gif", "data": b64(&tiny_png())}}),
            "logo.media_type",
        ),
        (
            json!({"logo": {"media_type": "image/png", "data": "***"}}),
            "logo.data",
        ),
        (
            json!({"logo": {"media_type": "image/png", "data": b64(b"not a png")}}),
            "logo.data",
        ),
        (
            json!({"logo": {"media_type": "image/png", "data": b64(&vec![0u8; 256 * 1024 + 1])}}),
            "logo.data",
        ),
        (
            json!({"logo": {"media_type": "image/svg+xml", "data": b64(b"<svg><script>alert(1)</script></svg>")}}),
            "logo.data",
        ),
        (
            json!({"logo": {"media_type": "image/svg+xml", "data": b64(b"<svg onload=\"x()\"/>")}}),
            "logo.data",
        ),
        (
            json!({"logo": {"media_type": "image/svg+xml", "data": b64(b"<svg><image href=\"https://e.com/a.png\"/></svg>")}}),
            "logo.data",
        ),
        (
            json!({"logo": {"media_type": "image/svg+xml", "data": b64(b"<html/>")}}),
            "logo.data",
        ),
    ];
    for (i, (body, field)) in bad.iter().enumerate() {
        // A good field beside the bad one is not written either.
        let mut body = body.clone();
        body["legal_name"] = body
            .get("legal_name")
            .cloned()
            .unwrap_or(json!("Good GmbH"));
        let r = d
            .post("/v1/tenant/settings", Some(&format!("bad-{i}")), &body)
            .await;
        r.assert_problem(400, "validation_failed");
        assert_eq!(r.fields(), [field.to_string()], "{body}");
    }
    let r = d
        .post(
            "/v1/tenant/settings",
            Some("unknown"),
            &json!({"colour": "red"}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.json);
    assert_eq!(
        d.get("/v1/tenant/settings").await.json,
        initial.json,
        "nothing written"
    );

    let svg = br##"<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8" fill="#0a0"/></svg>"##;
    let r = d
        .post(
            "/v1/tenant/settings",
            Some("good"),
            &json!({"legal_name": "Seller GmbH", "email": "billing@seller.example",
                    "tax_id": {"type": "eu_vat", "value": "DE123456789"},
                    "address": {"line1": "1 Road", "city": "Berlin", "postal_code": "10115", "country": "DE"},
                    "logo": {"media_type": "image/svg+xml", "data": b64(svg)},
                    "invoice_footer": "Thank you.\nSee you.", "payment_instructions": "IBAN DE00 0000"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["version"], 1);
    assert_eq!(r.json["logo"]["data"], b64(svg));
    assert_eq!(r.json["logo_ref"]["size_bytes"], svg.len());
    assert_eq!(d.get("/v1/tenant/settings").await.json, r.json);
    // Absent fields stay, null clears, a PNG replaces the SVG.
    let r = d
        .post(
            "/v1/tenant/settings",
            Some("partial"),
            &json!({"email": null, "logo": {"media_type": "image/png", "data": b64(&tiny_png())}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["legal_name"], "Seller GmbH");
    assert!(r.json["email"].is_null());
    assert_eq!(r.json["logo"]["media_type"], "image/png");
    assert_eq!(r.json["version"], 2);
    // The same key replays; nothing changes twice.
    let again = d
        .post(
            "/v1/tenant/settings",
            Some("partial"),
            &json!({"email": null, "logo": {"media_type": "image/png", "data": b64(&tiny_png())}}),
        )
        .await;
    assert_eq!(again.json, r.json);
    let r = d
        .post(
            "/v1/tenant/settings",
            Some("clear"),
            &json!({"logo": null, "invoice_prefix": null}),
        )
        .await;
    assert!(r.json["logo"].is_null());
    assert_eq!(r.json["invoice_prefix"], "INV");
}

#[tokio::test]
async fn an_issued_invoice_keeps_the_parties_it_was_issued_with() {
    let d = Daemon::start().await;
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>";
    let r = d
        .post(
            "/v1/tenant/settings",
            Some("seller"),
            &json!({"legal_name": "Seller GmbH",
                    "address": {"line1": "1 Road", "city": "Berlin", "postal_code": "10115", "country": "DE"},
                    "logo": {"media_type": "image/svg+xml", "data": b64(svg)}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let logo_hash = r.json["logo_ref"]["blake3"].clone();
    let c = d
        .post(
            "/v1/customers",
            Some("buyer"),
            &json!({"external_id": "buyer", "currency": "USD", "name": "Buyer",
                    "legal_name": "Buyer Ltd", "email": "ap@buyer.example", "locale": "en-GB",
                    "address": {"line1": "2 Street", "city": "London", "postal_code": "N1 1AA", "country": "GB"},
                    "tax_ids": [{"type": "gb_vat", "value": "GB123456789"}]}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.json);
    let customer = c.json["id"].as_str().expect("id").to_string();
    daily_plan(&d).await;
    subscribe(&d, "buyer", 1).await;
    run_to_completion(&d, "run").await;
    let id = all_invoices(&d).await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let issued = d.get(&format!("/v1/invoices/{id}")).await.json;
    assert_eq!(issued["buyer"]["legal_name"], "Buyer Ltd");
    assert_eq!(issued["buyer"]["address"]["city"], "London");
    assert_eq!(issued["buyer"]["tax_ids"][0]["value"], "GB123456789");
    assert_eq!(issued["buyer"]["locale"], "en-GB");
    assert_eq!(issued["seller"]["legal_name"], "Seller GmbH");
    assert_eq!(issued["seller"]["logo"]["blake3"], logo_hash);
    assert!(
        issued["seller"]["logo"].get("data").is_none(),
        "no logo bytes on invoices"
    );
    // Later edits of the customer and of the settings leave the invoice as it was.
    let u = d
        .post(
            &format!("/v1/customers/{customer}"),
            Some("move"),
            &json!({"address": {"line1": "9 Elsewhere", "city": "Leeds", "postal_code": "LS1 1AA", "country": "GB"},
                    "legal_name": "Buyer Renamed Ltd"}),
        )
        .await;
    assert_eq!(u.status, 200, "{}", u.json);
    let s = d
        .post(
            "/v1/tenant/settings",
            Some("rebrand"),
            &json!({"legal_name": "Seller AG", "logo": {"media_type": "image/png", "data": b64(&tiny_png())}}),
        )
        .await;
    assert_eq!(s.status, 200, "{}", s.json);
    assert_ne!(s.json["logo_ref"]["blake3"], logo_hash);
    assert_eq!(d.get(&format!("/v1/invoices/{id}")).await.json, issued);
}

#[tokio::test]
async fn an_invoice_paid_by_credits_at_issue_is_numbered_too() {
    let d = Daemon::start().await;
    let c = d.customer("prepaid", "USD").await;
    let grant = d
        .post(
            "/v1/credit-grants",
            Some("g"),
            &json!({"customer": c, "amount_minor": 5000, "currency": "USD", "category": "paid"}),
        )
        .await;
    assert_eq!(grant.status, 201, "{}", grant.json);
    daily_plan(&d).await;
    subscribe(&d, "prepaid", 2).await;
    run_to_completion(&d, "run").await;
    let all = all_invoices(&d).await;
    assert_eq!(all.len(), 2);
    let year = &at(0)[..4];
    for (i, inv) in all.iter().enumerate() {
        assert_eq!(inv["status"], "paid", "{inv}");
        assert_eq!(inv["amount_due_minor"], 0);
        assert_eq!(inv["number"], format!("INV-{year}-{:06}", i + 1));
    }
}
