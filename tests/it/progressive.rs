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
