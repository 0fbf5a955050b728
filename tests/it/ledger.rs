//! The ledger over HTTP and the CLI: concurrent grants, expiry across a restart, balances at an
//! instant, tamper detection.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{at, Daemon};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_identical_grants_make_one_grant_and_one_entry() {
    let d = Daemon::start().await;
    let c = d.customer("acme", "USD").await;
    let body = json!({"customer": c, "amount_minor": 5000, "currency": "USD", "category": "paid"});
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let client = d.client.clone();
        let url = d.url("/v1/credit-grants");
        let key = d.key.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", "grant-1")
                .json(&body)
                .send()
                .await
                .expect("send");
            (
                r.status().as_u16(),
                r.bytes().await.expect("bytes").to_vec(),
            )
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        let (status, bytes) = t.await.expect("task");
        match status {
            201 => created.push(bytes),
            409 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(created.windows(2).all(|w| w[0] == w[1]));
    let entries = d.get("/v1/journal-entries").await;
    assert_eq!(entries.json["data"].as_array().map(Vec::len), Some(1));
    let balance = d.get(&format!("/v1/customers/{c}/balance")).await;
    assert_eq!(balance.json["balances"][0]["credits_available_minor"], 5000);
}

#[tokio::test]
async fn manual_entries_must_balance_and_history_is_never_edited() {
    let d = Daemon::start().await;
    let c = d.customer("acme", "USD").await;
    let unbalanced = d
        .post(
            "/v1/journal-entries",
            Some("j1"),
            &json!({"reason": "oops", "postings": [
            {"account": "cash", "currency": "USD", "amount_minor": 100},
            {"account": "revenue", "currency": "USD", "amount_minor": -90}]}),
        )
        .await;
    unbalanced.assert_problem(422, "unbalanced_entry");
    let mixed = d
        .post(
            "/v1/journal-entries",
            Some("j2"),
            &json!({"reason": "mixed", "postings": [
            {"account": "cash", "currency": "USD", "amount_minor": 100},
            {"account": "revenue", "currency": "EUR", "amount_minor": -100}]}),
        )
        .await;
    mixed.assert_problem(422, "unbalanced_entry");
    let ok = d
        .post(
            "/v1/journal-entries",
            Some("j3"),
            &json!({"reason": "opening balance", "postings": [
            {"account": format!("customer:{c}:receivable"), "currency": "USD", "amount_minor": 700},
            {"account": "revenue", "currency": "USD", "amount_minor": -700}]}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.json);
    assert_eq!(ok.json["seq"], 1);
    let accounts = d.get("/v1/accounts").await;
    let total: i64 = accounts.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|a| a["balance_minor"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(total, 0, "balances sum to zero");
    let verify = d.get("/v1/ledger/verify").await;
    assert_eq!(verify.json["ok"], true);
}

#[tokio::test]
async fn grants_burn_in_order_expire_once_across_a_restart_and_answer_at_any_instant() {
    let mut d = Daemon::start_with("[ledger]\nexpiry_interval_ms = 100\n").await;
    let c = d.customer("acme", "USD").await;
    let grant = |key: &'static str, body: Value| {
        let d = &d;
        async move {
            let r = d.post("/v1/credit-grants", Some(key), &body).await;
            assert_eq!(r.status, 201, "{}", r.json);
            r.json
        }
    };
    let soon = grant("g1", json!({"customer": c, "amount_minor": 300, "currency": "USD", "category": "promotional", "expires_at": at(2)})).await;
    let paid = grant("g2", json!({"customer": c, "amount_minor": 1000, "currency": "USD", "category": "paid", "priority": 1})).await;
    let before_expiry = at(0);
    d.post("/v1/credit-grants", Some("bad"), &json!({"customer": c, "amount_minor": 1, "currency": "USD", "category": "paid", "effective_at": at(10), "expires_at": at(5)}))
        .await
        .assert_problem(400, "validation_failed");
    d.post("/v1/credit-grants", Some("bad2"), &json!({"customer": "cus_00000000000000000000000000", "amount_minor": 1, "currency": "USD", "category": "paid"}))
        .await
        .assert_problem(404, "resource_missing");
    tokio::time::sleep(Duration::from_millis(2600)).await;
    d.eventually("the promotional grant to expire", || async {
        d.get(&format!(
            "/v1/credit-grants/{}",
            soon["id"].as_str().unwrap_or("")
        ))
        .await
        .json["status"]
            == "expired"
    })
    .await;
    d.restart().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let entries = d.get("/v1/journal-entries").await;
    let kinds: Vec<&str> = entries.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "credit_expiry").count(),
        1,
        "expired exactly once: {kinds:?}"
    );
    let now = d.get(&format!("/v1/customers/{c}/balance")).await;
    assert_eq!(now.json["balances"][0]["credits_available_minor"], 1000);
    let then = d
        .get(&format!("/v1/customers/{c}/balance?at={before_expiry}"))
        .await;
    assert_eq!(
        then.json["balances"][0]["credits_available_minor"], 1300,
        "{}",
        then.json
    );
    // Voiding reverses what remains.
    let voided = d
        .post(
            &format!(
                "/v1/credit-grants/{}/void",
                paid["id"].as_str().expect("id")
            ),
            Some("v1"),
            &json!({}),
        )
        .await;
    assert_eq!(voided.json["status"], "voided");
    d.post(
        &format!(
            "/v1/credit-grants/{}/void",
            paid["id"].as_str().expect("id")
        ),
        Some("v2"),
        &json!({}),
    )
    .await
    .assert_problem(409, "grant_not_active");
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

#[tokio::test]
async fn tally_verify_finds_an_edited_entry_in_a_copy_of_the_file() {
    crate::backend::redb_only!("it edits a copy of the redb file");
    let mut d = Daemon::start().await;
    let c = d.customer("acme", "USD").await;
    for (k, amount) in [("a", 100), ("b", 200), ("c", 300)] {
        let r = d.post("/v1/credit-grants", Some(k), &json!({"customer": c, "amount_minor": amount, "currency": "USD", "category": "paid"})).await;
        assert_eq!(r.status, 201);
    }
    d.stop();
    let ok = d.cli(&["verify"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ledger ok"));
    // Edit entry #2 in a copy through the storage layer, as an attacker with the file would.
    let copy = d.dir.path().join("copy.redb");
    std::fs::copy(d.dir.path().join("tally.redb"), &copy).expect("copy");
    let target = {
        let store = tally::store::Store::open(&copy, 1 << 20).expect("open copy");
        let tx = store.begin_write().expect("tx");
        let target;
        {
            let mut table = tx
                .open_table(tally::store::tables::JOURNAL)
                .expect("journal");
            let mut key = 1u64.to_be_bytes().to_vec();
            key.extend_from_slice(&2u64.to_be_bytes());
            let mut entry: tally::ledger::journal::JournalEntry = tally::store::codec::decode(
                tally::store::ReadableTable::get(&table, key.as_slice())
                    .expect("get")
                    .expect("entry")
                    .value(),
            )
            .expect("decode");
            entry.postings[0].amount_minor += 1;
            entry.postings[1].amount_minor -= 1;
            target = entry.id.display(tally::ledger::journal::PREFIX);
            let bytes = tally::store::codec::encode(&entry).expect("encode");
            table
                .insert(key.as_slice(), bytes.as_slice())
                .expect("insert");
        }
        tx.commit().expect("commit");
        target
    };
    let out = crate::harness::hermetic(std::process::Command::new(crate::harness::BIN))
        .args(["verify"])
        .env("TALLY_DATABASE_PATH", &copy)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&target), "names the entry: {err}");
}
