//! `tally verify`: proves the books were not edited after the fact.
//!
//! For every tenant it walks the journal in chain order and checks that entries are numbered
//! without gaps, that each links to its predecessor's hash, that each hash matches its content,
//! that each balances per currency, and that effective times never go backwards; then that every
//! stored balance equals the sum of its postings (and no balance exists without postings), that
//! the chain's head matches its last entry, and that no credit grant is below zero or above its
//! amount. The first violation is reported with the entry that shows it.

use std::collections::BTreeMap;

use crate::store::{ReadTxn, ReadableTable};

use super::grant::{Grant, GrantStatus};
use super::journal::{self, Balance, Head, JournalEntry};
use crate::store::keys::{self, TenantId};
use crate::store::{codec, tables, StoreError};

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Whose books.
    pub tenant: u64,
    /// The entry that shows it (`je_…`), when one does.
    pub entry: Option<String>,
    /// Its chain position.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Tenants with a journal.
    pub tenants: u64,
    /// Entries checked.
    pub entries: u64,
    /// Balances checked.
    pub balances: u64,
    /// Grants checked.
    pub grants: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
}

struct TenantWalk {
    tenant: u64,
    expected_seq: u64,
    prev_hash: [u8; 32],
    last_effective: i64,
    sums: BTreeMap<Vec<u8>, i64>,
}

impl TenantWalk {
    fn new(tenant: u64) -> Self {
        Self {
            tenant,
            expected_seq: 1,
            prev_hash: [0; 32],
            last_effective: i64::MIN,
            sums: BTreeMap::new(),
        }
    }
}

fn violation(
    tenant: u64,
    entry: Option<&JournalEntry>,
    reason: impl Into<String>,
) -> Option<Violation> {
    Some(Violation {
        tenant,
        entry: entry.map(|e| e.id.display(journal::PREFIX)),
        seq: entry.map(|e| e.seq),
        reason: reason.into(),
    })
}

/// Verifies the books of every tenant (or only `only`), calling `progress(done, total)` as
/// entries are checked.
pub fn verify(
    tx: &ReadTxn,
    only: Option<TenantId>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report, StoreError> {
    let journal_table = tx.open_table(tables::JOURNAL)?;
    let total = journal_table.len()?;
    let mut report = Report::default();
    let mut walks: Vec<TenantWalk> = Vec::new();
    for item in journal_table.iter()? {
        let (key, value) = item?;
        let key = key.value();
        let tenant = keys::tenant_of(key)
            .ok_or_else(|| StoreError::Corrupt("malformed journal key".into()))?
            .0;
        if only.is_some_and(|t| t.0 != tenant) {
            continue;
        }
        if walks.last().is_none_or(|w| w.tenant != tenant) {
            walks.push(TenantWalk::new(tenant));
        }
        let Some(walk) = walks.last_mut() else {
            continue;
        };
        report.entries += 1;
        if report.entries % 1024 == 0 {
            progress(report.entries, total);
        }
        let entry: JournalEntry = match codec::decode(value.value()) {
            Ok(e) => e,
            Err(e) => {
                report.violation = violation(
                    tenant,
                    None,
                    format!("entry #{} does not decode: {e}", walk.expected_seq),
                );
                return Ok(report);
            }
        };
        let key_seq = key
            .get(8..16)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes);
        let problem = if key_seq != Some(entry.seq) || entry.seq != walk.expected_seq {
            Some(format!(
                "expected entry #{} but found #{} (an entry was removed or moved)",
                walk.expected_seq, entry.seq
            ))
        } else if entry.prev_hash != walk.prev_hash {
            Some("its previous-hash link does not match the preceding entry".to_string())
        } else if journal::chain_hash(&entry) != entry.hash {
            Some("its content does not match its hash (the entry was edited)".to_string())
        } else if let Err(e) = journal::check_postings(&entry.postings) {
            Some(format!("it does not balance: {e}"))
        } else if entry.effective_at_ms < walk.last_effective {
            Some("its effective time is earlier than the previous entry's".to_string())
        } else {
            None
        };
        if let Some(reason) = problem {
            report.violation = violation(tenant, Some(&entry), reason);
            return Ok(report);
        }
        for p in &entry.postings {
            let k = journal::balance_key(TenantId(tenant), &p.currency, p.account);
            let sum = walk.sums.entry(k).or_default();
            *sum = sum.saturating_add(p.amount_minor);
        }
        walk.expected_seq += 1;
        walk.prev_hash = entry.hash;
        walk.last_effective = entry.effective_at_ms;
    }
    progress(report.entries, total);
    report.tenants = walks.len() as u64;
    let heads = tx.open_table(tables::LEDGER_HEADS)?;
    let balances = tx.open_table(tables::BALANCES)?;
    for walk in &walks {
        let tenant = TenantId(walk.tenant);
        let head: Head = journal::head(&heads, tenant)?;
        if head.seq != walk.expected_seq - 1 || head.hash != walk.prev_hash {
            report.violation = violation(
                walk.tenant,
                None,
                format!(
                    "the chain head says entry #{} but the journal ends at #{}",
                    head.seq,
                    walk.expected_seq - 1
                ),
            );
            return Ok(report);
        }
        let (start, end) = crate::store::keys::tenant_range(tenant);
        let mut seen = 0usize;
        for item in balances.range::<&[u8]>(start.as_slice()..end.as_slice())? {
            let (key, value) = item?;
            let stored: Balance = codec::decode(value.value())?;
            report.balances += 1;
            seen += 1;
            let expected = walk.sums.get(key.value()).copied();
            if expected != Some(stored.balance_minor) {
                report.violation = violation(
                    walk.tenant,
                    None,
                    format!(
                        "balance of {} {} is {} but its postings sum to {}",
                        stored.account.code(),
                        stored.currency,
                        stored.balance_minor,
                        expected.map_or("nothing".to_string(), |s| s.to_string())
                    ),
                );
                return Ok(report);
            }
        }
        if seen != walk.sums.len() {
            report.violation = violation(
                walk.tenant,
                None,
                format!(
                    "{} accounts have postings but only {seen} balances are stored",
                    walk.sums.len()
                ),
            );
            return Ok(report);
        }
    }
    let grants = tx.open_table(tables::GRANTS)?;
    for item in grants.iter()? {
        let (key, value) = item?;
        let tenant = keys::tenant_of(key.value())
            .ok_or_else(|| StoreError::Corrupt("malformed grant key".into()))?
            .0;
        if only.is_some_and(|t| t.0 != tenant) {
            continue;
        }
        let grant: Grant = codec::decode(value.value())?;
        let Some(walk) = walks.iter().find(|w| w.tenant == tenant) else {
            report.violation = violation(
                tenant,
                None,
                format!(
                    "credit grant {} exists but its tenant has no journal",
                    grant.id.display(super::grant::PREFIX)
                ),
            );
            return Ok(report);
        };
        report.grants += 1;
        let key = journal::balance_key(TenantId(walk.tenant), &grant.currency, grant.account());
        let left = -walk.sums.get(&key).copied().unwrap_or(0);
        let closed = matches!(grant.status, GrantStatus::Voided | GrantStatus::Expired);
        if left < 0 || left > grant.amount_minor || (closed && left != 0) {
            report.violation = violation(
                walk.tenant,
                None,
                format!(
                    "credit grant {} has {left} remaining of {} while {}",
                    grant.id.display(super::grant::PREFIX),
                    grant.amount_minor,
                    super::grant::status_str(grant.status)
                ),
            );
            return Ok(report);
        }
    }
    Ok(report)
}
