//! Starts the real `tally` binary on a temporary database and talks to it over HTTP.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tally");

/// How long `eventually` waits for a condition before failing the test.
const EVENTUALLY_S: u64 = 30;

/// A reply, with its body parsed when it is JSON.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
    pub json: Value,
}

impl Resp {
    /// Reads a whole response: status, headers, body and the body as JSON (null if it is not).
    pub async fn read(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.expect("body").to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            bytes,
            json,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    /// Asserts a problem+json error with this status and code.
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "status of {}",
            String::from_utf8_lossy(&self.bytes)
        );
        assert!(
            self.content_type().starts_with("application/problem+json"),
            "content type {} for {}",
            self.content_type(),
            String::from_utf8_lossy(&self.bytes)
        );
        assert_eq!(self.json["code"], code, "{}", self.json);
        assert_eq!(self.json["status"], status);
        assert!(self.json["type"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(self.json["title"].as_str().is_some());
        assert!(self.json["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(self.json["errors"].is_array());
    }

    /// The `errors[].field` values of a problem.
    pub fn fields(&self) -> Vec<String> {
        self.json["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A running daemon on its own temporary directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub base: String,
    pub key: String,
    pub client: reqwest::Client,
    child: Option<Child>,
}

fn base_config() -> toml::Table {
    toml::toml! {
        listen = "127.0.0.1:0"
        [log]
        level = "warn"
        [billing]
        scheduler_interval_ms = 0
        grace_secs = 0
        [jobs]
        poll_interval_ms = 20
        backoff_base_ms = 50
        backoff_max_ms = 400
        lease_ms = 2000
        [notifications]
        connect_timeout_ms = 500
        timeout_ms = 1500
        [ledger]
        expiry_interval_ms = 100
    }
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

impl Daemon {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts with extra TOML merged over the test defaults, on this test binary's backend.
    pub async fn start_with(extra: &str) -> Self {
        let database = crate::backend::postgres().then(crate::backend::fresh_database_url);
        Self::start_fresh(database, extra).await
    }

    /// Starts on an empty PostgreSQL database of the test's own choosing (its own cluster),
    /// with extra TOML merged over the test defaults.
    pub async fn start_on_database(url: &str, extra: &str) -> Self {
        Self::start_fresh(Some(url.to_string()), extra).await
    }

    /// Starts on a new redb file whichever backend this test binary runs on (for migrations).
    pub async fn start_redb() -> Self {
        Self::start_fresh(None, "").await
    }

    async fn start_fresh(database_url: Option<String>, extra: &str) -> Self {
        let mut daemon = Self::configure(database_url.as_deref(), None, extra);
        let key = daemon.spawn().await;
        daemon.key = key.expect("the first start prints the default tenant's key");
        daemon
    }

    /// Starts on a database that already holds its tenants (a migrated copy): a `postgres://`
    /// URL or a redb file, answering with `key`.
    pub async fn start_existing(database: &str, key: &str) -> Self {
        let (url, path) = if database.starts_with("postgres") {
            (Some(database), None)
        } else {
            (None, Some(database))
        };
        let mut daemon = Self::configure(url, path, "");
        daemon.key = key.to_string();
        let printed = daemon.spawn().await;
        assert!(printed.is_none(), "an existing database prints no key");
        daemon
    }

    fn configure(database_url: Option<&str>, database_path: Option<&str>, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = base_config();
        let path = database_path.map_or_else(
            || dir.path().join("tally.redb").display().to_string(),
            str::to_string,
        );
        config.insert("database_path".into(), toml::Value::String(path));
        if let Some(url) = database_url {
            config.insert("database_url".into(), toml::Value::String(url.to_string()));
        }
        merge(&mut config, toml::from_str(extra).expect("extra toml"));
        let config_path = dir.path().join("tally.toml");
        std::fs::write(&config_path, toml::to_string(&config).expect("toml"))
            .expect("write config");
        Daemon {
            dir,
            config_path,
            base: String::new(),
            key: String::new(),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
            child: None,
        }
    }

    /// Starts another node on this daemon's database (PostgreSQL only): the same configuration
    /// in a folder of its own, serving the same tenants with the same keys.
    pub async fn join(&self) -> Self {
        assert!(crate::backend::postgres(), "several nodes share PostgreSQL");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config: toml::Table =
            toml::from_str(&std::fs::read_to_string(&self.config_path).expect("config"))
                .expect("toml");
        config.insert(
            "database_path".into(),
            toml::Value::String(dir.path().join("tally.redb").display().to_string()),
        );
        let config_path = dir.path().join("tally.toml");
        std::fs::write(&config_path, toml::to_string(&config).expect("toml"))
            .expect("write config");
        let mut node = Daemon {
            dir,
            config_path,
            base: String::new(),
            key: self.key.clone(),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
            child: None,
        };
        let printed = node.spawn().await;
        assert!(printed.is_none(), "only the first node creates the tenant");
        node
    }

    /// Spawns the binary and waits for it to listen; returns the key if one was printed.
    async fn spawn(&mut self) -> Option<String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .expect("log file");
        let mut child = hermetic(Command::new(BIN))
            .args([
                "--config",
                self.config_path.to_str().expect("path"),
                "serve",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn tally");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(child);
        let mut key = None;
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("tally did not start: {}", self.stderr()));
            if let Some(k) = line.split("(shown once): ").nth(1) {
                key = Some(k.trim().to_string());
            }
            if let Some(addr) = line.strip_prefix("tally: listening on ") {
                self.base = addr.trim().to_string();
                return key;
            }
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Restarts on the same file (after a kill or a stop).
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        let printed = self.spawn().await;
        assert!(
            printed.is_none(),
            "the key must be printed only on the first start"
        );
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait (up to 15 s: a loaded CI machine drains slowly).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..600 {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Opens this daemon's database (its redb file or its PostgreSQL database) in-process, as
    /// an operator command would. On redb the daemon must be stopped first (the file is locked).
    pub fn open_store(&self) -> tally::store::Store {
        let config = tally::config::Config::load(Some(&self.config_path), std::iter::empty())
            .expect("config");
        tally::migrate::open_configured(&config).expect("open the database")
    }

    /// Runs the CLI against this daemon's configuration.
    pub fn cli(&self, args: &[&str]) -> Output {
        hermetic(Command::new(BIN))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .output()
            .expect("run cli")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        Resp::read(req.send().await.expect("request")).await
    }

    /// POST JSON with this tenant's key and an optional idempotency key.
    pub async fn post(&self, path: &str, idem: Option<&str>, body: &Value) -> Resp {
        self.post_as(&self.key, path, idem, body).await
    }

    pub async fn post_as(
        &self,
        api_key: &str,
        path: &str,
        idem: Option<&str>,
        body: &Value,
    ) -> Resp {
        let mut req = self
            .client
            .post(self.url(path))
            .bearer_auth(api_key)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).expect("json"));
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        self.send(req).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.get_as(&self.key, path).await
    }

    pub async fn get_as(&self, api_key: &str, path: &str) -> Resp {
        self.send(self.client.get(self.url(path)).bearer_auth(api_key))
            .await
    }

    /// Creates a customer and returns its id.
    pub async fn customer(&self, external_id: &str, currency: &str) -> String {
        let r = self
            .post(
                "/v1/customers",
                Some(&format!("cus-{external_id}")),
                &serde_json::json!({"external_id": external_id, "currency": currency}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json);
        r.json["id"].as_str().expect("id").to_string()
    }

    /// Reads a metric's value (sum over label sets) from /metrics.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Polls until `check` holds (bounded).
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        // Generous: on a loaded 2-core machine (browsers, 16 test threads) background work
        // can take seconds to be picked up; a passing check returns at once anyway.
        let deadline = std::time::Instant::now() + Duration::from_secs(EVENTUALLY_S);
        while std::time::Instant::now() < deadline {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "timed out after {EVENTUALLY_S} s waiting for {what}; stderr: {}",
            self.stderr()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// RFC 3339 of now plus `secs`.
pub fn at(secs: i64) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        + secs * 1000;
    tally::clock::rfc3339(ms)
}

/// The daemon reads every `TALLY_*` variable as configuration (and refuses unknown ones): the
/// test's own configuration file is the whole truth, whatever the caller's shell exports.
pub fn hermetic(mut command: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TALLY_") {
            command.env_remove(&name);
        }
    }
    command
}
