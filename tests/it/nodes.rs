//! Several nodes on one PostgreSQL database, clients spread across them: the database's
//! serializability, not a node's memory, decides what is done once. (On redb one process owns
//! the file, so these tests apply to the PostgreSQL run only.)

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::fake_stripe::FakeStripe;
use crate::harness::{at, Daemon};

fn event(id: &str) -> Value {
    json!({"id": id, "type": "call", "customer": "acme", "timestamp": at(-60)})
}

fn usage_path() -> String {
    format!("/v1/usage?customer=acme&meter=calls&from={}", at(-3600))
}

/// Three nodes on one fresh database, each with `extra` configuration.
pub(crate) async fn three_nodes(extra: &str) -> Vec<Daemon> {
    let first = Daemon::start_with(extra).await;
    let second = first.join().await;
    let third = first.join().await;
    vec![first, second, third]
}

/// Sends `body` to `path` on every node in turn, `n` times at once, with one idempotency key.
async fn spread(
    nodes: &[Daemon],
    n: usize,
    path: &str,
    key: &str,
    body: Value,
) -> Vec<(u16, Value)> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let node = &nodes[i % nodes.len()];
        let request = node
            .client
            .post(node.url(path))
            .bearer_auth(&node.key)
            .header("Idempotency-Key", key)
            .json(&body);
        tasks.push(tokio::spawn(async move {
            let r = request.send().await.expect("send");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_creates_with_one_key_across_three_nodes_make_one_customer() {
    crate::backend::postgres_only!("several nodes share one PostgreSQL database");
    let nodes = three_nodes("").await;
    let answers = spread(
        &nodes,
        50,
        "/v1/customers",
        "one-customer",
        json!({"external_id": "acme", "currency": "USD"}),
    )
    .await;
    let mut ids = BTreeSet::new();
    for (status, body) in &answers {
        match status {
            201 => {
                ids.insert(body["id"].as_str().expect("id").to_string());
            }
            // Still executing on the same node: the in-flight guard is per node.
            409 => assert_eq!(body["code"], "idempotency_key_in_use", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ids.len(), 1, "every 201 is the same customer: {ids:?}");
    for node in &nodes {
        let listed = node.get("/v1/customers?limit=100").await;
        assert_eq!(
            listed.json["data"].as_array().map(Vec::len),
            Some(1),
            "{}",
            listed.json
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_event_id_sent_to_three_nodes_counts_once() {
    crate::backend::postgres_only!("several nodes share one PostgreSQL database");
    let nodes = three_nodes("").await;
    let meter = nodes[0]
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "calls", "event_type": "call", "aggregation": "count"}),
        )
        .await;
    assert_eq!(meter.status, 201, "{}", meter.json);
    nodes[0].customer("acme", "USD").await;
    let event = event("evt-1");
    let mut tasks = Vec::new();
    for round in 0..5 {
        for node in &nodes {
            let request = node
                .client
                .post(node.url("/v1/events"))
                .bearer_auth(&node.key)
                .json(&event);
            tasks.push(tokio::spawn(async move {
                let _ = round;
                request.send().await.expect("send").status().as_u16()
            }));
        }
    }
    for t in tasks {
        let status = t.await.expect("task");
        assert!(status == 200 || status == 201 || status == 202, "{status}");
    }
    for node in &nodes {
        let usage = node.get(&usage_path()).await;
        assert_eq!(usage.status, 200, "{}", usage.json);
        assert_eq!(usage.json["total"], "1", "{}", usage.json);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn billing_runs_and_pays_across_nodes_bill_and_charge_once_with_gapless_numbers() {
    crate::backend::postgres_only!("several nodes share one PostgreSQL database");
    let stripe = FakeStripe::start().await;
    let nodes = three_nodes(&crate::payments::stripe_config(&stripe, "")).await;
    let first = &nodes[0];
    let plan = first
        .post(
            "/v1/plans",
            Some("plan"),
            &json!({"code": "d", "name": "D", "currency": "USD", "interval": "day",
                "fixed_fee": {"amount_minor": 1000}}),
        )
        .await;
    assert_eq!(plan.status, 201, "{}", plan.json);
    let today = &at(0)[..10];
    let start =
        tally::clock::parse_rfc3339(&format!("{today}T00:00:00Z")).expect("t") - 6 * 86_400_000;
    for c in ["a", "b", "c"] {
        first.customer(c, "USD").await;
        let s = first
            .post(
                "/v1/subscriptions",
                Some(&format!("sub-{c}")),
                &json!({"customer": c, "plan": "d", "start_at": tally::clock::rfc3339(start)}),
            )
            .await;
        assert_eq!(s.status, 201, "{}", s.json);
    }
    // Each node starts its own billing run (different keys) at the same moment.
    let mut runs = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let request = node
            .client
            .post(node.url("/v1/billing-runs"))
            .bearer_auth(&node.key)
            .header("Idempotency-Key", format!("run-{i}"))
            .json(&json!({}));
        runs.push(tokio::spawn(async move {
            request.send().await.expect("send").status().as_u16()
        }));
    }
    for r in runs {
        let status = r.await.expect("run");
        assert!(status == 201 || status == 202, "{status}");
    }
    let mut invoices = Vec::new();
    for _ in 0..200 {
        let listed = first.get("/v1/invoices?limit=100").await;
        invoices = listed.json["data"].as_array().cloned().unwrap_or_default();
        if invoices.len() >= 18 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(
        invoices.len(),
        18,
        "six days for three customers, each once"
    );
    let periods: BTreeSet<(String, String)> = invoices
        .iter()
        .map(|i| {
            (
                i["customer"].as_str().unwrap_or_default().to_string(),
                i["period_start"].to_string(),
            )
        })
        .collect();
    assert_eq!(periods.len(), 18, "no period invoiced twice");
    let mut numbers: Vec<String> = invoices
        .iter()
        .filter_map(|i| i["number"].as_str().map(str::to_string))
        .collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(
        numbers.len(),
        18,
        "every invoice has its own number: {numbers:?}"
    );
    let mut sequence: Vec<u64> = numbers
        .iter()
        .filter_map(|n| n.rsplit('-').next()?.parse().ok())
        .collect();
    sequence.sort_unstable();
    assert_eq!(
        sequence,
        (1..=18).collect::<Vec<u64>>(),
        "gapless: {numbers:?}"
    );
    // Twenty pays on one invoice, spread over the nodes, each with its own key.
    let invoice = invoices[0]["id"].as_str().expect("id").to_string();
    let mut pays = Vec::new();
    for i in 0..21 {
        let node = &nodes[i % 3];
        let request = node
            .client
            .post(node.url(&format!("/v1/invoices/{invoice}/pay")))
            .bearer_auth(&node.key)
            .header("Idempotency-Key", format!("pay-{i}"))
            .json(&json!({"payment_method": "pm_slow"}));
        pays.push(tokio::spawn(async move {
            request.send().await.expect("send").status().as_u16()
        }));
    }
    let mut created = 0;
    for p in pays {
        match p.await.expect("pay") {
            201 => created += 1,
            409 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created, 1, "one payment attempt");
    let attempts = first.get(&format!("/v1/payments?invoice={invoice}")).await;
    assert_eq!(attempts.json["data"].as_array().map(Vec::len), Some(1));
    first
        .eventually("the provider charged", || async { stripe.charges() >= 1 })
        .await;
    assert_eq!(stripe.charges(), 1, "the provider saw one charge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_load_loses_nothing_the_others_acknowledged() {
    crate::backend::postgres_only!("several nodes share one PostgreSQL database");
    let mut nodes = three_nodes("").await;
    let meter = nodes[0]
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "calls", "event_type": "call", "aggregation": "count"}),
        )
        .await;
    assert_eq!(meter.status, 201, "{}", meter.json);
    nodes[0].customer("acme", "USD").await;
    let mut acknowledged = BTreeSet::new();
    let mut unanswered = Vec::new();
    let mut sent = 0u64;
    for round in 0..40u32 {
        let mut tasks = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            if round > 15 && n == 0 {
                continue;
            }
            for k in 0..5u32 {
                let id = format!("evt-{round}-{n}-{k}");
                sent += 1;
                let request = node
                    .client
                    .post(node.url("/v1/events"))
                    .bearer_auth(&node.key)
                    .json(&event(&id));
                tasks.push(tokio::spawn(async move {
                    let ok = matches!(
                        request.send().await.map(|r| r.status().as_u16()),
                        Ok(200..=202)
                    );
                    (id, ok)
                }));
            }
        }
        if round == 15 {
            // Killed with this round's requests in flight: their outcome is unknown.
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            nodes[0].kill9();
        }
        for t in tasks {
            let (id, ok) = t.await.expect("task");
            if ok {
                acknowledged.insert(id);
            } else {
                unanswered.push(id);
            }
        }
    }
    // The survivors serve, and every acknowledged event is there.
    let usage = nodes[1].get(&usage_path()).await;
    assert_eq!(usage.status, 200, "{}", usage.json);
    let counted: u64 = usage.json["total"]
        .as_str()
        .expect("total")
        .parse()
        .expect("n");
    assert!(
        counted >= acknowledged.len() as u64 && counted <= sent,
        "acknowledged {} of {sent} sent, counted {counted}",
        acknowledged.len()
    );
    // Clients retry what got no answer, on another node; everything then counts exactly once.
    for id in &unanswered {
        let again = nodes[2].post("/v1/events", None, &event(id)).await;
        assert!(again.status < 300, "{}", again.json);
    }
    for id in acknowledged.iter().take(20) {
        let again = nodes[1].post("/v1/events", None, &event(id)).await;
        assert!(again.status < 300, "{}", again.json);
    }
    let after = nodes[2].get(&usage_path()).await;
    assert_eq!(after.json["total"], sent.to_string(), "every event once");
    nodes[0].restart().await;
    let verify = nodes[0].cli(&["verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
