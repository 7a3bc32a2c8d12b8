//! What `top` shows, as a value: the fleet's loops, the selection, the tails of their running
//! attempts, the line being typed. Events of the journal, fetched loops and key presses change
//! it and answer with the [`Effect`]s to carry out; nothing here talks to the daemon or the
//! terminal, so it is tested with plain values (`app` does the talking).

use std::collections::{BTreeSet, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use loopd_actors::model::{Event, EventKind, LoopReason, LoopState, TestStatus};
use loopd_actors::view::{LoopSummary, Progress};
use serde::Deserialize;

use crate::render::render;

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
    /// Fetch an attempt's transcript (`GET /api/loops/:id/transcripts/TEST:N`) and hand it to
    /// [`Model::past`]: the tail of a loop whose attempt ran before `top` came.
    Transcript(String, String, u32),
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
        // The stream starts each running attempt with its last lines again: the tails of the
        // attempts that were running start over from those, so no line shows twice and none
        // printed while the stream was away is missing from the end.
        self.tails.retain(|_, t| t.outcome.is_some());
        if resumed && self.loaded {
            return Vec::new();
        }
        // Until the list is back, events only mark their loops: the list may be older than
        // they are, so those loops are fetched again after it (also on a reload).
        self.loaded = false;
        vec![Effect::LoadAll]
    }

    /// The stream is lost (why). After the daemon said it shuts down, that stays what the
    /// title says while the next one is waited for.
    pub fn lost(&mut self, why: String) {
        if self.feed != Feed::Shutdown {
            self.feed = Feed::Lost(why);
        }
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
        let mut effects: Vec<Effect> = stale.into_iter().filter_map(|n| self.fetch(&n)).collect();
        effects.extend(self.past_tail());
        effects
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
        let mut effects: Vec<Effect> = self.past_tail().into_iter().collect();
        if self.stale.remove(name) {
            effects.extend(self.fetch(name));
        }
        effects
    }

    /// When the selected loop has no tail yet: the transcript of its latest attempt to fetch.
    fn past_tail(&mut self) -> Option<Effect> {
        let l = self.current()?;
        if self.tails.contains_key(&l.name) {
            return None;
        }
        let last = l
            .tests
            .iter()
            .filter_map(|t| t.last_attempt.as_ref())
            .max_by_key(|a| a.started_at)?;
        let (name, test, n) = (l.name.clone(), last.test_id.clone(), last.number);
        let tail = Tail {
            attempt: Some((test.clone(), n)),
            outcome: last.outcome.map(|o| crate::cli::words(&o)),
            lines: VecDeque::new(),
        };
        self.tails.insert(name.clone(), tail);
        Some(Effect::Transcript(name, test, n))
    }

    /// The transcript of an attempt that ran before: the loop's tail, unless a newer attempt
    /// has begun one meanwhile (its lines arrive by the stream).
    pub fn past(&mut self, loop_name: &str, (test, n): (&str, u32), text: &str) {
        let Some(tail) = self.tails.get_mut(loop_name) else {
            return;
        };
        if tail.attempt.as_ref().map(|(t, k)| (t.as_str(), *k)) != Some((test, n))
            || !tail.lines.is_empty()
        {
            return;
        }
        let mut lines: VecDeque<String> = VecDeque::new();
        for line in text.lines() {
            lines.extend(render(line).iter().map(|l| harmless(l)));
            while lines.len() > TAIL_LINES {
                lines.pop_front();
            }
        }
        tail.lines = lines;
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
        tail.lines
            .extend(render(&t.line).iter().map(|l| harmless(l)));
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
        let mut effects: Vec<Effect> = self.fetch(&name).into_iter().collect();
        effects.extend(self.past_tail());
        effects
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

/// An agent's line that cannot drive the terminal: escape sequences (colours, a cleared screen,
/// a window title) removed, other control characters shown as `�`, a tab as a space.
pub fn harmless(line: &str) -> String {
    console::strip_ansi_codes(line)
        .chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
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
                    row.reason = e.data["reason"].as_str().map(LoopReason::parse);
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
        // A merge step changes the queue and the test's status: fetched.
        EventKind::TestChanged | EventKind::Alert | EventKind::Merge => false,
        // A hint is not in the summary view; the report is about no loop (not applied at all).
        EventKind::Hint | EventKind::Report => true,
    }
}

/// Where a loop comes in the table: what needs a person first (a test waiting for one, out of
/// credits, budget exhausted, crashed, paused, failed tests), then the loops at work, then the
/// rest.
pub fn attention(l: &LoopSummary) -> u8 {
    let reason = l.reason.as_ref();
    match l.status {
        _ if l.progress.needs_human > 0 => 0,
        LoopState::Paused | LoopState::Stopped if reason == Some(&LoopReason::OutOfCredits) => 1,
        LoopState::Paused | LoopState::Stopped if reason == Some(&LoopReason::BudgetExhausted) => 2,
        LoopState::Crashed => 3,
        LoopState::Paused => 4,
        _ if l.progress.failed > 0 => 5,
        LoopState::Running => 6,
        LoopState::Idle => 7,
        LoopState::Stopped => 8,
        LoopState::Finished => 9,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use serde_json::json;

    /// A loop in the summary view with tests `(id, status)`.
    pub fn summary(name: &str, status: &str, tests: &[(&str, &str)]) -> LoopSummary {
        let statuses = tests
            .iter()
            .map(|(_, s)| serde_json::from_value(json!(s)).unwrap());
        let tests: Vec<_> = tests
            .iter()
            .map(|(id, s)| {
                json!({"id": id, "title": format!("test {id}"), "status": s,
                                  "attempts": 0, "counted_attempts": 0})
            })
            .collect();
        serde_json::from_value(json!({
            "name": name, "status": status, "resources": {"max_concurrent": 1},
            "progress": Progress::count(statuses), "attempts": 0, "cost_usd": 0.0,
            "tests": tests,
        }))
        .unwrap()
    }

    fn event(
        kind: EventKind,
        l: &str,
        test: Option<(&str, u32)>,
        data: serde_json::Value,
    ) -> Event {
        let mut e = Event::new(kind, l, "").with_data(data);
        if let Some((t, n)) = test {
            e = e.about(t, Some(n));
        }
        e
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    /// A model that has loaded `a` (selected, two tests) and `b` (one test).
    fn two_loops() -> Model {
        let mut m = Model::new();
        assert_eq!(m.connected(false), vec![Effect::LoadAll]);
        m.loaded(vec![
            summary("a", "running", &[("A1", "pending"), ("A2", "pending")]),
            summary("b", "running", &[("B1", "pending")]),
        ]);
        assert_eq!(m.selected.as_deref(), Some("a"));
        m
    }

    fn row<'a>(m: &'a Model, name: &str) -> &'a LoopSummary {
        m.loops.iter().find(|l| l.name == name).unwrap()
    }

    #[test]
    fn an_attempt_shows_on_its_row_and_its_outcome_in_the_progress() {
        let mut m = two_loops();
        // Not the selected loop: the event says all there is, nothing is fetched.
        let fx = m.event(&event(
            EventKind::AttemptStarted,
            "b",
            Some(("B1", 1)),
            json!(null),
        ));
        assert_eq!(fx, vec![]);
        let b = row(&m, "b");
        assert_eq!(
            (b.current_test.as_deref(), b.current_attempt),
            (Some("B1"), Some(1))
        );
        assert_eq!(b.tests[0].status, TestStatus::Running);
        let finished = json!({"outcome": "passed", "counted": true, "cost_usd": 0.25});
        m.event(&event(
            EventKind::AttemptFinished,
            "b",
            Some(("B1", 1)),
            finished,
        ));
        m.event(&event(
            EventKind::TestPassed,
            "b",
            Some(("B1", 1)),
            json!(null),
        ));
        let b = row(&m, "b");
        assert_eq!(b.current_test, None);
        assert_eq!((b.attempts, b.cost_usd), (1, 0.25));
        assert_eq!((b.progress.passed, b.progress.total), (1, 1));
        assert_eq!(b.tests[0].attempts, 1);
        assert_eq!(m.tails["b"].outcome.as_deref(), Some("passed"));
        // The selected loop is fetched again when an event names it.
        let fx = m.event(&event(
            EventKind::AttemptStarted,
            "a",
            Some(("A1", 1)),
            json!(null),
        ));
        assert_eq!(fx, vec![Effect::Fetch("a".into())]);
    }

    #[test]
    fn a_paused_loop_comes_first_and_stays_selected_when_the_order_changes() {
        let mut m = two_loops();
        let paused = json!({"state": "paused", "reason": "out_of_credits"});
        m.event(&event(EventKind::LoopState, "b", None, paused));
        assert_eq!(m.loops[0].name, "b");
        assert_eq!(m.loops[0].status, LoopState::Paused);
        assert_eq!(m.loops[0].reason, Some(LoopReason::OutOfCredits));
        assert_eq!(
            m.selected.as_deref(),
            Some("a"),
            "the selection follows its loop"
        );
        // `running` is said by the message alone.
        let mut running = Event::new(EventKind::LoopState, "b", "running");
        running.data = json!(null);
        m.event(&running);
        assert_eq!(row(&m, "b").status, LoopState::Running);
        assert_eq!(row(&m, "b").reason, None);
    }

    #[test]
    fn what_an_event_does_not_say_is_fetched_once_at_a_time() {
        let mut m = two_loops();
        let reset = event(EventKind::TestChanged, "b", Some(("B1", 1)), json!(null));
        assert_eq!(m.event(&reset), vec![Effect::Fetch("b".into())]);
        // Another while the first fetch is out: none now, one more when it is back.
        assert_eq!(m.event(&reset), vec![]);
        let fresh = summary("b", "running", &[("B1", "skipped")]);
        assert_eq!(
            m.fetched("b", Some(fresh.clone())),
            vec![Effect::Fetch("b".into())]
        );
        assert_eq!(m.fetched("b", Some(fresh)), vec![]);
        // The fleet's report names no loop: nothing to fetch, no row; a hint changes no row.
        let report = Event::new(EventKind::Report, "", "the report");
        assert_eq!(m.event(&report), vec![]);
        assert!(m.loops.iter().all(|l| !l.name.is_empty()));
        let hint = Event::new(EventKind::Hint, "b", "a hint for b");
        assert_eq!(m.event(&hint), vec![]);
        assert_eq!(row(&m, "b").tests[0].status, TestStatus::Skipped);
        // A loop the list did not have is fetched; one that is gone leaves.
        let new = event(EventKind::LoopState, "c", None, json!({"state": "running"}));
        assert_eq!(m.event(&new), vec![Effect::Fetch("c".into())]);
        m.fetched("b", None);
        assert!(m.loops.iter().all(|l| l.name != "b"));
    }

    #[test]
    fn events_before_the_first_list_are_fetched_after_it() {
        let mut m = Model::new();
        m.connected(false);
        let e = event(EventKind::AttemptStarted, "b", Some(("B1", 1)), json!(null));
        assert_eq!(m.event(&e), vec![]);
        let fx = m.loaded(vec![
            summary("a", "idle", &[]),
            summary("b", "running", &[]),
        ]);
        assert_eq!(fx, vec![Effect::Fetch("b".into())]);
        // After the daemon said it shuts down, a failed reconnect does not hide that.
        m.feed = Feed::Shutdown;
        m.lost("cannot reach http://127.0.0.1:7433".into());
        assert_eq!(m.feed, Feed::Shutdown);
        // A stream resumed from an event id needs no new list; one that could not resume does,
        // and what an event says meanwhile is fetched after it, since the list may be older.
        assert_eq!(m.connected(true), vec![]);
        assert_eq!(m.connected(false), vec![Effect::LoadAll]);
        let e = event(EventKind::AttemptStarted, "a", Some(("A1", 2)), json!(null));
        assert_eq!(m.event(&e), vec![]);
        let old = summary("a", "idle", &[]);
        let fx = m.loaded(vec![old, summary("b", "running", &[])]);
        assert_eq!(fx, vec![Effect::Fetch("a".into())]);
    }

    #[test]
    fn keys_select_act_confirm_and_type_a_hint() {
        let mut m = two_loops();
        assert_eq!(
            m.key(key(KeyCode::Char('j'))),
            vec![Effect::Fetch("b".into())]
        );
        assert_eq!(m.selected.as_deref(), Some("b"));
        assert_eq!(m.key(key(KeyCode::Down)), vec![], "the last row stays");
        m.key(key(KeyCode::Up));
        assert_eq!(m.selected.as_deref(), Some("a"));
        assert_eq!(
            m.key(key(KeyCode::Char('p'))),
            vec![Effect::Act(Action::Pause("a".into()))]
        );
        assert_eq!(
            m.key(key(KeyCode::Char('r'))),
            vec![Effect::Act(Action::Resume("a".into()))]
        );

        // Reset and skip ask first; anything but `y` says no.
        m.key(key(KeyCode::Tab));
        m.key(key(KeyCode::Char('j')));
        assert_eq!(m.test.as_deref(), Some("A2"));
        assert_eq!(m.key(key(KeyCode::Char('R'))), vec![]);
        assert_eq!(
            m.input,
            Input::Confirm(Action::Reset("a".into(), "A2".into()))
        );
        assert_eq!(m.key(key(KeyCode::Char('n'))), vec![]);
        assert_eq!(m.input, Input::Keys);
        m.key(key(KeyCode::Char('s')));
        assert_eq!(
            m.key(key(KeyCode::Char('y'))),
            vec![Effect::Act(Action::Skip("a".into(), "A2".into()))]
        );

        // In the tests pane a hint is the test's; `q` is a letter of it, Esc drops it.
        m.key(key(KeyCode::Char('h')));
        for c in "no quit".chars() {
            assert_eq!(m.key(key(KeyCode::Char(c))), vec![]);
        }
        m.key(key(KeyCode::Backspace));
        let hint = Action::Hint {
            loop_name: "a".into(),
            test: Some("A2".into()),
            text: "no qui".into(),
        };
        assert_eq!(m.key(key(KeyCode::Enter)), vec![Effect::Act(hint)]);
        m.key(key(KeyCode::Char('h')));
        m.key(key(KeyCode::Char('x')));
        assert_eq!(m.key(key(KeyCode::Esc)), vec![]);
        assert_eq!(m.input, Input::Keys);

        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        m.key(key(KeyCode::Char('h')));
        assert_eq!(
            m.key(ctrl_c),
            vec![Effect::Quit],
            "Ctrl-C quits even while typing"
        );
        assert_eq!(
            Model::new().key(key(KeyCode::Char('q'))),
            vec![Effect::Quit]
        );
    }

    #[test]
    fn a_tail_is_the_rendered_end_of_the_latest_attempt_and_cannot_drive_the_terminal() {
        let mut m = two_loops();
        let line = |test: &str, n: u32, text: &str| TranscriptLine {
            loop_name: "a".into(),
            test: test.into(),
            attempt: n,
            line: text.into(),
            at: Utc::now(),
        };
        let tool = r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Bash","input":{"command":"make"}}]}}"#;
        m.transcript(line("A1", 1, tool));
        m.transcript(line(
            "A1",
            1,
            "\u{1b}[2J\u{1b}]0;owned\u{7}red \u{1b}[31mtext\u{1b}[0m\u{7}\tend",
        ));
        let tail: Vec<&String> = m.tails["a"].lines.iter().collect();
        assert_eq!(tail, ["→ Bash make", "red text\u{fffd} end"]);
        for n in 0..TAIL_LINES + 5 {
            m.transcript(line("A1", 1, &format!("line {n}")));
        }
        assert_eq!(m.tails["a"].lines.len(), TAIL_LINES);
        assert_eq!(
            m.tails["a"].lines.back().unwrap(),
            &format!("line {}", TAIL_LINES + 4)
        );
        m.transcript(line("A1", 2, "second"));
        assert_eq!(m.tails["a"].lines, ["second"]);
        assert_eq!(m.tails["a"].attempt, Some(("A1".into(), 2)));

        // A reconnected stream sends running attempts' last lines again: their tails start
        // over from those; the tail of an attempt that ended stays.
        m.transcript(TranscriptLine {
            loop_name: "b".into(),
            ..line("B1", 1, "b's last words")
        });
        let finished = json!({"outcome": "failed", "counted": true});
        m.event(&event(
            EventKind::AttemptFinished,
            "b",
            Some(("B1", 1)),
            finished,
        ));
        assert_eq!(m.connected(true), vec![]);
        assert!(!m.tails.contains_key("a"));
        assert_eq!(m.tails["b"].lines, ["b's last words"]);
    }

    #[test]
    fn a_loop_whose_attempt_ran_before_shows_that_attempts_transcript() {
        let mut done = summary("a", "finished", &[("A1", "passed"), ("A2", "failed")]);
        let mut first = loopd_actors::model::AttemptRecord::started("a", "A1", 1, "t".into());
        first.outcome = Some(loopd_actors::model::Outcome::Passed);
        let mut last = loopd_actors::model::AttemptRecord::started("a", "A2", 3, "t".into());
        last.started_at = first.started_at + chrono::Duration::seconds(5);
        last.outcome = Some(loopd_actors::model::Outcome::Failed);
        done.tests[0].last_attempt = Some(first);
        done.tests[1].last_attempt = Some(last);
        let mut m = Model::new();
        m.connected(false);
        let fx = m.loaded(vec![done, summary("b", "idle", &[])]);
        assert_eq!(fx, vec![Effect::Transcript("a".into(), "A2".into(), 3)]);
        assert_eq!(m.tails["a"].outcome.as_deref(), Some("failed"));
        m.past("a", ("A2", 3), "one\n\u{1b}[1mtwo\n");
        assert_eq!(m.tails["a"].lines, ["one", "two"]);
        // Asked once: selecting the loop again fetches the loop, not the transcript.
        m.select_loop(1);
        assert_eq!(m.select_loop(-1), vec![Effect::Fetch("a".into())]);
        // A transcript that comes after a newer attempt began is not that attempt's tail.
        m.transcript(TranscriptLine {
            loop_name: "a".into(),
            test: "A2".into(),
            attempt: 4,
            line: "live".into(),
            at: Utc::now(),
        });
        m.past("a", ("A2", 3), "old\n");
        assert_eq!(m.tails["a"].lines, ["live"]);
    }

    #[test]
    fn what_needs_a_person_comes_first() {
        let mut needs = summary("n", "running", &[("T", "needs_human")]);
        needs.progress.needs_human = 1;
        let mut credits = summary("c", "paused", &[]);
        credits.reason = Some(LoopReason::OutOfCredits);
        let mut m = Model::new();
        m.connected(false);
        m.loaded(vec![
            summary("f", "finished", &[]),
            summary("r", "running", &[("T", "failed")]),
            summary("x", "crashed", &[]),
            credits,
            summary("i", "idle", &[]),
            needs,
            summary("g", "running", &[]),
        ]);
        let order: Vec<&str> = m.loops.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(order, ["n", "c", "x", "r", "g", "i", "f"]);
    }
}
