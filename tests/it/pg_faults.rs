//! PostgreSQL faults under load: the server restarted (a fast restart, and a crash followed by
//! a start), and a primary lost with its synchronous standby promoted. Clients see success or
//! 503 `unavailable` (outcome unknown), never a 500 or a hang; `/readyz` follows the database;
//! the daemon reconnects by itself; retrying with the same event ids and idempotency keys gives
//! one effect each. Each test runs clusters of its own, so these apply to the PostgreSQL run only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally::store::pg::cluster::{self, find_binaries, LocalCluster};

use crate::harness::{at, Daemon};

/// Longest any request may take, outage or not, before the test calls it a hang.
const REQUEST_BOUND: Duration = Duration::from_secs(10);

/// Connecting gives up quickly, so requests during an outage are answered within the bound.
const DAEMON_CONFIG: &str = "[postgres]\nconnect_timeout_ms = 1000\n";

/// Runs one of PostgreSQL's binaries, as the `postgres` user when this process is root.
fn pg_try(tool: &str, args: &[&str]) -> Result<String, String> {
    let bin = find_binaries().ok_or("no PostgreSQL binaries")?;
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    cluster::run_tool(&bin, cluster::is_root(), tool, &args).map_err(|e| e.to_string())
}

fn pg(tool: &str, args: &[&str]) -> String {
    pg_try(tool, args).unwrap_or_else(|e| panic!("{e}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One PostgreSQL server on a data folder, driven with `pg_ctl`; stopped hard when dropped.
struct Server {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
}

impl Server {
    /// The server a [`LocalCluster`] started in `dir`.
    fn of(cluster: &LocalCluster, dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            data: dir.join("data"),
            port: cluster.port(),
        }
    }

    fn path(p: &Path) -> &str {
        p.to_str().expect("utf-8 path")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn options(&self) -> String {
        format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off \
             -c max_connections=200",
            self.port,
            self.dir.display()
        )
    }

    fn start(&self) {
        let (data, log, options) = (self.data.clone(), self.log(), self.options());
        pg(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                Self::path(&data),
                "-l",
                Self::path(&log),
                "-o",
                &options,
            ],
        );
    }

    /// `pg_ctl restart -m fast`: sessions are ended, the server comes straight back.
    fn restart_fast(&self) {
        let (data, log, options) = (self.data.clone(), self.log(), self.options());
        pg(
            "pg_ctl",
            &[
                "restart",
                "-w",
                "-t",
                "60",
                "-m",
                "fast",
                "-D",
                Self::path(&data),
                "-l",
                Self::path(&log),
                "-o",
                &options,
            ],
        );
    }

    /// `pg_ctl stop -m immediate`: as a crash would (no checkpoint; recovery at the next start).
    fn stop_immediate(&self) {
        pg(
            "pg_ctl",
            &[
                "stop",
                "-w",
                "-m",
                "immediate",
                "-D",
                Self::path(&self.data),
            ],
        );
    }

    fn promote(&self) {
        pg(
            "pg_ctl",
            &["promote", "-w", "-t", "60", "-D", Self::path(&self.data)],
        );
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        pg(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ],
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.data.clone();
        let _ = pg_try(
            "pg_ctl",
            &["stop", "-w", "-m", "immediate", "-D", Self::path(&data)],
        );
    }
}

/// A new cluster of the test's own in `dir`, with database `tally`; stopped when the test ends
/// (or, should it abort, when the test process exits).
fn own_cluster(dir: &Path) -> LocalCluster {
    let cluster = LocalCluster::fast(dir).expect("a local PostgreSQL cluster");
    cluster
        .stop_when_process_exits(std::process::id())
        .expect("watchdog");
    cluster.create_database("tally").expect("create database");
    cluster
}

fn event(id: &str) -> Value {
    json!({"id": id, "type": "call", "customer": "acme", "timestamp": at(-60)})
}

fn create_body(key: &str) -> Value {
    json!({"external_id": format!("ext-{key}"), "currency": "USD"})
}

async fn prepare(daemon: &Daemon) {
    let meter = daemon
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "calls", "event_type": "call", "aggregation": "count"}),
        )
        .await;
    assert_eq!(meter.status, 201, "{}", meter.json);
    daemon.customer("acme", "USD").await;
}

/// What the clients saw.
#[derive(Default)]
struct Outcomes {
    /// Event ids answered 2xx.
    acked_events: BTreeSet<String>,
    /// Event ids answered 503 or not at all: outcome unknown.
    unknown_events: BTreeSet<String>,
    /// Idempotency keys of creates answered 2xx, with the customer made.
    acked_creates: BTreeMap<String, String>,
    /// Idempotency keys of creates answered 503 or not at all.
    unknown_creates: BTreeSet<String>,
    /// 503 answers by problem code.
    unavailable: BTreeMap<String, u64>,
    /// Requests the daemon did not answer at all (connection errors).
    unanswered: u64,
    /// Anything a client must never see: a 500, another status, a hang, a 503 without problem+json.
    wrong: Vec<String>,
    slowest: Duration,
}

enum Answer {
    Done(Value),
    Unknown,
}

/// One request, classified; bounded by [`REQUEST_BOUND`].
async fn classify(request: reqwest::RequestBuilder, out: &Mutex<Outcomes>, what: &str) -> Answer {
    let started = Instant::now();
    let sent = tokio::time::timeout(REQUEST_BOUND, request.send()).await;
    let elapsed = started.elapsed();
    let response = {
        let mut outcomes = out.lock().expect("outcomes");
        outcomes.slowest = outcomes.slowest.max(elapsed);
        match sent {
            Err(_) => {
                outcomes
                    .wrong
                    .push(format!("{what}: no answer within {REQUEST_BOUND:?}"));
                return Answer::Unknown;
            }
            Ok(Err(_)) => {
                outcomes.unanswered += 1;
                return Answer::Unknown;
            }
            Ok(Ok(r)) => r,
        }
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let mut out = out.lock().expect("outcomes");
    match status {
        200..=202 => Answer::Done(body),
        503 if content_type.starts_with("application/problem+json") => {
            let code = body["code"].as_str().unwrap_or("").to_string();
            *out.unavailable.entry(code).or_default() += 1;
            Answer::Unknown
        }
        other => {
            out.wrong.push(format!("{what}: {other} {body}"));
            Answer::Unknown
        }
    }
}

/// Clients sending events (and every fifth request an idempotent create) until `stop`.
fn start_load(
    daemon: &Daemon,
    workers: usize,
    stop: &Arc<AtomicBool>,
    out: &Arc<Mutex<Outcomes>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|w| {
            let (client, base, key) = (
                daemon.client.clone(),
                daemon.base.clone(),
                daemon.key.clone(),
            );
            let (stop, out) = (stop.clone(), out.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let served;
                    if i.is_multiple_of(5) {
                        let idem = format!("cus-{w}-{i}");
                        let request = client
                            .post(format!("{base}/v1/customers"))
                            .bearer_auth(&key)
                            .header("Idempotency-Key", &idem)
                            .json(&create_body(&idem));
                        let answer = classify(request, &out, &idem).await;
                        served = matches!(answer, Answer::Done(_));
                        let mut out = out.lock().expect("outcomes");
                        match answer {
                            Answer::Done(body) => {
                                let id = body["id"].as_str().unwrap_or_default().to_string();
                                out.acked_creates.insert(idem, id);
                            }
                            Answer::Unknown => {
                                out.unknown_creates.insert(idem);
                            }
                        }
                    } else {
                        let id = format!("evt-{w}-{i}");
                        let request = client
                            .post(format!("{base}/v1/events"))
                            .bearer_auth(&key)
                            .json(&event(&id));
                        let answer = classify(request, &out, &id).await;
                        served = matches!(answer, Answer::Done(_));
                        let mut out = out.lock().expect("outcomes");
                        match answer {
                            Answer::Done(_) => out.acked_events.insert(id),
                            Answer::Unknown => out.unknown_events.insert(id),
                        };
                    }
                    // Clients back off a little while the daemon answers 503.
                    let pause_ms = if served { 2 } else { 50 };
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                }
            })
        })
        .collect()
}

async fn stop_load(
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    out: &Arc<Mutex<Outcomes>>,
) -> Outcomes {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    std::mem::take(&mut *out.lock().expect("outcomes"))
}

/// Polls `/readyz` until it answers `status`; how long that took.
async fn readyz_becomes(daemon: &Daemon, status: u16, bound: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let answered = tokio::time::timeout(
            REQUEST_BOUND,
            daemon.client.get(daemon.url("/readyz")).send(),
        )
        .await;
        let got = match answered {
            Ok(Ok(r)) => r.status().as_u16(),
            Ok(Err(e)) => panic!("/readyz not answered: {e}"),
            Err(_) => panic!("/readyz hung past {REQUEST_BOUND:?}"),
        };
        if got == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "/readyz still {got}, not {status}, after {bound:?}; stderr: {}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Retries a request until it succeeds (bounded); its answer.
async fn retry(daemon: &Daemon, path: &str, idem: Option<&str>, body: &Value) -> Value {
    for _ in 0..100 {
        let again = daemon.post(path, idem, body).await;
        match again.status {
            200..=202 => return again.json,
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("retry of {path} {idem:?}: {other} {}", again.json),
        }
    }
    panic!(
        "retry of {path} {idem:?} never succeeded; stderr: {}",
        daemon.stderr()
    );
}

async fn usage_total(daemon: &Daemon) -> u64 {
    let usage = daemon
        .get(&format!(
            "/v1/usage?customer=acme&meter=calls&from={}",
            at(-3600)
        ))
        .await;
    assert_eq!(usage.status, 200, "{}", usage.json);
    usage.json["total"]
        .as_str()
        .expect("total")
        .parse()
        .expect("number")
}

async fn customers_by_external_id(daemon: &Daemon) -> BTreeMap<String, Vec<String>> {
    let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/customers?limit=100&starting_after={c}"),
            None => "/v1/customers?limit=100".to_string(),
        };
        let page = daemon.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.json);
        for c in page.json["data"].as_array().expect("data") {
            all.entry(c["external_id"].as_str().expect("external_id").to_string())
                .or_default()
                .push(c["id"].as_str().expect("id").to_string());
        }
        cursor = page.json["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            return all;
        }
    }
}

/// The clients' view after the fault: nothing wrong was answered; every acknowledged write is
/// there once; retrying the unanswered ones with their ids and keys counts each once.
async fn settle_and_check(daemon: &Daemon, out: &Outcomes) {
    assert!(
        out.wrong.is_empty(),
        "answers a client must never see: {:?}",
        out.wrong
    );
    let codes: Vec<&String> = out.unavailable.keys().collect();
    assert!(
        codes.iter().all(|c| c.as_str() == "unavailable"),
        "503s other than `unavailable`: {:?}",
        out.unavailable
    );
    let sent: BTreeSet<&String> = out.acked_events.iter().chain(&out.unknown_events).collect();
    let before = usage_total(daemon).await;
    assert!(
        before >= out.acked_events.len() as u64 && before <= sent.len() as u64,
        "acknowledged {} of {} sent, counted {before}",
        out.acked_events.len(),
        sent.len()
    );
    for id in &out.unknown_events {
        retry(daemon, "/v1/events", None, &event(id)).await;
    }
    for key in &out.unknown_creates {
        retry(daemon, "/v1/customers", Some(key), &create_body(key)).await;
    }
    // Replays of acknowledged writes change nothing and answer the same customer.
    for id in out.acked_events.iter().take(20) {
        retry(daemon, "/v1/events", None, &event(id)).await;
    }
    for (key, id) in out.acked_creates.iter().take(20) {
        let again = retry(daemon, "/v1/customers", Some(key), &create_body(key)).await;
        assert_eq!(again["id"].as_str(), Some(id.as_str()), "replay of {key}");
    }
    assert_eq!(
        usage_total(daemon).await,
        sent.len() as u64,
        "every event id once"
    );
    let customers = customers_by_external_id(daemon).await;
    let keys: BTreeSet<&String> = out
        .acked_creates
        .keys()
        .chain(&out.unknown_creates)
        .collect();
    assert_eq!(
        customers.len(),
        keys.len() + 1,
        "one customer per key, plus acme"
    );
    for key in keys {
        let made = customers.get(&format!("ext-{key}")).map(Vec::len);
        assert_eq!(made, Some(1), "customers made for key {key}");
    }
    for (key, id) in &out.acked_creates {
        assert_eq!(
            customers.get(&format!("ext-{key}")),
            Some(&vec![id.clone()]),
            "the acknowledged customer of {key} is the one kept"
        );
    }
    let verify = daemon.cli(&["verify"]);
    assert!(
        verify.status.success(),
        "tally verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

fn summary(out: &Outcomes) -> String {
    format!(
        "{} events acknowledged, {} unknown; {} creates acknowledged, {} unknown; 503s {:?}; \
         {} unanswered; slowest answer {} ms",
        out.acked_events.len(),
        out.unknown_events.len(),
        out.acked_creates.len(),
        out.unknown_creates.len(),
        out.unavailable,
        out.unanswered,
        out.slowest.as_millis()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_restarted_under_load_gives_503_or_success_and_the_daemon_reconnects() {
    crate::backend::postgres_only!("restarts a PostgreSQL server of its own");
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = own_cluster(dir.path());
    let server = Server::of(&cluster, dir.path());
    let daemon = Daemon::start_on_database(&cluster.url("tally"), DAEMON_CONFIG).await;
    prepare(&daemon).await;
    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Mutex::new(Outcomes::default()));
    let load = start_load(&daemon, 4, &stop, &out);
    tokio::time::sleep(Duration::from_millis(700)).await;

    // A fast restart: sessions end, the server comes straight back.
    let t = Instant::now();
    server.restart_fast();
    let restart_ms = t.elapsed().as_millis();
    let back_after_restart = readyz_becomes(&daemon, 200, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A crash, and the server down for a while: /readyz says so, then recovers by itself.
    server.stop_immediate();
    let down = readyz_becomes(&daemon, 503, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = Instant::now();
    server.start();
    let start_ms = t.elapsed().as_millis();
    let back_after_crash = readyz_becomes(&daemon, 200, Duration::from_secs(15)).await;
    let before_more = out.lock().expect("outcomes").acked_events.len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let outcomes = stop_load(&stop, load, &out).await;
    assert!(
        outcomes.acked_events.len() > before_more,
        "clients were served again after the crash without restarting the daemon"
    );
    eprintln!(
        "restart -m fast {restart_ms} ms, ready again after {} ms; crash: /readyz 503 after {} ms, \
         start {start_ms} ms, ready again after {} ms; {}",
        back_after_restart.as_millis(),
        down.as_millis(),
        back_after_crash.as_millis(),
        summary(&outcomes)
    );
    settle_and_check(&daemon, &outcomes).await;
    eprintln!("total {} ms", started.elapsed().as_millis());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_to_a_promoted_synchronous_standby_loses_nothing_acknowledged() {
    crate::backend::postgres_only!("runs a primary and a standby of its own");
    let started = Instant::now();
    let primary_dir = tempfile::tempdir().expect("tempdir");
    let standby_dir = tempfile::tempdir().expect("tempdir");
    let cluster = own_cluster(primary_dir.path());
    let primary = Server::of(&cluster, primary_dir.path());
    // The cluster's pg_hba.conf admits no replication connections; the standby streams as
    // `postgres` from 127.0.0.1.
    let hba = primary.data.join("pg_hba.conf");
    let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
    rules.push_str("host replication postgres 127.0.0.1/32 trust\n");
    std::fs::write(&hba, rules).expect("pg_hba.conf");
    primary.psql("postgres", "SELECT pg_reload_conf()");

    if cluster::is_root() {
        let chown = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(standby_dir.path())
            .status()
            .expect("chown");
        assert!(chown.success());
    }
    let standby = Server {
        dir: standby_dir.path().to_path_buf(),
        data: standby_dir.path().join("data"),
        port: free_port(),
    };
    let port = primary.port.to_string();
    pg(
        "pg_basebackup",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-D",
            Server::path(&standby.data),
            "-R",
            "-X",
            "stream",
            "--no-sync",
            "--checkpoint=fast",
        ],
    );
    standby.start();
    // Synchronous replication: the primary confirms a commit only once the standby has it, so
    // everything the daemon acknowledged survives losing the primary. Set after the base
    // backup, so the promoted standby does not wait for a standby of its own.
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    let t = Instant::now();
    while primary
        .psql("postgres", "SELECT sync_state FROM pg_stat_replication")
        .trim()
        != "sync"
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the standby never became synchronous"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/tally?sslmode=disable&target_session_attrs=read-write",
        primary.port, standby.port
    );
    let daemon = Daemon::start_on_database(&url, DAEMON_CONFIG).await;
    let setup_ms = started.elapsed().as_millis();
    prepare(&daemon).await;
    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Mutex::new(Outcomes::default()));
    let load = start_load(&daemon, 4, &stop, &out);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    primary.stop_immediate();
    let down = readyz_becomes(&daemon, 503, Duration::from_secs(5)).await;
    let t = Instant::now();
    standby.promote();
    let promote_ms = t.elapsed().as_millis();
    let back = readyz_becomes(&daemon, 200, Duration::from_secs(15)).await;
    let before_more = out.lock().expect("outcomes").acked_events.len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let outcomes = stop_load(&stop, load, &out).await;
    assert!(
        outcomes.acked_events.len() > before_more,
        "clients were served through the promoted standby without restarting the daemon"
    );
    eprintln!(
        "failover: primary, standby and daemon up in {setup_ms} ms; /readyz 503 after {} ms, promote {promote_ms} ms, ready again after {} ms; {}",
        down.as_millis(),
        back.as_millis(),
        summary(&outcomes)
    );
    let t = Instant::now();
    settle_and_check(&daemon, &outcomes).await;
    eprintln!("retries and checks {} ms", t.elapsed().as_millis());
    assert_eq!(
        standby
            .psql("postgres", "SELECT pg_is_in_recovery()")
            .trim(),
        "f",
        "the daemon writes to the promoted standby"
    );
    eprintln!("total {} ms", started.elapsed().as_millis());
}
