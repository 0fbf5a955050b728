//! Backups while serving, and restores.

use redb::ReadableTable;
use serde_json::json;

use crate::harness::Daemon;
use tally::store::backup::COMPLETION_KEY;
use tally::store::tables;

#[tokio::test]
async fn a_backup_taken_while_serving_restores_to_the_same_answers() {
    crate::backend::redb_only!(
        "restore replaces the redb file (PostgreSQL: tests/it/migration.rs)"
    );
    let mut d = Daemon::start().await;
    let c = d.customer("acme", "USD").await;
    let grant = d
        .post(
            "/v1/credit-grants",
            Some("g"),
            &json!({"customer": c, "amount_minor": 900, "currency": "USD", "category": "paid"}),
        )
        .await;
    assert_eq!(grant.status, 201);
    d.post(
        "/v1/events",
        None,
        &json!({"id": "e1", "customer": "acme", "type": "call"}),
    )
    .await;
    let backup = d.dir.path().join("backup.redb");
    let out = d.cli(&["backup", "--out", backup.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("its ledger verifies"));
    // Written after the snapshot: gone after the restore.
    d.customer("after-backup", "USD").await;
    let refused = d.cli(&["restore", backup.to_str().expect("path")]);
    assert!(
        !refused.status.success(),
        "a running database is never overwritten"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("in use"));
    let again = d.cli(&["backup", "--out", backup.to_str().expect("path")]);
    assert!(!again.status.success(), "a backup never overwrites a file");
    d.stop();
    let restored = d.cli(&["restore", backup.to_str().expect("path")]);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(d.cli(&["verify"]).status.success());
    // The previous file is kept under the name the README gives.
    let kept: Vec<String> = std::fs::read_dir(d.dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tally.redb.before-restore-"))
        .collect();
    assert_eq!(kept.len(), 1, "kept as tally.redb.before-restore-<ms>");
    d.restart().await;
    let customers = d.get("/v1/customers").await;
    let ids: Vec<&str> = customers.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|c| c["external_id"].as_str())
        .collect();
    assert_eq!(ids, ["acme"]);
    let balance = d.get(&format!("/v1/customers/{c}/balance")).await;
    assert_eq!(balance.json["balances"][0]["credits_available_minor"], 900);
    let dup = d
        .post(
            "/v1/events",
            None,
            &json!({"id": "e1", "customer": "acme", "type": "call"}),
        )
        .await;
    assert_eq!(dup.json["results"][0]["status"], "duplicate");
    // Idempotency records came along: the grant replays.
    let replay = d
        .post(
            "/v1/credit-grants",
            Some("g"),
            &json!({"customer": c, "amount_minor": 900, "currency": "USD", "category": "paid"}),
        )
        .await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
}

/// Takes a backup of a running daemon; returns its path.
fn take_backup(d: &Daemon, name: &str) -> std::path::PathBuf {
    let backup = d.dir.path().join(name);
    let out = d.cli(&["backup", "--out", backup.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    backup
}

/// Changes a backup file the way an interrupted or damaged backup would differ.
fn tamper(path: &std::path::Path, change: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::create(path).expect("open backup");
    let tx = db.begin_write().expect("write");
    change(&tx);
    tx.commit().expect("commit");
}

#[tokio::test]
async fn a_backup_that_did_not_finish_or_was_changed_is_refused_and_the_database_kept() {
    crate::backend::redb_only!(
        "restore replaces the redb file (PostgreSQL: tests/it/migration.rs)"
    );
    let mut d = Daemon::start().await;
    for name in ["acme", "globex", "initech"] {
        d.customer(name, "USD").await;
    }
    let grant = d
        .post(
            "/v1/credit-grants",
            Some("g"),
            &json!({"customer": d.customer("umbrella", "USD").await, "amount_minor": 900, "currency": "USD", "category": "paid"}),
        )
        .await;
    assert_eq!(grant.status, 201, "{}", grant.json);
    // An interrupted backup: its rows so far committed, its last commit (the marker) never.
    let unfinished = take_backup(&d, "unfinished.redb");
    tamper(&unfinished, |tx| {
        tx.open_table(tables::META.redb())
            .expect("meta")
            .remove(COMPLETION_KEY)
            .expect("remove");
    });
    // A finished backup that lost rows since.
    let truncated = take_backup(&d, "truncated.redb");
    tamper(&truncated, |tx| {
        let mut customers = tx.open_table(tables::CUSTOMERS.redb()).expect("customers");
        let first = customers
            .first()
            .expect("read")
            .map(|(k, _)| k.value().to_vec())
            .expect("a customer");
        customers.remove(first.as_slice()).expect("remove");
    });
    // A finished backup with the same rows but a changed value.
    let altered = take_backup(&d, "altered.redb");
    tamper(&altered, |tx| {
        let mut customers = tx.open_table(tables::CUSTOMERS.redb()).expect("customers");
        let (k, mut v) = customers
            .first()
            .expect("read")
            .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
            .expect("a customer");
        let last = v.len() - 1;
        v[last] ^= 1;
        customers
            .insert(k.as_slice(), v.as_slice())
            .expect("insert");
    });
    d.stop();
    for (file, says) in [
        (&unfinished, "no completion marker"),
        (&truncated, "rows where the marker says"),
        (&altered, "digest mismatch"),
    ] {
        let out = d.cli(&["restore", file.to_str().expect("path")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} was restored", file.display());
        assert!(stderr.contains("not a complete backup"), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
    let names: Vec<String> = std::fs::read_dir(d.dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tally.redb"))
        .collect();
    assert_eq!(names, ["tally.redb"], "nothing moved, nothing staged");
    d.restart().await;
    let customers = d.get("/v1/customers").await;
    assert_eq!(customers.json["data"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn a_database_that_no_longer_opens_is_replaced_by_a_restore_and_kept_aside() {
    crate::backend::redb_only!(
        "restore replaces the redb file (PostgreSQL: tests/it/migration.rs)"
    );
    let mut d = Daemon::start().await;
    d.customer("acme", "USD").await;
    let backup = take_backup(&d, "good.redb");
    d.stop();
    let live = d.dir.path().join("tally.redb");
    let size = std::fs::metadata(&live).expect("db").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&live)
        .expect("open");
    file.set_len(size / 3).expect("truncate");
    drop(file);
    let restored = d.cli(&["restore", backup.to_str().expect("path")]);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    d.restart().await;
    let customers = d.get("/v1/customers").await;
    assert_eq!(customers.json["data"][0]["external_id"], "acme");
}

#[tokio::test]
async fn space_names_the_tables_that_hold_the_rows_while_serving() {
    let d = Daemon::start().await;
    d.customer("acme", "USD").await;
    for i in 0..20 {
        let r = d
            .post(
                "/v1/events",
                None,
                &json!({"id": format!("e{i}"), "customer": "acme", "type": "call"}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    let out = d.cli(&["space"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |name: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(row("events")[1], "20", "{text}");
    assert_eq!(row("events_by_customer")[1], "20", "{text}");
    let allocated: u64 = row("events")[3].parse().expect("bytes");
    assert!(allocated > 0, "{text}");
    assert!(text.lines().any(|l| l.starts_with("total")), "{text}");
}
