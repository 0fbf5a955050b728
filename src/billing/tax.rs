//! Taxes of an invoice: a pure step after discounts and the minimum. Each line is taxed on its
//! exact amount by each rate the customer had when the invoice was issued, rounded once per
//! line and rate, half away from zero:
//! - exclusive rate `p`: tax = amount × p / 100, added on top;
//! - inclusive rate `p`: tax = amount − amount / (1 + p / 100), already in the amount.
//!
//! Negative lines (credits, discounts) carry negative tax. A customer with `reverse_charge` and
//! a tax id is taxed at 0 % with the legal note. The rates are copied onto the invoice, so
//! `tally invoice verify` re-derives the taxes from the invoice and its lines alone.

use crate::store::ReadableTable;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::invoice::{InvoiceError, Line};
use super::pricing;
use crate::customers::Customer;
use crate::decimal::Stored;
use crate::id::Id;
use crate::store::keys::TenantId;
use crate::store::StoreError;
use crate::tax_rates::{self, TaxRate};

/// The note a reverse-charge invoice carries.
pub const REVERSE_CHARGE_NOTE: &str =
    "Reverse charge: VAT to be accounted for by the recipient (Art. 196 Directive 2006/112/EC)";

/// One rate as an invoice applied it: the rate's terms copied at issue, and its sums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxLine {
    /// The rate (`txr_…`).
    pub tax_rate: Id,
    /// Its name when applied.
    pub display_name: String,
    /// Its percentage.
    pub percentage: Stored,
    /// Whether the line amounts contained it.
    pub inclusive: bool,
    /// What it was computed on, minor units: the lines' amounts, net of the tax when inclusive.
    pub taxable_minor: i64,
    /// The sum of the lines' rounded taxes.
    pub tax_minor: i64,
}

/// What the taxes step gives an invoice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taxes {
    /// One per rate applied, in the customer's order.
    pub lines: Vec<TaxLine>,
    /// Every tax, inclusive and exclusive.
    pub tax_minor: i64,
    /// The tax added on top of the lines.
    pub exclusive_minor: i64,
    /// Whether the reverse charge applied (no tax, the note).
    pub reverse_charge: bool,
    /// Legal notes to print.
    pub notes: Vec<String>,
}

/// The rates an invoice to `customer` is taxed with, and whether the reverse charge applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applicable {
    /// The rates, as they are now.
    pub rates: Vec<TaxRate>,
    /// Reverse charge (a flag and a tax id).
    pub reverse_charge: bool,
}

/// The customer's default rates, read from any transaction's tax-rate table.
pub fn applicable(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    customer: Option<&Customer>,
) -> Result<Applicable, StoreError> {
    let Some(customer) = customer else {
        return Ok(Applicable::default());
    };
    let mut rates = Vec::new();
    for id in &customer.tax_rates {
        let rate = tax_rates::load(table, tenant, *id)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "customer names missing tax rate {}",
                id.display(tax_rates::PREFIX)
            ))
        })?;
        rates.push(rate);
    }
    Ok(Applicable {
        rates,
        reverse_charge: customer.reverse_charge && !customer.tax_ids.is_empty(),
    })
}

/// The taxes `lines` would carry if `customer` were invoiced now (previews), from a read
/// snapshot.
pub fn preview(
    tx: &crate::store::ReadTxn,
    tenant: TenantId,
    customer: Id,
    lines: &[Line],
    currency: &str,
) -> Result<Result<Taxes, InvoiceError>, StoreError> {
    let applicable = applicable(
        &tx.open_table(crate::store::tables::TAX_RATES)?,
        tenant,
        crate::customers::get(tx, tenant, customer)?.as_ref(),
    )?;
    let exponent = crate::currency::minor_unit_exponent(currency).unwrap_or(2);
    Ok(compute(
        lines,
        &tax_lines_of(&applicable),
        applicable.reverse_charge,
        exponent,
    ))
}

/// The tax lines an invoice starts from: each rate's terms, nothing summed yet.
pub fn tax_lines_of(applicable: &Applicable) -> Vec<TaxLine> {
    if applicable.reverse_charge {
        return Vec::new();
    }
    applicable
        .rates
        .iter()
        .map(|r| TaxLine {
            tax_rate: r.id,
            display_name: r.display_name.clone(),
            percentage: r.percentage,
            inclusive: r.inclusive,
            taxable_minor: 0,
            tax_minor: 0,
        })
        .collect()
}

/// One line's tax at one rate, rounded once (see the module).
pub fn line_tax(
    amount_exact: Decimal,
    percentage: Decimal,
    inclusive: bool,
    exponent: u8,
) -> Result<i64, InvoiceError> {
    let ratio = percentage
        .checked_div(Decimal::ONE_HUNDRED)
        .ok_or(InvoiceError::OutOfRange)?;
    let exact = if inclusive {
        let net = Decimal::ONE
            .checked_add(ratio)
            .and_then(|d| amount_exact.checked_div(d))
            .ok_or(InvoiceError::OutOfRange)?;
        amount_exact
            .checked_sub(net)
            .ok_or(InvoiceError::OutOfRange)?
    } else {
        amount_exact
            .checked_mul(ratio)
            .ok_or(InvoiceError::OutOfRange)?
    };
    Ok(pricing::to_minor(exact, exponent)?)
}

/// Taxes `lines` by the rates in `template` (from [`tax_lines_of`], or an issued invoice's own
/// tax lines when verifying it).
pub fn compute(
    lines: &[Line],
    template: &[TaxLine],
    reverse_charge: bool,
    exponent: u8,
) -> Result<Taxes, InvoiceError> {
    let add = |a: i64, b: i64| a.checked_add(b).ok_or(InvoiceError::OutOfRange);
    let mut out = Taxes {
        reverse_charge,
        notes: if reverse_charge {
            vec![REVERSE_CHARGE_NOTE.to_string()]
        } else {
            Vec::new()
        },
        ..Taxes::default()
    };
    if reverse_charge {
        return Ok(out);
    }
    for t in template {
        let mut taxed = TaxLine {
            taxable_minor: 0,
            tax_minor: 0,
            ..t.clone()
        };
        for line in lines {
            let tax = line_tax(line.amount_exact.0, t.percentage.0, t.inclusive, exponent)?;
            let taxable = if t.inclusive {
                line.amount_minor
                    .checked_sub(tax)
                    .ok_or(InvoiceError::OutOfRange)?
            } else {
                line.amount_minor
            };
            taxed.taxable_minor = add(taxed.taxable_minor, taxable)?;
            taxed.tax_minor = add(taxed.tax_minor, tax)?;
        }
        out.tax_minor = add(out.tax_minor, taxed.tax_minor)?;
        if !t.inclusive {
            out.exclusive_minor = add(out.exclusive_minor, taxed.tax_minor)?;
        }
        out.lines.push(taxed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::invoice::LineKind;

    fn line(exact: &str, exponent: u8) -> Line {
        let exact: Decimal = exact.parse().expect("decimal");
        Line {
            kind: LineKind::Usage,
            description: "x".into(),
            meter: None,
            period_start_ms: 0,
            period_end_ms: 1,
            quantity: Stored(Decimal::ONE),
            quantity_before: None,
            quantity_after: None,
            proration: None,
            unit_price: None,
            tiers: Vec::new(),
            amount_exact: Stored(exact),
            amount_minor: pricing::to_minor(exact, exponent).expect("minor"),
            events: 0,
            events_digest: [0; 32],
        }
    }

    fn rate(p: &str, inclusive: bool) -> TaxLine {
        TaxLine {
            tax_rate: Id::generate(),
            display_name: "VAT".into(),
            percentage: Stored(p.parse().expect("decimal")),
            inclusive,
            taxable_minor: 0,
            tax_minor: 0,
        }
    }

    fn pct(p: &str) -> Decimal {
        p.parse().expect("decimal")
    }

    #[test]
    fn exclusive_tax_rounds_once_per_line_half_away_from_zero() {
        // 0.10 × 25 % = 0.025 → 0.03; −0.10 → −0.03 (away from zero, not toward +∞).
        assert_eq!(line_tax(pct("0.10"), pct("25"), false, 2), Ok(3));
        assert_eq!(line_tax(pct("-0.10"), pct("25"), false, 2), Ok(-3));
        // The exact amount is taxed, not the rounded one: 0.004 × 100 % rounds to 0.
        assert_eq!(line_tax(pct("0.004"), pct("100"), false, 2), Ok(0));
        assert_eq!(line_tax(pct("19.99"), pct("19"), false, 2), Ok(380));
        assert_eq!(line_tax(pct("1000"), pct("0"), false, 0), Ok(0));
    }

    #[test]
    fn inclusive_tax_is_the_part_of_the_amount_above_its_net() {
        // 119.00 with 19 % inside: net 100.00, tax 19.00.
        assert_eq!(line_tax(pct("119"), pct("19"), true, 2), Ok(1900));
        // 10.00 with 19 % inside: 10 − 8.4033… = 1.5966… → 1.60.
        assert_eq!(line_tax(pct("10"), pct("19"), true, 2), Ok(160));
        assert_eq!(line_tax(pct("-10"), pct("19"), true, 2), Ok(-160));
    }

    #[test]
    fn totals_are_the_sums_of_the_rounded_lines() {
        let lines = vec![line("0.10", 2), line("0.10", 2), line("-0.05", 2)];
        let taxes =
            compute(&lines, &[rate("25", false), rate("7.5", false)], false, 2).expect("taxes");
        // 25 %: 0.025 → 3, 3, −0.0125 → −1 = 5 (not round(0.0375) = 4).
        assert_eq!(taxes.lines[0].tax_minor, 5);
        assert_eq!(taxes.lines[0].taxable_minor, 10 + 10 - 5);
        // 7.5 %: 0.0075 → 1, 1, −0.00375 → 0 = 2.
        assert_eq!(taxes.lines[1].tax_minor, 2);
        assert_eq!(taxes.tax_minor, 7);
        assert_eq!(taxes.exclusive_minor, 7);
    }

    #[test]
    fn inclusive_rates_add_nothing_on_top() {
        let lines = vec![line("10", 2), line("119", 2)];
        let taxes = compute(&lines, &[rate("19", true)], false, 2).expect("taxes");
        assert_eq!(taxes.tax_minor, 160 + 1900);
        assert_eq!(taxes.exclusive_minor, 0);
        assert_eq!(taxes.lines[0].taxable_minor, 1000 - 160 + 11900 - 1900);
    }

    #[test]
    fn reverse_charge_taxes_nothing_and_carries_the_note() {
        let taxes = compute(&[line("100", 2)], &[], true, 2).expect("taxes");
        assert_eq!(taxes.tax_minor, 0);
        assert!(taxes.lines.is_empty());
        assert_eq!(taxes.notes, vec![REVERSE_CHARGE_NOTE.to_string()]);
    }
}
