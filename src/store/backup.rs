//! Consistent backups and restores of the database file.
//!
//! A backup copies every table from one read transaction (one MVCC snapshot) into a new redb
//! file, so it is consistent even while the daemon keeps writing: the daemon opens its file in
//! redb's single-writer mode, which lets a read-only handle in another process share it.
//!
//! A backup is complete only when its last write transaction has committed: that transaction
//! stores a completion marker in `meta` holding every table's row count and a blake3 digest of
//! everything copied. A backup killed part way leaves a file without the marker; restore
//! recomputes the counts and the digest and refuses any file whose marker is absent or
//! disagrees.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable as _};
use serde::{Deserialize, Serialize};

use super::{tables, OpenError, ReadTxn, ReadableTable, StoreError, TableDef};

/// The `meta` key of a backup's completion marker. It is never copied from the source (a
/// restored database still holds the marker of the backup it came from).
pub const COMPLETION_KEY: &str = "backup_completion";

/// Why a backup or restore stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target exists; backups never overwrite.
    #[error("{0} already exists; choose a new file")]
    Exists(String),
    /// The file is not a backup that finished, or its content changed since.
    #[error("{file} is not a complete backup: {reason}; nothing was restored")]
    Incomplete {
        /// The file.
        file: String,
        /// What is missing or disagrees.
        reason: String,
    },
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

/// What a finished backup holds, as its completion marker records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// Rows per table (the marker itself not counted).
    pub rows: BTreeMap<String, u64>,
    /// blake3 (hex) over every table's name and rows, in table order.
    pub digest: String,
    /// When the backup finished.
    pub completed_at_ms: i64,
}

impl Completion {
    /// Rows in all tables.
    pub fn total_rows(&self) -> u64 {
        self.rows.values().sum()
    }
}

/// Counts and digests rows as they are copied or re-read: a tag byte, then length-prefixed
/// fields, so no two different contents hash alike.
struct Content {
    hasher: blake3::Hasher,
    rows: BTreeMap<String, u64>,
    table: String,
    in_table: u64,
}

impl Content {
    fn new() -> Self {
        Self {
            hasher: blake3::Hasher::new_derive_key("tally 2026 backup content v1"),
            rows: BTreeMap::new(),
            table: String::new(),
            in_table: 0,
        }
    }

    fn field(&mut self, bytes: &[u8]) {
        self.hasher.update(&(bytes.len() as u64).to_be_bytes());
        self.hasher.update(bytes);
    }

    fn begin_table(&mut self, name: &str) {
        self.end_table();
        self.hasher.update(b"T");
        self.field(name.as_bytes());
        self.table = name.to_string();
    }

    fn row(&mut self, key: &[u8], value: &[u8]) {
        self.hasher.update(b"R");
        self.field(key);
        self.field(value);
        self.in_table += 1;
    }

    fn end_table(&mut self) {
        if !self.table.is_empty() {
            self.rows
                .insert(std::mem::take(&mut self.table), self.in_table);
        }
        self.in_table = 0;
    }

    fn finish(mut self, completed_at_ms: i64) -> Completion {
        self.end_table();
        Completion {
            rows: self.rows,
            digest: self.hasher.finalize().to_hex().to_string(),
            completed_at_ms,
        }
    }
}

/// Rows in every table of a snapshot (for progress).
pub fn count_rows(tx: &ReadTxn) -> Result<u64, StoreError> {
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

/// Copies a snapshot into a new file at `out`; the last write transaction stores the
/// completion marker. Returns what the marker says.
pub fn snapshot(
    tx: &ReadTxn,
    out: &Path,
    now_ms: i64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Completion, BackupError> {
    if out.exists() {
        return Err(BackupError::Exists(out.display().to_string()));
    }
    let total = count_rows(tx)?;
    let db = Database::create(out).map_err(|e| BackupError::Store(e.into()))?;
    let mut copied = 0u64;
    let mut content = Content::new();
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
        let src = tx.open_table(*t)?;
        let mut rows = Vec::new();
        for entry in src.iter()? {
            let (k, v) = entry?;
            if is_marker(t, k.value()) {
                continue;
            }
            rows.push((k.value().to_string(), v.value().to_vec()));
        }
        content.begin_table(t.name());
        let mut dst = wtx.open_table(t.redb()).map_err(StoreError::from)?;
        for (k, v) in &rows {
            content.row(k.as_bytes(), v);
            dst.insert(k.as_str(), v.as_slice())
                .map_err(StoreError::from)?;
        }
        drop(dst);
        copied += rows.len() as u64;
        in_chunk += rows.len() as u64;
        flush!();
    }
    for t in tables::BYTES_TABLES {
        let src = tx.open_table(*t)?;
        let mut iter = src.iter()?;
        content.begin_table(t.name());
        // Stream in chunks so a large table never sits in memory whole.
        loop {
            let mut rows = Vec::new();
            for entry in iter.by_ref().take(CHUNK_ROWS as usize) {
                let (k, v) = entry?;
                rows.push((k.value().to_vec(), v.value().to_vec()));
            }
            if rows.is_empty() {
                break;
            }
            {
                let mut dst = wtx.open_table(t.redb()).map_err(StoreError::from)?;
                for (k, v) in &rows {
                    content.row(k, v);
                    dst.insert(k.as_slice(), v.as_slice())
                        .map_err(StoreError::from)?;
                }
            }
            copied += rows.len() as u64;
            in_chunk += rows.len() as u64;
            flush!();
        }
        // Empty tables exist in the copy too.
        wtx.open_table(t.redb()).map_err(StoreError::from)?;
    }
    for t in tables::SET_TABLES {
        let src = tx.open_table(*t)?;
        let mut iter = src.iter()?;
        content.begin_table(t.name());
        loop {
            let mut rows = Vec::new();
            for entry in iter.by_ref().take(CHUNK_ROWS as usize) {
                let (k, _) = entry?;
                rows.push(k.value().to_vec());
            }
            if rows.is_empty() {
                break;
            }
            {
                let mut dst = wtx.open_table(t.redb()).map_err(StoreError::from)?;
                for k in &rows {
                    content.row(k, &[]);
                    dst.insert(k.as_slice(), ()).map_err(StoreError::from)?;
                }
            }
            copied += rows.len() as u64;
            in_chunk += rows.len() as u64;
            flush!();
        }
        wtx.open_table(t.redb()).map_err(StoreError::from)?;
    }
    // The marker goes into the last transaction: it exists only if everything before it
    // committed.
    let completion = content.finish(now_ms);
    let marker = serde_json::to_vec(&completion)
        .map_err(|e| BackupError::Io(format!("cannot encode the completion marker: {e}")))?;
    wtx.open_table(tables::META.redb())
        .map_err(StoreError::from)?
        .insert(COMPLETION_KEY, marker.as_slice())
        .map_err(StoreError::from)?;
    wtx.commit().map_err(|e| BackupError::Store(e.into()))?;
    progress(copied, total);
    Ok(completion)
}

fn is_marker(table: &TableDef<&'static str, &'static [u8]>, key: &str) -> bool {
    table.name() == tables::META.name() && key == COMPLETION_KEY
}

/// Re-reads every table of a snapshot the way [`snapshot`] wrote it.
fn content_of(tx: &ReadTransaction, now_ms: i64) -> Result<Completion, redb::Error> {
    let mut content = Content::new();
    for t in tables::TEXT_TABLES {
        content.begin_table(t.name());
        for entry in tx.open_table(t.redb())?.iter()? {
            let (k, v) = entry?;
            if !is_marker(t, k.value()) {
                content.row(k.value().as_bytes(), v.value());
            }
        }
    }
    for t in tables::BYTES_TABLES {
        content.begin_table(t.name());
        for entry in tx.open_table(t.redb())?.iter()? {
            let (k, v) = entry?;
            content.row(k.value(), v.value());
        }
    }
    for t in tables::SET_TABLES {
        content.begin_table(t.name());
        for entry in tx.open_table(t.redb())?.iter()? {
            let (k, _) = entry?;
            content.row(k.value(), &[]);
        }
    }
    Ok(content.finish(now_ms))
}

/// Checks that `file` is a backup that finished and is unchanged since: its completion marker
/// is present and agrees with the rows and digest recomputed from the file. Opens the file
/// read-only, so checking never alters it.
pub fn check_complete(file: &Path) -> Result<Completion, BackupError> {
    let incomplete = |reason: String| BackupError::Incomplete {
        file: file.display().to_string(),
        reason,
    };
    let db = open_read_only(file).map_err(|e| incomplete(format!("it cannot be opened ({e})")))?;
    let tx = db
        .begin_read()
        .map_err(|e| incomplete(format!("it cannot be read ({e})")))?;
    let marker = tx
        .open_table(tables::META.redb())
        .and_then(|meta| Ok(meta.get(COMPLETION_KEY)?.map(|v| v.value().to_vec())))
        .map_err(|e| incomplete(format!("it has no readable meta table ({e})")))?
        .ok_or_else(|| {
            incomplete("it has no completion marker (the backup did not finish)".into())
        })?;
    let recorded: Completion = serde_json::from_slice(&marker)
        .map_err(|e| incomplete(format!("its completion marker is unreadable ({e})")))?;
    let found = content_of(&tx, recorded.completed_at_ms)
        .map_err(|e| incomplete(format!("it cannot be read in full ({e})")))?;
    let names: std::collections::BTreeSet<&String> =
        recorded.rows.keys().chain(found.rows.keys()).collect();
    for name in names {
        let (want, got) = (recorded.rows.get(name), found.rows.get(name));
        if want != got {
            let show = |n: Option<&u64>| n.map_or_else(|| "no table".to_string(), u64::to_string);
            return Err(incomplete(format!(
                "table {name} has {} rows where the marker says {}",
                show(got),
                show(want)
            )));
        }
    }
    if found.digest != recorded.digest {
        return Err(incomplete(
            "its content differs from what the backup wrote (digest mismatch)".into(),
        ));
    }
    Ok(recorded)
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
        ReadTxn,
    ),
    BackupError,
> {
    match super::Store::open(path, 64 << 20) {
        Ok(store) => {
            let tx = ReadTxn::redb(
                store
                    .database()?
                    .begin_read()
                    .map_err(|e| BackupError::Store(e.into()))?,
            );
            Ok((None, Some(store), tx))
        }
        // A running daemon holds it, or an older Tally wrote it: copy it as it is (a restore
        // migrates the copy), never change the source.
        Err(OpenError::InUse(_) | OpenError::OlderSchema { .. }) => {
            let db = open_read_only(path)?;
            let tx = db.begin_read().map_err(|e| BackupError::Store(e.into()))?;
            Ok((Some(db), None, ReadTxn::redb(tx)))
        }
        Err(e) => Err(e.into()),
    }
}
