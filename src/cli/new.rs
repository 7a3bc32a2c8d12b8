//! `loopd new LOOP --template NAME [--set k=v ...] [--start]`: a loop from a template of the
//! fleet's `templates_dir`, made by the running daemon (`POST /api/loops {"template", "vars"}`).

use std::path::PathBuf;

use loopd_actors::view::LoopView;
use serde_json::{json, Map, Value};

use super::client::Failed;
use super::source;
use super::target::{self, Shape};
use super::{words, Exit};

/// Arguments of `loopd new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// `[CONFIG] LOOP`: the new loop's name (the template's `{{name}}`), after an optional
    /// fleet file.
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,
    /// The template: `<templates_dir>/<NAME>.toml`.
    #[arg(long, short = 't')]
    pub template: String,
    /// A value for a placeholder of the template, `KEY=VALUE` (repeatable).
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Start the loop at once.
    #[arg(long)]
    pub start: bool,
    /// Print the loop as JSON (what `GET /api/loops/:id` returns).
    #[arg(long)]
    pub json: bool,
}

/// The request body: the loop's name goes in as the variable `name`.
fn body(loop_name: &str, args: &NewArgs) -> Result<Value, String> {
    let mut vars = Map::new();
    vars.insert("name".into(), json!(loop_name));
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(format!("--set {kv}: expected KEY=VALUE"));
        };
        if k == "name" && v != loop_name {
            return Err(format!(
                "--set name={v}: the loop's name is the LOOP argument (`{loop_name}`)"
            ));
        }
        vars.insert(k.to_string(), json!(v));
    }
    Ok(json!({"template": args.template, "vars": vars, "start": args.start}))
}

/// Runs `loopd new`.
pub fn run(flag: Option<&PathBuf>, args: &NewArgs) -> anyhow::Result<Exit> {
    let shape = Shape::new("new", "[CONFIG] LOOP --template NAME", 1, 1);
    let (fleet, names) = match target::resolve(&args.args, shape, flag) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let body = match body(&names[0], args) {
        Ok(b) => b,
        Err(why) => {
            eprintln!("loopd new: {why}");
            return Ok(Exit::Invalid);
        }
    };
    let made = source::daemon(&fleet, args.json)
        .map_err(Failed)
        .and_then(|d| d.client.post::<LoopView>("/api/loops", Some(&body)));
    let view = match made {
        Ok(v) => v,
        Err(Failed(code)) => return Ok(code),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!(
            "loop `{}` created from template `{}`: {}, {}",
            view.name,
            args.template,
            words(&view.status),
            loopd_actors::words::count(view.progress.total, "test", "tests")
        );
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(set: &[&str]) -> NewArgs {
        NewArgs {
            args: vec!["api".into()],
            template: "service".into(),
            set: set.iter().map(|s| s.to_string()).collect(),
            start: true,
            json: false,
        }
    }

    #[test]
    fn the_name_and_each_set_become_variables() {
        assert_eq!(
            body("api", &args(&["port=8080", "x=a=b"])).unwrap(),
            json!({"template": "service", "start": true,
                   "vars": {"name": "api", "port": "8080", "x": "a=b"}})
        );
        assert!(body("api", &args(&["novalue"])).is_err());
        assert!(body("api", &args(&["name=other"])).is_err());
    }
}
