//! The durable job queue, in the same redb file as everything else.
//!
//! A job is enqueued by the command whose state asked for it, in the same write transaction, so
//! a receipt and the job that processes it exist together or not at all. Workers lease due
//! jobs: leasing moves the job's due time to the end of its lease, so a worker that crashes
//! mid-job simply lets the lease expire and the job becomes due again (a retry, never a loss).
//! A handler's effects commit in the same transaction as the job's completion, and only if the
//! lease is still the worker's, so a job's effect is applied at most once.
//!
//! Failures retry with exponential backoff and jitter up to the configured attempt limit, then
//! the job becomes a dead letter with its last error and every attempt's time and error; an
//! operator replays it after fixing the cause.

pub mod queue;
pub mod worker;

use crate::store::{ReadTxn, ReadableTable, WriteTxn};
use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::store::keys::{self, time_bytes, TenantId};
use crate::store::writer::Command;
use crate::store::{get_record, put_record, tables, StoreError};

/// The public id prefix.
pub const PREFIX: &str = "job";
/// Most attempts remembered per job (the oldest are dropped beyond this).
pub const MAX_ATTEMPT_LOG: usize = 50;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    /// Waiting for its due time.
    Pending,
    /// A worker holds it until `lease_until_ms`.
    Leased,
    /// Its effect committed.
    Done,
    /// Exhausted its attempts; waits for an operator.
    Dead,
}

impl JobStatus {
    /// Whether the job will still run (waiting or held by a worker).
    pub fn is_live(self) -> bool {
        matches!(self, JobStatus::Pending | JobStatus::Leased)
    }

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Leased => "leased",
            JobStatus::Done => "done",
            JobStatus::Dead => "dead",
        }
    }
}

/// One attempt's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started.
    pub at_ms: i64,
    /// Why it failed (`None` for the successful one).
    pub error: Option<String>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// `job_…`.
    pub id: Id,
    /// Whose.
    pub tenant: u64,
    /// Which handler runs it.
    pub kind: String,
    /// The handler's input (JSON text).
    pub payload: String,
    /// Lifecycle.
    pub status: JobStatus,
    /// Attempts started since the last (re)queue.
    pub attempts: u32,
    /// Due (pending) or lease end (leased).
    pub due_at_ms: i64,
    /// Every attempt, oldest first (bounded).
    pub log: Vec<Attempt>,
    /// Created.
    pub created_at_ms: i64,
    /// Finished (done or dead).
    pub finished_at_ms: Option<i64>,
    /// Times an operator replayed it.
    pub replays: u32,
}

impl Job {
    /// A new pending job, due now.
    pub fn new(tenant: TenantId, kind: &str, payload: String, now_ms: i64) -> Self {
        Self {
            id: Id::generate_at(now_ms),
            tenant: tenant.0,
            kind: kind.to_string(),
            payload,
            status: JobStatus::Pending,
            attempts: 0,
            due_at_ms: now_ms,
            log: Vec::new(),
            created_at_ms: now_ms,
            finished_at_ms: None,
            replays: 0,
        }
    }

    /// The last recorded error.
    pub fn last_error(&self) -> Option<&str> {
        self.log.iter().rev().find_map(|a| a.error.as_deref())
    }
}

fn due_key(due_at_ms: i64, id: Id) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&time_bytes(due_at_ms));
    key[8..].copy_from_slice(&id.to_bytes());
    key
}

fn dead_key(tenant: u64, id: Id) -> [u8; 24] {
    keys::tenant_id(TenantId(tenant), id)
}

/// Stores a new job inside the caller's transaction: the one way to start background work.
pub fn enqueue(tx: &WriteTxn, job: &Job) -> Result<(), StoreError> {
    put_record(&mut tx.open_table(tables::JOBS)?, &job.id.to_bytes(), job)?;
    tx.open_table(tables::JOBS_DUE)?
        .insert(due_key(job.due_at_ms, job.id).as_slice(), ())?;
    Ok(())
}

fn load(tx: &WriteTxn, id: Id) -> Result<Option<Job>, StoreError> {
    let jobs = tx.open_table(tables::JOBS)?;
    get_record(&jobs, id.to_bytes())
}

/// One job, inside a write: for the commands that follow the work they enqueued.
pub fn load_in(tx: &WriteTxn, id: Id) -> Result<Option<Job>, StoreError> {
    load(tx, id)
}

/// Deletes a job that is done (its effect committed), so owners that purge what they enqueued
/// can take its record too; a live job and a dead letter (which waits for an operator) stay.
/// Returns whether it was deleted.
pub fn delete_done(tx: &WriteTxn, id: Id) -> Result<bool, StoreError> {
    match load(tx, id)? {
        Some(job) if job.status == JobStatus::Done => {
            tx.open_table(tables::JOBS)?
                .remove(id.to_bytes().as_slice())?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

fn save(tx: &WriteTxn, job: &Job) -> Result<(), StoreError> {
    put_record(&mut tx.open_table(tables::JOBS)?, &job.id.to_bytes(), job)
}

/// Leases up to `limit` due jobs (of the given kinds) for `lease_ms`.
#[derive(Clone)]
pub struct LeaseJobs {
    /// Now.
    pub now_ms: i64,
    /// Lease length.
    pub lease_ms: i64,
    /// Most jobs.
    pub limit: usize,
}

impl Command for LeaseJobs {
    type Output = Vec<Job>;

    fn apply(self, tx: &WriteTxn) -> Result<Vec<Job>, StoreError> {
        let upper = time_bytes(self.now_ms.saturating_add(1));
        let due: Vec<(Vec<u8>, Id)> = {
            let index = tx.open_table(tables::JOBS_DUE)?;
            let mut out = Vec::new();
            for entry in index.range::<&[u8]>(..upper.as_slice())?.take(self.limit) {
                let (k, _) = entry?;
                let key = k.value().to_vec();
                let id = key
                    .get(8..24)
                    .and_then(|b| <[u8; 16]>::try_from(b).ok())
                    .map(Id::from_bytes)
                    .ok_or_else(|| StoreError::Corrupt("malformed job due key".into()))?;
                out.push((key, id));
            }
            out
        };
        let mut leased = Vec::with_capacity(due.len());
        let mut index = tx.open_table(tables::JOBS_DUE)?;
        for (key, id) in due {
            index.remove(key.as_slice())?;
            let Some(mut job) = load(tx, id)? else {
                continue;
            };
            if !matches!(job.status, JobStatus::Pending | JobStatus::Leased) {
                continue;
            }
            job.status = JobStatus::Leased;
            job.attempts += 1;
            job.due_at_ms = self.now_ms.saturating_add(self.lease_ms);
            job.log.push(Attempt {
                at_ms: self.now_ms,
                error: None,
            });
            if job.log.len() > MAX_ATTEMPT_LOG {
                job.log.remove(0);
            }
            index.insert(due_key(job.due_at_ms, job.id).as_slice(), ())?;
            save(tx, &job)?;
            leased.push(job);
        }
        Ok(leased)
    }
}

/// What a handler's effect came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Done,
    /// Not possible yet (e.g. an out-of-order webhook); retry with backoff.
    Retry(String),
    /// Failed; the kind keeps its own schedule: retry after `delay_ms`, or become a dead
    /// letter now when `None` (its schedule is exhausted).
    RetryIn {
        /// Why it failed.
        error: String,
        /// The delay before the next attempt.
        delay_ms: Option<i64>,
    },
    /// Not attempted (e.g. a per-destination limit was reached): due again after the delay,
    /// without counting an attempt.
    Postpone(i64),
    /// Its work so far committed and more remains (a long task done in slices): due again at
    /// once, without counting an attempt.
    Continue,
}

/// A handler's in-transaction effect: checks, then writes, exactly like a [`Command`].
pub type Effect = Box<dyn FnOnce(&WriteTxn, &Job) -> Result<Outcome, StoreError> + Send + 'static>;

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before a job is dead.
    pub max_attempts: u32,
    /// First retry delay.
    pub base_ms: i64,
    /// Largest delay.
    pub max_ms: i64,
}

impl RetryPolicy {
    /// Exponential backoff with up to 50 % random jitter: base × 2^(attempt − 1), capped.
    pub fn delay_ms(&self, attempt: u32, jitter_seed: u64) -> i64 {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = self
            .base_ms
            .saturating_mul(1i64 << exp)
            .min(self.max_ms)
            .max(1);
        let jitter = (jitter_seed % (raw as u64 / 2 + 1)) as i64;
        raw.saturating_add(jitter).min(self.max_ms.max(1))
    }
}

/// Finishes a leased job: applies the handler's effect (when the lease is still this worker's)
/// and records done, retry or dead in the same transaction.
pub struct CompleteJob {
    /// The job.
    pub id: Id,
    /// The lease end the worker was given: proves the lease is still its own.
    pub lease_until_ms: i64,
    /// The effect, or the error of the work done outside the transaction.
    pub effect: Result<Effect, String>,
    /// Now.
    pub now_ms: i64,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Random seed for jitter.
    pub jitter_seed: u64,
    /// Set only on the writer's spare copy (see the `Clone` impl): the completion was
    /// aborted with a batch, through no fault of this job's.
    pub aborted: bool,
    /// Called in the completion's transaction when the job becomes a dead letter (the outbox
    /// records `dead_letter.created` through it; the queue itself knows no notifications).
    pub on_dead: Option<DeadHook>,
}

/// What runs in the transaction that makes a job a dead letter.
pub type DeadHook = fn(&WriteTxn, &Job, i64) -> Result<(), StoreError>;

/// The writer's spare copy, applied only when a panic aborted the batch that held this
/// completion. An effect runs once and cannot be copied, so the copy puts the job back, due at
/// once: its handler runs again (handlers are idempotent) and its real effect commits then. An
/// abort is not the job's failure, so it never dead-letters a job on its last attempt; a job
/// whose completions are aborted past its attempts (its own effect panics each time) is dead.
impl Clone for CompleteJob {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            lease_until_ms: self.lease_until_ms,
            effect: Err("its completion was aborted with a batch that panicked".into()),
            now_ms: self.now_ms,
            retry: self.retry,
            jitter_seed: self.jitter_seed,
            aborted: true,
            on_dead: self.on_dead,
        }
    }
}

/// How a completion ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Effect committed.
    Done,
    /// Will retry at this instant.
    Retrying(i64),
    /// Moved to dead letters.
    Dead,
    /// The lease had passed to someone else; nothing was applied.
    Stale,
}

impl Command for CompleteJob {
    type Output = Completion;

    fn apply(self, tx: &WriteTxn) -> Result<Completion, StoreError> {
        let Some(mut job) = load(tx, self.id)? else {
            return Ok(Completion::Stale);
        };
        if job.status != JobStatus::Leased || job.due_at_ms != self.lease_until_ms {
            return Ok(Completion::Stale);
        }
        let outcome = match self.effect {
            Ok(effect) => effect(tx, &job)?,
            Err(error) => Outcome::Retry(error),
        };
        tx.open_table(tables::JOBS_DUE)?
            .remove(due_key(job.due_at_ms, job.id).as_slice())?;
        if self.aborted && job.attempts <= self.retry.max_attempts {
            if let Some(last) = job.log.last_mut() {
                last.error = Some("completion aborted with a batch that panicked".into());
            }
            job.status = JobStatus::Pending;
            job.due_at_ms = self.now_ms;
            tx.open_table(tables::JOBS_DUE)?
                .insert(due_key(job.due_at_ms, job.id).as_slice(), ())?;
            save(tx, &job)?;
            return Ok(Completion::Retrying(job.due_at_ms));
        }
        let completion = match outcome {
            Outcome::Done => {
                job.status = JobStatus::Done;
                job.finished_at_ms = Some(self.now_ms);
                Completion::Done
            }
            Outcome::Retry(error) => {
                let delay = (job.attempts < self.retry.max_attempts)
                    .then(|| self.retry.delay_ms(job.attempts, self.jitter_seed));
                fail(tx, &mut job, error, delay, self.now_ms, self.on_dead)?
            }
            Outcome::RetryIn { error, delay_ms } => {
                fail(tx, &mut job, error, delay_ms, self.now_ms, self.on_dead)?
            }
            Outcome::Continue => {
                job.attempts = 0;
                job.log.pop();
                reschedule(tx, &mut job, self.now_ms)?
            }
            Outcome::Postpone(delay_ms) => {
                job.attempts = job.attempts.saturating_sub(1);
                job.log.pop();
                reschedule(tx, &mut job, self.now_ms.saturating_add(delay_ms.max(1)))?
            }
        };
        save(tx, &job)?;
        Ok(completion)
    }
}

/// Records a failed attempt: pending again after `delay_ms`, or dead without one.
fn fail(
    tx: &WriteTxn,
    job: &mut Job,
    error: String,
    delay_ms: Option<i64>,
    now_ms: i64,
    on_dead: Option<DeadHook>,
) -> Result<Completion, StoreError> {
    if let Some(last) = job.log.last_mut() {
        last.error = Some(error);
    }
    match delay_ms {
        Some(delay) => reschedule(tx, job, now_ms.saturating_add(delay.max(0))),
        None => {
            job.status = JobStatus::Dead;
            job.finished_at_ms = Some(now_ms);
            tx.open_table(tables::DEAD_LETTERS)?
                .insert(dead_key(job.tenant, job.id).as_slice(), ())?;
            if let Some(hook) = on_dead {
                hook(tx, job, now_ms)?;
            }
            Ok(Completion::Dead)
        }
    }
}

fn reschedule(tx: &WriteTxn, job: &mut Job, due_at_ms: i64) -> Result<Completion, StoreError> {
    job.status = JobStatus::Pending;
    job.due_at_ms = due_at_ms;
    tx.open_table(tables::JOBS_DUE)?
        .insert(due_key(job.due_at_ms, job.id).as_slice(), ())?;
    Ok(Completion::Retrying(job.due_at_ms))
}

/// Why a replay did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// No such dead letter for this tenant.
    #[error("no dead letter {0}")]
    Missing(String),
}

/// Requeues dead letters (attempts reset, due now).
#[derive(Clone)]
pub struct ReplayDead {
    /// Whose.
    pub tenant: TenantId,
    /// Which jobs (empty = every dead letter matching `kind`).
    pub ids: Vec<Id>,
    /// With an empty `ids`: only this kind.
    pub kind: Option<String>,
    /// With an empty `ids`: only jobs that died in this range.
    pub died_from_ms: Option<i64>,
    /// Upper bound of that range.
    pub died_to_ms: Option<i64>,
    /// Most jobs per command.
    pub limit: usize,
    /// Now.
    pub now_ms: i64,
}

impl Command for ReplayDead {
    type Output = Result<Vec<Job>, ReplayError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let candidates: Vec<Id> = if self.ids.is_empty() {
            let dead = tx.open_table(tables::DEAD_LETTERS)?;
            let (start, end) = keys::tenant_range(self.tenant);
            let mut out = Vec::new();
            for entry in dead.range::<&[u8]>(start.as_slice()..end.as_slice())? {
                let (k, _) = entry?;
                if let Some(id) = keys::id_of(k.value()) {
                    out.push(id);
                }
            }
            out
        } else {
            self.ids.clone()
        };
        let mut replayed = Vec::new();
        for id in candidates {
            if replayed.len() >= self.limit {
                break;
            }
            let job = load(tx, id)?;
            let Some(mut job) =
                job.filter(|j| j.tenant == self.tenant.0 && j.status == JobStatus::Dead)
            else {
                if self.ids.is_empty() {
                    continue;
                }
                return Ok(Err(ReplayError::Missing(id.display(PREFIX))));
            };
            let died = job.finished_at_ms.unwrap_or(0);
            let matches = self.kind.as_deref().is_none_or(|k| k == job.kind)
                && self.died_from_ms.is_none_or(|f| died >= f)
                && self.died_to_ms.is_none_or(|t| died < t);
            if self.ids.is_empty() && !matches {
                continue;
            }
            tx.open_table(tables::DEAD_LETTERS)?
                .remove(dead_key(job.tenant, job.id).as_slice())?;
            job.status = JobStatus::Pending;
            job.attempts = 0;
            job.replays += 1;
            job.due_at_ms = self.now_ms;
            job.finished_at_ms = None;
            tx.open_table(tables::JOBS_DUE)?
                .insert(due_key(job.due_at_ms, job.id).as_slice(), ())?;
            save(tx, &job)?;
            replayed.push(job);
        }
        Ok(Ok(replayed))
    }
}

/// One job.
pub fn get(tx: &ReadTxn, id: Id) -> Result<Option<Job>, StoreError> {
    let jobs = tx.open_table(tables::JOBS)?;
    get_record(&jobs, id.to_bytes())
}

/// A tenant's dead letters after `after`, filtered by kind and death time.
pub fn dead_letters(
    tx: &ReadTxn,
    tenant: TenantId,
    kind: Option<&str>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Job>, bool), StoreError> {
    let dead = tx.open_table(tables::DEAD_LETTERS)?;
    let jobs = tx.open_table(tables::JOBS)?;
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after {
        Some(id) => {
            let mut k = keys::tenant_id(tenant, id).to_vec();
            k.push(0);
            k
        }
        None => start,
    };
    let mut out = Vec::new();
    for entry in dead.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
        let (k, _) = entry?;
        let Some(id) = keys::id_of(k.value()) else {
            continue;
        };
        let Some(job) = get_record::<Job, _>(&jobs, id.to_bytes())? else {
            continue;
        };
        let died = job.finished_at_ms.unwrap_or(0);
        if kind.is_some_and(|k| k != job.kind)
            || from_ms.is_some_and(|f| died < f)
            || to_ms.is_some_and(|t| died >= t)
        {
            continue;
        }
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(job);
    }
    Ok((out, false))
}

/// Counts of jobs by status, for metrics and readiness.
pub fn counts(tx: &ReadTxn) -> Result<(u64, u64), StoreError> {
    let due = tx.open_table(tables::JOBS_DUE)?.len()?;
    let dead = tx.open_table(tables::DEAD_LETTERS)?.len()?;
    Ok((due, dead))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 8,
            base_ms: 1000,
            max_ms: 60_000,
        };
        assert_eq!(p.delay_ms(1, 0), 1000);
        assert_eq!(p.delay_ms(2, 0), 2000);
        assert_eq!(p.delay_ms(4, 0), 8000);
        assert!(p.delay_ms(3, u64::MAX) <= 6000);
        assert_eq!(p.delay_ms(30, 0), 60_000);
        assert!(p.delay_ms(30, 12345) <= 60_000);
    }

    /// A completion whose effect panics in the same batch as a job on its last attempt: the
    /// neighbour is put back (its effect runs again), never dead-lettered for another's panic.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_neighbours_panic_never_dead_letters_a_job() {
        use crate::store::writer::{spawn, WriterLimits};
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(crate::store::Store::open(&dir.path().join("j.redb"), 1 << 20).expect("open"));
        let limits = WriterLimits {
            queue_capacity: 64,
            max_batch_size: 64,
            max_batch_wait: std::time::Duration::from_millis(20),
        };
        let (writer, join) = spawn(Arc::clone(&store), limits).expect("spawn");
        let now = 1_800_000_000_000;
        struct Enqueue(Job, Job);
        impl Clone for Enqueue {
            fn clone(&self) -> Self {
                Enqueue(self.0.clone(), self.1.clone())
            }
        }
        impl Command for Enqueue {
            type Output = ();
            fn apply(self, tx: &WriteTxn) -> Result<(), StoreError> {
                enqueue(tx, &self.0)?;
                enqueue(tx, &self.1)
            }
        }
        let good = Job::new(TenantId(1), "t.good", String::new(), now);
        let bad = Job::new(TenantId(1), "t.bad", String::new(), now);
        writer
            .submit(Enqueue(good.clone(), bad.clone()))
            .await
            .expect("enqueue");
        let leased = writer
            .submit(LeaseJobs {
                now_ms: now,
                lease_ms: 10_000,
                limit: 2,
            })
            .await
            .expect("lease");
        assert_eq!(leased.len(), 2);
        let lease = |id: Id| leased.iter().find(|j| j.id == id).map(|j| j.due_at_ms);
        let retry = RetryPolicy {
            max_attempts: 1,
            base_ms: 10,
            max_ms: 10,
        };
        let complete = |id: Id, effect: Result<Effect, String>| CompleteJob {
            id,
            lease_until_ms: lease(id).expect("leased"),
            effect,
            now_ms: now + 1,
            retry,
            jitter_seed: 0,
            aborted: false,
            on_dead: None,
        };
        let (g, b) = tokio::join!(
            writer.submit(complete(good.id, Ok(Box::new(|_, _| Ok(Outcome::Done))))),
            writer.submit(complete(bad.id, Ok(Box::new(|_, _| panic!("injected"))))),
        );
        assert_ne!(g, Ok(Completion::Dead), "not dead for another's panic");
        assert_ne!(b, Ok(Completion::Done));
        let tx = store.read().expect("read");
        let good_now = get(&tx, good.id).expect("read").expect("job");
        assert_ne!(good_now.status, JobStatus::Dead);
        drop(writer);
        join.join().expect("writer exits");
    }
}
