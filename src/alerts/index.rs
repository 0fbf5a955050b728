//! The watch index: which active alerts a touched (customer, meter) or customer balance has,
//! answered with two short range reads, so a batch whose customers nobody watches pays almost
//! nothing.
//!
//! Key: (tenant, watch kind, meter id or zeros, customer id or zeros for "every customer",
//! alert id) → (). An archived alert's entries are removed in the write that archives it.

use crate::store::{ReadableTable, WriteTxn};

use super::{Alert, AlertKind};
use crate::id::Id;
use crate::store::keys::TenantId;
use crate::store::{tables, StoreError};

/// Watch kinds in the key: usage of one meter; the credit balance; and the values that any
/// usage of the customer may change (spend, entitlements), looked up without a meter.
const USAGE: u8 = 1;
const BALANCE: u8 = 2;
const ANY_USAGE: u8 = 3;
/// The customer slot of an alert for every customer.
const EVERY_CUSTOMER: Id = Id(0);

fn prefix(tenant: TenantId, kind: u8, meter: Id, customer: Id) -> Vec<u8> {
    let mut key = Vec::with_capacity(57);
    key.extend_from_slice(&tenant.to_bytes());
    key.push(kind);
    key.extend_from_slice(&meter.to_bytes());
    key.extend_from_slice(&customer.to_bytes());
    key
}

fn entry_key(tenant: TenantId, alert: &Alert) -> Vec<u8> {
    let (kind, meter) = match alert.kind {
        AlertKind::UsageExceeded { meter } => (USAGE, meter),
        AlertKind::SpendExceeded { .. } | AlertKind::EntitlementExhausted { .. } => {
            (ANY_USAGE, Id(0))
        }
        AlertKind::CreditBalanceBelow { .. } | AlertKind::CreditBalanceDepleted { .. } => {
            (BALANCE, Id(0))
        }
    };
    let mut key = prefix(
        tenant,
        kind,
        meter,
        alert.customer.unwrap_or(EVERY_CUSTOMER),
    );
    key.extend_from_slice(&alert.id.to_bytes());
    key
}

/// Adds an alert's entry.
pub fn add(tx: &WriteTxn, tenant: TenantId, alert: &Alert) -> Result<(), StoreError> {
    tx.open_table(tables::ALERT_WATCH)?
        .insert(entry_key(tenant, alert).as_slice(), ())?;
    Ok(())
}

/// Removes an alert's entry.
pub fn remove(tx: &WriteTxn, tenant: TenantId, alert: &Alert) -> Result<(), StoreError> {
    tx.open_table(tables::ALERT_WATCH)?
        .remove(entry_key(tenant, alert).as_slice())?;
    Ok(())
}

fn ids_under(
    index: &impl ReadableTable<&'static [u8], ()>,
    lo: &[u8],
    out: &mut Vec<Id>,
) -> Result<(), StoreError> {
    let mut hi = lo.to_vec();
    hi.extend_from_slice(&[0xFF; 17]);
    for entry in index.range::<&[u8]>(lo..hi.as_slice())? {
        let (key, _) = entry?;
        let id = key
            .value()
            .get(lo.len()..lo.len() + 16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Id::from_bytes)
            .ok_or_else(|| StoreError::Corrupt("malformed alert watch key".into()))?;
        out.push(id);
    }
    Ok(())
}

/// Whether the tenant has any active alert a usage touch (`balance` false) or a balance touch
/// may fire: short range reads that spare a tenant without alerts every per-customer lookup.
pub fn tenant_watches(
    index: &impl ReadableTable<&'static [u8], ()>,
    tenant: TenantId,
    balance: bool,
) -> Result<bool, StoreError> {
    let kinds: &[u8] = if balance {
        &[BALANCE]
    } else {
        &[USAGE, ANY_USAGE]
    };
    for kind in kinds {
        let mut lo = tenant.to_bytes().to_vec();
        lo.push(*kind);
        let mut hi = lo.clone();
        hi.extend_from_slice(&[0xFF; 49]);
        if index
            .range::<&[u8]>(lo.as_slice()..hi.as_slice())?
            .next()
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The active alerts that any usage of `customer` may fire (spend, entitlements).
pub fn any_usage_alerts(
    index: &impl ReadableTable<&'static [u8], ()>,
    tenant: TenantId,
    customer: Id,
) -> Result<Vec<Id>, StoreError> {
    let mut out = Vec::new();
    ids_under(index, &prefix(tenant, ANY_USAGE, Id(0), customer), &mut out)?;
    ids_under(
        index,
        &prefix(tenant, ANY_USAGE, Id(0), EVERY_CUSTOMER),
        &mut out,
    )?;
    Ok(out)
}

/// The active usage alerts of `meter` that watch `customer` (its own and every customer's).
pub fn usage_alerts(
    index: &impl ReadableTable<&'static [u8], ()>,
    tenant: TenantId,
    meter: Id,
    customer: Id,
) -> Result<Vec<Id>, StoreError> {
    let mut out = Vec::new();
    ids_under(index, &prefix(tenant, USAGE, meter, customer), &mut out)?;
    ids_under(
        index,
        &prefix(tenant, USAGE, meter, EVERY_CUSTOMER),
        &mut out,
    )?;
    Ok(out)
}

/// The active balance alerts that watch `customer`.
pub fn balance_alerts(
    index: &impl ReadableTable<&'static [u8], ()>,
    tenant: TenantId,
    customer: Id,
) -> Result<Vec<Id>, StoreError> {
    let mut out = Vec::new();
    ids_under(index, &prefix(tenant, BALANCE, Id(0), customer), &mut out)?;
    ids_under(
        index,
        &prefix(tenant, BALANCE, Id(0), EVERY_CUSTOMER),
        &mut out,
    )?;
    Ok(out)
}
