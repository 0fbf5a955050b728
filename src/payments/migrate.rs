//! Schema 2 → 3 for payments: records gain the fields of superseded attempts and held money,
//! and the simulated provider's charges gain their tenant index.
//!
//! Stored records are bincode, which is not self-describing, so a record of the old layout is
//! decoded as [`PaymentV2`] (frozen here, never changed again) and written back in the new one,
//! inside the transaction that opens the file.

use crate::store::{ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use super::payment::{Payment, PaymentStatus, RecoveryPoint, Refund};
use super::simulated::{tenant_index_key, SimCharge};
use crate::id::Id;
use crate::store::{codec, tables, StoreError};

/// A payment as schema 2 stored it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PaymentV2 {
    id: Id,
    tenant: u64,
    invoice: Id,
    customer: Id,
    attempt: u32,
    amount_minor: i64,
    currency: String,
    status: PaymentStatus,
    recovery_point: RecoveryPoint,
    psp: String,
    psp_key: String,
    provider_id: Option<String>,
    payment_method: Option<String>,
    failure: Option<(String, String)>,
    entry: Option<Id>,
    refunds: Vec<Refund>,
    scheduled_at_ms: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl From<PaymentV2> for Payment {
    fn from(old: PaymentV2) -> Self {
        let collected = old.status == PaymentStatus::Succeeded;
        Payment {
            received_minor: collected.then_some(old.amount_minor),
            received_currency: collected.then(|| old.currency.clone()),
            id: old.id,
            tenant: old.tenant,
            invoice: old.invoice,
            customer: old.customer,
            attempt: old.attempt,
            amount_minor: old.amount_minor,
            currency: old.currency,
            status: old.status,
            recovery_point: old.recovery_point,
            psp: old.psp,
            psp_key: old.psp_key,
            provider_id: old.provider_id,
            payment_method: old.payment_method,
            failure: old.failure,
            entry: old.entry,
            refunds: old.refunds,
            scheduled_at_ms: old.scheduled_at_ms,
            created_at_ms: old.created_at_ms,
            updated_at_ms: old.updated_at_ms,
            supersedes: None,
            held_reason: None,
        }
    }
}

/// Indexes every simulated charge under its tenant, found through the payment its record
/// names (a charge whose reply was lost has no provider id on its payment, but still names it).
fn index_simulated_charges(
    tx: &WriteTxn,
    tenant_of: &std::collections::HashMap<Id, u64>,
) -> Result<(), StoreError> {
    let mut found = Vec::new();
    {
        let sim = tx.open_table(tables::SIM_PSP)?;
        for entry in sim.range::<&[u8]>(b"charge:".as_slice()..b"charge;".as_slice())? {
            let (key, value) = entry?;
            let Ok(charge) = codec::decode::<SimCharge>(value.value()) else {
                continue;
            };
            let tenant = Id::parse(&charge.payment, super::payment::PREFIX)
                .and_then(|id| tenant_of.get(&id).copied());
            if let Some(tenant) = tenant {
                found.push((
                    tenant_index_key(tenant, &charge.provider_id),
                    key.value().to_vec(),
                ));
            }
        }
    }
    let mut sim = tx.open_table(tables::SIM_PSP)?;
    for (index, charge_key) in found {
        sim.insert(index.as_bytes(), charge_key.as_slice())?;
    }
    Ok(())
}

/// Rewrites every payment in the new layout and indexes the simulator's charges by tenant.
/// Returns how many payments it rewrote.
pub fn to_schema_3(tx: &WriteTxn) -> Result<u64, StoreError> {
    let mut rewritten = Vec::new();
    {
        let payments = tx.open_table(tables::PAYMENTS)?;
        for entry in payments.iter()? {
            let (key, value) = entry?;
            let old: PaymentV2 = codec::decode(value.value())?;
            rewritten.push((key.value().to_vec(), Payment::from(old)));
        }
    }
    let mut payments = tx.open_table(tables::PAYMENTS)?;
    let mut tenant_of = std::collections::HashMap::new();
    for (key, p) in &rewritten {
        crate::store::put_record(&mut payments, key, p)?;
        tenant_of.insert(p.id, p.tenant);
    }
    index_simulated_charges(tx, &tenant_of)?;
    Ok(rewritten.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{keys, Store, TenantId};

    #[test]
    fn a_schema_2_payment_reads_after_the_upgrade_with_its_simulated_charge_indexed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.redb");
        let tenant = TenantId(7);
        let old = PaymentV2 {
            id: Id::generate_at(1_000),
            tenant: tenant.0,
            invoice: Id::generate_at(1_000),
            customer: Id::generate_at(1_000),
            attempt: 1,
            amount_minor: 900,
            currency: "USD".into(),
            status: PaymentStatus::Succeeded,
            recovery_point: RecoveryPoint::OutcomeRecorded,
            psp: "simulated".into(),
            psp_key: "k1".into(),
            provider_id: None,
            payment_method: None,
            failure: None,
            entry: None,
            refunds: Vec::new(),
            scheduled_at_ms: 1_000,
            created_at_ms: 1_000,
            updated_at_ms: 1_000,
        };
        {
            let store = Store::open(&path, 1 << 22).expect("open");
            let tx = store.begin_write().expect("write");
            tx.open_table(tables::PAYMENTS)
                .expect("payments")
                .insert(
                    keys::tenant_id(tenant, old.id).as_slice(),
                    codec::encode(&old).expect("encode").as_slice(),
                )
                .expect("insert");
            let charge = SimCharge {
                provider_id: "sim_pi_k1".into(),
                amount_minor: 900,
                currency: "USD".into(),
                status: "succeeded".into(),
                payment: old.id.display(crate::payments::payment::PREFIX),
                created_s: 1,
                refunded_minor: 0,
            };
            tx.open_table(tables::SIM_PSP)
                .expect("sim")
                .insert(
                    b"charge:k1".as_slice(),
                    codec::encode(&charge).expect("encode").as_slice(),
                )
                .expect("charge");
            tx.open_table(tables::META)
                .expect("meta")
                .insert("schema_version", 2u32.to_be_bytes().as_slice())
                .expect("version");
            tx.commit().expect("commit");
        }
        assert!(
            matches!(
                Store::open(&path, 1 << 22),
                Err(crate::store::OpenError::OlderSchema { found: 2, .. })
            ),
            "the store alone refuses an older file"
        );
        let store = crate::migrate::open(&path, 1 << 22).expect("reopen migrates");
        let tx = store.read().expect("read");
        let p = crate::payments::payment::get(&tx, tenant, old.id)
            .expect("decodes")
            .expect("found");
        assert_eq!(p.status, PaymentStatus::Succeeded);
        assert_eq!(p.received_minor, Some(900));
        assert_eq!(p.supersedes, None);
        let sim = tx.open_table(tables::SIM_PSP).expect("sim");
        let index = tenant_index_key(tenant.0, "sim_pi_k1");
        assert!(sim.get(index.as_bytes()).expect("get").is_some());
    }
}
