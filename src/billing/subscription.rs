//! Subscriptions: a customer on a plan, from a start instant, with periods following an anchor.

use std::collections::BTreeMap;

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::period::Schedule;
use super::phase::{self, Phase, Proration};
use super::plan::Plan;
use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

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
    /// The plans over time, ordered by start; the first starts at `start_at_ms`. `plan` is the
    /// plan of the phase in effect when the subscription was last written.
    pub phases: Vec<Phase>,
    /// The trial ends here (exclusive): no fixed fee before it, and usage is billed only when
    /// the plan says so. The first paid period starts here (it is the billing anchor).
    pub trial_end_ms: Option<i64>,
    /// Whether `subscription.trial_will_end` was recorded.
    pub trial_notice_sent: bool,
    /// Overrides the plan's minimum commitment per period (minor units).
    pub minimum_minor: Option<i64>,
    /// The anchor the trial's periods followed when the trial was ended early (the anchor then
    /// moved to the new trial end): periods before `trial_end_ms` keep their boundaries.
    pub trial_anchor_ms: Option<i64>,
}

/// A subscription as stored by schema 3 and earlier (before phases and trials); schema 4's
/// migration rewrites each into [`Subscription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionV3 {
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

impl From<SubscriptionV3> for Subscription {
    fn from(old: SubscriptionV3) -> Self {
        Subscription {
            phases: vec![Phase {
                plan: old.plan,
                start_ms: old.start_at_ms,
                proration: Proration::Prorate,
                change: None,
                requested_at_ms: old.created_at_ms,
            }],
            id: old.id,
            customer: old.customer,
            plan: old.plan,
            start_at_ms: old.start_at_ms,
            anchor_ms: old.anchor_ms,
            status: old.status,
            ends_at_ms: old.ends_at_ms,
            canceled_at_ms: old.canceled_at_ms,
            periods_closed: old.periods_closed,
            opening_invoiced: old.opening_invoiced,
            created_at_ms: old.created_at_ms,
            trial_end_ms: None,
            trial_notice_sent: false,
            minimum_minor: None,
            trial_anchor_ms: None,
        }
    }
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
    /// A new active subscription on one plan from `start_at_ms`, periods following
    /// `anchor_ms`, with no trial.
    pub fn new(
        id: Id,
        customer: Id,
        plan: Id,
        start_at_ms: i64,
        anchor_ms: i64,
        created_at_ms: i64,
    ) -> Self {
        Subscription {
            id,
            customer,
            plan,
            start_at_ms,
            anchor_ms,
            status: SubscriptionStatus::Active,
            ends_at_ms: None,
            canceled_at_ms: None,
            periods_closed: 0,
            opening_invoiced: false,
            created_at_ms,
            phases: vec![Phase {
                plan,
                start_ms: start_at_ms,
                proration: Proration::Prorate,
                change: None,
                requested_at_ms: created_at_ms,
            }],
            trial_end_ms: None,
            trial_notice_sent: false,
            minimum_minor: None,
            trial_anchor_ms: None,
        }
    }

    /// The same subscription with a trial until `trial_end_ms`: the first paid period starts
    /// there, so the trial's end is the billing anchor and nothing is billed in advance before it.
    pub fn with_trial(mut self, trial_end_ms: i64) -> Self {
        self.trial_end_ms = Some(trial_end_ms);
        self.anchor_ms = trial_end_ms;
        self.opening_invoiced = true;
        self
    }

    /// The schedule of its boundaries.
    pub fn schedule(&self, plan: &Plan) -> Schedule {
        Schedule {
            anchor_ms: self.anchor_ms,
            interval: plan.interval,
            count: plan.interval_count,
        }
    }

    /// Period `index`, or `None` when the subscription has ended before it. Periods follow the
    /// schedule's boundaries, except that a change made with `invoice_now` splits the period it
    /// falls in into two parts, each a period of its own (with the schedule period's bounds for
    /// proration).
    pub fn period(&self, plan: &Plan, index: u64) -> Option<Period> {
        match self.trial_views() {
            None => self.period_on_schedule(plan, index),
            Some((trial, paid)) => {
                let trial_parts = trial.parts_through(plan);
                if index < trial_parts {
                    return trial.period_on_schedule(plan, index);
                }
                paid.period_on_schedule(plan, index - trial_parts)
                    .map(|p| Period { index, ..p })
            }
        }
    }

    /// When a trial ended early: the subscription as its trial's periods saw it (their anchor,
    /// ending at the trial's end) and as its paid periods see it (starting at the trial's end).
    fn trial_views(&self) -> Option<(Subscription, Subscription)> {
        let (trial_anchor, trial_end) = (self.trial_anchor_ms?, self.trial_end_ms?);
        if trial_anchor == self.anchor_ms || trial_end <= self.start_at_ms {
            return None;
        }
        let mut trial = self.clone();
        trial.trial_anchor_ms = None;
        trial.anchor_ms = trial_anchor;
        trial.ends_at_ms = Some(self.ends_at_ms.map_or(trial_end, |e| e.min(trial_end)));
        let mut paid = self.clone();
        paid.trial_anchor_ms = None;
        paid.start_at_ms = trial_end;
        Some((trial, paid))
    }

    /// How many periods this view has up to its end (its trial part).
    fn parts_through(&self, plan: &Plan) -> u64 {
        let Some(end) = self.ends_at_ms else {
            return 0;
        };
        self.period_at_on_schedule(plan, end.saturating_sub(1))
            .map_or(0, |p| p.index + 1)
    }

    /// Period `index` on the one schedule of `anchor_ms`.
    fn period_on_schedule(&self, plan: &Plan, index: u64) -> Option<Period> {
        let schedule = self.schedule(plan);
        let k0 = schedule.index_of(self.start_at_ms)?;
        // Splits strictly inside a schedule period, each with its schedule position.
        let mut before: Option<i64> = None;
        let mut after: Option<(u64, i64)> = None;
        let mut extra: u64 = 0;
        for split in phase::splits(&self.phases) {
            let k = schedule.index_of(split)?;
            if schedule.boundary(k)? == split || split <= self.start_at_ms {
                continue;
            }
            let rel = u64::try_from(k.checked_sub(k0)?).ok()?;
            let part = rel.checked_add(extra)?.checked_add(1)?;
            if part > index {
                after = Some((rel, split));
                break;
            }
            extra += 1;
            before = Some(split);
        }
        let rel = index.checked_sub(extra)?;
        let k = k0.checked_add(i64::try_from(rel).ok()?)?;
        let boundary_start = schedule.boundary(k)?;
        let full_end_ms = schedule.boundary(k + 1)?;
        let mut start_ms = if rel == 0 {
            self.start_at_ms
        } else {
            boundary_start
        };
        if let Some(split) = before.filter(|s| *s > boundary_start && *s < full_end_ms) {
            start_ms = split;
        }
        let mut end_ms = full_end_ms;
        if let Some((split_rel, split)) = after {
            if split_rel == rel {
                end_ms = split;
            }
        }
        if let Some(end) = self.ends_at_ms {
            end_ms = end_ms.min(end);
        }
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
        match self.trial_views() {
            None => self.period_at_on_schedule(plan, at_ms),
            Some((trial, paid)) => {
                if at_ms < paid.start_at_ms {
                    return trial.period_at_on_schedule(plan, at_ms);
                }
                let offset = trial.parts_through(plan);
                paid.period_at_on_schedule(plan, at_ms).map(|p| Period {
                    index: p.index + offset,
                    ..p
                })
            }
        }
    }

    /// The period containing `at_ms` on the one schedule of `anchor_ms`.
    fn period_at_on_schedule(&self, plan: &Plan, at_ms: i64) -> Option<Period> {
        if at_ms < self.start_at_ms || self.ends_at_ms.is_some_and(|e| at_ms >= e) {
            return None;
        }
        let schedule = self.schedule(plan);
        let k0 = schedule.index_of(self.start_at_ms)?;
        let k = schedule.index_of(at_ms)?;
        let mut index = u64::try_from(k - k0).ok()?;
        for split in phase::splits(&self.phases) {
            let sk = schedule.index_of(split)?;
            if schedule.boundary(sk)? == split || split <= self.start_at_ms {
                continue;
            }
            if split > at_ms {
                break;
            }
            index += 1;
        }
        self.period_on_schedule(plan, index)
    }

    /// The plan in effect at `at_ms`.
    pub fn plan_at(&self, at_ms: i64) -> Id {
        phase::at(&self.phases, at_ms).plan
    }

    /// Whether `[start_ms, end_ms)` lies in the trial (a period never straddles its end: the
    /// trial's end is the billing anchor).
    pub fn in_trial(&self, end_ms: i64) -> bool {
        self.trial_end_ms.is_some_and(|t| end_ms <= t)
    }

    /// The start of the first period not yet closed: no change may take effect at or before
    /// it, since what was invoiced before it (including a fee billed in advance for it) was
    /// priced by the phases as they are.
    pub fn open_from_ms(&self, plan: &Plan) -> Option<i64> {
        self.period(plan, self.periods_closed).map(|p| p.start_ms)
    }

    /// The change scheduled after `now_ms`, if any (at most one is pending).
    pub fn scheduled_change(&self, now_ms: i64) -> Option<&Phase> {
        self.phases
            .last()
            .filter(|p| p.start_ms > now_ms && p.change.is_some())
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
    /// The new plan bills on another interval (a change keeps the period boundaries).
    #[error("plan bills every {plan}, the subscription every {current}; a change keeps the billing interval (cancel at period end and subscribe to change it)")]
    IntervalMismatch {
        /// The new plan's interval.
        plan: String,
        /// The subscription's interval.
        current: String,
    },
    /// A change is already scheduled; cancel it first.
    #[error("subscription {id} has a change scheduled at {}; cancel it (POST /v1/subscriptions/{id}/scheduled-change/cancel) first", crate::clock::rfc3339(*at_ms))]
    ChangeScheduled {
        /// The subscription.
        id: String,
        /// When the scheduled change takes effect.
        at_ms: i64,
    },
    /// No change is scheduled.
    #[error("subscription {0} has no scheduled change")]
    NoScheduledChange(String),
    /// The phase history is full.
    #[error("subscription {0} has {1} phases, the most one subscription may have")]
    TooManyPhases(String, usize),
    /// The change would take effect inside what is already invoiced.
    #[error("effective must be after {}: the periods before it are invoiced (or the last change takes effect then)", crate::clock::rfc3339(*earliest_ms))]
    EffectiveTooEarly {
        /// The earliest instant allowed (exclusive).
        earliest_ms: i64,
    },
    /// The change is scheduled too far ahead.
    #[error("effective must be at or before {}", crate::clock::rfc3339(*latest_ms))]
    EffectiveTooLate {
        /// The latest instant allowed.
        latest_ms: i64,
    },
    /// The subscription ends before the change would take effect.
    #[error("subscription {id} ends at {}; a change must take effect before that (resume it first)", crate::clock::rfc3339(*end_ms))]
    EndsBefore {
        /// The subscription.
        id: String,
        /// Its end.
        end_ms: i64,
    },
    /// The subscription is already on the plan at that instant.
    #[error("subscription {0} is already on plan {1} then")]
    AlreadyOnPlan(String, String),
    /// The subscription is not running (not started, or ended).
    #[error("subscription {0} has no current period")]
    NotRunning(String),
    /// The subscription is not in a trial.
    #[error("subscription {0} is not in a trial")]
    NotTrialing(String),
    /// The subscription is not canceled at period end (or its end has passed).
    #[error("subscription {0} is not canceling at a future period end")]
    NotCanceling(String),
    /// The lines could not be computed.
    #[error("invoice: {0}")]
    Invoice(String),
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

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let sub = self.subscription;
        let customer = crate::customers::load_in_write(tx, self.tenant, sub.customer)?;
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
    tx: &WriteTxn,
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
pub fn load(tx: &WriteTxn, tenant: TenantId, id: Id) -> Result<Option<Subscription>, StoreError> {
    let table = tx.open_table(tables::SUBSCRIPTIONS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// Saves a subscription inside a write transaction.
pub fn save(tx: &WriteTxn, tenant: TenantId, sub: &Subscription) -> Result<(), StoreError> {
    put_record(
        &mut tx.open_table(tables::SUBSCRIPTIONS)?,
        &keys::tenant_id(tenant, sub.id),
        sub,
    )
}

/// One subscription.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Subscription>, StoreError> {
    let table = tx.open_table(tables::SUBSCRIPTIONS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// A customer's subscriptions.
pub fn of_customer(
    tx: &ReadTxn,
    tenant: TenantId,
    customer: Id,
) -> Result<Vec<Subscription>, StoreError> {
    of_customer_in(
        &tx.open_table(tables::SUBSCRIPTIONS_BY_CUSTOMER)?,
        &tx.open_table(tables::SUBSCRIPTIONS)?,
        tenant,
        customer,
    )
}

/// A customer's subscriptions, from any transaction's tables.
pub fn of_customer_in(
    index: &impl ReadableTable<&'static [u8], ()>,
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    customer: Id,
) -> Result<Vec<Subscription>, StoreError> {
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
        if let Some(s) = get_record::<Subscription, _>(table, keys::tenant_id(tenant, id))? {
            out.push(s);
        }
    }
    Ok(out)
}

/// Every plan the subscription's phases name, by id (a missing plan is simply absent; computing
/// a line it would price reports it).
pub fn plans_of(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    sub: &Subscription,
) -> Result<BTreeMap<Id, Plan>, StoreError> {
    let mut out = BTreeMap::new();
    for id in phase::plans(&sub.phases) {
        if let Some(plan) = super::plan::load(table, tenant, id)? {
            out.insert(id, plan);
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

/// Rows one listing request examines at most: a sparse filter answers a short page with a
/// cursor instead of scanning without bound.
pub const LIST_SCAN_ROWS: usize = 10_000;

/// Which subscriptions a listing keeps (every given condition must hold).
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilter {
    /// Only this customer's (read through the by-customer index).
    pub customer: Option<Id>,
    /// Only on this plan.
    pub plan: Option<Id>,
    /// Only in this state.
    pub status: Option<SubscriptionStatus>,
}

impl ListFilter {
    fn keeps(&self, s: &Subscription) -> bool {
        self.customer.is_none_or(|c| s.customer == c)
            && self
                .plan
                .is_none_or(|p| s.plan_at(crate::clock::now_ms()) == p)
            && self.status.is_none_or(|st| s.status == st)
    }
}

/// A page being filled: what it kept, how many rows it examined.
struct Collector<'a> {
    filter: &'a ListFilter,
    limit: usize,
    budget: usize,
    out: Vec<Subscription>,
    examined: usize,
    last_examined: Option<Id>,
}

impl Collector<'_> {
    /// Whether the page is done before the next row, and its cursor if so.
    fn done(&self) -> Option<Option<Id>> {
        if self.out.len() == self.limit {
            return Some(self.out.last().map(|s| s.id));
        }
        (self.examined == self.budget).then_some(self.last_examined)
    }

    fn take(&mut self, id: Id, sub: Option<Subscription>) {
        self.examined += 1;
        self.last_examined = Some(id);
        if let Some(sub) = sub.filter(|s| self.filter.keeps(s)) {
            self.out.push(sub);
        }
    }
}

/// A page of subscriptions in id (creation) order after `after`, examining at most `budget`
/// rows, and the cursor to continue from (`None` when nothing follows): the last one returned,
/// or the last row examined when the budget ran out first, so a filter that matches nothing
/// for a long stretch still moves forward.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    filter: &ListFilter,
    after: Option<Id>,
    limit: usize,
    budget: usize,
) -> Result<(Vec<Subscription>, Option<Id>), StoreError> {
    let table = tx.open_table(tables::SUBSCRIPTIONS)?;
    // With a customer, its index holds (tenant, customer, id): the same id order, fewer rows.
    let prefix = match filter.customer {
        Some(customer) => keys::tenant_id(tenant, customer).to_vec(),
        None => tenant.to_bytes().to_vec(),
    };
    let lower = match after {
        // The smallest key strictly after `after`.
        Some(id) => [prefix.as_slice(), &id.to_bytes(), &[0]].concat(),
        None => prefix.clone(),
    };
    let end = [prefix.as_slice(), &[0xFF; 17]].concat();
    let id_in = |key: &[u8]| {
        key.get(prefix.len()..prefix.len() + 16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Id::from_bytes)
            .ok_or_else(|| StoreError::Corrupt("malformed subscription key".into()))
    };
    let mut page = Collector {
        filter,
        limit,
        budget,
        out: Vec::new(),
        examined: 0,
        last_examined: None,
    };
    if filter.customer.is_some() {
        let index = tx.open_table(tables::SUBSCRIPTIONS_BY_CUSTOMER)?;
        for entry in index.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
            if let Some(cursor) = page.done() {
                return Ok((page.out, cursor));
            }
            let (key, _) = entry?;
            let id = id_in(key.value())?;
            page.take(id, get_record(&table, keys::tenant_id(tenant, id))?);
        }
    } else {
        for entry in table.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
            if let Some(cursor) = page.done() {
                return Ok((page.out, cursor));
            }
            let (key, value) = entry?;
            page.take(id_in(key.value())?, Some(codec::decode(value.value())?));
        }
    }
    Ok((page.out, None))
}
