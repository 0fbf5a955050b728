//! The window a usage alert counts in, and in which each threshold fires at most once.
//!
//! The rule: the billing period containing the instant of the write, of the customer's oldest
//! subscription that is running then (its plan at that instant gives the schedule); a customer
//! with no running subscription counts in the UTC calendar month. A new window re-arms every
//! threshold.

use crate::store::ReadableTable;

use crate::billing::period::{Interval, Schedule};
use crate::billing::subscription::Subscription;
use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::{get_record, StoreError};

/// `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start (inclusive).
    pub start_ms: i64,
    /// End (exclusive).
    pub end_ms: i64,
}

/// The UTC calendar month containing `at_ms`.
pub fn calendar_month(at_ms: i64) -> Option<Window> {
    let schedule = Schedule {
        anchor_ms: 0,
        interval: Interval::Month,
        count: 1,
    };
    let k = schedule.index_of(at_ms)?;
    Some(Window {
        start_ms: schedule.boundary(k)?,
        end_ms: schedule.boundary(k + 1)?,
    })
}

/// The usage window of `customer` at `at_ms`, from any transaction's tables.
pub fn usage_window(
    by_customer: &impl ReadableTable<&'static [u8], ()>,
    subscriptions: &impl ReadableTable<&'static [u8], &'static [u8]>,
    plans: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    customer: Id,
    at_ms: i64,
) -> Result<Option<Window>, StoreError> {
    let lo = keys::tenant_id(tenant, customer).to_vec();
    let mut hi = lo.clone();
    hi.extend_from_slice(&[0xFF; 17]);
    // The latest end of a subscription at or before the instant: usage after it counts from
    // there, never again from the start of a month a period already counted.
    let mut ended_ms: Option<i64> = None;
    for entry in by_customer.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
        let (key, _) = entry?;
        let Some(id) = key
            .value()
            .get(24..40)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Id::from_bytes)
        else {
            continue;
        };
        let Some(sub) = get_record::<Subscription, _>(subscriptions, keys::tenant_id(tenant, id))?
        else {
            continue;
        };
        if let Some(end) = sub.ends_at_ms.filter(|end| *end <= at_ms) {
            ended_ms = Some(ended_ms.map_or(end, |e| e.max(end)));
        }
        let Some(plan) = crate::billing::plan::load(plans, tenant, sub.plan_at(at_ms))? else {
            continue;
        };
        if let Some(p) = sub.period_at(&plan, at_ms) {
            return Ok(Some(Window {
                start_ms: p.start_ms,
                end_ms: p.end_ms,
            }));
        }
    }
    Ok(calendar_month(at_ms).map(|month| Window {
        start_ms: ended_ms.map_or(month.start_ms, |end| end.max(month.start_ms)),
        end_ms: month.end_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_rfc3339;

    #[test]
    fn the_calendar_month_contains_the_instant() {
        let t = |s| parse_rfc3339(s).expect("time");
        let w = calendar_month(t("2027-02-14T10:00:00Z")).expect("window");
        assert_eq!(w.start_ms, t("2027-02-01T00:00:00Z"));
        assert_eq!(w.end_ms, t("2027-03-01T00:00:00Z"));
        let edge = calendar_month(t("2027-03-01T00:00:00Z")).expect("window");
        assert_eq!(edge.start_ms, t("2027-03-01T00:00:00Z"));
    }
}
