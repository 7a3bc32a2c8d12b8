//! Control: requests from a person or program (start, pause, reset, skip, inject, ...).

use chrono::Utc;
use ractor::{ActorProcessingErr, ActorRef};

use super::boot::boot;
use super::cycle::run_past;
use super::finish::set_state;
use super::records::{dedup_last, forget_cached, merge, own_tests, record_own};
use super::watch::{cross_loop_deps, external_snapshot, watch_other_loops};
use super::{LoopActorState, LoopMsg};
use crate::attempt::{AttemptMsg, CancelReason};
use crate::control::{Control, ControlError};
use crate::model::{Event, EventKind, LoopReason, LoopState, TestRecord, TestStatus};
use crate::plan;
use crate::store::Batch;

/// Applies a person's or program's request to this loop.
pub(super) async fn control(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    request: Control,
) -> Result<(), ControlError> {
    let internal = |e: ActorProcessingErr| ControlError::Internal(e.to_string());
    match request {
        Control::Pause { now, .. } => {
            let already = state.record.state == LoopState::Paused
                && state.record.reason == Some(LoopReason::ByUser);
            if !already {
                set_state(state, LoopState::Paused, Some(LoopReason::ByUser))
                    .await
                    .map_err(internal)?;
            }
            if now {
                cancel_attempt(state);
            }
        }
        Control::Stop(_) => {
            if state.record.state != LoopState::Stopped {
                set_state(state, LoopState::Stopped, Some(LoopReason::ByUser))
                    .await
                    .map_err(internal)?;
            }
            cancel_attempt(state);
        }
        Control::Start(_) | Control::Resume(_) => {
            if state.record.state == LoopState::Running {
                return Ok(());
            }
            if state.record.reason == Some(LoopReason::OutOfCredits) {
                // A person says the credits are back: every loop of the provider may go.
                state
                    .ctx
                    .scheduler()
                    .resume_provider(state.config.agent.provider());
            }
            if !state.attempts.is_empty() || state.merging {
                // Paused without --now: the attempts still run; carry on after them.
                set_state(state, LoopState::Running, None)
                    .await
                    .map_err(internal)?;
                // Passes that waited in the merge queue meanwhile are merged now.
                super::merge::drive(myself, state).await.map_err(internal)?;
            } else {
                // Boot here rather than by message, so the caller's answer shows the loop running.
                state.record.state = LoopState::Idle;
                state.record.reason = None;
                boot(myself, state).await.map_err(internal)?;
            }
        }
        Control::ResetTest { test, .. } => {
            let mut t = find_test(state, &test).await?;
            refuse_running(&t)?;
            t.status = TestStatus::Pending;
            t.counted_attempts = 0;
            crate::healer::reset_healing(&mut t);
            t.reason = Some("reset by a person".into());
            t.commit = None;
            t.blocked_by.clear();
            t.updated_at = Utc::now();
            let event = Event::new(
                EventKind::TestChanged,
                &state.config.name,
                format!("{test} was reset"),
            )
            .about(&test, None);
            apply_test_changes(myself, state, vec![t], event).await?;
        }
        Control::SkipTest { test, .. } => {
            let mut t = find_test(state, &test).await?;
            refuse_running(&t)?;
            t.status = TestStatus::Skipped;
            t.reason = Some("skipped by a person".into());
            t.blocked_by.clear();
            t.updated_at = Utc::now();
            let event = Event::new(
                EventKind::TestChanged,
                &state.config.name,
                format!("{test} was skipped"),
            )
            .about(&test, None);
            apply_test_changes(myself, state, vec![t], event).await?;
        }
        Control::InjectTests { tests, .. } => {
            let existing = own_tests(state).await?;
            let taken: Vec<&str> = tests
                .iter()
                .map(|t| t.id.as_str())
                .filter(|id| existing.get(id).is_some())
                .collect();
            if !taken.is_empty() {
                return Err(ControlError::Conflict(format!(
                    "loop `{}` already has tests {}",
                    state.config.name,
                    taken.join(", ")
                )));
            }
            let mut order = existing
                .tests()
                .iter()
                .map(|t| t.order)
                .max()
                .map_or(0, |o| o + 1);
            let new: Vec<TestRecord> = tests
                .into_iter()
                .map(|spec| {
                    let mut t =
                        TestRecord::new(&state.config.name, spec, crate::model::Origin::Api);
                    t.order = order;
                    order += 1;
                    t
                })
                .collect();
            let ids: Vec<String> = new.iter().map(|t| t.spec.id.clone()).collect();
            let event = Event::new(
                EventKind::TestChanged,
                &state.config.name,
                format!("injected {}", ids.join(", ")),
            )
            .with_data(serde_json::json!({ "injected": ids }));
            apply_test_changes(myself, state, new, event).await?;
        }
        Control::Rollback { test, .. } => {
            if !state.attempts.is_empty() || state.merging {
                return Err(ControlError::Conflict(
                    "an attempt is running; pause the loop with --now first".into(),
                ));
            }
            crate::rollback::rollback(&state.ctx, &state.config, &test).await?;
            // The rollback wrote tests on its own.
            forget_cached(state);
            let name = state.config.name.clone();
            if let Some(r) = state.ctx.read(move |s| s.get_loop(&name)).await? {
                state.record.checkpoint = r.checkpoint;
            }
            let event = Event::new(
                EventKind::TestChanged,
                &state.config.name,
                format!("back at {test}'s checkpoint"),
            );
            apply_test_changes(myself, state, Vec::new(), event).await?;
        }
        Control::AddLoop { .. }
        | Control::RemoveLoop(_)
        | Control::ReplaceLoop(_)
        | Control::RetireLoop(_) => {
            return Err(ControlError::Internal(
                "fleet requests go to the supervisor, not to a loop".into(),
            ))
        }
    }
    Ok(())
}

pub(super) fn refuse_running(t: &TestRecord) -> Result<(), ControlError> {
    if t.status == TestStatus::Running {
        return Err(ControlError::Conflict(format!(
            "test `{}` is running; pause the loop with --now first",
            t.spec.id
        )));
    }
    Ok(())
}

/// Cuts every lane's attempt short.
pub(super) fn cancel_attempt(state: &LoopActorState) {
    for a in state.attempts.values() {
        let _ = a
            .actor
            .send_message(AttemptMsg::Cancel(CancelReason::Interrupt));
    }
}

pub(super) async fn find_test(
    state: &LoopActorState,
    test: &str,
) -> Result<TestRecord, ControlError> {
    let (name, id) = (state.config.name.clone(), test.to_string());
    state
        .ctx
        .read(move |s| s.get_test(&name, &id))
        .await?
        .ok_or_else(|| ControlError::UnknownTest {
            loop_name: state.config.name.clone(),
            test: test.to_string(),
        })
}

/// Writes changed tests with what they do to blocking, and puts a finished loop back to work.
pub(super) async fn apply_test_changes(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    changed: Vec<TestRecord>,
    event: Event,
) -> Result<(), ControlError> {
    let stored = own_tests(state).await?;
    let merged = merge(stored.tests(), &changed);
    drop(stored);
    let others = external_snapshot(&state.ctx, &cross_loop_deps(&merged))
        .await
        .map_err(|e| ControlError::Internal(e.to_string()))?;
    let mut all = changed;
    all.extend(plan::refresh_blocked(
        &merged,
        run_past(&state.config),
        &|d: &str| others.get(d).copied().flatten(),
    ));
    let mut batch = Batch {
        tests: dedup_last(all),
        events: vec![event],
        ..Batch::default()
    };
    if state.record.state == LoopState::Finished {
        state.record.state = LoopState::Running;
        state.record.reason = None;
        state.record.updated_at = Utc::now();
        batch.loops.push(state.record.clone());
        batch.events.push(Event::new(
            EventKind::LoopState,
            &state.config.name,
            "running",
        ));
    }
    record_own(state, batch).await?;
    watch_other_loops(myself, state, &merged);
    let _ = myself.send_message(LoopMsg::Next);
    Ok(())
}
