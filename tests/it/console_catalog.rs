//! The console's catalog pages (plans, meters, coupons, features) and API keys page: in a real
//! browser and over plain HTTP, checked through the API.

use fantoccini::Locator;
use serde_json::json;

use crate::browser::Browser;
use crate::console::{http_sign_in, new_key, HttpSession};
use crate::harness::Daemon;

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

/// Waits for a reloaded form post to land on a page with a message and without a secret,
/// confirming the browser's "resubmit?" dialog if it shows one.
async fn reloaded(b: &Browser) {
    for _ in 0..100 {
        if b.client.get_alert_text().await.is_ok() {
            let _ = b.client.accept_alert().await;
        }
        let secret = b.client.find_all(Locator::Css(".secret")).await;
        let flash = b.client.find_all(Locator::Css("p.flash")).await;
        if let (Ok(secret), Ok(flash)) = (secret, flash) {
            if secret.is_empty() && !flash.is_empty() {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the reloaded form did not land on a page with a message and no secret");
}

/// Waits for a page with an element matching `css` (a click returns before the page it posts
/// to has loaded).
async fn wait_for(b: &Browser, css: &str) {
    for _ in 0..100 {
        if let Ok(found) = b.client.find_all(Locator::Css(css)).await {
            if !found.is_empty() {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no {css} appeared");
}

async fn key_count(d: &Daemon) -> usize {
    let listed = d.get("/v1/api-keys").await;
    listed.json["data"].as_array().map(Vec::len).unwrap_or(0)
}

#[tokio::test]
async fn a_key_is_created_with_its_secret_shown_once_then_revoked_after_confirmation() {
    let d = Daemon::start().await;
    let Some(b) = Browser::open(&d.base).await else {
        return;
    };
    b.sign_in(&d.key).await;
    b.goto("/console/keys").await;
    b.fill("#label", "deploy <bot>").await;
    b.click("#read_only").await;
    b.click_button("Create key").await;
    wait_for(&b, ".secret").await;
    let secret = b.text(".secret").await;
    assert!(secret.starts_with("tally_sk_"), "{secret}");
    assert!(b.body().await.contains("shown once"));
    let me = d.get_as(&secret, "/v1/api-keys").await;
    assert_eq!(me.status, 200, "the shown secret works");
    d.post_as(&secret, "/v1/api-keys", Some("x"), &json!({}))
        .await
        .assert_problem(403, "read_only_key");

    // A reload resubmits the form with its key: a replay, which has no secret to show.
    b.client.refresh().await.expect("refresh");
    reloaded(&b).await;
    assert!(!b.has(".secret").await, "the secret is shown once");
    let body = b.body().await;
    assert!(!body.contains(&secret));
    assert!(body.contains("already submitted"), "{body}");
    assert_eq!(key_count(&d).await, 2, "one key created");
    assert!(body.contains("deploy <bot>"), "labels are text: {body}");
    b.screenshot("keys").await;

    let revoke = "//tr[contains(., 'deploy <bot>')]//button[normalize-space(.)='Revoke']";
    b.click_xpath(revoke).await;
    wait_for(&b, "p.question").await;
    assert!(b.text("p.question").await.starts_with("Revoke key key_"));
    assert_eq!(
        d.get_as(&secret, "/v1/api-keys").await.status,
        200,
        "nothing revoked before the confirmation"
    );
    b.click_button("Yes, do it").await;
    wait_for(&b, "p.flash").await;
    assert_eq!(b.path().await, "/console/keys");
    assert!(b.text("p.flash").await.contains("Key revoked."));
    d.get_as(&secret, "/v1/api-keys")
        .await
        .assert_problem(401, "unauthorized");
    assert!(b.body().await.contains("revoked"));
    b.close().await;
}

#[tokio::test]
async fn the_catalog_shows_plans_exactly_and_creates_meters_and_features() {
    let d = Daemon::start().await;
    for (idem, body) in [
        ("f-sso", json!({"key": "sso", "name": "Single sign-on"})),
        (
            "m-tok",
            json!({"key": "tokens", "event_type": "llm", "aggregation": "sum", "value_property": "n"}),
        ),
        (
            "m-img",
            json!({"key": "images", "event_type": "image", "aggregation": "count"}),
        ),
    ] {
        let path = if idem.starts_with("f-") {
            "/v1/features"
        } else {
            "/v1/meters"
        };
        assert_eq!(d.post(path, Some(idem), &body).await.status, 201);
    }
    let plan = d
        .post(
            "/v1/plans",
            Some("p-pro"),
            &json!({"code": "pro", "name": "Pro", "currency": "EUR", "interval": "month",
                "fixed_fee": {"amount_minor": 1999, "timing": "in_advance"},
                "threshold_minor": 500000,
                "charges": [
                    {"meter": "tokens", "model": "per_unit", "unit_price": "0.0000015", "free_units": "1000"},
                    {"meter": "images", "model": "graduated", "tiers": [
                        {"up_to": "100", "unit_price": "0.10"},
                        {"up_to": null, "unit_price": "0.075", "flat_fee_minor": 250}]}],
                "entitlements": [{"feature": "sso", "type": "boolean"}]}),
        )
        .await;
    assert_eq!(plan.status, 201, "{}", plan.json);
    let coupon = d
        .post(
            "/v1/coupons",
            Some("c-1"),
            &json!({"code": "LAUNCH", "percent_off": "12.5", "duration": "once"}),
        )
        .await;
    assert_eq!(coupon.status, 201, "{}", coupon.json);

    let Some(b) = Browser::open(&d.base).await else {
        return;
    };
    b.sign_in(&d.key).await;
    b.goto("/console/catalog").await;
    b.click_link("pro").await;
    wait_for(&b, "table.charges").await;
    assert!(b.path().await.starts_with("/console/catalog/plans/pln_"));
    assert_eq!(b.text("h1").await, "Plan pro (version 1)");
    assert_eq!(
        b.text(".fixed-fee").await,
        "19.99 EUR per period, in advance"
    );
    assert_eq!(b.text(".threshold").await, "5000.00 EUR");
    let charges = b.text("table.charges").await;
    for exact in [
        "0.0000015 EUR per unit",
        "1000",
        "0.1 EUR",
        "0.075 EUR",
        "2.50 EUR",
        "and above",
        "tokens",
        "images",
    ] {
        assert!(charges.contains(exact), "{exact:?} in {charges}");
    }
    let body = b.body().await;
    assert!(body.contains("sso") && body.contains("boolean"), "{body}");
    b.screenshot("plan").await;

    b.goto("/console/catalog/coupons").await;
    assert!(b.body().await.contains("12.5 % off"));

    b.goto("/console/catalog/meters").await;
    b.fill("#key", "api_calls").await;
    b.fill("#event_type", "api.call").await;
    b.click_button("Create meter").await;
    wait_for(&b, "p.flash").await;
    assert!(b.text("p.flash").await.contains("Meter created."));
    let meters = d.get("/v1/meters").await;
    assert!(
        meters.json["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|m| m["key"] == "api_calls" && m["event_type"] == "api.call"),
        "{}",
        meters.json
    );

    b.goto("/console/catalog/features").await;
    b.fill("#key", "audit_log").await;
    b.fill("#name", "Audit log").await;
    b.click_button("Create feature").await;
    wait_for(&b, "p.flash").await;
    assert!(b.text("p.flash").await.contains("Feature created."));
    let archive = "//tr[contains(., 'audit_log')]//button[normalize-space(.)='Archive']";
    b.click_xpath(archive).await;
    wait_for(&b, "p.question").await;
    assert!(b.text("p.question").await.starts_with("Archive feature"));
    assert_eq!(d.get("/v1/features/audit_log").await.json["active"], true);
    b.click_button("Yes, do it").await;
    wait_for(&b, "p.flash").await;
    assert!(b.text("p.flash").await.contains("Feature archived."));
    assert_eq!(d.get("/v1/features/audit_log").await.json["active"], false);
    assert_eq!(d.get("/v1/features/sso").await.json["active"], true);
    b.close().await;
}

#[tokio::test]
async fn a_double_submitted_create_key_form_makes_one_key_and_shows_the_secret_once() {
    let d = Daemon::start().await;
    let s = http_sign_in(&d, &d.key).await.expect("signed in");
    let (_, page) = get_ok(&s, &d, "/console/keys").await;
    let idem = form_field(&page, "/console/keys", "idempotency_key");
    let fields = [
        ("csrf", s.csrf.as_str()),
        ("idempotency_key", idem.as_str()),
        ("label", "twice"),
    ];
    let (status, _, first) = s.post(&d, "/console/keys", &fields).await;
    assert_eq!(status, 200);
    assert!(first.contains("class=\"secret\""), "{first}");
    let (status, location, second) = s.post(&d, "/console/keys", &fields).await;
    assert_eq!((status, location.as_str()), (303, "/console/keys"));
    assert!(!second.contains("tally_sk_"));
    assert_eq!(key_count(&d).await, 2, "one key from two submits");
    let (_, after) = get_ok(&s, &d, "/console/keys").await;
    assert!(after.contains("already submitted"));
    assert!(!after.contains("tally_sk_"));
}

#[tokio::test]
async fn read_only_operators_see_no_actions_and_are_refused_and_revoking_your_key_signs_you_out() {
    let d = Daemon::start().await;
    let (_, ro_secret) = new_key(&d, &["--read-only"]);
    let ro = http_sign_in(&d, &ro_secret).await.expect("signed in");
    for path in [
        "/console/keys",
        "/console/catalog",
        "/console/catalog/meters",
        "/console/catalog/features",
        "/console/catalog/coupons",
    ] {
        let (_, html) = get_ok(&ro, &d, path).await;
        for action in [
            "Create key",
            "Revoke",
            "Create meter",
            "Create feature",
            "Archive",
        ] {
            assert!(!html.contains(action), "{action} on {path}");
        }
    }
    let refused = [
        ("/console/keys", vec![("label", "nope")]),
        (
            "/console/catalog/features",
            vec![("key", "x"), ("name", "X")],
        ),
    ];
    for (path, extra) in refused {
        let mut fields = vec![("csrf", ro.csrf.as_str()), ("idempotency_key", "ro-1")];
        fields.extend(extra);
        let (status, _, _) = ro.post(&d, path, &fields).await;
        assert_eq!(status, 403, "{path}");
    }
    assert_eq!(key_count(&d).await, 2, "nothing created");
    assert_eq!(
        d.get("/v1/features").await.json["data"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    let (own_id, own_secret) = new_key(&d, &[]);
    let s = http_sign_in(&d, &own_secret).await.expect("signed in");
    let action = format!("/console/keys/{own_id}/revoke");
    let (_, page) = get_ok(&s, &d, "/console/keys").await;
    assert!(page.contains("this session"));
    let idem = form_field(&page, &action, "idempotency_key");
    let mut fields = vec![
        ("csrf", s.csrf.as_str()),
        ("idempotency_key", idem.as_str()),
    ];
    let (status, _, question) = s.post(&d, &action, &fields).await;
    assert_eq!(status, 200);
    assert!(question.contains("you will be signed out"), "{question}");
    fields.push(("confirmed", "yes"));
    let (status, location, _) = s.post(&d, &action, &fields).await;
    assert_eq!((status, location.as_str()), (303, "/console/keys"));
    let (status, location, _) = s.get(&d, "/console/keys").await;
    assert_eq!(status, 303);
    assert!(location.starts_with("/console/sign-in"), "{location}");
    d.get_as(&own_secret, "/v1/api-keys")
        .await
        .assert_problem(401, "unauthorized");
}

async fn get_ok(s: &HttpSession, d: &Daemon, path: &str) -> (u16, String) {
    let (status, _, html) = s.get(d, path).await;
    assert_eq!(status, 200, "{path}: {html}");
    (status, html)
}
