//! `loopd hint [CONFIG] LOOP [TEST] TEXT` and `loopd hint [CONFIG] LOOP [TEST] --clear`:
//! guidance from a person for a loop's (or one test's) next prompts, through the daemon.

use std::path::PathBuf;

use loopd_actors::hints::Hint;
use reqwest::Method;
use serde_json::json;

use super::client::{Client, Failed, Refused};
use super::control::done;
use super::source;
use super::target::{self, Shape};
use super::Exit;

/// `loopd hint [CONFIG] LOOP [TEST] (TEXT | --clear)`.
#[derive(Debug, clap::Args)]
pub struct HintArgs {
    /// `[CONFIG] LOOP [TEST] TEXT`: the loop, the test (absent: every test of the loop) and the
    /// guidance, after an optional fleet file.
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,
    /// Remove the loop's hint (or the test's) instead of giving one.
    #[arg(long)]
    pub clear: bool,
    /// Print the hint as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Who gives a hint from the command line.
fn author() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "cli".into())
}

/// `POST /api/loops/:id/hints`: `text` for the next prompts of the loop (or only `test`'s).
pub(super) fn give(
    client: &Client,
    loop_name: &str,
    test: Option<&str>,
    text: &str,
) -> Result<Hint, Refused> {
    let body = json!({"test": test, "text": text, "author": author()});
    client.try_post(&format!("/api/loops/{loop_name}/hints"), Some(&body))
}

/// `loopd hint`.
pub fn run(flag: Option<&PathBuf>, args: &HintArgs) -> anyhow::Result<Exit> {
    let shape = if args.clear {
        Shape::new("hint", "[CONFIG] LOOP [TEST] --clear", 1, 2)
    } else {
        Shape::new("hint", "[CONFIG] LOOP [TEST] TEXT", 2, 3)
    };
    let (fleet, mut names) = match target::resolve(&args.args, shape, flag) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let text = (!args.clear).then(|| names.pop().unwrap_or_default());
    let loop_name = names[0].clone();
    let test = names.get(1).cloned();
    let whose = match &test {
        Some(t) => format!("{loop_name}/{t}"),
        None => loop_name.clone(),
    };
    done((|| {
        let client = source::daemon(&fleet, args.json).map_err(Failed)?.client;
        match text {
            Some(text) => {
                let hint =
                    give(&client, &loop_name, test.as_deref(), &text).map_err(Refused::said)?;
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&hint).unwrap_or_default()
                    );
                } else {
                    println!("{whose}: hint given; the next prompts carry it");
                }
            }
            None => {
                let query = test.map(|t| format!("?test={t}")).unwrap_or_default();
                let path = format!("/api/loops/{loop_name}/hints{query}");
                client.send(Method::DELETE, &path, None)?;
                if !args.json {
                    println!("{whose}: hint cleared");
                }
            }
        }
        Ok(())
    })())
}
