//! The PostgreSQL peer: the same ingest, written the way a service on PostgreSQL would.
//!
//! `tally bench --peer-postgres URL` serves `POST /v1/events` from an axum endpoint that runs,
//! per request, one PostgreSQL transaction doing what Tally's ingest does for the `llm`
//! events: the identity check and the event row (a unique `(source, client id)` with
//! `ON CONFLICT DO NOTHING`, an index by customer and time), the per-minute rollups of the sum
//! of tokens and the count, and the unique-users set with its count, each upsert aggregated
//! per row and taken in key order so concurrent transactions never deadlock. Prepared
//! statements, a pool of connections, `synchronous_commit` as the server has it (on by
//! default: durable like Tally's commits). The same load generator drives it with the same
//! bodies, so the ratio to Tally's figure is measured in one run on one machine.
//!
//! The tables carry a per-run suffix and are dropped at the end of the scenario.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Statement};

use super::ceiling::{runtime, serve, Server};
use super::deliveries::Outcome;
use super::llm::{Fixtures, Ids};
use super::{drive, Target};
use crate::store::pg::cluster::LocalCluster;

/// Connections the peer keeps open (a typical pool size; more only adds lock waits).
const CONNECTIONS: usize = 32;

/// The peer: its server and what the check needs.
pub struct Peer {
    /// Serving the endpoint.
    pub server: Server,
    state: Arc<Pool>,
    /// The cluster started for `--peer-postgres local`, stopped (and its folder removed) when
    /// the peer is dropped.
    local: Option<(LocalCluster, std::path::PathBuf)>,
}

struct Pool {
    clients: Vec<Mutex<Conn>>,
    next: AtomicUsize,
    suffix: String,
}

/// A connection and its prepared statements.
struct Conn {
    client: Client,
    insert: Statement,
    unique: Statement,
    rollup: Statement,
}

#[derive(Deserialize)]
struct Batch {
    events: Vec<EventIn>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    Batch(Batch),
    One(EventIn),
}

#[derive(Deserialize)]
struct EventIn {
    id: String,
    customer: String,
    #[serde(rename = "type")]
    event_type: String,
    properties: serde_json::Value,
}

impl Peer {
    /// Connects, creates the run's tables and starts serving. The connections live on the
    /// server's runtime, not the load generator's.
    /// `local` starts a cluster of Debian's `postgresql` binaries in a temporary folder
    /// (127.0.0.1 only, fsync on), as `--postgres` does for the daemon.
    pub async fn start(url: &str, tag: &str) -> anyhow::Result<Self> {
        let (url, local) = if url == "local" {
            let dir = std::env::temp_dir().join(format!(
                "tally-bench-peer-{}",
                crate::id::Id::generate().display("run")
            ));
            let cluster = LocalCluster::start(&dir)
                .context("cannot start a local PostgreSQL cluster for the peer")?;
            cluster.create_database("tally_peer")?;
            (cluster.url("tally_peer"), Some((cluster, dir)))
        } else {
            (url.to_string(), None)
        };
        let config =
            tokio_postgres::Config::from_str(&url).context("invalid --peer-postgres URL")?;
        let suffix = tag
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let runtime = runtime()?;
        let s = suffix.clone();
        let clients = runtime
            .spawn(async move { connect(&config, &s).await })
            .await??;
        let state = Arc::new(Pool {
            clients,
            next: AtomicUsize::new(0),
            suffix,
        });
        let router = Router::new()
            .route("/v1/events", post(ingest))
            .with_state(Arc::clone(&state));
        Ok(Self {
            server: serve(runtime, router)?,
            state,
            local,
        })
    }

    /// Events the peer stored and the calls its rollups count (they must agree).
    pub async fn stored(&self) -> anyhow::Result<(i64, i64)> {
        let s = &self.state.suffix;
        let conn = self.state.clients[0].lock().await;
        let client = &conn.client;
        let events: i64 = client
            .query_one(&format!("SELECT count(*) FROM peer_events_{s}"), &[])
            .await?
            .get(0);
        let counted: i64 = client
            .query_one(
                &format!("SELECT coalesce(sum(calls), 0)::bigint FROM peer_rollups_{s}"),
                &[],
            )
            .await?
            .get(0);
        Ok((events, counted))
    }

    /// Drives the peer with the realistic scenario's bodies, `per` events a request, and
    /// checks that it stored one row per event it acknowledged and counted each once.
    pub(super) async fn run(
        &self,
        fixtures: &Fixtures,
        per: u64,
        clients: usize,
        duration: Duration,
    ) -> anyhow::Result<Outcome> {
        let target = Target::remote(&self.server.base, "peer");
        let (events0, counted0) = self.stored().await?;
        let make = fixtures.requests(per, Ids::Ordered);
        let answered = Arc::new(AtomicU64::new(0));
        let (latencies, errors, elapsed) = drive(&target, clients, duration, make, answered).await;
        let (events1, counted1) = self.stored().await?;
        let acked = latencies.len() as i64 * i64::try_from(per).unwrap_or(0);
        let (stored, counted) = (events1 - events0, counted1 - counted0);
        Ok(Outcome {
            verified: stored == acked && counted == acked,
            check: format!("{acked} acknowledged events, {stored} rows, {counted} counted"),
            latencies,
            errors,
            elapsed,
        })
    }

    /// Drops the run's tables (and stops a local cluster).
    pub async fn finish(mut self) -> anyhow::Result<()> {
        if let Some((mut cluster, dir)) = self.local.take() {
            drop(self.server);
            cluster.stop()?;
            let _ = std::fs::remove_dir_all(dir);
            return Ok(());
        }
        let s = &self.state.suffix;
        self.state.clients[0]
            .lock()
            .await
            .client
            .batch_execute(&format!(
                "DROP TABLE peer_events_{s}; DROP TABLE peer_rollups_{s}; DROP TABLE peer_uniques_{s};"
            ))
            .await?;
        Ok(())
    }
}

/// Opens the pool's connections, creates the tables and prepares the statements.
async fn connect(config: &tokio_postgres::Config, s: &str) -> anyhow::Result<Vec<Mutex<Conn>>> {
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for n in 0..CONNECTIONS {
        let (client, connection) = config
            .connect(NoTls)
            .await
            .context("cannot connect to --peer-postgres (plain connections only)")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        if n == 0 {
            client.batch_execute(&schema(s)).await?;
        }
        let insert = client
            .prepare(&format!(
                "INSERT INTO peer_events_{s} (source, client_id, customer, type, ts, received_at, properties) \
                 VALUES ('default', $1, $2, $3, now(), now(), $4::text::jsonb) ON CONFLICT DO NOTHING RETURNING seq"
            ))
            .await?;
        let unique = client
            .prepare(&format!(
                "INSERT INTO peer_uniques_{s} VALUES ($1, current_date, $2) ON CONFLICT DO NOTHING"
            ))
            .await?;
        let rollup = client
            .prepare(&format!(
                "INSERT INTO peer_rollups_{s} VALUES ($1, date_trunc('minute', now()), $2, $3, $4) \
                 ON CONFLICT (customer, minute) DO UPDATE SET calls = peer_rollups_{s}.calls + $2, \
                 tokens = peer_rollups_{s}.tokens + $3, users = peer_rollups_{s}.users + $4"
            ))
            .await?;
        conns.push(Mutex::new(Conn {
            client,
            insert,
            unique,
            rollup,
        }));
    }
    Ok(conns)
}

fn schema(s: &str) -> String {
    format!(
        "CREATE TABLE peer_events_{s} (seq bigserial PRIMARY KEY, source text NOT NULL, \
           client_id text NOT NULL, customer text NOT NULL, type text NOT NULL, \
           ts timestamptz NOT NULL, received_at timestamptz NOT NULL, properties jsonb NOT NULL, \
           UNIQUE (source, client_id));
         CREATE INDEX ON peer_events_{s} (customer, ts);
         CREATE TABLE peer_rollups_{s} (customer text, minute timestamptz, calls bigint NOT NULL, \
           tokens bigint NOT NULL, users bigint NOT NULL, PRIMARY KEY (customer, minute));
         CREATE TABLE peer_uniques_{s} (customer text, day date, user_id text, \
           PRIMARY KEY (customer, day, user_id));"
    )
}

/// Per customer: calls, tokens and the users seen, summed over the request's new events.
type Contributions = BTreeMap<String, (i64, i64, Vec<String>)>;

async fn ingest(State(pool): State<Arc<Pool>>, body: Bytes) -> StatusCode {
    let events = match serde_json::from_slice::<Body>(&body) {
        Ok(Body::Batch(b)) => b.events,
        Ok(Body::One(e)) => vec![e],
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let index = pool.next.fetch_add(1, Ordering::Relaxed) % pool.clients.len();
    let mut conn = pool.clients[index].lock().await;
    match transaction(&mut conn, &events).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn transaction(conn: &mut Conn, events: &[EventIn]) -> Result<(), tokio_postgres::Error> {
    let Conn {
        client,
        insert,
        unique,
        rollup,
    } = conn;
    let tx = client.transaction().await?;
    let mut contributions = Contributions::new();
    for e in events {
        let properties = e.properties.to_string();
        let inserted = tx
            .query_opt(&*insert, &[&e.id, &e.customer, &e.event_type, &properties])
            .await?;
        if inserted.is_none() {
            continue;
        }
        let entry = contributions.entry(e.customer.clone()).or_default();
        entry.0 += 1;
        entry.1 += e.properties["total_tokens"].as_i64().unwrap_or(0);
        if let Some(user) = e.properties["user_id"].as_str() {
            entry.2.push(user.to_string());
        }
    }
    for (customer, (calls, tokens, mut users)) in contributions {
        users.sort_unstable();
        users.dedup();
        let mut new_users = 0i64;
        for user in &users {
            let added = tx.execute(&*unique, &[&customer, user]).await?;
            new_users += i64::try_from(added).unwrap_or(0);
        }
        tx.execute(&*rollup, &[&customer, &calls, &tokens, &new_users])
            .await?;
    }
    tx.commit().await
}
