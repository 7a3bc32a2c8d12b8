//! Commands that change state through the daemon: `start`, `stop`, `pause`, `resume` (one
//! loop, or every loop with `--all` or `all`), `reset`, `skip`, `add-test`. Without a daemon
//! they say so and what to run ([`source::daemon`]).

use std::path::PathBuf;

use loopd_actors::view::{LoopSummary, LoopView, TestView};
use serde_json::Value;

use super::client::{loops_table, Client, Failed, Refused};
use super::source;
use super::target::{self, FleetRef, Shape};
use super::{words, Exit};

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

pub(super) fn done(result: Result<(), Failed>) -> anyhow::Result<Exit> {
    Ok(match result {
        Ok(()) => Exit::Ok,
        Err(Failed(code)) => code,
    })
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
            match loop_call(&client, n, action, query).map_err(Refused::said) {
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
            (false, _) => {
                let rows: Vec<LoopSummary> =
                    views.iter().map(|v| LoopSummary::from(v.clone())).collect();
                let _ = super::out(&loops_table(&rows));
            }
        }
        result
    })())
}

fn show_loop(view: &LoopView, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(view).unwrap_or_default());
    } else {
        let _ = super::out(&loops_table([&LoopSummary::from(view.clone())]));
    }
}

/// `POST /api/loops/:id/ACTION[QUERY]` (`start`, `stop`, `pause`, `resume`): the loop after it.
pub(super) fn loop_call(
    client: &Client,
    name: &str,
    action: &str,
    query: &str,
) -> Result<LoopView, Refused> {
    client.try_post(&format!("/api/loops/{name}/{action}{query}"), None)
}

/// `POST /api/loops/:id/tests/:test/ACTION` (`reset`, `skip`, `rollback`): the test after it.
pub(super) fn test_call(
    client: &Client,
    (loop_name, test): (&str, &str),
    action: &str,
) -> Result<TestView, Refused> {
    client.try_post(
        &format!("/api/loops/{loop_name}/tests/{test}/{action}"),
        None,
    )
}

/// `loopd reset|skip|rollback LOOP TEST` through the daemon `client`.
pub fn test_action(
    client: &Client,
    action: &str,
    (loop_name, test): (&str, &str),
    json: bool,
) -> anyhow::Result<Exit> {
    done((|| {
        let test = test_call(client, (loop_name, test), action).map_err(Refused::said)?;
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
