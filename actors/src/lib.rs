//! loopd's core: the domain types, the store and the supervision tree that runs coding loops.
//!
//! # The tree
//! [`launch::start`] builds all of it (the one start-up of `run`, `serve` and the tests) and
//! [`launch::Running::run_until`] takes it down when a shutdown future resolves.
//! ```text
//! launch::Running (the root: starts and stops the rest, in this order)
//! ├── journal      one writer thread, group commit into the store      runtime.rs, store.rs
//! ├── services     one_for_one supervisor, restart intensity           tree.rs
//! │   ├── scheduler    agent slots, priority aging, provider backoff   scheduler.rs
//! │   └── monitor      heartbeats, stall and time limits, liveness     monitor.rs
//! ├── reconcile    (once, before the loops) interrupted attempts, reaped groups, workdirs
//! ├── notifier     tasks: webhooks, signed, retried, from the journal  notifier.rs
//! ├── reporter     task: the scheduled report, as a `report` event     reporter.rs
//! └── loops        one_for_one supervisor, restart intensity           fleet.rs
//!     ├── loop "auth"     ── attempt (owns the agent's process group)  loop_actor/, attempt.rs
//!     └── loop "billing"  (lanes = 3)                                  loop_actor/merge.rs
//!         ├── attempt in lane 1, 2, 3 (worktrees at the loop's checkpoint)
//!         └── task: the merge queue's merge (combine, re-verify, update-ref), one at a time
//! ```
//!
//! # Layers
//! A module imports only from its own layer and the layers below (`layers.rs` reads the sources
//! and fails on an upward import):
//! ```text
//! interfaces  schema
//! engine      runtime launch fleet loop_actor attempt scheduler monitor tree notifier reporter
//!             reconcile rollback hold ledger view
//! decisions   healer hints prompt plan classify budget agent control templates
//! store       store statedir process git
//! records     names words child_env fault tests_file config model transcript generation pricing
//! ```
//!
//! # Modules
//! Records:
//! - `names`: the one rule for names that become paths.
//! - `words`: English for counts ("1 attempt", "2 attempts").
//! - `child_env`: variable patterns, a child's `PATH`, where a bare program name resolves.
//! - `fault`: fault injection points for the tests (`LOOPD_TEST_FAULT`).
//! - `tests_file`: the user's tests file.
//! - `config`: the fleet file, loading, environment overrides, validation, the input schemas.
//! - `model`: statuses, outcomes, loop reasons, loop/test/attempt records, events, and the
//!   records the store keeps for the decisions and the engine (lessons, hints, deliveries).
//! - `transcript`: an attempt's transcript, bytes as printed, head and tail kept beyond a cap.
//! - `generation`: the record beside the store that tells a store which lost writes.
//! - `pricing`: the fleet file's price table and an attempt's cost from its tokens.
//!
//! Store:
//! - `store`: sled trees and the transactions that change them.
//! - `statedir`: the state directory's lock and `daemon.json`.
//! - `process`: agent process groups: spawn, record, end, reap.
//! - `git`: checkpoints, attempt refs, resets, the loop's branch, stale locks, lane worktrees
//!   and the merge queue's git steps.
//!
//! Decisions (pure functions of records):
//! - `classify`: an attempt's outcome from its facts (the outcome table).
//! - `budget`: whether a loop or the fleet has spent what it may.
//! - `plan`: the tests file against the store, blocked tests, the next runnable tests (lanes'
//!   picks), what an outcome does to its test.
//! - `healer`: fingerprints, diagnoses, repeated failures, lessons, heal strategies.
//! - `prompt`: rendering the prompt of one attempt.
//! - `hints`: guidance from a person for a loop's (or a test's) next prompts.
//! - `agent`: agent presets (command, claude-code, codex) and what their output means.
//! - `control`: the requests a person or program sends a loop.
//! - `templates`: the loop factory (loops made from templates with `{{var}}` placeholders).
//!
//! Engine (the actors and what they run):
//! - `runtime`: what the actors of one fleet share (store, journal, scheduler, monitor, events).
//! - `launch`: the fleet started with one call and stopped when a shutdown future resolves.
//! - `fleet`, `loop_actor`, `attempt`: the loops supervisor, a loop, one attempt.
//! - `scheduler`, `monitor`, `tree`: agent slots, heartbeats and liveness, and the supervisor
//!   that restarts them.
//! - `notifier`: webhooks, signed and retried, decoupled from the loops.
//! - `reporter`: the morning report on the schedule of `report_every`, as a `report` event.
//! - `reconcile`: what a dead predecessor left running, made `interrupted` and reaped.
//! - `rollback`: a loop's checkpoint moved back to an earlier pass.
//! - `hold`: a loop paused for its workdir's git (`checkpoint_failed`, `workdir_broken`).
//! - `ledger`: the ledger against git history: passes the store does not know, `recover`.
//! - `view`: the JSON shapes of status, export, details and reports, read from the store.
//!
//! Interfaces:
//! - `schema`: every JSON Schema generated from the types, for `schemas/`.
#![deny(missing_docs)]

pub mod agent;
pub mod attempt;
pub mod budget;
pub mod child_env;
pub mod classify;
pub mod config;
pub mod control;
pub mod fault;
pub mod fleet;
pub mod generation;
pub mod git;
pub mod healer;
pub mod hints;
pub mod hold;
pub mod launch;
#[cfg(test)]
mod layers;
pub mod ledger;
pub mod loop_actor;
pub mod model;
pub mod monitor;
pub mod names;
pub mod notifier;
pub mod plan;
pub mod pricing;
pub mod process;
pub mod prompt;
pub mod reconcile;
pub mod reporter;
pub mod rollback;
pub mod runtime;
pub mod scheduler;
pub mod schema;
pub mod statedir;
pub mod store;
pub mod templates;
pub mod tests_file;
pub mod transcript;
pub mod tree;
pub mod view;
pub mod words;
