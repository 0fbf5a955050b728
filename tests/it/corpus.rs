//! A corpus of malformed and hostile input against every endpoint: every reply is a 4xx
//! problem+json and the database is unchanged.

use serde_json::{json, Value};

use crate::harness::Daemon;

const FOREIGN: &str = "00000000000000000000000000";

fn deep_nesting() -> String {
    format!("{}{}", "[".repeat(5000), "]".repeat(5000))
}

async fn snapshot(d: &Daemon) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/v1/customers?limit=500",
        "/v1/meters?limit=500",
        "/v1/events?limit=500",
        "/v1/plans?limit=500",
        "/v1/invoices?limit=500",
        "/v1/payments?limit=500",
        "/v1/journal-entries?limit=500",
        "/v1/accounts?limit=500",
        "/v1/webhook-endpoints",
        "/v1/webhook-events?limit=500",
        "/v1/dead-letters?limit=500",
    ] {
        out.push(d.get(path).await.json["data"].clone());
    }
    out
}

#[tokio::test]
async fn hostile_input_is_refused_everywhere_and_changes_nothing() {
    let mut d = Daemon::start().await;
    let c = d.customer("acme", "USD").await;
    // A second tenant whose ids must stay invisible.
    d.stop();
    let out = d.cli(&["tenant", "create", "other"]);
    let other_key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("key")
        .to_string();
    d.restart().await;
    let before = snapshot(&d).await;

    let posts = [
        "/v1/customers".to_string(),
        "/v1/meters".into(),
        format!("/v1/meters/mtr_{FOREIGN}"),
        "/v1/events".into(),
        "/v1/plans".into(),
        "/v1/subscriptions".into(),
        format!("/v1/subscriptions/sub_{FOREIGN}/cancel"),
        "/v1/credit-grants".into(),
        format!("/v1/credit-grants/grt_{FOREIGN}/void"),
        "/v1/journal-entries".into(),
        "/v1/billing-runs".into(),
        format!("/v1/invoices/inv_{FOREIGN}/void"),
        format!("/v1/invoices/inv_{FOREIGN}/pay"),
        format!("/v1/payments/pay_{FOREIGN}/refund"),
        "/v1/webhook-endpoints".into(),
        format!("/v1/webhook-endpoints/whe_{FOREIGN}/rotate-secret"),
        format!("/v1/webhook-events/whv_{FOREIGN}/replay"),
        format!("/v1/dead-letters/job_{FOREIGN}/replay"),
        "/v1/dead-letters/replay".into(),
        "/v1/reconciliations".into(),
    ];
    let big = "x".repeat(10 * 1024 * 1024);
    let deep = deep_nesting();
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"{\"a\": ".to_vec()),
        ("not utf-8", vec![0x7b, 0xff, 0xfe, 0x7d]),
        ("deep nesting", deep.into_bytes()),
        ("10 MB", big.into_bytes()),
        ("wrong top-level type", b"[1, 2, 3]".to_vec()),
        ("floats for money", br#"{"customer": "acme", "amount_minor": 1.5, "currency": "USD", "category": "paid", "reason": "x", "postings": [{"account": "cash", "currency": "USD", "amount_minor": 0.5}]}"#.to_vec()),
    ];
    for path in &posts {
        for (what, body) in &bodies {
            let request = d
                .client
                .post(d.url(path))
                .bearer_auth(&d.key)
                .header("content-type", "application/json")
                .header("Idempotency-Key", format!("corpus-{what}"))
                .body(body.clone());
            // The server answers 413 from the Content-Length before reading a too-large body and
            // then closes the connection; a client still writing may see the reset instead of
            // the reply. Either way nothing is accepted.
            let r = match request.send().await {
                Ok(reply) => {
                    let status = reply.status().as_u16();
                    let headers = reply.headers().clone();
                    let bytes = reply.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    crate::harness::Resp {
                        status,
                        headers,
                        bytes,
                        json,
                    }
                }
                Err(e) if *what == "10 MB" => {
                    assert!(e.is_request() || e.is_body(), "{e}");
                    continue;
                }
                Err(e) => panic!("{path} with {what}: {e}"),
            };
            assert!(
                (400..500).contains(&r.status),
                "{path} with {what}: {} {}",
                r.status,
                r.json
            );
            assert!(
                r.content_type().starts_with("application/problem+json"),
                "{path} with {what}"
            );
            assert!(r.json["code"].as_str().is_some(), "{path} with {what}");
        }
        // Two Idempotency-Key headers, and two Authorization headers.
        let r = d
            .send(
                d.client
                    .post(d.url(path))
                    .bearer_auth(&d.key)
                    .header("Idempotency-Key", "a")
                    .header("Idempotency-Key", "b")
                    .header("content-type", "application/json")
                    .body("{}"),
            )
            .await;
        assert!(
            (400..500).contains(&r.status),
            "{path} two keys: {}",
            r.status
        );
        let r = d
            .send(
                d.client
                    .post(d.url(path))
                    .header("authorization", format!("Bearer {}", d.key))
                    .header("authorization", format!("Bearer {other_key}"))
                    .header("content-type", "application/json")
                    .body("{}"),
            )
            .await;
        r.assert_problem(401, "unauthorized");
    }
    // Another tenant's ids are 404 everywhere.
    for path in [
        format!("/v1/customers/{c}"),
        format!("/v1/customers/{c}/balance"),
        format!("/v1/customers/{c}/upcoming-invoice"),
    ] {
        d.get_as(&other_key, &path)
            .await
            .assert_problem(404, "resource_missing");
    }
    let foreign_grant = d
        .post_as(
            &other_key,
            "/v1/credit-grants",
            Some("fg"),
            &json!({"customer": c, "amount_minor": 1, "currency": "USD", "category": "paid"}),
        )
        .await;
    foreign_grant.assert_problem(404, "resource_missing");
    // Query strings.
    for path in [
        "/v1/customers?limit=abc",
        "/v1/events?from=yesterday",
        "/v1/usage?customer=acme",
        "/v1/invoices?status=maybe",
        "/v1/customers?bogus=1",
    ] {
        let r = d.get(path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.json);
        assert!(r.content_type().starts_with("application/problem+json"));
    }
    // The receiver refuses unsigned hostile bodies before reading them as anything.
    let r = d
        .send(
            d.client
                .post(d.url(&format!("/v1/hooks/whe_{FOREIGN}")))
                .body(vec![0xffu8; 64]),
        )
        .await;
    r.assert_problem(404, "resource_missing");
    let huge_batch: Vec<Value> = (0..5000)
        .map(|i| json!({"id": format!("h{i}"), "customer": "acme", "type": "t"}))
        .collect();
    d.post("/v1/events", None, &json!({"events": huge_batch}))
        .await
        .assert_problem(400, "validation_failed");
    assert_eq!(snapshot(&d).await, before, "nothing was written");
    assert_eq!(d.get("/readyz").await.status, 200, "still serving");
}
