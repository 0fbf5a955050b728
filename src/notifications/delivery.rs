//! Delivering one notification to one destination: the `notification.deliver` job.
//!
//! The handler reads the notification and the destination from a snapshot, renders the body,
//! signs it the Standard Webhooks way (`webhook-id` is the notification id, the same on every
//! attempt and resend, so receivers can deduplicate) and POSTs it without following
//! redirects. Only a 2xx is delivered. The attempt is recorded by the job's completion effect,
//! in the writer, never during the call: a failure retries on the configured schedule, and
//! after the last one the delivery is failed and the job a dead letter. A destination that
//! has failed continuously for long enough is disabled there, and `destination.disabled` is
//! recorded in the same transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::WriteTxn;
use tokio::sync::Semaphore;

use super::destination::{self, Destination, DestinationStatus};
use super::destinations;
use super::outbox::{self, Delivery, DeliveryAttempt, DeliveryStatus, Notification, Subject};
use crate::config::NotificationsConfig;
use crate::id::Id;
use crate::jobs::worker::{Handler, HandlerFuture};
use crate::jobs::{Effect, Job, Outcome};
use crate::store::keys::TenantId;
use crate::store::{put_record, tables, Store, StoreError};
use crate::webhooks::signature;

/// Turns a notification into the request body (the API's JSON rendering).
pub type Renderer = Arc<dyn Fn(&Notification) -> Result<Vec<u8>, String> + Send + Sync>;

/// Most response bytes read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most response bytes kept with an attempt.
pub const EXCERPT_BYTES: usize = 1024;
/// Most attempts kept on a delivery row (the oldest are dropped beyond this).
pub const MAX_ATTEMPTS_KEPT: usize = 100;
/// How long a delivery waits before trying again when its destination is at its limit.
const BUSY_DELAY_MS: i64 = 1_000;

/// The delivery settings, from `[notifications]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Skip the private-address check.
    pub allow_private_targets: bool,
    /// Accept `http://` URLs.
    pub allow_http: bool,
    /// Delay before each attempt, the first included.
    pub retry_schedule_ms: Vec<i64>,
    /// Deliveries in flight per destination.
    pub max_in_flight: usize,
    /// Continuous failure before a destination is disabled.
    pub disable_after_ms: i64,
}

impl From<&NotificationsConfig> for Settings {
    fn from(c: &NotificationsConfig) -> Self {
        Settings {
            allow_private_targets: c.allow_private_targets,
            allow_http: c.allow_http,
            retry_schedule_ms: c
                .retry_schedule_secs
                .iter()
                .map(|s| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
                .collect(),
            max_in_flight: usize::try_from(c.max_in_flight_per_destination).unwrap_or(4),
            disable_after_ms: i64::try_from(c.disable_after_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        }
    }
}

/// The HTTP client deliveries use: no redirects, the configured timeouts, a `User-Agent`
/// naming Tally and its version, and (unless private targets are allowed) a resolver that
/// refuses names resolving to private addresses, so the address connected to is the one
/// checked (a name cannot resolve to a public address for the check and a private one for the
/// call).
pub fn client(c: &NotificationsConfig) -> reqwest::Result<reqwest::Client> {
    // No proxy from the environment: a proxy would resolve the destination itself, after
    // the address check, and could reach what the check refuses.
    let builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_millis(c.connect_timeout_ms))
        .timeout(Duration::from_millis(c.timeout_ms))
        .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")));
    if c.allow_private_targets {
        builder.build()
    } else {
        builder.dns_resolver(Arc::new(PublicOnly)).build()
    }
}

/// A resolver that answers only when every address of the name is public.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addresses.iter().any(|a| destinations::is_private(a.ip())) {
                // The address itself is not named: it would map the operator's network.
                return Err(format!("{host} does not resolve to public addresses only").into());
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The `webhook-signature` header: one `v1,<base64>` per signing secret, space-separated.
pub fn signature_header(secrets: &[&str], id: &str, timestamp_s: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|s| signature::sign_standard(s, id, timestamp_s, body))
        .map(|s| format!("v1,{s}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `notification.deliver` handler.
#[derive(Clone)]
pub struct Deliver {
    /// Reads.
    pub store: Arc<Store>,
    /// The client of [`client`].
    pub client: reqwest::Client,
    /// The body.
    pub render: Renderer,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Per-destination limits on deliveries in flight.
    pub in_flight: Arc<Mutex<HashMap<Id, Arc<Semaphore>>>>,
}

impl Deliver {
    /// A handler with no delivery in flight.
    pub fn new(
        store: Arc<Store>,
        client: reqwest::Client,
        render: Renderer,
        settings: Settings,
    ) -> Self {
        Deliver {
            store,
            client,
            render,
            settings: Arc::new(settings),
            in_flight: Arc::default(),
        }
    }

    fn limit_of(&self, destination: Id) -> Arc<Semaphore> {
        let mut map = match self.in_flight.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        Arc::clone(
            map.entry(destination)
                .or_insert_with(|| Arc::new(Semaphore::new(self.settings.max_in_flight.max(1)))),
        )
    }

    async fn deliver(self, job: Job) -> Result<Effect, String> {
        let (ntf, evd) = outbox::parse_job_payload(&job.payload)
            .ok_or_else(|| format!("malformed delivery payload {:?}", job.payload))?;
        let tenant = TenantId(job.tenant);
        let (notification, dest, row) = {
            let tx = self.store.read().map_err(|e| e.to_string())?;
            let n = outbox::get(&tx, tenant, ntf).map_err(|e| e.to_string())?;
            let d = destinations::get(&tx, tenant, evd).map_err(|e| e.to_string())?;
            let r = outbox::delivery(&tx, tenant, ntf, evd).map_err(|e| e.to_string())?;
            (n, d, r)
        };
        let (Some(notification), Some(dest)) = (notification, dest) else {
            // Nothing left to deliver (or nowhere to): the job is done.
            return Ok(Box::new(|_, _| Ok(Outcome::Done)));
        };
        if row
            .as_ref()
            .is_some_and(|r| r.job.is_some_and(|j| j != job.id))
        {
            // Another job carries the delivery now (a resend after this one finished, and
            // then this one was replayed): it delivers, this one would only repeat it.
            return Ok(Box::new(|_, _| Ok(Outcome::Done)));
        }
        let start = Start {
            job: job.id,
            number: row.map_or(1, |r| r.last_attempt.saturating_add(1)),
        };
        if dest.status == DestinationStatus::Disabled {
            let attempt = refused(crate::clock::now_ms(), "the destination is disabled".into());
            return Ok(Box::new(move |tx, _| {
                update_row(tx, tenant, ntf, evd, attempt, DeliveryStatus::Failed, start)?;
                Ok(Outcome::Done)
            }));
        }
        let Ok(_permit) = self.limit_of(evd).try_acquire_owned() else {
            return Ok(Box::new(|_, _| Ok(Outcome::Postpone(BUSY_DELAY_MS))));
        };
        let attempt = self.attempt(&notification, &dest).await;
        let settings = Arc::clone(&self.settings);
        Ok(Box::new(move |tx, job| {
            record_attempt(tx, job, (tenant, ntf, evd), attempt, start, &settings)
        }))
    }

    /// One POST, measured; never fails (a failure is an attempt with an error).
    async fn attempt(&self, n: &Notification, d: &Destination) -> DeliveryAttempt {
        let at_ms = crate::clock::now_ms();
        let url = match destinations::check_url(&d.url, self.settings.allow_http) {
            Ok(url) => url,
            Err(e) => return refused(at_ms, format!("url {e}")),
        };
        if !self.settings.allow_private_targets {
            if let Err(e) = destinations::check_target(&url).await {
                return refused(at_ms, format!("url {e}"));
            }
        }
        let body = match (self.render)(n) {
            Ok(b) => b,
            Err(e) => return refused(at_ms, format!("could not render the notification: {e}")),
        };
        let id = n.id.display(outbox::PREFIX);
        let timestamp_s = at_ms.div_euclid(1000);
        let signature = signature_header(&d.signing_secrets(at_ms), &id, timestamp_s, &body);
        let started = Instant::now();
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp_s.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let (status_code, error, response_excerpt) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let (bytes, read_error) = read_limited(response).await;
                (Some(status), read_error, excerpt(&bytes))
            }
            Err(e) => (None, Some(describe(&e)), String::new()),
        };
        let elapsed = started.elapsed();
        metrics::histogram!("tally_delivery_seconds").record(elapsed.as_secs_f64());
        DeliveryAttempt {
            at_ms,
            status_code,
            error,
            latency_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            response_excerpt,
        }
    }
}

impl Handler for Deliver {
    fn run(&self, job: Job) -> HandlerFuture {
        Box::pin(self.clone().deliver(job))
    }
}

fn refused(at_ms: i64, error: String) -> DeliveryAttempt {
    DeliveryAttempt {
        at_ms,
        status_code: None,
        error: Some(error),
        latency_ms: 0,
        response_excerpt: String::new(),
    }
}

/// The error of a failed request, without the URL's query (which may carry a token).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of a response body.
async fn read_limited(mut response: reqwest::Response) -> (Vec<u8>, Option<String>) {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BYTES.saturating_sub(bytes.len());
                bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if bytes.len() >= MAX_RESPONSE_BYTES {
                    return (bytes, None);
                }
            }
            Ok(None) => return (bytes, None),
            Err(e) => return (bytes, Some(describe(&e))),
        }
    }
}

/// The first KiB of a body, as text: at most `EXCERPT_BYTES` bytes once converted (invalid
/// bytes become three-byte replacement characters), cut on a character boundary.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_BYTES)]);
    let mut end = text.len().min(EXCERPT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Whether an attempt delivered: a 2xx with the whole body read.
fn delivered(a: &DeliveryAttempt) -> bool {
    a.error.is_none() && a.status_code.is_some_and(|s| (200..300).contains(&s))
}

/// What an attempt started from: the job that made it and its number on the delivery row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The job making the attempt.
    pub job: Id,
    /// `last_attempt + 1` of the row when the attempt started.
    pub number: u32,
}

/// Whether an attempt's result may still move the row: the row is not delivered, its job is
/// the one that made the attempt (or it names none yet), and no other result was recorded
/// since the attempt started. Anything else is a stale completion.
fn current(row: &Delivery, start: Start) -> bool {
    row.status != DeliveryStatus::Delivered
        && row.job.is_none_or(|j| j == start.job)
        && row.last_attempt.saturating_add(1) == start.number
}

/// Records an attempt on the delivery row. A current attempt (see [`current`]) moves the row
/// to `status`; a stale one is only kept in the history and moves nothing, so a row never goes
/// back from `delivered` or from a newer result. Returns whether it was current.
fn update_row(
    tx: &WriteTxn,
    tenant: TenantId,
    ntf: Id,
    evd: Id,
    attempt: DeliveryAttempt,
    status: DeliveryStatus,
    start: Start,
) -> Result<bool, StoreError> {
    let key = outbox::delivery_key(tenant, ntf, evd);
    let mut table = tx.open_table(tables::DELIVERIES)?;
    let mut row = outbox::load_delivery(&table, &key)?.unwrap_or(Delivery {
        last_attempt: start.number.saturating_sub(1),
        ..Delivery::pending(ntf, evd, start.job)
    });
    let fresh = current(&row, start);
    row.attempts.push(attempt);
    // A stale attempt may have started before the latest recorded one.
    row.attempts.sort_by_key(|a| a.at_ms);
    if row.attempts.len() > MAX_ATTEMPTS_KEPT {
        row.attempts.remove(0);
    }
    if fresh {
        row.status = status;
        row.job = Some(start.job);
        row.last_attempt = start.number;
    }
    put_record(&mut table, &key, &row)?;
    Ok(fresh)
}

/// The completion effect: the attempt on the delivery row, the destination's failure streak
/// (disabling it after `disable_after_ms`), and what the job does next. A stale attempt (see
/// [`current`]) ends its job: the row belongs to a newer attempt or is delivered.
fn record_attempt(
    tx: &WriteTxn,
    job: &Job,
    (tenant, ntf, evd): (TenantId, Id, Id),
    attempt: DeliveryAttempt,
    start: Start,
    settings: &Settings,
) -> Result<Outcome, StoreError> {
    let at_ms = attempt.at_ms;
    if delivered(&attempt) {
        if !update_row(
            tx,
            tenant,
            ntf,
            evd,
            attempt,
            DeliveryStatus::Delivered,
            start,
        )? {
            return Ok(Outcome::Done);
        }
        if let Some(mut d) = destinations::load(tx, tenant, evd)? {
            if d.failing_since_ms.is_some() {
                d.failing_since_ms = None;
                d.drop_expired_secrets(at_ms);
                destination::save(tx, &d)?;
            }
        }
        metrics::counter!("tally_deliveries_total", "outcome" => "delivered").increment(1);
        return Ok(Outcome::Done);
    }
    let error = match (&attempt.error, attempt.status_code) {
        (Some(e), _) => e.clone(),
        (None, Some(s)) => format!("the destination answered {s}"),
        (None, None) => "no answer".to_string(),
    };
    let next = usize::try_from(job.attempts)
        .ok()
        .and_then(|n| settings.retry_schedule_ms.get(n).copied());
    let status = if next.is_some() {
        DeliveryStatus::Pending
    } else {
        DeliveryStatus::Failed
    };
    if !update_row(tx, tenant, ntf, evd, attempt, status, start)? {
        return Ok(Outcome::Done);
    }
    note_failure(tx, tenant, evd, at_ms, settings)?;
    let outcome = if next.is_some() { "retried" } else { "failed" };
    metrics::counter!("tally_deliveries_total", "outcome" => outcome).increment(1);
    Ok(Outcome::RetryIn {
        error,
        delay_ms: next,
    })
}

/// Starts or extends the destination's failure streak; disables it (recording
/// `destination.disabled`) once the streak is `disable_after_ms` long.
fn note_failure(
    tx: &WriteTxn,
    tenant: TenantId,
    evd: Id,
    at_ms: i64,
    settings: &Settings,
) -> Result<(), StoreError> {
    let Some(mut d) = destinations::load(tx, tenant, evd)? else {
        return Ok(());
    };
    d.drop_expired_secrets(at_ms);
    let since = *d.failing_since_ms.get_or_insert(at_ms);
    let disable = d.status == DestinationStatus::Enabled
        && at_ms.saturating_sub(since) >= settings.disable_after_ms;
    if disable {
        d.status = DestinationStatus::Disabled;
        d.updated_at_ms = at_ms;
        // Saved first, so the notification is not delivered to the destination it disables.
        destination::save(tx, &d)?;
        let mut shown = d.clone();
        shown.secrets.clear();
        let effect = format!("{}:disabled:{since}", d.id.display(destination::PREFIX));
        outbox::record(
            tx,
            tenant,
            "destination.disabled",
            &effect,
            None,
            Subject::of("destination", d.id, &shown)?,
            at_ms,
        )?;
        tracing::warn!(destination = %d.id.display(destination::PREFIX), "event destination disabled after failing continuously");
        return Ok(());
    }
    destination::save(tx, &d)
}

#[cfg(test)]
mod tests;
