//! Pricing models and the one rounding rule.
//!
//! Every line is computed exactly in decimals (unit prices are decimal strings in the currency's
//! major unit, e.g. `"0.0025"` USD; tier flat fees are integers in minor units) and rounded once,
//! to the currency's minor unit, half away from zero. Totals are sums of rounded lines, never
//! rounded again. A late-usage adjustment of a billed (meter, period) is billed as
//! round(exact after) − round(exact before) ([`price_change`]), so whatever the number of late
//! arrivals, the amounts billed for a period add up to the rounding of its exact total.
//!
//! Every operation is checked: an amount that leaves the exact decimal range or `i64` minor units
//! is [`OutOfRange`], a business failure of the invoice, never a panic.
//!
//! - `per_unit`: billable × unit price.
//! - `graduated`: each tier prices the units that fall inside it; a tier's flat fee applies when
//!   any unit falls inside it.
//! - `volume`: the tier the billable quantity reaches prices every unit; its flat fee applies
//!   once (zero units cost nothing).
//! - `package`: every started package of `package_size` units costs the unit price.
//!
//! Free units are subtracted first: billable = max(quantity − free_units, 0).

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::decimal::Stored;

/// One tier of a graduated or volume price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// Upper bound (inclusive) of the tier; `None` for the last, unbounded tier.
    pub up_to: Option<Stored>,
    /// Price per unit in the tier, major units.
    pub unit_price: Stored,
    /// Flat fee of the tier, minor units.
    pub flat_fee_minor: i64,
}

/// How a usage charge is priced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Model {
    /// A price per unit.
    PerUnit {
        /// Major units per unit.
        unit_price: Stored,
    },
    /// Tiers price their own units.
    Graduated {
        /// Ascending tiers, the last unbounded.
        tiers: Vec<Tier>,
    },
    /// The reached tier prices all units.
    Volume {
        /// Ascending tiers, the last unbounded.
        tiers: Vec<Tier>,
    },
    /// A price per started package.
    Package {
        /// Units per package.
        package_size: Stored,
        /// Major units per package.
        unit_price: Stored,
    },
}

/// The part of a line one tier contributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierLine {
    /// Tier position, from 0.
    pub tier: u32,
    /// Units priced by it.
    pub quantity: Stored,
    /// Its unit price.
    pub unit_price: Stored,
    /// Its flat fee, minor units (0 when not applied).
    pub flat_fee_minor: i64,
    /// Exact amount, major units.
    pub amount: Stored,
}

/// A priced quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Priced {
    /// Units after free units.
    pub billable: Decimal,
    /// Exact amount, major units.
    pub exact: Decimal,
    /// Rounded once, minor units.
    pub amount_minor: i64,
    /// Tier breakdown (graduated and volume).
    pub tiers: Vec<TierLine>,
}

/// The amount does not fit the exact decimal range or `i64` minor units.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the amount is out of range")]
pub struct OutOfRange;

/// Rounds an exact major-unit amount to minor units, half away from zero: the one rule.
pub fn to_minor(exact: Decimal, exponent: u8) -> Result<i64, OutOfRange> {
    let scale = Decimal::from(10i64.pow(u32::from(exponent)));
    let minor = exact
        .checked_mul(scale)
        .ok_or(OutOfRange)?
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(minor).map_err(|_| OutOfRange)
}

/// Minor units as an exact major-unit decimal.
pub fn from_minor(minor: i64, exponent: u8) -> Decimal {
    Decimal::new(minor, u32::from(exponent))
}

fn add(a: Decimal, b: Decimal) -> Result<Decimal, OutOfRange> {
    a.checked_add(b).ok_or(OutOfRange)
}

fn sub(a: Decimal, b: Decimal) -> Result<Decimal, OutOfRange> {
    a.checked_sub(b).ok_or(OutOfRange)
}

fn mul(a: Decimal, b: Decimal) -> Result<Decimal, OutOfRange> {
    a.checked_mul(b).ok_or(OutOfRange)
}

/// Prices `quantity` (may be negative only for adjustments, where callers price both sides).
pub fn price(
    model: &Model,
    free_units: Decimal,
    quantity: Decimal,
    exponent: u8,
) -> Result<Priced, OutOfRange> {
    let billable = sub(quantity, free_units)?.max(Decimal::ZERO);
    let mut tiers_out = Vec::new();
    let exact = match model {
        Model::PerUnit { unit_price } => mul(billable, unit_price.0)?,
        Model::Package {
            package_size,
            unit_price,
        } => {
            let packages = billable
                .checked_div(package_size.0)
                .ok_or(OutOfRange)?
                .ceil();
            mul(packages, unit_price.0)?
        }
        Model::Graduated { tiers } => {
            let mut total = Decimal::ZERO;
            let mut lower = Decimal::ZERO;
            for (i, tier) in tiers.iter().enumerate() {
                if billable <= lower {
                    break;
                }
                let upper = tier.up_to.map(|u| u.0);
                let in_tier = sub(upper.map_or(billable, |u| billable.min(u)), lower)?;
                let fee = from_minor(tier.flat_fee_minor, exponent);
                let amount = add(mul(in_tier, tier.unit_price.0)?, fee)?;
                total = add(total, amount)?;
                tiers_out.push(TierLine {
                    tier: i as u32,
                    quantity: Stored(in_tier),
                    unit_price: tier.unit_price,
                    flat_fee_minor: tier.flat_fee_minor,
                    amount: Stored(amount),
                });
                match upper {
                    Some(u) => lower = u,
                    None => break,
                }
            }
            total
        }
        Model::Volume { tiers } => {
            if billable.is_zero() {
                Decimal::ZERO
            } else {
                let (i, tier) = tiers
                    .iter()
                    .enumerate()
                    .find(|(_, t)| t.up_to.is_none_or(|u| billable <= u.0))
                    .ok_or(OutOfRange)?;
                let fee = from_minor(tier.flat_fee_minor, exponent);
                let amount = add(mul(billable, tier.unit_price.0)?, fee)?;
                tiers_out.push(TierLine {
                    tier: i as u32,
                    quantity: Stored(billable),
                    unit_price: tier.unit_price,
                    flat_fee_minor: tier.flat_fee_minor,
                    amount: Stored(amount),
                });
                amount
            }
        }
    };
    Ok(Priced {
        billable,
        exact,
        amount_minor: to_minor(exact, exponent)?,
        tiers: tiers_out,
    })
}

/// What a change of a billed quantity costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The quantity difference (after − before).
    pub quantity: Decimal,
    /// The exact amount difference, major units.
    pub exact: Decimal,
    /// round(price(after)) − round(price(before)), minor units: what brings the total billed
    /// for the quantity from the rounding of its old exact amount to that of its new one.
    pub amount_minor: i64,
}

/// Prices a billed quantity that changed from `before` to `after` (late usage). The minor
/// amount is the difference of the two rounded amounts, not the rounding of the difference:
/// rounding each difference alone would overbill by up to half a minor unit per late arrival.
pub fn price_change(
    model: &Model,
    free_units: Decimal,
    before: Decimal,
    after: Decimal,
    exponent: u8,
) -> Result<Change, OutOfRange> {
    let old = price(model, free_units, before, exponent)?;
    let new = price(model, free_units, after, exponent)?;
    Ok(Change {
        quantity: sub(after, before)?,
        exact: sub(new.exact, old.exact)?,
        amount_minor: new
            .amount_minor
            .checked_sub(old.amount_minor)
            .ok_or(OutOfRange)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal")
    }

    fn tiers() -> Vec<Tier> {
        // 0-100 at 0.10, 101-1000 at 0.05 (+ 2.00 flat), above at 0.01.
        vec![
            Tier {
                up_to: Some(Stored(d("100"))),
                unit_price: Stored(d("0.10")),
                flat_fee_minor: 0,
            },
            Tier {
                up_to: Some(Stored(d("1000"))),
                unit_price: Stored(d("0.05")),
                flat_fee_minor: 200,
            },
            Tier {
                up_to: None,
                unit_price: Stored(d("0.01")),
                flat_fee_minor: 0,
            },
        ]
    }

    #[test]
    fn graduated_and_volume_on_the_same_usage() {
        // 1,500 units.
        // Graduated: 100 × 0.10 + (900 × 0.05 + 2.00) + 500 × 0.01 = 10 + 47 + 5 = 62.00.
        let g = price(&Model::Graduated { tiers: tiers() }, d("0"), d("1500"), 2).expect("p");
        assert_eq!(g.amount_minor, 6_200);
        assert_eq!(g.tiers.len(), 3);
        assert_eq!(g.tiers[1].quantity.0, d("900"));
        // Volume: the third tier prices all 1,500 units: 15.00.
        let v = price(&Model::Volume { tiers: tiers() }, d("0"), d("1500"), 2).expect("p");
        assert_eq!(v.amount_minor, 1_500);
        // At 500 units volume uses the second tier and its flat fee: 500 × 0.05 + 2 = 27.00.
        let v = price(&Model::Volume { tiers: tiers() }, d("0"), d("500"), 2).expect("p");
        assert_eq!(v.amount_minor, 2_700);
        // Exactly at a tier bound stays in that tier.
        let v = price(&Model::Volume { tiers: tiers() }, d("0"), d("100"), 2).expect("p");
        assert_eq!(v.amount_minor, 1_000);
        let g = price(&Model::Graduated { tiers: tiers() }, d("0"), d("100"), 2).expect("p");
        assert_eq!((g.amount_minor, g.tiers.len()), (1_000, 1));
    }

    #[test]
    fn package_rounds_up_to_started_packages() {
        let m = Model::Package {
            package_size: Stored(d("1000")),
            unit_price: Stored(d("5")),
        };
        assert_eq!(price(&m, d("0"), d("1"), 2).expect("p").amount_minor, 500);
        assert_eq!(
            price(&m, d("0"), d("1000"), 2).expect("p").amount_minor,
            500
        );
        assert_eq!(
            price(&m, d("0"), d("1000.5"), 2).expect("p").amount_minor,
            1_000
        );
        assert_eq!(price(&m, d("0"), d("0"), 2).expect("p").amount_minor, 0);
    }

    #[test]
    fn free_units_come_off_first() {
        let m = Model::PerUnit {
            unit_price: Stored(d("0.0025")),
        };
        // 10,000 − 2,000 free = 8,000 × 0.0025 = 20.00.
        assert_eq!(
            price(&m, d("2000"), d("10000"), 2).expect("p").amount_minor,
            2_000
        );
        assert_eq!(
            price(&m, d("2000"), d("1500"), 2).expect("p").amount_minor,
            0
        );
    }

    #[test]
    fn a_change_is_billed_as_the_difference_of_rounded_totals() {
        let m = Model::PerUnit {
            unit_price: Stored(d("0.005")),
        };
        // 1 unit bills 0.005 → 1 cent; a late unit makes 0.010 → 1 cent: nothing more to bill.
        let c = price_change(&m, d("0"), d("1"), d("2"), 2).expect("p");
        assert_eq!(
            (c.quantity, c.exact, c.amount_minor),
            (d("1"), d("0.005"), 0)
        );
        // A third unit: 0.015 → 2 cents, one more cent.
        assert_eq!(
            price_change(&m, d("0"), d("2"), d("3"), 2)
                .expect("p")
                .amount_minor,
            1
        );
        // Downward (a max that fell): 0.015 → 0.005 gives back 1 cent.
        assert_eq!(
            price_change(&m, d("0"), d("3"), d("1"), 2)
                .expect("p")
                .amount_minor,
            -1
        );
    }

    #[test]
    fn overflow_is_a_business_failure_not_a_panic() {
        let m = Model::PerUnit {
            unit_price: Stored(d("1")),
        };
        let min = Decimal::MIN;
        assert_eq!(price(&m, d("1"), min, 2), Err(OutOfRange));
        let p = Model::Package {
            package_size: Stored(d("0.0000000000000000000000000001")),
            unit_price: Stored(d("1")),
        };
        assert_eq!(price(&p, d("0"), d("1000"), 2), Err(OutOfRange));
        let g = Model::Graduated {
            tiers: vec![Tier {
                up_to: None,
                unit_price: Stored(d("1000000")),
                flat_fee_minor: 0,
            }],
        };
        assert_eq!(price(&g, d("0"), Decimal::MAX, 2), Err(OutOfRange));
    }

    #[test]
    fn rounding_is_half_away_from_zero_once_per_line() {
        assert_eq!(to_minor(d("0.005"), 2), Ok(1));
        assert_eq!(to_minor(d("0.0049"), 2), Ok(0));
        assert_eq!(to_minor(d("-0.005"), 2), Ok(-1));
        assert_eq!(to_minor(d("2.5"), 0), Ok(3));
        assert_eq!(to_minor(d("1.0005"), 3), Ok(1001));
        // 3 × 0.3333 = 0.9999 → 1.00 (one rounding of the exact product, not per unit).
        let m = Model::PerUnit {
            unit_price: Stored(d("0.3333")),
        };
        assert_eq!(price(&m, d("0"), d("3"), 2).expect("p").amount_minor, 100);
    }
}
