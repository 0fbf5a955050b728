//! Firings: one row per (alert, customer, window, threshold), written with its `alert.triggered`
//! notification in the transaction that crossed the threshold.
//!
//! `alert_firing_keys` (tenant, alert, customer, window start, threshold index) → firing id is
//! the identity that makes a second firing impossible; `alert_firings` (tenant, alert, firing
//! id) holds the record in time order for listing.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::decimal::Stored;
use crate::id::Id;
use crate::notifications::outbox::{self, Effect};
use crate::store::keys::{self, time_bytes, TenantId};
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix of a firing.
pub const PREFIX: &str = "alf";
/// The notification subject kind.
pub const KIND: &str = "alert_firing";

/// A threshold that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firing {
    /// `alf_…`.
    pub id: Id,
    /// Which alert.
    pub alert: Id,
    /// Whose value crossed.
    pub customer: Id,
    /// The alert's type, as the API names it.
    pub alert_type: String,
    /// Position in the alert's thresholds.
    pub threshold_index: u8,
    /// The threshold.
    pub threshold: Stored,
    /// The value that crossed it.
    pub value: Stored,
    /// The currency of a balance alert.
    pub currency: Option<String>,
    /// The window's start: the billing period's for usage; for balances the instant the
    /// threshold was (re-)armed.
    pub window_start_ms: i64,
    /// The window's end: the period's end for usage; for balances when it re-armed.
    pub window_end_ms: Option<i64>,
    /// When it fired (the crossing write's time).
    pub triggered_at_ms: i64,
    /// A balance that rose back to or above the threshold: when and to what.
    pub recovered: Option<(i64, Stored)>,
}

/// The identity key of a firing.
pub fn identity(
    tenant: TenantId,
    alert: Id,
    customer: Id,
    window_start_ms: i64,
    threshold_index: u8,
) -> Vec<u8> {
    let mut key = keys::tenant_id(tenant, alert).to_vec();
    key.extend_from_slice(&customer.to_bytes());
    key.extend_from_slice(&time_bytes(window_start_ms));
    key.push(threshold_index);
    key
}

fn record_key(tenant: TenantId, alert: Id, firing: Id) -> Vec<u8> {
    let mut key = keys::tenant_id(tenant, alert).to_vec();
    key.extend_from_slice(&firing.to_bytes());
    key
}

/// The firing of `identity`, if any, inside a write.
pub fn find(
    tx: &WriteTxn,
    tenant: TenantId,
    alert: Id,
    identity_key: &[u8],
) -> Result<Option<Firing>, StoreError> {
    let Some(id) = tx
        .open_table(tables::ALERT_FIRING_KEYS)?
        .get(identity_key)?
        .and_then(|v| <[u8; 16]>::try_from(v.value()).ok())
        .map(Id::from_bytes)
    else {
        return Ok(None);
    };
    get_record(
        &tx.open_table(tables::ALERT_FIRINGS)?,
        record_key(tenant, alert, id),
    )
}

/// Writes a new firing, its identity and its `alert.triggered` notification.
pub fn record(tx: &WriteTxn, tenant: TenantId, firing: &Firing) -> Result<(), StoreError> {
    let identity_key = identity(
        tenant,
        firing.alert,
        firing.customer,
        firing.window_start_ms,
        firing.threshold_index,
    );
    tx.open_table(tables::ALERT_FIRING_KEYS)?
        .insert(identity_key.as_slice(), firing.id.to_bytes().as_slice())?;
    save(tx, tenant, firing)?;
    outbox::emit(
        tx,
        tenant,
        Effect {
            event_type: "alert.triggered",
            effect: format!("{}:triggered", firing.id.display(PREFIX)),
            customer: Some(firing.customer),
            kind: KIND,
            id: firing.id,
            record: firing,
        },
        firing.triggered_at_ms,
    )
}

/// Marks a balance firing recovered and records `credit_balance.recovered`.
pub fn recover(
    tx: &WriteTxn,
    tenant: TenantId,
    firing: &mut Firing,
    value: Stored,
    at_ms: i64,
) -> Result<(), StoreError> {
    firing.recovered = Some((at_ms, value));
    firing.window_end_ms = Some(at_ms);
    save(tx, tenant, firing)?;
    outbox::emit(
        tx,
        tenant,
        Effect {
            event_type: "credit_balance.recovered",
            effect: format!("{}:recovered", firing.id.display(PREFIX)),
            customer: Some(firing.customer),
            kind: KIND,
            id: firing.id,
            record: &*firing,
        },
        at_ms,
    )
}

fn save(tx: &WriteTxn, tenant: TenantId, firing: &Firing) -> Result<(), StoreError> {
    put_record(
        &mut tx.open_table(tables::ALERT_FIRINGS)?,
        &record_key(tenant, firing.alert, firing.id),
        firing,
    )
}

/// Every firing of an alert, oldest first (tests and the simulation compare them).
pub fn all_of(
    firings: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    alert: Id,
) -> Result<Vec<Firing>, StoreError> {
    let lo = record_key(tenant, alert, Id(0));
    let hi = record_key(tenant, alert, Id(u128::MAX));
    let mut out = Vec::new();
    for entry in firings.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (_, value) = entry?;
        out.push(codec::decode(value.value())?);
    }
    Ok(out)
}

/// A page of an alert's firings, oldest first, optionally of one customer.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    alert: Id,
    customer: Option<Id>,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Firing>, bool), StoreError> {
    let table = tx.open_table(tables::ALERT_FIRINGS)?;
    let lo = match after {
        Some(id) => {
            let mut k = record_key(tenant, alert, id);
            k.push(0);
            k
        }
        None => record_key(tenant, alert, Id(0)),
    };
    let hi = record_key(tenant, alert, Id(u128::MAX));
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (_, value) = entry?;
        let firing: Firing = codec::decode(value.value())?;
        if customer.is_some_and(|c| c != firing.customer) {
            continue;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(firing);
    }
    Ok((out, false))
}
