//! The draft of a customer's current periods: what the upcoming invoice of each running
//! subscription would bill if its period closed now, computed exactly like the upcoming invoice
//! ([`super::preview`]: the same spec, discounts, minimum, taxes, and what interim invoices of the
//! period already billed deducted) but with usage quantities from the rollups instead of a scan
//! of the period's events, so it is cheap enough to evaluate for every ingest batch that touches
//! the customer. It reads from a read snapshot or from inside the writer's transaction alike.
//!
//! The draft's amount ([`Draft::amount_minor`]) is the upcoming invoice's subtotal: usage,
//! fixed fees (the next period's in-advance fee included, as the upcoming invoice carries it),
//! late-usage adjustments, discounts and the minimum commitment's true-up, before tax, less what
//! interim invoices of the period billed. [`Draft::total_minor`] adds the exclusive tax: what the
//! invoice would draw credits against.

use crate::store::{ReadTable, ReadTxn, ReadableTable, Table, TableDef, WriteTxn};

use super::invoice::{self, InvoiceError, InvoiceKind, Line, Quantities, Sources, Spec};
use super::plan::Plan;
use super::run::Policy;
use super::subscription::{self, Period, Subscription, SubscriptionStatus};
use super::tax::{self, Taxes};
use crate::id::Id;
use crate::ingest::event::current_seq;
use crate::ingest::meter::Meter;
use crate::ingest::usage::{self, Accumulator, UsageTables};
use crate::store::keys::TenantId;
use crate::store::{tables, StoreError};

/// A transaction the draft can read from: a read snapshot or the writer's transaction.
pub trait Tables {
    /// A table of byte values.
    type Bytes<'a>: ReadableTable<&'static [u8], &'static [u8]>
    where
        Self: 'a;
    /// A table of keys only.
    type Set<'a>: ReadableTable<&'static [u8], ()>
    where
        Self: 'a;
    /// A table keyed by text.
    type Text<'a>: ReadableTable<&'static str, &'static [u8]>
    where
        Self: 'a;
    /// Opens a table of byte values.
    fn bytes(
        &self,
        table: TableDef<&'static [u8], &'static [u8]>,
    ) -> Result<Self::Bytes<'_>, StoreError>;
    /// Opens a table of keys.
    fn set(&self, table: TableDef<&'static [u8], ()>) -> Result<Self::Set<'_>, StoreError>;
    /// Opens a table keyed by text.
    fn text(
        &self,
        table: TableDef<&'static str, &'static [u8]>,
    ) -> Result<Self::Text<'_>, StoreError>;
}

impl Tables for ReadTxn {
    type Bytes<'a> = ReadTable<&'static [u8], &'static [u8]>;
    type Set<'a> = ReadTable<&'static [u8], ()>;
    type Text<'a> = ReadTable<&'static str, &'static [u8]>;
    fn bytes(
        &self,
        table: TableDef<&'static [u8], &'static [u8]>,
    ) -> Result<Self::Bytes<'_>, StoreError> {
        self.open_table(table)
    }
    fn set(&self, table: TableDef<&'static [u8], ()>) -> Result<Self::Set<'_>, StoreError> {
        self.open_table(table)
    }
    fn text(
        &self,
        table: TableDef<&'static str, &'static [u8]>,
    ) -> Result<Self::Text<'_>, StoreError> {
        self.open_table(table)
    }
}

impl Tables for WriteTxn {
    type Bytes<'a> = Table<'a, &'static [u8], &'static [u8]>;
    type Set<'a> = Table<'a, &'static [u8], ()>;
    type Text<'a> = Table<'a, &'static str, &'static [u8]>;
    fn bytes(
        &self,
        table: TableDef<&'static [u8], &'static [u8]>,
    ) -> Result<Self::Bytes<'_>, StoreError> {
        self.open_table(table)
    }
    fn set(&self, table: TableDef<&'static [u8], ()>) -> Result<Self::Set<'_>, StoreError> {
        self.open_table(table)
    }
    fn text(
        &self,
        table: TableDef<&'static str, &'static [u8]>,
    ) -> Result<Self::Text<'_>, StoreError> {
        self.open_table(table)
    }
}

/// Usage quantities from the rollups (no event cutoff: everything committed counts; no digest).
struct Rollups<'a, R, D, C, E>(&'a UsageTables<R, D, C, E>);

impl<R, D, C, E> Quantities for Rollups<'_, R, D, C, E>
where
    R: ReadableTable<&'static [u8], &'static [u8]>,
    D: ReadableTable<&'static [u8], ()>,
    C: ReadableTable<&'static [u8], ()>,
    E: ReadableTable<&'static [u8], &'static [u8]>,
{
    fn quantity(
        &self,
        tenant: TenantId,
        meter: &Meter,
        customer: Id,
        from_ms: i64,
        to_ms: i64,
        _cutoff: u64,
    ) -> Result<(Accumulator, [u8; 32]), StoreError> {
        let acc = usage::aggregate(self.0, tenant, meter, customer, from_ms, to_ms)?;
        Ok((acc, [0; 32]))
    }
}

/// [`invoice::compute`] with every usage quantity read from the rollups.
pub fn compute_lines<T: Tables>(
    tx: &T,
    tenant: TenantId,
    sub: &Subscription,
    plan: &Plan,
    spec: &Spec,
) -> Result<Result<Vec<Line>, InvoiceError>, StoreError> {
    let usage = UsageTables {
        rollups: tx.bytes(tables::USAGE_ROLLUPS)?,
        distinct: tx.set(tables::USAGE_DISTINCT)?,
        by_customer: tx.set(tables::EVENTS_BY_CUSTOMER)?,
        events: crate::ingest::event_record::EventTable::new(
            tx.bytes(tables::EVENTS)?,
            tx.bytes(tables::PROPERTY_DICTIONARIES)?,
        ),
    };
    let billed = tx.bytes(tables::BILLED_USAGE)?;
    let meters = tx.bytes(tables::METERS)?;
    let src = Sources {
        events: &usage.events,
        by_customer: &usage.by_customer,
        billed: &billed,
        meters: &meters,
    };
    invoice::compute_with(&src, &Rollups(&usage), tenant, sub, plan, spec)
}

/// The draft of one subscription's current period.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The subscription.
    pub subscription: Id,
    /// Its currency.
    pub currency: String,
    /// The period it drafts.
    pub period: Period,
    /// The lines the upcoming invoice would bill (interim invoices' part deducted).
    pub lines: Vec<Line>,
    /// Their taxes at the customer's rates now (interim invoices' part deducted).
    pub taxes: Taxes,
    /// The sum of the lines: the draft's amount.
    pub amount_minor: i64,
    /// The amount plus exclusive tax: what the invoice would draw credits against.
    pub total_minor: i64,
}

/// The drafts of every running subscription of `customer` as of `now_ms`, in subscription
/// order; a subscription whose draft fails (a missing plan or meter) gives its error.
pub fn of_customer<T: Tables>(
    tx: &T,
    tenant: TenantId,
    customer: Id,
    now_ms: i64,
    policy: &Policy,
) -> Result<Vec<Result<Draft, InvoiceError>>, StoreError> {
    let subs = subscription::of_customer_in(
        &tx.set(tables::SUBSCRIPTIONS_BY_CUSTOMER)?,
        &tx.bytes(tables::SUBSCRIPTIONS)?,
        tenant,
        customer,
    )?;
    let cutoff = current_seq(&tx.text(tables::META)?)?;
    let mut out = Vec::new();
    for sub in subs {
        if sub.status == SubscriptionStatus::Canceled {
            continue;
        }
        if let Some(draft) = of_subscription(tx, tenant, &sub, now_ms, policy, cutoff)? {
            out.push(draft);
        }
    }
    Ok(out)
}

/// One subscription's draft, `None` when it has no period left.
fn of_subscription<T: Tables>(
    tx: &T,
    tenant: TenantId,
    sub: &Subscription,
    now_ms: i64,
    policy: &Policy,
    cutoff: u64,
) -> Result<Option<Result<Draft, InvoiceError>>, StoreError> {
    let plans_table = tx.bytes(tables::PLANS)?;
    let Some(plan) = super::plan::load(&plans_table, tenant, sub.plan)? else {
        return Ok(None);
    };
    let Some(period) = sub.period(&plan, sub.periods_closed) else {
        return Ok(None);
    };
    let plans = subscription::plans_of(&plans_table, tenant, sub)?;
    drop(plans_table);
    let mut spec = super::run::spec_for(
        sub,
        &plan,
        period,
        InvoiceKind::Period,
        policy,
        cutoff,
        plans,
    );
    spec.discounts = super::discount::in_effect(
        &tx.bytes(tables::DISCOUNTS)?,
        &tx.set(tables::DISCOUNTS_BY_TARGET)?,
        tenant,
        sub,
        &plan,
        now_ms,
    )?;
    let full = match compute_lines(tx, tenant, sub, &plan, &spec)? {
        Ok(lines) => lines,
        Err(e) => return Ok(Some(Err(e))),
    };
    let earlier = super::progressive::interims_of(
        &tx.bytes(tables::INVOICES)?,
        &tx.bytes(tables::INVOICE_BY_PERIOD)?,
        tenant,
        sub.id,
        period.start_ms,
    )?
    .into_iter()
    .filter(|i| i.status != invoice::InvoiceStatus::Void)
    .collect::<Vec<_>>();
    let full_taxes = taxes_now(tx, tenant, sub.customer, &full, &plan.currency)?;
    Ok(Some(finish(
        sub, &plan, period, &full, full_taxes, &earlier,
    )))
}

/// The taxes `lines` would carry at the customer's rates now.
pub fn taxes_now<T: Tables>(
    tx: &T,
    tenant: TenantId,
    customer: Id,
    lines: &[Line],
    currency: &str,
) -> Result<Result<Taxes, InvoiceError>, StoreError> {
    let found = crate::customers::get_customer(&tx.bytes(tables::CUSTOMERS)?, tenant, customer)?;
    let applicable = tax::applicable(&tx.bytes(tables::TAX_RATES)?, tenant, found.as_ref())?;
    let exponent = crate::currency::minor_unit_exponent(currency).unwrap_or(2);
    Ok(tax::compute(
        lines,
        &tax::tax_lines_of(&applicable),
        applicable.reverse_charge,
        exponent,
    ))
}

/// The draft from the full computation: interim invoices' part deducted, amounts summed.
fn finish(
    sub: &Subscription,
    plan: &Plan,
    period: Period,
    full: &[Line],
    full_taxes: Result<Taxes, InvoiceError>,
    earlier: &[invoice::Invoice],
) -> Result<Draft, InvoiceError> {
    let lines = super::progressive::deduct_lines(full, earlier)?;
    let exponent = crate::currency::minor_unit_exponent(&plan.currency).unwrap_or(2);
    let taxes = super::progressive::deduct_taxes(full_taxes?, earlier, &lines, exponent)?;
    let amount_minor = invoice::subtotal(&lines)?;
    let total_minor = amount_minor
        .checked_add(taxes.exclusive_minor)
        .ok_or(InvoiceError::OutOfRange)?;
    Ok(Draft {
        subscription: sub.id,
        currency: plan.currency.clone(),
        period,
        lines,
        taxes,
        amount_minor,
        total_minor,
    })
}

/// The drafts' amount in one currency (drafts that failed count nothing).
pub fn amount_minor(drafts: &[Result<Draft, InvoiceError>], currency: &str) -> i64 {
    drafts
        .iter()
        .flatten()
        .filter(|d| d.currency == currency)
        .fold(0i64, |acc, d| acc.saturating_add(d.amount_minor))
}

/// The drafts' total with tax in one currency (drafts that failed count nothing).
pub fn total_minor(drafts: &[Result<Draft, InvoiceError>], currency: &str) -> i64 {
    drafts
        .iter()
        .flatten()
        .filter(|d| d.currency == currency)
        .fold(0i64, |acc, d| acc.saturating_add(d.total_minor))
}

/// [`of_customer`] over a read snapshot at the current time.
pub fn current(
    tx: &ReadTxn,
    tenant: TenantId,
    customer: Id,
    policy: &Policy,
) -> Result<Vec<Result<Draft, InvoiceError>>, StoreError> {
    of_customer(tx, tenant, customer, crate::clock::now_ms(), policy)
}
