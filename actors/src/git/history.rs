//! Reading loopd's pass commits back from a workdir's history: what `loopd recover` rebuilds
//! the ledger from, and how a store that forgot a loop is told from a loop that never ran.

use chrono::{DateTime, Utc};

use super::{GitError, Workdir};

/// One commit on HEAD's history that carries loopd's pass trailers (`Loopd-Test`,
/// `Loopd-Attempt`, `Loopd-Cost`, as [`Workdir::commit_pass`] writes them).
#[derive(Debug, Clone, PartialEq)]
pub struct PassCommit {
    /// The commit.
    pub commit: String,
    /// When it was made (committer date).
    pub at: DateTime<Utc>,
    /// `Loopd-Test`.
    pub test_id: String,
    /// `Loopd-Attempt`.
    pub attempt: u32,
    /// `Loopd-Cost`, in US dollars.
    pub cost_usd: f64,
}

/// Separates a commit's fields in the log format (a byte no commit message holds).
const FIELD: char = '\u{1f}';
/// Ends a commit in the log format.
const RECORD: char = '\u{1e}';

impl Workdir {
    /// Whether HEAD's history holds a commit with a `Loopd-Test` trailer (false in a
    /// repository without commits).
    pub async fn has_pass_commits(&self) -> Result<bool, GitError> {
        if self.head().await?.is_none() {
            return Ok(false);
        }
        let out = self
            .git()
            .await?
            .args([
                "log",
                "-1",
                "--format=%H",
                "-E",
                "--grep=^Loopd-Test: ",
                "HEAD",
            ])
            .run()
            .await?;
        Ok(!out.trim().is_empty())
    }

    /// loopd's pass commits on HEAD's history, newest first. Commits that were rolled back
    /// (no longer reachable from HEAD) are not among them.
    pub async fn pass_commits(&self) -> Result<Vec<PassCommit>, GitError> {
        if self.head().await?.is_none() {
            return Ok(Vec::new());
        }
        let out = self
            .git()
            .await?
            .args([
                "log",
                "-E",
                "--grep=^Loopd-Test: ",
                "--format=%H%x1f%ct%x1f%B%x1e",
                "HEAD",
            ])
            .run()
            .await?;
        Ok(out.split(RECORD).filter_map(parse_commit).collect())
    }

    /// The highest attempt number kept under `refs/loopd/attempts/<test>/` for each test, so
    /// that a rebuilt ledger numbers new attempts after them instead of overwriting their refs.
    pub async fn attempt_refs(&self) -> Result<Vec<(String, u32)>, GitError> {
        let out = self
            .git()
            .await?
            .args([
                "for-each-ref",
                "--format=%(refname)",
                "refs/loopd/attempts/",
            ])
            .run()
            .await?;
        let mut highest: Vec<(String, u32)> = Vec::new();
        for name in out.lines() {
            let Some(rest) = name.strip_prefix("refs/loopd/attempts/") else {
                continue;
            };
            let Some((test, n)) = rest.rsplit_once('/') else {
                continue;
            };
            let Ok(n) = n.parse::<u32>() else { continue };
            match highest.iter_mut().find(|(t, _)| t == test) {
                Some((_, h)) => *h = (*h).max(n),
                None => highest.push((test.to_string(), n)),
            }
        }
        Ok(highest)
    }
}

/// One `%H FIELD %ct FIELD %B` record; `None` unless its last paragraph holds all three of
/// loopd's trailers (a commit that only mentions `Loopd-Test:` in its text is not a pass).
fn parse_commit(record: &str) -> Option<PassCommit> {
    let mut fields = record.trim_start_matches('\n').splitn(3, FIELD);
    let commit = fields.next()?.trim().to_string();
    let at = DateTime::from_timestamp(fields.next()?.trim().parse().ok()?, 0)?;
    let body = fields.next()?.trim_end();
    let trailers = body.rsplit("\n\n").next()?;
    let value = |key: &str| {
        trailers
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
    };
    Some(PassCommit {
        test_id: value("Loopd-Test").filter(|t| !t.is_empty())?.to_string(),
        attempt: value("Loopd-Attempt")?.parse().ok()?,
        cost_usd: value("Loopd-Cost")?.parse().ok()?,
        commit,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_commit_is_read_from_its_trailers_and_prose_is_not() {
        let rec = "\nabc\u{1f}1700000000\u{1f}Users can log in\n\nLoopd-Test: login\nLoopd-Attempt: 2\nLoopd-Cost: 0.1235\n";
        let p = parse_commit(rec).unwrap();
        assert_eq!(
            (p.commit.as_str(), p.test_id.as_str(), p.attempt),
            ("abc", "login", 2)
        );
        assert!((p.cost_usd - 0.1235).abs() < 1e-9);
        let prose = "def\u{1f}1700000000\u{1f}fix\n\nLoopd-Test: login was wrong\n";
        assert_eq!(parse_commit(prose), None);
    }
}
