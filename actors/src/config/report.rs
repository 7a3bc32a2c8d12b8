//! Every problem found in a fleet, each with its file, JSON pointer, line and what was expected.

use std::fmt;
use std::path::PathBuf;

/// One problem in the user's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in (empty for a request body that came through the API).
    pub file: PathBuf,
    /// JSON pointer (RFC 6901) inside that file, e.g. `/loops/1/max_attempts`; empty for the
    /// whole file. Included loop files have their own pointers (`/max_attempts`).
    pub pointer: String,
    /// 1-based line of the key or value, when it is known.
    pub line: Option<usize>,
    /// What was expected, or what is wrong, in words a user can act on.
    pub expected: String,
}

impl Problem {
    /// A problem without a line.
    pub fn new(
        file: impl Into<PathBuf>,
        pointer: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        Problem {
            file: file.into(),
            pointer: pointer.into(),
            line: None,
            expected: expected.into(),
        }
    }
}

impl fmt::Display for Problem {
    /// `loopd.toml:12: /loops/1/max_attempts: expected an integer >= 1, found "three"`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut prefix = false;
        if !self.file.as_os_str().is_empty() {
            write!(f, "{}", self.file.display())?;
            prefix = true;
        }
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            prefix = true;
        }
        if prefix {
            f.write_str(": ")?;
        }
        if !self.pointer.is_empty() {
            write!(f, "{}: ", self.pointer)?;
        }
        f.write_str(&self.expected)
    }
}

/// Every problem found, in the order of the files and lines they are on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The problems; empty means valid.
    pub problems: Vec<Problem>,
}

impl Report {
    /// True when there is no problem.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// Adds one problem.
    pub fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// Adds every problem of `other`.
    pub fn extend(&mut self, other: Report) {
        self.problems.extend(other.problems);
    }

    /// Orders problems by file (in order of first appearance), then line, then pointer, and drops
    /// exact duplicates.
    pub fn sort(&mut self) {
        self.sort_with_files(&[]);
    }

    /// Like [`Report::sort`], with the files of `order` first, in that order.
    pub fn sort_with_files(&mut self, order: &[PathBuf]) {
        let mut files: Vec<PathBuf> = order.to_vec();
        for p in &self.problems {
            if !files.contains(&p.file) {
                files.push(p.file.clone());
            }
        }
        let rank = |p: &Problem| files.iter().position(|f| *f == p.file).unwrap_or(0);
        self.problems.sort_by(|a, b| {
            (rank(a), a.line.unwrap_or(usize::MAX), &a.pointer).cmp(&(
                rank(b),
                b.line.unwrap_or(usize::MAX),
                &b.pointer,
            ))
        });
        self.problems.dedup();
    }

    /// `Ok(value)` when there is no problem, else the report.
    pub fn into_result<T>(self, value: T) -> Result<T, Report> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

// Display already says everything; there is no underlying cause to chain.
impl std::error::Error for Problem {}
impl std::error::Error for Report {}

impl From<Problem> for Report {
    fn from(problem: Problem) -> Self {
        Report {
            problems: vec![problem],
        }
    }
}

impl fmt::Display for Report {
    /// One problem a line, then `N problem(s)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        match self.problems.len() {
            1 => write!(f, "1 problem"),
            n => write!(f, "{n} problems"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_one_problem_a_line_and_a_count() {
        let mut report = Report::default();
        report.push(Problem {
            file: "loopd.toml".into(),
            pointer: "/loops/1/max_attempts".into(),
            line: Some(12),
            expected: "expected an integer >= 1, found \"three\"".into(),
        });
        report.push(Problem::new("", "/name", "missing required key `name`"));
        assert_eq!(
            report.to_string(),
            "loopd.toml:12: /loops/1/max_attempts: expected an integer >= 1, found \"three\"\n\
             /name: missing required key `name`\n\
             2 problems"
        );
    }

    #[test]
    fn sorts_by_file_then_line() {
        let p = |file: &str, line, ptr: &str| Problem {
            file: file.into(),
            pointer: ptr.into(),
            line,
            expected: "x".into(),
        };
        let mut report = Report {
            problems: vec![
                p("b", Some(3), "/a"),
                p("a", None, "/z"),
                p("b", Some(1), "/b"),
                p("a", Some(9), "/y"),
            ],
        };
        report.sort();
        let order: Vec<_> = report.problems.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(order, ["/b", "/a", "/y", "/z"]);
    }
}
