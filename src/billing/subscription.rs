//! Subscriptions: a customer on a plan, from a start instant, with periods following an anchor.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::period::Schedule;
use super::plan::Plan;
use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "sub";

/// Lifecycle of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubscriptionStatus {
    /// Billing.
    Active,
    /// Will end at `ends_at` (cancelled at period end).
    Canceling,
    /// Ended.
    Canceled,
}

impl SubscriptionStatus {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Canceling => "canceling",
            SubscriptionStatus::Canceled => "canceled",
        }
    }
}

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// `sub_…`.
    pub id: Id,
    /// Who pays.
    pub customer: Id,
    /// What they pay.
    pub plan: Id,
    /// Billing starts.
    pub start_at_ms: i64,
    /// Period boundaries are `anchor + k × interval`.
    pub anchor_ms: i64,
    /// Lifecycle.
    pub status: SubscriptionStatus,
    /// Billing stops here (exclusive), once cancelled.
    pub ends_at_ms: Option<i64>,
    /// When the cancellation was requested.
    pub canceled_at_ms: Option<i64>,
    /// Periods closed into invoices so far.
    pub periods_closed: u64,
    /// Whether the in-advance fee of the first period was invoiced.
    pub opening_invoiced: bool,
    /// Created.
    pub created_at_ms: i64,
}

/// One billing period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// Position, from 0.
    pub index: u64,
    /// Start (inclusive).
    pub start_ms: i64,
    /// End (exclusive), truncated at the subscription's end.
    pub end_ms: i64,
    /// The untruncated end, for proration.
    pub full_end_ms: i64,
    /// The untruncated start (the boundary before `start_ms`), for proration of a first period
    /// that began between boundaries.
    pub full_start_ms: i64,
}

impl Subscription {
    /// The schedule of its boundaries.
    pub fn schedule(&self, plan: &Plan) -> Schedule {
        Schedule {
            anchor_ms: self.anchor_ms,
            interval: plan.interval,
            count: plan.interval_count,
        }
    }

    /// Period `index`, or `None` when the subscription has ended before it.
    pub fn period(&self, plan: &Plan, index: u64) -> Option<Period> {
        let schedule = self.schedule(plan);
        let k0 = schedule.index_of(self.start_at_ms)?;
        let k = k0.checked_add(i64::try_from(index).ok()?)?;
        let boundary_start = schedule.boundary(k)?;
        let full_end_ms = schedule.boundary(k + 1)?;
        let start_ms = if index == 0 {
            self.start_at_ms
        } else {
            boundary_start
        };
        let end_ms = match self.ends_at_ms {
            Some(end) => full_end_ms.min(end),
            None => full_end_ms,
        };
        if start_ms >= end_ms {
            return None;
        }
        Some(Period {
            index,
            start_ms,
            end_ms,
            full_end_ms,
            full_start_ms: boundary_start,
        })
    }

    /// The period containing `at_ms`, if the subscription is running then.
    pub fn period_at(&self, plan: &Plan, at_ms: i64) -> Option<Period> {
        if at_ms < self.start_at_ms || self.ends_at_ms.is_some_and(|e| at_ms >= e) {
            return None;
        }
        let schedule = self.schedule(plan);
        let k0 = schedule.index_of(self.start_at_ms)?;
        let k = schedule.index_of(at_ms)?;
        self.period(plan, u64::try_from(k - k0).ok()?)
    }
}

/// Why a subscription command did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// No such customer.
    #[error("no customer {0}")]
    UnknownCustomer(String),
    /// No such plan.
    #[error("no plan {0}")]
    UnknownPlan(String),
    /// The plan's currency is not the customer's.
    #[error("plan currency {plan} differs from the customer's currency {customer}")]
    CurrencyMismatch {
        /// Plan currency.
        plan: String,
        /// Customer currency.
        customer: String,
    },
    /// No such subscription.
    #[error("no subscription {0}")]
    Missing(String),
    /// Already cancelled.
    #[error("subscription {0} is already canceled")]
    AlreadyCanceled(String),
    /// An immediate cancellation would close more periods than one transaction may.
    #[error("subscription {id} has more than {periods} periods to invoice; run billing (POST /v1/billing-runs) first, then cancel it")]
    Backlog {
        /// The subscription.
        id: String,
        /// The most periods one transaction closes (`billing.run_chunk_periods`).
        periods: u64,
    },
}

/// Creates a subscription.
#[derive(Clone)]
pub struct CreateSubscription {
    /// Owner.
    pub tenant: TenantId,
    /// The subscription.
    pub subscription: Subscription,
}

impl Command for CreateSubscription {
    type Output = Result<(Subscription, Plan), SubscriptionError>;

    fn apply(self, tx: &WriteTransaction) -> Result<Self::Output, StoreError> {
        let sub = self.subscription;
        let customer = {
            let customers = tx.open_table(tables::CUSTOMERS)?;
            get_record::<crate::customers::Customer, _>(
                &customers,
                keys::tenant_id(self.tenant, sub.customer),
            )?
        };
        let Some(customer) = customer else {
            return Ok(Err(SubscriptionError::UnknownCustomer(
                sub.customer.display(crate::customers::PREFIX),
            )));
        };
        let plan = {
            let plans = tx.open_table(tables::PLANS)?;
            super::plan::load(&plans, self.tenant, sub.plan)?
        };
        let Some(plan) = plan else {
            return Ok(Err(SubscriptionError::UnknownPlan(
                sub.plan.display(super::plan::PREFIX),
            )));
        };
        if plan.currency != customer.currency {
            return Ok(Err(SubscriptionError::CurrencyMismatch {
                plan: plan.currency,
                customer: customer.currency,
            }));
        }
        put_record(
            &mut tx.open_table(tables::SUBSCRIPTIONS)?,
            &keys::tenant_id(self.tenant, sub.id),
            &sub,
        )?;
        let mut by_customer = keys::tenant_id(self.tenant, sub.customer).to_vec();
        by_customer.extend_from_slice(&sub.id.to_bytes());
        tx.open_table(tables::SUBSCRIPTIONS_BY_CUSTOMER)?
            .insert(by_customer.as_slice(), ())?;
        emit_subscription(
            tx,
            self.tenant,
            &sub,
            "subscription.created",
            "created",
            sub.created_at_ms,
        )?;
        Ok(Ok((sub, plan)))
    }
}

/// Records a subscription's transition in the outbox (`effect` names the transition).
pub fn emit_subscription(
    tx: &WriteTransaction,
    tenant: TenantId,
    sub: &Subscription,
    event_type: &str,
    effect: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    crate::notifications::outbox::emit(
        tx,
        tenant,
        crate::notifications::outbox::Effect {
            event_type,
            effect: format!("{}:{effect}", sub.id.display(PREFIX)),
            customer: Some(sub.customer),
            kind: "subscription",
            id: sub.id,
            record: sub,
        },
        now_ms,
    )
}

/// Loads a subscription inside a write transaction.
pub fn load(
    tx: &WriteTransaction,
    tenant: TenantId,
    id: Id,
) -> Result<Option<Subscription>, StoreError> {
    let table = tx.open_table(tables::SUBSCRIPTIONS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// Saves a subscription inside a write transaction.
pub fn save(tx: &WriteTransaction, tenant: TenantId, sub: &Subscription) -> Result<(), StoreError> {
    put_record(
        &mut tx.open_table(tables::SUBSCRIPTIONS)?,
        &keys::tenant_id(tenant, sub.id),
        sub,
    )
}

/// One subscription.
pub fn get(
    tx: &ReadTransaction,
    tenant: TenantId,
    id: Id,
) -> Result<Option<Subscription>, StoreError> {
    let table = tx.open_table(tables::SUBSCRIPTIONS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// A customer's subscriptions.
pub fn of_customer(
    tx: &ReadTransaction,
    tenant: TenantId,
    customer: Id,
) -> Result<Vec<Subscription>, StoreError> {
    let index = tx.open_table(tables::SUBSCRIPTIONS_BY_CUSTOMER)?;
    let table = tx.open_table(tables::SUBSCRIPTIONS)?;
    let prefix = keys::tenant_id(tenant, customer).to_vec();
    let mut end = prefix.clone();
    end.extend_from_slice(&[0xFF; 17]);
    let mut out = Vec::new();
    for entry in index.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
        let (key, _) = entry?;
        let id = key
            .value()
            .get(24..40)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Id::from_bytes)
            .ok_or_else(|| StoreError::Corrupt("malformed subscription index key".into()))?;
        if let Some(s) = get_record::<Subscription, _>(&table, keys::tenant_id(tenant, id))? {
            out.push(s);
        }
    }
    Ok(out)
}

/// The ids of a tenant's subscriptions from `from` (inclusive; all when `None`), in id order:
/// billing runs walk them all, resuming where their previous transaction stopped.
pub fn ids_from(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    from: Option<Id>,
) -> Result<Vec<Id>, StoreError> {
    let (start, end) = keys::tenant_range(tenant);
    let lower = match from {
        Some(id) => keys::tenant_id(tenant, id).to_vec(),
        None => start,
    };
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
        let (key, _) = entry?;
        if let Some(id) = keys::id_of(key.value()) {
            out.push(id);
        }
    }
    Ok(out)
}
