//! The console's front door in a real browser: sign-in, sessions, CSRF, read-only keys,
//! security headers.

use serde_json::json;

use crate::browser::Browser;
use crate::harness::Daemon;

/// A key created with `tally key create`: `(key id, secret)`.
pub fn new_key(daemon: &Daemon, extra: &[&str]) -> (String, String) {
    let mut args = vec!["key", "create", "--tenant", "default"];
    args.extend_from_slice(extra);
    let out = daemon.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("no {prefix} in {text}"))
    };
    (line("key_id: "), line("api_key: "))
}

/// A console session made over plain HTTP (no browser): its cookie header and CSRF token.
pub struct HttpSession {
    pub cookie: String,
    pub csrf: String,
    pub client: reqwest::Client,
}

fn hidden_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

/// Signs in with a key over HTTP; `None` when the key is refused.
pub async fn http_sign_in(daemon: &Daemon, key: &str) -> Option<HttpSession> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page = client
        .get(daemon.url("/console/sign-in"))
        .send()
        .await
        .expect("sign-in page");
    let pre = page
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("sign-in cookie")
        .to_string();
    let html = page.text().await.expect("html");
    let token = hidden_value(&html, "csrf").expect("csrf field");
    let reply = client
        .post(daemon.url("/console/sign-in"))
        .header("cookie", &pre)
        .form(&[("csrf", token.as_str()), ("api_key", key)])
        .send()
        .await
        .expect("sign in");
    if reply.status() != 303 {
        return None;
    }
    let cookie = reply
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tally_console="))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_string();
    let overview = client
        .get(daemon.url("/console"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("overview")
        .text()
        .await
        .expect("html");
    let csrf = hidden_value(&overview, "csrf").expect("csrf in the sign-out form");
    Some(HttpSession {
        cookie,
        csrf,
        client,
    })
}

impl HttpSession {
    /// GETs a console page: `(status, location header, body)`.
    pub async fn get(&self, daemon: &Daemon, path: &str) -> (u16, String, String) {
        let r = self
            .client
            .get(daemon.url(path))
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("get");
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, location, r.text().await.expect("body"))
    }

    /// Posts a console form: `(status, location header, body)`.
    pub async fn post(
        &self,
        daemon: &Daemon,
        path: &str,
        form: &[(&str, &str)],
    ) -> (u16, String, String) {
        let r = self
            .client
            .post(daemon.url(path))
            .header("cookie", &self.cookie)
            .form(form)
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, location, r.text().await.expect("body"))
    }
}

#[tokio::test]
async fn sign_in_refuses_a_wrong_key_then_admits_the_right_one_and_signs_out() {
    let daemon = Daemon::start().await;
    let Some(browser) = Browser::open(&daemon.base).await else {
        return;
    };
    browser.goto("/console").await;
    assert_eq!(browser.path().await, "/console/sign-in");
    browser.submit_sign_in("tally_sk_wrong").await;
    assert!(
        browser.body().await.contains("not valid or was revoked"),
        "{}",
        browser.body().await
    );
    browser.goto("/console").await;
    assert_eq!(
        browser.path().await,
        "/console/sign-in",
        "no session was made"
    );
    browser.screenshot("sign-in").await;
    browser.submit_sign_in(&daemon.key).await;
    assert_eq!(browser.path().await, "/console");
    assert!(browser.text("header.top").await.contains("default"));
    let cookies = browser.client.get_all_cookies().await.expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name() == "tally_console")
        .expect("session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert!(
        !session.value().contains(&daemon.key),
        "the key is not the cookie"
    );
    browser.click_button("Sign out").await;
    assert_eq!(browser.path().await, "/console/sign-in");
    browser.goto("/console").await;
    assert_eq!(browser.path().await, "/console/sign-in", "signed out");
    browser.close().await;
}

#[tokio::test]
async fn an_idle_session_ends_and_sign_in_returns_to_the_page_asked_for() {
    let daemon = Daemon::start_with("[console]\nsession_idle_secs = 1").await;
    let Some(browser) = Browser::open(&daemon.base).await else {
        return;
    };
    browser.sign_in(&daemon.key).await;
    assert_eq!(browser.path().await, "/console");
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    browser.goto("/console?from=idle").await;
    let at = browser.path().await;
    assert!(at.starts_with("/console/sign-in?next="), "{at}");
    browser.submit_sign_in(&daemon.key).await;
    assert_eq!(browser.path().await, "/console?from=idle");
    browser.close().await;
}

#[tokio::test]
async fn a_revoked_key_ends_its_sessions() {
    let daemon = Daemon::start().await;
    let (id, key) = new_key(&daemon, &["--label", "support"]);
    let session = http_sign_in(&daemon, &key).await.expect("signed in");
    assert_eq!(session.get(&daemon, "/console").await.0, 200);
    let out = daemon.cli(&["key", "revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, location, _) = session.get(&daemon, "/console").await;
    assert_eq!((status, location.as_str()), (303, "/console/sign-in"));
    assert!(
        http_sign_in(&daemon, &key).await.is_none(),
        "a revoked key cannot sign in"
    );
}

#[tokio::test]
async fn forged_forms_are_refused_and_do_nothing() {
    let daemon = Daemon::start().await;
    let session = http_sign_in(&daemon, &daemon.key).await.expect("signed in");
    for form in [vec![], vec![("csrf", "forged")]] {
        let (status, _, body) = session.post(&daemon, "/console/sign-out", &form).await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("CSRF"), "{body}");
    }
    assert_eq!(
        session.get(&daemon, "/console").await.0,
        200,
        "still signed in"
    );
    // A sign-in form not served to this browser.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let reply = client
        .post(daemon.url("/console/sign-in"))
        .form(&[("csrf", "x"), ("api_key", daemon.key.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(reply.status(), 403);
    assert!(reply.headers().get("set-cookie").is_none(), "no session");
    let (status, location, _) = session
        .post(
            &daemon,
            "/console/sign-out",
            &[("csrf", session.csrf.as_str())],
        )
        .await;
    assert_eq!((status, location.as_str()), (303, "/console/sign-in"));
    assert_eq!(session.get(&daemon, "/console").await.0, 303, "signed out");
}

#[tokio::test]
async fn pages_carry_a_strict_policy_and_refuse_framing() {
    let daemon = Daemon::start().await;
    let session = http_sign_in(&daemon, &daemon.key).await.expect("signed in");
    for path in ["/console", "/console/sign-in", "/console/no-such-page"] {
        let r = session
            .client
            .get(daemon.url(path))
            .header("cookie", &session.cookie)
            .send()
            .await
            .expect("get");
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().expect("csp");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("script-src"),
            "{csp}"
        );
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(h["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html"));
    }
    assert_eq!(session.get(&daemon, "/console/no-such-page").await.0, 404);
}

#[tokio::test]
async fn read_only_keys_read_and_are_refused_every_write() {
    let daemon = Daemon::start().await;
    let (_, key) = new_key(&daemon, &["--read-only"]);
    let read = daemon.get_as(&key, "/v1/customers").await;
    assert_eq!(read.status, 200);
    let write = daemon
        .post_as(
            &key,
            "/v1/customers",
            Some("ro-1"),
            &json!({"external_id": "c1", "currency": "EUR"}),
        )
        .await;
    write.assert_problem(403, "read_only_key");
    assert_eq!(
        daemon.get("/v1/customers").await.json["data"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let session = http_sign_in(&daemon, &key)
        .await
        .expect("a read-only key signs in");
    let (status, _, body) = session.get(&daemon, "/console").await;
    assert_eq!(status, 200);
    assert!(body.contains("read-only"), "{body}");
}

#[tokio::test]
async fn a_disabled_console_serves_nothing() {
    let daemon = Daemon::start_with("[console]\nenabled = false").await;
    let r = daemon
        .client
        .get(daemon.url("/console/sign-in"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
}
