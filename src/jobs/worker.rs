//! The worker pool: leases due jobs, runs their handlers, commits their effects.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};

use super::{CompleteJob, Completion, Effect, Job, LeaseJobs, Outcome, RetryPolicy};
use crate::store::writer::WriterHandle;

/// What a handler returns: after any work outside the database (a provider call), the effect
/// to commit together with the job's completion, or an error to retry on.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Effect, String>> + Send>>;

/// Runs one kind of job. Must be idempotent: a job may run more than once (after a crash or an
/// expired lease) and only its last successful effect commits.
pub trait Handler: Send + Sync + 'static {
    /// Starts the job.
    fn run(&self, job: Job) -> HandlerFuture;
}

/// Handlers by job kind.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
    own_slots: HashMap<String, (Arc<Semaphore>, u32)>,
}

impl Registry {
    /// Registers the handler of a kind (the last registration wins).
    pub fn register(&mut self, kind: &str, handler: Arc<dyn Handler>) {
        self.handlers.insert(kind.to_string(), handler);
    }

    /// Registers a handler that waits on other systems (outbound calls) with slots of its own:
    /// at most `capacity` of its jobs run at once and none takes a worker, so slow receivers
    /// never hold up other jobs. A job leased while every slot is busy is postponed without
    /// spending an attempt.
    pub fn register_with_capacity(
        &mut self,
        kind: &str,
        handler: Arc<dyn Handler>,
        capacity: usize,
    ) {
        self.register(kind, handler);
        let capacity = u32::try_from(capacity.max(1)).unwrap_or(u32::MAX >> 3);
        self.own_slots.insert(
            kind.to_string(),
            (Arc::new(Semaphore::new(capacity as usize)), capacity),
        );
    }

    fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(kind).cloned()
    }
}

/// How long a job of a kind with its own slots waits when they are all busy.
const BUSY_POSTPONE_MS: i64 = 500;

/// Worker pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Jobs run at once.
    pub workers: usize,
    /// How long a leased job is a worker's.
    pub lease_ms: i64,
    /// How often to look for due jobs when idle.
    pub poll_interval: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Runs in the transaction that makes a job a dead letter.
    pub on_dead: Option<super::DeadHook>,
}

fn jitter_seed() -> u64 {
    let mut bytes = [0u8; 8];
    // Without randomness the jitter is zero: retries still back off.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// Runs the pool until `stop` flips; in-flight jobs finish first. `wake` shortens the idle wait
/// when something enqueues a job.
pub async fn run(
    writer: WriterHandle,
    registry: Arc<Registry>,
    config: PoolConfig,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let workers = config.workers.max(1);
    let slots = Arc::new(Semaphore::new(workers));
    loop {
        if *stop.borrow() {
            break;
        }
        let free = slots.available_permits();
        let mut leased = Vec::new();
        if free > 0 {
            match writer
                .submit(LeaseJobs {
                    now_ms: crate::clock::now_ms(),
                    lease_ms: config.lease_ms,
                    limit: free,
                })
                .await
            {
                Ok(jobs) => leased = jobs,
                Err(error) => tracing::warn!(%error, "could not lease jobs"),
            }
        }
        let idle = leased.is_empty();
        for job in leased {
            let (permit, busy) = match registry.own_slots.get(&job.kind) {
                Some((own, _)) => match Arc::clone(own).try_acquire_owned() {
                    Ok(p) => (Some(p), false),
                    Err(_) => (None, true),
                },
                None => match Arc::clone(&slots).acquire_owned().await {
                    Ok(p) => (Some(p), false),
                    Err(_) => break,
                },
            };
            let writer = writer.clone();
            let handler = registry.get(&job.kind);
            let retry = config.retry;
            let on_dead = config.on_dead;
            tokio::spawn(async move {
                let _permit = permit;
                let id = job.id;
                let kind = job.kind.clone();
                let lease_until_ms = job.due_at_ms;
                let effect: Result<Effect, String> = match handler {
                    _ if busy => Ok(Box::new(|_, _| Ok(Outcome::Postpone(BUSY_POSTPONE_MS)))),
                    Some(h) => h.run(job).await,
                    None => Err(format!("no handler is registered for job kind {kind:?}")),
                };
                let complete = |effect| CompleteJob {
                    id,
                    lease_until_ms,
                    effect,
                    now_ms: crate::clock::now_ms(),
                    retry,
                    jitter_seed: jitter_seed(),
                    aborted: false,
                    on_dead,
                };
                let mut completion = writer.submit(complete(effect)).await;
                if matches!(completion, Err(crate::store::writer::WriteError::Failed)) {
                    // Its effect panicked (and failed alone): record that as the attempt's
                    // failure, so a job whose effect always panics ends as a dead letter
                    // instead of running again at every lease.
                    completion = writer
                        .submit(complete(Err("the job's effect panicked".into())))
                        .await;
                }
                let outcome = match &completion {
                    Ok(Completion::Done) => "done",
                    Ok(Completion::Retrying(_)) => "retrying",
                    Ok(Completion::Dead) => "dead",
                    Ok(Completion::Stale) => "stale",
                    Err(_) => "unrecorded",
                };
                metrics::counter!("tally_jobs_completed_total", "kind" => kind.clone(), "outcome" => outcome)
                    .increment(1);
                if matches!(completion, Ok(Completion::Dead)) {
                    tracing::warn!(job = %id.display(super::PREFIX), %kind, "job moved to dead letters");
                }
                // An unrecorded completion leaves the lease to expire: the job runs again.
            });
        }
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(config.poll_interval) => {}
                _ = wake.notified() => {}
                _ = stop.changed() => {}
            }
        } else if slots.available_permits() == 0 {
            // Wait for a slot before leasing more.
            tokio::select! {
                permit = Arc::clone(&slots).acquire_owned() => drop(permit),
                _ = stop.changed() => {}
            }
        }
    }
    // Let running jobs record their completion before the writer stops.
    let _ = slots.acquire_many(workers as u32).await;
    for (own, capacity) in registry.own_slots.values() {
        let _ = own.acquire_many(*capacity).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::store::WriteTxn;

    use super::*;
    use crate::store::keys::TenantId;
    use crate::store::writer::{Command, WriterLimits};
    use crate::store::{Store, StoreError};

    #[derive(Clone)]
    struct Enqueue(Vec<Job>);

    impl Command for Enqueue {
        type Output = ();

        fn apply(self, tx: &WriteTxn) -> Result<(), StoreError> {
            self.0.iter().try_for_each(|j| super::super::enqueue(tx, j))
        }
    }

    fn done() -> Effect {
        Box::new(|_, _| Ok(Outcome::Done))
    }

    /// Waits on another system for longer than the test runs.
    struct Slow(Arc<AtomicUsize>);

    impl Handler for Slow {
        fn run(&self, _job: Job) -> HandlerFuture {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(done())
            })
        }
    }

    struct Fast(Arc<Notify>);

    impl Handler for Fast {
        fn run(&self, _job: Job) -> HandlerFuture {
            self.0.notify_one();
            Box::pin(async { Ok(done()) })
        }
    }

    #[tokio::test]
    async fn jobs_with_their_own_slots_never_hold_a_worker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("w.redb"), 1 << 22).expect("open"));
        let now_ms = crate::clock::now_ms();
        let tenant = TenantId(1);
        let mut jobs: Vec<Job> = (0..3)
            .map(|i| Job::new(tenant, "slow", i.to_string(), now_ms))
            .collect();
        jobs.push(Job::new(tenant, "fast", String::new(), now_ms + 50));
        store.apply_one(Enqueue(jobs)).expect("enqueue");
        let (writer, _join) = crate::store::writer::spawn(
            Arc::clone(&store),
            WriterLimits {
                queue_capacity: 64,
                max_batch_size: 64,
                max_batch_wait: Duration::ZERO,
            },
        )
        .expect("writer");
        let started = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(Notify::new());
        let mut registry = Registry::default();
        registry.register_with_capacity("slow", Arc::new(Slow(Arc::clone(&started))), 2);
        registry.register("fast", Arc::new(Fast(Arc::clone(&ran))));
        let (_stop_tx, stop_rx) = watch::channel(false);
        let pool = tokio::spawn(run(
            writer,
            Arc::new(registry),
            PoolConfig {
                workers: 1,
                lease_ms: 60_000,
                poll_interval: Duration::from_millis(10),
                retry: RetryPolicy {
                    max_attempts: 3,
                    base_ms: 10,
                    max_ms: 10,
                },
                on_dead: None,
            },
            Arc::new(Notify::new()),
            stop_rx,
        ));
        let fast = tokio::time::timeout(Duration::from_secs(5), ran.notified()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        pool.abort();
        assert!(fast.is_ok(), "the only worker was held by slow jobs");
        assert_eq!(
            started.load(Ordering::SeqCst),
            2,
            "the third slow job waits for a slot of its kind"
        );
    }
}
