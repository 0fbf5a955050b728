//! kill -9 mid-stream: every acknowledged write survives exactly once, nothing else is
//! half-written.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::harness::Daemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_creates_and_events_survive_a_kill() {
    let mut d = Daemon::start().await;
    d.customer("events", "USD").await;
    let acked: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    let acked_events: Arc<Mutex<Vec<String>>> = Arc::default();
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let client = d.client.clone();
        let base = d.base.clone();
        let key = d.key.clone();
        let acked = Arc::clone(&acked);
        let acked_events = Arc::clone(&acked_events);
        let sent = Arc::clone(&sent);
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let ext = format!("w{worker}-{i}");
                sent.lock().expect("lock").push(ext.clone());
                let r = client
                    .post(format!("{base}/v1/customers"))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .header("Idempotency-Key", format!("crash-{ext}"))
                    .body(json!({"external_id": ext, "currency": "USD"}).to_string())
                    .send()
                    .await;
                let Ok(r) = r else { return };
                if r.status().as_u16() == 201 {
                    if let Ok(bytes) = r.bytes().await {
                        acked
                            .lock()
                            .expect("lock")
                            .insert(ext.clone(), bytes.to_vec());
                    }
                }
                let e = client
                    .post(format!("{base}/v1/events"))
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(json!({"id": ext, "customer": "events", "type": "call"}).to_string())
                    .send()
                    .await;
                let Ok(e) = e else { return };
                if e.status().as_u16() == 200 {
                    if let Ok(v) = e.json::<serde_json::Value>().await {
                        if v["results"][0]["status"] == "accepted" {
                            acked_events.lock().expect("lock").push(ext.clone());
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    d.kill9();
    for t in tasks {
        let _ = t.await;
    }
    d.restart().await;
    let acked = acked.lock().expect("lock").clone();
    assert!(
        !acked.is_empty(),
        "some creates were acknowledged before the kill"
    );
    for (ext, bytes) in &acked {
        let replay = d
            .post(
                "/v1/customers",
                Some(&format!("crash-{ext}")),
                &json!({"external_id": ext, "currency": "USD"}),
            )
            .await;
        assert_eq!(replay.status, 201);
        assert_eq!(
            replay.header("idempotent-replayed"),
            Some("true"),
            "{ext} must replay"
        );
        assert_eq!(&replay.bytes, bytes, "{ext} replays byte for byte");
    }
    // Requests without a reply either committed whole (they replay) or not at all (they run now).
    let sent = sent.lock().expect("lock").clone();
    for ext in sent.iter().filter(|e| !acked.contains_key(*e)) {
        let r = d
            .post(
                "/v1/customers",
                Some(&format!("crash-{ext}")),
                &json!({"external_id": ext, "currency": "USD"}),
            )
            .await;
        assert_eq!(r.status, 201, "{ext}: {}", r.json);
    }
    // Every acknowledged event is stored exactly once.
    let acked_events = acked_events.lock().expect("lock").clone();
    for ext in acked_events.iter() {
        let again = d
            .post(
                "/v1/events",
                None,
                &json!({"id": ext, "customer": "events", "type": "call"}),
            )
            .await;
        assert_eq!(again.json["results"][0]["status"], "duplicate", "{ext}");
    }
    let verify = d.get("/v1/ledger/verify").await;
    assert_eq!(verify.json["ok"], true);
}
