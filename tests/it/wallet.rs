//! Prepaid wallets: a top-up's credit exists exactly when its payment succeeded, once,
//! whichever channel reports it; auto-recharge fires once per crossing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_stripe::FakeStripe;
use crate::harness::{at, Daemon};
use crate::payments::{daemon, payment, settle, stripe_endpoint, stripe_hook};

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

async fn top_up(d: &Daemon, customer: &str, key: &str, body: Value) -> crate::harness::Resp {
    d.post(
        &format!("/v1/customers/{customer}/top-ups"),
        Some(key),
        &body,
    )
    .await
}

async fn get_top_up(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/v1/top-ups/{id}")).await.json
}

async fn top_up_settles(d: &Daemon, id: &str, status: &str) -> Value {
    d.eventually(&format!("top-up {status}"), || async {
        get_top_up(d, id).await["status"] == status
    })
    .await;
    get_top_up(d, id).await
}

/// The customer's grants in one currency, from the balance endpoint.
async fn grants(d: &Daemon, customer: &str) -> Vec<Value> {
    let b = d.get(&format!("/v1/customers/{customer}/balance")).await;
    assert_eq!(b.status, 200, "{}", b.json);
    b.json["balances"]
        .as_array()
        .expect("balances")
        .iter()
        .flat_map(|c| c["grants"].as_array().cloned().unwrap_or_default())
        .collect()
}

async fn account(d: &Daemon, code: &str, currency: &str) -> i64 {
    d.get("/v1/accounts?limit=500").await.json["data"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["code"] == code && a["currency"] == currency)
        .and_then(|a| a["balance_minor"].as_i64())
        .unwrap_or(0)
}

async fn count(d: &Daemon, path: &str) -> usize {
    let r = d.get(path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.json);
    r.json["data"].as_array().map_or(0, Vec::len)
}

async fn notifications(d: &Daemon, kind: &str) -> usize {
    count(d, &format!("/v1/notifications?type={kind}&limit=500")).await
}

async fn books_agree(d: &Daemon) {
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
    assert_eq!(account(d, "prepayments", "USD").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_identical_top_ups_make_one_invoice_one_payment_one_grant() {
    let d = Daemon::start().await;
    let cus = d.customer("wallet", "USD").await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = d.client.clone();
        let url = d.url(&format!("/v1/customers/{cus}/top-ups"));
        let key = d.key.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", "top-up-1")
                .json(&json!({"amount_minor": 5000, "paid": true}))
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            (201, body) => ids.push(id_of(&body)),
            (409, body) => assert_eq!(body["code"], "idempotency_key_in_use"),
            other => panic!("unexpected {other:?}"),
        }
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let t = top_up_settles(&d, &ids[0], "succeeded").await;
    assert_eq!(count(&d, &format!("/v1/customers/{cus}/top-ups")).await, 1);
    let invoices = d.get(&format!("/v1/invoices?customer={cus}")).await.json;
    assert_eq!(invoices["data"].as_array().map_or(0, Vec::len), 1);
    let inv = &invoices["data"][0];
    assert_eq!(inv["kind"], "top_up");
    assert_eq!(inv["status"], "paid");
    assert_eq!(inv["top_up"], ids[0].as_str());
    assert_eq!(inv["lines"][0]["description"], "Prepaid credit");
    assert_eq!(inv["tax_minor"], 0);
    assert!(inv["number"].as_str().is_some());
    assert_eq!(t["invoice"], inv["id"]);
    let inv_id = inv["id"].as_str().expect("id");
    assert_eq!(
        count(&d, &format!("/v1/payments?invoice={inv_id}")).await,
        1
    );
    let g = grants(&d, &cus).await;
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0]["id"], t["grant"]);
    assert_eq!(g[0]["remaining_minor"], 5000);
    assert_eq!(g[0]["category"], "paid");
    assert_eq!(notifications(&d, "top_up.succeeded").await, 1);
    let event = d.get("/v1/notifications?type=top_up.succeeded").await.json["data"][0].clone();
    assert_eq!(event["data"]["object"]["object"], "top_up", "{event}");
    assert_eq!(event["data"]["object"]["grant"], t["grant"], "{event}");
    let verified = d.get(&format!("/v1/invoices/{inv_id}/verify")).await;
    assert_eq!(verified.status, 200, "{}", verified.json);
    assert_eq!(verified.json["matches"], true, "{}", verified.json);
    let doc = d.get(&format!("/v1/invoices/{inv_id}/document")).await;
    assert_eq!(doc.status, 200, "{}", doc.json);
    books_agree(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_webhook_before_after_or_instead_of_the_reply_grants_once() {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "").await;
    let ep = stripe_endpoint(&d).await;
    let cus = d.customer("payer", "USD").await;
    let start = |key: &'static str, method: &'static str| {
        let d = &d;
        let cus = cus.clone();
        async move {
            let r = top_up(
                d,
                &cus,
                key,
                json!({"amount_minor": 1000, "paid": true, "payment_method": method}),
            )
            .await;
            assert_eq!(r.status, 201, "{}", r.json);
            r.json
        }
    };
    // Before the reply: the provider is slow to answer; its webhook lands first.
    let before = start("t-before", "pm_slow").await;
    let before_pay = before["payment"].as_str().expect("payment").to_string();
    let mut intent = None;
    for _ in 0..200 {
        intent = stripe.intent_of(&before_pay);
        if intent.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let intent = intent.expect("intent");
    assert_eq!(
        stripe_hook(&d, &ep, "evt_b", "payment_intent.succeeded", &intent).await,
        200
    );
    // After the reply.
    let after = start("t-after", "pm_ok").await;
    let after_pay = after["payment"].as_str().expect("payment").to_string();
    settle(&d, &after_pay, "succeeded").await;
    let intent_after = stripe.intent_of(&after_pay).expect("intent");
    assert_eq!(
        stripe_hook(&d, &ep, "evt_a", "payment_intent.succeeded", &intent_after).await,
        200
    );
    // Instead of the reply: the provider charged but never answers successfully.
    let only = start("t-only", "pm_ghost").await;
    let only_pay = only["payment"].as_str().expect("payment").to_string();
    d.eventually("the ghost charge", || async {
        stripe.intent_of(&only_pay).is_some()
    })
    .await;
    let intent_only = stripe.intent_of(&only_pay).expect("intent");
    assert_eq!(
        stripe_hook(&d, &ep, "evt_o", "payment_intent.succeeded", &intent_only).await,
        200
    );
    for t in [&before, &after, &only] {
        top_up_settles(&d, &id_of(t), "succeeded").await;
    }
    // The reply and the retries report each success again: still one grant each.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (t, p) in [
        (&before, &before_pay),
        (&after, &after_pay),
        (&only, &only_pay),
    ] {
        assert_eq!(payment(&d, p).await["status"], "succeeded");
        let now = get_top_up(&d, &id_of(t)).await;
        assert_eq!(now["status"], "succeeded");
        assert!(now["grant"].as_str().is_some());
    }
    let g = grants(&d, &cus).await;
    assert_eq!(g.len(), 3, "{g:?}");
    assert!(g.iter().all(|g| g["remaining_minor"] == 1000));
    assert_eq!(notifications(&d, "top_up.succeeded").await, 3);
    assert_eq!(stripe.charges(), 3);
    books_agree(&d).await;
}

#[tokio::test]
async fn a_declined_top_up_grants_nothing_and_voids_its_invoice() {
    let d = Daemon::start().await;
    let cus = d.customer("declined", "USD").await;
    let r = top_up(
        &d,
        &cus,
        "t-1",
        json!({"amount_minor": 2500, "paid": true, "payment_method": "sim_decline"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let t = top_up_settles(&d, &id_of(&r.json), "failed").await;
    assert!(t["grant"].is_null());
    assert!(t["failure"]
        .as_str()
        .is_some_and(|f| f.contains("declined")));
    let inv = d
        .get(&format!(
            "/v1/invoices/{}",
            t["invoice"].as_str().expect("inv")
        ))
        .await
        .json;
    assert_eq!(inv["status"], "void");
    // No dunning attempt follows a declined top-up.
    let inv_id = inv["id"].as_str().expect("id");
    assert_eq!(
        count(&d, &format!("/v1/payments?invoice={inv_id}")).await,
        1
    );
    assert!(grants(&d, &cus).await.is_empty());
    assert_eq!(notifications(&d, "top_up.failed").await, 1);
    assert_eq!(notifications(&d, "top_up.succeeded").await, 0);
    assert_eq!(account(&d, "bad_debt", "USD").await, 0);
    assert_eq!(
        account(&d, &format!("customer:{cus}:receivable"), "USD").await,
        0
    );
    books_agree(&d).await;
}

#[tokio::test]
async fn a_free_top_up_is_a_promotional_grant_at_once() {
    let d = Daemon::start().await;
    let cus = d.customer("free", "USD").await;
    let r = top_up(&d, &cus, "t-1", json!({"amount_minor": 700, "paid": false})).await;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["status"], "succeeded");
    assert_eq!(r.json["category"], "promotional");
    assert!(r.json["invoice"].is_null());
    let g = grants(&d, &cus).await;
    assert_eq!(g.len(), 1);
    assert_eq!(g[0]["category"], "promotional");
    assert_eq!(count(&d, &format!("/v1/invoices?customer={cus}")).await, 0);
    books_agree(&d).await;
}

#[tokio::test]
async fn a_paid_top_up_is_refunded_up_to_its_unused_credit_which_the_refund_takes_back() {
    let d = Daemon::start().await;
    let cus = d.customer("keeper", "USD").await;
    let r = top_up(&d, &cus, "t-1", json!({"amount_minor": 3000, "paid": true})).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let t = top_up_settles(&d, &id_of(&r.json), "succeeded").await;
    let pay = t["payment"].as_str().expect("payment");
    let inv = t["invoice"].as_str().expect("invoice");
    let grant = t["grant"].as_str().expect("grant");
    let refund = d
        .post(
            &format!("/v1/payments/{pay}/refund"),
            Some("rf"),
            &json!({"amount_minor": 1000}),
        )
        .await;
    assert_eq!(refund.status, 200, "{}", refund.json);
    d.eventually("refund", || async {
        payment(&d, pay).await["refunds"][0]["status"] == "succeeded"
    })
    .await;
    // The refund closed that much of the credit: the customer keeps 2000, not 3000 and 1000.
    assert_eq!(grants(&d, &cus).await[0]["remaining_minor"], 2000);
    assert_eq!(account(&d, "revenue", "USD").await, 0);
    d.post(
        &format!("/v1/payments/{pay}/refund"),
        Some("rf2"),
        &json!({"amount_minor": 2001}),
    )
    .await
    .assert_problem(409, "not_refundable");
    // The credit is taken back by refunding the payment, never by a void that would strand
    // the money in prepayments.
    d.post(
        &format!("/v1/credit-grants/{grant}/void"),
        Some("gv"),
        &json!({}),
    )
    .await
    .assert_problem(409, "top_up_grant");
    let cn = d
        .post(
            &format!("/v1/invoices/{inv}/credit-notes"),
            Some("cn"),
            &json!({"amount_minor": 1000, "refund": true}),
        )
        .await;
    cn.assert_problem(409, "top_up_invoice");
    assert_eq!(cn.fields(), vec!["invoice".to_string()]);
    // The paid invoice cannot be voided either.
    d.post(&format!("/v1/invoices/{inv}/void"), Some("v"), &json!({}))
        .await
        .assert_problem(409, "invoice_state");
    assert_eq!(grants(&d, &cus).await[0]["remaining_minor"], 2000);
    assert_eq!(payment(&d, pay).await["refunded_minor"], 1000);
    books_agree(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_top_up_invoice_is_not_voided_while_its_payment_is_at_the_provider() {
    // Retries wait ten minutes, so the charged attempt whose reply was lost stays `unknown`.
    let d = Daemon::start_with("[jobs]\nbackoff_base_ms = 600000\nbackoff_max_ms = 600000\n").await;
    let cus = d.customer("inflight", "USD").await;
    let r = top_up(
        &d,
        &cus,
        "t-1",
        json!({"amount_minor": 900, "paid": true, "payment_method": "sim_timeout"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let pay = r.json["payment"].as_str().expect("payment");
    settle(&d, pay, "unknown").await;
    let inv = r.json["invoice"].as_str().expect("invoice");
    d.post(&format!("/v1/invoices/{inv}/void"), Some("v"), &json!({}))
        .await
        .assert_problem(409, "payment_in_progress");
    let t = get_top_up(&d, &id_of(&r.json)).await;
    assert_eq!(t["status"], "pending");
    assert!(grants(&d, &cus).await.is_empty());
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn bad_top_ups_and_rules_name_their_field_and_write_nothing() {
    let d = Daemon::start().await;
    let cus = d.customer("strict", "USD").await;
    let path = format!("/v1/customers/{cus}/top-ups");
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"amount_minor": 0, "paid": true}),
            400,
            "validation_failed",
            "amount_minor",
        ),
        (
            json!({"amount_minor": -5, "paid": true}),
            400,
            "validation_failed",
            "amount_minor",
        ),
        (
            json!({"amount_minor": 1_000_000_000_000_001_i64, "paid": true}),
            400,
            "validation_failed",
            "amount_minor",
        ),
        (
            json!({"amount_minor": 100, "paid": true, "currency": "EUR"}),
            422,
            "currency_mismatch",
            "currency",
        ),
        (
            json!({"amount_minor": 100, "paid": true, "currency": "usd"}),
            400,
            "validation_failed",
            "currency",
        ),
        (
            json!({"amount_minor": 100, "paid": true, "category": "promotional"}),
            400,
            "validation_failed",
            "category",
        ),
        (
            json!({"amount_minor": 100, "paid": true, "expires_at": at(-60)}),
            400,
            "validation_failed",
            "expires_at",
        ),
    ];
    for (i, (body, status, code, field)) in cases.into_iter().enumerate() {
        let r = d.post(&path, Some(&format!("bad-{i}")), &body).await;
        r.assert_problem(status, code);
        assert_eq!(r.fields(), vec![field.to_string()], "{body}");
    }
    let missing = d
        .post(
            "/v1/customers/cus_00000000000000000000000000/top-ups",
            Some("bad-missing"),
            &json!({"amount_minor": 100, "paid": true}),
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.json);
    let rule = format!("/v1/customers/{cus}/auto-recharge");
    let rules: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"below_minor": 1000, "amount_minor": 500, "max_per_day": 1}),
            422,
            "below_own_threshold",
            "amount_minor",
        ),
        (
            json!({"below_minor": 0, "amount_minor": 500, "max_per_day": 1}),
            400,
            "validation_failed",
            "below_minor",
        ),
        (
            json!({"below_minor": 100, "amount_minor": 500, "max_per_day": 0}),
            400,
            "validation_failed",
            "max_per_day",
        ),
        (
            json!({"below_minor": 100, "amount_minor": 500, "max_per_day": 101}),
            400,
            "validation_failed",
            "max_per_day",
        ),
        (
            json!({"below_minor": 100, "amount_minor": 500, "max_per_day": 1, "currency": "EUR"}),
            422,
            "currency_mismatch",
            "currency",
        ),
    ];
    for (i, (body, status, code, field)) in rules.into_iter().enumerate() {
        let r = d.post(&rule, Some(&format!("rule-{i}")), &body).await;
        r.assert_problem(status, code);
        assert_eq!(r.fields(), vec![field.to_string()], "{body}");
    }
    assert_eq!(count(&d, &path).await, 0);
    assert_eq!(d.get(&rule).await.status, 404);
    assert_eq!(count(&d, "/v1/invoices").await, 0);
    assert_eq!(count(&d, "/v1/payments").await, 0);
    assert!(grants(&d, &cus).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_recharge_fires_once_per_crossing_and_survives_a_kill_right_after() {
    let mut d = Daemon::start().await;
    let cus = d.customer("auto", "USD").await;
    let rule = format!("/v1/customers/{cus}/auto-recharge");
    let body = json!({"below_minor": 1000, "amount_minor": 4000, "max_per_day": 2});
    // The wallet is empty, below the threshold: the rule fires in the write that sets it.
    let set = d.post(&rule, Some("rule-1"), &body).await;
    assert_eq!(set.status, 200, "{}", set.json);
    assert_eq!(set.json["state"], "fired");
    let fired = set.json["fired_top_up"]
        .as_str()
        .expect("a top-up")
        .to_string();
    d.kill9();
    d.restart().await;
    let t = top_up_settles(&d, &fired, "succeeded").await;
    assert_eq!(t["trigger"], "auto_recharge");
    // Setting the rule again evaluates it: the balance recovered, the rule re-arms, nothing fires.
    let again = d.post(&rule, Some("rule-2"), &body).await;
    assert_eq!(again.status, 200, "{}", again.json);
    assert_eq!(again.json["state"], "armed");
    assert!(again.json.get("fired_top_up").is_none());
    assert!(again.json["pending_top_up"].is_null());
    assert_eq!(again.json["started_today"], 1);
    let listed = d.get(&format!("/v1/customers/{cus}/top-ups")).await.json;
    assert_eq!(listed["data"].as_array().map_or(0, Vec::len), 1);
    let g = grants(&d, &cus).await;
    assert_eq!(g.len(), 1);
    assert_eq!(g[0]["remaining_minor"], 4000);
    let removed = d
        .send(d.client.delete(d.url(&rule)).bearer_auth(&d.key))
        .await;
    assert_eq!(removed.status, 200, "{}", removed.json);
    assert_eq!(d.get(&rule).await.status, 404);
    books_agree(&d).await;
}

async fn grant(d: &Daemon, cus: &str, key: &str, amount_minor: i64) -> String {
    let r = d
        .post(
            "/v1/credit-grants",
            Some(key),
            &json!({"customer": cus, "amount_minor": amount_minor, "currency": "USD",
                "category": "promotional"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    id_of(&r.json)
}

async fn void_grant(d: &Daemon, grant: &str, key: &str) {
    let r = d
        .post(
            &format!("/v1/credit-grants/{grant}/void"),
            Some(key),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
}

/// Takes a succeeded top-up's credit back by refunding its payment in full.
async fn refund_credit(d: &Daemon, top_up: &Value, key: &str) {
    let pay = top_up["payment"].as_str().expect("payment");
    let r = d
        .post(&format!("/v1/payments/{pay}/refund"), Some(key), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    d.eventually("the refund", || async {
        payment(d, pay).await["refunds"][0]["status"] == "succeeded"
    })
    .await;
}

async fn auto_top_ups(d: &Daemon, cus: &str) -> Vec<Value> {
    d.get(&format!("/v1/customers/{cus}/top-ups?limit=500"))
        .await
        .json["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|t| t["trigger"] == "auto_recharge")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drop_below_the_threshold_fires_in_its_own_write_once_per_crossing_within_the_daily_cap()
{
    let mut d = Daemon::start().await;
    let cus = d.customer("watched", "USD").await;
    let promo = grant(&d, &cus, "g-1", 1500).await;
    let rule = format!("/v1/customers/{cus}/auto-recharge");
    let set = d
        .post(
            &rule,
            Some("rule"),
            &json!({"below_minor": 1000, "amount_minor": 2000, "max_per_day": 2}),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.json);
    assert_eq!(set.json["state"], "armed");
    // The crossing: the top-up commits with the void that made it, so a kill right after the
    // reply finds it after the restart, once.
    void_grant(&d, &promo, "v-1").await;
    d.kill9();
    d.restart().await;
    let fired = auto_top_ups(&d, &cus).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    let first = top_up_settles(&d, &id_of(&fired[0]), "succeeded").await;
    // Its grant brought the credit back to 2000: the rule re-armed, nothing else fired.
    d.eventually("re-armed", || async {
        d.get(&rule).await.json["state"] == "armed"
    })
    .await;
    assert_eq!(auto_top_ups(&d, &cus).await.len(), 1);
    // The second crossing fires a second top-up.
    refund_credit(&d, &first, "v-2").await;
    d.eventually("a second auto top-up", || async {
        auto_top_ups(&d, &cus).await.len() == 2
    })
    .await;
    let second = auto_top_ups(&d, &cus).await[1].clone();
    let second = top_up_settles(&d, &id_of(&second), "succeeded").await;
    // The third crossing of the day is over the cap of 2: nothing fires, the rule stays armed.
    refund_credit(&d, &second, "v-3").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(auto_top_ups(&d, &cus).await.len(), 2);
    let state = d.get(&rule).await.json;
    assert_eq!(state["state"], "armed", "{state}");
    assert_eq!(state["started_today"], 2);
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn a_retried_top_up_gets_its_stored_reply_after_its_expiry_passed() {
    let d = Daemon::start().await;
    let cus = d.customer("late-retry", "USD").await;
    let body = json!({"amount_minor": 700, "paid": false, "expires_at": at(1)});
    let first = top_up(&d, &cus, "retry-1", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.json);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = top_up(&d, &cus, "retry-1", body).await;
    assert_eq!(again.status, 201, "{}", again.json);
    assert_eq!(again.json["id"], first.json["id"]);
}
