//! Credit notes over HTTP: full, partial, by lines, several up to the limit, concurrent ones,
//! on paid invoices (credit balance or refund through the simulated provider), refusals.

use serde_json::{json, Value};

use crate::harness::Daemon;

/// A customer taxed at 19 % with a 10.00 daily fee in advance, billed: its invoice (total
/// 11.90).
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
            &json!({"external_id": name, "currency": "EUR", "tax_rates": [vat.json["id"]]}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.json);
    let plan = json!({"code": format!("plan-{name}"), "name": "Daily", "currency": "EUR",
        "interval": "day", "fixed_fee": {"amount_minor": 1000, "timing": "in_advance"}});
    assert_eq!(
        d.post("/v1/plans", Some(&format!("p-{name}")), &plan)
            .await
            .status,
        201
    );
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
    let list = d.get(&format!("/v1/invoices?customer={customer}")).await;
    let inv = list.json["data"][0].clone();
    assert_eq!(inv["total_minor"], 1190, "{inv}");
    inv
}

fn balance(accounts: &Value, code: &str) -> i64 {
    accounts["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|a| a["code"] == code)
        .map(|a| a["balance_minor"].as_i64().expect("balance"))
        .sum()
}

async fn credit(d: &Daemon, invoice: &str, key: &str, body: Value) -> crate::harness::Resp {
    d.post(
        &format!("/v1/invoices/{invoice}/credit-notes"),
        Some(key),
        &body,
    )
    .await
}

#[tokio::test]
async fn credit_notes_take_back_an_unpaid_invoice_up_to_its_total_and_refusals_write_nothing() {
    let d = Daemon::start().await;
    let inv = invoiced(&d, "acme").await;
    let id = inv["id"].as_str().expect("id").to_string();
    let refused = [
        (
            json!({"amount_minor": 1191}),
            422,
            "credit_exceeds_remaining",
            "amount_minor",
        ),
        (
            json!({"amount_minor": 100, "currency": "USD"}),
            422,
            "currency_mismatch",
            "currency",
        ),
        (
            json!({"lines": [{"line": 5, "amount_minor": 100}]}),
            422,
            "invalid_line",
            "lines.0.line",
        ),
        (
            json!({"lines": [{"line": 0, "amount_minor": 1001}]}),
            422,
            "invalid_line",
            "lines.0.amount_minor",
        ),
        (
            json!({"amount_minor": 100, "lines": []}),
            400,
            "validation_failed",
            "amount_minor",
        ),
        (
            json!({"amount_minor": 0}),
            400,
            "validation_failed",
            "amount_minor",
        ),
        (
            json!({"amount_minor": 100, "refund": true}),
            422,
            "not_refundable",
            "refund",
        ),
    ];
    for (i, (body, status, code, field)) in refused.iter().enumerate() {
        let r = credit(&d, &id, &format!("bad-{i}"), body.clone()).await;
        r.assert_problem(*status, code);
        assert_eq!(r.fields(), [*field], "{}", r.json);
    }
    assert_eq!(d.get("/v1/credit-notes").await.json["data"], json!([]));
    assert_eq!(
        d.get(&format!("/v1/invoices/{id}")).await.json["credited_minor"],
        0
    );

    // Partial: 5.00 of which 0.80 is tax (5.00 × 1.90 / 11.90 = 0.798…).
    let first = credit(
        &d,
        &id,
        "k1",
        json!({"amount_minor": 500, "reason": "goodwill"}),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.json);
    assert!(first.json["id"]
        .as_str()
        .is_some_and(|i| i.starts_with("cn_")));
    assert!(first.json["number"]
        .as_str()
        .is_some_and(|n| n.starts_with("CN-")));
    assert_eq!(first.json["tax_minor"], 80);
    assert_eq!(first.json["net_minor"], 420);
    assert_eq!(first.json["due_reduced_minor"], 500);
    // Part of it is credited: voiding it would reverse that part twice.
    d.post(&format!("/v1/invoices/{id}/void"), Some("void"), &json!({}))
        .await
        .assert_problem(409, "invoice_state");
    let replay = credit(
        &d,
        &id,
        "k1",
        json!({"amount_minor": 500, "reason": "goodwill"}),
    )
    .await;
    assert_eq!(replay.json["id"], first.json["id"]);
    // By line: 3.00 of the fee and its 19 %: 3.57.
    let second = credit(
        &d,
        &id,
        "k2",
        json!({"lines": [{"line": 0, "amount_minor": 300}]}),
    )
    .await;
    assert_eq!(second.status, 201, "{}", second.json);
    assert_eq!(second.json["amount_minor"], 357);
    let now = d.get(&format!("/v1/invoices/{id}")).await.json;
    assert_eq!(now["amount_due_minor"], 1190 - 857);
    assert_eq!(now["status"], "finalized");
    // What is left, and not a unit more.
    let over = credit(&d, &id, "k3", json!({"amount_minor": 334})).await;
    over.assert_problem(422, "credit_exceeds_remaining");
    let last = credit(&d, &id, "k4", json!({"amount_minor": 333})).await;
    assert_eq!(last.status, 201, "{}", last.json);
    let now = d.get(&format!("/v1/invoices/{id}")).await.json;
    assert_eq!(now["amount_due_minor"], 0);
    assert_eq!(now["status"], "paid");
    assert_eq!(now["credited_minor"], 1190);
    assert_eq!(now["credit_notes"].as_array().map(Vec::len), Some(3));
    credit(&d, &id, "k5", json!({"amount_minor": 1}))
        .await
        .assert_problem(422, "credit_exceeds_remaining");
    // Everything reversed: the tax shares sum to the tax (80 + 57 + 53 = 190).
    let accounts = d.get("/v1/accounts").await.json;
    assert_eq!(balance(&accounts, "tax_payable"), 0, "{accounts}");
    assert_eq!(balance(&accounts, "revenue"), 0, "{accounts}");
    let list = d.get(&format!("/v1/credit-notes?invoice={id}")).await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(3));
    let numbers: Vec<&str> = list.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| c["number"].as_str().expect("number"))
        .collect();
    assert_eq!(numbers.len(), 3);
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    let got = d
        .get(&format!(
            "/v1/credit-notes/{}",
            first.json["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(got.json["reason"], "goodwill");
    let events = d.get("/v1/notifications?type=credit_note.created").await;
    assert_eq!(
        events.json["data"].as_array().map(Vec::len),
        Some(3),
        "{}",
        events.json
    );
    assert_eq!(
        events.json["data"][0]["data"]["object"]["object"], "credit_note",
        "{}",
        events.json
    );
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
    let v = d.get(&format!("/v1/invoices/{id}/verify")).await;
    assert_eq!(v.json["matches"], true, "{}", v.json);

    // A voided invoice cannot be credited.
    let other = invoiced(&d, "gone").await;
    let other_id = other["id"].as_str().expect("id");
    let void = d
        .post(
            &format!("/v1/invoices/{other_id}/void"),
            Some("v"),
            &json!({}),
        )
        .await;
    assert_eq!(void.status, 200, "{}", void.json);
    let r = credit(&d, other_id, "kv", json!({"amount_minor": 100})).await;
    r.assert_problem(409, "invoice_state");
    assert_eq!(r.fields(), ["invoice"]);
    d.post(
        "/v1/invoices/inv_00000000000000000000000000/credit-notes",
        Some("kx"),
        &json!({"amount_minor": 1}),
    )
    .await
    .assert_problem(404, "resource_missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_credit_notes_never_exceed_the_invoice() {
    let d = Daemon::start().await;
    let inv = invoiced(&d, "rush").await;
    let id = inv["id"].as_str().expect("id").to_string();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = d.client.clone();
        let url = d.url(&format!("/v1/invoices/{id}/credit-notes"));
        let key = d.key.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", format!("cn-{i}"))
                .json(&json!({"amount_minor": 100}))
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            let body: Value = r.json().await.expect("json");
            (status, body)
        }));
    }
    let mut created = 0;
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            201 => created += 1,
            422 => assert_eq!(body["code"], "credit_exceeds_remaining", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    // 11 × 1.00 fit in 11.90; a twelfth would not.
    assert_eq!(created, 11);
    let now = d.get(&format!("/v1/invoices/{id}")).await.json;
    assert_eq!(now["credited_minor"], 1100);
    assert_eq!(now["amount_due_minor"], 90);
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn a_paid_invoice_is_credited_as_a_credit_balance_or_refunded_through_the_provider() {
    let d = Daemon::start().await;
    let inv = invoiced(&d, "payer").await;
    let id = inv["id"].as_str().expect("id").to_string();
    let p = crate::payments::pay(&d, &id, "pm_ok").await;
    let payment = p["id"].as_str().expect("id").to_string();
    crate::payments::settle(&d, &payment, "succeeded").await;
    assert_eq!(
        d.get(&format!("/v1/invoices/{id}")).await.json["status"],
        "paid"
    );
    let kept = credit(&d, &id, "c1", json!({"amount_minor": 200})).await;
    assert_eq!(kept.status, 201, "{}", kept.json);
    assert!(kept.json["credit_grant"]
        .as_str()
        .is_some_and(|g| g.starts_with("grt_")));
    let refunded = credit(&d, &id, "c2", json!({"amount_minor": 500, "refund": true})).await;
    assert_eq!(refunded.status, 201, "{}", refunded.json);
    assert_eq!(refunded.json["refund_payment"], payment.as_str());
    d.eventually("refund", || async {
        crate::payments::payment(&d, &payment).await["refunds"][0]["status"] == "succeeded"
    })
    .await;
    // 1.90 of tax less 0.32 (2.00's share) and 0.80 (5.00's, by the refund's entry).
    let accounts = d.get("/v1/accounts").await.json;
    assert_eq!(
        balance(&accounts, "tax_payable"),
        -190 + 32 + 80,
        "{accounts}"
    );
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
    let v = d.get(&format!("/v1/invoices/{id}/verify")).await;
    assert_eq!(v.json["matches"], true, "{}", v.json);
    // More than the payment has left to refund.
    credit(&d, &id, "c3", json!({"amount_minor": 491, "refund": true}))
        .await
        .assert_problem(422, "credit_exceeds_remaining");
}

#[tokio::test]
async fn an_attempt_at_the_provider_holds_credit_notes_of_the_unpaid_invoice() {
    let d = Daemon::start().await;
    let inv = invoiced(&d, "waiting").await;
    let id = inv["id"].as_str().expect("id").to_string();
    let p = crate::payments::pay(&d, &id, "sim_requires_action").await;
    let payment = p["id"].as_str().expect("id").to_string();
    crate::payments::settle(&d, &payment, "requires_action").await;
    let r = credit(&d, &id, "c1", json!({"amount_minor": 100})).await;
    r.assert_problem(409, "payment_in_progress");
    assert_eq!(d.get("/v1/credit-notes").await.json["data"], json!([]));
    let now = d.get(&format!("/v1/invoices/{id}")).await.json;
    assert_eq!(now["amount_due_minor"], 1190);
    assert_eq!(now["credited_minor"], 0);
}

#[tokio::test]
async fn money_refunded_through_the_payment_is_not_credited_again() {
    let d = Daemon::start().await;
    let inv = invoiced(&d, "refunded").await;
    let id = inv["id"].as_str().expect("id").to_string();
    let total = inv["total_minor"].as_i64().expect("total");
    let p = crate::payments::pay(&d, &id, "pm_ok").await;
    let payment = p["id"].as_str().expect("id").to_string();
    crate::payments::settle(&d, &payment, "succeeded").await;
    // All but 1.00 goes back through the payment itself.
    let r = d
        .post(
            &format!("/v1/payments/{payment}/refund"),
            Some("direct"),
            &json!({"amount_minor": total - 100}),
        )
        .await;
    assert!(r.status < 300, "{}", r.json);
    credit(&d, &id, "c-over", json!({"amount_minor": 101}))
        .await
        .assert_problem(422, "credit_exceeds_remaining");
    let fits = credit(&d, &id, "c-fits", json!({"amount_minor": 100})).await;
    assert_eq!(fits.status, 201, "{}", fits.json);
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn money_credited_as_a_balance_is_not_refunded_again() {
    let d = Daemon::start().await;
    let inv = invoiced(&d, "balance").await;
    let id = inv["id"].as_str().expect("id").to_string();
    let total = inv["total_minor"].as_i64().expect("total");
    let p = crate::payments::pay(&d, &id, "pm_ok").await;
    let payment = p["id"].as_str().expect("id").to_string();
    crate::payments::settle(&d, &payment, "succeeded").await;
    let kept = credit(&d, &id, "note-keep", json!({"amount_minor": 200})).await;
    assert_eq!(kept.status, 201, "{}", kept.json);
    let refund = |key: &'static str, amount: i64| {
        let d = &d;
        let payment = payment.clone();
        async move {
            d.post(
                &format!("/v1/payments/{payment}/refund"),
                Some(key),
                &json!({"amount_minor": amount}),
            )
            .await
        }
    };
    refund("all", total)
        .await
        .assert_problem(409, "not_refundable");
    let rest = refund("rest", total - 200).await;
    assert!(rest.status < 300, "{}", rest.json);
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}
