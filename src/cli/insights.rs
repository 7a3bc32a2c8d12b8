//! `loopd insights [CONFIG] [LOOP] [--json]`: the most frequent failure patterns and the
//! lessons learned, read from the store (while no daemon holds it).

use std::path::{Path, PathBuf};

use loopd_actors::healer::{self, FailurePattern, Lesson};
use loopd_actors::store::Store;
use serde::Serialize;

use super::status::open_store;
use super::Exit;

/// Arguments of `loopd insights`.
#[derive(Debug, clap::Args)]
pub struct InsightsArgs {
    /// `[CONFIG] [LOOP]`: a single argument is the fleet file when it ends in `.toml` or names a
    /// file, else the loop.
    #[arg(num_args = 0..=2, value_name = "CONFIG|LOOP")]
    pub args: Vec<String>,
    /// Show at most this many failure patterns.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Print `{"patterns": [...], "lessons": [...]}` as JSON.
    #[arg(long)]
    pub json: bool,
}

impl InsightsArgs {
    /// The fleet file and the loop named on the command line.
    pub fn split(&self) -> (Option<PathBuf>, Option<String>) {
        match self.args.as_slice() {
            [config, lp] => (Some(PathBuf::from(config)), Some(lp.clone())),
            [one] if one.ends_with(".toml") || Path::new(one).is_file() => {
                (Some(PathBuf::from(one)), None)
            }
            [one] => (None, Some(one.clone())),
            _ => (None, None),
        }
    }
}

/// What `insights` reports.
#[derive(Debug, Serialize)]
pub struct InsightsDoc {
    /// Failure patterns, most frequent first.
    pub patterns: Vec<FailurePattern>,
    /// Lessons learned (in the loop, or for its failure patterns), newest first.
    pub lessons: Vec<Lesson>,
}

/// `loopd insights`.
pub fn insights(file: &Path, loop_name: Option<&str>, args: &InsightsArgs) -> anyhow::Result<Exit> {
    let store = match open_store(file) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    if let Some(l) = loop_name {
        if store.get_loop(l)?.is_none() {
            eprintln!("loopd: no loop named `{l}` in the store");
            return Ok(Exit::Invalid);
        }
    }
    let mut doc = collect(&store, loop_name)?;
    doc.patterns.truncate(args.limit);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(Exit::Ok);
    }
    print!("{}", render(&doc));
    Ok(Exit::Ok)
}

/// Patterns of every loop (or one) and the lessons that concern them.
fn collect(store: &Store, loop_name: Option<&str>) -> anyhow::Result<InsightsDoc> {
    let loops: Vec<String> = match loop_name {
        Some(l) => vec![l.to_string()],
        None => store.list_loops()?.into_iter().map(|l| l.name).collect(),
    };
    let mut attempts = Vec::new();
    for l in &loops {
        attempts.extend(store.list_attempts(l, None)?);
    }
    let patterns = healer::failure_patterns(&attempts);
    let mut lessons: Vec<Lesson> = store
        .all_lessons()?
        .into_iter()
        .filter(|l| {
            loop_name.is_none_or(|name| {
                l.loop_name == name || patterns.iter().any(|p| p.fingerprint == l.fingerprint)
            })
        })
        .collect();
    lessons.sort_by_key(|l| std::cmp::Reverse(l.learned_at));
    Ok(InsightsDoc { patterns, lessons })
}

fn render(doc: &InsightsDoc) -> String {
    let mut out = String::new();
    if doc.patterns.is_empty() {
        out.push_str("No failures recorded.\n");
    } else {
        out.push_str("Most frequent failures:\n");
        for p in &doc.patterns {
            out.push_str(&format!(
                "  {:>3}x  {}  {}\n        in {}\n",
                p.count,
                &p.fingerprint[..p.fingerprint.len().min(8)],
                if p.example.is_empty() {
                    "(no output)"
                } else {
                    &p.example
                },
                p.tests.join(", ")
            ));
        }
    }
    if doc.lessons.is_empty() {
        out.push_str("\nNo lessons learned yet.\n");
    } else {
        out.push_str("\nLessons learned:\n");
        for l in &doc.lessons {
            out.push_str(&format!(
                "  {}:{} attempt {} fixed `{}` ({})\n",
                l.loop_name,
                l.test_id,
                l.attempt,
                l.error_line,
                &l.fingerprint[..l.fingerprint.len().min(8)],
            ));
            if let Some(s) = &l.summary {
                out.push_str(&format!("        by: {s}\n"));
            }
            for line in l.what_changed.lines().filter(|s| !s.trim().is_empty()) {
                out.push_str(&format!("        {}\n", line.trim()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use loopd_actors::model::{AttemptRecord, LoopRecord, Outcome};
    use loopd_actors::store::Batch;

    fn failed(lp: &str, test: &str, n: u32, tail: &str) -> AttemptRecord {
        let mut a = AttemptRecord::started(lp, test, n, "t".into());
        a.outcome = Some(Outcome::Failed);
        a.counted = true;
        a.finished_at = Some(Utc::now());
        a.exit_code = Some(0);
        a.verify_exit = Some(1);
        a.verify_tail = tail.into();
        a.fingerprint = loopd_actors::attempt::fingerprint(tail);
        a
    }

    #[test]
    fn one_argument_is_the_config_only_when_it_looks_like_one() {
        let a = |v: &[&str]| InsightsArgs {
            args: v.iter().map(|s| s.to_string()).collect(),
            limit: 10,
            json: false,
        };
        assert_eq!(a(&["auth"]).split(), (None, Some("auth".into())));
        assert_eq!(a(&["x.toml"]).split(), (Some("x.toml".into()), None));
        assert_eq!(
            a(&["f", "auth"]).split(),
            (Some("f".into()), Some("auth".into()))
        );
        assert_eq!(a(&[]).split(), (None, None));
    }

    #[test]
    fn patterns_and_lessons_of_a_loop_are_collected_and_printed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = [
            failed("auth", "T-1", 1, "error: no table users (12ms)"),
            failed("auth", "T-1", 2, "error: no table users (40ms)"),
            failed("billing", "B-1", 1, "error: no table users (3ms)"),
            failed("billing", "B-2", 1, "error: bad sum"),
        ];
        store
            .apply(Batch {
                loops: vec![LoopRecord::new("auth"), LoopRecord::new("billing")],
                attempts: a.to_vec(),
                ..Batch::default()
            })
            .unwrap();
        let mut pass = failed("auth", "T-1", 3, "ok");
        pass.outcome = Some(Outcome::Passed);
        pass.summary = Some("Created the users table".into());
        let lesson = healer::lesson_from_pass(&a[..2], &pass, " db.sql | 3 +++").unwrap();
        store.put_lesson(&lesson).unwrap();

        let all = collect(&store, None).unwrap();
        assert_eq!(all.patterns.len(), 2);
        assert_eq!(all.patterns[0].count, 3);
        assert_eq!(all.patterns[0].tests, vec!["auth:T-1", "billing:B-1"]);

        let billing = collect(&store, Some("billing")).unwrap();
        assert_eq!(billing.patterns[0].count, 1, "only billing's attempts");
        assert_eq!(
            billing.lessons.len(),
            1,
            "auth's lesson matches billing's failure"
        );
        let text = render(&billing);
        assert!(text.contains("error: no table users (#ms)"), "{text}");
        assert!(
            text.contains("auth:T-1 attempt 3 fixed `error: no table users (#ms)`"),
            "{text}"
        );
        assert!(text.contains("by: Created the users table"), "{text}");
        assert!(text.contains("db.sql | 3 +++"), "{text}");
    }
}
