//! Alerts end to end: concurrent ingest crosses a threshold once, a firing survives kill -9
//! with its notification delivered, balance alerts re-arm, usage alerts re-arm in the next
//! period, and bad input is refused naming the field with nothing written.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::harness::{at, Daemon};

const OPEN: &str = "[notifications]\nallow_http = true\nallow_private_targets = true\nretry_schedule_secs = [0, 1, 1, 1, 1]\n";

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

async fn meter(d: &Daemon) -> String {
    let r = d
        .post(
            "/v1/meters",
            Some("meter-tokens"),
            &json!({"key": "tokens", "event_type": "llm", "aggregation": "sum", "value_property": "tokens"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    id_of(&r.json)
}

async fn create_alert(d: &Daemon, key: &str, body: Value) -> String {
    let r = d.post("/v1/alerts", Some(key), &body).await;
    assert_eq!(r.status, 201, "{}", r.json);
    id_of(&r.json)
}

async fn firings(d: &Daemon, alert: &str) -> Vec<Value> {
    let r = d
        .get(&format!("/v1/alerts/{alert}/firings?limit=500"))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["data"].as_array().cloned().unwrap_or_default()
}

async fn notifications(d: &Daemon, event_type: &str) -> Vec<Value> {
    let r = d
        .get(&format!("/v1/notifications?type={event_type}&limit=500"))
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["data"].as_array().cloned().unwrap_or_default()
}

async fn usage(d: &Daemon, customer: &str, id: &str, tokens: i64) {
    usage_at(d, customer, id, tokens, &at(0), "accepted").await;
}

async fn usage_at(d: &Daemon, customer: &str, id: &str, tokens: i64, ts: &str, status: &str) {
    let r = d
        .post(
            "/v1/events",
            None,
            &json!({"id": id, "customer": customer, "type": "llm", "timestamp": ts, "properties": {"tokens": tokens}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["results"][0]["status"], status, "{}", r.json);
}

#[tokio::test]
async fn thirty_two_concurrent_clients_crossing_a_threshold_fire_it_once() {
    let d = Arc::new(Daemon::start().await);
    let customer = d.customer("busy", "USD").await;
    meter(&d).await;
    let alert = create_alert(
        &d,
        "alert-busy",
        json!({"customer": customer, "type": "usage_exceeded", "meter": "tokens", "thresholds": ["1000", "5000"], "name": "quota"}),
    )
    .await;
    let mut tasks = Vec::new();
    for client in 0..32 {
        let d = Arc::clone(&d);
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                usage(&d, "busy", &format!("c{client}-{i}"), 10).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    // 32 × 5 × 10 = 1600: the first threshold only, once.
    let fired = firings(&d, &alert).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["threshold"], "1000");
    assert_eq!(fired[0]["threshold_index"], 0);
    assert_eq!(fired[0]["customer"], customer.as_str());
    let value: i64 = fired[0]["value"]
        .as_str()
        .expect("value")
        .parse()
        .expect("int");
    assert!((1000..=1600).contains(&value), "{value}");
    let triggered = notifications(&d, "alert.triggered").await;
    assert_eq!(triggered.len(), 1, "{triggered:?}");
    let object = &triggered[0]["data"]["object"];
    assert_eq!(object["object"], "alert_firing");
    assert_eq!(object["alert"], alert.as_str());
    assert_eq!(object["threshold"], "1000");
    assert!(object["window"]["start"].is_string());
    // Crossing the second later fires it, once.
    usage(&d, "busy", "big", 4000).await;
    usage(&d, "busy", "bigger", 4000).await;
    let fired = firings(&d, &alert).await;
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_eq!(fired[1]["threshold"], "5000");
    assert_eq!(notifications(&d, "alert.triggered").await.len(), 2);
}

type Hits = Arc<Mutex<Vec<Vec<u8>>>>;

async fn record(State(hits): State<Hits>, body: Bytes) -> &'static str {
    hits.lock().expect("lock").push(body.to_vec());
    "ok"
}

/// A receiver on 127.0.0.1 that records every body.
async fn receiver() -> (String, Hits) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let hits: Hits = Arc::default();
    let app = Router::new()
        .route("/hook", post(record))
        .with_state(Arc::clone(&hits));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, hits)
}

#[tokio::test]
async fn a_firing_committed_before_kill_9_exists_once_and_is_delivered_after_restart() {
    let mut d = Daemon::start_with(OPEN).await;
    let customer = d.customer("crash", "USD").await;
    meter(&d).await;
    let alert = create_alert(
        &d,
        "alert-crash",
        json!({"customer": "crash", "type": "usage_exceeded", "meter": "tokens", "thresholds": ["100"]}),
    )
    .await;
    let (url, hits) = receiver().await;
    let r = d
        .post(
            "/v1/event-destinations",
            Some("evd-alerts"),
            &json!({"url": url, "event_types": ["alert.triggered"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    // Killed as soon as the crossing write is acknowledged, before its delivery could run.
    let ts = at(0);
    usage_at(&d, "crash", "cross", 150, &ts, "accepted").await;
    d.kill9();
    d.restart().await;
    let fired = firings(&d, &alert).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    // The same event again (a client retry) and more usage fire nothing new.
    usage(&d, "crash", "more", 10).await;
    usage_at(&d, "crash", "cross", 150, &ts, "duplicate").await;
    assert_eq!(firings(&d, &alert).await.len(), 1);
    let triggered = notifications(&d, "alert.triggered").await;
    assert_eq!(triggered.len(), 1, "{triggered:?}");
    d.eventually("the alert.triggered delivery", || async {
        !hits.lock().expect("lock").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for bytes in hits.lock().expect("lock").iter() {
        let body: Value = serde_json::from_slice(bytes).expect("json");
        assert_eq!(body["id"], triggered[0]["id"], "one notification: {body}");
    }
    let body: Value = serde_json::from_slice(&hits.lock().expect("lock")[0]).expect("json");
    assert_eq!(body["type"], "alert.triggered", "{body}");
    assert_eq!(body["data"]["object"]["customer"], customer.as_str());
    assert_eq!(body["data"]["object"]["value"], "150");
}

async fn grant(d: &Daemon, key: &str, customer: &str, amount_minor: i64) -> String {
    let g = d
        .post(
            "/v1/credit-grants",
            Some(key),
            &json!({"customer": customer, "amount_minor": amount_minor, "currency": "USD", "category": "promotional"}),
        )
        .await;
    assert_eq!(g.status, 201, "{}", g.json);
    id_of(&g.json)
}

async fn void(d: &Daemon, grant: &str) {
    let r = d
        .post(
            &format!("/v1/credit-grants/{grant}/void"),
            Some(&format!("void-{grant}")),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
}

#[tokio::test]
async fn a_balance_alert_fires_on_a_drop_re_arms_after_a_grant_and_fires_again() {
    let d = Daemon::start().await;
    let customer = d.customer("wallet", "USD").await;
    let first = grant(&d, "g1", &customer, 1_000).await;
    let alert = create_alert(
        &d,
        "alert-wallet",
        json!({"customer": "wallet", "type": "credit_balance_below", "thresholds": [500]}),
    )
    .await;
    assert!(firings(&d, &alert).await.is_empty());
    void(&d, &first).await;
    let fired = firings(&d, &alert).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0]["threshold"], 500);
    assert_eq!(fired[0]["value"], 0);
    assert_eq!(fired[0]["currency"], "USD");
    let second = grant(&d, "g2", &customer, 800).await;
    let fired = firings(&d, &alert).await;
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0]["recovered_value"], 800, "{fired:?}");
    let recovered = notifications(&d, "credit_balance.recovered").await;
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    void(&d, &second).await;
    let fired = firings(&d, &alert).await;
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert!(fired[1]["recovered_at"].is_null());
    assert_eq!(notifications(&d, "alert.triggered").await.len(), 2);
    assert_eq!(notifications(&d, "credit_balance.recovered").await.len(), 1);
}

#[tokio::test]
async fn a_usage_threshold_re_arms_in_the_next_billing_period() {
    let d = Daemon::start().await;
    d.customer("daily", "USD").await;
    meter(&d).await;
    let p = d
        .post(
            "/v1/plans",
            Some("plan"),
            &json!({"code": "d", "name": "D", "currency": "USD", "interval": "day",
                "fixed_fee": {"amount_minor": 0}}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    // Daily periods whose boundary is a few seconds away.
    let s = d
        .post(
            "/v1/subscriptions",
            Some("sub"),
            &json!({"customer": "daily", "plan": "d", "start_at": at(4 - 86_400)}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    let alert = create_alert(
        &d,
        "alert-daily",
        json!({"type": "usage_exceeded", "meter": "tokens", "thresholds": ["10"]}),
    )
    .await;
    usage(&d, "daily", "a", 20).await;
    let fired = firings(&d, &alert).await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    usage(&d, "daily", "b", 20).await;
    assert_eq!(firings(&d, &alert).await.len(), 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    usage(&d, "daily", "c", 5).await;
    assert_eq!(
        firings(&d, &alert).await.len(),
        1,
        "5 < 10 in the new period"
    );
    usage(&d, "daily", "d", 5).await;
    let fired = firings(&d, &alert).await;
    assert_eq!(fired.len(), 2, "{fired:?}");
    assert_eq!(fired[1]["value"], "10");
    assert_eq!(fired[1]["window"]["start"], fired[0]["window"]["end"]);
}

#[tokio::test]
async fn bad_alerts_are_refused_naming_the_field_and_nothing_is_written() {
    let d = Daemon::start().await;
    let customer = d.customer("someone", "USD").await;
    meter(&d).await;
    let many: Vec<String> = (1..=21).map(|i| i.to_string()).collect();
    let cases = [
        (
            json!({"type": "usage_exceeded", "meter": "nope", "thresholds": ["1"]}),
            "meter",
        ),
        (
            json!({"customer": "ghost", "type": "usage_exceeded", "meter": "tokens", "thresholds": ["1"]}),
            "customer",
        ),
        (
            json!({"type": "usage_exceeded", "meter": "tokens", "thresholds": []}),
            "thresholds",
        ),
        (
            json!({"type": "usage_exceeded", "meter": "tokens"}),
            "thresholds",
        ),
        (
            json!({"type": "usage_exceeded", "meter": "tokens", "thresholds": ["5", "2"]}),
            "thresholds.1",
        ),
        (
            json!({"type": "usage_exceeded", "meter": "tokens", "thresholds": ["5", "5"]}),
            "thresholds.1",
        ),
        (
            json!({"type": "usage_exceeded", "meter": "tokens", "thresholds": ["-1"]}),
            "thresholds.0",
        ),
        (
            json!({"type": "usage_exceeded", "meter": "tokens", "thresholds": ["0"]}),
            "thresholds.0",
        ),
        (
            json!({"type": "usage_exceeded", "meter": "tokens", "thresholds": ["ten"]}),
            "thresholds.0",
        ),
        (
            json!({"type": "usage_exceeded", "meter": "tokens", "thresholds": many}),
            "thresholds",
        ),
        (
            json!({"type": "usage_exceeded", "thresholds": ["1"]}),
            "meter",
        ),
        (
            json!({"type": "usage_exceeded", "meter": "tokens", "currency": "USD", "thresholds": ["1"]}),
            "currency",
        ),
        (
            json!({"type": "credit_balance_below", "meter": "tokens", "thresholds": [100]}),
            "meter",
        ),
        (
            json!({"type": "credit_balance_below", "thresholds": ["1.5"]}),
            "thresholds.0",
        ),
        (
            json!({"type": "credit_balance_below", "thresholds": [100], "currency": "XXQ"}),
            "currency",
        ),
        (
            json!({"type": "credit_balance_depleted", "thresholds": [100]}),
            "thresholds",
        ),
        (json!({"type": "sometimes", "thresholds": [100]}), "type"),
        (
            json!({"type": "credit_balance_depleted", "name": ""}),
            "name",
        ),
    ];
    for (i, (body, field)) in cases.iter().enumerate() {
        let r = d.post("/v1/alerts", Some(&format!("bad-{i}")), body).await;
        r.assert_problem(422, "validation_failed");
        assert_eq!(r.fields(), vec![field.to_string()], "{body}: {}", r.json);
    }
    let listed = d.get("/v1/alerts").await;
    assert_eq!(listed.json["data"], json!([]), "nothing written");
    // A good one, then the 404s.
    let ok = create_alert(
        &d,
        "good",
        json!({"customer": customer, "type": "credit_balance_depleted"}),
    )
    .await;
    let got = d.get(&format!("/v1/alerts/{ok}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json["thresholds"], json!([0]));
    assert_eq!(got.json["currency"], Value::Null);
    d.get("/v1/alerts/alr_00000000000000000000000000")
        .await
        .assert_problem(404, "resource_missing");
    d.get("/v1/alerts/alr_00000000000000000000000000/firings")
        .await
        .assert_problem(404, "resource_missing");
    let archived = d
        .post(
            &format!("/v1/alerts/{ok}/archive"),
            Some("archive"),
            &json!({}),
        )
        .await;
    assert_eq!(archived.status, 200, "{}", archived.json);
    assert_eq!(archived.json["active"], false);
}

/// A plan billing tokens at 0.05 each and granting `gpt` 100 tokens a period (hard); the
/// customer `spender` subscribed since an hour ago.
async fn spending_customer(d: &Daemon) {
    d.customer("spender", "USD").await;
    meter(d).await;
    let f = d
        .post(
            "/v1/features",
            Some("feat-gpt"),
            &json!({"key": "gpt", "name": "GPT"}),
        )
        .await;
    assert_eq!(f.status, 201, "{}", f.json);
    let p = d
        .post(
            "/v1/plans",
            Some("plan-spend"),
            &json!({"code": "s", "name": "S", "currency": "USD", "interval": "month",
                "charges": [{"meter": "tokens", "model": "per_unit", "unit_price": "0.05"}],
                "entitlements": [{"feature": "gpt", "type": "metered", "meter": "tokens",
                    "limit": "100", "reset": "billing_period", "hard": true}]}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    let s = d
        .post(
            "/v1/subscriptions",
            Some("sub-spend"),
            &json!({"customer": "spender", "plan": "s", "start_at": at(-3600)}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
}

#[tokio::test]
async fn spend_and_entitlement_alerts_fire_once_in_the_write_that_crosses_them() {
    let d = Daemon::start().await;
    spending_customer(&d).await;
    let spend = create_alert(
        &d,
        "alert-spend",
        json!({"type": "spend_exceeded", "thresholds": [300, 500]}),
    )
    .await;
    let quota = create_alert(
        &d,
        "alert-quota",
        json!({"type": "entitlement_exhausted", "customer": "spender", "feature": "gpt",
            "thresholds": ["80", "100"]}),
    )
    .await;
    let shown = d.get(&format!("/v1/alerts/{quota}")).await;
    assert_eq!(
        shown.json["feature"]
            .as_str()
            .map(|f| f.starts_with("feat_")),
        Some(true)
    );
    assert_eq!(shown.json["thresholds"], json!(["80", "100"]));

    usage(&d, "spender", "s1", 50).await; // 2.50 spent, 50 % used
    assert!(firings(&d, &spend).await.is_empty());
    assert!(firings(&d, &quota).await.is_empty());
    usage(&d, "spender", "s2", 30).await; // 4.00, 80 %
    let q = firings(&d, &quota).await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["threshold"], "80");
    assert_eq!(q[0]["value"], "80");
    let s = firings(&d, &spend).await;
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["threshold"], 300);
    assert_eq!(s[0]["value"], 400);
    assert_eq!(s[0]["currency"], "USD");
    usage(&d, "spender", "s3", 30).await; // 5.50, 110 %
    let q = firings(&d, &quota).await;
    assert_eq!(q.len(), 2, "{q:?}");
    assert_eq!(q[1]["threshold"], "100");
    assert_eq!(q[1]["value"], "100");
    assert_eq!(firings(&d, &spend).await.len(), 2);
    // Nothing fires twice in the period, and each firing was announced once.
    usage(&d, "spender", "s4", 10).await;
    assert_eq!(firings(&d, &quota).await.len(), 2);
    assert_eq!(firings(&d, &spend).await.len(), 2);
    assert_eq!(notifications(&d, "alert.triggered").await.len(), 4);
    // The check agrees: the hard limit is reached.
    let check = d.get("/v1/customers/spender/entitlements/gpt").await;
    assert_eq!(check.json["has_access"], false, "{}", check.json);
}

#[tokio::test]
async fn spend_and_entitlement_alerts_refuse_what_does_not_belong_to_them() {
    let d = Daemon::start().await;
    spending_customer(&d).await;
    let cases = [
        (json!({"type": "spend_exceeded"}), "thresholds"),
        (
            json!({"type": "spend_exceeded", "thresholds": ["1.5"]}),
            "thresholds.0",
        ),
        (
            json!({"type": "spend_exceeded", "thresholds": [5], "meter": "tokens"}),
            "meter",
        ),
        (
            json!({"type": "spend_exceeded", "thresholds": [5], "currency": "usd"}),
            "currency",
        ),
        (json!({"type": "entitlement_exhausted"}), "feature"),
        (
            json!({"type": "entitlement_exhausted", "feature": "nope"}),
            "feature",
        ),
        (
            json!({"type": "entitlement_exhausted", "feature": "gpt", "thresholds": ["1001"]}),
            "thresholds.0",
        ),
        (
            json!({"type": "entitlement_exhausted", "feature": "gpt", "thresholds": ["90", "80"]}),
            "thresholds.1",
        ),
        (
            json!({"type": "entitlement_exhausted", "feature": "gpt", "currency": "USD"}),
            "currency",
        ),
        (
            json!({"type": "usage_exceeded", "meter": "tokens", "thresholds": ["1"], "feature": "gpt"}),
            "feature",
        ),
    ];
    for (i, (body, field)) in cases.iter().enumerate() {
        let r = d.post("/v1/alerts", Some(&format!("bad-{i}")), body).await;
        r.assert_problem(422, "validation_failed");
        assert_eq!(r.fields(), vec![field.to_string()], "{body}: {}", r.json);
    }
    let list = d.get("/v1/alerts").await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn a_retried_alert_replays_after_its_feature_was_archived() {
    let d = Daemon::start().await;
    spending_customer(&d).await;
    let body = json!({"type": "entitlement_exhausted", "feature": "gpt"});
    let first = d.post("/v1/alerts", Some("quota-once"), &body).await;
    assert_eq!(first.status, 201, "{}", first.json);
    let feature = d.get("/v1/features/gpt").await;
    let id = feature.json["id"].as_str().expect("id").to_string();
    let archived = d
        .post(
            &format!("/v1/features/{id}/archive"),
            Some("archive-gpt"),
            &json!({}),
        )
        .await;
    assert_eq!(archived.status, 200, "{}", archived.json);
    let again = d.post("/v1/alerts", Some("quota-once"), &body).await;
    assert_eq!(again.status, 201, "{}", again.json);
    assert_eq!(again.json["id"], first.json["id"]);
    let fresh = d.post("/v1/alerts", Some("quota-new"), &body).await;
    fresh.assert_problem(422, "validation_failed");
}
