//! The console's overview and alerts pages: real figures after real traffic, the ingest chart,
//! the last verification surviving a restart, creating and archiving alerts in a browser,
//! read-only refusals and a double-submitted create form.

use serde_json::{json, Value};

use crate::browser::Browser;
use crate::console::{http_sign_in, new_key, HttpSession};
use crate::harness::{at, Daemon};

/// Deliveries go to a closed port and give up after one attempt: a failing delivery and a
/// dead letter.
const FAILING: &str =
    "[notifications]\nallow_http = true\nallow_private_targets = true\nretry_schedule_secs = [0]\n";

async fn meter(d: &Daemon) {
    let r = d
        .post(
            "/v1/meters",
            Some("meter-tokens"),
            &json!({"key": "tokens", "event_type": "llm", "aggregation": "sum", "value_property": "tokens"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
}

fn value_of(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect(name) + marker.len();
    let end = html[start..].find('"').expect("end") + start;
    html[start..end].to_string()
}

async fn alerts(d: &Daemon) -> Vec<Value> {
    let r = d.get("/v1/alerts?limit=50").await;
    assert_eq!(r.status, 200, "{}", r.json);
    r.json["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn the_overview_shows_real_figures_and_verifies_the_books() {
    let d = Daemon::start_with(FAILING).await;
    meter(&d).await;
    let r = d
        .post(
            "/v1/event-destinations",
            Some("evd-closed"),
            &json!({"url": "http://127.0.0.1:9/hook", "event_types": ["customer.created"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    d.customer("acme", "EUR").await;
    let e = |id: &str| json!({"id": id, "customer": "acme", "type": "llm", "timestamp": at(0), "properties": {"tokens": 5}});
    let r = d
        .post(
            "/v1/events",
            None,
            &json!({"events": [e("a"), e("a"), e("b"), e("c")]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    d.eventually("a dead letter", || async {
        d.get("/v1/dead-letters").await.json["data"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let dead = d.get("/v1/dead-letters?limit=500").await.json["data"]
        .as_array()
        .map_or(0, Vec::len);

    let Some(b) = Browser::open(&d.base).await else {
        return;
    };
    b.sign_in(&d.key).await;
    assert_eq!(b.path().await, "/console");
    let health = b.text("#health").await;
    assert!(
        health.contains("ready") && !health.contains("not ready"),
        "{health}"
    );
    assert_eq!(b.text("#dead-letters").await, dead.to_string());
    assert_eq!(b.text("#deliveries-failing").await, "1");
    let ingest = b.text("#ingest").await;
    assert!(
        ingest.contains("3\nEvents stored in the last hour"),
        "{ingest}"
    );
    assert!(
        b.has("figure.chart rect:not([height='0'])").await,
        "the chart has a bar"
    );
    assert!(b.text("#last-verify").await.contains("never"));
    b.click_button("Verify the books now").await;
    assert_eq!(b.path().await, "/console");
    assert!(
        b.body().await.contains("The books verify"),
        "{}",
        b.body().await
    );
    let last = b.text("#last-verify").await;
    assert!(!last.contains("never") && last.contains("UTC"), "{last}");
    b.screenshot("overview").await;
    b.click("#dead-letters").await;
    assert_eq!(b.path().await, "/console/dead-letters");
    b.close().await;
}

/// `tally verify` (the daemon down, as it needs the file) records too, and the record
/// survives the restart.
#[tokio::test]
async fn a_verification_by_the_cli_is_shown_after_a_restart() {
    let mut d = Daemon::start().await;
    let s = http_sign_in(&d, &d.key).await.expect("signed in");
    assert!(s.get(&d, "/console").await.2.contains("never"));
    d.kill9();
    let out = d.cli(&["verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.restart().await;
    let s = http_sign_in(&d, &d.key).await.expect("signed in again");
    let (status, _, html) = s.get(&d, "/console").await;
    assert_eq!(status, 200);
    let line = html
        .split("id=\"last-verify\"")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .expect("last verify line")
        .to_string();
    assert!(!line.contains("never") && line.contains("UTC"), "{line}");
}

#[tokio::test]
async fn alerts_are_created_listed_and_archived_with_confirmation_in_a_browser() {
    let d = Daemon::start().await;
    meter(&d).await;
    let Some(b) = Browser::open(&d.base).await else {
        return;
    };
    b.sign_in(&d.key).await;
    b.goto("/console/alerts").await;
    assert!(b.body().await.contains("No alerts yet."));
    // The API's objection is shown, nothing is made.
    b.click("#type option[value='credit_balance_below']").await;
    b.fill("#thresholds", "lots").await;
    b.click_button("Create alert").await;
    assert_eq!(b.path().await, "/console/alerts");
    let error = b.text(".flash.error").await;
    assert!(error.contains("thresholds"), "{error}");
    assert!(alerts(&d).await.is_empty());

    b.click("#type option[value='usage_exceeded']").await;
    b.fill("#thresholds", "100, 250.5").await;
    b.fill("#meter", "tokens").await;
    b.fill("#name", "Token <quota>").await;
    b.click_button("Create alert").await;
    assert!(
        b.path().await.starts_with("/console/alerts/alr_"),
        "{}",
        b.path().await
    );
    let page = b.body().await;
    assert!(page.contains("Alert created."), "{page}");
    assert!(
        page.contains("100, 250.5") && page.contains("every customer"),
        "{page}"
    );
    assert!(page.contains("It has not fired."), "{page}");
    let created = alerts(&d).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["name"], "Token <quota>");
    assert_eq!(created[0]["thresholds"], json!(["100", "250.5"]));

    b.goto("/console/alerts").await;
    let table = b.text("#alerts").await;
    assert!(
        table.contains("Token <quota>")
            && table.contains("usage_exceeded")
            && table.contains("active"),
        "{table}"
    );
    b.screenshot("alerts").await;
    b.click_link("Token <quota>").await;
    b.click_button("Archive alert").await;
    assert!(b.body().await.contains("Please confirm"));
    assert_eq!(alerts(&d).await[0]["active"], true, "asking does nothing");
    b.click_button("Yes, do it").await;
    let page = b.body().await;
    assert!(
        page.contains("Alert archived.") && page.contains("archived"),
        "{page}"
    );
    assert!(
        !b.has("form.action button.danger").await,
        "an archived alert has no archive button"
    );
    assert_eq!(alerts(&d).await[0]["active"], false);
    b.close().await;
}

#[tokio::test]
async fn a_double_submitted_create_form_makes_one_alert() {
    let d = Daemon::start().await;
    meter(&d).await;
    let s = http_sign_in(&d, &d.key).await.expect("signed in");
    let (_, _, html) = s.get(&d, "/console/alerts").await;
    let key = value_of(&html, "idempotency_key");
    let form = [
        ("csrf", s.csrf.as_str()),
        ("idempotency_key", key.as_str()),
        ("type", "usage_exceeded"),
        ("thresholds", "10"),
        ("meter", "tokens"),
        ("customer", ""),
        ("currency", ""),
        ("name", "twice"),
    ];
    let first = s.post(&d, "/console/alerts", &form).await;
    let second = s.post(&d, "/console/alerts", &form).await;
    assert_eq!(first.0, 303, "{}", first.2);
    assert!(first.1.starts_with("/console/alerts/alr_"), "{}", first.1);
    assert_eq!(second.1, first.1, "the replay opens the same alert");
    let (_, _, page) = s.get(&d, &second.1).await;
    assert!(page.contains("already submitted"), "{page}");
    assert_eq!(alerts(&d).await.len(), 1);
}

#[tokio::test]
async fn a_read_only_key_sees_no_alert_actions_and_its_posts_are_refused() {
    let d = Daemon::start().await;
    meter(&d).await;
    let r = d
        .post(
            "/v1/alerts",
            Some("alert-ro"),
            &json!({"type": "usage_exceeded", "meter": "tokens", "thresholds": ["5"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    let alert = r.json["id"].as_str().expect("id").to_string();
    let (_, key) = new_key(&d, &["--read-only"]);
    let s: HttpSession = http_sign_in(&d, &key).await.expect("signed in");
    let (status, _, list) = s.get(&d, "/console/alerts").await;
    assert_eq!(status, 200);
    assert!(
        list.contains(&alert) && !list.contains("Create alert"),
        "{list}"
    );
    let (_, _, one) = s.get(&d, &format!("/console/alerts/{alert}")).await;
    assert!(
        one.contains("active") && !one.contains("Archive alert"),
        "{one}"
    );
    let create = s
        .post(
            &d,
            "/console/alerts",
            &[
                ("csrf", s.csrf.as_str()),
                ("idempotency_key", "ro-create"),
                ("type", "usage_exceeded"),
                ("thresholds", "1"),
                ("meter", "tokens"),
            ],
        )
        .await;
    assert_eq!(create.0, 403, "{}", create.2);
    let archive = s
        .post(
            &d,
            &format!("/console/alerts/{alert}/archive"),
            &[
                ("csrf", s.csrf.as_str()),
                ("idempotency_key", "ro-archive"),
                ("confirmed", "yes"),
            ],
        )
        .await;
    assert_eq!(archive.0, 403, "{}", archive.2);
    let now = alerts(&d).await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0]["active"], true);
}
