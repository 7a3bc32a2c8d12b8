//! The scheduled morning report: with the fleet's `report_every`, the daemon makes the report
//! of the period since the last one and journals it as a `report` event, which the notifier
//! delivers like any other (signed, retried, logged, resumed after a restart).
//!
//! Where the schedule stands is one time in the store, the *mark*: the end of the period the
//! last report covered (the start of the first period, before any report). A report's event
//! and the new mark are written in one transaction, so a restart neither skips a period nor
//! reports one twice: a loopd that was down when a report fell due sends it on its next start,
//! covering everything since the mark.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use crate::model::{Event, EventKind};
use crate::runtime::Ctx;
use crate::store::Batch;
use crate::view;

/// The longest sleep between two looks at the wall clock: a suspended machine, or a clock set
/// forward, is noticed within it.
const LOOK: Duration = Duration::from_secs(30);

/// What the schedule says to do at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No mark yet: the first period starts now.
    Begin,
    /// The next report is not due: look again after this long.
    Wait(Duration),
    /// Make the report of the period from the mark to now.
    Report {
        /// The mark.
        since: DateTime<Utc>,
    },
}

/// The step for a schedule of `every` with `mark`, at `now` (a pure function: the task below
/// carries it out).
pub fn step(mark: Option<DateTime<Utc>>, every: Duration, now: DateTime<Utc>) -> Step {
    let Some(mark) = mark else {
        return Step::Begin;
    };
    let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
    let due = mark
        .checked_add_signed(every)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    match (due - now).to_std() {
        Ok(left) if !left.is_zero() => Step::Wait(left.min(LOOK)),
        _ => Step::Report { since: mark },
    }
}

/// The running schedule; dropping it stops it.
pub struct Reporter {
    task: JoinHandle<()>,
}

impl Reporter {
    /// Starts the schedule of `every` over `ctx`'s store; `None` without one. Start the
    /// notifier first, so that it hears the first report.
    pub fn start(ctx: &Ctx, every: Option<Duration>) -> Option<Reporter> {
        let every = every?;
        Some(Reporter {
            task: tokio::spawn(run(ctx.clone(), every)),
        })
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(ctx: Ctx, every: Duration) {
    loop {
        let mark = match ctx.read(|s| s.report_mark()).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "reporter: cannot read where the schedule stands");
                tokio::time::sleep(LOOK).await;
                continue;
            }
        };
        let now = Utc::now();
        let batch = match step(mark, every, now) {
            Step::Wait(d) => {
                tokio::time::sleep(d).await;
                continue;
            }
            Step::Begin => Batch {
                report_mark: Some(now),
                ..Batch::default()
            },
            Step::Report { since } => match report_event(&ctx, since, now).await {
                Some(event) => Batch {
                    events: vec![event],
                    report_mark: Some(now),
                    ..Batch::default()
                },
                None => {
                    tokio::time::sleep(LOOK).await;
                    continue;
                }
            },
        };
        if let Err(e) = ctx.record(batch).await {
            tracing::error!(error = %e, "reporter: cannot record the report");
            tokio::time::sleep(LOOK).await;
        }
    }
}

/// The journal's event of the report from `since` to `until`: the report is its `data`.
async fn report_event(ctx: &Ctx, since: DateTime<Utc>, until: DateTime<Utc>) -> Option<Event> {
    let doc = match ctx.read(move |s| view::report(s, since, until)).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "reporter: cannot make the report");
            return None;
        }
    };
    let t = &doc.totals;
    let message = format!(
        "the report from {} to {}: {} passed, {} failed, {} waiting for a person, ${:.2}",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        t.passed,
        t.failed,
        t.needs_human,
        t.cost_usd
    );
    let data = match serde_json::to_value(&doc) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "reporter: cannot encode the report");
            return None;
        }
    };
    let mut event = Event::new(EventKind::Report, "", message).with_data(data);
    event.at = until;
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_schedule_begins_waits_and_reports_from_its_mark() {
        let day = Duration::from_secs(24 * 3600);
        let mark = at("2026-01-31T06:00:00Z");
        let cases = [
            (None, "2026-01-31T07:00:00Z", Step::Begin),
            (
                Some(mark),
                "2026-02-01T05:59:50Z",
                Step::Wait(Duration::from_secs(10)),
            ),
            (Some(mark), "2026-01-31T07:00:00Z", Step::Wait(LOOK)),
            (
                Some(mark),
                "2026-02-01T06:00:00Z",
                Step::Report { since: mark },
            ),
            // Down for days: one report, of everything since the mark.
            (
                Some(mark),
                "2026-02-04T09:00:00Z",
                Step::Report { since: mark },
            ),
            // A clock set back waits for the due time as the mark says.
            (Some(mark), "2026-01-30T06:00:00Z", Step::Wait(LOOK)),
        ];
        for (mark, now, want) in cases {
            assert_eq!(step(mark, day, at(now)), want, "{mark:?} at {now}");
        }
    }

    #[tokio::test]
    async fn a_report_is_journaled_with_its_mark_and_not_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let ctx = Ctx::new(store, dir.path());
        let mark = at("2026-01-31T06:00:00Z");
        ctx.record(Batch {
            report_mark: Some(mark),
            ..Batch::default()
        })
        .await
        .unwrap();
        let mut events = ctx.subscribe();
        let reporter = Reporter::start(&ctx, Some(Duration::from_secs(1))).unwrap();
        let e = events.recv().await.unwrap();
        drop(reporter);
        assert_eq!(e.kind, EventKind::Report);
        assert_eq!(e.data["since"], "2026-01-31T06:00:00Z", "{e:?}");
        assert_eq!(e.data["generated_at"], serde_json::json!(e.at));
        let stored = ctx.read(|s| s.report_mark()).await.unwrap();
        assert_eq!(
            stored,
            Some(e.at),
            "the next period starts where this one ended"
        );
        assert_eq!(
            step(stored, Duration::from_secs(3600), e.at),
            Step::Wait(LOOK)
        );
    }
}
