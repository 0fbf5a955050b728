//! kill -9 soak: mixed load, a SIGKILL at a random moment, a restart, and the invariants checked,
//! cycle after cycle. CI runs 3 cycles; `SOAK_CYCLES=100 cargo test --release --test it
//! soak` runs the long version.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{at, Daemon};

#[derive(Default)]
struct Acked {
    creates: BTreeMap<String, Vec<u8>>,
    events: Vec<String>,
    grants: BTreeMap<String, Vec<u8>>,
}

fn cycles() -> usize {
    std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_soak_keeps_every_invariant() {
    let mut d = Daemon::start_with(
        "[jobs]\nlease_ms = 300\n[notifications]\nconnect_timeout_ms = 100\ntimeout_ms = 250\n",
    )
    .await;
    let c = d.customer("soak", "USD").await;
    assert_eq!(
        d.post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "calls", "event_type": "call", "aggregation": "count"})
        )
        .await
        .status,
        201
    );
    assert_eq!(d.post("/v1/plans", Some("p"), &json!({"code": "d", "name": "D", "currency": "USD", "interval": "day", "fixed_fee": {"amount_minor": 700},
        "charges": [{"meter": "calls", "model": "per_unit", "unit_price": "0.01"}]})).await.status, 201);
    let today = &at(0)[..10];
    let start =
        tally::clock::parse_rfc3339(&format!("{today}T00:00:00Z")).expect("t") - 6 * 86_400_000;
    assert_eq!(
        d.post(
            "/v1/subscriptions",
            Some("s"),
            &json!({"customer": "soak", "plan": "d", "start_at": tally::clock::rfc3339(start)})
        )
        .await
        .status,
        201
    );
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut rng = seed();
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for cycle in 0..cycles() {
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let client = d.client.clone();
            let base = d.base.clone();
            let key = d.key.clone();
            let acked = Arc::clone(&acked);
            let customer = c.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100_000u64 {
                    let post = |path: String, idem: Option<String>, body: Value| {
                        let mut req = client.post(format!("{base}{path}")).bearer_auth(&key).json(&body);
                        if let Some(k) = idem {
                            req = req.header("Idempotency-Key", k);
                        }
                        req.send()
                    };
                    let tag = format!("{cycle}-{worker}-{i}");
                    let result = match (worker, i % 4) {
                        (0, _) => {
                            let body = json!({"external_id": format!("c{tag}"), "currency": "USD"});
                            match post("/v1/customers".into(), Some(format!("k{tag}")), body).await {
                                Ok(r) if r.status().as_u16() == 201 => match r.bytes().await {
                                    Ok(b) => {
                                        acked.lock().expect("lock").creates.insert(tag.clone(), b.to_vec());
                                        Ok(())
                                    }
                                    Err(_) => Err(()),
                                },
                                Ok(_) => Ok(()),
                                Err(_) => Err(()),
                            }
                        }
                        (1, _) => {
                            // Duplicates on purpose: ids repeat across the pool.
                            let id = format!("e{}", i % 50 + cycle as u64 * 1000);
                            let body = json!({"events": [{"id": id, "customer": "soak", "type": "call"}, {"id": id, "customer": "soak", "type": "call"}]});
                            match post("/v1/events".into(), None, body).await {
                                Ok(r) if r.status().as_u16() == 200 => match r.json::<Value>().await {
                                    Ok(v) => {
                                        if v["results"][0]["status"] != "rejected" {
                                            acked.lock().expect("lock").events.push(id);
                                        }
                                        Ok(())
                                    }
                                    Err(_) => Err(()),
                                },
                                Ok(_) => Ok(()),
                                Err(_) => Err(()),
                            }
                        }
                        (2, _) => {
                            let body = json!({"customer": customer, "amount_minor": 10, "currency": "USD", "category": "promotional"});
                            match post("/v1/credit-grants".into(), Some(format!("g{tag}")), body).await {
                                Ok(r) if r.status().as_u16() == 201 => match r.bytes().await {
                                    Ok(b) => {
                                        acked.lock().expect("lock").grants.insert(tag.clone(), b.to_vec());
                                        Ok(())
                                    }
                                    Err(_) => Err(()),
                                },
                                Ok(_) => Ok(()),
                                Err(_) => Err(()),
                            }
                        }
                        _ => {
                            let run = post("/v1/billing-runs".into(), Some(format!("r{tag}")), json!({})).await;
                            let invoices = client.get(format!("{base}/v1/invoices?limit=500")).bearer_auth(&key).send().await;
                            match (run, invoices) {
                                (Ok(_), Ok(list)) => {
                                    let list: Value = list.json().await.unwrap_or(Value::Null);
                                    for inv in list["data"].as_array().into_iter().flatten() {
                                        if inv["status"] == "finalized" {
                                            let id = inv["id"].as_str().unwrap_or("");
                                            let _ = post(format!("/v1/invoices/{id}/pay"), Some(format!("pay-{id}")), json!({})).await;
                                        }
                                    }
                                    Ok(())
                                }
                                _ => Err(()),
                            }
                        }
                    };
                    if result.is_err() {
                        return;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(200 + next() % 600)).await;
        d.kill9();
        for t in tasks {
            let _ = t.await;
        }
        d.restart().await;
        let acked_now = {
            let a = acked.lock().expect("lock");
            (a.creates.clone(), a.events.clone(), a.grants.clone())
        };
        for (tag, bytes) in &acked_now.0 {
            let r = d
                .post(
                    "/v1/customers",
                    Some(&format!("k{tag}")),
                    &json!({"external_id": format!("c{tag}"), "currency": "USD"}),
                )
                .await;
            assert_eq!(
                r.header("idempotent-replayed"),
                Some("true"),
                "cycle {cycle}: create {tag}"
            );
            assert_eq!(
                &r.bytes, bytes,
                "cycle {cycle}: create {tag} replays identically"
            );
        }
        for (tag, bytes) in &acked_now.2 {
            let r = d.post("/v1/credit-grants", Some(&format!("g{tag}")), &json!({"customer": c, "amount_minor": 10, "currency": "USD", "category": "promotional"})).await;
            assert_eq!(
                &r.bytes, bytes,
                "cycle {cycle}: grant {tag} replays identically"
            );
        }
        for id in &acked_now.1 {
            let r = d
                .post(
                    "/v1/events",
                    None,
                    &json!({"id": id, "customer": "soak", "type": "call"}),
                )
                .await;
            assert_eq!(
                r.json["results"][0]["status"], "duplicate",
                "cycle {cycle}: event {id}"
            );
        }
        let verify = d.get("/v1/ledger/verify").await;
        assert_eq!(verify.json["ok"], true, "cycle {cycle}: {}", verify.json);
        let invoices = d.get("/v1/invoices?limit=500").await;
        let mut per_period: HashMap<String, usize> = HashMap::new();
        for inv in invoices.json["data"].as_array().expect("data") {
            if inv["status"] != "void" {
                *per_period
                    .entry(format!(
                        "{}-{}-{}",
                        inv["subscription"], inv["period_start"], inv["kind"]
                    ))
                    .or_default() += 1;
            }
        }
        assert!(
            per_period.values().all(|n| *n <= 1),
            "cycle {cycle}: {per_period:?}"
        );
        for inv in invoices.json["data"].as_array().expect("data") {
            let v = d
                .get(&format!(
                    "/v1/invoices/{}/verify",
                    inv["id"].as_str().expect("id")
                ))
                .await;
            assert_eq!(v.json["matches"], true, "cycle {cycle}: {}", v.json);
        }
        let mut payments = 0;
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/journal-entries?limit=500&starting_after={c}"),
                None => "/v1/journal-entries?limit=500".to_string(),
            };
            let page = d.get(&path).await;
            payments += page.json["data"]
                .as_array()
                .expect("data")
                .iter()
                .filter(|e| e["kind"] == "payment")
                .count();
            match page.json["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let paid = invoices.json["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter(|i| i["status"] == "paid" && i["amount_due_minor"].as_i64().unwrap_or(0) > 0)
            .count();
        assert_eq!(
            payments, paid,
            "cycle {cycle}: one payment entry per paid invoice"
        );
    }
}
