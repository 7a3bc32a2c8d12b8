//! The environment loopd gives an agent or a verify command: an allowlist, never its own.
//!
//! loopd's environment holds what its user started it with: `LOOPD_TOKEN`, webhook secrets, and
//! whatever else the shell had (cloud credentials, other tokens). An agent is code a model
//! wrote, and verify runs code the agent wrote; each gets only the usual session variables
//! ([`SESSION_VARS`]), what its preset needs, the loop's `env_passthrough`, and the variables
//! loopd sets itself (the loop's `env`, `LOOPD_*`). The names given to
//! [`keep_from_children`] (the API token, webhook secrets) never pass, whatever a pattern says.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::process::Command;

/// The session variables every agent and verify inherits from loopd. `LC_*` keeps the user's
/// locale (tools print differently without it).
pub const SESSION_VARS: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_*", "TERM", "TMPDIR", "SHELL",
];

/// Environment variables of loopd's own that no agent or verify may inherit.
static PRIVATE_ENV: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Keeps the variables `names` (secrets loopd reads from its environment: webhook secrets, the
/// API token) out of the environment of every process loopd starts from now on, whatever an
/// allowlist says. An agent is code a model wrote; it has no business with loopd's secrets.
pub fn keep_from_children(names: impl IntoIterator<Item = String>) {
    let mut private = PRIVATE_ENV.write().unwrap_or_else(|e| e.into_inner());
    for n in names {
        if !private.contains(&n) {
            private.push(n);
        }
    }
}

/// Whether `name` is one of loopd's secrets ([`keep_from_children`]).
fn is_private(name: &str) -> bool {
    PRIVATE_ENV
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|p| p == name)
}

/// Removes the variables given to [`keep_from_children`] from `cmd`'s environment (for the
/// commands loopd runs in a workdir that are loopd's own: git).
pub fn without_private_env(cmd: &mut Command) {
    for name in PRIVATE_ENV.read().unwrap_or_else(|e| e.into_inner()).iter() {
        cmd.env_remove(name);
    }
}

/// Whether `name` matches `pattern`: the exact name, or a prefix followed by `*`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Clears `cmd`'s environment and gives it the variables of loopd's own environment that match
/// [`SESSION_VARS`] or one of `patterns`, minus loopd's secrets. Call it before setting any
/// variable on `cmd` (clearing drops those too).
pub fn inherit_only<'a>(cmd: &mut Command, patterns: impl IntoIterator<Item = &'a str> + Clone) {
    cmd.env_clear();
    for (name, value) in std::env::vars_os() {
        let Some(n) = name.to_str() else { continue };
        let allowed = SESSION_VARS
            .iter()
            .copied()
            .chain(patterns.clone())
            .any(|p| matches(p, n));
        if allowed && !is_private(n) {
            cmd.env(&name, value);
        }
    }
}

/// `program` as the child will find it: a bare name is looked up in `path`, the `PATH` the child
/// gets (the loop's `env` may set its own, else loopd's), as `execvp` would.
///
/// Why: a command whose `PATH` is set (every agent and verify: [`inherit_only`] sets it) and
/// whose program is a bare name is spawned by std with fork and exec instead of
/// `posix_spawn`, and a fork copies loopd's page tables, a cost that grows with loopd's memory
/// (200 ms an attempt with a loop of 100,000 tests). With a path, std uses `posix_spawn`. A name
/// that is not found, or a `PATH` with an empty or relative entry (which `execvp` resolves
/// against the child's own folder), is left as it is.
pub fn resolve_program(program: &Path, path: Option<&OsStr>) -> PathBuf {
    let bare = program.components().count() == 1 && !program.as_os_str().is_empty();
    let Some(path) = path.filter(|_| bare) else {
        return program.to_path_buf();
    };
    let dirs: Vec<PathBuf> = std::env::split_paths(path).collect();
    if dirs.iter().any(|d| !d.is_absolute()) {
        return program.to_path_buf();
    }
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| program.to_path_buf())
}

/// The `PATH` a child of a loop with `env` gets: the loop's own, else loopd's.
pub fn child_path(env: &std::collections::BTreeMap<String, String>) -> Option<std::ffi::OsString> {
    env.get("PATH")
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
}

/// A problem with one `env_passthrough` entry, or `None` when it is fine.
pub fn check_pattern(pattern: &str) -> Option<String> {
    let name = pattern.strip_suffix('*').unwrap_or(pattern);
    let valid = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if !valid || pattern.is_empty() {
        return Some(format!(
            "expected a variable name, or a prefix followed by `*` (such as \"AWS_*\"), found \"{pattern}\""
        ));
    }
    if matches(pattern, "LOOPD_TOKEN") {
        return Some(format!(
            "\"{pattern}\" would pass LOOPD_TOKEN, loopd's API token, which no agent may see"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_or_prefixes() {
        assert!(matches("PATH", "PATH"));
        assert!(!matches("PATH", "PATHS"));
        assert!(matches("ANTHROPIC_*", "ANTHROPIC_API_KEY"));
        assert!(!matches("ANTHROPIC_*", "XANTHROPIC_"));
    }

    #[test]
    fn bare_programs_are_found_as_execvp_would() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        // Not executable in `a`, executable in `b`: `b`'s is the one exec runs.
        std::fs::write(a.join("tool"), "").unwrap();
        std::fs::write(b.join("tool"), "").unwrap();
        std::fs::set_permissions(b.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        let tool = Path::new("tool");
        assert_eq!(resolve_program(tool, Some(&path)), b.join("tool"));
        assert_eq!(
            resolve_program(Path::new("nope"), Some(&path)),
            Path::new("nope")
        );
        assert_eq!(
            resolve_program(Path::new("./tool"), Some(&path)),
            Path::new("./tool")
        );
        assert_eq!(resolve_program(tool, None), tool);
        let relative = std::env::join_paths([Path::new("rel"), &b]).unwrap();
        assert_eq!(resolve_program(tool, Some(&relative)), tool);
    }

    #[test]
    fn bad_patterns_are_named() {
        assert_eq!(check_pattern("AWS_PROFILE"), None);
        assert_eq!(check_pattern("AWS_*"), None);
        assert!(check_pattern("A-B").unwrap().contains("\"A-B\""));
        assert!(check_pattern("").is_some());
        assert!(check_pattern("1X").is_some());
        assert!(check_pattern("*").unwrap().contains("LOOPD_TOKEN"));
        assert!(check_pattern("LOOPD_*").unwrap().contains("LOOPD_TOKEN"));
    }
}
