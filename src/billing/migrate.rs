//! Schema 3 → 4: subscriptions gain their phases (the plan history) and trial fields; plans
//! say whether usage in a trial is billed.

use redb::{ReadableTable, WriteTransaction};

use super::plan;
use super::subscription::{Subscription, SubscriptionV3};
use crate::notifications::outbox::Notification;
use crate::store::{codec, put_record, tables, StoreError};

/// Rewrites every subscription in the new layout, its one phase being its plan from its start,
/// and every plan. Returns how many subscriptions were rewritten.
pub fn to_schema_4(tx: &WriteTransaction) -> Result<u64, StoreError> {
    let mut rewritten = Vec::new();
    {
        let subs = tx.open_table(tables::SUBSCRIPTIONS)?;
        for entry in subs.iter()? {
            let (key, value) = entry?;
            let old: SubscriptionV3 = codec::decode(value.value())?;
            rewritten.push((key.value().to_vec(), Subscription::from(old)));
        }
    }
    let mut subs = tx.open_table(tables::SUBSCRIPTIONS)?;
    for (key, sub) in &rewritten {
        put_record(&mut subs, key, sub)?;
    }
    drop(subs);
    let mut plans = Vec::new();
    {
        let table = tx.open_table(tables::PLANS)?;
        for entry in table.iter()? {
            let (key, value) = entry?;
            plans.push((key.value().to_vec(), plan::decode(value.value())?));
        }
    }
    let mut table = tx.open_table(tables::PLANS)?;
    for (key, plan) in &plans {
        put_record(&mut table, key, plan)?;
    }
    rewrite_subjects(tx, "subscription", |bytes| {
        let old: SubscriptionV3 = codec::decode(bytes)?;
        Ok(codec::encode(&Subscription::from(old))?)
    })?;
    Ok(rewritten.len() as u64)
}

/// Re-encodes the records recorded in notifications of one subject kind, so events recorded
/// before the upgrade still show their object.
fn rewrite_subjects(
    tx: &WriteTransaction,
    kind: &str,
    convert: impl Fn(&[u8]) -> Result<Vec<u8>, StoreError>,
) -> Result<(), StoreError> {
    let mut changed = Vec::new();
    {
        let table = tx.open_table(tables::NOTIFICATIONS)?;
        for entry in table.iter()? {
            let (key, value) = entry?;
            let mut n: Notification = codec::decode(value.value())?;
            if n.subject.kind == kind {
                n.subject.record = convert(&n.subject.record)?;
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
            let db = store.database().expect("db");
            let tx = db.begin_write().expect("write");
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
}
