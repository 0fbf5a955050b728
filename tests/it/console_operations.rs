//! The console's operations pages in a real browser and over HTTP: dead letters (replay one,
//! replay all after a confirmation), inbound webhook receipts, outbound notifications with
//! their deliveries and resend; double submits, read-only keys and forged forms.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::browser::Browser;
use crate::console::{http_sign_in, new_key, HttpSession};
use crate::harness::Daemon;
use tally::webhooks::signature;

/// One attempt per job (dead at the first failure); deliveries to 127.0.0.1 allowed.
pub(crate) const CONFIG: &str =
    "[jobs]\nmax_attempts = 1\n[notifications]\nallow_http = true\nallow_private_targets = true\n";
/// A customer id that is markup: every page must show it as text.
const XSS: &str = "<img src=x onerror=alert(1)>";
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A standard-webhooks endpoint for inbound provider events.
pub(crate) async fn endpoint(d: &Daemon) -> String {
    let r = d
        .post(
            "/v1/webhook-endpoints",
            Some("ep-ops"),
            &json!({"provider": "standard", "secret": SECRET}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    r.json["id"].as_str().expect("id").to_string()
}

/// Sends a signed usage event for a customer that does not exist: with one attempt per job
/// its processing dies at once. Returns the receipt's id once it is dead.
pub(crate) async fn dead_receipt(d: &Daemon, ep: &str, msg: &str, customer: &str) -> String {
    let body = json!({"type": "usage.recorded", "data": {"id": msg, "customer": customer, "type": "call"}})
        .to_string();
    let ts = now_s();
    let sig = signature::sign_standard(SECRET, msg, ts, body.as_bytes()).expect("sign");
    let r = d
        .send(
            d.client
                .post(d.url(&format!("/v1/hooks/{ep}")))
                .header("webhook-id", msg)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", format!("v1,{sig}"))
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
    assert!(r.status < 300, "{}", r.json);
    let id = r.json["id"].as_str().expect("receipt id").to_string();
    d.eventually("a dead receipt", || async {
        d.get(&format!("/v1/webhook-events/{id}")).await.json["status"] == "dead"
    })
    .await;
    id
}

/// The dead letters as the API lists them.
pub(crate) async fn dead_letters(d: &Daemon) -> Vec<Value> {
    d.get("/v1/dead-letters").await.json["data"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A receiver that answers 200 to every delivery and counts them.
pub(crate) async fn receiver() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let app = Router::new().route(
        "/hook",
        post(move || {
            let hits = Arc::clone(&counted);
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), hits)
}

/// Creates an event destination; returns its id.
pub(crate) async fn destination(d: &Daemon, key: &str, url: &str) -> String {
    let r = d
        .post(
            "/v1/event-destinations",
            Some(key),
            &json!({"url": url, "event_types": ["customer.created"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json);
    r.json["id"].as_str().expect("id").to_string()
}

/// The fields of the first rendered form whose action starts with `action`: `(action, fields)`.
fn form_fields(html: &str, action: &str) -> (String, Vec<(String, String)>) {
    let marker = format!("action=\"{action}");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no form {action} in {html}"));
    let end = html[start..].find("</form>").expect("form end") + start;
    let form = &html[start..end];
    let attr = |text: &str, name: &str| -> Option<String> {
        let m = format!("{name}=\"");
        let s = text.find(&m)? + m.len();
        let e = text[s..].find('"')? + s;
        Some(text[s..e].replace("&amp;", "&"))
    };
    let action = attr(form, "action").expect("action");
    let fields = form
        .split("<input")
        .skip(1)
        .filter_map(|input| Some((attr(input, "name")?, attr(input, "value")?)))
        .collect();
    (action, fields)
}

async fn post_form(
    s: &HttpSession,
    d: &Daemon,
    action: &str,
    fields: &[(String, String)],
) -> (u16, String, String) {
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    s.post(d, action, &pairs).await
}

/// The message the page shows after an action, once the page after it has loaded.
async fn flash_text(b: &Browser) -> String {
    for _ in 0..100 {
        if b.has("p.flash").await {
            return b.text("p.flash").await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no message after the action: {}", b.body().await);
}

#[tokio::test]
async fn an_operator_replays_a_dead_letter_and_resends_a_notification_in_a_browser() {
    let d = Daemon::start_with(CONFIG).await;
    let (url, hits) = receiver().await;
    let evd = destination(&d, "evd-ops", &url).await;
    let off = destination(&d, "evd-off", "http://127.0.0.1:9/off").await;
    let r = d
        .post(
            &format!("/v1/event-destinations/{off}"),
            Some("evd-off-disable"),
            &json!({"status": "disabled"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let ep = endpoint(&d).await;
    let receipt = dead_receipt(&d, &ep, "msg_later", "later").await;
    let Some(b) = Browser::open(&d.base).await else {
        return;
    };
    b.sign_in(&d.key).await;

    // The dead letter: kind, last error, attempts, payload.
    b.goto("/console/dead-letters").await;
    let page = b.body().await;
    assert!(page.contains("webhook.process"), "{page}");
    assert!(b.text("td.last-error").await.contains("later"), "{page}");
    b.click("details summary").await;
    assert!(b.text("pre.json").await.contains("whv_"), "{page}");
    b.screenshot("dead-letters").await;

    // A double click on Replay replays once: the job runs again and dies again (its cause is
    // still there), replayed once.
    let job = dead_letters(&d).await[0]["id"]
        .as_str()
        .expect("job")
        .to_string();
    let replays = || async {
        dead_letters(&d)
            .await
            .iter()
            .find(|l| l["id"] == job.as_str())
            .and_then(|l| l["replays"].as_u64())
    };
    b.double_click_button("Replay").await;
    let flash = flash_text(&b).await;
    assert!(flash.contains(&format!("Replayed {job}")), "{flash}");
    d.eventually("dead again", || async { replays().await == Some(1) })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(replays().await, Some(1), "one replay");

    // Fix the cause, replay it: the page says what was replayed, and it is gone.
    d.customer("later", "USD").await;
    b.goto("/console/dead-letters").await;
    b.click_button("Replay").await;
    assert_eq!(b.path().await, "/console/dead-letters");
    let flash = flash_text(&b).await;
    assert!(
        flash.starts_with("Replayed job_") && flash.contains("webhook.process"),
        "{flash}"
    );
    let status = format!("/v1/webhook-events/{receipt}");
    d.eventually("the receipt processed", || async {
        d.get(&status).await.json["status"] == "processed"
    })
    .await;
    assert!(dead_letters(&d).await.is_empty());
    b.goto("/console/dead-letters").await;
    assert!(b.body().await.contains("No dead letters match."));
    let events = d.get("/v1/events?customer=later").await;
    assert_eq!(events.json["data"].as_array().map(Vec::len), Some(1));

    // The receipt's page: payload and outcome.
    b.goto("/console/webhook-events").await;
    b.click_link(&receipt).await;
    let page = b.body().await;
    assert!(
        page.contains("usage.recorded") && page.contains("processed"),
        "{page}"
    );
    assert!(b.has(".status.good").await, "{page}");
    let record = b.text("dl.fields").await;
    assert!(
        !record.contains("does not exist yet"),
        "no stale error: {record}"
    );
    assert!(b.text("pre.json").await.contains("\"later\""), "{page}");
    b.screenshot("webhook-receipt").await;

    // The notification of the new customer, its delivery, and a resend.
    let listed = d.get("/v1/notifications?type=customer.created").await;
    let ntf = listed.json["data"][0]["id"]
        .as_str()
        .expect("a notification")
        .to_string();
    let deliveries = format!("/v1/notifications/{ntf}/deliveries");
    d.eventually("the first delivery", || async {
        d.get(&deliveries).await.json["data"][0]["status"] == "delivered"
    })
    .await;
    b.goto("/console/notifications").await;
    let page = b.body().await;
    assert!(page.contains(&evd) && page.contains(&url), "{page}");
    assert!(b.text("tr.disabled").await.contains("disabled"), "{page}");
    assert!(b.has("tr.disabled .status.bad").await, "marked: {page}");
    b.screenshot("notifications").await;
    b.click_link(&ntf).await;
    assert!(b.body().await.contains("delivered"));
    b.click_button("Resend to every destination").await;
    assert_eq!(b.path().await, format!("/console/notifications/{ntf}"));
    let flash = flash_text(&b).await;
    assert!(
        flash.contains(&format!("Resend queued to {evd}")),
        "{flash}"
    );
    d.eventually("a second delivery", || async {
        d.get(&deliveries).await.json["data"][0]["attempts"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    })
    .await;
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    b.goto(&format!("/console/notifications/{ntf}")).await;
    b.screenshot("notification").await;
    b.close().await;
}

#[tokio::test]
async fn one_replay_form_posted_twice_replays_once_and_replay_all_asks_first() {
    let d = Daemon::start_with(CONFIG).await;
    let ep = endpoint(&d).await;
    let receipt = dead_receipt(&d, &ep, "msg_a", "nobody-a").await;
    dead_receipt(&d, &ep, "msg_b", "nobody-b").await;
    let s = http_sign_in(&d, &d.key).await.expect("signed in");
    let (_, _, page) = s.get(&d, "/console/dead-letters").await;
    let (action, fields) = form_fields(&page, "/console/dead-letters/job_");
    let job = action
        .trim_start_matches("/console/dead-letters/")
        .trim_end_matches("/replay")
        .to_string();
    let replays = |letters: Vec<Value>| -> Option<u64> {
        letters
            .iter()
            .find(|l| l["id"] == job.as_str())
            .and_then(|l| l["replays"].as_u64())
    };

    // A forged copy does nothing.
    let forged: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.clone(), if k == "csrf" { "x".into() } else { v.clone() }))
        .collect();
    assert_eq!(post_form(&s, &d, &action, &forged).await.0, 403);
    assert_eq!(replays(dead_letters(&d).await), Some(0));

    // The first post replays; the job dies again (its cause is still there).
    let (status, location, _) = post_form(&s, &d, &action, &fields).await;
    assert_eq!((status, location.as_str()), (303, "/console/dead-letters"));
    let (_, _, page) = s.get(&d, "/console/dead-letters").await;
    assert!(page.contains(&format!("Replayed {job}")), "{page}");
    d.eventually("dead again after one replay", || async {
        replays(dead_letters(&d).await) == Some(1)
    })
    .await;
    // The same form again is a replay of the answer, not a second replay.
    let (status, _, _) = post_form(&s, &d, &action, &fields).await;
    assert_eq!(status, 303);
    let (_, _, page) = s.get(&d, "/console/dead-letters").await;
    assert!(page.contains("already submitted"), "{page}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(replays(dead_letters(&d).await), Some(1));

    // Replay all asks first, saying how many match, and does nothing until confirmed.
    let (all_action, all_fields) = form_fields(&page, "/console/dead-letters/replay");
    let (status, _, asked) = post_form(&s, &d, &all_action, &all_fields).await;
    assert_eq!(status, 200);
    assert!(
        asked.contains("Replay the 2 dead letters (every dead letter, no filter)?"),
        "{asked}"
    );
    assert!(asked.contains("Yes, do it"), "{asked}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total: u64 = dead_letters(&d)
        .await
        .iter()
        .filter_map(|l| l["replays"].as_u64())
        .sum();
    assert_eq!(total, 1, "nothing replayed before the confirmation");
    let mut confirmed = all_fields.clone();
    confirmed.push(("confirmed".into(), "yes".into()));
    let (status, location, _) = post_form(&s, &d, &all_action, &confirmed).await;
    assert_eq!((status, location.as_str()), (303, "/console/dead-letters"));
    let (_, _, page) = s.get(&d, "/console/dead-letters").await;
    assert!(page.contains("Replayed 2 dead letters"), "{page}");
    d.eventually("both dead again", || async {
        let letters = dead_letters(&d).await;
        letters.len() == 2
            && letters
                .iter()
                .filter_map(|l| l["replays"].as_u64())
                .sum::<u64>()
                == 3
    })
    .await;

    // A filter that matches nothing replays nothing and says so.
    let (_, _, page) = s.get(&d, "/console/dead-letters?kind=no.such.kind").await;
    assert!(page.contains("No dead letters match."), "{page}");
    let (status, _, _) = s
        .post(
            &d,
            "/console/dead-letters/replay",
            &[
                ("csrf", s.csrf.as_str()),
                ("idempotency_key", "console-none"),
                ("kind", "no.such.kind"),
            ],
        )
        .await;
    assert_eq!(status, 303);
    let (_, _, page) = s.get(&d, "/console/dead-letters").await;
    assert!(page.contains("Nothing to replay"), "{page}");

    // The dead letter links to its receipt, whose page replays it.
    let receipt_page = format!("/console/webhook-events/{receipt}");
    assert!(page.contains(&format!("href=\"{receipt_page}\"")), "{page}");
    let (_, _, listed) = s.get(&d, "/console/webhook-events?status=dead").await;
    assert!(listed.contains(&receipt), "{listed}");
    let (_, _, shown) = s.get(&d, &receipt_page).await;
    assert!(shown.contains("nobody-a"), "{shown}");
    let (action, fields) = form_fields(&shown, "/console/webhook-events/whv_");
    let before = d.get(&format!("/v1/webhook-events/{receipt}")).await;
    let (status, location, _) = post_form(&s, &d, &action, &fields).await;
    assert_eq!((status, location.as_str()), (303, receipt_page.as_str()));
    let (_, _, shown) = s.get(&d, &receipt_page).await;
    assert!(
        shown.contains("Receipt queued for processing again."),
        "{shown}"
    );
    let after = d.get(&format!("/v1/webhook-events/{receipt}")).await;
    assert_eq!(
        after.json["replays"].as_u64(),
        before.json["replays"].as_u64().map(|n| n + 1),
        "{}",
        after.json
    );
}

#[tokio::test]
async fn a_read_only_key_sees_no_replay_or_resend_and_its_posts_are_refused() {
    let d = Daemon::start_with(CONFIG).await;
    let (url, _hits) = receiver().await;
    destination(&d, "evd-ro", &url).await;
    let ep = endpoint(&d).await;
    let receipt = dead_receipt(&d, &ep, "msg_ro", XSS).await;
    d.customer("ro-1", "USD").await;
    let listed = d.get("/v1/notifications?type=customer.created").await;
    let ntf = listed.json["data"][0]["id"]
        .as_str()
        .expect("a notification")
        .to_string();
    let job = dead_letters(&d).await[0]["id"]
        .as_str()
        .expect("job")
        .to_string();
    let (_, key) = new_key(&d, &["--read-only"]);
    let s = http_sign_in(&d, &key).await.expect("signed in");
    for path in [
        "/console/dead-letters".to_string(),
        format!("/console/webhook-events/{receipt}"),
        format!("/console/notifications/{ntf}"),
    ] {
        let (status, _, page) = s.get(&d, &path).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert!(
            !page.contains("idempotency_key"),
            "{path} shows an action: {page}"
        );
        assert!(
            !page.contains(">Replay<") && !page.contains(">Resend"),
            "{page}"
        );
    }
    let (_, _, page) = s.get(&d, "/console/dead-letters").await;
    assert!(page.contains(&job), "{page}");
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;") && !page.contains("<img src=x"),
        "shown escaped: {page}"
    );
    let (_, _, shown) = s
        .get(&d, &format!("/console/webhook-events/{receipt}"))
        .await;
    assert!(!shown.contains("<img src=x"), "shown escaped: {shown}");
    let (_, _, listed) = s
        .get(&d, "/console/notifications?type=customer.created")
        .await;
    assert!(listed.contains(&ntf), "{listed}");
    let (status, _, refused) = s.get(&d, "/console/notifications?type=no.such.type").await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.contains("catalogue"), "{refused}");
    for action in [
        format!("/console/dead-letters/{job}/replay"),
        "/console/dead-letters/replay".to_string(),
        format!("/console/webhook-events/{receipt}/replay"),
        format!("/console/notifications/{ntf}/resend"),
    ] {
        let (status, _, body) = s
            .post(
                &d,
                &action,
                &[
                    ("csrf", s.csrf.as_str()),
                    ("idempotency_key", "console-ro"),
                    ("confirmed", "yes"),
                ],
            )
            .await;
        assert_eq!(status, 403, "{action}: {body}");
        assert!(body.contains("read-only"), "{body}");
    }
    let letters = dead_letters(&d).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["replays"], 0, "nothing replayed");
    let receipt = d.get(&format!("/v1/webhook-events/{receipt}")).await;
    assert_eq!(receipt.json["replays"], 0);
}
