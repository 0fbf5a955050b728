//! Event destinations: where a tenant wants its events delivered, with the secrets that sign
//! them. The records and their storage live here; creating, updating and rotating them are
//! commands of their own.

use crate::store::{ReadableTable, WriteTxn};
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

    /// The secrets that sign at `now_ms`: the previous one while it is inside its overlap,
    /// then the current one. Never more than two, whatever an older record still holds: a
    /// receiver checks every signature it is sent, and each extra secret is one more key
    /// that can still sign.
    pub fn signing_secrets(&self, now_ms: i64) -> Vec<&str> {
        let previous = self
            .secrets
            .iter()
            .rev()
            .find(|s| s.expires_at_ms.is_some_and(|e| e > now_ms));
        let current = self
            .secrets
            .iter()
            .rev()
            .find(|s| s.expires_at_ms.is_none());
        previous
            .into_iter()
            .chain(current)
            .map(|s| s.value.as_str())
            .collect()
    }

    /// Forgets the rotated-out secrets that no longer sign at `now_ms` (every write of the
    /// destination does this, so an expired secret is not kept).
    pub fn drop_expired_secrets(&mut self, now_ms: i64) {
        self.secrets
            .retain(|s| s.expires_at_ms.is_none_or(|e| e > now_ms));
    }

    /// Makes `secret` the current one. The secret it replaces keeps signing until
    /// `now_ms + overlap_ms`; any older one is dropped at once, so a second rotation during an
    /// overlap ends the first one's overlap: at most the current secret and one previous.
    pub fn rotate(&mut self, secret: String, now_ms: i64, overlap_ms: i64) {
        let until = now_ms.saturating_add(overlap_ms);
        let previous = self
            .secrets
            .iter()
            .rev()
            .find(|s| s.expires_at_ms.is_none())
            .cloned()
            .map(|s| Secret {
                expires_at_ms: Some(until),
                ..s
            })
            .filter(|_| until > now_ms);
        self.secrets = previous.into_iter().collect();
        self.secrets.push(Secret {
            value: secret,
            created_at_ms: now_ms,
            expires_at_ms: None,
        });
    }
}

/// Saves a destination.
pub fn save(tx: &WriteTxn, d: &Destination) -> Result<(), StoreError> {
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
    tx: &WriteTxn,
    tenant: TenantId,
    event_type: &str,
) -> Result<Vec<Destination>, StoreError> {
    let table = tx.open_table(tables::EVENT_DESTINATIONS)?;
    Ok(of_tenant(&table, tenant)?
        .into_iter()
        .filter(|d| d.wants(event_type))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(now_ms: i64) -> Destination {
        Destination {
            id: Id::generate_at(now_ms),
            tenant: 1,
            url: "https://example.com/hook".into(),
            event_types: vec!["*".into()],
            description: None,
            status: DestinationStatus::Enabled,
            secrets: vec![Secret {
                value: "whsec_0".into(),
                created_at_ms: now_ms,
                expires_at_ms: None,
            }],
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            failing_since_ms: None,
        }
    }

    #[test]
    fn three_rotations_keep_the_current_secret_and_the_one_before_only() {
        let t0 = 1_800_000_000_000;
        let overlap = 60_000;
        let mut d = destination(t0);
        for (i, at) in [(1, t0), (2, t0 + 10), (3, t0 + 20)] {
            d.rotate(format!("whsec_{i}"), at, overlap);
        }
        assert_eq!(d.secrets.len(), 2, "{:?}", d.secrets);
        assert_eq!(d.signing_secrets(t0 + 30), ["whsec_2", "whsec_3"]);
        assert_eq!(d.secrets[0].expires_at_ms, Some(t0 + 20 + overlap));
        // The overlap ends: only the current one signs, and the next write forgets the other.
        assert_eq!(d.signing_secrets(t0 + 20 + overlap), ["whsec_3"]);
        d.drop_expired_secrets(t0 + 20 + overlap);
        assert_eq!(d.secrets.len(), 1);
        // Without an overlap the previous secret stops at once.
        d.rotate("whsec_4".into(), t0 + overlap * 2, 0);
        assert_eq!(d.signing_secrets(t0 + overlap * 2), ["whsec_4"]);
        assert_eq!(d.secrets.len(), 1);
    }

    #[test]
    fn an_older_record_with_several_rotated_secrets_signs_with_two_at_most() {
        let t0 = 1_800_000_000_000;
        let mut d = destination(t0);
        d.secrets = (0..4)
            .map(|i| Secret {
                value: format!("whsec_{i}"),
                created_at_ms: t0 + i,
                expires_at_ms: (i < 3).then_some(t0 + 1000 + i),
            })
            .collect();
        assert_eq!(d.signing_secrets(t0 + 10), ["whsec_2", "whsec_3"]);
    }
}
