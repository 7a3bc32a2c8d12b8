//! What `top` shows, as a value: the fleet's loops, the selection, the tails of their running
//! attempts, the line being typed. Events of the journal, fetched loops and key presses change
//! it and answer with the [`Effect`]s to carry out; nothing here talks to the daemon or the
//! terminal, so it is tested with plain values (`app` does the talking).

use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use loopd_actors::model::{Event, EventKind, LoopState, TestStatus};
use loopd_actors::view::{LoopSummary, Progress};
use serde::Deserialize;

use crate::cli::logs::render::render;

/// Rendered lines kept of each loop's latest attempt.
pub const TAIL_LINES: usize = 300;

/// The pane that up and down move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// The fleet table: up and down select a loop.
    Fleet,
    /// The selected loop's tests: up and down select a test.
    Tests,
    /// The tail of its attempt: up and down scroll.
    Tail,
}

/// What the bottom line is busy with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Nothing: it shows the keys.
    Keys,
    /// Typing a hint for a loop (and a test).
    Hint {
        /// The loop.
        loop_name: String,
        /// The test, when the tests pane chose one.
        test: Option<String>,
        /// What is typed so far.
        text: String,
    },
    /// Waiting for `y` or `n` before an action on a test.
    Confirm(Action),
}

/// A state change `top` asks the daemon for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `POST /api/loops/:id/pause`.
    Pause(String),
    /// `POST /api/loops/:id/resume`.
    Resume(String),
    /// `POST /api/loops/:id/tests/:test/reset`.
    Reset(String, String),
    /// `POST /api/loops/:id/tests/:test/skip`.
    Skip(String, String),
    /// `POST /api/loops/:id/hints`.
    Hint {
        /// The loop.
        loop_name: String,
        /// The test, or every test of the loop.
        test: Option<String>,
        /// The guidance.
        text: String,
    },
}

impl Action {
    /// What it does, in words (the question of a confirmation, the line after it is done).
    pub fn words(&self) -> String {
        match self {
            Action::Pause(l) => format!("pause {l}"),
            Action::Resume(l) => format!("resume {l}"),
            Action::Reset(l, t) => format!("reset {l}/{t}"),
            Action::Skip(l, t) => format!("skip {l}/{t}"),
            Action::Hint {
                loop_name,
                test: Some(t),
                ..
            } => format!("hint {loop_name}/{t}"),
            Action::Hint { loop_name, .. } => format!("hint {loop_name}"),
        }
    }
}

/// What the model asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Fetch every loop (`GET /api/loops`) and hand them to [`Model::loaded`].
    LoadAll,
    /// Fetch one loop (`GET /api/loops/:id?view=summary`) and hand it to [`Model::fetched`].
    Fetch(String),
    /// Ask the daemon for a state change, then hand the answer to [`Model::done`].
    Act(Action),
    /// End `top`.
    Quit,
}

/// The connection to the daemon's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// Not connected yet.
    Connecting,
    /// Events arrive.
    Live,
    /// Lost; trying again (why).
    Lost(String),
    /// The daemon said it shuts down.
    Shutdown,
}

/// The tail of a loop's latest attempt.
#[derive(Debug, Clone, Default)]
pub struct Tail {
    /// `(test, attempt)` the lines belong to.
    pub attempt: Option<(String, u32)>,
    /// How it ended (`None` while it runs).
    pub outcome: Option<String>,
    /// Its last lines, rendered for people.
    pub lines: VecDeque<String>,
}

/// One `event: transcript` of the stream.
#[derive(Debug, Clone, Deserialize)]
pub struct TranscriptLine {
    /// The loop.
    #[serde(rename = "loop")]
    pub loop_name: String,
    /// The test.
    pub test: String,
    /// The attempt number.
    pub attempt: u32,
    /// The line as the agent wrote it.
    pub line: String,
    /// When the daemon read it.
    pub at: DateTime<Utc>,
}

/// Everything `top` shows.
#[derive(Debug)]
pub struct Model {
    /// Every loop, what needs a person first ([`attention`]).
    pub loops: Vec<LoopSummary>,
    /// The selected loop, by name: the order changes under it.
    pub selected: Option<String>,
    /// The selected test of the selected loop, by id.
    pub test: Option<String>,
    /// Where up and down move.
    pub pane: Pane,
    /// Lines scrolled back from the end of the tail.
    pub scroll: usize,
    /// The bottom line.
    pub input: Input,
    /// The last thing said: an action's result or why it failed (and whether it failed).
    pub said: Option<(String, bool)>,
    /// The event stream.
    pub feed: Feed,
    /// The last time each loop's running agent printed (the heartbeat's age comes from it).
    pub heard: HashMap<String, DateTime<Utc>>,
    /// Each loop's latest attempt's tail.
    pub tails: HashMap<String, Tail>,
    /// Whether the first fetch of every loop has come.
    loaded: bool,
    /// Loops an event named whose fetch is not back yet; fetched again when it is, since the
    /// answer may predate the event.
    stale: BTreeSet<String>,
    /// Loops being fetched now.
    fetching: BTreeSet<String>,
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

impl Model {
    /// Nothing known yet.
    pub fn new() -> Model {
        Model {
            loops: Vec::new(),
            selected: None,
            test: None,
            pane: Pane::Fleet,
            scroll: 0,
            input: Input::Keys,
            said: None,
            feed: Feed::Connecting,
            heard: HashMap::new(),
            tails: HashMap::new(),
            loaded: false,
            stale: BTreeSet::new(),
            fetching: BTreeSet::new(),
        }
    }

    /// The selected loop.
    pub fn current(&self) -> Option<&LoopSummary> {
        let name = self.selected.as_deref()?;
        self.loops.iter().find(|l| l.name == name)
    }

    /// The stream is connected. The first time (and after a loss that left no event id to
    /// resume from) every loop is fetched: what happened before is not in the stream.
    pub fn connected(&mut self, resumed: bool) -> Vec<Effect> {
        self.feed = Feed::Live;
        if resumed && self.loaded {
            return Vec::new();
        }
        vec![Effect::LoadAll]
    }

    /// Every loop, fetched.
    pub fn loaded(&mut self, loops: Vec<LoopSummary>) -> Vec<Effect> {
        self.loops = loops;
        self.loaded = true;
        for l in &self.loops {
            if let Some(at) = l.last_heartbeat {
                self.heard.insert(l.name.clone(), at);
            }
        }
        self.sort();
        if self.current().is_none() {
            self.selected = self.loops.first().map(|l| l.name.clone());
            self.test = None;
        }
        self.pick_test();
        // Named by events while the list was on its way: the list may predate them.
        let stale = std::mem::take(&mut self.stale);
        stale.into_iter().filter_map(|n| self.fetch(&n)).collect()
    }

    /// One loop, fetched (`None`: it is gone).
    pub fn fetched(&mut self, name: &str, found: Option<LoopSummary>) -> Vec<Effect> {
        self.fetching.remove(name);
        match found {
            Some(l) => self.replace(l),
            None => self.loops.retain(|l| l.name != name),
        }
        self.sort();
        if self.current().is_none() {
            self.selected = self.loops.first().map(|l| l.name.clone());
        }
        self.pick_test();
        if self.stale.remove(name) {
            return self.fetch(name).into_iter().collect();
        }
        Vec::new()
    }

    /// A fetch of `name` that failed (said elsewhere): the next event tries again.
    pub fn unfetched(&mut self, name: &str) {
        self.fetching.remove(name);
        self.stale.remove(name);
    }

    /// The answer to an action: what to say, and the loop as it is now when the answer had it.
    pub fn done(
        &mut self,
        action: &Action,
        result: Result<Option<LoopSummary>, String>,
    ) -> Vec<Effect> {
        match result {
            Ok(found) => {
                self.said = Some((format!("{}: done", action.words()), false));
                if let Some(l) = found {
                    self.replace(l);
                    self.sort();
                }
                Vec::new()
            }
            Err(why) => {
                self.said = Some((format!("{}: {why}", action.words()), true));
                Vec::new()
            }
        }
    }

    fn replace(&mut self, l: LoopSummary) {
        match self.loops.iter_mut().find(|x| x.name == l.name) {
            Some(x) => *x = l,
            None => self.loops.push(l),
        }
    }

    /// A fetch of `name`, unless one is on its way (then it is fetched again when it is back).
    fn fetch(&mut self, name: &str) -> Option<Effect> {
        if self.fetching.insert(name.to_string()) {
            Some(Effect::Fetch(name.to_string()))
        } else {
            self.stale.insert(name.to_string());
            None
        }
    }

    /// An event of the journal. What it says for sure is applied to the loop's row; the
    /// selected loop, and a loop whose event does not say what changed (a reset, an alert), is
    /// fetched again.
    pub fn event(&mut self, e: &Event) -> Vec<Effect> {
        if e.loop_name.is_empty() {
            // The fleet's (the scheduled report): no row to change.
            return Vec::new();
        }
        if !self.loaded {
            self.stale.insert(e.loop_name.clone());
            return Vec::new();
        }
        let Some(row) = self.loops.iter_mut().find(|l| l.name == e.loop_name) else {
            // A loop created since: the list does not have it yet.
            return self.fetch(&e.loop_name.clone()).into_iter().collect();
        };
        let exact = apply(row, e);
        match e.kind {
            EventKind::AttemptStarted => {
                self.heard.insert(e.loop_name.clone(), e.at);
                if let (Some(t), Some(n)) = (&e.test_id, e.attempt) {
                    self.tails.insert(
                        e.loop_name.clone(),
                        Tail {
                            attempt: Some((t.clone(), n)),
                            ..Tail::default()
                        },
                    );
                }
            }
            EventKind::AttemptFinished => {
                self.heard.remove(&e.loop_name);
                if let Some(tail) = self.tails.get_mut(&e.loop_name) {
                    if tail.attempt.as_ref().map(|(t, n)| (t.as_str(), *n))
                        == e.test_id.as_deref().zip(e.attempt)
                    {
                        tail.outcome = e.data["outcome"].as_str().map(String::from);
                    }
                }
            }
            _ => {}
        }
        self.sort();
        self.pick_test();
        if !exact || self.selected.as_deref() == Some(e.loop_name.as_str()) {
            return self.fetch(&e.loop_name.clone()).into_iter().collect();
        }
        Vec::new()
    }

    /// A line of a running attempt's transcript: its loop's tail (rendered) and heartbeat.
    pub fn transcript(&mut self, t: TranscriptLine) {
        self.heard.insert(t.loop_name.clone(), t.at);
        let tail = self.tails.entry(t.loop_name).or_default();
        let attempt = Some((t.test, t.attempt));
        if tail.attempt != attempt {
            *tail = Tail {
                attempt,
                ..Tail::default()
            };
        }
        tail.lines.extend(render(&t.line));
        while tail.lines.len() > TAIL_LINES {
            tail.lines.pop_front();
        }
    }

    /// Puts what needs a person first; the selection stays on its loop.
    fn sort(&mut self) {
        self.loops
            .sort_by(|a, b| attention(a).cmp(&attention(b)).then(a.name.cmp(&b.name)));
    }

    /// Keeps the selected test one of the selected loop's: the one it was, else the one
    /// running, else the first not passed.
    fn pick_test(&mut self) {
        let Some(l) = self.current() else {
            self.test = None;
            return;
        };
        if let Some(t) = &self.test {
            if l.tests.iter().any(|x| &x.id == t) {
                return;
            }
        }
        let pick = l
            .current_test
            .clone()
            .or_else(|| {
                l.tests
                    .iter()
                    .find(|t| t.status != TestStatus::Passed)
                    .map(|t| t.id.clone())
            })
            .or_else(|| l.tests.first().map(|t| t.id.clone()));
        self.test = pick;
    }

    /// Selects the loop `by` rows down (up when negative); a new loop is fetched.
    pub fn select_loop(&mut self, by: isize) -> Vec<Effect> {
        let Some(at) = self.position() else {
            return Vec::new();
        };
        let to = at
            .saturating_add_signed(by)
            .min(self.loops.len().saturating_sub(1));
        if to == at {
            return Vec::new();
        }
        let name = self.loops[to].name.clone();
        self.selected = Some(name.clone());
        self.test = None;
        self.scroll = 0;
        self.pick_test();
        self.fetch(&name).into_iter().collect()
    }

    /// The row of the selected loop.
    pub fn position(&self) -> Option<usize> {
        let name = self.selected.as_deref()?;
        self.loops.iter().position(|l| l.name == name)
    }

    /// Selects the test `by` rows down (up when negative) in the selected loop.
    pub fn select_test(&mut self, by: isize) {
        let Some(l) = self.current() else { return };
        let at = self
            .test
            .as_ref()
            .and_then(|t| l.tests.iter().position(|x| &x.id == t))
            .unwrap_or(0);
        let to = at
            .saturating_add_signed(by)
            .min(l.tests.len().saturating_sub(1));
        self.test = l.tests.get(to).map(|t| t.id.clone());
    }

    /// The heartbeat's age of `l` at `now`: how long its running agent has been quiet.
    pub fn quiet_for(&self, l: &LoopSummary, now: DateTime<Utc>) -> Option<chrono::Duration> {
        l.current_test.as_ref()?;
        let heard = self.heard.get(&l.name)?;
        Some((now - *heard).max(chrono::Duration::zero()))
    }
}

/// Applies what `e` says to `row`; false when the event does not say enough to be sure
/// (`test_changed`, `alert`), so the loop must be fetched.
fn apply(row: &mut LoopSummary, e: &Event) -> bool {
    let test_status = |row: &mut LoopSummary, status: TestStatus| {
        if let Some(id) = &e.test_id {
            if let Some(t) = row.tests.iter_mut().find(|t| &t.id == id) {
                t.status = status;
            }
        }
        row.progress = Progress::count(row.tests.iter().map(|t| t.status));
    };
    match e.kind {
        EventKind::LoopState => {
            let word = e.data["state"].as_str().unwrap_or(e.message.as_str());
            match serde_json::from_value::<LoopState>(serde_json::Value::from(word)) {
                Ok(state) => {
                    row.status = state;
                    row.reason = e.data["reason"].as_str().map(String::from);
                    true
                }
                Err(_) => false,
            }
        }
        EventKind::AttemptStarted => {
            row.status = LoopState::Running;
            row.current_test = e.test_id.clone();
            row.current_attempt = e.attempt;
            test_status(row, TestStatus::Running);
            true
        }
        EventKind::AttemptFinished => {
            if row.current_test == e.test_id {
                row.current_test = None;
                row.current_attempt = None;
                row.heartbeat = None;
            }
            row.attempts += 1;
            row.cost_usd += e.data["cost_usd"].as_f64().unwrap_or(0.0);
            if let Some(id) = &e.test_id {
                if let Some(t) = row.tests.iter_mut().find(|t| &t.id == id) {
                    t.attempts += 1;
                    if e.data["counted"] == true {
                        t.counted_attempts += 1;
                    }
                }
            }
            // Pending until the event that says more (passed, failed, needs a person).
            test_status(row, TestStatus::Pending);
            true
        }
        EventKind::TestPassed => {
            test_status(row, TestStatus::Passed);
            true
        }
        EventKind::TestFailed => {
            test_status(row, TestStatus::Failed);
            true
        }
        EventKind::TestBlocked => {
            test_status(row, TestStatus::Blocked);
            true
        }
        EventKind::TestChanged | EventKind::Alert => false,
        // A hint is not in the summary view; the report is about no loop (not applied at all).
        EventKind::Hint | EventKind::Report => true,
    }
}

/// Where a loop comes in the table: what needs a person first (a test waiting for one, out of
/// credits, budget exhausted, crashed, paused, failed tests), then the loops at work, then the
/// rest.
pub fn attention(l: &LoopSummary) -> u8 {
    let reason = l.reason.as_deref().unwrap_or("");
    match l.status {
        _ if l.progress.needs_human > 0 => 0,
        LoopState::Paused | LoopState::Stopped if reason == "out_of_credits" => 1,
        LoopState::Paused | LoopState::Stopped if reason == "budget_exhausted" => 2,
        LoopState::Crashed => 3,
        LoopState::Paused => 4,
        _ if l.progress.failed > 0 => 5,
        LoopState::Running => 6,
        LoopState::Idle => 7,
        LoopState::Stopped => 8,
        LoopState::Finished => 9,
    }
}
