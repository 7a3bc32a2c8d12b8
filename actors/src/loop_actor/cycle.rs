//! The attempt cycle, first half: the next runnable tests, budgets, attempts started (one per
//! free lane, each with its own scheduler slot).

use std::sync::Arc;

use crate::budget::{self, Limits, Spent};
use crate::scheduler::{Grant, Slot};
use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::finish::set_state;
use super::records::{own_history, own_tests, record_own, settle};
use super::watch::external_snapshot;
use super::{LoopActorState, LoopMsg, RunningAttempt, CROSS_LOOP_POLL};
use crate::attempt::{AttemptActor, AttemptPlan};
use crate::config::{self, LoopConfig};
use crate::healer::HealStrategy;
use crate::model::{AttemptRecord, Event, EventKind, LoopReason, LoopState, TestStatus};
use crate::prompt::{self, PromptInput};
use crate::store::Batch;

/// Picks the next runnable tests (as many as lanes are free) and asks for a slot for each, or
/// finishes the loop.
pub(super) async fn next(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
) -> Result<(), ActorProcessingErr> {
    let lanes = lanes(&state.config) as usize;
    let free = lanes.saturating_sub(state.attempts.len() + state.slots_wanted);
    if free == 0 || state.stopping {
        return Ok(());
    }
    if state.record.state != LoopState::Running {
        return Ok(());
    }
    let run_past = run_past(&state.config);
    let tests = own_tests(state).await?;
    let others = external_snapshot(&state.ctx, tests.cross_deps()).await?;
    let external = |d: &str| others.get(d).copied().flatten();
    let runnable = pick(state, &tests, free, &external).len();
    let finished = tests.is_finished();
    // A loop with lanes waits for its running attempts and merges: each ends with a `Next`.
    let in_flight = !state.attempts.is_empty() || state.slots_wanted > 0 || state.merging;
    // Tests of other loops change under us: block or unblock on what they are now. Only they
    // can: every change of this loop's own tests refreshed the blocking when it was written.
    let reblocked = if tests.cross_deps().is_empty() {
        Vec::new()
    } else {
        tests.refresh_blocked(None, run_past, &external)
    };
    drop(tests);
    if !reblocked.is_empty() {
        let events = reblocked
            .iter()
            .map(|t| {
                let what = if t.status == TestStatus::Blocked {
                    format!("{} is blocked by {}", t.spec.id, t.blocked_by.join(", "))
                } else {
                    format!("{} is no longer blocked", t.spec.id)
                };
                let kind = if t.status == TestStatus::Blocked {
                    EventKind::TestBlocked
                } else {
                    EventKind::TestChanged
                };
                Event::new(kind, &state.config.name, what).about(&t.spec.id, None)
            })
            .collect();
        record_own(
            state,
            Batch {
                tests: reblocked,
                events,
                ..Batch::default()
            },
        )
        .await?;
        myself.send_message(LoopMsg::Next)?;
        return Ok(());
    }
    if runnable > 0 {
        if let Some(why) = budget_exhausted(state).await? {
            set_state(state, LoopState::Paused, Some(LoopReason::BudgetExhausted)).await?;
            record_own(
                state,
                Batch {
                    events: vec![Event::new(EventKind::Alert, &state.config.name, why)
                        .with_data(serde_json::json!({"reason": "budget_exhausted"}))],
                    ..Batch::default()
                },
            )
            .await?;
            return Ok(());
        }
        // One slot per test picked: `max_concurrent_agents` bounds the agents of the fleet,
        // lanes or not.
        for _ in 0..runnable {
            state.slots_wanted += 1;
            let scheduler = state.ctx.scheduler().clone();
            let me = myself.clone();
            let (name, priority, provider) = (
                state.config.name.clone(),
                state.config.priority,
                state.config.agent.provider().to_string(),
            );
            tokio::spawn(async move {
                // If the loop is gone when the grant comes, the slot is dropped and given back.
                match scheduler.acquire(&name, priority, &provider).await {
                    Some(Grant::Slot(slot)) => {
                        let _ = me.send_message(LoopMsg::SlotGranted(slot));
                    }
                    Some(Grant::ProviderPaused { message }) => {
                        let _ = me.send_message(LoopMsg::ProviderPaused(message));
                    }
                    None => {}
                }
            });
        }
    } else if in_flight {
        // Nothing to add now; what runs or merges says `Next` when it ends.
    } else if finished {
        // The actor stays: a reset, skip or injected test brings the loop back to work.
        set_state(state, LoopState::Finished, None).await?;
    } else {
        // Pending tests wait on tests of other loops.
        settle(state).await?;
        myself.send_after(CROSS_LOOP_POLL, || LoopMsg::Next);
    }
    Ok(())
}

/// Why no new attempt may start for lack of budget (the loop's or the fleet's), if so.
pub(super) async fn budget_exhausted(
    state: &mut LoopActorState,
) -> Result<Option<String>, ActorProcessingErr> {
    let cfg = state.config.clone();
    let fleet = state.fleet.clone();
    let loop_limits = Limits {
        attempts: cfg.max_attempts_total,
        cost_usd: cfg.budget_usd,
    };
    let fleet_limits = Limits {
        attempts: fleet.max_attempts_total,
        cost_usd: fleet.budget_usd,
    };
    if loop_limits.is_none() && fleet_limits.is_none() {
        return Ok(None);
    }
    // The last outcome's cost counts.
    settle(state).await?;
    let why = state
        .ctx
        .read(
            move |s| -> Result<Option<String>, crate::store::StoreError> {
                let spent = |name: &str| -> Result<Spent, crate::store::StoreError> {
                    let a = s.spent(name)?;
                    Ok(Spent {
                        attempts: a.attempts,
                        cost_usd: a.cost_usd,
                    })
                };
                if !loop_limits.is_none() {
                    let why = budget::over(
                        &format!("loop `{}`", cfg.name),
                        spent(&cfg.name)?,
                        loop_limits,
                    );
                    if why.is_some() {
                        return Ok(why);
                    }
                }
                if !fleet_limits.is_none() {
                    let mut total = Spent::default();
                    for l in s.list_loops()? {
                        total = total.plus(spent(&l.name)?);
                    }
                    return Ok(budget::over("the fleet", total, fleet_limits));
                }
                Ok(None)
            },
        )
        .await?;
    Ok(why)
}

/// How many attempts the loop runs at once: its `lanes`, or 1 with checkpoints off (a lane
/// starts from the checkpoint, and a merge moves it).
pub(super) fn lanes(cfg: &LoopConfig) -> u32 {
    if cfg.checkpoints {
        cfg.lanes.max(1)
    } else {
        1
    }
}

/// Up to `n` tests to start now: with one lane, the next runnable test (priority, then file
/// order); with lanes, [`crate::plan::TestTable::pick`] with the tests running in a lane or
/// waiting in the merge queue held (their `serial_group`s too), and the longest remaining path
/// first.
pub(super) fn pick<'t>(
    state: &LoopActorState,
    tests: &'t crate::plan::TestTable,
    n: usize,
    external: &dyn Fn(&str) -> Option<TestStatus>,
) -> Vec<&'t crate::model::TestRecord> {
    let priority = state.config.priority;
    let run_past = run_past(&state.config);
    let lanes = lanes(&state.config) as usize;
    if lanes <= 1 {
        return tests
            .next_runnable(priority, run_past, external)
            .into_iter()
            .take(n)
            .collect();
    }
    let busy: std::collections::HashSet<String> = state
        .attempts
        .values()
        .map(|a| a.test_id.clone())
        .chain(
            state
                .record
                .merge_queue
                .iter()
                .filter(|e| e.state.is_open())
                .map(|e| e.test_id.clone()),
        )
        .collect();
    let ctx = crate::plan::PickContext {
        loop_priority: priority,
        run_past_failed: run_past,
        external,
        busy: &busy,
        expected: &state.expected,
        lanes,
    };
    tests.pick(n, &ctx)
}

/// Whether dependents run past a test that failed for good (`on_blocked = "skip"`).
pub(super) fn run_past(cfg: &LoopConfig) -> bool {
    cfg.on_blocked == crate::config::OnBlocked::Skip
}

/// Records the attempt as started (flushed) and spawns its actor.
pub(super) async fn start_attempt(
    myself: &ActorRef<LoopMsg>,
    state: &mut LoopActorState,
    permit: Slot,
) -> Result<(), ActorProcessingErr> {
    if state.stopping || state.record.state != LoopState::Running {
        return Ok(());
    }
    let lanes = lanes(&state.config);
    // The lowest free lane (lane 0, the workdir, for a loop with one lane).
    let lane = match lanes {
        1 => Some(0),
        n => (1..=n).find(|k| !state.attempts.contains_key(k)),
    };
    let Some(lane) = lane else {
        drop(permit);
        return Ok(());
    };
    let tests = own_tests(state).await?;
    let others = external_snapshot(&state.ctx, tests.cross_deps()).await?;
    let picked = pick(state, &tests, 1, &|d: &str| {
        others.get(d).copied().flatten()
    })
    .into_iter()
    .next()
    .cloned();
    let picked = match picked {
        Some(t) => {
            // Only with `regression` on: a list of every passed test per attempt otherwise.
            let passed: Vec<(String, String)> = if state.config.regression {
                tests
                    .tests()
                    .iter()
                    .filter(|o| o.status == TestStatus::Passed && o.spec.id != t.spec.id)
                    .map(|o| (o.spec.id.clone(), o.spec.verify.clone()))
                    .collect()
            } else {
                Vec::new()
            };
            drop(tests);
            let history = own_history(state, &t.spec.id).await?;
            let fingerprints = crate::healer::history_fingerprints(&history);
            let lessons = if fingerprints.is_empty() {
                Vec::new()
            } else {
                state
                    .ctx
                    .read(move |s| crate::healer::lessons_for_prompt(s, &fingerprints))
                    .await
            };
            Some((t, history, passed, lessons))
        }
        None => None,
    };
    let Some((mut test, history, passed, lessons)) = picked else {
        drop(permit);
        myself.send_message(LoopMsg::Next)?;
        return Ok(());
    };
    let mut cfg = state.config.clone();
    let number = test.attempts + 1;
    let paths = state.ctx.attempt_paths(&cfg.name, &test.spec.id, number);
    let strategy = test.heal_strategy.clone();
    if let Some(HealStrategy::StrongerModel(model)) = &strategy {
        let mut stronger = (*cfg).clone();
        stronger.model = Some(model.clone());
        cfg = Arc::new(stronger);
    }
    let spec_text = match config::resolve_spec(&cfg, &test.spec) {
        Ok(s) => s,
        Err(e) => format!("(loopd could not read the spec file: {e})"),
    };
    let mut prompt = prompt::render(
        &state.template,
        &PromptInput {
            loop_name: &cfg.name,
            test_id: &test.spec.id,
            title: &test.spec.title,
            spec: &spec_text,
            verify: &test.spec.verify,
            attempt: number,
            max_attempts: cfg.max_attempts,
            // A fresh start forgets the earlier attempts on purpose.
            history: if strategy == Some(HealStrategy::FreshStart) {
                &[]
            } else {
                &history
            },
            lessons: &lessons,
        },
    );
    if matches!(
        strategy,
        Some(HealStrategy::AlternativePrompt | HealStrategy::StrongerModel(_))
    ) {
        prompt.push_str(&crate::healer::alternative_prompt(&history));
    }
    // Read now, not kept: a hint given while the last attempt ran reaches this one.
    let (name, id) = (cfg.name.clone(), test.spec.id.clone());
    let hints = state
        .ctx
        .read(move |s| crate::hints::for_prompt(s, &name, &id))
        .await;
    prompt.push_str(&crate::hints::section(&hints));
    test.attempts = number;
    test.status = TestStatus::Running;
    test.updated_at = Utc::now();
    let mut record =
        AttemptRecord::started(&cfg.name, &test.spec.id, number, paths.transcript.clone());
    record.base = state.record.checkpoint.clone().filter(|_| cfg.checkpoints);
    record.lane = lane;
    // The lane's inputs: its base (the checkpoint now), the test and the prompt.
    let lane_run = match (&record.base, lane) {
        (Some(base), k) if k > 0 => Some(crate::attempt::LaneRun {
            number: k,
            path: crate::runtime::lanes_dir(state.ctx.state_dir(), &cfg.name).join(k.to_string()),
            base: base.clone(),
        }),
        _ => None,
    };
    // The attempt's files and its durable record do not depend on each other, and the agent
    // needs both: write them at the same time.
    let (transcript, recorded) = tokio::join!(
        crate::attempt::write_attempt_files(&paths, &prompt, &cfg, lane_run.as_ref()),
        record_own(
            state,
            Batch {
                tests: vec![test.clone()],
                attempts: vec![record.clone()],
                events: vec![Event::new(
                    EventKind::AttemptStarted,
                    &cfg.name,
                    format!("attempt {number} of {} started", test.spec.id),
                )
                .about(&test.spec.id, Some(number))],
                ..Batch::default()
            }
        )
    );
    recorded?;
    let transcript = transcript?;
    let plan = AttemptPlan {
        ctx: state.ctx.clone(),
        config: cfg.clone(),
        record,
        verify: test.spec.verify.clone(),
        timeout: test.spec.timeout,
        prompt,
        paths,
        transcript,
        checkpoint: state.record.checkpoint.clone().filter(|_| cfg.checkpoints),
        permit: Some(permit),
        // A lane's pass is re-verified with the passed tests' verifies by the merge queue, on
        // the merged tree.
        regression_checks: if cfg.regression && lane_run.is_none() {
            passed
        } else {
            Vec::new()
        },
        reply_to: myself.clone(),
        lane: lane_run,
    };
    let test_id = test.spec.id.clone();
    let (actor, _) = Actor::spawn_linked(None, AttemptActor, plan, myself.get_cell()).await?;
    state
        .attempts
        .insert(lane, RunningAttempt { actor, test_id });
    // Another lane may be free for another test.
    if lanes > 1 {
        myself.send_message(LoopMsg::Next)?;
    }
    Ok(())
}
