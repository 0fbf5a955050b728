//! Billing over HTTP: concurrent runs, invoices, void and re-issue, late usage, previews,
//! verification.

use serde_json::json;

use crate::harness::{at, Daemon};

async fn setup(d: &Daemon) {
    d.customer("acme", "USD").await;
    let m = d
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "calls", "event_type": "call", "aggregation": "count"}),
        )
        .await;
    assert_eq!(m.status, 201);
    let p = d
        .post(
            "/v1/plans",
            Some("p"),
            &json!({"code": "daily", "name": "Daily", "currency": "USD", "interval": "day",
                    "fixed_fee": {"amount_minor": 1000, "timing": "in_arrears"},
                    "charges": [{"meter": "calls", "model": "package", "package_size": "10", "unit_price": "2.50"}]}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    let today = &at(0)[..10];
    let start = format!("{today}T00:00:00Z");
    let three_days_ago =
        tally::clock::rfc3339(tally::clock::parse_rfc3339(&start).expect("t") - 3 * 86_400_000);
    let s = d
        .post(
            "/v1/subscriptions",
            Some("s"),
            &json!({"customer": "acme", "plan": "daily", "start_at": three_days_ago}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_runs_invoice_each_period_once() {
    let d = Daemon::start().await;
    setup(&d).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = d.client.clone();
        let url = d.url("/v1/billing-runs");
        let key = d.key.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", format!("run-{i}"))
                .json(&json!({}))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 201);
    }
    let invoices = d.get("/v1/invoices").await;
    let list = invoices.json["data"].as_array().expect("data");
    assert_eq!(list.len(), 3, "three closed days, one invoice each");
    let mut periods: Vec<&str> = list
        .iter()
        .map(|i| i["period_start"].as_str().unwrap_or(""))
        .collect();
    periods.dedup();
    assert_eq!(periods.len(), 3);
    for inv in list {
        let v = d
            .get(&format!(
                "/v1/invoices/{}/verify",
                inv["id"].as_str().expect("id")
            ))
            .await;
        assert_eq!(v.json["matches"], true, "{}", v.json);
    }
}

#[tokio::test]
async fn late_usage_is_billed_once_on_the_next_invoice_and_void_reissues_once() {
    let mut d = Daemon::start().await;
    setup(&d).await;
    let yesterday = at(-86_400);
    for i in 0..12 {
        d.post("/v1/events", None, &json!({"id": format!("e{i}"), "customer": "acme", "type": "call", "timestamp": yesterday})).await;
    }
    let run = d.post("/v1/billing-runs", Some("r1"), &json!({})).await;
    assert_eq!(run.status, 201);
    let runs_again = d.post("/v1/billing-runs", Some("r2"), &json!({})).await;
    assert!(runs_again.json["closed"]
        .as_array()
        .expect("closed")
        .is_empty());
    let invoices = d.get("/v1/invoices").await.json["data"]
        .as_array()
        .expect("data")
        .clone();
    let last = invoices.last().expect("invoice").clone();
    assert_eq!(last["lines"][0]["quantity"], "12");
    assert_eq!(
        last["lines"][0]["amount_minor"], 500,
        "12 calls = 2 started packages of 10 at 2.50"
    );
    assert_eq!(last["subtotal_minor"], 1500);
    // Late: three more calls for yesterday.
    let late = d
        .post(
            "/v1/events",
            None,
            &json!({"events": [
        {"id": "late1", "customer": "acme", "type": "call", "timestamp": yesterday},
        {"id": "late2", "customer": "acme", "type": "call", "timestamp": yesterday}]}),
        )
        .await;
    assert_eq!(late.json["results"][0]["late"], true);
    let preview = d
        .get(&format!(
            "/v1/customers/{}/upcoming-invoice",
            last["customer"].as_str().expect("c")
        ))
        .await;
    let draft = &preview.json["invoices"][0];
    assert_eq!(draft["status"], "draft");
    let adjustment = draft["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["kind"] == "adjustment")
        .expect("adjustment line");
    assert_eq!(adjustment["quantity"], "2");
    assert_eq!(adjustment["period_start"], last["period_start"]);
    // Void the last invoice: reversing entries; the next run re-issues it once, with the late usage.
    let voided = d
        .post(
            &format!("/v1/invoices/{}/void", last["id"].as_str().expect("id")),
            Some("void"),
            &json!({}),
        )
        .await;
    assert_eq!(voided.json["status"], "void");
    d.post(
        &format!("/v1/invoices/{}/void", last["id"].as_str().expect("id")),
        Some("void2"),
        &json!({}),
    )
    .await
    .assert_problem(409, "invoice_state");
    d.post("/v1/billing-runs", Some("r3"), &json!({})).await;
    d.post("/v1/billing-runs", Some("r4"), &json!({})).await;
    let after = d.get("/v1/invoices").await.json["data"]
        .as_array()
        .expect("data")
        .clone();
    assert_eq!(after.len(), invoices.len() + 1);
    let reissue = after.last().expect("reissue");
    assert_eq!(reissue["replaces"], last["id"]);
    assert_eq!(reissue["lines"][0]["quantity"], "14");
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
    d.stop();
    let out = d.cli(&["invoice", "verify", reissue["id"].as_str().expect("id")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn plan_and_subscription_input_is_validated() {
    let d = Daemon::start().await;
    d.customer("eu", "EUR").await;
    let m = d
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "calls", "event_type": "call", "aggregation": "count"}),
        )
        .await;
    assert_eq!(m.status, 201);
    let bad_tiers = d
        .post("/v1/plans", Some("p1"), &json!({"code": "t", "name": "T", "currency": "USD", "interval": "month",
            "charges": [{"meter": "calls", "model": "graduated", "tiers": [{"up_to": "100", "unit_price": "1"}, {"up_to": "50", "unit_price": "1"}, {"up_to": null, "unit_price": "1"}]}]}))
        .await;
    bad_tiers.assert_problem(400, "validation_failed");
    assert_eq!(bad_tiers.fields(), ["charges.0.tiers.1.up_to"]);
    d.post("/v1/plans", Some("p2"), &json!({"code": "t", "name": "T", "currency": "USD", "interval": "month",
        "charges": [{"meter": "calls", "model": "package", "package_size": "0", "unit_price": "1"}]}))
        .await
        .assert_problem(400, "validation_failed");
    d.post(
        "/v1/plans",
        Some("p3"),
        &json!({"code": "t", "name": "T", "currency": "USD", "interval": "month",
        "charges": [{"meter": "nope", "model": "per_unit", "unit_price": "1"}]}),
    )
    .await
    .assert_problem(400, "validation_failed");
    d.post(
        "/v1/plans",
        Some("p4"),
        &json!({"code": "t", "name": "T", "currency": "USD", "interval": "month",
        "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "-1"}]}),
    )
    .await
    .assert_problem(400, "validation_failed");
    let ok = d
        .post(
            "/v1/plans",
            Some("p5"),
            &json!({"code": "usd", "name": "T", "currency": "USD", "interval": "month"}),
        )
        .await;
    assert_eq!(ok.status, 201);
    d.post(
        "/v1/subscriptions",
        Some("s1"),
        &json!({"customer": "eu", "plan": "usd"}),
    )
    .await
    .assert_problem(422, "currency_mismatch");
    let eur = d
        .post(
            "/v1/plans",
            Some("p6"),
            &json!({"code": "eur", "name": "T", "currency": "EUR", "interval": "month"}),
        )
        .await;
    assert_eq!(eur.status, 201);
    let sub = d
        .post(
            "/v1/subscriptions",
            Some("s2"),
            &json!({"customer": "eu", "plan": "eur"}),
        )
        .await;
    assert_eq!(sub.status, 201);
    let id = sub.json["id"].as_str().expect("id");
    let cancel = d
        .post(
            &format!("/v1/subscriptions/{id}/cancel"),
            Some("c1"),
            &json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(cancel.json["status"], "canceled");
    d.post(
        &format!("/v1/subscriptions/{id}/cancel"),
        Some("c2"),
        &json!({}),
    )
    .await
    .assert_problem(409, "subscription_canceled");
}

#[tokio::test]
async fn an_invoice_whose_usage_a_later_invoice_adjusted_is_voided_only_after_it() {
    let d = Daemon::start().await;
    setup(&d).await;
    let today = &at(0)[..10];
    let midnight = tally::clock::parse_rfc3339(&format!("{today}T00:00:00Z")).expect("t");
    let day_ms = 86_400_000;
    let first_day = tally::clock::rfc3339(midnight - 3 * day_ms);
    let first_day_noon = tally::clock::rfc3339(midnight - 3 * day_ms + day_ms / 2);
    let run = |key: &'static str, as_of_ms: i64| {
        let d = &d;
        async move {
            let r = d
                .post(
                    "/v1/billing-runs",
                    Some(key),
                    &json!({"as_of": tally::clock::rfc3339(as_of_ms)}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.json);
            r.json["closed"][0]["invoice"]
                .as_str()
                .expect("one invoice")
                .to_string()
        }
    };
    let events = |ids: &[&str]| {
        let body: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| json!({"id": id, "customer": "acme", "type": "call", "timestamp": first_day_noon}))
            .collect();
        json!({ "events": body })
    };
    let twelve: Vec<String> = (0..12).map(|i| format!("e{i}")).collect();
    let twelve: Vec<&str> = twelve.iter().map(String::as_str).collect();
    d.post("/v1/events", None, &events(&twelve)).await;
    let first = run("r1", midnight - 2 * day_ms).await;
    // Late usage of the first day: the second day's invoice adjusts it from 12 to 14 calls.
    d.post("/v1/events", None, &events(&["late1", "late2"]))
        .await;
    let second = run("r2", midnight - day_ms).await;
    let void = |id: &str, key: &'static str| {
        let d = &d;
        let path = format!("/v1/invoices/{id}/void");
        async move { d.post(&path, Some(key), &json!({})).await }
    };
    // Voiding the first would put the billed 12 back under the standing +2 adjustment, and its
    // re-issue would bill the two late calls a second time.
    void(&first, "v1")
        .await
        .assert_problem(409, "invoice_state");
    assert_eq!(void(&second, "v2").await.json["status"], "void");
    assert_eq!(void(&first, "v3").await.json["status"], "void");
    run("r3", midnight).await;
    let invoices = d.get("/v1/invoices").await.json["data"]
        .as_array()
        .expect("data")
        .clone();
    let billed_first_day: i64 = invoices
        .iter()
        .filter(|i| i["status"] != "void")
        .flat_map(|i| i["lines"].as_array().cloned().unwrap_or_default())
        .filter(|l| l["meter"].is_string() && l["period_start"] == first_day.as_str())
        .map(|l| l["amount_minor"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(
        billed_first_day, 500,
        "14 calls: 2 packages of 10 at 2.50, once"
    );
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn a_voided_late_usage_invoice_after_the_end_is_reissued_without_usage_after_the_end() {
    let d = Daemon::start().await;
    setup(&d).await;
    // The setup's create, replayed under its key, names the subscription.
    let today = &at(0)[..10];
    let start = tally::clock::parse_rfc3339(&format!("{today}T00:00:00Z")).expect("t");
    let replay = d
        .post(
            "/v1/subscriptions",
            Some("s"),
            &json!({"customer": "acme", "plan": "daily",
                    "start_at": tally::clock::rfc3339(start - 3 * 86_400_000)}),
        )
        .await;
    let sub = replay.json["id"]
        .as_str()
        .expect("subscription")
        .to_string();
    let canceled = d
        .post(
            &format!("/v1/subscriptions/{sub}/cancel"),
            Some("cancel"),
            &json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(canceled.status, 200, "{}", canceled.json);
    let ends_at = canceled.json["ends_at"]
        .as_str()
        .expect("ends_at")
        .to_string();
    let end_ms = tally::clock::parse_rfc3339(&ends_at).expect("t");
    let yesterday_noon = tally::clock::rfc3339(end_ms - 86_400_000 / 2);
    let after_end = tally::clock::rfc3339(end_ms + 1_000);
    let mut late: Vec<serde_json::Value> = (0..10)
        .map(|i| json!({"id": format!("late{i}"), "customer": "acme", "type": "call", "timestamp": yesterday_noon}))
        .collect();
    late.extend((0..10).map(|i| json!({"id": format!("after{i}"), "customer": "acme", "type": "call", "timestamp": after_end})));
    let sent = d.post("/v1/events", None, &json!({ "events": late })).await;
    assert_eq!(sent.status, 200, "{}", sent.json);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let run = |key: &'static str| {
        let d = &d;
        async move {
            let r = d.post("/v1/billing-runs", Some(key), &json!({})).await;
            assert_eq!(r.status, 201, "{}", r.json);
            r.json["closed"].as_array().cloned().unwrap_or_default()
        }
    };
    let adjustment = run("r1").await;
    assert_eq!(
        adjustment.len(),
        1,
        "one late-usage invoice: {adjustment:?}"
    );
    let adjustment = adjustment[0]["invoice"].as_str().expect("id").to_string();
    let voided = d
        .post(
            &format!("/v1/invoices/{adjustment}/void"),
            Some("v"),
            &json!({}),
        )
        .await;
    assert_eq!(voided.status, 200, "{}", voided.json);
    let reissued = run("r2").await;
    assert_eq!(reissued.len(), 1, "{reissued:?}");
    let id = reissued[0]["invoice"].as_str().expect("id");
    let lines = d.get(&format!("/v1/invoices/{id}")).await.json["lines"].clone();
    let lines = lines.as_array().expect("lines");
    assert!(
        lines.iter().all(|l| l["kind"] != "usage"),
        "usage after the end is never billed: {lines:?}"
    );
    let billed: i64 = lines
        .iter()
        .map(|l| l["amount_minor"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(billed, 250, "the 10 late calls: one package of 10 at 2.50");
}
