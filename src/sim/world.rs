//! The simulated deployment: the real store on a file, the real writer thread, the real job
//! handlers wired to the simulated provider, a simulated clock and seeded ids, and the model
//! of what was acknowledged. Crashing drops everything in memory and reopens the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::store::{ReadTxn, ReadableTable, WriteTxn};

use super::provider::Provider;
use super::rng::Rng;
use crate::id::{seeded, Id};
use crate::jobs::worker::Handler;
use crate::jobs::{CompleteJob, Completion, LeaseJobs, RetryPolicy};
use crate::payments::payment::Dunning;
use crate::payments::worker::{Context, ExecutePayment, ExecuteRefund, RunReconciliation};
use crate::store::writer::{self, Command, WriterHandle, WriterLimits};
use crate::store::{tables, Store, StoreError, TenantId};
use crate::webhooks::endpoint::{CreateEndpoint, Endpoint, Provider as Scheme};
use crate::webhooks::event::{EventStatus, Receipt, Receive, WebhookEvent};
use crate::webhooks::process::{EventHandlers, ProcessWebhook};

/// Midnight UTC, 2027-01-01: where simulated time starts.
pub const T0_MS: i64 = 1_798_761_600_000;
/// How long a leased job is the simulated worker's.
pub const LEASE_MS: i64 = 30_000;
/// Job retries (the daemon's defaults, shortened).
pub const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    base_ms: 1_000,
    max_ms: 60_000,
};
/// The quiescence loop jumps at most this far ahead to reach a job (dunning retries included).
const SETTLE_HORIZON_MS: i64 = 4 * 86_400_000;

/// A violated invariant or an unexpected failure, in words.
pub type Violation = String;

/// What was acknowledged to a client: it must be present, once, whatever happens after.
#[derive(Debug, Default)]
pub struct Model {
    /// Customers created.
    pub customers: Vec<Id>,
    /// The version each customer's last acknowledged update answered (absent: never updated,
    /// version 1).
    pub customer_versions: BTreeMap<Id, u64>,
    /// Subscriptions created.
    pub subscriptions: Vec<Id>,
    /// The plans subscriptions move between (the first is the one they start on).
    pub plans: Vec<Id>,
    /// Acknowledged events by client id, with their payloads (for duplicates).
    pub events: BTreeMap<String, (Id, serde_json::Value)>,
    /// Invoices billing runs reported.
    pub invoices: BTreeSet<Id>,
    /// Invoices whose void was acknowledged.
    pub voided: BTreeSet<Id>,
    /// Payment attempts acknowledged to `pay`.
    pub payments: BTreeSet<Id>,
    /// Refunds acknowledged: (payment, refund).
    pub refunds: BTreeSet<(Id, Id)>,
    /// Credit grants acknowledged.
    pub grants: BTreeSet<Id>,
    /// Client ids issued so far.
    pub next_event: u64,
    /// Idempotency keys issued so far.
    pub next_key: u64,
    /// Entitlement grants acknowledged.
    pub entitlement_grants: BTreeSet<Id>,
    /// Duplicates and conflicts answered, by the original event they named.
    pub anomalies: BTreeMap<Id, u64>,
    /// API keys created, with their secrets.
    pub api_keys: Vec<super::api_keys::SimKey>,
}

/// Applies nothing; installs the simulated clock and id generator on the writer thread, which
/// is where commands (and the job effects they carry) read them.
#[derive(Clone)]
struct Install {
    clock: Arc<AtomicI64>,
    ids: Arc<Mutex<seeded::Generator>>,
}

impl Command for Install {
    type Output = ();

    fn apply(self, _tx: &WriteTxn) -> Result<(), StoreError> {
        crate::clock::simulated::install(Some(self.clock));
        seeded::install(Some(self.ids));
        Ok(())
    }
}

/// The job handlers, by kind, as the daemon registers them.
struct Handlers {
    webhook: Arc<dyn Handler>,
    pay: Arc<dyn Handler>,
    cancel: Arc<dyn Handler>,
    refund: Arc<dyn Handler>,
    reconcile: Arc<dyn Handler>,
}

/// One running process: the store, its writer thread, the handlers holding both.
struct Node {
    store: Arc<Store>,
    writer: WriterHandle,
    join: JoinHandle<()>,
    handlers: Handlers,
}

/// The whole simulated deployment.
pub struct World {
    _dir: tempfile::TempDir,
    path: PathBuf,
    rt: tokio::runtime::Runtime,
    clock: Arc<AtomicI64>,
    ids: Arc<Mutex<seeded::Generator>>,
    node: Option<Node>,
    /// The provider and its books.
    pub provider: Provider,
    /// The one tenant.
    pub tenant: TenantId,
    /// Where the provider's webhooks arrive.
    pub endpoint: Id,
    /// What was acknowledged.
    pub model: Model,
    /// The scheduler's chance.
    pub rng: Rng,
    /// Dunning of failed attempts.
    pub dunning: Dunning,
}

impl World {
    /// A fresh deployment for `seed`.
    pub fn new(seed: u64, provider: Provider) -> Result<Self, Violation> {
        // tmpfs when there is one: the simulation commits thousands of times.
        let dir = match std::path::Path::new("/dev/shm").is_dir() {
            true => tempfile::tempdir_in("/dev/shm"),
            false => tempfile::tempdir(),
        }
        .map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let clock = Arc::new(AtomicI64::new(T0_MS));
        let ids = Arc::new(Mutex::new(seeded::Generator::new(seed ^ 0x1D5)));
        crate::clock::simulated::install(Some(Arc::clone(&clock)));
        seeded::install(Some(Arc::clone(&ids)));
        provider.set_now(T0_MS);
        let mut world = Self {
            path: dir.path().join("sim.redb"),
            _dir: dir,
            rt,
            clock,
            ids,
            node: None,
            provider,
            tenant: TenantId(1),
            endpoint: Id(0),
            model: Model::default(),
            rng: Rng::new(seed),
            dunning: Dunning {
                retry_delays_ms: vec![86_400_000, 2 * 86_400_000],
            },
        };
        world.node = Some(world.start()?);
        let endpoint = Endpoint {
            id: Id::generate_at(T0_MS),
            tenant: world.tenant.0,
            provider: Scheme::Stripe,
            secrets: Vec::new(),
            description: Some("simulated provider".into()),
            created_at_ms: T0_MS,
        };
        world.endpoint = world.submit(CreateEndpoint { endpoint })?.id;
        Ok(world)
    }

    fn start(&self) -> Result<Node, Violation> {
        let store = Arc::new(
            Store::open(&self.path, 4 << 20).map_err(|e| format!("reopening failed: {e}"))?,
        );
        let limits = WriterLimits {
            queue_capacity: 16,
            max_batch_size: 1,
            max_batch_wait: Duration::ZERO,
        };
        store.set_watcher(Arc::new(crate::watch::Watch {
            policy: super::ops::POLICY,
            interim_min_interval_ms: 0,
        }));
        let (writer, join) =
            writer::spawn(Arc::clone(&store), limits).map_err(|e| e.to_string())?;
        self.rt
            .block_on(writer.submit(Install {
                clock: Arc::clone(&self.clock),
                ids: Arc::clone(&self.ids),
            }))
            .map_err(|e| e.to_string())?;
        let mut events = EventHandlers::builtin(crate::config::IngestConfig::default());
        crate::payments::hooks::register(&mut events, self.dunning.clone());
        let ctx = Context {
            writer: writer.clone(),
            store: Arc::clone(&store),
            psp: Arc::new(self.provider.clone()),
            dunning: self.dunning.clone(),
        };
        let handlers = Handlers {
            webhook: Arc::new(ProcessWebhook {
                handlers: Arc::new(events),
            }),
            pay: Arc::new(ExecutePayment(ctx.clone())),
            cancel: Arc::new(crate::payments::worker::CancelPayment(ctx.clone())),
            refund: Arc::new(ExecuteRefund(ctx.clone())),
            reconcile: Arc::new(RunReconciliation(ctx)),
        };
        Ok(Node {
            store,
            writer,
            join,
            handlers,
        })
    }

    /// Kills the process at a step boundary: every in-memory handle goes, the file stays.
    pub fn crash(&mut self) -> Result<(), Violation> {
        if let Some(node) = self.node.take() {
            let Node {
                store,
                writer,
                join,
                handlers,
            } = node;
            drop(handlers);
            drop(writer);
            join.join()
                .map_err(|_| "the writer thread panicked".to_string())?;
            drop(store);
        }
        self.node = Some(self.start()?);
        Ok(())
    }

    fn node(&self) -> Result<&Node, Violation> {
        self.node
            .as_ref()
            .ok_or_else(|| "no process is running".into())
    }

    /// Submits a command through the real writer and waits for its commit. A failure here is
    /// a storage error or a panic inside the command: never acceptable without a crash.
    pub fn submit<C: Command>(&mut self, command: C) -> Result<C::Output, Violation> {
        let writer = self.node()?.writer.clone();
        self.rt.block_on(writer.submit(command)).map_err(|e| {
            format!(
                "a command was not committed ({e}): it panicked or hit a storage error, \
                 which only an injected crash may cause"
            )
        })
    }

    /// A read snapshot of the latest commit.
    pub fn read(&self) -> Result<Arc<ReadTxn>, Violation> {
        self.node()?.store.read().map_err(|e| e.to_string())
    }

    /// Simulated now.
    pub fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// Moves simulated time to `ms` (never backwards).
    pub fn set_now(&mut self, ms: i64) {
        let now = self.now().max(ms);
        self.clock.store(now, Ordering::SeqCst);
        self.provider.set_now(now);
    }

    /// Leases the earliest due job, runs its real handler (provider calls happen here) and
    /// commits its effect, or crashes between the two when `crash_before_completing`.
    pub fn run_job(&mut self, crash_before_completing: bool) -> Result<Option<String>, Violation> {
        let leased = self.submit(LeaseJobs {
            now_ms: self.now(),
            lease_ms: LEASE_MS,
            limit: 1,
        })?;
        let Some(job) = leased.into_iter().next() else {
            return Ok(None);
        };
        let mut note = format!("{} {}", job.kind, job.payload);
        let handlers = &self.node()?.handlers;
        let handler = match job.kind.as_str() {
            crate::webhooks::event::JOB_KIND => Arc::clone(&handlers.webhook),
            crate::payments::payment::EXECUTE_JOB => Arc::clone(&handlers.pay),
            crate::payments::payment::CANCEL_JOB => Arc::clone(&handlers.cancel),
            crate::payments::payment::REFUND_JOB => Arc::clone(&handlers.refund),
            crate::payments::reconcile::JOB_KIND => Arc::clone(&handlers.reconcile),
            other => return Err(format!("no handler for job kind {other:?}")),
        };
        let (id, lease_until_ms) = (job.id, job.due_at_ms);
        let effect = self.rt.block_on(handler.run(job));
        // The handler holds the process's writer: it dies with the process.
        drop(handler);
        if crash_before_completing {
            drop(effect);
            self.crash()?;
            note.push_str(" → crashed before completing");
            return Ok(Some(note));
        }
        let jitter_seed = self.rng.next_u64();
        let completion = self.submit(CompleteJob {
            id,
            lease_until_ms,
            effect,
            now_ms: self.now(),
            retry: RETRY,
            jitter_seed,
            aborted: false,
            on_dead: Some(crate::notifications::outbox::dead_letter),
        })?;
        note.push_str(match completion {
            Completion::Done => " → done",
            Completion::Retrying(_) => " → retrying",
            Completion::Dead => " → dead",
            Completion::Stale => " → stale",
        });
        Ok(Some(note))
    }

    /// Delivers the provider's webhook at `index` of its outbox through the receipt command
    /// (the HTTP handler's write, signature check aside); `again` leaves a copy to be
    /// delivered once more.
    pub fn deliver(&mut self, index: usize, again: bool) -> Result<Option<String>, Violation> {
        let Some(hook) = self.provider.take_webhook(index, again) else {
            return Ok(None);
        };
        let now = self.now();
        let identity = format!("id:{}", hook.id);
        let event = WebhookEvent {
            id: Id::generate_at(now),
            tenant: self.tenant.0,
            endpoint: self.endpoint,
            provider: Scheme::Stripe,
            provider_event_id: identity.clone(),
            event_type: hook.kind.clone(),
            payload: hook.body.to_string(),
            headers: Vec::new(),
            received_at_ms: now,
            status: EventStatus::Received,
            job: Id::generate_at(now),
            processed_at_ms: None,
            replays: 0,
        };
        let receipt = self.submit(Receive {
            tenant: self.tenant,
            event,
            lookup: vec![identity],
        })?;
        let outcome = match receipt {
            Receipt::New(_) => "new",
            Receipt::Duplicate(_) => "duplicate",
        };
        Ok(Some(format!("{} {} ({outcome})", hook.kind, hook.id)))
    }

    /// The earliest instant a job is due, if any.
    pub fn next_due(&self) -> Result<Option<i64>, Violation> {
        let tx = self.read()?;
        let due = tx.open_table(tables::JOBS_DUE).map_err(|e| e.to_string())?;
        let first = due.first().map_err(|e| e.to_string())?;
        Ok(first.and_then(|(k, _)| {
            let bytes: [u8; 8] = k.value().get(..8)?.try_into().ok()?;
            Some((u64::from_be_bytes(bytes) ^ (1u64 << 63)) as i64)
        }))
    }

    /// Drives everything in flight to rest: no faults, every webhook delivered, every due job
    /// run (jumping ahead to retries and dunning), processing charges settled, then a
    /// reconciliation over all time and the work it starts.
    pub fn settle(&mut self) -> Result<String, Violation> {
        self.provider.set_calm(true);
        self.provider.settle_all_processing();
        let mut work = self.drain()?;
        let now = self.now();
        let rec = crate::payments::reconcile::Reconciliation {
            id: Id::generate_at(now),
            tenant: self.tenant.0,
            from_ms: T0_MS - 86_400_000,
            to_ms: now + 1,
            status: "pending".into(),
            created_at_ms: now,
            completed_at_ms: None,
            report: None,
            failure: None,
        };
        self.submit(crate::payments::reconcile::Start {
            reconciliation: rec,
        })?;
        work += self.drain()?;
        self.provider.set_calm(false);
        let purged = self.purge_notifications()?;
        Ok(format!(
            "{work} deliveries and jobs, {purged} old notifications purged"
        ))
    }

    /// Notifications recorded before this instant may have been purged: the daemon's default
    /// retention, as the purge task applies it.
    pub fn notification_cutoff_ms(&self) -> i64 {
        crate::config::NotificationsConfig::default().retention_cutoff_ms(self.now())
    }

    /// Runs the notification purge to the end of its walk, as the daemon's purge task does.
    fn purge_notifications(&mut self) -> Result<usize, Violation> {
        let cutoff_ms = self.notification_cutoff_ms();
        let (mut after, mut purged) = (None, 0);
        loop {
            let pass = self.submit(crate::notifications::retention::PurgeNotifications {
                cutoff_ms,
                limit: 100,
                after: after.take(),
            })?;
            purged += pass.purged;
            match pass.next {
                Some(next) => after = Some(next),
                None => return Ok(purged),
            }
        }
    }

    fn drain(&mut self) -> Result<usize, Violation> {
        let mut work = 0;
        for _ in 0..2_000 {
            if self.provider.outbox_len() > 0 {
                self.deliver(0, false)?;
                work += 1;
                continue;
            }
            if self.run_job(false)?.is_some() {
                work += 1;
                continue;
            }
            match self.next_due()? {
                Some(due) if due <= self.now() + SETTLE_HORIZON_MS => self.set_now(due),
                _ => return Ok(work),
            }
        }
        Err("the system did not come to rest within 2000 deliveries and jobs".into())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            drop(node.handlers);
            drop(node.writer);
            let _ = node.join.join();
        }
        crate::clock::simulated::install(None);
        seeded::install(None);
    }
}
