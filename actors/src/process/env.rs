//! The environment loopd gives an agent or a verify command: an allowlist, never its own.
//!
//! loopd's environment holds what its user started it with: `LOOPD_TOKEN`, webhook secrets, and
//! whatever else the shell had (cloud credentials, other tokens). An agent is code a model
//! wrote, and verify runs code the agent wrote; each gets only the usual session variables
//! ([`SESSION_VARS`]), what its preset needs, the loop's `env_passthrough`, and the variables
//! loopd sets itself (the loop's `env`, `LOOPD_*`). The names given to
//! [`keep_from_children`] (the API token, webhook secrets) never pass, whatever a pattern says.

use tokio::process::Command;

pub use crate::child_env::{check_pattern, child_path, matches, resolve_program};

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
