//! What people and programs may ask of a running fleet (the API and the CLI), and how it can
//! fail. The loops supervisor routes each request to the loop actor it concerns.

use crate::config::LoopConfig;
use crate::tests_file::TestSpec;

/// A request to change the fleet.
#[derive(Debug, Clone)]
pub enum Control {
    /// Start a loop (also undoes `stop` and `pause`, and restarts a crashed loop).
    Start(String),
    /// Stop a loop at once: the running attempt is interrupted. Survives restarts.
    Stop(String),
    /// Start no new attempt; with `now`, interrupt the running one too. Survives restarts.
    Pause {
        /// The loop.
        name: String,
        /// Interrupt the running attempt instead of letting it finish.
        now: bool,
    },
    /// Undo `pause` (or an `out_of_credits` / `budget_exhausted` pause).
    Resume(String),
    /// Register a new loop (persisted in the store) and start it if asked.
    AddLoop {
        /// Its configuration, validated, paths absolute.
        config: Box<LoopConfig>,
        /// Start it now.
        start: bool,
    },
    /// Apply a changed configuration to a running loop: its attempt is interrupted and its actor
    /// restarted with the new configuration (its history stays).
    ReplaceLoop(Box<LoopConfig>),
    /// Stop running a loop that left the fleet file; its history stays in the store.
    RetireLoop(String),
    /// Stop a loop and forget it (tests and attempts too; the event journal keeps its past).
    RemoveLoop(String),
    /// Make a test `pending` again with its counted attempts cleared.
    ResetTest {
        /// The loop.
        loop_name: String,
        /// The test.
        test: String,
    },
    /// Set a test aside: `skipped`, which releases its dependents.
    SkipTest {
        /// The loop.
        loop_name: String,
        /// The test.
        test: String,
    },
    /// Return the workdir to the checkpoint made when a test passed (later passes reopen).
    Rollback {
        /// The loop.
        loop_name: String,
        /// The test whose checkpoint to return to.
        test: String,
    },
    /// Add tests to a loop while it runs (stored with `origin: "api"`).
    InjectTests {
        /// The loop.
        loop_name: String,
        /// The new tests (validated by the caller; ids must be new to the loop).
        tests: Vec<TestSpec>,
    },
}

impl Control {
    /// The loop a request concerns.
    pub fn loop_name(&self) -> &str {
        match self {
            Control::Start(n) | Control::Stop(n) | Control::Resume(n) | Control::RemoveLoop(n) => n,
            Control::Pause { name, .. } => name,
            Control::AddLoop { config, .. } | Control::ReplaceLoop(config) => &config.name,
            Control::RetireLoop(n) => n,
            Control::ResetTest { loop_name, .. }
            | Control::SkipTest { loop_name, .. }
            | Control::Rollback { loop_name, .. }
            | Control::InjectTests { loop_name, .. } => loop_name,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ControlError {
    /// No loop of that name.
    #[error("no loop named `{0}`")]
    UnknownLoop(String),
    /// No test of that id in the loop.
    #[error("loop `{loop_name}` has no test `{test}`")]
    UnknownTest {
        /// The loop.
        loop_name: String,
        /// The test id.
        test: String,
    },
    /// The request contradicts the current state (a loop of that name exists, the test is running, ...).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// loopd failed inside (store I/O, a dead actor).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for ControlError {
    fn from(e: crate::store::StoreError) -> Self {
        ControlError::Internal(e.to_string())
    }
}
