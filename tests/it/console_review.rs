//! Edges of the console: control characters in return paths and keys, sign-in from an older
//! tab, sessions of other tenants, tenant isolation, and odd URLs and forms that must never be
//! a 5xx.

use crate::console::http_sign_in;
use crate::harness::Daemon;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The sign-in page's pre-session cookie (`name=value`) and its form token.
async fn sign_in_page(daemon: &Daemon, client: &reqwest::Client, path: &str) -> (String, String) {
    let page = client
        .get(daemon.url(path))
        .send()
        .await
        .expect("sign-in page");
    let cookie = page
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("pre-session cookie")
        .to_string();
    let html = page.text().await.expect("html");
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("csrf field") + marker.len();
    let end = html[start..].find('"').expect("end") + start;
    (cookie, html[start..end].to_string())
}

/// A `next` holding a control character passes `is_console_path`, then `Redirect::to` cannot
/// make it a header value and answers a plain-text 500 — after the session was created.
#[tokio::test]
async fn sign_in_with_a_control_character_in_next_is_not_a_500() {
    let daemon = Daemon::start().await;
    let client = no_redirects();
    let (cookie, token) = sign_in_page(&daemon, &client, "/console/sign-in").await;
    let reply = client
        .post(daemon.url("/console/sign-in"))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", token.as_str()),
            ("api_key", daemon.key.as_str()),
            ("next", "/console/customers\n"),
        ])
        .send()
        .await
        .expect("post");
    let status = reply.status().as_u16();
    let body = reply.text().await.expect("body");
    assert_eq!(
        status, 303,
        "signed in and redirected somewhere safe: {body}"
    );
}

/// Two sign-in pages in one browser (two tabs sent to sign in after a session expired): the
/// second page replaces the pre-session cookie, so the first page's form is refused 403 with
/// a correct key.
#[tokio::test]
async fn an_older_sign_in_tab_still_signs_in() {
    let daemon = Daemon::start().await;
    let client = no_redirects();
    let (first_cookie, first_token) =
        sign_in_page(&daemon, &client, "/console/sign-in?next=/console/keys").await;
    // The second tab's page is fetched with the cookie the first set, as a browser sends it.
    let second = client
        .get(daemon.url("/console/sign-in?next=/console/customers"))
        .header("cookie", &first_cookie)
        .send()
        .await
        .expect("second tab");
    let second_cookie = second
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or(&first_cookie)
        .to_string();
    let reply = client
        .post(daemon.url("/console/sign-in"))
        .header("cookie", &second_cookie)
        .form(&[
            ("csrf", first_token.as_str()),
            ("api_key", daemon.key.as_str()),
            ("next", "/console/keys"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(
        reply.status().as_u16(),
        303,
        "the first tab's sign-in form works with the right key"
    );
}

/// An idempotency key the API would refuse (a control character) never reaches it: building the
/// in-process request fails and the console answers 500 instead of a 4xx.
#[tokio::test]
async fn a_control_character_in_the_idempotency_key_is_not_a_500() {
    let daemon = Daemon::start().await;
    let s = http_sign_in(&daemon, &daemon.key).await.expect("signed in");
    let (status, _, body) = s
        .post(
            &daemon,
            "/console/catalog/features",
            &[
                ("csrf", s.csrf.as_str()),
                ("idempotency_key", "key\u{1}1"),
                ("key", "sso"),
                ("name", "Single sign-on"),
            ],
        )
        .await;
    assert!(status < 500, "a malformed form is a 4xx: {status} {body}");
}

/// `back` (where a dead-letter replay returns) is checked with `is_console_path`, which lets a
/// newline through: the replay is sent to the API, then the redirect fails with a plain-text
/// 500, so the operator is told the action failed after it ran.
#[tokio::test]
async fn a_dead_letter_replay_with_a_newline_in_back_is_not_a_500() {
    let daemon = Daemon::start().await;
    let s = http_sign_in(&daemon, &daemon.key).await.expect("signed in");
    let (status, _, body) = s
        .post(
            &daemon,
            "/console/dead-letters/job_01JDEADBEEF0000000000000000/replay",
            &[
                ("csrf", s.csrf.as_str()),
                ("idempotency_key", "review-back-1"),
                ("back", "/console/dead-letters?kind=x\ny"),
            ],
        )
        .await;
    assert_eq!(status, 303, "back to the list with a message: {body}");
}

/// Sound: another tenant's console neither shows nor acts on this tenant's customer.
#[tokio::test]
async fn another_tenants_console_cannot_reach_a_customer_by_id() {
    let daemon = Daemon::start().await;
    let created = daemon
        .post(
            "/v1/customers",
            Some("iso-1"),
            &serde_json::json!({"external_id": "secret-co", "name": "Secret Co", "currency": "EUR"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.json);
    let id = created.json["id"].as_str().expect("id").to_string();
    let out = daemon.cli(&["tenant", "create", "other"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = daemon.cli(&["key", "create", "--tenant", "other"]);
    let text = String::from_utf8_lossy(&other.stdout).to_string();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("key")
        .to_string();
    let s = http_sign_in(&daemon, &key)
        .await
        .expect("other tenant signs in");
    let (status, _, body) = s.get(&daemon, &format!("/console/customers/{id}")).await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.contains("Secret Co"));
    let (_, _, list) = s.get(&daemon, "/console/customers?search=secret").await;
    assert!(!list.contains("Secret Co") && !list.contains(&id));
    s.post(
        &daemon,
        &format!("/console/customers/{id}/grant"),
        &[
            ("csrf", s.csrf.as_str()),
            ("idempotency_key", "iso-grant"),
            ("amount", "10"),
            ("currency", "EUR"),
            ("category", "promotional"),
        ],
    )
    .await;
    let balance = daemon.get(&format!("/v1/customers/{id}/balance")).await;
    assert!(
        !balance
            .json
            .to_string()
            .contains("\"credits_available_minor\":1000"),
        "{}",
        balance.json
    );
}

/// The session table is one LRU for every tenant: anyone holding any key (another tenant's,
/// or a read-only one) can sign in `max_sessions` times and sign every other operator out.
#[tokio::test]
async fn another_tenants_sign_ins_do_not_end_this_tenants_session() {
    let daemon = Daemon::start_with("[console]\nmax_sessions = 3").await;
    let mine = http_sign_in(&daemon, &daemon.key).await.expect("signed in");
    assert_eq!(mine.get(&daemon, "/console").await.0, 200);
    let out = daemon.cli(&["tenant", "create", "other"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other = daemon.cli(&["key", "create", "--tenant", "other", "--read-only"]);
    let text = String::from_utf8_lossy(&other.stdout).to_string();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("api_key: "))
        .expect("key")
        .to_string();
    for _ in 0..3 {
        http_sign_in(&daemon, &key)
            .await
            .expect("other tenant signs in");
    }
    assert_eq!(
        mine.get(&daemon, "/console").await.0,
        200,
        "still signed in: another tenant's read-only key cannot end this session"
    );
}

/// Odd console URLs (bad ids, unicode, huge values, bad dates and cursors) answer 4xx, never 5xx.
#[tokio::test]
async fn odd_console_urls_are_never_a_5xx() {
    let daemon = Daemon::start().await;
    let s = http_sign_in(&daemon, &daemon.key).await.expect("signed in");
    let long = "x".repeat(5000);
    let paths = [
        "/console/customers/cus_%00".to_string(),
        "/console/customers/%E2%80%AE".to_string(),
        format!("/console/customers/{long}"),
        "/console/customers?search=%00".to_string(),
        format!("/console/customers?search={long}"),
        "/console/customers?starting_after=%FF".to_string(),
        "/console/customers?starting_after=cus_zz".to_string(),
        "/console/events?from=2026-13-45".to_string(),
        "/console/events?from=99999-01-01T00:00:00Z".to_string(),
        "/console/events?late=maybe".to_string(),
        "/console/events?customer=%00&type=%00".to_string(),
        "/console/events/evt_%2E%2E".to_string(),
        "/console/events/anomalies?kind=nope".to_string(),
        "/console/events/anomalies?event=evt_x".to_string(),
        "/console/dead-letters?from=yesterday".to_string(),
        "/console/dead-letters?kind=%00".to_string(),
        "/console/webhook-events?status=nope".to_string(),
        "/console/webhook-events/whv_%3F".to_string(),
        "/console/notifications?type=nope&customer=x".to_string(),
        "/console/notifications/ntf_..".to_string(),
        "/console/catalog/plans/pln_%2F..%2Fx".to_string(),
        "/console/catalog?starting_after=x".to_string(),
        "/console/catalog/meters?starting_after=x".to_string(),
        "/console/catalog/coupons?starting_after=x".to_string(),
        "/console/catalog/features?starting_after=x".to_string(),
        "/console/keys?starting_after=x".to_string(),
        "/console/customers?search=a&search=b".to_string(),
    ];
    let mut bad = Vec::new();
    for path in &paths {
        let (status, _, body) = s.get(&daemon, path).await;
        if status >= 500 {
            bad.push(format!(
                "{path}: {status} {}",
                body.chars().take(200).collect::<String>()
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Odd form posts (huge or malformed amounts, bad dates, unicode, bad ids) answer 4xx or a
/// redirect with a message, never 5xx.
#[tokio::test]
async fn odd_console_forms_are_never_a_5xx() {
    let daemon = Daemon::start().await;
    let s = http_sign_in(&daemon, &daemon.key).await.expect("signed in");
    let cus = daemon.customer("odd", "EUR").await;
    let long = "é".repeat(3000);
    let grant = format!("/console/customers/{cus}/grant");
    let top_up = format!("/console/customers/{cus}/top-up");
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            grant.clone(),
            vec![("amount", "1e400"), ("currency", "EUR")],
        ),
        (
            grant.clone(),
            vec![("amount", "92233720368547758.08"), ("currency", "EUR")],
        ),
        (
            grant.clone(),
            vec![
                ("amount", "5"),
                ("currency", "EUR"),
                ("expires", "2026-02-30"),
            ],
        ),
        (
            grant.clone(),
            vec![("amount", "5"), ("currency", "EUR"), ("expires", "x\"}")],
        ),
        (
            grant.clone(),
            vec![("amount", "5"), ("currency", "EUR"), ("reason", &long)],
        ),
        (grant.clone(), vec![("amount", "5"), ("currency", "ÉUR")]),
        (
            grant.clone(),
            vec![("amount", "5"), ("currency", "EUR"), ("category", "gift")],
        ),
        (
            top_up.clone(),
            vec![("amount", "99999999999999999"), ("kind", "free")],
        ),
        (
            top_up.clone(),
            vec![("amount", "5"), ("expires", "1900-01-01")],
        ),
        (
            "/console/customers/cus_nope/top-up".into(),
            vec![("amount", "5")],
        ),
        (
            "/console/customers/cus_nope/grant".into(),
            vec![("amount", "5"), ("currency", "EUR")],
        ),
        (
            format!("/console/customers/{cus}/subscriptions/sub_%00/cancel"),
            vec![("confirmed", "yes"), ("at", "now")],
        ),
        (
            "/console/catalog/features".into(),
            vec![("key", &long), ("name", "x")],
        ),
        (
            "/console/catalog/features/ftr_x/archive".into(),
            vec![("confirmed", "yes")],
        ),
        (
            "/console/catalog/meters".into(),
            vec![("key", "m"), ("event_type", "e"), ("aggregation", "nope")],
        ),
        ("/console/keys".into(), vec![("label", &long)]),
        (
            "/console/keys/key_%2E%2E/revoke".into(),
            vec![("confirmed", "yes")],
        ),
        (
            "/console/dead-letters/replay".into(),
            vec![("from", "yesterday"), ("confirmed", "yes")],
        ),
        (
            "/console/dead-letters/replay".into(),
            vec![("from", "yesterday")],
        ),
        (
            "/console/notifications/ntf_x/resend".into(),
            vec![("destination", "evd_%00")],
        ),
        ("/console/webhook-events/whv_x/replay".into(), vec![]),
    ];
    let mut bad = Vec::new();
    for (i, (path, fields)) in posts.iter().enumerate() {
        let key = format!("odd-{i}");
        let mut form = vec![("csrf", s.csrf.as_str()), ("idempotency_key", key.as_str())];
        form.extend(fields.iter().copied());
        let (status, _, body) = s.post(&daemon, path, &form).await;
        if status >= 500 {
            bad.push(format!(
                "{path} {fields:?}: {status} {}",
                body.chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
