//! The delivery handler against a receiver on 127.0.0.1: signatures, retries, redirects,
//! rotation, dead letters, disabling and the per-destination limit.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;
use crate::jobs::{CompleteJob, Completion, JobStatus, LeaseJobs, RetryPolicy};
use crate::store::writer::Command;

const TENANT: TenantId = TenantId(7);

#[derive(Default)]
struct Received {
    /// Statuses to answer, in order; 200 once exhausted.
    script: Vec<u16>,
    /// Every request to /hook: its headers and body.
    hits: Vec<(HeaderMap, Vec<u8>)>,
}

type Shared = Arc<Mutex<Received>>;

async fn hook(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = state.lock().expect("lock");
    s.hits.push((headers, body.to_vec()));
    let status = if s.script.is_empty() {
        200
    } else {
        s.script.remove(0)
    };
    (
        StatusCode::from_u16(status).expect("status"),
        "receiver says hi",
    )
        .into_response()
}

async fn hang() -> Response {
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    (StatusCode::OK, "too late").into_response()
}

async fn moved() -> Response {
    (StatusCode::FOUND, [("location", "/hook")], "moved").into_response()
}

async fn receiver(script: Vec<u16>) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Received {
        script,
        hits: Vec::new(),
    }));
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/moved", post(moved))
        .route("/hang", post(hang))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), state)
}

#[derive(Clone)]
struct Seed {
    destination: Destination,
    now_ms: i64,
}

impl Command for Seed {
    type Output = Option<Notification>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        destination::save(tx, &self.destination)?;
        outbox::record(
            tx,
            TENANT,
            "customer.created",
            "cus_test:created",
            None,
            Subject::of("customer", Id::generate_at(self.now_ms), &"a customer")?,
            self.now_ms,
        )
    }
}

fn secret() -> String {
    signature::generate_secret().expect("secret")
}

fn new_destination(url: &str, now_ms: i64) -> Destination {
    Destination {
        id: Id::generate_at(now_ms),
        tenant: TENANT.0,
        url: url.to_string(),
        event_types: vec!["*".into()],
        description: None,
        status: DestinationStatus::Enabled,
        secrets: vec![destination::Secret {
            value: secret(),
            created_at_ms: now_ms,
            expires_at_ms: None,
        }],
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        failing_since_ms: None,
    }
}

fn settings(schedule_ms: Vec<i64>) -> Settings {
    Settings {
        allow_private_targets: true,
        allow_http: true,
        retry_schedule_ms: schedule_ms,
        max_in_flight: 4,
        disable_after_ms: i64::MAX,
    }
}

fn render() -> Renderer {
    Arc::new(|n: &Notification| {
        serde_json::to_vec(&serde_json::json!({
            "id": n.id.display(outbox::PREFIX),
            "type": n.event_type,
            "sequence": n.sequence,
        }))
        .map_err(|e| e.to_string())
    })
}

struct World {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    handler: Deliver,
    destination: Destination,
    notification: Notification,
}

fn world(url: &str, s: Settings) -> World {
    world_with(url, s, &NotificationsConfig::default())
}

fn world_with(url: &str, s: Settings, config: &NotificationsConfig) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(&dir.path().join("d.redb"), 1 << 22).expect("open"));
    let now_ms = crate::clock::now_ms();
    let destination = new_destination(url, now_ms);
    let notification = store
        .apply_one(Seed {
            destination: destination.clone(),
            now_ms,
        })
        .expect("seed")
        .expect("recorded");
    let client = client(config).expect("client");
    let handler = Deliver::new(Arc::clone(&store), client, render(), s);
    World {
        _dir: dir,
        store,
        handler,
        destination,
        notification,
    }
}

impl World {
    /// Leases the due delivery job (whatever its due time), runs it, completes it.
    async fn run_once(&self) -> (Completion, Job) {
        let mut leased = self
            .store
            .apply_one(LeaseJobs {
                now_ms: crate::clock::now_ms() + 86_400_000,
                lease_ms: 60_000,
                limit: 1,
            })
            .expect("lease");
        let job = leased.pop().expect("a due job");
        let lease_until_ms = job.due_at_ms;
        let effect = self.handler.run(job.clone()).await;
        let completion = self
            .store
            .apply_one(CompleteJob {
                id: job.id,
                lease_until_ms,
                effect,
                now_ms: crate::clock::now_ms(),
                retry: RetryPolicy {
                    max_attempts: 99,
                    base_ms: 1,
                    max_ms: 1,
                },
                jitter_seed: 0,
                aborted: false,
                on_dead: None,
            })
            .expect("complete");
        let tx = self.store.read().expect("read");
        let after = crate::jobs::get(&tx, job.id).expect("get").expect("job");
        (completion, after)
    }

    fn delivery(&self) -> Delivery {
        let tx = self.store.read().expect("read");
        let mut rows = outbox::deliveries(&tx, TENANT, self.notification.id).expect("rows");
        assert_eq!(rows.len(), 1);
        rows.remove(0)
    }

    fn resend(&self) -> destinations::Resent {
        self.store
            .apply_one(destinations::Resend {
                tenant: TENANT,
                notification: self.notification.id,
                destination: None,
                now_ms: crate::clock::now_ms(),
            })
            .expect("resend")
            .expect("resent")
    }

    /// Every delivery job, as stored.
    fn delivery_jobs(&self) -> Vec<Job> {
        use crate::store::ReadableTable;
        let tx = self.store.read().expect("read");
        let table = tx.open_table(tables::JOBS).expect("jobs");
        let mut out = Vec::new();
        for entry in table.iter().expect("iter") {
            let (_, v) = entry.expect("entry");
            let job: Job = crate::store::codec::decode(v.value()).expect("job");
            if job.kind == outbox::DELIVER_JOB {
                out.push(job);
            }
        }
        out
    }

    fn destination_now(&self) -> Destination {
        let tx = self.store.read().expect("read");
        destinations::get(&tx, TENANT, self.destination.id)
            .expect("get")
            .expect("destination")
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// HMAC-SHA256 computed here, not by the signing code.
fn independent_signature(secret: &str, id: &str, ts: &str, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[test]
fn the_standard_webhooks_test_vector_verifies() {
    let header = signature_header(
        &["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        1_649_367_553,
        br#"{"email":"test@example.com","username":"test_user"}"#,
    );
    assert_eq!(header, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
}

#[tokio::test]
async fn a_delivery_is_signed_and_the_signature_verifies_independently() {
    let (base, got) = receiver(Vec::new()).await;
    let w = world(&format!("{base}/hook"), settings(vec![0, 10]));
    let (completion, job) = w.run_once().await;
    assert_eq!(completion, Completion::Done);
    assert_eq!(job.status, JobStatus::Done);
    let hits = got.lock().expect("lock").hits.clone();
    assert_eq!(hits.len(), 1);
    let (h, body) = &hits[0];
    let id = w.notification.id.display(outbox::PREFIX);
    assert_eq!(header(h, "webhook-id"), id);
    assert_eq!(header(h, "content-type"), "application/json");
    assert!(header(h, "user-agent").starts_with("tally/"));
    let ts = header(h, "webhook-timestamp");
    let now_s = crate::clock::now_ms() / 1000;
    assert!((now_s - ts.parse::<i64>().expect("unix seconds")).abs() < 60);
    let expected = independent_signature(&w.destination.secrets[0].value, &id, ts, body);
    assert_eq!(header(h, "webhook-signature"), expected);
    let sent: serde_json::Value = serde_json::from_slice(body).expect("json");
    assert_eq!(sent["id"], id.as_str());
    let row = w.delivery();
    assert_eq!(row.status, DeliveryStatus::Delivered);
    assert_eq!(row.attempts.len(), 1);
    assert_eq!(row.attempts[0].status_code, Some(200));
    assert_eq!(row.attempts[0].response_excerpt, "receiver says hi");
}

#[tokio::test]
async fn two_failures_then_success_delivers_on_the_third_attempt_with_one_id() {
    let (base, got) = receiver(vec![500, 500]).await;
    let w = world(&format!("{base}/hook"), settings(vec![0, 10, 10, 10]));
    let (c1, j1) = w.run_once().await;
    assert!(matches!(c1, Completion::Retrying(_)), "{c1:?}");
    assert_eq!(j1.status, JobStatus::Pending);
    assert_eq!(w.delivery().status, DeliveryStatus::Pending);
    let (c2, _) = w.run_once().await;
    assert!(matches!(c2, Completion::Retrying(_)), "{c2:?}");
    let (c3, j3) = w.run_once().await;
    assert_eq!(c3, Completion::Done);
    assert_eq!(j3.attempts, 3);
    let row = w.delivery();
    assert_eq!(row.status, DeliveryStatus::Delivered);
    let codes: Vec<_> = row.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(200)]);
    let hits = got.lock().expect("lock").hits.clone();
    let ids: Vec<_> = hits.iter().map(|(h, _)| header(h, "webhook-id")).collect();
    let id = w.notification.id.display(outbox::PREFIX);
    assert_eq!(ids, [id.as_str(), id.as_str(), id.as_str()]);
}

#[tokio::test]
async fn the_retry_schedule_sets_the_next_due_time_and_its_end_makes_a_dead_letter() {
    let (base, _got) = receiver(vec![503; 10]).await;
    let w = world(&format!("{base}/hook"), settings(vec![0, 300_000]));
    let before = crate::clock::now_ms();
    let (c1, j1) = w.run_once().await;
    let Completion::Retrying(due) = c1 else {
        panic!("{c1:?}")
    };
    assert!(due >= before + 300_000 && due < crate::clock::now_ms() + 301_000);
    assert_eq!(j1.due_at_ms, due);
    let (c2, j2) = w.run_once().await;
    assert_eq!(c2, Completion::Dead);
    assert_eq!(j2.status, JobStatus::Dead);
    assert!(j2.last_error().is_some_and(|e| e.contains("503")));
    let row = w.delivery();
    assert_eq!(row.status, DeliveryStatus::Failed);
    assert_eq!(row.attempts.len(), 2);
    let tx = w.store.read().expect("read");
    let (dead, _) =
        crate::jobs::dead_letters(&tx, TENANT, Some(outbox::DELIVER_JOB), None, None, None, 10)
            .expect("dead letters");
    assert_eq!(dead.len(), 1);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let (base, got) = receiver(Vec::new()).await;
    let w = world(&format!("{base}/moved"), settings(vec![0, 10]));
    let (c, _) = w.run_once().await;
    assert!(matches!(c, Completion::Retrying(_)), "{c:?}");
    assert!(got.lock().expect("lock").hits.is_empty(), "followed");
    let row = w.delivery();
    assert_eq!(row.status, DeliveryStatus::Pending);
    assert_eq!(row.attempts[0].status_code, Some(302));
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign() {
    let (base, got) = receiver(Vec::new()).await;
    let w = world(&format!("{base}/hook"), settings(vec![0]));
    let old = w.destination.secrets[0].value.clone();
    let new = secret();
    let now_ms = crate::clock::now_ms();
    w.store
        .apply_one(destinations::RotateDestinationSecret {
            tenant: TENANT,
            id: w.destination.id,
            secret: new.clone(),
            now_ms,
            overlap_ms: 60_000,
        })
        .expect("rotate")
        .expect("found");
    let (c, _) = w.run_once().await;
    assert_eq!(c, Completion::Done);
    let hits = got.lock().expect("lock").hits.clone();
    let (h, body) = &hits[0];
    let id = header(h, "webhook-id");
    let ts = header(h, "webhook-timestamp");
    let parts: Vec<&str> = header(h, "webhook-signature").split(' ').collect();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts.contains(&independent_signature(&old, id, ts, body).as_str()));
    assert!(parts.contains(&independent_signature(&new, id, ts, body).as_str()));
}

/// Three rotations: while the overlap lasts the current secret and the one before sign, and
/// nothing older; once it has passed only the current one.
#[tokio::test]
async fn three_rotations_sign_with_the_current_and_the_previous_secret_only() {
    let (base, got) = receiver(Vec::new()).await;
    let overlap_ms = 3_600_000;
    for (age_ms, signing) in [(0, 2), (2 * overlap_ms, 1)] {
        let w = world(&format!("{base}/hook"), settings(vec![0]));
        let at = crate::clock::now_ms() - age_ms;
        let mut made = vec![w.destination.secrets[0].value.clone()];
        for i in 0..3 {
            let new = secret();
            w.store
                .apply_one(destinations::RotateDestinationSecret {
                    tenant: TENANT,
                    id: w.destination.id,
                    secret: new.clone(),
                    now_ms: at + i,
                    overlap_ms,
                })
                .expect("rotate")
                .expect("found");
            made.push(new);
        }
        assert_eq!(w.destination_now().secrets.len(), 2, "at most one previous");
        let (c, _) = w.run_once().await;
        assert_eq!(c, Completion::Done);
        let hits = got.lock().expect("lock").hits.clone();
        let (h, body) = hits.last().expect("a request");
        let (id, ts) = (header(h, "webhook-id"), header(h, "webhook-timestamp"));
        let mut sent: Vec<&str> = header(h, "webhook-signature").split(' ').collect();
        let mut expected: Vec<String> = made[made.len() - signing..]
            .iter()
            .map(|s| independent_signature(s, id, ts, body))
            .collect();
        sent.sort_unstable();
        expected.sort_unstable();
        assert_eq!(
            sent, expected,
            "{signing} secret(s) sign, {age_ms} ms after"
        );
    }
}

#[tokio::test]
async fn a_destination_failing_past_the_limit_is_disabled_and_that_is_recorded() {
    let (base, _got) = receiver(vec![500; 10]).await;
    let mut s = settings(vec![0, 10, 10]);
    s.disable_after_ms = 0;
    let w = world(&format!("{base}/hook"), s);
    let (c, _) = w.run_once().await;
    assert!(matches!(c, Completion::Retrying(_)), "{c:?}");
    let d = w.destination_now();
    assert_eq!(d.status, DestinationStatus::Disabled);
    assert!(d.failing_since_ms.is_some());
    let tx = w.store.read().expect("read");
    let filter = outbox::Filter {
        event_type: Some("destination.disabled".into()),
        ..outbox::Filter::default()
    };
    let (found, _) = outbox::list(&tx, TENANT, &filter, None, 10, 1000).expect("list");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].subject.id, w.destination.id);
    // The disabled destination gets no delivery of its own disabling, and its pending
    // delivery stops at the next run.
    assert!(outbox::deliveries(&tx, TENANT, found[0].id)
        .expect("rows")
        .is_empty());
    drop(tx);
    let (c, _) = w.run_once().await;
    assert_eq!(c, Completion::Done);
    assert_eq!(w.delivery().status, DeliveryStatus::Failed);
}

#[tokio::test]
async fn a_destination_at_its_limit_postpones_without_spending_an_attempt() {
    let (base, got) = receiver(Vec::new()).await;
    let mut s = settings(vec![0, 10]);
    s.max_in_flight = 1;
    let w = world(&format!("{base}/hook"), s);
    let held = w
        .handler
        .limit_of(w.destination.id)
        .try_acquire_owned()
        .expect("permit");
    let (c, j) = w.run_once().await;
    assert!(matches!(c, Completion::Retrying(_)), "{c:?}");
    assert_eq!(j.attempts, 0);
    assert!(got.lock().expect("lock").hits.is_empty());
    drop(held);
    let (c, j) = w.run_once().await;
    assert_eq!(c, Completion::Done);
    assert_eq!(j.attempts, 1);
}

#[tokio::test]
async fn private_targets_are_refused_at_delivery_without_the_setting() {
    let (base, got) = receiver(Vec::new()).await;
    let mut s = settings(vec![0, 10]);
    s.allow_private_targets = false;
    let w = world(&format!("{base}/hook"), s);
    let (c, _) = w.run_once().await;
    assert!(matches!(c, Completion::Retrying(_)), "{c:?}");
    assert!(got.lock().expect("lock").hits.is_empty());
    let row = w.delivery();
    assert!(row.attempts[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("private")));
}

#[tokio::test]
async fn a_resend_keeps_the_attempts_and_the_webhook_id() {
    let (base, got) = receiver(Vec::new()).await;
    let w = world(&format!("{base}/hook"), settings(vec![0]));
    w.run_once().await;
    let resent = w.resend();
    assert_eq!(resent.queued, [w.destination.id]);
    assert!(resent.live.is_empty());
    assert_eq!(w.delivery().status, DeliveryStatus::Pending);
    let (c, _) = w.run_once().await;
    assert_eq!(c, Completion::Done);
    let row = w.delivery();
    assert_eq!(row.status, DeliveryStatus::Delivered);
    assert_eq!(row.attempts.len(), 2);
    let hits = got.lock().expect("lock").hits.clone();
    assert_eq!(
        header(&hits[0].0, "webhook-id"),
        header(&hits[1].0, "webhook-id")
    );
}

#[test]
fn job_payloads_round_trip() {
    let (n, d) = (Id::generate(), Id::generate());
    assert_eq!(
        outbox::parse_job_payload(&outbox::job_payload(n, d)),
        Some((n, d))
    );
    assert_eq!(outbox::parse_job_payload("ntf_x"), None);
}

#[tokio::test]
async fn a_receiver_that_hangs_times_out_and_is_retried() {
    let (base, _got) = receiver(Vec::new()).await;
    let config = NotificationsConfig {
        connect_timeout_ms: 200,
        timeout_ms: 300,
        ..NotificationsConfig::default()
    };
    let w = world_with(&format!("{base}/hang"), settings(vec![0, 10]), &config);
    let started = std::time::Instant::now();
    let (c, _) = w.run_once().await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert!(matches!(c, Completion::Retrying(_)), "{c:?}");
    let row = w.delivery();
    assert_eq!(row.status, DeliveryStatus::Pending);
    assert_eq!(row.attempts[0].status_code, None);
    assert!(
        row.attempts[0]
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("timeout")),
        "{:?}",
        row.attempts[0]
    );
}

#[tokio::test]
async fn the_client_refuses_names_that_resolve_to_private_addresses() {
    let (base, got) = receiver(Vec::new()).await;
    let port = base.rsplit(':').next().expect("port");
    // The check before the call is skipped here: the resolver alone must refuse.
    let w = world(
        &format!("http://localhost:{port}/hook"),
        settings(vec![0, 10]),
    );
    let (c, _) = w.run_once().await;
    assert!(matches!(c, Completion::Retrying(_)), "{c:?}");
    assert!(got.lock().expect("lock").hits.is_empty());
    let open = NotificationsConfig {
        allow_private_targets: true,
        ..NotificationsConfig::default()
    };
    let w = world_with(
        &format!("http://localhost:{port}/hook"),
        settings(vec![0]),
        &open,
    );
    let (c, _) = w.run_once().await;
    assert_eq!(c, Completion::Done);
    assert_eq!(got.lock().expect("lock").hits.len(), 1);
}

/// A resend while the delivery is queued or retrying adds no job and answers that it is live;
/// once it is delivered, a resend starts a new round under a new job (the finished one goes).
#[tokio::test]
async fn a_resend_of_a_live_delivery_adds_no_job() {
    let (base, got) = receiver(vec![500]).await;
    let w = world(&format!("{base}/hook"), settings(vec![0, 3_600_000]));
    let live = |r: destinations::Resent| {
        assert!(r.queued.is_empty(), "{r:?}");
        assert_eq!(r.live, [w.destination.id]);
    };
    live(w.resend());
    assert_eq!(w.delivery_jobs().len(), 1, "queued: no second job");
    let (c, _) = w.run_once().await;
    assert!(matches!(c, Completion::Retrying(_)), "{c:?}");
    live(w.resend());
    assert_eq!(w.delivery_jobs().len(), 1, "retrying: no second job");
    let (c, first) = w.run_once().await;
    assert_eq!(c, Completion::Done);
    assert_eq!(w.delivery().status, DeliveryStatus::Delivered);
    assert_eq!(got.lock().expect("lock").hits.len(), 2);
    let resent = w.resend();
    assert_eq!(resent.queued, [w.destination.id]);
    let jobs = w.delivery_jobs();
    assert_eq!(jobs.len(), 1, "the finished job goes with its round");
    assert_ne!(jobs[0].id, first.id);
    assert_eq!(jobs[0].status, JobStatus::Pending);
    let row = w.delivery();
    assert_eq!(
        (row.status, row.job, row.last_attempt),
        (DeliveryStatus::Pending, Some(jobs[0].id), 2)
    );
    let (c, _) = w.run_once().await;
    assert_eq!(c, Completion::Done);
    assert_eq!(w.delivery().last_attempt, 3);
}

/// A row as written before rows named their job, for the duplicate jobs an older resend made.
#[derive(Clone)]
struct Unowned(TenantId, Id, Id);

impl Command for Unowned {
    type Output = ();

    fn apply(self, tx: &WriteTxn) -> Result<(), StoreError> {
        let Unowned(tenant, ntf, evd) = self;
        let mut row = Delivery::pending(ntf, evd, Id::generate());
        row.job = None;
        put_record(
            &mut tx.open_table(tables::DELIVERIES)?,
            &outbox::delivery_key(tenant, ntf, evd),
            &row,
        )?;
        crate::jobs::enqueue(
            tx,
            &Job::new(
                tenant,
                outbox::DELIVER_JOB,
                outbox::job_payload(ntf, evd),
                0,
            ),
        )
    }
}

/// Two jobs carry one delivery and race: the first delivers, the second's failure completes
/// afterwards. The row stays delivered and the late job ends instead of retrying.
#[tokio::test]
async fn a_stale_completion_never_downgrades_a_delivered_row() {
    let (base, got) = receiver(vec![200, 500]).await;
    let w = world(&format!("{base}/hook"), settings(vec![0, 10, 10]));
    w.store
        .apply_one(Unowned(TENANT, w.notification.id, w.destination.id))
        .expect("second job");
    let leased = w
        .store
        .apply_one(LeaseJobs {
            now_ms: crate::clock::now_ms() + 86_400_000,
            lease_ms: 60_000,
            limit: 2,
        })
        .expect("lease");
    assert_eq!(leased.len(), 2);
    // Both start before either completes; the first to reach the receiver gets the 200.
    let mut effects = Vec::new();
    for job in &leased {
        effects.push((job.clone(), w.handler.run(job.clone()).await));
    }
    assert_eq!(got.lock().expect("lock").hits.len(), 2);
    let mut completions = Vec::new();
    for (job, effect) in effects {
        completions.push(
            w.store
                .apply_one(CompleteJob {
                    id: job.id,
                    lease_until_ms: job.due_at_ms,
                    effect,
                    now_ms: crate::clock::now_ms(),
                    retry: RetryPolicy {
                        max_attempts: 99,
                        base_ms: 1,
                        max_ms: 1,
                    },
                    jitter_seed: 0,
                    aborted: false,
                    on_dead: None,
                })
                .expect("complete"),
        );
    }
    assert_eq!(completions, [Completion::Done, Completion::Done]);
    let row = w.delivery();
    assert_eq!(row.status, DeliveryStatus::Delivered);
    assert_eq!(row.job, Some(leased[0].id));
    assert_eq!(row.last_attempt, 1);
    assert_eq!(
        row.attempts.len(),
        2,
        "the late attempt is shown, not applied"
    );
    assert!(w.delivery_jobs().iter().all(|j| !j.status.is_live()));
}

#[test]
fn only_the_next_attempt_of_the_carrying_job_moves_a_row() {
    let (a, b) = (Id::generate(), Id::generate());
    let mut row = Delivery::pending(Id::generate(), Id::generate(), a);
    row.last_attempt = 2;
    assert!(current(&row, Start { job: a, number: 3 }));
    assert!(!current(&row, Start { job: a, number: 2 }), "older attempt");
    assert!(!current(&row, Start { job: b, number: 3 }), "another job");
    row.job = None;
    assert!(current(&row, Start { job: b, number: 3 }), "an older row");
    row.status = DeliveryStatus::Delivered;
    assert!(!current(&row, Start { job: b, number: 3 }), "delivered");
}
