//! A real browser for the console tests: Debian's headless Chromium driven over WebDriver.
//!
//! Each test gets its own ChromeDriver on a free port and a fresh profile. Where ChromeDriver
//! or Chromium is missing the test says so on stderr and passes, unless `REQUIRE_BROWSER` is set
//! (CI sets it after installing them), in which case it fails: never silently skipped there.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

/// Browsers running at once (each is a few hundred MB and a core while it renders).
const MAX_BROWSERS: usize = 2;

/// How long a click may take to lead to the next loaded page on a loaded machine.
const PAGE_WAIT: Duration = Duration::from_secs(30);

static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

fn find(candidates: &[&str], env: &str) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Some(PathBuf::from(path));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// A browser session against one daemon.
pub struct Browser {
    pub client: Client,
    base: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

#[allow(dead_code)] // Not every page test uses every helper.
impl Browser {
    /// Starts ChromeDriver and a headless Chromium, or `None` (with a message) where they are
    /// not installed and `REQUIRE_BROWSER` is not set.
    pub async fn open(base: &str) -> Option<Browser> {
        let driver_path = find(
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
            "CHROMEDRIVER",
        );
        let chromium = find(
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
            "CHROME_BIN",
        );
        let (Some(driver_path), Some(chromium)) = (driver_path, chromium) else {
            if std::env::var_os("REQUIRE_BROWSER").is_some() {
                panic!("REQUIRE_BROWSER is set but chromium or chromedriver is not installed");
            }
            eprintln!(
                "SKIPPED console browser test: chromium and chromedriver are not installed \
                 (apt-get install chromium chromium-driver)"
            );
            return None;
        };
        {
            let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
            while *running >= MAX_BROWSERS {
                running = FREED.wait(running).unwrap_or_else(|p| p.into_inner());
            }
            *running += 1;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let driver = Command::new(driver_path)
            .arg(format!("--port={port}"))
            // Its own process group, so the browsers it starts are stopped with it.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut client = None;
        for _ in 0..100 {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let client = client.expect("chromedriver did not start a session within 10 s");
        Some(Browser {
            client,
            base: base.to_string(),
            driver,
            _profile: profile,
        })
    }

    /// Opens a path of the daemon.
    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigate");
    }

    /// The current path and query.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        path
    }

    /// Signs in with a key from the sign-in page (wherever the browser is).
    pub async fn sign_in(&self, key: &str) {
        self.goto("/console/sign-in").await;
        self.submit_sign_in(key).await;
    }

    /// Types a key into the sign-in form on screen and submits it.
    pub async fn submit_sign_in(&self, key: &str) {
        self.fill("#api_key", key).await;
        self.click_button("Sign in").await;
    }

    /// The visible text of the first element matching a CSS selector.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .text()
            .await
            .expect("text")
    }

    /// The whole page's visible text.
    pub async fn body(&self) -> String {
        self.text("body").await
    }

    /// Whether an element matching the selector exists.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find")
            .is_empty()
    }

    /// Types into a field.
    pub async fn fill(&self, css: &str, value: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no field {css}: {e}"));
        field.clear().await.expect("clear");
        field.send_keys(value).await.expect("type");
    }

    /// Clicks the first element matching a selector.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .click()
            .await
            .expect("click");
    }

    /// Clicks the first button whose text is exactly `label`, then waits for the next page.
    pub async fn click_button(&self, label: &str) {
        self.click_xpath(&format!("//button[normalize-space(.)='{label}']"))
            .await;
    }

    /// Clicks the first element matching an XPath (a button in one table row, say), then
    /// waits for the page it leads to, so the next lookup never sees the old page.
    pub async fn click_xpath(&self, xpath: &str) {
        let element = self
            .client
            .find(Locator::XPath(xpath))
            .await
            .unwrap_or_else(|e| panic!("no element {xpath:?}: {e}"));
        let old = self.client.find(Locator::Css("html")).await.expect("page");
        element.click().await.expect("click");
        self.wait_for_next_page(old).await;
    }

    /// Waits (at most 30 s for each step) until the page an element belonged to has been
    /// replaced and the new one has loaded: a click that submits a form returns before the
    /// answer arrives. Panics when it never does, so a slow page fails here, by name.
    async fn wait_for_next_page(&self, old: fantoccini::elements::Element) {
        let deadline = std::time::Instant::now() + PAGE_WAIT;
        while old.tag_name().await.is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the page was not replaced within {PAGE_WAIT:?} of the click"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let deadline = std::time::Instant::now() + PAGE_WAIT;
        while std::time::Instant::now() < deadline {
            let state = self
                .client
                .execute("return document.readyState", vec![])
                .await;
            if matches!(state, Ok(serde_json::Value::String(s)) if s == "complete") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the next page did not finish loading within {PAGE_WAIT:?}");
    }

    /// Two clicks on a button within a few milliseconds, as an impatient operator makes them,
    /// then waits for the page they lead to.
    pub async fn double_click_button(&self, label: &str) {
        use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
        let xpath = format!("//button[normalize-space(.)='{label}']");
        let button = self
            .client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button {label:?}: {e}"));
        let old = self.client.find(Locator::Css("html")).await.expect("page");
        let click = |m: MouseActions| {
            m.then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            })
        };
        let mouse = MouseActions::new("mouse".into()).then(PointerAction::MoveToElement {
            element: button,
            duration: None,
            x: 0.0,
            y: 0.0,
        });
        self.client
            .perform_actions(click(click(mouse)))
            .await
            .expect("double click");
        self.wait_for_next_page(old).await;
    }

    /// Clicks the first link whose text is exactly `label`.
    pub async fn click_link(&self, label: &str) {
        let link = self
            .client
            .find(Locator::LinkText(label))
            .await
            .unwrap_or_else(|e| panic!("no link {label:?}: {e}"));
        let old = self.client.find(Locator::Css("html")).await.expect("page");
        link.click().await.expect("click");
        self.wait_for_next_page(old).await;
    }

    /// Whether a JavaScript dialog (alert, confirm) is open.
    pub async fn dialog_open(&mut self) -> bool {
        self.client.get_alert_text().await.is_ok()
    }

    /// Saves a PNG of the viewport as `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Ends the browser session.
    pub async fn close(self) {
        let Browser { client, .. } = &self;
        let _ = client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-9", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        *running = running.saturating_sub(1);
        FREED.notify_one();
    }
}
