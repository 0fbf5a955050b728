//! Billing runs: close every period whose end plus the grace window has passed into exactly one
//! invoice, in the same write transaction that checks its charge key.
//!
//! A run is one writer command, so two runs (from the API and the scheduler, or twenty
//! concurrent API calls) execute one after the other and the second finds every charge key
//! taken: it can never create a second invoice for a period.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::invoice::{self, charge_key, Invoice, InvoiceError, InvoiceKind, Sources, Spec};
use super::plan::{FeeTiming, Plan};
use super::subscription::{self, Period, Subscription, SubscriptionError, SubscriptionStatus};
use crate::id::Id;
use crate::ingest::event::current_seq;
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "brn";

/// Limits a run works within.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// A period closes once its end plus this has passed.
    pub grace_ms: i64,
    /// Start collecting every invoice with an amount due through this provider.
    pub auto_collect: Option<&'static str>,
    /// Earlier periods are recomputed for late usage this far back (the ingest backdating
    /// limit: older events are refused, so older periods cannot change).
    pub adjust_window_ms: i64,
}

/// One invoice a run created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    /// The subscription.
    pub subscription: Id,
    /// The invoice.
    pub invoice: Id,
    /// Its kind.
    pub kind: String,
    /// Period start.
    pub period_start_ms: i64,
    /// Period end.
    pub period_end_ms: i64,
}

/// Something a run did not invoice, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The subscription.
    pub subscription: Id,
    /// Period start, when a period is concerned.
    pub period_start_ms: Option<i64>,
    /// Why.
    pub reason: String,
}

/// A run and what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// `brn_…`.
    pub id: Id,
    /// Periods ending (plus grace) at or before this were due.
    pub as_of_ms: i64,
    /// When it ran.
    pub ran_at_ms: i64,
    /// `api` or `scheduler`.
    pub trigger: String,
    /// Subscriptions examined.
    pub subscriptions: u64,
    /// Invoices created.
    pub closed: Vec<Closed>,
    /// What was not invoiced.
    pub skipped: Vec<Skipped>,
}

/// The sources of a write transaction.
macro_rules! sources {
    ($events:ident, $by_customer:ident, $billed:ident, $meters:ident) => {
        Sources {
            events: &$events,
            by_customer: &$by_customer,
            billed: &$billed,
            meters: &$meters,
        }
    };
}

fn load_plan(tx: &WriteTransaction, tenant: TenantId, id: Id) -> Result<Option<Plan>, StoreError> {
    let plans = tx.open_table(tables::PLANS)?;
    get_record(&plans, keys::tenant_id(tenant, id))
}

fn taken(
    tx: &WriteTransaction,
    tenant: TenantId,
    sub: Id,
    start: i64,
    end: i64,
) -> Result<Option<Id>, StoreError> {
    let table = tx.open_table(tables::INVOICE_BY_PERIOD)?;
    let found = table
        .get(charge_key(tenant, sub, start, end).as_slice())?
        .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
        .map(Id::from_bytes);
    Ok(found)
}

/// Computes and issues one invoice.
#[allow(clippy::too_many_arguments)]
fn create(
    tx: &WriteTransaction,
    tenant: TenantId,
    sub: &Subscription,
    plan: &Plan,
    spec: &Spec,
    now_ms: i64,
    run: Option<Id>,
    replaces: Option<Id>,
    origin: &str,
    policy: &Policy,
) -> Result<Result<Invoice, InvoiceError>, StoreError> {
    let lines = {
        let events = tx.open_table(tables::EVENTS)?;
        let by_customer = tx.open_table(tables::EVENTS_BY_CUSTOMER)?;
        let billed = tx.open_table(tables::BILLED_USAGE)?;
        let meters = tx.open_table(tables::METERS)?;
        let src = sources!(events, by_customer, billed, meters);
        match invoice::compute(&src, tenant, sub, plan, spec)? {
            Ok(lines) => lines,
            Err(e) => return Ok(Err(e)),
        }
    };
    let issued = invoice::issue(
        tx, tenant, sub, plan, spec, lines, now_ms, run, replaces, origin,
    )?;
    // Automatic collection: the payment attempt and its job commit with the invoice.
    if let (Ok(inv), Some(psp)) = (&issued, policy.auto_collect) {
        if inv.amount_due_minor > 0 {
            crate::payments::payment::create_attempt(tx, tenant, inv, psp, None, now_ms, now_ms)?;
        }
    }
    Ok(issued)
}

fn spec_for(
    sub: &Subscription,
    plan: &Plan,
    period: Period,
    kind: InvoiceKind,
    policy: &Policy,
    cutoff: u64,
) -> Spec {
    Spec {
        kind,
        period,
        next_period: sub.period(plan, period.index + 1),
        credit_unused_advance_fee: false,
        include_usage: kind != InvoiceKind::Opening,
        adjust_from_ms: period.start_ms.saturating_sub(policy.adjust_window_ms),
        cutoff,
    }
}

/// Closes what is due for one subscription. Returns the updated subscription.
#[allow(clippy::too_many_arguments)]
fn bill_subscription(
    tx: &WriteTransaction,
    tenant: TenantId,
    mut sub: Subscription,
    as_of_ms: i64,
    now_ms: i64,
    policy: &Policy,
    cutoff: u64,
    run: &mut Run,
    origin: &str,
) -> Result<Subscription, StoreError> {
    let Some(plan) = load_plan(tx, tenant, sub.plan)? else {
        run.skipped.push(Skipped {
            subscription: sub.id,
            period_start_ms: None,
            reason: "its plan is missing".into(),
        });
        return Ok(sub);
    };
    // 1. Voided invoices of this subscription get their one re-issue.
    let queued: Vec<(Vec<u8>, Id)> = {
        let queue = tx.open_table(tables::REISSUE_QUEUE)?;
        let prefix = keys::tenant_id(tenant, sub.id).to_vec();
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xFF; 17]);
        let mut out = Vec::new();
        for entry in queue.range::<&[u8]>(prefix.as_slice()..end.as_slice())? {
            let (key, _) = entry?;
            let id = key
                .value()
                .get(24..40)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(Id::from_bytes)
                .ok_or_else(|| StoreError::Corrupt("malformed reissue key".into()))?;
            out.push((key.value().to_vec(), id));
        }
        out
    };
    for (queue_key, voided_id) in queued {
        let voided = {
            let invoices = tx.open_table(tables::INVOICES)?;
            get_record::<Invoice, _>(&invoices, keys::tenant_id(tenant, voided_id))?
        };
        let Some(mut voided) = voided else {
            return Err(StoreError::Corrupt(
                "reissue queue names a missing invoice".into(),
            ));
        };
        let period = Period {
            index: 0,
            start_ms: voided.period_start_ms,
            end_ms: if voided.kind == InvoiceKind::Opening {
                sub.period(&plan, 0)
                    .map_or(voided.period_end_ms, |p| p.end_ms)
            } else {
                voided.period_end_ms
            },
            full_start_ms: voided.period_start_ms,
            full_end_ms: voided.period_end_ms,
        };
        // Recover the schedule position so proration and the next period match the original.
        let period = sub
            .period_at(&plan, voided.period_start_ms)
            .filter(|p| p.start_ms == voided.period_start_ms)
            .map(|p| Period {
                end_ms: if voided.kind == InvoiceKind::Opening {
                    p.end_ms
                } else {
                    voided.period_end_ms
                },
                ..p
            })
            .unwrap_or(period);
        let mut spec = spec_for(&sub, &plan, period, voided.kind, policy, cutoff);
        if voided.kind == InvoiceKind::Final {
            spec.next_period = None;
            spec.credit_unused_advance_fee = voided
                .lines
                .iter()
                .any(|l| l.kind == invoice::LineKind::FeeCredit);
        }
        match create(
            tx,
            tenant,
            &sub,
            &plan,
            &spec,
            now_ms,
            Some(run.id),
            Some(voided_id),
            origin,
            policy,
        )? {
            Ok(new) => {
                voided.replaced_by = Some(new.id);
                put_record(
                    &mut tx.open_table(tables::INVOICES)?,
                    &keys::tenant_id(tenant, voided_id),
                    &voided,
                )?;
                tx.open_table(tables::REISSUE_QUEUE)?
                    .remove(queue_key.as_slice())?;
                run.closed.push(Closed {
                    subscription: sub.id,
                    invoice: new.id,
                    kind: format!("{} (re-issue)", new.kind.as_str()),
                    period_start_ms: new.period_start_ms,
                    period_end_ms: new.period_end_ms,
                });
            }
            Err(e) => run.skipped.push(Skipped {
                subscription: sub.id,
                period_start_ms: Some(voided.period_start_ms),
                reason: format!("re-issue failed: {e}"),
            }),
        }
    }
    // 2. The opening invoice of an in-advance fee.
    let in_advance = plan
        .fixed_fee
        .as_ref()
        .is_some_and(|f| f.timing == FeeTiming::InAdvance);
    if in_advance && !sub.opening_invoiced && sub.start_at_ms <= as_of_ms {
        if let Some(first) = sub.period(&plan, 0) {
            if taken(tx, tenant, sub.id, first.start_ms, first.start_ms)?.is_none() {
                let spec = spec_for(&sub, &plan, first, InvoiceKind::Opening, policy, cutoff);
                match create(
                    tx,
                    tenant,
                    &sub,
                    &plan,
                    &spec,
                    now_ms,
                    Some(run.id),
                    None,
                    origin,
                    policy,
                )? {
                    Ok(inv) => run.closed.push(Closed {
                        subscription: sub.id,
                        invoice: inv.id,
                        kind: inv.kind.as_str().into(),
                        period_start_ms: inv.period_start_ms,
                        period_end_ms: inv.period_end_ms,
                    }),
                    Err(e) => {
                        run.skipped.push(Skipped {
                            subscription: sub.id,
                            period_start_ms: Some(first.start_ms),
                            reason: format!("opening invoice failed: {e}"),
                        });
                        return Ok(sub);
                    }
                }
            }
        }
        sub.opening_invoiced = true;
    }
    // 3. Every due period, in order.
    loop {
        let Some(period) = sub.period(&plan, sub.periods_closed) else {
            if sub.status == SubscriptionStatus::Canceling
                && sub.ends_at_ms.is_some_and(|e| e <= as_of_ms)
            {
                sub.status = SubscriptionStatus::Canceled;
            }
            break;
        };
        if period.end_ms.saturating_add(policy.grace_ms) > as_of_ms {
            break;
        }
        if let Some(existing) = taken(tx, tenant, sub.id, period.start_ms, period.end_ms)? {
            run.skipped.push(Skipped {
                subscription: sub.id,
                period_start_ms: Some(period.start_ms),
                reason: format!("already invoiced as {}", existing.display(invoice::PREFIX)),
            });
            sub.periods_closed += 1;
            continue;
        }
        let spec = spec_for(&sub, &plan, period, InvoiceKind::Period, policy, cutoff);
        match create(
            tx,
            tenant,
            &sub,
            &plan,
            &spec,
            now_ms,
            Some(run.id),
            None,
            origin,
            policy,
        )? {
            Ok(inv) => {
                run.closed.push(Closed {
                    subscription: sub.id,
                    invoice: inv.id,
                    kind: inv.kind.as_str().into(),
                    period_start_ms: inv.period_start_ms,
                    period_end_ms: inv.period_end_ms,
                });
                sub.periods_closed += 1;
            }
            Err(e) => {
                run.skipped.push(Skipped {
                    subscription: sub.id,
                    period_start_ms: Some(period.start_ms),
                    reason: format!("invoice failed: {e}"),
                });
                break;
            }
        }
    }
    // 4. Late usage of an ended subscription has no next invoice: bill it on an adjustment
    //    invoice keyed by the run's instant.
    if sub.status == SubscriptionStatus::Canceled {
        if let Some(end) = sub.ends_at_ms {
            let period = Period {
                index: sub.periods_closed,
                start_ms: end,
                end_ms: as_of_ms.max(end + 1),
                full_start_ms: end,
                full_end_ms: as_of_ms.max(end + 1),
            };
            let spec = Spec {
                kind: InvoiceKind::Adjustment,
                period,
                next_period: None,
                credit_unused_advance_fee: false,
                include_usage: false,
                adjust_from_ms: end.saturating_sub(policy.adjust_window_ms),
                cutoff,
            };
            let lines = {
                let events = tx.open_table(tables::EVENTS)?;
                let by_customer = tx.open_table(tables::EVENTS_BY_CUSTOMER)?;
                let billed = tx.open_table(tables::BILLED_USAGE)?;
                let meters = tx.open_table(tables::METERS)?;
                let src = sources!(events, by_customer, billed, meters);
                invoice::compute(&src, tenant, &sub, &plan, &spec)?
            };
            if let Ok(lines) = lines {
                if !lines.is_empty()
                    && taken(tx, tenant, sub.id, period.start_ms, period.end_ms)?.is_none()
                {
                    if let Ok(inv) = invoice::issue(
                        tx,
                        tenant,
                        &sub,
                        &plan,
                        &spec,
                        lines,
                        now_ms,
                        Some(run.id),
                        None,
                        origin,
                    )? {
                        run.closed.push(Closed {
                            subscription: sub.id,
                            invoice: inv.id,
                            kind: inv.kind.as_str().into(),
                            period_start_ms: inv.period_start_ms,
                            period_end_ms: inv.period_end_ms,
                        });
                    }
                }
            }
        }
    }
    Ok(sub)
}

/// Runs billing for one tenant as of an instant.
#[derive(Clone)]
pub struct BillingRun {
    /// Owner.
    pub tenant: TenantId,
    /// The run's id.
    pub id: Id,
    /// Periods whose end plus grace is at or before this close.
    pub as_of_ms: i64,
    /// Now (issue time).
    pub now_ms: i64,
    /// Grace and adjustment window.
    pub policy: Policy,
    /// `api` or `scheduler`.
    pub trigger: String,
    /// The intent.
    pub origin: String,
}

impl Command for BillingRun {
    type Output = Run;

    fn apply(self, tx: &WriteTransaction) -> Result<Run, StoreError> {
        let cutoff = current_seq(&tx.open_table(tables::META)?)?;
        let ids = {
            let subs = tx.open_table(tables::SUBSCRIPTIONS)?;
            subscription::all_ids(&subs, self.tenant)?
        };
        let mut run = Run {
            id: self.id,
            as_of_ms: self.as_of_ms,
            ran_at_ms: self.now_ms,
            trigger: self.trigger,
            subscriptions: ids.len() as u64,
            closed: Vec::new(),
            skipped: Vec::new(),
        };
        for id in ids {
            let Some(sub) = subscription::load(tx, self.tenant, id)? else {
                continue;
            };
            let before = sub.clone();
            let after = bill_subscription(
                tx,
                self.tenant,
                sub,
                self.as_of_ms,
                self.now_ms,
                &self.policy,
                cutoff,
                &mut run,
                &self.origin,
            )?;
            if after != before {
                subscription::save(tx, self.tenant, &after)?;
            }
        }
        put_record(
            &mut tx.open_table(tables::BILLING_RUNS)?,
            &keys::tenant_id(self.tenant, run.id),
            &run,
        )?;
        Ok(run)
    }
}

/// One billing run.
pub fn get(tx: &ReadTransaction, tenant: TenantId, id: Id) -> Result<Option<Run>, StoreError> {
    let table = tx.open_table(tables::BILLING_RUNS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// Cancels a subscription at its current period's end, or immediately with a final invoice.
#[derive(Clone)]
pub struct CancelSubscription {
    /// Owner.
    pub tenant: TenantId,
    /// Which subscription.
    pub id: Id,
    /// End now (final invoice, fixed fee prorated by the second) instead of at period end.
    pub immediately: bool,
    /// Now.
    pub now_ms: i64,
    /// Grace and adjustment window (for the periods an immediate cancel closes).
    pub policy: Policy,
    /// The intent.
    pub origin: String,
}

/// What a cancellation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancellation {
    /// The subscription after it.
    pub subscription: Subscription,
    /// Invoices it issued (immediate cancellation).
    pub invoices: Vec<Id>,
}

impl Command for CancelSubscription {
    type Output = Result<Cancellation, SubscriptionError>;

    fn apply(self, tx: &WriteTransaction) -> Result<Self::Output, StoreError> {
        let Some(mut sub) = subscription::load(tx, self.tenant, self.id)? else {
            return Ok(Err(SubscriptionError::Missing(
                self.id.display(subscription::PREFIX),
            )));
        };
        if sub.status == SubscriptionStatus::Canceled
            || (sub.status == SubscriptionStatus::Canceling && !self.immediately)
        {
            return Ok(Err(SubscriptionError::AlreadyCanceled(
                self.id.display(subscription::PREFIX),
            )));
        }
        let Some(plan) = load_plan(tx, self.tenant, sub.plan)? else {
            return Ok(Err(SubscriptionError::UnknownPlan(
                sub.plan.display(super::plan::PREFIX),
            )));
        };
        sub.canceled_at_ms = Some(self.now_ms);
        let current = sub.period_at(&plan, self.now_ms);
        if !self.immediately {
            match current {
                Some(p) => {
                    sub.ends_at_ms = Some(p.end_ms);
                    sub.status = SubscriptionStatus::Canceling;
                }
                None => {
                    // Not started yet (or already past its end): nothing left to bill.
                    sub.ends_at_ms = Some(sub.start_at_ms.min(self.now_ms).max(sub.start_at_ms));
                    sub.status = SubscriptionStatus::Canceled;
                }
            }
            subscription::save(tx, self.tenant, &sub)?;
            return Ok(Ok(Cancellation {
                subscription: sub,
                invoices: Vec::new(),
            }));
        }
        // Immediately: close every earlier period now (grace cut short), then the current one,
        // truncated, as the final invoice.
        let cutoff = current_seq(&tx.open_table(tables::META)?)?;
        let mut run = Run {
            id: Id::generate_at(self.now_ms),
            as_of_ms: self.now_ms,
            ran_at_ms: self.now_ms,
            trigger: "cancel".into(),
            subscriptions: 1,
            closed: Vec::new(),
            skipped: Vec::new(),
        };
        let no_grace = Policy {
            grace_ms: 0,
            ..self.policy
        };
        let ends_at = self.now_ms.max(sub.start_at_ms);
        let advance_billed_index = sub.periods_closed;
        sub = bill_subscription(
            tx,
            self.tenant,
            sub,
            self.now_ms,
            self.now_ms,
            &no_grace,
            cutoff,
            &mut run,
            &self.origin,
        )?;
        let fee_was_billed = plan
            .fixed_fee
            .as_ref()
            .is_some_and(|f| f.timing == FeeTiming::InAdvance)
            && (advance_billed_index > 0 || sub.opening_invoiced);
        sub.ends_at_ms = Some(ends_at);
        sub.status = SubscriptionStatus::Canceled;
        if let Some(period) = sub.period(&plan, sub.periods_closed) {
            let mut spec = spec_for(&sub, &plan, period, InvoiceKind::Final, &no_grace, cutoff);
            spec.next_period = None;
            spec.credit_unused_advance_fee = fee_was_billed;
            if taken(tx, self.tenant, sub.id, period.start_ms, period.end_ms)?.is_none() {
                if let Ok(inv) = create(
                    tx,
                    self.tenant,
                    &sub,
                    &plan,
                    &spec,
                    self.now_ms,
                    None,
                    None,
                    &self.origin,
                    &no_grace,
                )? {
                    run.closed.push(Closed {
                        subscription: sub.id,
                        invoice: inv.id,
                        kind: inv.kind.as_str().into(),
                        period_start_ms: inv.period_start_ms,
                        period_end_ms: inv.period_end_ms,
                    });
                }
            }
            sub.periods_closed += 1;
        }
        subscription::save(tx, self.tenant, &sub)?;
        Ok(Ok(Cancellation {
            subscription: sub,
            invoices: run.closed.iter().map(|c| c.invoice).collect(),
        }))
    }
}

/// Voids a finalized invoice (see [`invoice::void`]).
#[derive(Clone)]
pub struct VoidInvoice {
    /// Owner.
    pub tenant: TenantId,
    /// Which invoice.
    pub id: Id,
    /// Now.
    pub now_ms: i64,
    /// The intent.
    pub origin: String,
}

impl Command for VoidInvoice {
    type Output = Result<Invoice, InvoiceError>;

    fn apply(self, tx: &WriteTransaction) -> Result<Self::Output, StoreError> {
        invoice::void(tx, self.tenant, self.id, self.now_ms, &self.origin)
    }
}
