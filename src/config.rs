//! Configuration: a TOML file, overridden by `TALLY_*` environment variables, validated once at
//! start so that a bad setting stops the daemon with a message naming the key instead of
//! surfacing later as odd behaviour.
//!
//! Every key is documented in `config.example.toml` at the repository root; the defaults here are
//! the ones a bare `tally serve` uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a configuration could not be loaded; each variant names the offending key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or an override is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value parsed but is outside what Tally accepts.
    #[error("invalid configuration: `{key}` {reason}")]
    Invalid {
        /// The key, as `section.key`.
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

/// The whole configuration of one daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP API listens on; port 0 picks a free port (printed on stdout).
    pub listen: String,
    /// The one redb file holding everything; its folder is created if missing. Unused when
    /// `database_url` names a PostgreSQL database.
    pub database_path: PathBuf,
    /// `postgres://user:password@host:port/db` (several hosts allowed): keep everything in
    /// PostgreSQL, shared by every node pointed at it, instead of the redb file. Empty: redb.
    pub database_url: DatabaseUrl,
    /// Connections to PostgreSQL (only with `database_url`).
    pub postgres: PostgresConfig,
    /// Memory redb may use to cache database pages, in MiB: the largest fixed part of the
    /// daemon's footprint, traded against read speed on databases larger than it.
    pub cache_size_mib: u64,
    /// Logging.
    pub log: LogConfig,
    /// HTTP limits.
    pub http: HttpConfig,
    /// The group-committing writer.
    pub writer: WriterConfig,
    /// Idempotency-key retention.
    pub idempotency: IdempotencyConfig,
    /// Usage event ingest.
    pub ingest: IngestConfig,
    /// Ledger background work.
    pub ledger: LedgerConfig,
    /// Billing runs.
    pub billing: BillingConfig,
    /// The durable job queue.
    pub jobs: JobsConfig,
    /// Inbound webhooks.
    pub webhooks: WebhooksConfig,
    /// Payment collection.
    pub payments: PaymentsConfig,
    /// Outbound events: delivery to the tenants' event destinations.
    pub notifications: NotificationsConfig,
    /// The operator console at `/console`.
    pub console: ConsoleConfig,
}

/// A PostgreSQL connection URL. Its password never reaches a log: `Debug` redacts it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    /// Whether a PostgreSQL database is configured.
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    /// The URL with any password replaced, for messages.
    pub fn redacted(&self) -> String {
        redact_url_password(&self.0)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Replaces the password of `scheme://user:password@host…` (and `password=` parameters) with
/// `***`.
pub fn redact_url_password(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        if let Some(at) = out[rest_start..].find('@').map(|i| i + rest_start) {
            if let Some(colon) = out[rest_start..at].find(':').map(|i| i + rest_start) {
                out.replace_range(colon + 1..at, "***");
            }
        }
    }
    if let Some(start) = out.find("password=") {
        let value_start = start + "password=".len();
        let end = out[value_start..]
            .find('&')
            .map_or(out.len(), |i| i + value_start);
        out.replace_range(value_start..end, "***");
    }
    out
}

/// Connections to PostgreSQL when `database_url` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Most connections this node opens: one for the writer, the rest for reads.
    pub pool_size: u64,
    /// How long connecting may take before the server counts as unreachable.
    pub connect_timeout_ms: u64,
    /// How long a read waits for a free pooled connection before it is answered 503
    /// `unavailable` (every connection busy means the node is overloaded or the server slow).
    pub pool_wait_ms: u64,
    /// PEM file with the certificate authorities trusted for TLS (`sslmode=require` in the URL);
    /// empty: the bundled web roots.
    pub ca_file: PathBuf,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout_ms: 5_000,
            pool_wait_ms: 5_000,
            ca_file: PathBuf::new(),
        }
    }
}

/// The operator console: server-rendered pages for the people who run billing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve `/console` (off: every console path is 404 and no session exists).
    pub enabled: bool,
    /// A session unused for this long ends; the next page asks to sign in again.
    pub session_idle_secs: u64,
    /// Sessions held at once (in memory); signing in beyond it ends the least recently used.
    pub max_sessions: u64,
    /// Mark the session cookie `Secure` always. Without it the cookie is `Secure` only when the
    /// request arrived over TLS at a proxy that says so (`X-Forwarded-Proto: https`).
    pub secure_cookie: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_idle_secs: 3600,
            max_sessions: 1000,
            secure_cookie: false,
        }
    }
}

/// Which provider collects payments, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    /// `simulated` (a development PSP inside the daemon) or `stripe`.
    pub provider: String,
    /// Create a payment attempt for every finalized invoice with an amount due.
    pub auto_collect: bool,
    /// Days between a declined attempt and the next; after the last, the invoice is
    /// uncollectible.
    pub dunning_retry_days: Vec<u64>,
    /// Stripe settings.
    pub stripe: StripeConfig,
    /// Simulator settings.
    pub simulated: SimulatedConfig,
}

/// Stripe API access.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    /// API base URL.
    pub base_url: String,
    /// Secret key (`sk_…`); prefer `TALLY_PAYMENTS_STRIPE_SECRET_KEY`.
    pub secret_key: String,
    /// Per-request timeout.
    pub timeout_ms: u64,
}

impl std::fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log line.
        f.debug_struct("StripeConfig")
            .field("base_url", &self.base_url)
            .field("secret_key", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// The simulated PSP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedConfig {
    /// Outcome of charges without a `sim_*` payment method: `succeed`, `decline`,
    /// `timeout_after_charge`, `error` or `requires_action`.
    pub outcome: String,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            provider: "simulated".into(),
            auto_collect: false,
            dunning_retry_days: vec![3, 5, 7],
            stripe: StripeConfig::default(),
            simulated: SimulatedConfig::default(),
        }
    }
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.stripe.com".into(),
            secret_key: String::new(),
            timeout_ms: 10_000,
        }
    }
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        Self {
            outcome: "succeed".into(),
        }
    }
}

impl PaymentsConfig {
    /// The dunning schedule.
    pub fn dunning(&self) -> crate::payments::payment::Dunning {
        crate::payments::payment::Dunning {
            retry_delays_ms: self
                .dunning_retry_days
                .iter()
                .map(|d| i64::try_from(d.saturating_mul(86_400_000)).unwrap_or(i64::MAX))
                .collect(),
        }
    }

    /// The provider's name as a static string.
    pub fn provider_name(&self) -> &'static str {
        if self.provider == "stripe" {
            "stripe"
        } else {
            "simulated"
        }
    }
}

/// Workers and retries of the job queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Jobs processed at once.
    pub workers: u64,
    /// Attempts before a job becomes a dead letter.
    pub max_attempts: u64,
    /// First retry delay; doubles per attempt (plus up to 50 % jitter).
    pub backoff_base_ms: u64,
    /// Longest retry delay.
    pub backoff_max_ms: u64,
    /// How long a worker holds a job; a crashed worker's job is retried after this.
    pub lease_ms: u64,
    /// How often idle workers look for due jobs.
    pub poll_interval_ms: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            max_attempts: 8,
            backoff_base_ms: 1000,
            backoff_max_ms: 3_600_000,
            lease_ms: 30_000,
            poll_interval_ms: 250,
        }
    }
}

/// The webhook trust gate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Signed timestamps further than this from now (either way) are refused.
    pub tolerance_secs: u64,
    /// How long a rotated-out secret stays valid.
    pub rotation_overlap_secs: u64,
    /// Deliveries without a provider event id are one event when their bodies are equal within
    /// this window.
    pub derived_window_secs: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            tolerance_secs: 300,
            rotation_overlap_secs: 86_400,
            derived_window_secs: 86_400,
        }
    }
}

/// Delivery of outbound events to event destinations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Accept `http://` destination URLs (otherwise only `https://`).
    pub allow_http: bool,
    /// Accept destinations resolving to loopback, private, link-local, unique-local or metadata
    /// addresses (refused otherwise, at creation and at every delivery).
    pub allow_private_targets: bool,
    /// Connect timeout of one delivery.
    pub connect_timeout_ms: u64,
    /// Total timeout of one delivery, response included.
    pub timeout_ms: u64,
    /// Delay before each attempt (its length is the number of attempts; the first attempt is
    /// due at once, at the commit); after the last failure the delivery is a dead letter.
    pub retry_schedule_secs: Vec<u64>,
    /// Deliveries to one destination in flight at once.
    pub max_in_flight_per_destination: u64,
    /// Deliveries in flight at once, over all destinations. They run beside the job workers,
    /// never in their place, so receivers never hold up other jobs.
    pub max_concurrent_deliveries: u64,
    /// A destination whose every delivery failed for this long is disabled.
    pub disable_after_secs: u64,
    /// How long a rotated-out destination secret keeps signing beside the new one.
    pub rotation_overlap_secs: u64,
    /// Notifications older than this many days are deleted with their delivery rows once
    /// every delivery is finished (a live one stays until it is).
    pub retention_days: u64,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            allow_http: false,
            allow_private_targets: false,
            connect_timeout_ms: 5000,
            timeout_ms: 15_000,
            retry_schedule_secs: vec![0, 5, 300, 1800, 7200, 18_000, 36_000, 36_000],
            max_in_flight_per_destination: 4,
            max_concurrent_deliveries: 64,
            disable_after_secs: 432_000,
            rotation_overlap_secs: 86_400,
            retention_days: 30,
        }
    }
}

impl NotificationsConfig {
    /// Notifications recorded before this instant may be deleted (see `retention_days`).
    pub fn retention_cutoff_ms(&self, now_ms: i64) -> i64 {
        let days = i64::try_from(self.retention_days).unwrap_or(i64::MAX);
        now_ms.saturating_sub(days.saturating_mul(86_400_000))
    }
}

/// When periods close.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// A period closes into an invoice once its end plus this grace window has passed, so usage
    /// that arrives a little late still lands on the period's own invoice.
    pub grace_secs: u64,
    /// How often the scheduler runs billing for every tenant; 0 disables it (runs only through
    /// `POST /v1/billing-runs`).
    pub scheduler_interval_ms: u64,
    /// Most periods a billing run closes (or finds invoiced) in one write transaction; a run
    /// with more continues in further transactions, so it never holds the writer for long.
    pub run_chunk_periods: u64,
    /// How far before now a subscription may start: bounds the backlog of periods one
    /// subscription can bring.
    pub max_start_backdate_secs: u64,
    /// How far after now a subscription may start.
    pub max_start_ahead_secs: u64,
    /// `subscription.trial_will_end` is recorded this long before a trial ends (by the billing
    /// run that first finds it due).
    pub trial_notice_secs: u64,
    /// Progressive billing issues at most one interim invoice per subscription in this window
    /// (a crossing inside it waits for the customer's next usage after it, or for the period's
    /// invoice), which bounds how often the ingest path computes an invoice from the events.
    pub interim_min_interval_secs: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            grace_secs: 3600,
            scheduler_interval_ms: 60_000,
            run_chunk_periods: 100,
            max_start_backdate_secs: 366 * 86_400,
            max_start_ahead_secs: 5 * 366 * 86_400,
            trial_notice_secs: 3 * 86_400,
            interim_min_interval_secs: 300,
        }
    }
}

/// The credit-expiry task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// How often expired credit grants are looked for.
    pub expiry_interval_ms: u64,
    /// Most grants expired per write transaction.
    pub expiry_batch_size: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            expiry_interval_ms: 10_000,
            expiry_batch_size: 500,
        }
    }
}

/// Limits and identity rules of event ingest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Most events in one request.
    pub max_batch_events: u64,
    /// How far in the future an event's timestamp may lie (clock skew allowance).
    pub max_future_secs: u64,
    /// How far in the past an event's timestamp may lie (the backdating limit).
    pub max_backdate_secs: u64,
    /// Events without an id whose payloads are equal and whose timestamps lie within this window
    /// of each other are one event.
    pub dedupe_window_secs: u64,
    /// Per-source overrides of `dedupe_window_secs`.
    pub source_dedupe_window_secs: std::collections::BTreeMap<String, u64>,
    /// Stored events a new meter's backfill examines per transaction (the first chunk in the
    /// creating request, the rest in the background), so no backfill holds the writer long.
    pub backfill_chunk_events: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch_events: 1000,
            max_future_secs: 300,
            max_backdate_secs: 35 * 24 * 3600,
            dedupe_window_secs: 60,
            source_dedupe_window_secs: std::collections::BTreeMap::new(),
            backfill_chunk_events: crate::ingest::backfill::DEFAULT_CHUNK_EVENTS,
        }
    }
}

impl Config {
    /// The shortest time between two interim invoices of a subscription, in ms.
    pub fn interim_min_interval_ms(&self) -> i64 {
        i64::try_from(self.billing.interim_min_interval_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX)
    }

    /// The billing policy derived from the configuration.
    pub fn billing_policy(&self) -> crate::billing::run::Policy {
        crate::billing::run::Policy {
            grace_ms: i64::try_from(self.billing.grace_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            adjust_window_ms: i64::try_from(self.ingest.max_backdate_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            auto_collect: self
                .payments
                .auto_collect
                .then(|| self.payments.provider_name()),
            chunk_periods: self.billing.run_chunk_periods,
            trial_notice_ms: i64::try_from(self.billing.trial_notice_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        }
    }
}

impl JobsConfig {
    /// The pool settings.
    pub fn pool(&self) -> crate::jobs::worker::PoolConfig {
        crate::jobs::worker::PoolConfig {
            workers: usize::try_from(self.workers).unwrap_or(4),
            lease_ms: i64::try_from(self.lease_ms).unwrap_or(30_000),
            poll_interval: std::time::Duration::from_millis(self.poll_interval_ms),
            retry: crate::jobs::RetryPolicy {
                max_attempts: u32::try_from(self.max_attempts).unwrap_or(8),
                base_ms: i64::try_from(self.backoff_base_ms).unwrap_or(1000),
                max_ms: i64::try_from(self.backoff_max_ms).unwrap_or(3_600_000),
            },
            on_dead: None,
        }
    }
}

impl IngestConfig {
    /// The derived-identity window of a source, in milliseconds.
    pub fn window_ms(&self, source: &str) -> i64 {
        let secs = self
            .source_dedupe_window_secs
            .get(source)
            .copied()
            .unwrap_or(self.dedupe_window_secs);
        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// The oldest derived-identity bucket an event accepted at `now_ms` can still be looked up
    /// in: its timestamp is at most `max_backdate_secs` old and the lookup reaches one window
    /// further on each side, with a day of margin for a clock that steps back. Older buckets can
    /// never match again and are purged.
    pub fn derived_identity_horizon_ms(&self, now_ms: i64) -> i64 {
        const MARGIN_MS: i64 = 24 * 3600 * 1000;
        let widest_secs = self
            .source_dedupe_window_secs
            .values()
            .copied()
            .fold(self.dedupe_window_secs, u64::max);
        let reach_ms = self
            .max_backdate_secs
            .saturating_add(widest_secs.saturating_mul(2))
            .saturating_mul(1000);
        now_ms
            .saturating_sub(i64::try_from(reach_ms).unwrap_or(i64::MAX))
            .saturating_sub(MARGIN_MS)
    }
}

/// How logs are written (always to stderr; stdout is reserved for the first-start key and the
/// listen address).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` for terminals, `json` for log shippers.
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `tally=debug,info`.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    Human,
    /// One JSON object per line.
    Json,
}

/// Limits on what a client may send.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body; larger bodies get 413 before any parsing.
    pub body_limit_bytes: u64,
}

/// Bounds of the single writer that owns every write transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// Commands that may wait for the writer; when full, requests get 503 `overloaded`.
    pub queue_capacity: u64,
    /// Most commands committed together in one transaction (one fsync).
    pub max_batch_size: u64,
    /// How long the writer may wait for a batch to fill once it has one command; 0 commits
    /// whatever is waiting at once (batches still form while the previous commit syncs).
    pub max_batch_wait_us: u64,
}

/// How long idempotency keys are remembered and how they are purged.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// How long a completed request's key and response are kept (API contract: at least 24 h).
    pub retention_secs: u64,
    /// How often the purge task looks for expired keys and derived identities past their horizon.
    pub purge_interval_ms: u64,
    /// Most rows deleted per write transaction, so purging never stalls the writer.
    pub purge_batch_size: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: String::from("127.0.0.1:7070"),
            database_path: PathBuf::from("./data/tally.redb"),
            database_url: DatabaseUrl::default(),
            postgres: PostgresConfig::default(),
            cache_size_mib: 32,
            log: LogConfig::default(),
            http: HttpConfig::default(),
            writer: WriterConfig::default(),
            idempotency: IdempotencyConfig::default(),
            ingest: IngestConfig::default(),
            ledger: LedgerConfig::default(),
            billing: BillingConfig::default(),
            jobs: JobsConfig::default(),
            webhooks: WebhooksConfig::default(),
            payments: PaymentsConfig::default(),
            notifications: NotificationsConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: String::from("info"),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
        }
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 4096,
            max_batch_size: 512,
            max_batch_wait_us: 0,
        }
    }
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            retention_secs: 72 * 3600,
            purge_interval_ms: 60_000,
            purge_batch_size: 1000,
        }
    }
}

/// The API contract promises at least this much idempotency retention; shorter is allowed for
/// tests and logged as a warning.
pub const CONTRACT_MIN_RETENTION_SECS: u64 = 24 * 3600;

impl Config {
    /// Loads the file (if any), applies `TALLY_*` overrides from `env`, and validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        apply_env_overrides(&mut table, env)?;
        let config: Config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges that the types alone cannot express.
    /// The page cache size in bytes, as redb takes it.
    pub fn cache_size_bytes(&self) -> usize {
        usize::try_from(self.cache_size_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }

    /// Checks every value's range; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &'static str, reason: &str) -> ConfigError {
            ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            }
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(bad("listen", "must be an address such as 127.0.0.1:7070"));
        }
        if self.database_path.as_os_str().is_empty() {
            return Err(bad("database_path", "must not be empty"));
        }
        if !(4..=65_536).contains(&self.cache_size_mib) {
            return Err(bad("cache_size_mib", "must be between 4 and 65536"));
        }
        if self.database_url.is_set()
            && !(self.database_url.0.starts_with("postgres://")
                || self.database_url.0.starts_with("postgresql://"))
        {
            return Err(bad(
                "database_url",
                "must start with postgres:// or postgresql:// (or be empty for the redb file)",
            ));
        }
        if !(2..=1_024).contains(&self.postgres.pool_size) {
            return Err(bad("postgres.pool_size", "must be between 2 and 1024"));
        }
        if !(100..=600_000).contains(&self.postgres.connect_timeout_ms) {
            return Err(bad(
                "postgres.connect_timeout_ms",
                "must be between 100 and 600000",
            ));
        }
        if !(1..=600_000).contains(&self.postgres.pool_wait_ms) {
            return Err(bad("postgres.pool_wait_ms", "must be between 1 and 600000"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(bad("log.level", "is not a valid filter such as `info`"));
        }
        if !(1..=30 * 86_400).contains(&self.console.session_idle_secs) {
            return Err(bad(
                "console.session_idle_secs",
                "must be between 1 and 2592000 (30 days)",
            ));
        }
        if !(1..=100_000).contains(&self.console.max_sessions) {
            return Err(bad("console.max_sessions", "must be between 1 and 100000"));
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.http.body_limit_bytes) {
            return Err(bad(
                "http.body_limit_bytes",
                "must be between 1 KiB and 256 MiB",
            ));
        }
        if !(1..=1_000_000).contains(&self.writer.queue_capacity) {
            return Err(bad(
                "writer.queue_capacity",
                "must be between 1 and 1000000",
            ));
        }
        if !(1..=100_000).contains(&self.writer.max_batch_size) {
            return Err(bad("writer.max_batch_size", "must be between 1 and 100000"));
        }
        if self.writer.max_batch_wait_us > 1_000_000 {
            return Err(bad(
                "writer.max_batch_wait_us",
                "must be at most 1000000 (1 s)",
            ));
        }
        if self.idempotency.retention_secs == 0 {
            return Err(bad("idempotency.retention_secs", "must be at least 1"));
        }
        if self.idempotency.purge_interval_ms == 0 {
            return Err(bad("idempotency.purge_interval_ms", "must be at least 1"));
        }
        if !(1..=100_000).contains(&self.idempotency.purge_batch_size) {
            return Err(bad(
                "idempotency.purge_batch_size",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=100_000).contains(&self.ingest.max_batch_events) {
            return Err(bad(
                "ingest.max_batch_events",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=1_000_000).contains(&self.ingest.backfill_chunk_events) {
            return Err(bad(
                "ingest.backfill_chunk_events",
                "must be between 1 and 1000000",
            ));
        }
        if self.ingest.max_future_secs > 7 * 24 * 3600 {
            return Err(bad(
                "ingest.max_future_secs",
                "must be at most 604800 (7 days)",
            ));
        }
        if !(60..=10 * 366 * 24 * 3600).contains(&self.ingest.max_backdate_secs) {
            return Err(bad(
                "ingest.max_backdate_secs",
                "must be between 60 and 316224000 (10 years)",
            ));
        }
        if !(1..=86_400).contains(&self.ingest.dedupe_window_secs)
            || self
                .ingest
                .source_dedupe_window_secs
                .values()
                .any(|w| !(1..=86_400).contains(w))
        {
            return Err(bad(
                "ingest.dedupe_window_secs",
                "windows must be between 1 and 86400 seconds",
            ));
        }
        if self.billing.grace_secs > 31 * 24 * 3600 {
            return Err(bad(
                "billing.grace_secs",
                "must be at most 2678400 (31 days)",
            ));
        }
        if !(1..=100_000).contains(&self.billing.run_chunk_periods) {
            return Err(bad(
                "billing.run_chunk_periods",
                "must be between 1 and 100000",
            ));
        }
        if self.billing.max_start_backdate_secs > 10 * 366 * 24 * 3600 {
            return Err(bad(
                "billing.max_start_backdate_secs",
                "must be at most 316224000 (10 years)",
            ));
        }
        if self.billing.max_start_ahead_secs > 10 * 366 * 24 * 3600 {
            return Err(bad(
                "billing.max_start_ahead_secs",
                "must be at most 316224000 (10 years)",
            ));
        }
        if self.billing.trial_notice_secs > 366 * 24 * 3600 {
            return Err(bad(
                "billing.trial_notice_secs",
                "must be at most 31622400 (366 days)",
            ));
        }
        if self.billing.interim_min_interval_secs > 31 * 24 * 3600 {
            return Err(bad(
                "billing.interim_min_interval_secs",
                "must be at most 2678400 (31 days)",
            ));
        }
        if !(1..=256).contains(&self.jobs.workers) {
            return Err(bad("jobs.workers", "must be between 1 and 256"));
        }
        if !(1..=100).contains(&self.jobs.max_attempts) {
            return Err(bad("jobs.max_attempts", "must be between 1 and 100"));
        }
        if self.jobs.backoff_base_ms == 0 || self.jobs.backoff_max_ms < self.jobs.backoff_base_ms {
            return Err(bad(
                "jobs.backoff_base_ms",
                "must be at least 1 and at most jobs.backoff_max_ms",
            ));
        }
        if !(100..=86_400_000).contains(&self.jobs.lease_ms) {
            return Err(bad("jobs.lease_ms", "must be between 100 and 86400000"));
        }
        if !(1..=60_000).contains(&self.jobs.poll_interval_ms) {
            return Err(bad("jobs.poll_interval_ms", "must be between 1 and 60000"));
        }
        if !(1..=3600).contains(&self.webhooks.tolerance_secs) {
            return Err(bad(
                "webhooks.tolerance_secs",
                "must be between 1 and 3600 (0 would accept replays forever)",
            ));
        }
        if self.webhooks.derived_window_secs == 0 {
            return Err(bad("webhooks.derived_window_secs", "must be at least 1"));
        }
        if !["simulated", "stripe"].contains(&self.payments.provider.as_str()) {
            return Err(bad("payments.provider", "must be simulated or stripe"));
        }
        if self.payments.provider == "stripe" && self.payments.stripe.secret_key.is_empty() {
            return Err(bad(
                "payments.stripe.secret_key",
                "is required with provider stripe (or set TALLY_PAYMENTS_STRIPE_SECRET_KEY)",
            ));
        }
        if !(self.payments.stripe.base_url.starts_with("https://")
            || self.payments.stripe.base_url.starts_with("http://"))
        {
            return Err(bad("payments.stripe.base_url", "must be an http(s) URL"));
        }
        if !(100..=120_000).contains(&self.payments.stripe.timeout_ms) {
            return Err(bad(
                "payments.stripe.timeout_ms",
                "must be between 100 and 120000",
            ));
        }
        if crate::payments::simulated::SimOutcome::parse(&self.payments.simulated.outcome).is_none()
        {
            return Err(bad(
                "payments.simulated.outcome",
                "must be succeed, decline, timeout_after_charge, error or requires_action",
            ));
        }
        if self.payments.dunning_retry_days.len() > 20
            || self.payments.dunning_retry_days.iter().any(|d| *d > 365)
        {
            return Err(bad(
                "payments.dunning_retry_days",
                "at most 20 retries of at most 365 days each",
            ));
        }
        self.validate_notifications()?;
        if self.ledger.expiry_interval_ms == 0 {
            return Err(bad("ledger.expiry_interval_ms", "must be at least 1"));
        }
        if !(1..=100_000).contains(&self.ledger.expiry_batch_size) {
            return Err(bad(
                "ledger.expiry_batch_size",
                "must be between 1 and 100000",
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_notifications(&self) -> Result<(), ConfigError> {
        let n = &self.notifications;
        let bad = |key: &'static str, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        if !(100..=60_000).contains(&n.connect_timeout_ms) {
            return Err(bad(
                "notifications.connect_timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        if !(100..=120_000).contains(&n.timeout_ms) || n.timeout_ms < n.connect_timeout_ms {
            return Err(bad(
                "notifications.timeout_ms",
                "must be between 100 and 120000 and at least connect_timeout_ms",
            ));
        }
        // A delivery must end (connected or not) before its job's lease does: otherwise the
        // lease expires mid-call and a second worker delivers the same notification at once.
        if n.timeout_ms >= self.jobs.lease_ms {
            return Err(bad(
                "notifications.timeout_ms",
                "must be below jobs.lease_ms (with notifications.connect_timeout_ms, which it bounds): a delivery still running when its job's lease expires is delivered again by a second worker at the same time; lower notifications.timeout_ms or raise jobs.lease_ms",
            ));
        }
        if n.retry_schedule_secs.is_empty()
            || n.retry_schedule_secs.len() > 30
            || n.retry_schedule_secs.iter().any(|s| *s > 7 * 86_400)
        {
            return Err(bad(
                "notifications.retry_schedule_secs",
                "must list 1 to 30 delays of at most 604800 seconds each",
            ));
        }
        if !(1..=64).contains(&n.max_in_flight_per_destination) {
            return Err(bad(
                "notifications.max_in_flight_per_destination",
                "must be between 1 and 64",
            ));
        }
        if !(1..=1024).contains(&n.max_concurrent_deliveries) {
            return Err(bad(
                "notifications.max_concurrent_deliveries",
                "must be between 1 and 1024",
            ));
        }
        if n.disable_after_secs == 0 {
            return Err(bad(
                "notifications.disable_after_secs",
                "must be at least 1",
            ));
        }
        if !(1..=3650).contains(&n.retention_days) {
            return Err(bad(
                "notifications.retention_days",
                "must be between 1 and 3650",
            ));
        }
        if n.rotation_overlap_secs > 30 * 86_400 {
            return Err(bad(
                "notifications.rotation_overlap_secs",
                "must be at most 2592000 (30 days)",
            ));
        }
        Ok(())
    }
}

/// Overlays `TALLY_<SECTION>_<KEY>` variables onto the parsed file. The set of names is derived
/// from the defaults, so every key has exactly one variable. An unknown `TALLY_*` variable that
/// looks like a setting (see [`env_rule`]) is an error rather than a silently ignored typo; any
/// other `TALLY_*` name (`TALLY_KEY`, `TALLY_URL`: what client tools use) is not ours and is
/// left alone.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let known = env_settings()?;
    for (name, raw) in env {
        let path = match env_rule(&name, &known) {
            EnvRule::Setting(path) => path,
            EnvRule::NotOurs | EnvRule::Foreign => continue,
            EnvRule::Typo(hint) => {
                return Err(ConfigError::Parse(format!(
                    "unknown environment variable {name}: no such configuration key{hint}"
                )))
            }
        };
        let value = parse_env_value(&raw);
        let mut cursor = &mut *table;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cursor.insert(part.clone(), value.clone());
            } else {
                let entry = cursor
                    .entry(part.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                cursor = match entry {
                    toml::Value::Table(t) => t,
                    _ => {
                        return Err(ConfigError::Parse(format!(
                            "`{part}` must be a table to apply {name}"
                        )))
                    }
                };
            }
        }
    }
    Ok(())
}

/// Every setting's variable suffix (`IDEMPOTENCY_RETENTION_SECS`) with its key path.
fn env_settings() -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let defaults =
        toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Parse(e.to_string()))?;
    let mut known = Vec::new();
    collect_paths(&defaults, &mut Vec::new(), &mut known);
    Ok(known)
}

/// What an environment variable is to the configuration.
#[derive(Debug, PartialEq, Eq)]
enum EnvRule {
    /// Not a `TALLY_` name (or `TALLY_CONFIG`, which the CLI reads).
    NotOurs,
    /// A setting, with its key path.
    Setting(Vec<String>),
    /// Looks like a mistyped setting: within two edits of one, or inside a section's prefix
    /// (`TALLY_WRITER_…`). Carries a "did you mean" hint.
    Typo(String),
    /// A `TALLY_` name unlike any setting, such as a client tool's `TALLY_KEY` or `TALLY_URL`.
    Foreign,
}

/// Classifies one variable name against the settings (see [`EnvRule`]).
fn env_rule(name: &str, known: &[(String, Vec<String>)]) -> EnvRule {
    let Some(suffix) = name.strip_prefix("TALLY_") else {
        return EnvRule::NotOurs;
    };
    if suffix == "CONFIG" {
        return EnvRule::NotOurs;
    }
    if let Some((_, path)) = known.iter().find(|(var, _)| var == suffix) {
        return EnvRule::Setting(path.clone());
    }
    let nearest = known
        .iter()
        .map(|(var, _)| (edit_distance(var, suffix), var))
        .min();
    if let Some((distance, var)) = nearest {
        if distance <= 2 {
            return EnvRule::Typo(format!(" (did you mean TALLY_{var}?)"));
        }
    }
    let in_section = known
        .iter()
        .filter(|(_, path)| path.len() > 1)
        .any(|(_, path)| {
            let section = path[0].to_uppercase();
            suffix == section || suffix.starts_with(&format!("{section}_"))
        });
    if in_section {
        return EnvRule::Typo(String::new());
    }
    EnvRule::Foreign
}

/// `TALLY_*` variables in `env` that are not settings and are ignored (names only: values
/// may be secrets), so the daemon can log them once logging is up.
pub fn foreign_env_names(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let Ok(known) = env_settings() else {
        return Vec::new();
    };
    env.into_iter()
        .map(|(name, _)| name)
        .filter(|name| env_rule(name, &known) == EnvRule::Foreign)
        .collect()
}

/// Levenshtein distance over bytes (setting names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn collect_paths(
    table: &toml::Table,
    prefix: &mut Vec<String>,
    out: &mut Vec<(String, Vec<String>)>,
) {
    for (key, value) in table {
        prefix.push(key.clone());
        if let toml::Value::Table(inner) = value {
            collect_paths(inner, prefix, out);
        } else {
            out.push((prefix.join("_").to_uppercase(), prefix.clone()));
        }
        prefix.pop();
    }
}

/// Environment values are strings; numbers and booleans are recognised so that typed keys
/// deserialize, everything else stays a string.
fn parse_env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, Vec::new()).expect("defaults load");
        assert_eq!(c.listen, "127.0.0.1:7070");
        assert_eq!(c.idempotency.retention_secs, 259_200);
    }

    #[test]
    fn env_overrides_nested_keys() {
        let c = Config::load(
            None,
            env(&[
                ("TALLY_IDEMPOTENCY_RETENTION_SECS", "2"),
                ("TALLY_LISTEN", "127.0.0.1:0"),
                ("PATH", "/bin"),
            ]),
        )
        .expect("loads");
        assert_eq!(c.idempotency.retention_secs, 2);
        assert_eq!(c.listen, "127.0.0.1:0");
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[writer]\nmax_batch = 3\n").expect("write");
        let err = Config::load(Some(&path), Vec::new()).expect_err("must fail");
        assert!(err.to_string().contains("max_batch"), "{err}");
        let err = Config::load(None, env(&[("TALLY_WRITER_NOPE", "1")])).expect_err("must fail");
        assert!(err.to_string().contains("TALLY_WRITER_NOPE"), "{err}");
    }

    #[test]
    fn client_tool_variables_are_not_settings_but_typos_are_refused() {
        let clients = env(&[
            ("TALLY_KEY", "tally_sk_x"),
            ("TALLY_URL", "http://127.0.0.1:7070"),
            ("TALLY_API_KEY", "tally_sk_x"),
        ]);
        Config::load(None, clients.clone()).expect("client variables are not ours");
        assert_eq!(
            foreign_env_names(clients),
            ["TALLY_KEY", "TALLY_URL", "TALLY_API_KEY"]
        );
        for typo in [
            "TALLY_LISTN",
            "TALLY_DATABSE_PATH",
            "TALLY_CACHE_SIZE_MB",
            "TALLY_PAYMENTS_STRIPE_SECRET",
            "TALLY_LOG",
        ] {
            let err = Config::load(None, env(&[(typo, "1")])).expect_err(typo);
            assert!(err.to_string().contains(typo), "{err}");
        }
        let err = Config::load(None, env(&[("TALLY_LISTN", "x")])).expect_err("typo");
        assert!(
            err.to_string().contains("did you mean TALLY_LISTEN"),
            "{err}"
        );
        assert!(foreign_env_names(env(&[("TALLY_LISTEN", "x"), ("HOME", "/")])).is_empty());
    }

    #[test]
    fn out_of_range_values_are_named() {
        let err = Config::load(None, env(&[("TALLY_WRITER_MAX_BATCH_SIZE", "0")]))
            .expect_err("must fail");
        assert!(err.to_string().contains("writer.max_batch_size"), "{err}");
        let err = Config::load(
            None,
            env(&[("TALLY_NOTIFICATIONS_MAX_IN_FLIGHT_PER_DESTINATION", "0")]),
        )
        .expect_err("must fail");
        assert!(
            err.to_string()
                .contains("notifications.max_in_flight_per_destination"),
            "{err}"
        );
        let err = Config::load(None, env(&[("TALLY_NOTIFICATIONS_TIMEOUT_MS", "50")]))
            .expect_err("must fail");
        assert!(
            err.to_string().contains("notifications.timeout_ms"),
            "{err}"
        );
        for (name, value, key) in [
            ("TALLY_POSTGRES_POOL_SIZE", "1", "postgres.pool_size"),
            (
                "TALLY_POSTGRES_CONNECT_TIMEOUT_MS",
                "99",
                "postgres.connect_timeout_ms",
            ),
            ("TALLY_POSTGRES_POOL_WAIT_MS", "0", "postgres.pool_wait_ms"),
            (
                "TALLY_POSTGRES_POOL_WAIT_MS",
                "600001",
                "postgres.pool_wait_ms",
            ),
        ] {
            let err = Config::load(None, env(&[(name, value)])).expect_err("must fail");
            assert!(err.to_string().contains(key), "{name}={value}: {err}");
        }
    }
}

#[cfg(test)]
mod lease_tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A delivery that outlives its job's lease would be delivered by a second worker at once.
    #[test]
    fn a_delivery_timeout_at_or_above_the_job_lease_is_refused_naming_both() {
        for (lease, timeout, connect) in [("15000", "15000", "5000"), ("2000", "15000", "5000")] {
            let err = Config::load(
                None,
                env(&[
                    ("TALLY_JOBS_LEASE_MS", lease),
                    ("TALLY_NOTIFICATIONS_TIMEOUT_MS", timeout),
                    ("TALLY_NOTIFICATIONS_CONNECT_TIMEOUT_MS", connect),
                ]),
            )
            .expect_err("refused");
            let text = err.to_string();
            assert!(text.contains("notifications.timeout_ms"), "{text}");
            assert!(text.contains("jobs.lease_ms"), "{text}");
            assert!(text.contains("notifications.connect_timeout_ms"), "{text}");
        }
        let config = Config::load(
            None,
            env(&[
                ("TALLY_JOBS_LEASE_MS", "2000"),
                ("TALLY_NOTIFICATIONS_TIMEOUT_MS", "1999"),
                ("TALLY_NOTIFICATIONS_CONNECT_TIMEOUT_MS", "500"),
            ]),
        )
        .expect("a timeout below the lease is accepted");
        assert!(config.notifications.timeout_ms < config.jobs.lease_ms);
        let defaults = Config::default();
        assert!(defaults.notifications.timeout_ms < defaults.jobs.lease_ms);
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// `config.example.toml` documents every key, with its default value.
    #[test]
    fn the_example_file_is_complete_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let text = std::fs::read_to_string(&path).expect("config.example.toml exists");
        let file: toml::Table = toml::from_str(&text).expect("valid toml");
        let defaults = toml::Table::try_from(Config::default()).expect("defaults");
        let mut in_file = Vec::new();
        collect_paths(&file, &mut Vec::new(), &mut in_file);
        let mut expected = Vec::new();
        collect_paths(&defaults, &mut Vec::new(), &mut expected);
        let names = |v: &Vec<(String, Vec<String>)>| {
            let mut n: Vec<String> = v.iter().map(|(name, _)| name.clone()).collect();
            n.sort();
            n
        };
        assert_eq!(names(&in_file), names(&expected));
        assert_eq!(file, defaults, "the example shows the defaults");
        Config::load(Some(&path), Vec::new()).expect("the example loads");
    }

    #[test]
    fn database_url_passwords_never_show() {
        use super::{redact_url_password, DatabaseUrl};
        assert_eq!(
            redact_url_password("postgres://tally:s3cret@a:5432,b:5432/t?sslmode=require"),
            "postgres://tally:***@a:5432,b:5432/t?sslmode=require"
        );
        assert_eq!(
            redact_url_password("postgres://h/t?user=u&password=s3cret&sslmode=require"),
            "postgres://h/t?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url_password("postgres://tally@h/t"),
            "postgres://tally@h/t"
        );
        let shown = format!("{:?}", DatabaseUrl("postgres://u:s3cret@h/t".into()));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
