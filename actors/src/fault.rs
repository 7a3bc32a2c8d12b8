//! Fault injection for tests: `LOOPD_TEST_FAULT` makes a named point of a loop's actor panic or
//! hang, so supervision can be tested end to end against the built binary.
//!
//! The variable holds comma-separated specs `ACTION:POINT:LOOP[:TIMES[:AFTER]]`: ACTION is `panic` or
//! `hang` (at `loop_boot`, `loop_next`, `loop_attempt_done`, `loop_ping`, and in the merge queue's
//! task at `merge_combine`, `merge_update_ref`, `merge_moved`), or `fail` (at
//! `attempt_group_record`: recording the agent's process group fails as if the store had; at
//! `store_flush`: every flush of the journal fails as if the disk were full; at `git_checkpoint`:
//! a pass's checkpoint commit fails as if git had), LOOP a loop name or
//! `*` for any, TIMES how often it fires (default: every time), AFTER how many passes of the point
//! it lets go by first (default 0). Counters live in the process, so a
//! loop restarted by its supervisor sees how often it already fired. Not for production use.
//!
//! The scheduler and the monitor have points of their own, keyed by the loop they are dealing
//! with: `scheduler_grant` (about to grant a slot to LOOP), `scheduler_start` (an incarnation's
//! start; LOOP is `*`), `monitor_tick` (looking at an attempt of LOOP), `monitor_start`; they know
//! `panic` only, since they run outside any future that could hang.

use std::sync::{Mutex, OnceLock};

/// The variable that configures faults.
pub const ENV: &str = "LOOPD_TEST_FAULT";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Panic,
    Hang,
    Fail,
}

#[derive(Debug)]
struct Spec {
    action: Action,
    point: String,
    loop_name: String,
    times: Option<u32>,
    after: u32,
}

fn specs() -> &'static Mutex<Vec<(Spec, u32)>> {
    static SPECS: OnceLock<Mutex<Vec<(Spec, u32)>>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let parsed = std::env::var(ENV).map(|v| parse(&v)).unwrap_or_default();
        Mutex::new(parsed.into_iter().map(|s| (s, 0)).collect())
    })
}

fn parse(value: &str) -> Vec<Spec> {
    value
        .split(',')
        .filter_map(|part| {
            let mut it = part.trim().split(':');
            let action = match it.next()? {
                "panic" => Action::Panic,
                "hang" => Action::Hang,
                "fail" => Action::Fail,
                other => {
                    tracing::warn!(spec = part, "{ENV}: unknown action `{other}`");
                    return None;
                }
            };
            Some(Spec {
                action,
                point: it.next()?.to_string(),
                loop_name: it.next()?.to_string(),
                times: it.next().and_then(|t| t.parse().ok()),
                after: it.next().and_then(|t| t.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// Counts a pass of `point` for `loop_name` under every spec that names them; the action of
/// the first spec whose window (after its first AFTER passes, TIMES of them) holds this pass.
fn fire(point: &str, loop_name: &str) -> Option<Action> {
    let mut specs = specs().lock().unwrap_or_else(|e| e.into_inner());
    let mut action = None;
    for (spec, seen) in specs.iter_mut() {
        if spec.point != point || (spec.loop_name != loop_name && spec.loop_name != "*") {
            continue;
        }
        *seen += 1;
        let inside = *seen > spec.after && spec.times.is_none_or(|t| *seen - spec.after <= t);
        if inside && action.is_none() {
            action = Some(spec.action);
        }
    }
    action
}

/// A point where a fault may be injected: panics, or returns a future that never ends, when
/// `LOOPD_TEST_FAULT` says so for this point and loop.
pub async fn point(name: &str, loop_name: &str) {
    match fire(name, loop_name) {
        Some(Action::Panic) => panic!("{ENV}: injected panic at {name} of loop `{loop_name}`"),
        Some(Action::Hang) => {
            tracing::warn!(point = name, loop_name, "{ENV}: hanging");
            std::future::pending::<()>().await
        }
        Some(Action::Fail) | None => {}
    }
}

/// A point outside async code (the scheduler's and the monitor's): panics when
/// `LOOPD_TEST_FAULT` says `panic` for this point and loop; other actions do nothing here.
pub fn panic_point(name: &str, loop_name: &str) {
    if fire(name, loop_name) == Some(Action::Panic) {
        panic!("{ENV}: injected panic at {name} of loop `{loop_name}`");
    }
}

/// A point where an operation may be made to fail: true when `LOOPD_TEST_FAULT` says `fail`
/// for this point and loop.
pub fn fails(name: &str, loop_name: &str) -> bool {
    fire(name, loop_name) == Some(Action::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_and_without_counts() {
        let s = parse("panic:loop_boot:a:2, hang:loop_ping:b,bogus:x:y");
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].action, s[0].times), (Action::Panic, Some(2)));
        assert_eq!(
            (s[1].action, s[1].point.as_str(), s[1].times),
            (Action::Hang, "loop_ping", None)
        );
        let any = parse("panic:scheduler_grant:*:1:2");
        assert_eq!((any[0].loop_name.as_str(), any[0].after), ("*", 2));
    }
}
