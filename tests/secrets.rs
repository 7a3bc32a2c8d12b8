//! No secret escapes to an agent: the agent and verify get an allowlisted environment (session
//! variables, the loop's `env` and `env_passthrough`, the preset's variables), never loopd's
//! token or a variable it was merely started with; and an agent running as loopd's own user
//! cannot read loopd's `/proc/<pid>/environ` or open its memory.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;

use common::{Fleet, Running, RUN_TIMEOUT};
use serde_json::json;

/// What loopd is started with: secrets it must keep, and variables a loop asks to pass.
const LOOPD_ENV: &[(&str, &str)] = &[
    ("LOOPD_TOKEN", "token-from-env"),
    ("FOO_SECRET", "do-not-leak"),
    ("ANTHROPIC_API_KEY", "sk-ant-for-claude-only"),
    ("CLAUDE_CONFIG_DIR", "/claude/config"),
    ("PASS_ME", "passed"),
    ("PASS_PREFIX_A", "also-passed"),
    ("LANG", "C.UTF-8"),
];

/// `env` output (one `NAME=value` a line) as a map.
fn read_env(path: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A fleet whose agent writes its environment to `$ROOT/agent.env` and whose verify writes its
/// own to `$ROOT/verify.env`, run to its end with [`LOOPD_ENV`].
fn run_dumping_env(claude_preset: bool) -> Fleet {
    let fleet = Fleet::new()
        .tests(json!([{
            "id": "T1", "title": "t", "spec": "s",
            "verify": "env > ../verify.env; grep -qx ok done.txt",
        }]))
        .set(
            "env_passthrough",
            r#"["PASS_ME", "PASS_PREFIX_*", "LOOPD_NOT_SET_*"]"#,
        )
        .set("env", r#"{ LOOP_VAR = "from-the-loop" }"#)
        .agent("env > \"$ROOT/agent.env\"\necho ok > done.txt")
        .write();
    if claude_preset {
        fleet.use_claude_code_preset();
    }
    let mut cmd = fleet.loopd(&["run", "loopd.toml", "--plain"]);
    cmd.envs(LOOPD_ENV.iter().copied());
    Running::spawn(cmd).wait(RUN_TIMEOUT).expect_code(0);
    fleet
}

#[test]
fn the_agent_and_verify_see_only_the_allowlist() {
    let fleet = run_dumping_env(false);
    for file in ["agent.env", "verify.env"] {
        let env = read_env(&fleet.root().join(file));
        for secret in [
            "LOOPD_TOKEN",
            "FOO_SECRET",
            "ANTHROPIC_API_KEY",
            "CLAUDE_CONFIG_DIR",
        ] {
            assert!(!env.contains_key(secret), "{file} has {secret}: {env:#?}");
        }
        assert_eq!(
            env.get("PASS_ME").map(String::as_str),
            Some("passed"),
            "{file}"
        );
        assert_eq!(
            env.get("PASS_PREFIX_A").map(String::as_str),
            Some("also-passed")
        );
        assert_eq!(
            env.get("LOOP_VAR").map(String::as_str),
            Some("from-the-loop")
        );
        assert_eq!(env.get("LANG").map(String::as_str), Some("C.UTF-8"));
        assert!(
            env.contains_key("PATH") && env.contains_key("HOME"),
            "{env:#?}"
        );
    }
    let agent = read_env(&fleet.root().join("agent.env"));
    assert_eq!(agent.get("LOOPD_TEST_ID").map(String::as_str), Some("T1"));
    // Nothing else of what the test process had (cargo sets many CARGO_* variables).
    assert!(agent.keys().all(|k| !k.starts_with("CARGO")), "{agent:#?}");
}

#[test]
fn the_claude_code_preset_passes_what_claude_code_reads() {
    let fleet = run_dumping_env(true);
    let agent = read_env(&fleet.root().join("agent.env"));
    assert_eq!(
        agent.get("ANTHROPIC_API_KEY").map(String::as_str),
        Some("sk-ant-for-claude-only")
    );
    assert_eq!(
        agent.get("CLAUDE_CONFIG_DIR").map(String::as_str),
        Some("/claude/config")
    );
    assert_eq!(
        agent.get("DISABLE_TELEMETRY").map(String::as_str),
        Some("1")
    );
    assert!(!agent.contains_key("LOOPD_TOKEN") && !agent.contains_key("FOO_SECRET"));
    // verify runs the agent's code and talks to no model: not the preset's variables.
    let verify = read_env(&fleet.root().join("verify.env"));
    assert!(!verify.contains_key("ANTHROPIC_API_KEY"), "{verify:#?}");
    assert_eq!(verify.get("PASS_ME").map(String::as_str), Some("passed"));
}

/// Probes loopd (the agent's parent) from inside the agent: its name, whether its environ can
/// be read (and what it holds), whether its memory can be opened.
const PROBE: &str = r#"cat "/proc/$PPID/comm" > "$ROOT/parent.comm"
if cat "/proc/$PPID/environ" > "$ROOT/parent.environ" 2>/dev/null; then r=readable; else r=refused; fi
echo "$r" > "$ROOT/environ.result"
if (exec 3< "/proc/$PPID/mem") 2>/dev/null; then m=opened; else m=refused; fi
echo "$m" > "$ROOT/mem.result"
echo ok > done.txt
"#;

#[test]
fn an_agent_of_loopds_own_user_cannot_read_its_environ_or_memory() {
    let fleet = Fleet::new()
        .tests(json!([{"id": "T1", "title": "t", "spec": "s", "verify": "grep -qx ok done.txt"}]))
        .agent(PROBE)
        .write();
    let mut cmd = fleet.loopd(&["run", "loopd.toml", "--plain"]);
    cmd.envs(LOOPD_ENV.iter().copied());
    // root may read any process's environ (CAP_SYS_PTRACE), so as root loopd and its agent run
    // as `nobody`: the agent is then what it is in production, a process of loopd's own user.
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("a user `nobody`");
        let status = std::process::Command::new("chown")
            .args(["-R", &format!("{}:{}", nobody.uid, nobody.gid)])
            .arg(fleet.root())
            .status()
            .unwrap();
        assert!(status.success());
        let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
        cmd.env("HOME", fleet.root());
        // SAFETY: between fork and exec only async-signal-safe calls (setgroups, setgid,
        // setuid) run.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setgroups(&[]).map_err(std::io::Error::from)?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))
                    .map_err(std::io::Error::from)?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)).map_err(std::io::Error::from)
            });
        }
    }
    Running::spawn(cmd).wait(RUN_TIMEOUT).expect_code(0);
    let read = |f: &str| std::fs::read_to_string(fleet.root().join(f)).unwrap();
    assert_eq!(
        read("parent.comm").trim(),
        "loopd",
        "the probe did not look at loopd"
    );
    assert!(!read("parent.environ").contains("do-not-leak"));
    assert_eq!(read("environ.result").trim(), "refused");
    assert_eq!(read("mem.result").trim(), "refused");
}
