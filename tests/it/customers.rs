//! Customers: reads, pagination, tenant isolation, group commit.

use serde_json::json;

use crate::harness::Daemon;

#[tokio::test]
async fn pagination_walks_every_customer_once() {
    let d = Daemon::start().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(d.customer(&format!("c{i}"), "EUR").await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/customers?limit=3&starting_after={c}"),
            None => "/v1/customers?limit=3".to_string(),
        };
        let page = d.get(&path).await;
        assert_eq!(page.status, 200);
        for c in page.json["data"].as_array().expect("data") {
            seen.push(c["id"].as_str().expect("id").to_string());
        }
        if page.json["has_more"] == false {
            assert!(page.json["next_cursor"].is_null());
            break;
        }
        cursor = page.json["next_cursor"].as_str().map(str::to_string);
    }
    assert_eq!(seen, ids);
    let one = d.get(&format!("/v1/customers/{}", ids[3])).await;
    assert_eq!(one.json["external_id"], "c3");
    let by_ext = d.get("/v1/customers?external_id=c5").await;
    assert_eq!(by_ext.json["data"][0]["id"], ids[5].as_str());
    d.get("/v1/customers?limit=0")
        .await
        .assert_problem(400, "validation_failed");
    d.get("/v1/customers?limit=501")
        .await
        .assert_problem(400, "validation_failed");
    d.get("/v1/customers/cus_00000000000000000000000000")
        .await
        .assert_problem(404, "resource_missing");
}

#[tokio::test]
async fn tenants_are_isolated_even_with_the_same_idempotency_key() {
    let mut d = Daemon::start().await;
    d.stop();
    let out = d.cli(&["tenant", "create", "other"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let other_key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("api key line")
        .to_string();
    d.restart().await;
    let body = json!({"external_id": "shared", "currency": "USD"});
    let a = d.post("/v1/customers", Some("same-key"), &body).await;
    let b = d
        .post_as(&other_key, "/v1/customers", Some("same-key"), &body)
        .await;
    assert_eq!((a.status, b.status), (201, 201));
    assert_ne!(a.json["id"], b.json["id"]);
    assert_eq!(b.header("idempotent-replayed"), Some("false"));
    let foreign = d
        .get_as(
            &other_key,
            &format!("/v1/customers/{}", a.json["id"].as_str().expect("id")),
        )
        .await;
    foreign.assert_problem(404, "resource_missing");
    let list = d.get_as(&other_key, "/v1/customers").await;
    assert_eq!(list.json["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(list.json["data"][0]["id"], b.json["id"]);
}

#[tokio::test]
async fn many_requests_share_commits_and_a_failing_neighbour_changes_nothing() {
    let d = Daemon::start().await;
    d.customer("taken", "USD").await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = d.client.clone();
        let url = d.url("/v1/customers");
        let key = d.key.clone();
        let ext = if i % 5 == 0 {
            "taken".to_string()
        } else {
            format!("ok{i}")
        };
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .header("Idempotency-Key", format!("gc-{i}"))
                .body(json!({"external_id": ext, "currency": "USD"}).to_string())
                .send()
                .await
                .expect("send");
            (i, r.status().as_u16())
        }));
    }
    for t in tasks {
        let (i, status) = t.await.expect("task");
        let expected = if i % 5 == 0 { 409 } else { 201 };
        assert_eq!(status, expected, "request {i}");
    }
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/customers?limit=500&starting_after={c}"),
            None => "/v1/customers?limit=500".into(),
        };
        let page = d.get(&path).await;
        count += page.json["data"].as_array().map_or(0, Vec::len);
        if page.json["has_more"] != true {
            break;
        }
        cursor = page.json["next_cursor"].as_str().map(str::to_string);
    }
    assert_eq!(count, 1 + 160);
    let sum = d.metric("tally_writer_batch_size_sum").await;
    let batches = d.metric("tally_writer_batch_size_count").await;
    assert!(
        batches > 0.0 && sum > batches,
        "mean batch size above 1: sum {sum}, count {batches}"
    );
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let d = Daemon::start().await;
    assert_eq!(d.get("/healthz").await.status, 200);
    assert_eq!(d.get("/readyz").await.status, 200);
    let openapi = d.get("/openapi.json").await;
    assert_eq!(openapi.status, 200);
    assert!(openapi.json["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    for path in [
        "/v1/customers",
        "/v1/events",
        "/v1/credit-grants",
        "/v1/billing-runs",
        "/v1/hooks/{endpoint_id}",
        "/v1/invoices/{id}/pay",
        "/v1/reconciliations",
    ] {
        assert!(
            openapi.json["paths"].get(path).is_some(),
            "openapi lacks {path}"
        );
    }
    d.customer("m", "USD").await;
    let text = d
        .client
        .get(d.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "tally_http_requests_total",
        "tally_writer_queue_depth",
        "tally_writer_batch_size_bucket",
        "tally_writer_commit_seconds_bucket",
    ] {
        assert!(text.contains(name), "metrics lack {name}");
    }
}
