//! How the CLI's output looks: colour or not, how wide, which colour a state or an outcome gets.
//!
//! Decided once in `main` from `--color`, `NO_COLOR` and whether stdout is a terminal, so that
//! every table and line of a command agrees, and a pipe or a file never receives escape codes
//! unless `--color always` asks for them.

use std::io::IsTerminal;
use std::sync::OnceLock;

use loopd_actors::model::{LoopState, Outcome, TestStatus};

/// `--color`: when the output is coloured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set to anything non-empty.
    #[default]
    Auto,
    /// Always, even into a pipe or a file (and despite `NO_COLOR`: the flag is the nearer wish).
    Always,
    /// Never.
    Never,
}

/// Table width off a terminal when `COLUMNS` does not say: wide enough for every column of
/// `attempts`, narrow enough for a review in a mail or an issue.
const DEFAULT_WIDTH: usize = 100;

static COLOR: OnceLock<bool> = OnceLock::new();

/// Decides colour for the whole process; later calls change nothing.
pub fn init(choice: ColorChoice) {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let _ = COLOR.set(decide(choice, no_color, std::io::stdout().is_terminal()));
    // `run`'s live bars (indicatif, on stderr) colour through `console`, which already follows
    // NO_COLOR and the terminal on its own; the flag overrides it the same way.
    if choice != ColorChoice::Auto {
        console::set_colors_enabled_stderr(choice == ColorChoice::Always);
    }
}

fn decide(choice: ColorChoice, no_color: bool, tty: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => tty && !no_color,
    }
}

/// Whether output is coloured (off until [`init`] ran).
pub fn color() -> bool {
    COLOR.get().copied().unwrap_or(false)
}

/// The width output must fit: `COLUMNS` when set (a shell's own idea, and how tests ask for
/// 80), else the terminal's on a terminal, else [`DEFAULT_WIDTH`].
pub fn width() -> usize {
    if let Some(v) = std::env::var_os("COLUMNS").filter(|v| !v.is_empty()) {
        match v.to_str().and_then(|s| s.trim().parse::<usize>().ok()) {
            Some(n) if n > 0 => return n,
            _ => eprintln!(
                "loopd: ignoring COLUMNS={} (expected a number of columns)",
                v.to_string_lossy()
            ),
        }
    }
    // comfy-table asks the terminal (through crossterm) only when stdout is one; a terminal
    // that does not know its size (a fresh pty) says 0.
    comfy_table::Table::new()
        .width()
        .map(usize::from)
        .filter(|w| *w > 0)
        .unwrap_or(DEFAULT_WIDTH)
}

/// What a word means to the reader, and so its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Done and well: passed, finished.
    Good,
    /// Failed or broken.
    Bad,
    /// Waiting for something or someone: paused, blocked, stopped.
    Warn,
    /// At work now.
    Busy,
    /// Nothing to say: pending, idle, skipped.
    Plain,
}

impl Tone {
    /// The tone of a loop's state.
    pub fn of_state(s: LoopState) -> Tone {
        match s {
            LoopState::Finished => Tone::Good,
            LoopState::Crashed => Tone::Bad,
            LoopState::Paused | LoopState::Stopped => Tone::Warn,
            LoopState::Running => Tone::Busy,
            LoopState::Idle => Tone::Plain,
        }
    }

    /// The tone of a test's status.
    pub fn of_test(s: TestStatus) -> Tone {
        match s {
            TestStatus::Passed => Tone::Good,
            TestStatus::Failed => Tone::Bad,
            TestStatus::Blocked | TestStatus::NeedsHuman => Tone::Warn,
            TestStatus::Running => Tone::Busy,
            TestStatus::Pending | TestStatus::Skipped | TestStatus::Removed => Tone::Plain,
        }
    }

    /// The tone of an attempt's outcome (`None`: still running).
    pub fn of_outcome(o: Option<Outcome>) -> Tone {
        match o {
            None => Tone::Busy,
            Some(Outcome::Passed) => Tone::Good,
            Some(
                Outcome::Failed
                | Outcome::AgentError
                | Outcome::NoChange
                | Outcome::Regression
                | Outcome::Conflict,
            ) => Tone::Bad,
            Some(
                Outcome::Stalled
                | Outcome::TimedOut
                | Outcome::ApiError
                | Outcome::OutOfCredits
                | Outcome::AgentUnavailable
                | Outcome::Interrupted,
            ) => Tone::Warn,
        }
    }

    /// The colour of a table cell in this tone.
    pub fn cell_color(self) -> Option<comfy_table::Color> {
        use comfy_table::Color;
        match self {
            Tone::Good => Some(Color::Green),
            Tone::Bad => Some(Color::Red),
            Tone::Warn => Some(Color::Yellow),
            Tone::Busy => Some(Color::Cyan),
            Tone::Plain => None,
        }
    }
}

/// `text` in `tone`'s colour when output is coloured, else as it is: for words outside tables.
pub fn paint(text: &str, tone: Tone) -> String {
    use anstyle::AnsiColor;
    let ansi = match tone {
        Tone::Good => AnsiColor::Green,
        Tone::Bad => AnsiColor::Red,
        Tone::Warn => AnsiColor::Yellow,
        Tone::Busy => AnsiColor::Cyan,
        Tone::Plain => return text.to_string(),
    };
    if !color() {
        return text.to_string();
    }
    let style = anstyle::Style::new().fg_color(Some(ansi.into()));
    format!("{}{text}{}", style.render(), style.render_reset())
}

/// A loop's heading line, `NAME  STATE REST`, within the width: a long name is cut first, so
/// the state and the counts after it stay in view; the state is painted in `tone`.
pub fn heading(name: &str, state: &str, tone: Tone, rest: &str) -> String {
    let width = width();
    let others = 2 + state.chars().count() + rest.chars().count();
    let name = fit(name, width.saturating_sub(others).max(12));
    let plain = fit(&format!("{name}  {state}{rest}"), width);
    // Painted after fitting: escape codes have no width, and `fit` would count them.
    let prefix = format!("{name}  {state}");
    let line = match plain.strip_prefix(&prefix) {
        Some(after) => format!("{name}  {}{after}", paint(state, tone)),
        None => plain,
    };
    format!("{line}\n")
}

/// `line` cut to `width` columns, its end replaced by "…" when it is longer.
pub fn fit(line: &str, width: usize) -> String {
    use unicode_width::UnicodeWidthChar;
    let total: usize = line.chars().filter_map(|c| c.width()).sum();
    if total <= width {
        return line.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in line.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_and_auto_needs_a_terminal_without_no_color() {
        assert!(decide(ColorChoice::Always, true, false));
        assert!(!decide(ColorChoice::Never, false, true));
        assert!(decide(ColorChoice::Auto, false, true));
        assert!(!decide(ColorChoice::Auto, true, true));
        assert!(!decide(ColorChoice::Auto, false, false));
    }

    #[test]
    fn a_long_line_is_cut_to_the_width_with_an_ellipsis() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("0123456789", 10), "0123456789");
        assert_eq!(fit("0123456789abc", 10), "012345678…");
    }
}
