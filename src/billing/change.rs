//! The subscription lifecycle after creation: plan changes (now, at period end or at an
//! instant, with the proration the caller chose), canceling a scheduled change, ending a trial
//! early, and resuming a subscription canceled at period end.
//!
//! Every rule lives in [`plan_change`], a pure function of the subscription and the two plans,
//! so the preview and the change itself decide alike; the commands re-check everything inside
//! their write transaction.

use crate::store::WriteTxn;
use serde::Serialize;

use super::phase::{self, Phase, Proration, MAX_PHASES};
use super::plan::Plan;
use super::run::{self, Policy};
use super::subscription::{self, Subscription, SubscriptionError, SubscriptionStatus};
use crate::id::Id;
use crate::store::keys::TenantId;
use crate::store::writer::Command;
use crate::store::{tables, StoreError};

/// Furthest ahead a change may be scheduled (5 × 366 days, like a subscription's start).
pub const MAX_CHANGE_AHEAD_MS: i64 = 5 * 366 * 86_400_000;

/// When a change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effective {
    /// At the request's instant.
    Now,
    /// At the end of the current period.
    PeriodEnd,
    /// At an instant (in the current period, or in the future).
    At(i64),
}

/// A plan change as requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeRequest {
    /// The new plan.
    pub plan: Id,
    /// When.
    pub effective: Effective,
    /// How the period's fee is treated.
    pub proration: Proration,
    /// The change's id (`chg_…`).
    pub change: Id,
    /// The request's instant.
    pub now_ms: i64,
}

/// Applies `req` to a copy of `sub` (whose periods follow `current`'s interval), checking every
/// rule; returns the changed subscription and the instant the change takes effect.
pub fn plan_change(
    sub: &Subscription,
    current: &Plan,
    new_plan: &Plan,
    req: &ChangeRequest,
) -> Result<(Subscription, i64), SubscriptionError> {
    let name = sub.id.display(subscription::PREFIX);
    if sub.status == SubscriptionStatus::Canceled {
        return Err(SubscriptionError::AlreadyCanceled(name));
    }
    if new_plan.currency != current.currency {
        return Err(SubscriptionError::CurrencyMismatch {
            plan: new_plan.currency.clone(),
            customer: current.currency.clone(),
        });
    }
    if (new_plan.interval, new_plan.interval_count) != (current.interval, current.interval_count) {
        return Err(SubscriptionError::IntervalMismatch {
            plan: format!(
                "{} × {}",
                new_plan.interval_count,
                new_plan.interval.as_str()
            ),
            current: format!("{} × {}", current.interval_count, current.interval.as_str()),
        });
    }
    if let Some(pending) = sub.scheduled_change(req.now_ms) {
        return Err(SubscriptionError::ChangeScheduled {
            id: name,
            at_ms: pending.start_ms,
        });
    }
    if sub.phases.len() >= MAX_PHASES {
        return Err(SubscriptionError::TooManyPhases(name, MAX_PHASES));
    }
    // The plan of the latest phase is the one from then on: changing to it changes nothing
    // (so identical concurrent requests make one change and the rest learn why).
    if sub.phases.last().is_some_and(|p| p.plan == new_plan.id) {
        return Err(SubscriptionError::AlreadyOnPlan(
            name,
            new_plan.id.display(super::plan::PREFIX),
        ));
    }
    let at_ms = effective_instant(sub, current, req)?;
    if sub.plan_at(at_ms) == new_plan.id {
        return Err(SubscriptionError::AlreadyOnPlan(
            name,
            new_plan.id.display(super::plan::PREFIX),
        ));
    }
    let mut changed = sub.clone();
    changed.phases.push(Phase {
        plan: new_plan.id,
        start_ms: at_ms,
        proration: req.proration,
        change: Some(req.change),
        requested_at_ms: req.now_ms,
    });
    if at_ms <= req.now_ms {
        changed.plan = new_plan.id;
    }
    debug_assert!(changed
        .phases
        .windows(2)
        .all(|w| w[0].start_ms < w[1].start_ms));
    Ok((changed, at_ms))
}

/// The instant a change takes effect, checked: in the current period or later, after
/// everything already invoiced (the first period not yet closed starts before it), after the
/// last phase, before the subscription's end, and not beyond [`MAX_CHANGE_AHEAD_MS`].
fn effective_instant(
    sub: &Subscription,
    current: &Plan,
    req: &ChangeRequest,
) -> Result<i64, SubscriptionError> {
    let name = || sub.id.display(subscription::PREFIX);
    let at_ms = match req.effective {
        Effective::Now => req.now_ms,
        Effective::At(ms) => ms,
        Effective::PeriodEnd => sub
            .period_at(current, req.now_ms)
            .map(|p| p.end_ms)
            .ok_or_else(|| SubscriptionError::NotRunning(name()))?,
    };
    // A change may be backdated within the current period only (never into an earlier one).
    let current_start = sub
        .period_at(current, req.now_ms)
        .map_or(sub.start_at_ms, |p| p.start_ms);
    let earliest = sub
        .open_from_ms(current)
        .ok_or_else(|| SubscriptionError::NotRunning(name()))?
        .max(sub.phases.last().map_or(i64::MIN, |p| p.start_ms))
        .max(current_start.saturating_sub(1));
    if at_ms <= earliest {
        return Err(SubscriptionError::EffectiveTooEarly {
            earliest_ms: earliest,
        });
    }
    if at_ms > req.now_ms.saturating_add(MAX_CHANGE_AHEAD_MS) {
        return Err(SubscriptionError::EffectiveTooLate {
            latest_ms: req.now_ms.saturating_add(MAX_CHANGE_AHEAD_MS),
        });
    }
    if let Some(end) = sub.ends_at_ms.filter(|e| at_ms >= *e) {
        return Err(SubscriptionError::EndsBefore {
            id: name(),
            end_ms: end,
        });
    }
    Ok(at_ms)
}

/// What a lifecycle command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// The subscription after it.
    pub subscription: Subscription,
    /// When the change takes (or took) effect, for plan changes.
    pub effective_at_ms: Option<i64>,
    /// Invoices it issued at once.
    pub invoices: Vec<Id>,
}

fn load_plan(tx: &WriteTxn, tenant: TenantId, id: Id) -> Result<Option<Plan>, StoreError> {
    super::plan::load(&tx.open_table(tables::PLANS)?, tenant, id)
}

/// Loads a subscription and its current plan, or the business failure.
fn load_both(
    tx: &WriteTxn,
    tenant: TenantId,
    id: Id,
) -> Result<Result<(Subscription, Plan), SubscriptionError>, StoreError> {
    let Some(sub) = subscription::load(tx, tenant, id)? else {
        return Ok(Err(SubscriptionError::Missing(
            id.display(subscription::PREFIX),
        )));
    };
    let Some(plan) = load_plan(tx, tenant, sub.plan)? else {
        return Ok(Err(SubscriptionError::UnknownPlan(
            sub.plan.display(super::plan::PREFIX),
        )));
    };
    Ok(Ok((sub, plan)))
}

/// Refuses work that would close more periods in one transaction than a run chunk may.
fn check_backlog(
    sub: &Subscription,
    plan: &Plan,
    now_ms: i64,
    policy: &Policy,
) -> Result<(), SubscriptionError> {
    if run::open_periods(sub, plan, now_ms, policy.chunk_periods) > policy.chunk_periods {
        return Err(SubscriptionError::Backlog {
            id: sub.id.display(subscription::PREFIX),
            periods: policy.chunk_periods,
        });
    }
    Ok(())
}

/// Saves the subscription and records `subscription.updated` for the transition `effect`.
fn save_and_emit(
    tx: &WriteTxn,
    tenant: TenantId,
    sub: &Subscription,
    effect: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    subscription::save(tx, tenant, sub)?;
    subscription::emit_subscription(tx, tenant, sub, "subscription.updated", effect, now_ms)
}

/// Changes a subscription's plan.
#[derive(Clone)]
pub struct ChangeSubscription {
    /// Owner.
    pub tenant: TenantId,
    /// Which subscription.
    pub id: Id,
    /// The change.
    pub request: ChangeRequest,
    /// Grace, windows and chunk bound.
    pub policy: Policy,
    /// The intent.
    pub origin: String,
}

impl Command for ChangeSubscription {
    type Output = Result<Changed, SubscriptionError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let (sub, current) = match load_both(tx, self.tenant, self.id)? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let Some(new_plan) = load_plan(tx, self.tenant, self.request.plan)? else {
            return Ok(Err(SubscriptionError::UnknownPlan(
                self.request.plan.display(super::plan::PREFIX),
            )));
        };
        let (changed, at_ms) = match plan_change(&sub, &current, &new_plan, &self.request) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let now_ms = self.request.now_ms;
        let closes_now = self.request.proration == Proration::InvoiceNow && at_ms <= now_ms;
        if closes_now {
            if let Err(e) = check_backlog(&changed, &current, now_ms, &self.policy) {
                return Ok(Err(e));
            }
        }
        let (changed, invoices) = if closes_now {
            run::close_ended_now(tx, self.tenant, changed, now_ms, &self.policy, &self.origin)?
        } else {
            (changed, Vec::new())
        };
        let effect = format!(
            "change:{}",
            self.request.change.display(phase::CHANGE_PREFIX)
        );
        save_and_emit(tx, self.tenant, &changed, &effect, now_ms)?;
        Ok(Ok(Changed {
            subscription: changed,
            effective_at_ms: Some(at_ms),
            invoices,
        }))
    }
}

/// Cancels the change scheduled for a later instant.
#[derive(Clone)]
pub struct CancelScheduledChange {
    /// Owner.
    pub tenant: TenantId,
    /// Which subscription.
    pub id: Id,
    /// Now: only a change after it can be canceled.
    pub now_ms: i64,
}

impl Command for CancelScheduledChange {
    type Output = Result<Changed, SubscriptionError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(mut sub) = subscription::load(tx, self.tenant, self.id)? else {
            return Ok(Err(SubscriptionError::Missing(
                self.id.display(subscription::PREFIX),
            )));
        };
        let Some(change) = sub.scheduled_change(self.now_ms).and_then(|p| p.change) else {
            return Ok(Err(SubscriptionError::NoScheduledChange(
                self.id.display(subscription::PREFIX),
            )));
        };
        sub.phases.pop();
        let effect = format!("change_canceled:{}", change.display(phase::CHANGE_PREFIX));
        save_and_emit(tx, self.tenant, &sub, &effect, self.now_ms)?;
        Ok(Ok(Changed {
            subscription: sub,
            effective_at_ms: None,
            invoices: Vec::new(),
        }))
    }
}

/// Ends a trial now: the trial's last period closes at once (its invoice carries the first
/// paid period's fee when that is billed in advance), and periods follow from now.
#[derive(Clone)]
pub struct EndTrial {
    /// Owner.
    pub tenant: TenantId,
    /// Which subscription.
    pub id: Id,
    /// Now.
    pub now_ms: i64,
    /// Grace, windows and chunk bound.
    pub policy: Policy,
    /// The intent.
    pub origin: String,
}

impl Command for EndTrial {
    type Output = Result<Changed, SubscriptionError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let (mut sub, plan) = match load_both(tx, self.tenant, self.id)? {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let name = self.id.display(subscription::PREFIX);
        let trialing = sub.trial_end_ms.is_some_and(|t| t > self.now_ms)
            && sub.start_at_ms < self.now_ms
            && sub.status != SubscriptionStatus::Canceled;
        if !trialing {
            return Ok(Err(SubscriptionError::NotTrialing(name)));
        }
        if sub.scheduled_change(self.now_ms).is_some() {
            return Ok(Err(SubscriptionError::ChangeScheduled {
                id: name,
                at_ms: sub.phases.last().map_or(0, |p| p.start_ms),
            }));
        }
        if let Some(end) = sub.ends_at_ms {
            // Canceling: the paid period it would start runs past the end.
            return Ok(Err(SubscriptionError::EndsBefore {
                id: name,
                end_ms: end,
            }));
        }
        // The trial's periods keep their boundaries (some may be invoiced); paid periods
        // follow from now.
        sub.trial_anchor_ms = Some(sub.trial_anchor_ms.unwrap_or(sub.anchor_ms));
        sub.trial_end_ms = Some(self.now_ms);
        sub.anchor_ms = self.now_ms;
        if let Err(e) = check_backlog(&sub, &plan, self.now_ms, &self.policy) {
            return Ok(Err(e));
        }
        let (sub, invoices) = run::close_ended_now(
            tx,
            self.tenant,
            sub,
            self.now_ms,
            &self.policy,
            &self.origin,
        )?;
        save_and_emit(tx, self.tenant, &sub, "trial_ended", self.now_ms)?;
        Ok(Ok(Changed {
            subscription: sub,
            effective_at_ms: Some(self.now_ms),
            invoices,
        }))
    }
}

/// Undoes a cancellation at period end before it takes effect.
#[derive(Clone)]
pub struct ResumeSubscription {
    /// Owner.
    pub tenant: TenantId,
    /// Which subscription.
    pub id: Id,
    /// Now.
    pub now_ms: i64,
}

impl Command for ResumeSubscription {
    type Output = Result<Changed, SubscriptionError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(mut sub) = subscription::load(tx, self.tenant, self.id)? else {
            return Ok(Err(SubscriptionError::Missing(
                self.id.display(subscription::PREFIX),
            )));
        };
        let canceled_at = sub.canceled_at_ms;
        let pending = sub.status == SubscriptionStatus::Canceling
            && sub.ends_at_ms.is_some_and(|e| e > self.now_ms);
        let (true, Some(canceled_at)) = (pending, canceled_at) else {
            return Ok(Err(SubscriptionError::NotCanceling(
                self.id.display(subscription::PREFIX),
            )));
        };
        sub.status = SubscriptionStatus::Active;
        sub.ends_at_ms = None;
        sub.canceled_at_ms = None;
        save_and_emit(
            tx,
            self.tenant,
            &sub,
            &format!("resumed:{canceled_at}"),
            self.now_ms,
        )?;
        Ok(Ok(Changed {
            subscription: sub,
            effective_at_ms: None,
            invoices: Vec::new(),
        }))
    }
}

/// What a change would bill, computed from a read snapshot without writing: the invoice the
/// change issues at once (`invoice_now` effective now), or the next invoice of the period the
/// change falls in, as it would be issued with the usage recorded so far.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// When the change would take effect.
    pub effective_at_ms: i64,
    /// Whether the lines are invoiced at once.
    pub immediate: bool,
    /// The invoice's period.
    pub period_start_ms: i64,
    /// Its end.
    pub period_end_ms: i64,
    /// Its lines.
    pub lines: Vec<super::invoice::Line>,
}

/// Computes [`Preview`] for a change of `sub` (read snapshot `tx`).
pub fn preview(
    tx: &crate::store::ReadTxn,
    tenant: TenantId,
    sub: &Subscription,
    req: &ChangeRequest,
    policy: &Policy,
) -> Result<Result<Preview, SubscriptionError>, StoreError> {
    let plans = tx.open_table(tables::PLANS)?;
    let load = |id: Id| super::plan::load(&plans, tenant, id);
    let Some(current) = load(sub.plan)? else {
        return Ok(Err(SubscriptionError::UnknownPlan(
            sub.plan.display(super::plan::PREFIX),
        )));
    };
    let Some(new_plan) = load(req.plan)? else {
        return Ok(Err(SubscriptionError::UnknownPlan(
            req.plan.display(super::plan::PREFIX),
        )));
    };
    let (mut changed, at_ms) = match plan_change(sub, &current, &new_plan, req) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let immediate = req.proration == Proration::InvoiceNow && at_ms <= req.now_ms;
    // The invoice the change shows on is the one of the period ending after the instant just
    // before it: its own (a change inside a period), the part a split ends (invoice_now), or
    // the period whose closing invoice bills the next one in advance (a change at a boundary).
    let Some(period) = changed.period_at(&current, at_ms.saturating_sub(1)) else {
        return Ok(Err(SubscriptionError::NotRunning(
            sub.id.display(subscription::PREFIX),
        )));
    };
    // Whenever that invoice is issued, the opening invoice (if the first plan bills in
    // advance) has been issued before it.
    changed.opening_invoiced = true;
    let events = crate::ingest::event_record::EventTable::new(
        tx.open_table(tables::EVENTS)?,
        tx.open_table(tables::PROPERTY_DICTIONARIES)?,
    );
    let by_customer = tx.open_table(tables::EVENTS_BY_CUSTOMER)?;
    let billed = tx.open_table(tables::BILLED_USAGE)?;
    let meters = tx.open_table(tables::METERS)?;
    let cutoff = crate::ingest::event::current_seq(&tx.open_table(tables::META)?)?;
    let src = super::invoice::Sources {
        events: &events,
        by_customer: &by_customer,
        billed: &billed,
        meters: &meters,
    };
    let all_plans = subscription::plans_of(&plans, tenant, &changed)?;
    let mut spec = run::spec_for(
        &changed,
        &current,
        period,
        super::invoice::InvoiceKind::Period,
        policy,
        cutoff,
        all_plans,
    );
    spec.discounts = super::discount::in_effect(
        &tx.open_table(tables::DISCOUNTS)?,
        &tx.open_table(tables::DISCOUNTS_BY_TARGET)?,
        tenant,
        &changed,
        &current,
        req.now_ms,
    )?;
    let lines = match super::invoice::compute(&src, tenant, &changed, &current, &spec)? {
        Ok(lines) => lines,
        Err(e) => return Ok(Err(SubscriptionError::Invoice(e.to_string()))),
    };
    // What interim invoices of the period billed is deducted, as the invoice itself will.
    let earlier: Vec<super::invoice::Invoice> = super::progressive::interims_of(
        &tx.open_table(tables::INVOICES)?,
        &tx.open_table(tables::INVOICE_BY_PERIOD)?,
        tenant,
        sub.id,
        period.start_ms,
    )?
    .into_iter()
    .filter(|i| i.status != super::invoice::InvoiceStatus::Void)
    .collect();
    let lines = match super::progressive::deduct_lines(&lines, &earlier) {
        Ok(lines) => lines,
        Err(e) => return Ok(Err(SubscriptionError::Invoice(e.to_string()))),
    };
    Ok(Ok(Preview {
        effective_at_ms: at_ms,
        immediate,
        period_start_ms: period.start_ms,
        period_end_ms: period.end_ms,
        lines,
    }))
}
