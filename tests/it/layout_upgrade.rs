//! A database written by 0.8.0 (schema 4, usage rollups keyed meter first) opens with this
//! binary and answers every usage query as 0.8.0 did: on redb the file is converted in place;
//! on PostgreSQL it is converted by `tally migrate` on its way in. New events then add to the
//! converted rollups. The fixture and the answers come from `tests/fixtures/make-usage-0.8.0.sh`.

use serde_json::{json, Value};

use crate::harness::{hermetic, Daemon, BIN};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).expect("fixture")
}

/// The fixture copied (the original stays schema 4), moved into PostgreSQL on that backend.
fn upgraded_copy(dir: &std::path::Path) -> String {
    let file = dir.join("tally-0.8.0.redb");
    std::fs::copy(format!("{FIXTURES}/usage-0.8.0.redb"), &file).expect("copy fixture");
    let file = file.display().to_string();
    if !crate::backend::postgres() {
        return file;
    }
    let url = crate::backend::fresh_database_url();
    let out = hermetic(std::process::Command::new(BIN))
        .args(["migrate", "--from", &file, "--to", &url])
        .output()
        .expect("run migrate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    url
}

async fn answer(d: &Daemon, query: &str) -> Value {
    let r = d.get(&format!("/v1/usage?{query}")).await;
    assert_eq!(r.status, 200, "{query}: {}", r.json);
    let data: Vec<Value> = r.json["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|b| json!({"from": b["from"], "to": b["to"], "value": b["value"], "events": b["events"]}))
        .collect();
    json!({"query": query, "data": data, "total": r.json["total"]})
}

#[tokio::test]
async fn a_0_8_0_database_answers_every_usage_query_as_before_and_keeps_counting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = upgraded_copy(dir.path());
    let key = fixture("usage-0.8.0.key");
    let d = Daemon::start_existing(&database, key.trim()).await;
    let want: Vec<Value> = serde_json::from_str(&fixture("usage-0.8.0.json")).expect("answers");
    assert_eq!(want.len(), 70);
    for expected in &want {
        let query = expected["query"].as_str().expect("query");
        assert_eq!(&answer(&d, query).await, expected, "{query}");
    }

    // An event in an hour and a day the conversion summed adds to them exactly once.
    let day = "customer=north&meter=calls&from=2026-11-30T00:00:00Z&to=2026-12-01T00:00:00Z";
    let before = d.get(&format!("/v1/usage?{day}")).await.json["total"].clone();
    let sent = d
        .post(
            "/v1/events",
            None,
            &json!({"events": [{"id": "after-upgrade", "customer": "north", "type": "llm",
                                "timestamp": "2026-11-30T12:34:56Z",
                                "properties": {"total_tokens": 5, "user_id": "u1"}}]}),
        )
        .await;
    assert_eq!(sent.status, 200, "{}", sent.json);
    let after = d.get(&format!("/v1/usage?{day}")).await.json["total"].clone();
    let n = |v: &Value| {
        v.as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .expect("count")
    };
    assert_eq!(n(&after), n(&before) + 1, "{before} → {after}");

    // 0.8.0 recorded no event types: a new meter on its events' type counts every one of
    // them (667 stored, and the one just sent), however the database came here.
    let created = d
        .post(
            "/v1/meters",
            Some("m-after"),
            &json!({"key": "calls_again", "event_type": "llm", "aggregation": "count"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json);
    let id = created.json["id"].as_str().expect("id").to_string();
    d.eventually("the backfill to complete", || async {
        d.get(&format!("/v1/meters/{id}")).await.json["backfill_status"] == "complete"
    })
    .await;
    let counted = d.get(&format!("/v1/meters/{id}")).await.json["backfilled_events"].clone();
    assert_eq!(counted, 668, "{counted}");
}
