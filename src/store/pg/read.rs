//! Read snapshots: `REPEATABLE READ READ ONLY` transactions on pooled connections.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use super::client::Conn;
use super::{sql, RawRow, Shared};
use crate::store::StoreError;

/// A read-only snapshot on a pooled connection, returned to the pool when dropped.
pub struct PgRead {
    shared: Arc<Shared>,
    /// `None` once a statement failed: the snapshot is unusable and its connection dropped.
    conn: Mutex<Option<Conn>>,
}

impl PgRead {
    /// A snapshot on `conn`, whose `BEGIN` goes out with its first query.
    pub(crate) fn new(shared: Arc<Shared>, conn: Conn) -> Self {
        Self {
            shared,
            conn: Mutex::new(Some(conn)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Conn>> {
        match self.conn.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn run<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut guard = self.lock();
        let Some(conn) = guard.as_mut() else {
            return Err(StoreError::Postgres(
                "the read snapshot failed earlier".into(),
            ));
        };
        let result = f(conn);
        if result.is_err() {
            // The server aborted the snapshot; the connection goes back after a rollback.
            if let Some(mut conn) = guard.take() {
                if !conn.is_closed() && conn.end("ROLLBACK").is_ok() {
                    self.shared.pool.checkin(Some(conn));
                } else {
                    self.shared.pool.checkin(None);
                }
            }
        }
        result
    }

    /// The row under `key`.
    pub fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(|conn| sql::get(conn, table, key))
    }

    /// The rows under `keys`, in their order, in one round trip.
    pub fn get_many(
        &self,
        table: &'static str,
        keys: &Vec<Vec<u8>>,
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found: HashMap<Vec<u8>, Vec<u8>> = self
            .run(|conn| sql::get_many(conn, table, keys))?
            .into_iter()
            .collect();
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    /// Up to `limit` rows within the bounds, ascending (or descending when `reverse`).
    pub fn page(
        &self,
        table: &'static str,
        lower: &Bound<Vec<u8>>,
        upper: &Bound<Vec<u8>>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<RawRow>, StoreError> {
        self.run(|conn| sql::page(conn, table, lower, upper, reverse, limit))
    }

    /// Bytes the table occupies on the server, indexes included.
    pub fn relation_bytes(&self, table: &'static str) -> Result<u64, StoreError> {
        self.run(|conn| sql::relation_bytes(conn, table))
    }

    /// Rows in the table.
    pub fn count(&self, table: &'static str) -> Result<u64, StoreError> {
        self.run(|conn| sql::count(conn, table))
    }
}

impl Drop for PgRead {
    fn drop(&mut self) {
        let conn = match self.conn.get_mut() {
            Ok(conn) => conn.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(mut conn) = conn else {
            return;
        };
        let kept = !conn.is_closed() && conn.end("ROLLBACK").is_ok();
        self.shared.pool.checkin(kept.then_some(conn));
    }
}
