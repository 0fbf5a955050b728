//! Received webhook events: the durable receipt, deduplicated by the provider's event id, and
//! the job that processes it, committed together before the provider gets its 2xx.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::endpoint::Provider;
use crate::id::Id;
use crate::jobs::{self, Job, JobStatus};
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "whv";
/// The job kind that processes received webhooks.
pub const JOB_KIND: &str = "webhook.process";

/// How far processing got (retrying and dead are read from the job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventStatus {
    /// Stored, waiting for (or between) processing attempts.
    Received,
    /// A handler applied it.
    Processed,
    /// No handler for its type: stored and acknowledged, nothing to do.
    Ignored,
    /// The signed body is not a JSON object, so no handler can read it: a permanent outcome,
    /// never retried (a redelivery of the same bytes cannot succeed either).
    InvalidPayload,
}

/// A received event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// `whv_…`.
    pub id: Id,
    /// Whose.
    pub tenant: u64,
    /// The endpoint it arrived at.
    pub endpoint: Id,
    /// Signing scheme.
    pub provider: Provider,
    /// Its identity: the provider's event id, or `derived:…` when it has none.
    pub provider_event_id: String,
    /// The payload's `type`.
    pub event_type: String,
    /// The raw body as received.
    pub payload: String,
    /// The headers that matter (ids, timestamps), for inspection.
    pub headers: Vec<(String, String)>,
    /// Received.
    pub received_at_ms: i64,
    /// Processing status.
    pub status: EventStatus,
    /// The job processing it (the latest, after replays).
    pub job: Id,
    /// When processing finished.
    pub processed_at_ms: Option<i64>,
    /// Times it was replayed.
    pub replays: u32,
}

fn receipt_key(tenant: TenantId, endpoint: Id, identity: &str) -> Vec<u8> {
    let mut key = keys::tenant_id(tenant, endpoint).to_vec();
    key.extend_from_slice(identity.as_bytes());
    key
}

/// Stores a verified delivery and its processing job, unless it was received before.
#[derive(Clone)]
pub struct Receive {
    /// Whose.
    pub tenant: TenantId,
    /// The event (status received).
    pub event: WebhookEvent,
    /// Identities under which an earlier delivery would be found (the event's own first;
    /// derived identities also name the previous time window).
    pub lookup: Vec<String>,
}

/// What a delivery came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// New: stored with its job.
    New(Id),
    /// Seen before: the original.
    Duplicate(Id),
}

impl Command for Receive {
    type Output = Receipt;

    fn apply(self, tx: &WriteTxn) -> Result<Receipt, StoreError> {
        let mut receipts = tx.open_table(tables::WEBHOOK_RECEIPTS)?;
        for identity in &self.lookup {
            let key = receipt_key(self.tenant, self.event.endpoint, identity);
            let found = receipts
                .get(key.as_slice())?
                .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
                .map(Id::from_bytes);
            if let Some(existing) = found {
                return Ok(Receipt::Duplicate(existing));
            }
        }
        let event = self.event;
        let key = receipt_key(self.tenant, event.endpoint, &event.provider_event_id);
        receipts.insert(key.as_slice(), event.id.to_bytes().as_slice())?;
        let job = Job {
            id: event.job,
            ..Job::new(
                self.tenant,
                JOB_KIND,
                event.id.display(PREFIX),
                event.received_at_ms,
            )
        };
        jobs::enqueue(tx, &job)?;
        put_record(
            &mut tx.open_table(tables::WEBHOOK_EVENTS)?,
            &keys::tenant_id(self.tenant, event.id),
            &event,
        )?;
        Ok(Receipt::New(event.id))
    }
}

/// Why a replay did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// No such event.
    #[error("no webhook event {0}")]
    Missing(String),
    /// Its processing job is still queued or running.
    #[error("webhook event {0} is already queued for processing")]
    Queued(String),
}

/// Re-runs processing of a received event from its durable record.
#[derive(Clone)]
pub struct Replay {
    /// Whose.
    pub tenant: TenantId,
    /// Which.
    pub id: Id,
    /// The new job's id.
    pub job: Id,
    /// Now.
    pub now_ms: i64,
}

impl Command for Replay {
    type Output = Result<WebhookEvent, ReplayError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let mut events = tx.open_table(tables::WEBHOOK_EVENTS)?;
        let key = keys::tenant_id(self.tenant, self.id);
        let Some(mut event) = get_record::<WebhookEvent, _>(&events, key)? else {
            return Ok(Err(ReplayError::Missing(self.id.display(PREFIX))));
        };
        let current = {
            let jobs_table = tx.open_table(tables::JOBS)?;
            get_record::<Job, _>(&jobs_table, event.job.to_bytes())?
        };
        match current.map(|j| j.status) {
            Some(JobStatus::Pending | JobStatus::Leased) => {
                return Ok(Err(ReplayError::Queued(self.id.display(PREFIX))));
            }
            Some(JobStatus::Dead) => {
                tx.open_table(tables::DEAD_LETTERS)?
                    .remove(keys::tenant_id(self.tenant, event.job).as_slice())?;
            }
            _ => {}
        }
        let job = Job {
            id: self.job,
            ..Job::new(self.tenant, JOB_KIND, event.id.display(PREFIX), self.now_ms)
        };
        jobs::enqueue(tx, &job)?;
        event.job = job.id;
        event.replays += 1;
        put_record(&mut events, &key, &event)?;
        Ok(Ok(event))
    }
}

/// One event.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<WebhookEvent>, StoreError> {
    let table = tx.open_table(tables::WEBHOOK_EVENTS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// Every status [`display_status`] can show, for filters and documentation.
pub const DISPLAY_STATUSES: [&str; 6] = [
    "received",
    "processed",
    "ignored",
    "invalid_payload",
    "retrying",
    "dead",
];

/// The status shown to operators: processed, ignored and invalid_payload from the event;
/// retrying and dead from its job.
pub fn display_status(event: &WebhookEvent, job: Option<&Job>) -> &'static str {
    match event.status {
        EventStatus::Processed => "processed",
        EventStatus::Ignored => "ignored",
        EventStatus::InvalidPayload => "invalid_payload",
        EventStatus::Received => match job {
            Some(j) if j.status == JobStatus::Dead => "dead",
            Some(j) if j.log.iter().any(|a| a.error.is_some()) => "retrying",
            _ => "received",
        },
    }
}

/// A page of events with their processing jobs, and whether more follow.
pub type EventPage = (Vec<(WebhookEvent, Option<Job>)>, bool);

/// A page of a tenant's events after `after`.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    after: Option<Id>,
    limit: usize,
    status: Option<&str>,
) -> Result<EventPage, StoreError> {
    let table = tx.open_table(tables::WEBHOOK_EVENTS)?;
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after {
        Some(id) => {
            let mut k = keys::tenant_id(tenant, id).to_vec();
            k.push(0);
            k
        }
        None => start,
    };
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
        let (_, value) = entry?;
        let event: WebhookEvent = crate::store::codec::decode(value.value())?;
        let job = jobs::get(tx, event.job)?;
        if status.is_some_and(|s| s != display_status(&event, job.as_ref())) {
            continue;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push((event, job));
    }
    Ok((out, false))
}
