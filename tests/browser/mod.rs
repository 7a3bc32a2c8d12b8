//! A real headless Chromium driven over WebDriver, for the dashboard's end-to-end tests
//! (tests/dashboard.rs) and its benchmark (benches/dashboard.rs, which includes this file).
//!
//! [`Browser::start`] starts Debian's `chromedriver` on a free port (port 0: it prints the one it
//! got) in a process group of its own, then one headless Chromium session through it with a
//! user-data-dir in a fresh temporary folder, so that cookies, cache and storage never leak
//! between tests or into the user's profile. The client is fantoccini (async); [`Browser`] owns
//! a small tokio runtime and offers blocking calls, like the rest of the tests.
//!
//! Dropping a [`Browser`] ends the session, then SIGKILLs chromedriver's process group, every
//! descendant of chromedriver, and any process whose command line names the session's
//! user-data-dir (Chromium's helpers can leave the group): never anything it did not start.
//! Debian's Chromium also starts crashpad handlers that leave for init at once and name no
//! profile; they end by themselves when their browser is gone.

#![allow(dead_code)] // the tests and the bench use different parts of this module

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WindowHandle;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// How long a wait for something on a page may take before the test calls it missing.
pub const PAGE_WAIT: Duration = Duration::from_secs(20);
/// How long one WebDriver command (a page load included) may take.
pub const COMMAND_WAIT: Duration = Duration::from_secs(60);
/// The size of the browser's window (and of the screenshots' width).
pub const WINDOW: (u32, u32) = (1280, 900);

/// The browser binary: `LOOPD_CHROMIUM`, else Debian's `chromium`.
fn chromium_bin() -> String {
    std::env::var("LOOPD_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// The driver binary: `LOOPD_CHROMEDRIVER`, else Debian's `chromedriver`.
fn chromedriver_bin() -> String {
    std::env::var("LOOPD_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

/// A chromedriver process the test started, in its own process group.
struct Driver {
    child: Child,
    /// `http://127.0.0.1:PORT`, where it listens.
    url: String,
}

impl Driver {
    /// Starts chromedriver on a free port, logging to `log`; returns once it says which port.
    /// With `--port=0` chromedriver takes a free IPv6 port, then binds IPv4 on the same number,
    /// which another process may hold: then it exits at once, and a new one is started.
    fn start(log: &Path) -> Driver {
        for _ in 0..5 {
            if let Some(driver) = Driver::try_start(log) {
                return driver;
            }
        }
        panic!(
            "chromedriver found no free port in 5 tries:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// One try of [`Driver::start`]: `None` when the port it took was not free on IPv4.
    fn try_start(log: &Path) -> Option<Driver> {
        let bin = chromedriver_bin();
        let out = std::fs::File::create(log).expect("create chromedriver's log");
        let child = Command::new(&bin)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}): install Debian's chromium and chromium-driver (.ci/run does)")
            });
        let mut driver = Driver {
            child,
            url: String::new(),
        };
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            // "ChromeDriver was started successfully on port 37069."
            let port = text
                .split("started successfully on port ")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(port) = port {
                driver.url = format!("http://127.0.0.1:{port}");
                return Some(driver);
            }
            // (try_wait reaped it: no zombie is left behind.)
            if let Ok(Some(status)) = driver.child.try_wait() {
                if text.contains("Address already in use") {
                    return None;
                }
                panic!("{bin} exited ({status}) before it listened:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "{bin} did not say its port within {PAGE_WAIT:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One Chromium at a time in a test binary: a browser takes most of a core while it loads a
/// page, and the tests' machines have two; the tests run side by side up to this point.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One headless Chromium session; see the module docs.
pub struct Browser {
    /// Runs fantoccini's futures for the blocking calls.
    rt: tokio::runtime::Runtime,
    /// The WebDriver session; `None` once closed.
    client: Option<Client>,
    driver: Driver,
    /// Holds the user-data-dir and chromedriver's log; removed after the processes are gone.
    profile: tempfile::TempDir,
    /// This binary's turn with a browser (declared last: released after the cleanup); `None`
    /// for a browser started beside one that holds it ([`Browser::start_beside`]).
    _turn: Option<std::sync::MutexGuard<'static, ()>>,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (window [`WINDOW`]).
    pub fn start() -> Browser {
        // A test that failed with the browser poisons the lock; the next one may still go.
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        Browser::launch(Some(turn))
    }

    /// Another browser (its own chromedriver, session and profile, so its own connections)
    /// while `self` holds the turn: several people's dashboards at once.
    pub fn start_beside(&self) -> Browser {
        Browser::launch(None)
    }

    fn launch(turn: Option<std::sync::MutexGuard<'static, ()>>) -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("loopd-chromium-")
            .tempdir()
            .expect("create a temporary folder for Chromium");
        let driver = Driver::start(&profile.path().join("chromedriver.log"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let data_dir = profile.path().join("user-data");
        let args = vec![
            "--headless=new".to_string(),
            // Root in CI and in containers: Chromium's sandbox needs user namespaces it lacks.
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-extensions".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--metrics-recording-only".into(),
            "--password-store=basic".into(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            format!("--user-data-dir={}", data_dir.display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"binary": chromium_bin(), "args": args}),
        );
        let url = driver.url.clone();
        let mut browser = Browser {
            rt,
            client: None,
            driver,
            profile,
            _turn: turn,
        };
        let client = browser.rt.block_on(async {
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&url)
                .await
        });
        match client {
            Ok(c) => browser.client = Some(c),
            Err(e) => panic!(
                "no Chromium session through {url}: {e}\nchromedriver's log:\n{}",
                browser.driver_log()
            ),
        }
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Runs an async block against the WebDriver client (for what the helpers do not cover);
    /// panics when it takes longer than [`COMMAND_WAIT`] (a wedged browser or driver).
    pub fn run<T, F: std::future::Future<Output = T>>(&self, f: impl FnOnce(Client) -> F) -> T {
        let client = self.client().clone();
        self.rt
            .block_on(async { tokio::time::timeout(COMMAND_WAIT, f(client)).await })
            .unwrap_or_else(|_| panic!("a WebDriver command took longer than {COMMAND_WAIT:?}"))
    }

    /// What chromedriver logged so far.
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// The user-data-dir of the session (unique to it).
    pub fn data_dir(&self) -> PathBuf {
        self.profile.path().join("user-data")
    }

    /// The pid of chromedriver (the leader of its process group).
    pub fn driver_pid(&self) -> i32 {
        self.driver.child.id() as i32
    }

    /// Loads `url` and waits for the document to be complete.
    pub fn goto(&self, url: &str) {
        self.run(|c| async move { c.goto(url).await })
            .unwrap_or_else(|e| panic!("cannot load {url}: {e}"));
    }

    /// Opens a new tab of the same browser (same profile, cookies and connections), makes it
    /// the current one and returns its handle.
    pub fn open_tab(&self) -> WindowHandle {
        let tab = self
            .run(|c| async move { c.new_window(true).await })
            .expect("a new tab")
            .handle;
        self.switch_to(&tab);
        tab
    }

    /// Makes `tab` the tab the next commands act on.
    pub fn switch_to(&self, tab: &WindowHandle) {
        let tab = tab.clone();
        self.run(|c| async move { c.switch_to_window(tab).await })
            .expect("switch to a tab");
    }

    /// The handle of the current tab.
    pub fn current_tab(&self) -> WindowHandle {
        self.run(|c| async move { c.window().await })
            .expect("the current tab")
    }

    /// The page's current address.
    pub fn url(&self) -> String {
        self.run(|c| async move { c.current_url().await })
            .map(|u| u.to_string())
            .expect("the current address")
    }

    /// The page's whole text (`document.body.innerText`).
    pub fn body_text(&self) -> String {
        self.js(
            "return document.body ? document.body.innerText : ''",
            vec![],
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns what it returns.
    pub fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.run(|c| async move { c.execute(script, args).await })
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs an async `script`: it ends by calling `arguments[arguments.length - 1](value)`.
    pub fn js_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.run(|c| async move { c.execute_async(script, args).await })
            .unwrap_or_else(|e| panic!("async script failed: {e}\n{script}"))
    }

    /// Polls `expr` (a JavaScript expression) until it is truthy and returns its value; panics
    /// after `timeout` with `what`, the page's address and the start of its text.
    pub fn wait_js(&self, what: &str, timeout: Duration, expr: &str) -> Value {
        let script = format!("try {{ return ({expr}); }} catch (e) {{ return null; }}");
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(&script, vec![]);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let text: String = self.body_text().chars().take(2000).collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what} (`{expr}`) on {}\n--- page text ---\n{text}",
                    self.url()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most [`PAGE_WAIT`]) until an element matches `css`.
    pub fn wait_for(&self, css: &str) {
        self.wait_js(
            &format!("an element `{css}`"),
            PAGE_WAIT,
            &format!("document.querySelector({}) !== null", js_str(css)),
        );
    }

    /// Waits (at most [`PAGE_WAIT`]) until the first element matching `css` has attribute
    /// `name` equal to `value`.
    pub fn wait_attr(&self, css: &str, name: &str, value: &str) {
        self.wait_js(
            &format!("`{css}` with {name}=\"{value}\""),
            PAGE_WAIT,
            &format!(
                "(document.querySelector({}) || {{getAttribute: () => null}}).getAttribute({}) === {}",
                js_str(css),
                js_str(name),
                js_str(value)
            ),
        );
    }

    /// Waits (at most [`PAGE_WAIT`]) until the text of the first element matching `css`
    /// contains `needle`.
    pub fn wait_text(&self, css: &str, needle: &str) {
        self.wait_js(
            &format!("`{needle}` in `{css}`"),
            PAGE_WAIT,
            &format!(
                "(document.querySelector({}) || {{textContent: ''}}).textContent.includes({})",
                js_str(css),
                js_str(needle)
            ),
        );
    }

    /// Attribute `name` of the first element matching `css` (`None` when either is missing).
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            vec![css.into(), name.into()],
        )
        .as_str()
        .map(String::from)
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        self.js(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![css.into()],
        )
        .as_u64()
        .unwrap_or(0) as usize
    }

    /// The text of every element matching `css`, in document order.
    pub fn texts(&self, css: &str) -> Vec<String> {
        let v = self.js(
            "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent);",
            vec![css.into()],
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The value of attribute `name` on every element matching `css`, in document order.
    pub fn attrs(&self, css: &str, name: &str) -> Vec<String> {
        let v = self.js(
            "return Array.from(document.querySelectorAll(arguments[0]), e => e.getAttribute(arguments[1]));",
            vec![css.into(), name.into()],
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Clicks the first element matching `css` (a real WebDriver click: scrolled into view,
    /// refused if something covers it), after waiting for it.
    pub fn click(&self, css: &str) {
        self.wait_for(css);
        self.run(|c| async move {
            let e = c.find(Locator::Css(css)).await?;
            e.click().await
        })
        .unwrap_or_else(|e| panic!("cannot click `{css}`: {e}"));
    }

    /// Types `text` into the first element matching `css` (after clearing it).
    pub fn fill(&self, css: &str, text: &str) {
        self.wait_for(css);
        self.run(|c| async move {
            let e = c.find(Locator::Css(css)).await?;
            e.clear().await?;
            e.send_keys(text).await
        })
        .unwrap_or_else(|e| panic!("cannot type into `{css}`: {e}"));
    }

    /// Sets a marker on `window` that a reload (a new document) would lose.
    pub fn mark_window(&self) {
        self.js("window.__loopdMarker = 'kept'; return null;", vec![]);
    }

    /// True while the marker of [`Browser::mark_window`] is there: the page was not reloaded.
    pub fn window_marked(&self) -> bool {
        self.js("return window.__loopdMarker === 'kept';", vec![])
            .as_bool()
            .unwrap_or(false)
    }

    /// Saves a PNG of the whole page (the window stretched to the page's height, at most
    /// 4,000 px) to `path`, creating its folder; the window's size is put back after.
    pub fn screenshot(&self, path: &Path) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        }
        let height = self
            .js(
                // The window's own frame is part of its height, not of the page's.
                "return Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0) + (window.outerHeight - window.innerHeight);",
                vec![],
            )
            .as_u64()
            .unwrap_or(u64::from(WINDOW.1))
            .clamp(u64::from(WINDOW.1), 4000) as u32;
        let png = self
            .run(|c| async move {
                c.set_window_size(WINDOW.0, height).await?;
                let png = c.screenshot().await;
                c.set_window_size(WINDOW.0, WINDOW.1).await?;
                png
            })
            .unwrap_or_else(|e| panic!("cannot take a screenshot: {e}"));
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Every live pid this browser started: chromedriver's group, its descendants, and any
    /// process whose command line names the session's user-data-dir.
    pub fn processes(&self) -> Vec<i32> {
        let root = self.driver_pid();
        let data_dir = self.data_dir();
        let needle = data_dir.to_string_lossy().into_owned();
        let procs = proc_table();
        let mut ours: Vec<i32> = procs
            .iter()
            .filter(|p| p.pgid == root || p.cmdline.contains(&needle))
            .map(|p| p.pid)
            .collect();
        // Descendants of chromedriver, however they regrouped themselves.
        let mut frontier = vec![root];
        while let Some(parent) = frontier.pop() {
            for p in procs.iter().filter(|p| p.ppid == parent) {
                if !ours.contains(&p.pid) {
                    ours.push(p.pid);
                }
                frontier.push(p.pid);
            }
        }
        ours.sort_unstable();
        ours.dedup();
        ours
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Bounded: a wedged browser must not hang the test's cleanup.
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
        // Twice: a helper forked while the first sweep ran is caught by the second.
        for _ in 0..2 {
            let ours = self.processes();
            let _ = killpg(Pid::from_raw(self.driver_pid()), Signal::SIGKILL);
            for pid in ours {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let _ = self.driver.child.wait();
    }
}

/// A JavaScript string literal of `s`.
pub fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// One row of `/proc`.
struct Proc {
    pid: i32,
    ppid: i32,
    pgid: i32,
    cmdline: String,
}

/// Every process in `/proc` that is not a zombie.
fn proc_table() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let raw = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
        let stat = String::from_utf8_lossy(&raw);
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        Some(Proc {
            pid,
            ppid: fields.get(1)?.parse().ok()?,
            pgid: fields.get(2)?.parse().ok()?,
            cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
        })
    })
    .collect()
}
