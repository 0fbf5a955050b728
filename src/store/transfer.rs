//! Copying a whole database from one backend to the other (`tally migrate --from … --to …`).
//!
//! The source is read from one snapshot, so the copy is consistent even while a PostgreSQL
//! source keeps serving; the target must be empty (a freshly created schema) and is written in
//! chunks of one table's rows per transaction, so memory and transaction size stay bounded.
//! A copy interrupted part way leaves a target that is not empty, which a second attempt
//! refuses: start again on a fresh target. Afterwards every table's rows are counted on both
//! sides.

use std::collections::BTreeMap;

use redb::{Key, Value};

use super::backup::COMPLETION_KEY;
use super::{tables, ReadTxn, ReadableTable, Store, StoreError, TableDef};

/// Rows written per target transaction.
pub const CHUNK_ROWS: usize = 5_000;

/// Why a copy did not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The target already holds data.
    #[error("the target is not empty (table {0} has rows): copy into a new database")]
    NotEmpty(&'static str),
    /// Reading or writing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rows per table, by table name.
pub type Counts = BTreeMap<&'static str, u64>;

/// The `meta` keys a fresh target already holds (written when its schema was created).
const FRESH_META: [&str; 3] = [
    "format",
    "schema_version",
    tables::META_EVENT_TYPES_RECORDED,
];

/// Refuses a target that holds anything beyond a fresh schema.
pub fn check_empty(target: &Store) -> Result<(), TransferError> {
    let tx = target.read()?;
    for row in tx.open_table(tables::META)?.iter()? {
        let (k, _) = row?;
        if !FRESH_META.contains(&k.value()) {
            return Err(TransferError::NotEmpty(tables::META.name()));
        }
    }
    for t in tables::TEXT_TABLES
        .iter()
        .filter(|t| t.name() != tables::META.name())
    {
        if !tx.open_table(*t)?.is_empty()? {
            return Err(TransferError::NotEmpty(t.name()));
        }
    }
    for t in tables::BYTES_TABLES {
        if !tx.open_table(*t)?.is_empty()? {
            return Err(TransferError::NotEmpty(t.name()));
        }
    }
    for t in tables::SET_TABLES {
        if !tx.open_table(*t)?.is_empty()? {
            return Err(TransferError::NotEmpty(t.name()));
        }
    }
    Ok(())
}

/// Copies every table of `source` into `target`, calling `progress(rows so far)` after each
/// chunk; returns the rows copied per table. A backup's completion marker is not copied.
pub fn copy_all(
    source: &ReadTxn,
    target: &Store,
    progress: &mut dyn FnMut(u64),
) -> Result<Counts, TransferError> {
    check_empty(target)?;
    let mut counts = Counts::new();
    let mut copied = 0u64;
    for t in tables::TEXT_TABLES {
        let n = copy_table(source, target, *t, &mut copied, progress)?;
        counts.insert(t.name(), n);
    }
    for t in tables::BYTES_TABLES {
        let n = copy_table(source, target, *t, &mut copied, progress)?;
        counts.insert(t.name(), n);
    }
    for t in tables::SET_TABLES {
        let n = copy_table(source, target, *t, &mut copied, progress)?;
        counts.insert(t.name(), n);
    }
    keep_only_what_the_source_records(source, target)?;
    Ok(counts)
}

/// A fresh target says every event's type is recorded; once the source's events are in, that
/// holds only if the source said so too.
fn keep_only_what_the_source_records(
    source: &ReadTxn,
    target: &Store,
) -> Result<(), TransferError> {
    let key = tables::META_EVENT_TYPES_RECORDED;
    if source.open_table(tables::META)?.get(key)?.is_some() {
        return Ok(());
    }
    let tx = target.begin_write()?;
    tx.open_table(tables::META)?.remove(key)?;
    tx.commit()?;
    Ok(())
}

fn copy_table<K, V>(
    source: &ReadTxn,
    target: &Store,
    def: TableDef<K, V>,
    copied: &mut u64,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, TransferError>
where
    K: Key + 'static,
    V: Value + 'static,
{
    let table = source.open_table(def)?;
    let mut rows = table.iter()?;
    let mut total = 0u64;
    loop {
        let mut chunk: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(CHUNK_ROWS);
        for row in rows.by_ref().take(CHUNK_ROWS) {
            let (k, v) = row?;
            let key = K::as_bytes(&k.value()).as_ref().to_vec();
            if def.name() == tables::META.name() && key == COMPLETION_KEY.as_bytes() {
                continue;
            }
            chunk.push((key, V::as_bytes(&v.value()).as_ref().to_vec()));
        }
        if chunk.is_empty() {
            return Ok(total);
        }
        let tx = target.begin_write()?;
        {
            let mut out = tx.open_table(def)?;
            for (k, v) in &chunk {
                out.insert(K::from_bytes(k), V::from_bytes(v))?;
            }
        }
        tx.commit()?;
        total += chunk.len() as u64;
        *copied += chunk.len() as u64;
        progress(*copied);
    }
}

/// Rows per table of a snapshot, without the backup completion marker.
pub fn count_all(tx: &ReadTxn) -> Result<Counts, StoreError> {
    let mut counts = Counts::new();
    for t in tables::TEXT_TABLES {
        let mut n = tx.open_table(*t)?.len()?;
        if t.name() == tables::META.name() && tx.open_table(*t)?.get(COMPLETION_KEY)?.is_some() {
            n -= 1;
        }
        counts.insert(t.name(), n);
    }
    for t in tables::BYTES_TABLES {
        counts.insert(t.name(), tx.open_table(*t)?.len()?);
    }
    for t in tables::SET_TABLES {
        counts.insert(t.name(), tx.open_table(*t)?.len()?);
    }
    Ok(counts)
}

/// The tables whose row counts differ, with (source, target) counts.
pub fn differences(source: &Counts, target: &Counts) -> Vec<(&'static str, u64, u64)> {
    source
        .iter()
        .filter_map(|(name, &n)| {
            let m = target.get(name).copied().unwrap_or(0);
            (n != m).then_some((*name, n, m))
        })
        .collect()
}
