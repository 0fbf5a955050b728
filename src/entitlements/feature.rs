//! Features: the named capabilities entitlements grant. A feature has a key unique per tenant
//! (what applications ask about) and a display name; archiving one stops new entitlements,
//! overrides and grants from naming it while the existing ones keep answering.

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::store::keys::{self, tenant_bytes, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "feat";
/// Longest key, in bytes (keys are ASCII).
pub const MAX_KEY_BYTES: usize = 64;

/// A feature as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    /// `feat_…`.
    pub id: Id,
    /// Unique per tenant: `[a-z0-9_.-]{1,64}`.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Created.
    pub created_at_ms: i64,
    /// When it stopped being assignable.
    pub archived_at_ms: Option<i64>,
}

/// Whether `key` is a valid feature key: 1-64 characters of `[a-z0-9_.-]`.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// Why a feature command did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    /// The key is taken.
    #[error("a feature with key {key:?} already exists ({existing})")]
    Exists {
        /// The key.
        key: String,
        /// The feature that has it.
        existing: String,
    },
    /// No such feature.
    #[error("no feature {0}")]
    Missing(String),
}

/// Creates a feature (the caller checked its fields).
#[derive(Clone)]
pub struct CreateFeature {
    /// Owner.
    pub tenant: TenantId,
    /// The feature, id and time assigned.
    pub feature: Feature,
}

impl Command for CreateFeature {
    type Output = Result<Feature, FeatureError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let index_key = tenant_bytes(self.tenant, self.feature.key.as_bytes());
        let mut by_key = tx.open_table(tables::FEATURE_BY_KEY)?;
        if let Some(existing) = id_value(
            by_key
                .get(index_key.as_slice())?
                .map(|v| v.value().to_vec()),
        ) {
            return Ok(Err(FeatureError::Exists {
                key: self.feature.key,
                existing: existing.display(PREFIX),
            }));
        }
        by_key.insert(index_key.as_slice(), self.feature.id.to_bytes().as_slice())?;
        put_record(
            &mut tx.open_table(tables::FEATURES)?,
            &keys::tenant_id(self.tenant, self.feature.id),
            &self.feature,
        )?;
        Ok(Ok(self.feature))
    }
}

/// Archives a feature; archiving an archived feature answers it as it is.
#[derive(Clone)]
pub struct ArchiveFeature {
    /// Owner.
    pub tenant: TenantId,
    /// Which feature.
    pub id: Id,
    /// Now.
    pub now_ms: i64,
}

impl Command for ArchiveFeature {
    type Output = Result<Feature, FeatureError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let mut table = tx.open_table(tables::FEATURES)?;
        let key = keys::tenant_id(self.tenant, self.id);
        let Some(mut feature) = get_record::<Feature, _>(&table, key)? else {
            return Ok(Err(FeatureError::Missing(self.id.display(PREFIX))));
        };
        if feature.archived_at_ms.is_none() {
            feature.archived_at_ms = Some(self.now_ms);
            put_record(&mut table, &key, &feature)?;
        }
        Ok(Ok(feature))
    }
}

fn id_value(bytes: Option<Vec<u8>>) -> Option<Id> {
    bytes
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map(Id::from_bytes)
}

/// A feature by id (`feat_…`) or key, from any transaction's tables.
pub fn resolve(
    features: &impl ReadableTable<&'static [u8], &'static [u8]>,
    by_key: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    reference: &str,
) -> Result<Option<Feature>, StoreError> {
    if let Some(id) = Id::parse(reference, PREFIX) {
        if let Some(f) = get_record(features, keys::tenant_id(tenant, id))? {
            return Ok(Some(f));
        }
    }
    if !valid_key(reference) {
        return Ok(None);
    }
    let id = id_value(
        by_key
            .get(tenant_bytes(tenant, reference.as_bytes()).as_slice())?
            .map(|v| v.value().to_vec()),
    );
    match id {
        Some(id) => get_record(features, keys::tenant_id(tenant, id)),
        None => Ok(None),
    }
}

/// A feature by id or key, over a read snapshot.
pub fn find(
    tx: &ReadTxn,
    tenant: TenantId,
    reference: &str,
) -> Result<Option<Feature>, StoreError> {
    resolve(
        &tx.open_table(tables::FEATURES)?,
        &tx.open_table(tables::FEATURE_BY_KEY)?,
        tenant,
        reference,
    )
}

/// A page of features in creation order after `after`, and whether more follow.
pub fn list(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Feature>, bool), StoreError> {
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after {
        Some(id) => {
            let mut k = keys::tenant_id(tenant, id).to_vec();
            k.push(0);
            k
        }
        None => start,
    };
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
        let (_, value) = entry?;
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(codec::decode(value.value())?);
    }
    Ok((out, false))
}

#[cfg(test)]
mod key_tests {
    use super::valid_key;

    #[test]
    fn keys_are_short_lower_case_words() {
        assert!(valid_key("gpt-4.turbo_v2"));
        assert!(valid_key(&"a".repeat(64)));
        for bad in ["", "GPT", "a b", "é", &"a".repeat(65)] {
            assert!(!valid_key(bad), "{bad:?}");
        }
    }
}
