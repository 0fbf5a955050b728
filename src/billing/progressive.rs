//! Progressive billing: a plan may set `threshold_minor`; when the usage a running period has
//! accrued and no invoice has billed yet reaches it, an interim invoice bills that usage at once
//! (numbered, taxed, credited and collected like any other), and the period's closing invoice
//! bills only the rest.
//!
//! The rule that makes this exact: every invoice of a period that interim invoices already billed
//! part of is what the period computes (its full computation at that invoice's event cutoff)
//! minus what those interim invoices billed, line by line (quantity and amount) and tax rate by
//! tax rate. So the interim invoices plus the closing invoice bill exactly what the period would
//! have billed without a threshold, to the minor unit, whatever the tiers, discounts, minimum or
//! rounding. Tax is deducted rate by rate only while the customer's tax terms (rates and
//! reverse charge) are those the interim invoices were taxed on; after a change, a later
//! invoice taxes its own lines at the terms of its issue. An interim invoice computes the period's usage lines only (no fee, discount,
//! minimum or adjustment: those belong to the period's close); its lines' event counts and digests
//! describe everything counted so far, so `verify` re-derives an invoice by adding back what it
//! deducted and checking the sum against the events.
//!
//! Voiding an interim invoice is refused once a later invoice of its period exists (that one
//! deducted it; a credit note takes an amount back instead); before that it is voided without a
//! re-issue, and the period's next invoice bills its usage.

use std::collections::BTreeMap;

use crate::store::{ReadableTable, WriteTxn};
use rust_decimal::Decimal;

use super::invoice::{
    self, charge_key, interim_charge_key, Invoice, InvoiceError, InvoiceKind, InvoiceStatus, Line,
    Sources, Spec,
};
use super::plan::Plan;
use super::subscription::{self, Period, Subscription, SubscriptionStatus};
use super::tax::{TaxLine, Taxes};
use crate::decimal::Stored;
use crate::id::Id;
use crate::ingest::event::current_seq;
use crate::store::keys::{self, TenantId};
use crate::store::{get_record, tables, StoreError};

/// The largest `threshold_minor` a plan may set (10^12 minor units: ten billion dollars).
pub const THRESHOLD_MAX_MINOR: i64 = 1_000_000_000_000;

/// The kinds of invoice that deduct the interim invoices of their period before them.
fn deducts(kind: InvoiceKind) -> bool {
    matches!(
        kind,
        InvoiceKind::Period | InvoiceKind::Final | InvoiceKind::Interim
    )
}

/// What matches a line of an interim invoice with the same line of a later invoice.
fn line_key(line: &Line) -> (&'static str, Option<[u8; 16]>, i64, &str) {
    (
        line.kind.as_str(),
        line.meter.map(|m| m.to_bytes()),
        line.period_start_ms,
        if line.meter.is_some() {
            ""
        } else {
            line.description.as_str()
        },
    )
}

fn sub_stored(a: Stored, b: Stored, sign: i64) -> Result<Stored, InvoiceError> {
    b.0.checked_mul(Decimal::from(sign))
        .and_then(|b| a.0.checked_sub(b))
        .map(Stored)
        .ok_or(InvoiceError::OutOfRange)
}

/// Moves `from`'s quantity and amounts into `into` (`sign` 1 adds, −1 subtracts).
fn combine(into: &mut Line, from: &Line, sign: i64) -> Result<(), InvoiceError> {
    into.quantity = sub_stored(into.quantity, from.quantity, -sign)?;
    into.amount_exact = sub_stored(into.amount_exact, from.amount_exact, -sign)?;
    into.amount_minor = from
        .amount_minor
        .checked_mul(sign)
        .and_then(|m| into.amount_minor.checked_add(m))
        .ok_or(InvoiceError::OutOfRange)?;
    // The tier breakdown describes one computation; a difference has none of its own.
    into.tiers.clear();
    Ok(())
}

/// Whether `line` (an interim invoice's) falls inside `o`'s segment: same kind and meter, its
/// start inside `o`'s span.
fn contains(o: &Line, line: &Line) -> bool {
    line.meter.is_some()
        && o.kind == line.kind
        && o.meter == line.meter
        && o.period_start_ms <= line.period_start_ms
        && line.period_start_ms < o.period_end_ms
}

/// Combines the lines of `earlier` invoices into `lines` (`sign` −1: deduct what they billed;
/// 1: add it back). A line of theirs the computation no longer has is carried alone.
fn fold_lines(lines: &[Line], earlier: &[Invoice], sign: i64) -> Result<Vec<Line>, InvoiceError> {
    let mut out = lines.to_vec();
    for inv in earlier {
        for line in &inv.lines {
            // The same line, else the line of its meter whose segment contains its start.
            let at = out
                .iter()
                .position(|o| line_key(o) == line_key(line))
                .or_else(|| out.iter().position(|o| contains(o, line)));
            match at.map(|at| &mut out[at]) {
                Some(o) => combine(o, line, sign)?,
                None => {
                    let mut alone = line.clone();
                    alone.quantity = Stored(Decimal::ZERO);
                    alone.amount_exact = Stored(Decimal::ZERO);
                    alone.amount_minor = 0;
                    combine(&mut alone, line, sign)?;
                    out.push(alone);
                }
            }
        }
    }
    Ok(out)
}

/// The lines an invoice bills: its period's full computation minus what the `earlier` interim
/// invoices of the period billed, per line.
pub fn deduct_lines(full: &[Line], earlier: &[Invoice]) -> Result<Vec<Line>, InvoiceError> {
    fold_lines(full, earlier, -1)
}

/// Combines tax lines by rate (`sign` as in [`fold_lines`]).
fn fold_taxes(taxes: Taxes, earlier: &[Invoice], sign: i64) -> Result<Taxes, InvoiceError> {
    let mut out = taxes;
    let add = |a: i64, b: i64| {
        b.checked_mul(sign)
            .and_then(|b| a.checked_add(b))
            .ok_or(InvoiceError::OutOfRange)
    };
    for inv in earlier {
        for t in &inv.tax_lines {
            let at = match out.lines.iter().position(|o| o.tax_rate == t.tax_rate) {
                Some(at) => at,
                None => {
                    out.lines.push(TaxLine {
                        taxable_minor: 0,
                        tax_minor: 0,
                        ..t.clone()
                    });
                    out.lines.len() - 1
                }
            };
            let o = &mut out.lines[at];
            o.taxable_minor = add(o.taxable_minor, t.taxable_minor)?;
            o.tax_minor = add(o.tax_minor, t.tax_minor)?;
        }
        out.tax_minor = add(out.tax_minor, inv.tax_minor)?;
        let exclusive = inv
            .total_minor
            .checked_sub(inv.subtotal_minor)
            .ok_or(InvoiceError::OutOfRange)?;
        out.exclusive_minor = add(out.exclusive_minor, exclusive)?;
    }
    Ok(out)
}

/// Whether every `earlier` interim invoice was taxed on the same terms as `tax_lines` (the same
/// rates, percentages and inclusiveness, in order) and the same reverse-charge flag: only then
/// is tax deducted rate by rate.
pub fn same_tax_terms(tax_lines: &[TaxLine], reverse_charge: bool, earlier: &[Invoice]) -> bool {
    let terms = |lines: &[TaxLine]| {
        lines
            .iter()
            .map(|t| (t.tax_rate, t.percentage, t.inclusive))
            .collect::<Vec<_>>()
    };
    let own = terms(tax_lines);
    earlier
        .iter()
        .all(|i| i.reverse_charge == reverse_charge && terms(&i.tax_lines) == own)
}

/// The taxes an invoice carries: its full computation's minus the `earlier` interim invoices',
/// rate by rate, when they were taxed on the same terms; otherwise (the customer's rates or
/// reverse charge changed since) its own `lines` taxed at the current terms, so no invoice
/// carries a negative tax at a rate that no longer applies.
pub fn deduct_taxes(
    full: Taxes,
    earlier: &[Invoice],
    lines: &[Line],
    exponent: u8,
) -> Result<Taxes, InvoiceError> {
    if same_tax_terms(&full.lines, full.reverse_charge, earlier) {
        return fold_taxes(full, earlier, -1);
    }
    super::tax::compute(lines, &full.lines, full.reverse_charge, exponent)
}

/// `invoice` with what it deducted added back: the period's full computation as of its issue
/// (lines, taxes, subtotal and total), which is what `verify` re-derives from the events. When
/// the tax terms changed since the interim invoices (see [`deduct_taxes`]) the tax lines stay
/// the invoice's own, which `verify` checks against its own lines.
pub fn cumulative(invoice: &Invoice, earlier: &[Invoice]) -> Result<Invoice, InvoiceError> {
    if earlier.is_empty() {
        return Ok(invoice.clone());
    }
    let mut out = invoice.clone();
    out.lines = fold_lines(&invoice.lines, earlier, 1)?;
    let folded = fold_taxes(
        Taxes {
            lines: invoice.tax_lines.clone(),
            tax_minor: invoice.tax_minor,
            exclusive_minor: invoice
                .total_minor
                .checked_sub(invoice.subtotal_minor)
                .ok_or(InvoiceError::OutOfRange)?,
            reverse_charge: invoice.reverse_charge,
            notes: invoice.notes.clone(),
        },
        earlier,
        1,
    )?;
    let exclusive_minor = folded.exclusive_minor;
    if same_tax_terms(&invoice.tax_lines, invoice.reverse_charge, earlier) {
        out.tax_lines = folded.lines;
        out.tax_minor = folded.tax_minor;
    }
    out.subtotal_minor = invoice::subtotal(&out.lines)?;
    out.total_minor = out
        .subtotal_minor
        .checked_add(exclusive_minor)
        .ok_or(InvoiceError::OutOfRange)?;
    Ok(out)
}

/// Every interim invoice of the period of `sub` starting at `period_start_ms`, in issue order.
pub fn interims_of(
    invoices: &impl ReadableTable<&'static [u8], &'static [u8]>,
    by_period: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    sub: Id,
    period_start_ms: i64,
) -> Result<Vec<Invoice>, StoreError> {
    Ok(
        of_period(invoices, by_period, tenant, sub, period_start_ms)?
            .into_iter()
            .filter(|i| i.kind == InvoiceKind::Interim)
            .collect(),
    )
}

/// Every invoice whose charge key starts with the period start, in id (issue) order.
fn of_period(
    invoices: &impl ReadableTable<&'static [u8], &'static [u8]>,
    by_period: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    sub: Id,
    period_start_ms: i64,
) -> Result<Vec<Invoice>, StoreError> {
    let lo = charge_key(tenant, sub, period_start_ms, i64::MIN);
    let hi = charge_key(tenant, sub, period_start_ms, i64::MAX);
    let mut out = Vec::new();
    for entry in by_period.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (_, id) = entry?;
        let id = <[u8; 16]>::try_from(id.value())
            .map(Id::from_bytes)
            .map_err(|_| StoreError::Corrupt("malformed charge key value".into()))?;
        if let Some(inv) = get_record::<Invoice, _>(invoices, keys::tenant_id(tenant, id))? {
            out.push(inv);
        }
    }
    out.sort_by_key(|i| i.id);
    Ok(out)
}

/// Whether `later` comes after the interim invoice `interim` in its period's order: every
/// closing invoice comes after every interim invoice (none is issued once the period closed);
/// interim invoices follow their event cutoffs (never equal for two that are not void: an
/// evaluation that saw no new event issues nothing), then their ids. No clock is compared.
fn comes_after(later: &Invoice, interim: &Invoice) -> bool {
    later.id != interim.id
        && (later.kind != InvoiceKind::Interim
            || (later.events_through, later.id) > (interim.events_through, interim.id))
}

/// The interim invoices `invoice` deducted: those of its period before it that are not void.
/// An interim invoice cannot be voided once a later invoice of its period exists, void or not
/// ([`deducted_later`]), so those not void now are exactly those that were not void when it was
/// issued: no clock decides.
pub fn deducted_by(interims: &[Invoice], invoice: &Invoice) -> Vec<Invoice> {
    if !deducts(invoice.kind) {
        return Vec::new();
    }
    interims
        .iter()
        .filter(|i| comes_after(invoice, i) && i.status != InvoiceStatus::Void)
        .cloned()
        .collect()
}

/// [`cumulative`] of an invoice, reading what it deducted from any transaction's tables.
pub fn cumulative_of(
    invoices: &impl ReadableTable<&'static [u8], &'static [u8]>,
    by_period: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    invoice: &Invoice,
) -> Result<Result<Invoice, InvoiceError>, StoreError> {
    if !deducts(invoice.kind) {
        return Ok(Ok(invoice.clone()));
    }
    let interims = interims_of(
        invoices,
        by_period,
        tenant,
        invoice.subscription,
        invoice.period_start_ms,
    )?;
    Ok(cumulative(invoice, &deducted_by(&interims, invoice)))
}

/// Whether `invoice` was taxed on its own lines (the tax terms changed since the interim
/// invoices it deducted) rather than as its period's computation minus theirs: `verify` then
/// checks its taxes against its own lines.
pub fn taxed_alone(
    invoices: &impl ReadableTable<&'static [u8], &'static [u8]>,
    by_period: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    invoice: &Invoice,
) -> Result<bool, StoreError> {
    if !deducts(invoice.kind) {
        return Ok(false);
    }
    let interims = interims_of(
        invoices,
        by_period,
        tenant,
        invoice.subscription,
        invoice.period_start_ms,
    )?;
    let earlier = deducted_by(&interims, invoice);
    Ok(!same_tax_terms(
        &invoice.tax_lines,
        invoice.reverse_charge,
        &earlier,
    ))
}

/// [`cumulative_of`] inside a write transaction (a stored invoice always adds up).
pub fn cumulative_in_write(
    tx: &WriteTxn,
    tenant: TenantId,
    invoice: &Invoice,
) -> Result<Invoice, StoreError> {
    let invoices = tx.open_table(tables::INVOICES)?;
    let by_period = tx.open_table(tables::INVOICE_BY_PERIOD)?;
    cumulative_of(&invoices, &by_period, tenant, invoice)?
        .map_err(|e| StoreError::Corrupt(format!("invoice amounts: {e}")))
}

/// For an interim invoice: a later invoice of its period (it deducted this one; even once void,
/// its record says so), if any.
pub fn deducted_later(
    tx: &WriteTxn,
    tenant: TenantId,
    invoice: &Invoice,
) -> Result<Option<Id>, StoreError> {
    if invoice.kind != InvoiceKind::Interim {
        return Ok(None);
    }
    let all = of_period(
        &tx.open_table(tables::INVOICES)?,
        &tx.open_table(tables::INVOICE_BY_PERIOD)?,
        tenant,
        invoice.subscription,
        invoice.period_start_ms,
    )?;
    Ok(all
        .into_iter()
        .find(|i| deducts(i.kind) && comes_after(i, invoice))
        .map(|i| i.id))
}

/// The interim invoices a new invoice of `kind` for the period starting at `period_start_ms`
/// deducts: those not void.
pub fn to_deduct(
    tx: &WriteTxn,
    tenant: TenantId,
    sub: Id,
    kind: InvoiceKind,
    period_start_ms: i64,
) -> Result<Vec<Invoice>, StoreError> {
    if !deducts(kind) {
        return Ok(Vec::new());
    }
    Ok(interims_of(
        &tx.open_table(tables::INVOICES)?,
        &tx.open_table(tables::INVOICE_BY_PERIOD)?,
        tenant,
        sub,
        period_start_ms,
    )?
    .into_iter()
    .filter(|i| i.status != InvoiceStatus::Void)
    .collect())
}

/// What an interim invoice computes: the usage lines of `period` (its running period up to
/// the end of the segment running at its issue, so only segments started by then) as of
/// `cutoff` (no adjustments, fees, discounts or minimum).
pub fn interim_spec(period: Period, cutoff: u64, plans: BTreeMap<Id, Plan>) -> Spec {
    Spec {
        kind: InvoiceKind::Interim,
        period,
        next_period: None,
        advance_prebilled: false,
        include_usage: true,
        adjust_from_ms: period.start_ms,
        cutoff,
        plans,
        discounts: Vec::new(),
    }
}

/// A running period under a threshold: the period, the threshold, the subscription's plan and
/// every plan of its phases.
pub type Watched = (Period, i64, Plan, BTreeMap<Id, Plan>);

/// Records that a plan version of `tenant` sets a threshold (plan versions are never changed
/// nor deleted, so the set only grows).
pub fn mark_threshold_plan(tx: &WriteTxn, tenant: TenantId, plan: Id) -> Result<(), StoreError> {
    tx.open_table(tables::THRESHOLD_PLANS)?
        .insert(keys::tenant_id(tenant, plan).as_slice(), ())?;
    Ok(())
}

/// Whether any plan version of `tenant` sets a threshold: one range read, so a tenant without
/// progressive billing costs the watcher nothing more.
fn any_threshold_plan(tx: &WriteTxn, tenant: TenantId) -> Result<bool, StoreError> {
    let (lo, hi) = keys::tenant_range(tenant);
    Ok(tx
        .open_table(tables::THRESHOLD_PLANS)?
        .range::<&[u8]>(lo.as_slice()..hi.as_slice())?
        .next()
        .transpose()?
        .is_some())
}

/// The period of `sub` running at `at_ms` whose plan sets a threshold, with that threshold,
/// the subscription's plan and every plan of its phases; `None` when nothing is watched.
pub fn watched_period(
    plans_table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    sub: &Subscription,
    at_ms: i64,
) -> Result<Option<Watched>, StoreError> {
    if sub.status == SubscriptionStatus::Canceled {
        return Ok(None);
    }
    let Some(plan) = super::plan::load(plans_table, tenant, sub.plan)? else {
        return Ok(None);
    };
    let Some(period) = sub.period(&plan, sub.periods_closed) else {
        return Ok(None);
    };
    if !(period.start_ms <= at_ms && at_ms < period.end_ms) {
        return Ok(None);
    }
    // The plan in effect now decides; every phase's plan is loaded only when it sets one.
    let current = sub.plan_at(at_ms);
    let threshold = if current == plan.id {
        plan.threshold_minor
    } else {
        super::plan::load(plans_table, tenant, current)?.and_then(|p| p.threshold_minor)
    };
    let Some(threshold) = threshold else {
        return Ok(None);
    };
    let plans = subscription::plans_of(plans_table, tenant, sub)?;
    Ok(Some((period, threshold, plan, plans)))
}

/// The watcher's entry: evaluates every customer whose usage the batch changed, at the latest
/// time of the commands that changed it; interim invoices with an amount due are collected
/// through `auto_collect` like a billing run's; a subscription issues at most one interim
/// invoice per `min_interval_ms`.
pub fn on_touches(
    tx: &WriteTxn,
    touches: &crate::watch::Touches,
    auto_collect: Option<&'static str>,
    min_interval_ms: i64,
) -> Result<(), StoreError> {
    let rules = Rules {
        auto_collect,
        min_interval_ms,
    };
    for (tenant, customer, usage) in touches.usage() {
        evaluate(tx, tenant, customer, usage.at_ms, rules, "watch")?;
    }
    Ok(())
}

/// How interim invoices are issued.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// Start collecting every interim invoice with an amount due through this provider.
    pub auto_collect: Option<&'static str>,
    /// The shortest time between two interim invoices of a subscription (not void): a crossing
    /// sooner is left to the customer's next usage after it, or to the period's invoice.
    pub min_interval_ms: i64,
}

/// Issues, in the caller's transaction, the interim invoice of every running period of
/// `customer`'s subscriptions whose accrued, not yet invoiced usage has reached its plan's
/// threshold as of `at_ms`. State-based: it compares what has accrued with what interim
/// invoices billed, so evaluating twice issues nothing more and a missed evaluation is caught
/// up by the next. The threshold is checked on the rollups ([`super::draft`]); only a crossing
/// computes the invoice from the events. Returns the invoices issued; a business failure
/// (a missing plan or meter) is logged and skips the subscription.
pub fn evaluate(
    tx: &WriteTxn,
    tenant: TenantId,
    customer: Id,
    at_ms: i64,
    rules: Rules,
    origin: &str,
) -> Result<Vec<Id>, StoreError> {
    let mut issued = Vec::new();
    if !any_threshold_plan(tx, tenant)? {
        return Ok(issued);
    }
    let subs = subscription::of_customer_in(
        &tx.open_table(tables::SUBSCRIPTIONS_BY_CUSTOMER)?,
        &tx.open_table(tables::SUBSCRIPTIONS)?,
        tenant,
        customer,
    )?;
    for sub in subs {
        let watched = watched_period(&tx.open_table(tables::PLANS)?, tenant, &sub, at_ms)?;
        let Some((period, threshold, plan, plans)) = watched else {
            continue;
        };
        let watched = Watching {
            period,
            threshold,
            min_interval_ms: rules.min_interval_ms,
        };
        match evaluate_period(tx, tenant, &sub, &plan, watched, plans, at_ms, origin)? {
            Ok(Some(inv)) => {
                if let (Some(psp), true) = (rules.auto_collect, inv.amount_due_minor > 0) {
                    crate::payments::payment::create_attempt(
                        tx, tenant, &inv, psp, None, at_ms, at_ms,
                    )?;
                }
                issued.push(inv.id);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                subscription = %sub.id.display(subscription::PREFIX),
                error = %e,
                "progressive billing skipped the subscription"
            ),
        }
    }
    Ok(issued)
}

/// A running period under a threshold, and how soon it may issue another interim invoice.
struct Watching {
    period: Period,
    threshold: i64,
    min_interval_ms: i64,
}

/// One period: the threshold check on the rollups, then the interim invoice if it is reached.
#[allow(clippy::too_many_arguments)]
fn evaluate_period(
    tx: &WriteTxn,
    tenant: TenantId,
    sub: &Subscription,
    plan: &Plan,
    watched: Watching,
    plans: BTreeMap<Id, Plan>,
    at_ms: i64,
    origin: &str,
) -> Result<Result<Option<Invoice>, InvoiceError>, StoreError> {
    let Watching {
        period,
        threshold,
        min_interval_ms,
    } = watched;
    let earlier = to_deduct(tx, tenant, sub.id, InvoiceKind::Interim, period.start_ms)?;
    let last_issued_ms = earlier.iter().map(|i| i.issued_at_ms).max();
    if last_issued_ms.is_some_and(|last| at_ms < last.saturating_add(min_interval_ms)) {
        // Too soon after the last interim invoice: a later touch (or the period's invoice)
        // bills what accrued meanwhile.
        return Ok(Ok(None));
    }
    let cutoff = current_seq(&tx.open_table(tables::META)?)?;
    if earlier.iter().any(|i| i.events_through >= cutoff) {
        // No event committed since the last interim invoice: nothing new accrued.
        return Ok(Ok(None));
    }
    // Only the segments started by now: one that has not (a scheduled plan change) is not
    // billed early; the running one is whole, so no event of it is left out by its timestamp.
    let started = Period {
        end_ms: super::phase::segments(&sub.phases, period.start_ms, period.end_ms)
            .into_iter()
            .find(|seg| seg.start_ms <= at_ms && at_ms < seg.end_ms)
            .map_or(period.end_ms, |seg| seg.end_ms),
        ..period
    };
    let spec = interim_spec(started, cutoff, plans);
    let accrued = match super::draft::compute_lines(tx, tenant, sub, plan, &spec)? {
        Ok(lines) => lines,
        Err(e) => return Ok(Err(e)),
    };
    let billed = earlier
        .iter()
        .try_fold(0i64, |acc, i| acc.checked_add(i.subtotal_minor))
        .ok_or(InvoiceError::OutOfRange);
    let unbilled = match (invoice::subtotal(&accrued), billed) {
        (Ok(s), Ok(b)) => s.saturating_sub(b),
        (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
    };
    if unbilled < threshold {
        return Ok(Ok(None));
    }
    let key = interim_charge_key(
        tenant,
        sub.id,
        period.start_ms,
        invoice::interim_end_ms(&period, at_ms),
    );
    if tx
        .open_table(tables::INVOICE_BY_PERIOD)?
        .get(key.as_slice())?
        .is_some()
    {
        // An interim invoice in this very millisecond: the next touch catches up.
        return Ok(Ok(None));
    }
    let lines = {
        let events = crate::ingest::event_record::EventTable::new(
            tx.open_table(tables::EVENTS)?,
            tx.open_table(tables::PROPERTY_DICTIONARIES)?,
        );
        let by_customer = tx.open_table(tables::EVENTS_BY_CUSTOMER)?;
        let billed_usage = tx.open_table(tables::BILLED_USAGE)?;
        let meters = tx.open_table(tables::METERS)?;
        let src = Sources {
            events: &events,
            by_customer: &by_customer,
            billed: &billed_usage,
            meters: &meters,
        };
        match invoice::compute(&src, tenant, sub, plan, &spec)? {
            Ok(lines) => lines,
            Err(e) => return Ok(Err(e)),
        }
    };
    Ok(invoice::issue_deducting(
        tx, tenant, sub, plan, &spec, lines, &earlier, at_ms, None, None, origin,
    )?
    .map(Some))
}

/// Evaluates progressive billing for one customer as one writer command (what the watcher does
/// for every customer a batch touched; also how tests and the simulation drive it).
#[derive(Clone)]
pub struct EvaluateProgressive {
    /// Owner.
    pub tenant: TenantId,
    /// The customer.
    pub customer: Id,
    /// The instant evaluated (the interim invoices' issue time).
    pub at_ms: i64,
    /// How interim invoices are issued (collection, the shortest interval between them).
    pub rules: Rules,
    /// The intent.
    pub origin: String,
}

impl crate::store::writer::Command for EvaluateProgressive {
    type Output = Vec<Id>;

    fn apply(self, tx: &WriteTxn) -> Result<Vec<Id>, StoreError> {
        evaluate(
            tx,
            self.tenant,
            self.customer,
            self.at_ms,
            self.rules,
            &self.origin,
        )
    }
}
