//! Loading a fleet: the fleet file, its includes, environment overrides, paths made absolute.
//!
//! Why not the `config` crate, which DESIGN.md names: its layering merges maps by key, but our
//! loops are an array of tables keyed by their `name` (and split over included files), so a
//! `LOOPD_LOOPS__AUTH__...` variable must first find *which* element it means; and `config` drops
//! the source spans we need to report line numbers. So the fleet file is parsed with `toml_edit`
//! (spans), converted to a `serde_json::Value`, overlaid with the environment by a small hand-written
//! pass ([`super::env`]) that remembers which variable set which key, validated against the
//! generated JSON Schema (every error at once), and only then deserialized.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;
use toml_edit::ImDocument;

use super::check::{schema_errors, Dialect};
use super::env::{self, Target};
use super::locate::{line_of, Locator};
use super::{AgentConfig, Fleet, FleetSettings, LoopConfig, Problem, Report};
use crate::config::inputs::by_name;
use crate::names::check_name;

/// Keys of a loop that hold humantime durations.
const DURATION_KEYS: [&str; 4] = [
    "iteration_timeout",
    "stall_timeout",
    "verify_timeout",
    "kill_grace",
];

/// Loads the fleet at `path` with the process environment's `LOOPD_*` overrides.
///
/// Returns every structural problem at once (syntax, schema, names, durations, duplicate loop
/// names, overrides that name no loop). It does not look at the file system beyond the fleet
/// file and its includes: [`super::validate_fleet`] does.
pub fn load_fleet(path: &Path) -> Result<Fleet, Report> {
    load_fleet_with_env(path, std::env::vars())
}

/// [`load_fleet`] with the environment given explicitly (tests, or a daemon that filtered it).
pub fn load_fleet_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Fleet, Report> {
    let loaded = load(path, env);
    match loaded.fleet {
        Some(fleet) if loaded.report.is_empty() => Ok(fleet),
        _ => {
            let mut report = loaded.report;
            report.sort_with_files(
                &loaded
                    .docs
                    .iter()
                    .map(|d| d.display.clone())
                    .collect::<Vec<_>>(),
            );
            Err(report)
        }
    }
}

/// A file that was read, for turning pointers into lines.
#[derive(Debug)]
pub(crate) struct Doc {
    /// The file as the user named it (relative names stay relative).
    pub display: PathBuf,
    /// Its folder, absolute: relative paths in it resolve against this.
    pub dir: PathBuf,
    /// Finds lines.
    pub locator: Locator,
    /// `(pointer, variable)` for every key an environment variable set.
    pub env: Vec<(String, String)>,
}

impl Doc {
    /// A problem at `pointer` in this file, with its line, or the variable that set it.
    pub(crate) fn problem(&self, pointer: &str, expected: impl Into<String>) -> Problem {
        let mut expected = expected.into();
        let set_by = self.env.iter().find(|(p, _)| {
            pointer == p
                || pointer
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        });
        let line = match set_by {
            Some((_, var)) => {
                expected.push_str(&format!(" (set by ${var})"));
                None
            }
            None => self.locator.line(pointer),
        };
        Problem {
            file: self.display.clone(),
            pointer: pointer.to_string(),
            line,
            expected,
        }
    }
}

/// Where one loop was written.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// Index into [`Loaded::docs`].
    pub doc: usize,
    /// Pointer of the loop's table in that file (`/loops/0`, or empty for an included file).
    pub pointer: String,
}

/// Everything a load found: the fleet when it is sound, each loop that could be read, problems.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The fleet file, then each included file.
    pub docs: Vec<Doc>,
    /// The fleet, when there was no problem.
    pub fleet: Option<Fleet>,
    /// The loops that deserialized, with where they were written (paths resolved).
    pub loops: Vec<(LoopConfig, Origin)>,
    /// Names of every loop written, readable or not (for cross-loop references).
    pub names: Vec<String>,
    /// Every problem.
    pub report: Report,
}

impl Loaded {
    fn problem(&mut self, doc: usize, pointer: &str, expected: impl Into<String>) {
        let p = self.docs[doc].problem(pointer, expected);
        self.report.push(p);
    }
}

/// One loop table before deserialization.
struct Entry {
    origin: Origin,
    value: Value,
    /// Top-level keys set from the environment: their relative paths resolve against the
    /// current folder, not a file's.
    from_env: Vec<String>,
}

/// Reads a TOML file into a [`Doc`] and its value, or the problem that stopped it.
fn read_toml(display: &Path, abs: &Path) -> Result<(Doc, Value), Problem> {
    let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
    let text = std::fs::read_to_string(abs).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_string(),
            _ => format!("cannot read it: {e}"),
        };
        Problem::new(display, "", why)
    })?;
    let doc = ImDocument::parse(text.clone()).map_err(|e| Problem {
        file: display.to_path_buf(),
        pointer: String::new(),
        line: e.span().map(|s| line_of(&text, s.start)),
        expected: format!("invalid TOML: {}", e.message().trim()),
    })?;
    let value = toml::from_str::<toml::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(Value::Null);
    let doc = Doc {
        display: display.to_path_buf(),
        dir,
        locator: Locator::Toml(doc),
        env: Vec::new(),
    };
    Ok((doc, value))
}

/// The whole load; see the module documentation.
pub(crate) fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Loaded {
    // Kept for `secret_env` of the webhooks, read after the overrides are applied.
    let env: Vec<(String, String)> = env.into_iter().collect();
    let cwd = std::env::current_dir().unwrap_or_default();
    let abs = clean(&cwd.join(path));
    let mut loaded = Loaded {
        docs: Vec::new(),
        fleet: None,
        loops: Vec::new(),
        names: Vec::new(),
        report: Report::default(),
    };
    let (doc, mut root) = match read_toml(path, &abs) {
        Ok(x) => x,
        Err(p) => {
            loaded.report.push(p);
            return loaded;
        }
    };
    let fleet_dir = doc.dir.clone();
    loaded.docs.push(doc);

    let mut entries = Vec::new();
    if let Some(Value::Array(loops)) = root.get("loops") {
        for (i, value) in loops.iter().enumerate() {
            let origin = Origin {
                doc: 0,
                pointer: format!("/loops/{i}"),
            };
            entries.push(Entry {
                origin,
                value: value.clone(),
                from_env: Vec::new(),
            });
        }
        root.as_object_mut().map(|o| o.remove("loops"));
    }
    read_includes(&mut loaded, &root, path, &fleet_dir, &mut entries);

    let fleet_schema = by_name("fleet.schema.json").unwrap_or_default();
    let loop_schema = by_name("loop.schema.json").unwrap_or_default();
    let state_dir_from_env = apply_env(
        &mut loaded,
        &mut root,
        &mut entries,
        env.iter().cloned(),
        &fleet_schema,
    );

    for (pointer, expected) in schema_errors(&fleet_schema, &root, "", Dialect::Toml) {
        loaded.problem(0, &pointer, expected);
    }
    if let Some(expected) = report_every_problem(&root) {
        loaded.problem(0, "/fleet/report_every", expected);
    }
    let settings_ok = loaded.report.is_empty();

    let settings = root
        .get("fleet")
        .cloned()
        .map(serde_json::from_value::<FleetSettings>)
        .unwrap_or_else(|| Ok(FleetSettings::default()));
    let mut settings = match settings {
        Ok(s) => s,
        Err(e) => {
            if settings_ok {
                loaded.problem(0, "/fleet", e.to_string());
            }
            FleetSettings::default()
        }
    };
    let state_base = if state_dir_from_env { &cwd } else { &fleet_dir };
    settings.state_dir = clean(&state_base.join(&settings.state_dir));
    let templates_from_env = loaded.docs[0]
        .env
        .iter()
        .any(|(p, _)| p == "/fleet/templates_dir");
    let templates_base = if templates_from_env { &cwd } else { &fleet_dir };
    settings.templates_dir = clean(&templates_base.join(&settings.templates_dir));
    let webhooks = read_webhooks(&mut loaded, &root, settings_ok, &env);
    let pricing = read_pricing(&mut loaded, &root, settings_ok);
    if settings.report_every.is_some()
        && loaded.report.is_empty()
        && !webhooks
            .iter()
            .any(|h| h.wants(super::WebhookEvent::Report))
    {
        loaded.problem(
            0,
            "/fleet/report_every",
            "no `[[webhooks]]` entry receives the `report` event: add one whose `events` include \
             \"report\" (or leave `events` out), or leave `report_every` out"
                .to_string(),
        );
    }

    let mut first_seen: Vec<(String, Origin)> = Vec::new();
    for entry in entries {
        let name = entry.value.get("name").and_then(Value::as_str);
        if let Some(name) = name {
            loaded.names.push(name.to_string());
            if let Some((_, first)) = first_seen.iter().find(|(n, _)| n == name) {
                let at = loaded.docs[first.doc].problem(&format!("{}/name", first.pointer), "");
                let where_ = match at.line {
                    Some(l) => format!("{}:{l}", at.file.display()),
                    None => format!("{} {}", at.file.display(), first.pointer),
                };
                loaded.problem(
                    entry.origin.doc,
                    &format!("{}/name", entry.origin.pointer),
                    format!("duplicate loop name `{name}` (first defined at {where_})"),
                );
            } else {
                first_seen.push((name.to_string(), entry.origin.clone()));
            }
        }
        let base = loaded.docs[entry.origin.doc].dir.clone();
        let (lp, problems) = check_loop_value(
            &entry.value,
            &entry.origin.pointer,
            Dialect::Toml,
            &loop_schema,
        );
        for (pointer, expected) in problems {
            loaded.problem(entry.origin.doc, &pointer, expected);
        }
        if let Some(mut lp) = lp {
            let defaulted = lp.workdir.is_none();
            resolve_paths(&mut lp, &base, &cwd, &entry.from_env, &fleet_dir);
            let moved = defaulted
                .then(|| old_default_workdir(&lp, &settings.state_dir))
                .flatten();
            if let Some(why) = workdir_in_state_dir(&lp, &settings.state_dir).or(moved) {
                loaded.problem(
                    entry.origin.doc,
                    &format!("{}/workdir", entry.origin.pointer),
                    why,
                );
            }
            loaded.loops.push((lp, entry.origin));
        }
    }

    if loaded.report.is_empty() {
        loaded.fleet = Some(Fleet {
            file: abs,
            settings,
            loops: loaded.loops.iter().map(|(lp, _)| lp.clone()).collect(),
            webhooks,
            pricing,
        });
    }
    loaded
}

/// The `[pricing."<model>"]` table. The schema has refused wrong types and unknown keys (with
/// their key paths) already; what it cannot say (`nan`, `inf`) is said here.
fn read_pricing(loaded: &mut Loaded, root: &Value, settings_ok: bool) -> crate::pricing::Pricing {
    let Some(table) = root.get("pricing") else {
        return Default::default();
    };
    let pricing = match serde_json::from_value::<crate::pricing::Pricing>(table.clone()) {
        Ok(p) => p,
        Err(e) => {
            if settings_ok {
                loaded.problem(0, "/pricing", e.to_string());
            }
            return Default::default();
        }
    };
    for (model, price) in &pricing {
        for (key, expected) in price.problems() {
            let model = model.replace('~', "~0").replace('/', "~1");
            loaded.problem(0, &format!("/pricing/{model}/{key}"), expected);
        }
    }
    pricing
}

/// What is wrong with `[fleet] report_every`, when it is a string but not a duration of a second
/// or more (other types are the schema's to refuse).
fn report_every_problem(root: &Value) -> Option<String> {
    let Some(Value::String(s)) = root.pointer("/fleet/report_every") else {
        return None;
    };
    match humantime::parse_duration(s) {
        Err(_) => Some(format!(
            "expected a duration such as \"24h\" or \"12h\", found \"{s}\""
        )),
        Ok(d) if d < std::time::Duration::from_secs(1) => Some(format!(
            "expected a duration of at least \"1s\" (leave `report_every` out to send no \
             report), found \"{s}\""
        )),
        Ok(_) => None,
    }
}

/// The `[[webhooks]]` tables, secrets from `secret_env` filled in; problems go to the report.
fn read_webhooks(
    loaded: &mut Loaded,
    root: &Value,
    schema_ok: bool,
    env: &[(String, String)],
) -> Vec<super::WebhookConfig> {
    let Some(value) = root.get("webhooks").filter(|_| schema_ok) else {
        return Vec::new();
    };
    let mut hooks = match serde_json::from_value::<Vec<super::WebhookConfig>>(value.clone()) {
        Ok(h) => h,
        Err(e) => {
            loaded.problem(0, "/webhooks", e.to_string());
            return Vec::new();
        }
    };
    for (pointer, expected) in super::webhooks::resolve_webhooks(&mut hooks, env) {
        loaded.problem(0, &pointer, expected);
    }
    hooks
}

/// Reads each file matched by `include` (relative to the fleet file) as one loop.
fn read_includes(
    loaded: &mut Loaded,
    root: &Value,
    path: &Path,
    fleet_dir: &Path,
    entries: &mut Vec<Entry>,
) {
    let Some(Value::Array(patterns)) = root.get("include") else {
        return;
    };
    let display_dir = path.parent().unwrap_or(Path::new(""));
    let mut seen: Vec<PathBuf> = Vec::new();
    for (i, pattern) in patterns.iter().enumerate() {
        // A non-string pattern is reported by the schema.
        let Some(pattern) = pattern.as_str() else {
            continue;
        };
        let full = format!(
            "{}/{}",
            glob::Pattern::escape(&fleet_dir.to_string_lossy()),
            pattern
        );
        let matches = match glob::glob(&full) {
            Ok(paths) => {
                let mut m: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                m.sort();
                m
            }
            Err(e) => {
                loaded.problem(
                    0,
                    &format!("/include/{i}"),
                    format!("invalid glob pattern: {e}"),
                );
                continue;
            }
        };
        let is_literal = !pattern.contains(['*', '?', '[']);
        if matches.is_empty() && is_literal {
            loaded.problem(
                0,
                &format!("/include/{i}"),
                format!("`{pattern}` does not exist"),
            );
        }
        for abs in matches {
            let abs = clean(&abs);
            if seen.contains(&abs) || !abs.is_file() {
                continue;
            }
            seen.push(abs.clone());
            let rel = abs.strip_prefix(fleet_dir).unwrap_or(&abs);
            let display = display_dir.join(rel);
            match read_toml(&display, &abs) {
                Ok((doc, value)) => {
                    loaded.docs.push(doc);
                    entries.push(Entry {
                        origin: Origin {
                            doc: loaded.docs.len() - 1,
                            pointer: String::new(),
                        },
                        value,
                        from_env: Vec::new(),
                    });
                }
                Err(p) => loaded.report.push(p),
            }
        }
    }
}

/// Applies the `LOOPD_*` overrides; returns whether `state_dir` came from the environment.
fn apply_env(
    loaded: &mut Loaded,
    root: &mut Value,
    entries: &mut [Entry],
    env: impl IntoIterator<Item = (String, String)>,
    fleet_schema: &Value,
) -> bool {
    let mut state_dir_from_env = false;
    for var in env::read(env) {
        let set = match &var.target {
            Target::StateDir | Target::Fleet(_) => {
                let keys: Vec<String> = match &var.target {
                    Target::Fleet(keys) => keys.clone(),
                    _ => vec!["state_dir".into()],
                };
                let mut path = vec!["fleet".to_string()];
                path.extend(keys.iter().cloned());
                if keys == ["state_dir"] {
                    state_dir_from_env = true;
                }
                env::apply(root, "", &path, &var.raw, fleet_schema).map(|p| (0, p))
            }
            Target::Loop(rest) => {
                let names: Vec<&str> = entries
                    .iter()
                    .map(|e| e.value.get("name").and_then(Value::as_str).unwrap_or(""))
                    .collect();
                match env::match_loop(rest, &names) {
                    Some((i, keys)) => {
                        let loop_schema = by_name("loop.schema.json").unwrap_or_default();
                        let entry = &mut entries[i];
                        entry.from_env.push(keys[0].clone());
                        env::apply(&mut entry.value, "", &keys, &var.raw, &loop_schema)
                            .map(|p| (entry.origin.doc, format!("{}{p}", entry.origin.pointer)))
                    }
                    None => Err(format!(
                        "names no loop of this fleet (loops: {})",
                        names.join(", ")
                    )),
                }
            }
        };
        match set {
            Ok((doc, pointer)) => loaded.docs[doc].env.push((pointer, var.var.clone())),
            Err(why) => {
                let p = Problem::new(
                    loaded.docs[0].display.clone(),
                    "",
                    format!("${}: {why}", var.var),
                );
                loaded.report.push(p);
            }
        }
    }
    state_dir_from_env
}

/// Schema, name and duration checks of one loop value, then deserialization. Problems are
/// `(pointer, expected)` with `prefix` in front of each pointer. The loop is returned whenever it
/// deserializes (an invalid name does not stop it), or, when it has problems, whatever of it
/// [`super::salvage::salvage_loop`] can save, so that its files and tests can be checked too.
pub(crate) fn check_loop_value(
    value: &Value,
    prefix: &str,
    dialect: Dialect,
    loop_schema: &Value,
) -> (Option<LoopConfig>, Vec<(String, String)>) {
    let mut problems = schema_errors(loop_schema, value, prefix, dialect);
    // What salvage takes out: the parts the schema or the durations refused (an invalid name
    // stays, it is only a word in the report then).
    let mut broken: Vec<String> = problems.iter().map(|(p, _)| p.clone()).collect();
    if let Some(name) = value.get("name").and_then(Value::as_str) {
        if let Err(why) = check_name(name) {
            problems.push((
                format!("{prefix}/name"),
                format!("invalid loop name: {why}"),
            ));
        }
    }
    if let Some(Value::Array(patterns)) = value.get("env_passthrough") {
        for (i, p) in patterns.iter().enumerate() {
            if let Some(why) = p.as_str().and_then(crate::child_env::check_pattern) {
                problems.push((format!("{prefix}/env_passthrough/{i}"), why));
            }
        }
    }
    for key in DURATION_KEYS {
        if let Some(Value::String(s)) = value.get(key) {
            if humantime::parse_duration(s).is_err() {
                broken.push(format!("{prefix}/{key}"));
                problems.push((
                    format!("{prefix}/{key}"),
                    format!("expected a duration such as \"30m\" or \"1h 30m\", found \"{s}\""),
                ));
            }
        }
    }
    if !broken.is_empty() {
        // Checked further without what is broken, so that this problem hides no other.
        let salvaged =
            super::salvage::salvage_loop(value, broken.iter().map(String::as_str), prefix);
        return (salvaged, problems);
    }
    match serde_json::from_value::<LoopConfig>(value.clone()) {
        Ok(lp) => {
            for (key, why) in lp.agent.problems() {
                problems.push((format!("{prefix}/{key}"), why));
            }
            (Some(lp), problems)
        }
        Err(e) => {
            problems.push((prefix.to_string(), e.to_string()));
            (None, problems)
        }
    }
}

/// Makes every path of `lp` absolute: against `base` (the folder of the file that named it), or
/// `env_base` for keys set from the environment; fills the default workdir,
/// `<fleet_dir>/workdirs/<name>` (outside the state directory: see [`workdir_in_state_dir`]).
pub(crate) fn resolve_paths(
    lp: &mut LoopConfig,
    base: &Path,
    env_base: &Path,
    from_env: &[String],
    fleet_dir: &Path,
) {
    let base_of = |key: &str| {
        if from_env.iter().any(|k| k == key) {
            env_base
        } else {
            base
        }
    };
    let abs = |key: &str, p: &Path| clean(&base_of(key).join(p));
    lp.workdir = Some(match &lp.workdir {
        Some(w) => abs("workdir", w),
        None => fleet_dir.join("workdirs").join(&lp.name),
    });
    lp.tests_file = abs("tests_file", &lp.tests_file);
    for (key, field) in [
        ("specs_dir", &mut lp.specs_dir),
        ("prompt_template", &mut lp.prompt_template),
        ("workdir_template", &mut lp.workdir_template),
    ] {
        if let Some(p) = field {
            *p = clean(&base_of(key).join(&*p));
        }
    }
    // A bare program name is looked up on PATH; only a path (`./agent.sh`, `bin/claude`) is
    // relative to the file. Without this, a relative program would be looked up in the workdir,
    // the agent's current folder.
    match &mut lp.agent {
        AgentConfig::ClaudeCode {
            binary: Some(binary),
            ..
        }
        | AgentConfig::Codex {
            binary: Some(binary),
            ..
        } if binary.to_string_lossy().contains('/') => *binary = abs("agent", binary),
        AgentConfig::Command { command, .. } => {
            if let Some(program) = command.first_mut().filter(|p| p.contains('/')) {
                *program = abs("agent", Path::new(program.as_str()))
                    .to_string_lossy()
                    .into_owned();
            }
        }
        _ => {}
    }
}

/// Why `lp`'s workdir (paths resolved) may not be used: it lies inside the state directory,
/// where the agent, which may change anything in its workdir, could reach the store, the
/// generation record and the token by a relative path, and where deleting the state directory
/// would take the work with it.
pub(crate) fn workdir_in_state_dir(lp: &LoopConfig, state_dir: &Path) -> Option<String> {
    let workdir = lp.workdir.as_ref()?;
    // Lexically, and once more through symlinks where both exist.
    let real = |p: &Path| std::fs::canonicalize(p).ok();
    let inside = workdir.starts_with(state_dir)
        || matches!((real(workdir), real(state_dir)), (Some(w), Some(s)) if w.starts_with(&s));
    inside.then(|| {
        format!(
            "the workdir `{}` is inside the state directory `{}`; the agent would work beside loopd's store: choose a workdir outside it (the default is `workdirs/<name>` next to the fleet file)",
            workdir.display(),
            state_dir.display()
        )
    })
}

/// For a loop without `workdir`: the workdir an older loopd made at the old default,
/// `<state_dir>/workdirs/<name>`, while the new default does not exist yet. Starting would
/// make an empty repository at the new place and leave the loop's work behind, so it is
/// refused with the move that fixes it.
fn old_default_workdir(lp: &LoopConfig, state_dir: &Path) -> Option<String> {
    let new = lp.workdir.as_ref()?;
    let old = state_dir.join("workdirs").join(&lp.name);
    (old.is_dir() && !new.exists()).then(|| {
        format!(
            "loop `{}` has no `workdir`, and the default moved out of the state directory: from `{}` (which exists) to `{}`; move it there (`mv {} {}`)",
            lp.name,
            old.display(),
            new.display(),
            old.display(),
            new.display()
        )
    })
}

/// Lexically normalizes a path: drops `.`, and folds `..` into the component before it
/// (`/a/./b/../c` → `/a/c`), as paths in reports should read the way the user thinks of them.
pub(crate) fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    const FLEET: &str = r#"
include = ["loops/*.toml"]

[fleet]
max_concurrent_agents = 2

[[loops]]
name = "auth"
workdir = "./repos/auth"
tests_file = "auth/tests.json"
prompt_template = "prompt.md"
[loops.agent]
kind = "claude-code"
binary = "bin/claude"
"#;

    #[test]
    fn resolves_paths_against_the_file_that_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "loopd.toml", FLEET);
        write(
            root,
            "loops/billing.toml",
            "name = \"billing\"\ntest_state_file = \"t.json\"\nspecs_dir = \"../specs\"\n\
             [agent]\nkind = \"command\"\ncommand = [\"./agent.sh\"]\n",
        );
        let fleet = load_fleet_with_env(&root.join("loopd.toml"), no_env()).unwrap();
        assert_eq!(fleet.file, root.join("loopd.toml"));
        assert_eq!(fleet.settings.state_dir, root.join(".loopd"));
        assert_eq!(fleet.settings.max_concurrent_agents, 2);
        let names: Vec<_> = fleet.loops.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["auth", "billing"]);
        let auth = &fleet.loops[0];
        assert_eq!(
            auth.workdir.as_deref(),
            Some(root.join("repos/auth").as_path())
        );
        assert_eq!(auth.tests_file, root.join("auth/tests.json"));
        assert_eq!(auth.prompt_template, Some(root.join("prompt.md")));
        assert_eq!(
            auth.agent,
            AgentConfig::ClaudeCode {
                binary: Some(root.join("bin/claude")),
                extra_args: vec![]
            }
        );
        let billing = &fleet.loops[1];
        assert_eq!(billing.tests_file, root.join("loops/t.json"));
        assert_eq!(billing.specs_dir, Some(root.join("specs")));
        // No workdir: next to the fleet file, outside the state dir. A program path is
        // relative to its file too.
        assert_eq!(billing.workdir, Some(root.join("workdirs/billing")));
        let program = root.join("loops/agent.sh").to_string_lossy().into_owned();
        assert!(
            matches!(&billing.agent, AgentConfig::Command { command, .. } if command == &[program])
        );
    }

    #[test]
    fn a_workdir_left_at_the_old_default_is_refused_with_the_move() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "loopd.toml",
            "[[loops]]\nname = \"a\"\ntests_file = \"t.json\"\ninit_workdir = true\n\
             agent = { kind = \"command\", command = [\"true\"] }\n",
        );
        std::fs::create_dir_all(dir.path().join(".loopd/workdirs/a")).unwrap();
        let report = load_fleet_with_env(&dir.path().join("loopd.toml"), no_env()).unwrap_err();
        let text = report.to_string();
        assert!(
            text.contains("/loops/0/workdir") && text.contains("`mv "),
            "{text}"
        );
    }

    #[test]
    fn a_bare_claude_binary_stays_on_path() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "loopd.toml",
            &FLEET.replace("bin/claude", "claude"),
        );
        let fleet = load_fleet_with_env(&dir.path().join("loopd.toml"), no_env()).unwrap();
        assert!(matches!(
            &fleet.loops[0].agent,
            AgentConfig::ClaudeCode { binary: Some(b), .. } if b == Path::new("claude")
        ));
    }

    #[test]
    fn environment_overrides_keys_of_the_fleet_and_of_loops() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "loopd.toml", FLEET);
        write(
            root,
            "loops/web-ui.toml",
            "name = \"web-ui\"\ntests_file = \"t.json\"\nagent = { kind = \"command\", command = [\"a\"] }\n",
        );
        let env = [
            ("LOOPD_STATE_DIR", "/var/lib/loopd"),
            ("LOOPD_FLEET__MAX_CONCURRENT_AGENTS", "4"),
            ("LOOPD_LOOPS__AUTH__MAX_ATTEMPTS", "5"),
            (
                "LOOPD_LOOPS__WEB_UI__AGENT__COMMAND",
                r#"["/tmp/b.sh", "--x"]"#,
            ),
            ("LOOPD_LOOPS__WEB_UI__ENV__API_KEY", "123"),
            ("LOOPD_LOOPS__AUTH__TESTS_FILE", "/abs/tests.json"),
            ("LOOPD_PROMPT_FILE", "/nope"),
            ("LOOPD_LOOP", "nope"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let fleet = load_fleet_with_env(&root.join("loopd.toml"), env).unwrap();
        assert_eq!(fleet.settings.state_dir, Path::new("/var/lib/loopd"));
        assert_eq!(fleet.settings.max_concurrent_agents, 4);
        assert_eq!(fleet.loops[0].max_attempts, 5);
        assert_eq!(fleet.loops[0].tests_file, Path::new("/abs/tests.json"));
        let web = &fleet.loops[1];
        assert_eq!(web.env.get("API_KEY").map(String::as_str), Some("123"));
        assert!(
            matches!(&web.agent, AgentConfig::Command { command, .. } if command == &["/tmp/b.sh", "--x"])
        );
        // The default workdir stays next to the fleet file when the state dir moves.
        assert_eq!(web.workdir, Some(root.join("workdirs/web-ui")));
    }

    #[test]
    fn a_bad_override_names_its_variable() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "loopd.toml", FLEET);
        let env = [
            ("LOOPD_LOOPS__AUTH__MAX_ATTEMPTS", "abc"),
            ("LOOPD_LOOPS__NOPE__PRIORITY", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let report = load_fleet_with_env(Path::new(&dir.path().join("loopd.toml")), env)
            .unwrap_err()
            .to_string()
            .replace(&dir.path().display().to_string(), "<dir>");
        assert_eq!(
            report,
            "<dir>/loopd.toml: $LOOPD_LOOPS__NOPE__PRIORITY: names no loop of this fleet (loops: auth)\n\
             <dir>/loopd.toml: /loops/0/max_attempts: expected an integer >= 1, found \"abc\" \
             (set by $LOOPD_LOOPS__AUTH__MAX_ATTEMPTS)\n\
             2 problems"
        );
    }

    #[test]
    fn lanes_default_to_one_are_set_by_file_or_environment_and_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "loopd.toml", FLEET);
        let path = dir.path().join("loopd.toml");
        let none: [(String, String); 0] = [];
        assert_eq!(load_fleet_with_env(&path, none).unwrap().loops[0].lanes, 1);
        let env = [("LOOPD_LOOPS__AUTH__LANES", "4")].map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(load_fleet_with_env(&path, env).unwrap().loops[0].lanes, 4);
        write(
            dir.path(),
            "loopd.toml",
            &FLEET.replace("name = \"auth\"\n", "name = \"auth\"\nlanes = 0\n"),
        );
        let none: [(String, String); 0] = [];
        let report = load_fleet_with_env(&path, none)
            .unwrap_err()
            .to_string()
            .replace(&dir.path().display().to_string(), "<dir>");
        assert_eq!(
            report,
            "<dir>/loopd.toml:9: /loops/0/lanes: expected a number >= 1, found 0\n1 problem"
        );
    }

    #[test]
    fn a_bad_env_passthrough_entry_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = FLEET.replace(
            "prompt_template = \"prompt.md\"\n",
            "prompt_template = \"prompt.md\"\nenv_passthrough = [\"AWS_*\", \"BAD-NAME\", \"LOOPD_*\"]\n",
        );
        write(dir.path(), "loopd.toml", &fleet);
        let report = load_fleet_with_env(&dir.path().join("loopd.toml"), no_env())
            .unwrap_err()
            .to_string()
            .replace(&dir.path().display().to_string(), "<dir>");
        assert!(
            report.contains("/loops/0/env_passthrough/1") && report.contains("\"BAD-NAME\""),
            "{report}"
        );
        assert!(
            report.contains("/loops/0/env_passthrough/2") && report.contains("LOOPD_TOKEN"),
            "{report}"
        );
        assert!(report.contains("2 problems"), "{report}");
    }

    #[test]
    fn report_every_is_a_duration_of_a_second_or_more_with_a_webhook_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("loopd.toml");
        let load = |fleet: &str, hook_events: &str| {
            let text = format!(
                "[fleet]\n{fleet}\n\n[[webhooks]]\nurl = \"http://127.0.0.1:9/\"\n\
                 secret = \"k\"\n{hook_events}\n"
            );
            write(dir.path(), "loopd.toml", &text);
            load_fleet_with_env(&file, no_env())
        };
        let problem = |fleet: &str, hook_events: &str| {
            load(fleet, hook_events)
                .unwrap_err()
                .to_string()
                .replace(&file.display().to_string(), "loopd.toml")
        };
        assert_eq!(
            problem("report_every = \"daily\"", ""),
            "loopd.toml:2: /fleet/report_every: expected a duration such as \"24h\" or \"12h\", \
             found \"daily\"\n1 problem"
        );
        assert!(
            problem("report_every = \"0s\"", "").contains(
                "loopd.toml:2: /fleet/report_every: expected a duration of at least \"1s\""
            ),
            "{}",
            problem("report_every = \"0s\"", "")
        );
        let unheard = problem("report_every = \"24h\"", "events = [\"alert\"]");
        assert!(
            unheard.contains("/fleet/report_every: no `[[webhooks]]` entry receives the `report`"),
            "{unheard}"
        );
        let every = |fleet: &str, events: &str| load(fleet, events).unwrap().settings.report_every;
        assert_eq!(
            every("report_every = \"12h\"", "events = [\"report\"]"),
            Some(std::time::Duration::from_secs(12 * 3600))
        );
        assert_eq!(
            every("report_every = \"1d\"", ""),
            Some(std::time::Duration::from_secs(24 * 3600)),
            "a webhook without a filter takes every event"
        );
        assert_eq!(every("", "events = [\"alert\"]"), None, "off by default");
    }

    #[test]
    fn reports_problems_in_included_files_with_their_own_lines() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "loopd.toml", FLEET);
        write(
            root,
            "loops/x.toml",
            "name = \"auth\"\ntests_file = \"t.json\"\npriority = 0\nstall_timeout = \"soon\"\n\
             agent = { kind = \"command\", command = [\"a\"] }\n",
        );
        let report = load_fleet_with_env(&root.join("loopd.toml"), no_env()).unwrap_err();
        let got: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        let x = root.join("loops/x.toml");
        assert_eq!(
            got,
            vec![
                format!(
                    "{}:1: /name: duplicate loop name `auth` (first defined at {}:8)",
                    x.display(),
                    root.join("loopd.toml").display()
                ),
                format!("{}:3: /priority: expected a number >= 1, found 0", x.display()),
                format!(
                    "{}:4: /stall_timeout: expected a duration such as \"30m\" or \"1h 30m\", found \"soon\"",
                    x.display()
                ),
            ]
        );
    }

    #[test]
    fn syntax_errors_and_missing_files_are_one_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = load_fleet_with_env(&dir.path().join("nope.toml"), no_env()).unwrap_err();
        assert_eq!(missing.len(), 1);
        assert!(
            missing.problems[0].expected.ends_with("no such file"),
            "{missing}"
        );
        write(dir.path(), "bad.toml", "[fleet]\nstate_dir = \n");
        let bad = load_fleet_with_env(&dir.path().join("bad.toml"), no_env()).unwrap_err();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad.problems[0].line, Some(2));
        assert!(
            bad.problems[0].expected.starts_with("invalid TOML"),
            "{bad}"
        );
    }

    const PRICED: &str = r#"
[pricing."gpt-5.1-codex"]
input_usd_per_mtok = 1.25
cached_input_usd_per_mtok = 0.125
output_usd_per_mtok = 10

[pricing.cheap]
input_usd_per_mtok = 0
output_usd_per_mtok = 0.5

[[loops]]
name = "a"
tests_file = "t.json"
agent = { kind = "command", command = ["a"] }
"#;

    #[test]
    fn the_price_table_is_read_per_model() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "loopd.toml", PRICED);
        let fleet = load_fleet_with_env(&dir.path().join("loopd.toml"), no_env()).unwrap();
        let p = &fleet.pricing["gpt-5.1-codex"];
        assert_eq!(
            (
                p.input_usd_per_mtok,
                p.cached_input_usd_per_mtok,
                p.output_usd_per_mtok
            ),
            (1.25, Some(0.125), 10.0)
        );
        assert_eq!(fleet.pricing["cheap"].cached_input_usd_per_mtok, None);
    }

    #[test]
    fn bad_prices_and_unknown_price_keys_are_named_by_key_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let text = PRICED
            .replace("output_usd_per_mtok = 10\n", "output_usd_per_mtok = -10\n")
            .replace(
                "output_usd_per_mtok = 0.5\n",
                "output_usd_per_mtok = 0.5\ninput_usd_per_token = 3\n",
            )
            .replace("input_usd_per_mtok = 1.25", "input_usd_per_mtok = nan");
        write(dir.path(), "loopd.toml", &text);
        let report = load_fleet_with_env(&dir.path().join("loopd.toml"), no_env()).unwrap_err();
        let got: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(got.len(), 3, "{got:#?}");
        let all = got.join("\n");
        assert!(
            all.contains(":3: /pricing/gpt-5.1-codex/input_usd_per_mtok"),
            "{all}"
        );
        assert!(
            all.contains(":5: /pricing/gpt-5.1-codex/output_usd_per_mtok"),
            "{all}"
        );
        assert!(all.contains("/pricing/cheap"), "{all}");
        assert!(all.contains("input_usd_per_token"), "{all}");
    }

    #[test]
    fn invalid_agent_patterns_are_refused_at_load_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = PRICED.replace(
            r#"agent = { kind = "command", command = ["a"] }"#,
            r#"agent = { kind = "command", command = ["a"], billing_patterns = ["(oops"], cost_patterns = ['\$([0-9.]+)'], token_patterns = ['(?P<input>\d+) sent'] }"#,
        );
        write(dir.path(), "loopd.toml", &text);
        let report = load_fleet_with_env(&dir.path().join("loopd.toml"), no_env()).unwrap_err();
        let got: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].contains("/loops/0/agent/billing_patterns/0: invalid regular expression"),
            "{got:#?}"
        );
        assert!(
            got[1].contains("/loops/0/agent/cost_patterns/0:") && got[1].contains("(?P<usd>...)"),
            "{got:#?}"
        );
    }

    #[test]
    fn a_codex_agent_loads_with_its_endpoint_and_bad_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = PRICED.replace(
            r#"agent = { kind = "command", command = ["a"] }"#,
            r#"agent = { kind = "codex", binary = "bin/codex", base_url = "http://127.0.0.1:8080/v1", api_key_env = "MY_KEY" }"#,
        );
        write(dir.path(), "loopd.toml", &good);
        let fleet = load_fleet_with_env(&dir.path().join("loopd.toml"), no_env()).unwrap();
        let agent = &fleet.loops[0].agent;
        assert_eq!(agent.provider(), "openai");
        assert!(matches!(
            agent,
            AgentConfig::Codex { binary: Some(b), base_url: Some(u), api_key_env: Some(k), .. }
                if b == &dir.path().join("bin/codex") && u == "http://127.0.0.1:8080/v1" && k == "MY_KEY"
        ));

        let bad = PRICED.replace(
            r#"agent = { kind = "command", command = ["a"] }"#,
            r#"agent = { kind = "codex", base_url = "127.0.0.1:8080", api_key_env = "MY-KEY" }"#,
        );
        write(dir.path(), "loopd.toml", &bad);
        let report = load_fleet_with_env(&dir.path().join("loopd.toml"), no_env()).unwrap_err();
        let got: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[1].contains("/loops/0/agent/base_url: expected an http:// or https:// URL"),
            "{got:#?}"
        );
        assert!(
            got[0].contains("/loops/0/agent/api_key_env: expected an environment variable name"),
            "{got:#?}"
        );

        // A key variable with no endpoint to send it to would be ignored: refused instead.
        let lonely = PRICED.replace(
            r#"agent = { kind = "command", command = ["a"] }"#,
            r#"agent = { kind = "codex", api_key_env = "MY_KEY" }"#,
        );
        write(dir.path(), "loopd.toml", &lonely);
        let report = load_fleet_with_env(&dir.path().join("loopd.toml"), no_env()).unwrap_err();
        let got: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert!(
            got.len() == 1
                && got[0].contains("/loops/0/agent/api_key_env: is read only with `base_url`"),
            "{got:#?}"
        );
    }
}
