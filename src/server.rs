//! `tally serve`: open the database, start the writer and the background tasks, serve HTTP until
//! SIGTERM or SIGINT, then drain: stop accepting, finish in-flight requests, commit what the
//! writer holds, exit 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::config::{Config, LogFormat, CONTRACT_MIN_RETENTION_SECS};
use crate::idempotency::{InFlight, PurgeExpired};
use crate::ingest::anomaly::PurgeAnomalies;
use crate::ingest::purge::PurgeDerivedIdentities;
use crate::notifications::retention::PurgeNotifications;
use crate::store::writer::{self, Command, WriterHandle, WriterLimits};
use crate::store::Store;
use crate::tenants;

/// Redb's page cache for offline commands that open a copy (backup's check, restore); the
/// daemon's own cache is `cache_size_mib` in the configuration.
pub const OFFLINE_CACHE_SIZE_BYTES: usize = 32 * 1024 * 1024;

/// Sets up logging to stderr in the configured format.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
    // A second init (tests) is harmless.
    drop(result);
}

/// Runs the daemon to completion.
pub fn serve(config: Config) -> anyhow::Result<()> {
    init_logging(&config);
    for name in crate::config::foreign_env_names(std::env::vars()) {
        tracing::warn!(
            variable = %name,
            "ignoring an environment variable that is not a setting (not near any TALLY_ setting name)"
        );
    }
    if config.idempotency.retention_secs < CONTRACT_MIN_RETENTION_SECS {
        tracing::warn!(
            retention_secs = config.idempotency.retention_secs,
            "idempotency retention is below the 24 h the API promises; use only for testing"
        );
    }
    let store = Arc::new(crate::migrate::open_configured(&config)?);
    bootstrap(&store)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tally-http")
        .build()
        .context("cannot start the async runtime")?;
    let limits = WriterLimits {
        queue_capacity: usize::try_from(config.writer.queue_capacity).unwrap_or(usize::MAX),
        max_batch_size: usize::try_from(config.writer.max_batch_size).unwrap_or(usize::MAX),
        max_batch_wait: Duration::from_micros(config.writer.max_batch_wait_us),
    };
    store.set_watcher(Arc::new(crate::watch::Watch {
        policy: config.billing_policy(),
        interim_min_interval_ms: config.interim_min_interval_ms(),
    }));
    let (writer, writer_thread) =
        writer::spawn(Arc::clone(&store), limits).context("cannot start the writer thread")?;
    let metrics = crate::metrics::install().context("cannot install the metrics recorder")?;
    let config = Arc::new(config);
    let result = runtime.block_on(run(
        Arc::clone(&store),
        writer,
        Arc::clone(&config),
        metrics,
    ));
    // Every writer handle is gone once `run` returns; the writer drains its queue and stops.
    if writer_thread.join().is_err() {
        anyhow::bail!("the writer thread panicked");
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    tracing::info!("stopped");
    result
}

/// On a database without tenants, creates `default` and prints its key once, on stdout only.
fn bootstrap(store: &Store) -> anyhow::Result<()> {
    let empty = {
        let tx = store.read()?;
        tenants::is_empty(&tx)?
    };
    if !empty {
        return Ok(());
    }
    let key = tenants::generate_key().context("no randomness for an API key")?;
    let secret = key.secret.clone();
    let created = store.apply_one(tenants::CreateTenant {
        name: "default".into(),
        key,
        now_ms: crate::clock::now_ms(),
    })?;
    match created {
        Ok(_) => {}
        // Another node sharing the database created it first: its key was printed there.
        Err(tenants::TenantError::Exists(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    println!("tally: tenant \"default\" created; API key (shown once): {secret}");
    tracing::info!("created tenant default on first start (its key was printed to stdout)");
    Ok(())
}

async fn run(
    store: Arc<Store>,
    writer: WriterHandle,
    config: Arc<Config>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let store_for_tasks = Arc::clone(&store);
    let jobs_wake = Arc::new(tokio::sync::Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = Arc::new(AppState {
        store,
        writer: writer.clone(),
        config: Arc::clone(&config),
        in_flight: InFlight::default(),
        metrics: metrics.clone(),
        jobs_wake: Arc::clone(&jobs_wake),
        stop: stop_rx.clone(),
        console: crate::console::Console::default(),
    });
    let purge = tokio::spawn(purge_task(
        writer.clone(),
        Arc::clone(&config),
        stop_rx.clone(),
    ));
    let expiry = tokio::spawn(expiry_task(
        writer.clone(),
        Arc::clone(&config),
        stop_rx.clone(),
    ));
    let registry = job_registry(&config, &writer, &store_for_tasks)?;
    let workers = tokio::spawn(crate::jobs::worker::run(
        writer.clone(),
        Arc::new(registry),
        crate::jobs::worker::PoolConfig {
            on_dead: Some(crate::notifications::outbox::dead_letter),
            ..config.jobs.pool()
        },
        Arc::clone(&jobs_wake),
        stop_rx.clone(),
    ));
    let writer_for_control = writer.clone();
    let billing = tokio::spawn(billing_task(
        writer,
        Arc::clone(&store_for_tasks),
        Arc::clone(&config),
        stop_rx.clone(),
    ));
    let control = control_task(&config, &writer_for_control, &stop_rx);
    drop(writer_for_control);
    let upkeep = tokio::spawn(upkeep_task(metrics, stop_rx));
    println!("tally: listening on http://{address}");
    tracing::info!(%address, "serving");
    let app = api::router(Arc::clone(&state));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    state.console.clear_api();
    drop(state);
    tracing::info!("no longer accepting requests; draining");
    let _ = stop_tx.send(true);
    let _ = purge.await;
    let _ = expiry.await;
    let _ = billing.await;
    let _ = workers.await;
    let _ = upkeep.await;
    if let Some(control) = control {
        let _ = control.await;
    }
    served.context("the HTTP server failed")
}

/// Opens the control socket that lets `tally tenant create`, `tally key create` and `tally key
/// revoke` work while the daemon serves. Without it the daemon still serves; those commands
/// then need it stopped.
fn control_task(
    config: &Config,
    writer: &WriterHandle,
    stop: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    // On PostgreSQL operator commands write to the shared database themselves.
    if config.database_url.is_set() {
        return None;
    }
    #[cfg(unix)]
    match crate::control::bind(&config.database_path) {
        Ok(listener) => {
            tracing::info!(path = %listener.path().display(), "control socket ready");
            Some(tokio::spawn(listener.serve(writer.clone(), stop.clone())))
        }
        Err(error) => {
            tracing::warn!(
                %error,
                "no control socket: managing tenants and keys needs the daemon stopped"
            );
            None
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (config, writer, stop);
        None
    }
}

/// Deletes expired idempotency records, derived event identities that can no longer match,
/// ingest anomalies kept as long as idempotency keys, and notifications past their retention,
/// in bounded passes.
async fn purge_task(writer: WriterHandle, config: Arc<Config>, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(config.idempotency.purge_interval_ms);
    let limit = usize::try_from(config.idempotency.purge_batch_size).unwrap_or(1000);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let keys = in_passes(&writer, limit, &stop, "idempotency purge", || {
            PurgeExpired {
                now_ms: crate::clock::now_ms(),
                limit,
            }
        })
        .await;
        let identities = in_passes(&writer, limit, &stop, "identity purge", || {
            PurgeDerivedIdentities {
                horizon_ms: config
                    .ingest
                    .derived_identity_horizon_ms(crate::clock::now_ms()),
                limit,
            }
        })
        .await;
        let anomalies = in_passes(&writer, limit, &stop, "anomaly purge", || PurgeAnomalies {
            cutoff_ms: anomaly_cutoff_ms(&config, crate::clock::now_ms()),
            limit,
        })
        .await;
        let notifications = purge_notifications(&writer, &config, limit, &stop).await;
        for (what, purged) in [
            ("idempotency_keys", keys),
            ("derived_identities", identities),
            ("event_anomalies", anomalies),
            ("notifications", notifications),
        ] {
            if purged > 0 {
                metrics::counter!("tally_purged_total", "what" => what).increment(purged);
                tracing::debug!(purged, what, "purged");
            }
        }
    }
}

/// Ingest anomalies are kept as long as idempotency keys: received before this instant, they go.
fn anomaly_cutoff_ms(config: &Config, now_ms: i64) -> i64 {
    let retention_ms =
        i64::try_from(config.idempotency.retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    now_ms.saturating_sub(retention_ms)
}

/// Deletes notifications past their retention in bounded passes, each continuing where the
/// previous one stopped, until every old notification was examined (or the daemon stops).
/// Returns how many were deleted; a failed pass is logged and the walk starts again at the next
/// interval.
async fn purge_notifications(
    writer: &WriterHandle,
    config: &Config,
    limit: usize,
    stop: &watch::Receiver<bool>,
) -> u64 {
    let cutoff_ms = config
        .notifications
        .retention_cutoff_ms(crate::clock::now_ms());
    let mut after = None;
    let mut total = 0u64;
    loop {
        let pass = PurgeNotifications {
            cutoff_ms,
            limit,
            after,
        };
        match writer.submit(pass).await {
            Ok(done) => {
                total += done.purged as u64;
                match done.next {
                    Some(next) if !*stop.borrow() => after = Some(next),
                    _ => return total,
                }
            }
            Err(error) => {
                tracing::warn!(%error, what = "notification purge", "deferred");
                return total;
            }
        }
    }
}

/// Submits passes of a bounded maintenance command until one handles fewer than `limit` rows
/// (or the daemon stops), so a backlog drains without holding the writer for long at a time.
/// Returns the rows handled; a failed pass is logged and retried at the next interval.
async fn in_passes<C: Command<Output = usize>>(
    writer: &WriterHandle,
    limit: usize,
    stop: &watch::Receiver<bool>,
    what: &'static str,
    pass: impl Fn() -> C,
) -> u64 {
    let mut total = 0u64;
    loop {
        match writer.submit(pass()).await {
            Ok(handled) => {
                total += handled as u64;
                if handled < limit || *stop.borrow() {
                    return total;
                }
            }
            Err(error) => {
                tracing::warn!(%error, what, "deferred");
                return total;
            }
        }
    }
}

/// Expires credit grants whose expiry has passed, in bounded batches; each expiry is one journal
/// entry committed with the grant's status change, so a restart never expires a grant twice.
async fn expiry_task(writer: WriterHandle, config: Arc<Config>, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(config.ledger.expiry_interval_ms);
    let limit = usize::try_from(config.ledger.expiry_batch_size).unwrap_or(500);
    loop {
        let expired = in_passes(&writer, limit, &stop, "credit expiry", || {
            crate::ledger::grant::ExpireGrants {
                now_ms: crate::clock::now_ms(),
                limit,
            }
        })
        .await;
        if expired > 0 {
            metrics::counter!("tally_credit_grants_expired_total").increment(expired);
            tracing::info!(expired, "expired credit grants");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Runs billing for every tenant on the configured interval. Runs go through the writer like
/// any API call, so the scheduler and `POST /v1/billing-runs` can never invoice a period twice.
async fn billing_task(
    writer: WriterHandle,
    store: Arc<Store>,
    config: Arc<Config>,
    mut stop: watch::Receiver<bool>,
) {
    if config.billing.scheduler_interval_ms == 0 {
        return;
    }
    let interval = Duration::from_millis(config.billing.scheduler_interval_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let tenant_ids: Vec<u64> = match store.read().and_then(|tx| tenants::list(&tx)) {
            Ok(list) => list.into_iter().map(|(t, _)| t.id).collect(),
            Err(error) => {
                tracing::warn!(%error, "billing scheduler could not list tenants");
                continue;
            }
        };
        for tenant in tenant_ids {
            let now_ms = crate::clock::now_ms();
            let command = crate::billing::run::BillingRun {
                tenant: crate::store::TenantId(tenant),
                id: crate::id::Id::generate_at(now_ms),
                as_of_ms: now_ms,
                now_ms,
                policy: config.billing_policy(),
                trigger: "scheduler".into(),
                origin: "scheduler".into(),
            };
            // One bounded transaction at a time until the run is complete.
            let outcome = match writer.submit(command.clone()).await {
                Ok(run) => {
                    let keep_going = || !*stop.borrow();
                    crate::billing::run::complete(&writer, command, run, keep_going).await
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(run) if run.closed_count > 0 => {
                    metrics::counter!("tally_invoices_issued_total").increment(run.closed_count);
                    tracing::info!(
                        tenant,
                        invoices = run.closed_count,
                        transactions = run.transactions,
                        "scheduled billing run"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, tenant, "scheduled billing run deferred"),
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

/// The payment provider the configuration names.
pub fn provider(
    config: &Config,
    backend: crate::payments::simulated::Backend,
    store: &Arc<Store>,
) -> anyhow::Result<Arc<dyn crate::payments::psp::Psp>> {
    Ok(if config.payments.provider == "stripe" {
        Arc::new(
            crate::payments::stripe::Stripe::new(
                &config.payments.stripe.base_url,
                &config.payments.stripe.secret_key,
                Duration::from_millis(config.payments.stripe.timeout_ms),
            )
            .map_err(anyhow::Error::from)?,
        )
    } else {
        let outcome =
            crate::payments::simulated::SimOutcome::parse(&config.payments.simulated.outcome)
                .unwrap_or(crate::payments::simulated::SimOutcome::Succeed);
        Arc::new(crate::payments::simulated::Simulated::new(
            backend,
            Arc::clone(store),
            outcome,
        ))
    })
}

/// Every job kind and its handler.
fn job_registry(
    config: &Config,
    writer: &WriterHandle,
    store: &Arc<Store>,
) -> anyhow::Result<crate::jobs::worker::Registry> {
    use crate::payments::worker::{Context, ExecutePayment, ExecuteRefund, RunReconciliation};
    let mut handlers = crate::webhooks::process::EventHandlers::builtin(config.ingest.clone());
    crate::payments::hooks::register(&mut handlers, config.payments.dunning());
    let psp = provider(
        config,
        crate::payments::simulated::Backend::Writer(writer.clone()),
        store,
    )?;
    let ctx = Context {
        writer: writer.clone(),
        store: Arc::clone(store),
        psp,
        dunning: config.payments.dunning(),
    };
    let mut registry = crate::jobs::worker::Registry::default();
    registry.register(
        crate::webhooks::event::JOB_KIND,
        Arc::new(crate::webhooks::process::ProcessWebhook {
            handlers: Arc::new(handlers),
        }),
    );
    registry.register(
        crate::payments::payment::EXECUTE_JOB,
        Arc::new(ExecutePayment(ctx.clone())),
    );
    registry.register(
        crate::payments::payment::CANCEL_JOB,
        Arc::new(crate::payments::worker::CancelPayment(ctx.clone())),
    );
    registry.register(
        crate::payments::payment::REFUND_JOB,
        Arc::new(ExecuteRefund(ctx.clone())),
    );
    registry.register(
        crate::payments::reconcile::JOB_KIND,
        Arc::new(RunReconciliation(ctx)),
    );
    registry.register(
        crate::ingest::backfill::JOB_KIND,
        Arc::new(crate::ingest::backfill::RunBackfill {
            writer: writer.clone(),
            chunk_events: config.ingest.backfill_chunk_events,
            // Half the lease: a run always ends (and the job is leased again) before another
            // worker could take it over.
            slice: Duration::from_millis(config.jobs.lease_ms / 2),
        }),
    );
    registry.register_with_capacity(
        crate::notifications::outbox::DELIVER_JOB,
        Arc::new(crate::notifications::delivery::Deliver::new(
            Arc::clone(store),
            crate::notifications::delivery::client(&config.notifications)
                .context("cannot build the event delivery client")?,
            Arc::new(crate::api::notifications::render_body),
            (&config.notifications).into(),
        )),
        usize::try_from(config.notifications.max_concurrent_deliveries).unwrap_or(64),
    );
    Ok(registry)
}

/// Keeps the metrics recorder's histograms bounded.
async fn upkeep_task(
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => metrics.run_upkeep(),
            _ = stop.changed() => return,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = terminate => tracing::info!("SIGTERM received"),
    }
}
