//! Minimum commitments: a plan may promise a minimum amount per period; an invoice that closes
//! a period whose own amount (after discounts) falls short carries a true-up line for the rest.

use rust_decimal::Decimal;

use super::invoice::{InvoiceKind, Line, LineKind};
use super::pricing::{self, OutOfRange};
use super::subscription::Period;
use crate::decimal::Stored;

/// The true-up line of an invoice of `kind` for `period`, given its lines after discounts and
/// the minimum per full period (`minimum_minor`), or `None` when nothing is short.
///
/// Only invoices that close a period (period and final) carry one. A partial period (a first
/// period that began between boundaries, a last one cut short) owes the minimum prorated by
/// its length over the full period's, rounded once. What counts is what pays for the period:
/// the invoice's lines for it (not late-usage adjustments of earlier periods, not the next
/// period's fee billed in advance) plus `prebilled_minor`, the period's own fee billed in advance
/// on an earlier invoice (its unused part, if any, is credited on this one).
pub fn true_up(
    lines: &[Line],
    minimum_minor: i64,
    kind: InvoiceKind,
    period: &Period,
    prebilled_minor: i64,
    exponent: u8,
) -> Result<Option<Line>, OutOfRange> {
    if !matches!(kind, InvoiceKind::Period | InvoiceKind::Final) || minimum_minor <= 0 {
        return Ok(None);
    }
    let full = period
        .full_end_ms
        .saturating_sub(period.full_start_ms)
        .max(1);
    let own = period.end_ms.saturating_sub(period.start_ms).clamp(0, full);
    let owed_exact = pricing::from_minor(minimum_minor, exponent)
        .checked_mul(Decimal::from(own))
        .and_then(|v| v.checked_div(Decimal::from(full)))
        .ok_or(OutOfRange)?;
    let owed = pricing::to_minor(owed_exact, exponent)?;
    let counted = lines
        .iter()
        .filter(|l| l.kind != LineKind::Adjustment && l.period_start_ms < period.end_ms)
        .try_fold(prebilled_minor, |acc, l| acc.checked_add(l.amount_minor))
        .ok_or(OutOfRange)?;
    let short = owed.checked_sub(counted).ok_or(OutOfRange)?;
    if short <= 0 {
        return Ok(None);
    }
    let proration = (own != full).then_some((own, full));
    Ok(Some(Line {
        kind: LineKind::MinimumCommitment,
        description: format!(
            "Minimum commitment ({} for the period)",
            pricing::from_minor(owed, exponent)
        ),
        meter: None,
        period_start_ms: period.start_ms,
        period_end_ms: period.end_ms,
        quantity: Stored(Decimal::ONE),
        quantity_before: None,
        quantity_after: None,
        proration,
        unit_price: None,
        tiers: Vec::new(),
        amount_exact: Stored(pricing::from_minor(short, exponent)),
        amount_minor: short,
        events: 0,
        events_digest: [0; 32],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    const DAY_MS: i64 = 86_400_000;

    fn line(kind: LineKind, minor: i64) -> Line {
        Line {
            kind,
            description: kind.as_str().into(),
            meter: (kind != LineKind::FixedFee).then(Id::generate),
            period_start_ms: 0,
            period_end_ms: DAY_MS,
            quantity: Stored(Decimal::ONE),
            quantity_before: None,
            quantity_after: None,
            proration: None,
            unit_price: None,
            tiers: Vec::new(),
            amount_exact: Stored(pricing::from_minor(minor, 2)),
            amount_minor: minor,
            events: 0,
            events_digest: [0; 32],
        }
    }

    fn full_day() -> Period {
        Period {
            index: 0,
            start_ms: 0,
            end_ms: DAY_MS,
            full_start_ms: 0,
            full_end_ms: DAY_MS,
        }
    }

    fn short(lines: &[Line], minimum: i64, kind: InvoiceKind, period: &Period) -> Option<i64> {
        true_up(lines, minimum, kind, period, 0, 2)
            .expect("true-up")
            .map(|l| l.amount_minor)
    }

    #[test]
    fn below_equal_and_above_the_minimum() {
        let p = full_day();
        let usage = [line(LineKind::Usage, 600), line(LineKind::Discount, -100)];
        assert_eq!(short(&usage, 1000, InvoiceKind::Period, &p), Some(500));
        assert_eq!(short(&usage, 500, InvoiceKind::Period, &p), None);
        assert_eq!(short(&usage, 400, InvoiceKind::Final, &p), None);
        let line = true_up(&usage, 1000, InvoiceKind::Period, &p, 0, 2)
            .expect("true-up")
            .expect("a line");
        assert_eq!(line.kind, LineKind::MinimumCommitment);
        assert_eq!(line.proration, None);
    }

    #[test]
    fn a_partial_period_owes_the_minimum_prorated_and_rounded_once() {
        // The first period began 6 hours after its boundary: 18 of 24 hours.
        let p = Period {
            start_ms: DAY_MS / 4,
            ..full_day()
        };
        let usage = [line(LineKind::Usage, 100)];
        // 10.01 × 3/4 = 7.5075 → 751; short by 651.
        assert_eq!(short(&usage, 1001, InvoiceKind::Period, &p), Some(651));
        let line = true_up(&usage, 1001, InvoiceKind::Period, &p, 0, 2)
            .expect("true-up")
            .expect("a line");
        assert_eq!(line.proration, Some((3 * DAY_MS / 4, DAY_MS)));
    }

    #[test]
    fn only_invoices_closing_a_period_and_not_adjustments_count() {
        let p = full_day();
        let lines = [line(LineKind::Usage, 100), line(LineKind::Adjustment, 5000)];
        assert_eq!(short(&lines, 1000, InvoiceKind::Period, &p), Some(900));
        assert_eq!(short(&lines, 1000, InvoiceKind::Opening, &p), None);
        assert_eq!(short(&lines, 1000, InvoiceKind::Adjustment, &p), None);
        assert_eq!(short(&lines, 0, InvoiceKind::Period, &p), None);
    }
}
