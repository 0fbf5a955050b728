//! Processing received webhooks: the `webhook.process` job dispatches each event by provider
//! and type to a registered handler, inside the transaction that completes the job.
//!
//! A handler checks, then writes (like every command) and must be idempotent: replays re-run
//! it. It answers `Applied`, `Ignored` (unknown types are stored and marked ignored), or
//! `NotYet` when the event refers to something that does not exist yet (an out-of-order
//! delivery): the job then retries with backoff instead of failing. A payload that is not a
//! JSON object reaches no handler: it is marked `invalid_payload` at once and never retried.
//!
//! Built in for the `standard` provider, so any system that speaks Standard Webhooks can feed
//! Tally without an API key on its side:
//! - `customer.upserted` (`data`: `external_id`, `currency`, optional `name`, `email`): creates
//!   the customer if absent;
//! - `usage.recorded` (`data`: one native event or `{"events": [...]}`): ingests usage with the
//!   same identities as `POST /v1/events`. Events naming a customer that does not exist yet
//!   make the delivery wait (`NotYet`) rather than be dropped.

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::{ReadableTable, WriteTxn};

use super::endpoint::Provider;
use super::event::{EventStatus, WebhookEvent, PREFIX};
use crate::config::IngestConfig;
use crate::id::Id;
use crate::jobs::worker::{Handler, HandlerFuture};
use crate::jobs::{Effect, Job, Outcome};
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{get_record, put_record, tables, StoreError};

/// What a handler did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Its effect is written.
    Applied,
    /// Nothing to do.
    Ignored,
    /// Depends on something not there yet; retry later.
    NotYet(String),
    /// Cannot be applied as sent; retried, then a dead letter for an operator.
    Failed(String),
}

/// The payload as a JSON object, the only shape a provider's event takes; `None` otherwise.
pub fn payload_object(payload: &str) -> Option<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .filter(serde_json::Value::is_object)
}

/// Applies one provider event type, inside the completing transaction.
pub trait EventHandler: Send + Sync + 'static {
    /// Checks, then writes.
    fn apply(
        &self,
        tx: &WriteTxn,
        tenant: TenantId,
        event: &WebhookEvent,
        body: &serde_json::Value,
        now_ms: i64,
    ) -> Result<Handled, StoreError>;
}

/// Handlers by `provider:type`.
#[derive(Default, Clone)]
pub struct EventHandlers {
    handlers: HashMap<String, Arc<dyn EventHandler>>,
}

impl EventHandlers {
    /// Registers a handler for one provider's event type.
    pub fn register(
        &mut self,
        provider: Provider,
        event_type: &str,
        handler: Arc<dyn EventHandler>,
    ) {
        self.handlers
            .insert(format!("{}:{event_type}", provider.as_str()), handler);
    }

    fn get(&self, provider: Provider, event_type: &str) -> Option<Arc<dyn EventHandler>> {
        self.handlers
            .get(&format!("{}:{event_type}", provider.as_str()))
            .cloned()
    }

    /// The built-in handlers.
    pub fn builtin(ingest: IngestConfig) -> Self {
        let mut handlers = Self::default();
        handlers.register(
            Provider::Standard,
            "customer.upserted",
            Arc::new(CustomerUpserted),
        );
        handlers.register(
            Provider::Standard,
            "usage.recorded",
            Arc::new(UsageRecorded { config: ingest }),
        );
        handlers
    }
}

/// The `webhook.process` job handler.
pub struct ProcessWebhook {
    /// Event handlers.
    pub handlers: Arc<EventHandlers>,
}

impl Handler for ProcessWebhook {
    fn run(&self, job: Job) -> HandlerFuture {
        let handlers = Arc::clone(&self.handlers);
        Box::pin(async move {
            let effect: Effect =
                Box::new(move |tx: &WriteTxn, job: &Job| process(tx, job, &handlers));
            let _ = job;
            Ok(effect)
        })
    }
}

fn process(tx: &WriteTxn, job: &Job, handlers: &EventHandlers) -> Result<Outcome, StoreError> {
    let tenant = TenantId(job.tenant);
    let Some(id) = Id::parse(&job.payload, PREFIX) else {
        return Ok(Outcome::Retry(format!(
            "job payload {:?} is not a webhook event id",
            job.payload
        )));
    };
    let key = keys::tenant_id(tenant, id);
    let event = {
        let events = tx.open_table(tables::WEBHOOK_EVENTS)?;
        get_record::<WebhookEvent, _>(&events, key)?
    };
    let Some(mut event) = event else {
        return Ok(Outcome::Retry(format!(
            "webhook event {} is missing",
            job.payload
        )));
    };
    let now_ms = crate::clock::now_ms();
    let Some(body) = payload_object(&event.payload) else {
        // No handler can ever read it, and the stored bytes never change: a permanent outcome.
        event.status = EventStatus::InvalidPayload;
        event.processed_at_ms = Some(now_ms);
        put_record(&mut tx.open_table(tables::WEBHOOK_EVENTS)?, &key, &event)?;
        return Ok(Outcome::Done);
    };
    let handled = match handlers.get(event.provider, &event.event_type) {
        Some(h) => h.apply(tx, tenant, &event, &body, now_ms)?,
        None => Handled::Ignored,
    };
    let outcome = match handled {
        Handled::Applied => {
            event.status = EventStatus::Processed;
            event.processed_at_ms = Some(now_ms);
            Outcome::Done
        }
        Handled::Ignored => {
            event.status = EventStatus::Ignored;
            event.processed_at_ms = Some(now_ms);
            Outcome::Done
        }
        Handled::NotYet(reason) => return Ok(Outcome::Retry(format!("not yet: {reason}"))),
        Handled::Failed(reason) => return Ok(Outcome::Retry(reason)),
    };
    put_record(&mut tx.open_table(tables::WEBHOOK_EVENTS)?, &key, &event)?;
    Ok(outcome)
}

/// `customer.upserted`: creates the customer if its external id is new.
struct CustomerUpserted;

impl EventHandler for CustomerUpserted {
    fn apply(
        &self,
        tx: &WriteTxn,
        tenant: TenantId,
        _event: &WebhookEvent,
        body: &serde_json::Value,
        now_ms: i64,
    ) -> Result<Handled, StoreError> {
        let data = &body["data"];
        let Some(external_id) = data["external_id"]
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 255)
        else {
            return Ok(Handled::Failed(
                "data.external_id must be a string of 1-255 bytes".into(),
            ));
        };
        let Some(currency) = data["currency"]
            .as_str()
            .filter(|c| crate::currency::is_known(c))
        else {
            return Ok(Handled::Failed(
                "data.currency must be an ISO 4217 code".into(),
            ));
        };
        let exists = {
            let index = tx.open_table(tables::CUSTOMER_BY_EXTERNAL)?;
            let found = index
                .get(keys::tenant_bytes(tenant, external_id.as_bytes()).as_slice())?
                .is_some();
            found
        };
        if exists {
            return Ok(Handled::Applied);
        }
        let customer = crate::customers::Customer {
            name: data["name"].as_str().map(str::to_string),
            email: data["email"].as_str().map(str::to_string),
            ..crate::customers::Customer::new(
                Id::generate_at(now_ms),
                external_id.to_string(),
                currency.to_string(),
                now_ms,
            )
        };
        match (crate::customers::CreateCustomer { tenant, customer }).apply(tx)? {
            Ok(_) => Ok(Handled::Applied),
            Err(e) => Ok(Handled::Failed(e.to_string())),
        }
    }
}

/// `usage.recorded`: ingests the events in `data`.
struct UsageRecorded {
    config: IngestConfig,
}

impl EventHandler for UsageRecorded {
    fn apply(
        &self,
        tx: &WriteTxn,
        tenant: TenantId,
        _event: &WebhookEvent,
        body: &serde_json::Value,
        now_ms: i64,
    ) -> Result<Handled, StoreError> {
        let ctx = crate::ingest::parse::Context {
            tenant,
            now_ms,
            config: &self.config,
        };
        let parsed = match crate::ingest::parse::parse_body(
            body["data"].clone(),
            crate::ingest::parse::Format::Native,
            &ctx,
        ) {
            Ok(p) => p,
            Err(e) => return Ok(Handled::Failed(format!("data: {e}"))),
        };
        // Check first: every customer must exist, or the whole delivery waits.
        {
            let index = tx.open_table(tables::CUSTOMER_BY_EXTERNAL)?;
            for event in parsed.iter().flatten() {
                let key = keys::tenant_bytes(tenant, event.customer_external_id.as_bytes());
                if index.get(key.as_slice())?.is_none() {
                    return Ok(Handled::NotYet(format!(
                        "customer {:?} does not exist yet",
                        event.customer_external_id
                    )));
                }
            }
        }
        if let Some(Err(rejection)) = parsed.iter().find(|p| p.is_err()) {
            return Ok(Handled::Failed(format!(
                "an event is invalid: {}",
                rejection.detail
            )));
        }
        let statuses = crate::ingest::event::IngestBatch {
            tenant,
            events: parsed,
            now_ms,
            idempotency_key: None,
        }
        .apply(tx)?;
        match statuses.iter().find_map(|s| match s {
            crate::ingest::event::Status::Rejected(r) => Some(r.detail.clone()),
            _ => None,
        }) {
            // A rejection here means nothing of that event was written; the others are stored
            // and will be duplicates on retry.
            Some(detail) => Ok(Handled::Failed(format!("an event was rejected: {detail}"))),
            None => Ok(Handled::Applied),
        }
    }
}
