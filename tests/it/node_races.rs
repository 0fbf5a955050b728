//! Older capabilities racing on three nodes of one PostgreSQL database: a void against a pay,
//! refunds against each other and against a credit note, one provider event delivered to every
//! node, a usage alert and an auto-recharge crossed from several nodes at once. Each race's
//! requests are released together and every race is run for several rounds; whichever request
//! wins, there is one outcome and the books agree. (PostgreSQL only, as in `nodes.rs`.)

use std::sync::Arc;

use serde_json::{json, Value};

use crate::fake_stripe::FakeStripe;
use crate::harness::{at, Daemon, Resp};
use crate::nodes::three_nodes;
use crate::payments::{
    entries_of_kind, invoices, pay, payment, settle, stripe_config, stripe_endpoint,
    stripe_hook_request,
};

/// How many times each race is run.
const ROUNDS: usize = 4;

/// A POST to `node` with its tenant's key, not yet sent.
fn post(node: &Daemon, path: &str, key: Option<&str>, body: &Value) -> reqwest::RequestBuilder {
    let request = node
        .client
        .post(node.url(path))
        .bearer_auth(&node.key)
        .json(body);
    match key {
        Some(k) => request.header("Idempotency-Key", k),
        None => request,
    }
}

/// Sends every request at the same moment (each task waits at one barrier) and answers in the
/// order given.
async fn race(requests: Vec<reqwest::RequestBuilder>) -> Vec<Resp> {
    let gate = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                gate.wait().await;
                Resp::read(request.send().await.expect("send")).await
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for t in tasks {
        answers.push(t.await.expect("task"));
    }
    answers
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

fn list(v: &Value) -> Vec<Value> {
    v["data"].as_array().cloned().unwrap_or_default()
}

/// Every node reads the same balanced books.
async fn books_agree(nodes: &[Daemon]) {
    for node in nodes {
        let verify = node.get("/v1/ledger/verify").await;
        assert_eq!(verify.json["ok"], true, "{}", verify.json);
    }
}

/// The intents the provider holds for `payment`.
fn intents_of(stripe: &FakeStripe, payment: &str) -> Vec<Value> {
    stripe
        .state
        .lock()
        .expect("lock")
        .intents
        .iter()
        .filter(|i| i["metadata"]["tally_payment"] == payment)
        .cloned()
        .collect()
}

/// The refunds the provider made of `payment`'s intent.
fn provider_refunds(stripe: &FakeStripe, payment: &str) -> Vec<Value> {
    let Some(intent) = stripe.intent_of(payment) else {
        return Vec::new();
    };
    stripe
        .refunds()
        .into_iter()
        .filter(|r| r["payment_intent"] == intent["id"])
        .collect()
}

/// How many ledger entries booked `payment`'s collection.
async fn collections(d: &Daemon, payment: &str) -> usize {
    entries_of_kind(d, "payment")
        .await
        .iter()
        .filter(|e| e["links"]["payment"] == payment)
        .count()
}

/// Waits until every refund of `payment` is settled; returns the payment.
async fn refunds_settle(d: &Daemon, payment_id: &str) -> Value {
    d.eventually("the refunds settle", || async {
        payment(d, payment_id).await["refunds"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["status"] == "succeeded"))
    })
    .await;
    payment(d, payment_id).await
}

/// Pays `invoice` through `node` and waits for the success; returns the payment's id.
async fn paid(node: &Daemon, invoice: &str) -> String {
    let id = id_of(&pay(node, invoice, "pm_ok").await);
    settle(node, &id, "succeeded").await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_void_and_a_pay_on_two_nodes_end_voided_uncharged_or_paid_once() {
    crate::backend::postgres_only!("several nodes share one PostgreSQL database");
    let stripe = FakeStripe::start().await;
    let nodes = three_nodes(&stripe_config(&stripe, "")).await;
    let open = invoices(&nodes[0], ROUNDS as i64).await;
    assert_eq!(open.len(), ROUNDS);
    let mut paid_invoices = 0;
    for (round, invoice) in open.iter().enumerate() {
        let answers = race(vec![
            post(
                &nodes[round % 3],
                &format!("/v1/invoices/{invoice}/pay"),
                Some(&format!("pay-{round}")),
                &json!({"payment_method": "pm_ok"}),
            ),
            post(
                &nodes[(round + 1) % 3],
                &format!("/v1/invoices/{invoice}/void"),
                Some(&format!("void-{round}")),
                &json!({}),
            ),
        ])
        .await;
        let (pay, void) = (&answers[0], &answers[1]);
        if pay.status != 201 {
            pay.assert_problem(409, "invoice_state");
        }
        match void.status {
            200 => {}
            409 => assert!(
                ["payment_in_progress", "invoice_state"]
                    .contains(&void.json["code"].as_str().unwrap_or("")),
                "{}",
                void.json
            ),
            other => panic!("void answered {other}: {}", void.json),
        }
        let reader = &nodes[(round + 2) % 3];
        let attempts = || async {
            list(
                &reader
                    .get(&format!("/v1/payments?invoice={invoice}"))
                    .await
                    .json,
            )
        };
        reader
            .eventually("the invoice settles", || async {
                let status =
                    reader.get(&format!("/v1/invoices/{invoice}")).await.json["status"].clone();
                (status == "void" || status == "paid")
                    && attempts().await.iter().all(|a| {
                        ["succeeded", "canceled", "failed"]
                            .contains(&a["status"].as_str().unwrap_or(""))
                    })
            })
            .await;
        let status = reader.get(&format!("/v1/invoices/{invoice}")).await.json["status"].clone();
        let attempts = attempts().await;
        let charged: usize = attempts
            .iter()
            .map(|a| {
                intents_of(&stripe, a["id"].as_str().expect("id"))
                    .iter()
                    .filter(|i| i["status"] == "succeeded")
                    .count()
            })
            .sum();
        let succeeded: Vec<&Value> = attempts
            .iter()
            .filter(|a| a["status"] == "succeeded")
            .collect();
        if status == "void" {
            assert_eq!(void.status, 200, "{}", void.json);
            assert_eq!(
                charged, 0,
                "a voided invoice is never charged: {attempts:?}"
            );
            assert!(succeeded.is_empty(), "{attempts:?}");
        } else {
            assert_eq!(status, "paid");
            assert_eq!(pay.status, 201, "{}", pay.json);
            assert_ne!(
                void.status, 200,
                "a paid invoice was not voided: {}",
                void.json
            );
            assert_eq!(charged, 1, "one charge: {attempts:?}");
            assert_eq!(succeeded.len(), 1, "{attempts:?}");
            let id = succeeded[0]["id"].as_str().expect("id");
            assert_eq!(collections(reader, id).await, 1, "booked once");
            paid_invoices += 1;
        }
        books_agree(&nodes).await;
    }
    eprintln!("void against pay: {paid_invoices} of {ROUNDS} invoices paid, the rest voided");
    assert_eq!(
        stripe.charges(),
        paid_invoices,
        "no charge beside the paid invoices"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refunds_on_several_nodes_never_exceed_the_payment_and_one_key_refunds_once() {
    crate::backend::postgres_only!("several nodes share one PostgreSQL database");
    let stripe = FakeStripe::start().await;
    let nodes = three_nodes(&stripe_config(&stripe, "")).await;
    for (round, invoice) in invoices(&nodes[0], ROUNDS as i64).await.iter().enumerate() {
        let id = paid(&nodes[round % 3], invoice).await;
        let amount = payment(&nodes[0], &id).await["amount_minor"]
            .as_i64()
            .expect("amount");
        // Two refunds, each more than half: both cannot fit.
        let each = amount / 2 + 100;
        let path = format!("/v1/payments/{id}/refund");
        let answers = race(vec![
            post(
                &nodes[round % 3],
                &path,
                Some(&format!("a-{round}")),
                &json!({"amount_minor": each}),
            ),
            post(
                &nodes[(round + 1) % 3],
                &path,
                Some(&format!("b-{round}")),
                &json!({"amount_minor": each}),
            ),
        ])
        .await;
        assert_eq!(
            answers.iter().filter(|a| a.status == 200).count(),
            1,
            "one refund fits: {:?}",
            answers.iter().map(|a| &a.json).collect::<Vec<_>>()
        );
        let lost = answers.iter().find(|a| a.status != 200).expect("a loser");
        lost.assert_problem(409, "not_refundable");
        assert_eq!(lost.fields(), ["amount_minor"], "{}", lost.json);
        // One refund sent to every node with one key: executed once, replayed by the others.
        let same = race(
            nodes
                .iter()
                .map(|n| {
                    post(
                        n,
                        &path,
                        Some(&format!("same-{round}")),
                        &json!({"amount_minor": 100}),
                    )
                })
                .collect(),
        )
        .await;
        for a in &same {
            assert_eq!(a.status, 200, "{}", a.json);
            assert_eq!(
                a.bytes, same[0].bytes,
                "every node answers the stored reply"
            );
        }
        assert_eq!(
            same.iter()
                .filter(|a| a.header("idempotent-replayed") == Some("false"))
                .count(),
            1,
            "one execution"
        );
        let settled = refunds_settle(&nodes[(round + 2) % 3], &id).await;
        assert_eq!(
            settled["refunds"].as_array().map(Vec::len),
            Some(2),
            "{settled}"
        );
        assert_eq!(settled["refunded_minor"], each + 100, "{settled}");
        let at_provider = provider_refunds(&stripe, &id);
        assert_eq!(at_provider.len(), 2, "{at_provider:?}");
        let sum: i64 = at_provider
            .iter()
            .filter_map(|r| r["amount"].as_i64())
            .sum();
        assert_eq!(sum, each + 100);
        assert!(sum <= amount);
        books_agree(&nodes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_provider_event_delivered_to_three_nodes_at_once_is_processed_once() {
    crate::backend::postgres_only!("several nodes share one PostgreSQL database");
    let stripe = FakeStripe::start().await;
    let nodes = three_nodes(&stripe_config(&stripe, "")).await;
    let endpoint = stripe_endpoint(&nodes[0]).await;
    for (round, invoice) in invoices(&nodes[0], ROUNDS as i64).await.iter().enumerate() {
        // The customer must confirm: only the provider's event can settle the attempt.
        let id = id_of(&pay(&nodes[round % 3], invoice, "pm_3ds").await);
        settle(&nodes[0], &id, "requires_action").await;
        let index = {
            let s = stripe.state.lock().expect("lock");
            s.intents
                .iter()
                .position(|i| i["metadata"]["tally_payment"] == id.as_str())
                .expect("the intent")
        };
        let intent = stripe.complete(index);
        let event = format!("evt_race_{round}");
        let answers = race(
            nodes
                .iter()
                .map(|n| {
                    stripe_hook_request(n, &endpoint, &event, "payment_intent.succeeded", &intent)
                })
                .collect(),
        )
        .await;
        for a in &answers {
            assert!((200..300).contains(&a.status), "{}: {}", a.status, a.json);
            assert_eq!(a.json["id"], answers[0].json["id"], "one receipt");
        }
        assert_eq!(
            answers
                .iter()
                .filter(|a| a.json["duplicate"] == false)
                .count(),
            1,
            "one first receipt"
        );
        let receipt = id_of(&answers[0].json);
        let reader = &nodes[(round + 1) % 3];
        reader
            .eventually("the event is processed", || async {
                reader
                    .get(&format!("/v1/webhook-events/{receipt}"))
                    .await
                    .json["status"]
                    == "processed"
            })
            .await;
        let processed = reader
            .get(&format!("/v1/webhook-events/{receipt}"))
            .await
            .json;
        assert_eq!(
            processed["attempts"].as_array().map(Vec::len),
            Some(1),
            "{processed}"
        );
        settle(reader, &id, "succeeded").await;
        assert_eq!(
            reader.get(&format!("/v1/invoices/{invoice}")).await.json["status"],
            "paid"
        );
        assert_eq!(collections(reader, &id).await, 1, "one set of postings");
        books_agree(&nodes).await;
    }
    let receipts = list(&nodes[2].get("/v1/webhook-events?limit=100").await.json);
    assert_eq!(receipts.len(), ROUNDS, "{receipts:?}");
    let succeeded = list(
        &nodes[2]
            .get("/v1/notifications?type=payment.succeeded&limit=100")
            .await
            .json,
    );
    assert_eq!(succeeded.len(), ROUNDS, "one state change per payment");
    assert_eq!(stripe.charges(), ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_sent_to_three_nodes_crosses_an_alert_threshold_once() {
    crate::backend::postgres_only!("several nodes share one PostgreSQL database");
    let nodes = three_nodes("").await;
    let meter = nodes[0]
        .post(
            "/v1/meters",
            Some("meter-tokens"),
            &json!({"key": "tokens", "event_type": "llm", "aggregation": "sum", "value_property": "tokens"}),
        )
        .await;
    assert_eq!(meter.status, 201, "{}", meter.json);
    for round in 0..ROUNDS {
        let name = format!("busy-{round}");
        let customer = nodes[0].customer(&name, "USD").await;
        let alert = nodes[round % 3]
            .post(
                "/v1/alerts",
                Some(&format!("alert-{round}")),
                &json!({"customer": customer, "type": "usage_exceeded", "meter": "tokens",
                    "thresholds": ["100", "1000"]}),
            )
            .await;
        assert_eq!(alert.status, 201, "{}", alert.json);
        let alert = id_of(&alert.json);
        // Four events of 10 on each node: 120, over the first threshold only.
        let mut requests = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            for k in 0..4 {
                requests.push(post(
                    node,
                    "/v1/events",
                    None,
                    &json!({"id": format!("e-{round}-{n}-{k}"), "customer": name, "type": "llm",
                        "timestamp": at(0), "properties": {"tokens": 10}}),
                ));
            }
        }
        for a in race(requests).await {
            assert_eq!(a.status, 200, "{}", a.json);
            assert_eq!(a.json["results"][0]["status"], "accepted", "{}", a.json);
        }
        for node in &nodes {
            let usage = node
                .get(&format!(
                    "/v1/usage?customer={name}&meter=tokens&from={}",
                    at(-3600)
                ))
                .await;
            assert_eq!(usage.json["total"], "120", "{}", usage.json);
        }
        let fired = list(
            &nodes[(round + 1) % 3]
                .get(&format!("/v1/alerts/{alert}/firings?limit=100"))
                .await
                .json,
        );
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0]["threshold"], "100");
        let value: i64 = fired[0]["value"]
            .as_str()
            .expect("value")
            .parse()
            .expect("int");
        assert!((100..=120).contains(&value), "{value}");
        let triggered: Vec<Value> = list(
            &nodes[0]
                .get("/v1/notifications?type=alert.triggered&limit=100")
                .await
                .json,
        )
        .into_iter()
        .filter(|n| n["data"]["object"]["alert"] == alert.as_str())
        .collect();
        assert_eq!(triggered.len(), 1, "{triggered:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wallet_drained_from_two_nodes_at_once_recharges_and_alerts_once() {
    crate::backend::postgres_only!("several nodes share one PostgreSQL database");
    let nodes = three_nodes("").await;
    for round in 0..ROUNDS {
        let cus = nodes[0].customer(&format!("wallet-{round}"), "USD").await;
        let mut grants = Vec::new();
        for (g, node) in nodes.iter().take(2).enumerate() {
            let r = node
                .post(
                    "/v1/credit-grants",
                    Some(&format!("g-{round}-{g}")),
                    &json!({"customer": cus, "amount_minor": 600, "currency": "USD",
                        "category": "promotional"}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.json);
            grants.push(id_of(&r.json));
        }
        let rule = format!("/v1/customers/{cus}/auto-recharge");
        let set = nodes[2]
            .post(
                &rule,
                Some(&format!("rule-{round}")),
                &json!({"below_minor": 1000, "amount_minor": 2000, "max_per_day": 5}),
            )
            .await;
        assert_eq!(set.status, 200, "{}", set.json);
        assert_eq!(set.json["state"], "armed", "1200 of credit is above 1000");
        let alert = nodes[1]
            .post(
                "/v1/alerts",
                Some(&format!("low-{round}")),
                &json!({"customer": cus, "type": "credit_balance_below", "thresholds": [1000]}),
            )
            .await;
        assert_eq!(alert.status, 201, "{}", alert.json);
        let alert = id_of(&alert.json);
        // Each void alone crosses the threshold.
        let voids = race(
            grants
                .iter()
                .enumerate()
                .map(|(g, grant)| {
                    post(
                        &nodes[(round + g) % 3],
                        &format!("/v1/credit-grants/{grant}/void"),
                        Some(&format!("v-{round}-{g}")),
                        &json!({}),
                    )
                })
                .collect(),
        )
        .await;
        for v in &voids {
            assert_eq!(v.status, 200, "{}", v.json);
        }
        let reader = &nodes[(round + 2) % 3];
        let auto = || async {
            list(
                &reader
                    .get(&format!("/v1/customers/{cus}/top-ups?limit=100"))
                    .await
                    .json,
            )
            .into_iter()
            .filter(|t| t["trigger"] == "auto_recharge")
            .collect::<Vec<Value>>()
        };
        reader
            .eventually("the recharge settles and the rule re-arms", || async {
                let fired = auto().await;
                !fired.is_empty()
                    && fired.iter().all(|t| t["status"] == "succeeded")
                    && reader.get(&rule).await.json["state"] == "armed"
            })
            .await;
        // The wallet went below 1000 once (the recharge brought it back to 2000).
        let low = list(
            &reader
                .get(&format!("/v1/alerts/{alert}/firings?limit=100"))
                .await
                .json,
        );
        assert_eq!(low.len(), 1, "one crossing, one firing: {low:?}");
        let fired = auto().await;
        assert_eq!(fired.len(), 1, "one crossing, one top-up: {fired:?}");
        let state = reader.get(&rule).await.json;
        assert_eq!(state["started_today"], 1, "{state}");
        let balance = reader.get(&format!("/v1/customers/{cus}/balance")).await;
        let left: i64 = balance.json["balances"]
            .as_array()
            .expect("balances")
            .iter()
            .flat_map(|c| c["grants"].as_array().cloned().unwrap_or_default())
            .filter_map(|g| g["remaining_minor"].as_i64())
            .sum();
        assert_eq!(left, 2000, "{}", balance.json);
        books_agree(&nodes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_credit_note_and_a_refund_from_two_nodes_never_give_back_more_than_was_paid() {
    crate::backend::postgres_only!("several nodes share one PostgreSQL database");
    let stripe = FakeStripe::start().await;
    let nodes = three_nodes(&stripe_config(&stripe, "")).await;
    let open = invoices(&nodes[0], ROUNDS as i64).await;
    // (amount of each, whether the credit note refunds): two that cannot both fit, two that
    // fit exactly.
    let cases = [(600, false), (600, true), (500, false), (500, true)];
    for (round, (invoice, (amount, refund_note))) in open.iter().zip(cases).enumerate() {
        let id = paid(&nodes[round % 3], invoice).await;
        let total = payment(&nodes[0], &id).await["amount_minor"]
            .as_i64()
            .expect("amount");
        let answers = race(vec![
            post(
                &nodes[round % 3],
                &format!("/v1/invoices/{invoice}/credit-notes"),
                Some(&format!("cn-{round}")),
                &json!({"amount_minor": amount, "refund": refund_note}),
            ),
            post(
                &nodes[(round + 1) % 3],
                &format!("/v1/payments/{id}/refund"),
                Some(&format!("rf-{round}")),
                &json!({"amount_minor": amount}),
            ),
        ])
        .await;
        let (note, refund) = (&answers[0], &answers[1]);
        if 2 * amount <= total {
            assert_eq!(note.status, 201, "both fit: {}", note.json);
            assert_eq!(refund.status, 200, "both fit: {}", refund.json);
        } else {
            assert!(
                (note.status == 201) != (refund.status == 200),
                "exactly one fits: {} / {}",
                note.json,
                refund.json
            );
            if note.status != 201 {
                note.assert_problem(422, "credit_exceeds_remaining");
            }
            if refund.status != 200 {
                refund.assert_problem(409, "not_refundable");
            }
        }
        let noted = if note.status == 201 { amount } else { 0 };
        let direct = if refund.status == 200 { amount } else { 0 };
        let reader = &nodes[(round + 2) % 3];
        let settled = refunds_settle(reader, &id).await;
        let inv = reader.get(&format!("/v1/invoices/{invoice}")).await.json;
        assert_eq!(inv["credited_minor"], noted, "{inv}");
        let refunded = direct + if refund_note { noted } else { 0 };
        assert_eq!(settled["refunded_minor"], refunded, "{settled}");
        assert!(noted + direct <= total, "{noted} + {direct} of {total}");
        let at_provider: i64 = provider_refunds(&stripe, &id)
            .iter()
            .filter_map(|r| r["amount"].as_i64())
            .sum();
        assert_eq!(at_provider, refunded);
        let verify = reader.get(&format!("/v1/invoices/{invoice}/verify")).await;
        assert_eq!(verify.json["matches"], true, "{}", verify.json);
        books_agree(&nodes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_meter_created_as_its_types_first_event_arrives_on_another_node_counts_it_once() {
    crate::backend::postgres_only!("several nodes share one PostgreSQL database");
    let nodes = three_nodes("").await;
    nodes[0].customer("acme", "USD").await;
    for round in 0..ROUNDS {
        // A type never sent: the meter is complete at once unless the event commits first,
        // and then its backfill counts it. Either way, once.
        let event_type = format!("search-{round}");
        let key = format!("searches_{round}");
        let answers = race(vec![
            post(
                &nodes[round % 3],
                "/v1/meters",
                Some(&format!("m-{round}")),
                &json!({"key": key, "event_type": event_type, "aggregation": "count"}),
            ),
            post(
                &nodes[(round + 1) % 3],
                "/v1/events",
                None,
                &json!({"id": format!("first-{round}"), "customer": "acme", "type": event_type,
                    "timestamp": at(-60)}),
            ),
        ])
        .await;
        assert_eq!(answers[0].status, 201, "{}", answers[0].json);
        assert_eq!(answers[1].status, 200, "{}", answers[1].json);
        let id = id_of(&answers[0].json);
        let node = &nodes[(round + 2) % 3];
        node.eventually("the backfill to complete", || async {
            node.get(&format!("/v1/meters/{id}")).await.json["backfill_status"] == "complete"
        })
        .await;
        let usage = node
            .get(&format!(
                "/v1/usage?customer=acme&meter={key}&from={}",
                at(-3600)
            ))
            .await;
        assert_eq!(usage.json["total"], "1", "round {round}: {}", usage.json);
    }
}
