//! How the [`Model`] looks: the fleet table on top, the selected loop's tests and the tail of its
//! attempt below, the keys (or the line being typed) at the bottom. Built for 80x24 over ssh:
//! when the fleet table is narrower than its columns, the least needed ones go first
//! ([`columns`]).

use chrono::{DateTime, Utc};
use loopd_actors::view::LoopSummary;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::keys::HELP;
use super::model::{Feed, Input, Model, Pane};
use crate::cli::style::Tone;
use crate::cli::words;

/// A column of the fleet table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The loop's name.
    Loop,
    /// Its state.
    State,
    /// Why it is paused, stopped or crashed.
    Reason,
    /// The test and attempt running now.
    Current,
    /// How long its running agent has been quiet (the heartbeat's age).
    Quiet,
    /// Tests passed of all, and a bar.
    Progress,
    /// What its attempts cost.
    Cost,
}

impl Column {
    fn title(self) -> &'static str {
        match self {
            Column::Loop => "LOOP",
            Column::State => "STATE",
            Column::Reason => "REASON",
            Column::Current => "CURRENT",
            Column::Quiet => "QUIET",
            Column::Progress => "PASSED",
            Column::Cost => "COST",
        }
    }
}

/// The columns in the order they are given up when the table is too narrow: the last first.
const KEPT_FIRST: [Column; 7] = [
    Column::Loop,
    Column::State,
    Column::Current,
    Column::Progress,
    Column::Cost,
    Column::Quiet,
    Column::Reason,
];

/// The order they are shown in.
const SHOWN: [Column; 7] = [
    Column::Loop,
    Column::State,
    Column::Reason,
    Column::Current,
    Column::Quiet,
    Column::Progress,
    Column::Cost,
];

/// The narrowest the reason may be and still be shown.
const REASON_MIN: u16 = 8;
/// The width of the progress bar after the counts.
const BAR: usize = 5;

/// The columns that fit `width`, in the order shown, each with its width. What is left goes
/// to the reason, as much as the longest needs, then to a name longer than its column, then to
/// the progress bar (when it fits whole), then to the reason again.
pub fn columns(width: u16, loops: &[LoopSummary]) -> Vec<(Column, u16)> {
    let widest = |f: &dyn Fn(&LoopSummary) -> usize, min: usize, max: usize| {
        loops.iter().map(f).max().unwrap_or(0).clamp(min, max) as u16
    };
    let need = |c: Column| -> u16 {
        match c {
            Column::Loop => widest(&|l| l.name.chars().count(), 4, 24),
            Column::State => 8,
            Column::Reason => REASON_MIN,
            Column::Current => widest(&|l| current(l).chars().count(), 7, 20),
            Column::Quiet => 5,
            Column::Progress => widest(&|l| counts(l).len(), 6, 11),
            Column::Cost => widest(&|l| cost(l.cost_usd).len(), 4, 10),
        }
    };
    let mut kept = Vec::new();
    let mut used: u16 = 0;
    for c in KEPT_FIRST {
        let w = need(c);
        let gap = u16::from(!kept.is_empty());
        if used + gap + w > width {
            // The name always shows, cut to what there is.
            if kept.is_empty() {
                kept.push((c, width));
            }
            break;
        }
        used += gap + w;
        kept.push((c, w));
    }
    let mut left = width.saturating_sub(used);
    let reason_wants = widest(
        &|l| {
            l.reason
                .as_ref()
                .map_or(0, |r| r.to_string().chars().count())
        },
        0,
        40,
    )
    .saturating_sub(REASON_MIN);
    let mut grow = |c: Column, by: u16| {
        if let Some(col) = kept.iter_mut().find(|(k, _)| *k == c) {
            col.1 += by;
            true
        } else {
            false
        }
    };
    let to_reason = reason_wants.min(left);
    if grow(Column::Reason, to_reason) {
        left -= to_reason;
    }
    // A name longer than the column gets what is left before the bar does.
    let name_wants = widest(&|l| l.name.chars().count(), 0, 64).saturating_sub(need(Column::Loop));
    let to_name = name_wants.min(left);
    if grow(Column::Loop, to_name) {
        left -= to_name;
    }
    let bar = BAR as u16 + 1;
    if left >= bar && grow(Column::Progress, bar) {
        left -= bar;
    }
    grow(Column::Reason, left);
    SHOWN
        .iter()
        .filter_map(|c| kept.iter().find(|(k, _)| k == c).copied())
        .collect()
}

fn current(l: &LoopSummary) -> String {
    match (&l.current_test, l.current_attempt) {
        (Some(t), Some(n)) => format!("{t}#{n}"),
        (Some(t), None) => t.clone(),
        _ => "-".into(),
    }
}

fn counts(l: &LoopSummary) -> String {
    format!("{}/{}", l.progress.passed, l.progress.total)
}

fn bar(l: &LoopSummary) -> String {
    let p = &l.progress;
    let full = (p.passed * BAR).checked_div(p.total).unwrap_or(0).min(BAR);
    format!("{}{}", "█".repeat(full), "░".repeat(BAR - full))
}

/// Dollars with as many decimals as the width allows: a cent matters below ten dollars.
fn cost(usd: f64) -> String {
    if usd < 10.0 {
        format!("${usd:.4}")
    } else if usd < 1000.0 {
        format!("${usd:.2}")
    } else {
        format!("${usd:.0}")
    }
}

/// `12s`, `5m`, `3h`.
fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    match s {
        0..=99 => format!("{s}s"),
        100..=5999 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

fn color(tone: Tone) -> Style {
    if !crate::cli::style::color() {
        return Style::default();
    }
    Style::default().fg(match tone {
        Tone::Good => Color::Green,
        Tone::Bad => Color::Red,
        Tone::Warn => Color::Yellow,
        Tone::Busy => Color::Cyan,
        Tone::Plain => Color::Reset,
    })
}

/// Draws the whole screen at `now`.
pub fn draw(frame: &mut Frame, model: &Model, now: DateTime<Utc>) {
    let area = frame.area();
    let rows = model.loops.len().clamp(1, 8) as u16 + 3;
    let [top, middle, bottom] = Layout::vertical([
        Constraint::Length(rows),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(area);
    fleet(frame, model, top, now);
    // As wide as the selected loop's test ids need (status, id, attempts, spaces, borders),
    // within a third to a half of the screen.
    let ids = model
        .current()
        .and_then(|l| l.tests.iter().map(|t| t.id.chars().count()).max())
        .unwrap_or(0) as u16;
    let tests_width = (11 + 1 + ids + 1 + 3 + 2).clamp(area.width / 3, (area.width / 2).max(20));
    let [left, right] =
        Layout::horizontal([Constraint::Length(tests_width), Constraint::Min(10)]).areas(middle);
    tests(frame, model, left);
    tail(frame, model, right);
    status_line(frame, model, bottom);
}

fn pane_block(title: String, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::default().add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    Block::bordered().title(title).border_style(style)
}

fn fleet(frame: &mut Frame, model: &Model, area: Rect, now: DateTime<Utc>) {
    let feed = match &model.feed {
        Feed::Connecting => "connecting".to_string(),
        Feed::Live => "live".to_string(),
        Feed::Lost(why) => format!("reconnecting: {why}"),
        Feed::Shutdown => "the daemon shut down; waiting".to_string(),
    };
    let title = format!(
        " loopd top · {} · {feed} ",
        loopd_actors::words::count(model.loops.len(), "loop", "loops")
    );
    let block = pane_block(title, model.pane == Pane::Fleet);
    let inner = block.inner(area);
    let cols = columns(inner.width, &model.loops);
    let header = Row::new(cols.iter().map(|(c, _)| Cell::from(c.title())))
        .style(Style::default().add_modifier(Modifier::BOLD));
    let rows = model.loops.iter().map(|l| {
        Row::new(cols.iter().map(|(c, w)| {
            match c {
                Column::Loop => Cell::from(l.name.clone()),
                Column::State => {
                    Cell::from(words(&l.status)).style(color(Tone::of_state(l.status)))
                }
                Column::Reason => Cell::from(
                    l.reason
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                ),
                Column::Current => Cell::from(current(l)),
                Column::Quiet => match model.quiet_for(l, now) {
                    Some(d) => {
                        let stuck = l.heartbeat.as_ref().is_some_and(|h| h.stuck);
                        let tone = if stuck { Tone::Bad } else { Tone::Plain };
                        Cell::from(age(d)).style(color(tone))
                    }
                    None => Cell::from("-"),
                },
                Column::Progress => {
                    let text = counts(l);
                    if usize::from(*w) >= text.len().max(6) + 1 + BAR {
                        Cell::from(format!(
                            "{text:<width$} {}",
                            bar(l),
                            width = usize::from(*w) - BAR - 1
                        ))
                    } else {
                        Cell::from(text)
                    }
                }
                Column::Cost => Cell::from(Line::from(cost(l.cost_usd)).right_aligned()),
            }
        }))
    });
    let table = Table::new(rows, cols.iter().map(|(_, w)| Constraint::Length(*w)))
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(model.position());
    frame.render_stateful_widget(table.block(block), area, &mut state);
}

fn tests(frame: &mut Frame, model: &Model, area: Rect) {
    let Some(l) = model.current() else {
        let block = pane_block(" tests ".into(), model.pane == Pane::Tests);
        frame.render_widget(Paragraph::new("no loop").block(block), area);
        return;
    };
    let title = format!(" {} · tests {} ", l.name, counts(l));
    let block = pane_block(title, model.pane == Pane::Tests);
    let rows = l.tests.iter().map(|t| {
        Row::new([
            Cell::from(words(&t.status)).style(color(Tone::of_test(t.status))),
            Cell::from(t.id.clone()),
            Cell::from(Line::from(t.attempts.to_string()).right_aligned()),
        ])
    });
    let header = Row::new([
        Cell::from("STATUS"),
        Cell::from("TEST"),
        Cell::from(Line::from("#").right_aligned()),
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Fill(1),
            Constraint::Length(3),
        ],
    )
    .header(header)
    .column_spacing(1)
    .row_highlight_style(if model.pane == Pane::Tests {
        Style::default().add_modifier(Modifier::REVERSED)
    } else {
        Style::default().add_modifier(Modifier::UNDERLINED)
    });
    let selected = model
        .test
        .as_ref()
        .and_then(|id| l.tests.iter().position(|t| &t.id == id));
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table.block(block), area, &mut state);
}

fn tail(frame: &mut Frame, model: &Model, area: Rect) {
    let found = model
        .selected
        .as_ref()
        .and_then(|name| model.tails.get(name));
    let title = match found.and_then(|t| t.attempt.as_ref().map(|a| (a, &t.outcome))) {
        Some(((test, n), None)) => format!(" {test}#{n} running "),
        Some(((test, n), Some(outcome))) => format!(" {test}#{n} {outcome} "),
        None => " no attempt seen yet ".into(),
    };
    let block = pane_block(title, model.pane == Pane::Tail);
    let inner = block.inner(area);
    let height = usize::from(inner.height);
    // Wrapped here, not by the paragraph, so that the last lines are the ones that show.
    let wrapped: Vec<String> = found
        .into_iter()
        .flat_map(|t| t.lines.iter())
        .flat_map(|l| wrap(l, usize::from(inner.width)))
        .collect();
    let total = wrapped.len();
    let end = total - model.scroll.min(total.saturating_sub(height));
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = wrapped[start..end]
        .iter()
        .map(|s| Line::from(s.clone()))
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// `line` in pieces at most `width` columns wide (one empty piece for an empty line).
fn wrap(line: &str, width: usize) -> Vec<String> {
    use unicode_width::UnicodeWidthChar;
    let width = width.max(1);
    let mut pieces = vec![String::new()];
    let mut used = 0;
    for c in line.chars() {
        // A tab is as wide as its stop would make it; a space will do.
        let c = if c == '\t' { ' ' } else { c };
        let w = c.width().unwrap_or(0);
        if used + w > width {
            pieces.push(String::new());
            used = 0;
        }
        if let Some(last) = pieces.last_mut() {
            last.push(c);
        }
        used += w;
    }
    pieces
}

fn status_line(frame: &mut Frame, model: &Model, area: Rect) {
    let line = match &model.input {
        Input::Hint {
            loop_name,
            test,
            text,
        } => {
            let whose = match test {
                Some(t) => format!("{loop_name}/{t}"),
                None => loop_name.clone(),
            };
            Line::from(vec![
                Span::styled(
                    format!("hint {whose}> "),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(text.clone()),
                Span::styled("█", Style::default().add_modifier(Modifier::SLOW_BLINK)),
                Span::raw("  Enter sends, Esc cancels"),
            ])
        }
        Input::Confirm(action) => Line::from(Span::styled(
            format!("{}? y/n", action.words()),
            Style::default().add_modifier(Modifier::BOLD),
        )),
        Input::Keys => match &model.said {
            Some((text, failed)) => Line::from(Span::styled(
                text.clone(),
                color(if *failed { Tone::Bad } else { Tone::Good }),
            )),
            None => Line::from(HELP),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::top::model::tests::summary;
    use crate::cli::top::model::{Effect, TranscriptLine};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    /// A fleet whose widest row fills every column: a long name, a running attempt, a reason.
    fn fleet() -> Model {
        let mut busy = summary(
            "billing-service-eu",
            "running",
            &[("BILLING-12", "running"), ("BILLING-13", "passed")],
        );
        busy.current_test = Some("BILLING-12".into());
        busy.current_attempt = Some(3);
        busy.cost_usd = 1.2345;
        let mut paused = summary("auth", "paused", &[("AUTH-1", "failed")]);
        paused.reason = Some(loopd_actors::model::LoopReason::BudgetExhausted);
        let mut m = Model::new();
        assert_eq!(m.connected(false), vec![Effect::LoadAll]);
        m.loaded(vec![busy, paused]);
        m.heard.insert(
            "billing-service-eu".into(),
            Utc::now() - chrono::Duration::seconds(7),
        );
        m
    }

    fn screen(m: &Model, width: u16, height: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
        t.draw(|f| draw(f, m, Utc::now())).unwrap();
        let buf = t.backend().buffer().clone();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_column_fits_80_and_the_least_needed_go_first_when_narrower() {
        let m = fleet();
        let names =
            |w: u16| -> Vec<Column> { columns(w, &m.loops).into_iter().map(|c| c.0).collect() };
        assert_eq!(names(78), SHOWN.to_vec(), "80 columns less the borders");
        let used: u16 = columns(78, &m.loops).iter().map(|c| c.1 + 1).sum::<u16>() - 1;
        assert_eq!(used, 78, "the reason takes what is left");
        assert_eq!(
            names(66),
            [
                Column::Loop,
                Column::State,
                Column::Current,
                Column::Quiet,
                Column::Progress,
                Column::Cost
            ]
        );
        assert_eq!(
            names(60),
            [
                Column::Loop,
                Column::State,
                Column::Current,
                Column::Progress,
                Column::Cost
            ]
        );
        assert_eq!(names(44), [Column::Loop, Column::State, Column::Current]);
        assert_eq!(
            names(10),
            [Column::Loop],
            "the name shows, whatever the width"
        );
    }

    #[test]
    fn an_80_by_24_screen_shows_the_fleet_the_tests_the_tail_and_the_keys() {
        let mut m = fleet();
        m.transcript(TranscriptLine {
            loop_name: "auth".into(),
            test: "AUTH-1".into(),
            attempt: 2,
            line: "compiling auth".into(),
            at: Utc::now(),
        });
        let text = screen(&m, 80, 24);
        let lines: Vec<&str> = text.lines().collect();
        // What needs a person first; every column; the name, state, reason and figures whole.
        assert!(
            lines[1].contains("LOOP") && lines[1].contains("REASON") && lines[1].contains("COST"),
            "{text}"
        );
        assert!(
            lines[2].contains("auth")
                && lines[2].contains("paused")
                && lines[2].contains("budget_exhausted"),
            "{text}"
        );
        let busy = lines[3];
        for part in [
            "billing-service-eu",
            "running",
            "BILLING-12#3",
            "7s",
            "1/2",
            "$1.2345",
        ] {
            assert!(busy.contains(part), "{part} in\n{text}");
        }
        // The selected loop (the first) with its tests and its attempt's tail.
        assert!(text.contains("auth · tests 0/1"), "{text}");
        assert!(text.contains("failed      AUTH-1"), "{text}");
        assert!(text.contains("AUTH-1#2 running"), "{text}");
        assert!(text.contains("compiling auth"), "{text}");
        assert_eq!(lines[23], HELP, "every key on the last line");
    }

    #[test]
    fn the_bottom_line_is_the_hint_being_typed_or_the_question() {
        let mut m = fleet();
        m.input = Input::Hint {
            loop_name: "auth".into(),
            test: None,
            text: "use the cache".into(),
        };
        let text = screen(&m, 80, 24);
        assert!(
            text.lines()
                .last()
                .unwrap()
                .starts_with("hint auth> use the cache█"),
            "{text}"
        );
        m.input = Input::Confirm(super::super::model::Action::Skip(
            "auth".into(),
            "AUTH-1".into(),
        ));
        assert_eq!(
            screen(&m, 80, 24).lines().last().unwrap(),
            "skip auth/AUTH-1? y/n"
        );
    }

    #[test]
    fn a_long_line_is_wrapped_and_the_newest_lines_show() {
        assert_eq!(wrap("abcdef", 4), ["abcd", "ef"]);
        assert_eq!(wrap("", 4), [""]);
        assert_eq!(
            wrap("日本語", 4),
            ["日本", "語"],
            "wide characters take two columns"
        );
    }
}
