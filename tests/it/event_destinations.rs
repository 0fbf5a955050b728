//! Event destinations over HTTP: create, list, get, update, rotate; bad input refused with
//! nothing stored; and delivery of a real event to a receiver on 127.0.0.1.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::harness::Daemon;

const OPEN: &str = "[notifications]\nallow_http = true\nallow_private_targets = true\n";

async fn create(d: &Daemon, key: &str, body: Value) -> crate::harness::Resp {
    d.post("/v1/event-destinations", Some(key), &body).await
}

async fn count(d: &Daemon) -> usize {
    let r = d.get("/v1/event-destinations").await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["data"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn destinations_are_created_listed_read_updated_and_rotated() {
    let d = Daemon::start_with(OPEN).await;
    let r = create(
        &d,
        "evd-1",
        json!({"url": "http://127.0.0.1:9/hook", "event_types": ["invoice.paid", "customer.created"], "description": "billing app"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let id = r.json["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("evd_"));
    let secret = r.json["secret"].as_str().expect("secret once").to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(r.json["status"], "enabled");
    assert_eq!(r.json["signing_secrets"], 1);
    // A replay answers the same, secret included; nothing new is created.
    let again = create(
        &d,
        "evd-1",
        json!({"url": "http://127.0.0.1:9/hook", "event_types": ["invoice.paid", "customer.created"], "description": "billing app"}),
    )
    .await;
    assert_eq!(again.json, r.json);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(count(&d).await, 1);

    let got = d.get(&format!("/v1/event-destinations/{id}")).await;
    assert_eq!(got.status, 200);
    assert!(got.json.get("secret").is_none(), "{}", got.json);
    assert_eq!(
        got.json["event_types"],
        json!(["invoice.paid", "customer.created"])
    );
    assert!(!String::from_utf8_lossy(&got.bytes).contains(&secret));
    let listed = d.get("/v1/event-destinations").await;
    assert_eq!(listed.json["data"][0]["id"], id.as_str());
    assert!(!String::from_utf8_lossy(&listed.bytes).contains(&secret));

    let path = format!("/v1/event-destinations/{id}");
    let up = d
        .post(
            &path,
            Some("evd-up"),
            &json!({"status": "disabled", "event_types": ["*"], "description": null}),
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.json);
    assert_eq!(up.json["status"], "disabled");
    assert_eq!(up.json["event_types"], json!(["*"]));
    assert_eq!(up.json["description"], Value::Null);
    assert_eq!(up.json["url"], "http://127.0.0.1:9/hook");

    let rot = d
        .post(
            &format!("{path}/rotate-secret"),
            Some("evd-rot"),
            &json!({}),
        )
        .await;
    assert_eq!(rot.status, 200, "{}", rot.json);
    let new_secret = rot.json["secret"].as_str().expect("new secret");
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert_eq!(rot.json["signing_secrets"], 2);
    assert!(rot.json["previous_secret_expires_at"].is_string());
    let after = d.get(&path).await;
    assert!(after.json.get("secret").is_none());
    assert_eq!(after.json["signing_secrets"], 2);
    // A rotation during the overlap replaces the previous secret: still two, never more.
    for key in ["evd-rot-2", "evd-rot-3"] {
        let again = d
            .post(&format!("{path}/rotate-secret"), Some(key), &json!({}))
            .await;
        assert_eq!(again.status, 200, "{}", again.json);
        assert_eq!(again.json["signing_secrets"], 2, "{}", again.json);
    }
}

#[tokio::test]
async fn bad_destinations_are_refused_naming_the_field_and_nothing_is_stored() {
    let d = Daemon::start_with("[notifications]\nallow_http = false\n").await;
    let cases = [
        (json!({"url": "not a url", "event_types": ["*"]}), "url"),
        (
            json!({"url": "ftp://example.com/x", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "http://example.com/x", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://127.0.0.1/x", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://169.254.169.254/latest", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://localhost/x", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://[::1]/x", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://93.184.216.34/x", "event_types": ["invoice.created"]}),
            "event_types[0]",
        ),
        (
            json!({"url": "https://93.184.216.34/x", "event_types": []}),
            "event_types",
        ),
        (
            json!({"url": "https://93.184.216.34/x", "event_types": ["*", "invoice.paid"]}),
            "event_types",
        ),
        (json!({"event_types": ["*"]}), "url"),
        (
            json!({"url": "https://93.184.216.34/x", "event_types": ["*"], "colour": "red"}),
            "colour",
        ),
    ];
    for (i, (body, field)) in cases.iter().enumerate() {
        let r = create(&d, &format!("bad-{i}"), body.clone()).await;
        r.assert_problem(400, "validation_failed");
        assert_eq!(r.fields(), [field.to_string()], "{body}: {}", r.json);
    }
    assert_eq!(count(&d).await, 0, "nothing stored");
    let missing = d.get("/v1/event-destinations/evd_nope").await;
    missing.assert_problem(404, "resource_missing");
}

#[tokio::test]
async fn updates_are_checked_and_another_tenants_destination_is_not_found() {
    let mut d = Daemon::start_with(OPEN).await;
    let r = create(
        &d,
        "evd-a",
        json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}),
    )
    .await;
    let id = r.json["id"].as_str().expect("id").to_string();
    let path = format!("/v1/event-destinations/{id}");
    for (i, (body, field)) in [
        (json!({"status": "paused"}), "status"),
        (json!({"url": "gopher://x"}), "url"),
        (json!({"event_types": ["nope.happened"]}), "event_types[0]"),
        (json!({"secret": "whsec_x"}), "secret"),
    ]
    .iter()
    .enumerate()
    {
        let up = d.post(&path, Some(&format!("up-{i}")), body).await;
        up.assert_problem(400, "validation_failed");
        assert_eq!(up.fields(), [field.to_string()], "{}", up.json);
    }
    let unchanged = d.get(&path).await;
    assert_eq!(unchanged.json["status"], "enabled");
    assert_eq!(unchanged.json["event_types"], json!(["*"]));

    d.stop();
    let out = d.cli(&["tenant", "create", "other"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let other = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("api key line")
        .to_string();
    d.restart().await;
    d.get_as(&other, &path)
        .await
        .assert_problem(404, "resource_missing");
    d.post_as(&other, &path, Some("x-up"), &json!({"status": "disabled"}))
        .await
        .assert_problem(404, "resource_missing");
    d.post_as(
        &other,
        &format!("{path}/rotate-secret"),
        Some("x-rot"),
        &json!({}),
    )
    .await
    .assert_problem(404, "resource_missing");
    let theirs = d.get_as(&other, "/v1/event-destinations").await;
    assert_eq!(theirs.json["data"], json!([]));
    d.get("/v1/notifications/ntf_nope/deliveries")
        .await
        .assert_problem(404, "resource_missing");
    d.post(
        "/v1/notifications/ntf_nope/resend",
        Some("rs-1"),
        &json!({}),
    )
    .await
    .assert_problem(404, "resource_missing");
}

type Hits = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

#[derive(Clone, Default)]
struct Receiver {
    hits: Hits,
    /// Statuses to answer, in order; 200 once exhausted.
    script: Arc<Mutex<Vec<u16>>>,
    /// How long each answer takes.
    delay_ms: u64,
}

async fn record(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (axum::http::StatusCode, &'static str) {
    r.hits.lock().expect("lock").push((headers, body.to_vec()));
    tokio::time::sleep(std::time::Duration::from_millis(r.delay_ms)).await;
    let mut script = r.script.lock().expect("lock");
    let status = if script.is_empty() {
        200
    } else {
        script.remove(0)
    };
    (
        axum::http::StatusCode::from_u16(status).expect("status"),
        "ok",
    )
}

async fn receiver() -> (String, Hits) {
    scripted(Vec::new()).await
}

async fn scripted(script: Vec<u16>) -> (String, Hits) {
    serve(Receiver {
        hits: Arc::default(),
        script: Arc::new(Mutex::new(script)),
        delay_ms: 0,
    })
    .await
}

async fn slow(delay_ms: u64) -> (String, Hits) {
    serve(Receiver {
        delay_ms,
        ..Receiver::default()
    })
    .await
}

async fn serve(state: Receiver) -> (String, Hits) {
    let hits = Arc::clone(&state.hits);
    let app = Router::new().route("/hook", post(record)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), hits)
}

fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("mac");
    mac.update(format!("{}.{}.", get("webhook-id"), get("webhook-timestamp")).as_bytes());
    mac.update(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    get("webhook-signature").split(' ').any(|s| s == expected)
}

/// Needs the `customer.created` emitter: creating a customer records the notification.
#[tokio::test]
async fn a_created_customer_is_delivered_signed_and_resent_with_the_same_id() {
    let d = Daemon::start_with(OPEN).await;
    let (url, hits) = receiver().await;
    let r = create(
        &d,
        "evd-live",
        json!({"url": url, "event_types": ["customer.created"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let secret = r.json["secret"].as_str().expect("secret").to_string();
    let evd = r.json["id"].as_str().expect("id").to_string();
    d.customer("delivered-1", "USD").await;
    d.eventually("a delivery", || async {
        !hits.lock().expect("lock").is_empty()
    })
    .await;
    let (headers, body) = hits.lock().expect("lock")[0].clone();
    assert!(verify(&secret, &headers, &body), "signature verifies");
    let sent: Value = serde_json::from_slice(&body).expect("json body");
    assert_eq!(sent["type"], "customer.created");
    let ntf = headers["webhook-id"].to_str().expect("id").to_string();
    assert_eq!(sent["id"], ntf.as_str());
    let path = format!("/v1/notifications/{ntf}/deliveries");
    d.eventually("the delivery recorded", || async {
        d.get(&path).await.json["data"][0]["status"] == "delivered"
    })
    .await;
    let rows = d.get(&path).await;
    assert_eq!(rows.json["data"][0]["destination"], evd.as_str());
    assert_eq!(rows.json["data"][0]["attempts"][0]["status_code"], 200);

    let resent = d
        .post(
            &format!("/v1/notifications/{ntf}/resend"),
            Some("resend-1"),
            &json!({"destination": evd}),
        )
        .await;
    assert_eq!(resent.status, 202, "{}", resent.json);
    assert_eq!(resent.json["queued"], json!([evd]), "{}", resent.json);
    assert_eq!(resent.json["live"], json!([]), "{}", resent.json);
    d.eventually("the resend", || async {
        hits.lock().expect("lock").len() == 2
    })
    .await;
    let (again, _) = hits.lock().expect("lock")[1].clone();
    assert_eq!(again["webhook-id"], headers["webhook-id"]);
    d.eventually("two attempts recorded", || async {
        d.get(&path).await.json["data"][0]["attempts"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    })
    .await;
    assert!(d.metric("tally_deliveries_total").await >= 2.0);
}

/// A delivery still retrying is live: a resend adds no job (the receiver hears nothing more
/// before the schedule's next attempt) and the answer says so.
#[tokio::test]
async fn resending_a_live_delivery_adds_no_second_delivery() {
    let d = Daemon::start_with(
        "[notifications]\nallow_http = true\nallow_private_targets = true\nretry_schedule_secs = [0, 3600]\n",
    )
    .await;
    let (url, hits) = scripted(vec![500]).await;
    let r = create(
        &d,
        "evd-live-resend",
        json!({"url": url, "event_types": ["customer.created"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let evd = r.json["id"].as_str().expect("id").to_string();
    d.customer("retrying-1", "USD").await;
    d.eventually("the first attempt", || async {
        !hits.lock().expect("lock").is_empty()
    })
    .await;
    let ntf = webhook_ids(&hits)[0].clone();
    let path = format!("/v1/notifications/{ntf}/deliveries");
    d.eventually("the failure recorded", || async {
        d.get(&path).await.json["data"][0]["attempts"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    for (key, body) in [
        ("live-all", json!({})),
        ("live-one", json!({"destination": evd})),
    ] {
        let resent = d
            .post(&format!("/v1/notifications/{ntf}/resend"), Some(key), &body)
            .await;
        assert_eq!(resent.status, 202, "{}", resent.json);
        assert_eq!(resent.json["live"], json!([evd]), "{}", resent.json);
        assert_eq!(resent.json["queued"], json!([]), "{}", resent.json);
        assert_eq!(resent.json["destinations"], json!([evd]), "{}", resent.json);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(hits.lock().expect("lock").len(), 1, "no second delivery");
    let rows = d.get(&path).await;
    assert_eq!(rows.json["data"][0]["status"], "pending", "{}", rows.json);
    assert_eq!(
        rows.json["data"][0]["attempts"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn the_cli_lists_notifications_and_refuses_to_resend_an_unknown_one() {
    let mut d = Daemon::start_with(OPEN).await;
    d.stop();
    let out = d.cli(&["notifications", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ID"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "no notification yet: {stdout}");
    let out = d.cli(&["notifications", "resend", "ntf_nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a notification id"));
    let missing = format!("ntf_{}", "0".repeat(26));
    let out = d.cli(&["notifications", "resend", &missing]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no notification"), "{stderr}");
}

/// Needs the `customer.created` emitter.
#[tokio::test]
async fn failures_are_retried_on_the_schedule_with_one_id_then_dead_and_replayable() {
    let d = Daemon::start_with(
        "[notifications]\nallow_http = true\nallow_private_targets = true\nretry_schedule_secs = [0, 0, 0]\n",
    )
    .await;
    let (url, hits) = scripted(vec![500, 500, 200, 503, 503, 503]).await;
    let r = create(&d, "evd-r", json!({"url": url, "event_types": ["*"]})).await;
    assert_eq!(r.status, 201, "{}", r.json);
    d.customer("retried-1", "USD").await;
    d.eventually("three attempts", || async {
        hits.lock().expect("lock").len() == 3
    })
    .await;
    let ids: Vec<String> = hits
        .lock()
        .expect("lock")
        .iter()
        .map(|(h, _)| h["webhook-id"].to_str().expect("id").to_string())
        .collect();
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    let path = format!("/v1/notifications/{}/deliveries", ids[0]);
    d.eventually("delivered", || async {
        d.get(&path).await.json["data"][0]["status"] == "delivered"
    })
    .await;
    let codes: Vec<Value> = d.get(&path).await.json["data"][0]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, [json!(500), json!(500), json!(200)]);

    // The next one fails three times: failed, and a dead letter that replays.
    d.customer("retried-2", "USD").await;
    d.eventually("a dead letter", || async {
        d.get("/v1/dead-letters?kind=notification.deliver")
            .await
            .json["data"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    let dead = d.get("/v1/dead-letters?kind=notification.deliver").await;
    let job = dead.json["data"][0]["id"]
        .as_str()
        .expect("job id")
        .to_string();
    let second = hits.lock().expect("lock")[3].0["webhook-id"]
        .to_str()
        .expect("id")
        .to_string();
    let path = format!("/v1/notifications/{second}/deliveries");
    assert_eq!(d.get(&path).await.json["data"][0]["status"], "failed");
    let replay = d
        .post(
            &format!("/v1/dead-letters/{job}/replay"),
            Some("dl-1"),
            &json!({}),
        )
        .await;
    assert!(replay.status < 300, "{}", replay.json);
    d.eventually("delivered after the replay", || async {
        d.get(&path).await.json["data"][0]["status"] == "delivered"
    })
    .await;
    // The dead letter's own `dead_letter.created` goes to this destination too, in no set
    // order: the replayed delivery is one of the hits after the replay.
    let after_replay = webhook_ids(&hits).split_off(6);
    assert!(after_replay.contains(&second), "{after_replay:?}");
}

fn webhook_ids(hits: &Hits) -> Vec<String> {
    hits.lock()
        .expect("lock")
        .iter()
        .map(|(h, _)| h["webhook-id"].to_str().expect("id").to_string())
        .collect()
}

/// Needs the `customer.created` emitter.
#[tokio::test]
async fn a_slow_destination_does_not_delay_a_healthy_one_even_with_one_worker() {
    let d = Daemon::start_with(
        "[jobs]\nworkers = 1\n[notifications]\nallow_http = true\nallow_private_targets = true\nconnect_timeout_ms = 500\ntimeout_ms = 1500\n",
    )
    .await;
    let (slow_url, slow_hits) = slow(1400).await;
    let (fast_url, fast_hits) = receiver().await;
    for (key, url) in [("evd-slow", &slow_url), ("evd-fast", &fast_url)] {
        let r = create(&d, key, json!({"url": url, "event_types": ["*"]})).await;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    let started = std::time::Instant::now();
    for i in 0..3 {
        d.customer(&format!("iso-{i}"), "USD").await;
    }
    d.eventually("the healthy destination's deliveries", || async {
        fast_hits.lock().expect("lock").len() == 3
    })
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1000),
        "the healthy destination waited {:?}",
        started.elapsed()
    );
    assert!(!slow_hits.lock().expect("lock").is_empty());
}

/// Needs the `customer.created` emitter.
#[tokio::test]
async fn a_delivery_cut_by_kill_9_is_delivered_again_with_the_same_id() {
    let mut d = Daemon::start_with(OPEN).await;
    let (url, hits) = slow(800).await;
    let r = create(&d, "evd-k", json!({"url": url, "event_types": ["*"]})).await;
    assert_eq!(r.status, 201, "{}", r.json);
    d.customer("killed-1", "USD").await;
    d.eventually("the first attempt reaches the receiver", || async {
        !hits.lock().expect("lock").is_empty()
    })
    .await;
    d.kill9();
    d.restart().await;
    d.eventually("a second attempt after the restart", || async {
        hits.lock().expect("lock").len() >= 2
    })
    .await;
    let ids = webhook_ids(&hits);
    assert!(ids.iter().all(|i| i == &ids[0]), "{ids:?}");
    let path = format!("/v1/notifications/{}/deliveries", ids[0]);
    d.eventually("delivered", || async {
        d.get(&path).await.json["data"][0]["status"] == "delivered"
    })
    .await;
}

#[tokio::test]
async fn a_tenant_has_at_most_fifty_destinations() {
    let d = Daemon::start_with(OPEN).await;
    for i in 0..50 {
        let r = d
            .post(
                "/v1/event-destinations",
                Some(&format!("evd-{i}")),
                &json!({"url": format!("http://127.0.0.1:9/{i}"), "event_types": ["*"]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    d.post(
        "/v1/event-destinations",
        Some("evd-51"),
        &json!({"url": "http://127.0.0.1:9/51", "event_types": ["*"]}),
    )
    .await
    .assert_problem(409, "destination_limit");
}

/// Writes notifications recorded `age_ms` ago straight into a stopped daemon's file (the API
/// records only what happens now), each with a delivery to its destination when given.
#[derive(Clone)]
struct OldNotifications {
    tenant: u64,
    age_ms: i64,
    items: Vec<(&'static str, Option<tally::id::Id>)>,
}

impl tally::store::writer::Command for OldNotifications {
    type Output = Vec<String>;

    fn apply(self, tx: &tally::store::WriteTxn) -> Result<Vec<String>, tally::store::StoreError> {
        use tally::notifications::outbox::{self, Notification, Subject};
        use tally::store::keys::{self, TenantId};
        let tenant = TenantId(self.tenant);
        let at_ms = tally::clock::now_ms() - self.age_ms;
        let mut ids = Vec::new();
        for (i, (event_type, destination)) in self.items.into_iter().enumerate() {
            let ms = at_ms + i as i64;
            let tail = tally::id::Id::generate().0 & ((1u128 << 80) - 1);
            let id = tally::id::Id((u128::from(ms as u64) << 80) | tail);
            let n = Notification {
                id,
                tenant: tenant.0,
                event_type: event_type.to_string(),
                sequence: 1_000 + i as u64,
                created_at_ms: ms,
                customer: None,
                subject: Subject::of("customer", id, &"an old customer")?,
            };
            tally::store::put_record(
                &mut tx.open_table(tally::store::tables::NOTIFICATIONS)?,
                &keys::tenant_id(tenant, id),
                &n,
            )?;
            if let Some(d) = destination {
                outbox::start_delivery(tx, tenant, id, d, ms)?;
            }
            ids.push(id.display(outbox::PREFIX));
        }
        Ok(ids)
    }
}

/// Retention: notifications recorded before `retention_days` go once every delivery of theirs
/// is over (GET answers 404, the list no longer shows them, in bounded passes of two); one
/// whose delivery is still retrying stays, and so does a recent one.
#[tokio::test]
async fn old_notifications_are_purged_once_their_deliveries_are_over() {
    let mut d = Daemon::start_with(
        "[idempotency]\npurge_interval_ms = 100\npurge_batch_size = 2\n[notifications]\nallow_http = true\nallow_private_targets = true\nretention_days = 1\nretry_schedule_secs = [0, 3600]\n",
    )
    .await;
    let (ok_url, ok_hits) = receiver().await;
    let (bad_url, bad_hits) = scripted(vec![500; 10]).await;
    let mut evd = Vec::new();
    for (key, url, event_type) in [
        ("evd-ok", &ok_url, "customer.created"),
        ("evd-bad", &bad_url, "customer.updated"),
    ] {
        let r = create(&d, key, json!({"url": url, "event_types": [event_type]})).await;
        assert_eq!(r.status, 201, "{}", r.json);
        let id = r.json["id"].as_str().expect("id").to_string();
        evd.push(tally::id::Id::parse(&id, "evd").expect("evd id"));
    }
    d.customer("recent", "USD").await;
    d.eventually("the recent notification delivered", || async {
        ok_hits.lock().expect("lock").len() == 1
    })
    .await;
    d.stop();
    let ids = {
        let store = d.open_store();
        let tenant = {
            let tx = store.read().expect("read");
            tally::tenants::list(&tx).expect("tenants")[0].0.id
        };
        store
            .apply_one(OldNotifications {
                tenant,
                age_ms: 2 * 86_400_000,
                items: vec![
                    ("customer.updated", Some(evd[1])),
                    ("invoice.voided", None),
                    ("invoice.voided", None),
                    ("customer.created", Some(evd[0])),
                    ("invoice.voided", None),
                ],
            })
            .expect("old notifications")
    };
    let (live, purged) = (&ids[0], &ids[1..]);
    d.restart().await;
    for id in purged {
        let path = format!("/v1/notifications/{id}");
        d.eventually("an old finished notification purged", || async {
            d.get(&path).await.status == 404
        })
        .await;
        d.get(&format!("{path}/deliveries"))
            .await
            .assert_problem(404, "resource_missing");
    }
    assert!(
        ok_hits.lock().expect("lock").len() >= 2,
        "the old one was delivered before it went"
    );
    assert!(!bad_hits.lock().expect("lock").is_empty());
    assert_eq!(
        d.get(&format!("/v1/notifications/{live}")).await.status,
        200
    );
    let rows = d.get(&format!("/v1/notifications/{live}/deliveries")).await;
    assert_eq!(rows.json["data"][0]["status"], "pending", "{}", rows.json);
    let listed: Vec<String> = d.get("/v1/notifications?limit=500").await.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|n| n["id"].as_str().expect("id").to_string())
        .collect();
    assert!(listed.contains(live), "{listed:?}");
    assert!(purged.iter().all(|p| !listed.contains(p)), "{listed:?}");
    assert_eq!(
        listed.len(),
        2,
        "the live old one and the recent one: {listed:?}"
    );
}

/// A receiver that accepts connections and never answers, counting the connections open at
/// once (closed when the client gives up).
struct Hanging {
    url: String,
    most_open: Arc<std::sync::atomic::AtomicUsize>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

async fn hanging() -> Hanging {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let open = Arc::new(AtomicUsize::new(0));
    let most_open = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (most, count) = (Arc::clone(&most_open), Arc::clone(&accepted));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            let open = Arc::clone(&open);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Hanging {
        url: format!("http://{addr}/hook"),
        most_open,
        accepted,
    }
}

/// `notifications.max_in_flight_per_destination`: a receiver that hangs holds at most that
/// many connections however many deliveries wait for it, and another destination meanwhile
/// receives each of its deliveries at once.
#[tokio::test]
async fn a_hanging_receiver_holds_at_most_the_in_flight_limit_and_delays_no_other() {
    use std::sync::atomic::Ordering;
    let d = Daemon::start_with(
        "[notifications]\nallow_http = true\nallow_private_targets = true\nmax_in_flight_per_destination = 2\nretry_schedule_secs = [0, 3600]\n",
    )
    .await;
    let hang = hanging().await;
    let (fast_url, fast_hits) = receiver().await;
    for (key, url) in [("evd-hang", &hang.url), ("evd-fast", &fast_url)] {
        let r = create(
            &d,
            key,
            json!({"url": url, "event_types": ["customer.created"]}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    for i in 0..6 {
        d.customer(&format!("hung-{i}"), "USD").await;
        let started = std::time::Instant::now();
        d.eventually("the healthy destination's delivery", || async {
            fast_hits.lock().expect("lock").len() == i + 1
        })
        .await;
        assert!(
            started.elapsed() < std::time::Duration::from_millis(1000),
            "delivery {i} to the healthy destination took {:?}",
            started.elapsed()
        );
    }
    // Past a timeout (1.5 s) and the postponed deliveries' next try: new connections replace
    // the ones given up, never more than two at once.
    d.eventually("connections after the first ones time out", || async {
        hang.accepted.load(Ordering::SeqCst) >= 4
    })
    .await;
    assert_eq!(hang.most_open.load(Ordering::SeqCst), 2);
}
