//! `loopd run [CONFIG]`: run the fleet in the foreground until every loop is finished.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use loopd_actors::config::Fleet;
use loopd_actors::launch::{self, StartError};
use loopd_actors::model::{
    Event, EventKind, LoopReason, LoopRecord, LoopState, Outcome, TestStatus,
};
use loopd_actors::runtime::Ctx;
use loopd_actors::statedir::StateDirLock;
use loopd_actors::store::Store;
use loopd_actors::view;
use loopd_actors::words::count;

use super::fleet_start::Signal;
use super::progress::Progress;
use super::style::Tone;
use super::table::{cell, tally, toned, Table};
use super::Exit;

/// Arguments of `loopd run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The fleet file (default: `-c`, `LOOPD_CONFIG`, or `./loopd.toml`).
    pub file: Option<std::path::PathBuf>,
    /// Print one line per event instead of the live display.
    #[arg(long)]
    pub plain: bool,
}

/// Validates, reconciles, runs the fleet, prints the summary and maps it to an exit code.
pub fn run(file: &Path, args: &RunArgs) -> anyhow::Result<Exit> {
    let prepared = match super::fleet_start::prepare(file, "run") {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let super::fleet_start::Prepared { fleet, lock, store } = prepared;
    let exit = runtime.block_on(run_fleet(fleet, store, &lock, args.plain));
    drop(lock);
    exit
}

async fn run_fleet(
    fleet: Fleet,
    store: Store,
    lock: &StateDirLock,
    plain: bool,
) -> anyhow::Result<Exit> {
    let running = match launch::start(&fleet, store).await {
        Ok(running) => running,
        Err(StartError::Workdir(e)) => {
            say!("loopd run: {e}");
            return Ok(Exit::Invalid);
        }
        Err(e) => return Err(super::fleet_start::start_failed(e)),
    };
    let ctx = running.ctx().clone();

    let started = Instant::now();
    // Attempts that start from now on are this run's (the summary tells them from the history).
    let since = Utc::now();
    // Loops a person paused or stopped in an earlier session stay so (their actors boot into
    // that state without a word): say so, and do not wait for them.
    let held = held_by_person(&ctx, &fleet).await?;
    for (name, state) in &held {
        let (what, undo) = if *state == LoopState::Stopped {
            ("stopped", "start")
        } else {
            ("paused", "resume")
        };
        say!(
            "loopd run: loop `{name}` was {what} by a person; it stays so (`loopd {undo} {name}` while this runs, or before the next run)",
        );
    }
    let mut held: HashSet<String> = held.into_iter().map(|(n, _)| n).collect();
    // Loops held for their workdir's git boot into that state without a word too.
    for r in fleet_records(&ctx, &fleet).await?.into_iter().flatten() {
        if r.state == LoopState::Paused && r.reason.as_ref().is_some_and(LoopReason::is_hold) {
            say!(
                "loopd run: loop `{}` is paused ({}): {}; fix the cause, then `loopd resume {}` (with `loopd serve`) retries it",
                r.name,
                r.reason.as_ref().map(LoopReason::code).unwrap_or_default(),
                r.pending_git
                    .as_ref()
                    .map_or("its git work is left undone", |p| p.message.as_str()),
                r.name
            );
            held.insert(r.name);
        }
    }
    let mut display = Progress::new(&ctx, &fleet, plain).await?;
    let mut events = ctx.subscribe();
    // The same API as `serve`, on a free loopback port recorded in daemon.json.
    let api = super::serve::start_api(running.handle(), lock, &fleet, "127.0.0.1:0", "run").await;

    let mut interrupted = false;
    let mut store_error = None;
    let mut given_up = None;
    let mut finished_at: HashMap<String, Duration> = HashMap::new();
    let fleet_handle = running.handle().clone();
    let mut finished = std::pin::pin!(running.finished());
    // Runs until every loop has stopped: on its own, or after the fleet was told to shut down
    // (the loop goes on meanwhile, to show the attempts that end).
    let until_down = async {
        let mut settled = false;
        let mut booted: HashSet<String> = held.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut signalled = std::pin::pin!(super::fleet_start::shutdown_signal());
        // `POST /api/shutdown` (`loopd shutdown`) ends the run as SIGTERM does.
        let api_state = api.as_ref().map(|a| a.state.clone());
        let mut asked = std::pin::pin!(async {
            match &api_state {
                Some(state) => state.shutdown_requested().await,
                None => std::future::pending().await,
            }
        });
        loop {
            // Whether to look at the store for the end of the run: on a loop's state change
            // (other events, many per attempt, cannot settle a loop) and on the tick (no event
            // may come: every loop may be held by a person).
            let mut look = false;
            tokio::select! {
                _ = &mut finished => break,
                e = events.recv() => {
                    if let Ok(e) = e {
                        note_finish(&e, started, &mut finished_at);
                        display.event(&e);
                        if e.kind == EventKind::LoopState {
                            booted.insert(e.loop_name.clone());
                            look = true;
                        }
                    }
                }
                _ = tick.tick() => {
                    display.tick();
                    look = true;
                    if given_up.is_none() {
                        given_up = ctx.tree_health().given_up();
                        if let Some(e) = &given_up {
                            // No slot or no hang detection any more: the run cannot go on.
                            display.note(&format!("{e}; stopping the fleet"));
                            fleet_handle.shutdown();
                        }
                    }
                }
                e = ctx.store_failed(), if store_error.is_none() => {
                    // Nothing recorded from now on would survive a crash: stop the agents.
                    display.note(&format!("{e}; stopping the fleet"));
                    store_error = Some(e);
                    fleet_handle.shutdown();
                }
                signal = &mut signalled, if !interrupted => {
                    interrupted = true;
                    display.note(match signal {
                        Signal::Interrupt => "interrupted: ending the running agents' process groups ...",
                        Signal::Terminate => "SIGTERM: ending the running agents' process groups ...",
                    });
                    fleet_handle.shutdown();
                }
                _ = &mut asked, if !interrupted => {
                    interrupted = true;
                    display.note("shutdown asked through the API: ending the running agents' process groups ...");
                    fleet_handle.shutdown();
                }
            }
            if look
                && !settled
                && !interrupted
                && booted.len() >= fleet.loops.len()
                && all_settled(&ctx, &fleet, &held).await?
            {
                // Every loop is finished or waits for a person: the run is over.
                settled = true;
                fleet_handle.shutdown();
            }
        }
        anyhow::Ok(())
    };
    let mut down = Ok(());
    let stopped = running.run_until(async { down = until_down.await }).await;
    down?;
    // Events published just before the end.
    while let Ok(e) = events.try_recv() {
        note_finish(&e, started, &mut finished_at);
        display.event(&e);
    }
    display.finish();
    if let Some(api) = api {
        api.stop().await;
    }
    let stopped = stopped?;
    if stopped.webhooks_pending {
        display.note("some webhook deliveries are still pending; see the delivery log");
    }

    let status = ctx.read(view::status).await?;
    let names: Vec<&str> = fleet.loops.iter().map(|l| l.name.as_str()).collect();
    let loops: Vec<&view::LoopView> = status
        .loops
        .iter()
        .filter(|l| names.contains(&l.name.as_str()))
        .collect();
    print_summary(&loops, since, &finished_at, started.elapsed());
    if let Some(e) = given_up {
        return Err(anyhow::Error::from(e).context("the run stopped"));
    }
    if let Some(e) = store_error.or_else(|| ctx.store_failure()) {
        return Err(anyhow::Error::from(e)
            .context("the run stopped: what it recorded since may not survive a crash"));
    }
    if interrupted {
        return Ok(Exit::Interrupted);
    }
    let needs_person = loops.iter().any(|l| {
        let unfinished = !l
            .tests
            .iter()
            .all(|t| matches!(t.status, TestStatus::Passed | TestStatus::Removed));
        l.status == LoopState::Paused
            && match &l.reason {
                Some(
                    LoopReason::OutOfCredits
                    | LoopReason::BudgetExhausted
                    | LoopReason::AgentUnavailable
                    | LoopReason::CheckpointFailed
                    | LoopReason::WorkdirBroken,
                ) => true,
                Some(LoopReason::ByUser) => unfinished,
                _ => false,
            }
    });
    if needs_person {
        return Ok(Exit::NeedsPerson);
    }
    // A crashed loop never passed its tests, even when it crashed before loading them.
    let all_passed = loops.iter().all(|l| l.status != LoopState::Crashed)
        && loops.iter().all(|l| {
            l.tests
                .iter()
                .all(|t| matches!(t.status, TestStatus::Passed | TestStatus::Removed))
        });
    Ok(if all_passed {
        Exit::Ok
    } else {
        Exit::NotAllPassed
    })
}

/// The stored record of each loop of `fleet` (`None`: not stored yet).
async fn fleet_records(ctx: &Ctx, fleet: &Fleet) -> anyhow::Result<Vec<Option<LoopRecord>>> {
    let names: Vec<String> = fleet.loops.iter().map(|l| l.name.clone()).collect();
    Ok(ctx
        .read(move |s| {
            names
                .iter()
                .map(|n| s.get_loop(n))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?)
}

/// The loops of `fleet` a person paused or stopped (reason `by_user`), as stored.
async fn held_by_person(ctx: &Ctx, fleet: &Fleet) -> anyhow::Result<Vec<(String, LoopState)>> {
    Ok(fleet_records(ctx, fleet)
        .await?
        .into_iter()
        .flatten()
        .filter(|r| {
            matches!(r.state, LoopState::Paused | LoopState::Stopped)
                && r.reason == Some(LoopReason::ByUser)
        })
        .map(|r| (r.name, r.state))
        .collect())
}

/// True when no loop of `fleet` can make progress without a person: finished, crashed,
/// stopped, paused for a reason other than a person's pause during this run (which a
/// `resume` may undo at any moment), or held by a person since before the run (`held`).
async fn all_settled(ctx: &Ctx, fleet: &Fleet, held: &HashSet<String>) -> anyhow::Result<bool> {
    Ok(fleet_records(ctx, fleet).await?.iter().all(|r| {
        r.as_ref().is_some_and(|r| match r.state {
            LoopState::Finished | LoopState::Crashed | LoopState::Stopped => true,
            LoopState::Paused => r.reason != Some(LoopReason::ByUser) || held.contains(&r.name),
            LoopState::Idle | LoopState::Running => false,
        })
    }))
}

fn note_finish(e: &Event, started: Instant, finished_at: &mut HashMap<String, Duration>) {
    if e.kind == EventKind::LoopState {
        finished_at.insert(e.loop_name.clone(), started.elapsed());
    }
}

/// What one run did in one loop (or the fleet): its attempts, started after the run began.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct ThisRun {
    attempts: usize,
    passes: usize,
    /// Attempts that counted toward `max_attempts` without passing.
    failures: usize,
    /// Attempts that did not count (interrupted, API errors, out of credits, ...).
    other: usize,
    cost_usd: f64,
}

impl ThisRun {
    fn of(l: &view::LoopView, since: DateTime<Utc>) -> ThisRun {
        let mut run = ThisRun::default();
        for a in l.tests.iter().flat_map(|t| &t.attempts) {
            if a.started_at < since {
                continue;
            }
            run.attempts += 1;
            run.cost_usd += a.cost_usd;
            match a.outcome {
                Some(Outcome::Passed) => run.passes += 1,
                Some(_) if a.counted => run.failures += 1,
                _ => run.other += 1,
            }
        }
        run
    }

    fn add(mut self, other: ThisRun) -> ThisRun {
        self.attempts += other.attempts;
        self.passes += other.passes;
        self.failures += other.failures;
        self.other += other.other;
        self.cost_usd += other.cost_usd;
        self
    }

    /// "3 attempts: 1 pass, 2 failures, $0.0100".
    fn sentence(&self) -> String {
        let mut s = format!(
            "{}: {}, {}",
            count(self.attempts, "attempt", "attempts"),
            count(self.passes, "pass", "passes"),
            count(self.failures, "failure", "failures"),
        );
        if self.other > 0 {
            s.push_str(&format!(", {} not counted", self.other));
        }
        s.push_str(&format!(", ${:.4}", self.cost_usd));
        s
    }
}

/// The summary at the end of a run: what this run did, then the totals so far (a fleet with
/// history has done more than this run; on a first run the two agree).
fn print_summary(
    loops: &[&view::LoopView],
    since: DateTime<Utc>,
    finished_at: &HashMap<String, Duration>,
    total: Duration,
) {
    let runs: Vec<ThisRun> = loops.iter().map(|l| ThisRun::of(l, since)).collect();
    let fleet = runs.iter().fold(ThisRun::default(), |a, b| a.add(*b));
    let mut text = format!(
        "\nThis run ({:.1}s): {}\n",
        total.as_secs_f64(),
        fleet.sentence()
    );
    let mut now = Table::new(&[
        "LOOP",
        "ATTEMPTS",
        "PASSES",
        "FAILURES",
        "UNCOUNTED",
        "COST",
        "WALL",
    ])
    .right(&[1, 2, 3, 4, 5, 6])
    .shrink(&[0]);
    for (l, run) in loops.iter().zip(&runs) {
        let wall = finished_at.get(&l.name).copied().unwrap_or(total);
        now.row(vec![
            cell(&l.name),
            cell(run.attempts),
            tally(run.passes, Tone::Good),
            tally(run.failures, Tone::Bad),
            cell(run.other),
            cell(format!("${:.4}", run.cost_usd)),
            cell(format!("{:.1}s", wall.as_secs_f64())),
        ]);
    }
    text.push_str(&now.render());

    let attempts: usize = loops.iter().map(|l| l.attempts).sum();
    let cost: f64 = loops.iter().map(|l| l.cost_usd).sum();
    text.push_str(&format!(
        "\nTotals so far: {}, ${cost:.4}\n",
        count(attempts, "attempt", "attempts")
    ));
    let mut so_far = Table::new(&[
        "LOOP", "STATE", "PASSED", "FAILED", "BLOCKED", "SKIPPED", "OTHER", "ATTEMPTS", "COST",
    ])
    .right(&[2, 3, 4, 5, 6, 7, 8])
    .shrink(&[0]);
    for l in loops {
        let p = &l.progress;
        so_far.row(vec![
            cell(&l.name),
            toned(super::words(&l.status), Tone::of_state(l.status)),
            cell(format!("{}/{}", p.passed, p.total)),
            cell(p.failed),
            cell(p.blocked),
            cell(p.skipped),
            cell(p.pending + p.needs_human),
            cell(l.attempts),
            cell(format!("${:.4}", l.cost_usd)),
        ]);
        if let Some(reason) = &l.reason {
            if l.status != LoopState::Finished {
                so_far.detail(format!("{}: {reason}", super::words(&l.status)));
            }
            if *reason == LoopReason::AgentUnavailable {
                // Its attempt is not counted, so no failed test shows the cause below.
                let last = l
                    .tests
                    .iter()
                    .flat_map(|t| &t.attempts)
                    .filter(|a| a.outcome == Some(Outcome::AgentUnavailable))
                    .max_by_key(|a| a.started_at);
                for line in last.map_or(Vec::new(), |a| super::why::why(a, usize::MAX)) {
                    so_far.detail(format!("  {line}"));
                }
            }
        }
        for t in l.tests.iter().filter(|t| {
            matches!(
                t.status,
                TestStatus::Failed | TestStatus::Blocked | TestStatus::NeedsHuman
            )
        }) {
            so_far.detail(format!(
                "{} {}: {}",
                super::words(&t.status),
                t.id,
                t.reason.as_deref().unwrap_or("")
            ));
            // Cut to the table's width by the table.
            if let Some(last) = t.attempts.last() {
                for line in super::why::why(last, usize::MAX) {
                    so_far.detail(format!("  {line}"));
                }
            }
        }
    }
    text.push_str(&so_far.render());
    // The fleet has stopped and its store is flushed: a reader that went away loses only this.
    let _ = super::out(&text);
}
