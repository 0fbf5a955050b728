//! A new meter over many stored events: counted in bounded chunks in the background, refused
//! by plans, entitlements and alerts until complete, exact across a kill -9, and never counting
//! an event twice when events keep arriving meanwhile.

use serde_json::{json, Value};

use crate::harness::{at, Daemon};

/// Events stored before the meter: with one event per chunk, hundreds of transactions, so
/// the backfill is still running when the next requests arrive.
const STORED: u64 = 600;

/// One event per backfill transaction; a short job lease so a killed daemon's job is taken
/// up again quickly after the restart.
const CONFIG: &str = "[ingest]\nbackfill_chunk_events = 1\n[jobs]\nlease_ms = 1000\n[notifications]\ntimeout_ms = 500\nconnect_timeout_ms = 200\n";

async fn store_events(d: &Daemon, prefix: &str, n: u64, event_type: &str) {
    let mut sent = 0;
    while sent < n {
        let batch: Vec<Value> = (sent..n.min(sent + 1000))
            .map(|i| {
                json!({"id": format!("{prefix}{i}"), "customer": "acme", "type": event_type,
                "timestamp": at(-600), "properties": {"tokens": 2}})
            })
            .collect();
        sent += batch.len() as u64;
        let r = d
            .post("/v1/events", None, &json!({ "events": batch }))
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
}

async fn meter(d: &Daemon, id: &str) -> Value {
    let m = d.get(&format!("/v1/meters/{id}")).await;
    assert_eq!(m.status, 200, "{}", m.json);
    m.json
}

async fn usage(d: &Daemon, meter: &str) -> String {
    let u = d
        .get(&format!(
            "/v1/usage?customer=acme&meter={meter}&from={}",
            at(-3600)
        ))
        .await;
    assert_eq!(u.status, 200, "{}", u.json);
    u.json["total"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn a_meter_over_many_stored_events_is_counted_in_chunks_and_refused_until_complete() {
    let d = Daemon::start_with(CONFIG).await;
    d.customer("acme", "USD").await;
    store_events(&d, "old-", STORED, "llm").await;
    store_events(&d, "other-", 20, "search").await;
    let created = d
        .post(
            "/v1/meters",
            Some("m1"),
            &json!({"key": "tokens", "event_type": "llm", "aggregation": "sum", "value_property": "tokens"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json);
    assert_eq!(created.json["backfill_status"], "running");
    assert_eq!(created.json["backfilled_events"], 1);
    let id = created.json["id"].as_str().expect("id").to_string();
    // A replay answers what the creation answered.
    let again = d
        .post(
            "/v1/meters",
            Some("m1"),
            &json!({"key": "tokens", "event_type": "llm", "aggregation": "sum", "value_property": "tokens"}),
        )
        .await;
    assert_eq!(again.json, created.json);
    // Nothing may bill, limit or alert on a partial count.
    let plan = d
        .post(
            "/v1/plans",
            Some("p1"),
            &json!({"code": "pro", "name": "Pro", "currency": "USD", "interval": "month",
            "charges": [{"meter": "tokens", "model": "per_unit", "unit_price": "0.01"}]}),
        )
        .await;
    plan.assert_problem(409, "meter_backfilling");
    assert_eq!(plan.fields(), vec!["charges.0.meter"]);
    let alert = d
        .post(
            "/v1/alerts",
            Some("a1"),
            &json!({"type": "usage_exceeded", "meter": "tokens", "thresholds": ["10"]}),
        )
        .await;
    alert.assert_problem(409, "meter_backfilling");
    let feature = d
        .post(
            "/v1/features",
            Some("f1"),
            &json!({"key": "api", "name": "API"}),
        )
        .await;
    assert_eq!(feature.status, 201, "{}", feature.json);
    let entitled = d
        .post("/v1/plans", Some("p2"), &json!({"code": "lim", "name": "Limited", "currency": "USD", "interval": "month",
            "entitlements": [{"feature": "api", "type": "metered", "meter": "tokens", "limit": "100"}]}))
        .await;
    entitled.assert_problem(409, "meter_backfilling");
    // Events arriving during the backfill are counted by ingest, once.
    store_events(&d, "new-", 30, "llm").await;
    d.eventually("the backfill to complete", || async {
        meter(&d, &id).await["backfill_status"] == "complete"
    })
    .await;
    let done = meter(&d, &id).await;
    assert_eq!(done["backfilled_events"], STORED);
    assert_eq!(done["backfill_skipped_events"], 0);
    assert_eq!(usage(&d, "tokens").await, ((STORED + 30) * 2).to_string());
    // Complete: now it can be billed.
    let plan = d
        .post(
            "/v1/plans",
            Some("p3"),
            &json!({"code": "pro", "name": "Pro", "currency": "USD", "interval": "month",
            "charges": [{"meter": "tokens", "model": "per_unit", "unit_price": "0.01"}]}),
        )
        .await;
    assert_eq!(plan.status, 201, "{}", plan.json);
}

#[tokio::test]
async fn a_backfill_cut_by_kill_9_resumes_where_it_committed() {
    let mut d = Daemon::start_with(CONFIG).await;
    d.customer("acme", "USD").await;
    store_events(&d, "old-", STORED, "llm").await;
    let created = d
        .post(
            "/v1/meters",
            Some("m1"),
            &json!({"key": "calls", "event_type": "llm", "aggregation": "count"}),
        )
        .await;
    assert_eq!(
        created.json["backfill_status"], "running",
        "{}",
        created.json
    );
    let id = created.json["id"].as_str().expect("id").to_string();
    d.eventually("the backfill to make progress", || async {
        meter(&d, &id).await["backfilled_events"].as_u64() > Some(1)
    })
    .await;
    d.kill9();
    d.restart().await;
    store_events(&d, "new-", 10, "llm").await;
    d.eventually("the backfill to complete after the restart", || async {
        meter(&d, &id).await["backfill_status"] == "complete"
    })
    .await;
    assert_eq!(meter(&d, &id).await["backfilled_events"], STORED);
    assert_eq!(usage(&d, "calls").await, (STORED + 10).to_string());
}

#[tokio::test]
async fn a_meter_on_a_type_never_stored_is_complete_at_once_however_many_events_exist() {
    let d = Daemon::start_with(CONFIG).await;
    d.customer("acme", "USD").await;
    store_events(&d, "old-", STORED, "llm").await;
    // One event per chunk: a scan over the 600 stored events would take 600 transactions.
    let created = d
        .post(
            "/v1/meters",
            Some("m-new"),
            &json!({"key": "searches", "event_type": "search", "aggregation": "count"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json);
    assert_eq!(created.json["backfill_status"], "complete");
    assert_eq!(created.json["backfilled_events"], 0);
    let plan = d
        .post(
            "/v1/plans",
            Some("p-new"),
            &json!({"code": "search", "name": "Search", "currency": "USD", "interval": "month",
            "charges": [{"meter": "searches", "model": "per_unit", "unit_price": "0.01"}]}),
        )
        .await;
    assert_eq!(plan.status, 201, "{}", plan.json);
    // Its events count from the first, through ingest.
    store_events(&d, "search-", 3, "search").await;
    assert_eq!(usage(&d, "searches").await, "3");
    // A type with stored events still backfills them all.
    let llm = d
        .post(
            "/v1/meters",
            Some("m-llm"),
            &json!({"key": "calls", "event_type": "llm", "aggregation": "count"}),
        )
        .await;
    assert_eq!(llm.json["backfill_status"], "running", "{}", llm.json);
    let id = llm.json["id"].as_str().expect("id").to_string();
    d.eventually("the backfill to complete", || async {
        meter(&d, &id).await["backfill_status"] == "complete"
    })
    .await;
    assert_eq!(usage(&d, "calls").await, STORED.to_string());
}
