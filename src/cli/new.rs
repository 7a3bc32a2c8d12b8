//! `loopd new LOOP --template NAME [--set k=v ...] [--start]`: a loop from a template of the
//! fleet's `templates_dir`, made by the running daemon (`POST /api/loops {"template", "vars"}`).

use std::path::Path;

use loopd_actors::view::LoopView;
use serde_json::{json, Map, Value};

use super::client::{Client, Failed};
use super::{words, Exit};

/// Arguments of `loopd new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The new loop's name (the template's `{{name}}`).
    pub loop_name: String,
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
fn body(args: &NewArgs) -> Result<Value, String> {
    let mut vars = Map::new();
    vars.insert("name".into(), json!(args.loop_name));
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(format!("--set {kv}: expected KEY=VALUE"));
        };
        if k == "name" && v != args.loop_name {
            return Err(format!(
                "--set name={v}: the loop's name is the LOOP argument (`{}`)",
                args.loop_name
            ));
        }
        vars.insert(k.to_string(), json!(v));
    }
    Ok(json!({"template": args.template, "vars": vars, "start": args.start}))
}

/// Runs `loopd new`.
pub fn run(file: &Path, args: &NewArgs) -> anyhow::Result<Exit> {
    let body = match body(args) {
        Ok(b) => b,
        Err(why) => {
            eprintln!("loopd new: {why}");
            return Ok(Exit::Invalid);
        }
    };
    let made = Client::require(file).and_then(|c| c.post::<LoopView>("/api/loops", Some(&body)));
    let view = match made {
        Ok(v) => v,
        Err(Failed(code)) => return Ok(code),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        println!(
            "loop `{}` created from template `{}`: {}, {} tests",
            view.name,
            args.template,
            words(&view.status),
            view.progress.total
        );
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(set: &[&str]) -> NewArgs {
        NewArgs {
            loop_name: "api".into(),
            template: "service".into(),
            set: set.iter().map(|s| s.to_string()).collect(),
            start: true,
            json: false,
        }
    }

    #[test]
    fn the_name_and_each_set_become_variables() {
        assert_eq!(
            body(&args(&["port=8080", "x=a=b"])).unwrap(),
            json!({"template": "service", "start": true,
                   "vars": {"name": "api", "port": "8080", "x": "a=b"}})
        );
        assert!(body(&args(&["novalue"])).is_err());
        assert!(body(&args(&["name=other"])).is_err());
    }
}
