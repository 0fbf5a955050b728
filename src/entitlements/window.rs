//! Reset windows of metered entitlements: the span whose usage counts against the limit.
//!
//! `day` and `month` are UTC calendar days and months; `billing_period` is the period of the
//! granting subscription that contains the instant (trials and mid-period plan changes split
//! periods exactly as invoices see them).

use serde::{Deserialize, Serialize};

use crate::billing::plan::Plan;
use crate::billing::subscription::Subscription;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// When a metered entitlement's usage starts again from zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reset {
    /// With each billing period of the granting subscription.
    BillingPeriod,
    /// At every UTC midnight.
    Day,
    /// At the first instant of every UTC calendar month.
    Month,
}

impl Reset {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reset::BillingPeriod => "billing_period",
            Reset::Day => "day",
            Reset::Month => "month",
        }
    }

    /// Parses the API name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "billing_period" => Reset::BillingPeriod,
            "day" => Reset::Day,
            "month" => Reset::Month,
            _ => return None,
        })
    }
}

/// A reset window `[start_ms, end_ms)`; `end_ms` is when usage resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First instant counted.
    pub start_ms: i64,
    /// The reset (exclusive).
    pub end_ms: i64,
}

impl Window {
    /// Whether `ms` lies inside.
    pub fn contains(&self, ms: i64) -> bool {
        self.start_ms <= ms && ms < self.end_ms
    }
}

/// The UTC calendar day containing `at_ms`.
pub fn day(at_ms: i64) -> Window {
    let start_ms = at_ms.div_euclid(DAY_MS) * DAY_MS;
    Window {
        start_ms,
        end_ms: start_ms.saturating_add(DAY_MS),
    }
}

/// The UTC calendar month containing `at_ms` (`None` outside the calendar's range).
pub fn month(at_ms: i64) -> Option<Window> {
    let start_ms = crate::clock::month_start(at_ms)?;
    let end_ms = crate::clock::add_months(start_ms, 1)?;
    Some(Window { start_ms, end_ms })
}

/// The window of `reset` containing `at_ms`; `billing_period` uses the period of `sub` (on
/// `plan`, the plan in effect then) and falls back to the calendar month when the subscription
/// has no period then.
pub fn containing(reset: Reset, at_ms: i64, sub: &Subscription, plan: &Plan) -> Option<Window> {
    match reset {
        Reset::Day => Some(day(at_ms)),
        Reset::Month => month(at_ms),
        Reset::BillingPeriod => match sub.period_at(plan, at_ms) {
            Some(p) => Some(Window {
                start_ms: p.start_ms,
                end_ms: p.end_ms,
            }),
            None => month(at_ms),
        },
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn day_and_month_windows_follow_the_utc_calendar() {
        let t = crate::clock::parse_rfc3339("2028-02-29T23:59:59.999Z").expect("time");
        let d = day(t);
        assert_eq!(
            crate::clock::rfc3339(d.start_ms),
            "2028-02-29T00:00:00.000Z"
        );
        assert_eq!(d.end_ms, t + 1);
        let m = month(t).expect("month");
        assert_eq!(
            crate::clock::rfc3339(m.start_ms),
            "2028-02-01T00:00:00.000Z"
        );
        assert_eq!(m.end_ms, t + 1);
        assert!(m.contains(t) && !m.contains(t + 1));
        assert_eq!(day(t + 1).start_ms, t + 1);
    }
}
