//! The worker pool: leases due jobs, runs their handlers, commits their effects.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify, Semaphore};

use super::{CompleteJob, Completion, Effect, Job, LeaseJobs, RetryPolicy};
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
}

impl Registry {
    /// Registers the handler of a kind (the last registration wins).
    pub fn register(&mut self, kind: &str, handler: Arc<dyn Handler>) {
        self.handlers.insert(kind.to_string(), handler);
    }

    fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(kind).cloned()
    }
}

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
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let writer = writer.clone();
            let handler = registry.get(&job.kind);
            let retry = config.retry;
            tokio::spawn(async move {
                let _permit = permit;
                let id = job.id;
                let kind = job.kind.clone();
                let lease_until_ms = job.due_at_ms;
                let effect = match handler {
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
}
