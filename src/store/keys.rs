//! Storage key layouts.
//!
//! Every key starts with the tenant id as 8 big-endian bytes, so one tenant's rows are one
//! contiguous range and no scan can wander into another tenant. Ids follow as 16 big-endian
//! bytes, which sort by creation time.

use crate::id::Id;

/// A tenant's internal number; never shown to clients (they know only their API key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(pub u64);

impl TenantId {
    /// Big-endian bytes, the key prefix of every tenant-scoped row.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

/// `(tenant, id)`: 24 bytes.
pub fn tenant_id(tenant: TenantId, id: Id) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&tenant.to_bytes());
    key[8..].copy_from_slice(&id.to_bytes());
    key
}

/// `(tenant, arbitrary bytes)`: for natural keys such as external ids and idempotency keys.
pub fn tenant_bytes(tenant: TenantId, bytes: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + bytes.len());
    key.extend_from_slice(&tenant.to_bytes());
    key.extend_from_slice(bytes);
    key
}

/// The half-open range of every key of one tenant: `[tenant, tenant + 1)`.
pub fn tenant_range(tenant: TenantId) -> (Vec<u8>, Vec<u8>) {
    let start = tenant.to_bytes().to_vec();
    let end = match tenant.0.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        // The last tenant id: every key starting with it sorts below a 9-byte 0xFF… bound.
        None => vec![0xFF; 9],
    };
    (start, end)
}

/// Reads the tenant back out of any tenant-prefixed key.
pub fn tenant_of(key: &[u8]) -> Option<TenantId> {
    let bytes: [u8; 8] = key.get(..8)?.try_into().ok()?;
    Some(TenantId(u64::from_be_bytes(bytes)))
}

/// Reads the id back out of a `(tenant, id)` key.
pub fn id_of(key: &[u8]) -> Option<Id> {
    let bytes: [u8; 16] = key.get(8..24)?.try_into().ok()?;
    Some(Id::from_bytes(bytes))
}

/// Milliseconds as 8 big-endian bytes with the sign bit flipped, so negative instants still sort
/// before positive ones.
pub fn time_bytes(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1u64 << 63)).to_be_bytes()
}

/// The instant [`time_bytes`] encoded.
pub fn time_from_bytes(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1u64 << 63)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bytes_decode_to_the_instant_they_encode() {
        for ms in [i64::MIN, -1, 0, 1, 1_800_000_000_000, i64::MAX] {
            assert_eq!(time_from_bytes(time_bytes(ms)), ms);
        }
    }

    #[test]
    fn time_bytes_sort_like_time() {
        let mut values = [-5i64, 0, 7, i64::MIN, i64::MAX, -1, 1_700_000_000_000];
        let mut encoded: Vec<[u8; 8]> = values.iter().map(|&v| time_bytes(v)).collect();
        values.sort();
        encoded.sort();
        let decoded: Vec<[u8; 8]> = values.iter().map(|&v| time_bytes(v)).collect();
        assert_eq!(encoded, decoded);
    }

    #[test]
    fn tenant_range_contains_only_that_tenant() {
        let (start, end) = tenant_range(TenantId(7));
        let inside = tenant_id(TenantId(7), Id(u128::MAX));
        let outside = tenant_id(TenantId(8), Id(0));
        assert!(inside.as_slice() >= start.as_slice() && inside.as_slice() < end.as_slice());
        assert!(outside.as_slice() >= end.as_slice());
    }
}
