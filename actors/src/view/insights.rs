//! `loopd insights` and `GET /api/insights`: the most frequent failure patterns and the lessons
//! learned, of the fleet or of one loop.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::healer::{self, FailurePattern, Lesson};
use crate::store::{Store, StoreError};

/// What `insights` reports.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct InsightsDoc {
    /// Failure patterns, most frequent first.
    pub patterns: Vec<FailurePattern>,
    /// Lessons learned (in the loop, or for its failure patterns), newest first.
    pub lessons: Vec<Lesson>,
}

/// Patterns of every loop (or of `loop_name`) and the lessons that concern them, at most `limit`
/// patterns.
pub fn insights(
    store: &Store,
    loop_name: Option<&str>,
    limit: usize,
) -> Result<InsightsDoc, StoreError> {
    let loops: Vec<String> = match loop_name {
        Some(l) => vec![l.to_string()],
        None => store.list_loops()?.into_iter().map(|l| l.name).collect(),
    };
    let mut attempts = Vec::new();
    for l in &loops {
        attempts.extend(store.list_attempts(l, None)?);
    }
    let mut patterns = healer::failure_patterns(&attempts);
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
    patterns.truncate(limit);
    Ok(InsightsDoc { patterns, lessons })
}
