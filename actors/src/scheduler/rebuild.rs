//! What a restarted scheduler knows of each provider, read back from the ledger: the API errors
//! in a row since the last answer (and the backoff they call for), and the credit pause of a
//! provider whose loops are paused `out_of_credits`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::{backoff, ProviderHealth, SchedulerConfig};
use crate::model::{LoopState, Outcome};
use crate::store::{Result, Store};

/// The health of every provider of `loops` (loop name, its provider), as the ledger tells it.
pub(super) fn provider_health(
    store: &Store,
    loops: &HashMap<String, String>,
    config: &SchedulerConfig,
) -> Result<HashMap<String, ProviderHealth>> {
    let mut by_provider: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, provider) in loops {
        by_provider.entry(provider).or_default().push(name);
    }
    let mut out = HashMap::new();
    for (provider, names) in by_provider {
        let mut finished = Vec::new();
        let mut paused_since: Option<DateTime<Utc>> = None;
        for name in &names {
            finished.extend(
                store
                    .list_attempts(name, None)?
                    .into_iter()
                    .filter_map(|a| Some((a.finished_at?, a.outcome?, a.reason))),
            );
            if let Some(r) = store.get_loop(name)? {
                if r.state == LoopState::Paused
                    && r.reason == Some(crate::model::LoopReason::OutOfCredits)
                {
                    paused_since = paused_since.max(Some(r.updated_at));
                }
            }
        }
        finished.sort_by_key(|(at, _, _)| *at);
        let health = replay(&finished, paused_since, config);
        if health != ProviderHealth::default() {
            out.insert(provider.to_string(), health);
        }
    }
    Ok(out)
}

/// The reports the attempts made, replayed in order: an API error adds to the run, an answer
/// of the provider ends it, an interrupted attempt said nothing.
fn replay(
    finished: &[(DateTime<Utc>, Outcome, Option<String>)],
    paused_since: Option<DateTime<Utc>>,
    config: &SchedulerConfig,
) -> ProviderHealth {
    let mut health = ProviderHealth::default();
    let mut last_error = None;
    let mut credits_message = None;
    for (at, outcome, reason) in finished {
        match outcome {
            Outcome::ApiError => {
                health.errors_in_a_row += 1;
                last_error = Some(*at);
            }
            Outcome::OutOfCredits => credits_message = reason.clone(),
            Outcome::Interrupted => {}
            _ => health.errors_in_a_row = 0,
        }
    }
    if let (Some(at), n) = (last_error, health.errors_in_a_row) {
        if n > 0 {
            let wait = backoff(n, config.backoff_min, config.backoff_max);
            health.backoff_until = Some(instant_of(at) + wait);
        }
    }
    health.paused = paused_since.map(|since| {
        let message = credits_message.unwrap_or_else(|| "out of credits".to_string());
        (instant_of(since), message)
    });
    health
}

/// The monotonic instant of a moment in the past (now, for a moment in the future).
fn instant_of(at: DateTime<Utc>) -> Instant {
    let ago = (Utc::now() - at).to_std().unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs_ago: i64) -> DateTime<Utc> {
        Utc::now() - chrono::Duration::seconds(secs_ago)
    }

    #[test]
    fn api_errors_since_the_last_answer_back_the_provider_off() {
        let config = SchedulerConfig {
            backoff_min: Duration::from_secs(60),
            backoff_max: Duration::from_secs(600),
            ..SchedulerConfig::default()
        };
        let ledger = [
            (at(30), Outcome::ApiError, None),
            (at(20), Outcome::Failed, None),
            (at(10), Outcome::ApiError, None),
            (at(5), Outcome::Interrupted, None),
            (at(2), Outcome::ApiError, None),
        ];
        let h = replay(&ledger, None, &config);
        assert_eq!(h.errors_in_a_row, 2);
        // Two errors in a row: twice the first backoff, from the last one's end.
        let left = h.backoff_until.unwrap() - Instant::now();
        assert!(left > Duration::from_secs(100), "{left:?}");
        assert!(h.paused.is_none());
    }

    #[test]
    fn a_provider_whose_loops_are_paused_for_credits_stays_paused() {
        let ledger = [(at(3), Outcome::OutOfCredits, Some("balance too low".into()))];
        let h = replay(&ledger, Some(at(3)), &SchedulerConfig::default());
        let (_, message) = h.paused.unwrap();
        assert_eq!(message, "balance too low");
        // Resumed by a person (no loop paused any more): no pause.
        let h = replay(&ledger, None, &SchedulerConfig::default());
        assert_eq!(h, ProviderHealth::default());
    }
}
