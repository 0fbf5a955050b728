//! Outbound events end to end: each remaining catalogue type from its real trigger, exactly one
//! notification per effect under redelivery and replay, and delivery to receivers on 127.0.0.1
//! across kill -9, secret rotation and a destination that is down.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::fake_stripe::FakeStripe;
use crate::harness::{at, Daemon};
use crate::payments::{daemon, invoices, pay, payment, settle, stripe_endpoint, stripe_hook};

/// Open targets and a short retry schedule (three attempts, a second apart).
const OPEN: &str = "[notifications]\nallow_http = true\nallow_private_targets = true\nretry_schedule_secs = [0, 1, 1]\n";

async fn of_type(d: &Daemon, event_type: &str) -> Vec<Value> {
    let page = d
        .get(&format!("/v1/notifications?type={event_type}&limit=500"))
        .await;
    assert_eq!(page.status, 200, "{}", page.json);
    page.json["data"].as_array().cloned().unwrap_or_default()
}

/// Waits for the first notification of `event_type`, then checks after a pause that it stays
/// the only one; returns it.
async fn only_one(d: &Daemon, event_type: &str) -> Value {
    d.eventually(event_type, || async {
        !of_type(d, event_type).await.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let all = of_type(d, event_type).await;
    assert_eq!(all.len(), 1, "one {event_type}: {all:?}");
    all[0].clone()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// Midnight UTC today, `days_ago` days back, in RFC 3339.
fn midnight(days_ago: i64) -> String {
    let today = &at(0)[..10];
    let ms = tally::clock::parse_rfc3339(&format!("{today}T00:00:00Z")).expect("t");
    tally::clock::rfc3339(ms - days_ago * 86_400_000)
}

async fn plan(d: &Daemon) {
    let p = d
        .post(
            "/v1/plans",
            Some("plan"),
            &json!({"code": "d", "name": "D", "currency": "USD", "interval": "day",
                "fixed_fee": {"amount_minor": 1000}}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
}

async fn subscribe(d: &Daemon, customer: &str, start_at: &str) -> String {
    let s = d
        .post(
            "/v1/subscriptions",
            Some(&format!("sub-{customer}")),
            &json!({"customer": customer, "plan": "d", "start_at": start_at}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    id_of(&s.json)
}

async fn grant(d: &Daemon, customer: &str, amount_minor: i64, extra: Value) -> String {
    let mut body = json!({"customer": customer, "amount_minor": amount_minor, "currency": "USD",
        "category": "promotional"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let g = d
        .post(
            "/v1/credit-grants",
            Some(&format!("grant-{customer}")),
            &body,
        )
        .await;
    assert_eq!(g.status, 201, "{}", g.json);
    id_of(&g.json)
}

#[tokio::test]
async fn canceling_at_period_end_then_immediately_records_updated_then_canceled() {
    let d = Daemon::start().await;
    d.customer("subscriber", "USD").await;
    plan(&d).await;
    let sub = subscribe(&d, "subscriber", &midnight(0)).await;
    let cancel = |key: &'static str, at_period_end: bool| {
        let d = &d;
        let path = format!("/v1/subscriptions/{sub}/cancel");
        async move {
            let r = d
                .post(&path, Some(key), &json!({"at_period_end": at_period_end}))
                .await;
            assert_eq!(r.status, 200, "{}", r.json);
            r.json
        }
    };
    let canceling = cancel("cancel-later", true).await;
    assert_eq!(canceling["status"], "canceling");
    cancel("cancel-later", true).await;
    let updated = only_one(&d, "subscription.updated").await;
    assert_eq!(
        updated["data"]["object"], canceling,
        "the subscription as it was"
    );
    assert!(of_type(&d, "subscription.canceled").await.is_empty());

    let canceled = cancel("cancel-now", false).await;
    assert_eq!(canceled["status"], "canceled");
    cancel("cancel-now", false).await;
    let ended = only_one(&d, "subscription.canceled").await;
    assert_eq!(
        ended["data"]["object"],
        d.get(&format!("/v1/subscriptions/{sub}")).await.json
    );
    assert_eq!(of_type(&d, "subscription.updated").await.len(), 1);
}

#[tokio::test]
async fn a_grant_expiring_unused_records_one_expired_with_nothing_remaining() {
    let d = Daemon::start().await;
    d.customer("expiring", "USD").await;
    let id = grant(&d, "expiring", 700, json!({"expires_at": at(1)})).await;
    let expired = only_one(&d, "credit_grant.expired").await;
    let object = &expired["data"]["object"];
    assert_eq!(object["id"], id.as_str());
    assert_eq!(object["object"], "credit_grant");
    assert_eq!(object["remaining_minor"], 0);
    assert_eq!(
        *object,
        d.get(&format!("/v1/credit-grants/{id}")).await.json
    );
    // Later expiry passes find nothing more to do.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(of_type(&d, "credit_grant.expired").await.len(), 1);
}

#[tokio::test]
async fn credits_deplete_a_small_grant_and_pay_an_invoice_whole_at_issue() {
    let d = Daemon::start().await;
    plan(&d).await;
    let small_customer = d.customer("small", "USD").await;
    let large_customer = d.customer("large", "USD").await;
    let since = json!({"effective_at": midnight(3)});
    let small = grant(&d, "small", 300, since.clone()).await;
    let large = grant(&d, "large", 5000, since).await;
    subscribe(&d, "small", &midnight(1)).await;
    subscribe(&d, "large", &midnight(1)).await;
    let run = d.post("/v1/billing-runs", Some("run"), &json!({})).await;
    assert_eq!(run.status, 201, "{}", run.json);
    let again = d.post("/v1/billing-runs", Some("run-2"), &json!({})).await;
    assert_eq!(again.status, 201, "{}", again.json);

    let depleted = only_one(&d, "credit_grant.depleted").await;
    assert_eq!(depleted["data"]["object"]["id"], small.as_str());
    assert_eq!(depleted["data"]["object"]["remaining_minor"], 0);
    assert_eq!(
        d.get(&format!("/v1/credit-grants/{large}")).await.json["remaining_minor"],
        4000
    );

    let paid = only_one(&d, "invoice.paid").await;
    let invoice = &paid["data"]["object"];
    assert_eq!(invoice["customer"], large_customer.as_str());
    assert_eq!(invoice["status"], "paid");
    assert_eq!(invoice["amount_due_minor"], 0);
    assert_eq!(
        *invoice,
        d.get(&format!("/v1/invoices/{}", id_of(invoice)))
            .await
            .json
    );
    // The small customer's invoice is issued with 700 still due.
    let finalized = of_type(&d, "invoice.finalized").await;
    assert_eq!(finalized.len(), 2);
    let owed = finalized
        .iter()
        .find(|n| n["data"]["object"]["customer"] == small_customer.as_str())
        .expect("the small customer's invoice");
    assert_eq!(owed["data"]["object"]["amount_due_minor"], 700);
}

#[tokio::test]
async fn a_final_decline_records_one_uncollectible_invoice() {
    let d = Daemon::start_with("[payments]\ndunning_retry_days = []\n").await;
    let inv = invoices(&d, 1).await;
    let p = id_of(&pay(&d, &inv[0], "sim_decline").await);
    settle(&d, &p, "failed").await;
    let written_off = only_one(&d, "invoice.uncollectible").await;
    assert_eq!(written_off["data"]["object"]["id"], inv[0].as_str());
    assert_eq!(written_off["data"]["object"]["status"], "uncollectible");
    assert_eq!(
        written_off["data"]["object"],
        d.get(&format!("/v1/invoices/{}", inv[0])).await.json
    );
    assert_eq!(of_type(&d, "invoice.payment_failed").await.len(), 1);
    assert_eq!(of_type(&d, "payment.failed").await.len(), 1);
}

#[tokio::test]
async fn a_provider_webhook_delivered_twice_records_one_payment_succeeded() {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "").await;
    let ep = stripe_endpoint(&d).await;
    let inv = invoices(&d, 1).await;
    // The provider charges but never answers: only its webhook tells of the success.
    let p = id_of(&pay(&d, &inv[0], "pm_ghost").await);
    d.eventually("the charge", || async { stripe.intent_of(&p).is_some() })
        .await;
    let mut intent = stripe.intent_of(&p).expect("intent");
    intent["status"] = json!("succeeded");
    for event in ["evt_1", "evt_1", "evt_2"] {
        assert_eq!(
            stripe_hook(&d, &ep, event, "payment_intent.succeeded", &intent).await,
            200
        );
    }
    settle(&d, &p, "succeeded").await;
    let succeeded = only_one(&d, "payment.succeeded").await;
    assert_eq!(succeeded["data"]["object"]["id"], p.as_str());
    assert_eq!(
        only_one(&d, "invoice.paid").await["data"]["object"]["id"],
        inv[0].as_str()
    );
    assert!(of_type(&d, "payment.failed").await.is_empty());
}

/// Pays `invoice` with a charge whose every reply is lost, until its job is a dead letter;
/// returns the payment and the dead job.
async fn dead_attempt(d: &Daemon, invoice: &str) -> (String, String) {
    let p = id_of(&pay(d, invoice, "pm_ghost").await);
    let dead = || async {
        d.get("/v1/dead-letters?kind=payment.execute").await.json["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    d.eventually("the attempt's job dead", || async {
        dead().await.len() == 1
    })
    .await;
    (p, id_of(&dead().await[0]))
}

/// The provider answers the attempt's key with its succeeded intent from now on.
async fn provider_recovers(stripe: &FakeStripe, d: &Daemon, p: &str) -> Value {
    let intent = stripe.intent_of(p).expect("intent");
    assert_eq!(intent["status"], "succeeded");
    let key = payment(d, p).await["provider_idempotency_key"]
        .as_str()
        .expect("key")
        .to_string();
    let mut ledger = stripe.state.lock().expect("lock");
    ledger.replies.insert(key, (200, intent.clone()));
    intent
}

async fn replay(d: &Daemon, job: &str, key: &str) {
    let r = d
        .post(
            &format!("/v1/dead-letters/{job}/replay"),
            Some(key),
            &json!({}),
        )
        .await;
    assert!(r.status < 300, "{}", r.json);
}

async fn payment_events(d: &Daemon, p: &str) -> Vec<String> {
    let all = d.get("/v1/notifications?limit=500").await.json["data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    all.iter()
        .filter(|n| n["data"]["object"]["id"] == p)
        .map(|n| n["type"].as_str().expect("type").to_string())
        .collect()
}

#[tokio::test]
async fn a_replayed_dead_letter_that_succeeds_adds_no_second_payment_event() {
    let stripe = FakeStripe::start().await;
    let d = daemon(&stripe, "[jobs]\nmax_attempts = 2\n").await;
    let ep = stripe_endpoint(&d).await;
    let inv = invoices(&d, 2).await;

    // The webhook records the success first; the replayed job then succeeds as well.
    let (first, job) = dead_attempt(&d, &inv[0]).await;
    let intent = provider_recovers(&stripe, &d, &first).await;
    assert_eq!(
        stripe_hook(&d, &ep, "evt_first", "payment_intent.succeeded", &intent).await,
        200
    );
    settle(&d, &first, "succeeded").await;
    replay(&d, &job, "replay-first").await;

    // The replayed job records the success first (asking the provider again); the webhook
    // then repeats it.
    let (second, job) = dead_attempt(&d, &inv[1]).await;
    let calls = stripe.calls().len();
    let intent = provider_recovers(&stripe, &d, &second).await;
    replay(&d, &job, "replay-second").await;
    settle(&d, &second, "succeeded").await;
    assert!(
        stripe.calls().len() > calls,
        "the replay asked the provider"
    );
    assert_eq!(
        stripe_hook(&d, &ep, "evt_second", "payment_intent.succeeded", &intent).await,
        200
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(d.get("/v1/dead-letters").await.json["data"]
        .as_array()
        .is_some_and(Vec::is_empty));
    for p in [&first, &second] {
        assert_eq!(payment(&d, p).await["status"], "succeeded");
        assert_eq!(payment_events(&d, p).await, ["payment.succeeded"], "{p}");
    }
    assert_eq!(of_type(&d, "invoice.paid").await.len(), 2);
    assert_eq!(
        of_type(&d, "dead_letter.created").await.len(),
        2,
        "one per death"
    );
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

type Hits = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A receiver on 127.0.0.1 that records every request and answers with a status the test
/// can change.
#[derive(Clone)]
struct Receiver {
    url: String,
    hits: Hits,
    status: Arc<AtomicU16>,
}

async fn record(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    r.hits.lock().expect("lock").push((headers, body.to_vec()));
    let status = StatusCode::from_u16(r.status.load(Ordering::SeqCst)).expect("status");
    (status, "ok")
}

async fn receiver(status: u16) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let r = Receiver {
        url: format!("http://{}/hook", listener.local_addr().expect("addr")),
        hits: Arc::default(),
        status: Arc::new(AtomicU16::new(status)),
    };
    let app = Router::new()
        .route("/hook", post(record))
        .with_state(r.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    r
}

impl Receiver {
    fn ids(&self) -> Vec<String> {
        self.hits
            .lock()
            .expect("lock")
            .iter()
            .map(|(h, _)| h["webhook-id"].to_str().expect("id").to_string())
            .collect()
    }

    fn count(&self) -> usize {
        self.hits.lock().expect("lock").len()
    }
}

/// A URL on 127.0.0.1 where nothing listens: connections are refused.
async fn refusing_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/hook")
}

async fn destination(d: &Daemon, key: &str, url: &str) -> (String, String) {
    let r = d
        .post(
            "/v1/event-destinations",
            Some(key),
            &json!({"url": url, "event_types": ["customer.created"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    (
        id_of(&r.json),
        r.json["secret"].as_str().expect("secret").to_string(),
    )
}

/// The Standard Webhooks signature of one request under `secret`, computed independently.
fn signature(secret: &str, headers: &HeaderMap, body: &[u8]) -> String {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("mac");
    mac.update(format!("{}.{}.", get("webhook-id"), get("webhook-timestamp")).as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

async fn delivered(d: &Daemon, ntf: &str) {
    let path = format!("/v1/notifications/{ntf}/deliveries");
    d.eventually("delivered", || async {
        d.get(&path).await.json["data"][0]["status"] == "delivered"
    })
    .await;
}

#[tokio::test]
async fn a_notification_pending_at_kill_9_is_delivered_after_restart_under_its_id() {
    let mut d = Daemon::start_with(OPEN).await;
    let rx = receiver(500).await;
    destination(&d, "evd-k", &rx.url).await;
    let customer = d.customer("restarted", "USD").await;
    d.eventually("the first, refused attempt", || async { rx.count() >= 1 })
        .await;
    d.kill9();
    rx.status.store(200, Ordering::SeqCst);
    let before = rx.count();
    d.restart().await;
    d.eventually("a delivery after the restart", || async {
        rx.count() > before
    })
    .await;
    let ids = rx.ids();
    assert!(ids.iter().all(|i| i == &ids[0]), "one webhook-id: {ids:?}");
    delivered(&d, &ids[0]).await;
    let created = of_type(&d, "customer.created").await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["id"], ids[0].as_str());
    assert_eq!(created[0]["data"]["object"]["id"], customer.as_str());
}

#[tokio::test]
async fn after_a_rotation_a_delivery_carries_both_signatures_each_verifying() {
    let d = Daemon::start_with(OPEN).await;
    let rx = receiver(200).await;
    let (evd, old) = destination(&d, "evd-rot", &rx.url).await;
    let rot = d
        .post(
            &format!("/v1/event-destinations/{evd}/rotate-secret"),
            Some("rotate"),
            &json!({}),
        )
        .await;
    assert_eq!(rot.status, 200, "{}", rot.json);
    let new = rot.json["secret"].as_str().expect("secret").to_string();
    assert_ne!(new, old);
    d.customer("rotated", "USD").await;
    d.eventually("a delivery", || async { rx.count() >= 1 })
        .await;
    let (headers, body) = rx.hits.lock().expect("lock")[0].clone();
    let header = headers["webhook-signature"].to_str().expect("signature");
    let sent: Vec<&str> = header.split(' ').collect();
    assert_eq!(sent.len(), 2, "{header}");
    assert!(sent.iter().all(|s| s.starts_with("v1,")), "{header}");
    let expected_old = signature(&old, &headers, &body);
    let expected_new = signature(&new, &headers, &body);
    assert_ne!(expected_old, expected_new);
    assert!(
        sent.contains(&expected_old.as_str()),
        "the old secret verifies"
    );
    assert!(
        sent.contains(&expected_new.as_str()),
        "the new secret verifies"
    );
    assert!(!sent.contains(&signature("whsec_AAAAAAAAAAAAAAAAAAAAAAAA", &headers, &body).as_str()));
}

#[tokio::test]
async fn a_destination_refusing_connections_does_not_hold_up_another() {
    let d = Daemon::start_with(OPEN).await;
    let down = refusing_url().await;
    let rx = receiver(200).await;
    let (evd_down, _) = destination(&d, "evd-down", &down).await;
    destination(&d, "evd-up", &rx.url).await;
    let started = Instant::now();
    for i in 0..3 {
        d.customer(&format!("up-{i}"), "USD").await;
    }
    d.eventually("the healthy destination's deliveries", || async {
        rx.count() == 3
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the healthy destination waited {:?}",
        started.elapsed()
    );
    let ntf = &rx.ids()[0];
    let rows = d.get(&format!("/v1/notifications/{ntf}/deliveries")).await;
    assert_eq!(rows.status, 200, "{}", rows.json);
    let row = rows.json["data"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["destination"] == evd_down.as_str()))
        .cloned()
        .expect("a row for the down destination");
    assert_ne!(row["status"], "delivered", "{row}");
}

#[tokio::test]
async fn a_dead_delivery_is_a_dead_letter_but_records_no_event() {
    let d = Daemon::start_with(
        "[notifications]\nallow_http = true\nallow_private_targets = true\nretry_schedule_secs = [0]\n",
    )
    .await;
    let down = refusing_url().await;
    let r = d
        .post(
            "/v1/event-destinations",
            Some("evd-all"),
            &json!({"url": down, "event_types": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    d.customer("undelivered", "USD").await;
    d.eventually("the delivery is a dead letter", || async {
        d.get("/v1/dead-letters").await.json["data"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    // Announcing it would send it to the destination that is failing, and fail again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = of_type(&d, "dead_letter.created").await;
    assert!(events.is_empty(), "{events:?}");
}
