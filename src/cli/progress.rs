//! The live progress display of `loopd run`: one bar per loop on a terminal, one line per event
//! otherwise (or with `--plain`).

use std::collections::HashMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use loopd_actors::config::Fleet;
use loopd_actors::model::{Event, EventKind, Outcome};
use loopd_actors::runtime::Ctx;
use loopd_actors::view;

/// The display.
pub struct Progress {
    bars: Option<(MultiProgress, HashMap<String, ProgressBar>)>,
}

impl Progress {
    /// Shows every loop of `fleet` with its progress so far.
    pub async fn new(ctx: &Ctx, fleet: &Fleet, plain: bool) -> anyhow::Result<Progress> {
        let status = ctx.read(view::status).await?;
        if plain || !std::io::stderr().is_terminal() {
            for l in &fleet.loops {
                let done = status
                    .loops
                    .iter()
                    .find(|v| v.name == l.name)
                    .map(|v| (v.progress.passed, v.progress.total));
                if let Some((passed, total)) = done {
                    say!("[{}] resuming: {passed}/{total} passed", l.name);
                }
            }
            return Ok(Progress { bars: None });
        }
        let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:<16.bold} [{bar:24.green/white}] {pos}/{len} {elapsed:>4} {wide_msg}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        let mut bars = HashMap::new();
        for l in &fleet.loops {
            let (passed, stored_total) = status
                .loops
                .iter()
                .find(|v| v.name == l.name)
                .map(|v| (v.progress.passed, v.progress.total))
                .unwrap_or((0, 0));
            // On a first run the store knows no tests before the loop boots: count the file's.
            let in_file = loopd_actors::config::load_tests(l).map_or(0, |t| t.len());
            let total = stored_total.max(in_file);
            let bar = mp.add(ProgressBar::new(total as u64));
            bar.set_style(style.clone());
            bar.set_prefix(l.name.clone());
            bar.set_position(passed as u64);
            bar.set_message("starting");
            bars.insert(l.name.clone(), bar);
        }
        Ok(Progress {
            bars: Some((mp, bars)),
        })
    }

    /// Reflects one recorded event.
    pub fn event(&mut self, e: &Event) {
        let Some((mp, bars)) = &self.bars else {
            let at = e.at.format("%H:%M:%S");
            say!("{at} [{}] {}", e.loop_name, e.message);
            for line in why_of(e, e.loop_name.len() + 14) {
                say!("{at} [{}]   {line}", e.loop_name);
            }
            return;
        };
        let Some(bar) = bars.get(&e.loop_name) else {
            return;
        };
        match e.kind {
            EventKind::AttemptStarted => bar.set_message(e.message.clone()),
            EventKind::TestPassed => bar.inc(1),
            EventKind::LoopState => bar.set_message(e.message.clone()),
            EventKind::AttemptFinished => {
                let _ = mp.println(format!("[{}] {}", e.loop_name, e.message));
                for line in why_of(e, e.loop_name.len() + 5) {
                    let _ = mp.println(format!("[{}]   {line}", e.loop_name));
                }
            }
            EventKind::TestFailed | EventKind::TestBlocked | EventKind::Alert => {
                let _ = mp.println(format!("[{}] {}", e.loop_name, e.message));
            }
            EventKind::Hint | EventKind::Merge => {
                let _ = mp.println(format!("[{}] {}", e.loop_name, e.message));
            }
            EventKind::TestChanged | EventKind::Report => {}
        }
    }

    /// Redraws elapsed times.
    pub fn tick(&self) {
        if let Some((_, bars)) = &self.bars {
            bars.values().for_each(ProgressBar::tick);
        }
    }

    /// Prints a note above the bars.
    pub fn note(&self, text: &str) {
        match &self.bars {
            Some((mp, _)) => {
                let _ = mp.println(text);
            }
            None => say!("{text}"),
        }
    }

    /// Leaves the bars as they are and stops drawing.
    pub fn finish(&mut self) {
        if let Some((_, bars)) = &self.bars {
            bars.values().for_each(ProgressBar::abandon);
        }
    }
}

/// Why a finished attempt failed, from its `attempt_finished` event, in lines that fit beside
/// a prefix of `indent` characters (nothing for another kind of event).
fn why_of(e: &Event, indent: usize) -> Vec<String> {
    if e.kind != EventKind::AttemptFinished {
        return Vec::new();
    }
    let outcome: Option<Outcome> = serde_json::from_value(e.data["outcome"].clone()).ok();
    let verify: Vec<&str> = e.data["verify_lines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str())
        .collect();
    super::why::why_lines(
        outcome,
        e.data["reason"].as_str(),
        &verify,
        super::why::width().saturating_sub(indent),
    )
}
