//! Every idempotency rule of the API contract, one test each.

use serde_json::json;

use crate::harness::Daemon;

fn body(ext: &str) -> serde_json::Value {
    json!({"external_id": ext, "currency": "USD", "name": "Acme", "metadata": {"plan": "pro"}})
}

#[tokio::test]
async fn missing_key_is_400_and_nothing_is_written() {
    let d = Daemon::start().await;
    d.post("/v1/customers", None, &body("a"))
        .await
        .assert_problem(400, "idempotency_key_missing");
    assert_eq!(
        d.get("/v1/customers").await.json["data"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[tokio::test]
async fn malformed_keys_are_400() {
    let d = Daemon::start().await;
    let long = "k".repeat(256);
    for key in ["", "\"\"", "\"unterminated", long.as_str(), "has space"] {
        d.post("/v1/customers", Some(key), &body("a"))
            .await
            .assert_problem(400, "idempotency_key_invalid");
    }
    // Two headers.
    let r = d
        .send(
            d.client
                .post(d.url("/v1/customers"))
                .bearer_auth(&d.key)
                .header("content-type", "application/json")
                .header("Idempotency-Key", "one")
                .header("Idempotency-Key", "two")
                .body(body("a").to_string()),
        )
        .await;
    r.assert_problem(400, "idempotency_key_invalid");
    // 255 characters is fine.
    let ok = "k".repeat(255);
    assert_eq!(
        d.post("/v1/customers", Some(&ok), &body("a")).await.status,
        201
    );
}

#[tokio::test]
async fn replay_is_verbatim_and_marked_and_key_forms_are_equal() {
    let d = Daemon::start().await;
    let first = d.post("/v1/customers", Some("abc"), &body("a")).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("idempotent-replayed"), Some("false"));
    // The same body with keys reordered and white space, under the quoted form of the key.
    let reordered =
        r#"{ "metadata": {"plan":"pro"}, "name":"Acme",   "currency":"USD", "external_id":"a" }"#;
    let again = d
        .send(
            d.client
                .post(d.url("/v1/customers"))
                .bearer_auth(&d.key)
                .header("content-type", "application/json")
                .header("Idempotency-Key", "\"abc\"")
                .body(reordered),
        )
        .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.bytes, first.bytes, "byte for byte");
    assert_eq!(again.content_type(), first.content_type());
    assert_eq!(
        d.get("/v1/customers").await.json["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn same_key_other_body_is_422_and_executes_nothing() {
    let d = Daemon::start().await;
    assert_eq!(
        d.post("/v1/customers", Some("k"), &body("a")).await.status,
        201
    );
    d.post("/v1/customers", Some("k"), &body("b"))
        .await
        .assert_problem(422, "idempotency_key_reused");
    // Another path with the same key is another request too.
    d.post(
        "/v1/meters",
        Some("k"),
        &json!({"key": "m", "event_type": "t", "aggregation": "count"}),
    )
    .await
    .assert_problem(422, "idempotency_key_reused");
    let list = d.get("/v1/customers").await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        d.get("/v1/meters").await.json["data"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[tokio::test]
async fn a_stored_domain_error_is_replayed() {
    let d = Daemon::start().await;
    assert_eq!(
        d.post("/v1/customers", Some("k1"), &body("a")).await.status,
        201
    );
    let conflict = d.post("/v1/customers", Some("k2"), &body("a")).await;
    conflict.assert_problem(409, "customer_exists");
    assert_eq!(conflict.header("idempotent-replayed"), Some("false"));
    let replay = d.post("/v1/customers", Some("k2"), &body("a")).await;
    assert_eq!(replay.status, 409);
    assert_eq!(replay.bytes, conflict.bytes);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
}

#[tokio::test]
async fn pre_execution_rejections_are_not_stored() {
    let d = Daemon::start().await;
    let bad_json = d
        .send(
            d.client
                .post(d.url("/v1/customers"))
                .bearer_auth(&d.key)
                .header("content-type", "application/json")
                .header("Idempotency-Key", "fixme")
                .body("{nope"),
        )
        .await;
    bad_json.assert_problem(400, "invalid_json");
    d.post(
        "/v1/customers",
        Some("fixme"),
        &json!({"external_id": "a", "currency": "usd"}),
    )
    .await
    .assert_problem(400, "validation_failed");
    let fixed = d.post("/v1/customers", Some("fixme"), &body("a")).await;
    assert_eq!(fixed.status, 201);
    assert_eq!(fixed.header("idempotent-replayed"), Some("false"));
}

#[tokio::test]
async fn keys_expire_after_the_retention() {
    let d =
        Daemon::start_with("[idempotency]\nretention_secs = 1\npurge_interval_ms = 100\n").await;
    assert_eq!(
        d.post("/v1/customers", Some("k"), &body("a")).await.status,
        201
    );
    assert_eq!(
        d.post("/v1/customers", Some("k"), &body("b")).await.status,
        422
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let after = d.post("/v1/customers", Some("k"), &body("b")).await;
    assert_eq!(after.status, 201, "{}", after.json);
    assert_eq!(after.header("idempotent-replayed"), Some("false"));
}

#[tokio::test]
async fn a_key_in_flight_is_409_and_concurrent_creates_make_one_customer() {
    let d = Daemon::start().await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = d.client.clone();
        let url = d.url("/v1/customers");
        let key = d.key.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .header("Idempotency-Key", "same")
                .body(body("concurrent").to_string())
                .send()
                .await
                .expect("send");
            let status = r.status().as_u16();
            let replayed = r
                .headers()
                .get("idempotent-replayed")
                .map(|v| v.to_str().unwrap_or("").to_string());
            let bytes = r.bytes().await.expect("bytes").to_vec();
            (status, replayed, bytes)
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        let (status, replayed, bytes) = t.await.expect("task");
        match status {
            201 => created.push(bytes),
            409 => {
                let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
                assert_eq!(json["code"], "idempotency_key_in_use");
            }
            other => panic!("unexpected {other} {replayed:?}"),
        }
    }
    assert!(!created.is_empty());
    assert!(
        created.windows(2).all(|w| w[0] == w[1]),
        "every 2xx reply is identical"
    );
    let list = d.get("/v1/customers?external_id=concurrent").await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn concurrent_replays_of_a_finished_request_all_replay() {
    let d = Daemon::start().await;
    let first = d
        .post("/v1/customers", Some("done"), &body("finished"))
        .await;
    assert_eq!(first.status, 201, "{}", first.json);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let client = d.client.clone();
        let url = d.url("/v1/customers");
        let key = d.key.clone();
        let payload = body("finished").to_string();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..40 {
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .header("Idempotency-Key", "done")
                    .body(payload.clone())
                    .send()
                    .await
                    .expect("send");
                let status = r.status().as_u16();
                let replayed = r
                    .headers()
                    .get("idempotent-replayed")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let bytes = r.bytes().await.expect("bytes").to_vec();
                seen.push((status, replayed, bytes));
            }
            seen
        }));
    }
    for t in tasks {
        for (status, replayed, bytes) in t.await.expect("task") {
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&bytes));
            assert_eq!(replayed.as_deref(), Some("true"));
            assert_eq!(bytes, first.bytes);
        }
    }
}
