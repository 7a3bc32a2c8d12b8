//! loopd's core: the domain types, the store and the supervision tree that runs coding loops.
//!
//! ```text
//! loopd (root supervisor)
//! ├── store        sled, one journal writer   store.rs, runtime.rs
//! ├── services     one_for_one                tree.rs
//! │   ├── scheduler                           scheduler.rs
//! │   └── monitor                             monitor.rs
//! └── loops        one_for_one                fleet.rs
//!     ├── loop "auth"  ── attempt    loop_actor.rs ── attempt.rs (owns the agent's process group)
//!     └── loop "billing" ── attempt
//! ```
//!
//! # Layout
//! - `names`: the one rule for names that become paths.
//! - `model`: statuses, outcomes, loop/test/attempt records, events.
//! - `tests_file`: the user's tests file.
//! - `config`: the fleet file, loading, environment overrides, validation.
//! - `schema`: JSON Schemas generated from the types.
//! - `store`: sled trees and the transactions that change them.
//! - `generation`: the record beside the store that tells a store which lost writes.
//! - `ledger`: the ledger against git history: passes the store does not know, `recover`.
//! - `process`: agent process groups: spawn, record, end, reap.
//! - `agent`: agent presets (command, claude-code) and what their output means.
//! - `git`: checkpoints, attempt refs, resets, the loop's branch, stale locks.
//! - `hold`: a loop paused for its workdir's git (`checkpoint_failed`, `workdir_broken`).
//! - `budget`: whether a loop or the fleet has spent what it may (pure).
//! - `classify`: an attempt's outcome from its facts (the outcome table, pure).
//! - `prompt`: rendering the prompt of one attempt.
//! - `healer`: diagnoses, repeated failures, lessons, heal strategies (pure functions).
//! - `hints`: guidance from a person for a loop's (or a test's) next prompts.
//! - `transcript`: an attempt's transcript, bytes as printed, head and tail kept beyond a cap.
//! - `attempt`, `loop_actor`, `fleet`: the actors.
//! - `launch`: the fleet started with one call and stopped when a shutdown future resolves.
//! - `scheduler`, `monitor`, `tree`: agent slots, heartbeats and liveness, and the supervisor
//!   that restarts them.
//! - `notifier`: webhooks, signed and retried, decoupled from the loops.
//! - `reporter`: the morning report on the schedule of `report_every`, as a `report` event.
//! - `templates`: the loop factory (loops made from templates with `{{var}}` placeholders).
//! - `words`: English for counts ("1 attempt", "2 attempts").
#![deny(missing_docs)]

pub mod agent;
pub mod attempt;
pub mod budget;
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
pub mod ledger;
pub mod loop_actor;
pub mod model;
pub mod monitor;
pub mod names;
pub mod notifier;
pub mod plan;
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
