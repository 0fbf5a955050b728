//! The `entitlements` scenario: the entitlement check under load over a large store.
//!
//! It creates a count meter, a feature and a monthly plan granting it as a metered entitlement
//! (reset with the billing period, a hard limit above any usage), subscribes a set of customers
//! since twenty days ago, and prefills `--usage-events` events spread over those twenty days and
//! customers. Before the load it checks every customer once: the usage the check reports must
//! equal the events sent to it. Then closed-loop clients call
//! `GET /v1/customers/{id}/entitlements/{feature}` for the duration, rotating over the customers.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::deliveries::Outcome;
use super::{drive, post, MakeRequest, Target};

/// Customers the prefill spreads over.
const CUSTOMERS: u64 = 100;
/// How far back the subscriptions start and the events spread.
const SPAN_MS: i64 = 20 * 86_400_000;

/// Runs the scenario.
pub(super) async fn run(
    client: &reqwest::Client,
    target: &Target,
    clients: usize,
    duration: Duration,
    tag: &str,
    events: u64,
) -> anyhow::Result<Outcome> {
    let now = crate::clock::now_ms();
    let event_type = format!("bench.ent.{tag}");
    let suffix = tag
        .to_ascii_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let (meter, feature, plan) = (
        format!("ent_m_{suffix}"),
        format!("ent_f_{suffix}"),
        format!("ent-p-{suffix}"),
    );
    let created = post(
        client,
        target,
        "/v1/meters",
        &format!("{tag}-m"),
        json!({"key": meter, "event_type": event_type, "aggregation": "count"}),
    )
    .await?;
    // Plans refuse a meter still counting earlier events (the usage scenario's, when it ran).
    super::stall::backfilled(client, target, created).await?;
    post(
        client,
        target,
        "/v1/features",
        &format!("{tag}-f"),
        json!({"key": feature, "name": "Bench"}),
    )
    .await?;
    post(client, target, "/v1/plans", &format!("{tag}-p"), json!({"code": plan, "name": "Bench", "currency": "USD", "interval": "month",
        "entitlements": [{"feature": feature, "type": "metered", "meter": meter, "limit": "1000000000", "reset": "billing_period", "hard": true}]})).await?;
    let start = crate::clock::rfc3339(now - SPAN_MS);
    let customers: Vec<String> = (0..CUSTOMERS).map(|i| format!("{tag}-ent-{i}")).collect();
    for c in &customers {
        post(
            client,
            target,
            "/v1/customers",
            &format!("{c}-c"),
            json!({"external_id": c, "currency": "USD"}),
        )
        .await?;
        post(
            client,
            target,
            "/v1/subscriptions",
            &format!("{c}-s"),
            json!({"customer": c, "plan": plan, "start_at": start}),
        )
        .await?;
    }
    prefill(client, target, &customers, &event_type, events, now).await?;
    // Every customer once: the check's usage must equal what was sent to it.
    let mut counted = 0u64;
    for c in &customers {
        let v: Value = client
            .get(format!(
                "{}/v1/customers/{c}/entitlements/{feature}",
                target.base
            ))
            .bearer_auth(&target.key)
            .send()
            .await?
            .json()
            .await?;
        counted += v["usage"]
            .as_str()
            .and_then(|u| u.parse::<u64>().ok())
            .unwrap_or(0);
    }
    let paths: Vec<String> = customers
        .iter()
        .map(|c| format!("/v1/customers/{c}/entitlements/{feature}"))
        .collect();
    let make: MakeRequest = Arc::new(move |client_no, seq| {
        let i = (client_no as u64).wrapping_mul(7).wrapping_add(seq) % (paths.len() as u64);
        (paths[i as usize].clone(), None, None)
    });
    let (latencies, errors, elapsed) =
        drive(target, clients, duration, make, Arc::new(AtomicU64::new(0))).await;
    Ok(Outcome {
        latencies,
        errors,
        elapsed,
        verified: counted == events,
        check: format!(
            "{events} events prefilled over {CUSTOMERS} customers, {counted} counted by the checks"
        ),
    })
}

/// Sends `total` events round-robin over the customers, spread evenly over the span before
/// `now`, in batches of 1,000 with 8 in flight. Ids carry the event type (unique per run of the
/// scenario), so a second run in one bench stores its own events rather than duplicates.
async fn prefill(
    client: &reqwest::Client,
    target: &Target,
    customers: &[String],
    event_type: &str,
    total: u64,
    now: i64,
) -> anyhow::Result<()> {
    let mut sent = 0u64;
    let mut inflight = Vec::new();
    while sent < total {
        let n = (total - sent).min(1000);
        let events: Vec<Value> = (sent..sent + n)
            .map(|k| {
                let offset =
                    i64::try_from(k.saturating_mul(SPAN_MS as u64 - 120_000) / total.max(1))
                        .unwrap_or(0);
                let customer = &customers[(k % customers.len() as u64) as usize];
                json!({"id": format!("{event_type}-{k}"), "customer": customer, "type": event_type,
                    "timestamp": crate::clock::rfc3339(now - SPAN_MS + 60_000 + offset)})
            })
            .collect();
        let (c2, url, key) = (
            client.clone(),
            format!("{}/v1/events", target.base),
            target.key.clone(),
        );
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
                if !t.await.unwrap_or(false) {
                    anyhow::bail!("a prefill batch failed");
                }
            }
        }
        sent += n;
    }
    for t in inflight {
        if !t.await.unwrap_or(false) {
            anyhow::bail!("a prefill batch failed");
        }
    }
    Ok(())
}
