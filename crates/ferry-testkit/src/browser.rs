//! A headless Chromium driven through chromedriver (the W3C WebDriver protocol over plain
//! HTTP/1.1, no client crate), for the tests that check Ferry's web page in a real browser
//! (`ferry-ui`'s fixture test and the lab end to end). Debian's `chromium` and
//! `chromium-driver` (`scripts/setup.sh` installs them).
//!
//! [`Browser`] owns the chromedriver process (and so the browser it starts) and a
//! throw-away profile directory; dropping it ends the session and kills chromedriver by
//! PID. Scripts run in the page with [`Browser::js`]; [`Browser::wait_js`] polls one until
//! it returns an expected value and says how long that took (the caller decides what a
//! limit means; nothing here asserts on time).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use serde_json::{Value, json};

/// A program on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// Where a screenshot goes: the path in the environment variable `var` when set (a
/// relative one is taken from the workspace root, so `docs/ui-lab.png` lands in the
/// repository's `docs/` whatever directory the test runs in), else `default`.
pub fn screenshot_path(var: &str, default: &Path) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        Some(p) => Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .unwrap_or(Path::new("."))
            .join(p),
        None => default.to_path_buf(),
    }
}

/// One W3C WebDriver command; the response's `value`, or the driver's error.
pub fn command(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // chromedriver may keep the connection open: read the header, then exactly the body.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let payload = loop {
        let n = s.read(&mut buf)?;
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let head = head.to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            match length {
                Some(len) if rest.len() >= len => break rest[..len].to_string(),
                None if head.contains("transfer-encoding: chunked")
                    && rest.ends_with("0\r\n\r\n") =>
                {
                    break dechunk(rest);
                }
                None if n == 0 => break rest.to_string(),
                _ => {}
            }
        }
        if n == 0 {
            bail!("{method} {path}: connection closed early");
        }
    };
    let v: Value = serde_json::from_str(&payload).with_context(|| format!("reply {payload}"))?;
    if v["value"]["error"].is_string() {
        bail!("{method} {path}: {}", v["value"]);
    }
    Ok(v["value"].clone())
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A headless Chromium session; ended (and chromedriver killed) on drop.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver_pid", &self.driver.id())
            .field("addr", &self.addr)
            .field("session", &self.session)
            .finish()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = command(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver on a free loopback port and a headless Chromium session with a
    /// `width`x`height` window and the console logged (for [`Browser::console_errors`]).
    pub fn start(width: u32, height: u32) -> Result<Browser> {
        let chromium = on_path("chromium")
            .ok_or_else(|| anyhow!("chromium on PATH (apt-get install chromium)"))?;
        let chromedriver = on_path("chromedriver")
            .ok_or_else(|| anyhow!("chromedriver on PATH (apt-get install chromium-driver)"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let profile = tempfile::tempdir().context("browser profile dir")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // From here on, `Browser`'s drop kills chromedriver whatever fails.
        let mut b = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let start = Instant::now();
        while !command(addr, "GET", "/status", None).is_ok_and(|v| v["ready"] == true) {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("chromedriver did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", b._profile.path().display())]}}}});
        let session =
            command(addr, "POST", "/session", Some(&caps)).context("a browser session")?;
        b.session = session["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {session}"))?
            .to_string();
        Ok(b)
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}/{rest}", self.session)
    }

    /// Navigates to `url`.
    pub fn go(&self, url: &str) -> Result<()> {
        command(
            self.addr,
            "POST",
            &self.session_path("url"),
            Some(&json!({ "url": url })),
        )
        .map(|_| ())
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn js(&self, script: &str) -> Result<Value> {
        command(
            self.addr,
            "POST",
            &self.session_path("execute/sync"),
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// Runs `script` every 50 ms until it returns `want`; how long that took, or `None`
    /// when it did not within `within` (or the page could not be scripted).
    pub fn wait_js(&self, script: &str, want: &Value, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.js(script).ok().as_ref() == Some(want) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The page's console entries since the last call (chromedriver's `browser` log).
    pub fn console(&self) -> Result<Vec<Value>> {
        let logs = command(
            self.addr,
            "POST",
            &self.session_path("se/log"),
            Some(&json!({"type": "browser"})),
        )?;
        Ok(logs.as_array().cloned().unwrap_or_default())
    }

    /// The console's errors (level `SEVERE`) since the last [`Browser::console`] call,
    /// leaving out those whose message contains one of `expected`.
    pub fn console_errors(&self, expected: &[&str]) -> Result<Vec<Value>> {
        Ok(self
            .console()?
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .filter(|e| {
                let m = e["message"].as_str().unwrap_or_default();
                !expected.iter().any(|x| m.contains(x))
            })
            .collect())
    }

    /// The visible page as PNG bytes.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        let png = command(self.addr, "GET", &self.session_path("screenshot"), None)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .context("screenshot as base64")?;
        if !bytes.starts_with(b"\x89PNG") {
            bail!("the screenshot is not a PNG");
        }
        Ok(bytes)
    }

    /// Writes [`Browser::screenshot`] to `path` (creating its directory).
    pub fn save_screenshot(&self, path: &Path) -> Result<()> {
        let bytes = self.screenshot()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    }
}
