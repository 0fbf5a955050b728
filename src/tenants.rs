//! Tenants and their API keys.
//!
//! A tenant is the unit of isolation: every row is keyed by tenant first, and the API key a
//! request carries is the only way to name one. Keys are stored as blake3 hashes (a stolen
//! database file yields no usable key); the table is indexed by the first half of the hash and
//! the full hash is compared in constant time. Keys are revocable by their public id (`key_…`).

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::id::Id;
use crate::store::writer::Command;
use crate::store::{next_counter, put_record, tables, StoreError, TenantId};

/// The public prefix of API key ids.
pub const KEY_ID_PREFIX: &str = "key";
/// Every API key secret starts with this, so a leaked one is recognisable in code scanners.
pub const SECRET_PREFIX: &str = "tally_sk_";
/// Longest tenant name accepted.
pub const MAX_TENANT_NAME_CHARS: usize = 64;

/// A tenant as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    /// Internal number, the prefix of every key of this tenant's rows.
    pub id: u64,
    /// Unique operator-facing name.
    pub name: String,
    /// When it was created.
    pub created_at_ms: i64,
}

/// An API key as stored: never the secret, only its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public id, used to revoke.
    pub id: Id,
    /// Whose key it is.
    pub tenant: u64,
    /// blake3 of the secret.
    pub secret_hash: [u8; 32],
    /// When it was created.
    pub created_at_ms: i64,
    /// Set once revoked; a revoked key authenticates nothing.
    pub revoked_at_ms: Option<i64>,
    /// A read-only key reads everything its tenant can and writes nothing: every request that
    /// would change state is refused with 403 `read_only_key` (support staff, dashboards).
    pub read_only: bool,
    /// The operator's name for the key ("ci", "support console"); may be empty.
    pub label: String,
}

/// The layout of keys stored before keys could be read-only or labelled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ApiKeyV1 {
    id: Id,
    tenant: u64,
    secret_hash: [u8; 32],
    created_at_ms: i64,
    revoked_at_ms: Option<i64>,
}

/// Decodes a stored key of either layout (older keys are read-write and unlabelled).
pub fn decode_key(bytes: &[u8]) -> Result<ApiKey, StoreError> {
    if let Ok(key) = crate::store::codec::decode::<ApiKey>(bytes) {
        return Ok(key);
    }
    let old: ApiKeyV1 = crate::store::codec::decode(bytes)?;
    Ok(ApiKey {
        id: old.id,
        tenant: old.tenant,
        secret_hash: old.secret_hash,
        created_at_ms: old.created_at_ms,
        revoked_at_ms: old.revoked_at_ms,
        read_only: false,
        label: String::new(),
    })
}

/// Who a presented key speaks for: its tenant, the key itself, and what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPrincipal {
    /// The key's tenant.
    pub tenant: TenantId,
    /// The key's public id (sessions remember it to notice a revocation).
    pub key_id: Id,
    /// Whether the key may only read.
    pub read_only: bool,
}

/// Longest key label accepted.
pub const MAX_KEY_LABEL_CHARS: usize = 64;

/// A freshly minted key: the only moment the secret exists outside the client.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The key's public id.
    pub id: Id,
    /// The secret to hand to the operator, once.
    pub secret: String,
    /// Whether the key may only read.
    pub read_only: bool,
    /// The operator's name for it.
    pub label: String,
}

/// Why a tenant or key operation did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// The name is taken.
    #[error("tenant {0:?} already exists")]
    Exists(String),
    /// No such tenant.
    #[error("no tenant named {0:?}")]
    UnknownTenant(String),
    /// No such key.
    #[error("no API key with id {0}")]
    UnknownKey(String),
    /// The key was already revoked.
    #[error("API key {0} is already revoked")]
    AlreadyRevoked(String),
    /// The name is empty, too long, or has characters other than letters, digits, `-` and `_`.
    #[error(
        "tenant names are 1-{MAX_TENANT_NAME_CHARS} characters of letters, digits, '-' and '_'"
    )]
    BadName,
    /// The key's label is too long or has control characters.
    #[error("key labels are 0-{MAX_KEY_LABEL_CHARS} characters without control characters")]
    BadLabel,
}

/// Whether a key label is acceptable.
pub fn valid_label(label: &str) -> bool {
    label.chars().count() <= MAX_KEY_LABEL_CHARS && !label.chars().any(char::is_control)
}

/// Generates a key secret from 32 random bytes; the command that stores it receives only what
/// it must persist, so applying stays deterministic.
pub fn generate_key() -> Result<NewKey, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let mut secret = String::from(SECRET_PREFIX);
    for b in bytes {
        secret.push_str(&format!("{b:02x}"));
    }
    Ok(NewKey {
        id: Id::generate(),
        secret,
        read_only: false,
        label: String::new(),
    })
}

fn hash_secret(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

/// The index key of a hash: its first 16 bytes. The remaining bytes are checked in constant
/// time after the lookup.
fn index_key(hash: &[u8; 32]) -> &[u8] {
    &hash[..16]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_TENANT_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Resolves a presented secret to its principal, or `None` for an unknown or revoked key.
pub fn authenticate(tx: &ReadTxn, secret: &str) -> Result<Option<KeyPrincipal>, StoreError> {
    let hash = hash_secret(secret);
    let table = tx.open_table(tables::API_KEYS)?;
    let Some(bytes) = table.get(index_key(&hash))? else {
        return Ok(None);
    };
    let key = decode_key(bytes.value())?;
    let matches: bool = key.secret_hash.ct_eq(&hash).into();
    if !matches || key.revoked_at_ms.is_some() {
        return Ok(None);
    }
    Ok(Some(KeyPrincipal {
        tenant: TenantId(key.tenant),
        key_id: key.id,
        read_only: key.read_only,
    }))
}

/// The key with this public id, revoked or not (`None` when there is no such key).
pub fn key_by_id(tx: &ReadTxn, key_id: Id) -> Result<Option<ApiKey>, StoreError> {
    let ids = tx.open_table(tables::API_KEY_IDS)?;
    let Some(index) = ids.get(key_id.to_bytes().as_slice())? else {
        return Ok(None);
    };
    let keys = tx.open_table(tables::API_KEYS)?;
    let found = keys.get(index.value())?;
    found.map(|bytes| decode_key(bytes.value())).transpose()
}

/// Every tenant, in creation order, with how many active keys each has.
pub fn list(tx: &ReadTxn) -> Result<Vec<(Tenant, usize)>, StoreError> {
    let tenants = tx.open_table(tables::TENANTS)?;
    let keys = tx.open_table(tables::API_KEYS)?;
    let mut active: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for entry in keys.iter()? {
        let (_, value) = entry?;
        let key = decode_key(value.value())?;
        if key.revoked_at_ms.is_none() {
            *active.entry(key.tenant).or_default() += 1;
        }
    }
    let mut out = Vec::new();
    for entry in tenants.iter()? {
        let (_, value) = entry?;
        let tenant: Tenant = crate::store::codec::decode(value.value())?;
        let count = active.get(&tenant.id).copied().unwrap_or(0);
        out.push((tenant, count));
    }
    Ok(out)
}

/// The tenant's name, `None` when there is no such tenant.
pub fn tenant_name(tx: &ReadTxn, tenant: TenantId) -> Result<Option<String>, StoreError> {
    let tenants = tx.open_table(tables::TENANTS)?;
    let found = tenants.get(tenant.0.to_be_bytes().as_slice())?;
    found
        .map(|v| crate::store::codec::decode::<Tenant>(v.value()).map(|t| t.name))
        .transpose()
        .map_err(StoreError::from)
}

/// Whether the database has no tenant yet (first start).
pub fn is_empty(tx: &ReadTxn) -> Result<bool, StoreError> {
    tx.open_table(tables::TENANTS)?.is_empty()
}

fn store_key(tx: &WriteTxn, tenant: u64, key: &NewKey, now_ms: i64) -> Result<ApiKey, StoreError> {
    let hash = hash_secret(&key.secret);
    let record = ApiKey {
        id: key.id,
        tenant,
        secret_hash: hash,
        created_at_ms: now_ms,
        revoked_at_ms: None,
        read_only: key.read_only,
        label: key.label.clone(),
    };
    let mut keys = tx.open_table(tables::API_KEYS)?;
    put_record(&mut keys, index_key(&hash), &record)?;
    let mut ids = tx.open_table(tables::API_KEY_IDS)?;
    ids.insert(key.id.to_bytes().as_slice(), index_key(&hash))?;
    Ok(record)
}

fn tenant_by_name(tx: &WriteTxn, name: &str) -> Result<Option<u64>, StoreError> {
    let by_name = tx.open_table(tables::TENANT_BY_NAME)?;
    let found = by_name
        .get(name)?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map(u64::from_be_bytes);
    Ok(found)
}

/// Creates a tenant together with its first API key.
#[derive(Clone)]
pub struct CreateTenant {
    /// Unique name.
    pub name: String,
    /// Its first key (generated by the caller).
    pub key: NewKey,
    /// Creation time.
    pub now_ms: i64,
}

impl Command for CreateTenant {
    type Output = Result<Tenant, TenantError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        if !valid_name(&self.name) {
            return Ok(Err(TenantError::BadName));
        }
        if tenant_by_name(tx, &self.name)?.is_some() {
            return Ok(Err(TenantError::Exists(self.name)));
        }
        let id = next_counter(tx, "next_tenant_id")?;
        let tenant = Tenant {
            id,
            name: self.name,
            created_at_ms: self.now_ms,
        };
        let mut tenants = tx.open_table(tables::TENANTS)?;
        put_record(&mut tenants, &id.to_be_bytes(), &tenant)?;
        let mut by_name = tx.open_table(tables::TENANT_BY_NAME)?;
        by_name.insert(tenant.name.as_str(), id.to_be_bytes().as_slice())?;
        store_key(tx, id, &self.key, self.now_ms)?;
        Ok(Ok(tenant))
    }
}

/// Adds an API key to an existing tenant.
#[derive(Clone)]
pub struct CreateKey {
    /// The tenant's name.
    pub tenant_name: String,
    /// The key (generated by the caller).
    pub key: NewKey,
    /// Creation time.
    pub now_ms: i64,
}

impl Command for CreateKey {
    type Output = Result<(), TenantError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        if !valid_label(&self.key.label) {
            return Ok(Err(TenantError::BadLabel));
        }
        let Some(tenant) = tenant_by_name(tx, &self.tenant_name)? else {
            return Ok(Err(TenantError::UnknownTenant(self.tenant_name)));
        };
        store_key(tx, tenant, &self.key, self.now_ms)?;
        Ok(Ok(()))
    }
}

/// Revokes a key by its public id; it stops authenticating at once.
#[derive(Clone)]
pub struct RevokeKey {
    /// The `key_…` id as typed by the operator.
    pub key_id: String,
    /// Revocation time.
    pub now_ms: i64,
}

impl Command for RevokeKey {
    type Output = Result<(), TenantError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(id) = Id::parse(&self.key_id, KEY_ID_PREFIX) else {
            return Ok(Err(TenantError::UnknownKey(self.key_id)));
        };
        match revoke(tx, id, None, self.now_ms)? {
            Ok(Revoked::Now(_)) => Ok(Ok(())),
            Ok(Revoked::Before(_)) => Ok(Err(TenantError::AlreadyRevoked(self.key_id))),
            Err(e) => Ok(Err(e)),
        }
    }
}

/// What revoking a key came to.
#[derive(Debug, Clone)]
pub enum Revoked {
    /// Revoked by this command.
    Now(ApiKey),
    /// It was revoked already; unchanged.
    Before(ApiKey),
}

/// Revokes the key with this id; with `tenant`, only if it is that tenant's (another tenant's
/// key is reported unknown, so a tenant cannot learn that it exists).
fn revoke(
    tx: &WriteTxn,
    id: Id,
    tenant: Option<TenantId>,
    now_ms: i64,
) -> Result<Result<Revoked, TenantError>, StoreError> {
    let unknown = || TenantError::UnknownKey(id.display(KEY_ID_PREFIX));
    let index = {
        let ids = tx.open_table(tables::API_KEY_IDS)?;
        let found = ids
            .get(id.to_bytes().as_slice())?
            .map(|v| v.value().to_vec());
        found
    };
    let Some(index) = index else {
        return Ok(Err(unknown()));
    };
    let mut keys = tx.open_table(tables::API_KEYS)?;
    let found = keys.get(index.as_slice())?.map(|v| decode_key(v.value()));
    let Some(mut key) = found.transpose()? else {
        return Err(StoreError::Corrupt(format!(
            "key id {} has no key",
            id.display(KEY_ID_PREFIX)
        )));
    };
    if tenant.is_some_and(|t| t.0 != key.tenant) {
        return Ok(Err(unknown()));
    }
    if key.revoked_at_ms.is_some() {
        return Ok(Ok(Revoked::Before(key)));
    }
    key.revoked_at_ms = Some(now_ms);
    put_record(&mut keys, &index, &key)?;
    Ok(Ok(Revoked::Now(key)))
}

/// Adds a key to a tenant known by its number (the API, where the caller's key names the
/// tenant); answers the stored key (never the secret).
#[derive(Clone)]
pub struct CreateTenantKey {
    /// Whose key.
    pub tenant: TenantId,
    /// The key (generated by the caller, who alone keeps the secret).
    pub key: NewKey,
    /// Creation time.
    pub now_ms: i64,
}

impl Command for CreateTenantKey {
    type Output = Result<ApiKey, TenantError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        if !valid_label(&self.key.label) {
            return Ok(Err(TenantError::BadLabel));
        }
        Ok(Ok(store_key(tx, self.tenant.0, &self.key, self.now_ms)?))
    }
}

/// Revokes one of a tenant's keys by id: it authenticates nothing from the commit on. Revoking
/// a revoked key changes nothing and answers it as it is.
#[derive(Clone)]
pub struct RevokeTenantKey {
    /// Whose key it must be.
    pub tenant: TenantId,
    /// The key's public id.
    pub key_id: Id,
    /// Revocation time.
    pub now_ms: i64,
}

impl Command for RevokeTenantKey {
    type Output = Result<ApiKey, TenantError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        Ok(
            revoke(tx, self.key_id, Some(self.tenant), self.now_ms)?.map(|r| match r {
                Revoked::Now(k) | Revoked::Before(k) => k,
            }),
        )
    }
}

/// One page of a tenant's keys in creation order, after `after`: up to `limit` keys and
/// whether more follow. Walks the id index (time-ordered) and skips other tenants' keys.
pub fn list_keys(
    tx: &ReadTxn,
    tenant: TenantId,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<ApiKey>, bool), StoreError> {
    let ids = tx.open_table(tables::API_KEY_IDS)?;
    let keys = tx.open_table(tables::API_KEYS)?;
    let start = after.map(|a| a.to_bytes());
    let range = match &start {
        Some(s) => ids.range::<&[u8]>((
            std::ops::Bound::Excluded(s.as_slice()),
            std::ops::Bound::Unbounded,
        ))?,
        None => ids.range::<&[u8]>(..)?,
    };
    let mut out = Vec::new();
    for entry in range {
        let (_, index) = entry?;
        let Some(bytes) = keys.get(index.value())? else {
            continue;
        };
        let key = decode_key(bytes.value())?;
        if key.tenant != tenant.0 {
            continue;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(key);
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn keys_authenticate_until_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("t.redb"), 1 << 20).expect("open");
        let key = generate_key().expect("key");
        let secret = key.secret.clone();
        let key_id = key.id.display(KEY_ID_PREFIX);
        let tenant = store
            .apply_one(CreateTenant {
                name: "acme".into(),
                key,
                now_ms: 1,
            })
            .expect("store")
            .expect("created");
        let read = store.read().expect("read");
        assert_eq!(
            authenticate(&read, &secret)
                .expect("auth")
                .map(|p| (p.tenant, p.read_only)),
            Some((TenantId(tenant.id), false))
        );
        assert_eq!(authenticate(&read, "tally_sk_nope").expect("auth"), None);
        drop(read);
        let again = store
            .apply_one(CreateTenant {
                name: "acme".into(),
                key: generate_key().expect("key"),
                now_ms: 2,
            })
            .expect("store");
        assert_eq!(again.err(), Some(TenantError::Exists("acme".into())));
        store
            .apply_one(RevokeKey {
                key_id: key_id.clone(),
                now_ms: 3,
            })
            .expect("store")
            .expect("revoked");
        let read = store.read().expect("read");
        assert_eq!(authenticate(&read, &secret).expect("auth"), None);
        let twice = store
            .apply_one(RevokeKey { key_id, now_ms: 4 })
            .expect("store");
        assert!(matches!(twice, Err(TenantError::AlreadyRevoked(_))));
    }
}
