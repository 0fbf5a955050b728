//! Usage ingest over HTTP: duplicates everywhere, conflicts, derived windows, CloudEvents,
//! time rules, usage.

use serde_json::{json, Value};

use crate::harness::{at, Daemon};

async fn setup() -> Daemon {
    let d = Daemon::start().await;
    d.customer("acme", "USD").await;
    let r = d
        .post("/v1/meters", Some("m1"), &json!({"key": "tokens", "event_type": "llm", "aggregation": "sum", "value_property": "tokens"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    d
}

fn statuses(r: &Value) -> Vec<String> {
    r["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|x| x["status"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn total(d: &Daemon) -> String {
    let u = d
        .get(&format!(
            "/v1/usage?customer=acme&meter=tokens&from={}",
            at(-3600)
        ))
        .await;
    assert_eq!(u.status, 200, "{}", u.json);
    u.json["total"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn duplicates_in_a_batch_across_batches_and_conflicts() {
    let d = setup().await;
    let ts = at(-60);
    let e = |id: &str, tokens: &str| json!({"id": id, "customer": "acme", "type": "llm", "timestamp": ts, "properties": {"tokens": tokens}});
    let batch = json!({"events": [e("a", "1.5"), e("a", "1.5"), e("b", "2"), e("a", "9")]});
    let r = d.post("/v1/events", None, &batch).await;
    assert_eq!(
        statuses(&r.json),
        ["accepted", "duplicate", "accepted", "conflict"]
    );
    assert_eq!(r.json["results"][1]["id"], r.json["results"][0]["id"]);
    assert_eq!(r.json["results"][3]["id"], r.json["results"][0]["id"]);
    let again = d
        .post(
            "/v1/events",
            None,
            &json!({"events": [e("a", "1.5"), e("b", "2")]}),
        )
        .await;
    assert_eq!(statuses(&again.json), ["duplicate", "duplicate"]);
    assert_eq!(
        total(&d).await,
        "3.5",
        "the conflict left the first payload standing"
    );
    let stored = d
        .get(&format!(
            "/v1/events/{}",
            r.json["results"][0]["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(stored.json["properties"]["tokens"], "1.5");
    assert_eq!(stored.json["identity"]["kind"], "stable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_identical_batches_store_each_event_once() {
    let d = setup().await;
    let batch: Vec<Value> = (0..25)
        .map(|i| json!({"id": format!("c{i}"), "customer": "acme", "type": "llm", "timestamp": at(-30), "properties": {"tokens": 1}}))
        .collect();
    let body = json!({"events": batch});
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = d.client.clone();
        let url = d.url("/v1/events");
        let key = d.key.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .expect("send")
                .json::<Value>()
                .await
                .expect("json")
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        let r = t.await.expect("task");
        for s in statuses(&r) {
            match s.as_str() {
                "accepted" => accepted += 1,
                "duplicate" => {}
                other => panic!("unexpected {other}"),
            }
        }
    }
    assert_eq!(accepted, 25);
    assert_eq!(total(&d).await, "25");
}

#[tokio::test]
async fn derived_identities_follow_the_window() {
    let d = setup().await;
    let e = |ts: String| json!({"customer": "acme", "type": "llm", "timestamp": ts, "properties": {"tokens": 1}});
    let first = d.post("/v1/events", None, &e(at(-600))).await;
    assert_eq!(statuses(&first.json), ["accepted"]);
    let near = d.post("/v1/events", None, &e(at(-590))).await;
    assert_eq!(
        statuses(&near.json),
        ["duplicate"],
        "10 s apart is one event"
    );
    let far = d.post("/v1/events", None, &e(at(-480))).await;
    assert_eq!(
        statuses(&far.json),
        ["accepted"],
        "two windows apart are two events"
    );
    assert_eq!(total(&d).await, "2");
}

#[tokio::test]
async fn cloudevents_give_the_same_results_as_native_posts() {
    let d = setup().await;
    let ts = at(-120);
    let native = json!({"id": "x1", "source": "app", "customer": "acme", "type": "llm", "timestamp": ts, "properties": {"tokens": 4}});
    let cloud = json!({"specversion": "1.0", "id": "x1", "source": "app", "type": "llm", "subject": "acme", "time": ts, "data": {"tokens": 4}});
    let first = d.post("/v1/events", None, &native).await;
    assert_eq!(statuses(&first.json), ["accepted"]);
    let structured = d
        .send(
            d.client
                .post(d.url("/v1/events"))
                .bearer_auth(&d.key)
                .header("content-type", "application/cloudevents+json")
                .body(cloud.to_string()),
        )
        .await;
    assert_eq!(statuses(&structured.json), ["duplicate"]);
    assert_eq!(
        structured.json["results"][0]["id"],
        first.json["results"][0]["id"]
    );
    let batch = json!([cloud, {"specversion": "1.0", "id": "x2", "source": "app", "type": "llm", "subject": "acme", "time": ts, "data": {"tokens": 1}}]);
    let r = d
        .send(
            d.client
                .post(d.url("/v1/events"))
                .bearer_auth(&d.key)
                .header("content-type", "application/cloudevents-batch+json")
                .body(batch.to_string()),
        )
        .await;
    assert_eq!(statuses(&r.json), ["duplicate", "accepted"]);
    assert_eq!(total(&d).await, "5");
}

#[tokio::test]
async fn rejections_are_per_event_and_shapes_are_400() {
    let d = setup().await;
    let r = d
        .post(
            "/v1/events",
            None,
            &json!({"events": [
                {"customer": "acme", "type": "llm", "properties": {"tokens": 1}},
                {"customer": "nobody", "type": "llm", "properties": {"tokens": 1}},
                {"customer": "acme", "type": "llm", "properties": {"tokens": "lots"}},
                {"customer": "acme", "type": "llm", "properties": {}},
                {"customer": "acme", "type": "llm", "timestamp": at(3600), "properties": {"tokens": 1}},
                {"customer": "acme", "type": "llm", "timestamp": at(-40 * 86400), "properties": {"tokens": 1}},
                {"customer": "acme", "type": "llm", "properties": [1]},
                {"customer": "acme", "type": "llm", "timestamp": "yesterday", "properties": {"tokens": 1}}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        statuses(&r.json),
        [
            "accepted", "rejected", "rejected", "rejected", "rejected", "rejected", "rejected",
            "rejected"
        ]
    );
    let codes: Vec<&str> = r.json["results"].as_array().expect("results")[1..]
        .iter()
        .map(|x| x["error"]["code"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        codes,
        [
            "unknown_customer",
            "invalid_meter_value",
            "invalid_meter_value",
            "timestamp_in_future",
            "timestamp_too_old",
            "validation_failed",
            "validation_failed"
        ]
    );
    assert_eq!(
        r.json["results"][2]["error"]["errors"][0]["field"],
        "properties.tokens"
    );
    assert_eq!(total(&d).await, "1");
    d.post("/v1/events", None, &json!([1, 2]))
        .await
        .assert_problem(400, "validation_failed");
    d.post("/v1/events", None, &json!({"events": []}))
        .await
        .assert_problem(400, "validation_failed");
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"customer": "acme", "type": "x"}))
        .collect();
    d.post("/v1/events", None, &json!({"events": too_many}))
        .await
        .assert_problem(400, "validation_failed");
}

#[tokio::test]
async fn an_idempotency_key_makes_the_whole_request_replayable() {
    let d = setup().await;
    let body = json!({"events": [{"id": "k1", "customer": "acme", "type": "llm", "properties": {"tokens": 2}}]});
    let first = d.post("/v1/events", Some("batch-1"), &body).await;
    let again = d.post("/v1/events", Some("batch-1"), &body).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        again.bytes, first.bytes,
        "the replay says accepted, as the first reply did"
    );
}

#[tokio::test]
async fn meters_are_immutable_except_their_name_and_usage_buckets() {
    let d = setup().await;
    let meters = d.get("/v1/meters").await;
    let id = meters.json["data"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let renamed = d
        .post(
            &format!("/v1/meters/{id}"),
            Some("rename"),
            &json!({"name": "Tokens"}),
        )
        .await;
    assert_eq!(renamed.status, 200);
    assert_eq!(renamed.json["name"], "Tokens");
    d.post(
        &format!("/v1/meters/{id}"),
        Some("change"),
        &json!({"aggregation": "max"}),
    )
    .await
    .assert_problem(400, "meter_immutable");
    for i in 0..3 {
        d.post("/v1/events", None, &json!({"id": format!("h{i}"), "customer": "acme", "type": "llm", "timestamp": at(-7200 * i), "properties": {"tokens": 1}})).await;
    }
    let hourly = d
        .get(&format!(
            "/v1/usage?customer=acme&meter={id}&from={}&granularity=hour",
            at(-6 * 3600)
        ))
        .await;
    assert_eq!(hourly.status, 200);
    let sum: u64 = hourly.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|b| b["events"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sum, 3);
    assert_eq!(hourly.json["total"], "3");
    // A meter created after the events counts them too.
    let late = d
        .post(
            "/v1/meters",
            Some("m2"),
            &json!({"key": "calls", "event_type": "llm", "aggregation": "count"}),
        )
        .await;
    assert_eq!(late.json["backfilled_events"], 3);
    let calls = d
        .get(&format!(
            "/v1/usage?customer=acme&meter=calls&from={}",
            at(-6 * 3600)
        ))
        .await;
    assert_eq!(calls.json["total"], "3");
}

fn binary(d: &Daemon, attributes: &[(&str, &str)], data: &str) -> reqwest::RequestBuilder {
    binary_as(d, "application/json", attributes, data)
}

fn binary_as(
    d: &Daemon,
    content_type: &str,
    attributes: &[(&str, &str)],
    data: &str,
) -> reqwest::RequestBuilder {
    let mut req = d
        .client
        .post(d.url("/v1/events"))
        .bearer_auth(&d.key)
        .header("content-type", content_type)
        .body(data.to_string());
    for (name, value) in attributes {
        req = req.header(*name, *value);
    }
    req
}

#[tokio::test]
async fn cloudevents_binary_mode_counts_usage_and_refuses_bad_attributes() {
    let d = setup().await;
    let ts = at(-120);
    let attributes = [
        ("ce-specversion", "1.0"),
        ("ce-id", "b1"),
        ("ce-source", "app"),
        ("ce-type", "llm"),
        ("ce-subject", "acme"),
        ("ce-time", ts.as_str()),
    ];
    let r = d.send(binary(&d, &attributes, r#"{"tokens": 7}"#)).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(statuses(&r.json), ["accepted"]);
    assert_eq!(total(&d).await, "7");
    // The same event in structured mode is a duplicate of it.
    let structured = json!({"specversion": "1.0", "id": "b1", "source": "app", "type": "llm", "subject": "acme", "time": ts, "data": {"tokens": 7}});
    let again = d
        .send(
            d.client
                .post(d.url("/v1/events"))
                .bearer_auth(&d.key)
                .header("content-type", "application/cloudevents+json")
                .body(structured.to_string()),
        )
        .await;
    assert_eq!(statuses(&again.json), ["duplicate"]);
    assert_eq!(again.json["results"][0]["id"], r.json["results"][0]["id"]);
    // ce-time is optional.
    let untimed = [
        ("ce-specversion", "1.0"),
        ("ce-id", "b2"),
        ("ce-source", "app"),
        ("ce-type", "llm"),
        ("ce-subject", "acme"),
    ];
    let r = d.send(binary(&d, &untimed, r#"{"tokens": 1}"#)).await;
    assert_eq!(statuses(&r.json), ["accepted"], "{}", r.json);
    assert_eq!(total(&d).await, "8");
    // A missing or bad required attribute is a 400 naming the header; nothing is stored.
    for (drop, expected) in [
        ("ce-specversion", "ce-specversion"),
        ("ce-id", "ce-id"),
        ("ce-source", "ce-source"),
        ("ce-type", "ce-type"),
        ("ce-subject", "ce-subject"),
    ] {
        let partial: Vec<(&str, &str)> = attributes
            .iter()
            .copied()
            .filter(|(name, _)| *name != drop)
            .map(|(name, value)| (name, if name == "ce-id" { "b3" } else { value }))
            .collect();
        let r = d.send(binary(&d, &partial, r#"{"tokens": 1}"#)).await;
        r.assert_problem(400, "validation_failed");
        assert_eq!(r.fields(), [expected]);
    }
    let mut bad_time = attributes;
    bad_time[1] = ("ce-id", "b4");
    bad_time[5] = ("ce-time", "yesterday");
    let r = d.send(binary(&d, &bad_time, r#"{"tokens": 1}"#)).await;
    r.assert_problem(400, "validation_failed");
    assert_eq!(r.fields(), ["ce-time"]);
    // A rejected binary-mode event is the reply's status, never a 200.
    let mut stranger = attributes;
    stranger[1] = ("ce-id", "b5");
    stranger[4] = ("ce-subject", "nobody");
    d.send(binary(&d, &stranger, r#"{"tokens": 1}"#))
        .await
        .assert_problem(422, "unknown_customer");
    let keyed = d
        .send(binary(&d, &stranger, r#"{"tokens": 1}"#).header("Idempotency-Key", "bin-1"))
        .await;
    keyed.assert_problem(422, "unknown_customer");
    let replayed = d
        .send(binary(&d, &stranger, r#"{"tokens": 1}"#).header("Idempotency-Key", "bin-1"))
        .await;
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.bytes, keyed.bytes);
    assert_eq!(total(&d).await, "8");
    // Data that is not JSON is refused.
    d.send(binary_as(&d, "text/plain", &attributes, "tokens=1"))
        .await
        .assert_problem(415, "unsupported_media_type");
}

#[tokio::test]
async fn an_empty_cloudevents_batch_is_valid() {
    let d = setup().await;
    let r = d
        .send(
            d.client
                .post(d.url("/v1/events"))
                .bearer_auth(&d.key)
                .header("content-type", "application/cloudevents-batch+json")
                .body("[]"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json, json!({"results": []}));
}

/// Properties like an LLM call's: the same keys every time, values that vary.
fn llm_properties(i: u64) -> Value {
    let model = ["gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b"][(i % 3) as usize];
    let region = ["us-east-1", "eu-west-1"][(i % 2) as usize];
    json!({
        "model": model,
        "tokens": 50 + i * 37 % 4000,
        "region": region,
        "user_id": format!("user_{:06}", i * 7 % 1000),
        "request_id": format!("req_{:026x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        "stream": i.is_multiple_of(2),
        "note": "ü ✓ \"quoted\"",
    })
}

#[tokio::test]
async fn events_stored_against_their_types_dictionary_read_back_exactly_after_a_restart() {
    let mut d = setup().await;
    // The first 16 events of the type are its dictionary's samples; the rest are compressed.
    let events: Vec<Value> = (0..60u64)
        .map(|i| json!({"id": format!("018f3a2b-0000-7000-8000-{i:012x}"), "customer": "acme", "type": "llm", "timestamp": at(-60), "properties": llm_properties(i)}))
        .collect();
    for chunk in events.chunks(7) {
        let r = d.post("/v1/events", None, &json!({"events": chunk})).await;
        assert_eq!(r.status, 200, "{}", r.json);
        assert!(
            statuses(&r.json).iter().all(|s| s == "accepted"),
            "{}",
            r.json
        );
    }
    let expected: u64 = (0..60u64).map(|i| 50 + i * 37 % 4000).sum();
    let space = d.cli(&["space"]);
    let text = String::from_utf8_lossy(&space.stdout).to_string();
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().take(2).collect::<Vec<_>>()
                == ["property_dictionaries", "1"]),
        "one dictionary, for the one type:\n{text}"
    );
    for round in 0..2 {
        assert_eq!(total(&d).await, expected.to_string(), "round {round}");
        let listed = d.get("/v1/events?customer=acme&limit=100").await;
        assert_eq!(listed.status, 200, "{}", listed.json);
        let data = listed.json["data"].as_array().expect("data").clone();
        assert_eq!(data.len(), 60);
        for e in &data {
            let id = e["identity"]["id"].as_str().expect("client id");
            let i = u64::from_str_radix(&id[24..], 16).expect("number");
            assert_eq!(e["properties"], llm_properties(i), "listed {id}");
            let one = d
                .get(&format!("/v1/events/{}", e["id"].as_str().expect("id")))
                .await;
            assert_eq!(one.json["properties"], llm_properties(i), "read {id}");
        }
        // A retry is still a duplicate and a changed payload still a conflict.
        let mut changed = events[40].clone();
        changed["properties"]["tokens"] = json!(1);
        let r = d
            .post(
                "/v1/events",
                None,
                &json!({"events": [events[40], changed]}),
            )
            .await;
        assert_eq!(
            statuses(&r.json),
            ["duplicate", "conflict"],
            "round {round}"
        );
        d.restart().await;
    }
}

#[tokio::test]
async fn an_acknowledged_event_stamped_on_receipt_is_counted_by_the_next_query_at_once() {
    let d = setup().await;
    // Without a `to`, a query includes the current millisecond: the event it follows, stamped
    // with its receipt time, may share it.
    for i in 1..=50u64 {
        let r = d
            .post(
                "/v1/events",
                None,
                &json!({"id": format!("now-{i}"), "customer": "acme", "type": "llm", "properties": {"tokens": 1}}),
            )
            .await;
        assert_eq!(statuses(&r.json), ["accepted"], "{}", r.json);
        assert_eq!(total(&d).await, i.to_string(), "after event {i}");
    }
}
