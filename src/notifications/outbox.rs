//! The transactional outbox: one notification per effect, written with the effect.
//!
//! [`record`] derives the notification's identity from the effect's own (for example an
//! invoice id and the transition), so the same effect reported twice (a replayed request, a
//! retried job, a webhook that repeats a transition) finds the first record and adds nothing.
//! The notification holds the subject as the effect left it (the encoded domain record), so
//! what it says never changes afterwards; rendering it as JSON is the API's business. In the
//! same write it gets the tenant's next `sequence` (increasing in commit order) and one
//! delivery row and job per destination that wants its type.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::destination;
use crate::id::Id;
use crate::jobs::{self, Job};
use crate::store::keys::{self, TenantId};
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "ntf";
/// The job kind that delivers one notification to one destination.
pub const DELIVER_JOB: &str = "notification.deliver";

/// What a notification is about, as the effect left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// The object's kind: `customer`, `subscription`, `invoice`, `payment`, `credit_grant`,
    /// `reconciliation`, `dead_letter`, `destination`.
    pub kind: String,
    /// The object's id.
    pub id: Id,
    /// The domain record, encoded by the store codec at the time of the effect.
    pub record: Vec<u8>,
}

impl Subject {
    /// A subject from a domain record.
    pub fn of<T: Serialize>(kind: &str, id: Id, record: &T) -> Result<Self, StoreError> {
        Ok(Subject {
            kind: kind.to_string(),
            id,
            record: codec::encode(record)?,
        })
    }
}

/// A notification as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// `ntf_…`, derived from the effect.
    pub id: Id,
    /// Whose.
    pub tenant: u64,
    /// A catalogue type.
    pub event_type: String,
    /// Per tenant, increasing in commit order.
    pub sequence: u64,
    /// When the effect committed (its transaction's time).
    pub created_at_ms: i64,
    /// The customer concerned, for filtering.
    pub customer: Option<Id>,
    /// The object.
    pub subject: Subject,
}

/// Where one notification stands with one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    /// Not delivered yet; attempts continue.
    Pending,
    /// A 2xx answered.
    Delivered,
    /// Every attempt failed: a dead letter.
    Failed,
}

impl DeliveryStatus {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// When it started.
    pub at_ms: i64,
    /// The HTTP status, when one came back.
    pub status_code: Option<u16>,
    /// Why it failed without a status (timeout, refused, redirect…).
    pub error: Option<String>,
    /// How long it took.
    pub latency_ms: u64,
    /// The first KiB of the response body.
    pub response_excerpt: String,
}

/// One notification's delivery to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The notification.
    pub notification: Id,
    /// The destination.
    pub destination: Id,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Every attempt, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
    /// The job that carries the delivery now: only its attempts change the status, so a job
    /// it replaced can never move it (`None` on rows recorded before rows named their job).
    pub job: Option<Id>,
    /// The number of the last attempt whose result moved the status (every result counts,
    /// unlike `attempts`, which keeps the latest [`MAX_ATTEMPTS_KEPT`]). An attempt starts as
    /// number `last_attempt + 1`, and its result is recorded only while that is still next.
    ///
    /// [`MAX_ATTEMPTS_KEPT`]: super::delivery::MAX_ATTEMPTS_KEPT
    pub last_attempt: u32,
}

impl Delivery {
    /// A new pending delivery carried by `job`.
    pub fn pending(notification: Id, destination: Id, job: Id) -> Self {
        Delivery {
            notification,
            destination,
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
            job: Some(job),
            last_attempt: 0,
        }
    }
}

/// A delivery row as written before rows named their job and counted their attempts.
#[derive(Deserialize)]
struct DeliveryBeforeJobs {
    notification: Id,
    destination: Id,
    status: DeliveryStatus,
    attempts: Vec<DeliveryAttempt>,
}

/// Decodes a delivery row of either shape: today's, or one written before rows named their job
/// (bincode is not self-describing: the older bytes end where today's fields would begin, so
/// today's shape never decodes them and the older one never decodes today's).
pub fn decode_delivery(bytes: &[u8]) -> Result<Delivery, StoreError> {
    match codec::decode::<Delivery>(bytes) {
        Ok(row) => Ok(row),
        Err(e) => match codec::decode::<DeliveryBeforeJobs>(bytes) {
            Ok(old) => Ok(Delivery {
                notification: old.notification,
                destination: old.destination,
                status: old.status,
                last_attempt: u32::try_from(old.attempts.len()).unwrap_or(u32::MAX),
                attempts: old.attempts,
                job: None,
            }),
            Err(_) => Err(e.into()),
        },
    }
}

/// One delivery row, inside a write.
pub fn load_delivery(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Delivery>, StoreError> {
    match table.get(key)? {
        Some(v) => decode_delivery(v.value()).map(Some),
        None => Ok(None),
    }
}

/// The key of a delivery row: tenant, notification, destination.
pub fn delivery_key(tenant: TenantId, notification: Id, destination: Id) -> Vec<u8> {
    let mut key = keys::tenant_id(tenant, notification).to_vec();
    key.extend_from_slice(&destination.to_bytes());
    key
}

/// The identity of an effect: the tenant, the type and the effect's own words.
fn effect_hash(tenant: TenantId, event_type: &str, effect: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("tally 2026-12 notification effect v1");
    h.update(&tenant.to_bytes());
    h.update(&(event_type.len() as u64).to_be_bytes());
    h.update(event_type.as_bytes());
    h.update(effect.as_bytes());
    *h.finalize().as_bytes()
}

/// Records the notification of an effect, once: `effect` names the effect itself (for example
/// `"inv_…:finalized"`), so reporting the same effect again returns `None` and writes nothing.
/// Writes the notification, its identity, its sequence and a delivery row and job per
/// subscribed destination, in the caller's transaction.
pub fn record(
    tx: &WriteTxn,
    tenant: TenantId,
    event_type: &str,
    effect: &str,
    customer: Option<Id>,
    subject: Subject,
    now_ms: i64,
) -> Result<Option<Notification>, StoreError> {
    debug_assert!(
        super::catalogue::is_known(event_type),
        "{event_type} is not in the catalogue"
    );
    let hash = effect_hash(tenant, event_type, effect);
    let identity = keys::tenant_bytes(tenant, &hash[..16]);
    if tx
        .open_table(tables::NOTIFICATION_KEYS)?
        .get(identity.as_slice())?
        .is_some()
    {
        return Ok(None);
    }
    // Time-ordered like every id (the effect's millisecond), the rest from the effect.
    let mut bytes = Id::generate_at(now_ms).to_bytes();
    bytes[6..].copy_from_slice(&hash[..10]);
    let id = Id::from_bytes(bytes);
    let sequence = crate::store::next_counter(tx, &format!("notification_sequence:{}", tenant.0))?;
    let notification = Notification {
        id,
        tenant: tenant.0,
        event_type: event_type.to_string(),
        sequence,
        created_at_ms: now_ms,
        customer,
        subject,
    };
    put_record(
        &mut tx.open_table(tables::NOTIFICATIONS)?,
        &keys::tenant_id(tenant, id),
        &notification,
    )?;
    tx.open_table(tables::NOTIFICATION_KEYS)?
        .insert(identity.as_slice(), id.to_bytes().as_slice())?;
    for d in destination::subscribed(tx, tenant, event_type)? {
        start_delivery(tx, tenant, id, d.id, now_ms)?;
    }
    metrics::counter!("tally_notifications_total", "type" => event_type.to_string()).increment(1);
    Ok(Some(notification))
}

/// What one effect reports: its type, its own identity, whom it concerns and its object.
pub struct Effect<'a, T: Serialize> {
    /// A catalogue type.
    pub event_type: &'a str,
    /// The effect's identity (for example `"inv_…:finalized"`).
    pub effect: String,
    /// The customer concerned.
    pub customer: Option<Id>,
    /// The object's kind (see [`Subject::kind`]).
    pub kind: &'a str,
    /// The object's id.
    pub id: Id,
    /// The object as the effect left it.
    pub record: &'a T,
}

/// [`record`] for the emitters: builds the subject from a domain record.
pub fn emit<T: Serialize>(
    tx: &WriteTxn,
    tenant: TenantId,
    effect: Effect<'_, T>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let subject = Subject::of(effect.kind, effect.id, effect.record)?;
    record(
        tx,
        tenant,
        effect.event_type,
        &effect.effect,
        effect.customer,
        subject,
        now_ms,
    )?;
    Ok(())
}

/// `dead_letter.created`, in the transaction that makes `job` a dead letter (the job queue's
/// dead-letter hook). Once per death: a replayed job that dies again is a new effect. The death
/// of a delivery of a `dead_letter.created` records nothing: its own event would go to the same
/// failing destination, die too, and so on without end.
pub fn dead_letter(tx: &WriteTxn, job: &Job, now_ms: i64) -> Result<(), StoreError> {
    // A delivery that died is visible on its notification's deliveries and in the dead
    // letters; announcing it as an event would send it to the destinations that are failing
    // and multiply the failures.
    if job.kind == DELIVER_JOB {
        return Ok(());
    }
    emit(
        tx,
        TenantId(job.tenant),
        Effect {
            event_type: "dead_letter.created",
            effect: format!("{}:dead:{}", job.id.display(jobs::PREFIX), job.attempts),
            customer: None,
            kind: "dead_letter",
            id: job.id,
            record: job,
        },
        now_ms,
    )
}

/// A pending delivery row and the job that performs it.
pub fn start_delivery(
    tx: &WriteTxn,
    tenant: TenantId,
    notification: Id,
    destination: Id,
    now_ms: i64,
) -> Result<(), StoreError> {
    let job = Job::new(
        tenant,
        DELIVER_JOB,
        job_payload(notification, destination),
        now_ms,
    );
    put_record(
        &mut tx.open_table(tables::DELIVERIES)?,
        &delivery_key(tenant, notification, destination),
        &Delivery::pending(notification, destination, job.id),
    )?;
    jobs::enqueue(tx, &job)
}

/// One delivery row.
pub fn delivery(
    tx: &ReadTxn,
    tenant: TenantId,
    notification: Id,
    destination: Id,
) -> Result<Option<Delivery>, StoreError> {
    let table = tx.open_table(tables::DELIVERIES)?;
    load_delivery(&table, &delivery_key(tenant, notification, destination))
}

/// One notification.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Notification>, StoreError> {
    let table = tx.open_table(tables::NOTIFICATIONS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// The deliveries of one notification, one per destination.
pub fn deliveries(
    tx: &ReadTxn,
    tenant: TenantId,
    notification: Id,
) -> Result<Vec<Delivery>, StoreError> {
    rows_of(&tx.open_table(tables::DELIVERIES)?, tenant, notification)
}

/// The delivery rows of one notification in a deliveries table (read or write).
pub fn rows_of(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    notification: Id,
) -> Result<Vec<Delivery>, StoreError> {
    let lo = delivery_key(tenant, notification, Id::from_bytes([0; 16]));
    let hi = delivery_key(tenant, notification, Id::from_bytes([0xFF; 16]));
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (_, v) = entry?;
        out.push(decode_delivery(v.value())?);
    }
    Ok(out)
}

/// What a notification listing is filtered by.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// One type.
    pub event_type: Option<String>,
    /// One customer.
    pub customer: Option<Id>,
    /// Created at or after.
    pub from_ms: Option<i64>,
    /// Created before.
    pub to_ms: Option<i64>,
}

impl Filter {
    fn keeps(&self, n: &Notification) -> bool {
        self.event_type.as_deref().is_none_or(|t| t == n.event_type)
            && self.customer.is_none_or(|c| n.customer == Some(c))
            && self.from_ms.is_none_or(|f| n.created_at_ms >= f)
            && self.to_ms.is_none_or(|t| n.created_at_ms < t)
    }
}

/// A page of notifications in id (time) order after `after`, examining at most `budget` rows,
/// and the cursor to continue from (`None` when nothing follows): the last notification
/// returned, or the last row examined when the budget ran out first, so a filter that matches
/// nothing for a long stretch still moves forward.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    filter: &Filter,
    after: Option<Id>,
    limit: usize,
    budget: usize,
) -> Result<(Vec<Notification>, Option<Id>), StoreError> {
    let table = tx.open_table(tables::NOTIFICATIONS)?;
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after {
        Some(id) => {
            let mut k = keys::tenant_id(tenant, id).to_vec();
            k.push(0);
            k
        }
        None => start,
    };
    let mut out: Vec<Notification> = Vec::new();
    let mut last_examined = None;
    for (examined, entry) in table
        .range::<&[u8]>(lower.as_slice()..end.as_slice())?
        .enumerate()
    {
        if out.len() == limit {
            return Ok((out.clone(), out.last().map(|n| n.id)));
        }
        if examined == budget {
            return Ok((out, last_examined));
        }
        let (_, v) = entry?;
        let n: Notification = codec::decode(v.value())?;
        last_examined = Some(n.id);
        if filter.keeps(&n) {
            out.push(n);
        }
    }
    Ok((out, None))
}

/// The payload of a delivery job: `ntf_…:evd_…` (as [`start_delivery`] writes it).
pub fn job_payload(notification: Id, destination: Id) -> String {
    format!(
        "{}:{}",
        notification.display(PREFIX),
        destination.display(destination::PREFIX)
    )
}

/// The notification and destination of a delivery job's payload.
pub fn parse_job_payload(payload: &str) -> Option<(Id, Id)> {
    let (n, d) = payload.split_once(':')?;
    Some((Id::parse(n, PREFIX)?, Id::parse(d, destination::PREFIX)?))
}
