//! Moving a whole database between the redb file and PostgreSQL with `tally migrate`, and
//! backing up a PostgreSQL database into a portable redb file.

use serde_json::{json, Value};

use crate::harness::{at, Daemon};

/// Customers, a paid grant, usage, a billed subscription and its invoice.
async fn populate(d: &Daemon) {
    let meter = d
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "calls", "event_type": "call", "aggregation": "count"}),
        )
        .await;
    assert_eq!(meter.status, 201, "{}", meter.json);
    let plan = d
        .post(
            "/v1/plans",
            Some("plan"),
            &json!({"code": "d", "name": "D", "currency": "USD", "interval": "day",
                "fixed_fee": {"amount_minor": 1000}}),
        )
        .await;
    assert_eq!(plan.status, 201, "{}", plan.json);
    let c = d.customer("acme", "USD").await;
    d.customer("globex", "USD").await;
    let grant = d
        .post(
            "/v1/credit-grants",
            Some("g"),
            &json!({"customer": c, "amount_minor": 900, "currency": "USD", "category": "paid"}),
        )
        .await;
    assert_eq!(grant.status, 201, "{}", grant.json);
    let events: Vec<Value> = (0..30)
        .map(|i| json!({"id": format!("e{i}"), "customer": "acme", "type": "call", "timestamp": at(-60)}))
        .collect();
    let ingested = d.post("/v1/events", None, &json!({"events": events})).await;
    assert!(ingested.status < 300, "{}", ingested.json);
    let today = &at(0)[..10];
    let start =
        tally::clock::parse_rfc3339(&format!("{today}T00:00:00Z")).expect("t") - 3 * 86_400_000;
    let s = d
        .post(
            "/v1/subscriptions",
            Some("sub"),
            &json!({"customer": "acme", "plan": "d", "start_at": tally::clock::rfc3339(start)}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    let run = d.post("/v1/billing-runs", Some("run"), &json!({})).await;
    assert!(run.status == 201 || run.status == 202, "{}", run.json);
}

/// What a client sees: the answers compared across copies.
async fn answers(d: &Daemon) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/v1/customers?limit=100".to_string(),
        "/v1/invoices?limit=100".to_string(),
        "/v1/journal-entries?limit=500".to_string(),
        format!("/v1/usage?customer=acme&meter=calls&from={}", at(-3600)),
    ] {
        let r = d.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.json);
        out.push(r.json);
    }
    // The usage window and the balance's instant are the time of asking: compare the rest.
    let usage = out.pop().expect("usage");
    out.push(json!([usage["total"], usage["data"][0]["events"]]));
    let c = out[0]["data"][0]["id"]
        .as_str()
        .expect("customer")
        .to_string();
    let mut balance = d.get(&format!("/v1/customers/{c}/balance")).await.json;
    balance["at"] = Value::Null;
    out.push(balance);
    // A replayed request answers from the copied idempotency record.
    let replay = d.post("/v1/billing-runs", Some("run"), &json!({})).await;
    assert_eq!(
        replay.header("idempotent-replayed"),
        Some("true"),
        "{}",
        replay.json
    );
    out
}

fn migrate(d: &Daemon, from: &str, to: &str) {
    let out = d.cli(&["migrate", "--from", from, "--to", to]);
    assert!(
        out.status.success(),
        "migrate {from} → {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("counts agree per table"), "{text}");
    assert!(text.contains("ledger verifies"), "{text}");
}

#[tokio::test]
async fn redb_to_postgres_and_back_gives_identical_answers() {
    crate::backend::postgres_only!("needs a PostgreSQL database to migrate to");
    let mut source = Daemon::start_redb().await;
    populate(&source).await;
    let want = answers(&source).await;
    source.stop();
    let file = source.dir.path().join("tally.redb").display().to_string();
    let url = crate::backend::fresh_database_url();
    migrate(&source, &file, &url);
    let mut on_postgres = Daemon::start_existing(&url, &source.key).await;
    assert_eq!(answers(&on_postgres).await, want, "redb → PostgreSQL");
    on_postgres.stop();
    let back = source.dir.path().join("back.redb").display().to_string();
    migrate(&source, &url, &back);
    let on_redb = Daemon::start_existing(&back, &source.key).await;
    assert_eq!(answers(&on_redb).await, want, "PostgreSQL → redb");
    // A target that already holds data is refused and left alone.
    let again = source.cli(&["migrate", "--from", &file, "--to", &url]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[tokio::test]
async fn a_backup_of_postgres_taken_while_serving_is_a_portable_file() {
    crate::backend::postgres_only!("backs up a PostgreSQL database");
    let d = Daemon::start().await;
    populate(&d).await;
    let want = answers(&d).await;
    let backup = d.dir.path().join("backup.redb");
    let out = d.cli(&["backup", "--out", backup.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("its ledger verifies"));
    // Written after the snapshot: not in the backup.
    d.customer("after-backup", "USD").await;
    // The backup serves as a redb database, and loads into a new PostgreSQL database.
    let file = backup.display().to_string();
    let copy = d.dir.path().join("copy.redb");
    std::fs::copy(&backup, &copy).expect("copy");
    let on_redb = Daemon::start_existing(&copy.display().to_string(), &d.key).await;
    assert_eq!(answers(&on_redb).await, want);
    let url = crate::backend::fresh_database_url();
    migrate(&d, &file, &url);
    let on_postgres = Daemon::start_existing(&url, &d.key).await;
    assert_eq!(answers(&on_postgres).await, want);
    // Restore is for redb files; PostgreSQL is loaded with migrate.
    let refused = d.cli(&["restore", &file]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("tally migrate"));
}
