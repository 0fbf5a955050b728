//! The simulated deployment: the real store (a redb file, or a PostgreSQL database shared by two
//! nodes), the real writer thread, the real job handlers wired to the simulated provider, a
//! simulated clock and seeded ids, and the model of what was acknowledged. Crashing drops
//! everything in memory (of one node or both) and reopens the store.

use std::cell::RefCell;
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
use crate::idempotency::{Idempotent, Outcome};
use crate::jobs::worker::Handler;
use crate::jobs::{CompleteJob, Completion, LeaseJobs, RetryPolicy};
use crate::payments::payment::Dunning;
use crate::payments::worker::{Context, ExecutePayment, ExecuteRefund, RunReconciliation};
use crate::store::pg::PgOptions;
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
/// With several nodes, the chance (percent) that a keyed request, a duplicated webhook or a job
/// run races on every node at once.
const RACE_PERCENT: u32 = 20;
/// With several nodes, the chance (percent) that a worker holds its job's effect until a later
/// job step, while other steps run.
const HOLD_PERCENT: u32 = 15;
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
    /// Meters created after events were stored (their backfills run as jobs).
    pub late_meters: Vec<Id>,
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
    backfill: Arc<dyn Handler>,
}

/// One running process: the store, its writer thread, the handlers holding both.
struct Node {
    store: Arc<Store>,
    writer: WriterHandle,
    join: JoinHandle<()>,
    handlers: Handlers,
}

/// Where the store lives, and so how many processes share it.
pub enum Deployment {
    /// One process on a redb file in a fresh temporary folder.
    Redb,
    /// Two processes on one (fresh) PostgreSQL database.
    Postgres {
        /// The database's URL.
        url: String,
    },
}

/// What the nodes open: the file, or the database.
enum Backing {
    Redb {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres(PgOptions),
}

/// A job whose handler ran on a node while its completion has not been submitted yet: that
/// node's worker is slow, and other steps run meanwhile (several nodes only).
struct Held {
    node: usize,
    id: Id,
    lease_until_ms: i64,
    effect: JobEffect,
    note: String,
}

/// The whole simulated deployment.
pub struct World {
    backing: Backing,
    rt: tokio::runtime::Runtime,
    clock: Arc<AtomicI64>,
    ids: Arc<Mutex<seeded::Generator>>,
    /// The running processes: one on redb, two on PostgreSQL (a crash replaces one in place).
    nodes: Vec<Option<Node>>,
    /// Which node serves each write, read, job and delivery, and which a crash takes down;
    /// drawn only when there are several, so a one-node run draws exactly what it always did.
    picker: RefCell<Rng>,
    /// A slow worker's job, completed at the next job step unless its node crashes first.
    held: Option<Held>,
    /// The invoices as they were when last re-derived from their events (PostgreSQL only).
    verified: RefCell<Vec<crate::billing::invoice::Invoice>>,
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
    /// A fresh one-process deployment on a redb file for `seed`.
    pub fn new(seed: u64, provider: Provider) -> Result<Self, Violation> {
        Self::deploy(seed, provider, Deployment::Redb)
    }

    /// A fresh deployment for `seed`: one process on a redb file, or two on a PostgreSQL
    /// database (which must be empty).
    pub fn deploy(
        seed: u64,
        provider: Provider,
        deployment: Deployment,
    ) -> Result<Self, Violation> {
        let (backing, node_count) = match deployment {
            Deployment::Redb => {
                // tmpfs when there is one: the simulation commits thousands of times.
                let dir = match std::path::Path::new("/dev/shm").is_dir() {
                    true => tempfile::tempdir_in("/dev/shm"),
                    false => tempfile::tempdir(),
                }
                .map_err(|e| e.to_string())?;
                let path = dir.path().join("sim.redb");
                (Backing::Redb { _dir: dir, path }, 1)
            }
            Deployment::Postgres { url } => {
                let options = PgOptions {
                    url,
                    pool_size: usize::try_from(crate::config::PostgresConfig::default().pool_size)
                        .unwrap_or(16),
                    connect_timeout_ms: 5_000,
                    pool_wait_ms: 5_000,
                    ca_file: None,
                };
                (Backing::Postgres(options), 2)
            }
        };
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
            backing,
            rt,
            clock,
            ids,
            nodes: Vec::new(),
            picker: RefCell::new(Rng::new(seed ^ 0x0DE5_0DE5_0DE5_0DE5)),
            held: None,
            verified: RefCell::new(Vec::new()),
            provider,
            tenant: TenantId(1),
            endpoint: Id(0),
            model: Model::default(),
            rng: Rng::new(seed),
            dunning: Dunning {
                retry_delays_ms: vec![86_400_000, 2 * 86_400_000],
            },
        };
        for _ in 0..node_count {
            let node = world.start()?;
            world.nodes.push(Some(node));
        }
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

    /// How many processes share the store.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The node that serves the next piece of work: the only one, or one drawn by the seed.
    pub fn pick_node(&self) -> usize {
        match self.nodes.len() {
            0 | 1 => 0,
            n => self.picker.borrow_mut().below(n as u64) as usize,
        }
    }

    /// Whether the store is a PostgreSQL database (shared by the nodes).
    pub fn is_postgres(&self) -> bool {
        matches!(self.backing, Backing::Postgres(_))
    }

    /// Whether re-deriving `invoices` from their events after this step may be skipped: on
    /// PostgreSQL, when they are exactly what was last re-derived (an invoice's lines depend
    /// only on itself and on events up to its `events_through`, which never change). Every
    /// invoice is re-derived again at rest. On redb, never: there it costs nothing.
    pub fn invoices_verified(&self, invoices: &[crate::billing::invoice::Invoice]) -> bool {
        self.is_postgres() && *self.verified.borrow() == invoices
    }

    /// Records `invoices` as re-derived from their events.
    pub fn note_verified(&self, invoices: &[crate::billing::invoice::Invoice]) {
        if self.is_postgres() {
            *self.verified.borrow_mut() = invoices.to_vec();
        }
    }

    fn start(&self) -> Result<Node, Violation> {
        let store = match &self.backing {
            Backing::Redb { path, .. } => Store::open(path, 4 << 20),
            Backing::Postgres(options) => Store::open_postgres(options),
        };
        let store = Arc::new(store.map_err(|e| format!("reopening failed: {e}"))?);
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
            // One chunk per job step, so a backfill spans many steps.
            backfill: Arc::new(crate::ingest::backfill::RunBackfill {
                writer: writer.clone(),
                chunk_events: super::meters::BACKFILL_CHUNK_EVENTS,
                slice: Duration::ZERO,
            }),
        };
        Ok(Node {
            store,
            writer,
            join,
            handlers,
        })
    }

    /// Kills a process at a step boundary and restarts it: every in-memory handle goes, the
    /// store stays. With two nodes the seed picks one of them, or both.
    pub fn crash(&mut self) -> Result<String, Violation> {
        let both = self.nodes.len() > 1 && self.picker.borrow_mut().chance(25);
        if both {
            for index in 0..self.nodes.len() {
                self.crash_node(index)?;
            }
            return Ok("every node".into());
        }
        let index = self.pick_node();
        self.crash_node(index)?;
        Ok(format!("node {index}"))
    }

    /// Kills node `index` and starts it again on the same store.
    fn crash_node(&mut self, index: usize) -> Result<(), Violation> {
        // A job effect the node's worker held dies with it; its lease lapses.
        if self.held.as_ref().is_some_and(|h| h.node == index) {
            self.held = None;
        }
        let slot = self
            .nodes
            .get_mut(index)
            .ok_or_else(|| format!("there is no node {index}"))?;
        if let Some(node) = slot.take() {
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
        let node = self.start()?;
        self.nodes[index] = Some(node);
        Ok(())
    }

    fn node(&self, index: usize) -> Result<&Node, Violation> {
        self.nodes
            .get(index)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("node {index} is not running"))
    }

    /// Submits a command through the real writer of a node the seed picks and waits for its
    /// commit. A failure here is a storage error or a panic inside the command: never
    /// acceptable without a crash.
    pub fn submit<C: Command>(&mut self, command: C) -> Result<C::Output, Violation> {
        let index = self.pick_node();
        self.submit_on(index, command)
    }

    /// Submits a command through node `index`'s writer and waits for its commit.
    pub fn submit_on<C: Command>(&self, index: usize, command: C) -> Result<C::Output, Violation> {
        let writer = self.node(index)?.writer.clone();
        self.rt.block_on(writer.submit(command)).map_err(|e| {
            format!(
                "a command was not committed on node {index} ({e}): it panicked or hit a \
                 storage error, which only an injected crash may cause"
            )
        })
    }

    /// Whether this piece of work races on every node at once: with several nodes, drawn by
    /// the seed; never with one.
    pub fn races(&self) -> bool {
        self.nodes.len() > 1 && self.picker.borrow_mut().chance(RACE_PERCENT)
    }

    /// Submits `command` to every node at the same moment (as two daemons receiving one
    /// request and its retry) and waits for every commit: their transactions overlap, so one
    /// may be serialized out and applied again. Outputs are in node order.
    pub fn race<C: Command>(&self, command: C) -> Result<Vec<C::Output>, Violation> {
        self.race_each(vec![command; self.nodes.len()])
    }

    /// Submits `commands[i]` to node `i`, all at the same moment (as the nodes' own schedulers
    /// doing the same work), and waits for every commit. Outputs are in node order.
    pub fn race_each<C: Command>(&self, commands: Vec<C>) -> Result<Vec<C::Output>, Violation> {
        let writers: Vec<WriterHandle> = (0..commands.len())
            .map(|i| self.node(i).map(|n| n.writer.clone()))
            .collect::<Result<_, _>>()?;
        // Spawned first, awaited after: every node's command is queued before any commits.
        let tasks: Vec<_> = writers
            .into_iter()
            .zip(commands)
            .map(|(writer, command)| self.rt.spawn(async move { writer.submit(command).await }))
            .collect();
        tasks
            .into_iter()
            .enumerate()
            .map(|(i, task)| self.joined(i, task))
            .collect()
    }

    /// Submits two commands, each to its node, at the same moment (two intents on the same
    /// records arriving at two daemons) and waits for both commits.
    pub fn race_pair<A: Command, B: Command>(
        &self,
        (i, first): (usize, A),
        (j, second): (usize, B),
    ) -> Result<(A::Output, B::Output), Violation> {
        let (a, b) = (self.node(i)?.writer.clone(), self.node(j)?.writer.clone());
        let first = self.rt.spawn(async move { a.submit(first).await });
        let second = self.rt.spawn(async move { b.submit(second).await });
        Ok((self.joined(i, first)?, self.joined(j, second)?))
    }

    /// The output of a racing submit to node `index`.
    fn joined<T>(
        &self,
        index: usize,
        task: tokio::task::JoinHandle<Result<T, writer::WriteError>>,
    ) -> Result<T, Violation> {
        let output = self
            .rt
            .block_on(task)
            .map_err(|e| format!("a racing submit on node {index} failed: {e}"))?;
        output.map_err(|e| {
            format!(
                "a command racing on several nodes was not committed on node {index} ({e}): a \
                 conflict between nodes must be applied again, never fail"
            )
        })
    }

    /// Submits a request under an idempotency key; now and then (several nodes only) it races
    /// on every node at once, and then exactly one node may execute it and every other must
    /// replay that same response. Returns the response the client acted on.
    pub fn submit_keyed<C: Command>(
        &mut self,
        request: Idempotent<C>,
    ) -> Result<Outcome, Violation> {
        if !self.races() {
            return self.submit(request);
        }
        let key = request.key.clone();
        let outcomes = self.race(request)?;
        let executed: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Executed(_)))
            .collect();
        let response = |o: &Outcome| match o {
            Outcome::Executed(r) | Outcome::Replayed(r) => Some(r.clone()),
            Outcome::Mismatch => None,
        };
        let first = outcomes.first().map(response);
        let agree = outcomes.iter().all(|o| Some(response(o)) == first);
        if executed.len() > 1 || !agree {
            return Err(format!(
                "request {key} raced on every node and was answered {outcomes:?}: one node \
                 executes it, every other replays the same response"
            ));
        }
        Ok(executed
            .first()
            .map(|o| (*o).clone())
            .or_else(|| outcomes.into_iter().next())
            .ok_or("a race produced no outcome")?)
    }

    /// A read snapshot of the latest commit, through a node the seed picks.
    pub fn read(&self) -> Result<Arc<ReadTxn>, Violation> {
        let index = self.pick_node();
        self.node(index)?.store.read().map_err(|e| e.to_string())
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
    /// commits its effect, or crashes between the two when `crash_before_completing`. Now and
    /// then (several nodes only) every node leases at once, as their workers poll together (no
    /// job may be leased twice, and each node then runs what it leased), or a worker outlives
    /// its lease ([`World::run_job_past_its_lease`]).
    pub fn run_job(&mut self, crash_before_completing: bool) -> Result<Option<String>, Violation> {
        if let Some(held) = self.held.take() {
            let completion = self.completion(held.id, held.lease_until_ms, held.effect);
            let completion = self.submit_on(held.node, completion)?;
            return Ok(Some(format!(
                "{}: completed late{}",
                held.note,
                completed(&completion)
            )));
        }
        let race = self.races();
        if race && !crash_before_completing && self.picker.borrow_mut().chance(50) {
            return self.run_job_past_its_lease();
        }
        if !race {
            let index = self.pick_node();
            let leased = self.submit_on(index, self.lease())?;
            let Some(job) = leased.into_iter().next() else {
                return Ok(None);
            };
            if self.holds(crash_before_completing) {
                return self.hold(index, job).map(Some);
            }
            return self.execute(index, job, crash_before_completing).map(Some);
        }
        let leased = self.race(self.lease())?;
        let mut ids: Vec<Id> = leased.iter().flatten().map(|job| job.id).collect();
        let count = ids.len();
        ids.sort();
        ids.dedup();
        if ids.len() != count {
            return Err(format!(
                "every node leased at once and one job was leased twice: {leased:?}"
            ));
        }
        let mut notes = Vec::new();
        for (index, jobs) in leased.into_iter().enumerate() {
            for job in jobs {
                // A crash ends the step: what another node leased stays leased until it lapses.
                if crash_before_completing {
                    notes.push(self.execute(index, job, true)?);
                    return Ok(Some(format!("raced: {}", notes.join("; "))));
                }
                notes.push(self.execute(index, job, false)?);
            }
        }
        Ok((!notes.is_empty()).then(|| format!("raced: {}", notes.join("; "))))
    }

    /// Whether this job's worker is slow: with several nodes, drawn by the seed; never with
    /// one, nor when the step crashes it.
    fn holds(&self, crash_before_completing: bool) -> bool {
        self.nodes.len() > 1
            && !crash_before_completing
            && self.picker.borrow_mut().chance(HOLD_PERCENT)
    }

    /// Runs `job`'s handler on node `index` and holds its effect: the completion is submitted
    /// at the next job step, after whatever other steps (on either node) come first.
    fn hold(&mut self, index: usize, job: crate::jobs::Job) -> Result<String, Violation> {
        let note = format!("node {index}: {} {}", job.kind, job.payload);
        let (id, lease_until_ms) = (job.id, job.due_at_ms);
        let effect = self.handle(index, job)?;
        self.held = Some(Held {
            node: index,
            id,
            lease_until_ms,
            effect,
            note: note.clone(),
        });
        Ok(format!("{note} → its worker holds the effect"))
    }

    /// The lease the simulated worker takes: the earliest due job.
    fn lease(&self) -> LeaseJobs {
        LeaseJobs {
            now_ms: self.now(),
            lease_ms: LEASE_MS,
            limit: 1,
        }
    }

    /// Runs `job`, leased by node `index`, through that node's handler and commits its effect
    /// there, or crashes between the two.
    fn execute(
        &mut self,
        index: usize,
        job: crate::jobs::Job,
        crash_before_completing: bool,
    ) -> Result<String, Violation> {
        let mut note = match self.nodes.len() {
            1 => format!("{} {}", job.kind, job.payload),
            _ => format!("node {index}: {} {}", job.kind, job.payload),
        };
        let (id, lease_until_ms) = (job.id, job.due_at_ms);
        let effect = self.handle(index, job)?;
        if crash_before_completing {
            drop(effect);
            let both = self.nodes.len() > 1 && self.picker.borrow_mut().chance(25);
            if both {
                for other in 0..self.nodes.len() {
                    self.crash_node(other)?;
                }
            } else {
                self.crash_node(index)?;
            }
            note.push_str(" → crashed before completing");
            return Ok(note);
        }
        let completion = self.completion(id, lease_until_ms, effect);
        let completion = self.submit_on(index, completion)?;
        note.push_str(completed(&completion));
        Ok(note)
    }

    /// Runs `job` through node `index`'s real handler (provider calls happen here): its
    /// effect, to commit under the lease.
    fn handle(&self, index: usize, job: crate::jobs::Job) -> Result<JobEffect, Violation> {
        let handlers = &self.node(index)?.handlers;
        let handler = match job.kind.as_str() {
            crate::webhooks::event::JOB_KIND => Arc::clone(&handlers.webhook),
            crate::payments::payment::EXECUTE_JOB => Arc::clone(&handlers.pay),
            crate::payments::payment::CANCEL_JOB => Arc::clone(&handlers.cancel),
            crate::payments::payment::REFUND_JOB => Arc::clone(&handlers.refund),
            crate::payments::reconcile::JOB_KIND => Arc::clone(&handlers.reconcile),
            crate::ingest::backfill::JOB_KIND => Arc::clone(&handlers.backfill),
            other => return Err(format!("no handler for job kind {other:?}")),
        };
        // The handler holds the process's writer: it dies with the process (dropped here).
        Ok(self.rt.block_on(handler.run(job)))
    }

    /// The completion of a job leased until `lease_until_ms`, as the worker submits it.
    fn completion(&mut self, id: Id, lease_until_ms: i64, effect: JobEffect) -> CompleteJob {
        CompleteJob {
            id,
            lease_until_ms,
            effect,
            now_ms: self.now(),
            retry: RETRY,
            jitter_seed: self.rng.next_u64(),
            aborted: false,
            on_dead: Some(crate::notifications::outbox::dead_letter),
        }
    }

    /// A worker that outlives its lease (several nodes only): node `first` leases the earliest
    /// due job and runs its handler, the lease lapses, another node leases the job again and
    /// runs it too, and both completions commit at the same moment. Only the current lease may
    /// complete: the first must be stale whichever commits first, the second must count.
    fn run_job_past_its_lease(&mut self) -> Result<Option<String>, Violation> {
        let first = self.pick_node();
        let second = (first + 1) % self.nodes.len();
        let leased = self.submit_on(first, self.lease())?;
        let Some(job) = leased.into_iter().next() else {
            return Ok(None);
        };
        let (id, lapses_at_ms) = (job.id, job.due_at_ms);
        let note = format!(
            "node {first}: {} {} outlives its lease",
            job.kind, job.payload
        );
        let late = self.handle(first, job)?;
        self.set_now(lapses_at_ms + 1);
        let again = self.submit_on(second, self.lease())?;
        let Some(job) = again.into_iter().next() else {
            return Err(format!("{note}, and no job was due once its lease lapsed"));
        };
        if job.id != id {
            // Another job fell due first: it runs, then the late completion, still the lease's.
            let other = self.execute(second, job, false)?;
            let late = self.completion(id, lapses_at_ms, late);
            let late = self.submit_on(first, late)?;
            return Ok(Some(format!(
                "{note}; {other}; its own completion{}",
                completed(&late)
            )));
        }
        let current_until_ms = job.due_at_ms;
        let current = self.handle(second, job)?;
        let late = self.completion(id, lapses_at_ms, late);
        let current = self.completion(id, current_until_ms, current);
        let (late, current) = self.race_pair((first, late), (second, current))?;
        if late != Completion::Stale || current == Completion::Stale {
            return Err(format!(
                "{note}: node {second} leased it again, then both completed at once: the \
                 lapsed lease's completion was {late:?} and the current one's {current:?}; \
                 only the current lease may complete"
            ));
        }
        Ok(Some(format!(
            "{note}; node {second} leased it again; completions: late{}, current{}",
            completed(&late),
            completed(&current)
        )))
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
        // What a node's HTTP handler stores: the delivery with ids of its own.
        let receive = |tenant: TenantId, endpoint: Id| Receive {
            tenant,
            event: WebhookEvent {
                id: Id::generate_at(now),
                tenant: tenant.0,
                endpoint,
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
            },
            lookup: vec![identity.clone()],
        };
        if again && self.races() {
            // The provider's retry arrives at the other node while the first is being stored:
            // one delivery is new, every other is its duplicate.
            self.provider.take_webhook(index, false);
            let deliveries = (0..self.nodes.len())
                .map(|_| receive(self.tenant, self.endpoint))
                .collect();
            let receipts = self.race_each(deliveries)?;
            let new = receipts
                .iter()
                .filter(|r| matches!(r, Receipt::New(_)))
                .count();
            let original = receipts.iter().find_map(|r| match r {
                Receipt::New(id) => Some(*id),
                Receipt::Duplicate(_) => None,
            });
            let consistent = receipts.iter().all(|r| match r {
                Receipt::New(id) => Some(*id) == original,
                Receipt::Duplicate(id) => original.is_none_or(|o| o == *id),
            });
            if new > 1 || !consistent {
                return Err(format!(
                    "webhook {} delivered to every node at once was received as {receipts:?}: \
                     one is new, every other its duplicate",
                    hook.id
                ));
            }
            return Ok(Some(format!(
                "{} {} (raced: {receipts:?})",
                hook.kind, hook.id
            )));
        }
        let receipt = self.submit(receive(self.tenant, self.endpoint))?;
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
            Some(crate::store::keys::time_from_bytes(bytes))
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

/// What a job's handler produced: its effect, or why it failed.
type JobEffect = Result<crate::jobs::Effect, String>;

/// A completion, for the step's note.
fn completed(completion: &Completion) -> &'static str {
    match completion {
        Completion::Done => " → done",
        Completion::Retrying(_) => " → retrying",
        Completion::Dead => " → dead",
        Completion::Stale => " → stale",
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // A held effect may hold its node's writer, which must go before that writer can stop.
        self.held = None;
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            drop(node.handlers);
            drop(node.writer);
            let _ = node.join.join();
        }
        crate::clock::simulated::install(None);
        seeded::install(None);
    }
}
