//! Every redb table Tally uses, declared in one place.
//!
//! Keys are byte strings built by [`super::keys`]: fixed-width big-endian integers, tenant first,
//! so a range scan stays inside one tenant and follows id (time) order. Values are records from
//! [`super::codec`] unless noted.

use redb::TableDefinition;

/// `&str` → bytes: the format marker, schema version and counters.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// tenant id (u64 BE) → tenant record.
pub const TENANTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tenants");
/// tenant name → tenant id (u64 BE).
pub const TENANT_BY_NAME: TableDefinition<&str, &[u8]> = TableDefinition::new("tenant_by_name");
/// blake3 hash of an API key secret → API key record.
pub const API_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("api_keys");
/// API key id (16 bytes) → blake3 hash of its secret, for revocation by id.
pub const API_KEY_IDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("api_key_ids");
/// (tenant, idempotency key) → idempotency record.
pub const IDEMPOTENCY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("idempotency");
/// (expires_at ms, tenant, idempotency key) → (): the purge order.
pub const IDEMPOTENCY_EXPIRY: TableDefinition<&[u8], ()> =
    TableDefinition::new("idempotency_expiry");
/// (tenant, customer id) → customer record.
pub const CUSTOMERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("customers");
/// (tenant, external id) → customer id (16 bytes).
pub const CUSTOMER_BY_EXTERNAL: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("customer_by_external");

/// Opens (creating if needed) every table, so read transactions never meet a missing table.
pub fn create_all(tx: &redb::WriteTransaction) -> Result<(), redb::Error> {
    tx.open_table(META)?;
    tx.open_table(TENANTS)?;
    tx.open_table(TENANT_BY_NAME)?;
    tx.open_table(API_KEYS)?;
    tx.open_table(API_KEY_IDS)?;
    tx.open_table(IDEMPOTENCY)?;
    tx.open_table(IDEMPOTENCY_EXPIRY)?;
    tx.open_table(CUSTOMERS)?;
    tx.open_table(CUSTOMER_BY_EXTERNAL)?;
    Ok(())
}
