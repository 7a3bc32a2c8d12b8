//! The rules of a child's environment that need no process: which variables a pattern names,
//! the `PATH` a child gets and where a bare program name resolves on it. Config validation
//! checks with them (a pattern that would pass loopd's token, a program that is missing) and
//! `process` spawns with them, so they live below both.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Whether `name` matches `pattern`: the exact name, or a prefix followed by `*`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
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
