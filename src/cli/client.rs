//! A daemon's API ([`Client`]), and the commands that change state through it: `start`, `stop`,
//! `pause`, `resume` (one loop or `--all`), `reset`, `skip`, `add-test`; and `ls`.
//!
//! How the daemon is found is [`super::source`]'s business; the token is `LOOPD_TOKEN` or the
//! state directory's `token` file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use loopd_actors::view::{
    AttemptPage, AttemptsDoc, LoopSummary, LoopView, StatusDoc, SummaryDoc, TestView,
};
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::source::{self, Source};
use super::target::{self, FleetRef, Shape};
use super::{words, Exit};
use crate::api::auth::Token;

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

    /// The daemon of the fleet at `file` (see [`super::source::discover`]); says how to start
    /// one when there is none.
    pub fn require(file: &Path) -> Result<Client, Failed> {
        super::source::daemon(&FleetRef::from_path(file), false)
            .map(|d| d.client)
            .map_err(Failed)
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

/// `loopd start|stop|resume [CONFIG] (LOOP | all | --all)`.
#[derive(Debug, clap::Args)]
pub struct LoopArgs {
    /// `[CONFIG] LOOP`: the loop (`all`: every loop), after an optional fleet file.
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,
    /// Every loop of the daemon (the same as the loop name `all`).
    #[arg(long)]
    pub all: bool,
    /// Print the loop as JSON (what `GET /api/loops/:id` returns); `{"loops": [LOOP]}` for
    /// every loop.
    #[arg(long)]
    pub json: bool,
}

impl LoopArgs {
    /// The fleet and the loop named; `None` for every loop (`--all` or `all`).
    pub fn target(
        &self,
        command: &'static str,
        flag: Option<&PathBuf>,
    ) -> Result<(FleetRef, Option<String>), Exit> {
        let shape = Shape::new(command, "[CONFIG] LOOP (or `all`, or --all)", 0, 1);
        let (fleet, names) = target::resolve(&self.args, shape, flag)?;
        match (self.all, names.first().map(String::as_str)) {
            (true, None) | (false, Some("all")) => Ok((fleet, None)),
            (false, Some(name)) => Ok((fleet, Some(name.to_string()))),
            (true, Some(name)) => {
                eprintln!("loopd {command}: --all and the loop `{name}`: name one or the other");
                Err(Exit::Invalid)
            }
            (false, None) => {
                eprintln!("loopd {command}: name a loop, or `--all` for every loop");
                Err(Exit::Invalid)
            }
        }
    }
}

/// `loopd pause [CONFIG] (LOOP | all | --all) [--now]`.
#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// The loops.
    #[command(flatten)]
    pub target: LoopArgs,
    /// Interrupt the running attempt too (else it finishes first).
    #[arg(long)]
    pub now: bool,
}

/// `loopd reset|skip|rollback [CONFIG] LOOP TEST`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// `[CONFIG] LOOP TEST`: the loop and the test id, after an optional fleet file.
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,
    /// Print the test as JSON.
    #[arg(long)]
    pub json: bool,
}

impl TestArgs {
    /// The fleet, the loop and the test.
    pub fn target(
        &self,
        command: &'static str,
        flag: Option<&PathBuf>,
    ) -> Result<(FleetRef, String, String), Exit> {
        let shape = Shape::new(command, "[CONFIG] LOOP TEST", 2, 2);
        let (fleet, names) = target::resolve(&self.args, shape, flag)?;
        Ok((fleet, names[0].clone(), names[1].clone()))
    }
}

/// `loopd add-test [CONFIG] LOOP (--file FILE | JSON)`.
#[derive(Debug, clap::Args)]
pub struct AddTestArgs {
    /// `[CONFIG] LOOP [TESTS]`: the loop, then the tests inline (`{"tests": [...]}`, `[...]` or
    /// one test object) unless `--file` gives them.
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,
    /// A file in the tests-file format (`-` for stdin).
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Print the injected tests as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `loopd ls [CONFIG]`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The fleet file (default: `-c`, `LOOPD_CONFIG`, or `./loopd.toml`).
    pub file: Option<PathBuf>,
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
pub fn ls(fleet: &FleetRef, args: &LsArgs) -> anyhow::Result<Exit> {
    let doc = match Source::open(fleet, args.json)
        .map_err(Failed)
        .and_then(|s| s.summary())
    {
        Ok(d) => d,
        Err(Failed(code)) => return Ok(code),
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

/// `loopd start|stop|resume|pause [CONFIG] (LOOP | all | --all)`: `query` is added to each
/// request (`?now=true`). Every loop is tried even when one fails; the first failure's code is
/// the exit code.
pub fn loop_action(
    flag: Option<&PathBuf>,
    action: &'static str,
    args: &LoopArgs,
    query: &str,
) -> anyhow::Result<Exit> {
    done((|| {
        let (fleet, name) = args.target(action, flag).map_err(Failed)?;
        let client = source::daemon(&fleet, args.json).map_err(Failed)?.client;
        let names = match &name {
            Some(n) => vec![n.clone()],
            None => client
                .summary()?
                .loops
                .into_iter()
                .map(|l| l.name)
                .collect(),
        };
        let mut result = Ok(());
        let mut views = Vec::new();
        for n in &names {
            match client.post::<LoopView>(&format!("/api/loops/{n}/{action}{query}"), None) {
                Ok(v) => views.push(v),
                Err(failed) => result = result.and(Err(failed)),
            }
        }
        match (args.json, name.is_some()) {
            (true, true) => views.iter().for_each(|v| show_loop(v, true)),
            (true, false) => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "loops": views }))
                    .unwrap_or_default()
            ),
            (false, _) if views.is_empty() && name.is_none() => println!("no loops"),
            (false, _) => views.iter().for_each(|v| show_loop(v, false)),
        }
        result
    })())
}

fn show_loop(view: &LoopView, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(view).unwrap_or_default());
    } else {
        print_loop(&LoopSummary::from(view.clone()));
    }
}

/// `loopd reset|skip|rollback LOOP TEST` through the daemon `client`.
pub fn test_action(
    client: &Client,
    action: &str,
    (loop_name, test): (&str, &str),
    json: bool,
) -> anyhow::Result<Exit> {
    done((|| {
        let path = format!("/api/loops/{loop_name}/tests/{test}/{action}");
        let test: TestView = client.post(&path, None)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&test).unwrap_or_default()
            );
        } else {
            println!("{loop_name}/{}: {}", test.id, words(&test.status));
        }
        Ok(())
    })())
}

/// `loopd reset|skip [CONFIG] LOOP TEST`.
pub fn test_command(
    flag: Option<&PathBuf>,
    action: &'static str,
    args: &TestArgs,
) -> anyhow::Result<Exit> {
    let (fleet, lp, test) = match args.target(action, flag) {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    match source::daemon(&fleet, args.json) {
        Ok(d) => test_action(&d.client, action, (&lp, &test), args.json),
        Err(code) => Ok(code),
    }
}

/// The tests of `add-test`, as the request body.
fn add_test_body(inline: Option<&String>, file: Option<&PathBuf>) -> Result<Value, Exit> {
    let text = match (file, inline) {
        (Some(_), Some(_)) => {
            eprintln!("loopd add-test: give the tests inline or with --file, not both");
            return Err(Exit::Invalid);
        }
        (Some(f), None) if f.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| {
                eprintln!("loopd add-test: cannot read stdin: {e}");
                Exit::Invalid
            })?;
            s
        }
        (Some(f), None) => std::fs::read_to_string(f).map_err(|e| {
            eprintln!("loopd: cannot read {}: {e}", f.display());
            Exit::Invalid
        })?,
        (None, Some(inline)) => inline.clone(),
        (None, None) => {
            eprintln!("loopd add-test: give the tests inline (JSON) or with --file FILE");
            return Err(Exit::Invalid);
        }
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        eprintln!("loopd: the tests are not valid JSON: {e}");
        Exit::Invalid
    })?;
    // One test object on its own is the common case on a command line.
    Ok(if value.get("id").is_some() {
        Value::Array(vec![value])
    } else {
        value
    })
}

/// `loopd add-test [CONFIG] LOOP (--file FILE | JSON)`.
pub fn add_test(flag: Option<&PathBuf>, args: &AddTestArgs) -> anyhow::Result<Exit> {
    let shape = Shape::new("add-test", "[CONFIG] LOOP (JSON | --file FILE)", 1, 2);
    let (fleet, names) = match target::resolve(&args.args, shape, flag) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let body = match add_test_body(names.get(1), args.file.as_ref()) {
        Ok(b) => b,
        Err(code) => return Ok(code),
    };
    let loop_name = &names[0];
    done((|| {
        let client = source::daemon(&fleet, args.json).map_err(Failed)?.client;
        let answer: Value = client.post(&format!("/api/loops/{loop_name}/tests"), Some(&body))?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&answer).unwrap_or_default()
            );
        } else {
            for t in answer["tests"].as_array().into_iter().flatten() {
                println!(
                    "{loop_name}/{}: {}",
                    t["id"].as_str().unwrap_or("?"),
                    t["status"].as_str().unwrap_or("?")
                );
            }
        }
        Ok(())
    })())
}
