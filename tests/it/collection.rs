//! Where collection meets the rest: voids with attempts at the provider, superseded attempts,
//! refunds matched by the provider's ids and amounts, success reports checked against the
//! attempt, and provider listings filtered to the tenant. Each ends with the ledger, the
//! provider's books and the invoice agreeing.

use serde_json::{json, Value};

use crate::fake_stripe::FakeStripe;
use crate::harness::{at, Daemon};
use crate::payments::{
    daemon, entries_of_kind, invoices, pay, payment, settle, stripe_endpoint, stripe_hook,
};

/// The balance of one account in one currency (0 when it never moved).
async fn balance(d: &Daemon, code: &str, currency: &str) -> i64 {
    let accounts = d.get("/v1/accounts?limit=500").await;
    accounts.json["data"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["code"] == code && a["currency"] == currency)
        .and_then(|a| a["balance_minor"].as_i64())
        .unwrap_or(0)
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

async fn reconcile(d: &Daemon, key: &str) -> Value {
    let r = d
        .post(
            "/v1/reconciliations",
            Some(key),
            &json!({"from": at(-3600)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = id_of(&r.json);
    d.eventually("reconciliation", || async {
        d.get(&format!("/v1/reconciliations/{id}")).await.json["status"] == "completed"
    })
    .await;
    d.get(&format!("/v1/reconciliations/{id}")).await.json["report"].clone()
}

fn count(report: &Value, category: &str) -> usize {
    report[category].as_array().map_or(0, Vec::len)
}

/// A daemon on the fake Stripe with its webhook endpoint, one daily invoice and one attempt
/// settled in `status`: (provider, daemon, endpoint, invoices, payment).
async fn one_attempt(
    method: &str,
    status: &str,
) -> (FakeStripe, Daemon, String, Vec<String>, String) {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "").await;
    let ep = stripe_endpoint(&d).await;
    let inv = invoices(&d, 1).await;
    let p = id_of(&pay(&d, &inv[0], method).await);
    settle(&d, &p, status).await;
    (stripe, d, ep, inv, p)
}

async fn void(d: &Daemon, invoice: &str, key: &str) -> crate::harness::Resp {
    d.post(
        &format!("/v1/invoices/{invoice}/void"),
        Some(key),
        &json!({}),
    )
    .await
}

#[tokio::test]
async fn a_void_is_refused_while_an_attempt_is_at_the_provider_and_the_period_is_billed_once() {
    // Retries wait ten minutes, so the charged attempt whose reply was lost stays `unknown`.
    let d = Daemon::start_with("[jobs]\nbackoff_base_ms = 600000\nbackoff_max_ms = 600000\n").await;
    let inv = invoices(&d, 2).await;
    let first = id_of(&pay(&d, &inv[0], "sim_timeout").await);
    settle(&d, &first, "unknown").await;
    let refused = void(&d, &inv[0], "void-1").await;
    refused.assert_problem(409, "payment_in_progress");
    assert!(
        refused.json["detail"]
            .as_str()
            .is_some_and(|t| t.contains(&first)),
        "{}",
        refused.json
    );
    // Reconciliation finds the provider's charge and records it: the invoice is paid.
    let report = reconcile(&d, "rec-1").await;
    assert_eq!(count(&report, "missing_internally"), 1, "{report}");
    settle(&d, &first, "succeeded").await;
    let invoice = d.get(&format!("/v1/invoices/{}", inv[0])).await.json;
    assert_eq!(invoice["status"], "paid");
    assert_eq!(balance(&d, "psp_clearing", "USD").await, 1000);
    // The period is not issued again.
    let again = d.post("/v1/billing-runs", Some("run-2"), &json!({})).await;
    assert_eq!(again.status, 201, "{}", again.json);
    assert_eq!(again.json["closed"].as_array().map_or(0, Vec::len), 0);
    let all = d.get("/v1/invoices?limit=500").await.json;
    assert_eq!(all["data"].as_array().map_or(0, Vec::len), 2);
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn a_void_cancels_an_attempt_that_was_never_sent() {
    let d = Daemon::start().await;
    let inv = invoices(&d, 1).await;
    let first = id_of(&pay(&d, &inv[0], "sim_decline").await);
    settle(&d, &first, "failed").await;
    // Dunning scheduled attempt 2 days from now; it has not reached the provider.
    let attempts = d
        .get(&format!("/v1/payments?invoice={}", inv[0]))
        .await
        .json;
    let second = attempts["data"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["attempt"] == 2))
        .map(id_of)
        .expect("a dunning attempt");
    assert_eq!(payment(&d, &second).await["status"], "pending");
    let voided = void(&d, &inv[0], "void-1").await;
    assert_eq!(voided.status, 200, "{}", voided.json);
    let p = payment(&d, &second).await;
    assert_eq!(p["status"], "canceled");
    assert_eq!(p["recovery_point"], "intent_recorded");
    assert_eq!(balance(&d, "psp_clearing", "USD").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_attempt_supersedes_one_waiting_for_the_customer_and_a_late_success_is_refunded() {
    let (stripe, d, ep, inv, first) = one_attempt("pm_3ds", "requires_action").await;
    let second = d
        .post(
            &format!("/v1/invoices/{}/pay", inv[0]),
            Some("pay-again"),
            &json!({"payment_method": "pm_ok"}),
        )
        .await;
    assert_eq!(second.status, 201, "{}", second.json);
    assert_eq!(second.json["supersedes"], first.as_str());
    let second = id_of(&second.json);
    settle(&d, &second, "succeeded").await;
    let old = payment(&d, &first).await;
    assert_eq!(old["status"], "canceled");
    assert_eq!(old["failure_code"], "superseded");
    assert_eq!(stripe.cancels(), vec!["pi_1".to_string()]);
    // The provider reports the first intent succeeded all the same.
    let mut late = stripe.intent(0);
    late["status"] = json!("succeeded");
    assert_eq!(
        stripe_hook(&d, &ep, "evt_late", "payment_intent.succeeded", &late).await,
        200
    );
    settle(&d, &first, "unapplied").await;
    d.eventually("the unapplied payment refunded", || async {
        payment(&d, &first).await["refunds"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(stripe.refunds().len(), 1);
    assert_eq!(
        d.get(&format!("/v1/invoices/{}", inv[0])).await.json["status"],
        "paid"
    );
    assert_eq!(
        entries_of_kind(&d, "payment").await.len(),
        1,
        "one payment booked"
    );
    assert_eq!(balance(&d, "psp_clearing", "USD").await, 1000);
    assert_eq!(balance(&d, "suspense", "USD").await, 0);
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn superseding_an_intent_the_customer_already_completed_pays_with_it_and_charges_once() {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "").await;
    let inv = invoices(&d, 1).await;
    let first = id_of(&pay(&d, &inv[0], "pm_3ds").await);
    settle(&d, &first, "requires_action").await;
    stripe.complete(0);
    let second = d
        .post(
            &format!("/v1/invoices/{}/pay", inv[0]),
            Some("pay-again"),
            &json!({"payment_method": "pm_ok"}),
        )
        .await;
    assert_eq!(second.status, 201, "{}", second.json);
    let second = id_of(&second.json);
    settle(&d, &first, "succeeded").await;
    settle(&d, &second, "canceled").await;
    assert_eq!(stripe.charges(), 1, "the provider collected once");
    assert_eq!(balance(&d, "psp_clearing", "USD").await, 1000);
    assert_eq!(
        d.get(&format!("/v1/invoices/{}", inv[0])).await.json["status"],
        "paid"
    );
}

/// A paid invoice through the fake provider, with two refunds the provider leaves pending.
async fn two_pending_refunds(stripe: &FakeStripe, d: &Daemon) -> (String, Vec<Value>) {
    let inv = invoices(d, 1).await;
    let p = id_of(&pay(d, &inv[0], "pm_ok").await);
    settle(d, &p, "succeeded").await;
    stripe.set_refund_status("pending");
    for (key, amount) in [("rf-300", 300), ("rf-400", 400)] {
        let r = d
            .post(
                &format!("/v1/payments/{p}/refund"),
                Some(key),
                &json!({"amount_minor": amount}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    d.eventually("both refunds sent", || async {
        stripe.refunds().len() == 2
            && payment(d, &p).await["refunds"]
                .as_array()
                .is_some_and(|r| r.iter().all(|r| r["provider_id"].is_string()))
    })
    .await;
    let refunds = payment(d, &p).await["refunds"]
        .as_array()
        .expect("refunds")
        .clone();
    assert!(refunds.iter().all(|r| r["status"] == "pending"));
    (p, refunds)
}

fn refund_total(entries: &[Value]) -> i64 {
    entries
        .iter()
        .filter_map(|e| crate::payments::posting(e, "psp_clearing"))
        .sum::<i64>()
        .abs()
}

#[tokio::test]
async fn charge_refunded_books_only_the_refunds_the_provider_made() {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "").await;
    let ep = stripe_endpoint(&d).await;
    let (p, refunds) = two_pending_refunds(&stripe, &d).await;
    let pid = |i: usize| refunds[i]["provider_id"].as_str().expect("id").to_string();
    let charge = json!({"id": "ch_1", "object": "charge", "payment_intent": "pi_1",
        "amount_refunded": 300,
        "refunds": {"data": [
            {"id": pid(0), "object": "refund", "amount": 300, "status": "succeeded"},
            {"id": pid(1), "object": "refund", "amount": 400, "status": "failed"}]}});
    assert_eq!(
        stripe_hook(&d, &ep, "evt_r1", "charge.refunded", &charge).await,
        200
    );
    d.eventually("refunds settled", || async {
        let r = payment(&d, &p).await;
        r["refunds"][0]["status"] == "succeeded" && r["refunds"][1]["status"] == "failed"
    })
    .await;
    assert_eq!(payment(&d, &p).await["refunded_minor"], 300);
    assert_eq!(refund_total(&entries_of_kind(&d, "refund").await), 300);
    assert_eq!(balance(&d, "psp_clearing", "USD").await, 700);
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn a_refund_total_without_a_list_books_nothing_and_each_refund_settles_by_its_own_event() {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "").await;
    let ep = stripe_endpoint(&d).await;
    let (p, refunds) = two_pending_refunds(&stripe, &d).await;
    let pid = |i: usize| refunds[i]["provider_id"].clone();
    // A total counts refunds the provider is still settling: it books nothing.
    let charge = json!({"id": "ch_1", "object": "charge", "payment_intent": "pi_1",
        "amount_refunded": 700});
    assert_eq!(
        stripe_hook(&d, &ep, "evt_r1", "charge.refunded", &charge).await,
        200
    );
    let refund_event = |id: &str, event: &str, amount: i64, status: &str, i: usize| {
        let d = &d;
        let ep = &ep;
        let body = json!({"id": pid(i), "object": "refund", "amount": amount,
            "status": status, "payment_intent": "pi_1"});
        let (id, event) = (id.to_string(), event.to_string());
        async move { stripe_hook(d, ep, &id, &event, &body).await }
    };
    assert_eq!(
        refund_event("evt_r2", "refund.updated", 300, "succeeded", 0).await,
        200
    );
    assert_eq!(
        refund_event("evt_r3", "charge.refund.updated", 400, "failed", 1).await,
        200
    );
    d.eventually("refunds settled by their events", || async {
        let r = payment(&d, &p).await;
        r["refunds"][0]["status"] == "succeeded" && r["refunds"][1]["status"] == "failed"
    })
    .await;
    assert_eq!(refund_total(&entries_of_kind(&d, "refund").await), 300);
    assert_eq!(balance(&d, "psp_clearing", "USD").await, 700);
    // The bank returns the 300 after all: the refund entry is reversed.
    assert_eq!(
        refund_event("evt_r4", "refund.updated", 300, "failed", 0).await,
        200
    );
    d.eventually("the succeeded refund failed", || async {
        payment(&d, &p).await["refunds"][0]["status"] == "failed"
    })
    .await;
    assert_eq!(entries_of_kind(&d, "refund_reversal").await.len(), 1);
    assert_eq!(balance(&d, "psp_clearing", "USD").await, 1000);
    assert_eq!(payment(&d, &p).await["refunded_minor"], 0);
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn an_intent_canceled_at_the_provider_closes_its_attempt_without_dunning() {
    let (stripe, d, ep, inv, p) = one_attempt("pm_3ds", "requires_action").await;
    let mut intent = stripe.intent(0);
    intent["status"] = json!("canceled");
    intent["cancellation_reason"] = json!("abandoned");
    assert_eq!(
        stripe_hook(&d, &ep, "evt_c", "payment_intent.canceled", &intent).await,
        200
    );
    settle(&d, &p, "canceled").await;
    // A late `requires_action` does not reopen it.
    intent["status"] = json!("requires_action");
    stripe_hook(&d, &ep, "evt_ra", "payment_intent.requires_action", &intent).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(payment(&d, &p).await["status"], "canceled");
    let attempts = d
        .get(&format!("/v1/payments?invoice={}", inv[0]))
        .await
        .json;
    assert_eq!(
        attempts["data"].as_array().map_or(0, Vec::len),
        1,
        "no dunning attempt"
    );
    assert_eq!(void(&d, &inv[0], "void-1").await.status, 200);
}

#[tokio::test]
async fn a_success_with_another_amount_or_currency_is_held_for_review() {
    let (stripe, d, ep, inv, p) = one_attempt("pm_3ds", "requires_action").await;
    stripe.mutate(0, |i| {
        i["amount"] = json!(1);
        i["currency"] = json!("eur");
        i["status"] = json!("succeeded");
    });
    let intent = stripe.intent(0);
    assert_eq!(
        stripe_hook(&d, &ep, "evt_1", "payment_intent.succeeded", &intent).await,
        200
    );
    settle(&d, &p, "needs_review").await;
    let held = payment(&d, &p).await;
    assert_eq!(
        (
            held["received_minor"].clone(),
            held["received_currency"].clone()
        ),
        (json!(1), json!("EUR"))
    );
    assert!(held["held_reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("amount_mismatch")));
    assert_eq!(
        d.get(&format!("/v1/invoices/{}", inv[0])).await.json["status"],
        "finalized"
    );
    assert_eq!(balance(&d, "psp_clearing", "USD").await, 0);
    assert_eq!(balance(&d, "psp_clearing", "EUR").await, 1);
    assert_eq!(balance(&d, "suspense", "EUR").await, -1);
    let report = reconcile(&d, "rec-1").await;
    assert_eq!(count(&report, "amount_mismatch"), 1, "{report}");
    assert_eq!(count(&report, "matched"), 0, "{report}");
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn reconciliation_lists_only_the_tenants_own_charges() {
    let mut d = Daemon::start().await;
    let inv = invoices(&d, 1).await;
    let p = id_of(&pay(&d, &inv[0], "sim_ok").await);
    settle(&d, &p, "succeeded").await;
    d.stop();
    let out = d.cli(&["tenant", "create", "other"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("api key line")
        .to_string();
    d.restart().await;
    let r = d
        .post_as(
            &other,
            "/v1/reconciliations",
            Some("rec-b"),
            &json!({"from": at(-3600)}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = id_of(&r.json);
    d.eventually("reconciliation", || async {
        d.get_as(&other, &format!("/v1/reconciliations/{id}"))
            .await
            .json["status"]
            == "completed"
    })
    .await;
    let report = d
        .get_as(&other, &format!("/v1/reconciliations/{id}"))
        .await
        .json["report"]
        .clone();
    for category in [
        "matched",
        "missing_internally",
        "missing_at_provider",
        "amount_mismatch",
        "status_mismatch",
    ] {
        assert_eq!(count(&report, category), 0, "{category}: {report}");
    }
    let own = reconcile(&d, "rec-a").await;
    assert_eq!(count(&own, "matched"), 1, "{own}");
}

#[tokio::test]
async fn an_attempt_waiting_for_the_customer_is_canceled_at_the_provider_before_a_void() {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "").await;
    let inv = invoices(&d, 1).await;
    let p = id_of(&pay(&d, &inv[0], "pm_3ds").await);
    settle(&d, &p, "requires_action").await;
    void(&d, &inv[0], "void-1")
        .await
        .assert_problem(409, "payment_in_progress");
    let cancel = d
        .post(
            &format!("/v1/payments/{p}/cancel"),
            Some("cancel-1"),
            &json!({}),
        )
        .await;
    assert_eq!(cancel.status, 200, "{}", cancel.json);
    settle(&d, &p, "canceled").await;
    assert_eq!(stripe.cancels(), vec!["pi_1".to_string()]);
    assert_eq!(void(&d, &inv[0], "void-2").await.status, 200);
    // A settled attempt cannot be canceled.
    d.post(
        &format!("/v1/payments/{p}/cancel"),
        Some("cancel-2"),
        &json!({}),
    )
    .await
    .assert_problem(409, "not_cancelable");
    assert_eq!(balance(&d, "psp_clearing", "USD").await, 0);
}

#[tokio::test]
async fn a_second_intent_naming_a_paid_attempt_is_recorded_beside_it_and_refunded() {
    let (stripe, d, ep, inv, p) = one_attempt("pm_ok", "succeeded").await;
    // Another integration charged the customer under the same metadata.
    let mut other = stripe.intent(0);
    other["id"] = json!("pi_elsewhere");
    assert_eq!(
        stripe_hook(&d, &ep, "evt_other", "payment_intent.succeeded", &other).await,
        200
    );
    d.eventually("recorded beside the attempt", || async {
        let list = d
            .get(&format!("/v1/payments?invoice={}", inv[0]))
            .await
            .json;
        list["data"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let list = d
        .get(&format!("/v1/payments?invoice={}", inv[0]))
        .await
        .json;
    let beside = list["data"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["provider_id"] == "pi_elsewhere"))
        .cloned()
        .expect("the second intent's record");
    assert_eq!(beside["status"], "unapplied", "{beside}");
    assert_eq!(payment(&d, &p).await["status"], "succeeded");
    assert_eq!(
        entries_of_kind(&d, "payment").await.len(),
        1,
        "one payment booked"
    );
    d.eventually("the second collection refunded", || async {
        payment(&d, beside["id"].as_str().expect("id")).await["refunds"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(balance(&d, "psp_clearing", "USD").await, 1000);
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}
