//! The PostgreSQL client underneath: the backend's own runtime, connecting (TLS, hosts tried in
//! order, read-write sessions only), blocking on client calls from any thread, statement caching
//! and the mapping of server errors to [`StoreError`].

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio_postgres::config::{Host, TargetSessionAttrs};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgOptions;
use crate::store::StoreError;

/// Waits for a client future from any thread: a tokio worker of a multi-thread runtime gives
/// its other tasks away first; elsewhere (the writer's thread, a current-thread runtime) it
/// simply blocks. Client futures only talk to their connection task through channels, so they
/// need no reactor of their own.
pub(crate) fn wait<F: Future>(future: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| futures_executor::block_on(future))
        }
        _ => futures_executor::block_on(future),
    }
}

/// The runtime every connection task runs on; shut down in the background when dropped so a
/// store may be dropped from inside another runtime.
pub(crate) struct Driver {
    runtime: Option<tokio::runtime::Runtime>,
    config: Config,
    tls: MakeRustlsConnect,
    timeout: Duration,
    /// `host:port, …/database` for messages: never the password.
    pub(crate) target: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Driver {
    /// Parses the URL, builds the TLS configuration and starts the runtime; connects nothing.
    pub(crate) fn new(options: &PgOptions) -> Result<Self, String> {
        let mut config = Config::from_str(&options.url)
            .map_err(|e| format!("invalid PostgreSQL URL: {}", one_line(&e)))?;
        if !options.url.contains("target_session_attrs") {
            // Of several hosts, only a primary takes writes: skip a standby.
            config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        let timeout = Duration::from_millis(options.connect_timeout_ms.max(1));
        config.connect_timeout(timeout);
        config.application_name("tally");
        let target = describe(&config);
        let tls = MakeRustlsConnect::new(tls_config(options.ca_file.as_deref())?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tally-pg")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the PostgreSQL client runtime: {e}"))?;
        Ok(Self {
            runtime: Some(runtime),
            config,
            tls,
            timeout,
            target,
        })
    }

    /// Opens one connection; its connection task runs on the driver's runtime.
    pub(crate) fn connect(&self, generation: u64) -> Result<Conn, String> {
        let Some(runtime) = self.runtime.as_ref() else {
            return Err("the PostgreSQL client is shut down".into());
        };
        let config = self.config.clone();
        let tls = self.tls.clone();
        let timeout = self.timeout;
        let handle = runtime.handle().clone();
        let task = runtime.spawn(async move {
            // The per-host timeout bounds each attempt; this bounds all hosts together.
            let attempt = tokio::time::timeout(timeout * 4, config.connect(tls)).await;
            match attempt {
                Ok(Ok((client, connection))) => {
                    handle.spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(error = %one_line(&error), "postgres connection ended");
                        }
                    });
                    Ok(client)
                }
                Ok(Err(e)) => Err(one_line(&e)),
                Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
            }
        });
        let client = match wait(task) {
            Ok(result) => result,
            Err(e) => Err(format!("the connect task failed: {e}")),
        }
        .map_err(|cause| format!("cannot connect to PostgreSQL at {}: {cause}", self.target))?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
            deferred_begin: None,
            generation,
            round_trips: 0,
        })
    }
}

/// Host and port list plus database name, for messages (the password never appears).
fn describe(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect::<Vec<_>>();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_string()
    } else {
        hosts.join(",")
    };
    match config.get_dbname() {
        Some(db) => format!("{hosts}/{db}"),
        None => hosts,
    }
}

fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::CertificateDer;
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("bad CA file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A request in a pipeline: sent without waiting for the answer to the one before.
type Request<'a> = Pin<Box<dyn Future<Output = Result<Reply, tokio_postgres::Error>> + Send + 'a>>;

/// What a request answered.
pub(crate) enum Reply {
    /// The rows of a query.
    Rows(Vec<Row>),
    /// A statement's changed-row count, or nothing for transaction control.
    Done,
}

/// A statement to pipeline with others: a prepared statement and its parameters, or
/// parameterless SQL (transaction control).
pub(crate) enum Step<'a> {
    /// Runs a prepared statement (see [`Conn::prepare`]).
    Execute(Statement, Vec<&'a (dyn ToSql + Sync)>),
    /// Runs parameterless statements.
    Simple(&'a str),
}

/// Polls every request in order until all have answered; requests are sent in order on their
/// first poll, so the server receives them back to back: one round trip for all.
async fn all_of<'a>(requests: Vec<Request<'a>>) -> Vec<Result<Reply, tokio_postgres::Error>> {
    let mut requests: Vec<(Request<'a>, Option<Result<Reply, tokio_postgres::Error>>)> =
        requests.into_iter().map(|r| (r, None)).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (request, answer) in requests.iter_mut() {
            if answer.is_none() {
                match request.as_mut().poll(cx) {
                    Poll::Ready(result) => *answer = Some(result),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            return Poll::Pending;
        }
        Poll::Ready(
            requests
                .iter_mut()
                .filter_map(|(_, answer)| answer.take())
                .collect(),
        )
    })
    .await
}

/// One connection with its prepared statements and a count of the round trips it made.
pub(crate) struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// A `BEGIN` not sent yet: it goes out in front of the transaction's first request, in the
    /// same round trip (a transaction that sends nothing costs nothing).
    deferred_begin: Option<&'static str>,
    /// Which generation of the pool made it; a reconnect retires older ones.
    pub(crate) generation: u64,
    /// Round trips to the server so far (prepares included).
    pub(crate) round_trips: u64,
}

impl Conn {
    /// Whether the server side is gone (such a connection is dropped, never reused).
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Begins a transaction with `begin`, sent with the first request that follows.
    pub(crate) fn begin(&mut self, begin: &'static str) {
        self.deferred_begin = Some(begin);
    }

    fn count_trip(&mut self) {
        self.round_trips += 1;
        metrics::counter!("tally_pg_round_trips_total").increment(1);
    }

    /// The statement for `sql`, prepared once per connection (the first time is a round trip).
    pub(crate) fn prepare(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        self.count_trip();
        let statement = wait(self.client.prepare(sql)).map_err(|e| store_error(&e))?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Sends `steps` (after a deferred `BEGIN`) in one round trip and returns each answer. A
    /// failure of the deferred `BEGIN` is the answer of every step.
    pub(crate) fn pipeline(&mut self, steps: Vec<Step<'_>>) -> Vec<Result<Reply, StoreError>> {
        if steps.is_empty() {
            return Vec::new();
        }
        self.count_trip();
        let begin = self.deferred_begin.take();
        let client = &self.client;
        let mut requests: Vec<Request<'_>> = Vec::with_capacity(steps.len() + 1);
        if let Some(begin) = begin {
            requests.push(Box::pin(async move {
                client.batch_execute(begin).await.map(|()| Reply::Done)
            }));
        }
        let count = steps.len();
        for step in steps {
            requests.push(match step {
                Step::Execute(statement, params) => Box::pin(async move {
                    if statement.columns().is_empty() {
                        client
                            .execute(&statement, &params)
                            .await
                            .map(|_| Reply::Done)
                    } else {
                        client.query(&statement, &params).await.map(Reply::Rows)
                    }
                }),
                Step::Simple(sql) => {
                    Box::pin(async move { client.batch_execute(sql).await.map(|()| Reply::Done) })
                }
            });
        }
        let mut answers = wait(all_of(requests));
        if begin.is_some() {
            let began = answers.remove(0);
            if let Err(e) = began {
                let error = store_error(&e);
                return (0..count)
                    .map(|_| Err(StoreError::Postgres(error.to_string())))
                    .collect();
            }
        }
        answers
            .into_iter()
            .map(|answer| answer.map_err(|e| store_error(&e)))
            .collect()
    }

    fn one(&mut self, step: Step<'_>) -> Result<Reply, StoreError> {
        self.pipeline(vec![step])
            .pop()
            .unwrap_or_else(|| Err(StoreError::Postgres("no answer".into())))
    }

    /// Runs a statement (prepared once per connection) and returns its rows.
    pub(crate) fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let statement = self.prepare(sql)?;
        match self.one(Step::Execute(statement, params.to_vec()))? {
            Reply::Rows(rows) => Ok(rows),
            Reply::Done => Ok(Vec::new()),
        }
    }

    /// Runs parameterless statements (transaction control, DDL) in one round trip.
    pub(crate) fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        self.one(Step::Simple(sql)).map(|_| ())
    }

    /// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`); nothing to send when its
    /// `BEGIN` never went out.
    pub(crate) fn end(&mut self, sql: &str) -> Result<(), StoreError> {
        if self.deferred_begin.take().is_some() {
            return Ok(());
        }
        self.batch(sql)
    }
}

/// A serialization failure or deadlock is a [`StoreError::Conflict`]; anything else is one line.
pub(crate) fn store_error(error: &tokio_postgres::Error) -> StoreError {
    match error.code() {
        Some(code)
            if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            StoreError::Conflict
        }
        _ => StoreError::Postgres(one_line(error)),
    }
}

/// The error and its causes on one line: the server's message for a database error.
pub(crate) fn one_line(error: &tokio_postgres::Error) -> String {
    let text = match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                let cause = cause.to_string();
                if !text.contains(&cause) {
                    text = format!("{text}: {cause}");
                }
                source = cause_of(source);
            }
            text
        }
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cause_of<'a>(
    error: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    error.and_then(std::error::Error::source)
}
