//! `loopd insights [CONFIG] [LOOP] [--json]`: the most frequent failure patterns and the
//! lessons learned, from the daemon or the store (see [`Source`]).

use std::path::PathBuf;

use loopd_actors::view::InsightsDoc;

use super::client::Failed;
use super::source::Source;
use super::table::{cell, Table};
use super::target::{self, Shape};
use super::Exit;

/// Arguments of `loopd insights`.
#[derive(Debug, clap::Args)]
pub struct InsightsArgs {
    /// `[CONFIG] [LOOP]`: the fleet file, then only this loop's failures (and the lessons that
    /// match them).
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,
    /// Show at most this many failure patterns.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Print `{"patterns": [...], "lessons": [...]}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `loopd insights`.
pub fn insights(flag: Option<&PathBuf>, args: &InsightsArgs) -> anyhow::Result<Exit> {
    let shape = Shape::new("insights", "[CONFIG] [LOOP]", 0, 1);
    let (fleet, names) = match target::resolve(&args.args, shape, flag) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let doc = match Source::open(&fleet, args.json)
        .map_err(Failed)
        .and_then(|s| s.insights(names.first().map(String::as_str), args.limit))
    {
        Ok(d) => d,
        Err(Failed(code)) => return Ok(code),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(Exit::Ok);
    }
    super::out(&render(&doc))?;
    Ok(Exit::Ok)
}

fn render(doc: &InsightsDoc) -> String {
    let mut out = String::new();
    if doc.patterns.is_empty() {
        out.push_str("No failures recorded.\n");
    } else {
        out.push_str("Most frequent failures:\n");
        let mut t = Table::new(&["COUNT", "PATTERN", "FAILURE"])
            .right(&[0])
            .shrink(&[2])
            .indent(2);
        for p in &doc.patterns {
            t.row(vec![
                cell(format!("{}x", p.count)),
                cell(&p.fingerprint[..p.fingerprint.len().min(8)]),
                cell(if p.example.is_empty() {
                    "(no output)"
                } else {
                    &p.example
                }),
            ]);
            t.detail(format!("in {}", p.tests.join(", ")));
        }
        out.push_str(&t.render());
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
    use loopd_actors::healer;
    use loopd_actors::model::{AttemptRecord, LoopRecord, Outcome};
    use loopd_actors::store::{Batch, Store};
    use loopd_actors::view;

    fn failed(lp: &str, test: &str, n: u32, tail: &str) -> AttemptRecord {
        let mut a = AttemptRecord::started(lp, test, n, "t".into());
        a.outcome = Some(Outcome::Failed);
        a.counted = true;
        a.finished_at = Some(Utc::now());
        a.exit_code = Some(0);
        a.verify_exit = Some(1);
        a.verify_tail = tail.into();
        a.fingerprint = loopd_actors::healer::fingerprint(tail);
        a
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

        let all = view::insights(&store, None, 10).unwrap();
        assert_eq!(all.patterns.len(), 2);
        assert_eq!(all.patterns[0].count, 3);
        assert_eq!(all.patterns[0].tests, vec!["auth:T-1", "billing:B-1"]);

        let billing = view::insights(&store, Some("billing"), 10).unwrap();
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
