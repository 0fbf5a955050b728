//! Write transactions and read snapshots over either backend.
//!
//! A [`WriteTxn`] is what every command applies to: on redb, redb's own write transaction; on
//! PostgreSQL, one `SERIALIZABLE` transaction whose writes are buffered and sent in multi-row
//! statements. A [`ReadTxn`] is a consistent snapshot: redb's MVCC read transaction, or a
//! `REPEATABLE READ READ ONLY` transaction on PostgreSQL.

use std::sync::Arc;

use redb::{Key, Value};

use super::pg::{PgRead, PgWrite};
use super::table::{ReadTable, Table, TableDef};
use super::StoreError;

/// One write transaction: everything a batch of commands writes commits together or not at all.
pub struct WriteTxn(WriteInner);

// One exists per batch and is only ever borrowed, so its size never moves in a hot loop.
#[allow(clippy::large_enum_variant)]
enum WriteInner {
    Redb(redb::WriteTransaction),
    Pg(PgWrite),
}

impl WriteTxn {
    pub(crate) fn redb(tx: redb::WriteTransaction) -> Self {
        WriteTxn(WriteInner::Redb(tx))
    }

    pub(crate) fn pg(tx: PgWrite) -> Self {
        WriteTxn(WriteInner::Pg(tx))
    }

    /// Whether this is a PostgreSQL transaction (reads are round trips: worth prefetching).
    pub fn is_postgres(&self) -> bool {
        matches!(self.0, WriteInner::Pg(_))
    }

    /// Opens a table for reading and writing. A table may be open once at a time.
    #[inline]
    pub fn open_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDef<K, V>,
    ) -> Result<Table<'_, K, V>, StoreError> {
        match &self.0 {
            WriteInner::Redb(tx) => Ok(Table::redb(tx.open_table(def.redb())?)),
            WriteInner::Pg(tx) => Ok(Table::pg(tx, def.name())),
        }
    }

    /// Deletes every row of a table (a schema step retiring a table); true if it existed.
    pub fn delete_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDef<K, V>,
    ) -> Result<bool, StoreError> {
        match &self.0 {
            WriteInner::Redb(tx) => Ok(tx.delete_table(def.redb())?),
            WriteInner::Pg(tx) => tx.clear(def.name()).map(|()| true),
        }
    }

    /// Bounds what a long transaction holds in memory: on PostgreSQL, sends the buffered
    /// writes and forgets the rows read or written so far; on redb (whose pages live in the
    /// file and its bounded cache) nothing to do.
    pub fn release_buffers(&self) -> Result<(), StoreError> {
        match &self.0 {
            WriteInner::Redb(_) => Ok(()),
            WriteInner::Pg(tx) => tx.send_and_forget(),
        }
    }

    /// Makes the transaction durable. On failure the outcome may be unknown (the write may
    /// have reached the disk or the server), never partial.
    pub fn commit(self) -> Result<(), StoreError> {
        match self.0 {
            WriteInner::Redb(tx) => Ok(tx.commit()?),
            WriteInner::Pg(tx) => tx.commit(),
        }
    }

    /// Drops everything the transaction wrote.
    pub fn abort(self) -> Result<(), StoreError> {
        match self.0 {
            WriteInner::Redb(tx) => Ok(tx.abort()?),
            WriteInner::Pg(tx) => tx.abort(),
        }
    }

    /// The redb transaction itself, to commit a schema step through redb's own handle.
    pub(crate) fn into_redb(self) -> Option<redb::WriteTransaction> {
        match self.0 {
            WriteInner::Redb(tx) => Some(tx),
            WriteInner::Pg(_) => None,
        }
    }

    /// The redb transaction underneath, for the few redb-only paths (schema steps that list
    /// tables, backups).
    pub fn as_redb(&self) -> Option<&redb::WriteTransaction> {
        match &self.0 {
            WriteInner::Redb(tx) => Some(tx),
            WriteInner::Pg(_) => None,
        }
    }
}

/// A consistent snapshot for reads, shared behind an `Arc` by every reader of one commit.
pub struct ReadTxn(ReadInner);

enum ReadInner {
    Redb(redb::ReadTransaction),
    Pg(Arc<PgRead>),
}

impl ReadTxn {
    pub(crate) fn redb(tx: redb::ReadTransaction) -> Self {
        ReadTxn(ReadInner::Redb(tx))
    }

    pub(crate) fn pg(tx: PgRead) -> Self {
        ReadTxn(ReadInner::Pg(Arc::new(tx)))
    }

    /// Opens a table of the snapshot.
    #[inline]
    pub fn open_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDef<K, V>,
    ) -> Result<ReadTable<K, V>, StoreError> {
        match &self.0 {
            ReadInner::Redb(tx) => Ok(ReadTable::redb(tx.open_table(def.redb())?)),
            ReadInner::Pg(tx) => Ok(ReadTable::pg(Arc::clone(tx), def.name())),
        }
    }

    /// Bytes a table occupies on the PostgreSQL server (0 on redb, whose tables
    /// `store::space` measures from the snapshot itself).
    pub fn relation_bytes(&self, table: &'static str) -> Result<u64, StoreError> {
        match &self.0 {
            ReadInner::Redb(_) => Ok(0),
            ReadInner::Pg(tx) => tx.relation_bytes(table),
        }
    }

    /// The redb snapshot underneath (backups copy it table by table).
    pub fn as_redb(&self) -> Option<&redb::ReadTransaction> {
        match &self.0 {
            ReadInner::Redb(tx) => Some(tx),
            ReadInner::Pg(_) => None,
        }
    }
}
