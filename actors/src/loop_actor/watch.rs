//! Cross-loop watching: tests that depend on other loops' tests.

use ractor::{ActorProcessingErr, ActorRef};

use super::control::apply_test_changes;
use super::cycle::run_past;
use super::records::own_tests;
use super::{LoopActorState, LoopMsg};
use crate::model::{Event, EventKind, TestRecord, TestStatus};
use crate::runtime::Ctx;

/// Once a test of this loop depends on another loop's: forwards the test events of other loops
/// to this loop's actor, for as long as it lives.
pub(super) fn watch_other_loops(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    tests: &[TestRecord],
) {
    if state.watching || cross_loop_deps(tests).is_empty() {
        return;
    }
    state.watching = true;
    let mut events = state.ctx.subscribe();
    let (me, own) = (myself.clone(), state.config.name.clone());
    tokio::spawn(async move {
        loop {
            let other = match events.recv().await {
                Ok(e) if e.loop_name == own || e.test_id.is_none() => continue,
                Ok(e) => match e.kind {
                    EventKind::TestPassed
                    | EventKind::TestFailed
                    | EventKind::TestBlocked
                    | EventKind::TestChanged => e.loop_name,
                    _ => continue,
                },
                // Missed some: look at every loop this one depends on.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => String::new(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if me.send_message(LoopMsg::OtherLoopChanged(other)).is_err() {
                return;
            }
        }
    });
}

/// A finished loop whose tests depend on loop `other` (any loop when empty): blocks or
/// unblocks them on what the other loop's tests are now, and goes back to work when that
/// leaves something to run.
pub(super) async fn recheck_other_loops(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    other: &str,
) -> Result<(), ActorProcessingErr> {
    let tests = own_tests(state).await?;
    let prefix = format!("{other}:");
    if !tests
        .cross_deps()
        .iter()
        .any(|d| other.is_empty() || d.starts_with(&prefix))
    {
        return Ok(());
    }
    let others = external_snapshot(&state.ctx, tests.cross_deps()).await?;
    let changed = tests.refresh_blocked(None, run_past(&state.config), &|d: &str| {
        others.get(d).copied().flatten()
    });
    drop(tests);
    if changed.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = changed.iter().map(|t| t.spec.id.as_str()).collect();
    let event = Event::new(
        EventKind::TestChanged,
        &state.config.name,
        if other.is_empty() {
            format!("{} changed with the loops it depends on", ids.join(", "))
        } else {
            format!("{} changed with loop `{other}`", ids.join(", "))
        },
    );
    apply_test_changes(myself, state, changed, event).await?;
    Ok(())
}

/// The statuses of `deps`, `other-loop:ID` dependencies.
pub(super) async fn external_snapshot(
    ctx: &Ctx,
    deps: &[String],
) -> Result<ExternalStatuses, ActorProcessingErr> {
    if deps.is_empty() {
        return Ok(ExternalStatuses::new());
    }
    let deps = deps.to_vec();
    Ok(ctx.read(move |s| external_statuses(s, &deps)).await)
}

/// Every `other-loop:ID` dependency of `tests`.
pub(super) fn cross_loop_deps(tests: &[TestRecord]) -> Vec<String> {
    tests
        .iter()
        .flat_map(|t| t.spec.depends_on.iter())
        .filter(|d| d.contains(':'))
        .cloned()
        .collect()
}

/// Statuses of other loops' tests, by `other-loop:ID`.
type ExternalStatuses = std::collections::HashMap<String, Option<TestStatus>>;

/// [`external_snapshot`] from inside a store read.
pub(super) fn external_statuses(store: &crate::store::Store, deps: &[String]) -> ExternalStatuses {
    deps.iter()
        .map(|d| (d.clone(), external_status(store, d)))
        .collect()
}

/// What another loop's test is, for `other-loop:ID` dependencies.
/// A test the other loop has not loaded yet (it may not have booted) is waited for, not a
/// blocker: `validate` already refuses references to tests that exist nowhere.
pub(super) fn external_status(store: &crate::store::Store, dep: &str) -> Option<TestStatus> {
    let (other, id) = dep.split_once(':')?;
    Some(
        store
            .get_test(other, id)
            .ok()
            .flatten()
            .map_or(TestStatus::Pending, |t| t.status),
    )
}
