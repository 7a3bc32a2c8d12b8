//! The attempt actor: one agent run on one test, then loopd's own run of verify.
//!
//! The actor owns the agent's process group for the life of the attempt. Its work runs on a tokio
//! task (subprocess I/O must never block an actor); the actor is the task's mailbox: it takes
//! `Cancel` from its loop. The task hands the finished [`AttemptRecord`] to the loop itself (one
//! hop less between an agent's exit and the next attempt) and then stops the actor; the loop
//! tells its attempts apart by actor id, so a supervision event of a stopping one is not
//! mistaken for the next one's.
//!
//! ```text
//! spawn agent (own process group) ── reads ──> heartbeat; lines ──> transcript, watcher
//!        │ exit | stall_timeout | iteration_timeout | cancel
//!        ▼
//! end the whole group ─> verify (own group, verify_timeout) ─> classify ─> git checkpoint or
//! save refs/loopd/attempts/<test>/<n> and reset ─> AttemptDone to the loop
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::agent::{self, OutputWatcher, ProviderFailure};
use crate::classify::{classify, AgentEnd, Facts};
use crate::config::LoopConfig;
use crate::git::Workdir;
use crate::model::{AttemptRecord, Killed, Outcome};
use crate::monitor::{AttemptKey, Heartbeat, MonitorMsg};
use crate::process::{self, OutputLine};
use crate::runtime::{AttemptPaths, Ctx};
use crate::scheduler::ProviderReport;
use crate::store::Batch;
use crate::transcript::Transcript;

mod settle;

/// How many lines of agent and verify output an attempt record keeps.
const TAIL_LINES: usize = 40;
/// How many bytes of verify output an attempt record keeps.
const TAIL_BYTES: usize = 8 * 1024;
/// How many lines of verify's first output an attempt record keeps (`verify_head`).
const HEAD_LINES: usize = 10;
/// How many bytes of verify's first output an attempt record keeps.
const HEAD_BYTES: usize = 2 * 1024;
/// How long output may keep coming after the agent exited (from children holding its pipes).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// Why an attempt is being cut short from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// loopd is shutting down, or the loop was stopped or paused with `--now`.
    Interrupt,
    /// The monitor saw no output for `stall_timeout`.
    Stalled,
    /// The monitor saw the attempt overrun its time limit.
    TimedOut,
}

/// Everything an attempt needs, prepared by its loop.
#[derive(Debug)]
pub struct AttemptPlan {
    /// The fleet's shared context.
    pub ctx: Ctx,
    /// The loop's configuration (paths absolute, workdir set).
    pub config: Arc<LoopConfig>,
    /// The attempt record as stored when it started (no outcome yet).
    pub record: AttemptRecord,
    /// The test's verify command.
    pub verify: String,
    /// The test's own timeout, overriding the loop's `iteration_timeout`.
    pub timeout: Option<Duration>,
    /// The rendered prompt.
    pub prompt: String,
    /// Where the attempt's files go.
    pub paths: AttemptPaths,
    /// The transcript, created with the prompt file ([`write_attempt_files`]), or why not.
    pub transcript: Result<std::fs::File, String>,
    /// The last checkpoint (None when checkpoints are off).
    pub checkpoint: Option<String>,
    /// `(test id, verify)` of the loop's passed tests, re-run after a pass when `regression`
    /// is on.
    pub regression_checks: Vec<(String, String)>,
    /// The agent slot, held until the attempt ends.
    pub permit: Option<crate::scheduler::Slot>,
    /// Where the finished attempt is reported.
    pub reply_to: ActorRef<crate::loop_actor::LoopMsg>,
    /// The lane the attempt runs in, for a loop with `lanes` above 1 (`None`: the workdir).
    pub lane: Option<LaneRun>,
}

/// An attempt's place in a lane. Its inputs are its base commit, the test and the prompt; its
/// output is a commit under the attempt's ref and the attempt record. Nothing else passes
/// between a lane and its loop (the lane could live on another host), so the lane resets
/// itself to its base and commits its pass itself, and never touches the loop's branch or
/// checkpoint: the loop's merge queue puts that commit onto the checkpoint.
#[derive(Debug, Clone)]
pub struct LaneRun {
    /// The lane's number (1, 2, ...).
    pub number: u32,
    /// The lane's worktree.
    pub path: PathBuf,
    /// The checkpoint the attempt starts from.
    pub base: String,
}

/// What the attempt reports back: the final record and the checkpoint a pass produced.
#[derive(Debug, Clone)]
pub struct AttemptDone {
    /// The finished attempt.
    pub record: AttemptRecord,
    /// The new checkpoint commit, when the attempt passed and checkpoints are on.
    pub new_checkpoint: Option<String>,
    /// What the agent's run said about its provider.
    pub provider_failure: Option<ProviderFailure>,
    /// Git work the attempt's end could not do: the loop pauses for it.
    pub hold: Option<crate::hold::Hold>,
    /// The attempt's lane could not be used or was broken (by its agent, say): the loop
    /// makes its lanes again before the next attempt.
    pub lane_broken: bool,
}

/// Messages of the attempt actor.
#[derive(Debug)]
pub enum AttemptMsg {
    /// Cut the attempt short: end the agent's process group and record the reason.
    Cancel(CancelReason),
}

/// The attempt actor.
pub struct AttemptActor;

/// The attempt actor's state.
pub struct AttemptState {
    cancel: watch::Sender<Option<CancelReason>>,
}

impl Actor for AttemptActor {
    type Msg = AttemptMsg;
    type State = AttemptState;
    type Arguments = AttemptPlan;

    async fn pre_start(
        &self,
        myself: ActorRef<AttemptMsg>,
        plan: AttemptPlan,
    ) -> Result<AttemptState, ActorProcessingErr> {
        let (cancel, cancelled) = watch::channel(None);
        let reply_to = plan.reply_to.clone();
        let me = myself.clone();
        // The agent starts here, in the loop's own turn, rather than once the runner task is
        // scheduled: a hand-off less before the agent runs. A lane first resets itself to the
        // attempt's base, on the runner task.
        let launched = plan.lane.is_none().then(|| launch(&plan));
        tokio::spawn(async move {
            let done = match launched {
                Some(launched) => run(plan, launched, cancelled, me.clone()).await,
                None => match prepare_lane(&plan).await {
                    Ok(()) => {
                        let launched = launch(&plan);
                        run(plan, launched, cancelled, me.clone()).await
                    }
                    Err(why) => AttemptDone {
                        new_checkpoint: None,
                        hold: None,
                        provider_failure: None,
                        lane_broken: true,
                        record: {
                            let mut r = plan.record.clone();
                            r.reason = Some(why);
                            finish_interrupted(r, Instant::now())
                        },
                    },
                },
            };
            // If the loop is gone, the record is final in memory only, and the next start
            // reconciles the attempt as interrupted.
            let _ = reply_to.send_message(crate::loop_actor::LoopMsg::AttemptDone(Box::new(done)));
            me.stop(None);
        });
        Ok(AttemptState { cancel })
    }

    async fn handle(
        &self,
        _myself: ActorRef<AttemptMsg>,
        msg: AttemptMsg,
        state: &mut AttemptState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AttemptMsg::Cancel(reason) => {
                let _ = state.cancel.send(Some(reason));
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AttemptMsg>,
        state: &mut AttemptState,
    ) -> Result<(), ActorProcessingErr> {
        // Stopping the actor must never leave the agent running (the runner ends its group).
        let _ = state.cancel.send(Some(CancelReason::Interrupt));
        Ok(())
    }
}

/// The agent, started by [`launch`].
struct Launched {
    /// When the attempt's clock started.
    started: Instant,
    /// The agent's process, or why it could not be started.
    agent: Result<process::Spawned, String>,
}

/// Resets the attempt's lane to its base; why not, when it cannot be.
async fn prepare_lane(plan: &AttemptPlan) -> Result<(), String> {
    let Some(lane) = &plan.lane else {
        return Ok(());
    };
    Workdir::new(&lane.path)
        .reset_lane(&lane.base)
        .await
        .map_err(|e| {
            format!(
                "lane {} could not be reset to the attempt's base: {e}",
                lane.number
            )
        })
}

/// Where the attempt's agent and verify run: its lane's worktree, or the loop's workdir.
fn work_path(plan_lane: Option<&LaneRun>, config: &LoopConfig) -> PathBuf {
    match plan_lane {
        Some(lane) => lane.path.clone(),
        None => config.workdir.clone().expect("the loader fills in workdir"),
    }
}

/// Starts the agent of `plan` in its own process group, with the attempt's environment.
fn launch(plan: &AttemptPlan) -> Launched {
    let started = Instant::now();
    let (config, record, paths) = (&plan.config, &plan.record, &plan.paths);
    let workdir = &work_path(plan.lane.as_ref(), config);
    let attempt_key = crate::runtime::attempt_key(
        plan.ctx.state_dir(),
        &record.loop_name,
        &record.test_id,
        record.number,
    );
    let line = agent::command_line(
        &config.agent,
        config.model.as_deref(),
        &plan.prompt,
        &place(config, workdir, paths),
    );
    let mut cmd = line.command(&config.env_passthrough, &config.env);
    cmd.current_dir(workdir)
        .envs(&config.env)
        .env("LOOPD_PROMPT_FILE", &paths.prompt)
        .env("LOOPD_RESULT_FILE", &paths.result)
        .env("LOOPD_LOOP", &record.loop_name)
        .env("LOOPD_TEST_ID", &record.test_id)
        .env("LOOPD_ATTEMPT", record.number.to_string())
        .env("LOOPD_ATTEMPT_KEY", &attempt_key);
    Launched {
        started,
        agent: process::spawn_group(cmd).map_err(|e| {
            // The system's words without std's "(os error 2)": this is read by people.
            let cause = e.raw_os_error().map_or_else(
                || e.to_string(),
                |code| nix::errno::Errno::from_raw(code).desc().to_string(),
            );
            format!(
                "cannot start the agent `{}`: {cause}",
                line.program.display()
            )
        }),
    }
}

/// Where the agent of an attempt of `config` runs, with `paths`' files.
fn place<'a>(
    config: &LoopConfig,
    workdir: &'a std::path::Path,
    paths: &'a AttemptPaths,
) -> agent::Place<'a> {
    agent::Place {
        workdir,
        prompt_file: &paths.prompt,
        home: &paths.home,
        in_git: config.checkpoints,
    }
}

async fn run(
    plan: AttemptPlan,
    launched: Launched,
    mut cancelled: watch::Receiver<Option<CancelReason>>,
    myself: ActorRef<AttemptMsg>,
) -> AttemptDone {
    let AttemptPlan {
        ctx,
        config,
        mut record,
        verify,
        timeout,
        paths,
        transcript,
        checkpoint,
        permit,
        regression_checks,
        lane,
        ..
    } = plan;
    let started = launched.started;
    let workdir = work_path(lane.as_ref(), &config);
    let attempt_key = crate::runtime::attempt_key(
        ctx.state_dir(),
        &record.loop_name,
        &record.test_id,
        record.number,
    );

    let transcript_file = match transcript {
        Ok(f) => Some(f),
        Err(e) => {
            record.reason = Some(format!("cannot write the transcript: {e}"));
            None
        }
    };
    let mut transcript = Transcript::new(transcript_file, config.max_transcript_bytes);
    let mut watcher = OutputWatcher::new(&config.agent);
    let mut tail = Tail::new(TAIL_LINES, TAIL_BYTES);
    let mut exit_code = None;
    let mut exit_signal = None;
    let end = match launched.agent {
        Err(why) => {
            record.reason = Some(why);
            AgentEnd::SpawnFailed
        }
        Ok(mut spawned) => {
            record.process = Some(spawned.record.clone());
            // The group is made durable while the agent runs and its output is read: the agent
            // was running before this record could be written anyway (until it is, a crash is
            // covered by LOOPD_ATTEMPT_KEY in the agent's environment), so waiting for the
            // flush here would only delay noticing a quick exit. The attempt never ends before
            // the record is in: the journal then has it before the attempt's outcome.
            let injected = crate::fault::fails("attempt_group_record", &record.loop_name);
            let batch = Batch {
                attempts: vec![record.clone()],
                ..Batch::default()
            };
            let mut recorded = std::pin::pin!(async {
                if injected {
                    return Err(crate::store::StoreError::Flush(format!(
                        "{}: injected failure",
                        crate::fault::ENV
                    )));
                }
                ctx.record(batch).await
            });
            let mut record_done = false;
            let mut unrecorded = None;
            // The monitor alone decides stalled and timed out; it tells us through `cancelled`.
            // Every read is a heartbeat, not only a complete line: an agent drawing a `\r`
            // progress bar or writing a long line is at work.
            let heartbeat = Heartbeat::new();
            let stamp = heartbeat.clone();
            let mut lines = process::Output::take(&mut spawned.child, process::DEFAULT_MAX_LINE)
                .on_read(Arc::new(move || stamp.stamp()));
            let key = AttemptKey {
                loop_name: record.loop_name.clone(),
                test_id: record.test_id.clone(),
                number: record.number,
            };
            let monitor = ctx.monitor();
            monitor.send(MonitorMsg::Watch {
                key: key.clone(),
                heartbeat: heartbeat.clone(),
                stall_timeout: config.stall_timeout,
                time_limit: timeout.unwrap_or(config.iteration_timeout),
                attempt: myself.clone(),
            });
            let mut status = None;
            let mut lines_open = true;
            let end = loop {
                tokio::select! {
                    line = lines.next(), if lines_open => match line {
                        Some(l) => {
                            heartbeat.line();
                            hear(&l, &mut watcher, &mut tail, &mut transcript).await;
                        }
                        None => lines_open = false,
                    },
                    _ = sleep_until_some(transcript.flush_at()), if transcript.flush_at().is_some() => {
                        transcript.flush().await;
                    }
                    r = &mut recorded, if !record_done => {
                        record_done = true;
                        if let Err(e) = r {
                            unrecorded = Some(e);
                            break AgentEnd::Cancelled;
                        }
                    }
                    s = spawned.child.wait(), if status.is_none() => {
                        status = Some(s);
                        break AgentEnd::Exited;
                    }
                    _ = cancelled.changed() => break match *cancelled.borrow() {
                        Some(CancelReason::Stalled) => AgentEnd::Stalled,
                        Some(CancelReason::TimedOut) => AgentEnd::TimedOut,
                        _ => AgentEnd::Cancelled,
                    },
                }
            };
            if !record_done {
                if let Err(e) = recorded.await {
                    unrecorded = Some(e);
                }
            }
            if let Some(e) = unrecorded {
                // A group the store does not know could not be reaped after a crash: never let
                // such an agent run on.
                tracing::error!(error = %e, "could not record the agent's process group; ending it");
                process::end_attempt(&spawned, &attempt_key, config.kill_grace).await;
                monitor.send(MonitorMsg::Unwatch(key));
                let _ = spawned.child.wait().await;
                record.process = None;
                record.reason = Some(format!(
                    "loopd could not record the agent's process group: {e}"
                ));
                return AttemptDone {
                    new_checkpoint: None,
                    hold: None,
                    provider_failure: None,
                    lane_broken: false,
                    record: finish_interrupted(record, started),
                };
            }
            if end == AgentEnd::Exited {
                // Children that inherited the pipes may still write for a moment.
                let drain_until = Instant::now() + DRAIN_AFTER_EXIT;
                while lines_open {
                    match tokio::time::timeout_at(drain_until, lines.next()).await {
                        Ok(Some(l)) => hear(&l, &mut watcher, &mut tail, &mut transcript).await,
                        _ => lines_open = false,
                    }
                }
            }
            // Always end the group: the leader may be gone while its children live on; and what
            // left the group still carries the attempt's key.
            process::end_attempt(&spawned, &attempt_key, config.kill_grace).await;
            monitor.send(MonitorMsg::Unwatch(key));
            let status = match status {
                Some(s) => s.ok(),
                None => spawned.child.wait().await.ok(),
            };
            if let Some(s) = status {
                use std::os::unix::process::ExitStatusExt;
                exit_code = s.code();
                exit_signal = s.signal();
            }
            // The group is gone; the record no longer names live processes.
            record.process = None;
            end
        }
    };
    if transcript.cut() > 0 {
        tracing::info!(
            loop_name = %record.loop_name,
            test = %record.test_id,
            attempt = record.number,
            cut = transcript.cut(),
            "the transcript reached max_transcript_bytes; its middle was cut"
        );
    }
    transcript.finish().await;
    // The agent's home held nothing the record needs (its transcript is loopd's), and what the
    // agent left there must not reach the next attempt.
    match tokio::fs::remove_dir_all(&paths.home).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            loop_name = %record.loop_name,
            test = %record.test_id,
            attempt = record.number,
            "cannot remove the agent's home {}: {e}",
            paths.home.display()
        ),
    }
    record.exit_code = exit_code;
    record.exit_signal = exit_signal;
    record.killed = match end {
        AgentEnd::Stalled => Some(Killed::Stalled),
        AgentEnd::TimedOut => Some(Killed::TimedOut),
        _ => None,
    };
    record.output_tail = tail.text();
    let report = watcher.finish(exit_code, &paths.result);
    let cost = report.cost(config.model.as_deref(), &ctx.pricing());
    record.cost_usd = cost.usd().unwrap_or(0.0);
    record.cost_unknown = cost.usd().is_none();
    if let crate::pricing::Cost::Unknown(why) = &cost {
        tracing::debug!(
            loop_name = %record.loop_name,
            test = %record.test_id,
            attempt = record.number,
            "cost unknown: {why}"
        );
    }
    for note in &report.notes {
        tracing::debug!(
            loop_name = %record.loop_name,
            test = %record.test_id,
            attempt = record.number,
            "agent: {note}"
        );
    }
    record.input_tokens = report.input_tokens;
    record.cached_input_tokens = report.cached_input_tokens;
    record.output_tokens = report.output_tokens;
    record.summary = report.summary.clone();
    // The slot is for the agent; verify and git are loopd's own work. It goes back with how
    // the provider fared, so that no other loop of a provider that just ran out of credits or
    // failed is granted it.
    let provider_report = (end != AgentEnd::Cancelled && end != AgentEnd::SpawnFailed).then(|| {
        match &report.provider_failure {
            Some(ProviderFailure::OutOfCredits { message }) => {
                ProviderReport::OutOfCredits(message.clone())
            }
            Some(ProviderFailure::ApiError { .. }) => ProviderReport::ApiError,
            None => ProviderReport::Healthy,
        }
    });
    match (permit, provider_report) {
        (Some(slot), Some(r)) => slot.give_back(config.agent.provider(), r),
        (None, Some(r)) => ctx.scheduler().report(config.agent.provider(), r),
        (slot, None) => drop(slot),
    }

    let git = checkpoint.as_ref().map(|_| Workdir::new(&workdir));
    let mut outcome = if end == AgentEnd::Cancelled {
        record.reason = Some("interrupted before the agent finished".into());
        Outcome::Interrupted
    } else if end == AgentEnd::SpawnFailed {
        // Nothing ran, so verify would say nothing about an attempt: the configuration needs
        // a person (the loop pauses), and the reason already names the cause.
        Outcome::AgentUnavailable
    } else {
        let v = run_verify(&verify, &workdir, &config, &attempt_key).await;
        record.verify_exit = v.exit_code;
        record.verify_tail = v.tail;
        record.verify_head = v.head;
        let unchanged = match (&git, &checkpoint) {
            (Some(g), Some(c)) => g.unchanged_since(c).await.unwrap_or(false),
            _ => false,
        };
        let (outcome, reason) = classify(&Facts {
            end,
            exit_code,
            exit_signal,
            provider: report.provider_failure.as_ref(),
            verify_passed: v.passed,
            verify_timed_out: v.timed_out,
            unchanged,
            stall_timeout: config.stall_timeout,
            verify_timeout: config.verify_timeout,
        });
        if record.reason.is_none() || outcome == Outcome::Passed {
            record.reason = reason;
        }
        outcome
    };
    if matches!(
        outcome,
        Outcome::Failed | Outcome::NoChange | Outcome::AgentError
    ) {
        record.fingerprint = crate::healer::fingerprint(&record.verify_tail);
    }

    let mut new_checkpoint = None;
    let mut hold = None;
    let mut lane_broken = false;
    if let (Some(lane), Some(git)) = (&lane, &git) {
        lane_broken = settle::settle_lane(git, &lane.base, &mut record, &mut outcome).await;
    } else if let (Some(git), Some(checkpoint)) = (&git, &checkpoint) {
        let settled = settle::settle(git, checkpoint, &mut record, &mut outcome, || {
            first_regression(&regression_checks, &workdir, &config, &attempt_key)
        })
        .await;
        new_checkpoint = settled.new_checkpoint;
        hold = settled.hold;
    }

    record.outcome = Some(outcome);
    record.counted = outcome.counts(config.count_timeouts);
    record.finished_at = Some(Utc::now());
    record.duration_ms = Some(started.elapsed().as_millis() as u64);
    AttemptDone {
        record,
        new_checkpoint,
        provider_failure: report.provider_failure,
        hold,
        lane_broken,
    }
}

/// The record of an attempt cut short before its agent could do anything.
fn finish_interrupted(mut record: AttemptRecord, started: Instant) -> AttemptRecord {
    record.outcome = Some(Outcome::Interrupted);
    record.counted = false;
    record.finished_at = Some(Utc::now());
    record.duration_ms = Some(started.elapsed().as_millis() as u64);
    record
}

/// The first earlier-passed test whose verify now fails, with its output tail.
async fn first_regression(
    checks: &[(String, String)],
    workdir: &PathBuf,
    config: &LoopConfig,
    key: &str,
) -> Option<(String, String)> {
    for (id, verify) in checks {
        let v = run_verify(verify, workdir, config, key).await;
        if !v.passed {
            return Some((id.clone(), v.tail));
        }
    }
    None
}

/// The title of a pass's checkpoint commit.
pub(crate) fn commit_title(test_id: &str, number: u32) -> String {
    format!("loopd: {test_id} passed (attempt {number})")
}

/// The outcome of loopd's own run of verify.
pub(crate) struct VerifyRun {
    /// Exit 0 within `verify_timeout`.
    pub(crate) passed: bool,
    timed_out: bool,
    exit_code: Option<i32>,
    /// The last lines of its output.
    pub(crate) tail: String,
    /// The first lines, when `tail` lost them (empty otherwise).
    head: String,
}

/// Runs `verify` with bash in the workdir, in its own process group, bounded by `verify_timeout`.
pub(crate) async fn run_verify(
    verify: &str,
    workdir: &PathBuf,
    config: &LoopConfig,
    key: &str,
) -> VerifyRun {
    let bash =
        process::resolve_program("bash".as_ref(), process::child_path(&config.env).as_deref());
    let mut cmd = tokio::process::Command::new(bash);
    // The agent's environment without its preset's variables (API keys): verify runs code
    // the agent wrote, and talks to no model.
    process::inherit_only(&mut cmd, config.env_passthrough.iter().map(String::as_str));
    cmd.arg("-c")
        .arg(verify)
        .current_dir(workdir)
        .envs(&config.env)
        // Found and ended by the next start if loopd dies while verify runs.
        .env("LOOPD_ATTEMPT_KEY", key);
    let mut spawned = match process::spawn_group(cmd) {
        Ok(s) => s,
        Err(e) => {
            return VerifyRun {
                passed: false,
                timed_out: false,
                exit_code: None,
                tail: format!("loopd could not run verify: {e}"),
                head: String::new(),
            }
        }
    };
    let mut lines = process::Output::take(&mut spawned.child, process::DEFAULT_MAX_LINE);
    let mut tail = Tail::new(TAIL_LINES, TAIL_BYTES);
    let mut head = Tail::new(HEAD_LINES, HEAD_BYTES);
    let deadline = Instant::now() + config.verify_timeout;
    // Set when verify exits: a background child of verify may hold the pipes; its output is
    // read for a moment, not waited on forever.
    let mut drain_until = None;
    let mut status = None;
    let mut lines_open = true;
    let mut timed_out = false;
    while status.is_none() || lines_open {
        tokio::select! {
            line = lines.next(), if lines_open => match line {
                Some(l) => {
                    let text = l.text();
                    head.push_while_room(&text);
                    tail.push(&text);
                }
                None => lines_open = false,
            },
            s = spawned.child.wait(), if status.is_none() => {
                status = Some(s.ok());
                drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = tokio::time::sleep_until(drain_until.unwrap_or(deadline)), if drain_until.is_some() => break,
            _ = tokio::time::sleep_until(deadline) => { timed_out = true; break; }
        }
    }
    process::end_attempt(&spawned, key, config.kill_grace).await;
    let exit_code = status.flatten().and_then(|s| s.code());
    if timed_out {
        tail.push(&format!(
            "[loopd] verify overran verify_timeout ({}) and was killed",
            humantime::format_duration(config.verify_timeout)
        ));
    }
    VerifyRun {
        passed: !timed_out && exit_code == Some(0),
        timed_out,
        exit_code: if timed_out { None } else { exit_code },
        head: if tail.dropped {
            head.text()
        } else {
            String::new()
        },
        tail: tail.text(),
    }
}

/// Creates the attempt's folder, writes its prompt file, the files its agent's preset needs
/// ([`agent::prepare`]) and creates its transcript, in one trip to a blocking thread. An error
/// in the prompt or the preset's files is the caller's; the transcript's is returned for the
/// attempt to record (the agent runs without one).
pub async fn write_attempt_files(
    paths: &AttemptPaths,
    prompt: &str,
    config: &Arc<LoopConfig>,
    lane: Option<&LaneRun>,
) -> std::io::Result<Result<std::fs::File, String>> {
    let (paths, prompt, config) = (paths.clone(), prompt.to_string(), config.clone());
    // The agent's preset is told where it runs: its lane's worktree, or the workdir.
    let workdir = work_path(lane, &config);
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&paths.dir)?;
        std::fs::write(&paths.prompt, prompt)?;
        agent::prepare(&config.agent, &place(&config, &workdir, &paths)).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot prepare {}: {e}", paths.home.display()),
            )
        })?;
        Ok(std::fs::File::create(&paths.transcript).map_err(|e| e.to_string()))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Sleeps until `at` (for ever when `None`; such a branch is disabled anyway).
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One line of agent output goes to the preset's watcher, the record's tail and the transcript.
async fn hear(
    line: &OutputLine,
    watcher: &mut OutputWatcher,
    tail: &mut Tail,
    transcript: &mut Transcript,
) {
    let text = line.text();
    watcher.line(&text);
    tail.push(&text);
    transcript.write(&line.bytes).await;
}

/// The last lines of some output, bounded in lines and bytes.
struct Tail {
    lines: std::collections::VecDeque<String>,
    max_lines: usize,
    max_bytes: usize,
    bytes: usize,
    /// Whether a line was let go: the first lines are no longer here.
    dropped: bool,
}

impl Tail {
    fn new(max_lines: usize, max_bytes: usize) -> Self {
        Tail {
            lines: Default::default(),
            max_lines,
            max_bytes,
            bytes: 0,
            dropped: false,
        }
    }

    fn push(&mut self, line: &str) {
        let line: String = if line.len() > self.max_bytes {
            let mut cut = self.max_bytes;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}…", &line[..cut])
        } else {
            line.to_string()
        };
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > self.max_lines
            || (self.bytes > self.max_bytes && self.lines.len() > 1)
        {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
                self.dropped = true;
            }
        }
    }

    /// Keeps the first lines instead: takes `line` only while it fits (the first always).
    fn push_while_room(&mut self, line: &str) {
        let fits = self.lines.len() < self.max_lines && self.bytes + line.len() <= self.max_bytes;
        if self.lines.is_empty() || fits {
            self.push(line);
        }
    }

    fn text(&self) -> String {
        self.lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_within_bounds() {
        let mut t = Tail::new(3, 1000);
        for i in 0..10 {
            t.push(&format!("line {i}"));
        }
        assert_eq!(t.text(), "line 7\nline 8\nline 9");
        assert!(t.dropped);
        let mut t = Tail::new(100, 10);
        t.push(&"x".repeat(50));
        assert!(t.text().len() <= 10 + '…'.len_utf8());
    }

    #[test]
    fn a_head_keeps_the_first_lines_within_bounds() {
        let mut h = Tail::new(3, 1000);
        for i in 0..10 {
            h.push_while_room(&format!("line {i}"));
        }
        assert_eq!(h.text(), "line 0\nline 1\nline 2");
        let mut h = Tail::new(100, 10);
        h.push_while_room("first");
        h.push_while_room("too long for the rest");
        assert_eq!((h.text().as_str(), h.dropped), ("first", false));
    }
}
