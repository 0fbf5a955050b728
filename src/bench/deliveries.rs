//! The `deliveries` scenario: outbound events from commit to receipt.
//!
//! A small receiver in this process listens on 127.0.0.1 and is registered as a destination
//! for `customer.created`; closed-loop clients create customers for the duration, each
//! acknowledgement (after the durable commit) noting its instant by external id. The receiver
//! verifies each delivery's Standard Webhooks signature and notes when the customer's event
//! arrived, so the latency is commit acknowledgement → receipt. After the load it waits, bounded,
//! for the tail, then checks that every acknowledged customer's event arrived under exactly one
//! notification id; repeated receipts of one `webhook-id` (allowed: delivery is at least once)
//! are counted and reported.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::{client, post, Target};
use crate::webhooks::signature;

/// How long the scenario keeps waiting for outstanding deliveries once the load stops while
/// none arrives: the backlog of a load faster than delivery drains at its own pace.
const TAIL_IDLE_MS: u64 = 10_000;
/// The most it waits for the tail in all.
const TAIL_MAX_MS: u64 = 600_000;
/// Signature timestamp tolerance the receiver applies, as a receiver would.
const TOLERANCE_S: i64 = 300;

/// What the receiver saw.
#[derive(Default)]
struct Received {
    /// By external id: first receipt and the notification ids it arrived under.
    by_customer: HashMap<String, (Instant, HashSet<String>)>,
    /// Every `webhook-id` received.
    webhook_ids: HashSet<String>,
    /// Receipts repeating a `webhook-id` already received.
    duplicates: u64,
    /// Receipts whose signature did not verify (answered 400, so they would be retried).
    bad_signatures: u64,
    /// The last receipt.
    last: Option<Instant>,
}

/// The receiver's state: the destination's secret (known once registered) and what arrived.
#[derive(Default)]
struct Inbox {
    secret: OnceLock<String>,
    received: Mutex<Received>,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, Received> {
        match self.received.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The receiver's endpoint: verify, note, answer 204.
async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now = Instant::now();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let secret = inbox.secret.get().map(String::as_str).unwrap_or_default();
    let verified = signature::verify_standard(
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &body,
        &[secret],
        crate::clock::now_ms().div_euclid(1000),
        TOLERANCE_S,
    );
    let mut r = inbox.lock();
    let (Ok(()), Some(id)) = (verified, header("webhook-id")) else {
        r.bad_signatures += 1;
        return StatusCode::BAD_REQUEST;
    };
    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
    let external_id = event["data"]["object"]["external_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !r.webhook_ids.insert(id.to_string()) {
        r.duplicates += 1;
    }
    r.by_customer
        .entry(external_id)
        .or_insert_with(|| (now, HashSet::new()))
        .1
        .insert(id.to_string());
    r.last = Some(now);
    StatusCode::NO_CONTENT
}

/// The receiver, listening until dropped.
struct Receiver {
    url: String,
    inbox: Arc<Inbox>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn start_receiver() -> anyhow::Result<Receiver> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let inbox = Arc::new(Inbox::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(Arc::clone(&inbox));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Receiver {
        url: format!("http://{addr}/hook"),
        inbox,
        server,
    })
}

/// Closed-loop clients creating customers `{tag}-{client}-{seq}` until the deadline; returns
/// each acknowledged external id with the instant of its acknowledgement, and the errors.
async fn create_customers(
    target: &Target,
    clients: usize,
    duration: Duration,
    tag: &str,
) -> (HashMap<String, Instant>, u64) {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (base, key, tag) = (target.base.clone(), target.key.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut errors = 0u64;
            let mut connection = None;
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let id = format!("{tag}-{c}-{seq}");
                seq += 1;
                if connection.is_none() {
                    connection = client::Connection::open(&base, &key).await.ok();
                }
                let Some(conn) = connection.as_mut() else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let body = super::body(&json!({"external_id": id, "currency": "USD"}));
                match conn
                    .send("POST", "/v1/customers", Some(&id), body.as_deref())
                    .await
                {
                    Ok(reply) if (200..300).contains(&reply.status) => {
                        acked.push((id, Instant::now()));
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        connection = None;
                    }
                }
            }
            (acked, errors)
        }));
    }
    let mut acked = HashMap::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((a, e)) = t.await {
            acked.extend(a);
            errors += e;
        }
    }
    (acked, errors)
}

/// Waits until every acknowledged customer's event has arrived, nothing has arrived for
/// [`TAIL_IDLE_MS`], or [`TAIL_MAX_MS`] have passed.
async fn await_tail(inbox: &Inbox, acked: &HashMap<String, Instant>) {
    let started = Instant::now();
    let idle = Duration::from_millis(TAIL_IDLE_MS);
    while started.elapsed() < Duration::from_millis(TAIL_MAX_MS) {
        let (done, last) = {
            let r = inbox.lock();
            // Counting first keeps the receiver's lock short while the backlog drains.
            let done = r.by_customer.len() >= acked.len()
                && acked.keys().all(|id| r.by_customer.contains_key(id));
            (done, r.last.map_or(started, |l| l.max(started)))
        };
        if done || last.elapsed() > idle {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The scenario's result: latencies (µs, sorted, commit → receipt), create errors, the span
/// from the load's start to the last receipt, whether it verified, and what was checked.
pub(super) struct Outcome {
    pub latencies: Vec<u64>,
    pub errors: u64,
    pub elapsed: Duration,
    pub verified: bool,
    pub check: String,
}

/// Runs the scenario against `target`, whose daemon must allow `http://` and private targets.
pub(super) async fn run(
    http: &reqwest::Client,
    target: &Target,
    clients: usize,
    duration: Duration,
    run_tag: &str,
) -> anyhow::Result<Outcome> {
    let receiver = start_receiver().await?;
    let destination = post(
        http,
        target,
        "/v1/event-destinations",
        &format!("{run_tag}-evd"),
        json!({"url": receiver.url, "event_types": ["customer.created"]}),
    )
    .await
    .context("registering the receiver (the daemon needs notifications.allow_http and allow_private_targets)")?;
    let secret = destination["secret"]
        .as_str()
        .context("no secret in the destination")?;
    let _ = receiver.inbox.secret.set(secret.to_string());
    let started = Instant::now();
    let (acked, errors) =
        create_customers(target, clients, duration, &format!("{run_tag}-dlv")).await;
    await_tail(&receiver.inbox, &acked).await;
    // Later scenarios create customers too: they must not deliver to a receiver that is gone.
    let id = destination["id"].as_str().unwrap_or_default();
    post(
        http,
        target,
        &format!("/v1/event-destinations/{id}"),
        &format!("{run_tag}-evd-off"),
        json!({"status": "disabled"}),
    )
    .await?;
    let r = receiver.inbox.lock();
    let mut latencies = Vec::with_capacity(acked.len());
    let (mut missing, mut multiple) = (0u64, 0u64);
    for (id, acked_at) in &acked {
        match r.by_customer.get(id) {
            Some((at, ids)) => {
                latencies.push(at.saturating_duration_since(*acked_at).as_micros() as u64);
                if ids.len() > 1 {
                    multiple += 1;
                }
            }
            None => missing += 1,
        }
    }
    latencies.sort_unstable();
    let unacknowledged = r
        .by_customer
        .keys()
        .filter(|id| !acked.contains_key(*id))
        .count();
    let elapsed = r.last.map_or(started.elapsed(), |l| l - started);
    Ok(Outcome {
        verified: missing == 0 && multiple == 0 && r.bad_signatures == 0,
        check: format!(
            "{} creates acknowledged; {} events received, {missing} missing, {multiple} under more than one id, {unacknowledged} for unacknowledged creates; {} duplicate receipts; {} bad signatures",
            acked.len(),
            latencies.len(),
            r.duplicates,
            r.bad_signatures
        ),
        latencies,
        errors,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &str, id: &str, body: &[u8]) -> HeaderMap {
        let ts = crate::clock::now_ms().div_euclid(1000);
        let sig = signature::sign_standard(secret, id, ts, body).expect("signs");
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().expect("id"));
        h.insert("webhook-timestamp", ts.to_string().parse().expect("ts"));
        h.insert(
            "webhook-signature",
            format!("v1,{sig}").parse().expect("sig"),
        );
        h
    }

    #[tokio::test]
    async fn the_receiver_counts_repeats_and_refuses_bad_signatures() {
        let secret = "whsec_AAECAwQFBgcICQoLDA0ODxAREhM=";
        let inbox = Arc::new(Inbox::default());
        let _ = inbox.secret.set(secret.to_string());
        let body = Bytes::from_static(br#"{"data":{"object":{"external_id":"c1"}}}"#);
        let h = signed(secret, "ntf_1", &body);
        for _ in 0..2 {
            let status = receive(State(Arc::clone(&inbox)), h.clone(), body.clone()).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
        let forged = signed("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAA=", "ntf_2", &body);
        let status = receive(State(Arc::clone(&inbox)), forged, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let r = inbox.lock();
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.bad_signatures, 1);
        assert_eq!(r.by_customer["c1"].1.len(), 1, "one notification id");
    }
}
