//! The PostgreSQL backend: every Tally table is a PostgreSQL table `tally_<name>(k bytea primary
//! key, v bytea not null)`, ordered by `k` exactly as redb orders its keys.
//!
//! A write transaction is one `SERIALIZABLE` transaction: point reads go to the server unless
//! the transaction already knows the row (it wrote it, or a prefetch read it), writes are
//! buffered per table and sent as one multi-row statement before anything reads that table's
//! ranges and at commit, so round trips do not grow with a batch. A serialization failure or
//! deadlock is [`StoreError::Conflict`]: nothing committed, and the writer applies the batch
//! again. Reads are `REPEATABLE READ READ ONLY` transactions on pooled connections.
//!
//! The client is tokio-postgres driven by a small runtime of the backend's own; callers block
//! on its futures (the writer is an OS thread; readers block their worker for a round trip).

mod pages;

pub use pages::{Pages, Source, PAGE_ROWS};

/// A row as bytes: key, value.
pub type RawRow = (Vec<u8>, Vec<u8>);

use std::ops::Bound;
use std::path::PathBuf;

use super::{OpenError, StoreError};

/// How to reach the database (from `database_url` and `[postgres]` in the config).
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/db?sslmode=…`; several hosts are tried in order.
    pub url: String,
    /// Most connections this node opens (one is the writer's; the rest serve reads).
    pub pool_size: usize,
    /// How long connecting may take before it counts as refused.
    pub connect_timeout_ms: u64,
    /// PEM file with the certificate authorities to trust for TLS (else the system's roots).
    pub ca_file: Option<PathBuf>,
}

/// A connection pool and the schema check: what `Store` holds for this backend.
pub struct PgStore {}

impl PgStore {
    /// Connects, creates the schema on an empty database (format marker, version, every table
    /// in `tables`) or checks an existing one, all in one transaction.
    pub fn connect(_options: &PgOptions) -> Result<Self, OpenError> {
        Err(OpenError::Io(PathBuf::new(), "not built yet".into()))
    }

    /// Begins the writer's `SERIALIZABLE` transaction.
    pub fn begin_write(&self) -> Result<PgWrite, StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Begins a read-only snapshot on a pooled connection.
    pub fn begin_read(&self) -> Result<PgRead, StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Drops every pooled connection and connects again (after a connection was lost).
    pub fn reconnect(&self) -> Result<(), StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }
}

/// The writer's transaction. Not `Sync`: one thread applies a batch.
pub struct PgWrite {}

impl PgWrite {
    /// The row under `key`, from the transaction's own writes, a prefetch, or the server.
    pub fn get(&self, _table: &'static str, _key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Reads every row under `keys` in one round trip and remembers them (absent ones too).
    pub fn prefetch(&self, _table: &'static str, _keys: &[Vec<u8>]) -> Result<(), StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Buffers an upsert.
    pub fn put(
        &self,
        _table: &'static str,
        _key: Vec<u8>,
        _value: Vec<u8>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Buffers a delete.
    pub fn delete(&self, _table: &'static str, _key: Vec<u8>) -> Result<(), StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Sends the table's buffered writes (before a range scan or count reads it).
    pub fn flush_table(&self, _table: &'static str) -> Result<(), StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Up to `limit` rows within the bounds, ascending (or descending when `reverse`).
    pub fn page(
        &self,
        _table: &'static str,
        _lower: &Bound<Vec<u8>>,
        _upper: &Bound<Vec<u8>>,
        _reverse: bool,
        _limit: usize,
    ) -> Result<Vec<RawRow>, StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Rows in the table as this transaction sees them.
    pub fn count(&self, _table: &'static str) -> Result<u64, StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Deletes every row of the table.
    pub fn clear(&self, _table: &'static str) -> Result<(), StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Sends what is buffered and commits.
    pub fn commit(self) -> Result<(), StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Rolls back.
    pub fn abort(self) -> Result<(), StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }
}

/// A read-only snapshot on a pooled connection, returned to the pool when dropped.
pub struct PgRead {}

impl PgRead {
    /// The row under `key`.
    pub fn get(&self, _table: &'static str, _key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Up to `limit` rows within the bounds, ascending (or descending when `reverse`).
    pub fn page(
        &self,
        _table: &'static str,
        _lower: &Bound<Vec<u8>>,
        _upper: &Bound<Vec<u8>>,
        _reverse: bool,
        _limit: usize,
    ) -> Result<Vec<RawRow>, StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }

    /// Rows in the table.
    pub fn count(&self, _table: &'static str) -> Result<u64, StoreError> {
        Err(StoreError::Postgres("not built yet".into()))
    }
}
