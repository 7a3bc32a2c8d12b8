//! Budget checks: whether a loop (its own `budget_usd` and `max_attempts_total`) or the fleet
//! (the `[fleet]` ones) has spent what it may. Pure: the caller reads what was spent.

/// What was spent: counted and uncounted attempts alike, and their cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    /// Attempts made.
    pub attempts: u32,
    /// Their cost in US dollars.
    pub cost_usd: f64,
}

impl Spent {
    /// The sum of two.
    pub fn plus(self, other: Spent) -> Spent {
        Spent {
            attempts: self.attempts + other.attempts,
            cost_usd: self.cost_usd + other.cost_usd,
        }
    }
}

/// The limits of a loop or of the fleet (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// `max_attempts_total`.
    pub attempts: Option<u32>,
    /// `budget_usd`.
    pub cost_usd: Option<f64>,
}

impl Limits {
    /// True when there is no limit to check (and nothing to read).
    pub fn is_none(&self) -> bool {
        self.attempts.is_none() && self.cost_usd.is_none()
    }
}

/// Why `what` (`loop \`auth\``, `the fleet`) may start no more attempts, or `None`: a limit is
/// reached once what was spent equals it; attempts are checked before cost.
pub fn over(what: &str, spent: Spent, limits: Limits) -> Option<String> {
    if let Some(m) = limits.attempts.filter(|m| spent.attempts >= *m) {
        return Some(format!(
            "{what} made {} (max_attempts_total = {m}); paused",
            crate::words::count(spent.attempts, "attempt", "attempts")
        ));
    }
    if let Some(m) = limits.cost_usd.filter(|m| spent.cost_usd >= *m) {
        return Some(format!(
            "{what} spent ${:.4} (budget_usd = {m}); paused",
            spent.cost_usd
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_of_the_budget_table() {
        let spent = |attempts, cost_usd| Spent { attempts, cost_usd };
        let limits = |attempts, cost_usd| Limits { attempts, cost_usd };
        // (spent, limits, the reason must say this; "" for none)
        let rows = [
            (spent(100, 100.0), limits(None, None), ""),
            (spent(2, 0.5), limits(Some(3), Some(1.0)), ""),
            (
                spent(3, 0.5),
                limits(Some(3), None),
                "made 3 attempts (max_attempts_total = 3)",
            ),
            (spent(4, 0.5), limits(Some(3), Some(1.0)), "made 4 attempts"),
            (
                spent(1, 1.0),
                limits(None, Some(1.0)),
                "spent $1.0000 (budget_usd = 1)",
            ),
            (spent(1, 0.9999), limits(None, Some(1.0)), ""),
            (spent(0, 0.0), limits(Some(0), None), "made 0 attempts"),
            // Both reached: the attempts are named.
            (
                spent(5, 9.0),
                limits(Some(5), Some(1.0)),
                "max_attempts_total = 5",
            ),
            (spent(1, 0.0), limits(Some(1), None), "made 1 attempt "),
        ];
        for (s, l, word) in rows {
            let why = over("loop `a`", s, l);
            match word {
                "" => assert_eq!(why, None, "{s:?} {l:?}"),
                w => {
                    let why = why.unwrap_or_else(|| panic!("{s:?} {l:?}: not over"));
                    assert!(why.contains(w) && why.starts_with("loop `a` "), "{why}");
                    assert!(why.ends_with("; paused"), "{why}");
                }
            }
        }
        assert!(limits(None, None).is_none() && !limits(Some(1), None).is_none());
        assert_eq!(spent(1, 0.5).plus(spent(2, 0.25)), spent(3, 0.75));
    }
}
