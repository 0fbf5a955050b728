//! A prepaid wallet top-up as stored, and its indexes.
//!
//! One record per top-up. Its `grant` field is the key that makes a second grant impossible:
//! [`super::settle`] issues the grant only while it is `None`, in the write that records the
//! payment's success, whichever channel reports it.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::ledger::grant::Category;
use crate::store::keys::{self, TenantId};
use crate::store::{get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "tup";

/// Where a top-up stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopUpStatus {
    /// Invoiced; its payment has not succeeded or failed yet.
    Pending,
    /// Paid (or free): its grant exists.
    Succeeded,
    /// Declined, or its invoice was voided: no grant.
    Failed,
}

impl TopUpStatus {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            TopUpStatus::Pending => "pending",
            TopUpStatus::Succeeded => "succeeded",
            TopUpStatus::Failed => "failed",
        }
    }
}

/// Who asked for a top-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// `POST /v1/customers/{id}/top-ups`.
    Api,
    /// The customer's auto-recharge rule.
    AutoRecharge,
}

impl Trigger {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::AutoRecharge => "auto_recharge",
        }
    }
}

/// A top-up as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUp {
    /// `tup_…`.
    pub id: Id,
    /// Whose wallet.
    pub customer: Id,
    /// ISO 4217 (the customer's).
    pub currency: String,
    /// Credit bought (and granted on success).
    pub amount_minor: i64,
    /// Bought (`true`: invoice and payment) or given (`false`: a promotional grant at once).
    pub paid: bool,
    /// The grant's category.
    pub category: Category,
    /// The grant's expiry, if any.
    pub expires_at_ms: Option<i64>,
    /// Lifecycle.
    pub status: TopUpStatus,
    /// Who asked for it.
    pub trigger: Trigger,
    /// Its invoice (paid top-ups).
    pub invoice: Option<Id>,
    /// The payment attempt opened with it; on success, the one that paid.
    pub payment: Option<Id>,
    /// The grant its success issued (at most one, ever).
    pub grant: Option<Id>,
    /// Why it failed.
    pub failure: Option<String>,
    /// Created.
    pub created_at_ms: i64,
    /// When it succeeded or failed.
    pub settled_at_ms: Option<i64>,
}

fn by_customer_key(tenant: TenantId, customer: Id, top_up: Id) -> Vec<u8> {
    let mut key = keys::tenant_id(tenant, customer).to_vec();
    key.extend_from_slice(&top_up.to_bytes());
    key
}

/// Stores a top-up (new or changed); a new one is also indexed by customer and invoice.
pub fn save(tx: &WriteTxn, tenant: TenantId, top_up: &TopUp) -> Result<(), StoreError> {
    put_record(
        &mut tx.open_table(tables::TOP_UPS)?,
        &keys::tenant_id(tenant, top_up.id),
        top_up,
    )?;
    tx.open_table(tables::TOP_UPS_BY_CUSTOMER)?.insert(
        by_customer_key(tenant, top_up.customer, top_up.id).as_slice(),
        (),
    )?;
    if let Some(invoice) = top_up.invoice {
        tx.open_table(tables::TOP_UP_BY_INVOICE)?.insert(
            keys::tenant_id(tenant, invoice).as_slice(),
            top_up.id.to_bytes().as_slice(),
        )?;
    }
    Ok(())
}

/// One top-up, from a write transaction.
pub fn load(tx: &WriteTxn, tenant: TenantId, id: Id) -> Result<Option<TopUp>, StoreError> {
    get_record(
        &tx.open_table(tables::TOP_UPS)?,
        keys::tenant_id(tenant, id),
    )
}

/// The top-up an invoice bills, from a write transaction.
pub fn of_invoice(
    tx: &WriteTxn,
    tenant: TenantId,
    invoice: Id,
) -> Result<Option<TopUp>, StoreError> {
    let id = {
        let index = tx.open_table(tables::TOP_UP_BY_INVOICE)?;
        let value = index.get(keys::tenant_id(tenant, invoice).as_slice())?;
        value
            .map(|v| {
                <[u8; 16]>::try_from(v.value())
                    .map(Id::from_bytes)
                    .map_err(|_| StoreError::Corrupt("malformed top-up index value".into()))
            })
            .transpose()?
    };
    match id {
        Some(id) => load(tx, tenant, id),
        None => Ok(None),
    }
}

/// One top-up, from a read snapshot.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<TopUp>, StoreError> {
    get_record(
        &tx.open_table(tables::TOP_UPS)?,
        keys::tenant_id(tenant, id),
    )
}

/// A page of a customer's top-ups, oldest first, after `after`.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    customer: Id,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<TopUp>, bool), StoreError> {
    let index = tx.open_table(tables::TOP_UPS_BY_CUSTOMER)?;
    let table = tx.open_table(tables::TOP_UPS)?;
    let lo = by_customer_key(
        tenant,
        customer,
        Id(after.map_or(0, |a| a.0.saturating_add(1))),
    );
    let hi = by_customer_key(tenant, customer, Id(u128::MAX));
    let mut out = Vec::new();
    for entry in index.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (key, _) = entry?;
        if out.len() == limit {
            return Ok((out, true));
        }
        let id = key
            .value()
            .get(24..40)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Id::from_bytes)
            .ok_or_else(|| StoreError::Corrupt("malformed top-up index key".into()))?;
        if let Some(t) = get_record(&table, keys::tenant_id(tenant, id))? {
            out.push(t);
        }
    }
    Ok((out, false))
}

/// Records a top-up's transition in the outbox (`top_up.succeeded`, `top_up.failed`).
pub fn emit(
    tx: &WriteTxn,
    tenant: TenantId,
    top_up: &TopUp,
    event_type: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    crate::notifications::outbox::emit(
        tx,
        tenant,
        crate::notifications::outbox::Effect {
            event_type,
            effect: format!("{}:{}", top_up.id.display(PREFIX), top_up.status.as_str()),
            customer: Some(top_up.customer),
            kind: "top_up",
            id: top_up.id,
            record: top_up,
        },
        now_ms,
    )
}
