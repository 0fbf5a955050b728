//! A new meter's backfill: counting the events stored before the meter existed, in bounded
//! transactions.
//!
//! [`super::meter::CreateMeter`] counts the first chunk of the tenant's stored events in its own
//! transaction. When events remain, the same transaction stores a [`Backfill`] (where the count
//! stopped, and the event sequence number at creation) and enqueues a [`JOB_KIND`] job; the
//! job counts one chunk per writer command ([`BackfillChunk`]) until the last event, then
//! removes the record. Every chunk reads the cursor from the store in its own transaction, so
//! a chunk can never be counted twice, whoever runs it (a job that outlived its lease, a second
//! node), and a crash loses at most the chunk in flight, which is then counted again from the
//! stored cursor.
//!
//! Ingest counts every event committed after the meter (its sequence number is above the
//! record's `through_seq`); the backfill counts only those at or below it, so each event is
//! counted exactly once. While a backfill runs the meter's usage is incomplete: it reports
//! `backfill_status: running`, and plans, entitlements and alerts refuse it until it is
//! complete (they would bill, grant or alert on a partial count).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::meter::{self, Meter};
use super::properties_dictionary;
use super::usage;
use crate::id::Id;
use crate::jobs::worker::{Handler, HandlerFuture};
use crate::jobs::{Effect, Job, Outcome};
use crate::store::keys::{self, TenantId};
use crate::store::writer::{Command, WriteError, WriterHandle};
use crate::store::{get_record, put_record, tables, ReadTxn, ReadableTable, StoreError, WriteTxn};

/// The job kind that continues a backfill.
pub const JOB_KIND: &str = "meter_backfill";
/// Events examined per transaction unless configured (`ingest.backfill_chunk_events`): a few
/// milliseconds of writer time.
pub const DEFAULT_CHUNK_EVENTS: u64 = 2_000;

/// How long a backfill job waits when the writer refused its chunk for now (without spending
/// an attempt).
const BUSY_RETRY_MS: i64 = 1_000;

/// A backfill in progress, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    /// The last event key examined.
    pub after_key: Option<Vec<u8>>,
    /// Events with a sequence number up to this were stored before the meter existed.
    pub through_seq: u64,
    /// Transactions it took so far.
    pub chunks: u64,
}

/// Whether `meter`'s backfill is still running.
pub fn is_running(tx: &ReadTxn, tenant: TenantId, meter: Id) -> Result<bool, StoreError> {
    running(&tx.open_table(tables::METER_BACKFILLS)?, tenant, meter)
}

/// [`is_running`] inside a write transaction.
pub fn is_running_in(tx: &WriteTxn, tenant: TenantId, meter: Id) -> Result<bool, StoreError> {
    running(&tx.open_table(tables::METER_BACKFILLS)?, tenant, meter)
}

fn running(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    tenant: TenantId,
    meter: Id,
) -> Result<bool, StoreError> {
    Ok(table
        .get(keys::tenant_id(tenant, meter).as_slice())?
        .is_some())
}

/// Counts the first chunk for a meter being created (already stored in this transaction) and,
/// when events remain, stores the backfill and enqueues its job. Returns the meter with its
/// counts so far and whether the backfill continues.
pub fn start(
    tx: &WriteTxn,
    tenant: TenantId,
    mut meter: Meter,
    chunk_events: u64,
) -> Result<(Meter, bool), StoreError> {
    let (through_seq, stored) = {
        let meta = tx.open_table(tables::META)?;
        let stored = properties_dictionary::type_stored(
            &meta,
            &tx.open_table(tables::PROPERTY_DICTIONARIES)?,
            tenant,
            &meter.event_type,
        )?;
        (super::event::current_seq(&meta)?, stored)
    };
    let pass = if stored == Some(false) {
        // No event of the type was ever stored: nothing to count, however many others exist.
        usage::BackfillPass {
            counted: 0,
            skipped: 0,
            last_key: None,
            finished: true,
        }
    } else {
        usage::backfill_pass(tx, tenant, &meter, None, through_seq, chunk_events)?
    };
    meter.backfilled_events = pass.counted;
    meter.backfill_skipped_events = pass.skipped;
    put_record(
        &mut tx.open_table(tables::METERS)?,
        &keys::tenant_id(tenant, meter.id),
        &meter,
    )?;
    if pass.finished {
        return Ok((meter, false));
    }
    let state = Backfill {
        after_key: pass.last_key,
        through_seq,
        chunks: 1,
    };
    put_record(
        &mut tx.open_table(tables::METER_BACKFILLS)?,
        &keys::tenant_id(tenant, meter.id),
        &state,
    )?;
    let job = Job::new(
        tenant,
        JOB_KIND,
        meter.id.display(meter::PREFIX),
        meter.created_at_ms,
    );
    crate::jobs::enqueue(tx, &job)?;
    Ok((meter, true))
}

/// Counts the next chunk of a meter's backfill; `true` when it is complete (or was already).
#[derive(Clone)]
pub struct BackfillChunk {
    /// Owner.
    pub tenant: TenantId,
    /// The meter.
    pub meter: Id,
    /// Events examined at most.
    pub chunk_events: u64,
}

impl Command for BackfillChunk {
    type Output = bool;

    fn apply(self, tx: &WriteTxn) -> Result<bool, StoreError> {
        let key = keys::tenant_id(self.tenant, self.meter);
        let Some(mut state) =
            get_record::<Backfill, _>(&tx.open_table(tables::METER_BACKFILLS)?, key)?
        else {
            return Ok(true);
        };
        let mut meters = tx.open_table(tables::METERS)?;
        let Some(mut meter) = get_record::<Meter, _>(&meters, key)? else {
            return Err(StoreError::Corrupt(
                "a backfill names a missing meter".into(),
            ));
        };
        let pass = usage::backfill_pass(
            tx,
            self.tenant,
            &meter,
            state.after_key.as_deref(),
            state.through_seq,
            self.chunk_events.max(1),
        )?;
        meter.backfilled_events = meter.backfilled_events.saturating_add(pass.counted);
        meter.backfill_skipped_events = meter.backfill_skipped_events.saturating_add(pass.skipped);
        put_record(&mut meters, &key, &meter)?;
        let mut backfills = tx.open_table(tables::METER_BACKFILLS)?;
        if pass.finished {
            backfills.remove(key.as_slice())?;
            tracing::info!(
                meter = %meter.key,
                events = meter.backfilled_events,
                chunks = state.chunks.saturating_add(1),
                "meter backfill complete"
            );
            return Ok(true);
        }
        state.after_key = pass.last_key;
        state.chunks = state.chunks.saturating_add(1);
        put_record(&mut backfills, &key, &state)?;
        Ok(false)
    }
}

/// Runs a backfill job: chunk after chunk, each its own writer command (other writes
/// interleave), for at most `slice`; then the job is due again at once, so a long backfill
/// never outlives its lease.
pub struct RunBackfill {
    /// Submits the chunks.
    pub writer: WriterHandle,
    /// Events per chunk.
    pub chunk_events: u64,
    /// How long one run of the job keeps going (below the job lease).
    pub slice: Duration,
}

impl Handler for RunBackfill {
    fn run(&self, job: Job) -> HandlerFuture {
        let (writer, chunk_events, slice) = (self.writer.clone(), self.chunk_events, self.slice);
        Box::pin(async move {
            let meter = Id::parse(&job.payload, meter::PREFIX).ok_or("bad meter id")?;
            let command = BackfillChunk {
                tenant: TenantId(job.tenant),
                meter,
                chunk_events,
            };
            let started = Instant::now();
            loop {
                let complete = match writer.submit(command.clone()).await {
                    Ok(complete) => complete,
                    // Refused for now (a full queue, an aborted commit): the chunk is counted
                    // from the stored cursor whenever it runs, so waiting costs nothing, and a
                    // busy writer must not turn a meter's backfill into a dead letter.
                    Err(WriteError::Overloaded | WriteError::Unavailable) => {
                        let effect: Effect = Box::new(|_, _| Ok(Outcome::Postpone(BUSY_RETRY_MS)));
                        return Ok(effect);
                    }
                    Err(e) => return Err(e.to_string()),
                };
                let outcome = if complete {
                    Outcome::Done
                } else if started.elapsed() >= slice {
                    Outcome::Continue
                } else {
                    continue;
                };
                let effect: Effect = Box::new(move |_, _| Ok(outcome));
                return Ok(effect);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that refuses the chunk (its queue full) postpones the job without spending an
    /// attempt, so sustained overload never makes a meter's backfill a dead letter.
    #[tokio::test]
    async fn a_refused_chunk_postpones_the_job_instead_of_failing_it() {
        let (writer, _queue) = crate::store::writer::unserved(1);
        let meter = Id::generate();
        let command = BackfillChunk {
            tenant: TenantId(1),
            meter,
            chunk_events: 10,
        };
        // Fill the queue's one place; nobody serves it.
        let filler = writer.clone();
        tokio::spawn(async move { filler.submit(command).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let handler = RunBackfill {
            writer,
            chunk_events: 10,
            slice: Duration::from_secs(1),
        };
        let job = Job::new(TenantId(1), JOB_KIND, meter.display(meter::PREFIX), 0);
        let effect = handler.run(job.clone()).await.expect("not an error");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::Store::open(&dir.path().join("b.redb"), 1 << 20).expect("open");
        let tx = store.begin_write().expect("write");
        let outcome = effect(&tx, &job).expect("effect");
        assert!(
            matches!(outcome, Outcome::Postpone(ms) if ms == BUSY_RETRY_MS),
            "{outcome:?}"
        );
    }
}
