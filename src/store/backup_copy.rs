//! The writing half of a backup: a thread that owns the new file and inserts the rows the
//! reading half sends it in batches, so reading the snapshot (and hashing it) and writing the
//! copy proceed on two cores at once.
//!
//! The copy's transactions commit without waiting for the disk ([`redb::Durability::None`]):
//! only the last one, which holds the completion marker, is made durable, and it makes every
//! earlier one durable with it. A copy that stops before it leaves no marker, so a restore
//! refuses it either way.

use std::sync::mpsc::Receiver;

use redb::{Database, Durability, WriteTransaction};

use super::backup::{BackupError, COMPLETION_KEY};
use super::{tables, StoreError, TableDef};

/// Rows the copy inserts per transaction: each commit writes the tree's changed pages once,
/// so a larger transaction writes less, at the cost of more pages held dirty at a time.
const COMMIT_ROWS: usize = 200_000;

/// A table of the copy, by the types of its keys and values.
#[derive(Clone, Copy)]
pub(super) enum Target {
    /// Text keys (`meta`, tenant names).
    Text(TableDef<&'static str, &'static [u8]>),
    /// Byte keys and values.
    Bytes(TableDef<&'static [u8], &'static [u8]>),
    /// Byte keys without values.
    Set(TableDef<&'static [u8], ()>),
}

impl Target {
    /// The table's name.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Target::Text(t) => t.name(),
            Target::Bytes(t) => t.name(),
            Target::Set(t) => t.name(),
        }
    }
}

/// Rows of one table, their bytes in one buffer so a batch costs two allocations, not two a
/// row.
pub(super) struct Batch {
    target: Target,
    bytes: Vec<u8>,
    lens: Vec<(u32, u32)>,
}

impl Batch {
    /// An empty batch for `target` (sent empty, it still creates the table in the copy).
    pub(super) fn new(target: Target) -> Self {
        Self {
            target,
            bytes: Vec::new(),
            lens: Vec::new(),
        }
    }

    /// Appends one row. Keys and values are far below 4 GiB (redb's own limit is 3 GiB).
    pub(super) fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), BackupError> {
        let len = |b: &[u8]| {
            u32::try_from(b.len()).map_err(|_| BackupError::Io("a row exceeds 4 GiB".into()))
        };
        self.lens.push((len(key)?, len(value)?));
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        Ok(())
    }

    /// The table the rows belong to.
    pub(super) fn target(&self) -> Target {
        self.target
    }

    /// Rows in the batch.
    pub(super) fn rows(&self) -> usize {
        self.lens.len()
    }

    /// Bytes of keys and values in the batch.
    pub(super) fn bytes(&self) -> usize {
        self.bytes.len()
    }

    fn each(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut at = 0usize;
        self.lens.iter().map(move |&(k, v)| {
            let (k, v) = (k as usize, v as usize);
            let row = (&self.bytes[at..at + k], &self.bytes[at + k..at + k + v]);
            at += k + v;
            row
        })
    }
}

/// What the reading half sends.
pub(super) enum Message {
    /// Rows to insert.
    Rows(Batch),
    /// Everything was sent: store this completion marker and make the copy durable.
    Finish(Vec<u8>),
}

/// Inserts what arrives on `rx` into `db` until the completion marker arrives. Returns an
/// error if the reading half stops without sending it.
pub(super) fn write(db: Database, rx: Receiver<Message>) -> Result<(), BackupError> {
    let mut wtx = begin(&db)?;
    let mut in_txn = 0usize;
    while let Ok(message) = rx.recv() {
        match message {
            Message::Rows(batch) => {
                insert(&wtx, &batch)?;
                in_txn += batch.rows();
                if in_txn >= COMMIT_ROWS {
                    wtx.commit().map_err(store)?;
                    wtx = begin(&db)?;
                    in_txn = 0;
                }
            }
            Message::Finish(marker) => {
                wtx.open_table(tables::META.redb())
                    .map_err(store)?
                    .insert(COMPLETION_KEY, marker.as_slice())
                    .map_err(store)?;
                wtx.set_durability(Durability::Immediate)
                    .map_err(|e| BackupError::Io(e.to_string()))?;
                wtx.commit().map_err(store)?;
                return Ok(());
            }
        }
    }
    Err(BackupError::Io(
        "the snapshot's reader stopped before the end".into(),
    ))
}

fn begin(db: &Database) -> Result<WriteTransaction, BackupError> {
    let mut wtx = db.begin_write().map_err(store)?;
    wtx.set_durability(Durability::None)
        .map_err(|e| BackupError::Io(e.to_string()))?;
    Ok(wtx)
}

fn insert(wtx: &WriteTransaction, batch: &Batch) -> Result<(), BackupError> {
    match batch.target {
        Target::Text(t) => {
            let mut dst = wtx.open_table(t.redb()).map_err(store)?;
            for (k, v) in batch.each() {
                let k = std::str::from_utf8(k)
                    .map_err(|_| BackupError::Io(format!("a key of {} is not text", t.name())))?;
                dst.insert(k, v).map_err(store)?;
            }
        }
        Target::Bytes(t) => {
            let mut dst = wtx.open_table(t.redb()).map_err(store)?;
            for (k, v) in batch.each() {
                dst.insert(k, v).map_err(store)?;
            }
        }
        Target::Set(t) => {
            let mut dst = wtx.open_table(t.redb()).map_err(store)?;
            for (k, _) in batch.each() {
                dst.insert(k, ()).map_err(store)?;
            }
        }
    }
    Ok(())
}

fn store(e: impl Into<redb::Error>) -> BackupError {
    BackupError::Store(StoreError::from(e.into()))
}
