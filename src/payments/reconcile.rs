//! Reconciliation: the provider's records against Tally's payments and ledger.
//!
//! Every provider charge in the range is matched to a payment by its metadata (`tally_payment`)
//! or its provider id. A charge the provider collected while Tally still has the attempt open
//! (`missing_internally`) is resolved automatically through the same outcome path a webhook
//! uses, and the resolution is recorded. Everything else that disagrees
//! (`missing_at_provider`, `amount_mismatch`, `status_mismatch`) is reported for an operator and
//! never changed automatically. Running it again changes nothing more: what was resolved now
//! matches.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::payment::{self, Dunning, Outcome, Payment, PaymentStatus};
use super::psp::ProviderCharge;
use crate::id::Id;
use crate::jobs::{self, Job};
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "rec";
/// The job kind that runs a reconciliation.
pub const JOB_KIND: &str = "reconciliation.run";

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The Tally payment.
    pub payment: Option<Id>,
    /// The provider's id.
    pub provider_id: Option<String>,
    /// Tally's amount.
    pub tally_amount_minor: Option<i64>,
    /// The provider's amount.
    pub provider_amount_minor: Option<i64>,
    /// Tally's status.
    pub tally_status: Option<String>,
    /// The provider's status.
    pub provider_status: Option<String>,
    /// Whether this run resolved it.
    pub resolved: bool,
    /// Explanation.
    pub note: String,
}

/// The result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Agree.
    pub matched: Vec<Item>,
    /// Provider collected, Tally had it open (resolved automatically) or unknown to Tally.
    pub missing_internally: Vec<Item>,
    /// Tally succeeded, the provider has no record.
    pub missing_at_provider: Vec<Item>,
    /// Amounts differ.
    pub amount_mismatch: Vec<Item>,
    /// Statuses disagree otherwise.
    pub status_mismatch: Vec<Item>,
}

/// A reconciliation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// `rec_…`.
    pub id: Id,
    /// Whose.
    pub tenant: u64,
    /// Range start.
    pub from_ms: i64,
    /// Range end (exclusive).
    pub to_ms: i64,
    /// pending, completed or failed.
    pub status: String,
    /// Created.
    pub created_at_ms: i64,
    /// Completed.
    pub completed_at_ms: Option<i64>,
    /// The report, once completed.
    pub report: Option<Report>,
    /// Why it failed.
    pub failure: Option<String>,
}

/// Records a reconciliation request and its job.
#[derive(Clone)]
pub struct Start {
    /// The record (status pending).
    pub reconciliation: Reconciliation,
}

impl Command for Start {
    type Output = Reconciliation;

    fn apply(self, tx: &WriteTransaction) -> Result<Reconciliation, StoreError> {
        let r = self.reconciliation;
        let tenant = TenantId(r.tenant);
        put_record(
            &mut tx.open_table(tables::RECONCILIATIONS)?,
            &keys::tenant_id(tenant, r.id),
            &r,
        )?;
        jobs::enqueue(
            tx,
            &Job::new(tenant, JOB_KIND, r.id.display(PREFIX), r.created_at_ms),
        )?;
        Ok(r)
    }
}

fn item(p: Option<&Payment>, c: Option<&ProviderCharge>, resolved: bool, note: &str) -> Item {
    Item {
        payment: p.map(|p| p.id),
        provider_id: c
            .map(|c| c.provider_id.clone())
            .or_else(|| p.and_then(|p| p.provider_id.clone())),
        tally_amount_minor: p.map(|p| p.amount_minor),
        provider_amount_minor: c.map(|c| c.amount_minor),
        tally_status: p.map(|p| p.status.as_str().to_string()),
        provider_status: c.map(|c| c.status.clone()),
        resolved,
        note: note.to_string(),
    }
}

/// Compares and resolves, inside one transaction; stores the report on the record.
pub fn apply(
    tx: &WriteTransaction,
    tenant: TenantId,
    id: Id,
    charges: &[ProviderCharge],
    dunning: &Dunning,
    now_ms: i64,
) -> Result<Option<Reconciliation>, StoreError> {
    let key = keys::tenant_id(tenant, id);
    let Some(mut rec) =
        get_record::<Reconciliation, _>(&tx.open_table(tables::RECONCILIATIONS)?, key)?
    else {
        return Ok(None);
    };
    let mut report = Report::default();
    let mut seen: Vec<Id> = Vec::new();
    let origin = format!("reconciliation:{}", id.display(PREFIX));
    for c in charges {
        let by_meta = c
            .payment
            .as_deref()
            .and_then(|p| Id::parse(p, payment::PREFIX))
            .map(|pid| payment::load(tx, tenant, pid))
            .transpose()?
            .flatten();
        let found = match by_meta {
            Some(p) => Some(p),
            None => match payment::by_provider_id(tx, tenant, &c.provider_id)? {
                Some(pid) => payment::load(tx, tenant, pid)?,
                None => None,
            },
        };
        let Some(p) = found else {
            report.missing_internally.push(item(
                None,
                Some(c),
                false,
                "the provider has a charge Tally does not know",
            ));
            continue;
        };
        seen.push(p.id);
        if p.amount_minor != c.amount_minor || p.currency != c.currency {
            report.amount_mismatch.push(item(
                Some(&p),
                Some(c),
                false,
                "amounts or currencies differ",
            ));
            continue;
        }
        let provider_succeeded = c.status == "succeeded";
        match (provider_succeeded, p.status) {
            (true, PaymentStatus::Succeeded) => {
                report.matched.push(item(Some(&p), Some(c), false, ""))
            }
            (true, s) if s.is_open() => {
                let after = payment::apply_outcome(
                    tx,
                    tenant,
                    p.id,
                    Outcome::Succeeded {
                        provider_id: Some(c.provider_id.clone()),
                    },
                    dunning,
                    now_ms,
                    &origin,
                )?;
                let mut line = item(
                    after.as_ref(),
                    Some(c),
                    true,
                    "collected by the provider; recorded now",
                );
                line.tally_status = Some(p.status.as_str().to_string());
                report.missing_internally.push(line);
            }
            (false, PaymentStatus::Failed) if c.status != "processing" => {
                report.matched.push(item(Some(&p), Some(c), false, ""))
            }
            _ => report
                .status_mismatch
                .push(item(Some(&p), Some(c), false, "statuses disagree")),
        }
    }
    // Succeeded payments of the range the provider does not list.
    let payments_table = tx.open_table(tables::PAYMENTS)?;
    let (start, end) = keys::tenant_range(tenant);
    for entry in payments_table.range::<&[u8]>(start.as_slice()..end.as_slice())? {
        let (_, v) = entry?;
        let p: Payment = codec::decode(v.value())?;
        if p.created_at_ms < rec.from_ms || p.created_at_ms >= rec.to_ms || seen.contains(&p.id) {
            continue;
        }
        if p.status == PaymentStatus::Succeeded {
            report.missing_at_provider.push(item(
                Some(&p),
                None,
                false,
                "Tally recorded a success the provider does not list",
            ));
        }
    }
    drop(payments_table);
    rec.status = "completed".into();
    rec.completed_at_ms = Some(now_ms);
    rec.report = Some(report);
    put_record(&mut tx.open_table(tables::RECONCILIATIONS)?, &key, &rec)?;
    Ok(Some(rec))
}

/// Marks a reconciliation failed.
pub fn fail(
    tx: &WriteTransaction,
    tenant: TenantId,
    id: Id,
    reason: String,
    now_ms: i64,
) -> Result<(), StoreError> {
    let key = keys::tenant_id(tenant, id);
    let mut table = tx.open_table(tables::RECONCILIATIONS)?;
    if let Some(mut rec) = get_record::<Reconciliation, _>(&table, key)? {
        rec.status = "failed".into();
        rec.failure = Some(reason);
        rec.completed_at_ms = Some(now_ms);
        put_record(&mut table, &key, &rec)?;
    }
    Ok(())
}

/// One reconciliation.
pub fn get(
    tx: &ReadTransaction,
    tenant: TenantId,
    id: Id,
) -> Result<Option<Reconciliation>, StoreError> {
    let table = tx.open_table(tables::RECONCILIATIONS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// Runs a reconciliation as one command (operator CLI, no daemon).
#[derive(Clone)]
pub struct ApplyNow {
    /// Whose.
    pub tenant: TenantId,
    /// The record (stored first if new).
    pub reconciliation: Reconciliation,
    /// The provider's records.
    pub charges: Vec<ProviderCharge>,
    /// Dunning (a resolution never schedules one, but the outcome path takes it).
    pub dunning: Dunning,
    /// Now.
    pub now_ms: i64,
}

impl Command for ApplyNow {
    type Output = Option<Reconciliation>;

    fn apply(self, tx: &WriteTransaction) -> Result<Self::Output, StoreError> {
        let r = &self.reconciliation;
        put_record(
            &mut tx.open_table(tables::RECONCILIATIONS)?,
            &keys::tenant_id(self.tenant, r.id),
            r,
        )?;
        apply(
            tx,
            self.tenant,
            r.id,
            &self.charges,
            &self.dunning,
            self.now_ms,
        )
    }
}
