//! The attempt cycle, second half: an attempt's outcome recorded, pauses and crashes.

use chrono::Utc;
use ractor::{ActorProcessingErr, ActorRef};

use super::cycle::run_past;
use super::records::{dedup_last, own_history, own_tests, record_own, record_own_later};
use super::watch::external_snapshot;
use super::{LoopActorState, LoopMsg};
use crate::agent::ProviderFailure;
use crate::attempt::AttemptDone;
use crate::model::{
    AttemptRecord, Event, EventKind, LoopReason, LoopState, MergeEntry, MergeState, Outcome,
    TestStatus,
};
use crate::plan::{self, AfterOutcome};
use crate::store::Batch;

/// Records the outcome, the test's new status and what it does to its dependents, in one
/// transaction.
pub(super) async fn finish_attempt(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    done: AttemptDone,
) -> Result<(), ActorProcessingErr> {
    let cfg = state.config.clone();
    let record = done.record;
    let outcome = record.outcome.unwrap_or(Outcome::Interrupted);
    let test_id = record.test_id.clone();
    // From the actor's own copies; the store only for other loops' tests this loop depends on.
    let tests = own_tests(state).await?;
    let earlier = own_history(state, &test_id).await?;
    let external = external_snapshot(&state.ctx, tests.cross_deps()).await?;
    let mut events = Vec::new();
    // The one record this outcome changes, and what that does to the others.
    let Some(mut test) = tests.get(&test_id).cloned() else {
        return Ok(());
    };
    {
        let test = &mut test;
        if record.counted {
            test.counted_attempts += 1;
        }
        test.last_outcome = Some(outcome);
        test.updated_at = Utc::now();
        let facts = plan::OutcomeFacts {
            outcome,
            counted: record.counted,
            counted_attempts: test.counted_attempts,
            max_attempts: cfg.max_attempts,
            unmerged_lane_pass: record.lane > 0,
            held: done.hold.is_some(),
        };
        test.status = match plan::after_outcome(facts) {
            AfterOutcome::Held => {
                // Not passed until its checkpoint is made: dependents must not build on it.
                test.reason = done.hold.as_ref().map(|h| h.message.clone());
                TestStatus::Pending
            }
            AfterOutcome::Queued => {
                // Not passed until merged: dependents must not build on it. Busy meanwhile.
                test.reason = Some(format!(
                    "passed in lane {}; waiting in the merge queue",
                    record.lane
                ));
                TestStatus::Running
            }
            AfterOutcome::Passed => {
                test.commit = record.commit.clone();
                test.reason = None;
                test.heal_strategy = None;
                events.push(
                    Event::new(
                        EventKind::TestPassed,
                        &cfg.name,
                        format!("{} passed", test_id),
                    )
                    .about(&test_id, Some(record.number)),
                );
                TestStatus::Passed
            }
            AfterOutcome::Exhausted => exhausted(&cfg, test, &earlier, &record, &mut events),
            AfterOutcome::Retry => TestStatus::Pending,
        };
    }
    let external = |d: &str| external.get(d).copied().flatten();
    let unblocked_or_blocked = tests.refresh_blocked(Some(&test), run_past(&cfg), &external);
    // The cached table is updated in place by the write below, once no one else holds it.
    drop(tests);
    for t in &unblocked_or_blocked {
        if t.status == TestStatus::Blocked {
            events.push(
                Event::new(
                    EventKind::TestBlocked,
                    &cfg.name,
                    format!("{} is blocked by {}", t.spec.id, t.blocked_by.join(", ")),
                )
                .about(&t.spec.id, None),
            );
        }
    }
    events.insert(
        0,
        Event::new(
            EventKind::AttemptFinished,
            &cfg.name,
            format!(
                "attempt {} of {}: {}{}",
                record.number,
                test_id,
                crate::healer::outcome_name(outcome),
                record
                    .killed
                    .map(|k| format!(" (the agent was killed: {})", k.word()))
                    .unwrap_or_default()
            ),
        )
        .about(&test_id, Some(record.number))
        .with_data(serde_json::json!({
            "outcome": outcome,
            "killed": record.killed,
            "counted": record.counted,
            "cost_usd": record.cost_usd,
            "duration_ms": record.duration_ms,
            "reason": record.reason,
            // What a display shows of why it failed, without reading the ledger.
            "verify_lines": record.verify_first_lines(crate::model::WHY_LINES),
        })),
    );
    let reason = record.reason.clone();
    let mut changed = vec![test];
    changed.extend(unblocked_or_blocked);
    let mut lessons = Vec::new();
    if outcome == Outcome::Passed {
        // Before the checkpoint moves: what the pass changed since the last one (a lane's
        // pass: since its base, in its lane, which keeps the work until its next attempt).
        let lane = (record.lane > 0).then(|| {
            crate::runtime::lanes_dir(state.ctx.state_dir(), &cfg.name)
                .join(record.lane.to_string())
        });
        let diff = match (&record.base, &lane, &state.record.checkpoint, &cfg.workdir) {
            _ if !cfg.checkpoints => String::new(),
            (Some(base), Some(l), _, _) => crate::git::Workdir::new(l)
                .diff_summary(base)
                .await
                .unwrap_or_default(),
            (_, None, Some(old), Some(w)) => crate::git::Workdir::new(w)
                .diff_summary(old)
                .await
                .unwrap_or_default(),
            _ => String::new(),
        };
        // The attempts it overcame are the actor's own copy of the test's history; the lesson
        // is written with the pass.
        lessons.extend(crate::healer::lesson_from_pass(&earlier, &record, &diff));
    }
    if super::cycle::lanes(&cfg) > 1 {
        let times = earlier
            .iter()
            .filter(|a| a.number != record.number)
            .chain(std::iter::once(&record));
        if let Some(d) = crate::plan::expected_durations(times).remove(&test_id) {
            state.expected.insert(test_id.clone(), d);
        }
    }
    // The cached history is appended to by the write below, in place once this is gone.
    drop(earlier);
    if let Some(c) = &done.new_checkpoint {
        state.record.checkpoint = Some(c.clone());
    }
    if let Some(entry) = queued_lane_pass(&record, outcome, &changed) {
        // In the outcome's transaction: a pass is never lost between its lane and the queue.
        events.push(
            Event::new(
                EventKind::Merge,
                &cfg.name,
                format!(
                    "{} (attempt {}, lane {}): queued",
                    entry.test_id, entry.attempt, entry.lane
                ),
            )
            .about(&entry.test_id, Some(entry.attempt))
            .with_data(serde_json::json!({
                "merge": "queued", "lane": entry.lane, "commit": entry.commit, "base": entry.base,
            })),
        );
        state.record.merge_queue.push(entry);
    }
    state.record.updated_at = Utc::now();
    let mut batch = Batch {
        loops: vec![state.record.clone()],
        tests: dedup_last(changed),
        attempts: vec![record],
        events,
        lessons,
        ..Batch::default()
    };
    if let Some(hold) = &done.hold {
        // In the outcome's transaction: a restart finds the loop held, with its git work.
        hold.pause(&mut state.record, &mut batch);
        record_own(state, batch).await?;
        if state.stopping && state.attempts.is_empty() && !state.merging {
            myself.stop(None);
        }
        return Ok(());
    }

    if state.stopping {
        // The last lane to end stops the loop (a merge in flight ends first).
        let last = state.attempts.is_empty() && !state.merging;
        if last && state.record.state == LoopState::Running {
            state.record.state = LoopState::Idle;
            state.record.reason = Some(LoopReason::Interrupted);
        }
        batch.loops = vec![state.record.clone()];
        record_own(state, batch).await?;
        if last {
            myself.stop(None);
        }
        return Ok(());
    }
    if done.lane_broken {
        // Its agent deleted or broke the lane: made again before another attempt uses it.
        super::merge::resync_lanes(state).await?;
    }
    match (&done.provider_failure, outcome) {
        // The attempt already told the scheduler how the provider fared.
        (Some(ProviderFailure::OutOfCredits { message }), Outcome::OutOfCredits) => {
            let message = message.clone();
            pause_for_credits(myself, state, &message, vec![batch]).await?;
        }
        (_, Outcome::AgentUnavailable) => {
            // A configuration problem: retrying would fail the same way until a person fixes it.
            let alert = format!(
                "the agent of loop `{}` cannot start; loop paused (fix it, then `loopd resume {}`): {}",
                cfg.name,
                cfg.name,
                reason.as_deref().unwrap_or("no cause recorded")
            );
            pause_for(state, LoopReason::AgentUnavailable, alert, vec![batch]).await?;
        }
        _ => {
            // After an API error the scheduler holds every loop of the provider back until
            // its backoff has passed. The outcome's flush runs while the next attempt is
            // scheduled; that attempt's start record, written after it, waits for it.
            record_own_later(state, batch);
            myself.send_message(LoopMsg::Next)?;
            super::merge::drive(myself, state).await?;
        }
    }
    Ok(())
}

/// The status of a test whose counted attempts reached `max_attempts`: the healer diagnoses
/// from the recorded history (`earlier` and `record`) and, with auto_heal (or on_blocked =
/// "heal"), picks another strategy within the heal budget. Pushes the event that says so.
pub(super) fn exhausted(
    cfg: &crate::config::LoopConfig,
    test: &mut crate::model::TestRecord,
    earlier: &[AttemptRecord],
    record: &AttemptRecord,
    events: &mut Vec<Event>,
) -> TestStatus {
    let test_id = test.spec.id.clone();
    let policy = crate::healer::HealPolicy {
        auto_heal: cfg.auto_heal || cfg.on_blocked == crate::config::OnBlocked::Heal,
        heal_model: cfg.heal_model.clone(),
        budget_attempts: Some(cfg.heal_attempts),
        budget_usd: cfg.heal_budget_usd,
    };
    let history: Vec<AttemptRecord> = earlier
        .iter()
        .filter(|a| a.number != record.number)
        .chain(std::iter::once(record))
        .cloned()
        .collect();
    let d = crate::healer::on_exhausted(test, &history, &policy);
    test.reason = Some(d.reason.clone());
    let event = if d.alert {
        Event::new(
            EventKind::Alert,
            &cfg.name,
            format!("{test_id} needs a person: {}", d.reason),
        )
        .with_data(serde_json::json!({ "diagnosis": test.diagnosis }))
    } else if d.status == TestStatus::Failed {
        Event::new(
            EventKind::TestFailed,
            &cfg.name,
            format!("{test_id} failed for good: {}", d.reason),
        )
        .with_data(serde_json::json!({ "diagnosis": test.diagnosis }))
    } else {
        Event::new(
            EventKind::TestChanged,
            &cfg.name,
            format!("{test_id}: {}", d.reason),
        )
    };
    events.push(event.about(&test_id, Some(record.number)));
    d.status
}

/// The merge queue entry of a lane's pass that just finished (its test now waits, busy, in
/// the queue), if the attempt is one.
fn queued_lane_pass(
    record: &AttemptRecord,
    outcome: Outcome,
    changed: &[crate::model::TestRecord],
) -> Option<MergeEntry> {
    let queued = changed
        .first()
        .is_some_and(|t| t.spec.id == record.test_id && t.status == TestStatus::Running);
    if outcome != Outcome::Passed || record.lane == 0 || !queued {
        return None;
    }
    Some(MergeEntry {
        test_id: record.test_id.clone(),
        attempt: record.number,
        lane: record.lane,
        base: record.base.clone()?,
        commit: record.commit.clone()?,
        state: MergeState::Waiting,
        combined: None,
        queued_at: Utc::now(),
        finished_at: None,
    })
}

/// Pauses the loop because its provider has no credits (with `before` written in the same
/// transaction), and schedules a probe after `credit_probe_interval`.
pub(super) async fn pause_for_credits(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    message: &str,
    before: Vec<Batch>,
) -> Result<(), ActorProcessingErr> {
    let alert = format!(
        "provider `{}` is out of credits; loop paused: {message}",
        state.config.agent.provider()
    );
    pause_for(state, LoopReason::OutOfCredits, alert, before).await?;
    myself.send_after(state.fleet.credit_probe_interval, || LoopMsg::ProbeCredits);
    Ok(())
}

/// Pauses the loop for `reason`, something only a person can fix, with an alert, `before`
/// written in the same transaction; a `resume` carries on.
pub(super) async fn pause_for(
    state: &mut LoopActorState,
    reason: LoopReason,
    alert: String,
    before: Vec<Batch>,
) -> Result<(), ActorProcessingErr> {
    let mut batch = Batch::default();
    for b in before {
        batch.loops.extend(b.loops);
        batch.tests.extend(b.tests);
        batch.attempts.extend(b.attempts);
        batch.events.extend(b.events);
    }
    state.record.state = LoopState::Paused;
    state.record.reason = Some(reason.clone());
    state.record.updated_at = Utc::now();
    batch.loops = vec![state.record.clone()];
    batch.events.push(
        Event::new(EventKind::Alert, &state.config.name, alert)
            .with_data(serde_json::json!({"reason": reason})),
    );
    batch.events.push(
        Event::new(EventKind::LoopState, &state.config.name, "paused")
            .with_data(serde_json::json!({"state": "paused", "reason": reason})),
    );
    record_own(state, batch).await?;
    Ok(())
}

pub(super) async fn set_state(
    state: &mut LoopActorState,
    to: LoopState,
    reason: Option<LoopReason>,
) -> Result<(), ActorProcessingErr> {
    state.record.state = to;
    state.record.reason = reason.clone();
    state.record.updated_at = Utc::now();
    let word = serde_json::to_value(to)?
        .as_str()
        .unwrap_or_default()
        .to_string();
    record_own(
        state,
        Batch {
            loops: vec![state.record.clone()],
            events: vec![Event::new(EventKind::LoopState, &state.config.name, word)
                .with_data(serde_json::json!({"state": to, "reason": reason}))],
            ..Batch::default()
        },
    )
    .await?;
    Ok(())
}

/// Marks the loop `crashed` with a reason a person can act on, raises an alert, stops.
pub(super) async fn crash(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    reason: &str,
) -> Result<(), ActorProcessingErr> {
    tracing::error!(loop_name = %state.config.name, reason, "loop cannot run");
    state.record.state = LoopState::Crashed;
    state.record.reason = Some(LoopReason::Crashed(reason.to_string()));
    state.record.updated_at = Utc::now();
    record_own(
        state,
        Batch {
            loops: vec![state.record.clone()],
            events: vec![
                Event::new(EventKind::LoopState, &state.config.name, "crashed")
                    .with_data(serde_json::json!({"state": "crashed", "reason": reason})),
                Event::new(EventKind::Alert, &state.config.name, reason.to_string()),
            ],
            ..Batch::default()
        },
    )
    .await?;
    // The actor stays, so that `start` can try again once the cause is fixed.
    let _ = myself;
    Ok(())
}
