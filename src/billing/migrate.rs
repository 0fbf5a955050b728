//! Schema 3 → 4: subscriptions gain their phases (the plan history) and trial fields; plans
//! say whether usage in a trial is billed; invoices gain their number and the buyer and seller
//! snapshots (empty for invoices issued before them) and their taxes (none: the total is the
//! subtotal).

use crate::store::{ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::invoice::{Invoice, InvoiceKind, InvoiceStatus, Line};
use super::plan;
use super::subscription::{Subscription, SubscriptionV3};
use crate::id::Id;
use crate::notifications::outbox::Notification;
use crate::store::{codec, put_record, tables, StoreError};

/// An invoice as schema 3 stored it (frozen here, never changed again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceV3 {
    /// `inv_…`.
    pub id: Id,
    /// The subscription billed.
    pub subscription: Id,
    /// Who owes it.
    pub customer: Id,
    /// The plan version priced with.
    pub plan: Id,
    /// ISO 4217.
    pub currency: String,
    /// Why it exists.
    pub kind: InvoiceKind,
    /// Lifecycle.
    pub status: InvoiceStatus,
    /// The charge key's period start.
    pub period_start_ms: i64,
    /// The charge key's period end.
    pub period_end_ms: i64,
    /// Lines.
    pub lines: Vec<Line>,
    /// Sum of rounded lines.
    pub subtotal_minor: i64,
    /// Credits drawn, per grant, in burn order.
    pub credits: Vec<(Id, i64)>,
    /// Sum of credits drawn.
    pub credits_applied_minor: i64,
    /// What remains to collect.
    pub amount_due_minor: i64,
    /// Issued.
    pub issued_at_ms: i64,
    /// Events committed up to this sequence number were counted.
    pub events_through: u64,
    /// blake3 of the inputs.
    pub inputs_digest: [u8; 32],
    /// Journal entries it posted.
    pub entries: Vec<Id>,
    /// The voided invoice it re-issues.
    pub replaces: Option<Id>,
    /// The invoice that re-issued it after a void.
    pub replaced_by: Option<Id>,
    /// The billing run that created it.
    pub billing_run: Option<Id>,
    /// When it was voided.
    pub voided_at_ms: Option<i64>,
    /// When it was paid.
    pub paid_at_ms: Option<i64>,
}

impl From<InvoiceV3> for Invoice {
    fn from(old: InvoiceV3) -> Self {
        Invoice {
            id: old.id,
            subscription: old.subscription,
            customer: old.customer,
            plan: old.plan,
            currency: old.currency,
            kind: old.kind,
            status: old.status,
            period_start_ms: old.period_start_ms,
            period_end_ms: old.period_end_ms,
            lines: old.lines,
            subtotal_minor: old.subtotal_minor,
            credits: old.credits,
            credits_applied_minor: old.credits_applied_minor,
            amount_due_minor: old.amount_due_minor,
            issued_at_ms: old.issued_at_ms,
            events_through: old.events_through,
            inputs_digest: old.inputs_digest,
            entries: old.entries,
            replaces: old.replaces,
            replaced_by: old.replaced_by,
            billing_run: old.billing_run,
            voided_at_ms: old.voided_at_ms,
            paid_at_ms: old.paid_at_ms,
            number: None,
            number_seq: None,
            number_year: None,
            buyer: None,
            seller: None,
            tax_lines: Vec::new(),
            tax_minor: 0,
            total_minor: old.subtotal_minor,
            reverse_charge: false,
            notes: Vec::new(),
            credited_minor: 0,
            credited_due_minor: 0,
            credit_notes: Vec::new(),
        }
    }
}

/// Rewrites every record of `table` with `convert`, in the caller's transaction. Returns how many.
fn rewrite_table<T: serde::Serialize>(
    tx: &WriteTxn,
    table: crate::store::TableDef<&'static [u8], &'static [u8]>,
    convert: impl Fn(&[u8]) -> Result<T, StoreError>,
) -> Result<u64, StoreError> {
    let mut rewritten = Vec::new();
    {
        let read = tx.open_table(table)?;
        for entry in read.iter()? {
            let (key, value) = entry?;
            rewritten.push((key.value().to_vec(), convert(value.value())?));
        }
    }
    let mut write = tx.open_table(table)?;
    for (key, record) in &rewritten {
        put_record(&mut write, key, record)?;
    }
    Ok(rewritten.len() as u64)
}

/// A notification subject recorded in the old layout, in the new one; `None` when it does not
/// decode in the old layout (it is left as it is and shown by kind and id, as any subject that
/// no longer decodes).
fn upgraded<Old, New>(bytes: &[u8]) -> Result<Option<Vec<u8>>, StoreError>
where
    Old: serde::de::DeserializeOwned,
    New: From<Old> + serde::Serialize,
{
    match codec::decode::<Old>(bytes) {
        Ok(old) => Ok(Some(codec::encode(&New::from(old))?)),
        Err(_) => Ok(None),
    }
}

/// Rewrites every invoice, and every invoice a notification holds as its subject, in the new
/// layout. Returns how many invoices were rewritten.
pub fn invoices_to_schema_4(tx: &WriteTxn) -> Result<u64, StoreError> {
    let invoices = rewrite_table(tx, tables::INVOICES, |bytes| {
        Ok(Invoice::from(codec::decode::<InvoiceV3>(bytes)?))
    })?;
    rewrite_subjects(tx, "invoice", upgraded::<InvoiceV3, Invoice>)?;
    Ok(invoices)
}

/// Rewrites every subscription in the new layout, its one phase being its plan from its start,
/// every plan, and every invoice ([`invoices_to_schema_4`]). Returns how many subscriptions
/// were rewritten.
pub fn to_schema_4(tx: &WriteTxn) -> Result<u64, StoreError> {
    let invoices = invoices_to_schema_4(tx)?;
    tracing::info!(
        invoices,
        "schema 3 → 4: invoices gain their number and parties"
    );
    let subscriptions = rewrite_table(tx, tables::SUBSCRIPTIONS, |bytes| {
        Ok(Subscription::from(codec::decode::<SubscriptionV3>(bytes)?))
    })?;
    rewrite_table(tx, tables::PLANS, plan::decode)?;
    rewrite_subjects(tx, "subscription", upgraded::<SubscriptionV3, Subscription>)?;
    Ok(subscriptions)
}

/// Re-encodes the records recorded in notifications of one subject kind, so events recorded
/// before the upgrade still show their object.
fn rewrite_subjects(
    tx: &WriteTxn,
    kind: &str,
    convert: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, StoreError>,
) -> Result<(), StoreError> {
    let mut changed = Vec::new();
    {
        let table = tx.open_table(tables::NOTIFICATIONS)?;
        for entry in table.iter()? {
            let (key, value) = entry?;
            let mut n: Notification = codec::decode(value.value())?;
            if n.subject.kind != kind {
                continue;
            }
            if let Some(record) = convert(&n.subject.record)? {
                n.subject.record = record;
                changed.push((key.value().to_vec(), n));
            }
        }
    }
    let mut table = tx.open_table(tables::NOTIFICATIONS)?;
    for (key, n) in &changed {
        put_record(&mut table, key, n)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::subscription::SubscriptionStatus;
    use crate::id::Id;
    use crate::store::{get_record, keys, Store, TenantId};

    #[test]
    fn a_schema_3_subscription_reads_after_the_upgrade_with_one_phase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.redb");
        let tenant = TenantId(3);
        let old = SubscriptionV3 {
            id: Id::generate(),
            customer: Id::generate(),
            plan: Id::generate(),
            start_at_ms: 1_000,
            anchor_ms: 1_000,
            status: SubscriptionStatus::Active,
            ends_at_ms: None,
            canceled_at_ms: None,
            periods_closed: 2,
            opening_invoiced: true,
            created_at_ms: 900,
        };
        {
            let store = Store::open(&path, 1 << 22).expect("open");
            let tx = store.begin_write().expect("write");
            tx.open_table(tables::SUBSCRIPTIONS)
                .expect("subscriptions")
                .insert(
                    keys::tenant_id(tenant, old.id).as_slice(),
                    codec::encode(&old).expect("encode").as_slice(),
                )
                .expect("insert");
            tx.open_table(tables::META)
                .expect("meta")
                .insert("schema_version", 3u32.to_be_bytes().as_slice())
                .expect("version");
            tx.commit().expect("commit");
        }
        let store = crate::migrate::open(&path, 1 << 22).expect("migrate");
        let tx = store.read().expect("read");
        let subs = tx.open_table(tables::SUBSCRIPTIONS).expect("table");
        let sub: Subscription = get_record(&subs, keys::tenant_id(tenant, old.id))
            .expect("decode")
            .expect("present");
        assert_eq!(sub.phases.len(), 1);
        assert_eq!(sub.phases[0].plan, old.plan);
        assert_eq!(sub.phases[0].start_ms, old.start_at_ms);
        assert_eq!(sub.periods_closed, 2);
        assert!(sub.trial_end_ms.is_none());
    }

    #[test]
    fn a_schema_3_invoice_reads_after_the_upgrade_without_number_or_parties() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.redb");
        let tenant = TenantId(3);
        let old = InvoiceV3 {
            id: Id::generate(),
            subscription: Id::generate(),
            customer: Id::generate(),
            plan: Id::generate(),
            currency: "EUR".into(),
            kind: InvoiceKind::Period,
            status: InvoiceStatus::Paid,
            period_start_ms: 1_000,
            period_end_ms: 2_000,
            lines: Vec::new(),
            subtotal_minor: 1_234,
            credits: vec![(Id::generate(), 34)],
            credits_applied_minor: 34,
            amount_due_minor: 1_200,
            issued_at_ms: 2_500,
            events_through: 9,
            inputs_digest: [7; 32],
            entries: vec![Id::generate()],
            replaces: None,
            replaced_by: None,
            billing_run: Some(Id::generate()),
            voided_at_ms: None,
            paid_at_ms: Some(3_000),
        };
        let notification = Notification {
            id: Id::generate(),
            tenant: tenant.0,
            event_type: "invoice.finalized".into(),
            sequence: 1,
            created_at_ms: 2_500,
            customer: Some(old.customer),
            subject: crate::notifications::outbox::Subject::of("invoice", old.id, &old)
                .expect("subject"),
        };
        {
            let store = Store::open(&path, 1 << 22).expect("open");
            let tx = store.begin_write().expect("write");
            put_record(
                &mut tx.open_table(tables::INVOICES).expect("invoices"),
                &keys::tenant_id(tenant, old.id),
                &old,
            )
            .expect("invoice");
            put_record(
                &mut tx.open_table(tables::NOTIFICATIONS).expect("notifications"),
                &keys::tenant_id(tenant, notification.id),
                &notification,
            )
            .expect("notification");
            tx.open_table(tables::META)
                .expect("meta")
                .insert("schema_version", 3u32.to_be_bytes().as_slice())
                .expect("version");
            tx.commit().expect("commit");
        }
        let store = crate::migrate::open(&path, 1 << 22).expect("migrate");
        let tx = store.read().expect("read");
        let invoice = crate::billing::invoice::get(&tx, tenant, old.id)
            .expect("decode")
            .expect("present");
        assert_eq!(invoice, Invoice::from(old.clone()));
        assert_eq!(invoice.number, None);
        assert_eq!(invoice.buyer, None);
        assert_eq!(invoice.subtotal_minor, 1_234);
        assert_eq!(invoice.tax_minor, 0);
        assert_eq!(invoice.total_minor, 1_234);
        assert!(invoice.tax_lines.is_empty());
        let n = crate::notifications::outbox::get(&tx, tenant, notification.id)
            .expect("read")
            .expect("present");
        let subject: Invoice = codec::decode(&n.subject.record).expect("new layout");
        assert_eq!(subject, invoice);
    }
}
