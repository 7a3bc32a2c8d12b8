//! `loopd init [DIR]`: scaffolds a fleet with one loop that validates as generated, and runs
//! offline with its example agent script.

use std::path::{Path, PathBuf};

use anyhow::Context;
use loopd_actors::names::check_name;

use super::Exit;

/// Arguments of `loopd init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Where to scaffold the fleet (default: the current folder).
    pub dir: Option<PathBuf>,
    /// The name of the loop to create.
    #[arg(long, default_value = "example")]
    pub name: String,
}

/// The scaffold: file name, content, executable.
const FILES: [(&str, &str, bool); 4] = [
    (
        "loopd.toml",
        include_str!("init_templates/loopd.toml"),
        false,
    ),
    (
        "tests.json",
        include_str!("init_templates/tests.json"),
        false,
    ),
    ("prompt.md", include_str!("init_templates/prompt.md"), false),
    ("agent.sh", include_str!("init_templates/agent.sh"), true),
];

/// Scaffolds a fleet in `args.dir`, refusing to overwrite anything.
pub fn run(args: &InitArgs) -> anyhow::Result<Exit> {
    if let Err(why) = check_name(&args.name) {
        eprintln!("loopd init: invalid loop name: {why}");
        return Ok(Exit::Invalid);
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let existing: Vec<String> = FILES
        .iter()
        .map(|(name, _, _)| dir.join(name))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        eprintln!(
            "loopd init: refusing to overwrite {}; move it away or choose another folder",
            existing.join(", ")
        );
        return Ok(Exit::Invalid);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, template, executable) in FILES {
        let path = dir.join(name);
        let content = template
            .replace("{{loop_name}}", &args.name)
            .replace("{{loop_env_name}}", &env_name(&args.name));
        write_new(&path, &content, executable)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let fleet = dir.join("loopd.toml");
    println!(
        "created a fleet with loop `{}` in {}:",
        args.name,
        dir.display()
    );
    for (name, _, _) in FILES {
        println!("  {}", dir.join(name).display());
    }
    println!("next: loopd validate {0} && loopd run {0}", fleet.display());
    Ok(Exit::Ok)
}

/// How a loop name is written in `LOOPD_LOOPS__<LOOP>__<KEY>` variables.
fn env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace(['-', '.'], "_")
}

/// Writes a file that must not exist yet (`create_new`, so a race cannot overwrite either).
fn write_new(path: &Path, content: &str, executable: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(content.as_bytes())
}
