//! Discounts: a coupon redeemed on a subscription or a customer, and the pure rule that turns
//! the discounts in effect into an invoice's discount lines.
//!
//! Which periods a discount covers is decided from the period alone, never from a counter: a
//! discount starts with the period its redemption falls in (the first period when redeemed
//! before the start) and covers that period and the following ones its coupon's duration
//! allows. An invoice counts the discounts redeemed by the instant it is computed and not
//! removed before it, so recomputing an invoice (verification, a preview) gives the same lines.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::coupon::{self, AppliesTo, Coupon, Duration, Off};
use super::invoice::{Line, LineKind};
use super::plan::{self, Plan};
use super::pricing::{self, OutOfRange};
use super::subscription::{self, Period, Subscription, SubscriptionStatus};
use crate::decimal::Stored;
use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "dsc";

/// A redeemed coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discount {
    /// `dsc_…`.
    pub id: Id,
    /// The coupon as it was when redeemed.
    pub coupon: Coupon,
    /// The subscription it discounts (`None`: every subscription of the customer).
    pub subscription: Option<Id>,
    /// The customer.
    pub customer: Id,
    /// When it was redeemed.
    pub redeemed_at_ms: i64,
    /// The subscription period it starts with (subscription discounts).
    pub starts_with: Option<PeriodRef>,
    /// When it was removed: invoices computed from then on leave it out.
    pub removed_at_ms: Option<i64>,
}

/// A period by its position and start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodRef {
    /// Position in the subscription's schedule, from 0.
    pub index: u64,
    /// Start.
    pub start_ms: i64,
}

/// Why a discount was not created or removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscountError {
    /// No coupon has this id or code.
    #[error("no coupon {0:?}")]
    UnknownCoupon(String),
    /// No such subscription.
    #[error("no subscription {0}")]
    UnknownSubscription(String),
    /// No such customer.
    #[error("no customer {0}")]
    UnknownCustomer(String),
    /// No such discount.
    #[error("no discount {0}")]
    Missing(String),
    /// The coupon's `redeem_by` has passed.
    #[error("coupon {code:?} could be redeemed until {redeem_by}")]
    Expired {
        /// The coupon's code.
        code: String,
        /// Its `redeem_by` (RFC 3339).
        redeem_by: String,
    },
    /// Every allowed redemption is taken.
    #[error("coupon {code:?} has been redeemed its maximum of {max} times")]
    Exhausted {
        /// The coupon's code.
        code: String,
        /// Its `max_redemptions`.
        max: u64,
    },
    /// An amount-off coupon in another currency than the customer's.
    #[error("coupon {code:?} takes off {coupon} but the customer is billed in {customer}")]
    CurrencyMismatch {
        /// The coupon's code.
        code: String,
        /// The coupon's currency.
        coupon: String,
        /// The customer's.
        customer: String,
    },
    /// The coupon is limited to plans the subscription is not on.
    #[error("coupon {code:?} does not apply to plan {plan:?}")]
    NotApplicable {
        /// The coupon's code.
        code: String,
        /// The subscription's plan code.
        plan: String,
    },
    /// The same coupon is already active on the target, its customer or one of its
    /// subscriptions (it would discount the same invoices twice).
    #[error("coupon {code:?} is already active here as {existing}")]
    AlreadyActive {
        /// The coupon's code.
        code: String,
        /// The active discount.
        existing: String,
    },
    /// The subscription has ended.
    #[error("subscription {0} is canceled")]
    Canceled(String),
}

/// What a discount is redeemed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One subscription.
    Subscription(Id),
    /// Every subscription of a customer.
    Customer(Id),
}

impl Target {
    fn id(self) -> Id {
        match self {
            Target::Subscription(id) | Target::Customer(id) => id,
        }
    }
}

fn target_key(tenant: TenantId, target: Id, discount: Id) -> Vec<u8> {
    let mut key = keys::tenant_id(tenant, target).to_vec();
    key.extend_from_slice(&discount.to_bytes());
    key
}

/// The discounts of one target (subscription or customer), in redemption order.
fn of_target(
    discounts: &impl ReadableTable<&'static [u8], &'static [u8]>,
    by_target: &impl ReadableTable<&'static [u8], ()>,
    tenant: TenantId,
    target: Id,
) -> Result<Vec<Discount>, StoreError> {
    let lo = target_key(tenant, target, Id::from_bytes([0; 16]));
    let hi = target_key(tenant, target, Id::from_bytes([0xFF; 16]));
    let mut out = Vec::new();
    for entry in by_target.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (key, _) = entry?;
        let id = key
            .value()
            .get(24..40)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Id::from_bytes)
            .ok_or_else(|| StoreError::Corrupt("malformed discount index key".into()))?;
        let discount = get_record::<Discount, _>(discounts, keys::tenant_id(tenant, id))?
            .ok_or_else(|| StoreError::Corrupt("discount index names a missing discount".into()))?;
        out.push(discount);
    }
    Ok(out)
}

/// The period a discount redeemed at `at_ms` starts with: the one running then, or the first
/// when redeemed before the start; `None` when the subscription has ended by then.
pub fn first_period(sub: &Subscription, plan: &Plan, at_ms: i64) -> Option<Period> {
    if at_ms < sub.start_at_ms {
        return sub.period(plan, 0);
    }
    sub.period_at(plan, at_ms)
}

/// Redeems a coupon on a subscription or a customer: checks the coupon and the target, counts
/// the redemption and stores the discount, or writes nothing.
#[derive(Clone)]
pub struct ApplyDiscount {
    /// Owner.
    pub tenant: TenantId,
    /// The new discount's id.
    pub id: Id,
    /// The coupon, by id or code.
    pub coupon: String,
    /// What it is redeemed on.
    pub target: Target,
    /// Now.
    pub now_ms: i64,
}

/// What a redemption found about its target.
struct Resolved {
    customer: crate::customers::Customer,
    sub_and_plan: Option<(Subscription, Plan)>,
}

impl ApplyDiscount {
    fn resolve(&self, tx: &WriteTxn) -> Result<Result<Resolved, DiscountError>, StoreError> {
        let (customer_id, sub_and_plan) = match self.target {
            Target::Customer(id) => (id, None),
            Target::Subscription(id) => {
                let Some(sub) = subscription::load(tx, self.tenant, id)? else {
                    return Ok(Err(DiscountError::UnknownSubscription(
                        id.display(subscription::PREFIX),
                    )));
                };
                if sub.status == SubscriptionStatus::Canceled {
                    return Ok(Err(DiscountError::Canceled(
                        id.display(subscription::PREFIX),
                    )));
                }
                let plans = tx.open_table(tables::PLANS)?;
                let in_effect = sub.plan_at(self.now_ms);
                let plan = plan::load(&plans, self.tenant, in_effect)?.ok_or_else(|| {
                    StoreError::Corrupt("a subscription names a missing plan".into())
                })?;
                (sub.customer, Some((sub, plan)))
            }
        };
        let Some(customer) = crate::customers::load_in_write(tx, self.tenant, customer_id)? else {
            return Ok(Err(DiscountError::UnknownCustomer(
                customer_id.display(crate::customers::PREFIX),
            )));
        };
        Ok(Ok(Resolved {
            customer,
            sub_and_plan,
        }))
    }

    /// The targets whose discounts reach the same invoices: a subscription and its customer,
    /// or a customer and its subscriptions.
    fn overlapping(&self, tx: &WriteTxn, target: &Resolved) -> Result<Vec<Id>, StoreError> {
        let mut out = vec![self.target.id()];
        match self.target {
            Target::Subscription(_) => out.push(target.customer.id),
            Target::Customer(customer) => {
                let index = tx.open_table(tables::SUBSCRIPTIONS_BY_CUSTOMER)?;
                let lo = target_key(self.tenant, customer, Id::from_bytes([0; 16]));
                let hi = target_key(self.tenant, customer, Id::from_bytes([0xFF; 16]));
                for entry in index.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
                    let (key, _) = entry?;
                    let sub = key
                        .value()
                        .get(24..40)
                        .and_then(|b| <[u8; 16]>::try_from(b).ok())
                        .map(Id::from_bytes)
                        .ok_or_else(|| {
                            StoreError::Corrupt("malformed subscription index key".into())
                        })?;
                    out.push(sub);
                }
            }
        }
        Ok(out)
    }

    /// Every reason to refuse the redemption, before any write.
    fn check(
        &self,
        tx: &WriteTxn,
        coupon: &Coupon,
        target: &Resolved,
    ) -> Result<Result<(), DiscountError>, StoreError> {
        let code = coupon.code.clone();
        if let Some(by) = coupon.redeem_by_ms.filter(|by| self.now_ms > *by) {
            return Ok(Err(DiscountError::Expired {
                code,
                redeem_by: crate::clock::rfc3339(by),
            }));
        }
        if let Some(max) = coupon
            .max_redemptions
            .filter(|m| coupon.times_redeemed >= *m)
        {
            return Ok(Err(DiscountError::Exhausted { code, max }));
        }
        if let Off::Amount { currency, .. } = &coupon.off {
            if *currency != target.customer.currency {
                return Ok(Err(DiscountError::CurrencyMismatch {
                    code,
                    coupon: currency.clone(),
                    customer: target.customer.currency.clone(),
                }));
            }
        }
        if let Some((_, plan)) = &target.sub_and_plan {
            let plans = &coupon.applies_to.plans;
            if !plans.is_empty() && !plans.contains(&plan.code) {
                return Ok(Err(DiscountError::NotApplicable {
                    code,
                    plan: plan.code.clone(),
                }));
            }
        }
        let discounts = tx.open_table(tables::DISCOUNTS)?;
        let by_target = tx.open_table(tables::DISCOUNTS_BY_TARGET)?;
        let mut active = None;
        for target in self.overlapping(tx, target)? {
            active = active.or(of_target(&discounts, &by_target, self.tenant, target)?
                .into_iter()
                .find(|d| d.coupon.id == coupon.id && d.removed_at_ms.is_none()));
        }
        if let Some(existing) = active {
            return Ok(Err(DiscountError::AlreadyActive {
                code,
                existing: existing.id.display(PREFIX),
            }));
        }
        Ok(Ok(()))
    }
}

impl Command for ApplyDiscount {
    type Output = Result<Discount, DiscountError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(mut coupon) = coupon::load_by_ref(tx, self.tenant, &self.coupon)? else {
            return Ok(Err(DiscountError::UnknownCoupon(self.coupon)));
        };
        let target = match self.resolve(tx)? {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = self.check(tx, &coupon, &target)? {
            return Ok(Err(e));
        }
        coupon.times_redeemed = coupon.times_redeemed.saturating_add(1);
        coupon::save(tx, self.tenant, &coupon)?;
        let starts_with = target
            .sub_and_plan
            .as_ref()
            .and_then(|(sub, plan)| first_period(sub, plan, self.now_ms))
            .map(|p| PeriodRef {
                index: p.index,
                start_ms: p.start_ms,
            });
        let discount = Discount {
            id: self.id,
            coupon,
            subscription: target.sub_and_plan.as_ref().map(|(s, _)| s.id),
            customer: target.customer.id,
            redeemed_at_ms: self.now_ms,
            starts_with,
            removed_at_ms: None,
        };
        put_record(
            &mut tx.open_table(tables::DISCOUNTS)?,
            &keys::tenant_id(self.tenant, discount.id),
            &discount,
        )?;
        tx.open_table(tables::DISCOUNTS_BY_TARGET)?.insert(
            target_key(self.tenant, self.target.id(), discount.id).as_slice(),
            (),
        )?;
        Ok(Ok(discount))
    }
}

/// Ends a discount for invoices computed from now on; removing it again changes nothing.
#[derive(Clone)]
pub struct RemoveDiscount {
    /// Owner.
    pub tenant: TenantId,
    /// The discount.
    pub id: Id,
    /// Now.
    pub now_ms: i64,
}

impl Command for RemoveDiscount {
    type Output = Result<Discount, DiscountError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let mut table = tx.open_table(tables::DISCOUNTS)?;
        let key = keys::tenant_id(self.tenant, self.id);
        let Some(mut discount) = get_record::<Discount, _>(&table, key)? else {
            return Ok(Err(DiscountError::Missing(self.id.display(PREFIX))));
        };
        if discount.removed_at_ms.is_none() {
            discount.removed_at_ms = Some(self.now_ms);
            put_record(&mut table, &key, &discount)?;
        }
        Ok(Ok(discount))
    }
}

/// One discount.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Discount>, StoreError> {
    let table = tx.open_table(tables::DISCOUNTS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// The discounts redeemed on a subscription or customer, in redemption order.
pub fn list(tx: &ReadTxn, tenant: TenantId, target: Id) -> Result<Vec<Discount>, StoreError> {
    let discounts = tx.open_table(tables::DISCOUNTS)?;
    let by_target = tx.open_table(tables::DISCOUNTS_BY_TARGET)?;
    of_target(&discounts, &by_target, tenant, target)
}

/// A discount as an invoice computation sees it: its coupon's terms and the period it starts
/// with on this subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// The coupon's code (named in the line's description).
    pub code: String,
    /// What it takes off.
    pub off: Off,
    /// For how many periods.
    pub duration: Duration,
    /// What it is limited to.
    pub applies_to: AppliesTo,
    /// The index of the period it starts with.
    pub first_period: u64,
}

/// The discounts in effect for an invoice of `sub` computed at `as_of_ms`: redeemed on the
/// subscription or its customer by then and not removed before, in redemption order.
pub fn in_effect(
    discounts: &impl ReadableTable<&'static [u8], &'static [u8]>,
    by_target: &impl ReadableTable<&'static [u8], ()>,
    tenant: TenantId,
    sub: &Subscription,
    plan: &Plan,
    as_of_ms: i64,
) -> Result<Vec<Active>, StoreError> {
    let mut all = of_target(discounts, by_target, tenant, sub.id)?;
    all.extend(of_target(discounts, by_target, tenant, sub.customer)?);
    all.retain(|d| {
        // Strictly before: a redemption in the same millisecond as an issue does not count,
        // whichever committed first, so the issue and its verification always agree.
        d.redeemed_at_ms < as_of_ms && d.removed_at_ms.is_none_or(|removed| as_of_ms < removed)
    });
    all.sort_by_key(|d| (d.redeemed_at_ms, d.id));
    Ok(all
        .into_iter()
        // An amount off in another currency never applies (the customer's currency changed).
        .filter(|d| match &d.coupon.off {
            Off::Amount { currency, .. } => *currency == plan.currency,
            Off::Percent(_) => true,
        })
        .filter_map(|d| {
            let mut first = first_period(sub, plan, d.redeemed_at_ms)?;
            // A trial bills nothing, so it uses up no discount: coverage starts with the first
            // paid period.
            if sub.in_trial(first.end_ms) {
                first = sub.period_at(plan, sub.trial_end_ms?)?;
            }
            Some(Active {
                code: d.coupon.code,
                off: d.coupon.off,
                duration: d.coupon.duration,
                applies_to: d.coupon.applies_to,
                first_period: first.index,
            })
        })
        .collect())
}

/// Whether a discount may take from `line`.
fn eligible(line: &Line, applies_to: &AppliesTo) -> bool {
    if applies_to.meters.is_empty() {
        matches!(line.kind, LineKind::Usage | LineKind::FixedFee)
    } else {
        line.kind == LineKind::Usage && line.meter.is_some_and(|m| applies_to.meters.contains(&m))
    }
}

/// The discount lines of an invoice of `plan_code` for `period`, given its computed lines and
/// the discounts in effect (in redemption order). Pure: the same inputs give the same lines.
///
/// Each discount covering the period takes from its eligible lines (usage and fixed-fee lines,
/// or only the usage lines of its meters) what the discounts before it left: a percentage of
/// their exact amounts rounded once, or its fixed amount, capped so neither the eligible lines
/// nor the invoice go below zero.
pub fn lines(
    computed: &[Line],
    plan_code: &str,
    period: &Period,
    discounts: &[Active],
    exponent: u8,
) -> Result<Vec<Line>, OutOfRange> {
    let mut left: Vec<Decimal> = computed.iter().map(|l| l.amount_exact.0).collect();
    let mut invoice_minor = computed
        .iter()
        .try_fold(0i64, |acc, l| acc.checked_add(l.amount_minor))
        .ok_or(OutOfRange)?;
    let mut out = Vec::new();
    for d in discounts {
        // A line counts in the period it pays for: the next period's fee billed in advance on
        // this invoice is the next period's (so `once` takes one fee, not two).
        let covers = |index: u64| {
            index
                .checked_sub(d.first_period)
                .is_some_and(|offset| d.duration.covers(offset))
        };
        let (this, next) = (covers(period.index), covers(period.index.saturating_add(1)));
        let plans = &d.applies_to.plans;
        if !(this || next) || (!plans.is_empty() && !plans.iter().any(|p| p == plan_code)) {
            continue;
        }
        let take: Vec<usize> = (0..computed.len())
            .filter(|&i| eligible(&computed[i], &d.applies_to))
            .filter(|&i| {
                if computed[i].period_start_ms >= period.end_ms {
                    next
                } else {
                    this
                }
            })
            .collect();
        let base = take.iter().try_fold(Decimal::ZERO, |acc, &i| {
            acc.checked_add(left[i].max(Decimal::ZERO))
                .ok_or(OutOfRange)
        })?;
        let wanted = match &d.off {
            Off::Percent(p) => base
                .checked_mul(p.0)
                .and_then(|v| v.checked_div(Decimal::ONE_HUNDRED))
                .ok_or(OutOfRange)?,
            Off::Amount { amount_minor, .. } => pricing::from_minor(*amount_minor, exponent),
        };
        let mut exact = wanted.min(base);
        let mut minor = pricing::to_minor(exact, exponent)?;
        if minor > invoice_minor.max(0) {
            minor = invoice_minor.max(0);
            exact = pricing::from_minor(minor, exponent);
        }
        if minor <= 0 {
            continue;
        }
        // What later discounts see left is what this one took once rounded, so rounding each
        // discount never adds up to more than the lines.
        let mut rest = pricing::from_minor(minor, exponent);
        for &i in &take {
            let part = rest.min(left[i].max(Decimal::ZERO));
            left[i] -= part;
            rest -= part;
        }
        invoice_minor -= minor;
        out.push(discount_line(d, period, exact, minor, exponent));
    }
    Ok(out)
}

fn discount_line(d: &Active, period: &Period, exact: Decimal, minor: i64, exponent: u8) -> Line {
    let terms = match &d.off {
        Off::Percent(p) => format!("{}% off", crate::decimal::to_text(p.0)),
        Off::Amount {
            amount_minor,
            currency,
        } => format!(
            "{} {currency} off",
            pricing::from_minor(*amount_minor, exponent)
        ),
    };
    Line {
        kind: LineKind::Discount,
        description: format!("Coupon {} ({terms})", d.code),
        meter: None,
        period_start_ms: period.start_ms,
        period_end_ms: period.end_ms,
        quantity: Stored(Decimal::ONE),
        quantity_before: None,
        quantity_after: None,
        proration: None,
        unit_price: None,
        tiers: Vec::new(),
        amount_exact: Stored(-exact),
        amount_minor: -minor,
        events: 0,
        events_digest: [0; 32],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    fn line(kind: LineKind, meter: Option<Id>, exact: &str) -> Line {
        let exact = crate::decimal::parse(exact).expect("decimal");
        Line {
            kind,
            description: kind.as_str().into(),
            meter,
            period_start_ms: 0,
            period_end_ms: DAY_MS,
            quantity: Stored(Decimal::ONE),
            quantity_before: None,
            quantity_after: None,
            proration: None,
            unit_price: None,
            tiers: Vec::new(),
            amount_exact: Stored(exact),
            amount_minor: pricing::to_minor(exact, 2).expect("minor"),
            events: 0,
            events_digest: [0; 32],
        }
    }

    fn period(index: u64) -> Period {
        let start_ms = index as i64 * DAY_MS;
        Period {
            index,
            start_ms,
            end_ms: start_ms + DAY_MS,
            full_start_ms: start_ms,
            full_end_ms: start_ms + DAY_MS,
        }
    }

    fn percent(code: &str, pct: &str, duration: Duration, first_period: u64) -> Active {
        Active {
            code: code.into(),
            off: Off::Percent(Stored(crate::decimal::parse(pct).expect("pct"))),
            duration,
            applies_to: AppliesTo::default(),
            first_period,
        }
    }

    fn amount(code: &str, minor: i64) -> Active {
        Active {
            code: code.into(),
            off: Off::Amount {
                amount_minor: minor,
                currency: "USD".into(),
            },
            duration: Duration::Forever,
            applies_to: AppliesTo::default(),
            first_period: 0,
        }
    }

    fn amounts(out: &[Line]) -> Vec<i64> {
        out.iter().map(|l| l.amount_minor).collect()
    }

    #[test]
    fn once_repeating_and_forever_cover_their_periods_from_the_first() {
        let fee = [line(LineKind::FixedFee, None, "10.00")];
        let expect = [
            (Duration::Once, [true, false, false, false]),
            (Duration::Repeating(3), [true, true, true, false]),
            (Duration::Forever, [true, true, true, true]),
        ];
        for (duration, covered) in expect {
            for (index, want) in covered.iter().enumerate() {
                let d = percent("C", "10", duration, 0);
                let out = lines(&fee, "p", &period(index as u64), &[d], 2).expect("lines");
                let want: Vec<i64> = if *want { vec![-100] } else { vec![] };
                assert_eq!(amounts(&out), want, "{duration:?} period {index}");
            }
        }
        // Redeemed during period 1: period 0 is not discounted, 1..=3 are (repeating 3).
        let late = percent("C", "10", Duration::Repeating(3), 1);
        let covered: Vec<usize> = (0..5)
            .map(|i| {
                lines(&fee, "p", &period(i), std::slice::from_ref(&late), 2)
                    .expect("lines")
                    .len()
            })
            .collect();
        assert_eq!(covered, [0, 1, 1, 1, 0]);
    }

    #[test]
    fn a_percentage_is_taken_of_exact_amounts_and_rounded_once() {
        // Two lines of 0.026 (3 minor units each once rounded). 25% of the exact 0.052 is
        // 0.013, so 1 minor unit; 25% of the rounded lines (6) would be 2, and so would two
        // discounts rounded per line (0.0065 → 1 each).
        let computed = [
            line(LineKind::Usage, Some(Id::generate()), "0.026"),
            line(LineKind::Usage, Some(Id::generate()), "0.026"),
        ];
        let out = lines(
            &computed,
            "p",
            &period(0),
            &[percent("Q", "25", Duration::Once, 0)],
            2,
        )
        .expect("lines");
        assert_eq!(amounts(&out), [-1]);
        assert_eq!(out[0].amount_exact.0, Decimal::new(-13, 3));
        assert_eq!(out[0].kind, LineKind::Discount);
        assert_eq!(out[0].description, "Coupon Q (25% off)");
        // Half a minor unit rounds away from zero: 50% of 0.01 is 0.005 → 1.
        let half = [line(LineKind::FixedFee, None, "0.01")];
        let out = lines(
            &half,
            "p",
            &period(0),
            &[percent("H", "50", Duration::Once, 0)],
            2,
        )
        .expect("lines");
        assert_eq!(amounts(&out), [-1]);
    }

    #[test]
    fn a_discount_never_takes_the_invoice_below_zero() {
        let fee = [line(LineKind::FixedFee, None, "10.00")];
        let out = lines(
            &fee,
            "p",
            &period(0),
            &[amount("BIG", 5000), amount("MORE", 100)],
            2,
        )
        .expect("lines");
        assert_eq!(
            amounts(&out),
            [-1000],
            "capped at the eligible total; nothing left after"
        );
        // A negative adjustment lowers the invoice: the cap is the invoice's total.
        let with_credit = [
            line(LineKind::FixedFee, None, "10.00"),
            line(LineKind::Adjustment, Some(Id::generate()), "-3.00"),
        ];
        let out = lines(&with_credit, "p", &period(0), &[amount("BIG", 5000)], 2).expect("lines");
        assert_eq!(amounts(&out), [-700]);
        let subtotal: i64 = with_credit.iter().chain(&out).map(|l| l.amount_minor).sum();
        assert_eq!(subtotal, 0);
    }

    #[test]
    fn several_discounts_apply_in_order_each_on_what_remains() {
        let fee = [line(LineKind::FixedFee, None, "100.00")];
        let out = lines(
            &fee,
            "p",
            &period(0),
            &[
                percent("A", "10", Duration::Forever, 0),
                percent("B", "10", Duration::Forever, 0),
                amount("C", 1000),
            ],
            2,
        )
        .expect("lines");
        assert_eq!(amounts(&out), [-1000, -900, -1000]);
        // Each takes what the one before left once rounded: 75% of 960.38 rounds up to
        // 720.29, so 100% of the rest is 240.09, not the 240.10 left before rounding.
        let lines_ = [
            line(LineKind::Usage, Some(Id::generate()), "840.05"),
            line(LineKind::Usage, Some(Id::generate()), "120.33"),
            // Late usage keeps the invoice's own cap from hiding the difference.
            line(LineKind::Adjustment, Some(Id::generate()), "0.01"),
        ];
        let out = lines(
            &lines_,
            "p",
            &period(0),
            &[
                percent("A", "75", Duration::Forever, 0),
                percent("B", "100", Duration::Forever, 0),
            ],
            2,
        )
        .expect("lines");
        assert_eq!(amounts(&out), [-72029, -24009]);
    }

    #[test]
    fn applies_to_restricts_the_lines_and_plans() {
        let calls = Id::generate();
        let computed = [
            line(LineKind::Usage, Some(calls), "4.00"),
            line(LineKind::Usage, Some(Id::generate()), "6.00"),
            line(LineKind::FixedFee, None, "10.00"),
            line(LineKind::Adjustment, Some(calls), "2.00"),
        ];
        let mut on_calls = percent("M", "50", Duration::Forever, 0);
        on_calls.applies_to.meters = vec![calls];
        let out = lines(&computed, "p", &period(0), &[on_calls], 2).expect("lines");
        assert_eq!(amounts(&out), [-200], "only the calls usage line");
        let everything = percent("E", "50", Duration::Forever, 0);
        let out = lines(&computed, "p", &period(0), &[everything], 2).expect("lines");
        assert_eq!(
            amounts(&out),
            [-1000],
            "usage and fee lines, never adjustments"
        );
        let mut other_plan = percent("O", "50", Duration::Forever, 0);
        other_plan.applies_to.plans = vec!["other".into()];
        assert!(lines(&computed, "p", &period(0), &[other_plan], 2)
            .expect("lines")
            .is_empty());
    }

    proptest::proptest! {
        #[test]
        fn discounts_never_make_an_invoice_negative(
            cents in proptest::collection::vec(0i64..100_000, 1..5),
            adjustment in -50_000i64..50_000,
            offs in proptest::collection::vec((1u32..=100, 1i64..200_000, proptest::bool::ANY), 1..4),
        ) {
            let mut computed: Vec<Line> = cents
                .iter()
                .map(|c| line(LineKind::Usage, Some(Id::generate()), &pricing::from_minor(*c, 2).to_string()))
                .collect();
            computed.push(line(LineKind::Adjustment, Some(Id::generate()), &pricing::from_minor(adjustment, 2).to_string()));
            let discounts: Vec<Active> = offs
                .iter()
                .map(|(pct, minor, is_pct)| if *is_pct {
                    percent("P", &pct.to_string(), Duration::Forever, 0)
                } else {
                    amount("A", *minor)
                })
                .collect();
            let out = lines(&computed, "p", &period(0), &discounts, 2).expect("lines");
            let before: i64 = computed.iter().map(|l| l.amount_minor).sum();
            let taken: i64 = out.iter().map(|l| l.amount_minor).sum();
            let eligible: i64 = cents.iter().sum();
            proptest::prop_assert!(out.iter().all(|l| l.amount_minor < 0));
            proptest::prop_assert!(-taken <= eligible);
            proptest::prop_assert!(before + taken >= before.min(0));
        }
    }
}
