//! The console's customer pages: search (and the API's `search` behind it), a customer's page
//! with real data, escaping of hostile names and metadata, and its actions (grant, top up,
//! cancel) with double submits, confirmation and read-only refusals.

use serde_json::{json, Value};

use crate::browser::Browser;
use crate::console::{http_sign_in, new_key, HttpSession};
use crate::harness::{at, Daemon};

/// A meter `calls`, a feature `sso`, a plan `pro` granting it, and two customers:
/// `acme-7` ("Acme Rockets", billing@acme.test) subscribed to `pro` with calls over the last
/// days, and `globex` ("Globex", ops@globex.test). Returns acme's id.
async fn catalogue(d: &Daemon) -> String {
    let m = d
        .post(
            "/v1/meters",
            Some("m"),
            &json!({"key": "calls", "name": "API calls", "event_type": "call", "aggregation": "count"}),
        )
        .await;
    assert_eq!(m.status, 201, "{}", m.json);
    let f = d
        .post(
            "/v1/features",
            Some("f"),
            &json!({"key": "sso", "name": "SSO"}),
        )
        .await;
    assert_eq!(f.status, 201, "{}", f.json);
    let p = d
        .post(
            "/v1/plans",
            Some("p"),
            &json!({"code": "pro", "name": "Pro", "currency": "USD", "interval": "month",
                "fixed_fee": {"amount_minor": 1000, "timing": "in_advance"},
                "entitlements": [{"feature": "sso", "type": "boolean"}]}),
        )
        .await;
    assert_eq!(p.status, 201, "{}", p.json);
    let acme = customer(
        d,
        json!({"external_id": "acme-7", "currency": "USD", "name": "Acme Rockets",
            "email": "billing@acme.test", "metadata": {"tier": "gold"}}),
    )
    .await;
    customer(
        d,
        json!({"external_id": "globex", "currency": "USD", "name": "Globex",
            "email": "ops@globex.test"}),
    )
    .await;
    let s = d
        .post(
            "/v1/subscriptions",
            Some("s"),
            &json!({"customer": "acme-7", "plan": "pro", "start_at": at(-3 * 86_400)}),
        )
        .await;
    assert_eq!(s.status, 201, "{}", s.json);
    let events: Vec<Value> = (0..12)
        .map(|i| {
            json!({"id": format!("e{i}"), "customer": "acme-7", "type": "call",
            "timestamp": at(-(i % 3) * 86_400 - 60)})
        })
        .collect();
    let r = d.post("/v1/events", None, &json!({"events": events})).await;
    assert!(r.status < 300, "{}", r.json);
    acme
}

async fn customer(d: &Daemon, body: Value) -> String {
    let key = format!("c-{}", body["external_id"].as_str().expect("external id"));
    let r = d.post("/v1/customers", Some(&key), &body).await;
    assert_eq!(r.status, 201, "{}", r.json);
    r.json["id"].as_str().expect("id").to_string()
}

async fn credits(d: &Daemon, id: &str) -> (i64, usize) {
    let b = d.get(&format!("/v1/customers/{id}/balance")).await;
    assert_eq!(b.status, 200, "{}", b.json);
    let usd = b.json["balances"]
        .as_array()
        .expect("balances")
        .iter()
        .find(|x| x["currency"] == "USD")
        .cloned()
        .expect("USD balance");
    (
        usd["credits_available_minor"].as_i64().expect("credits"),
        usd["grants"].as_array().map(Vec::len).unwrap_or(0),
    )
}

/// The value of a hidden field inside the form posting to `action`.
fn form_field(html: &str, action: &str, name: &str) -> String {
    let form = html
        .find(&format!("action=\"{action}\""))
        .unwrap_or_else(|| panic!("no form posting to {action}"));
    let marker = format!("name=\"{name}\" value=\"");
    let start = html[form..].find(&marker).expect("field") + form + marker.len();
    let end = html[start..].find('"').expect("end") + start;
    html[start..end].to_string()
}

#[tokio::test]
async fn the_api_searches_customers_by_external_id_name_or_email() {
    let d = Daemon::start().await;
    catalogue(&d).await;
    let ids = |r: &crate::harness::Resp| -> Vec<String> {
        r.json["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|c| c["external_id"].as_str().expect("external id").to_string())
            .collect()
    };
    for (search, expected) in [
        ("ACME", vec!["acme-7"]),
        ("rockets", vec!["acme-7"]),
        ("@GLOBEX.test", vec!["globex"]),
        (".test", vec!["acme-7", "globex"]),
        ("nobody", vec![]),
    ] {
        let r = d
            .get(&format!("/v1/customers?search={}", urlencode(search)))
            .await;
        assert_eq!(r.status, 200, "{}", r.json);
        assert_eq!(ids(&r), expected, "{search}");
    }
    // Paginated: the cursor continues the search.
    let first = d.get("/v1/customers?search=.test&limit=1").await;
    assert_eq!(ids(&first), ["acme-7"]);
    assert_eq!(first.json["has_more"], true);
    let cursor = first.json["next_cursor"].as_str().expect("cursor");
    let second = d
        .get(&format!(
            "/v1/customers?search=.test&limit=1&starting_after={cursor}"
        ))
        .await;
    assert_eq!(ids(&second), ["globex"]);
    assert_eq!(second.json["has_more"], false);
    // With an external id, both must hold.
    let both = d.get("/v1/customers?external_id=globex&search=acme").await;
    assert_eq!(ids(&both), Vec::<String>::new());
    // Bad input names the field.
    for bad in ["", &"x".repeat(256)] {
        let r = d.get(&format!("/v1/customers?search={bad}")).await;
        r.assert_problem(400, "validation_failed");
        assert_eq!(r.fields(), ["search"], "{}", r.json);
    }
    let spec = d.get("/openapi.json").await;
    let params = spec.json["paths"]["/v1/customers"]["get"]["parameters"].to_string();
    assert!(params.contains("\"search\""), "{params}");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Waits (up to 5 s) until the browser is at `path` after a click that navigates.
async fn wait_path(b: &Browser, path: &str) {
    for _ in 0..100 {
        if b.path().await == path {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the browser stayed at {} instead of {path}", b.path().await);
}

/// Waits (up to 5 s) until an element matching `css` exists.
async fn wait_for(b: &Browser, css: &str) {
    for _ in 0..100 {
        if b.has(css).await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no {css} appeared");
}

#[tokio::test]
async fn an_operator_finds_a_customer_sees_its_page_and_grants_credits() {
    let d = Daemon::start().await;
    let acme = catalogue(&d).await;
    let hostile = customer(
        &d,
        json!({"external_id": "x1", "currency": "USD", "name": "<img src=x onerror=alert(1)>",
            "metadata": {"note": "<script>alert(2)</script>"}}),
    )
    .await;
    let run = d.post("/v1/billing-runs", Some("run"), &json!({})).await;
    assert_eq!(run.status, 201, "{}", run.json);
    let Some(mut b) = Browser::open(&d.base).await else {
        return;
    };
    b.sign_in(&d.key).await;
    b.click_link("Customers").await;
    wait_path(&b, "/console/customers").await;
    b.fill("#search", "rockets").await;
    b.click_button("Search").await;
    wait_path(&b, "/console/customers?search=rockets").await;
    let table = b.text("table").await;
    assert!(
        table.contains("Acme Rockets") && !table.contains("Globex"),
        "{table}"
    );
    b.fill("#search", "ops@GLOBEX").await;
    b.click_button("Search").await;
    wait_path(&b, "/console/customers?search=ops%40GLOBEX").await;
    let table = b.text("table").await;
    assert!(
        table.contains("Globex") && !table.contains("Acme"),
        "{table}"
    );
    b.fill("#search", "acme").await;
    b.click_button("Search").await;
    wait_path(&b, "/console/customers?search=acme").await;
    b.click_link("acme-7").await;
    wait_path(&b, &format!("/console/customers/{acme}")).await;
    let page = b.body().await;
    for expected in [
        "Acme Rockets",
        "billing@acme.test",
        "gold",
        "Usage, last 30 days",
        "API calls (calls)",
        "sso",
        "Pro (pro)",
        "Phases",
        "Invoices",
        "Ledger entries",
        "Notifications sent",
    ] {
        assert!(page.contains(expected), "{expected} missing from {page}");
    }
    assert!(b.has("figure.chart rect").await, "the usage chart has bars");
    let invoices = b.text("section[aria-labelledby=invoices]").await;
    assert!(
        invoices.contains("inv_") && invoices.contains("10.00 USD"),
        "the opening invoice: {invoices}"
    );
    // Grant credits through the form.
    b.fill("#grant_amount", "25.00").await;
    b.fill("#grant_reason", "goodwill").await;
    b.click_button("Grant credits").await;
    wait_for(&b, ".flash").await;
    assert_eq!(b.path().await, format!("/console/customers/{acme}"));
    let flash = b.text(".flash").await;
    assert!(
        flash.contains("Credits granted.") && !flash.contains("already"),
        "{flash}"
    );
    assert_eq!(credits(&d, &acme).await, (2_500, 1));
    assert!(b
        .text("section[aria-labelledby=credits]")
        .await
        .contains("25.00 USD"));
    b.screenshot("customer").await;
    for part in ["usage", "credits", "subscriptions", "invoices"] {
        b.goto(&format!("/console/customers/{acme}#{part}")).await;
        b.screenshot(&format!("customer-{part}")).await;
    }
    b.goto("/console/customers").await;
    b.screenshot("customers").await;
    // Hostile text is shown as text: visible, no element made from it, no dialog.
    b.goto(&format!("/console/customers/{hostile}")).await;
    let page = b.body().await;
    assert!(page.contains("<img src=x onerror=alert(1)>"), "{page}");
    assert!(page.contains("<script>alert(2)</script>"), "{page}");
    assert!(!b.has("img").await, "no img element");
    assert!(!b.has("main script").await, "no script element");
    assert!(!b.dialog_open().await, "no dialog");
    b.goto("/console/customers?search=onerror").await;
    assert!(b
        .text("table")
        .await
        .contains("<img src=x onerror=alert(1)>"));
    assert!(!b.has("img").await && !b.dialog_open().await);
    b.close().await;
}

#[tokio::test]
async fn customer_actions_act_once_ask_before_canceling_and_refuse_read_only_keys() {
    let d = Daemon::start().await;
    let acme = catalogue(&d).await;
    let page = format!("/console/customers/{acme}");
    let s = http_sign_in(&d, &d.key).await.expect("signed in");
    let (status, _, html) = s.get(&d, &page).await;
    assert_eq!(status, 200, "{html}");
    // The same grant form submitted twice: one grant.
    let grant = format!("{page}/grant");
    let key = form_field(&html, &grant, "idempotency_key");
    let fields = [
        ("csrf", s.csrf.as_str()),
        ("idempotency_key", key.as_str()),
        ("amount", "12.34"),
        ("currency", "USD"),
        ("category", "promotional"),
        ("expires", ""),
        ("reason", ""),
    ];
    for replay in [false, true] {
        let (status, location, body) = s.post(&d, &grant, &fields).await;
        assert_eq!((status, location.as_str()), (303, page.as_str()), "{body}");
        let (_, _, html) = s.get(&d, &page).await;
        assert!(html.contains("Credits granted."), "{html}");
        assert_eq!(
            html.contains("already submitted"),
            replay,
            "only the second submit is reported as a replay"
        );
    }
    assert_eq!(credits(&d, &acme).await, (1_234, 1), "one grant");
    // A malformed amount sends nothing and says why.
    let bad = [
        ("csrf", s.csrf.as_str()),
        ("idempotency_key", "console-bad-amount"),
        ("amount", "1.234"),
        ("currency", "USD"),
        ("category", "promotional"),
    ];
    assert_eq!(s.post(&d, &grant, &bad).await.0, 303);
    let (_, _, html) = s.get(&d, &page).await;
    assert!(
        html.contains("Not done: 1.234 has more decimals than USD has (2)"),
        "{html}"
    );
    assert_eq!(credits(&d, &acme).await, (1_234, 1));
    // A free top-up, submitted twice: one grant more.
    let top_up = format!("{page}/top-up");
    let key = form_field(&html, &top_up, "idempotency_key");
    let fields = [
        ("csrf", s.csrf.as_str()),
        ("idempotency_key", key.as_str()),
        ("amount", "10"),
        ("kind", "free"),
    ];
    for _ in 0..2 {
        assert_eq!(s.post(&d, &top_up, &fields).await.0, 303);
    }
    assert_eq!(credits(&d, &acme).await, (2_234, 2));
    let ups = d.get(&format!("/v1/customers/{acme}/top-ups")).await;
    assert_eq!(ups.json["data"].as_array().map(Vec::len), Some(1));
    // Cancel asks first, then cancels once.
    let sub = d
        .get(&format!("/v1/subscriptions?customer={acme}"))
        .await
        .json["data"][0]["id"]
        .as_str()
        .expect("subscription")
        .to_string();
    let cancel = format!("{page}/subscriptions/{sub}/cancel");
    let (_, _, html) = s.get(&d, &page).await;
    let key = form_field(&html, &cancel, "idempotency_key");
    let mut fields = vec![
        ("csrf", s.csrf.as_str()),
        ("idempotency_key", key.as_str()),
        ("at", "now"),
    ];
    let (status, _, body) = s.post(&d, &cancel, &fields).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("Please confirm") && body.contains(&sub),
        "{body}"
    );
    let status_of = || async {
        d.get(&format!("/v1/subscriptions/{sub}")).await.json["status"]
            .as_str()
            .expect("status")
            .to_string()
    };
    assert_ne!(
        status_of().await,
        "canceled",
        "nothing done before confirming"
    );
    fields.push(("confirmed", "yes"));
    assert_eq!(s.post(&d, &cancel, &fields).await.0, 303);
    assert_eq!(status_of().await, "canceled");
    let before = credits(&d, &acme).await;
    // A forged form does nothing.
    let forged = [
        ("idempotency_key", "k-forged"),
        ("amount", "5"),
        ("currency", "USD"),
        ("category", "promotional"),
    ];
    assert_eq!(s.post(&d, &grant, &forged).await.0, 403);
    // A read-only key sees no action and is refused.
    let (_, ro_key) = new_key(&d, &["--read-only"]);
    let ro: HttpSession = http_sign_in(&d, &ro_key).await.expect("read-only signs in");
    let (status, _, html) = ro.get(&d, &page).await;
    assert_eq!(status, 200);
    for action in [
        "Grant credits</button>",
        "Top up</button>",
        "Cancel now",
        "/grant\"",
    ] {
        assert!(!html.contains(action), "{action} shown to a read-only key");
    }
    let fields = [
        ("csrf", ro.csrf.as_str()),
        ("idempotency_key", "k-ro"),
        ("amount", "5"),
        ("currency", "USD"),
        ("category", "promotional"),
    ];
    let (status, _, body) = ro.post(&d, &grant, &fields).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    assert_eq!(credits(&d, &acme).await, before, "nothing done");
}
