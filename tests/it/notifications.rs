//! The outbox: every business transition records one notification in the write that makes it,
//! never two for one effect, each showing its object as the effect left it.

use serde_json::{json, Value};

use crate::harness::{at, Daemon};
use crate::payments::{invoices, pay, settle};

async fn of_type(d: &Daemon, event_type: &str) -> Vec<Value> {
    let page = d
        .get(&format!("/v1/notifications?type={event_type}&limit=500"))
        .await;
    assert_eq!(page.status, 200, "{}", page.json);
    page.json["data"].as_array().cloned().unwrap_or_default()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn each_transition_records_one_notification_with_its_object_as_it_was() {
    let d = Daemon::start().await;
    let customer = d.customer("payer", "USD").await;
    // Replaying the create records nothing more.
    let replay = d
        .post(
            "/v1/customers",
            Some("cus-payer"),
            &json!({"external_id": "payer", "currency": "USD"}),
        )
        .await;
    let created = of_type(&d, "customer.created").await;
    assert_eq!(created.len(), 1, "{created:?} {}", replay.json);
    let shown = d.get(&format!("/v1/customers/{customer}")).await.json;
    assert_eq!(
        created[0]["data"]["object"], shown,
        "data.object reads like a GET"
    );
    assert_eq!(created[0]["object"], "event");
    let inv = invoices(&d, 2).await;
    assert_eq!(of_type(&d, "subscription.created").await.len(), 1);
    assert_eq!(of_type(&d, "invoice.finalized").await.len(), 2);
    // Running billing again issues nothing and records nothing.
    let again = d
        .post("/v1/billing-runs", Some("run-again"), &json!({}))
        .await;
    assert_eq!(again.status, 201, "{}", again.json);
    assert_eq!(of_type(&d, "invoice.finalized").await.len(), 2);
    // A decline, then a success; a refund; a void.
    let declined = id_of(&pay(&d, &inv[0], "sim_decline").await);
    settle(&d, &declined, "failed").await;
    assert_eq!(of_type(&d, "payment.failed").await.len(), 1);
    let failed = of_type(&d, "invoice.payment_failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["data"]["object"]["id"], inv[0].as_str());
    let paid = id_of(&pay(&d, &inv[1], "sim_ok").await);
    settle(&d, &paid, "succeeded").await;
    assert_eq!(of_type(&d, "payment.succeeded").await.len(), 1);
    let invoice_paid = of_type(&d, "invoice.paid").await;
    assert_eq!(invoice_paid.len(), 1);
    assert_eq!(invoice_paid[0]["data"]["object"]["status"], "paid");
    let refund = d
        .post(
            &format!("/v1/payments/{paid}/refund"),
            Some("refund-1"),
            &json!({"amount_minor": 100}),
        )
        .await;
    assert_eq!(refund.status, 200, "{}", refund.json);
    d.eventually("refund recorded", || async {
        of_type(&d, "payment.refunded").await.len() == 1
    })
    .await;
    let voided = d
        .post(
            &format!("/v1/invoices/{}/void", inv[0]),
            Some("void-0"),
            &json!({}),
        )
        .await;
    assert_eq!(voided.status, 200, "{}", voided.json);
    let voids = of_type(&d, "invoice.voided").await;
    assert_eq!(voids.len(), 1);
    assert_eq!(voids[0]["data"]["object"]["status"], "void");
    // Credits and a reconciliation.
    let grant = d
        .post(
            "/v1/credit-grants",
            Some("grant-1"),
            &json!({"customer": "payer", "amount_minor": 500, "currency": "USD", "category": "promotional"}),
        )
        .await;
    assert_eq!(grant.status, 201, "{}", grant.json);
    let grants = of_type(&d, "credit_grant.created").await;
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0]["data"]["object"]["remaining_minor"], 500);
    let rec = d
        .post(
            "/v1/reconciliations",
            Some("rec-1"),
            &json!({"from": at(-3600)}),
        )
        .await;
    assert_eq!(rec.status, 201, "{}", rec.json);
    d.eventually("reconciliation recorded", || async {
        of_type(&d, "reconciliation.completed").await.len() == 1
    })
    .await;
    // One sequence, increasing in commit order, no gaps.
    let all = d.get("/v1/notifications?limit=500").await.json["data"]
        .as_array()
        .cloned()
        .expect("data");
    let sequences: Vec<u64> = all.iter().filter_map(|n| n["sequence"].as_u64()).collect();
    let mut sorted = sequences.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=sequences.len() as u64).collect::<Vec<_>>());
    // One notification reads back by id, and a customer filter narrows the list.
    let one = d
        .get(&format!("/v1/notifications/{}", id_of(&all[0])))
        .await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json["id"], all[0]["id"]);
    let mine = d
        .get(&format!("/v1/notifications?customer={customer}&limit=500"))
        .await
        .json["data"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        mine,
        all.len() - 1,
        "all but the reconciliation are the customer's"
    );
}

#[tokio::test]
async fn bad_filters_are_refused_and_another_tenants_notification_is_not_found() {
    let d = Daemon::start().await;
    d.get("/v1/notifications?type=invoice.created")
        .await
        .assert_problem(400, "validation_failed");
    d.get("/v1/notifications?customer=nobody")
        .await
        .assert_problem(400, "validation_failed");
    d.get("/v1/notifications?from=yesterday")
        .await
        .assert_problem(400, "validation_failed");
    d.get("/v1/notifications/ntf_00000000000000000000000000")
        .await
        .assert_problem(404, "resource_missing");
}
