//! Event destinations: where a tenant wants its events delivered, with the secrets that sign
//! them. The records and their storage live here; creating, updating and rotating them are
//! commands of their own.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::{codec, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "evd";

/// Whether a destination receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DestinationStatus {
    /// Receives the events it subscribes to.
    Enabled,
    /// Receives nothing (by request, or after failing continuously).
    Disabled,
}

impl DestinationStatus {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationStatus::Enabled => "enabled",
            DestinationStatus::Disabled => "disabled",
        }
    }
}

/// One signing secret (`whsec_` + base64 of 32 random bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// `whsec_…`.
    pub value: String,
    /// Created.
    pub created_at_ms: i64,
    /// When a rotated-out secret stops signing (`None` for the current one).
    pub expires_at_ms: Option<i64>,
}

/// A destination as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// `evd_…`.
    pub id: Id,
    /// Whose.
    pub tenant: u64,
    /// `https://…` (or `http://…` where allowed).
    pub url: String,
    /// Catalogue types, or `["*"]` for all.
    pub event_types: Vec<String>,
    /// Free text.
    pub description: Option<String>,
    /// Enabled or disabled.
    pub status: DestinationStatus,
    /// The current secret last; older ones sign until they expire.
    pub secrets: Vec<Secret>,
    /// Created.
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
    /// Since when every delivery has failed (`None` while the last one succeeded).
    pub failing_since_ms: Option<i64>,
}

impl Destination {
    /// Whether it wants events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.status == DestinationStatus::Enabled
            && self.event_types.iter().any(|t| t == "*" || t == event_type)
    }

    /// The secrets that sign at `now_ms`: the current one and any rotated-out one still in
    /// its overlap.
    pub fn signing_secrets(&self, now_ms: i64) -> Vec<&str> {
        self.secrets
            .iter()
            .filter(|s| s.expires_at_ms.is_none_or(|e| e > now_ms))
            .map(|s| s.value.as_str())
            .collect()
    }
}

/// Saves a destination.
pub fn save(tx: &WriteTransaction, d: &Destination) -> Result<(), StoreError> {
    crate::store::put_record(
        &mut tx.open_table(tables::EVENT_DESTINATIONS)?,
        &keys::tenant_id(TenantId(d.tenant), d.id),
        d,
    )
}

/// The tenant's destinations, in creation order.
pub fn of_tenant(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
) -> Result<Vec<Destination>, StoreError> {
    let (start, end) = keys::tenant_range(tenant);
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(start.as_slice()..end.as_slice())? {
        let (_, v) = entry?;
        out.push(codec::decode(v.value())?);
    }
    Ok(out)
}

/// The enabled destinations of the tenant that want `event_type`.
pub fn subscribed(
    tx: &WriteTransaction,
    tenant: TenantId,
    event_type: &str,
) -> Result<Vec<Destination>, StoreError> {
    let table = tx.open_table(tables::EVENT_DESTINATIONS)?;
    Ok(of_tenant(&table, tenant)?
        .into_iter()
        .filter(|d| d.wants(event_type))
        .collect())
}
