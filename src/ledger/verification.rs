//! When each tenant's books were last verified, and the last time they passed.
//!
//! Verification (`verify::verify`: every entry balances, the hash chain is intact, every
//! balance equals its postings) reads and never writes; this record remembers its outcome so
//! the operator can see how long ago the books were last known good, across restarts. Both
//! `GET /v1/ledger/verify` and `tally verify` record it.

use crate::store::{ReadTxn, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::store::writer::Command;
use crate::store::{get_record, put_record, tables, StoreError, TenantId};

/// One verification's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// When it ran.
    pub at_ms: i64,
    /// Whether the books passed.
    pub passed: bool,
    /// Journal entries checked.
    pub entries: u64,
    /// What was wrong, when it failed.
    pub reason: Option<String>,
}

/// A tenant's verification record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// The latest verification, passed or not.
    pub last: Outcome,
    /// The latest one that passed.
    pub last_passed: Option<Outcome>,
}

/// Records a verification's outcome for some tenants.
#[derive(Debug, Clone)]
pub struct RecordVerification {
    /// Whose books were verified.
    pub tenants: Vec<TenantId>,
    /// What it found.
    pub outcome: Outcome,
}

impl Command for RecordVerification {
    type Output = ();

    fn apply(self, tx: &WriteTxn) -> Result<(), StoreError> {
        let mut table = tx.open_table(tables::VERIFICATIONS)?;
        for tenant in self.tenants {
            let key = tenant.to_bytes();
            let before = get_record::<Verification, _>(&table, key)?;
            // A slower verification finishing after a newer one never hides it.
            if before
                .as_ref()
                .is_some_and(|v| v.last.at_ms > self.outcome.at_ms)
            {
                continue;
            }
            let last_passed = if self.outcome.passed {
                Some(self.outcome.clone())
            } else {
                before.and_then(|v| v.last_passed)
            };
            let record = Verification {
                last: self.outcome.clone(),
                last_passed,
            };
            put_record(&mut table, &key, &record)?;
        }
        Ok(())
    }
}

/// A tenant's record; `None` when its books were never verified.
pub fn get(tx: &ReadTxn, tenant: TenantId) -> Result<Option<Verification>, StoreError> {
    get_record(&tx.open_table(tables::VERIFICATIONS)?, tenant.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(at_ms: i64, passed: bool) -> Outcome {
        Outcome {
            at_ms,
            passed,
            entries: 3,
            reason: (!passed).then(|| "unbalanced".to_string()),
        }
    }

    #[test]
    fn a_failure_keeps_the_last_pass_and_an_older_result_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(&dir.path().join("v.redb"), 1 << 20).expect("open");
        let record = |tenants: Vec<TenantId>, o: Outcome| {
            store
                .apply_one(RecordVerification {
                    tenants,
                    outcome: o,
                })
                .expect("record");
        };
        let (a, b) = (TenantId(1), TenantId(2));
        assert_eq!(get(&store.read().expect("r"), a).expect("get"), None);
        record(vec![a, b], outcome(10, true));
        record(vec![a], outcome(20, false));
        record(vec![a], outcome(15, true));
        let tx = store.read().expect("read");
        let va = get(&tx, a).expect("a").expect("recorded");
        assert_eq!(va.last, outcome(20, false));
        assert_eq!(va.last_passed, Some(outcome(10, true)));
        let vb = get(&tx, b).expect("b").expect("recorded");
        assert_eq!(vb.last_passed, Some(outcome(10, true)));
    }
}
