//! The console end to end, as an operator uses it: sign in, find a customer, open its invoice,
//! verify it, pay it, replay a dead letter, resend a notification, revoke a key, sign out —
//! each effect checked through the API — and the pages at a phone's width.

use serde_json::json;

use crate::browser::Browser;
use crate::console::new_key;
use crate::console_operations::{dead_receipt, destination, endpoint, receiver, CONFIG};
use crate::harness::Daemon;

async fn billed_customer(d: &Daemon) -> (String, String) {
    let c = d
        .post(
            "/v1/customers",
            Some("c-acme"),
            &json!({"external_id": "acme", "name": "Acme Rockets", "email": "ops@acme.example",
                    "currency": "EUR"}),
        )
        .await;
    assert_eq!(c.status, 201, "{}", c.json);
    let p = d
        .post(
            "/v1/plans",
            Some("p"),
            &json!({"code": "team", "name": "Team", "currency": "EUR", "interval": "month",
                    "fixed_fee": {"amount_minor": 4900, "timing": "in_advance"}}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    let s = d
        .post(
            "/v1/subscriptions",
            Some("s"),
            &json!({"customer": "acme", "plan": "team"}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    let run = d.post("/v1/billing-runs", Some("r"), &json!({})).await;
    assert_eq!(run.status, 201, "{}", run.json);
    let customer = c.json["id"].as_str().expect("id").to_string();
    let invoice = d
        .get(&format!("/v1/invoices?customer={customer}"))
        .await
        .json["data"][0]["id"]
        .as_str()
        .expect("an invoice")
        .to_string();
    (customer, invoice)
}

#[tokio::test]
async fn an_operator_works_through_the_console_from_sign_in_to_sign_out() {
    let d = Daemon::start_with(CONFIG).await;
    let (url, hits) = receiver().await;
    destination(&d, "dest", &url).await;
    let (customer, invoice) = billed_customer(&d).await;
    let ep = endpoint(&d).await;
    dead_receipt(&d, &ep, "msg-walk", "nobody").await;
    let (key_id, key_secret) = new_key(&d, &["--label", "temporary"]);
    let notification = d.get("/v1/notifications?type=customer.created").await.json["data"][0]["id"]
        .as_str()
        .expect("customer.created recorded")
        .to_string();
    d.eventually("the first delivery", || async {
        hits.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;

    let Some(b) = Browser::open(&d.base).await else {
        return;
    };
    b.sign_in(&d.key).await;
    assert_eq!(b.path().await, "/console");

    // Find the customer by name, open it, and open its invoice.
    b.click_link("Customers").await;
    b.fill("#search", "rockets").await;
    b.click_button("Search").await;
    b.click_link("acme").await;
    assert_eq!(b.path().await, format!("/console/customers/{customer}"));
    assert!(b.body().await.contains("Acme Rockets"));
    b.click_link(&invoice).await;
    assert!(b
        .path()
        .await
        .starts_with(&format!("/console/invoices/{invoice}")));

    // Verify it, then pay it.
    b.click_button("Verify").await;
    assert!(b.body().await.contains("passed"), "{}", b.body().await);
    b.click_button("Pay").await;
    d.eventually("the invoice paid", || async {
        d.get(&format!("/v1/invoices/{invoice}")).await.json["status"] == "paid"
    })
    .await;
    b.goto(&format!("/console/invoices/{invoice}")).await;
    assert!(b.text("main").await.contains("paid"));
    b.screenshot("walkthrough-invoice").await;

    // Replay the dead letter. Requeued, it leaves the dead letters until its job runs again
    // and dies again (the customer still does not exist), then it is back, replayed once.
    b.click_link("Dead letters").await;
    b.click_button("Replay").await;
    d.eventually("the replayed letter dead again, replayed once", || async {
        d.get("/v1/dead-letters").await.json["data"][0]["replays"] == 1
    })
    .await;

    // Resend the notification.
    b.goto(&format!("/console/notifications/{notification}"))
        .await;
    b.click_button("Resend to every destination").await;
    d.eventually("the resent delivery", || async {
        hits.load(std::sync::atomic::Ordering::SeqCst) >= 2
    })
    .await;

    // Revoke a key, after confirming.
    b.click_link("API keys").await;
    let row = format!("//tr[contains(., '{key_id}')]//button[normalize-space(.)='Revoke']");
    b.click_xpath(&row).await;
    b.click_button("Yes, do it").await;
    assert_eq!(d.get_as(&key_secret, "/v1/customers").await.status, 401);

    // A phone's width: nothing wider than the screen but the tables' own scrolling.
    b.client
        .set_window_size(390, 844)
        .await
        .expect("phone size");
    for path in [
        "/console".to_string(),
        format!("/console/customers/{customer}"),
        format!("/console/invoices/{invoice}"),
    ] {
        b.goto(&path).await;
        let overflow = b
            .client
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            )
            .await
            .expect("width");
        assert!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "{path} overflows by {overflow}"
        );
    }
    b.screenshot("phone-invoice").await;
    b.client
        .set_window_size(1280, 900)
        .await
        .expect("desktop size");

    // Keyboard: the first Tab reaches the skip link.
    b.goto("/console").await;
    b.client
        .find(fantoccini::Locator::Css("body"))
        .await
        .expect("body")
        .send_keys("\u{E004}")
        .await
        .expect("tab");
    let focused = b.client.active_element().await.expect("focus");
    assert_eq!(focused.text().await.expect("text"), "Skip to content");

    b.click_button("Sign out").await;
    assert_eq!(b.path().await, "/console/sign-in");
    b.goto("/console/customers").await;
    assert!(b.path().await.starts_with("/console/sign-in"));
    b.close().await;
}
