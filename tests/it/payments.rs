//! Payments against a fake Stripe-shaped server: one charge per attempt whatever fails, one
//! ledger entry whatever order the answers arrive in, dunning, reconciliation.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_stripe::FakeStripe;
use crate::harness::{at, Daemon};

const HOOK_SECRET: &str = "whsec_stripe_test_secret_0123456789";

/// Configuration that charges through `stripe`, with `extra` lines in `[payments]`.
pub(crate) fn stripe_config(stripe: &FakeStripe, extra: &str) -> String {
    format!(
        "[payments]\nprovider = \"stripe\"\n{extra}\n[payments.stripe]\nbase_url = \"{}\"\nsecret_key = \"sk_test_fake\"\ntimeout_ms = 500\n",
        stripe.url
    )
}

pub(crate) async fn daemon(stripe: &FakeStripe, extra: &str) -> Daemon {
    Daemon::start_with(&stripe_config(stripe, extra)).await
}

/// A customer with a daily plan started `days` ago, billed: returns the invoice ids.
pub(crate) async fn invoices(d: &Daemon, days: i64) -> Vec<String> {
    d.customer("payer", "USD").await;
    let p = d
        .post(
            "/v1/plans",
            Some("plan"),
            &json!({"code": "d", "name": "D", "currency": "USD", "interval": "day",
        "fixed_fee": {"amount_minor": 1000}}),
        )
        .await;
    assert_eq!(p.status, 201);
    let today = &at(0)[..10];
    let start =
        tally::clock::parse_rfc3339(&format!("{today}T00:00:00Z")).expect("t") - days * 86_400_000;
    let s = d
        .post(
            "/v1/subscriptions",
            Some("sub"),
            &json!({"customer": "payer", "plan": "d", "start_at": tally::clock::rfc3339(start)}),
        )
        .await;
    assert_eq!(s.status, 201);
    let r = d.post("/v1/billing-runs", Some("run"), &json!({})).await;
    assert_eq!(r.status, 201);
    r.json["closed"]
        .as_array()
        .expect("closed")
        .iter()
        .map(|c| c["invoice"].as_str().expect("id").to_string())
        .collect()
}

pub(crate) async fn pay(d: &Daemon, invoice: &str, method: &str) -> Value {
    let r = d
        .post(
            &format!("/v1/invoices/{invoice}/pay"),
            Some(&format!("pay-{invoice}")),
            &json!({"payment_method": method}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    r.json
}

pub(crate) async fn payment(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/v1/payments/{id}")).await.json
}

async fn payment_entries(d: &Daemon, invoice_payment: &str) -> usize {
    let entries = d.get("/v1/journal-entries?limit=500").await;
    entries.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|e| e["kind"] == "payment" && e["links"]["payment"] == invoice_payment)
        .count()
}

pub(crate) async fn settle(d: &Daemon, id: &str, status: &str) {
    d.eventually(&format!("payment {status}"), || async {
        payment(d, id).await["status"] == status
    })
    .await;
}

#[tokio::test]
async fn a_timeout_after_the_charge_is_retried_with_the_same_key_and_charges_once() {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "").await;
    let inv = invoices(&d, 1).await;
    let p = pay(&d, &inv[0], "pm_timeout").await;
    let id = p["id"].as_str().expect("id");
    settle(&d, id, "succeeded").await;
    assert_eq!(stripe.charges(), 1);
    let calls = stripe.calls();
    assert!(calls.len() >= 2, "retried after the timeout");
    assert!(
        calls.iter().all(|k| *k == calls[0]),
        "one key for every call of the attempt"
    );
    assert_eq!(
        calls[0],
        p["provider_idempotency_key"].as_str().expect("key")
    );
    assert_eq!(payment_entries(&d, id).await, 1);
    assert_eq!(
        d.get(&format!("/v1/invoices/{}", inv[0])).await.json["status"],
        "paid"
    );
    assert_eq!(payment(&d, id).await["recovery_point"], "outcome_recorded");
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_between_the_provider_call_and_the_outcome_resumes_without_a_second_charge() {
    let stripe = FakeStripe::start().await;
    let mut d = daemon(&stripe, "").await;
    let inv = invoices(&d, 1).await;
    let p = pay(&d, &inv[0], "pm_slow").await;
    let id = p["id"].as_str().expect("id").to_string();
    for _ in 0..200 {
        if !stripe.calls().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!stripe.calls().is_empty(), "the provider was called");
    d.kill9();
    d.restart().await;
    settle(&d, &id, "succeeded").await;
    assert_eq!(stripe.charges(), 1, "the provider still saw one charge");
    assert_eq!(payment_entries(&d, &id).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_pay_requests_make_one_attempt() {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "").await;
    let inv = invoices(&d, 1).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = d.client.clone();
        let url = d.url(&format!("/v1/invoices/{}/pay", inv[0]));
        let key = d.key.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", format!("p{i}"))
                .json(&json!({"payment_method": "pm_slow"}))
                .send()
                .await
                .expect("send");
            r.status().as_u16()
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.expect("task") {
            201 => created += 1,
            409 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 1);
    let attempts = d.get(&format!("/v1/payments?invoice={}", inv[0])).await;
    assert_eq!(attempts.json["data"].as_array().map(Vec::len), Some(1));
    let id = attempts.json["data"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    settle(&d, &id, "succeeded").await;
    assert_eq!(stripe.charges(), 1);
}

#[tokio::test]
async fn a_decline_schedules_the_next_attempt_and_exhaustion_is_uncollectible() {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "").await;
    let inv = invoices(&d, 1).await;
    let p = pay(&d, &inv[0], "pm_decline").await;
    let id = p["id"].as_str().expect("id");
    settle(&d, id, "failed").await;
    let failed = payment(&d, id).await;
    assert_eq!(failed["failure_code"], "insufficient_funds");
    assert_eq!(
        d.get(&format!("/v1/invoices/{}", inv[0])).await.json["status"],
        "finalized"
    );
    let attempts = d
        .get(&format!("/v1/payments?invoice={}", inv[0]))
        .await
        .json["data"]
        .as_array()
        .expect("data")
        .clone();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["status"], "pending");
    assert_ne!(
        attempts[1]["provider_idempotency_key"],
        attempts[0]["provider_idempotency_key"]
    );
    assert!(
        attempts[1]["scheduled_at"].as_str().expect("t") > at(2 * 86_400).as_str(),
        "three days later"
    );

    let stripe2 = FakeStripe::start().await;
    let d2 = daemon(&stripe2, "dunning_retry_days = [0, 0]").await;
    let inv2 = invoices(&d2, 1).await;
    pay(&d2, &inv2[0], "pm_decline").await;
    d2.eventually("uncollectible", || async {
        d2.get(&format!("/v1/invoices/{}", inv2[0])).await.json["status"] == "uncollectible"
    })
    .await;
    let attempts = d2
        .get(&format!("/v1/payments?invoice={}", inv2[0]))
        .await
        .json["data"]
        .as_array()
        .expect("data")
        .clone();
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a["status"] == "failed"));

    // The loss is on the books: bad debt took the receivable, once.
    let invoice = d2.get(&format!("/v1/invoices/{}", inv2[0])).await.json;
    let customer = invoice["customer"].as_str().expect("customer").to_string();
    let due = invoice["amount_due_minor"].as_i64().expect("due");
    assert!(due > 0);
    let receivable = || async {
        d2.get(&format!("/v1/customers/{customer}/balance"))
            .await
            .json["balances"][0]["receivable_minor"]
            .clone()
    };
    assert_eq!(receivable().await, 0, "nothing collectible is left");
    let write_offs = entries_of_kind(&d2, "invoice_write_off").await;
    assert_eq!(write_offs.len(), 1);
    assert_eq!(write_offs[0]["links"]["invoice"], inv2[0].as_str());
    assert_eq!(posting(&write_offs[0], "bad_debt"), Some(due));
    assert_eq!(d2.get("/v1/ledger/verify").await.json["ok"], true);

    // A success the provider reports after dunning gave up (providers allow it) collects the
    // invoice and reverses the write-off.
    let ep = stripe_endpoint(&d2).await;
    let last = attempts[2]["id"].as_str().expect("id");
    let mut intent = stripe2.intent_of(last).expect("the declined intent");
    intent["status"] = json!("succeeded");
    assert_eq!(
        stripe_hook(&d2, &ep, "evt_late", "payment_intent.succeeded", &intent).await,
        200
    );
    d2.eventually("paid after all", || async {
        d2.get(&format!("/v1/invoices/{}", inv2[0])).await.json["status"] == "paid"
    })
    .await;
    let reversals = entries_of_kind(&d2, "invoice_write_off_reversal").await;
    assert_eq!(reversals.len(), 1);
    assert_eq!(posting(&reversals[0], "bad_debt"), Some(-due));
    assert_eq!(entries_of_kind(&d2, "invoice_write_off").await.len(), 1);
    assert_eq!(receivable().await, 0, "the payment settled what came back");
    assert_eq!(d2.get("/v1/ledger/verify").await.json["ok"], true);
}

pub(crate) async fn entries_of_kind(d: &Daemon, kind: &str) -> Vec<Value> {
    d.get("/v1/journal-entries?limit=500").await.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// The amount an entry posts to `account`, if it touches it.
pub(crate) fn posting(entry: &Value, account: &str) -> Option<i64> {
    entry["postings"]
        .as_array()?
        .iter()
        .find(|p| p["account"] == account)
        .and_then(|p| p["amount_minor"].as_i64())
}

/// Registers a Stripe webhook endpoint signed with [`HOOK_SECRET`]; returns its id.
pub(crate) async fn stripe_endpoint(d: &Daemon) -> String {
    let ep = d
        .post(
            "/v1/webhook-endpoints",
            Some("ep"),
            &json!({"provider": "stripe", "secret": HOOK_SECRET}),
        )
        .await;
    assert_eq!(ep.status, 201, "{}", ep.json);
    ep.json["id"].as_str().expect("id").to_string()
}

pub(crate) async fn stripe_hook(
    d: &Daemon,
    endpoint: &str,
    event_id: &str,
    kind: &str,
    intent: &Value,
) -> u16 {
    d.send(stripe_hook_request(d, endpoint, event_id, kind, intent))
        .await
        .status
}

/// A Stripe event about `intent`, signed for [`stripe_endpoint`], ready to send to `d`.
pub(crate) fn stripe_hook_request(
    d: &Daemon,
    endpoint: &str,
    event_id: &str,
    kind: &str,
    intent: &Value,
) -> reqwest::RequestBuilder {
    let body = json!({"id": event_id, "type": kind, "data": {"object": intent}}).to_string();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let sig = tally::webhooks::signature::sign_stripe(HOOK_SECRET, t, body.as_bytes());
    d.client
        .post(d.url(&format!("/v1/hooks/{endpoint}")))
        .header("Stripe-Signature", format!("t={t},v1={sig}"))
        .body(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_before_after_or_instead_of_the_reply_ends_in_one_state() {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "").await;
    let ep = stripe_endpoint(&d).await;
    let inv = invoices(&d, 3).await;
    // Before the reply: the provider is slow to answer; its webhook lands first.
    let before = pay(&d, &inv[0], "pm_slow").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut intent = None;
    for _ in 0..200 {
        intent = stripe.intent_of(&before);
        if intent.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        stripe_hook(
            &d,
            &ep,
            "evt_b",
            "payment_intent.succeeded",
            &intent.expect("intent")
        )
        .await,
        200
    );
    // After the reply.
    let after = pay(&d, &inv[1], "pm_ok").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    settle(&d, &after, "succeeded").await;
    let intent_after = stripe.intent_of(&after).expect("intent");
    assert_eq!(
        stripe_hook(&d, &ep, "evt_a", "payment_intent.succeeded", &intent_after).await,
        200
    );
    // Instead of the reply: the provider charged but never answers successfully.
    let only = pay(&d, &inv[2], "pm_ghost").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    d.eventually("the ghost charge", || async {
        stripe.intent_of(&only).is_some()
    })
    .await;
    let intent_only = stripe.intent_of(&only).expect("intent");
    assert_eq!(
        stripe_hook(&d, &ep, "evt_o", "payment_intent.succeeded", &intent_only).await,
        200
    );
    for id in [&before, &after, &only] {
        settle(&d, id, "succeeded").await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for id in [&before, &after, &only] {
        assert_eq!(payment(&d, id).await["status"], "succeeded");
        assert_eq!(
            payment_entries(&d, id).await,
            1,
            "one ledger entry for {id}"
        );
    }
    for i in &inv {
        assert_eq!(
            d.get(&format!("/v1/invoices/{i}")).await.json["status"],
            "paid"
        );
    }
    // The webhook, the reply and the retries reported each success more than once: one
    // notification per payment.
    let succeeded = d
        .get("/v1/notifications?type=payment.succeeded&limit=500")
        .await;
    assert_eq!(succeeded.json["data"].as_array().map_or(0, Vec::len), 3);
    // Refund half of one payment, twice with one key: one refund.
    let refund = d
        .post(
            &format!("/v1/payments/{after}/refund"),
            Some("rf"),
            &json!({"amount_minor": 500}),
        )
        .await;
    assert_eq!(refund.status, 200, "{}", refund.json);
    d.post(
        &format!("/v1/payments/{after}/refund"),
        Some("rf"),
        &json!({"amount_minor": 500}),
    )
    .await;
    d.eventually("refund", || async {
        payment(&d, &after).await["refunds"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(payment(&d, &after).await["refunded_minor"], 500);
    d.post(
        &format!("/v1/payments/{after}/refund"),
        Some("rf2"),
        &json!({"amount_minor": 501}),
    )
    .await
    .assert_problem(409, "not_refundable");
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn reconciliation_finds_each_category_and_resolves_only_missing_internally() {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "").await;
    let inv = invoices(&d, 5).await;
    // The provider's intents are addressed by position below: each payment's call is made
    // before the next payment starts, so position n is the n-th payment (jobs run
    // concurrently otherwise, in any order).
    let mut ids = Vec::new();
    for (n, (invoice, method)) in inv
        .iter()
        .zip(["pm_ok", "pm_ghost", "pm_ok", "pm_ok", "pm_ok"])
        .enumerate()
    {
        let id = pay(&d, invoice, method).await["id"]
            .as_str()
            .expect("id")
            .to_string();
        d.eventually("the provider was called", || async {
            stripe.state.lock().expect("lock").intents.len() > n
        })
        .await;
        ids.push(id);
    }
    let [ok, ghost, amount, missing, status] = <[String; 5]>::try_from(ids).expect("five");
    for id in [&ok, &amount, &missing, &status] {
        settle(&d, id, "succeeded").await;
    }
    d.eventually("ghost unknown", || async {
        payment(&d, &ghost).await["status"] == "unknown"
    })
    .await;
    // Prepare the mismatches at the provider.
    stripe.mutate(2, |i| i["amount"] = json!(999));
    stripe.mutate(4, |i| i["status"] = json!("canceled"));
    stripe.remove(3);
    let run = |key: &'static str| {
        let d = &d;
        async move {
            let r = d
                .post(
                    "/v1/reconciliations",
                    Some(key),
                    &json!({"from": at(-3600)}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.json);
            let id = r.json["id"].as_str().expect("id").to_string();
            d.eventually("reconciliation", || async {
                d.get(&format!("/v1/reconciliations/{id}")).await.json["status"] == "completed"
            })
            .await;
            d.get(&format!("/v1/reconciliations/{id}")).await.json["report"].clone()
        }
    };
    let report = run("rec1").await;
    let count = |k: &str| report[k].as_array().map_or(0, Vec::len);
    assert_eq!(count("matched"), 1, "{report}");
    assert_eq!(count("missing_internally"), 1);
    assert_eq!(report["missing_internally"][0]["resolved"], true);
    assert_eq!(count("amount_mismatch"), 1);
    assert_eq!(count("missing_at_provider"), 1);
    assert_eq!(count("status_mismatch"), 1);
    settle(&d, &ghost, "succeeded").await;
    let entries_after_first = d.get("/v1/journal-entries?limit=500").await.json["data"]
        .as_array()
        .map_or(0, Vec::len);
    let second = run("rec2").await;
    assert_eq!(
        second["missing_internally"].as_array().map_or(0, Vec::len),
        0,
        "nothing more to resolve"
    );
    assert_eq!(second["matched"].as_array().map_or(0, Vec::len), 2);
    let entries_after_second = d.get("/v1/journal-entries?limit=500").await.json["data"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        entries_after_first, entries_after_second,
        "running it twice changes nothing more"
    );
    assert_eq!(
        payment(&d, &amount).await["status"],
        "succeeded",
        "mismatches are never auto-changed"
    );
}

#[tokio::test]
async fn automatic_collection_pays_invoices_as_they_are_issued_through_the_simulator() {
    let d = Daemon::start_with("[payments]\nauto_collect = true\n").await;
    let inv = invoices(&d, 2).await;
    assert_eq!(inv.len(), 2);
    for id in &inv {
        d.eventually("auto-collected", || async {
            d.get(&format!("/v1/invoices/{id}")).await.json["status"] == "paid"
        })
        .await;
        let attempts = d.get(&format!("/v1/payments?invoice={id}")).await;
        let list = attempts.json["data"].as_array().expect("data");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["provider"], "simulated");
        assert_eq!(list[0]["status"], "succeeded");
    }
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}
