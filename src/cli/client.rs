//! Client commands that talk to a running daemon's API: `ls`, `start`, `stop`, `pause`,
//! `resume`, `reset`, `skip`, `add-test`, and `status`/`attempts` while a daemon holds the store.
//!
//! The daemon is found through `LOOPD_ADDR` (and `LOOPD_TOKEN`), else through `daemon.json` in
//! the fleet's state directory; the token is `LOOPD_TOKEN` or the state directory's `token` file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use loopd_actors::config;
use loopd_actors::statedir;
use loopd_actors::view::{
    AttemptPage, AttemptsDoc, LoopSummary, LoopView, StatusDoc, SummaryDoc, TestView,
};
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{words, Exit};
use crate::api::auth::{client_token, Token};

/// A daemon's API.
pub struct Client {
    /// `http://host:port`.
    pub base: String,
    token: Option<Token>,
    http: Http,
}

/// A request that failed, already explained to the user; carries the exit code.
#[derive(Debug)]
pub struct Failed(pub Exit);

impl Client {
    /// A client of the API at `addr` (`host:port` or a URL).
    pub fn new(addr: &str, token: Option<Token>) -> Client {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        Client {
            base,
            token,
            http: Http::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(None)
                .build()
                .expect("an HTTP client with default TLS settings builds"),
        }
    }

    /// The daemon of the fleet at `file`: `LOOPD_ADDR`, else a live `daemon.json`; `None` when
    /// no daemon holds the fleet's state directory.
    pub fn for_fleet(file: &Path) -> Option<Client> {
        let state_dir = state_dir_of(file);
        if let Some(addr) = std::env::var("LOOPD_ADDR")
            .ok()
            .filter(|a| !a.trim().is_empty())
        {
            return Some(Client::new(&addr, client_token(state_dir.as_deref())));
        }
        let dir = state_dir?;
        let addr = statedir::live_daemon(&dir)?.addr?;
        Some(Client::new(&addr, client_token(Some(&dir))))
    }

    /// Like [`Client::for_fleet`], but says how to start a daemon when there is none.
    pub fn require(file: &Path) -> Result<Client, Failed> {
        Client::for_fleet(file).ok_or_else(|| {
            eprintln!(
                "loopd: no running daemon for {} (start one with `loopd serve`, or set LOOPD_ADDR)",
                file.display()
            );
            Failed(Exit::NotAllPassed)
        })
    }

    /// A GET request with the token, for streams the caller reads itself.
    pub fn http_get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        }
    }

    /// Sends a request; an error answer is printed (every problem of a validation error).
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, Failed> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().map_err(|e| {
            eprintln!("loopd: cannot reach the daemon at {}: {e}", self.base);
            Failed(Exit::NotAllPassed)
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().unwrap_or(Value::Null);
        let err = &body["error"];
        eprintln!(
            "loopd: {} ({})",
            err["message"]
                .as_str()
                .unwrap_or("the daemon refused the request"),
            err["code"].as_str().unwrap_or(status.as_str())
        );
        if let Some(problems) = err["details"]["problems"].as_array() {
            for p in problems {
                eprintln!(
                    "  {}: {}",
                    p["pointer"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .unwrap_or("(body)"),
                    p["message"].as_str().unwrap_or("")
                );
            }
        }
        Err(Failed(if status.is_client_error() {
            Exit::Invalid
        } else {
            Exit::NotAllPassed
        }))
    }

    /// GET and decode.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failed> {
        self.send(Method::GET, path, None)?.json().map_err(|e| {
            eprintln!("loopd: unexpected answer from the daemon: {e}");
            Failed(Exit::NotAllPassed)
        })
    }

    /// POST and decode.
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: Option<&Value>) -> Result<T, Failed> {
        self.send(Method::POST, path, body)?.json().map_err(|e| {
            eprintln!("loopd: unexpected answer from the daemon: {e}");
            Failed(Exit::NotAllPassed)
        })
    }

    /// Every loop, through all pages: `status --json`'s document.
    pub fn status(&self) -> Result<StatusDoc, Failed> {
        Ok(StatusDoc {
            loops: self.every_loop("full")?,
        })
    }

    /// Every loop in the summary view (`ls`): per test its counts and last attempt.
    pub fn summary(&self) -> Result<SummaryDoc, Failed> {
        Ok(SummaryDoc {
            loops: self.every_loop("summary")?,
        })
    }

    /// Every page of `GET /api/loops?view=VIEW`.
    fn every_loop<T: DeserializeOwned>(&self, view: &str) -> Result<Vec<T>, Failed> {
        let mut loops = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/loops?limit=1000&view={view}&cursor={c}"),
                None => format!("/api/loops?limit=1000&view={view}"),
            };
            let page: Value = self.get(&path)?;
            let mut got: Vec<T> = serde_json::from_value(page["loops"].clone()).map_err(|e| {
                eprintln!("loopd: unexpected answer from the daemon: {e}");
                Failed(Exit::NotAllPassed)
            })?;
            loops.append(&mut got);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(loops),
            }
        }
    }

    /// A loop's attempts (of one test), oldest first: `attempts --json`'s document. The tests
    /// from the summary view, then each test's attempts a page at a time: no answer carries
    /// the whole ledger at once.
    pub fn attempts(&self, loop_name: &str, test: Option<&str>) -> Result<AttemptsDoc, Failed> {
        let view: LoopSummary = self.get(&format!("/api/loops/{loop_name}?view=summary"))?;
        let mut attempts = Vec::new();
        for t in view
            .tests
            .iter()
            .filter(|t| test.is_none_or(|id| t.id == id))
        {
            let mut cursor = String::new();
            loop {
                let path = format!(
                    "/api/loops/{loop_name}/tests/{}/attempts?limit=1000{cursor}",
                    t.id
                );
                let page: AttemptPage = self.get(&path)?;
                attempts.extend(page.attempts);
                match page.next_cursor {
                    Some(c) => cursor = format!("&cursor={c}"),
                    None => break,
                }
            }
        }
        attempts.sort_by_key(|a| a.started_at);
        Ok(AttemptsDoc { attempts })
    }
}

/// The state directory of the fleet at `file`, when the file loads.
pub fn state_dir_of(file: &Path) -> Option<PathBuf> {
    config::load_fleet(file).ok().map(|f| f.settings.state_dir)
}

/// `loopd start|stop|resume LOOP`, `loopd pause LOOP [--now]`.
#[derive(Debug, clap::Args)]
pub struct LoopArgs {
    /// The loop.
    pub loop_name: String,
    /// Print the loop as JSON (what `GET /api/loops/:id` returns).
    #[arg(long)]
    pub json: bool,
}

/// `loopd pause LOOP [--now]`.
#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// The loop.
    pub loop_name: String,
    /// Interrupt the running attempt too (else it finishes first).
    #[arg(long)]
    pub now: bool,
    /// Print the loop as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `loopd reset|skip LOOP TEST`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The loop.
    pub loop_name: String,
    /// The test id.
    pub test: String,
    /// Print the test as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `loopd add-test LOOP (--file FILE | JSON)`.
#[derive(Debug, clap::Args)]
pub struct AddTestArgs {
    /// The loop.
    pub loop_name: String,
    /// The tests, inline: `{"tests": [...]}`, `[...]` or one test object.
    #[arg(conflicts_with = "file", required_unless_present = "file")]
    pub tests: Option<String>,
    /// A file in the tests-file format (`-` for stdin).
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Print the injected tests as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `loopd ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Print `{"loops": [LOOP]}` as JSON, each LOOP in the summary view (what
    /// `GET /api/loops/:id?view=summary` returns: per test its counts and last attempt).
    #[arg(long)]
    pub json: bool,
}

fn done(result: Result<(), Failed>) -> anyhow::Result<Exit> {
    Ok(match result {
        Ok(()) => Exit::Ok,
        Err(Failed(code)) => code,
    })
}

fn print_loop(l: &LoopSummary) {
    let p = &l.progress;
    println!(
        "{:<20} {:<9} {:>3}/{:<3} {:<20} {:>5} {:>9}{}",
        l.name,
        words(&l.status),
        p.passed,
        p.total,
        l.current_test
            .as_ref()
            .map(|t| format!("{t}#{}", l.current_attempt.unwrap_or(0)))
            .unwrap_or_else(|| "-".into()),
        l.attempts,
        format!("${:.4}", l.cost_usd),
        l.reason
            .as_ref()
            .map(|r| format!("  ({r})"))
            .unwrap_or_default()
    );
}

/// `loopd ls`: through the daemon when one runs, else from the store.
pub fn ls(file: &Path, args: &LsArgs) -> anyhow::Result<Exit> {
    let doc = match Client::for_fleet(file) {
        Some(client) => match client.summary() {
            Ok(d) => d,
            Err(Failed(code)) => return Ok(code),
        },
        None => match super::status::open_store(file) {
            Ok(store) => loopd_actors::view::summary(&store)?,
            Err(code) => return Ok(code),
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(Exit::Ok);
    }
    println!(
        "{:<20} {:<9} {:>7} {:<20} {:>5} {:>9}",
        "LOOP", "STATE", "PASSED", "CURRENT", "ATT.", "COST"
    );
    for l in &doc.loops {
        print_loop(l);
    }
    Ok(Exit::Ok)
}

/// `loopd start|stop|resume LOOP`.
pub fn loop_action(file: &Path, action: &str, args: &LoopArgs) -> anyhow::Result<Exit> {
    done((|| {
        let client = Client::require(file)?;
        let view: LoopView =
            client.post(&format!("/api/loops/{}/{action}", args.loop_name), None)?;
        show_loop(&view, args.json);
        Ok(())
    })())
}

/// `loopd pause LOOP [--now]`.
pub fn pause(file: &Path, args: &PauseArgs) -> anyhow::Result<Exit> {
    done((|| {
        let client = Client::require(file)?;
        let path = format!(
            "/api/loops/{}/pause{}",
            args.loop_name,
            if args.now { "?now=true" } else { "" }
        );
        let view: LoopView = client.post(&path, None)?;
        show_loop(&view, args.json);
        Ok(())
    })())
}

fn show_loop(view: &LoopView, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(view).unwrap_or_default());
    } else {
        print_loop(&LoopSummary::from(view.clone()));
    }
}

/// `loopd reset|skip LOOP TEST`.
pub fn test_action(file: &Path, action: &str, args: &TestArgs) -> anyhow::Result<Exit> {
    done((|| {
        let client = Client::require(file)?;
        let path = format!("/api/loops/{}/tests/{}/{action}", args.loop_name, args.test);
        let test: TestView = client.post(&path, None)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&test).unwrap_or_default()
            );
        } else {
            println!("{}/{}: {}", args.loop_name, test.id, words(&test.status));
        }
        Ok(())
    })())
}

/// `loopd add-test LOOP (--file FILE | JSON)`.
pub fn add_test(file: &Path, args: &AddTestArgs) -> anyhow::Result<Exit> {
    let text = match (&args.file, &args.tests) {
        (Some(f), _) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            s
        }
        (Some(f), _) => match std::fs::read_to_string(f) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("loopd: cannot read {}: {e}", f.display());
                return Ok(Exit::Invalid);
            }
        },
        (None, Some(inline)) => inline.clone(),
        (None, None) => unreachable!("clap requires one of them"),
    };
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("loopd: the tests are not valid JSON: {e}");
            return Ok(Exit::Invalid);
        }
    };
    // One test object on its own is the common case on a command line.
    let body = if value.get("id").is_some() {
        Value::Array(vec![value])
    } else {
        value
    };
    done((|| {
        let client = Client::require(file)?;
        let answer: Value =
            client.post(&format!("/api/loops/{}/tests", args.loop_name), Some(&body))?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&answer).unwrap_or_default()
            );
        } else {
            for t in answer["tests"].as_array().into_iter().flatten() {
                println!(
                    "{}/{}: {}",
                    args.loop_name,
                    t["id"].as_str().unwrap_or("?"),
                    t["status"].as_str().unwrap_or("?")
                );
            }
        }
        Ok(())
    })())
}
