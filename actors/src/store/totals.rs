//! How many attempts each loop made and what they cost, kept beside the store so that the
//! budget checks made before every attempt are a lookup, not a read of the loop's whole history
//! (at 100,000 attempts that read decoded every one of them, each time).
//!
//! A loop's totals are read from its attempts the first time they are asked for, then kept up
//! to date by every [`super::Store::write`]: the store is the only writer of its attempts (sled
//! holds a lock on its folder), and each write looks up the attempts it replaces.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::model::AttemptRecord;

/// A loop's attempts so far, every outcome included, and their cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    /// Attempts recorded (running ones too).
    pub attempts: u32,
    /// Their cost in US dollars.
    pub cost_usd: f64,
}

impl Spent {
    fn add(&mut self, other: Spent) {
        self.attempts += other.attempts;
        self.cost_usd += other.cost_usd;
    }
}

/// The one field of a stored attempt a write needs to keep the totals: decoding it skips the
/// rest of the record (its output tails, its prompt's history) without building it.
#[derive(Debug, serde::Deserialize)]
pub(super) struct Cost {
    #[serde(default)]
    pub(super) cost_usd: f64,
}

/// The totals of the loops asked about so far.
#[derive(Debug, Default)]
pub(super) struct Totals(Mutex<HashMap<String, Spent>>);

impl Totals {
    /// Held for the whole of a write, and while a loop's totals are first read, so that no
    /// write is counted twice or missed.
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, Spent>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the attempts of one write add to the totals in `known`: for each attempt of a loop whose
/// totals are kept, one more attempt when it is new, and the change in its cost.
/// `stored` answers with the cost of the attempt a write replaces (`None`: a new attempt).
/// Loops forgotten by the write lose their totals (they are read again when asked for).
pub(super) fn changes<E>(
    known: &HashMap<String, Spent>,
    attempts: &[AttemptRecord],
    forgotten: &[String],
    mut stored: impl FnMut(&AttemptRecord) -> Result<Option<f64>, E>,
) -> Result<Vec<(String, Spent)>, E> {
    // The same attempt twice in one write: the second replaces the first, not the stored one.
    let mut in_batch: HashMap<(&str, &str, u32), f64> = HashMap::new();
    let mut out: HashMap<String, Spent> = HashMap::new();
    for a in attempts {
        if !known.contains_key(&a.loop_name) || forgotten.contains(&a.loop_name) {
            continue;
        }
        let id = (a.loop_name.as_str(), a.test_id.as_str(), a.number);
        let before = match in_batch.get(&id) {
            Some(cost) => Some(*cost),
            None => stored(a)?,
        };
        in_batch.insert(id, a.cost_usd);
        out.entry(a.loop_name.clone()).or_default().add(Spent {
            attempts: u32::from(before.is_none()),
            cost_usd: a.cost_usd - before.unwrap_or(0.0),
        });
    }
    Ok(out.into_iter().collect())
}

/// Applies what [`changes`] found, once the write is in the store.
pub(super) fn apply(
    known: &mut HashMap<String, Spent>,
    changes: Vec<(String, Spent)>,
    forgotten: &[String],
) {
    for name in forgotten {
        known.remove(name);
    }
    for (name, change) in changes {
        if let Some(t) = known.get_mut(&name) {
            t.add(change);
        }
    }
}

/// The totals of a loop's attempts.
pub(super) fn sum<'a>(attempts: impl IntoIterator<Item = &'a AttemptRecord>) -> Spent {
    let mut total = Spent::default();
    for a in attempts {
        total.add(Spent {
            attempts: 1,
            cost_usd: a.cost_usd,
        });
    }
    total
}
