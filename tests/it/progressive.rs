//! Progressive billing and the projected balance over HTTP.

use serde_json::json;

use crate::harness::{at, Daemon};

#[tokio::test]
async fn a_threshold_that_is_not_a_positive_integer_within_range_is_refused_naming_the_field() {
    let d = Daemon::start().await;
    for (i, bad) in [
        json!(0),
        json!(-5),
        json!(1_000_000_000_001i64),
        json!("100"),
    ]
    .iter()
    .enumerate()
    {
        let r = d
            .post(
                "/v1/plans",
                Some(&format!("bad-{i}")),
                &json!({"code": format!("p{i}"), "name": "P", "currency": "USD",
                        "interval": "month", "threshold_minor": bad}),
            )
            .await;
        // Like every other plan field: 400 with the field named (nothing written).
        assert_eq!(r.status, 400, "{bad}: {}", r.json);
        assert!(
            r.fields().iter().any(|f| f == "threshold_minor")
                || r.json["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("threshold_minor")),
            "{bad}: {}",
            r.json
        );
    }
    let plans = d.get("/v1/plans").await;
    assert_eq!(
        plans.json["data"].as_array().map(Vec::len),
        Some(0),
        "nothing written"
    );
    let ok = d
        .post(
            "/v1/plans",
            Some("good"),
            &json!({"code": "good", "name": "P", "currency": "USD", "interval": "month",
                    "threshold_minor": 50_000}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.json);
    assert_eq!(ok.json["threshold_minor"], 50_000);
}

/// Credits available minus what the upcoming invoices would bill, from the API's own answers.
async fn expected_projection(d: &Daemon, customer: &str) -> (i64, i64) {
    let balance = d.get(&format!("/v1/customers/{customer}/balance")).await;
    assert_eq!(balance.status, 200, "{}", balance.json);
    let usd = &balance.json["balances"][0];
    let upcoming = d
        .get(&format!("/v1/customers/{customer}/upcoming-invoice"))
        .await;
    let due: i64 = upcoming.json["invoices"]
        .as_array()
        .expect("invoices")
        .iter()
        .map(|i| i["total_minor"].as_i64().expect("total"))
        .sum();
    let projected = usd["projected_available_minor"]
        .as_i64()
        .expect("projected");
    (
        projected,
        usd["credits_available_minor"].as_i64().expect("credits") - due,
    )
}

#[tokio::test]
async fn the_balance_projects_the_credits_left_after_the_upcoming_invoice() {
    let d = Daemon::start().await;
    let c = d.customer("acme", "USD").await;
    let m = d
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "tokens", "event_type": "call", "aggregation": "sum", "value_property": "n"}),
        )
        .await;
    assert_eq!(m.status, 201, "{}", m.json);
    let p = d
        .post(
            "/v1/plans",
            Some("p"),
            &json!({"code": "daily", "name": "Daily", "currency": "USD", "interval": "day",
                    "fixed_fee": {"amount_minor": 300, "timing": "in_arrears"},
                    "charges": [{"meter": "tokens", "model": "graduated", "tiers": [
                        {"up_to": "100", "unit_price": "0.013"}, {"unit_price": "0.0071"}]}]}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    let today = &at(0)[..10];
    let s = d
        .post(
            "/v1/subscriptions",
            Some("s"),
            &json!({"customer": "acme", "plan": "daily", "start_at": format!("{today}T00:00:00Z")}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    let g = d
        .post(
            "/v1/credit-grants",
            Some("g"),
            &json!({"customer": c, "amount_minor": 2500, "currency": "USD", "category": "paid"}),
        )
        .await;
    assert_eq!(g.status, 201, "{}", g.json);
    let (projected, expected) = expected_projection(&d, &c).await;
    assert_eq!((projected, expected), (2500 - 300, 2500 - 300));
    // Random-looking usage: the projection follows the upcoming invoice after every batch,
    // below and past the credits.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..6 {
        let events: Vec<serde_json::Value> = (0..5)
            .map(|i| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                json!({"id": format!("e{round}-{i}"), "customer": "acme", "type": "call",
                       "timestamp": at(-1), "properties": {"n": (seed >> 33) % 400}})
            })
            .collect();
        let r = d
            .post("/v1/events", None, &json!({ "events": events }))
            .await;
        assert!(r.status < 300, "{}", r.json);
        let (projected, expected) = expected_projection(&d, &c).await;
        assert_eq!(projected, expected, "round {round}");
    }
    let (projected, _) = expected_projection(&d, &c).await;
    assert!(projected < 2500 - 300, "usage lowered the projection");
    // A balance at a past instant has no projection.
    let past = d
        .get(&format!(
            "/v1/customers/{c}/balance?at={}",
            at(-10).replace('+', "%2B")
        ))
        .await;
    assert_eq!(past.status, 200, "{}", past.json);
    assert!(past.json["balances"][0]["projected_available_minor"].is_null());
}

/// An instant `secs` from now as epoch milliseconds.
fn ms_from_now(secs: i64) -> i64 {
    tally::clock::parse_rfc3339(&at(secs)).expect("instant")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_pushed_over_the_threshold_by_32_clients_issues_one_interim_invoice_and_the_run_bills_the_rest(
) {
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
                    "threshold_minor": 3000,
                    "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "1.00"}]}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    // The running period ends 25 s from now.
    let period_end_ms = ms_from_now(25);
    let start = tally::clock::rfc3339(period_end_ms - 86_400_000);
    let s = d
        .post(
            "/v1/subscriptions",
            Some("s"),
            &json!({"customer": "acme", "plan": "daily", "start_at": start}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    // 32 clients at once, one call each: the 30th call crosses 30.00; the two after it stay
    // below a second crossing.
    let mut tasks = Vec::new();
    for i in 0..32 {
        let client = d.client.clone();
        let url = d.url("/v1/events");
        let key = d.key.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"id": format!("c{i}"), "customer": "acme", "type": "call"}))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }));
    }
    for t in tasks {
        assert!(t.await.expect("task") < 300);
    }
    let list = d.get("/v1/invoices").await.json["data"]
        .as_array()
        .expect("data")
        .clone();
    let interims: Vec<&serde_json::Value> =
        list.iter().filter(|i| i["kind"] == "interim").collect();
    assert_eq!(interims.len(), 1, "one interim invoice: {list:?}");
    let interim = interims[0];
    let billed: i64 = interim["lines"][0]["quantity"]
        .as_str()
        .and_then(|q| q.parse().ok())
        .expect("quantity");
    assert!((30..=32).contains(&billed), "{interim}");
    assert_eq!(interim["subtotal_minor"], billed * 100);
    assert!(interim["number"].as_str().is_some_and(|n| !n.is_empty()));
    // Three more calls, then the period ends and a run closes it: it bills the rest.
    for i in 0..3 {
        d.post(
            "/v1/events",
            None,
            &json!({"id": format!("late{i}"), "customer": "acme", "type": "call"}),
        )
        .await;
    }
    let wait_ms = period_end_ms + 1_000 - ms_from_now(0);
    if wait_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(wait_ms as u64)).await;
    }
    let run = d.post("/v1/billing-runs", Some("r"), &json!({})).await;
    assert_eq!(run.status, 201, "{}", run.json);
    let list = d.get("/v1/invoices").await.json["data"]
        .as_array()
        .expect("data")
        .clone();
    let closing = list
        .iter()
        .find(|i| i["kind"] == "period")
        .expect("the period's invoice");
    let rest: i64 = closing["lines"][0]["quantity"]
        .as_str()
        .and_then(|q| q.parse().ok())
        .expect("quantity");
    assert_eq!(billed + rest, 35, "every call billed once: {closing}");
    assert_eq!(closing["subtotal_minor"], rest * 100);
    for inv in &list {
        let v = d
            .get(&format!(
                "/v1/invoices/{}/verify",
                inv["id"].as_str().expect("id")
            ))
            .await;
        assert_eq!(v.json["matches"], true, "{}", v.json);
    }
    // The interim invoice is deducted by the period's: voiding it is refused.
    let void = d
        .post(
            &format!("/v1/invoices/{}/void", interim["id"].as_str().expect("id")),
            Some("v"),
            &json!({}),
        )
        .await;
    assert_eq!(void.status, 409, "{}", void.json);
}
