//! `/metrics`: every documented series from the first scrape, each exported series documented,
//! and billing runs through the API counted.

use std::collections::BTreeSet;

use serde_json::json;

use crate::harness::{at, Daemon};

/// The series names of README's metrics table.
fn documented() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let section = readme
        .split("\n### Metrics\n")
        .nth(1)
        .expect("a Metrics section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

async fn scrape(d: &Daemon) -> String {
    d.client
        .get(d.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Families named by `# TYPE` lines.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn every_documented_series_is_there_from_the_start_and_every_exported_one_is_documented() {
    let d = Daemon::start().await;
    let documented = documented();
    assert!(documented.len() >= 10, "{documented:?}");
    let text = scrape(&d).await;
    for name in &documented {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no # HELP on a fresh daemon:\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(name.as_str())),
            "{name} has no sample on a fresh daemon:\n{text}"
        );
    }
    assert!(text.contains("tally_events_total{outcome=\"rejected\"} 0"));
    assert!(text.contains("tally_invoices_issued_total 0"));
    // After some traffic, still nothing undocumented.
    d.customer("acme", "USD").await;
    d.post(
        "/v1/events",
        None,
        &json!({"customer": "acme", "type": "x"}),
    )
    .await;
    let text = scrape(&d).await;
    let undocumented: Vec<_> = exported(&text).difference(&documented).cloned().collect();
    assert!(undocumented.is_empty(), "undocumented: {undocumented:?}");
}

#[tokio::test]
async fn a_billing_run_through_the_api_counts_its_invoices() {
    let d = Daemon::start().await;
    d.customer("acme", "USD").await;
    let p = d
        .post(
            "/v1/plans",
            Some("p"),
            &json!({"code": "daily", "name": "Daily", "currency": "USD", "interval": "day",
                    "fixed_fee": {"amount_minor": 1000, "timing": "in_arrears"}}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    let start = tally::clock::parse_rfc3339(&format!("{}T00:00:00Z", &at(0)[..10])).expect("t")
        - 2 * 86_400_000;
    let s = d
        .post(
            "/v1/subscriptions",
            Some("s"),
            &json!({"customer": "acme", "plan": "daily", "start_at": tally::clock::rfc3339(start)}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    let run = d.post("/v1/billing-runs", Some("r1"), &json!({})).await;
    assert_eq!(run.status, 201, "{}", run.json);
    assert_eq!(run.json["closed"].as_array().map(Vec::len), Some(2));
    assert_eq!(d.metric("tally_invoices_issued_total").await, 2.0);
    // A replay issues nothing and counts nothing.
    let replay = d.post("/v1/billing-runs", Some("r1"), &json!({})).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(d.metric("tally_invoices_issued_total").await, 2.0);
}

#[tokio::test]
async fn events_with_an_idempotency_key_are_counted_once() {
    let d = Daemon::start().await;
    d.customer("acme", "USD").await;
    let body = json!({"events": [{"id": "a", "customer": "acme", "type": "x"}, {"customer": "nobody", "type": "x"}]});
    let first = d.post("/v1/events", Some("ev-1"), &body).await;
    assert_eq!(first.status, 200, "{}", first.json);
    assert_eq!(d.metric("tally_events_total").await, 2.0);
    let replay = d.post("/v1/events", Some("ev-1"), &body).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(d.metric("tally_events_total").await, 2.0);
}
