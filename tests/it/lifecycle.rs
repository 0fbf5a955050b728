//! The subscription lifecycle over HTTP: a trial that converts, an upgrade in the middle of a
//! period with proration, a downgrade at period end, cancel at period end and resume, a
//! preview that equals what is billed, and concurrent changes that make one change.
//!
//! Periods are daily; the subscription is backdated so that its current period ends a few
//! seconds after the test starts, and the test waits for that end to close it.

use serde_json::{json, Value};

use crate::harness::Daemon;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

fn rfc(ms: i64) -> String {
    tally::clock::rfc3339(ms)
}

async fn plans(d: &Daemon) {
    let m = d
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "calls", "event_type": "call", "aggregation": "count"}),
        )
        .await;
    assert_eq!(m.status, 201, "{}", m.json);
    for (code, fee, price) in [("basic", 1000, "0.10"), ("pro", 3000, "0.05")] {
        let p = d
            .post(
                "/v1/plans",
                Some(&format!("plan-{code}")),
                &json!({"code": code, "name": code, "currency": "USD", "interval": "day",
                        "fixed_fee": {"amount_minor": fee, "timing": "in_advance"},
                        "charges": [{"meter": "calls", "model": "per_unit", "unit_price": price}]}),
            )
            .await;
        assert_eq!(p.status, 201, "{}", p.json);
    }
}

async fn call(d: &Daemon, id: &str, at_ms: i64) {
    let r = d
        .post(
            "/v1/events",
            None,
            &json!({"id": id, "customer": "acme", "type": "call", "timestamp": rfc(at_ms)}),
        )
        .await;
    assert!(
        r.status == 200 || r.status == 201 || r.status == 202,
        "{}",
        r.json
    );
}

async fn run(d: &Daemon, key: &str) {
    let r = d.post("/v1/billing-runs", Some(key), &json!({})).await;
    assert!(r.status == 200 || r.status == 201, "{}", r.json);
}

/// The invoices of the customer, oldest first.
async fn invoices(d: &Daemon) -> Vec<Value> {
    let page = d.get("/v1/invoices?customer=acme&limit=100").await;
    let mut all = page.json["data"].as_array().expect("data").clone();
    all.sort_by_key(|i| i["id"].as_str().unwrap_or_default().to_string());
    all
}

/// (kind, amount_minor, period_start) of each line.
fn lines(invoice: &Value) -> Vec<(String, i64, String)> {
    invoice["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().expect("kind").to_string(),
                l["amount_minor"].as_i64().expect("amount"),
                l["period_start"].as_str().expect("start").to_string(),
            )
        })
        .collect()
}

fn line(kind: &str, amount: i64, start_ms: i64) -> (String, i64, String) {
    (kind.to_string(), amount, rfc(start_ms))
}

async fn verify_all(d: &Daemon) {
    for inv in invoices(d).await {
        let id = inv["id"].as_str().expect("id");
        let v = d.get(&format!("/v1/invoices/{id}/verify")).await;
        assert_eq!(v.json["matches"], true, "{id}: {}", v.json);
    }
    assert_eq!(d.get("/v1/ledger/verify").await.json["ok"], true);
}

async fn wait_until(ms: i64) {
    let now = tally::clock::now_ms();
    if ms > now {
        tokio::time::sleep(std::time::Duration::from_millis((ms - now) as u64 + 200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trial_convert_upgrade_downgrade_cancel_and_resume_line_by_line() {
    let d = Daemon::start().await;
    plans(&d).await;
    d.customer("acme", "USD").await;
    // The current period ends at `end`; the trial was the first of three days.
    let end = tally::clock::now_ms() + 5000;
    let start = end - 3 * DAY_MS;
    let s = d
        .post(
            "/v1/subscriptions",
            Some("sub"),
            &json!({"customer": "acme", "plan": "basic", "start_at": rfc(start),
                    "trial_end": rfc(start + DAY_MS)}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    assert_eq!(s.json["trial_end"], rfc(start + DAY_MS));
    assert_eq!(s.json["billing_anchor"], rfc(start + DAY_MS));
    let sub = s.json["id"].as_str().expect("id").to_string();
    call(&d, "in-trial", start + HOUR_MS).await;
    call(&d, "day-1", start + DAY_MS + HOUR_MS).await;
    call(&d, "day-2-basic", start + 2 * DAY_MS + HOUR_MS).await;
    call(&d, "day-2-pro", start + 2 * DAY_MS + 18 * HOUR_MS).await;
    run(&d, "run-1").await;
    let first = invoices(&d).await;
    assert_eq!(first.len(), 2, "the trial day and day 1");
    // The trial bills nothing but the first paid day in advance; day 1 its call and day 2.
    assert_eq!(
        lines(&first[0]),
        vec![line("fixed_fee", 1000, start + DAY_MS)]
    );
    assert_eq!(
        lines(&first[1]),
        vec![
            line("usage", 10, start + DAY_MS),
            line("fixed_fee", 1000, start + 2 * DAY_MS)
        ]
    );

    // Upgrade at 12:00 of day 2 with proration; the preview first.
    let change_at = start + 2 * DAY_MS + 12 * HOUR_MS;
    let body = json!({"plan": "pro", "effective": rfc(change_at), "proration": "prorate"});
    let preview = d
        .post(
            &format!("/v1/subscriptions/{sub}/change/preview"),
            None,
            &body,
        )
        .await;
    assert_eq!(preview.status, 200, "{}", preview.json);
    assert_eq!(preview.json["invoice"], "next");
    let expected_day2 = vec![
        line("usage", 10, start + 2 * DAY_MS),        // basic's call
        line("usage", 5, change_at),                  // pro's call
        line("fixed_fee", 1500, change_at),           // pro for the 12 hours left
        line("fee_credit", -500, start + 2 * DAY_MS), // basic's unused 12 hours
    ];
    assert_eq!(lines(&preview.json)[..4], expected_day2[..]);
    let up = d
        .post(
            &format!("/v1/subscriptions/{sub}/change"),
            Some("up"),
            &body,
        )
        .await;
    assert_eq!(up.status, 200, "{}", up.json);
    let phases = up.json["subscription"]["phases"].clone();
    assert_eq!(
        up.json["subscription"]["plan"], phases[1]["plan"],
        "pro is in effect now"
    );
    assert_eq!(phases[1]["start_at"], rfc(change_at));
    assert_eq!(
        up.json["subscription"]["phases"].as_array().map(Vec::len),
        Some(2)
    );
    // The same request again is the same change.
    let again = d
        .post(
            &format!("/v1/subscriptions/{sub}/change"),
            Some("up"),
            &body,
        )
        .await;
    assert_eq!(again.json, up.json);

    // A 10 % coupon for ever, from this period on.
    let coupon = d
        .post(
            "/v1/coupons",
            Some("coupon"),
            &json!({"code": "TEN", "percent_off": "10", "duration": "forever"}),
        )
        .await;
    assert_eq!(coupon.status, 201, "{}", coupon.json);
    let applied = d
        .post(
            &format!("/v1/subscriptions/{sub}/discounts"),
            Some("apply"),
            &json!({"coupon": "TEN"}),
        )
        .await;
    assert!(
        applied.status == 200 || applied.status == 201,
        "{}",
        applied.json
    );

    // Downgrade back to basic at the period end.
    let down = d
        .post(
            &format!("/v1/subscriptions/{sub}/change"),
            Some("down"),
            &json!({"plan": "basic", "effective": "period_end"}),
        )
        .await;
    assert_eq!(down.status, 200, "{}", down.json);
    assert_eq!(down.json["effective_at"], rfc(end));
    assert_eq!(
        down.json["subscription"]["scheduled_change"]["start_at"],
        rfc(end)
    );

    wait_until(end).await;
    run(&d, "run-2").await;
    let all = invoices(&d).await;
    assert_eq!(all.len(), 3);
    let mut day2 = expected_day2.clone();
    day2.push(line("fixed_fee", 1000, end)); // day 3 on basic, in advance
                                             // 10 % of the usage and fees (0.10 + 0.05 + 15.00 + 10.00 = 25.15; credits are not
                                             // discounted): 2.515, rounded once half away from zero.
    day2.push(line("discount", -252, start + 2 * DAY_MS));
    assert_eq!(lines(&all[2]), day2);

    // Cancel at period end, resume, cancel again: each a transition of its own.
    let cancel = d
        .post(
            &format!("/v1/subscriptions/{sub}/cancel"),
            Some("cancel-1"),
            &json!({"at": "period_end"}),
        )
        .await;
    assert_eq!(cancel.status, 200, "{}", cancel.json);
    assert_eq!(cancel.json["status"], "canceling");
    assert_eq!(cancel.json["ends_at"], rfc(end + DAY_MS));
    let resumed = d
        .post(
            &format!("/v1/subscriptions/{sub}/resume"),
            Some("resume"),
            &json!({}),
        )
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.json);
    assert_eq!(resumed.json["subscription"]["status"], "active");
    let again = d
        .post(
            &format!("/v1/subscriptions/{sub}/cancel"),
            Some("cancel-2"),
            &json!({"at": "period_end"}),
        )
        .await;
    assert_eq!(again.json["status"], "canceling");
    let updated = d
        .get("/v1/notifications?type=subscription.updated&limit=100")
        .await;
    assert_eq!(
        updated.json["data"].as_array().map(Vec::len),
        Some(6),
        "upgrade, downgrade scheduled, downgrade in effect, cancel, resume, cancel: {}",
        updated.json
    );
    verify_all(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invoice_now_preview_equals_the_invoice_and_parallel_changes_make_one() {
    let d = Daemon::start().await;
    plans(&d).await;
    d.customer("acme", "USD").await;
    let start = tally::clock::now_ms() - 6 * HOUR_MS;
    let s = d
        .post(
            "/v1/subscriptions",
            Some("sub"),
            &json!({"customer": "acme", "plan": "pro", "start_at": rfc(start)}),
        )
        .await;
    let sub = s.json["id"].as_str().expect("id").to_string();
    run(&d, "opening").await;
    call(&d, "a", start + HOUR_MS).await;
    // Downgrade two hours ago, invoicing the part before it at once.
    let body = json!({"plan": "basic", "effective": rfc(start + 4 * HOUR_MS),
                      "proration": "invoice_now"});
    let preview = d
        .post(
            &format!("/v1/subscriptions/{sub}/change/preview"),
            None,
            &body,
        )
        .await;
    assert_eq!(preview.status, 200, "{}", preview.json);
    assert_eq!(preview.json["invoice"], "immediate");
    let done = d
        .post(
            &format!("/v1/subscriptions/{sub}/change"),
            Some("down"),
            &body,
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.json);
    let issued = done.json["invoices"].as_array().expect("invoices").clone();
    assert_eq!(issued.len(), 1, "{}", done.json);
    let inv = d
        .get(&format!("/v1/invoices/{}", issued[0].as_str().expect("id")))
        .await;
    assert_eq!(
        lines(&inv.json),
        lines(&preview.json),
        "preview equals the invoice"
    );
    assert_eq!(inv.json["subtotal_minor"], preview.json["subtotal_minor"]);

    // Bad changes: each a problem naming its field, nothing written.
    let before = d.get(&format!("/v1/subscriptions/{sub}")).await.json;
    for (i, (body, status, field)) in [
        (json!({"plan": "basic"}), 409, "plan"),
        (
            json!({"plan": "pro", "effective": rfc(start - DAY_MS)}),
            422,
            "effective",
        ),
        (
            json!({"plan": "pro", "proration": "sometimes"}),
            400,
            "proration",
        ),
        (
            json!({"plan": "pro", "effective": "tomorrow"}),
            400,
            "effective",
        ),
        (json!({"plan": "nope"}), 404, "plan"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = d
            .post(
                &format!("/v1/subscriptions/{sub}/change"),
                Some(&format!("bad-{i}")),
                &body,
            )
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.json);
        assert!(
            r.fields().contains(&field.to_string()),
            "{body}: {}",
            r.json
        );
    }
    assert_eq!(
        d.get(&format!("/v1/subscriptions/{sub}")).await.json,
        before
    );

    // Fifty parallel identical upgrades under different keys: one change.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = d.client.clone();
        let url = d.url(&format!("/v1/subscriptions/{sub}/change"));
        let key = d.key.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", format!("up-{i}"))
                .json(&json!({"plan": "pro"}))
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            200 => ok += 1,
            409 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 1, "one change");
    let after = d.get(&format!("/v1/subscriptions/{sub}")).await.json;
    assert_eq!(after["phases"].as_array().map(Vec::len), Some(3));
    // A billing run racing a change: one consistent result.
    let (empty, path) = (json!({}), format!("/v1/subscriptions/{sub}/change"));
    let race = json!({"plan": "basic", "proration": "invoice_now"});
    let (r, c) = tokio::join!(
        d.post("/v1/billing-runs", Some("race-run"), &empty),
        d.post(&path, Some("race-change"), &race)
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.json);
    assert_eq!(c.status, 200, "{}", c.json);
    verify_all(&d).await;
}
