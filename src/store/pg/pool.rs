//! The read connections: a bounded pool, filled lazily, that drops closed connections and
//! those of an older generation (before a reconnect).

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::client::Conn;
use crate::store::StoreError;

/// Idle connections and how many exist in all (idle or checked out).
struct Slots {
    idle: Vec<Conn>,
    open: usize,
    generation: u64,
}

/// At most `max` read connections; a checkout waits (bounded) for one to come back.
pub(crate) struct Pool {
    slots: Mutex<Slots>,
    returned: Condvar,
    max: usize,
    wait: Duration,
}

impl Pool {
    /// An empty pool of at most `max` connections (at least one).
    pub(crate) fn new(max: usize, wait: Duration) -> Self {
        Self {
            slots: Mutex::new(Slots {
                idle: Vec::new(),
                open: 0,
                generation: 0,
            }),
            returned: Condvar::new(),
            max: max.max(1),
            wait,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        match self.slots.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The current generation: connections made now belong to it.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// An idle connection, or a new one from `connect` while under the bound, or (after a
    /// bounded wait) `pool exhausted`.
    pub(crate) fn checkout(
        &self,
        connect: impl Fn(u64) -> Result<Conn, StoreError>,
    ) -> Result<Conn, StoreError> {
        let deadline = Instant::now() + self.wait;
        let mut slots = self.lock();
        loop {
            while let Some(conn) = slots.idle.pop() {
                if conn.is_closed() || conn.generation != slots.generation {
                    slots.open = slots.open.saturating_sub(1);
                    continue;
                }
                return Ok(conn);
            }
            if slots.open < self.max {
                slots.open += 1;
                let generation = slots.generation;
                drop(slots);
                return connect(generation).inspect_err(|_| self.release_slot());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Postgres(format!(
                    "read connection pool exhausted ({} connections busy for {} ms)",
                    self.max,
                    self.wait.as_millis()
                )));
            }
            slots = match self.returned.wait_timeout(slots, deadline - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn release_slot(&self) {
        let mut slots = self.lock();
        slots.open = slots.open.saturating_sub(1);
        drop(slots);
        self.returned.notify_one();
    }

    /// Takes a connection back; `None` (a broken one) frees its slot.
    pub(crate) fn checkin(&self, conn: Option<Conn>) {
        let mut slots = self.lock();
        match conn {
            Some(conn) if !conn.is_closed() && conn.generation == slots.generation => {
                slots.idle.push(conn);
            }
            _ => slots.open = slots.open.saturating_sub(1),
        }
        drop(slots);
        self.returned.notify_one();
    }

    /// Retires every connection: idle ones now, checked-out ones when they come back.
    pub(crate) fn retire_all(&self) -> u64 {
        let mut slots = self.lock();
        slots.generation += 1;
        let dropped = slots.idle.len();
        slots.idle.clear();
        slots.open = slots.open.saturating_sub(dropped);
        let generation = slots.generation;
        drop(slots);
        self.returned.notify_all();
        generation
    }
}
