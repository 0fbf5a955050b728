//! Taxes over HTTP: tax rates, customers' default rates and reverse charge, the tax on invoices
//! (exclusive, inclusive, two rates, with a discount and credits), the ledger's `tax_payable`,
//! verification and refusals.

use serde_json::{json, Value};

use crate::harness::{Daemon, Resp};

async fn rate(d: &Daemon, key: &str, body: Value) -> Resp {
    d.post("/v1/tax-rates", Some(key), &body).await
}

async fn rate_id(d: &Daemon, key: &str, name: &str, percentage: &str, inclusive: bool) -> String {
    let r = rate(
        d,
        key,
        json!({"display_name": name, "percentage": percentage, "inclusive": inclusive,
            "country": "DE"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    r.json["id"].as_str().expect("id").to_string()
}

/// A customer (with `extra` fields), a daily plan with a 10.00 fee in advance and a
/// subscription on it. Returns the customer id.
async fn subscribed_customer(d: &Daemon, name: &str, extra: Value) -> String {
    let mut body = json!({"external_id": name, "currency": "EUR"});
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    let c = d
        .post("/v1/customers", Some(&format!("c-{name}")), &body)
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
    c.json["id"].as_str().expect("id").to_string()
}

async fn only_invoice(d: &Daemon, customer: &str) -> Value {
    let list = d.get(&format!("/v1/invoices?customer={customer}")).await;
    let data = list.json["data"].as_array().expect("data").clone();
    assert_eq!(data.len(), 1, "{}", list.json);
    data[0].clone()
}

fn balance(accounts: &Value, code: &str) -> i64 {
    accounts["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|a| a["account"] == code || a["code"] == code)
        .map(|a| a["balance_minor"].as_i64().expect("balance"))
        .sum()
}

#[tokio::test]
async fn tax_rates_are_created_read_listed_and_archived() {
    let d = Daemon::start().await;
    let body = json!({"display_name": "Sales tax", "percentage": "8.875", "inclusive": false,
        "jurisdiction": "New York", "country": "US"});
    let r = rate(&d, "r1", body.clone()).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("txr_"));
    assert_eq!(r.json["percentage"], "8.875");
    assert_eq!(r.json["active"], true);
    assert_eq!(rate(&d, "r1", body).await.json["id"], id.as_str());
    assert_eq!(
        d.get(&format!("/v1/tax-rates/{id}")).await.json["jurisdiction"],
        "New York"
    );
    let archived = d
        .post(
            &format!("/v1/tax-rates/{id}/archive"),
            Some("a1"),
            &json!({}),
        )
        .await;
    assert_eq!(archived.status, 200, "{}", archived.json);
    assert_eq!(archived.json["active"], false);
    let list = d.get("/v1/tax-rates").await;
    assert_eq!(list.json["data"].as_array().expect("data").len(), 1);
    d.get("/v1/tax-rates/txr_00000000000000000000000000")
        .await
        .assert_problem(404, "resource_missing");
}

#[tokio::test]
async fn bad_tax_rates_and_bad_customer_rates_name_the_field_and_store_nothing() {
    let d = Daemon::start().await;
    let cases = [
        (
            json!({"display_name": "VAT", "percentage": "-1", "inclusive": false}),
            "percentage",
        ),
        (
            json!({"display_name": "VAT", "percentage": "100.01", "inclusive": false}),
            "percentage",
        ),
        (
            json!({"display_name": "VAT", "percentage": "abc", "inclusive": false}),
            "percentage",
        ),
        (
            json!({"display_name": "VAT", "percentage": "19", "inclusive": false, "country": "de"}),
            "country",
        ),
        (
            json!({"display_name": "VAT", "percentage": "19", "inclusive": false, "country": "UK"}),
            "country",
        ),
        (
            json!({"display_name": " ", "percentage": "19", "inclusive": false}),
            "display_name",
        ),
    ];
    for (i, (body, field)) in cases.iter().enumerate() {
        let r = rate(&d, &format!("bad-{i}"), body.clone()).await;
        r.assert_problem(400, "validation_failed");
        assert_eq!(r.fields(), [*field], "{body}");
    }
    assert!(d.get("/v1/tax-rates").await.json["data"]
        .as_array()
        .expect("data")
        .is_empty());
    // The bounds themselves are rates.
    assert_eq!(rate_id(&d, "zero", "Zero", "0", false).await.len(), 30);
    assert_eq!(rate_id(&d, "all", "All", "100", false).await.len(), 30);

    let vat = rate_id(&d, "vat", "VAT", "19", false).await;
    let incl = rate_id(&d, "incl", "VAT incl.", "19", true).await;
    let old = rate_id(&d, "old", "Old", "16", false).await;
    d.post(
        &format!("/v1/tax-rates/{old}/archive"),
        Some("arc"),
        &json!({}),
    )
    .await;
    let refused = [
        (
            json!(["txr_00000000000000000000000000"]),
            422,
            "invalid_tax_rates",
        ),
        (json!([old]), 422, "invalid_tax_rates"),
        (json!([vat, incl]), 422, "invalid_tax_rates"),
        (json!([vat, vat]), 422, "invalid_tax_rates"),
        (
            json!(["cus_00000000000000000000000000"]),
            400,
            "validation_failed",
        ),
        (
            json!([vat, vat, vat, vat, vat, vat]),
            400,
            "validation_failed",
        ),
    ];
    for (i, (rates, status, code)) in refused.iter().enumerate() {
        let r = d
            .post(
                "/v1/customers",
                Some(&format!("cb-{i}")),
                &json!({"external_id": format!("x{i}"), "currency": "EUR", "tax_rates": rates}),
            )
            .await;
        r.assert_problem(*status, code);
        assert_eq!(r.fields(), ["tax_rates"], "{}", r.json);
        d.get(&format!("/v1/customers/x{i}"))
            .await
            .assert_problem(404, "resource_missing");
    }
    // An update that assigns an archived rate changes nothing.
    let ok = d
        .post(
            "/v1/customers",
            Some("ok"),
            &json!({"external_id": "ok", "currency": "EUR", "tax_rates": [vat]}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.json);
    let id = ok.json["id"].as_str().expect("id");
    let r = d
        .post(
            &format!("/v1/customers/{id}"),
            Some("u1"),
            &json!({"tax_rates": [vat, old]}),
        )
        .await;
    r.assert_problem(422, "invalid_tax_rates");
    let now = d.get(&format!("/v1/customers/{id}")).await;
    assert_eq!(now.json["tax_rates"], json!([vat]));
    assert_eq!(now.json["version"], 1);
}

#[tokio::test]
async fn invoices_carry_exclusive_inclusive_and_reverse_charge_taxes_that_verify() {
    let mut d = Daemon::start().await;
    let vat = rate_id(&d, "vat", "VAT", "19", false).await;
    let local = rate_id(&d, "local", "Local", "7", false).await;
    let incl = rate_id(&d, "incl", "VAT incl.", "19", true).await;
    // Two exclusive rates, a 10 % discount and 5.00 of credits.
    let two = subscribed_customer(&d, "two", json!({"tax_rates": [vat, local]})).await;
    let c = d
        .post(
            "/v1/coupons",
            Some("k"),
            &json!({"code": "TEN", "percent_off": 10, "duration": "once"}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.json);
    let r = d
        .post(
            "/v1/customers/two/discounts",
            Some("d"),
            &json!({"coupon": "TEN"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let g = d
        .post(
            "/v1/credit-grants",
            Some("g"),
            &json!({"customer": two, "amount_minor": 500, "currency": "EUR", "category": "paid"}),
        )
        .await;
    assert_eq!(g.status, 201, "{}", g.json);
    let inclusive = subscribed_customer(&d, "incl", json!({"tax_rates": [incl]})).await;
    let reverse = subscribed_customer(
        &d,
        "rc",
        json!({"tax_rates": [vat], "reverse_charge": true,
            "tax_ids": [{"type": "eu_vat", "value": "DE123456789"}]}),
    )
    .await;
    // The preview shows the taxes the invoice will carry.
    let upcoming = d
        .get(&format!("/v1/customers/{inclusive}/upcoming-invoice"))
        .await;
    assert_eq!(upcoming.status, 200, "{}", upcoming.json);
    let drafts = upcoming.json["invoices"].as_array().expect("invoices");
    assert!(!drafts.is_empty(), "{}", upcoming.json);
    for inv in drafts {
        assert_eq!(inv["tax_lines"][0]["percentage"], "19", "{inv}");
        assert_eq!(inv["tax_lines"][0]["inclusive"], true, "{inv}");
    }
    let run = d.post("/v1/billing-runs", Some("r1"), &json!({})).await;
    assert_eq!(run.status, 201, "{}", run.json);

    let inv = only_invoice(&d, &two).await;
    // Lines 10.00 and −1.00. 19 %: 1.90 − 0.19 = 1.71; 7 %: 0.70 − 0.07 = 0.63.
    assert_eq!(inv["subtotal_minor"], 900, "{inv}");
    assert_eq!(inv["tax_lines"][0]["tax_rate"], vat.as_str());
    assert_eq!(inv["tax_lines"][0]["taxable_minor"], 900);
    assert_eq!(inv["tax_lines"][0]["tax_minor"], 171);
    assert_eq!(inv["tax_lines"][1]["tax_minor"], 63);
    assert_eq!(inv["tax_minor"], 234);
    assert_eq!(inv["total_minor"], 1134);
    assert_eq!(inv["credits_applied_minor"], 500);
    assert_eq!(inv["amount_due_minor"], 634);

    let inv = only_invoice(&d, &inclusive).await;
    // 10.00 contains 19 %: 10 − 10 / 1.19 = 1.5966… → 1.60; nothing on top.
    assert_eq!(inv["tax_lines"][0]["inclusive"], true);
    assert_eq!(inv["tax_lines"][0]["tax_minor"], 160);
    assert_eq!(inv["tax_lines"][0]["taxable_minor"], 840);
    assert_eq!(inv["tax_minor"], 160);
    assert_eq!(inv["total_minor"], 1000);
    assert_eq!(inv["amount_due_minor"], 1000);

    let inv = only_invoice(&d, &reverse).await;
    assert_eq!(inv["reverse_charge"], true);
    assert_eq!(inv["tax_minor"], 0);
    assert_eq!(inv["tax_lines"], json!([]));
    assert_eq!(inv["total_minor"], 1000);
    assert!(
        inv["notes"][0].as_str().is_some_and(
            |n| n.starts_with("Reverse charge: VAT to be accounted for by the recipient")
        )
    );

    let accounts = d.get("/v1/accounts").await;
    assert_eq!(accounts.status, 200, "{}", accounts.json);
    assert_eq!(
        balance(&accounts.json, "tax_payable"),
        -(234 + 160),
        "{}",
        accounts.json
    );
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
    let mut ids = Vec::new();
    for customer in [&two, &inclusive, &reverse] {
        let inv = only_invoice(&d, customer).await;
        let id = inv["id"].as_str().expect("id").to_string();
        let v = d.get(&format!("/v1/invoices/{id}/verify")).await;
        assert_eq!(v.json["matches"], true, "{}", v.json);
        ids.push(id);
    }
    // Voiding reverses the tax with the rest.
    let void = d
        .post(
            &format!("/v1/invoices/{}/void", ids[1]),
            Some("v"),
            &json!({}),
        )
        .await;
    assert_eq!(void.status, 200, "{}", void.json);
    let accounts = d.get("/v1/accounts").await;
    assert_eq!(balance(&accounts.json, "tax_payable"), -234);
    d.stop();
    for id in &ids {
        let out = d.cli(&["invoice", "verify", id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = d.cli(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.restart().await;
}

#[tokio::test]
async fn a_refund_takes_back_its_share_of_the_tax() {
    let d = Daemon::start().await;
    let vat = rate_id(&d, "vat", "VAT", "19", false).await;
    let customer = subscribed_customer(&d, "payer", json!({"tax_rates": [vat]})).await;
    let run = d.post("/v1/billing-runs", Some("r1"), &json!({})).await;
    assert_eq!(run.status, 201, "{}", run.json);
    let inv = only_invoice(&d, &customer).await;
    assert_eq!(inv["total_minor"], 1190);
    let invoice = inv["id"].as_str().expect("id");
    let p = crate::payments::pay(&d, invoice, "pm_ok").await;
    let payment = p["id"].as_str().expect("id").to_string();
    crate::payments::settle(&d, &payment, "succeeded").await;
    let r = d
        .post(
            &format!("/v1/payments/{payment}/refund"),
            Some("rf"),
            &json!({"amount_minor": 500}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    d.eventually("refund", || async {
        crate::payments::payment(&d, &payment).await["refunds"][0]["status"] == "succeeded"
    })
    .await;
    // 500 × 190 / 1190 = 79.83… → 80 of tax; 420 of revenue.
    let accounts = d.get("/v1/accounts").await;
    assert_eq!(
        balance(&accounts.json, "tax_payable"),
        -190 + 80,
        "{}",
        accounts.json
    );
    assert_eq!(
        balance(&accounts.json, "revenue"),
        -1000 + 420,
        "{}",
        accounts.json
    );
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn a_plan_change_preview_shows_the_tax_the_invoice_will_carry() {
    let d = Daemon::start().await;
    let vat = rate_id(&d, "vat", "VAT", "19", false).await;
    let customer = subscribed_customer(&d, "up", json!({"tax_rates": [vat]})).await;
    let pro = json!({"code": "pro", "name": "Pro", "currency": "EUR", "interval": "day",
        "fixed_fee": {"amount_minor": 3000, "timing": "in_advance"}});
    assert_eq!(d.post("/v1/plans", Some("pro"), &pro).await.status, 201);
    let subs = d
        .get(&format!("/v1/subscriptions?customer={customer}"))
        .await;
    let sub = subs.json["data"][0]["id"].as_str().expect("id").to_string();
    let preview = d
        .post(
            &format!("/v1/subscriptions/{sub}/change/preview"),
            None,
            &json!({"plan": "pro", "effective": "now", "proration": "invoice_now"}),
        )
        .await;
    assert_eq!(preview.status, 200, "{}", preview.json);
    let subtotal = preview.json["subtotal_minor"].as_i64().expect("subtotal");
    let tax = preview.json["tax_minor"].as_i64().expect("tax");
    assert_eq!(preview.json["tax_lines"][0]["tax_rate"], vat.as_str());
    assert_eq!(preview.json["tax_lines"][0]["tax_minor"], tax);
    assert_eq!(preview.json["total_minor"], subtotal + tax);
    assert!(tax != 0, "{}", preview.json);
}
