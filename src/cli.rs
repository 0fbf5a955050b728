//! The command line: `serve` (the default) and the operator commands, which open the database
//! file directly and therefore refuse to run while a server holds it, except tenant and key
//! management, which then goes through the daemon's control socket (`control.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::store::Store;
use crate::tenants;

/// Tally: a billing daemon with one promise, one intent, one effect.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about)]
pub struct Cli {
    /// TOML configuration file (every key is optional; see config.example.toml).
    #[arg(long, global = true, env = "TALLY_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Serve,
    /// Manage tenants (creating one works while the daemon serves).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage API keys; works while the daemon serves, through its control socket, and takes
    /// effect on the next request.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Check the ledger: every entry balances, the hash chain is intact, every balance equals
    /// the sum of its postings. Exits non-zero naming the first bad entry.
    Verify {
        /// Only this tenant (by name).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Invoices.
    #[command(subcommand)]
    Invoice(InvoiceCommand),
    /// Dead letters: jobs that exhausted their retries.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Outbound events: the notifications recorded and their deliveries.
    #[command(subcommand)]
    Notifications(NotificationsCommand),
    /// Copy a consistent snapshot of the database (one read transaction) into a new file; works
    /// while the daemon serves.
    Backup {
        /// The new file (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Where the database's bytes go: rows, stored and allocated bytes per table, largest
    /// first (read from one snapshot; works while the daemon serves).
    Space,
    /// Replace the database with a complete backup (one whose completion marker agrees with its
    /// rows). Refuses while a daemon holds the database. The backup is copied beside the
    /// database, synced and renamed over it, so a failed copy changes nothing; the previous
    /// file is kept beside it as `<file name>.before-restore-<ms>`.
    Restore {
        /// The backup file.
        file: PathBuf,
    },
    /// Copy every table from one database to a new one, between a redb file and PostgreSQL in
    /// either direction (or a backup file into PostgreSQL), then compare row counts per table
    /// and verify the target's ledger. The source is read from one snapshot; a redb source must
    /// not be held by a running daemon. The target must be empty.
    Migrate {
        /// The source: a redb file path or a `postgres://` URL.
        #[arg(long)]
        from: String,
        /// The target: a new redb file path or a `postgres://` URL of an empty database.
        #[arg(long)]
        to: String,
    },
    /// Measure: concurrent keep-alive clients per scenario; prints throughput, latency
    /// percentiles, writer batch size and peak RSS, and checks nothing was lost or doubled.
    Bench {
        /// Target a running daemon (default: start one on a temporary database).
        #[arg(long)]
        url: Option<String>,
        /// API key for --url.
        #[arg(long)]
        key: Option<String>,
        /// Concurrent clients (per scenario unless a scenario names its own).
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds per scenario.
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Comma-separated: ingest, batch, create, replay, usage, billing (and, by name,
        /// deliveries, entitlements); `name:N` runs that scenario with N clients.
        #[arg(long, default_value = "ingest,batch,create,replay,usage,billing")]
        scenarios: String,
        /// Events stored before the usage query and entitlements scenarios.
        #[arg(long, default_value_t = 1_000_000)]
        usage_events: u64,
        /// Subscriptions billed by the billing scenario.
        #[arg(long, default_value_t = 10_000)]
        subscriptions: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Run the daemons on a PostgreSQL cluster the benchmark starts in a temporary folder
        /// (Debian's `postgresql` binaries, 127.0.0.1 only, fsync on) instead of a redb file.
        #[arg(long, conflicts_with_all = ["database_url", "url"])]
        postgres: bool,
        /// Run the daemons on this existing, empty PostgreSQL database.
        #[arg(long, conflicts_with = "url")]
        database_url: Option<String>,
        /// Daemons to start on the one database, clients spread evenly over them (above 1 only
        /// with --postgres or --database-url).
        #[arg(long, default_value_t = 1, conflicts_with = "url")]
        nodes: usize,
        /// Realistic LLM-call events to store, in batches of 100, before the first scenario
        /// (grows the database; the report gives the rate and the bytes per event).
        #[arg(long, default_value_t = 0)]
        prefill_events: u64,
        /// Also measure the HTTP ceiling: a trivial endpoint driven with the same clients and
        /// bodies (adds the `ceiling` scenario when the list does not name it).
        #[arg(long)]
        ceiling: bool,
        /// Also measure a PostgreSQL peer doing the same ingest transaction on this database
        /// (plain connection; adds the `peer` scenario when the list names neither peer one).
        #[arg(long)]
        peer_postgres: Option<String>,
    },
    /// Reconcile the payment provider's records in a range against Tally's payments (the same
    /// report as `POST /v1/reconciliations`, run with no daemon holding the database).
    Reconcile {
        /// The tenant's name.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Range start (RFC 3339).
        #[arg(long)]
        from: String,
        /// Range end, exclusive (RFC 3339; default now).
        #[arg(long)]
        to: Option<String>,
    },
}

/// `tally dlq …`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters.
    List {
        /// The tenant's name.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Only this job kind.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Requeue dead letters with their attempts reset: one by id, or every match with --all.
    Replay {
        /// The tenant's name.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// A dead letter id (`job_…`).
        id: Option<String>,
        /// Replay every dead letter (of --kind, if given).
        #[arg(long)]
        all: bool,
        /// Only this job kind (with --all).
        #[arg(long)]
        kind: Option<String>,
    },
}

/// `tally notifications …`.
#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// List notifications, oldest first, with where each delivery stands.
    List {
        /// The tenant's name.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Only this type (`invoice.paid`, …).
        #[arg(long = "type")]
        event_type: Option<String>,
    },
    /// Deliver a notification again, with the same `webhook-id`: to every destination it was
    /// meant for, or to one.
    Resend {
        /// The tenant's name.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// The notification id (`ntf_…`).
        id: String,
        /// Only this destination (`evd_…`).
        #[arg(long)]
        destination: Option<String>,
    },
}

/// `tally invoice …`.
#[derive(Debug, Subcommand)]
pub enum InvoiceCommand {
    /// Recompute an invoice from its stored inputs and report a match or the first difference.
    Verify {
        /// The invoice id (`inv_…`).
        id: String,
    },
}

/// `tally tenant …`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and its first API key (printed once).
    Create {
        /// Letters, digits, '-' and '_'.
        name: String,
    },
    /// List tenants.
    List,
}

/// `tally key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create another API key for a tenant (printed once).
    Create {
        /// The tenant's name.
        #[arg(long)]
        tenant: String,
        /// The key may read everything and change nothing (refused with 403 `read_only_key`).
        #[arg(long)]
        read_only: bool,
        /// The operator's name for the key (shown in the console's key list), 0-64 characters.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke an API key by its id (`key_…`).
    Revoke {
        /// The key id printed when the key was created.
        key_id: String,
    },
}

/// Parses arguments, runs, and maps errors to a message on stderr and exit status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tally: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref(), std::env::vars())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => crate::server::serve(config),
        Command::Tenant(TenantCommand::Create { name }) => {
            manage(&config, crate::control::Request::CreateTenant { name })
        }
        Command::Tenant(TenantCommand::List) => {
            let store = open(&config)?;
            let tx = store.read()?;
            println!("{:<32} {:>11} CREATED", "NAME", "ACTIVE_KEYS");
            for (tenant, keys) in tenants::list(&tx)? {
                println!(
                    "{:<32} {:>11} {}",
                    tenant.name,
                    keys,
                    crate::clock::rfc3339(tenant.created_at_ms)
                );
            }
            Ok(())
        }
        Command::Key(KeyCommand::Create {
            tenant,
            read_only,
            label,
        }) => manage(
            &config,
            crate::control::Request::CreateKey {
                tenant,
                read_only,
                label,
            },
        ),
        Command::Verify { tenant } => verify(&config, tenant.as_deref()),
        Command::Invoice(InvoiceCommand::Verify { id }) => verify_invoice(&config, &id),
        Command::Dlq(command) => dlq(&config, command),
        Command::Notifications(command) => notifications(&config, command),
        Command::Backup { out } => backup(&config, &out),
        Command::Space => space(&config),
        Command::Bench {
            url,
            key,
            clients,
            duration_secs,
            scenarios,
            usage_events,
            subscriptions,
            json,
            postgres,
            database_url,
            nodes,
            prefill_events,
            ceiling,
            peer_postgres,
        } => {
            let backend = match (postgres, database_url) {
                (true, _) => crate::bench::Backend::LocalPostgres,
                (false, Some(url)) => crate::bench::Backend::Postgres(url),
                (false, None) => crate::bench::Backend::Redb,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let mut scenarios: Vec<String> = scenarios
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            let named = |list: &[String], name: &str| {
                list.iter().any(|s| s.split(':').next() == Some(name))
            };
            if ceiling && !named(&scenarios, "ceiling") {
                scenarios.push("ceiling".into());
            }
            if peer_postgres.is_some()
                && !named(&scenarios, "peer")
                && !named(&scenarios, "peer-batch")
            {
                scenarios.push("peer".into());
            }
            runtime.block_on(crate::bench::run(crate::bench::Options {
                url,
                key,
                clients,
                duration_secs,
                scenarios,
                usage_events,
                subscriptions,
                json,
                backend,
                nodes,
                prefill_events,
                peer_postgres,
            }))?;
            Ok(())
        }
        Command::Restore { file } => restore(&config, &file),
        Command::Migrate { from, to } => migrate_data(&config, &from, &to),
        Command::Reconcile { tenant, from, to } => {
            reconcile(&config, &tenant, &from, to.as_deref())
        }
        Command::Key(KeyCommand::Revoke { key_id }) => {
            manage(&config, crate::control::Request::RevokeKey { key_id })
        }
    }
}

/// Creates tenants and keys and revokes keys: in the database file when no daemon holds it,
/// otherwise through the running daemon's control socket, so nothing needs a restart.
fn manage(config: &Config, request: crate::control::Request) -> anyhow::Result<()> {
    use crate::control::{self, Reply};
    let reply = match open(config) {
        Ok(store) => tokio::runtime::Builder::new_current_thread()
            .build()?
            .block_on(control::execute(&store, request))?,
        Err(e) if in_use(&e) => control::call(&config.database_path, &request)?,
        Err(e) => return Err(e),
    };
    match reply {
        Reply::Created {
            tenant,
            key_id,
            api_key,
        } => {
            println!("tenant: {tenant}");
            println!("key_id: {key_id}");
            println!("api_key: {api_key}");
        }
        Reply::Revoked { key_id } => println!("revoked: {key_id}"),
        Reply::Refused { error } => anyhow::bail!("{error}"),
    }
    Ok(())
}

fn verify(config: &Config, tenant: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write;
    let store = open(config)?;
    let tx = store.read()?;
    let only = match tenant {
        Some(name) => Some(
            tenants::list(&tx)?
                .into_iter()
                .find(|(t, _)| t.name == name)
                .map(|(t, _)| crate::store::TenantId(t.id))
                .ok_or_else(|| anyhow::anyhow!("no tenant named {name:?}"))?,
        ),
        None => None,
    };
    let mut stderr = std::io::stderr();
    let mut last_percent = u64::MAX;
    let report = crate::ledger::verify::verify(&tx, only, &mut |done, total| {
        if total >= 10_000 {
            let percent = done * 100 / total.max(1);
            if percent != last_percent {
                last_percent = percent;
                let _ = write!(stderr, "\rverifying: {done}/{total} entries ({percent}%)");
                let _ = stderr.flush();
            }
        }
    })?;
    if last_percent != u64::MAX {
        let _ = writeln!(stderr);
    }
    record_verification(&store, &tx, only, &report)?;
    match report.violation {
        None => {
            println!(
                "ledger ok: {} tenants, {} entries, {} balances, {} credit grants verified",
                report.tenants, report.entries, report.balances, report.grants
            );
            Ok(())
        }
        Some(v) => {
            let name = tenants::list(&tx)?
                .into_iter()
                .find(|(t, _)| t.id == v.tenant)
                .map(|(t, _)| t.name)
                .unwrap_or_else(|| format!("#{}", v.tenant));
            let at = match (&v.entry, v.seq) {
                (Some(entry), Some(seq)) => format!("entry {entry} (#{seq})"),
                _ => "the books".to_string(),
            };
            anyhow::bail!(
                "ledger verification FAILED for tenant {name} at {at}: {}",
                v.reason
            )
        }
    }
}

/// Remembers the outcome for every tenant it speaks for (all of them when it passed, the one
/// whose books failed otherwise), as `GET /v1/ledger/verify` does.
fn record_verification(
    store: &crate::store::Store,
    tx: &crate::store::ReadTxn,
    only: Option<crate::store::TenantId>,
    report: &crate::ledger::verify::Report,
) -> anyhow::Result<()> {
    use crate::ledger::verification::{Outcome, RecordVerification};
    let tenants = match (&report.violation, only) {
        (Some(v), _) => vec![crate::store::TenantId(v.tenant)],
        (None, Some(t)) => vec![t],
        (None, None) => tenants::list(tx)?
            .into_iter()
            .map(|(t, _)| crate::store::TenantId(t.id))
            .collect(),
    };
    store.apply_one(RecordVerification {
        tenants,
        outcome: Outcome {
            at_ms: crate::clock::now_ms(),
            passed: report.violation.is_none(),
            entries: report.entries,
            reason: report.violation.as_ref().map(|v| v.reason.clone()),
        },
    })?;
    Ok(())
}

fn verify_invoice(config: &Config, id: &str) -> anyhow::Result<()> {
    let parsed = crate::id::Id::parse(id, crate::billing::invoice::PREFIX)
        .ok_or_else(|| anyhow::anyhow!("{id:?} is not an invoice id (inv_…)"))?;
    let store = open(config)?;
    let tx = store.read()?;
    for (tenant, _) in tenants::list(&tx)? {
        let tenant_id = crate::store::TenantId(tenant.id);
        if let Some(invoice) = crate::billing::invoice::get(&tx, tenant_id, parsed)? {
            return match crate::billing::verify::verify_invoice(&tx, tenant_id, &invoice)? {
                Ok(()) => {
                    println!("invoice {id} (tenant {}) matches its inputs", tenant.name);
                    Ok(())
                }
                Err(difference) => {
                    anyhow::bail!("invoice {id} differs from its inputs: {difference}")
                }
            };
        }
    }
    anyhow::bail!("no invoice {id} in any tenant")
}

fn tenant_named(tx: &crate::store::ReadTxn, name: &str) -> anyhow::Result<crate::store::TenantId> {
    tenants::list(tx)?
        .into_iter()
        .find(|(t, _)| t.name == name)
        .map(|(t, _)| crate::store::TenantId(t.id))
        .ok_or_else(|| anyhow::anyhow!("no tenant named {name:?}"))
}

fn dlq(config: &Config, command: DlqCommand) -> anyhow::Result<()> {
    use std::io::Write;
    let store = open(config)?;
    match command {
        DlqCommand::List { tenant, kind } => {
            let tx = store.read()?;
            let tenant = tenant_named(&tx, &tenant)?;
            let mut after = None;
            println!("{:<31} {:<18} {:<25} LAST ERROR", "ID", "KIND", "DIED");
            loop {
                let (jobs, more) = crate::jobs::dead_letters(
                    &tx,
                    tenant,
                    kind.as_deref(),
                    None,
                    None,
                    after,
                    500,
                )?;
                for j in &jobs {
                    println!(
                        "{:<31} {:<18} {:<25} {}",
                        j.id.display(crate::jobs::PREFIX),
                        j.kind,
                        j.finished_at_ms
                            .map(crate::clock::rfc3339)
                            .unwrap_or_default(),
                        j.last_error().unwrap_or("")
                    );
                }
                after = jobs.last().map(|j| j.id);
                if !more {
                    return Ok(());
                }
            }
        }
        DlqCommand::Replay {
            tenant,
            id,
            all,
            kind,
        } => {
            let tenant = {
                let tx = store.read()?;
                tenant_named(&tx, &tenant)?
            };
            let ids = match (&id, all) {
                (Some(id), false) => vec![crate::id::Id::parse(id, crate::jobs::PREFIX)
                    .ok_or_else(|| anyhow::anyhow!("{id:?} is not a job id (job_…)"))?],
                (None, true) => Vec::new(),
                _ => anyhow::bail!("give one dead letter id, or --all"),
            };
            let total = {
                let tx = store.read()?;
                crate::jobs::dead_letters(
                    &tx,
                    tenant,
                    kind.as_deref(),
                    None,
                    None,
                    None,
                    usize::MAX,
                )?
                .0
                .len()
            };
            let mut done = 0usize;
            let mut stderr = std::io::stderr();
            loop {
                let replayed = store
                    .apply_one(crate::jobs::ReplayDead {
                        tenant,
                        ids: ids.clone(),
                        kind: kind.clone(),
                        died_from_ms: None,
                        died_to_ms: None,
                        limit: 500,
                        now_ms: crate::clock::now_ms(),
                    })?
                    .map_err(anyhow::Error::from)?;
                done += replayed.len();
                if all {
                    let _ = write!(stderr, "\rreplayed {done}/{total}");
                    let _ = stderr.flush();
                }
                if !all || replayed.is_empty() {
                    break;
                }
            }
            if all {
                let _ = writeln!(stderr);
            }
            println!("replayed: {done}");
            Ok(())
        }
    }
}

fn notifications(config: &Config, command: NotificationsCommand) -> anyhow::Result<()> {
    use crate::notifications::{destination, destinations, outbox};
    let store = open(config)?;
    match command {
        NotificationsCommand::List { tenant, event_type } => {
            let tx = store.read()?;
            let tenant = tenant_named(&tx, &tenant)?;
            let filter = outbox::Filter {
                event_type,
                ..outbox::Filter::default()
            };
            let mut after = None;
            println!(
                "{:<31} {:<26} {:>8} {:<25} DELIVERIES",
                "ID", "TYPE", "SEQUENCE", "CREATED"
            );
            loop {
                let (page, next) = outbox::list(&tx, tenant, &filter, after, 500, usize::MAX)?;
                for n in &page {
                    let deliveries: Vec<String> = outbox::deliveries(&tx, tenant, n.id)?
                        .iter()
                        .map(|d| {
                            format!(
                                "{}={}",
                                d.destination.display(destination::PREFIX),
                                d.status.as_str()
                            )
                        })
                        .collect();
                    println!(
                        "{:<31} {:<26} {:>8} {:<25} {}",
                        n.id.display(outbox::PREFIX),
                        n.event_type,
                        n.sequence,
                        crate::clock::rfc3339(n.created_at_ms),
                        deliveries.join(" ")
                    );
                }
                let Some(next) = next else {
                    return Ok(());
                };
                after = Some(next);
            }
        }
        NotificationsCommand::Resend {
            tenant,
            id,
            destination: only,
        } => {
            let tenant = {
                let tx = store.read()?;
                tenant_named(&tx, &tenant)?
            };
            let notification = crate::id::Id::parse(&id, outbox::PREFIX)
                .ok_or_else(|| anyhow::anyhow!("{id:?} is not a notification id (ntf_…)"))?;
            let only = match only {
                Some(d) => Some(crate::id::Id::parse(&d, destination::PREFIX).ok_or_else(
                    || anyhow::anyhow!("{d:?} is not an event destination id (evd_…)"),
                )?),
                None => None,
            };
            let resent = store
                .apply_one(destinations::Resend {
                    tenant,
                    notification,
                    destination: only,
                    now_ms: crate::clock::now_ms(),
                })?
                .map_err(anyhow::Error::from)?;
            for d in resent.queued {
                println!("queued: {id} to {}", d.display(destination::PREFIX));
            }
            for d in resent.live {
                println!(
                    "still being delivered (nothing added): {id} to {}",
                    d.display(destination::PREFIX)
                );
            }
            Ok(())
        }
    }
}

fn backup(config: &Config, out: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    // A PostgreSQL database is copied from one read-only snapshot of it: the backup is the
    // same portable redb file either way.
    let (_db, _store, tx) = snapshot(config)?;
    let mut stderr = std::io::stderr();
    let completion =
        crate::store::backup::snapshot(&tx, out, crate::clock::now_ms(), &mut |done, total| {
            let _ = write!(stderr, "\rbackup: {done}/{total} rows");
            let _ = stderr.flush();
        })?;
    let _ = writeln!(stderr);
    // Checked read-only: nothing is written to the file after its completion marker.
    crate::store::backup::check_complete(out)?;
    let copy = crate::store::backup::open_read_only(out)?;
    let copy_tx = crate::store::ReadTxn::redb(redb::ReadableDatabase::begin_read(&copy)?);
    let report = crate::ledger::verify::verify(&copy_tx, None, &mut |_, _| {})?;
    if let Some(v) = report.violation {
        anyhow::bail!("the backup does not verify: {}", v.reason);
    }
    println!(
        "backup: {} rows copied to {}; complete (digest {}); its ledger verifies ({} entries)",
        completion.total_rows(),
        out.display(),
        &completion.digest[..16],
        report.entries
    );
    Ok(())
}

/// What a snapshot needs kept open: the read-only redb file (a daemon holds it) or the store.
type Snapshot = (
    Option<redb::ReadOnlyDatabase>,
    Option<Store>,
    std::sync::Arc<crate::store::ReadTxn>,
);

/// One read snapshot of the configured database, whether or not a daemon serves it.
fn snapshot(config: &Config) -> anyhow::Result<Snapshot> {
    if config.database_url.is_set() {
        let store = open(config)?;
        let tx = store.read()?;
        return Ok((None, Some(store), tx));
    }
    let (db, store, tx) = crate::store::backup::read_snapshot(&config.database_path)?;
    Ok((db, store, std::sync::Arc::new(tx)))
}

fn space(config: &Config) -> anyhow::Result<()> {
    let (_db, _store, tx) = snapshot(config)?;
    let tables = crate::store::space::measure(&tx)?;
    print!("{}", crate::store::space::report(&tables));
    if !config.database_url.is_set() {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&config.database_path)?;
        println!(
            "file: {} bytes long, {} bytes allocated on disk",
            meta.len(),
            meta.blocks() * 512
        );
    }
    Ok(())
}

/// Opens a database named on the command line: a `postgres://` URL or a redb file.
fn open_named(config: &Config, name: &str, must_be_new: bool) -> anyhow::Result<Store> {
    if name.starts_with("postgres://") || name.starts_with("postgresql://") {
        let mut named = config.clone();
        named.database_url = crate::config::DatabaseUrl(name.to_string());
        return open(&named);
    }
    let path = std::path::Path::new(name);
    if must_be_new && path.exists() {
        anyhow::bail!("{name} exists: the target of a migration must be a new file");
    }
    Ok(crate::migrate::open(path, config.cache_size_bytes())?)
}

fn migrate_data(config: &Config, from: &str, to: &str) -> anyhow::Result<()> {
    use crate::store::transfer;
    use std::io::Write;
    let source = open_named(config, from, false)?;
    let target = open_named(config, to, true)?;
    let snapshot = source.read()?;
    let want = transfer::count_all(&snapshot)?;
    let total: u64 = want.values().sum();
    let mut stderr = std::io::stderr();
    let copied = transfer::copy_all(&snapshot, &target, &mut |done| {
        let _ = write!(stderr, "\rmigrate: {done}/{total} rows");
        let _ = stderr.flush();
    })?;
    let _ = writeln!(stderr);
    let got = transfer::count_all(&*target.read()?)?;
    let differ = transfer::differences(&want, &got);
    if !differ.is_empty() {
        for (table, a, b) in &differ {
            eprintln!("migrate: table {table}: {a} rows in the source, {b} in the target");
        }
        anyhow::bail!("the copy is incomplete: {} tables differ", differ.len());
    }
    let report = crate::ledger::verify::verify(&*target.read()?, None, &mut |_, _| {})?;
    if let Some(v) = report.violation {
        anyhow::bail!("the target's ledger does not verify: {}", v.reason);
    }
    println!(
        "migrate: {} rows in {} tables copied from {} to {}; counts agree per table; the \
         ledger verifies ({} entries)",
        copied.values().sum::<u64>(),
        copied.len(),
        crate::config::redact_url_password(from),
        crate::config::redact_url_password(to),
        report.entries
    );
    Ok(())
}

fn restore(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    use crate::store::{backup as copy, restore as swap};
    if config.database_url.is_set() {
        anyhow::bail!(
            "restore replaces a redb file; to load a backup into PostgreSQL use `tally migrate \
             --from {} --to <database_url>`",
            file.display()
        );
    }
    let target = &config.database_path;
    let completion = copy::check_complete(file)?;
    // Held until the swap, so no daemon can start on the old file meanwhile. A file that does
    // not open at all (the reason to restore, perhaps) is kept aside all the same.
    let (_open, _locked) = match target.exists().then(|| open(config)) {
        None => (None, None),
        Some(Ok(store)) => (Some(store), None),
        Some(Err(e)) if in_use(&e) => return Err(e),
        Some(Err(e)) => {
            // Only a file nobody holds is replaced: a daemon that could still open it must not
            // lose the writes it acknowledges after the swap.
            let lock = std::fs::File::open(target).map_err(|io| {
                anyhow::anyhow!(
                    "restore: cannot check whether {} is in use: {io}",
                    target.display()
                )
            })?;
            if lock.try_lock().is_err() {
                return Err(anyhow::anyhow!(
                    "restore: {} is in use by another process (is `tally serve` running?)",
                    target.display()
                ));
            }
            eprintln!("restore: the current database does not open ({e:#}); replacing it");
            (None, Some(lock))
        }
    };
    let now_ms = crate::clock::now_ms();
    let staged = swap::stage(file, target, now_ms, swap::copy_all)?;
    let entries = match verify_staged(&staged) {
        Ok(entries) => entries,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    };
    if let Some(kept) = swap::swap_in(&staged, target, now_ms)? {
        eprintln!(
            "restore: the previous database is kept as {}",
            kept.display()
        );
    }
    println!(
        "restore: {} restored from {} ({} rows, complete); its ledger verifies ({entries} entries)",
        target.display(),
        file.display(),
        completion.total_rows()
    );
    Ok(())
}

/// Checks that the staged copy is the complete backup that was checked (the copy itself, not
/// only its source), then opens it as a database (migrating an older schema in place) and
/// verifies its ledger; returns the entries verified.
fn verify_staged(staged: &std::path::Path) -> anyhow::Result<u64> {
    crate::store::backup::check_complete(staged)?;
    let store = crate::migrate::open(staged, crate::server::OFFLINE_CACHE_SIZE_BYTES)
        .with_context(|| format!("{} is not a usable database", staged.display()))?;
    let report = crate::ledger::verify::verify(&*store.read()?, None, &mut |_, _| {})?;
    if let Some(v) = report.violation {
        anyhow::bail!("the backup does not verify: {}", v.reason);
    }
    Ok(report.entries)
}

fn reconcile(config: &Config, tenant: &str, from: &str, to: Option<&str>) -> anyhow::Result<()> {
    let now_ms = crate::clock::now_ms();
    let from_ms = crate::clock::parse_rfc3339(from)
        .ok_or_else(|| anyhow::anyhow!("--from is not RFC 3339"))?;
    let to_ms = match to {
        Some(t) => {
            crate::clock::parse_rfc3339(t).ok_or_else(|| anyhow::anyhow!("--to is not RFC 3339"))?
        }
        None => now_ms,
    };
    let store = std::sync::Arc::new(open(config)?);
    let tenant = {
        let tx = store.read()?;
        tenant_named(&tx, tenant)?
    };
    let psp = crate::server::provider(
        config,
        crate::payments::simulated::Backend::Store(std::sync::Arc::clone(&store)),
        &store,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let charges = runtime
        .block_on(crate::payments::worker::fetch_all(
            psp.as_ref(),
            tenant,
            from_ms,
            to_ms,
        ))
        .map_err(anyhow::Error::from)?;
    eprintln!("fetched {} provider records", charges.len());
    let reconciliation = crate::payments::reconcile::Reconciliation {
        id: crate::id::Id::generate_at(now_ms),
        tenant: tenant.0,
        from_ms,
        to_ms,
        status: "pending".into(),
        created_at_ms: now_ms,
        completed_at_ms: None,
        report: None,
        failure: None,
    };
    let done = store
        .apply_one(crate::payments::reconcile::ApplyNow {
            tenant,
            reconciliation,
            charges,
            dunning: config.payments.dunning(),
            now_ms,
        })?
        .ok_or_else(|| anyhow::anyhow!("the reconciliation record vanished"))?;
    let report = done.report.unwrap_or_default();
    println!(
        "reconciliation {}",
        done.id.display(crate::payments::reconcile::PREFIX)
    );
    for (name, items) in [
        ("matched", &report.matched),
        ("missing_internally", &report.missing_internally),
        ("missing_at_provider", &report.missing_at_provider),
        ("amount_mismatch", &report.amount_mismatch),
        ("status_mismatch", &report.status_mismatch),
    ] {
        println!("{name}: {}", items.len());
        for item in items.iter().filter(|_| name != "matched") {
            println!(
                "  {} {} {}{}",
                item.payment
                    .map(|p| p.display(crate::payments::payment::PREFIX))
                    .unwrap_or_default(),
                item.provider_id.clone().unwrap_or_default(),
                item.note,
                if item.resolved { " (resolved)" } else { "" }
            );
        }
    }
    Ok(())
}

/// Whether opening failed because a daemon holds the file.
fn in_use(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<crate::store::OpenError>(),
        Some(crate::store::OpenError::InUse(_))
    )
}

fn open(config: &Config) -> anyhow::Result<Store> {
    Ok(crate::migrate::open_configured(config)?)
}
