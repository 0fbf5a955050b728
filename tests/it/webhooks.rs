//! Inbound webhooks: the trust gate, dedupe under concurrency, processing with retries, dead
//! letters and replay, out-of-order convergence, a crash during processing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{Daemon, Resp};
use tally::webhooks::signature;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

async fn endpoint(d: &Daemon, provider: &str) -> String {
    let r = d
        .post(
            "/v1/webhook-endpoints",
            Some(&format!("ep-{provider}")),
            &json!({"provider": provider, "secret": SECRET}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    r.json["id"].as_str().expect("id").to_string()
}

async fn deliver_standard(
    d: &Daemon,
    ep: &str,
    id: &str,
    ts: i64,
    body: &str,
    secret: &str,
) -> Resp {
    let sig = signature::sign_standard(secret, id, ts, body.as_bytes()).expect("sign");
    d.send(
        d.client
            .post(d.url(&format!("/v1/hooks/{ep}")))
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", format!("v1,{sig}"))
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

async fn event_status(d: &Daemon, id: &str) -> String {
    d.get(&format!("/v1/webhook-events/{id}")).await.json["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn the_official_vector_and_the_tolerance_edges() {
    let d = Daemon::start().await;
    let ep = endpoint(&d, "standard").await;
    let body = r#"{"email":"test@example.com","username":"test_user"}"#;
    // The official vector's signature, checked at the library level (its timestamp is old).
    assert_eq!(
        signature::sign_standard(
            SECRET,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            body.as_bytes()
        )
        .as_deref(),
        Some("tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
    );
    let stale = deliver_standard(
        &d,
        &ep,
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        1_649_367_553,
        body,
        SECRET,
    )
    .await;
    stale.assert_problem(401, "signature_expired");
    let ok = deliver_standard(&d, &ep, "msg_1", now_s(), body, SECRET).await;
    assert_eq!(ok.status, 200, "{}", ok.json);
    assert_eq!(ok.json["duplicate"], false);
    deliver_standard(&d, &ep, "msg_2", now_s() - 301, body, SECRET)
        .await
        .assert_problem(401, "signature_expired");
    deliver_standard(&d, &ep, "msg_3", now_s() + 301, body, SECRET)
        .await
        .assert_problem(401, "signature_expired");
    assert_eq!(
        deliver_standard(&d, &ep, "msg_4", now_s() - 299, body, SECRET)
            .await
            .status,
        200
    );
    // One character changed after signing.
    let sig = signature::sign_standard(SECRET, "msg_5", now_s(), body.as_bytes()).expect("sign");
    let tampered = d
        .send(
            d.client
                .post(d.url(&format!("/v1/hooks/{ep}")))
                .header("webhook-id", "msg_5")
                .header("webhook-timestamp", now_s().to_string())
                .header("webhook-signature", format!("v1,{sig}"))
                .body(body.replace("test_user", "test_usex")),
        )
        .await;
    tampered.assert_problem(401, "signature_invalid");
    let unsigned = d
        .send(d.client.post(d.url(&format!("/v1/hooks/{ep}"))).body(body))
        .await;
    unsigned.assert_problem(400, "signature_missing");
    d.send(
        d.client
            .post(d.url("/v1/hooks/whe_00000000000000000000000000"))
            .body(body),
    )
    .await
    .assert_problem(404, "resource_missing");
    let events = d.get("/v1/webhook-events").await;
    assert_eq!(
        events.json["data"].as_array().map(Vec::len),
        Some(2),
        "only valid deliveries are stored"
    );
    assert!(d.metric("tally_webhooks_rejected_total").await >= 5.0);
}

#[tokio::test]
async fn stripe_signatures_rotation_and_v0_only() {
    let d = Daemon::start_with("[webhooks]\nrotation_overlap_secs = 2\n").await;
    let ep = endpoint(&d, "stripe").await;
    let send = |secret: String, scheme: &'static str, id: &'static str| {
        let d = &d;
        let ep = ep.clone();
        async move {
            let body =
                json!({"id": id, "type": "customer.created", "data": {"object": {}}}).to_string();
            let t = now_s();
            let sig = signature::sign_stripe(&secret, t, body.as_bytes());
            d.send(
                d.client
                    .post(d.url(&format!("/v1/hooks/{ep}")))
                    .header("Stripe-Signature", format!("t={t},{scheme}={sig}"))
                    .body(body),
            )
            .await
        }
    };
    assert_eq!(send(SECRET.to_string(), "v1", "evt_1").await.status, 200);
    send(SECRET.to_string(), "v0", "evt_2")
        .await
        .assert_problem(400, "signature_malformed");
    // Stripe rolls its secret itself; Tally cannot make one up.
    d.post(
        &format!("/v1/webhook-endpoints/{ep}/rotate-secret"),
        Some("rot-empty"),
        &json!({}),
    )
    .await
    .assert_problem(400, "validation_failed");
    let rotated = d
        .post(
            &format!("/v1/webhook-endpoints/{ep}/rotate-secret"),
            Some("rot"),
            &json!({"secret": "whsec_the_rolled_stripe_secret_42"}),
        )
        .await;
    let new_secret = rotated.json["secret"]
        .as_str()
        .expect("new secret shown once")
        .to_string();
    assert_eq!(rotated.json["active_secrets"], 2);
    assert_eq!(
        send(SECRET.to_string(), "v1", "evt_3").await.status,
        200,
        "old secret valid during the overlap"
    );
    assert_eq!(send(new_secret.clone(), "v1", "evt_4").await.status, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    send(SECRET.to_string(), "v1", "evt_5")
        .await
        .assert_problem(401, "signature_invalid");
    assert_eq!(send(new_secret, "v1", "evt_6").await.status, 200);
    let shown = d.get(&format!("/v1/webhook-endpoints/{ep}")).await;
    assert!(
        shown.json.get("secret").is_none(),
        "the secret is never shown again"
    );
    // Unknown types are stored and ignored.
    d.eventually("ignored", || async {
        d.get("/v1/webhook-events?status=ignored").await.json["data"]
            .as_array()
            .is_some_and(|a| a.len() == 4)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_deliveries_make_one_receipt_and_one_processing() {
    let d = Daemon::start().await;
    let ep = endpoint(&d, "standard").await;
    let body =
        json!({"type": "customer.upserted", "data": {"external_id": "hooked", "currency": "USD"}})
            .to_string();
    let ts = now_s();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let client = d.client.clone();
        let url = d.url(&format!("/v1/hooks/{ep}"));
        let body = body.clone();
        let sig = signature::sign_standard(SECRET, "msg_same", ts, body.as_bytes()).expect("sign");
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .header("webhook-id", "msg_same")
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", format!("v1,{sig}"))
                .body(body)
                .send()
                .await
                .expect("send");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let (status, json) = t.await.expect("task");
        assert_eq!(status, 200);
        ids.push(json["id"].as_str().expect("id").to_string());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    d.eventually("processing", || async {
        event_status(&d, &ids[0]).await == "processed"
    })
    .await;
    let events = d.get("/v1/webhook-events").await;
    assert_eq!(events.json["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        events.json["data"][0]["attempts"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        d.get("/v1/customers?external_id=hooked").await.json["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn failures_retry_then_dead_letter_then_replay_processes_once() {
    let d = Daemon::start_with("[jobs]\nmax_attempts = 3\n").await;
    let ep = endpoint(&d, "standard").await;
    let usage = json!({"type": "usage.recorded", "data": {"id": "u1", "customer": "later", "type": "call"}}).to_string();
    let r = deliver_standard(&d, &ep, "msg_u", now_s(), &usage, SECRET).await;
    let id = r.json["id"].as_str().expect("id").to_string();
    d.eventually("dead letter", || async {
        event_status(&d, &id).await == "dead"
    })
    .await;
    let dead = d.get("/v1/dead-letters?kind=webhook.process").await;
    let job = dead.json["data"][0].clone();
    assert_eq!(job["attempts"].as_array().map(Vec::len), Some(3));
    assert!(job["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("later")));
    // Fix the cause, then replay.
    d.customer("later", "USD").await;
    let replay = d
        .post(
            &format!(
                "/v1/dead-letters/{}/replay",
                job["id"].as_str().expect("id")
            ),
            Some("rp"),
            &json!({}),
        )
        .await;
    assert_eq!(replay.status, 200, "{}", replay.json);
    let again = d
        .post(
            &format!(
                "/v1/dead-letters/{}/replay",
                job["id"].as_str().expect("id")
            ),
            Some("rp"),
            &json!({}),
        )
        .await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    d.eventually("processed", || async {
        event_status(&d, &id).await == "processed"
    })
    .await;
    // Replaying a processed event has no second effect.
    let rerun = d
        .post(
            &format!("/v1/webhook-events/{id}/replay"),
            Some("rerun"),
            &json!({}),
        )
        .await;
    assert_eq!(rerun.status, 200);
    d.eventually("processed again", || async {
        event_status(&d, &id).await == "processed"
    })
    .await;
    let events = d.get("/v1/events?customer=later").await;
    assert_eq!(events.json["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        d.get("/v1/dead-letters").await.json["data"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[tokio::test]
async fn an_out_of_order_pair_converges_to_the_in_order_state() {
    let d = Daemon::start().await;
    let ep = endpoint(&d, "standard").await;
    let customer = |ext: &str| {
        json!({"type": "customer.upserted", "data": {"external_id": ext, "currency": "USD"}})
            .to_string()
    };
    let usage = |ext: &str| {
        json!({"type": "usage.recorded", "data": {"id": format!("u-{ext}"), "customer": ext, "type": "call"}}).to_string()
    };
    // In order.
    deliver_standard(&d, &ep, "a1", now_s(), &customer("inorder"), SECRET).await;
    deliver_standard(&d, &ep, "a2", now_s(), &usage("inorder"), SECRET).await;
    // Reversed.
    deliver_standard(&d, &ep, "b2", now_s(), &usage("reversed"), SECRET).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    deliver_standard(&d, &ep, "b1", now_s(), &customer("reversed"), SECRET).await;
    d.eventually("both processed", || async {
        d.get("/v1/webhook-events?status=processed").await.json["data"]
            .as_array()
            .is_some_and(|a| a.len() == 4)
    })
    .await;
    for ext in ["inorder", "reversed"] {
        let events = d.get(&format!("/v1/events?customer={ext}")).await;
        assert_eq!(
            events.json["data"].as_array().map(Vec::len),
            Some(1),
            "{ext}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_during_processing_processes_exactly_once_after_restart() {
    // A long first backoff keeps the delivery pending across the kill.
    let mut d = Daemon::start_with("[jobs]\nbackoff_base_ms = 300\nlease_ms = 500\n[notifications]\nconnect_timeout_ms = 200\ntimeout_ms = 400\n").await;
    let ep = endpoint(&d, "standard").await;
    let usage = json!({"type": "usage.recorded", "data": {"events": [
        {"id": "k1", "customer": "crashy", "type": "call"}, {"id": "k2", "customer": "crashy", "type": "call"}]}}).to_string();
    let r = deliver_standard(&d, &ep, "msg_crash", now_s(), &usage, SECRET).await;
    let id = r.json["id"].as_str().expect("id").to_string();
    tokio::time::sleep(Duration::from_millis(100)).await;
    d.kill9();
    d.restart().await;
    d.customer("crashy", "USD").await;
    d.eventually("processed after restart", || async {
        event_status(&d, &id).await == "processed"
    })
    .await;
    let events = d.get("/v1/events?customer=crashy").await;
    assert_eq!(events.json["data"].as_array().map(Vec::len), Some(2));
    // A redelivery after the restart is acknowledged as a duplicate.
    let again = deliver_standard(&d, &ep, "msg_crash", now_s(), &usage, SECRET).await;
    assert_eq!(again.json["duplicate"], true);
}

#[tokio::test]
async fn a_stripe_vector_computed_by_an_independent_hmac_is_accepted() {
    use hmac::{Hmac, Mac};
    let d = Daemon::start().await;
    let ep = endpoint(&d, "stripe").await;
    let body = r#"{"id":"evt_independent","object":"event","type":"invoice.created","data":{"object":{}}}"#;
    let t = now_s();
    // HMAC-SHA256 over "{t}.{body}" keyed by the secret string's bytes, hex: computed here with
    // the hmac crate directly, not with Tally's signing helper.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{t}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let r = d
        .send(
            d.client
                .post(d.url(&format!("/v1/hooks/{ep}")))
                .header("Stripe-Signature", format!("t={t},v1={hex},v0=ignored"))
                .body(body),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["duplicate"], false);
    let flipped = hex.replace(&hex[..1], if &hex[..1] == "a" { "b" } else { "a" });
    let bad = d
        .send(
            d.client
                .post(d.url(&format!("/v1/hooks/{ep}")))
                .header("Stripe-Signature", format!("t={t},v1={flipped}"))
                .body(body),
        )
        .await;
    bad.assert_problem(401, "signature_invalid");
}

#[tokio::test]
async fn the_receiver_obeys_the_body_limit() {
    let d = Daemon::start_with("[http]\nbody_limit_bytes = 2048\n").await;
    let ep = endpoint(&d, "standard").await;
    let body = format!("{{\"type\":\"x\",\"pad\":\"{}\"}}", "p".repeat(4096));
    deliver_standard(&d, &ep, "big", now_s(), &body, SECRET)
        .await
        .assert_problem(413, "body_too_large");
    assert_eq!(
        d.get("/v1/webhook-events").await.json["data"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
}

#[tokio::test]
async fn a_signed_body_that_is_not_json_is_invalid_payload_and_never_retried() {
    let d = Daemon::start().await;
    let ep = endpoint(&d, "standard").await;
    let mut ids = Vec::new();
    for (n, body) in ["not json", "", "[1, 2]"].into_iter().enumerate() {
        let r = deliver_standard(&d, &ep, &format!("msg_bad{n}"), now_s(), body, SECRET).await;
        assert_eq!(r.status, 200, "{}", r.json);
        ids.push((r.json["id"].as_str().expect("id").to_string(), body));
    }
    for (id, body) in &ids {
        d.eventually("invalid_payload", || async {
            event_status(&d, id).await == "invalid_payload"
        })
        .await;
        let e = d.get(&format!("/v1/webhook-events/{id}")).await;
        assert_eq!(e.json["payload"], Value::Null, "{}", e.json);
        assert_eq!(e.json["payload_text"], *body);
        assert!(e.json["processed_at"].is_string());
        let attempts = e.json["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 1, "{}", e.json);
        assert_eq!(attempts[0]["error"], Value::Null);
    }
    // Still one attempt each later: nothing is retried, nothing dead-lettered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = d.get("/v1/webhook-events?status=invalid_payload").await;
    assert_eq!(list.status, 200, "{}", list.json);
    let data = list.json["data"].as_array().expect("data");
    assert_eq!(data.len(), 3);
    for e in data {
        assert_eq!(e["attempts"].as_array().map(Vec::len), Some(1));
        assert!(e["payload"].is_null() && e["payload_text"].is_string());
    }
    let dead = d.get("/v1/dead-letters").await;
    assert_eq!(dead.json["data"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn a_stripe_endpoint_needs_stripes_secret_and_unpadded_standard_secrets_work() {
    let d = Daemon::start().await;
    for (idem, body) in [
        ("no-secret", json!({"provider": "stripe"})),
        (
            "not-stripe",
            json!({"provider": "stripe", "secret": "sk_test_0123456789abcdef"}),
        ),
    ] {
        let r = d.post("/v1/webhook-endpoints", Some(idem), &body).await;
        r.assert_problem(400, "validation_failed");
        assert_eq!(r.fields(), ["secret"]);
    }
    let listed = d.get("/v1/webhook-endpoints").await;
    assert_eq!(listed.json["data"].as_array().map(Vec::len), Some(0));
    // Standard Webhooks secrets in unpadded base64 (20 bytes: one `=` dropped).
    let unpadded = "whsec_AAECAwQFBgcICQoLDA0ODxAREhM";
    let r = d
        .post(
            "/v1/webhook-endpoints",
            Some("unpadded"),
            &json!({"provider": "standard", "secret": unpadded}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let ep = r.json["id"].as_str().expect("id");
    let body = json!({"type": "ping"}).to_string();
    let delivered = deliver_standard(&d, ep, "msg_unpadded", now_s(), &body, unpadded).await;
    assert_eq!(delivered.status, 200, "{}", delivered.json);
}

#[tokio::test]
async fn a_bulk_dead_letter_replay_needs_a_filter_or_all() {
    let d = Daemon::start_with("[jobs]\nmax_attempts = 1\n").await;
    let ep = endpoint(&d, "standard").await;
    let usage = json!({"type": "usage.recorded", "data": {"id": "u1", "customer": "nobody", "type": "call"}}).to_string();
    let r = deliver_standard(&d, &ep, "msg_dead", now_s(), &usage, SECRET).await;
    let id = r.json["id"].as_str().expect("id").to_string();
    d.eventually("dead letter", || async {
        event_status(&d, &id).await == "dead"
    })
    .await;
    // The outbox recorded it, in the write that made it dead.
    let dead = d
        .get("/v1/notifications?type=dead_letter.created")
        .await
        .json["data"]
        .clone();
    assert_eq!(dead.as_array().map_or(0, Vec::len), 1, "{dead}");
    assert_eq!(
        dead[0]["data"]["object"]["kind"], "webhook.process",
        "{dead}"
    );
    let empty = d
        .send(
            d.client
                .post(d.url("/v1/dead-letters/replay"))
                .bearer_auth(&d.key)
                .header("Idempotency-Key", "bulk-empty"),
        )
        .await;
    empty.assert_problem(400, "validation_failed");
    assert_eq!(empty.fields(), ["all"]);
    for (idem, body) in [
        ("bulk-braces", json!({})),
        ("bulk-false", json!({"all": false})),
    ] {
        let r = d.post("/v1/dead-letters/replay", Some(idem), &body).await;
        r.assert_problem(400, "validation_failed");
    }
    let still = d.get("/v1/dead-letters").await;
    assert_eq!(still.json["data"].as_array().map(Vec::len), Some(1));
    let all = d
        .post(
            "/v1/dead-letters/replay",
            Some("bulk-all"),
            &json!({"all": true}),
        )
        .await;
    assert_eq!(all.status, 200, "{}", all.json);
    assert_eq!(all.json["replayed"].as_array().map(Vec::len), Some(1));
    let filtered = d
        .post(
            "/v1/dead-letters/replay",
            Some("bulk-kind"),
            &json!({"kind": "webhook.process"}),
        )
        .await;
    assert_eq!(filtered.status, 200, "{}", filtered.json);
}
