//! Every table the CLI prints: columns that fit the width ([`style::width`]), one line a row
//! (what does not fit its column is cut with "…", so the columns never shift), colour for
//! states and outcomes when [`style::color`] says so, and no borders (the output stays easy to
//! `grep` and `awk`).
//!
//! A row may carry detail lines (why an attempt failed, where its diff is saved): they are
//! printed under it, indented and cut to the width, without widening any column.

use comfy_table::{Attribute, Cell, CellAlignment, ColumnConstraint, ContentArrangement, Row};

use super::style::{self, Tone};

/// Spaces between two columns.
const GAP: u16 = 2;
/// How far detail lines are indented under their row.
const DETAIL_INDENT: &str = "    ";

/// A table being filled; [`Table::render`] gives its text.
pub struct Table {
    table: comfy_table::Table,
    /// Detail lines of each row, in row order.
    details: Vec<Vec<String>>,
    /// Spaces before every line (a table under a heading).
    indent: usize,
    width: usize,
}

impl Table {
    /// A table with these column titles, as wide as the output allows.
    pub fn new(header: &[&str]) -> Table {
        let mut table = comfy_table::Table::new();
        table
            .load_style(comfy_table::presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_truncation_indicator("…");
        if style::color() {
            table.enforce_styling();
        } else {
            table.force_no_tty();
        }
        let bold = style::color();
        let mut titles = Row::from(header.iter().map(|h| {
            let c = Cell::new(h);
            if bold {
                c.add_attribute(Attribute::Bold)
            } else {
                c
            }
        }));
        titles.max_height(1);
        table.set_header(titles);
        for (i, column) in table.column_iter_mut().enumerate() {
            let right = if i + 1 == header.len() { 0 } else { GAP };
            column.set_padding((0, right));
        }
        Table {
            table,
            details: Vec::new(),
            indent: 0,
            width: style::width(),
        }
    }

    /// Right-aligns these columns (numbers, costs, durations).
    pub fn right(mut self, columns: &[usize]) -> Table {
        for &i in columns {
            if let Some(c) = self.table.column_mut(i) {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
        self
    }

    /// Lets only these columns (names, reasons, paths) give up width when the table is too
    /// wide; the others (states, counts, costs) keep their content's width, never cut.
    pub fn shrink(mut self, columns: &[usize]) -> Table {
        for (i, c) in self.table.column_iter_mut().enumerate() {
            if !columns.contains(&i) {
                c.set_constraint(ColumnConstraint::ContentWidth);
            }
        }
        self
    }

    /// Indents every line by `n` spaces (the table stays within the width).
    pub fn indent(mut self, n: usize) -> Table {
        self.indent = n;
        self
    }

    /// Adds a row of cells (see [`cell`] and [`toned`]).
    pub fn row(&mut self, cells: Vec<Cell>) {
        let mut row = Row::from(cells);
        row.max_height(1);
        self.table.add_row(row);
        self.details.push(Vec::new());
    }

    /// Adds a line under the last row.
    pub fn detail(&mut self, line: impl Into<String>) {
        if let Some(d) = self.details.last_mut() {
            d.push(line.into());
        }
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.details.is_empty()
    }

    /// The table's lines, each ending in a newline.
    pub fn render(mut self) -> String {
        let inner = self.width.saturating_sub(self.indent).max(20);
        self.table
            .set_width(u16::try_from(inner).unwrap_or(u16::MAX));
        let pad = " ".repeat(self.indent);
        let mut out = String::new();
        // One line of header, then one line a row: `max_height(1)` holds each row to one.
        let mut lines = self.table.lines();
        if let Some(header) = lines.next() {
            out.push_str(&format!("{pad}{}\n", header.trim_end()));
        }
        for (line, details) in lines.zip(&self.details) {
            out.push_str(&format!("{pad}{}\n", line.trim_end()));
            for d in details {
                let text = style::fit(&format!("{DETAIL_INDENT}{d}"), inner);
                out.push_str(&format!("{pad}{text}\n"));
            }
        }
        out
    }
}

/// A plain cell.
pub fn cell(text: impl ToString) -> Cell {
    Cell::new(text)
}

/// A cell in `tone`'s colour (when output is coloured).
pub fn toned(text: impl ToString, tone: Tone) -> Cell {
    match tone.cell_color() {
        Some(c) => Cell::new(text).fg(c),
        None => Cell::new(text),
    }
}

/// A count, in `tone`'s colour unless it is 0 (no failures is nothing to look at).
pub fn tally(n: usize, tone: Tone) -> Cell {
    toned(n, if n > 0 { tone } else { Tone::Plain })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(width: usize) -> Table {
        let mut t = Table::new(&["LOOP", "STATE", "COST"]).right(&[2]);
        t.width = width;
        t
    }

    #[test]
    fn a_long_name_is_cut_and_the_columns_after_it_stay_in_place() {
        let mut t = table(40);
        let long = "a-loop-whose-name-goes-on-and-on-and-on-and-on-for-ever";
        t.row(vec![cell(long), cell("running"), cell("$0.1000")]);
        t.row(vec![cell("short"), cell("paused"), cell("$12.0000")]);
        t.detail("why it is paused, a sentence much longer than the forty columns of the table");
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        for l in &lines {
            assert!(l.chars().count() <= 40, "{l:?} is wider than 40\n{text}");
        }
        assert!(lines[1].contains('…'), "{text}");
        assert!(lines[2].starts_with("short"), "{text}");
        let col = |l: &str, word: &str| l[..l.find(word).unwrap()].chars().count();
        assert_eq!(col(lines[0], "STATE"), col(lines[1], "running"), "{text}");
        assert_eq!(col(lines[1], "running"), col(lines[2], "paused"), "{text}");
        assert!(lines[3].starts_with(DETAIL_INDENT), "{text}");
        assert!(lines[3].ends_with('…'), "{text}");
    }
}
