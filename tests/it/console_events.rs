//! The events explorer in a real browser: filters, a late event with the invoice that billed
//! it, duplicates and conflicts beside their original.

use serde_json::json;

use crate::browser::Browser;
use crate::harness::{at, Daemon};

async fn ingest(d: &Daemon, id: &str, timestamp: &str, n: i64) -> serde_json::Value {
    let r = d
        .post(
            "/v1/events",
            None,
            &json!({"id": id, "customer": "acme", "type": "call", "timestamp": timestamp,
                    "properties": {"n": n}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["results"][0].clone()
}

#[tokio::test]
async fn the_explorer_shows_late_events_with_their_invoice_and_duplicates_with_their_original() {
    let d = Daemon::start().await;
    d.customer("acme", "USD").await;
    let m = d
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "calls", "event_type": "call", "aggregation": "count"}),
        )
        .await;
    assert_eq!(m.status, 201, "{}", m.json);
    let p = d
        .post(
            "/v1/plans",
            Some("p"),
            &json!({"code": "daily", "name": "Daily", "currency": "USD", "interval": "day",
                    "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "0.10"}]}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    let today = &at(0)[..10];
    let start = tally::clock::parse_rfc3339(&format!("{today}T00:00:00Z")).expect("t");
    let s = d
        .post(
            "/v1/subscriptions",
            Some("s"),
            &json!({"customer": "acme", "plan": "daily",
                    "start_at": tally::clock::rfc3339(start - 2 * 86_400_000)}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    let sub = s.json["id"].as_str().expect("id").to_string();
    let yesterday = at(-86_400);
    ingest(&d, "on-time", &yesterday, 1).await;
    let r = d.post("/v1/billing-runs", Some("r1"), &json!({})).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let late = ingest(&d, "late-one", &yesterday, 2).await;
    assert_eq!(late["late"], true, "{late}");
    let late_id = late["id"].as_str().expect("id").to_string();
    assert_eq!(
        ingest(&d, "late-one", &yesterday, 2).await["status"],
        "duplicate"
    );
    assert_eq!(
        ingest(&d, "late-one", &yesterday, 99).await["status"],
        "conflict"
    );
    let c = d
        .post(
            &format!("/v1/subscriptions/{sub}/cancel"),
            Some("cancel"),
            &json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(c.status, 200, "{}", c.json);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let r = d.post("/v1/billing-runs", Some("r2"), &json!({})).await;
    assert_eq!(r.status, 201, "{}", r.json);
    let absorbed = d.get(&format!("/v1/events/{late_id}")).await.json["absorbed_by"].clone();
    let invoice = absorbed.as_str().expect("billed").to_string();

    let Some(b) = Browser::open(&d.base).await else {
        return;
    };
    b.sign_in(&d.key).await;
    b.goto("/console/events?customer=acme").await;
    let table = b.text("table").await;
    assert!(
        table.contains(&late_id) && table.contains("late"),
        "{table}"
    );
    b.screenshot("events").await;
    b.goto("/console/events?customer=acme&late=true").await;
    let rows = b
        .client
        .find_all(fantoccini::Locator::Css("tbody tr"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1, "only the late event");
    b.click_link(&late_id).await;
    let page = b.body().await;
    assert!(page.contains(&format!("billed on {invoice}")), "{page}");
    assert!(
        page.contains("duplicate") && page.contains("conflict"),
        "{page}"
    );
    b.click_link(&invoice).await;
    assert!(b
        .path()
        .await
        .starts_with(&format!("/console/invoices/{invoice}")));
    b.goto("/console/events/anomalies?kind=conflict").await;
    let table = b.text("table").await;
    assert!(
        table.contains("conflict") && table.contains("99"),
        "{table}"
    );
    assert!(
        !table.contains("duplicate"),
        "filtered to conflicts: {table}"
    );
    b.close().await;
}
