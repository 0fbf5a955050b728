//! Billing runs: close every period whose end plus the grace window has passed into exactly one
//! invoice, in the same write transaction that checks its charge key.
//!
//! A run is a writer command, so two runs (from the API and the scheduler, or twenty
//! concurrent API calls) execute one after the other and the second finds every charge key
//! taken: it can never create a second invoice for a period.
//!
//! A run's work per transaction is bounded ([`Policy::chunk_periods`] periods examined): a run
//! that has more to do stores where it stopped and is continued by the same command (same run
//! id) in further transactions until it is complete, so no run holds the writer for long
//! whatever the backlog. Its report keeps counts and the first [`REPORT_LIMIT`] entries; the
//! invoices themselves are listed with `GET /v1/invoices?billing_run=`.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::invoice::{self, charge_key, Invoice, InvoiceError, InvoiceKind, Sources, Spec};
use super::plan::{FeeTiming, Plan};
use super::subscription::{self, Period, Subscription, SubscriptionError, SubscriptionStatus};
use crate::id::Id;
use crate::ingest::event::current_seq;
use crate::store::keys::{self, TenantId};
use crate::store::writer::{Command, WriteError, WriterHandle};
use crate::store::{codec, get_record, put_record, tables, StoreError};

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
    /// Most periods a run examines (closes, re-issues or finds invoiced) in one transaction.
    pub chunk_periods: u64,
    /// `subscription.trial_will_end` is recorded this long before a trial ends.
    pub trial_notice_ms: i64,
}

/// Most `closed` and `skipped` entries a run's report keeps (the counts are complete).
pub const REPORT_LIMIT: usize = 100;

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
    /// The first [`REPORT_LIMIT`] invoices created.
    pub closed: Vec<Closed>,
    /// The first [`REPORT_LIMIT`] things not invoiced.
    pub skipped: Vec<Skipped>,
    /// Invoices created.
    pub closed_count: u64,
    /// Things not invoiced.
    pub skipped_count: u64,
    /// Transactions the run has used so far.
    pub transactions: u32,
    /// Where the next transaction resumes (a subscription, inclusive); `None` once complete.
    pub next_subscription: Option<Id>,
    /// Whether every due period has been examined.
    pub complete: bool,
}

/// A run's record as written before runs were chunked (no counts, always complete).
#[derive(Deserialize)]
struct RunV1 {
    id: Id,
    as_of_ms: i64,
    ran_at_ms: i64,
    trigger: String,
    subscriptions: u64,
    closed: Vec<Closed>,
    skipped: Vec<Skipped>,
}

impl Run {
    fn new(id: Id, as_of_ms: i64, ran_at_ms: i64, trigger: String) -> Self {
        Self {
            id,
            as_of_ms,
            ran_at_ms,
            trigger,
            subscriptions: 0,
            closed: Vec::new(),
            skipped: Vec::new(),
            closed_count: 0,
            skipped_count: 0,
            transactions: 0,
            next_subscription: None,
            complete: false,
        }
    }

    /// Counts an invoice created, keeping the first [`REPORT_LIMIT`].
    fn record_closed(&mut self, closed: Closed) {
        self.closed_count += 1;
        if self.closed.len() < REPORT_LIMIT {
            self.closed.push(closed);
        }
    }

    /// Counts something not invoiced, keeping the first [`REPORT_LIMIT`].
    fn record_skipped(&mut self, skipped: Skipped) {
        self.skipped_count += 1;
        if self.skipped.len() < REPORT_LIMIT {
            self.skipped.push(skipped);
        }
    }

    /// Decodes a stored run, of either layout.
    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        if let Ok(run) = codec::decode::<Run>(bytes) {
            return Ok(run);
        }
        let old: RunV1 = codec::decode(bytes)?;
        Ok(Self {
            closed_count: old.closed.len() as u64,
            skipped_count: old.skipped.len() as u64,
            transactions: 1,
            next_subscription: None,
            complete: true,
            id: old.id,
            as_of_ms: old.as_of_ms,
            ran_at_ms: old.ran_at_ms,
            trigger: old.trigger,
            subscriptions: old.subscriptions,
            closed: old.closed,
            skipped: old.skipped,
        })
    }
}

/// What a run may still do in the current transaction: each unit is one period closed,
/// re-issued or found invoiced (each a durable step forward, so a continued run always
/// progresses).
#[derive(Debug, Clone, Copy)]
struct Budget {
    left: u64,
}

impl Budget {
    fn new(periods: u64) -> Self {
        Self {
            left: periods.max(1),
        }
    }

    fn unlimited() -> Self {
        Self { left: u64::MAX }
    }

    fn exhausted(&self) -> bool {
        self.left == 0
    }

    fn spend(&mut self) {
        self.left = self.left.saturating_sub(1);
    }
}

/// How a step of billing one subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Go on with the next step.
    Next,
    /// A failure was recorded: bill nothing more of this subscription in this run.
    Halted,
    /// The budget ran out: resume this subscription in the next transaction.
    Paused,
}

/// What every step of a run reads.
struct Ctx<'a> {
    tx: &'a WriteTxn,
    tenant: TenantId,
    as_of_ms: i64,
    now_ms: i64,
    policy: &'a Policy,
    cutoff: u64,
    origin: &'a str,
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

fn load_plan(tx: &WriteTxn, tenant: TenantId, id: Id) -> Result<Option<Plan>, StoreError> {
    super::plan::load(&tx.open_table(tables::PLANS)?, tenant, id)
}

fn taken(
    tx: &WriteTxn,
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

/// Computes an invoice's lines in the run's transaction.
fn compute_lines(
    ctx: &Ctx<'_>,
    sub: &Subscription,
    plan: &Plan,
    spec: &Spec,
    replaces: Option<Id>,
) -> Result<Result<Vec<invoice::Line>, InvoiceError>, StoreError> {
    let as_of_ms = invoice::discounts_as_of(
        &ctx.tx.open_table(tables::INVOICES)?,
        ctx.tenant,
        ctx.now_ms,
        replaces,
    )?;
    let events = crate::ingest::event_record::EventTable::new(
        ctx.tx.open_table(tables::EVENTS)?,
        ctx.tx.open_table(tables::PROPERTY_DICTIONARIES)?,
    );
    let by_customer = ctx.tx.open_table(tables::EVENTS_BY_CUSTOMER)?;
    let billed = ctx.tx.open_table(tables::BILLED_USAGE)?;
    let meters = ctx.tx.open_table(tables::METERS)?;
    let src = sources!(events, by_customer, billed, meters);
    let spec = &Spec {
        discounts: super::discount::in_effect(
            &ctx.tx.open_table(tables::DISCOUNTS)?,
            &ctx.tx.open_table(tables::DISCOUNTS_BY_TARGET)?,
            ctx.tenant,
            sub,
            plan,
            as_of_ms,
        )?,
        ..spec.clone()
    };
    invoice::compute(&src, ctx.tenant, sub, plan, spec)
}

/// Computes and issues one invoice.
fn create(
    ctx: &Ctx<'_>,
    sub: &Subscription,
    plan: &Plan,
    spec: &Spec,
    run: Option<Id>,
    replaces: Option<Id>,
) -> Result<Result<Invoice, InvoiceError>, StoreError> {
    let lines = match compute_lines(ctx, sub, plan, spec, replaces)? {
        Ok(lines) => lines,
        Err(e) => return Ok(Err(e)),
    };
    // What interim invoices of the period billed is deducted (progressive billing).
    let earlier = if spec.include_usage {
        super::progressive::to_deduct(ctx.tx, ctx.tenant, sub.id, spec.kind, spec.period.start_ms)?
    } else {
        Vec::new()
    };
    let issued = invoice::issue_deducting(
        ctx.tx, ctx.tenant, sub, plan, spec, lines, &earlier, ctx.now_ms, run, replaces, ctx.origin,
    )?;
    if let Ok(inv) = &issued {
        auto_collect(ctx, inv)?;
    }
    Ok(issued)
}

/// Automatic collection: the payment attempt and its job commit with the invoice.
fn auto_collect(ctx: &Ctx<'_>, inv: &Invoice) -> Result<(), StoreError> {
    if let Some(psp) = ctx.policy.auto_collect {
        if inv.amount_due_minor > 0 {
            crate::payments::payment::create_attempt(
                ctx.tx, ctx.tenant, inv, psp, None, ctx.now_ms, ctx.now_ms,
            )?;
        }
    }
    Ok(())
}

/// Every plan of the subscription's phases, read in the run's transaction.
fn plans_of(
    ctx: &Ctx<'_>,
    sub: &Subscription,
) -> Result<std::collections::BTreeMap<Id, Plan>, StoreError> {
    subscription::plans_of(&ctx.tx.open_table(tables::PLANS)?, ctx.tenant, sub)
}

/// What closing `period` as `kind` computes.
pub fn spec_for(
    sub: &Subscription,
    plan: &Plan,
    period: Period,
    kind: InvoiceKind,
    policy: &Policy,
    cutoff: u64,
    plans: std::collections::BTreeMap<Id, Plan>,
) -> Spec {
    Spec {
        kind,
        period,
        next_period: sub.period(plan, period.index + 1),
        advance_prebilled: kind != InvoiceKind::Opening
            && (period.index > 0 || sub.opening_invoiced),
        include_usage: kind != InvoiceKind::Opening,
        adjust_from_ms: period.start_ms.saturating_sub(policy.adjust_window_ms),
        cutoff,
        plans,
        discounts: Vec::new(),
    }
}

fn closed(inv: &Invoice, kind: String) -> Closed {
    Closed {
        subscription: inv.subscription,
        invoice: inv.id,
        kind,
        period_start_ms: inv.period_start_ms,
        period_end_ms: inv.period_end_ms,
    }
}

/// Closes what is due for one subscription, within the budget. Returns the updated
/// subscription and whether it is finished for this run (false: resume it next transaction).
fn bill_subscription(
    ctx: &Ctx<'_>,
    mut sub: Subscription,
    run: &mut Run,
    budget: &mut Budget,
) -> Result<(Subscription, bool), StoreError> {
    let Some(plan) = load_plan(ctx.tx, ctx.tenant, sub.plan)? else {
        run.record_skipped(Skipped {
            subscription: sub.id,
            period_start_ms: None,
            reason: "its plan is missing".into(),
        });
        return Ok((sub, true));
    };
    if reissue_voided(ctx, &sub, &plan, run, budget)? == Flow::Paused {
        return Ok((sub, false));
    }
    note_trial_end(ctx, &mut sub)?;
    note_change_in_effect(ctx, &mut sub)?;
    match issue_opening(ctx, &mut sub, &plan, run, budget)? {
        Flow::Paused => return Ok((sub, false)),
        Flow::Halted => return Ok((sub, true)),
        Flow::Next => {}
    }
    if close_due_periods(ctx, &mut sub, &plan, run, budget)? == Flow::Paused {
        return Ok((sub, false));
    }
    let flow = bill_late_usage_after_end(ctx, &sub, &plan, run, budget)?;
    Ok((sub, flow != Flow::Paused))
}

/// Records `subscription.trial_will_end` once, when the run finds the trial ending within the
/// notice window (a run after the trial ended records nothing: the notice would be late).
fn note_trial_end(ctx: &Ctx<'_>, sub: &mut Subscription) -> Result<(), StoreError> {
    let Some(trial_end) = sub.trial_end_ms else {
        return Ok(());
    };
    let due = trial_end.saturating_sub(ctx.policy.trial_notice_ms);
    if sub.trial_notice_sent || ctx.as_of_ms < due {
        return Ok(());
    }
    // Only a subscription that will convert is told: not one ending at or before its trial's
    // end, nor one that has not started.
    let converts = sub.status != SubscriptionStatus::Canceled
        && sub.ends_at_ms.is_none_or(|e| e > trial_end)
        && sub.start_at_ms <= ctx.as_of_ms;
    if !converts {
        return Ok(());
    }
    sub.trial_notice_sent = true;
    if ctx.as_of_ms < trial_end {
        subscription::emit_subscription(
            ctx.tx,
            ctx.tenant,
            sub,
            "subscription.trial_will_end",
            &format!("trial_will_end:{trial_end}"),
            ctx.now_ms,
        )?;
    }
    Ok(())
}

/// Moves `sub.plan` to the plan now in effect; when a scheduled change has taken effect since,
/// records `subscription.updated` for it (once: its effect names the change).
fn note_change_in_effect(ctx: &Ctx<'_>, sub: &mut Subscription) -> Result<(), StoreError> {
    let at_ms = ctx.as_of_ms.min(ctx.now_ms);
    let current = super::phase::at(&sub.phases, at_ms).clone();
    if current.plan == sub.plan {
        return Ok(());
    }
    sub.plan = current.plan;
    if let Some(change) = current
        .change
        .filter(|_| current.requested_at_ms < current.start_ms)
    {
        let effect = format!(
            "change_effective:{}",
            change.display(super::phase::CHANGE_PREFIX)
        );
        subscription::emit_subscription(
            ctx.tx,
            ctx.tenant,
            sub,
            "subscription.updated",
            &effect,
            ctx.now_ms,
        )?;
    }
    Ok(())
}

/// The voided invoices of a subscription waiting for their one re-issue, with their queue keys.
fn reissue_queue(
    tx: &WriteTxn,
    tenant: TenantId,
    sub: Id,
) -> Result<Vec<(Vec<u8>, Id)>, StoreError> {
    let queue = tx.open_table(tables::REISSUE_QUEUE)?;
    let prefix = keys::tenant_id(tenant, sub).to_vec();
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
    Ok(out)
}

/// The period and spec that re-issue a voided invoice as the original was computed.
fn reissue_spec(
    ctx: &Ctx<'_>,
    sub: &Subscription,
    plan: &Plan,
    voided: &Invoice,
    plans: std::collections::BTreeMap<Id, Plan>,
) -> Spec {
    let period = Period {
        index: 0,
        start_ms: voided.period_start_ms,
        end_ms: if voided.kind == InvoiceKind::Opening {
            sub.period(plan, 0)
                .map_or(voided.period_end_ms, |p| p.end_ms)
        } else {
            voided.period_end_ms
        },
        full_start_ms: voided.period_start_ms,
        full_end_ms: voided.period_end_ms,
    };
    // Recover the schedule position so proration and the next period match the original.
    let period = sub
        .period_at(plan, voided.period_start_ms)
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
    let mut spec = spec_for(
        sub,
        plan,
        period,
        voided.kind,
        ctx.policy,
        ctx.cutoff,
        plans,
    );
    if voided.kind == InvoiceKind::Adjustment {
        // As step 4 made it: late usage of earlier periods only, never the usage of its own
        // span (after the subscription ended).
        spec.include_usage = false;
        spec.next_period = None;
        spec.adjust_from_ms = voided
            .period_start_ms
            .saturating_sub(ctx.policy.adjust_window_ms);
    }
    if voided.kind == InvoiceKind::Final {
        spec.next_period = None;
    }
    spec
}

/// Step 1: voided invoices of this subscription get their one re-issue. A failed re-issue is
/// reported and stays queued for a later run.
fn reissue_voided(
    ctx: &Ctx<'_>,
    sub: &Subscription,
    plan: &Plan,
    run: &mut Run,
    budget: &mut Budget,
) -> Result<Flow, StoreError> {
    for (queue_key, voided_id) in reissue_queue(ctx.tx, ctx.tenant, sub.id)? {
        if budget.exhausted() {
            return Ok(Flow::Paused);
        }
        let voided = {
            let invoices = ctx.tx.open_table(tables::INVOICES)?;
            get_record::<Invoice, _>(&invoices, keys::tenant_id(ctx.tenant, voided_id))?
        };
        let Some(mut voided) = voided else {
            return Err(StoreError::Corrupt(
                "reissue queue names a missing invoice".into(),
            ));
        };
        debug_assert_eq!(voided.status, invoice::InvoiceStatus::Void);
        let spec = reissue_spec(ctx, sub, plan, &voided, plans_of(ctx, sub)?);
        match create(ctx, sub, plan, &spec, Some(run.id), Some(voided_id))? {
            Ok(new) => {
                budget.spend();
                voided.replaced_by = Some(new.id);
                put_record(
                    &mut ctx.tx.open_table(tables::INVOICES)?,
                    &keys::tenant_id(ctx.tenant, voided_id),
                    &voided,
                )?;
                ctx.tx
                    .open_table(tables::REISSUE_QUEUE)?
                    .remove(queue_key.as_slice())?;
                run.record_closed(closed(&new, format!("{} (re-issue)", new.kind.as_str())));
            }
            Err(e) => run.record_skipped(Skipped {
                subscription: sub.id,
                period_start_ms: Some(voided.period_start_ms),
                reason: format!("re-issue failed: {e}"),
            }),
        }
    }
    Ok(Flow::Next)
}

/// Step 2: the opening invoice of an in-advance fee, once the subscription has started.
fn issue_opening(
    ctx: &Ctx<'_>,
    sub: &mut Subscription,
    plan: &Plan,
    run: &mut Run,
    budget: &mut Budget,
) -> Result<Flow, StoreError> {
    if sub.opening_invoiced || sub.start_at_ms > ctx.as_of_ms {
        return Ok(Flow::Next);
    }
    let plans = plans_of(ctx, sub)?;
    let in_advance = plans
        .get(&sub.plan_at(sub.start_at_ms))
        .and_then(|p| p.fixed_fee.as_ref())
        .is_some_and(|f| f.timing == FeeTiming::InAdvance);
    if !in_advance {
        return Ok(Flow::Next);
    }
    if budget.exhausted() {
        return Ok(Flow::Paused);
    }
    if let Some(first) = sub.period(plan, 0) {
        if taken(ctx.tx, ctx.tenant, sub.id, first.start_ms, first.start_ms)?.is_none() {
            let spec = spec_for(
                sub,
                plan,
                first,
                InvoiceKind::Opening,
                ctx.policy,
                ctx.cutoff,
                plans,
            );
            match create(ctx, sub, plan, &spec, Some(run.id), None)? {
                Ok(inv) => run.record_closed(closed(&inv, inv.kind.as_str().into())),
                Err(e) => {
                    run.record_skipped(Skipped {
                        subscription: sub.id,
                        period_start_ms: Some(first.start_ms),
                        reason: format!("opening invoice failed: {e}"),
                    });
                    return Ok(Flow::Halted);
                }
            }
        }
    }
    budget.spend();
    sub.opening_invoiced = true;
    Ok(Flow::Next)
}

/// Step 3: every period whose end plus grace has passed, in order, each into one invoice (or
/// found already invoiced); a subscription cancelled at period end becomes canceled after its
/// last period.
fn close_due_periods(
    ctx: &Ctx<'_>,
    sub: &mut Subscription,
    plan: &Plan,
    run: &mut Run,
    budget: &mut Budget,
) -> Result<Flow, StoreError> {
    loop {
        let Some(period) = sub.period(plan, sub.periods_closed) else {
            if sub.status == SubscriptionStatus::Canceling
                && sub.ends_at_ms.is_some_and(|e| e <= ctx.as_of_ms)
            {
                sub.status = SubscriptionStatus::Canceled;
                subscription::emit_subscription(
                    ctx.tx,
                    ctx.tenant,
                    sub,
                    "subscription.canceled",
                    "canceled",
                    ctx.now_ms,
                )?;
            }
            return Ok(Flow::Next);
        };
        if period.end_ms.saturating_add(ctx.policy.grace_ms) > ctx.as_of_ms {
            return Ok(Flow::Next);
        }
        if budget.exhausted() {
            return Ok(Flow::Paused);
        }
        if let Some(existing) = taken(ctx.tx, ctx.tenant, sub.id, period.start_ms, period.end_ms)? {
            run.record_skipped(Skipped {
                subscription: sub.id,
                period_start_ms: Some(period.start_ms),
                reason: format!("already invoiced as {}", existing.display(invoice::PREFIX)),
            });
            budget.spend();
            sub.periods_closed += 1;
            continue;
        }
        let spec = spec_for(
            sub,
            plan,
            period,
            InvoiceKind::Period,
            ctx.policy,
            ctx.cutoff,
            plans_of(ctx, sub)?,
        );
        match create(ctx, sub, plan, &spec, Some(run.id), None)? {
            Ok(inv) => {
                run.record_closed(closed(&inv, inv.kind.as_str().into()));
                budget.spend();
                sub.periods_closed += 1;
            }
            Err(e) => {
                run.record_skipped(Skipped {
                    subscription: sub.id,
                    period_start_ms: Some(period.start_ms),
                    reason: format!("invoice failed: {e}"),
                });
                return Ok(Flow::Halted);
            }
        }
    }
}

/// Step 4: late usage of an ended subscription has no next invoice: bill it on an adjustment
/// invoice keyed by the run's instant.
fn bill_late_usage_after_end(
    ctx: &Ctx<'_>,
    sub: &Subscription,
    plan: &Plan,
    run: &mut Run,
    budget: &mut Budget,
) -> Result<Flow, StoreError> {
    let (SubscriptionStatus::Canceled, Some(end)) = (sub.status, sub.ends_at_ms) else {
        return Ok(Flow::Next);
    };
    if budget.exhausted() {
        return Ok(Flow::Paused);
    }
    let period = Period {
        index: sub.periods_closed,
        start_ms: end,
        end_ms: ctx.as_of_ms.max(end.saturating_add(1)),
        full_start_ms: end,
        full_end_ms: ctx.as_of_ms.max(end.saturating_add(1)),
    };
    let spec = Spec {
        kind: InvoiceKind::Adjustment,
        period,
        next_period: None,
        advance_prebilled: false,
        include_usage: false,
        adjust_from_ms: end.saturating_sub(ctx.policy.adjust_window_ms),
        cutoff: ctx.cutoff,
        plans: plans_of(ctx, sub)?,
        discounts: Vec::new(),
    };
    let Ok(lines) = compute_lines(ctx, sub, plan, &spec, None)? else {
        return Ok(Flow::Next);
    };
    if lines.is_empty()
        || taken(ctx.tx, ctx.tenant, sub.id, period.start_ms, period.end_ms)?.is_some()
    {
        return Ok(Flow::Next);
    }
    if let Ok(inv) = invoice::issue(
        ctx.tx,
        ctx.tenant,
        sub,
        plan,
        &spec,
        lines,
        ctx.now_ms,
        Some(run.id),
        None,
        ctx.origin,
    )? {
        auto_collect(ctx, &inv)?;
        budget.spend();
        run.record_closed(closed(&inv, inv.kind.as_str().into()));
    }
    Ok(Flow::Next)
}

/// Runs billing for one tenant as of an instant, at most [`Policy::chunk_periods`] periods per
/// transaction. Applying it again with the same id continues the run where it stopped (and
/// does nothing once it is complete); see [`complete`].
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
    /// Grace, adjustment window and chunk size.
    pub policy: Policy,
    /// `api` or `scheduler`.
    pub trigger: String,
    /// The intent.
    pub origin: String,
}

impl Command for BillingRun {
    type Output = Run;

    fn apply(self, tx: &WriteTxn) -> Result<Run, StoreError> {
        let existing = {
            let table = tx.open_table(tables::BILLING_RUNS)?;
            let found = table.get(keys::tenant_id(self.tenant, self.id).as_slice())?;
            match found {
                Some(v) => Some(Run::decode(v.value())?),
                None => None,
            }
        };
        let mut run =
            existing.unwrap_or_else(|| Run::new(self.id, self.as_of_ms, self.now_ms, self.trigger));
        if run.complete {
            return Ok(run);
        }
        let ctx = Ctx {
            tx,
            tenant: self.tenant,
            as_of_ms: run.as_of_ms,
            now_ms: self.now_ms,
            policy: &self.policy,
            cutoff: current_seq(&tx.open_table(tables::META)?)?,
            origin: &self.origin,
        };
        let resume = run.next_subscription.take();
        let ids = {
            let subs = tx.open_table(tables::SUBSCRIPTIONS)?;
            subscription::ids_from(&subs, self.tenant, resume)?
        };
        run.transactions = run.transactions.saturating_add(1);
        run.complete = true;
        let mut budget = Budget::new(self.policy.chunk_periods);
        for id in ids {
            if Some(id) != resume {
                run.subscriptions += 1;
            }
            let Some(sub) = subscription::load(tx, self.tenant, id)? else {
                continue;
            };
            let before = sub.clone();
            let (after, finished) = bill_subscription(&ctx, sub, &mut run, &mut budget)?;
            if after != before {
                subscription::save(tx, self.tenant, &after)?;
            }
            if !finished {
                run.next_subscription = Some(id);
                run.complete = false;
                break;
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

/// Continues a run in further bounded transactions until it is complete (each a separate
/// writer command, so other writes interleave) or `keep_going` says stop (shutdown: the run
/// stays `running`, and the next run bills what it left). The charge key makes every
/// continuation safe, even alongside other runs.
pub async fn complete(
    writer: &WriterHandle,
    mut command: BillingRun,
    mut run: Run,
    keep_going: impl Fn() -> bool,
) -> Result<Run, WriteError> {
    while !run.complete && keep_going() {
        command.now_ms = crate::clock::now_ms();
        run = writer.submit(command.clone()).await?;
    }
    Ok(run)
}

/// One billing run.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Run>, StoreError> {
    let table = tx.open_table(tables::BILLING_RUNS)?;
    let found = table.get(keys::tenant_id(tenant, id).as_slice())?;
    match found {
        Some(v) => Run::decode(v.value()).map(Some),
        None => Ok(None),
    }
}

/// Closes, in the caller's transaction, every period of `sub` that has ended by `now_ms` (grace
/// cut short): what a change with `invoice_now`, or the early end of a trial, invoices at once.
/// The caller checked [`open_periods`] against the chunk bound first. Returns the subscription
/// after it and the invoices issued.
pub fn close_ended_now(
    tx: &WriteTxn,
    tenant: TenantId,
    sub: Subscription,
    now_ms: i64,
    policy: &Policy,
    origin: &str,
) -> Result<(Subscription, Vec<Id>), StoreError> {
    let cutoff = current_seq(&tx.open_table(tables::META)?)?;
    let mut run = Run::new(Id::generate_at(now_ms), now_ms, now_ms, "change".into());
    let no_grace = Policy {
        grace_ms: 0,
        ..*policy
    };
    let ctx = Ctx {
        tx,
        tenant,
        as_of_ms: now_ms,
        now_ms,
        policy: &no_grace,
        cutoff,
        origin,
    };
    let (sub, _) = bill_subscription(&ctx, sub, &mut run, &mut Budget::unlimited())?;
    Ok((sub, run.closed.iter().map(|c| c.invoice).collect()))
}

/// How many periods not yet invoiced start before `now_ms` (counting stops past `limit`): what
/// an immediate cancellation would close in its one transaction.
pub fn open_periods(sub: &Subscription, plan: &Plan, now_ms: i64, limit: u64) -> u64 {
    (sub.periods_closed..)
        .take(usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX))
        .take_while(|k| sub.period(plan, *k).is_some_and(|p| p.start_ms < now_ms))
        .count() as u64
}

/// Where an immediate cancellation requested at `now_ms` ends `sub` (its due periods closed):
/// now, but never before its start nor before the start of its first period not yet closed.
/// A cancellation stamped before a period another write already closed (an `invoice_now`
/// change or a run applied first, on a clock ahead of this one) ends the subscription where
/// what is invoiced ends: an earlier end would leave invoices billing time after it, and would
/// drop the phases of changes those invoices were priced by as if they had never happened.
fn immediate_end_ms(sub: &Subscription, plan: &Plan, now_ms: i64) -> i64 {
    now_ms
        .max(sub.start_at_ms)
        .max(sub.open_from_ms(plan).unwrap_or(i64::MIN))
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

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(mut sub) = subscription::load(tx, self.tenant, self.id)? else {
            return Ok(Err(SubscriptionError::Missing(
                self.id.display(subscription::PREFIX),
            )));
        };
        // A cancellation at period end whose end has passed has ended the subscription (the
        // next run closes its last period): an immediate one would move the end later.
        if sub.status == SubscriptionStatus::Canceled
            || (sub.status == SubscriptionStatus::Canceling && !self.immediately)
            || sub.ends_at_ms.is_some_and(|end| end <= self.now_ms)
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
        if self.immediately {
            let open = open_periods(&sub, &plan, self.now_ms, self.policy.chunk_periods);
            if open > self.policy.chunk_periods {
                return Ok(Err(SubscriptionError::Backlog {
                    id: self.id.display(subscription::PREFIX),
                    periods: self.policy.chunk_periods,
                }));
            }
        }
        sub.canceled_at_ms = Some(self.now_ms);
        // The period end as the schedule has it, not shortened by a split a change scheduled
        // for later would make (that change stays if it falls before the end).
        let mut settled = sub.clone();
        settled.phases.retain(|ph| ph.start_ms <= self.now_ms);
        let current = settled.period_at(&plan, self.now_ms);
        if !self.immediately {
            match current {
                Some(p) => {
                    sub.ends_at_ms = Some(p.end_ms);
                    sub.status = SubscriptionStatus::Canceling;
                    // A change scheduled at or after the end no longer happens.
                    sub.phases
                        .retain(|ph| ph.change.is_none() || ph.start_ms < p.end_ms);
                }
                None => {
                    // Not started yet (or already past its end): nothing left to bill.
                    sub.ends_at_ms = Some(sub.start_at_ms.min(self.now_ms).max(sub.start_at_ms));
                    sub.status = SubscriptionStatus::Canceled;
                }
            }
            subscription::save(tx, self.tenant, &sub)?;
            // A cancellation at period end can be resumed and requested again: each request
            // is its own transition.
            let (event_type, effect) = match sub.status {
                SubscriptionStatus::Canceled => ("subscription.canceled", "canceled".to_string()),
                _ => ("subscription.updated", format!("canceling:{}", self.now_ms)),
            };
            subscription::emit_subscription(
                tx,
                self.tenant,
                &sub,
                event_type,
                &effect,
                self.now_ms,
            )?;
            return Ok(Ok(Cancellation {
                subscription: sub,
                invoices: Vec::new(),
            }));
        }
        // Immediately: close every earlier period now (grace cut short), then the current one,
        // truncated, as the final invoice.
        let cutoff = current_seq(&tx.open_table(tables::META)?)?;
        let mut run = Run::new(
            Id::generate_at(self.now_ms),
            self.now_ms,
            self.now_ms,
            "cancel".into(),
        );
        let no_grace = Policy {
            grace_ms: 0,
            ..self.policy
        };
        let ctx = Ctx {
            tx,
            tenant: self.tenant,
            as_of_ms: self.now_ms,
            now_ms: self.now_ms,
            policy: &no_grace,
            cutoff,
            origin: &self.origin,
        };
        // A subscription canceled now is never told its trial will end.
        sub.trial_notice_sent = true;
        // At most `chunk_periods` periods are open (checked above, before any write).
        sub = bill_subscription(&ctx, sub, &mut run, &mut Budget::unlimited())?.0;
        let ends_at = immediate_end_ms(&sub, &plan, self.now_ms);
        // A change scheduled after the end no longer happens.
        sub.phases
            .retain(|p| p.change.is_none() || p.start_ms < ends_at);
        sub.ends_at_ms = Some(ends_at);
        sub.status = SubscriptionStatus::Canceled;
        if let Some(period) = sub.period(&plan, sub.periods_closed) {
            let plans = plans_of(&ctx, &sub)?;
            let mut spec = spec_for(
                &sub,
                &plan,
                period,
                InvoiceKind::Final,
                &no_grace,
                cutoff,
                plans,
            );
            spec.next_period = None;
            if taken(tx, self.tenant, sub.id, period.start_ms, period.end_ms)?.is_none() {
                if let Ok(inv) = create(&ctx, &sub, &plan, &spec, None, None)? {
                    run.record_closed(closed(&inv, inv.kind.as_str().into()));
                }
            }
            sub.periods_closed += 1;
        }
        subscription::save(tx, self.tenant, &sub)?;
        subscription::emit_subscription(
            tx,
            self.tenant,
            &sub,
            "subscription.canceled",
            "canceled",
            self.now_ms,
        )?;
        Ok(Ok(Cancellation {
            subscription: sub,
            invoices: run.closed.iter().map(|c| c.invoice).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout runs were stored in before they were chunked.
    #[derive(Serialize)]
    struct Legacy {
        id: Id,
        as_of_ms: i64,
        ran_at_ms: i64,
        trigger: String,
        subscriptions: u64,
        closed: Vec<Closed>,
        skipped: Vec<Skipped>,
    }

    #[test]
    fn runs_stored_before_chunking_still_decode_as_complete() {
        let sub = Id::generate();
        let legacy = Legacy {
            id: Id::generate(),
            as_of_ms: 5,
            ran_at_ms: 6,
            trigger: "api".into(),
            subscriptions: 1,
            closed: vec![Closed {
                subscription: sub,
                invoice: Id::generate(),
                kind: "period".into(),
                period_start_ms: 1,
                period_end_ms: 2,
            }],
            skipped: Vec::new(),
        };
        let bytes = codec::encode(&legacy).expect("encode");
        let run = Run::decode(&bytes).expect("decode");
        assert!(run.complete);
        assert_eq!((run.closed_count, run.skipped_count), (1, 0));
        assert_eq!(run.closed[0].subscription, sub);
        // And the current layout round-trips as itself.
        let mut now = run.clone();
        now.complete = false;
        now.next_subscription = Some(sub);
        let bytes = codec::encode(&now).expect("encode");
        assert_eq!(Run::decode(&bytes).expect("decode"), now);
    }

    #[test]
    fn a_report_counts_everything_and_lists_the_first_entries() {
        let mut run = Run::new(Id::generate(), 0, 0, "test".into());
        for i in 0..(REPORT_LIMIT as i64 + 20) {
            run.record_skipped(Skipped {
                subscription: Id::generate(),
                period_start_ms: Some(i),
                reason: "r".into(),
            });
        }
        assert_eq!(run.skipped.len(), REPORT_LIMIT);
        assert_eq!(run.skipped_count, REPORT_LIMIT as u64 + 20);
    }
}
