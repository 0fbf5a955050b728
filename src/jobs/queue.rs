//! How much work is waiting: the job queue and a tenant's dead letters, counted with a bound.
//!
//! The overview page asks on every visit, so each count stops after a fixed number of rows and
//! says so rather than walk a table of any size.

use crate::store::{ReadTxn, ReadableTable};

use super::{Job, JobStatus};
use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::{get_record, tables, StoreError};

/// A count that stopped at its bound: `more` means there are more than `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounded {
    /// Rows counted.
    pub count: u64,
    /// Whether counting stopped before the end.
    pub more: bool,
}

impl std::fmt::Display for Bounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.count, if self.more { "+" } else { "" })
    }
}

/// The live jobs of every tenant by where they stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounts {
    /// Pending and due now (waiting for a worker).
    pub due: Bounded,
    /// Pending and due later (retry backoff, scheduled work).
    pub scheduled: Bounded,
    /// Held by a worker.
    pub leased: Bounded,
}

/// Counts the live jobs, examining at most `budget` of them (the index holds every live job
/// once, under its due time or lease end).
pub fn queue_counts(tx: &ReadTxn, now_ms: i64, budget: usize) -> Result<QueueCounts, StoreError> {
    let index = tx.open_table(tables::JOBS_DUE)?;
    let jobs = tx.open_table(tables::JOBS)?;
    let mut counts = QueueCounts::default();
    for (examined, entry) in index.iter()?.enumerate() {
        if examined == budget {
            counts.due.more = true;
            counts.scheduled.more = true;
            counts.leased.more = true;
            break;
        }
        let (k, _) = entry?;
        let Some(id) = k
            .value()
            .get(8..24)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Id::from_bytes)
        else {
            continue;
        };
        let Some(job) = get_record::<Job, _>(&jobs, id.to_bytes())? else {
            continue;
        };
        let bucket = match job.status {
            JobStatus::Leased => &mut counts.leased,
            JobStatus::Pending if job.due_at_ms <= now_ms => &mut counts.due,
            JobStatus::Pending => &mut counts.scheduled,
            JobStatus::Done | JobStatus::Dead => continue,
        };
        bucket.count += 1;
    }
    Ok(counts)
}

/// A tenant's dead letters, counting at most `budget`.
pub fn dead_letter_count(
    tx: &ReadTxn,
    tenant: TenantId,
    budget: usize,
) -> Result<Bounded, StoreError> {
    let dead = tx.open_table(tables::DEAD_LETTERS)?;
    let (start, end) = keys::tenant_range(tenant);
    let mut counted = Bounded::default();
    for entry in dead.range::<&[u8]>(start.as_slice()..end.as_slice())? {
        entry?;
        if counted.count == budget as u64 {
            counted.more = true;
            break;
        }
        counted.count += 1;
    }
    Ok(counted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_counts_say_when_they_stopped() {
        assert_eq!(
            Bounded {
                count: 3,
                more: false
            }
            .to_string(),
            "3"
        );
        assert_eq!(
            Bounded {
                count: 10,
                more: true
            }
            .to_string(),
            "10+"
        );
    }
}
