//! The single writer: one OS thread owns every redb write transaction and commits many commands
//! at once (group commit).
//!
//! Why one writer: redb allows one write transaction at a time anyway, and a single owner means
//! "is this identity known?" and "record its outcome" can never race. Why batches: one durable
//! commit (an fsync) costs a fraction of a millisecond, so committing each command alone would
//! cap the daemon at a few thousand writes per second; draining whatever is queued into one
//! transaction lets throughput grow with load while every reply still waits for its commit.
//!
//! Rules every [`Command`] follows:
//! - read and check everything first, write only when the command will succeed; a business
//!   failure is part of its output and writes nothing (redb cannot roll back part of a
//!   transaction);
//! - a later command in the same batch sees the earlier ones' writes, so a batch equals its
//!   commands run one by one in order;
//! - no network or other outside I/O.
//!
//! A command that panics fails alone: the writer aborts the transaction, answers that command
//! with [`WriteError::Failed`] and applies the rest of the batch again in a fresh transaction
//! (from spare copies made on the submitting thread, which is why a [`Command`] is `Clone`).
//! redb cannot roll back part of a transaction (a savepoint needs a transaction that has not
//! written yet), so re-running the others is the one way to keep them. When the panic happened
//! in a run of several commands, the retry applies every command alone to find the one.
//!
//! A [`StoreError`] (I/O, corruption) is fatal to the batch: it is aborted and every waiter gets
//! [`WriteError::Unavailable`]; clients retry with their idempotency keys, which is safe. When it
//! is the commit itself that fails, the outcome is unknown rather than "nothing": a write or an
//! fsync that fails after redb has written the new root leaves a commit that a reopened
//! database may still hold (the fault-injection tests in `store::fault` find exactly that).
//! Idempotency keys and event identities are what make the retry answer with the original
//! result instead of doing it twice.

use std::any::{Any, TypeId};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::store::WriteTxn;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use super::writer_stats::{WriterSnapshot, WriterStats};
use super::{touched, Store, StoreError};

/// One unit of work for the writer: a pure description of an intent, applied inside the batch's
/// transaction. `Clone` so the writer can apply it again in a fresh transaction when another
/// command of its batch panics.
pub trait Command: Clone + Send + 'static {
    /// What the waiting request receives once the batch has committed.
    type Output: Send + 'static;

    /// Checks, then writes. Must not perform outside I/O.
    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError>;

    /// Applies a run of commands of this type that sit next to each other in a batch, returning
    /// one output per command in order. It must equal applying them one by one (the default);
    /// a hot command overrides it to share per-command work across the run, such as opening
    /// its tables once instead of once per command.
    fn apply_run(commands: Vec<Self>, tx: &WriteTxn) -> Result<Vec<Self::Output>, StoreError>
    where
        Self: Sized,
    {
        commands.into_iter().map(|c| c.apply(tx)).collect()
    }
}

/// Why a submitted command has no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The queue was full; nothing was enqueued. Retry after a pause.
    #[error("the writer queue is full")]
    Overloaded,
    /// The batch was aborted (nothing written) or its commit failed (it may or may not have
    /// reached the disk). Retry with the same idempotency key or event ids: a write that did
    /// commit is answered from its record, not repeated.
    #[error("the write could not be committed")]
    Unavailable,
    /// The daemon is shutting down and accepts no more writes.
    #[error("the writer has stopped")]
    Stopped,
    /// The command panicked while applying (a defect): nothing of it was written, and the other
    /// commands of its batch committed without it. Retrying fails the same way.
    #[error("the command failed inside the writer")]
    Failed,
}

/// Limits of the writer (from `[writer]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// Bounded queue length.
    pub queue_capacity: usize,
    /// Most commands per transaction.
    pub max_batch_size: usize,
    /// How long to wait for a batch to fill after its first command.
    pub max_batch_wait: Duration,
}

/// A queued command, type-erased so one channel carries every kind.
trait Pending: Send {
    /// The concrete command type, to find runs of one type in a batch.
    fn command_type(&self) -> TypeId;
    /// Applies this command and `rest` (all of the same [`Pending::command_type`]) as one run.
    fn apply_run(&mut self, rest: &mut [Box<dyn Pending>], tx: &WriteTxn)
        -> Result<(), StoreError>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Makes the command ready to apply again in a fresh transaction (after an aborted one).
    fn rearm(&mut self);
    fn finish(self: Box<Self>, committed: Result<(), WriteError>);
}

/// What the writer sends back: the result, and the spare copy, so it is freed on the
/// submitting thread rather than on the writer's.
type Reply<C> = (Result<<C as Command>::Output, WriteError>, Option<C>);

struct Slot<C: Command> {
    command: Option<C>,
    /// A copy made when submitted, to apply again if the batch's transaction is aborted.
    spare: Option<C>,
    output: Option<C::Output>,
    reply: oneshot::Sender<Reply<C>>,
    /// When it was submitted: its wait from arrival to commit is what a stall costs a client.
    queued_at: Instant,
}

impl<C: Command> Pending for Slot<C> {
    fn command_type(&self) -> TypeId {
        TypeId::of::<C>()
    }

    fn apply_run(
        &mut self,
        rest: &mut [Box<dyn Pending>],
        tx: &WriteTxn,
    ) -> Result<(), StoreError> {
        let mut slots: Vec<&mut Slot<C>> = Vec::with_capacity(rest.len() + 1);
        slots.push(self);
        for other in rest.iter_mut() {
            match other.as_any_mut().downcast_mut::<Slot<C>>() {
                Some(slot) => slots.push(slot),
                None => {
                    return Err(StoreError::Corrupt(
                        "a run of commands mixed command types".into(),
                    ))
                }
            }
        }
        let commands: Vec<C> = slots.iter_mut().filter_map(|s| s.command.take()).collect();
        if commands.len() != slots.len() {
            return Err(StoreError::Corrupt("a command was applied twice".into()));
        }
        let outputs = C::apply_run(commands, tx)?;
        if outputs.len() != slots.len() {
            return Err(StoreError::Corrupt(
                "a run of commands returned the wrong number of outputs".into(),
            ));
        }
        for (slot, output) in slots.into_iter().zip(outputs) {
            slot.output = Some(output);
        }
        Ok(())
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn rearm(&mut self) {
        self.output = None;
        if self.command.is_none() {
            self.command = self.spare.clone();
        }
    }

    fn finish(self: Box<Self>, committed: Result<(), WriteError>) {
        let Slot {
            output,
            reply,
            spare,
            queued_at,
            ..
        } = *self;
        if committed.is_ok() {
            metrics::histogram!("tally_writer_wait_seconds")
                .record(queued_at.elapsed().as_secs_f64());
        }
        let result = match (committed, output) {
            (Ok(()), Some(output)) => Ok(output),
            (Ok(()), None) => Err(WriteError::Unavailable),
            (Err(e), _) => Err(e),
        };
        // The requester may have gone away (client disconnected); its write still committed.
        let _ = reply.send((result, spare));
    }
}

/// The cloneable handle request handlers use to submit commands.
#[derive(Clone)]
pub struct WriterHandle {
    queue: Sender<Box<dyn Pending>>,
    healthy: Arc<AtomicBool>,
    stats: Arc<WriterStats>,
}

impl WriterHandle {
    /// Enqueues a command and waits for its committed output. Never blocks the caller's thread:
    /// a full queue is an immediate [`WriteError::Overloaded`].
    pub async fn submit<C: Command>(&self, command: C) -> Result<C::Output, WriteError> {
        let (reply, receive) = oneshot::channel();
        let slot: Box<dyn Pending> = Box::new(Slot {
            spare: Some(command.clone()),
            command: Some(command),
            output: None,
            reply,
            queued_at: Instant::now(),
        });
        match self.queue.try_send(slot) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!("tally_writer_rejected_total", "reason" => "overloaded")
                    .increment(1);
                return Err(WriteError::Overloaded);
            }
            Err(TrySendError::Disconnected(_)) => return Err(WriteError::Stopped),
        }
        match receive.await {
            Ok((result, _spare)) => result,
            Err(_) => Err(WriteError::Unavailable),
        }
    }

    /// Commands waiting right now.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// False while the writer is reopening the database after a failed commit.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Batch sizes and commit latencies of the recent commits (read without waiting for the
    /// writer).
    pub fn stats(&self) -> WriterSnapshot {
        self.stats.snapshot()
    }
}

/// Starts the writer thread. It runs until every [`WriterHandle`] is dropped and the queue is
/// drained, so a graceful shutdown commits everything that was accepted.
pub fn spawn(
    store: Arc<Store>,
    limits: WriterLimits,
) -> std::io::Result<(WriterHandle, JoinHandle<()>)> {
    let (queue, receiver) = crossbeam_channel::bounded(limits.queue_capacity.max(1));
    let healthy = Arc::new(AtomicBool::new(true));
    let thread_healthy = Arc::clone(&healthy);
    let stats = Arc::new(WriterStats::default());
    let thread_stats = Arc::clone(&stats);
    let join = std::thread::Builder::new()
        .name("tally-writer".into())
        .spawn(move || run(&store, &receiver, limits, &thread_healthy, &thread_stats))?;
    Ok((
        WriterHandle {
            queue,
            healthy,
            stats,
        },
        join,
    ))
}

/// A handle whose queue holds `capacity` commands and is never served (the receiver is
/// returned so it stays open): tests of what callers do when the writer refuses them.
#[cfg(test)]
pub(crate) fn unserved(capacity: usize) -> (WriterHandle, Box<dyn std::any::Any + Send>) {
    let (queue, receiver) = crossbeam_channel::bounded(capacity);
    let handle = WriterHandle {
        queue,
        healthy: Arc::new(AtomicBool::new(true)),
        stats: Arc::new(WriterStats::default()),
    };
    (handle, Box::new(receiver))
}

fn run(
    store: &Store,
    receiver: &Receiver<Box<dyn Pending>>,
    limits: WriterLimits,
    healthy: &AtomicBool,
    stats: &WriterStats,
) {
    let max_batch = limits.max_batch_size.max(1);
    while let Ok(first) = receiver.recv() {
        let mut batch = Vec::with_capacity(max_batch.min(1024));
        batch.push(first);
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if !limits.max_batch_wait.is_zero() && batch.len() < max_batch {
            let deadline = Instant::now() + limits.max_batch_wait;
            while batch.len() < max_batch {
                match receiver.recv_deadline(deadline) {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        metrics::gauge!("tally_writer_queue_depth").set(receiver.len() as f64);
        match execute(store, batch, stats, 0) {
            Ok(()) => {}
            Err(error) if error.is_backend_failure() => {
                tracing::error!(%error, "write batch failed; reopening the database");
                recover(store, healthy);
            }
            Err(error) => tracing::error!(%error, "write batch aborted"),
        }
    }
    tracing::info!("writer drained and stopped");
}

/// How applying a batch inside one transaction ended.
enum Applied {
    /// Every command applied; the transaction can commit.
    All,
    /// A storage error: the batch is lost.
    Failed(StoreError),
    /// The run of commands `start..end` panicked; the transaction holds partial writes.
    Panicked { start: usize, end: usize },
    /// Every command applied, then the watcher panicked (or met inconsistent data); the
    /// transaction holds its partial writes.
    WatcherPanicked,
}

/// Hands the batch's touches to the store's watcher inside the batch's transaction.
fn watch_batch(store: &Store, tx: &WriteTxn) -> Applied {
    match catch_unwind(AssertUnwindSafe(|| store.watch(tx))) {
        Ok(Ok(())) => Applied::All,
        Ok(Err(e)) if e.is_backend_failure() || matches!(e, StoreError::Conflict) => {
            Applied::Failed(e)
        }
        // Inconsistent or undecodable data met while evaluating is one customer's problem, not
        // every writer's: the batch commits without the evaluation, as after a panic.
        Ok(Err(error)) => {
            tracing::error!(%error, "the watcher failed");
            Applied::WatcherPanicked
        }
        Err(_) => Applied::WatcherPanicked,
    }
}

/// Applies the batch in order, each run of same-typed neighbours together (each command alone
/// when `isolate`); a batch still equals its commands in order.
fn apply_batch(tx: &WriteTxn, batch: &mut [Box<dyn Pending>], isolate: bool) -> Applied {
    let mut start = 0;
    while start < batch.len() {
        let kind = batch[start].command_type();
        let end = if isolate {
            start + 1
        } else {
            batch[start..]
                .iter()
                .position(|p| p.command_type() != kind)
                .map_or(batch.len(), |offset| start + offset)
        };
        let (head, rest) = batch[start..end].split_at_mut(1);
        match catch_unwind(AssertUnwindSafe(|| head[0].apply_run(rest, tx))) {
            Ok(Ok(())) => start = end,
            Ok(Err(e)) => return Applied::Failed(e),
            Err(_) => return Applied::Panicked { start, end },
        }
    }
    Applied::All
}

/// Applies and commits one batch, replying to every waiter. A command that panics is answered
/// with [`WriteError::Failed`] and the others are applied again in a fresh transaction. An error
/// means the batch was not committed (every waiter already got `Unavailable`) and the handle
/// must be reopened.
fn execute(
    store: &Store,
    batch: Vec<Box<dyn Pending>>,
    stats: &WriterStats,
    conflicts: u32,
) -> Result<(), StoreError> {
    let mut batch = batch;
    let mut isolate = false;
    let mut watch = true;
    let mut conflicts = conflicts;
    let tx = loop {
        let tx = match store.begin_write() {
            Ok(tx) => tx,
            Err(e) => {
                fail_all(batch);
                return Err(e);
            }
        };
        touched::begin();
        let applied = apply_batch(&tx, &mut batch, isolate);
        let applied = match applied {
            Applied::All if watch => watch_batch(store, &tx),
            other => other,
        };
        touched::end();
        match applied {
            Applied::All => break tx,
            Applied::WatcherPanicked => {
                if catch_unwind(AssertUnwindSafe(|| tx.abort())).is_err() {
                    fail_all(batch);
                    return Err(StoreError::Corrupt(
                        "the transaction could not be aborted after a panic".into(),
                    ));
                }
                metrics::counter!("tally_watch_panics_total").increment(1);
                tracing::error!(
                    "the watcher panicked; the batch commits without its evaluation, which the \
                     customers' next changes catch up"
                );
                watch = false;
                for pending in batch.iter_mut() {
                    pending.rearm();
                }
            }
            Applied::Failed(StoreError::Conflict) if conflicts < MAX_CONFLICT_RETRIES => {
                // Another node's transaction won: nothing of this one is written, and the
                // commands are pure functions of the store, so applying them again is safe.
                let _ = tx.abort();
                conflicts += 1;
                metrics::counter!("tally_writer_conflicts_total").increment(1);
                conflict_backoff(conflicts);
                for pending in batch.iter_mut() {
                    pending.rearm();
                }
            }
            Applied::Failed(error) => {
                // The transaction may hold part of the failed run's writes: abort all of it.
                let _ = tx.abort();
                fail_all(batch);
                return Err(error);
            }
            Applied::Panicked { start, end } => {
                // A panic inside redb itself may leave it unable to abort cleanly: that is a
                // storage failure (the batch fails and the database is reopened), never a
                // second panic that would end the writer thread.
                if catch_unwind(AssertUnwindSafe(|| tx.abort())).is_err() {
                    fail_all(batch);
                    return Err(StoreError::Corrupt(
                        "the transaction could not be aborted after a panic".into(),
                    ));
                }
                metrics::counter!("tally_writer_panics_total").increment(1);
                if end - start == 1 {
                    tracing::error!("a command panicked while applying; it fails alone");
                    batch.remove(start).finish(Err(WriteError::Failed));
                } else {
                    // Which command of the run panicked is unknown: apply each alone.
                    isolate = true;
                }
                for pending in batch.iter_mut() {
                    pending.rearm();
                }
                if batch.is_empty() {
                    return Ok(());
                }
            }
        }
    };
    let size = batch.len();
    let applied = batch;
    let started = Instant::now();
    let committed = tx.commit();
    let latency = started.elapsed();
    metrics::histogram!("tally_writer_commit_seconds").record(latency.as_secs_f64());
    if committed.is_ok() {
        stats.record(size, latency);
    }
    metrics::histogram!("tally_writer_batch_size").record(size as f64);
    metrics::counter!("tally_writer_commands_total").increment(size as u64);
    match committed {
        Ok(()) => {
            // Readers must see this commit before anyone learns it happened.
            store.publish_snapshot();
            for pending in applied {
                pending.finish(Ok(()));
            }
            Ok(())
        }
        Err(StoreError::Conflict) if conflicts < MAX_CONFLICT_RETRIES => {
            // A serialization failure at commit rolled everything back: apply again.
            metrics::counter!("tally_writer_conflicts_total").increment(1);
            conflict_backoff(conflicts + 1);
            let mut batch = applied;
            for pending in batch.iter_mut() {
                pending.rearm();
            }
            execute(store, batch, stats, conflicts + 1)
        }
        Err(e) => {
            fail_all(applied);
            Err(e)
        }
    }
}

/// How many times a batch that conflicted with another node's transaction is applied again
/// before its waiters are answered `Unavailable` (they retry with their keys).
pub const MAX_CONFLICT_RETRIES: u32 = 16;

/// Waits a little before applying a conflicted batch again, longer each time (bounded), with
/// jitter so two nodes that conflicted do not meet again in step.
pub fn conflict_backoff(attempt: u32) {
    let base_us = 200u64 << attempt.min(8);
    let jitter_us = u64::from(getrandom::u32().unwrap_or(0)) % base_us.max(1);
    std::thread::sleep(Duration::from_micros(base_us + jitter_us));
}

fn fail_all(batch: Vec<Box<dyn Pending>>) {
    for pending in batch {
        pending.finish(Err(WriteError::Unavailable));
    }
}

/// Reopens the database until it works, marking the writer unhealthy meanwhile (`/readyz`
/// reports it). Commands keep queueing; once the queue is full they get `Overloaded`.
fn recover(store: &Store, healthy: &AtomicBool) {
    healthy.store(false, Ordering::Release);
    metrics::counter!("tally_writer_reopens_total").increment(1);
    let mut backoff = Duration::from_millis(10);
    loop {
        match store.reopen() {
            Ok(()) => {
                tracing::warn!("database reopened; writer serving again");
                healthy.store(true, Ordering::Release);
                return;
            }
            Err(error) => {
                tracing::error!(%error, "reopening the database failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{tables, ReadableTable};

    /// Writes `value` under `key` unless the key exists (a business failure that writes nothing).
    #[derive(Clone)]
    struct PutIfAbsent {
        key: &'static str,
        value: u8,
    }

    impl Command for PutIfAbsent {
        type Output = Result<(), &'static str>;
        fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
            let mut meta = tx.open_table(tables::META)?;
            if meta.get(self.key)?.is_some() {
                return Ok(Err("exists"));
            }
            meta.insert(self.key, [self.value].as_slice())?;
            Ok(Ok(()))
        }
    }

    fn limits() -> WriterLimits {
        WriterLimits {
            queue_capacity: 64,
            max_batch_size: 64,
            max_batch_wait: Duration::from_millis(20),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_equals_its_commands_in_order_and_failures_stay_local() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("w.redb"), 1 << 20).expect("open"));
        let (handle, join) = spawn(Arc::clone(&store), limits()).expect("spawn");
        // Submitted together, these land in one batch (the writer waits up to 20 ms to fill).
        let results = tokio::join!(
            handle.submit(PutIfAbsent {
                key: "k1",
                value: 1
            }),
            handle.submit(PutIfAbsent {
                key: "k1",
                value: 2
            }),
            handle.submit(PutIfAbsent {
                key: "k2",
                value: 3
            }),
        );
        assert_eq!(results.0, Ok(Ok(())));
        assert_eq!(
            results.1,
            Ok(Err("exists")),
            "the second sees the first's write"
        );
        assert_eq!(
            results.2,
            Ok(Ok(())),
            "a failed neighbour does not affect it"
        );
        drop(handle);
        join.join().expect("writer exits when handles drop");
        let read = store.read().expect("read");
        let meta = read.open_table(tables::META).expect("meta");
        assert_eq!(
            meta.get("k1").expect("get").expect("k1").value(),
            &[1u8][..]
        );
        assert_eq!(
            meta.get("k2").expect("get").expect("k2").value(),
            &[3u8][..]
        );
    }

    #[derive(Clone)]
    struct Fails;

    impl Command for Fails {
        type Output = ();
        fn apply(self, tx: &WriteTxn) -> Result<(), StoreError> {
            tx.open_table(tables::META)?
                .insert("half", [9u8].as_slice())?;
            Err(StoreError::Corrupt("injected".into()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_storage_error_aborts_the_whole_batch_and_the_writer_keeps_serving() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("w.redb"), 1 << 20).expect("open"));
        let (handle, join) = spawn(Arc::clone(&store), limits()).expect("spawn");
        let (a, b) = tokio::join!(
            handle.submit(PutIfAbsent { key: "a", value: 1 }),
            handle.submit(Fails),
        );
        assert_eq!(a, Err(WriteError::Unavailable));
        assert_eq!(b, Err(WriteError::Unavailable));
        // Nothing of the aborted batch is visible, and later batches commit normally.
        let after = handle.submit(PutIfAbsent { key: "b", value: 2 }).await;
        assert_eq!(after, Ok(Ok(())));
        assert!(handle.is_healthy());
        drop(handle);
        join.join().expect("writer exits");
        let read = store.read().expect("read");
        let meta = read.open_table(tables::META).expect("meta");
        assert!(meta.get("a").expect("get").is_none());
        assert!(meta.get("half").expect("get").is_none());
        assert!(meta.get("b").expect("get").is_some());
    }

    /// Writes, then panics (an overflow, a bug): its writes must not survive, nor its panic
    /// take its neighbours down.
    #[derive(Clone)]
    struct Panics;

    impl Command for Panics {
        type Output = ();
        fn apply(self, tx: &WriteTxn) -> Result<(), StoreError> {
            tx.open_table(tables::META)?
                .insert("panicked", [9u8].as_slice())?;
            panic!("injected defect");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_command_fails_alone_and_its_neighbours_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("w.redb"), 1 << 20).expect("open"));
        let (handle, join) = spawn(Arc::clone(&store), limits()).expect("spawn");
        // One batch: a run of two before the panic, the panic, a run of two after it.
        let results = tokio::join!(
            handle.submit(PutIfAbsent { key: "a", value: 1 }),
            handle.submit(PutIfAbsent { key: "a", value: 2 }),
            handle.submit(Panics),
            handle.submit(PutIfAbsent { key: "b", value: 3 }),
            handle.submit(PutIfAbsent { key: "c", value: 4 }),
        );
        assert_eq!(results.0, Ok(Ok(())));
        assert_eq!(results.1, Ok(Err("exists")), "still sees its predecessor");
        assert_eq!(results.2, Err(WriteError::Failed));
        assert_eq!(results.3, Ok(Ok(())));
        assert_eq!(results.4, Ok(Ok(())));
        assert!(handle.is_healthy());
        drop(handle);
        join.join().expect("writer exits");
        let read = store.read().expect("read");
        let meta = read.open_table(tables::META).expect("meta");
        assert_eq!(meta.get("a").expect("get").expect("a").value(), &[1u8][..]);
        assert!(meta.get("b").expect("get").is_some());
        assert!(meta.get("c").expect("get").is_some());
        assert!(
            meta.get("panicked").expect("get").is_none(),
            "no partial write"
        );
    }
}

#[cfg(test)]
mod watcher_tests {
    use std::sync::atomic::AtomicU8;

    use super::*;
    use crate::id::Id;
    use crate::store::keys::TenantId;
    use crate::store::touched::{Touch, Touched};
    use crate::store::Watcher;
    use crate::store::{tables, ReadableTable};

    /// Notes a touch of customer `customer`, then writes its key.
    #[derive(Clone)]
    struct Touching {
        key: &'static str,
        customer: u128,
    }

    impl Command for Touching {
        type Output = ();
        fn apply(self, tx: &WriteTxn) -> Result<(), StoreError> {
            touched::note(Touch {
                tenant: TenantId(1),
                customer: Id(self.customer),
                what: Touched::Balance,
                at_ms: 1,
                span_ms: (1, 1),
            });
            tx.open_table(tables::META)?
                .insert(self.key, [1u8].as_slice())?;
            Ok(())
        }
    }

    /// Records how many touches it saw; mode 1 panics after writing, mode 2 fails with a
    /// storage error, mode 3 meets inconsistent data.
    struct Recorder {
        mode: AtomicU8,
    }

    impl Watcher for Recorder {
        fn before_commit(
            &self,
            tx: &WriteTxn,
            touches: Vec<touched::Touch>,
        ) -> Result<(), StoreError> {
            let seen = u8::try_from(touches.len()).unwrap_or(u8::MAX);
            tx.open_table(tables::META)?
                .insert("watched", [seen].as_slice())?;
            match self.mode.load(Ordering::SeqCst) {
                1 => panic!("injected watcher defect"),
                2 => Err(StoreError::Reopening),
                3 => Err(StoreError::Corrupt("injected".into())),
                _ => Ok(()),
            }
        }
    }

    fn start(mode: u8) -> (tempfile::TempDir, Arc<Store>, WriterHandle, JoinHandle<()>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("w.redb"), 1 << 20).expect("open"));
        store.set_watcher(Arc::new(Recorder {
            mode: AtomicU8::new(mode),
        }));
        let limits = WriterLimits {
            queue_capacity: 64,
            max_batch_size: 64,
            max_batch_wait: Duration::from_millis(20),
        };
        let (handle, join) = spawn(Arc::clone(&store), limits).expect("spawn");
        (dir, store, handle, join)
    }

    fn meta(store: &Store, key: &str) -> Option<Vec<u8>> {
        let read = store.read().expect("read");
        let meta = read.open_table(tables::META).expect("meta");
        meta.get(key).expect("get").map(|v| v.value().to_vec())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watcher_sees_the_batch_touches_and_commits_with_it() {
        let (_dir, store, handle, join) = start(0);
        let (a, b) = tokio::join!(
            handle.submit(Touching {
                key: "a",
                customer: 1
            }),
            handle.submit(Touching {
                key: "b",
                customer: 2
            }),
        );
        assert_eq!((a, b), (Ok(()), Ok(())));
        drop(handle);
        join.join().expect("writer exits");
        assert_eq!(meta(&store, "a"), Some(vec![1]));
        let watched = meta(&store, "watched").expect("the watcher's write committed");
        assert!(watched == vec![2] || watched == vec![1], "{watched:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_watcher_loses_its_evaluation_not_the_batch() {
        let (_dir, store, handle, join) = start(1);
        let a = handle
            .submit(Touching {
                key: "a",
                customer: 1,
            })
            .await;
        assert_eq!(a, Ok(()));
        assert!(handle.is_healthy());
        drop(handle);
        join.join().expect("writer exits");
        assert_eq!(meta(&store, "a"), Some(vec![1]), "the batch committed");
        assert_eq!(
            meta(&store, "watched"),
            None,
            "the watcher's writes did not"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inconsistent_data_in_the_watcher_loses_its_evaluation_not_the_batch() {
        let (_dir, store, handle, join) = start(3);
        let a = handle
            .submit(Touching {
                key: "a",
                customer: 1,
            })
            .await;
        assert_eq!(a, Ok(()));
        drop(handle);
        join.join().expect("writer exits");
        assert_eq!(meta(&store, "a"), Some(vec![1]), "the batch committed");
        assert_eq!(
            meta(&store, "watched"),
            None,
            "the watcher's writes did not"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watcher_storage_error_aborts_the_batch() {
        let (_dir, store, handle, join) = start(2);
        let a = handle
            .submit(Touching {
                key: "a",
                customer: 1,
            })
            .await;
        assert_eq!(a, Err(WriteError::Unavailable));
        drop(handle);
        join.join().expect("writer exits");
        assert_eq!(meta(&store, "a"), None);
    }
}
