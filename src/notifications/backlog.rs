//! A tenant's outbound deliveries that are not done: pending ones and failing ones, counted
//! among the newest rows with a bound (the overview page asks on every visit).

use crate::store::ReadTxn;
use crate::store::ReadableTable;

use super::outbox::{decode_delivery, Delivery, DeliveryAttempt, DeliveryStatus};
use crate::store::keys::{self, TenantId};
use crate::store::{tables, StoreError};

/// Deliveries not done, among the newest `examined` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Still to be delivered (attempts continue), failing or not.
    pub pending: u64,
    /// Failing: given up (a dead letter), or pending after a failed attempt.
    pub failing: u64,
    /// Rows looked at.
    pub examined: u64,
    /// Whether older rows were left unexamined.
    pub more: bool,
}

fn failed(attempt: &DeliveryAttempt) -> bool {
    attempt.error.is_some() || !attempt.status_code.is_some_and(|s| (200..300).contains(&s))
}

fn is_failing(d: &Delivery) -> bool {
    match d.status {
        DeliveryStatus::Failed => true,
        DeliveryStatus::Pending => d.attempts.last().is_some_and(failed),
        DeliveryStatus::Delivered => false,
    }
}

/// Counts the tenant's pending and failing deliveries among its newest `budget` rows.
pub fn backlog(tx: &ReadTxn, tenant: TenantId, budget: usize) -> Result<Backlog, StoreError> {
    let table = tx.open_table(tables::DELIVERIES)?;
    let (start, end) = keys::tenant_range(tenant);
    let mut out = Backlog::default();
    for entry in table
        .range::<&[u8]>(start.as_slice()..end.as_slice())?
        .rev()
    {
        if out.examined == budget as u64 {
            out.more = true;
            break;
        }
        let (_, v) = entry?;
        let delivery = decode_delivery(v.value())?;
        out.examined += 1;
        if delivery.status == DeliveryStatus::Pending {
            out.pending += 1;
        }
        if is_failing(&delivery) {
            out.failing += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    fn attempt(status_code: Option<u16>, error: Option<&str>) -> DeliveryAttempt {
        DeliveryAttempt {
            at_ms: 0,
            status_code,
            error: error.map(str::to_string),
            latency_ms: 1,
            response_excerpt: String::new(),
        }
    }

    #[test]
    fn failing_means_given_up_or_last_attempt_failed() {
        let mut d = Delivery::pending(Id::generate(), Id::generate(), Id::generate());
        assert!(!is_failing(&d), "not tried yet");
        d.attempts.push(attempt(Some(500), None));
        assert!(is_failing(&d));
        d.attempts.push(attempt(None, Some("timeout")));
        assert!(is_failing(&d));
        d.attempts.push(attempt(Some(204), None));
        assert!(!is_failing(&d), "the latest attempt worked");
        d.status = DeliveryStatus::Failed;
        assert!(is_failing(&d));
        d.status = DeliveryStatus::Delivered;
        assert!(!is_failing(&d));
    }
}
