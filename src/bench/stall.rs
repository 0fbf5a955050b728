//! The `stall` scenario: what long work costs everyone else's writes.
//!
//! Closed-loop clients send single realistic events for the whole duration. A second in, a
//! billing run over `--subscriptions` daily subscriptions starts (it closes one period each, in
//! chunks of transactions) and, at the same moment, a new meter is created on the events' type,
//! which counts every event already stored. The figures are the ingest latencies during both;
//! the check reports how long the backfill took to complete (it continues in the background
//! after its first chunk; the scenario waits for it) and the writer's own arrival-to-commit time (`tally_writer_wait_seconds`):
//! its 99.9th percentile bucket and how many writes waited over 100 ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::deliveries::Outcome;
use super::llm::{Fixtures, Ids};
use super::{billing_run, drive, post, subscribe_daily, Target};

/// How long the load runs before the long work starts.
const LEAD_IN: Duration = Duration::from_secs(1);
/// A wait above this is a stall.
const STALL_S: f64 = 0.1;
/// How long the scenario waits for the meter's backfill to complete after the load.
const BACKFILL_WAIT: Duration = Duration::from_secs(1800);

/// Runs the scenario.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    client: &reqwest::Client,
    target: &Target,
    fixtures: &Fixtures,
    clients: usize,
    duration: Duration,
    run_tag: &str,
    subscriptions: u64,
    from: &str,
) -> anyhow::Result<Outcome> {
    let tag = format!("{run_tag}-stall");
    subscribe_daily(client, target, &tag, &fixtures.count_meter, subscriptions).await?;
    let waits0 = buckets(client, target).await;
    let before = fixtures.stored(client, target, from).await?;
    let billing = {
        let (client, target, tag) = (client.clone(), target.clone_remote(), tag.clone());
        tokio::spawn(async move {
            tokio::time::sleep(LEAD_IN).await;
            let t0 = Instant::now();
            let run = billing_run(&client, &target, &format!("{tag}-run")).await;
            (run, t0.elapsed())
        })
    };
    let backfill = {
        let (client, target) = (client.clone(), target.clone_remote());
        let suffix = tag
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "");
        let meter = json!({"key": format!("llm_input_{suffix}"), "event_type": fixtures.event_type,
            "aggregation": "sum", "value_property": "input_tokens"});
        tokio::spawn(async move {
            tokio::time::sleep(LEAD_IN).await;
            let t0 = Instant::now();
            let created = post(&client, &target, "/v1/meters", &format!("{tag}-m"), meter).await;
            let done = match created {
                Ok(m) => backfilled(&client, &target, m).await,
                Err(e) => Err(e),
            };
            (done, t0.elapsed())
        })
    };
    let accepted = Arc::new(AtomicU64::new(0));
    let make = fixtures.requests(1, Ids::Ordered);
    let (latencies, errors, elapsed) =
        drive(target, clients, duration, make, Arc::clone(&accepted)).await;
    let (run, billing_took) = billing.await?;
    let (meter, backfill_took) = backfill.await?;
    let (run, meter) = (run?, meter?);
    let waits = delta(&waits0, &buckets(client, target).await);
    let after = fixtures.stored(client, target, from).await?;
    let acked = accepted.load(Ordering::Relaxed);
    let closed = run["closed_count"].as_u64().unwrap_or(0);
    let backfilled = meter["backfilled_events"].as_u64().unwrap_or(0);
    let (p999, longest, over) = summary(&waits);
    Ok(Outcome {
        verified: after - before == acked && closed >= subscriptions,
        check: format!(
            "{acked} events acknowledged and stored; billing run closed {closed} periods in \
             {:.1} s; meter backfill counted {backfilled} events in {:.1} s; writer wait \
             p99.9 ≤ {p999}, longest ≤ {longest}, {over} writes waited over 100 ms",
            billing_took.as_secs_f64(),
            backfill_took.as_secs_f64(),
        ),
        latencies,
        errors,
        elapsed,
    })
}

/// The meter once its backfill is complete (polled; at most [`BACKFILL_WAIT`]): a meter
/// created over stored events counts them in the background first.
pub(super) async fn backfilled(
    client: &reqwest::Client,
    target: &Target,
    mut meter: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let id = meter["id"].as_str().unwrap_or_default().to_string();
    let started = Instant::now();
    while meter["backfill_status"] == "running" {
        anyhow::ensure!(
            started.elapsed() < BACKFILL_WAIT,
            "the meter's backfill did not complete within {} s",
            BACKFILL_WAIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        meter = super::get(client, target, &format!("/v1/meters/{id}")).await?;
    }
    Ok(meter)
}

/// The cumulative buckets of the writer's wait histogram: (upper bound in seconds, count).
async fn buckets(client: &reqwest::Client, target: &Target) -> Vec<(f64, f64)> {
    let Ok(r) = client.get(format!("{}/metrics", target.base)).send().await else {
        return Vec::new();
    };
    let text = r.text().await.unwrap_or_default();
    parse_buckets(&text, "tally_writer_wait_seconds")
}

fn parse_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

fn delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, n)| {
            let was = before
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, c)| *c);
            (le, n - was)
        })
        .collect()
}

/// The buckets holding the 99.9th percentile and the longest wait (as text), and how many
/// waits exceeded 100 ms.
fn summary(cumulative: &[(f64, f64)]) -> (String, String, u64) {
    let total = cumulative.last().map_or(0.0, |(_, n)| *n);
    let bound = |share: f64| {
        cumulative
            .iter()
            .find(|(_, n)| *n >= total * share)
            .map_or("-".to_string(), |(le, _)| {
                if le.is_infinite() {
                    "∞".to_string()
                } else {
                    format!("{} ms", le * 1000.0)
                }
            })
    };
    let within = cumulative
        .iter()
        .filter(|(le, _)| *le <= STALL_S)
        .map(|(_, n)| *n)
        .fold(0.0, f64::max);
    (bound(0.999), bound(1.0), (total - within).max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_summary_reads_prometheus_buckets() {
        let text = "tally_writer_wait_seconds_bucket{le=\"0.05\"} 990\n\
                    tally_writer_wait_seconds_bucket{le=\"0.1\"} 998\n\
                    tally_writer_wait_seconds_bucket{le=\"0.25\"} 1000\n\
                    tally_writer_wait_seconds_bucket{le=\"+Inf\"} 1000\n\
                    tally_writer_wait_seconds_sum 3.5\n";
        let before = parse_buckets(
            "tally_writer_wait_seconds_bucket{le=\"0.05\"} 0\n",
            "tally_writer_wait_seconds",
        );
        let after = parse_buckets(text, "tally_writer_wait_seconds");
        assert_eq!(after.len(), 4);
        let (p999, longest, over) = summary(&delta(&before, &after));
        assert_eq!(p999, "250 ms");
        assert_eq!(longest, "250 ms");
        assert_eq!(over, 2);
    }
}
