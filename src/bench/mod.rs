//! `tally bench`: drives a daemon with concurrent HTTP/1.1 keep-alive clients, scenario by
//! scenario, and reports throughput, latency percentiles, the writer's mean batch size and peak
//! memory, then checks that what was acknowledged is stored exactly once.
//!
//! Without `--url` it starts its own daemon (this binary) on a temporary database, so the
//! figures include every durable commit and the load generator shares the machine with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

mod alerts;
mod ceiling;
mod client;
mod deliveries;
mod entitlements;
mod llm;
mod peer;
mod stall;
mod target;
use serde_json::{json, Value};
use target::Target;
pub use target::{Backend, MAX_NODES};

/// The scenarios, in the order a full run takes them.
pub const SCENARIOS: &[&str] = &[
    "ingest",
    "batch",
    "create",
    "replay",
    "usage",
    "billing",
    "deliveries",
    "alerts",
    "entitlements",
    "llm",
    "llm-v4",
    "llm-batch",
    "llm-batch-v4",
    "ceiling",
    "peer",
    "peer-batch",
    "stall",
];

/// Ratios a run prints when it measured both sides: (numerator, denominator, what it says).
const RATIOS: &[(&str, &str, &str)] = &[
    ("llm", "ceiling", "single-event ingest / HTTP ceiling"),
    (
        "ingest",
        "ceiling",
        "empty single-event ingest / HTTP ceiling",
    ),
    ("replay", "ceiling", "idempotent replay / HTTP ceiling"),
    ("llm", "peer", "single-event ingest / PostgreSQL peer"),
    (
        "llm-batch",
        "peer-batch",
        "100-event batches / PostgreSQL peer",
    ),
    ("llm-v4", "llm", "random ids / ordered ids, single events"),
    (
        "llm-batch-v4",
        "llm-batch",
        "random ids / ordered ids, batches",
    ),
];

/// Each scenario to run with its client count: `name` or `name:clients`.
fn plan(opts: &Options) -> anyhow::Result<Vec<(String, usize)>> {
    if !(1..=4096).contains(&opts.clients) {
        bail!("--clients must be a number from 1 to 4096");
    }
    opts.scenarios
        .iter()
        .map(|spec| {
            let (name, clients) = match spec.split_once(':') {
                Some((name, n)) => (
                    name,
                    n.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=4096).contains(n))
                        .with_context(|| {
                            format!("{spec}: clients must be a number from 1 to 4096")
                        })?,
                ),
                None => (spec.as_str(), opts.clients),
            };
            if !SCENARIOS.contains(&name) {
                bail!("unknown scenario {name:?}; known: {}", SCENARIOS.join(", "));
            }
            Ok((name.to_string(), clients))
        })
        .collect()
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Target an existing daemon instead of starting one.
    pub url: Option<String>,
    /// Its API key (with `url`).
    pub key: Option<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// Seconds per scenario.
    pub duration_secs: u64,
    /// Which scenarios.
    pub scenarios: Vec<String>,
    /// Events stored before the usage query and entitlements scenarios.
    pub usage_events: u64,
    /// Subscriptions billed by the billing scenario.
    pub subscriptions: u64,
    /// Print JSON.
    pub json: bool,
    /// Where the daemons it starts keep their data.
    pub backend: Backend,
    /// How many daemons it starts on that data (above 1 only on PostgreSQL).
    pub nodes: usize,
    /// Realistic events stored before the first scenario, in batches.
    pub prefill_events: u64,
    /// A PostgreSQL database for the `peer` scenarios.
    pub peer_postgres: Option<String>,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Name.
    pub scenario: String,
    /// Concurrent clients driving it.
    pub clients: usize,
    /// Requests completed.
    pub requests: u64,
    /// Units per request (events in a batch).
    pub units_per_request: u64,
    /// Units per second.
    pub throughput_per_s: u64,
    /// Latency percentiles, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Mean commands per write transaction during the scenario.
    pub mean_batch_size: String,
    /// Failed requests (non-2xx).
    pub errors: u64,
    /// Writer batches applied again because the database could not serialize them with
    /// another node's (PostgreSQL only; summed over the nodes).
    pub conflicts: u64,
    /// Allocated bytes of the redb file per event stored, after the scenario (redb only;
    /// the realistic scenarios and the prefill).
    pub bytes_per_event: Option<u64>,
    /// Whether the stored counts matched the acknowledged ones.
    pub verified: bool,
    /// What was checked.
    pub check: String,
}

/// A metric summed over its labels and over every node.
async fn metric(client: &reqwest::Client, target: &Target, name: &str) -> f64 {
    let mut total = 0.0;
    for base in &target.bases {
        let Ok(r) = client.get(format!("{base}/metrics")).send().await else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        total += text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What a request builder needs: client index and sequence number → (method, path, idempotency key, body).
type MakeRequest =
    Arc<dyn Fn(usize, u64) -> (String, Option<String>, Option<Vec<u8>>) + Send + Sync>;

/// A JSON body's bytes.
fn body(value: &Value) -> Option<Vec<u8>> {
    serde_json::to_vec(value).ok()
}

/// Runs closed-loop clients for the duration, each on its own keep-alive connection to one
/// node (client `c` talks to node `c mod nodes`, so the load spreads evenly); returns
/// latencies (µs, sorted), errors, and the elapsed time. `accepted` counts acknowledged units:
/// results marked accepted in an ingest reply, otherwise one per successful response.
async fn drive(
    target: &Target,
    clients: usize,
    duration: Duration,
    make: MakeRequest,
    accepted: Arc<AtomicU64>,
) -> (Vec<u64>, u64, Duration) {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let base = target.bases[c % target.bases.len()].clone();
        let key = target.key.clone();
        let make = Arc::clone(&make);
        let accepted = Arc::clone(&accepted);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut seq = 0u64;
            let mut connection = None;
            while Instant::now() < deadline {
                let (path, idem, body) = make(c, seq);
                seq += 1;
                let method = if body.is_some() { "POST" } else { "GET" };
                let t0 = Instant::now();
                if connection.is_none() {
                    connection = client::Connection::open(&base, &key).await.ok();
                }
                let Some(conn) = connection.as_mut() else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                match conn
                    .send(method, &path, idem.as_deref(), body.as_deref())
                    .await
                {
                    Ok(reply) if (200..300).contains(&reply.status) => {
                        latencies.push(t0.elapsed().as_micros() as u64);
                        let n = if client::count(&reply.body, br#""results""#) > 0 {
                            client::count(&reply.body, br#""status":"accepted""#) as u64
                        } else {
                            1
                        };
                        accepted.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        // The connection is in an unknown state: start a fresh one.
                        errors += 1;
                        connection = None;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    all.sort_unstable();
    (all, errors, started.elapsed())
}

/// `GET path` as the target's tenant, its JSON body (whatever the status: callers check it).
async fn get(client: &reqwest::Client, t: &Target, path: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(format!("{}{path}", t.base))
        .bearer_auth(&t.key)
        .send()
        .await?
        .json()
        .await?)
}

async fn post(
    client: &reqwest::Client,
    t: &Target,
    path: &str,
    key: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let r = client
        .post(format!("{}{path}", t.base))
        .bearer_auth(&t.key)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        bail!("{path}: {status} {v}");
    }
    Ok(v)
}

/// Posts a billing run and follows it until it is complete (a run with more periods than one
/// transaction takes answers 202 and continues); returns its final report.
async fn billing_run(client: &reqwest::Client, t: &Target, key: &str) -> anyhow::Result<Value> {
    let mut run = post(client, t, "/v1/billing-runs", key, json!({})).await?;
    let id = run["id"].as_str().unwrap_or_default().to_string();
    while run["status"] == "running" {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        run = get(client, t, &format!("/v1/billing-runs/{id}")).await?;
    }
    Ok(run)
}

/// Creates a daily plan charging `meter` and `k` customers subscribed to it since the start
/// of yesterday, so a billing run now closes one period each.
async fn subscribe_daily(
    client: &reqwest::Client,
    target: &Target,
    run_tag: &str,
    meter: &str,
    k: u64,
) -> anyhow::Result<()> {
    let yesterday = crate::clock::now_ms() - 86_400_000;
    let start = crate::clock::rfc3339(yesterday - yesterday.rem_euclid(86_400_000));
    let plan = format!("plan-{run_tag}");
    post(client, target, "/v1/plans", &format!("{run_tag}-plan"), json!({"code": plan, "name": "Bench", "currency": "USD", "interval": "day",
        "fixed_fee": {"amount_minor": 500}, "charges": [{"meter": meter, "model": "per_unit", "unit_price": "0.01"}]})).await?;
    let mut tasks = Vec::new();
    for i in 0..k {
        let (client, base, key, plan, start, tag) = (
            client.clone(),
            target.base.clone(),
            target.key.clone(),
            plan.clone(),
            start.clone(),
            run_tag.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let ext = format!("{tag}-sub-{i}");
            let c = client
                .post(format!("{base}/v1/customers"))
                .bearer_auth(&key)
                .header("Idempotency-Key", format!("{ext}-c"))
                .json(&json!({"external_id": ext, "currency": "USD"}))
                .send()
                .await;
            let s = client
                .post(format!("{base}/v1/subscriptions"))
                .bearer_auth(&key)
                .header("Idempotency-Key", format!("{ext}-s"))
                .json(&json!({"customer": ext, "plan": plan, "start_at": start}))
                .send()
                .await;
            c.is_ok() && s.is_ok()
        }));
        if tasks.len() >= 64 {
            for t in tasks.drain(..) {
                let _ = t.await;
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

async fn usage_total(
    client: &reqwest::Client,
    t: &Target,
    customer: &str,
    meter: &str,
    from: &str,
) -> anyhow::Result<u64> {
    let v: Value = client
        .get(format!(
            "{}/v1/usage?customer={customer}&meter={meter}&from={from}",
            t.base
        ))
        .bearer_auth(&t.key)
        .send()
        .await?
        .json()
        .await?;
    Ok(v["total"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// The realistic fixtures, made on first use.
async fn fixtures_of(
    realistic: &mut Option<llm::Fixtures>,
    client: &reqwest::Client,
    target: &Target,
    run_tag: &str,
) -> anyhow::Result<llm::Fixtures> {
    if let Some(f) = realistic {
        return Ok(f.clone());
    }
    let f = llm::Fixtures::create(client, target, run_tag).await?;
    *realistic = Some(f.clone());
    Ok(f)
}

/// Allocated bytes of the redb file per accepted event so far (redb only).
async fn bytes_per_event(client: &reqwest::Client, target: &Target) -> Option<u64> {
    let bytes = target.allocated_bytes()?;
    let events = metric(client, target, "tally_events_total{outcome=\"accepted\"}").await;
    (events >= 1.0).then(|| bytes / events as u64)
}

/// Grows the database by `events` realistic events in batches before the scenarios.
async fn prefill(
    client: &reqwest::Client,
    target: &Target,
    fixtures: &llm::Fixtures,
    events: u64,
) -> anyhow::Result<Figures> {
    let t0 = Instant::now();
    let acked = fixtures.prefill(client, target, events).await?;
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    Ok(Figures {
        scenario: "prefill".into(),
        clients: llm::PREFILL_IN_FLIGHT,
        requests: events.div_ceil(llm::BATCH_EVENTS),
        units_per_request: llm::BATCH_EVENTS,
        throughput_per_s: (acked as f64 / secs) as u64,
        p50_us: 0,
        p99_us: 0,
        p999_us: 0,
        mean_batch_size: "-".into(),
        errors: 0,
        conflicts: 0,
        bytes_per_event: bytes_per_event(client, target).await,
        verified: acked == events,
        check: format!("{acked} of {events} events acknowledged in {secs:.0} s"),
    })
}

/// Runs the benchmark.
pub async fn run(opts: Options) -> anyhow::Result<Vec<Figures>> {
    let plan = plan(&opts)?;
    let target = match (&opts.url, &opts.key) {
        (Some(url), Some(key)) => Target::remote(url, key),
        (Some(_), None) => bail!("--url needs --key"),
        _ => Target::start(&opts.backend, opts.nodes)?,
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.clients * 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    let run_tag = crate::id::Id::generate().display("b");
    let from = crate::clock::rfc3339(crate::clock::now_ms() - 31 * 86_400_000);
    // Fixtures: a customer and a counting meter so stored counts can be checked.
    let cust = format!("bench-{run_tag}");
    post(
        &client,
        &target,
        "/v1/customers",
        &format!("{run_tag}-c"),
        json!({"external_id": cust, "currency": "USD"}),
    )
    .await?;
    let meter = format!("bench_{}", &run_tag[2..10].to_ascii_lowercase());
    let event_type = format!("bench.{run_tag}");
    post(
        &client,
        &target,
        "/v1/meters",
        &format!("{run_tag}-m"),
        json!({"key": meter, "event_type": event_type, "aggregation": "count"}),
    )
    .await?;
    let duration = Duration::from_secs(opts.duration_secs);
    let mut out = Vec::new();
    // The realistic scenarios' customers and meters, made by the first that needs them.
    let mut realistic: Option<llm::Fixtures> = None;
    let mut ceiling_server: Option<ceiling::Server> = None;
    let mut peer: Option<peer::Peer> = None;
    if opts.prefill_events > 0 {
        let fixtures = llm::Fixtures::create(&client, &target, &run_tag).await?;
        out.push(prefill(&client, &target, &fixtures, opts.prefill_events).await?);
        realistic = Some(fixtures);
    }
    for (scenario, clients) in &plan {
        let clients = *clients;
        let sum0 = metric(&client, &target, "tally_writer_batch_size_sum").await;
        let cnt0 = metric(&client, &target, "tally_writer_batch_size_count").await;
        let conflicts0 = metric(&client, &target, "tally_writer_conflicts_total").await;
        let accepted = Arc::new(AtomicU64::new(0));
        let (units, latencies, errors, elapsed, verified, check) = match scenario.as_str() {
            "ingest" | "batch" => {
                let per = if scenario == "batch" { 100u64 } else { 1 };
                let before = usage_total(&client, &target, &cust, &meter, &from).await?;
                let (c, t, tag) = (
                    cust.clone(),
                    event_type.clone(),
                    format!("{run_tag}-{scenario}"),
                );
                // Time-ordered ids (ULID layout, as the README recommends to clients): the
                // identity index then grows at its end, like events from a well-behaved fleet.
                let make: MakeRequest = Arc::new(move |_, _| {
                    let events: Vec<Value> = (0..per)
                        .map(|_| json!({"id": format!("{tag}-{}", crate::id::Id::generate().display("e")), "customer": c, "type": t}))
                        .collect();
                    let json = if per == 1 {
                        body(&events[0])
                    } else {
                        body(&json!({"events": events}))
                    };
                    ("/v1/events".to_string(), None, json)
                });
                let (l, e, el) =
                    drive(&target, clients, duration, make, Arc::clone(&accepted)).await;
                let after = usage_total(&client, &target, &cust, &meter, &from).await?;
                let acked = accepted.load(Ordering::Relaxed);
                (
                    per,
                    l,
                    e,
                    el,
                    after - before == acked,
                    format!("{acked} acknowledged events, {} stored", after - before),
                )
            }
            "create" => {
                let tag = format!("{run_tag}-create");
                let make: MakeRequest = Arc::new(move |client_no, seq| {
                    let id = format!("{tag}-{client_no}-{seq}");
                    let json = body(&json!({"external_id": id, "currency": "USD"}));
                    ("/v1/customers".to_string(), Some(id), json)
                });
                let (l, e, el) =
                    drive(&target, clients, duration, make, Arc::clone(&accepted)).await;
                let acked = accepted.load(Ordering::Relaxed);
                // Every acknowledged create exists: spot-check by external id.
                let sample = format!("{run_tag}-create-0-0");
                let found = get(
                    &client,
                    &target,
                    &format!("/v1/customers?external_id={sample}"),
                )
                .await?;
                let ok = acked == 0 || found["data"].as_array().is_some_and(|a| a.len() == 1);
                (
                    1,
                    l,
                    e,
                    el,
                    ok,
                    format!("{acked} creates acknowledged; first one stored once"),
                )
            }
            "replay" => {
                let tag = format!("{run_tag}-replay");
                for c in 0..clients {
                    post(
                        &client,
                        &target,
                        "/v1/customers",
                        &format!("{tag}-{c}"),
                        json!({"external_id": format!("{tag}-{c}"), "currency": "USD"}),
                    )
                    .await?;
                }
                // Each client repeats one request: its bytes are prepared once.
                let requests: Vec<(String, Option<Vec<u8>>)> = (0..clients)
                    .map(|c| {
                        let id = format!("{tag}-{c}");
                        let json = body(&json!({"external_id": id, "currency": "USD"}));
                        (id, json)
                    })
                    .collect();
                let make: MakeRequest = Arc::new(move |client_no, _| {
                    let (id, json) = requests[client_no % requests.len()].clone();
                    ("/v1/customers".to_string(), Some(id), json)
                });
                let (l, e, el) =
                    drive(&target, clients, duration, make, Arc::clone(&accepted)).await;
                (
                    1,
                    l,
                    e,
                    el,
                    e == 0,
                    "every replay answered from the stored record".to_string(),
                )
            }
            "usage" => {
                // Prefill: events spread over the last 30 days for one customer.
                let uc = format!("usage-{run_tag}");
                post(
                    &client,
                    &target,
                    "/v1/customers",
                    &format!("{run_tag}-uc"),
                    json!({"external_id": uc, "currency": "USD"}),
                )
                .await?;
                let now = crate::clock::now_ms();
                let total = opts.usage_events;
                let mut sent = 0u64;
                let mut batch_no = 0u64;
                let mut inflight = Vec::new();
                while sent < total {
                    let n = (total - sent).min(1000);
                    let events: Vec<Value> = (0..n)
                        .map(|i| {
                            let k = sent + i;
                            let ts = now - 60_000 - ((k * 2_591_000_000 / total.max(1)) as i64);
                            json!({"id": format!("u{k}"), "customer": uc, "type": event_type, "timestamp": crate::clock::rfc3339(ts)})
                        })
                        .collect();
                    let c2 = client.clone();
                    let url = format!("{}/v1/events", target.base);
                    let key = target.key.clone();
                    inflight.push(tokio::spawn(async move {
                        c2.post(url)
                            .bearer_auth(key)
                            .json(&json!({"events": events}))
                            .send()
                            .await
                            .map(|r| r.status().is_success())
                            .unwrap_or(false)
                    }));
                    if inflight.len() >= 8 {
                        for t in inflight.drain(..) {
                            let _ = t.await;
                        }
                    }
                    sent += n;
                    batch_no += 1;
                }
                for t in inflight {
                    let _ = t.await;
                }
                let _ = batch_no;
                let stored = usage_total(&client, &target, &uc, &meter, &from).await?;
                let (m, f) = (meter.clone(), from.clone());
                let path = format!("/v1/usage?customer={uc}&meter={m}&from={f}&granularity=total");
                let make: MakeRequest = Arc::new(move |_, _| (path.clone(), None, None));
                let (l, e, el) =
                    drive(&target, clients, duration, make, Arc::clone(&accepted)).await;
                (
                    1,
                    l,
                    e,
                    el,
                    stored == total,
                    format!("{total} events prefilled, {stored} counted"),
                )
            }
            "billing" => {
                let k = opts.subscriptions;
                subscribe_daily(&client, &target, &run_tag, &meter, k).await?;
                let t0 = Instant::now();
                let run = billing_run(&client, &target, &format!("{run_tag}-run")).await?;
                let took = t0.elapsed();
                let closed = run["closed_count"].as_u64().unwrap_or(0);
                let again = billing_run(&client, &target, &format!("{run_tag}-run2")).await?;
                let twice = again["closed_count"].as_u64().unwrap_or(0);
                accepted.store(closed, Ordering::Relaxed);
                (
                    closed.max(1),
                    vec![took.as_micros() as u64],
                    0,
                    took,
                    closed >= k && twice == 0,
                    format!("{closed} invoices for {k} subscriptions; a second run closed {twice}"),
                )
            }
            "deliveries" => {
                // A tag of its own per run of the scenario: it may be named more than once.
                let tag = format!("{run_tag}-{}", crate::id::Id::generate().display("d"));
                let o = deliveries::run(&client, &target, clients, duration, &tag).await?;
                (1, o.latencies, o.errors, o.elapsed, o.verified, o.check)
            }
            "alerts" => {
                let o = alerts::run(&client, &target, clients, duration, &run_tag).await?;
                (
                    alerts::PER_REQUEST,
                    o.latencies,
                    o.errors,
                    o.elapsed,
                    o.verified,
                    o.check,
                )
            }
            "entitlements" => {
                let tag = format!("{run_tag}-{}", crate::id::Id::generate().display("n"));
                let o =
                    entitlements::run(&client, &target, clients, duration, &tag, opts.usage_events)
                        .await?;
                (1, o.latencies, o.errors, o.elapsed, o.verified, o.check)
            }
            name if llm::shape(name).is_some() => {
                let shape = llm::shape(name).unwrap_or((1, llm::Ids::Ordered));
                let fixtures = fixtures_of(&mut realistic, &client, &target, &run_tag).await?;
                let o =
                    llm::run(&client, &target, &fixtures, shape, clients, duration, &from).await?;
                (
                    shape.0,
                    o.latencies,
                    o.errors,
                    o.elapsed,
                    o.verified,
                    o.check,
                )
            }
            "stall" => {
                let fixtures = fixtures_of(&mut realistic, &client, &target, &run_tag).await?;
                let o = stall::run(
                    &client,
                    &target,
                    &fixtures,
                    clients,
                    duration,
                    &run_tag,
                    opts.subscriptions,
                    &from,
                )
                .await?;
                (1, o.latencies, o.errors, o.elapsed, o.verified, o.check)
            }
            "ceiling" => {
                let fixtures = fixtures_of(&mut realistic, &client, &target, &run_tag).await?;
                if ceiling_server.is_none() {
                    ceiling_server = Some(ceiling::start()?);
                }
                let server = ceiling_server.as_ref().context("the ceiling server")?;
                let o = ceiling::run(server, &fixtures, clients, duration).await;
                (1, o.latencies, o.errors, o.elapsed, o.verified, o.check)
            }
            "peer" | "peer-batch" => {
                let Some(url) = opts.peer_postgres.as_deref() else {
                    bail!("the {scenario} scenario needs --peer-postgres URL");
                };
                let fixtures = fixtures_of(&mut realistic, &client, &target, &run_tag).await?;
                if peer.is_none() {
                    peer = Some(peer::Peer::start(url, &run_tag).await?);
                }
                let p = peer.as_ref().context("the peer")?;
                let per = if scenario == "peer" {
                    1
                } else {
                    llm::BATCH_EVENTS
                };
                let o = p.run(&fixtures, per, clients, duration).await?;
                (per, o.latencies, o.errors, o.elapsed, o.verified, o.check)
            }
            other => {
                bail!(
                    "unknown scenario {other:?}; known: {}",
                    SCENARIOS.join(", ")
                )
            }
        };
        let sum1 = metric(&client, &target, "tally_writer_batch_size_sum").await;
        let cnt1 = metric(&client, &target, "tally_writer_batch_size_count").await;
        let conflicts1 = metric(&client, &target, "tally_writer_conflicts_total").await;
        // The ceiling and the peer are not the daemon: its writer's batches say nothing of them.
        let mean = if cnt1 > cnt0 && !matches!(scenario.as_str(), "ceiling" | "peer" | "peer-batch")
        {
            format!("{:.1}", (sum1 - sum0) / (cnt1 - cnt0))
        } else {
            "-".into()
        };
        let bytes_per_event = if scenario.starts_with("llm") {
            bytes_per_event(&client, &target).await
        } else {
            None
        };
        let requests = latencies.len() as u64;
        let secs = elapsed.as_secs_f64().max(1e-9);
        let throughput = if scenario == "billing" {
            (units as f64 / secs) as u64
        } else {
            ((requests * units) as f64 / secs) as u64
        };
        out.push(Figures {
            scenario: scenario.clone(),
            clients,
            requests,
            units_per_request: units,
            throughput_per_s: throughput,
            p50_us: percentile(&latencies, 0.50),
            p99_us: percentile(&latencies, 0.99),
            p999_us: percentile(&latencies, 0.999),
            mean_batch_size: mean,
            errors,
            conflicts: (conflicts1 - conflicts0).max(0.0) as u64,
            bytes_per_event,
            verified,
            check,
        });
    }
    if let Some(p) = peer {
        p.finish().await?;
    }
    drop(ceiling_server);
    let rss = target.peak_rss_kib();
    let events = metric(&client, &target, "tally_events_total{outcome=\"accepted\"}").await as u64;
    let space = target.space();
    if opts.json {
        let tables: Vec<Value> = space
            .iter()
            .flatten()
            .map(|t| json!({"table": t.name, "rows": t.rows, "stored_bytes": t.stored_bytes, "allocated_bytes": t.allocated_bytes}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"backend": opts.backend.name(), "nodes": target.bases.len(), "clients": opts.clients, "duration_secs": opts.duration_secs, "peak_rss_kib": rss, "events_stored": events, "space": tables, "scenarios": out})
            )?
        );
    } else {
        println!(
            "backend: {}, {} node{}",
            opts.backend.name(),
            target.bases.len(),
            if target.bases.len() == 1 { "" } else { "s" }
        );
        println!(
            "{:<12} {:>7} {:>9} {:>12} {:>9} {:>9} {:>9} {:>7} {:>6} {:>9} {:>7}  check",
            "scenario",
            "clients",
            "requests",
            "throughput/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "batch",
            "errors",
            "conflicts",
            "B/event"
        );
        for f in &out {
            let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
            println!(
                "{:<12} {:>7} {:>9} {:>12} {:>9} {:>9} {:>9} {:>7} {:>6} {:>9} {:>7}  {} ({})",
                f.scenario,
                f.clients,
                f.requests,
                f.throughput_per_s,
                ms(f.p50_us),
                ms(f.p99_us),
                ms(f.p999_us),
                f.mean_batch_size,
                f.errors,
                f.conflicts,
                f.bytes_per_event
                    .map_or_else(|| "-".to_string(), |b| b.to_string()),
                if f.verified { "ok" } else { "MISMATCH" },
                f.check
            );
        }
        for (a, b, what) in RATIOS {
            let find = |name: &str| out.iter().find(|f| f.scenario == name);
            if let (Some(x), Some(y)) = (find(a), find(b)) {
                if y.throughput_per_s > 0 {
                    println!(
                        "{what}: {:.2}× ({a} {} / {b} {})",
                        x.throughput_per_s as f64 / y.throughput_per_s as f64,
                        x.throughput_per_s,
                        y.throughput_per_s
                    );
                }
            }
        }
        if let Some(kib) = rss {
            println!(
                "peak RSS of the daemon (the largest, with several): {} MiB",
                kib / 1024
            );
        }
        if let (Some(tables), true) = (&space, events > 0) {
            print!("{}", space_per_event(tables, events));
        }
    }
    if out.iter().any(|f| !f.verified) {
        bail!("stored counts did not match what was acknowledged");
    }
    Ok(out)
}

/// The redb file's tables by allocated bytes per stored event, largest first (the tables that
/// take under one byte per event are left out).
fn space_per_event(tables: &[crate::store::space::TableSpace], events: u64) -> String {
    use std::fmt::Write;
    let mut out = format!("bytes on disk per event by table ({events} events stored):\n");
    let total: u64 = tables.iter().map(|t| t.allocated_bytes).sum();
    for t in tables.iter().filter(|t| t.allocated_bytes >= events) {
        let rows_per_100 = t.rows.saturating_mul(100) / events;
        let _ = writeln!(
            out,
            "  {:<24} {:>6} B/event  ({} rows, {}.{:02} rows/event)",
            t.name,
            t.allocated_bytes / events,
            t.rows,
            rows_per_100 / 100,
            rows_per_100 % 100
        );
    }
    let _ = writeln!(out, "  {:<24} {:>6} B/event", "all tables", total / events);
    out
}
