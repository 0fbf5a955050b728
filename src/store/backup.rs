//! Consistent backups and restores of the database file.
//!
//! A backup copies every table from one read transaction (one MVCC snapshot) into a new redb
//! file, so it is consistent even while the daemon keeps writing: the daemon opens its file in
//! redb's single-writer mode, which lets a read-only handle in another process share it.

use std::path::Path;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::{tables, OpenError, StoreError};

/// Why a backup or restore stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target exists; backups never overwrite.
    #[error("{0} already exists; choose a new file")]
    Exists(String),
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Opening failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// File system failure.
    #[error("{0}")]
    Io(String),
}

/// Rows in every table of a snapshot (for progress).
pub fn count_rows(tx: &ReadTransaction) -> Result<u64, StoreError> {
    let mut total = 0;
    for t in tables::TEXT_TABLES {
        total += tx.open_table(*t)?.len()?;
    }
    for t in tables::BYTES_TABLES {
        total += tx.open_table(*t)?.len()?;
    }
    for t in tables::SET_TABLES {
        total += tx.open_table(*t)?.len()?;
    }
    Ok(total)
}

/// Rows copied per write transaction of the new file.
const CHUNK_ROWS: u64 = 20_000;

/// Copies a snapshot into a new file at `out`; returns the rows copied.
pub fn snapshot(
    tx: &ReadTransaction,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, BackupError> {
    if out.exists() {
        return Err(BackupError::Exists(out.display().to_string()));
    }
    let total = count_rows(tx)?;
    let db = Database::create(out).map_err(|e| BackupError::Store(e.into()))?;
    let mut copied = 0u64;
    let mut wtx = db.begin_write().map_err(|e| BackupError::Store(e.into()))?;
    let mut in_chunk = 0u64;
    macro_rules! flush {
        () => {
            if in_chunk >= CHUNK_ROWS {
                wtx.commit().map_err(|e| BackupError::Store(e.into()))?;
                wtx = db.begin_write().map_err(|e| BackupError::Store(e.into()))?;
                in_chunk = 0;
                progress(copied, total);
            }
        };
    }
    for t in tables::TEXT_TABLES {
        let src = tx.open_table(*t).map_err(StoreError::from)?;
        let mut rows = Vec::new();
        for entry in src.iter().map_err(StoreError::from)? {
            let (k, v) = entry.map_err(StoreError::from)?;
            rows.push((k.value().to_string(), v.value().to_vec()));
        }
        let mut dst = wtx.open_table(*t).map_err(StoreError::from)?;
        for (k, v) in &rows {
            dst.insert(k.as_str(), v.as_slice())
                .map_err(StoreError::from)?;
        }
        drop(dst);
        copied += rows.len() as u64;
        in_chunk += rows.len() as u64;
        flush!();
    }
    for t in tables::BYTES_TABLES {
        let src = tx.open_table(*t).map_err(StoreError::from)?;
        let mut iter = src.iter().map_err(StoreError::from)?;
        // Stream in chunks so a large table never sits in memory whole.
        loop {
            let mut rows = Vec::new();
            for entry in iter.by_ref().take(CHUNK_ROWS as usize) {
                let (k, v) = entry.map_err(StoreError::from)?;
                rows.push((k.value().to_vec(), v.value().to_vec()));
            }
            if rows.is_empty() {
                break;
            }
            {
                let mut dst = wtx.open_table(*t).map_err(StoreError::from)?;
                for (k, v) in &rows {
                    dst.insert(k.as_slice(), v.as_slice())
                        .map_err(StoreError::from)?;
                }
            }
            copied += rows.len() as u64;
            in_chunk += rows.len() as u64;
            flush!();
        }
        // Empty tables exist in the copy too.
        wtx.open_table(*t).map_err(StoreError::from)?;
    }
    for t in tables::SET_TABLES {
        let src = tx.open_table(*t).map_err(StoreError::from)?;
        let mut iter = src.iter().map_err(StoreError::from)?;
        loop {
            let mut rows = Vec::new();
            for entry in iter.by_ref().take(CHUNK_ROWS as usize) {
                let (k, _) = entry.map_err(StoreError::from)?;
                rows.push(k.value().to_vec());
            }
            if rows.is_empty() {
                break;
            }
            {
                let mut dst = wtx.open_table(*t).map_err(StoreError::from)?;
                for k in &rows {
                    dst.insert(k.as_slice(), ()).map_err(StoreError::from)?;
                }
            }
            copied += rows.len() as u64;
            in_chunk += rows.len() as u64;
            flush!();
        }
        wtx.open_table(*t).map_err(StoreError::from)?;
    }
    wtx.commit().map_err(|e| BackupError::Store(e.into()))?;
    progress(copied, total);
    Ok(copied)
}

/// Opens a database read-only next to a running daemon (which holds it in single-writer mode).
pub fn open_read_only(path: &Path) -> Result<redb::ReadOnlyDatabase, OpenError> {
    redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
        .open_read_only(path)
        .map_err(|e| OpenError::Io(path.to_path_buf(), e.to_string()))
}

/// A read transaction on `path`, whether or not a daemon is running.
pub fn read_snapshot(
    path: &Path,
) -> Result<
    (
        Option<redb::ReadOnlyDatabase>,
        Option<super::Store>,
        ReadTransaction,
    ),
    BackupError,
> {
    match super::Store::open(path, 64 << 20) {
        Ok(store) => {
            let tx = store
                .database()?
                .begin_read()
                .map_err(|e| BackupError::Store(e.into()))?;
            Ok((None, Some(store), tx))
        }
        Err(OpenError::InUse(_)) => {
            let db = open_read_only(path)?;
            let tx = db.begin_read().map_err(|e| BackupError::Store(e.into()))?;
            Ok((Some(db), None, tx))
        }
        Err(e) => Err(e.into()),
    }
}
