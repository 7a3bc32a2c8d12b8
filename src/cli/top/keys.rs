//! What a key does to the [`Model`]: select, switch panes, ask for an action (after a `y` for
//! the ones on a test), type a hint, quit.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::{Action, Effect, Input, Model, Pane};

/// The keys, as the bottom line lists them.
pub const HELP: &str = "↑↓/jk select  tab pane  p pause  r resume  R reset  s skip  h hint  q quit";

impl Model {
    /// A key press.
    pub fn key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return vec![Effect::Quit];
        }
        // What was said stays until the next key.
        self.said = None;
        match std::mem::replace(&mut self.input, Input::Keys) {
            Input::Keys => self.command(key),
            Input::Confirm(action) => match key.code {
                KeyCode::Char('y' | 'Y') => vec![Effect::Act(action)],
                _ => {
                    self.said = Some((format!("{}: not done", action.words()), false));
                    Vec::new()
                }
            },
            Input::Hint {
                loop_name,
                test,
                mut text,
            } => match key.code {
                KeyCode::Esc => {
                    self.said = Some(("hint: not given".into(), false));
                    Vec::new()
                }
                KeyCode::Enter if text.trim().is_empty() => {
                    self.said = Some(("hint: empty, not given".into(), false));
                    Vec::new()
                }
                KeyCode::Enter => vec![Effect::Act(Action::Hint {
                    loop_name,
                    test,
                    text: text.trim().to_string(),
                })],
                code => {
                    match code {
                        KeyCode::Backspace => {
                            text.pop();
                        }
                        KeyCode::Char(c) if !c.is_control() => text.push(c),
                        _ => {}
                    }
                    self.input = Input::Hint {
                        loop_name,
                        test,
                        text,
                    };
                    Vec::new()
                }
            },
        }
    }

    fn command(&mut self, key: KeyEvent) -> Vec<Effect> {
        let loop_name = self.selected.clone();
        let test = self.test.clone();
        match key.code {
            KeyCode::Char('q') => vec![Effect::Quit],
            KeyCode::Up | KeyCode::Char('k') => self.up_down(-1),
            KeyCode::Down | KeyCode::Char('j') => self.up_down(1),
            KeyCode::Tab => {
                self.pane = match self.pane {
                    Pane::Fleet => Pane::Tests,
                    Pane::Tests => Pane::Tail,
                    Pane::Tail => Pane::Fleet,
                };
                Vec::new()
            }
            KeyCode::BackTab => {
                self.pane = match self.pane {
                    Pane::Fleet => Pane::Tail,
                    Pane::Tests => Pane::Fleet,
                    Pane::Tail => Pane::Tests,
                };
                Vec::new()
            }
            KeyCode::Char('p') => loop_name
                .map(|l| vec![Effect::Act(Action::Pause(l))])
                .unwrap_or_default(),
            KeyCode::Char('r') => loop_name
                .map(|l| vec![Effect::Act(Action::Resume(l))])
                .unwrap_or_default(),
            KeyCode::Char(c @ ('R' | 's')) => {
                if let (Some(l), Some(t)) = (loop_name, test) {
                    self.input = Input::Confirm(if c == 'R' {
                        Action::Reset(l, t)
                    } else {
                        Action::Skip(l, t)
                    });
                }
                Vec::new()
            }
            KeyCode::Char('h') => {
                if let Some(l) = loop_name {
                    self.input = Input::Hint {
                        loop_name: l,
                        // A hint for the test only when the tests pane chose it.
                        test: test.filter(|_| self.pane == Pane::Tests),
                        text: String::new(),
                    };
                }
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn up_down(&mut self, by: isize) -> Vec<Effect> {
        match self.pane {
            Pane::Fleet => self.select_loop(by),
            Pane::Tests => {
                self.select_test(by);
                Vec::new()
            }
            Pane::Tail => {
                self.scroll = self.scroll.saturating_add_signed(-by);
                Vec::new()
            }
        }
    }
}
