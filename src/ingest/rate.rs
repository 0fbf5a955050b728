//! The ingest rate: how many events each tenant stored in each minute of receipt.
//!
//! Counting stored events over an hour from the events table would read every one of them; the
//! console's overview wants the last hour at a glance whatever the volume. Ingest therefore adds
//! its counts to one row per (tenant, minute) in the transaction that stores the events: one
//! read-modify-write per minute touched per run of ingest commands, never one per event. An
//! hour is then at most 61 rows.

use crate::store::{ReadTxn, ReadableTable, Table};

use crate::store::keys::{time_bytes, TenantId};
use crate::store::{tables, StoreError};

/// One minute, in milliseconds.
pub const MINUTE_MS: i64 = 60_000;

/// The minute an instant falls in (its start, in ms).
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

fn key(tenant: TenantId, minute_ms: i64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&tenant.to_bytes());
    key[8..].copy_from_slice(&time_bytes(minute_ms));
    key
}

fn count_of(bytes: &[u8]) -> Result<u64, StoreError> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("malformed ingest minute count".into()))
}

/// Events stored by a run, per (tenant, minute of receipt), before they are written.
#[derive(Debug, Default)]
pub struct Counts {
    /// Few entries per run (usually one), so a list beats a map.
    entries: Vec<(TenantId, i64, u64)>,
}

impl Counts {
    /// Counts one stored event received at `now_ms`.
    pub fn add(&mut self, tenant: TenantId, now_ms: i64) {
        let minute = minute_of(now_ms);
        match self
            .entries
            .iter_mut()
            .find(|(t, m, _)| *t == tenant && *m == minute)
        {
            Some((_, _, n)) => *n = n.saturating_add(1),
            None => self.entries.push((tenant, minute, 1)),
        }
    }

    /// Adds the counts to their rows.
    pub fn flush(
        self,
        table: &mut Table<'_, &'static [u8], &'static [u8]>,
    ) -> Result<(), StoreError> {
        for (tenant, minute, n) in self.entries {
            let key = key(tenant, minute);
            let before = match table.get(key.as_slice())? {
                Some(v) => count_of(v.value())?,
                None => 0,
            };
            let after = before.saturating_add(n).to_be_bytes();
            table.insert(key.as_slice(), after.as_slice())?;
        }
        Ok(())
    }
}

/// The tenant's count for each of the `minutes` minutes ending with the one `now_ms` falls in,
/// oldest first (minutes without events count zero).
pub fn recent(
    tx: &ReadTxn,
    tenant: TenantId,
    now_ms: i64,
    minutes: usize,
) -> Result<Vec<(i64, u64)>, StoreError> {
    let last = minute_of(now_ms);
    let span = i64::try_from(minutes.saturating_sub(1)).unwrap_or(0);
    let first = last.saturating_sub(span.saturating_mul(MINUTE_MS));
    let mut out: Vec<(i64, u64)> = (0..=span)
        .map(|i| (first.saturating_add(i.saturating_mul(MINUTE_MS)), 0))
        .collect();
    let table = tx.open_table(tables::INGEST_MINUTES)?;
    let (lo, hi) = (key(tenant, first), key(tenant, last));
    for entry in table.range::<&[u8]>(lo.as_slice()..=hi.as_slice())? {
        let (k, v) = entry?;
        let Some(minute) = k
            .value()
            .get(8..16)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(crate::store::keys::time_from_bytes)
        else {
            continue;
        };
        let index = usize::try_from((minute - first) / MINUTE_MS).ok();
        if let Some(slot) = index.and_then(|i| out.get_mut(i)) {
            slot.1 = count_of(v.value())?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_tenant_and_minute_and_read_back_an_hour() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(&dir.path().join("r.redb"), 1 << 20).expect("open");
        let now = 1_800_000_000_000 + 30_000;
        let (a, b) = (TenantId(1), TenantId(2));
        for _ in 0..2 {
            let tx = store.begin_write().expect("tx");
            let mut counts = Counts::default();
            counts.add(a, now);
            counts.add(a, now + 1);
            counts.add(a, now - 2 * MINUTE_MS);
            counts.add(b, now);
            counts.add(a, now - 61 * MINUTE_MS);
            counts
                .flush(&mut tx.open_table(tables::INGEST_MINUTES).expect("t"))
                .expect("flush");
            tx.commit().expect("commit");
        }
        let tx = store.read().expect("read");
        let hour = recent(&tx, a, now, 60).expect("recent");
        assert_eq!(hour.len(), 60);
        assert_eq!(hour[59], (minute_of(now), 4));
        assert_eq!(hour[57], (minute_of(now) - 2 * MINUTE_MS, 2));
        assert_eq!(
            hour.iter().map(|(_, n)| n).sum::<u64>(),
            6,
            "older minutes left out"
        );
        assert_eq!(recent(&tx, b, now, 60).expect("b")[59].1, 2);
        assert_eq!(recent(&tx, TenantId(3), now, 60).expect("c")[59].1, 0);
    }
}
