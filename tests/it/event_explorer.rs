//! What the events explorer reads: duplicates and conflicts recorded with their original,
//! event filters and pages, and the invoice that absorbed a late event.

use serde_json::{json, Value};

use crate::harness::{at, Daemon};

async fn setup(d: &Daemon) {
    d.customer("acme", "USD").await;
    d.customer("other", "USD").await;
    let m = d
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "calls", "event_type": "call", "aggregation": "count"}),
        )
        .await;
    assert_eq!(m.status, 201, "{}", m.json);
}

/// A minute before `now` (one instant per test, so a resent event is the same payload).
fn event(id: &str, customer: &str, n: i64, now: &str) -> Value {
    let ms = tally::clock::parse_rfc3339(now).expect("t") - 60_000;
    json!({"id": id, "customer": customer, "type": "call",
           "timestamp": tally::clock::rfc3339(ms), "properties": {"n": n}})
}

fn results(r: &crate::harness::Resp) -> Vec<(String, String)> {
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|x| {
            (
                x["status"].as_str().unwrap_or("").to_string(),
                x["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn anomalies(d: &Daemon, query: &str) -> Vec<Value> {
    let r = d.get(&format!("/v1/event-anomalies{query}")).await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["data"].as_array().expect("data").clone()
}

#[tokio::test]
async fn duplicates_and_conflicts_are_recorded_once_each_with_the_original() {
    let mut d = Daemon::start().await;
    setup(&d).await;
    let now = at(0);
    let first = d
        .post("/v1/events", Some("k1"), &event("e1", "acme", 1, &now))
        .await;
    let original = results(&first)[0].1.clone();
    assert!(
        anomalies(&d, "").await.is_empty(),
        "an accepted event is none"
    );

    // A duplicate under a new key, then that request replayed: one anomaly, not two.
    let dup = json!({"events": [event("e1", "acme", 1, &now)]});
    let sent = d.post("/v1/events", Some("k2"), &dup).await;
    assert_eq!(results(&sent), vec![("duplicate".into(), original.clone())]);
    let replayed = d.post("/v1/events", Some("k2"), &dup).await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.bytes, sent.bytes);
    // A conflict without a key; an in-batch duplicate; a derived duplicate.
    let conflict = d
        .post("/v1/events", None, &event("e1", "acme", 2, &now))
        .await;
    assert_eq!(results(&conflict)[0].0, "conflict");
    let batch = d
        .post(
            "/v1/events",
            None,
            &json!({"events": [event("e2", "other", 1, &now), event("e2", "other", 1, &now)]}),
        )
        .await;
    let batch = results(&batch);
    assert_eq!(batch[1], ("duplicate".into(), batch[0].1.clone()));
    let derived =
        json!({"customer": "acme", "type": "call", "timestamp": at(-30), "properties": {"d": 1}});
    let d1 = d.post("/v1/events", None, &derived).await;
    let d2 = d.post("/v1/events", None, &derived).await;
    assert_eq!(
        results(&d2)[0],
        ("duplicate".into(), results(&d1)[0].1.clone())
    );

    let all = anomalies(&d, "").await;
    assert_eq!(all.len(), 4, "{all:#?}");
    // Newest first.
    let kinds: Vec<&str> = all
        .iter()
        .map(|a| a["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["duplicate", "duplicate", "conflict", "duplicate"]);
    let derived_dup = &all[0];
    assert_eq!(derived_dup["identity"]["kind"], "derived");
    assert_eq!(derived_dup["identity"]["id"], Value::Null);
    assert_eq!(derived_dup["original_id"], results(&d1)[0].1.as_str());
    assert_eq!(all[1]["customer"], "other");
    assert_eq!(all[1]["original_id"], batch[0].1.as_str());

    let conflict = &all[2];
    assert_eq!(conflict["object"], "event_anomaly");
    assert_eq!(conflict["original_id"], original.as_str());
    assert_eq!(conflict["original"]["id"], original.as_str());
    assert_eq!(conflict["original"]["properties"], json!({"n": 1}));
    assert_eq!(conflict["properties"], json!({"n": 2}), "what was sent");
    assert_eq!(conflict["digest"].as_str().map(str::len), Some(64));
    assert_eq!(conflict["idempotency_key"], Value::Null);
    assert_eq!(
        conflict["identity"],
        json!({"kind": "stable", "source": "default", "id": "e1"})
    );
    assert_eq!(conflict["type"], "call");
    assert_eq!(conflict["customer"], "acme");

    let duplicate = &all[3];
    assert_eq!(duplicate["original"]["id"], original.as_str());
    assert_eq!(duplicate["idempotency_key"], "k2");
    assert_eq!(
        duplicate["properties"],
        Value::Null,
        "kept for conflicts only"
    );
    assert_eq!(duplicate["digest"], Value::Null);
    assert!(duplicate["id"].as_str().expect("id").starts_with("eva_"));
    assert!(duplicate["received_at"].is_string());

    // Filters: kind, the original's customer (external or `cus_` id), the original event.
    assert_eq!(anomalies(&d, "?kind=conflict").await.len(), 1);
    assert_eq!(anomalies(&d, "?kind=duplicate").await.len(), 3);
    assert_eq!(anomalies(&d, "?customer=other").await.len(), 1);
    let acme = d.get("/v1/customers?limit=500").await.json["data"]
        .as_array()
        .expect("customers")
        .iter()
        .find(|c| c["external_id"] == "acme")
        .expect("acme")["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(anomalies(&d, &format!("?customer={acme}")).await.len(), 3);
    assert!(anomalies(&d, "?customer=nobody").await.is_empty());
    let of_e1 = anomalies(&d, &format!("?event={original}")).await;
    assert_eq!(of_e1.len(), 2, "how many times e1 came back");
    assert_eq!(
        anomalies(&d, &format!("?event={original}&kind=duplicate"))
            .await
            .len(),
        1
    );

    // Pages of one, newest first, until the end.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let query = match &cursor {
            Some(c) => format!("/v1/event-anomalies?limit=1&starting_after={c}"),
            None => "/v1/event-anomalies?limit=1".to_string(),
        };
        let page = d.get(&query).await;
        assert_eq!(page.status, 200, "{}", page.json);
        for a in page.json["data"].as_array().expect("data") {
            seen.push(a["id"].as_str().expect("id").to_string());
        }
        match page.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let ids: Vec<String> = all
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(seen, ids);

    // Bad queries are problems, not empty pages.
    d.get("/v1/event-anomalies?kind=twice")
        .await
        .assert_problem(400, "validation_failed");
    d.get("/v1/event-anomalies?event=cus_1")
        .await
        .assert_problem(400, "validation_failed");
    d.get("/v1/event-anomalies?starting_after=evt_1")
        .await
        .assert_problem(400, "validation_failed");
    d.get("/v1/event-anomalies?limit=0")
        .await
        .assert_problem(400, "validation_failed");

    // Another tenant sees none of them.
    d.stop();
    let out = d.cli(&["tenant", "create", "second"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let second = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("api key line")
        .to_string();
    d.restart().await;
    let foreign = d.get_as(&second, "/v1/event-anomalies").await;
    assert_eq!(foreign.status, 200, "{}", foreign.json);
    assert_eq!(foreign.json["data"], json!([]));
    assert_eq!(anomalies(&d, "").await.len(), 4, "kept across a restart");
}

#[tokio::test]
async fn anomalies_are_purged_with_the_idempotency_retention() {
    let d =
        Daemon::start_with("[idempotency]\nretention_secs = 1\npurge_interval_ms = 100\n").await;
    setup(&d).await;
    let now = at(0);
    d.post("/v1/events", None, &event("e1", "acme", 1, &now))
        .await;
    d.post("/v1/events", None, &event("e1", "acme", 1, &now))
        .await;
    assert_eq!(anomalies(&d, "").await.len(), 1);
    d.eventually("the anomaly to be purged", || async {
        anomalies(&d, "").await.is_empty()
    })
    .await;
    assert_eq!(
        d.get(&format!(
            "/v1/events?customer=acme&limit=10&from={}",
            at(-3600)
        ))
        .await
        .json["data"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "the event itself stays"
    );
}

async fn list_ids(d: &Daemon, query: &str) -> Vec<String> {
    let r = d.get(&format!("/v1/events{query}")).await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["identity"]["id"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn events_filter_by_customer_type_time_and_lateness_in_pages() {
    let d = Daemon::start().await;
    setup(&d).await;
    let events = json!({"events": [
        {"id": "a1", "customer": "acme", "type": "call", "timestamp": at(-7200)},
        {"id": "a2", "customer": "acme", "type": "sms", "timestamp": at(-3600)},
        {"id": "o1", "customer": "other", "type": "call", "timestamp": at(-1800)},
        {"id": "a3", "customer": "acme", "type": "call", "timestamp": at(-600)},
    ]});
    let sent = d.post("/v1/events", None, &events).await;
    assert!(results(&sent).iter().all(|(s, _)| s == "accepted"));
    assert_eq!(list_ids(&d, "").await, ["a1", "a2", "o1", "a3"]);
    assert_eq!(list_ids(&d, "?customer=acme").await, ["a1", "a2", "a3"]);
    assert_eq!(list_ids(&d, "?customer=acme&type=call").await, ["a1", "a3"]);
    let from = at(-4000);
    let to = at(-1000);
    assert_eq!(
        list_ids(&d, &format!("?from={from}&to={to}")).await,
        ["a2", "o1"]
    );
    assert!(list_ids(&d, "?late=true").await.is_empty());
    assert_eq!(list_ids(&d, "?late=false").await.len(), 4);
    d.get("/v1/events?late=maybe")
        .await
        .assert_problem(400, "validation_failed");
    // Pages of one through a filter.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("/v1/events?customer=acme&limit=1&starting_after={c}"),
            None => "/v1/events?customer=acme&limit=1".to_string(),
        };
        let page = d.get(&query).await;
        seen.extend(
            page.json["data"]
                .as_array()
                .expect("data")
                .iter()
                .map(|e| e["identity"]["id"].as_str().unwrap_or("").to_string()),
        );
        match page.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(seen.len() < 10, "pages never end");
    }
    assert_eq!(seen, ["a1", "a2", "a3"]);
}

/// A daily plan billed in arrears, started three days ago at midnight.
async fn subscribe(d: &Daemon) -> String {
    let p = d
        .post(
            "/v1/plans",
            Some("p"),
            &json!({"code": "daily", "name": "Daily", "currency": "USD", "interval": "day",
                    "fixed_fee": {"amount_minor": 1000, "timing": "in_arrears"},
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
                    "start_at": tally::clock::rfc3339(start - 3 * 86_400_000)}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    s.json["id"].as_str().expect("id").to_string()
}

async fn absorbed_by(d: &Daemon, event: &str) -> Value {
    let r = d.get(&format!("/v1/events/{event}")).await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["absorbed_by"].clone()
}

async fn run(d: &Daemon, key: &str) -> Vec<Value> {
    let r = d.post("/v1/billing-runs", Some(key), &json!({})).await;
    assert_eq!(r.status, 201, "{}", r.json);
    r.json["closed"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_late_event_names_the_invoice_that_billed_it_once_there_is_one() {
    let d = Daemon::start().await;
    setup(&d).await;
    let now = at(0);
    let sub = subscribe(&d).await;
    let yesterday = at(-86_400);
    let on_time = d
        .post("/v1/events", None, &event("on-time", "acme", 1, &now))
        .await;
    let on_time = results(&on_time)[0].1.clone();
    d.post(
        "/v1/events",
        None,
        &json!({"id": "y1", "customer": "acme", "type": "call", "timestamp": yesterday}),
    )
    .await;
    assert_eq!(run(&d, "r1").await.len(), 3, "three closed days");
    let late = d
        .post(
            "/v1/events",
            None,
            &json!({"id": "late", "customer": "acme", "type": "call", "timestamp": yesterday}),
        )
        .await;
    assert_eq!(late.json["results"][0]["late"], true, "{}", late.json);
    let late = results(&late)[0].1.clone();
    assert_eq!(absorbed_by(&d, &late).await, Value::Null, "not billed yet");
    assert_eq!(list_ids(&d, "?late=true").await, ["late"]);
    assert_eq!(list_ids(&d, "?late=true&customer=other").await.len(), 0);

    // Cancelling now closes the running day; its invoice carries the late call of yesterday.
    let canceled = d
        .post(
            &format!("/v1/subscriptions/{sub}/cancel"),
            Some("cancel"),
            &json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(canceled.status, 200, "{}", canceled.json);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    run(&d, "r2").await;
    let invoice = absorbed_by(&d, &late).await;
    let invoice = invoice.as_str().expect("an invoice billed it").to_string();
    let billed = d.get(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(billed.status, 200, "{}", billed.json);
    let adjustment = billed.json["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["kind"] == "adjustment")
        .cloned();
    let adjustment = adjustment.expect("an adjustment line");
    assert_eq!(adjustment["quantity"], "1", "{adjustment}");
    assert_eq!(absorbed_by(&d, &on_time).await, Value::Null, "not late");
}

#[tokio::test]
async fn a_late_event_after_the_end_is_absorbed_by_the_adjustment_invoice() {
    let d = Daemon::start().await;
    setup(&d).await;
    let sub = subscribe(&d).await;
    let canceled = d
        .post(
            &format!("/v1/subscriptions/{sub}/cancel"),
            Some("cancel"),
            &json!({"at_period_end": false}),
        )
        .await;
    assert_eq!(canceled.status, 200, "{}", canceled.json);
    run(&d, "r1").await;
    let end_ms = tally::clock::parse_rfc3339(canceled.json["ends_at"].as_str().expect("ends_at"))
        .expect("t");
    let late = d
        .post(
            "/v1/events",
            None,
            &json!({"id": "late", "customer": "acme", "type": "call",
                    "timestamp": tally::clock::rfc3339(end_ms - 43_200_000)}),
        )
        .await;
    assert_eq!(late.json["results"][0]["late"], true, "{}", late.json);
    let late = results(&late)[0].1.clone();
    assert_eq!(absorbed_by(&d, &late).await, Value::Null);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let closed = run(&d, "r2").await;
    assert_eq!(closed.len(), 1, "one late-usage invoice: {closed:?}");
    let adjustment = closed[0]["invoice"].as_str().expect("id");
    assert_eq!(absorbed_by(&d, &late).await, adjustment);
    // Voided, it no longer absorbs the event; its re-issue does.
    let voided = d
        .post(
            &format!("/v1/invoices/{adjustment}/void"),
            Some("v"),
            &json!({}),
        )
        .await;
    assert_eq!(voided.status, 200, "{}", voided.json);
    assert_eq!(absorbed_by(&d, &late).await, Value::Null);
    let reissued = run(&d, "r3").await;
    assert_eq!(reissued.len(), 1, "{reissued:?}");
    assert_eq!(
        absorbed_by(&d, &late).await,
        reissued[0]["invoice"].as_str().expect("id")
    );
}
