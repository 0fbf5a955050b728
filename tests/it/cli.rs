//! The operator CLI and configuration validation.

use crate::harness::{Daemon, BIN};

#[tokio::test]
async fn operator_commands_work_on_a_stopped_database_only() {
    crate::backend::redb_only!(
        "nothing locks a PostgreSQL database; operator commands write to it while nodes serve"
    );
    let mut d = Daemon::start().await;
    let busy = d.cli(&["tenant", "list"]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    assert_eq!(
        d.stop().map(|s| s.success()),
        Some(true),
        "SIGTERM drains and exits 0"
    );
    let created = d.cli(&["tenant", "create", "acme"]);
    assert!(created.status.success());
    let text = String::from_utf8_lossy(&created.stdout).to_string();
    assert!(text.contains("tenant: acme"));
    let key_id = text
        .lines()
        .find_map(|l| l.strip_prefix("key_id: "))
        .expect("key id")
        .to_string();
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("api key")
        .to_string();
    let list = d.cli(&["tenant", "list"]);
    let listing = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        listing.contains("default") && listing.contains("acme"),
        "{listing}"
    );
    let second = d.cli(&["key", "create", "--tenant", "acme"]);
    assert!(second.status.success());
    let second_secret = String::from_utf8_lossy(&second.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("api key")
        .to_string();
    let revoked = d.cli(&["key", "revoke", &key_id]);
    assert!(revoked.status.success());
    assert!(String::from_utf8_lossy(&revoked.stdout).contains("revoked: key_"));
    assert!(
        !d.cli(&["tenant", "create", "acme"]).status.success(),
        "names are unique"
    );
    d.restart().await;
    d.get_as(&secret, "/v1/customers")
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(d.get_as(&second_secret, "/v1/customers").await.status, 200);
}

#[test]
fn a_bad_configuration_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[writer]\nmax_batch_size = 0\n").expect("write");
    let out = crate::harness::hermetic(std::process::Command::new(BIN))
        .args(["--config", path.to_str().expect("path"), "serve"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("writer.max_batch_size"));
    std::fs::write(&path, "[writer]\nmax_batch = 3\n").expect("write");
    let out = crate::harness::hermetic(std::process::Command::new(BIN))
        .args(["--config", path.to_str().expect("path"), "serve"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_batch"));
    let out = crate::harness::hermetic(std::process::Command::new(BIN))
        .args(["serve"])
        .env("TALLY_DATABASE_PATH", dir.path().join("x.redb"))
        .env("TALLY_WEBHOOKS_TOLERANCE_SECS", "0")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("webhooks.tolerance_secs"));
}

#[test]
fn a_file_that_is_not_a_tally_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.redb");
    std::fs::write(&path, vec![7u8; 10_000]).expect("write");
    let out = crate::harness::hermetic(std::process::Command::new(BIN))
        .args(["tenant", "list"])
        .env("TALLY_DATABASE_PATH", &path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error") && !err.contains("panicked"), "{err}");
}

#[test]
fn the_benchmark_runs_every_scenario_and_verifies_the_stored_counts() {
    let out = crate::harness::hermetic(std::process::Command::new(BIN))
        .args([
            "bench",
            "--duration-secs",
            "1",
            "--clients",
            "4",
            "--usage-events",
            "2000",
            "--subscriptions",
            "20",
            "--scenarios",
            "ingest:8,batch,create,replay,usage:2,billing",
            "--json",
        ])
        .env(
            "TALLY_DATABASE_PATH",
            std::env::temp_dir().join("unused-by-bench.redb"),
        )
        .output()
        .expect("run bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["scenario"].as_str())
        .collect();
    assert_eq!(
        names,
        ["ingest", "batch", "create", "replay", "usage", "billing"]
    );
    let clients: Vec<u64> = scenarios
        .iter()
        .filter_map(|s| s["clients"].as_u64())
        .collect();
    assert_eq!(clients, [8, 4, 4, 4, 2, 4], "per-scenario client counts");
    for s in scenarios {
        assert_eq!(s["verified"], true, "{s}");
        assert_eq!(s["errors"], 0, "{s}");
        assert!(s["requests"].as_u64().is_some_and(|r| r > 0), "{s}");
    }
    assert!(report["peak_rss_kib"].as_u64().is_some_and(|k| k > 0));
}

#[test]
fn the_delivery_benchmark_receives_every_created_customers_event_signed_and_once() {
    let out = crate::harness::hermetic(std::process::Command::new(BIN))
        .args([
            "bench",
            "--duration-secs",
            "1",
            "--scenarios",
            "deliveries:2,create:2",
            "--json",
        ])
        .env(
            "TALLY_DATABASE_PATH",
            std::env::temp_dir().join("unused-by-bench.redb"),
        )
        .output()
        .expect("run bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let deliveries = &scenarios[0];
    assert_eq!(deliveries["scenario"], "deliveries", "{deliveries}");
    assert_eq!(deliveries["verified"], true, "{deliveries}");
    assert_eq!(deliveries["errors"], 0, "{deliveries}");
    assert!(
        deliveries["requests"].as_u64().is_some_and(|r| r > 0),
        "{deliveries}"
    );
    let check = deliveries["check"].as_str().unwrap_or_default();
    assert!(
        check.contains(" 0 missing") && check.contains(" 0 bad signatures"),
        "{check}"
    );
    // The destination is disabled afterwards: later creates are not delivered to a receiver
    // that is gone, and their scenario still verifies.
    assert_eq!(scenarios[1]["verified"], true, "{}", scenarios[1]);
}

#[test]
fn the_benchmark_refuses_an_unknown_scenario_or_client_count() {
    for (clients, spec) in [
        ("4", "nonsense"),
        ("4", "ingest:0"),
        ("4", "ingest:many"),
        ("0", "ingest"),
    ] {
        let out = crate::harness::hermetic(std::process::Command::new(BIN))
            .args([
                "bench",
                "--duration-secs",
                "1",
                "--clients",
                clients,
                "--scenarios",
                spec,
            ])
            .output()
            .expect("run bench");
        assert!(!out.status.success(), "{spec} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// The `name: value` line of a CLI's output.
fn field(out: &std::process::Output, name: &str) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} in {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn keys_are_created_and_revoked_while_serving_and_count_from_the_next_request() {
    let mut d = Daemon::start().await;
    let created = d.cli(&["key", "create", "--tenant", "default"]);
    let (key_id, secret) = (field(&created, "key_id"), field(&created, "api_key"));
    assert!(!d.stderr().contains(&secret), "a secret is never logged");
    assert_eq!(d.get_as(&secret, "/v1/customers").await.status, 200);
    let revoked = d.cli(&["key", "revoke", &key_id]);
    assert_eq!(field(&revoked, "revoked"), key_id);
    d.get_as(&secret, "/v1/customers")
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(
        d.get("/v1/customers").await.status,
        200,
        "other keys are untouched"
    );
    let twice = d.cli(&["key", "revoke", &key_id]);
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already revoked"));
    // A new tenant and its key, while serving, work at once and see only their own data.
    let tenant = d.cli(&["tenant", "create", "acme"]);
    let acme = field(&tenant, "api_key");
    d.customer("only-default", "USD").await;
    let listed = d.get_as(&acme, "/v1/customers").await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json["data"].as_array().map(Vec::len), Some(0));
    let unknown = d.cli(&["key", "create", "--tenant", "nobody"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nobody"));
    // The socket is the owner's only, and gone after shutdown. (On PostgreSQL the commands
    // write to the shared database and no socket exists.)
    let socket = d.dir.path().join("tally.redb.sock");
    if crate::backend::postgres() {
        assert!(!socket.exists());
        assert_eq!(d.stop().map(|s| s.success()), Some(true));
    } else {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&socket).expect("socket").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(d.stop().map(|s| s.success()), Some(true));
        assert!(!socket.exists());
    }
    // Revocations are stored: still refused after a restart.
    d.restart().await;
    d.get_as(&secret, "/v1/customers")
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(d.get_as(&acme, "/v1/customers").await.status, 200);
}
