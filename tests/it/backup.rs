//! Backups while serving, and restores.

use serde_json::json;

use crate::harness::Daemon;

#[tokio::test]
async fn a_backup_taken_while_serving_restores_to_the_same_answers() {
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
