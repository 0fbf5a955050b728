//! Billing periods: boundaries follow the subscription's anchor in UTC, with calendar months
//! clamped to their last day (an anchor on the 31st bills on Feb 28 or 29, then on Mar 31).
//!
//! Boundary `k` is always computed from the anchor (`anchor + k × interval`), never from the
//! previous boundary, so clamping in February does not drift the following months.

use serde::{Deserialize, Serialize};

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// The unit of a plan's billing interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Interval {
    /// Calendar days (UTC).
    Day,
    /// Seven days.
    Week,
    /// Calendar months.
    Month,
    /// Three calendar months.
    Quarter,
    /// Twelve calendar months.
    Year,
}

impl Interval {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
            Interval::Quarter => "quarter",
            Interval::Year => "year",
        }
    }

    /// Parses the API name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "day" => Interval::Day,
            "week" => Interval::Week,
            "month" => Interval::Month,
            "quarter" => Interval::Quarter,
            "year" => Interval::Year,
            _ => return None,
        })
    }

    fn months(self) -> Option<i64> {
        match self {
            Interval::Month => Some(1),
            Interval::Quarter => Some(3),
            Interval::Year => Some(12),
            Interval::Day | Interval::Week => None,
        }
    }

    fn fixed_ms(self) -> Option<i64> {
        match self {
            Interval::Day => Some(DAY_MS),
            Interval::Week => Some(7 * DAY_MS),
            _ => None,
        }
    }
}

/// A schedule of boundaries: `anchor + k × count × interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Any boundary; usually the subscription's start.
    pub anchor_ms: i64,
    /// The unit.
    pub interval: Interval,
    /// Units per period (at least 1).
    pub count: u32,
}

impl Schedule {
    /// Boundary `k` (may be negative), or `None` outside the representable calendar.
    pub fn boundary(&self, k: i64) -> Option<i64> {
        let count = i64::from(self.count.max(1));
        if let Some(unit) = self.interval.fixed_ms() {
            return self
                .anchor_ms
                .checked_add(k.checked_mul(count)?.checked_mul(unit)?);
        }
        let months = k.checked_mul(count)?.checked_mul(self.interval.months()?)?;
        crate::clock::add_months(self.anchor_ms, i32::try_from(months).ok()?)
    }

    /// The index `k` with `boundary(k) <= t < boundary(k + 1)`.
    pub fn index_of(&self, t: i64) -> Option<i64> {
        let count = i64::from(self.count.max(1));
        let mut k = match self.interval.fixed_ms() {
            Some(unit) => (t - self.anchor_ms).div_euclid(unit * count),
            // Average month length is a close first guess; the loops below correct it.
            None => {
                let months = self.interval.months()? * count;
                (t - self.anchor_ms).div_euclid(months * 30 * DAY_MS + months * 10 * 3_600_000)
            }
        };
        // At most a few steps either way.
        for _ in 0..64 {
            if self.boundary(k)? > t {
                k -= 1;
            } else if self.boundary(k + 1)? <= t {
                k += 1;
            } else {
                return Some(k);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{parse_rfc3339, rfc3339};

    fn t(s: &str) -> i64 {
        parse_rfc3339(s).expect("time")
    }

    #[test]
    fn month_end_anchors_clamp_without_drift() {
        let s = Schedule {
            anchor_ms: t("2027-01-31T00:00:00Z"),
            interval: Interval::Month,
            count: 1,
        };
        let b: Vec<String> = (0..4).map(|k| rfc3339(s.boundary(k).expect("b"))).collect();
        assert_eq!(
            b,
            [
                "2027-01-31T00:00:00.000Z",
                "2027-02-28T00:00:00.000Z",
                "2027-03-31T00:00:00.000Z",
                "2027-04-30T00:00:00.000Z"
            ]
        );
        let leap = Schedule {
            anchor_ms: t("2028-01-31T12:00:00Z"),
            ..s
        };
        assert_eq!(
            rfc3339(leap.boundary(1).expect("b")),
            "2028-02-29T12:00:00.000Z"
        );
    }

    #[test]
    fn index_of_finds_the_containing_period() {
        for (interval, count) in [
            (Interval::Day, 1),
            (Interval::Week, 2),
            (Interval::Month, 1),
            (Interval::Quarter, 1),
            (Interval::Year, 1),
        ] {
            let s = Schedule {
                anchor_ms: t("2027-01-31T10:00:00Z"),
                interval,
                count,
            };
            for probe in [
                "2027-01-31T10:00:00Z",
                "2027-03-01T00:00:00Z",
                "2026-12-01T00:00:00Z",
                "2031-07-15T00:00:00Z",
            ] {
                let at = t(probe);
                let k = s.index_of(at).expect("index");
                assert!(s.boundary(k).expect("b") <= at && at < s.boundary(k + 1).expect("b"));
            }
        }
    }
}
