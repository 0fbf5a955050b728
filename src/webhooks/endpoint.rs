//! Webhook endpoints: where a provider delivers, with which signing scheme and secrets.
//!
//! Secrets must be usable to compute HMACs, so they are stored as configured (in the database
//! file, never logged, shown to the client once). Rotation adds a new secret and keeps the old
//! one valid until the overlap ends, so deliveries signed either way are accepted meanwhile.

use crate::store::ReadableTable;
use crate::store::{ReadTxn, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "whe";

/// The signing scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Provider {
    /// `Stripe-Signature`.
    Stripe,
    /// Standard Webhooks.
    Standard,
}

impl Provider {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Stripe => "stripe",
            Provider::Standard => "standard",
        }
    }

    /// Parses the API name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "stripe" => Some(Provider::Stripe),
            "standard" => Some(Provider::Standard),
            _ => None,
        }
    }
}

/// One signing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// The secret.
    pub value: String,
    /// Added.
    pub created_at_ms: i64,
    /// Stops being accepted (set when rotated out).
    pub expires_at_ms: Option<i64>,
}

/// An endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `whe_…`.
    pub id: Id,
    /// Whose.
    pub tenant: u64,
    /// Scheme.
    pub provider: Provider,
    /// Newest last.
    pub secrets: Vec<Secret>,
    /// Operator's note.
    pub description: Option<String>,
    /// Created.
    pub created_at_ms: i64,
}

impl Endpoint {
    /// Secrets accepted at `now_ms`.
    pub fn active_secrets(&self, now_ms: i64) -> Vec<&str> {
        self.secrets
            .iter()
            .filter(|s| s.expires_at_ms.is_none_or(|e| now_ms < e))
            .map(|s| s.value.as_str())
            .collect()
    }

    /// A recognisable, harmless hint of the current secret (`whsec_ab…yz`).
    pub fn secret_hint(&self) -> String {
        match self.secrets.last() {
            Some(s) if s.value.len() > 12 => {
                format!("{}…{}", &s.value[..8], &s.value[s.value.len() - 4..])
            }
            _ => String::from("…"),
        }
    }
}

/// Creates an endpoint.
#[derive(Clone)]
pub struct CreateEndpoint {
    /// The endpoint.
    pub endpoint: Endpoint,
}

impl Command for CreateEndpoint {
    type Output = Endpoint;

    fn apply(self, tx: &WriteTxn) -> Result<Endpoint, StoreError> {
        let e = self.endpoint;
        put_record(
            &mut tx.open_table(tables::WEBHOOK_ENDPOINTS)?,
            &e.id.to_bytes(),
            &e,
        )?;
        tx.open_table(tables::WEBHOOK_ENDPOINTS_BY_TENANT)?
            .insert(keys::tenant_id(TenantId(e.tenant), e.id).as_slice(), ())?;
        Ok(e)
    }
}

/// Why a rotation did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No such endpoint for this tenant.
    #[error("no webhook endpoint {0}")]
    Missing(String),
}

/// Rotates an endpoint's secret.
#[derive(Clone)]
pub struct RotateSecret {
    /// Whose.
    pub tenant: TenantId,
    /// Which.
    pub id: Id,
    /// The new secret.
    pub secret: String,
    /// Now.
    pub now_ms: i64,
    /// How long the previous secret stays valid.
    pub overlap_ms: i64,
}

impl Command for RotateSecret {
    type Output = Result<Endpoint, EndpointError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let mut table = tx.open_table(tables::WEBHOOK_ENDPOINTS)?;
        let found = get_record::<Endpoint, _>(&table, self.id.to_bytes())?;
        let Some(mut endpoint) = found.filter(|e| e.tenant == self.tenant.0) else {
            return Ok(Err(EndpointError::Missing(self.id.display(PREFIX))));
        };
        let until = self.now_ms.saturating_add(self.overlap_ms);
        for s in &mut endpoint.secrets {
            s.expires_at_ms = Some(s.expires_at_ms.map_or(until, |e| e.min(until)));
        }
        // Secrets past their overlap are of no use any more.
        endpoint
            .secrets
            .retain(|s| s.expires_at_ms.is_none_or(|e| e > self.now_ms));
        endpoint.secrets.push(Secret {
            value: self.secret,
            created_at_ms: self.now_ms,
            expires_at_ms: None,
        });
        put_record(&mut table, &endpoint.id.to_bytes(), &endpoint)?;
        Ok(Ok(endpoint))
    }
}

/// An endpoint by id, whoever owns it (the receiver knows only the id).
pub fn get_any(tx: &ReadTxn, id: Id) -> Result<Option<Endpoint>, StoreError> {
    let table = tx.open_table(tables::WEBHOOK_ENDPOINTS)?;
    get_record(&table, id.to_bytes())
}

/// An endpoint of a tenant.
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Endpoint>, StoreError> {
    Ok(get_any(tx, id)?.filter(|e| e.tenant == tenant.0))
}

/// A tenant's endpoints.
pub fn list(tx: &ReadTxn, tenant: TenantId) -> Result<Vec<Endpoint>, StoreError> {
    let index = tx.open_table(tables::WEBHOOK_ENDPOINTS_BY_TENANT)?;
    let table = tx.open_table(tables::WEBHOOK_ENDPOINTS)?;
    let (start, end) = keys::tenant_range(tenant);
    let mut out = Vec::new();
    for entry in index.range::<&[u8]>(start.as_slice()..end.as_slice())? {
        let (k, _) = entry?;
        if let Some(id) = keys::id_of(k.value()) {
            if let Some(v) = table.get(id.to_bytes().as_slice())? {
                out.push(codec::decode(v.value())?);
            }
        }
    }
    Ok(out)
}
