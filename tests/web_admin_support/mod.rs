//! Running the `web_admin` example and a headless Chromium for tests: the server on an
//! ephemeral port over a temporary SQLite file and outbox, chromedriver on another,
//! and a WebDriver session (fantoccini) with a fresh profile.
//!
//! Why fantoccini over chromedriver: WebDriver is the W3C standard for driving a
//! browser as a user does (clicks, typing, forms, file inputs), Debian ships a
//! chromedriver built with its chromium (the versions always match), and the crate is
//! small and async on tokio. A DevTools client (chromiumoxide, headless_chrome)
//! compiles a generated protocol of tens of thousands of lines and follows Chrome's
//! protocol changes; nothing here needs more than WebDriver gives.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use owner_access::token::token_from_link;
use serde_json::json;

pub const PASSWORD: &str = "correct horse battery staple";

/// The example's binary. `cargo test` builds every example before it runs the tests,
/// so it is normally there and newer than every source file; only then is it used as
/// it is. Otherwise (`cargo test --test web_admin_browser` after an edit) it is built
/// here. (`cargo build` after `cargo test` rebuilds some dependencies, whose features
/// differ between the two; skipping it when it is not needed saves CI minutes.)
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let bin = target.join("debug").join("examples").join("web_admin");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let newest_source = ["src", "examples/web_admin", "Cargo.toml", "Cargo.lock"]
            .iter()
            .filter_map(|p| newest(&root.join(p)))
            .max();
        if built.is_none() || newest_source > built {
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "--example",
                    "web_admin",
                    "--all-features",
                ])
                .current_dir(root)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the example failed");
        }
        bin
    })
}

/// The latest modification time of a file or of anything under a folder.
fn newest(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| newest(&e.path()))
        .max()
}

/// The example's server, stopped when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    /// Starts it over the database and outbox in `dir` (again, after a stop).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let mut child = Command::new(binary())
            .arg("--port")
            .arg("0")
            .arg("--db")
            .arg(dir.path().join("admin.db"))
            .arg("--outbox")
            .arg(dir.path().join("outbox"))
            .args(extra)
            .env("OWNER_ACCESS_ADMIN_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the example starts");
        let mut first = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut first).unwrap();
        // The rest of what it prints, read so that it never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let base = first
            .trim()
            .strip_prefix("web admin: ")
            .unwrap_or_else(|| panic!("the first line names the address: {first:?}"))
            .trim_end_matches('/')
            .to_owned();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        Server { child, base, dir }
    }

    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("outbox")
    }

    /// The .eml files in the outbox.
    pub fn messages(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.outbox())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        files.sort();
        files
    }

    /// Stops the server and gives back its folder (for a restart).
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// One plain HTTP/1.1 request, for what a browser would not send.
    pub fn raw(&self, request: &str) -> String {
        let address = self.base.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The personal link's token in a message's text part.
pub fn token_in(eml: &Path) -> String {
    let bytes = std::fs::read(eml).unwrap();
    let parsed = mailparse::parse_mail(&bytes).unwrap();
    let mut parts = vec![parsed];
    while let Some(part) = parts.pop() {
        if part.ctype.mimetype == "text/plain" {
            let text = part.get_body().unwrap();
            return token_from_link(&text)
                .expect("a registration link")
                .to_owned();
        }
        parts.extend(part.subparts);
    }
    panic!("no text part in {}", eml.display())
}

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Headless Chromium over chromedriver, both stopped when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

/// Starts a browser, or says why the browser tests do not run here and gives `None`.
/// Under `CI=true` a missing browser fails the test: CI installs it.
pub async fn browser() -> Option<Browser> {
    let chromium = std::env::var("OWNER_ACCESS_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
    let driver_path =
        std::env::var("OWNER_ACCESS_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
    let missing: Vec<&str> = [&chromium, &driver_path]
        .into_iter()
        .filter(|p| !Path::new(p.as_str()).exists())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and the browser is missing: {missing:?}");
        }
        // Straight to the terminal: the test harness captures println!.
        let _ = writeln!(
            std::io::stderr(),
            "web admin browser tests NOT RUN: {} missing; to run them: \
             apt-get install chromium chromium-driver (or set OWNER_ACCESS_CHROMIUM and \
             OWNER_ACCESS_CHROMEDRIVER)",
            missing.join(" and ")
        );
        return None;
    }
    let port = free_port();
    let driver = Command::new(&driver_path)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session");
    let shots = std::env::var_os("OWNER_ACCESS_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/web_admin_screenshots")
        });
    std::fs::create_dir_all(&shots).unwrap();
    Some(Browser {
        client,
        driver,
        _profile: profile,
        shots,
    })
}

impl Browser {
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => panic!(
                "no `{css}` on {}: {e}\n{}",
                self.url().await,
                self.visible_text().await
            ),
        }
    }

    pub async fn all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap()
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    pub async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Clicks `css` and waits until the browser shows the page the click leads to.
    /// A click that submits a form can return while the old page is still shown, and
    /// an old page whose text already answers a later wait (a "Finished." before a
    /// Retry) would be read as the new one.
    pub async fn click_to_new_page(&self, css: &str) {
        const MARK: &str = "document.documentElement.dataset.beforeClick = 'yes'";
        const STILL: &str = "return document.documentElement.dataset.beforeClick === 'yes'";
        self.client.execute(MARK, vec![]).await.unwrap();
        self.click(css).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // While the browser is between pages the script may not run: not yet.
            if let Ok(serde_json::Value::Bool(false)) = self.client.execute(STILL, vec![]).await {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "clicking `{css}` led to no new page from {}",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Replaces a field's text.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// The page's text, for a failure's message.
    pub async fn visible_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(e) => format!("(no body: {e})"),
        }
    }

    pub async fn source(&self) -> String {
        self.client.source().await.unwrap()
    }

    pub async fn sign_in(&self, base: &str) {
        self.goto(&format!("{base}/")).await;
        assert!(self.url().await.ends_with("/login"), "{}", self.url().await);
        self.fill("#password", PASSWORD).await;
        self.click("#login button[type=submit]").await;
        self.find("#communities").await;
    }

    /// Waits until `css`'s text satisfies `ready`, then gives it back.
    pub async fn wait_text(&self, css: &str, ready: impl Fn(&str) -> bool, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = el.text().await
                && ready(&text)
            {
                return text;
            }
            if Instant::now() > deadline {
                panic!(
                    "`{css}` did not get there on {}\n{}",
                    self.url().await,
                    self.visible_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Screenshots of the whole page at 1280 px and at 375 px wide:
    /// `NAME.png` and `NAME-375.png`.
    pub async fn shots(&self, name: &str) {
        for (width, suffix) in [(1280u32, ""), (375, "-375")] {
            self.client.set_window_size(width, 900).await.unwrap();
            let height = self
                .client
                .execute("return document.documentElement.scrollHeight;", vec![])
                .await
                .unwrap()
                .as_u64()
                .unwrap_or(900)
                .clamp(600, if width < 600 { 1600 } else { 4000 }) as u32;
            // The window's height includes a little chrome even when headless.
            self.client
                .set_window_size(width, height + 100)
                .await
                .unwrap();
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(self.shots.join(format!("{name}{suffix}.png")), png).unwrap();
        }
        self.client.set_window_size(1280, 900).await.unwrap();
    }

    /// One screenshot of what a 1280 x 800 window shows, `NAME-top.png` (for docs/).
    pub async fn top_shot(&self, name: &str) {
        self.client.set_window_size(1280, 900).await.unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}-top.png")), png).unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// aiosmtpd keeping each message it accepts as a file of its own.
const CAPTURE_SERVER: &str = r#"
import os, sys, time, uuid
from aiosmtpd.controller import Controller

port, folder, refused = int(sys.argv[1]), sys.argv[2], sys.argv[3:]

class Keep:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in refused:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(folder, uuid.uuid4().hex)
        with open(name + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(name + ".tmp", name + ".eml")
        return "250 OK"

controller = Controller(Keep(), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// A real SMTP server on loopback that captures what it accepts, stopped when dropped.
pub struct SmtpCapture {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl SmtpCapture {
    /// aiosmtpd from `OWNER_ACCESS_AIOSMTPD` (a Python with aiosmtpd); `None` without
    /// it, except under `CI=true`, where it is required.
    pub fn start() -> Option<SmtpCapture> {
        Self::refusing(&[])
    }

    /// The same, answering 550 to these recipients.
    pub fn refusing(refused: &[&str]) -> Option<SmtpCapture> {
        let python = match std::env::var("OWNER_ACCESS_AIOSMTPD") {
            Ok(p) if !p.is_empty() => p,
            _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true but OWNER_ACCESS_AIOSMTPD is not set")
            }
            _ => {
                let _ = writeln!(
                    std::io::stderr(),
                    "web admin: OWNER_ACCESS_AIOSMTPD is not set, sending into the outbox \
                     instead of aiosmtpd"
                );
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(python)
            .arg("-c")
            .arg(CAPTURE_SERVER)
            .arg(port.to_string())
            .arg(dir.path())
            .args(refused)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("aiosmtpd starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
        Some(SmtpCapture {
            child,
            url: format!("smtp://127.0.0.1:{port}"),
            dir,
        })
    }

    /// The messages it accepted.
    pub fn messages(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        files.sort();
        files
    }
}

impl Drop for SmtpCapture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a message's To header.
pub fn recipient(eml: &Path) -> String {
    use mailparse::MailHeaderMap;
    let bytes = std::fs::read(eml).unwrap();
    let parsed = mailparse::parse_mail(&bytes).unwrap();
    let to = parsed.headers.get_first_value("To").unwrap_or_default();
    match (to.rfind('<'), to.rfind('>')) {
        (Some(a), Some(b)) if a < b => to[a + 1..b].to_owned(),
        _ => to.trim().to_owned(),
    }
}
