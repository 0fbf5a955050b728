//! Purging derived identities that can no longer match.
//!
//! An event without an id is identified by its payload hash within a time window, indexed by
//! (tenant, window bucket, hash). Stable ids are remembered forever, but a derived identity only
//! matters while an event it could match can still be accepted: once its bucket lies beyond
//! [`crate::config::IngestConfig::derived_identity_horizon_ms`], every lookup misses it anyway,
//! so the index row is dead weight. The events themselves stay; only the index shrinks.

use crate::store::{ReadableTable, WriteTxn};

use crate::store::keys::{self, time_bytes};
use crate::store::writer::Command;
use crate::store::{tables, StoreError};

/// Deletes up to `limit` derived-identity rows whose bucket starts before `horizon_ms`, tenant
/// by tenant; returns how many. Bounded so one pass never holds the writer for long; the purge
/// task repeats until a pass deletes fewer than `limit`.
#[derive(Clone)]
pub struct PurgeDerivedIdentities {
    /// Buckets starting before this instant go.
    pub horizon_ms: i64,
    /// Most rows per pass.
    pub limit: usize,
}

impl Command for PurgeDerivedIdentities {
    type Output = usize;

    fn apply(self, tx: &WriteTxn) -> Result<usize, StoreError> {
        let mut index = tx.open_table(tables::EVENT_DERIVED)?;
        let mut due: Vec<Vec<u8>> = Vec::new();
        // Keys are (tenant u64 BE, bucket, hash): walk tenant prefixes, taking each tenant's
        // rows below the horizon, and jump to the next tenant.
        let mut next_tenant: Option<u64> = Some(0);
        while let Some(tenant) = next_tenant {
            if due.len() >= self.limit {
                break;
            }
            let from = tenant.to_be_bytes();
            let first = match index.range::<&[u8]>(from.as_slice()..)?.next() {
                Some(entry) => entry?.0.value().to_vec(),
                None => break,
            };
            let found = keys::tenant_of(&first)
                .ok_or_else(|| StoreError::Corrupt("malformed derived identity key".into()))?
                .0;
            let mut upper = found.to_be_bytes().to_vec();
            upper.extend_from_slice(&time_bytes(self.horizon_ms));
            for entry in index
                .range::<&[u8]>(first.as_slice()..upper.as_slice())?
                .take(self.limit - due.len())
            {
                due.push(entry?.0.value().to_vec());
            }
            next_tenant = found.checked_add(1);
        }
        for key in &due {
            index.remove(key.as_slice())?;
        }
        Ok(due.len())
    }
}
