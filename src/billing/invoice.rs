//! Invoices: computing them from their inputs, issuing them with their journal entries, voiding
//! them, and re-deriving them to prove they are reproducible.
//!
//! An invoice is computed by [`compute`] from stored data only: the immutable plan, the period,
//! the events committed up to a cutoff (the writer numbers events as it commits them) and the quantities already
//! billed for earlier periods. The same function recomputes it for `tally invoice verify`, so a
//! stored invoice either matches its inputs or the first difference is reported.

use std::collections::BTreeMap;

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::phase;
use super::plan::{Charge, FeeTiming, Plan};
use super::pricing::{self, TierLine};
use super::snapshot::{Buyer, Issued, Seller};
use super::subscription::{Period, Subscription};
use super::tax::{self, TaxLine, Taxes};
use crate::decimal::Stored;
use crate::id::Id;
use crate::ingest::meter::Meter;
use crate::ingest::usage;
use crate::ledger::account::{AccountRef, SystemAccount};
use crate::ledger::grant::{self, Grant, GrantStatus};
use crate::ledger::journal::{self, Draft, Links, Posting};
use crate::store::keys::{self, time_bytes, TenantId};
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "inv";

/// Lifecycle of an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceStatus {
    /// Issued and owed.
    Finalized,
    /// Settled (or nothing was due).
    Paid,
    /// Cancelled by reversing entries.
    Void,
    /// Written off after collection failed.
    Uncollectible,
}

impl InvoiceStatus {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Finalized => "finalized",
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Void => "void",
            InvoiceStatus::Uncollectible => "uncollectible",
        }
    }
}

/// Why an invoice exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvoiceKind {
    /// The first period's in-advance fee, at the start.
    Opening,
    /// A closed period.
    Period,
    /// The last period of a subscription cancelled immediately.
    Final,
    /// Late usage of an ended subscription.
    Adjustment,
    /// A prepaid wallet top-up (`wallet`): one prepaid-credit line, posted to `prepayments`
    /// rather than revenue. Appended, so stored invoices decode unchanged.
    TopUp,
    /// Usage accrued inside a running period once it reached the plan's `threshold_minor`
    /// (progressive billing, see [`super::progressive`]); the period's closing invoice bills
    /// only the rest. Appended, so stored invoices decode unchanged.
    Interim,
}

impl InvoiceKind {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceKind::Opening => "opening",
            InvoiceKind::Period => "period",
            InvoiceKind::Final => "final",
            InvoiceKind::Adjustment => "adjustment",
            InvoiceKind::TopUp => "top_up",
            InvoiceKind::Interim => "interim",
        }
    }
}

/// What a line bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LineKind {
    /// Usage of a meter in the invoice's period.
    Usage,
    /// The plan's fixed fee (possibly prorated).
    FixedFee,
    /// Usage that arrived after its period was invoiced (may be negative).
    Adjustment,
    /// Unused part of an in-advance fee, credited on immediate cancellation (negative).
    FeeCredit,
    /// A coupon's discount (negative); see [`super::discount`].
    Discount,
    /// What a period fell short of the plan's minimum commitment; see [`super::minimum`].
    MinimumCommitment,
    /// Prepaid credit bought by a top-up (see [`super::top_up`]). Last, so stored lines decode.
    PrepaidCredit,
}

impl LineKind {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Usage => "usage",
            LineKind::FixedFee => "fixed_fee",
            LineKind::Adjustment => "adjustment",
            LineKind::FeeCredit => "fee_credit",
            LineKind::Discount => "discount",
            LineKind::MinimumCommitment => "minimum_commitment",
            LineKind::PrepaidCredit => "prepaid_credit",
        }
    }
}

/// One invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// What it bills.
    pub kind: LineKind,
    /// Human description.
    pub description: String,
    /// The meter (usage and adjustment lines).
    pub meter: Option<Id>,
    /// The period whose usage or fee it bills.
    pub period_start_ms: i64,
    /// End of that period.
    pub period_end_ms: i64,
    /// Quantity billed (for adjustments, the difference).
    pub quantity: Stored,
    /// Adjustments: the quantity billed before.
    pub quantity_before: Option<Stored>,
    /// Adjustments: the recomputed quantity.
    pub quantity_after: Option<Stored>,
    /// Fixed fees: the prorated fraction as (numerator ms, denominator ms).
    pub proration: Option<(i64, i64)>,
    /// Per-unit price (per_unit and package models).
    pub unit_price: Option<Stored>,
    /// Tier breakdown.
    pub tiers: Vec<TierLine>,
    /// Exact amount, major units.
    pub amount_exact: Stored,
    /// Rounded once, minor units.
    pub amount_minor: i64,
    /// Events counted.
    pub events: u64,
    /// Digest of the identities and values of the events counted.
    pub events_digest: [u8; 32],
}

/// An invoice as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// `inv_…`.
    pub id: Id,
    /// The subscription billed.
    pub subscription: Id,
    /// Who owes it.
    pub customer: Id,
    /// The plan version priced with.
    pub plan: Id,
    /// ISO 4217.
    pub currency: String,
    /// Why it exists.
    pub kind: InvoiceKind,
    /// Lifecycle.
    pub status: InvoiceStatus,
    /// The charge key's period start.
    pub period_start_ms: i64,
    /// The charge key's period end.
    pub period_end_ms: i64,
    /// Lines.
    pub lines: Vec<Line>,
    /// Sum of rounded lines.
    pub subtotal_minor: i64,
    /// Credits drawn, per grant, in burn order.
    pub credits: Vec<(Id, i64)>,
    /// Sum of credits drawn.
    pub credits_applied_minor: i64,
    /// What remains to collect.
    pub amount_due_minor: i64,
    /// Issued.
    pub issued_at_ms: i64,
    /// Events committed up to this sequence number were counted.
    pub events_through: u64,
    /// blake3 of the inputs.
    pub inputs_digest: [u8; 32],
    /// Journal entries it posted.
    pub entries: Vec<Id>,
    /// The voided invoice it re-issues.
    pub replaces: Option<Id>,
    /// The invoice that re-issued it after a void.
    pub replaced_by: Option<Id>,
    /// The billing run that created it.
    pub billing_run: Option<Id>,
    /// When it was voided.
    pub voided_at_ms: Option<i64>,
    /// When it was paid.
    pub paid_at_ms: Option<i64>,
    /// Its number (`INV-2026-000042`); `None` only for invoices issued before numbering.
    pub number: Option<String>,
    /// The number's value in its sequence (from 1 in each scope, see `numbering`).
    pub number_seq: Option<u64>,
    /// The year the number's sequence restarted in, when the format holds `{year}`.
    pub number_year: Option<i32>,
    /// The buyer as issued to; `None` only for invoices issued before snapshots.
    pub buyer: Option<Buyer>,
    /// The seller as issued by; `None` only for invoices issued before snapshots.
    pub seller: Option<Seller>,
    /// Tax per rate: each rate's terms as issued and its sums; empty without rates.
    pub tax_lines: Vec<TaxLine>,
    /// Every tax, inclusive and exclusive (0 for invoices issued before taxes).
    pub tax_minor: i64,
    /// The subtotal plus exclusive tax: what is owed before credits.
    pub total_minor: i64,
    /// Whether the reverse charge applied (no tax, and its note in `notes`).
    pub reverse_charge: bool,
    /// Legal notes the invoice carries.
    pub notes: Vec<String>,
    /// What its credit notes took back, tax included (at most the total).
    pub credited_minor: i64,
    /// The part of that taken off the amount due (credit notes of the unpaid invoice).
    pub credited_due_minor: i64,
    /// Its credit notes (`cn_…`), in order.
    pub credit_notes: Vec<Id>,
}

impl InvoiceKind {
    /// The account an invoice of this kind credits with its net amount: revenue, except a
    /// top-up's, which is not income until its credits are used (`prepayments`).
    pub fn income_account(self) -> SystemAccount {
        match self {
            InvoiceKind::TopUp => SystemAccount::Prepayments,
            _ => SystemAccount::Revenue,
        }
    }
}

/// Why an invoice could not be computed or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// An amount left the exact range.
    #[error("an amount is out of range")]
    OutOfRange,
    /// The plan references a missing meter.
    #[error("meter {0} of the plan is missing")]
    MissingMeter(String),
    /// A phase of the subscription names a missing plan.
    #[error("plan {0} of the subscription is missing")]
    MissingPlan(String),
    /// No such invoice.
    #[error("no invoice {0}")]
    Missing(String),
    /// The invoice is not in a state that allows this.
    #[error("invoice {id} is {status}; only finalized invoices can be {action}")]
    WrongState {
        /// The invoice.
        id: String,
        /// Its status.
        status: &'static str,
        /// What was attempted.
        action: &'static str,
    },
    /// The ledger refused an entry.
    #[error("ledger: {0}")]
    Ledger(String),
    /// A payment attempt is at the provider, which may still collect it.
    #[error("invoice {id} has payment {payment} {status} at the provider; it can be voided once that attempt settles or is canceled")]
    PaymentInProgress {
        /// The invoice.
        id: String,
        /// The attempt.
        payment: String,
        /// Its status.
        status: &'static str,
    },
    /// Credit notes already took part of it back: voiding it would reverse that part twice.
    #[error("invoice {0} has credit notes; credit what remains instead of voiding it")]
    Credited(String),
    /// A later invoice adjusted usage this one billed: voiding this one first would put the
    /// period's billed quantity back while the later adjustment stands, and bill it twice.
    #[error("invoice {id} billed usage of the period starting {period_start} that a later invoice adjusted; void the later invoice first")]
    AdjustedLater {
        /// The invoice.
        id: String,
        /// The adjusted period's start (RFC 3339).
        period_start: String,
    },
    /// A later invoice of the same period deducted this interim invoice: voiding it now would
    /// leave what it billed billed by nobody.
    #[error("interim invoice {id} was deducted by {later}, a later invoice of its period; credit it with a credit note instead of voiding it")]
    InterimDeducted {
        /// The interim invoice.
        id: String,
        /// The later invoice of its period.
        later: String,
    },
}

impl From<pricing::OutOfRange> for InvoiceError {
    fn from(_: pricing::OutOfRange) -> Self {
        InvoiceError::OutOfRange
    }
}

/// The tables [`compute`] reads, from a read or a write transaction.
pub struct Sources<'a, E, C, B, M>
where
    E: ReadableTable<&'static [u8], &'static [u8]>,
    C: ReadableTable<&'static [u8], ()>,
    B: ReadableTable<&'static [u8], &'static [u8]>,
    M: ReadableTable<&'static [u8], &'static [u8]>,
{
    /// Events, with their properties dictionaries.
    pub events: &'a crate::ingest::event_record::EventTable<E>,
    /// Events by customer and time.
    pub by_customer: &'a C,
    /// Billed quantities.
    pub billed: &'a B,
    /// Meters.
    pub meters: &'a M,
}

/// Where [`compute_with`] takes a meter's usage from: the events themselves up to a cutoff
/// ([`Sources`], what invoices and `verify` use: exact and digested), or the rollups
/// ([`super::draft`], cheap enough for every ingest batch; the same quantities, no digest).
pub trait Quantities {
    /// The aggregation of `meter` for `customer` over `[from_ms, to_ms)` counting events
    /// committed up to `cutoff`, and the digest of the events counted.
    #[allow(clippy::too_many_arguments)]
    fn quantity(
        &self,
        tenant: TenantId,
        meter: &Meter,
        customer: Id,
        from_ms: i64,
        to_ms: i64,
        cutoff: u64,
    ) -> Result<(usage::Accumulator, [u8; 32]), StoreError>;
}

impl<E, C, B, M> Quantities for Sources<'_, E, C, B, M>
where
    E: ReadableTable<&'static [u8], &'static [u8]>,
    C: ReadableTable<&'static [u8], ()>,
    B: ReadableTable<&'static [u8], &'static [u8]>,
    M: ReadableTable<&'static [u8], &'static [u8]>,
{
    fn quantity(
        &self,
        tenant: TenantId,
        meter: &Meter,
        customer: Id,
        from_ms: i64,
        to_ms: i64,
        cutoff: u64,
    ) -> Result<(usage::Accumulator, [u8; 32]), StoreError> {
        usage::aggregate_events(
            self.by_customer,
            self.events,
            tenant,
            meter,
            customer,
            from_ms,
            to_ms,
            cutoff,
        )
    }
}

/// A billed quantity of one (subscription, meter, period).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Billed {
    /// Period end.
    pub period_end_ms: i64,
    /// Quantity billed so far (the original line plus every adjustment).
    pub quantity: Stored,
}

fn billed_key(tenant: TenantId, sub: Id, meter: Id, period_start_ms: i64) -> Vec<u8> {
    let mut key = keys::tenant_id(tenant, sub).to_vec();
    key.extend_from_slice(&meter.to_bytes());
    key.extend_from_slice(&time_bytes(period_start_ms));
    key
}

/// The charge key: (tenant, subscription, period start, period end).
pub fn charge_key(tenant: TenantId, sub: Id, start_ms: i64, end_ms: i64) -> Vec<u8> {
    let mut key = keys::tenant_id(tenant, sub).to_vec();
    key.extend_from_slice(&time_bytes(start_ms));
    key.extend_from_slice(&time_bytes(end_ms));
    key
}

/// The tag that ends an interim invoice's charge key.
const INTERIM_TAG: u8 = b'i';

/// An interim invoice's charge key: the charge key of (period start, issue instant) with a
/// kind tag, so a period's own key `(start, end)` never finds an interim invoice, whatever
/// instant either ends at (an immediate cancellation in the interim's millisecond, a 1 ms
/// period), while a range over the period start still lists both.
pub fn interim_charge_key(tenant: TenantId, sub: Id, start_ms: i64, end_ms: i64) -> Vec<u8> {
    let mut key = charge_key(tenant, sub, start_ms, end_ms);
    key.push(INTERIM_TAG);
    key
}

/// The key under which `invoice` is indexed by period.
fn index_key(tenant: TenantId, invoice: &Invoice) -> Vec<u8> {
    let key = match invoice.kind {
        InvoiceKind::Interim => interim_charge_key,
        _ => charge_key,
    };
    key(
        tenant,
        invoice.subscription,
        invoice.period_start_ms,
        invoice.period_end_ms,
    )
}

/// What to compute.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The kind.
    pub kind: InvoiceKind,
    /// The period closed (usage and arrears fee); for an opening invoice, period 0.
    pub period: Period,
    /// The next period, whose in-advance fee this invoice carries (if the subscription
    /// continues).
    pub next_period: Option<Period>,
    /// Whether the in-advance fee for this period was billed before it (by the previous
    /// period's invoice or the opening invoice): its unused part is credited when the period
    /// ends early (immediate cancellation, a split) or its plan changed inside it.
    pub advance_prebilled: bool,
    /// Bill usage of the period (false for opening invoices).
    pub include_usage: bool,
    /// Recompute earlier periods whose usage started at or after this instant.
    pub adjust_from_ms: i64,
    /// Events committed up to this sequence number count.
    pub cutoff: u64,
    /// Every plan of the subscription's phases, by id.
    pub plans: BTreeMap<Id, Plan>,
    /// The discounts in effect for this invoice, in redemption order
    /// ([`super::discount::in_effect`]).
    pub discounts: Vec<super::discount::Active>,
}

impl Spec {
    /// The plan of the phase in effect at `at_ms`.
    fn plan_at<'a>(&'a self, sub: &Subscription, at_ms: i64) -> Result<&'a Plan, InvoiceError> {
        let id = sub.plan_at(at_ms);
        self.plans
            .get(&id)
            .ok_or_else(|| InvoiceError::MissingPlan(id.display(super::plan::PREFIX)))
    }
}

fn meter_of<M: ReadableTable<&'static [u8], &'static [u8]>>(
    meters: &M,
    tenant: TenantId,
    id: Id,
) -> Result<Result<Meter, InvoiceError>, StoreError> {
    Ok(get_record::<Meter, _>(meters, keys::tenant_id(tenant, id))?
        .ok_or_else(|| InvoiceError::MissingMeter(id.display(crate::ingest::meter::PREFIX))))
}

fn fee_line(
    plan: &Plan,
    exponent: u8,
    kind: LineKind,
    description: String,
    period: &Period,
    numerator_ms: i64,
    sign: i64,
) -> Result<Option<Line>, InvoiceError> {
    let Some(fee) = &plan.fixed_fee else {
        return Ok(None);
    };
    let denominator = period
        .full_end_ms
        .saturating_sub(period.full_start_ms)
        .max(1);
    let numerator = numerator_ms.clamp(0, denominator);
    let full = pricing::from_minor(fee.amount_minor, exponent);
    let exact = full
        .checked_mul(Decimal::from(numerator))
        .and_then(|v| v.checked_div(Decimal::from(denominator)))
        .and_then(|v| v.checked_mul(Decimal::from(sign)))
        .ok_or(InvoiceError::OutOfRange)?;
    let proration = (numerator != denominator).then_some((numerator, denominator));
    Ok(Some(Line {
        kind,
        description,
        meter: None,
        period_start_ms: period.start_ms,
        period_end_ms: period.end_ms,
        quantity: Stored(Decimal::ONE),
        quantity_before: None,
        quantity_after: None,
        proration,
        unit_price: None,
        tiers: Vec::new(),
        amount_exact: Stored(exact),
        amount_minor: pricing::to_minor(exact, exponent)?,
        events: 0,
        events_digest: [0; 32],
    }))
}

fn unit_price_of(charge: &Charge) -> Option<Stored> {
    match &charge.model {
        pricing::Model::PerUnit { unit_price } | pricing::Model::Package { unit_price, .. } => {
            Some(*unit_price)
        }
        _ => None,
    }
}

/// A step's result: a business failure inside, a storage failure outside.
type Computed<T> = Result<Result<T, InvoiceError>, StoreError>;

/// Unwraps a business result inside a step, returning its failure as the step's outcome.
macro_rules! business {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Ok(Err(InvoiceError::from(e))),
        }
    };
}

/// Computes an invoice's lines from its inputs, in named steps: adjustments for late usage of
/// earlier periods, the period's usage, the fixed fee, then discounts and the minimum
/// commitment's true-up. Each line is priced by the plan of the phase in effect at its own
/// start (`plan` gives the currency); discounts and the minimum follow the plan in effect at
/// the period's end, and the subscription's own minimum overrides the plan's.
pub fn compute<E, C, B, M>(
    src: &Sources<'_, E, C, B, M>,
    tenant: TenantId,
    sub: &Subscription,
    plan: &Plan,
    spec: &Spec,
) -> Computed<Vec<Line>>
where
    E: ReadableTable<&'static [u8], &'static [u8]>,
    C: ReadableTable<&'static [u8], ()>,
    B: ReadableTable<&'static [u8], &'static [u8]>,
    M: ReadableTable<&'static [u8], &'static [u8]>,
{
    compute_with(src, src, tenant, sub, plan, spec)
}

/// [`compute`] with the usage quantities taken from `q` (the rollups for a draft); `src` gives
/// the billed quantities and the meters.
pub fn compute_with<E, C, B, M, Q>(
    src: &Sources<'_, E, C, B, M>,
    q: &Q,
    tenant: TenantId,
    sub: &Subscription,
    plan: &Plan,
    spec: &Spec,
) -> Computed<Vec<Line>>
where
    E: ReadableTable<&'static [u8], &'static [u8]>,
    C: ReadableTable<&'static [u8], ()>,
    B: ReadableTable<&'static [u8], &'static [u8]>,
    M: ReadableTable<&'static [u8], &'static [u8]>,
    Q: Quantities,
{
    let exponent = crate::currency::minor_unit_exponent(&plan.currency).unwrap_or(2);
    let mut lines = business!(adjustment_lines(src, q, tenant, sub, spec, exponent)?);
    if spec.include_usage {
        lines.extend(business!(usage_lines(src, q, tenant, sub, spec, exponent)?));
    }
    lines.extend(business!(fee_lines(sub, spec, exponent)));
    let last_ms = spec
        .period
        .end_ms
        .saturating_sub(1)
        .max(spec.period.start_ms);
    let closing = business!(spec.plan_at(sub, last_ms));
    lines.extend(business!(super::discount::lines(
        &lines,
        &closing.code,
        &spec.period,
        &spec.discounts,
        exponent
    )));
    let true_up = business!(minimum_true_up(
        sub,
        &spec.plans,
        spec.kind,
        &spec.period,
        spec.advance_prebilled,
        &lines,
        exponent
    ));
    lines.extend(true_up);
    Ok(Ok(lines))
}

/// The instant an invoice's discounts are taken as of: its own issue, or for a re-issue after a
/// void the issue of the invoice it (ultimately) replaces, so correcting an invoice never
/// re-prices its period with discounts redeemed or removed since.
pub fn discounts_as_of(
    invoices: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    issued_at_ms: i64,
    replaces: Option<Id>,
) -> Result<i64, StoreError> {
    let (mut at_ms, mut next) = (issued_at_ms, replaces);
    // A chain of voids and re-issues is short; the bound only guards a corrupt loop.
    for _ in 0..1000 {
        let Some(id) = next else {
            return Ok(at_ms);
        };
        let Some(voided) = get_record::<Invoice, _>(invoices, keys::tenant_id(tenant, id))? else {
            return Ok(at_ms);
        };
        (at_ms, next) = (voided.issued_at_ms, voided.replaces);
    }
    Err(StoreError::Corrupt("a re-issue chain does not end".into()))
}

/// The minimum commitment's true-up of an invoice closing `period` (shared by [`compute`] and
/// `tally invoice verify`): the subscription's own minimum, else the one of the plan in effect
/// at the period's end; none in a trial. The period's fee billed in advance on an earlier
/// invoice counts towards it, as that invoice billed it.
pub fn minimum_true_up(
    sub: &Subscription,
    plans: &BTreeMap<Id, Plan>,
    kind: InvoiceKind,
    period: &Period,
    advance_prebilled: bool,
    lines: &[Line],
    exponent: u8,
) -> Result<Option<Line>, InvoiceError> {
    if sub.in_trial(period.end_ms) {
        return Ok(None);
    }
    let plan_at = |at_ms: i64| {
        let id = sub.plan_at(at_ms);
        plans
            .get(&id)
            .ok_or_else(|| InvoiceError::MissingPlan(id.display(super::plan::PREFIX)))
    };
    let closing = plan_at(period.end_ms.saturating_sub(1).max(period.start_ms))?;
    let Some(minimum_minor) = sub.minimum_minor.or(closing.minimum_minor) else {
        return Ok(None);
    };
    let opening = plan_at(period.start_ms)?;
    let prebilled_minor = if advance_prebilled && in_advance(opening) {
        let billed = Period {
            end_ms: period.full_end_ms,
            ..*period
        };
        let span = period.full_end_ms.saturating_sub(period.start_ms);
        fee_line(
            opening,
            exponent,
            LineKind::FixedFee,
            String::new(),
            &billed,
            span,
            1,
        )?
        .map_or(0, |l| l.amount_minor)
    } else {
        0
    };
    Ok(super::minimum::true_up(
        lines,
        minimum_minor,
        kind,
        period,
        prebilled_minor,
        exponent,
    )?)
}

/// The start of the period a billed-usage key names.
fn billed_period_start(key: &[u8]) -> Result<i64, StoreError> {
    key.get(40..48)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(crate::store::keys::time_from_bytes)
        .ok_or_else(|| StoreError::Corrupt("malformed billed usage key".into()))
}

/// Every meter any phase's plan charges for, each once.
fn meters_of_plans(spec: &Spec) -> Vec<Id> {
    let mut out: Vec<Id> = Vec::new();
    for plan in spec.plans.values() {
        for charge in &plan.charges {
            if !out.contains(&charge.meter) {
                out.push(charge.meter);
            }
        }
    }
    out
}

/// Step 1: one adjustment line per earlier (meter, segment) whose recomputed quantity differs
/// from the billed one, for segments that started at or after `spec.adjust_from_ms`, each
/// priced by the plan of its own phase.
fn adjustment_lines<E, C, B, M, Q>(
    src: &Sources<'_, E, C, B, M>,
    q: &Q,
    tenant: TenantId,
    sub: &Subscription,
    spec: &Spec,
    exponent: u8,
) -> Computed<Vec<Line>>
where
    E: ReadableTable<&'static [u8], &'static [u8]>,
    C: ReadableTable<&'static [u8], ()>,
    B: ReadableTable<&'static [u8], &'static [u8]>,
    M: ReadableTable<&'static [u8], &'static [u8]>,
    Q: Quantities,
{
    debug_assert!(spec.adjust_from_ms <= spec.period.start_ms);
    let mut lines = Vec::new();
    for meter_id in meters_of_plans(spec) {
        let meter = business!(meter_of(src.meters, tenant, meter_id)?);
        let lo = billed_key(tenant, sub.id, meter_id, spec.adjust_from_ms);
        let hi = billed_key(tenant, sub.id, meter_id, spec.period.start_ms);
        for entry in src.billed.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
            let (key, value) = entry?;
            let billed: Billed = codec::decode(value.value())?;
            let start = billed_period_start(key.value())?;
            let plan = business!(spec.plan_at(sub, start));
            let Some(charge) = plan.charges.iter().find(|c| c.meter == meter_id) else {
                continue;
            };
            let (acc, digest) = q.quantity(
                tenant,
                &meter,
                sub.customer,
                start,
                billed.period_end_ms,
                spec.cutoff,
            )?;
            let now_quantity = business!(acc
                .value(meter.aggregation)
                .map_err(|_| InvoiceError::OutOfRange))
            .unwrap_or(Decimal::ZERO);
            if now_quantity == billed.quantity.0 {
                continue;
            }
            let change = business!(pricing::price_change(
                &charge.model,
                charge.free_units.0,
                billed.quantity.0,
                now_quantity,
                exponent
            ));
            lines.push(Line {
                kind: LineKind::Adjustment,
                description: format!(
                    "{}: late usage for {} – {}",
                    meter.key,
                    crate::clock::rfc3339(start),
                    crate::clock::rfc3339(billed.period_end_ms)
                ),
                meter: Some(meter_id),
                period_start_ms: start,
                period_end_ms: billed.period_end_ms,
                quantity: Stored(change.quantity),
                quantity_before: Some(billed.quantity),
                quantity_after: Some(Stored(now_quantity)),
                proration: None,
                unit_price: unit_price_of(charge),
                tiers: Vec::new(),
                amount_exact: Stored(change.exact),
                amount_minor: change.amount_minor,
                events: acc.events(),
                events_digest: digest,
            });
        }
    }
    Ok(Ok(lines))
}

/// Step 2: for each segment of the period (one per phase in effect during it), one usage line
/// per charge of that phase's plan. A period in the trial bills no usage unless the plan
/// bills usage in trials.
fn usage_lines<E, C, B, M, Q>(
    src: &Sources<'_, E, C, B, M>,
    q: &Q,
    tenant: TenantId,
    sub: &Subscription,
    spec: &Spec,
    exponent: u8,
) -> Computed<Vec<Line>>
where
    E: ReadableTable<&'static [u8], &'static [u8]>,
    C: ReadableTable<&'static [u8], ()>,
    B: ReadableTable<&'static [u8], &'static [u8]>,
    M: ReadableTable<&'static [u8], &'static [u8]>,
    Q: Quantities,
{
    debug_assert!(spec.include_usage);
    let period = &spec.period;
    let mut lines = Vec::new();
    for segment in phase::segments(&sub.phases, period.start_ms, period.end_ms) {
        let plan = business!(spec.plan_at(sub, segment.start_ms));
        if sub.in_trial(period.end_ms) && !plan.bill_usage_in_trial {
            continue;
        }
        for charge in &plan.charges {
            lines.push(business!(usage_line(
                src, q, tenant, sub, spec, charge, &segment, exponent
            )?));
        }
    }
    Ok(Ok(lines))
}

/// One charge's usage over one segment.
#[allow(clippy::too_many_arguments)]
fn usage_line<E, C, B, M, Q>(
    src: &Sources<'_, E, C, B, M>,
    q: &Q,
    tenant: TenantId,
    sub: &Subscription,
    spec: &Spec,
    charge: &Charge,
    segment: &phase::Span,
    exponent: u8,
) -> Computed<Line>
where
    E: ReadableTable<&'static [u8], &'static [u8]>,
    C: ReadableTable<&'static [u8], ()>,
    B: ReadableTable<&'static [u8], &'static [u8]>,
    M: ReadableTable<&'static [u8], &'static [u8]>,
    Q: Quantities,
{
    let meter = business!(meter_of(src.meters, tenant, charge.meter)?);
    let (acc, digest) = q.quantity(
        tenant,
        &meter,
        sub.customer,
        segment.start_ms,
        segment.end_ms,
        spec.cutoff,
    )?;
    let quantity = business!(acc
        .value(meter.aggregation)
        .map_err(|_| InvoiceError::OutOfRange))
    .unwrap_or(Decimal::ZERO);
    let priced = business!(pricing::price(
        &charge.model,
        charge.free_units.0,
        quantity,
        exponent
    ));
    Ok(Ok(Line {
        kind: LineKind::Usage,
        description: meter.name.clone().unwrap_or_else(|| meter.key.clone()),
        meter: Some(charge.meter),
        period_start_ms: segment.start_ms,
        period_end_ms: segment.end_ms,
        quantity: Stored(quantity),
        quantity_before: None,
        quantity_after: None,
        proration: None,
        unit_price: unit_price_of(charge),
        tiers: priced.tiers,
        amount_exact: Stored(priced.exact),
        amount_minor: priced.amount_minor,
        events: acc.events(),
        events_digest: digest,
    }))
}

/// Whether a plan's fee is billed at the start of the period it pays for.
fn in_advance(plan: &Plan) -> bool {
    plan.fixed_fee
        .as_ref()
        .is_some_and(|f| f.timing == FeeTiming::InAdvance)
}

/// Whether a plan's fee is billed after the period it pays for.
fn in_arrears(plan: &Plan) -> bool {
    plan.fixed_fee
        .as_ref()
        .is_some_and(|f| f.timing == FeeTiming::InArrears)
}

/// Step 3: the fixed fees this invoice carries. Every plan pays for the time it was in effect
/// (pieces of the period: see [`phase::fee_pieces`]), nothing during the trial:
/// - an opening invoice: the first period's fee, in advance;
/// - a closing invoice: each in-arrears piece; each in-advance piece after the first (it was not
///   billed in advance); a credit for the part of the in-advance fee billed for this period
///   that its first piece did not use (a change, a split or an immediate cancellation ended it
///   early); and the next period's fee when its plan bills in advance.
fn fee_lines(sub: &Subscription, spec: &Spec, exponent: u8) -> Result<Vec<Line>, InvoiceError> {
    let period = &spec.period;
    let mut lines = Vec::new();
    let piece_fee = |plan: &Plan, label: String, p: &Period, from: i64, to: i64, sign: i64| {
        let span = Period {
            start_ms: from,
            end_ms: to,
            ..*p
        };
        fee_line(
            plan,
            exponent,
            if sign < 0 {
                LineKind::FeeCredit
            } else {
                LineKind::FixedFee
            },
            label,
            &span,
            to.saturating_sub(from),
            sign,
        )
    };
    if spec.kind == InvoiceKind::Opening {
        let plan = spec.plan_at(sub, period.start_ms)?;
        if in_advance(plan) && !sub.in_trial(period.end_ms) {
            // The whole first period from the start, as the closing invoice assumes (a split
            // made before the opening invoice does not shorten what was billed in advance).
            let label = format!("{} (in advance)", plan.name);
            lines.extend(piece_fee(
                plan,
                label,
                period,
                period.start_ms,
                period.full_end_ms,
                1,
            )?);
        }
        return Ok(lines);
    }
    if !matches!(spec.kind, InvoiceKind::Period | InvoiceKind::Final) {
        return Ok(lines);
    }
    if !sub.in_trial(period.end_ms) {
        let pieces = phase::fee_pieces(&sub.phases, period.start_ms, period.end_ms);
        for (i, piece) in pieces.iter().enumerate() {
            let plan = spec.plan_at(sub, piece.start_ms)?;
            let (from, to) = (piece.start_ms, piece.end_ms);
            if in_arrears(plan) {
                let label = format!("{} (in arrears)", plan.name);
                lines.extend(piece_fee(plan, label, period, from, to, 1)?);
            } else if in_advance(plan) && i > 0 {
                let label = format!("{} (from the plan change)", plan.name);
                lines.extend(piece_fee(plan, label, period, from, to, 1)?);
            }
        }
        if let Some(first) = pieces.first() {
            let plan = spec.plan_at(sub, first.start_ms)?;
            if in_advance(plan) && spec.advance_prebilled && first.end_ms < period.full_end_ms {
                let label = if pieces.len() > 1 {
                    format!("{} (unused time after the plan change)", plan.name)
                } else if spec.kind == InvoiceKind::Final {
                    format!("{} (unused time after cancellation)", plan.name)
                } else {
                    format!("{} (unused time after the plan change)", plan.name)
                };
                // The credit's span starts where the billed fee did, so its plan is found by
                // its start like every other line's.
                let mut line =
                    piece_fee(plan, label, period, first.end_ms, period.full_end_ms, -1)?;
                if let Some(l) = line.as_mut() {
                    l.period_start_ms = period.start_ms;
                    l.period_end_ms = period.end_ms;
                }
                lines.extend(line);
            }
        }
    }
    if let (InvoiceKind::Period, Some(next)) = (spec.kind, &spec.next_period) {
        let plan = spec.plan_at(sub, next.start_ms)?;
        if in_advance(plan) && !sub.in_trial(next.end_ms) {
            let label = format!("{} (in advance)", plan.name);
            lines.extend(piece_fee(
                plan,
                label,
                next,
                next.start_ms,
                next.full_end_ms,
                1,
            )?);
        }
    }
    Ok(lines)
}

/// The digest of an invoice's inputs and results: plan version, subscription, period, event
/// cutoff, every line's quantities, event digests and amounts, and the credits drawn.
pub fn inputs_digest(invoice: &Invoice) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("tally 2026-11 invoice inputs v1");
    let mut put = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    put(&invoice.plan.to_bytes());
    put(&invoice.subscription.to_bytes());
    put(invoice.kind.as_str().as_bytes());
    put(&invoice.period_start_ms.to_be_bytes());
    put(&invoice.period_end_ms.to_be_bytes());
    put(&invoice.events_through.to_be_bytes());
    for line in &invoice.lines {
        put(line.kind.as_str().as_bytes());
        put(&line.meter.map(|m| m.to_bytes()).unwrap_or([0; 16]));
        put(&line.period_start_ms.to_be_bytes());
        put(&line.period_end_ms.to_be_bytes());
        put(crate::decimal::to_text(line.quantity.0).as_bytes());
        put(line
            .quantity_before
            .map(|q| crate::decimal::to_text(q.0))
            .unwrap_or_default()
            .as_bytes());
        put(&line.events.to_be_bytes());
        put(&line.events_digest);
        put(&line.amount_minor.to_be_bytes());
    }
    for (grant, amount) in &invoice.credits {
        put(&grant.to_bytes());
        put(&amount.to_be_bytes());
    }
    *h.finalize().as_bytes()
}

/// The sum of the lines' rounded amounts (checked: a sum past `i64` is a business failure).
pub fn subtotal(lines: &[Line]) -> Result<i64, InvoiceError> {
    lines
        .iter()
        .try_fold(0i64, |acc, l| acc.checked_add(l.amount_minor))
        .ok_or(InvoiceError::OutOfRange)
}

/// Issues a computed invoice: stores it under its charge key, moves billed quantities, posts the
/// invoice entry (receivable/revenue) and applies credits in burn order, all in the caller's
/// transaction. Returns the stored invoice. Every check that can refuse it (the totals) comes
/// before the first write; the steps after it cannot refuse.
#[allow(clippy::too_many_arguments)]
pub fn issue(
    tx: &WriteTxn,
    tenant: TenantId,
    sub: &Subscription,
    plan: &Plan,
    spec: &Spec,
    lines: Vec<Line>,
    now_ms: i64,
    billing_run: Option<Id>,
    replaces: Option<Id>,
    origin: &str,
) -> Result<Result<Invoice, InvoiceError>, StoreError> {
    issue_deducting(
        tx,
        tenant,
        sub,
        plan,
        spec,
        lines,
        &[],
        now_ms,
        billing_run,
        replaces,
        origin,
    )
}

/// [`issue`] for a period that interim invoices already billed part of (progressive billing):
/// `lines` are what the period computes in full, and the invoice bills them minus what the
/// `earlier` interim invoices billed, line by line and tax by tax (see
/// [`super::progressive`]). The billed quantities recorded are the full ones, so late usage is
/// adjusted against everything the period billed. An interim invoice records none and does not
/// move `invoiced_through`: its period is still open.
#[allow(clippy::too_many_arguments)]
pub fn issue_deducting(
    tx: &WriteTxn,
    tenant: TenantId,
    sub: &Subscription,
    plan: &Plan,
    spec: &Spec,
    full_lines: Vec<Line>,
    earlier: &[Invoice],
    now_ms: i64,
    billing_run: Option<Id>,
    replaces: Option<Id>,
    origin: &str,
) -> Result<Result<Invoice, InvoiceError>, StoreError> {
    let id = Id::generate_at(now_ms);
    let exponent = crate::currency::minor_unit_exponent(&plan.currency).unwrap_or(2);
    let full_taxes = business!(taxes_at_issue(
        tx,
        tenant,
        sub.customer,
        &full_lines,
        exponent
    )?);
    let lines = business!(super::progressive::deduct_lines(&full_lines, earlier));
    let taxes = business!(super::progressive::deduct_taxes(
        full_taxes, earlier, &lines, exponent
    ));
    let subtotal = business!(subtotal(&lines));
    let total = business!(subtotal
        .checked_add(taxes.exclusive_minor)
        .ok_or(InvoiceError::OutOfRange));
    let step = IssueStep {
        tx,
        tenant,
        customer: sub.customer,
        currency: &plan.currency,
        invoice: id,
        now_ms,
        origin,
    };
    let mut entries = Vec::new();
    if let Some(entry) = business!(step.post_invoice_entry(total, taxes.tax_minor)?) {
        entries.push(entry);
    }
    let (credits, credits_entry) = step.apply_credits(total)?;
    entries.extend(credits_entry);
    // A negative invoice (a downgrade's credit exceeding its charges, usage that went down)
    // owes the customer: the amount becomes a credit grant that later invoices draw on.
    if total < 0 {
        entries.extend(step.credit_balance(total.unsigned_abs())?);
    }
    let credits_applied = business!(credits
        .iter()
        .try_fold(0i64, |acc, (_, a)| acc.checked_add(*a))
        .ok_or(InvoiceError::OutOfRange));
    let amount_due = business!(total
        .checked_sub(credits_applied)
        .ok_or(InvoiceError::OutOfRange))
    .max(0);
    let issued = Issued::take(tx, tenant, sub.customer, now_ms)?;
    let mut invoice = Invoice {
        id,
        subscription: sub.id,
        customer: sub.customer,
        // The plan in effect at the period's end (each line is priced by its own phase's).
        plan: sub.plan_at(
            spec.period
                .end_ms
                .saturating_sub(1)
                .max(spec.period.start_ms),
        ),
        currency: plan.currency.clone(),
        kind: spec.kind,
        status: if amount_due > 0 {
            InvoiceStatus::Finalized
        } else {
            InvoiceStatus::Paid
        },
        period_start_ms: spec.period.start_ms,
        period_end_ms: match spec.kind {
            InvoiceKind::Opening => spec.period.start_ms,
            InvoiceKind::Interim => interim_end_ms(&spec.period, now_ms),
            _ => spec.period.end_ms,
        },
        lines,
        subtotal_minor: subtotal,
        credits,
        credits_applied_minor: credits_applied,
        amount_due_minor: amount_due,
        issued_at_ms: now_ms,
        events_through: spec.cutoff,
        inputs_digest: [0; 32],
        entries,
        replaces,
        replaced_by: None,
        billing_run,
        voided_at_ms: None,
        paid_at_ms: (amount_due <= 0).then_some(now_ms),
        number: Some(issued.number.text),
        number_seq: Some(issued.number.value),
        number_year: issued.number.year,
        buyer: Some(issued.buyer),
        seller: Some(issued.seller),
        tax_lines: taxes.lines,
        tax_minor: taxes.tax_minor,
        total_minor: total,
        reverse_charge: taxes.reverse_charge,
        notes: taxes.notes,
        credited_minor: 0,
        credited_due_minor: 0,
        credit_notes: Vec::new(),
    };
    invoice.inputs_digest = inputs_digest(&invoice);
    if spec.kind != InvoiceKind::Interim {
        record_billed_quantities(tx, tenant, sub.id, &full_lines)?;
    }
    store_invoice(tx, tenant, &invoice)?;
    if spec.include_usage && spec.kind != InvoiceKind::Interim {
        advance_invoiced_through(tx, tenant, sub.customer, spec.period.end_ms)?;
    }
    emit_invoice(
        tx,
        tenant,
        &invoice,
        "invoice.finalized",
        "finalized",
        now_ms,
    )?;
    if invoice.status == InvoiceStatus::Paid {
        emit_invoice(tx, tenant, &invoice, "invoice.paid", "paid", now_ms)?;
    }
    Ok(Ok(invoice))
}

/// The end of an interim invoice's charge key: the instant it was issued, kept inside its
/// period (its kind tag, [`interim_charge_key`], keeps it apart from the opening invoice's
/// `(start, start)` and the period's own `(start, end)`).
pub fn interim_end_ms(period: &Period, now_ms: i64) -> i64 {
    now_ms
        .min(period.end_ms.saturating_sub(1))
        .max(period.start_ms.saturating_add(1))
}

/// Step "taxes": the customer's default rates as they are at issue (copied onto the invoice)
/// applied to the lines.
fn taxes_at_issue(
    tx: &WriteTxn,
    tenant: TenantId,
    customer: Id,
    lines: &[Line],
    exponent: u8,
) -> Computed<Taxes> {
    let customer = crate::customers::load_in_write(tx, tenant, customer)?;
    let applicable = tax::applicable(
        &tx.open_table(tables::TAX_RATES)?,
        tenant,
        customer.as_ref(),
    )?;
    Ok(tax::compute(
        lines,
        &tax::tax_lines_of(&applicable),
        applicable.reverse_charge,
        exponent,
    ))
}

/// The grants an invoice drew on (grant, amount) and the entry that drew them.
type Credits = (Vec<(Id, i64)>, Option<Id>);

/// Records an invoice's transition in the outbox (`effect` names the transition).
pub fn emit_invoice(
    tx: &WriteTxn,
    tenant: TenantId,
    invoice: &Invoice,
    event_type: &str,
    effect: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    crate::notifications::outbox::emit(
        tx,
        tenant,
        crate::notifications::outbox::Effect {
            event_type,
            effect: format!("{}:{effect}", invoice.id.display(PREFIX)),
            customer: Some(invoice.customer),
            kind: "invoice",
            id: invoice.id,
            record: invoice,
        },
        now_ms,
    )
}

/// What the ledger steps of [`issue`] share.
struct IssueStep<'a> {
    tx: &'a WriteTxn,
    tenant: TenantId,
    customer: Id,
    currency: &'a str,
    invoice: Id,
    now_ms: i64,
    origin: &'a str,
}

impl IssueStep<'_> {
    fn links(&self) -> Links {
        Links {
            customer: Some(self.customer),
            invoice: Some(self.invoice),
            ..Links::default()
        }
    }

    /// Step "invoice entry": the total moves to the customer's receivable, the net of tax as
    /// revenue and the tax to `tax_payable`.
    fn post_invoice_entry(
        &self,
        total: i64,
        tax_minor: i64,
    ) -> Result<Result<Option<Id>, InvoiceError>, StoreError> {
        let Some(net) = total.checked_sub(tax_minor) else {
            return Ok(Err(InvoiceError::OutOfRange));
        };
        let postings: Vec<Posting> = [
            (
                AccountRef::Receivable {
                    customer: self.customer,
                },
                total,
            ),
            (AccountRef::System(SystemAccount::Revenue), -net),
            (AccountRef::System(SystemAccount::TaxPayable), -tax_minor),
        ]
        .into_iter()
        .filter(|(_, amount)| *amount != 0)
        .map(|(account, amount_minor)| Posting {
            account,
            currency: self.currency.to_string(),
            amount_minor,
        })
        .collect();
        if postings.is_empty() {
            return Ok(Ok(None));
        }
        let entry_id = Id::generate_at(self.now_ms);
        let draft = Draft {
            id: entry_id,
            kind: "invoice".into(),
            reason: format!("invoice {} issued", self.invoice.display(PREFIX)),
            links: self.links(),
            origin: self.origin.to_string(),
            postings,
        };
        Ok(
            match journal::post(self.tx, self.tenant, self.now_ms, draft)? {
                Ok(_) => Ok(Some(entry_id)),
                Err(e) => Err(InvoiceError::Ledger(e.to_string())),
            },
        )
    }

    /// Step "credit balance": what a negative invoice owes the customer becomes a paid credit
    /// grant funded by the receivable (which the invoice entry left negative), so the next
    /// invoices draw it in burn order. Returns the grant's entry.
    fn credit_balance(&self, amount_minor: u64) -> Result<Option<Id>, StoreError> {
        let amount_minor = i64::try_from(amount_minor).unwrap_or(i64::MAX);
        let entry = Id::generate_at(self.now_ms);
        let grant = Grant {
            id: Id::generate_at(self.now_ms),
            customer: self.customer,
            currency: self.currency.to_string(),
            amount_minor,
            category: grant::Category::Paid,
            funding: grant::Funding::Receivable,
            priority: 0,
            effective_at_ms: self.now_ms,
            expires_at_ms: None,
            created_at_ms: self.now_ms,
            status: GrantStatus::Active,
            closed_at_ms: None,
            issue_entry: entry,
            close_entry: None,
        };
        let reason = format!(
            "credit balance from invoice {}",
            self.invoice.display(PREFIX)
        );
        // Like the credits step, it comes after the invoice entry and cannot refuse the
        // invoice: should the ledger refuse it, the receivable keeps the credit and it is logged.
        Ok(
            match grant::issue(self.tx, self.tenant, grant, reason, self.origin.to_string())? {
                Ok(_) => Some(entry),
                Err(e) => {
                    tracing::warn!(
                        invoice = %self.invoice.display(PREFIX),
                        error = %e,
                        "credit balance not granted: the ledger refused its entry"
                    );
                    None
                }
            },
        )
    }

    /// Step "credits applied": the customer's grants pay what they can, in burn order. It
    /// comes after the invoice entry, so it cannot refuse the invoice: should the ledger refuse
    /// the credits' entry, the invoice is issued without credits (the whole amount stays due
    /// and the grants keep their remainder) and the refusal is logged.
    fn apply_credits(&self, subtotal: i64) -> Result<Credits, StoreError> {
        if subtotal <= 0 {
            return Ok((Vec::new(), None));
        }
        let entry_id = Id::generate_at(self.now_ms);
        let consumed = grant::consume(
            self.tx,
            self.tenant,
            self.customer,
            self.currency,
            subtotal,
            self.now_ms,
            entry_id,
            Links {
                invoice: Some(self.invoice),
                ..Links::default()
            },
            self.origin.to_string(),
        )?;
        Ok(match consumed {
            Ok(c) => (c.draws, c.entry.map(|_| entry_id)),
            Err(e) => {
                tracing::warn!(
                    invoice = %self.invoice.display(PREFIX),
                    error = %e,
                    "credits not applied: the ledger refused their entry"
                );
                (Vec::new(), None)
            }
        })
    }
}

/// Step "billed quantities move with the invoice": what each usage or adjustment line billed.
fn record_billed_quantities(
    tx: &WriteTxn,
    tenant: TenantId,
    sub: Id,
    lines: &[Line],
) -> Result<(), StoreError> {
    let mut billed = tx.open_table(tables::BILLED_USAGE)?;
    for line in lines {
        let quantity = match line.kind {
            LineKind::Usage => Some(line.quantity),
            LineKind::Adjustment => line.quantity_after,
            _ => None,
        };
        let (Some(meter), Some(quantity)) = (line.meter, quantity) else {
            continue;
        };
        put_record(
            &mut billed,
            &billed_key(tenant, sub, meter, line.period_start_ms),
            &Billed {
                period_end_ms: line.period_end_ms,
                quantity,
            },
        )?;
    }
    Ok(())
}

/// Step "stored": the invoice, its charge key and its customer index.
pub(super) fn store_invoice(
    tx: &WriteTxn,
    tenant: TenantId,
    invoice: &Invoice,
) -> Result<(), StoreError> {
    put_record(
        &mut tx.open_table(tables::INVOICES)?,
        &keys::tenant_id(tenant, invoice.id),
        invoice,
    )?;
    tx.open_table(tables::INVOICE_BY_PERIOD)?.insert(
        index_key(tenant, invoice).as_slice(),
        invoice.id.to_bytes().as_slice(),
    )?;
    let mut by_customer = keys::tenant_id(tenant, invoice.customer).to_vec();
    by_customer.extend_from_slice(&invoice.id.to_bytes());
    tx.open_table(tables::INVOICES_BY_CUSTOMER)?
        .insert(by_customer.as_slice(), ())?;
    Ok(())
}

/// Step "invoiced through": usage before this instant is invoiced, so later events for it
/// are `late`. Never moves back.
fn advance_invoiced_through(
    tx: &WriteTxn,
    tenant: TenantId,
    customer: Id,
    end_ms: i64,
) -> Result<(), StoreError> {
    let mut through = tx.open_table(tables::INVOICED_THROUGH)?;
    let key = keys::tenant_id(tenant, customer);
    let current = through
        .get(key.as_slice())?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map(i64::from_be_bytes)
        .unwrap_or(i64::MIN);
    if end_ms > current {
        through.insert(key.as_slice(), end_ms.to_be_bytes().as_slice())?;
    }
    Ok(())
}

/// Voids a finalized invoice: reverses its entries (credits return to grants that are still
/// active; otherwise to where an expiry or void would have sent them), restores the billed
/// quantities it moved, and frees its period for one re-issue.
pub fn void(
    tx: &WriteTxn,
    tenant: TenantId,
    id: Id,
    now_ms: i64,
    origin: &str,
) -> Result<Result<Invoice, InvoiceError>, StoreError> {
    let invoice = {
        let invoices = tx.open_table(tables::INVOICES)?;
        get_record::<Invoice, _>(&invoices, keys::tenant_id(tenant, id))?
    };
    let Some(mut invoice) = invoice else {
        return Ok(Err(InvoiceError::Missing(id.display(PREFIX))));
    };
    if invoice.status != InvoiceStatus::Finalized {
        return Ok(Err(InvoiceError::WrongState {
            id: id.display(PREFIX),
            status: invoice.status.as_str(),
            action: "voided",
        }));
    }
    if invoice.credited_minor != 0 {
        return Ok(Err(InvoiceError::Credited(id.display(PREFIX))));
    }
    if let Some(later) = super::progressive::deducted_later(tx, tenant, &invoice)? {
        return Ok(Err(InvoiceError::InterimDeducted {
            id: id.display(PREFIX),
            later: later.display(PREFIX),
        }));
    }
    if let Some(period_start_ms) = adjusted_later(tx, tenant, &invoice)? {
        return Ok(Err(InvoiceError::AdjustedLater {
            id: id.display(PREFIX),
            period_start: crate::clock::rfc3339(period_start_ms),
        }));
    }
    let receivable = AccountRef::Receivable {
        customer: invoice.customer,
    };
    let mut postings = Vec::new();
    let net = invoice
        .total_minor
        .checked_sub(invoice.tax_minor)
        .ok_or_else(|| StoreError::Corrupt("invoice totals out of range".into()))?;
    for (account, amount_minor) in [
        (AccountRef::System(invoice.kind.income_account()), net),
        (
            AccountRef::System(SystemAccount::TaxPayable),
            invoice.tax_minor,
        ),
        (receivable, -invoice.total_minor),
    ] {
        postings.push(Posting {
            account,
            currency: invoice.currency.clone(),
            amount_minor,
        });
    }
    if invoice.credits_applied_minor > 0 {
        let grants = tx.open_table(tables::GRANTS)?;
        postings.push(Posting {
            account: receivable,
            currency: invoice.currency.clone(),
            amount_minor: invoice.credits_applied_minor,
        });
        for (grant_id, amount) in &invoice.credits {
            let g = get_record::<Grant, _>(&grants, keys::tenant_id(tenant, *grant_id))?
                .ok_or_else(|| {
                    StoreError::Corrupt("invoice credits name a missing grant".into())
                })?;
            let account = match g.status {
                GrantStatus::Active => g.account(),
                GrantStatus::Expired => AccountRef::System(SystemAccount::Breakage),
                GrantStatus::Voided => g.funding.account(invoice.customer),
            };
            postings.push(Posting {
                account,
                currency: invoice.currency.clone(),
                amount_minor: -amount,
            });
        }
    }
    // Merge legs on the same account so the entry stays readable.
    let mut merged: Vec<Posting> = Vec::new();
    for p in postings {
        match merged
            .iter_mut()
            .find(|m| m.account == p.account && m.currency == p.currency)
        {
            Some(m) => m.amount_minor += p.amount_minor,
            None => merged.push(p),
        }
    }
    merged.retain(|p| p.amount_minor != 0);
    if !merged.is_empty() {
        let entry_id = Id::generate_at(now_ms);
        let draft = Draft {
            id: entry_id,
            kind: "invoice_void".into(),
            reason: format!("invoice {} voided", id.display(PREFIX)),
            links: Links {
                customer: Some(invoice.customer),
                invoice: Some(id),
                ..Links::default()
            },
            origin: origin.to_string(),
            postings: merged,
        };
        if let Err(e) = journal::post(tx, tenant, now_ms, draft)? {
            return Ok(Err(InvoiceError::Ledger(e.to_string())));
        }
        invoice.entries.push(entry_id);
    }
    // An interim invoice moved no billed quantity and is not re-issued: the period's next
    // invoice (interim or closing) bills what it billed.
    let interim = invoice.kind == InvoiceKind::Interim;
    if !interim {
        let mut billed = tx.open_table(tables::BILLED_USAGE)?;
        for line in invoice.lines.iter().rev() {
            let Some(meter) = line.meter else { continue };
            let key = billed_key(tenant, invoice.subscription, meter, line.period_start_ms);
            match (line.kind, line.quantity_before) {
                (LineKind::Usage, _) => {
                    billed.remove(key.as_slice())?;
                }
                (LineKind::Adjustment, Some(before)) => {
                    put_record(
                        &mut billed,
                        &key,
                        &Billed {
                            period_end_ms: line.period_end_ms,
                            quantity: before,
                        },
                    )?;
                }
                _ => {}
            }
        }
    }
    invoice.status = InvoiceStatus::Void;
    invoice.voided_at_ms = Some(now_ms);
    emit_invoice(tx, tenant, &invoice, "invoice.voided", "voided", now_ms)?;
    put_record(
        &mut tx.open_table(tables::INVOICES)?,
        &keys::tenant_id(tenant, id),
        &invoice,
    )?;
    if !interim && invoice.kind != InvoiceKind::TopUp {
        let mut queue = keys::tenant_id(tenant, invoice.subscription).to_vec();
        queue.extend_from_slice(&id.to_bytes());
        tx.open_table(tables::REISSUE_QUEUE)?
            .insert(queue.as_slice(), ())?;
    }
    Ok(Ok(invoice))
}

/// The start of the first period whose billed quantity a later invoice has moved past what
/// `invoice` left it at, if any: voiding `invoice` would then restore a stale quantity.
fn adjusted_later(
    tx: &WriteTxn,
    tenant: TenantId,
    invoice: &Invoice,
) -> Result<Option<i64>, StoreError> {
    if invoice.kind == InvoiceKind::Interim {
        return Ok(None);
    }
    // What the period billed in full: this invoice plus the interim invoices it deducted.
    let cumulative = super::progressive::cumulative_in_write(tx, tenant, invoice)?;
    let billed = tx.open_table(tables::BILLED_USAGE)?;
    for line in &cumulative.lines {
        let left = match line.kind {
            LineKind::Usage => Some(line.quantity),
            LineKind::Adjustment => line.quantity_after,
            _ => None,
        };
        let (Some(meter), Some(left)) = (line.meter, left) else {
            continue;
        };
        let key = billed_key(tenant, invoice.subscription, meter, line.period_start_ms);
        let now = get_record::<Billed, _>(&billed, key.as_slice())?;
        if now.is_none_or(|b| b.quantity != left) {
            return Ok(Some(line.period_start_ms));
        }
    }
    Ok(None)
}

/// One invoice.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Invoice>, StoreError> {
    let table = tx.open_table(tables::INVOICES)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// A page of invoices, optionally of one customer.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    customer: Option<Id>,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Invoice>, bool), StoreError> {
    let table = tx.open_table(tables::INVOICES)?;
    let mut out = Vec::new();
    match customer {
        Some(customer) => {
            let index = tx.open_table(tables::INVOICES_BY_CUSTOMER)?;
            let prefix = keys::tenant_id(tenant, customer).to_vec();
            let mut lo = prefix.clone();
            lo.extend_from_slice(
                &after
                    .map(|a| a.0.saturating_add(1))
                    .unwrap_or(0)
                    .to_be_bytes(),
            );
            let mut hi = prefix;
            hi.extend_from_slice(&u128::MAX.to_be_bytes());
            for entry in index.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
                let (key, _) = entry?;
                if out.len() == limit {
                    return Ok((out, true));
                }
                let id = key
                    .value()
                    .get(24..40)
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                    .map(Id::from_bytes)
                    .ok_or_else(|| StoreError::Corrupt("malformed invoice index key".into()))?;
                if let Some(inv) = get_record(&table, keys::tenant_id(tenant, id))? {
                    out.push(inv);
                }
            }
        }
        None => {
            let (start, end) = keys::tenant_range(tenant);
            let lower = match after {
                Some(id) => {
                    let mut k = keys::tenant_id(tenant, id).to_vec();
                    k.push(0);
                    k
                }
                None => start,
            };
            for entry in table.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
                let (_, value) = entry?;
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(codec::decode(value.value())?);
            }
        }
    }
    Ok((out, false))
}
