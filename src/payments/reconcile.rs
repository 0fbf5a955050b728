//! Reconciliation: the provider's records against Tally's payments and ledger.
//!
//! Every provider charge in the range is matched to a payment by its metadata (`tally_payment`)
//! or its provider id. A charge the provider collected while Tally still has the attempt open
//! (`missing_internally`) is resolved automatically through the same outcome path a webhook
//! uses, and the resolution is recorded. Everything else that disagrees
//! (`missing_at_provider`, `amount_mismatch`, `status_mismatch`) is reported for an operator and
//! never changed automatically. Running it again changes nothing more: what was resolved now
//! matches.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::payment::{self, Dunning, Outcome, Payment, PaymentStatus, Received};
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

    fn apply(self, tx: &WriteTxn) -> Result<Reconciliation, StoreError> {
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

/// Where a provider charge lands in the report.
enum Category {
    Matched,
    MissingInternally,
    AmountMismatch,
    StatusMismatch,
}

/// The tenant's payment a charge belongs to, or why it is left out of the tenant's report.
fn owner(
    tx: &WriteTxn,
    tenant: TenantId,
    c: &ProviderCharge,
) -> Result<Result<Payment, bool>, StoreError> {
    if c.tenant.is_some_and(|t| t != tenant.0) {
        return Ok(Err(false));
    }
    // The charge's own id first (exact), then the attempt its metadata names.
    let by_id = match payment::by_provider_id(tx, tenant, &c.provider_id)? {
        Some(pid) => payment::load(tx, tenant, pid)?,
        None => None,
    };
    let found = match by_id {
        Some(p) => Some(p),
        None => c
            .payment
            .as_deref()
            .and_then(|p| Id::parse(p, payment::PREFIX))
            .map(|pid| payment::load(tx, tenant, pid))
            .transpose()?
            .flatten(),
    };
    Ok(match found {
        Some(p) => Ok(p),
        // Reported only when the charge says it is this tenant's: a charge that names a Tally
        // payment but no tenant (made before charges carried one) is another tenant's.
        None => Err(c.tenant == Some(tenant.0)),
    })
}

/// Compares one provider charge with its payment, resolving what can be: a collection the
/// provider made while the attempt is still open (or was canceled) is recorded through the
/// outcome path, which checks its amount and currency like any other report.
fn compare(
    tx: &WriteTxn,
    tenant: TenantId,
    c: &ProviderCharge,
    dunning: &Dunning,
    now_ms: i64,
    origin: &str,
) -> Result<Option<(Category, Item)>, StoreError> {
    let p = match owner(tx, tenant, c)? {
        Ok(p) => p,
        Err(false) => return Ok(None),
        Err(true) => {
            return Ok(Some((
                Category::MissingInternally,
                item(
                    None,
                    Some(c),
                    false,
                    "the provider has a charge Tally does not know",
                ),
            )))
        }
    };
    let provider_succeeded = c.status == "succeeded";
    // A charge that names the attempt but is not the intent it recorded (made outside Tally,
    // or reported first under its name) is recorded beside it by the outcome path.
    let another_intent = p
        .provider_id
        .as_deref()
        .is_some_and(|own| own != c.provider_id);
    let resolvable = p.status.is_open() || p.status == PaymentStatus::Canceled || another_intent;
    let amounts_agree = p.amount_minor == c.amount_minor && p.currency == c.currency;
    if provider_succeeded && resolvable {
        let after = payment::apply_outcome(
            tx,
            tenant,
            p.id,
            Outcome::Succeeded {
                provider_id: Some(c.provider_id.clone()),
                received: Some(Received {
                    amount_minor: c.amount_minor,
                    currency: c.currency.clone(),
                }),
            },
            dunning,
            now_ms,
            origin,
        )?;
        let (category, note) = match (amounts_agree, after.as_ref().map(|a| a.status)) {
            (false, _) => (
                Category::AmountMismatch,
                "collected with another amount or currency; held in suspense for review",
            ),
            (true, Some(PaymentStatus::Unapplied)) => (
                Category::MissingInternally,
                "collected by the provider for an invoice that needed no payment; refunding",
            ),
            _ => (
                Category::MissingInternally,
                "collected by the provider; recorded now",
            ),
        };
        let mut line = item(after.as_ref(), Some(c), true, note);
        line.tally_status = Some(p.status.as_str().to_string());
        return Ok(Some((category, line)));
    }
    if !amounts_agree {
        return Ok(Some((
            Category::AmountMismatch,
            item(Some(&p), Some(c), false, "amounts or currencies differ"),
        )));
    }
    let category = match (provider_succeeded, p.status) {
        (true, s) if s.is_collected() => Category::Matched,
        (false, PaymentStatus::Failed) if c.status != "processing" => Category::Matched,
        _ => Category::StatusMismatch,
    };
    let note = match category {
        Category::StatusMismatch => "statuses disagree",
        _ => "",
    };
    Ok(Some((category, item(Some(&p), Some(c), false, note))))
}

/// Compares and resolves, inside one transaction; stores the report on the record.
pub fn apply(
    tx: &WriteTxn,
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
        if let Some(line) = compare(tx, tenant, c, dunning, now_ms, &origin)? {
            if let Some(p) = line.1.payment {
                seen.push(p);
            }
            match line.0 {
                Category::Matched => report.matched.push(line.1),
                Category::MissingInternally => report.missing_internally.push(line.1),
                Category::AmountMismatch => report.amount_mismatch.push(line.1),
                Category::StatusMismatch => report.status_mismatch.push(line.1),
            }
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
        if p.status.is_collected() {
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
    crate::notifications::outbox::emit(
        tx,
        tenant,
        crate::notifications::outbox::Effect {
            event_type: "reconciliation.completed",
            effect: format!("{}:completed", id.display(PREFIX)),
            customer: None,
            kind: "reconciliation",
            id,
            record: &rec,
        },
        now_ms,
    )?;
    Ok(Some(rec))
}

/// Marks a reconciliation failed.
pub fn fail(
    tx: &WriteTxn,
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
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Reconciliation>, StoreError> {
    let table = tx.open_table(tables::RECONCILIATIONS)?;
    get_record(&table, keys::tenant_id(tenant, id))
}

/// A page of the tenant's reconciliations in creation order, after `after`: at most `limit`,
/// and whether more follow.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Reconciliation>, bool), StoreError> {
    let table = tx.open_table(tables::RECONCILIATIONS)?;
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after {
        Some(id) => {
            let mut k = keys::tenant_id(tenant, id).to_vec();
            k.push(0);
            k
        }
        None => start,
    };
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
        let (_, v) = entry?;
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(codec::decode(v.value())?);
    }
    Ok((out, false))
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

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
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
