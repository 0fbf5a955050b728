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

mod client;
pub mod cluster;
mod pages;
mod pool;
mod read;
mod schema;
mod sql;
#[cfg(test)]
mod tests;
mod write;

pub use pages::{Pages, Source, PAGE_ROWS};
pub use read::PgRead;
pub use write::PgWrite;

/// A row as bytes: key, value.
pub type RawRow = (Vec<u8>, Vec<u8>);

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use client::{Conn, Driver};
use pool::Pool;

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
    /// How long a read waits for a free pooled connection before it fails.
    pub pool_wait_ms: u64,
    /// PEM file with the certificate authorities to trust for TLS (else the system's roots).
    pub ca_file: Option<PathBuf>,
}

/// What the store and its transactions share: the client runtime, the writer's connection and
/// the read pool.
pub(crate) struct Shared {
    driver: Driver,
    /// The writer's connection while no write transaction holds it.
    writer: Mutex<Option<Conn>>,
    pool: Pool,
    /// Round trips of the last write transaction that ended.
    last_write_round_trips: AtomicU64,
}

impl Shared {
    fn writer_slot(&self) -> MutexGuard<'_, Option<Conn>> {
        match self.writer.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn connect(&self, generation: u64) -> Result<Conn, StoreError> {
        self.driver
            .connect(generation)
            .map_err(StoreError::Postgres)
    }

    /// Takes a write transaction's connection back (a closed or retired one is dropped; a
    /// second writer's extra connection too).
    pub(crate) fn give_back_writer(&self, conn: Conn) {
        if conn.is_closed() || conn.generation != self.pool.generation() {
            return;
        }
        let mut slot = self.writer_slot();
        if slot.is_none() {
            *slot = Some(conn);
        }
    }

    pub(crate) fn record_round_trips(&self, trips: u64) {
        self.last_write_round_trips.store(trips, Ordering::Relaxed);
    }

    /// The writer's connection, or a new one when it is gone or in use.
    fn writer_conn(&self) -> Result<Conn, StoreError> {
        let generation = self.pool.generation();
        let held = self.writer_slot().take();
        match held {
            Some(conn) if !conn.is_closed() && conn.generation == generation => Ok(conn),
            _ => self.connect(generation),
        }
    }
}

/// A connection pool and the schema check: what `Store` holds for this backend.
pub struct PgStore {
    shared: Arc<Shared>,
}

impl PgStore {
    /// Connects, creates the schema on an empty database (format marker, version, every table
    /// in `tables`) or checks an existing one, all in one transaction.
    pub fn connect(options: &PgOptions) -> Result<Self, OpenError> {
        Self::connect_checking(options, schema::Version::Current)
    }

    /// Connects to a database an older Tally wrote (creating the tables this version adds),
    /// for [`crate::store::upgrade_postgres`]; a newer one is still refused.
    pub(crate) fn connect_to_upgrade(options: &PgOptions) -> Result<Self, OpenError> {
        Self::connect_checking(options, schema::Version::OlderToUpgrade)
    }

    fn connect_checking(options: &PgOptions, version: schema::Version) -> Result<Self, OpenError> {
        let driver = Driver::new(options).map_err(OpenError::Postgres)?;
        let mut conn = driver.connect(0).map_err(OpenError::Postgres)?;
        schema::ensure(&mut conn, &driver.target, version)?;
        let shared = Shared {
            driver,
            writer: Mutex::new(Some(conn)),
            pool: Pool::new(
                options.pool_size.saturating_sub(1),
                Duration::from_millis(options.pool_wait_ms),
            ),
            last_write_round_trips: AtomicU64::new(0),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// Where this store connects (`host:port/db`), for messages; never the password.
    pub fn target(&self) -> &str {
        &self.shared.driver.target
    }

    /// Begins the writer's `SERIALIZABLE` transaction (its `BEGIN` goes out with the first
    /// request).
    pub fn begin_write(&self) -> Result<PgWrite, StoreError> {
        let mut conn = self.shared.writer_conn()?;
        let trips = conn.round_trips;
        conn.begin("BEGIN ISOLATION LEVEL SERIALIZABLE");
        Ok(PgWrite::new(Arc::clone(&self.shared), conn, trips))
    }

    /// Begins a read-only snapshot on a pooled connection (its `BEGIN` goes out with the
    /// first query).
    pub fn begin_read(&self) -> Result<PgRead, StoreError> {
        let shared = &self.shared;
        let mut conn = shared
            .pool
            .checkout(|generation| shared.connect(generation))?;
        conn.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        Ok(PgRead::new(Arc::clone(shared), conn))
    }

    /// Drops every pooled connection and connects again (after a connection was lost).
    pub fn reconnect(&self) -> Result<(), StoreError> {
        let generation = self.shared.pool.retire_all();
        *self.shared.writer_slot() = None;
        let conn = self.shared.connect(generation)?;
        self.shared.give_back_writer(conn);
        Ok(())
    }

    /// Round trips of the last write transaction that ended, its `BEGIN` and `COMMIT`
    /// included: what a batch costs.
    pub fn last_write_round_trips(&self) -> u64 {
        self.shared.last_write_round_trips.load(Ordering::Relaxed)
    }
}
