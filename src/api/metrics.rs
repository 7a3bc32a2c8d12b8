//! `GET /metrics`: the fleet in the Prometheus text format (version 0.0.4), computed from the
//! store at each scrape, so the figures survive restarts and never disagree with the API.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use loopd_actors::model::{Killed, LoopState, MergeState, Outcome, TestStatus};
use loopd_actors::monitor::AttemptHealth;
use loopd_actors::store::Store;

use super::error::ApiError;
use super::loops::{age_seconds, heartbeat};
use super::ApiState;

const LOOP_STATES: [LoopState; 6] = [
    LoopState::Idle,
    LoopState::Running,
    LoopState::Paused,
    LoopState::Stopped,
    LoopState::Finished,
    LoopState::Crashed,
];

const KILLS: [Killed; 2] = [Killed::Stalled, Killed::TimedOut];

const TEST_STATUSES: [TestStatus; 8] = [
    TestStatus::Pending,
    TestStatus::Running,
    TestStatus::Passed,
    TestStatus::Failed,
    TestStatus::Blocked,
    TestStatus::Skipped,
    TestStatus::NeedsHuman,
    TestStatus::Removed,
];

const MERGE_STATES: [MergeState; 4] = [
    MergeState::Waiting,
    MergeState::Merging,
    MergeState::Merged,
    MergeState::Conflict,
];

fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Escapes a label value (`\`, `"` and newlines).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`.
pub async fn serve(State(state): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    // The monitor hears every read of the agent's output, also one without a newline that
    // leaves the transcript untouched: its clock wins over the transcript's mtime.
    let health = state.ctx().monitor().health().await;
    let mut text = state.ctx().read(move |s| render(s, &health)).await?;
    tree(&mut text, &state.ctx().tree_health());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

/// The whole exposition; `health` is the monitor's view of the running attempts.
pub fn render(
    store: &Store,
    health: &[AttemptHealth],
) -> Result<String, loopd_actors::store::StoreError> {
    let loops = store.list_loops()?;
    let mut out = String::new();
    let mut by_state: BTreeMap<String, usize> = LOOP_STATES.iter().map(|s| (word(s), 0)).collect();
    for l in &loops {
        *by_state.entry(word(&l.state)).or_default() += 1;
    }
    head(&mut out, "loopd_loops", "gauge", "Loops by state.");
    for (s, n) in &by_state {
        let _ = writeln!(out, "loopd_loops{{state=\"{s}\"}} {n}");
    }

    let mut tests = String::new();
    let mut attempts = String::new();
    let mut killed = String::new();
    let mut cost = String::new();
    let mut tokens = String::new();
    let mut beats = String::new();
    let mut lanes = String::new();
    let mut queue = String::new();
    for l in &loops {
        let name = label(&l.name);
        let mut by_merge: BTreeMap<String, usize> =
            MERGE_STATES.iter().map(|s| (word(s), 0)).collect();
        for e in &l.merge_queue {
            *by_merge.entry(word(&e.state)).or_default() += 1;
        }
        for (s, n) in by_merge {
            let _ = writeln!(
                queue,
                "loopd_merge_queue{{loop=\"{name}\",state=\"{s}\"}} {n}"
            );
        }
        let mut busy = 0usize;
        let mut counts: BTreeMap<String, usize> =
            TEST_STATUSES.iter().map(|s| (word(s), 0)).collect();
        for t in store.list_tests(&l.name)? {
            *counts.entry(word(&t.status)).or_default() += 1;
        }
        for (s, n) in counts {
            let _ = writeln!(tests, "loopd_tests{{loop=\"{name}\",status=\"{s}\"}} {n}");
        }
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut kills: BTreeMap<&str, usize> = KILLS.iter().map(|k| (k.word(), 0)).collect();
        let (mut usd, mut input, mut output) = (0.0, 0u64, 0u64);
        for a in store.list_attempts(&l.name, None)? {
            if let Some(k) = a.killed {
                *kills.entry(k.word()).or_default() += 1;
            }
            usd += a.cost_usd;
            input += a.input_tokens;
            output += a.output_tokens;
            match a.outcome {
                Some(o) => *outcomes.entry(word::<Outcome>(&o)).or_default() += 1,
                None => {
                    busy += 1;
                    let age = health
                        .iter()
                        .find(|h| {
                            h.loop_name == l.name && h.test_id == a.test_id && h.attempt == a.number
                        })
                        .map_or_else(|| age_seconds(heartbeat(&a)), |h| h.since_heartbeat_s);
                    let _ = writeln!(
                        beats,
                        "loopd_heartbeat_age_seconds{{loop=\"{name}\",test=\"{}\"}} {age:.3}",
                        label(&a.test_id)
                    );
                }
            }
        }
        for (o, n) in outcomes {
            let _ = writeln!(
                attempts,
                "loopd_attempts_total{{loop=\"{name}\",outcome=\"{o}\"}} {n}"
            );
        }
        for (reason, n) in kills {
            let _ = writeln!(
                killed,
                "loopd_attempts_killed_total{{loop=\"{name}\",reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(lanes, "loopd_attempts_running{{loop=\"{name}\"}} {busy}");
        let _ = writeln!(cost, "loopd_cost_usd_total{{loop=\"{name}\"}} {usd}");
        let _ = writeln!(
            tokens,
            "loopd_tokens_total{{loop=\"{name}\",kind=\"input\"}} {input}\n\
             loopd_tokens_total{{loop=\"{name}\",kind=\"output\"}} {output}"
        );
    }
    head(
        &mut out,
        "loopd_tests",
        "gauge",
        "Tests by loop and status.",
    );
    out.push_str(&tests);
    head(
        &mut out,
        "loopd_attempts_total",
        "counter",
        "Finished attempts by loop and outcome.",
    );
    out.push_str(&attempts);
    head(
        &mut out,
        "loopd_attempts_killed_total",
        "counter",
        "Attempts whose agent the monitor ended, by loop and reason, whatever their outcome.",
    );
    out.push_str(&killed);
    head(
        &mut out,
        "loopd_cost_usd_total",
        "counter",
        "Cost reported by the agents, in US dollars.",
    );
    out.push_str(&cost);
    head(
        &mut out,
        "loopd_tokens_total",
        "counter",
        "Tokens reported by the agents.",
    );
    out.push_str(&tokens);
    head(
        &mut out,
        "loopd_heartbeat_age_seconds",
        "gauge",
        "Seconds since a running attempt's agent last printed a line.",
    );
    out.push_str(&beats);
    head(
        &mut out,
        "loopd_attempts_running",
        "gauge",
        "Attempts running now, by loop (one per busy lane).",
    );
    out.push_str(&lanes);
    head(
        &mut out,
        "loopd_merge_queue",
        "gauge",
        "Entries of a loop's merge queue by state (merged and conflict: the last few kept).",
    );
    out.push_str(&queue);

    Ok(out)
}

/// The supervision tree's members: up or not, and how often each was restarted.
fn tree(out: &mut String, health: &loopd_actors::tree::TreeHealth) {
    let members = health.members();
    head(
        out,
        "loopd_tree_member_up",
        "gauge",
        "1 while a member of the supervision tree (scheduler, monitor) runs, 0 while it restarts or has failed.",
    );
    for m in &members {
        let up = u8::from(m.state == loopd_actors::tree::MemberState::Running);
        let _ = writeln!(
            out,
            "loopd_tree_member_up{{member=\"{}\",state=\"{}\"}} {up}",
            m.name,
            word(&m.state)
        );
    }
    head(
        out,
        "loopd_tree_restarts_total",
        "counter",
        "Restarts of a member of the supervision tree since loopd started.",
    );
    for m in &members {
        let _ = writeln!(
            out,
            "loopd_tree_restarts_total{{member=\"{}\"}} {}",
            m.name, m.restarts
        );
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use loopd_actors::model::{AttemptRecord, LoopRecord};
    use loopd_actors::monitor::AttemptHealth;
    use loopd_actors::store::{Batch, Store};

    #[test]
    fn heartbeat_age_is_the_monitors_when_it_watches_the_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Its transcript never grew (a `\r` progress bar, say): by the file, an hour old.
        let mut a = AttemptRecord::started("a", "T-1", 1, dir.path().join("none.log"));
        a.started_at -= chrono::Duration::hours(1);
        store
            .apply(Batch {
                loops: vec![LoopRecord::new("a")],
                attempts: vec![a],
                ..Batch::default()
            })
            .unwrap();
        let heard = AttemptHealth {
            loop_name: "a".into(),
            test_id: "T-1".into(),
            attempt: 1,
            running_for_s: 3600.0,
            since_heartbeat_s: 0.25,
            lines: 0,
            stuck: false,
        };
        let line = |text: String| {
            text.lines()
                .find(|l| l.starts_with("loopd_heartbeat_age_seconds{"))
                .map(String::from)
        };
        assert_eq!(
            line(super::render(&store, &[heard]).unwrap()).as_deref(),
            Some("loopd_heartbeat_age_seconds{loop=\"a\",test=\"T-1\"} 0.250")
        );
        // Without the monitor's word, the transcript's age.
        let age = line(super::render(&store, &[]).unwrap()).unwrap();
        let secs: f64 = age.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(secs >= 3599.0, "{age}");
    }
}
