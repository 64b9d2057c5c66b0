//! Just enough W3C WebDriver to drive headless Chromium through
//! `chromedriver` (Debian `chromium` + `chromium-driver`): a session, page
//! loads, cookies, frames, clicks and text.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use annex_testkit::{assert_eventually, eventually};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Driver {
    addr: SocketAddr,
    session: String,
    _child: Child,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Driver {
    /// Starts chromedriver and a headless Chromium session. Without the
    /// binaries: panics under `CI=true` (CI must install them), otherwise
    /// returns `None` after printing a notice.
    pub async fn start() -> Option<Driver> {
        let driver = find_in_path("chromedriver");
        let browser = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find_map(find_in_path);
        let (Some(driver), Some(browser)) = (driver, browser) else {
            let msg = "headless Chromium test needs `chromium` and `chromedriver` (Debian: chromium chromium-driver)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("notice: {msg}; skipping the browser part of this test");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("free port: {e}"));
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting chromedriver: {e}"));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert_eventually!(
            Duration::from_secs(20),
            async || {
                crate::http::try_send(addr, "GET", "/status", &[], b"")
                    .await
                    .is_ok()
            },
            "chromedriver to answer"
        );
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
            }
        }}});
        let mut d = Driver {
            addr,
            session: String::new(),
            _child: child,
        };
        let created = d.call("POST", "/session", caps).await;
        d.session = created["sessionId"].as_str().unwrap_or_default().to_owned();
        assert!(!d.session.is_empty(), "no WebDriver session: {created}");
        Some(d)
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let body = body.to_string();
        let r = crate::http::send(
            self.addr,
            method,
            path,
            &[("content-type", "application/json")],
            if method == "GET" {
                b""
            } else {
                body.as_bytes()
            },
        )
        .await;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert!(
            r.status < 400,
            "WebDriver {method} {path}: {} {}",
            r.status,
            r.text()
        );
        v["value"].clone()
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.path("/url"), json!({"url": url}))
            .await;
    }

    pub async fn add_cookie(&self, name: &str, value: &str) {
        self.call(
            "POST",
            &self.path("/cookie"),
            json!({"cookie": {"name": name, "value": value, "path": "/"}}),
        )
        .await;
    }

    /// The first element matching `css`, waiting up to `ms` for it.
    pub async fn find(&self, css: &str, ms: u64) -> String {
        let body = json!({"using": "css selector", "value": css}).to_string();
        let mut last = String::new();
        let found = eventually(Duration::from_millis(ms), async || {
            let r = crate::http::send(
                self.addr,
                "POST",
                &self.path("/element"),
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .await;
            last = format!("{} {}", r.status, r.text());
            if r.status != 200 {
                return None;
            }
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            v["value"][ELEMENT].as_str().map(str::to_owned)
        })
        .await;
        match found {
            Ok(id) => id,
            Err(timed_out) => {
                let url = self.call("GET", &self.path("/url"), Value::Null).await;
                let source = self.call("GET", &self.path("/source"), Value::Null).await;
                panic!(
                    "no element {css} on {url}, {timed_out} (last answer: {last}); page source:\n{}",
                    source.as_str().unwrap_or_default()
                );
            }
        }
    }

    pub async fn switch_to_frame(&self, element: &str) {
        self.call(
            "POST",
            &self.path("/frame"),
            json!({"id": {ELEMENT: element}}),
        )
        .await;
    }

    /// Back to the top-level page from a frame.
    pub async fn switch_to_parent(&self) {
        self.call("POST", &self.path("/frame/parent"), json!({}))
            .await;
    }

    /// Runs `script` (a function body; `return` gives the value) in the
    /// current frame.
    pub async fn execute(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.path("/execute/sync"),
            json!({"script": script, "args": []}),
        )
        .await
    }

    pub async fn click(&self, element: &str) {
        self.call(
            "POST",
            &self.path(&format!("/element/{element}/click")),
            json!({}),
        )
        .await;
    }

    pub async fn text(&self, element: &str) -> String {
        self.call(
            "GET",
            &self.path(&format!("/element/{element}/text")),
            Value::Null,
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    pub async fn quit(self) {
        let _ = crate::http::try_send(self.addr, "DELETE", &self.path(""), &[], b"").await;
    }
}
