//! The `alerts` scenario: what watching costs ingest.
//!
//! Batch ingest (100 events a request, spread over 100 customers, so every batch touches many
//! of them) runs three times for the duration in the same daemon: without alerts, with 100
//! active `usage_exceeded` alerts (one per customer, on the ingested meter), and without again
//! after archiving them. The figure is the throughput with alerts over the mean of the two runs
//! without, which cancels the drift of a database growing under the load. The check: every
//! acknowledged event is stored, and each alert fired its low threshold exactly once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use super::{body, drive, post, usage_total, MakeRequest, Target};

/// Customers (and alerts, one each).
const CUSTOMERS: usize = 100;
/// Events per request.
pub(super) const PER_REQUEST: u64 = 100;

/// The scenario's result, like the other scenarios'.
pub(super) struct Outcome {
    pub latencies: Vec<u64>,
    pub errors: u64,
    pub elapsed: Duration,
    pub verified: bool,
    pub check: String,
}

/// One ingest phase's throughput (events per second) and its latencies, errors and events.
struct Phase {
    per_s: f64,
    latencies: Vec<u64>,
    errors: u64,
    elapsed: Duration,
    acked: u64,
}

async fn ingest(
    target: &Target,
    clients: usize,
    duration: Duration,
    customers: Arc<Vec<String>>,
    event_type: String,
    tag: String,
) -> Phase {
    let accepted = Arc::new(AtomicU64::new(0));
    let make: MakeRequest = Arc::new(move |client_no, seq| {
        let events: Vec<Value> = (0..PER_REQUEST)
            .map(|i| {
                let n = (client_no as u64).wrapping_mul(7919).wrapping_add(seq * PER_REQUEST + i);
                let customer = &customers[(n as usize) % customers.len()];
                json!({"id": format!("{tag}-{}", crate::id::Id::generate().display("e")), "customer": customer, "type": event_type})
            })
            .collect();
        (
            "/v1/events".to_string(),
            None,
            body(&json!({ "events": events })),
        )
    });
    let (latencies, errors, elapsed) =
        drive(target, clients, duration, make, Arc::clone(&accepted)).await;
    let acked = accepted.load(Ordering::Relaxed);
    Phase {
        per_s: acked as f64 / elapsed.as_secs_f64().max(1e-9),
        latencies,
        errors,
        elapsed,
        acked,
    }
}

/// Runs the scenario against `target`.
pub(super) async fn run(
    http: &reqwest::Client,
    target: &Target,
    clients: usize,
    duration: Duration,
    run_tag: &str,
) -> anyhow::Result<Outcome> {
    let meter = format!("alerts_{}", &run_tag[2..10].to_ascii_lowercase());
    let event_type = format!("alerts.{run_tag}");
    post(
        http,
        target,
        "/v1/meters",
        &format!("{run_tag}-am"),
        json!({"key": meter, "event_type": event_type, "aggregation": "count"}),
    )
    .await?;
    let mut customers = Vec::with_capacity(CUSTOMERS);
    for i in 0..CUSTOMERS {
        let ext = format!("{run_tag}-ac-{i}");
        post(
            http,
            target,
            "/v1/customers",
            &format!("{ext}-c"),
            json!({"external_id": ext, "currency": "USD"}),
        )
        .await?;
        customers.push(ext);
    }
    let customers = Arc::new(customers);
    let phase = |name: &str| {
        ingest(
            target,
            clients,
            duration,
            Arc::clone(&customers),
            event_type.clone(),
            format!("{run_tag}-{name}"),
        )
    };
    let without = phase("a").await;
    let mut alerts = Vec::with_capacity(CUSTOMERS);
    for (i, c) in customers.iter().enumerate() {
        let a = post(
            http,
            target,
            "/v1/alerts",
            &format!("{run_tag}-alert-{i}"),
            json!({"customer": c, "type": "usage_exceeded", "meter": meter, "thresholds": ["1", "1000000000000"]}),
        )
        .await?;
        alerts.push(a["id"].as_str().context("alert id")?.to_string());
    }
    let with = phase("b").await;
    for (i, a) in alerts.iter().enumerate() {
        post(
            http,
            target,
            &format!("/v1/alerts/{a}/archive"),
            &format!("{run_tag}-archive-{i}"),
            json!({}),
        )
        .await?;
    }
    let again = phase("c").await;
    let from = crate::clock::rfc3339(crate::clock::now_ms() - 31 * 86_400_000);
    let mut stored = 0u64;
    for c in customers.iter() {
        stored += usage_total(http, target, c, &meter, &from).await?;
    }
    let mut once = 0usize;
    for a in &alerts {
        let page = super::get(http, target, &format!("/v1/alerts/{a}/firings")).await?;
        if page["data"].as_array().is_some_and(|d| d.len() == 1) {
            once += 1;
        }
    }
    let acked = without.acked + with.acked + again.acked;
    let baseline = (without.per_s + again.per_s) / 2.0;
    let ratio = with.per_s / baseline.max(1e-9);
    Ok(Outcome {
        latencies: with.latencies,
        errors: without.errors + with.errors + again.errors,
        elapsed: with.elapsed,
        verified: stored == acked && once == alerts.len(),
        check: format!(
            "events/s without alerts {:.0} and {:.0}, with {CUSTOMERS} alerts {:.0}: ratio {ratio:.3}; {acked} acknowledged, {stored} stored; {once} of {} alerts fired once",
            without.per_s,
            again.per_s,
            with.per_s,
            alerts.len()
        ),
    })
}
