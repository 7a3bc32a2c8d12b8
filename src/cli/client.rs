//! A daemon's API ([`Client`]), and `ls` (the commands that change state through it are in
//! `control`).
//!
//! How the daemon is found is [`super::source`]'s business; the token is `LOOPD_TOKEN` or the
//! state directory's `token` file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use loopd_actors::view::{AttemptPage, AttemptsDoc, LoopSummary, StatusDoc, SummaryDoc};
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::source::Source;
use super::style::Tone;
use super::table::{cell, toned, Table};
use super::target::FleetRef;
use super::{words, Exit};
use crate::api::auth::Token;

/// A daemon's API.
#[derive(Clone)]
pub struct Client {
    /// `http://host:port`.
    pub base: String,
    token: Option<Token>,
    http: Http,
}

/// A request that failed, already explained to the user; carries the exit code.
#[derive(Debug)]
pub struct Failed(pub Exit);

/// A request that failed, not yet explained: what to say, and the exit code.
#[derive(Debug)]
pub struct Refused {
    /// The explanation, a line each (`loopd: MESSAGE (CODE)`, then one a problem).
    pub lines: Vec<String>,
    /// The exit code it maps to.
    pub exit: Exit,
    /// The daemon's answer, when it answered.
    pub status: Option<reqwest::StatusCode>,
}

impl Refused {
    /// Prints the explanation on stderr.
    pub fn said(self) -> Failed {
        for line in &self.lines {
            eprintln!("{line}");
        }
        Failed(self.exit)
    }
}

/// An answer that is not the document expected.
fn unexpected(e: impl std::fmt::Display) -> Refused {
    Refused {
        lines: vec![format!("loopd: unexpected answer from the daemon: {e}")],
        exit: Exit::NotAllPassed,
        status: None,
    }
}

fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, Refused> {
    resp.json().map_err(unexpected)
}

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

    /// The daemon of the fleet at `file` when one answers; `None` (said nowhere) otherwise.
    pub fn if_any(file: &Path) -> Option<Client> {
        match super::source::discover(&FleetRef::from_path(file), true) {
            Ok(super::source::Found::Daemon(d)) => Some(d.client),
            _ => None,
        }
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
        self.answer(method, path, body).map_err(Refused::said)
    }

    /// Sends a request; an error answer is returned as the lines [`Client::send`] prints, for a
    /// caller that shows them itself (`top`, whose screen stderr would tear).
    pub fn answer(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, Refused> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().map_err(|e| Refused {
            lines: vec![format!(
                "loopd: cannot reach the daemon at {}: {e}",
                self.base
            )],
            exit: Exit::NotAllPassed,
            status: None,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().unwrap_or(Value::Null);
        let err = &body["error"];
        let mut lines = vec![format!(
            "loopd: {} ({})",
            err["message"]
                .as_str()
                .unwrap_or("the daemon refused the request"),
            err["code"].as_str().unwrap_or(status.as_str())
        )];
        if let Some(problems) = err["details"]["problems"].as_array() {
            for p in problems {
                lines.push(format!(
                    "  {}: {}",
                    p["pointer"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .unwrap_or("(body)"),
                    p["message"].as_str().unwrap_or("")
                ));
            }
        }
        Err(Refused {
            lines,
            exit: if status.is_client_error() {
                Exit::Invalid
            } else {
                Exit::NotAllPassed
            },
            status: Some(status),
        })
    }

    /// GET and decode.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failed> {
        self.try_get(path).map_err(Refused::said)
    }

    /// GET and decode; a failure is returned, not printed.
    pub fn try_get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Refused> {
        decode(self.answer(Method::GET, path, None)?)
    }

    /// POST and decode.
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: Option<&Value>) -> Result<T, Failed> {
        self.try_post(path, body).map_err(Refused::said)
    }

    /// POST and decode; a failure is returned, not printed.
    pub fn try_post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, Refused> {
        decode(self.answer(Method::POST, path, body)?)
    }

    /// Every loop, through all pages: `status --json`'s document.
    pub fn status(&self) -> Result<StatusDoc, Failed> {
        Ok(StatusDoc {
            loops: self.every_loop("full").map_err(Refused::said)?,
        })
    }

    /// Every loop in the summary view (`ls`): per test its counts and last attempt.
    pub fn summary(&self) -> Result<SummaryDoc, Failed> {
        self.try_summary().map_err(Refused::said)
    }

    /// [`Client::summary`], a failure returned, not printed.
    pub fn try_summary(&self) -> Result<SummaryDoc, Refused> {
        Ok(SummaryDoc {
            loops: self.every_loop("summary")?,
        })
    }

    /// Every page of `GET /api/loops?view=VIEW`.
    fn every_loop<T: DeserializeOwned>(&self, view: &str) -> Result<Vec<T>, Refused> {
        let mut loops = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/loops?limit=1000&view={view}&cursor={c}"),
                None => format!("/api/loops?limit=1000&view={view}"),
            };
            let page: Value = self.try_get(&path)?;
            let mut got: Vec<T> =
                serde_json::from_value(page["loops"].clone()).map_err(unexpected)?;
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

/// The table of `ls` (and of `start`, `stop`, `pause`, `resume`): one loop a row.
pub(super) fn loops_table<'a>(loops: impl IntoIterator<Item = &'a LoopSummary>) -> String {
    let mut t = Table::new(&[
        "LOOP", "STATE", "PASSED", "CURRENT", "ATTEMPTS", "COST", "WHY",
    ])
    .right(&[2, 4, 5])
    .shrink(&[0, 3, 6]);
    for l in loops {
        let p = &l.progress;
        t.row(vec![
            cell(&l.name),
            toned(words(&l.status), Tone::of_state(l.status)),
            cell(format!("{}/{}", p.passed, p.total)),
            cell(
                l.current_test
                    .as_ref()
                    .map(|t| format!("{t}#{}", l.current_attempt.unwrap_or(0)))
                    .unwrap_or_else(|| "-".into()),
            ),
            cell(l.attempts),
            cell(format!("${:.4}", l.cost_usd)),
            cell(
                l.reason
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ),
        ]);
    }
    t.render()
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
    super::out(&loops_table(&doc.loops))?;
    Ok(Exit::Ok)
}
