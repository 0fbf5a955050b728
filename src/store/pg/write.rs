//! The writer's transaction: `SERIALIZABLE`, with a row cache and per-table write buffers so a
//! batch costs a fixed number of round trips whatever its size.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use super::client::{Conn, Step};
use super::{sql, RawRow, Shared};
use crate::store::StoreError;

/// A table's rows as this transaction knows them: `None` is a row known to be absent.
type Known = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// What the transaction holds between calls.
struct State {
    /// `None` once the transaction ended or its connection was lost.
    conn: Option<Conn>,
    /// The connection's round-trip count when the transaction began.
    trips_at_begin: u64,
    /// Round trips so far (kept when the connection is gone).
    trips: u64,
    /// Rows written, deleted, read or prefetched, per table.
    known: HashMap<&'static str, Known>,
    /// Writes not yet sent, per table: the last write of each key (`None` deletes).
    dirty: BTreeMap<&'static str, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    /// The first failure: the server aborted the transaction, so every later call fails too.
    failed: Option<StoreError>,
}

/// The writer's transaction. Not `Sync`: one thread applies a batch.
pub struct PgWrite {
    shared: Arc<Shared>,
    state: RefCell<State>,
}

fn again(error: &StoreError) -> StoreError {
    match error {
        StoreError::Conflict => StoreError::Conflict,
        other => StoreError::Postgres(format!("the transaction failed earlier: {other}")),
    }
}

impl State {
    /// Runs `f` on the connection unless the transaction already failed; a failure ends it.
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(error) = &self.failed {
            return Err(again(error));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Postgres("the transaction has ended".into()));
        };
        let result = f(conn);
        self.trips = conn.round_trips - self.trips_at_begin;
        if let Err(error) = &result {
            self.failed = Some(again(error));
        }
        result
    }

    fn flush(&mut self, table: &'static str) -> Result<(), StoreError> {
        let Some(buffer) = self.dirty.remove(table) else {
            return Ok(());
        };
        let parts = vec![split(table, buffer)];
        self.run(|conn| {
            let steps = steps(conn, &parts)?;
            sql::first_error(conn.pipeline(steps))
        })
    }

    /// Sends every buffered write and `COMMIT` in one round trip (in table-name order, so two
    /// nodes write tables in the same order).
    fn flush_and_commit(&mut self) -> Result<(), StoreError> {
        let dirty = std::mem::take(&mut self.dirty);
        let parts: Vec<Parts> = dirty
            .into_iter()
            .map(|(table, buffer)| split(table, buffer))
            .collect();
        self.run(|conn| {
            let mut steps = steps(conn, &parts)?;
            if steps.is_empty() {
                return conn.end("COMMIT");
            }
            steps.push(Step::Simple("COMMIT"));
            let mut answers = conn.pipeline(steps);
            let committed = answers
                .pop()
                .unwrap_or_else(|| Err(StoreError::Postgres("no answer to COMMIT".into())));
            // A failed write aborted the transaction; the COMMIT behind it then rolled back.
            sql::first_error(answers)?;
            committed.map(|_| ())
        })
    }

    fn remember(&mut self, table: &'static str, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.known.entry(table).or_default().insert(key, value);
    }

    fn write(&mut self, table: &'static str, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.dirty
            .entry(table)
            .or_default()
            .insert(key.clone(), value.clone());
        self.remember(table, key, value);
    }

    /// Rolls back (if anything was sent) and hands the connection back.
    fn rollback(&mut self, shared: &Shared) -> Result<(), StoreError> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        let result = conn.end("ROLLBACK");
        self.trips = conn.round_trips - self.trips_at_begin;
        shared.record_round_trips(self.trips);
        shared.give_back_writer(conn);
        result
    }

    /// After the commit was sent: records the round trips and hands the connection back,
    /// rolling back first whatever a failure left open.
    fn release(&mut self, shared: &Shared, failed: bool) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        self.trips = conn.round_trips - self.trips_at_begin;
        shared.record_round_trips(self.trips);
        if failed && !conn.is_closed() {
            let _ = conn.batch("ROLLBACK");
        }
        shared.give_back_writer(conn);
    }
}

/// A table's buffered writes split into upserts and deletes.
type Parts = (&'static str, Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>);

fn split(table: &'static str, buffer: BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Parts {
    let (mut put_keys, mut put_values, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
    for (key, value) in buffer {
        match value {
            Some(value) => {
                put_keys.push(key);
                put_values.push(value);
            }
            None => deletes.push(key),
        }
    }
    (table, put_keys, put_values, deletes)
}

/// At most two statements per table: one upsert, one delete (each key appears in one).
fn steps<'a>(conn: &mut Conn, parts: &'a [Parts]) -> Result<Vec<Step<'a>>, StoreError> {
    let mut steps = Vec::with_capacity(parts.len() * 2);
    for (table, put_keys, put_values, deletes) in parts {
        if !put_keys.is_empty() {
            steps.push(sql::upsert(conn, table, put_keys, put_values)?);
        }
        if !deletes.is_empty() {
            steps.push(sql::delete_many(conn, table, deletes)?);
        }
    }
    Ok(steps)
}

impl PgWrite {
    /// A transaction on `conn`, whose `BEGIN` goes out with its first request;
    /// `trips_at_begin` is the connection's count before it.
    pub(crate) fn new(shared: Arc<Shared>, conn: Conn, trips_at_begin: u64) -> Self {
        let trips = conn.round_trips - trips_at_begin;
        Self {
            shared,
            state: RefCell::new(State {
                conn: Some(conn),
                trips_at_begin,
                trips,
                known: HashMap::new(),
                dirty: BTreeMap::new(),
                failed: None,
            }),
        }
    }

    /// Round trips to the server since the transaction began, its `BEGIN` and (once ended)
    /// its `COMMIT` included.
    pub fn round_trips(&self) -> u64 {
        self.state.borrow().trips
    }

    /// The row under `key`, from the transaction's own writes, a prefetch, or the server.
    pub fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut state = self.state.borrow_mut();
        if let Some(known) = state.known.get(table).and_then(|rows| rows.get(key)) {
            return Ok(known.clone());
        }
        let value = state.run(|conn| sql::get(conn, table, key))?;
        state.remember(table, key.to_vec(), value.clone());
        Ok(value)
    }

    /// Reads every row under `keys` in one round trip and remembers them (absent ones too).
    pub fn prefetch(&self, table: &'static str, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        let known = state.known.get(table);
        let mut missing: Vec<Vec<u8>> = keys
            .iter()
            .filter(|key| !known.is_some_and(|rows| rows.contains_key(key.as_slice())))
            .cloned()
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let found = state.run(|conn| sql::get_many(conn, table, &missing))?;
        let rows = state.known.entry(table).or_default();
        for key in missing {
            rows.insert(key, None);
        }
        for (key, value) in found {
            rows.insert(key, Some(value));
        }
        Ok(())
    }

    /// Buffers an upsert.
    pub fn put(&self, table: &'static str, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        if let Some(error) = &state.failed {
            return Err(again(error));
        }
        state.write(table, key, Some(value));
        Ok(())
    }

    /// Buffers a delete.
    pub fn delete(&self, table: &'static str, key: Vec<u8>) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        if let Some(error) = &state.failed {
            return Err(again(error));
        }
        state.write(table, key, None);
        Ok(())
    }

    /// Sends every buffered write and forgets the rows this transaction knew, so a long
    /// transaction (a schema upgrade) holds a bounded amount in memory: later reads ask the
    /// server, which sees what was sent.
    pub fn send_and_forget(&self) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        let tables: Vec<&'static str> = state.dirty.keys().copied().collect();
        for table in tables {
            state.flush(table)?;
        }
        state.known.clear();
        Ok(())
    }

    /// Sends the table's buffered writes (before a range scan or count reads it).
    pub fn flush_table(&self, table: &'static str) -> Result<(), StoreError> {
        self.state.borrow_mut().flush(table)
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
        let mut state = self.state.borrow_mut();
        state.flush(table)?;
        state.run(|conn| sql::page(conn, table, lower, upper, reverse, limit))
    }

    /// Rows in the table as this transaction sees them.
    pub fn count(&self, table: &'static str) -> Result<u64, StoreError> {
        let mut state = self.state.borrow_mut();
        state.flush(table)?;
        state.run(|conn| sql::count(conn, table))
    }

    /// Deletes every row of the table.
    pub fn clear(&self, table: &'static str) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        state.dirty.remove(table);
        state.run(|conn| sql::clear(conn, table))?;
        if let Some(rows) = state.known.get_mut(table) {
            for value in rows.values_mut() {
                *value = None;
            }
        }
        Ok(())
    }

    /// Sends what is buffered and commits, in one round trip. A serialization failure is a
    /// [`StoreError::Conflict`] (the server rolled back); any other failure leaves the outcome
    /// unknown.
    pub fn commit(self) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        if let Some(error) = &state.failed {
            let error = again(error);
            let _ = state.rollback(&self.shared);
            return Err(error);
        }
        let result = state.flush_and_commit();
        state.release(&self.shared, result.is_err());
        result.map_err(|error| match error {
            StoreError::Conflict => StoreError::Conflict,
            other => StoreError::Postgres(format!("commit outcome unknown: {other}")),
        })
    }

    /// Rolls back.
    pub fn abort(self) -> Result<(), StoreError> {
        let mut state = self.state.borrow_mut();
        state.rollback(&self.shared)
    }
}

impl Drop for PgWrite {
    fn drop(&mut self) {
        let state = self.state.get_mut();
        let _ = state.rollback(&self.shared);
    }
}
