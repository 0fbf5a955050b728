//! `/v1/api-keys`: list, create with the secret shown once (never replayed), revoke, tenant
//! isolation and read-only refusals.

use serde_json::json;

use crate::console::new_key;
use crate::harness::Daemon;

#[tokio::test]
async fn a_created_key_works_its_secret_is_never_replayed_and_revoking_stops_it() {
    let d = Daemon::start().await;
    let body = json!({"label": "ci <deploy>", "read_only": false});
    let created = d.post("/v1/api-keys", Some("mk-1"), &body).await;
    assert_eq!(created.status, 201, "{}", created.json);
    assert_eq!(created.header("idempotent-replayed"), Some("false"));
    let id = created.json["id"].as_str().expect("id").to_string();
    let secret = created.json["secret"].as_str().expect("secret").to_string();
    assert!(secret.starts_with("tally_sk_"));
    assert_eq!(created.json["secret_shown"], true);
    assert_eq!(created.json["label"], "ci <deploy>");
    assert_eq!(d.get_as(&secret, "/v1/customers").await.status, 200);

    // The replay answers the same key, without its secret: it was never stored.
    let replay = d.post("/v1/api-keys", Some("mk-1"), &body).await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json["id"], id.as_str());
    assert_eq!(replay.json["secret"], serde_json::Value::Null);
    assert_eq!(replay.json["secret_shown"], false);
    assert!(!String::from_utf8_lossy(&replay.bytes).contains(&secret));

    let listed = d.get("/v1/api-keys").await;
    assert_eq!(listed.status, 200);
    let keys = listed.json["data"].as_array().expect("data");
    assert_eq!(
        keys.len(),
        2,
        "the harness key and the new one: {}",
        listed.json
    );
    assert!(keys.iter().all(|k| k["secret"].is_null()));
    assert!(!String::from_utf8_lossy(&listed.bytes).contains("secret_hash"));
    let page = d.get("/v1/api-keys?limit=1").await;
    assert_eq!(page.json["has_more"], true);
    let cursor = page.json["next_cursor"].as_str().expect("cursor");
    let rest = d
        .get(&format!("/v1/api-keys?limit=1&starting_after={cursor}"))
        .await;
    assert_eq!(rest.json["data"][0]["id"], id.as_str());
    assert_eq!(rest.json["has_more"], false);

    let path = format!("/v1/api-keys/{id}/revoke");
    let revoked = d.post(&path, Some("rv-1"), &json!({})).await;
    assert_eq!(revoked.status, 200, "{}", revoked.json);
    assert!(revoked.json["revoked_at"].is_string());
    d.get_as(&secret, "/v1/customers")
        .await
        .assert_problem(401, "unauthorized");
    let again = d.post(&path, Some("rv-2"), &json!({})).await;
    assert_eq!(again.status, 200, "revoking twice changes nothing");
    assert_eq!(again.json["revoked_at"], revoked.json["revoked_at"]);

    d.post("/v1/api-keys", None, &json!({}))
        .await
        .assert_problem(400, "idempotency_key_missing");
    let long = "x".repeat(65);
    let bad = d
        .post("/v1/api-keys", Some("mk-2"), &json!({"label": long}))
        .await;
    bad.assert_problem(400, "validation_failed");
    assert_eq!(bad.fields(), vec!["label".to_string()]);
}

#[tokio::test]
async fn tenants_see_and_revoke_only_their_keys_and_read_only_keys_change_nothing() {
    let d = Daemon::start().await;
    let out = d.cli(&["tenant", "create", "other"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let other_secret = text
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("api key")
        .to_string();
    let other_id = text
        .lines()
        .find_map(|l| l.strip_prefix("key_id: "))
        .expect("key id")
        .to_string();

    let mine = d.get("/v1/api-keys").await;
    assert!(!mine.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .any(|k| k["id"] == other_id.as_str()));
    d.post(
        &format!("/v1/api-keys/{other_id}/revoke"),
        Some("steal"),
        &json!({}),
    )
    .await
    .assert_problem(404, "resource_missing");
    assert_eq!(d.get_as(&other_secret, "/v1/customers").await.status, 200);

    let (ro_id, ro_secret) = new_key(&d, &["--read-only", "--label", "support"]);
    let listed = d.get_as(&ro_secret, "/v1/api-keys").await;
    assert_eq!(listed.status, 200, "a read-only key may look");
    d.post_as(&ro_secret, "/v1/api-keys", Some("ro-1"), &json!({}))
        .await
        .assert_problem(403, "read_only_key");
    d.post_as(
        &ro_secret,
        &format!("/v1/api-keys/{ro_id}/revoke"),
        Some("ro-2"),
        &json!({}),
    )
    .await
    .assert_problem(403, "read_only_key");
    assert_eq!(
        d.get("/v1/api-keys").await.json["data"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // A key may revoke itself; it stops working at once.
    let own = d
        .post(
            &format!("/v1/api-keys/{}/revoke", first_key_id(&d).await),
            Some("self"),
            &json!({}),
        )
        .await;
    assert_eq!(own.status, 200, "{}", own.json);
    d.get("/v1/customers")
        .await
        .assert_problem(401, "unauthorized");
}

async fn first_key_id(d: &Daemon) -> String {
    let listed = d.get("/v1/api-keys").await;
    listed.json["data"][0]["id"]
        .as_str()
        .expect("id")
        .to_string()
}
