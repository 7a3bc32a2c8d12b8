//! The fleet file's price table (`[pricing."<model>"]`) and the cost of an attempt from its
//! tokens.
//!
//! Prices are the user's, never loopd's: providers change them, and loopd ships no figure as
//! truth. What an attempt cost is decided in this order:
//! 1. the agent said (Claude Code's `total_cost_usd`, a command agent's result file or
//!    `cost_patterns`): that wins;
//! 2. the agent reported tokens and the loop's model has a `[pricing."<model>"]` entry: tokens
//!    times prices;
//! 3. otherwise the cost is unknown (recorded as such, not as a free attempt), with the reason.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One model's prices, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Dollars per million input tokens that were not read from the provider's cache.
    #[schemars(range(min = 0))]
    pub input_usd_per_mtok: f64,
    /// Dollars per million input tokens read from the provider's cache. Default: the
    /// `input_usd_per_mtok` price (a provider without a cache discount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cached_input_usd_per_mtok: Option<f64>,
    /// Dollars per million output tokens (reasoning tokens included, as providers bill them).
    #[schemars(range(min = 0))]
    pub output_usd_per_mtok: f64,
}

/// The price table: model name (as the loop's `model` names it) to its prices.
pub type Pricing = BTreeMap<String, Price>;

/// The tokens of one attempt, as the agent reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub input_tokens: u64,
    /// Of `input_tokens`, those read from the provider's cache.
    pub cached_input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
}

impl Price {
    /// What `usage` costs at these prices, in US dollars. Cached tokens beyond the input ones
    /// (an agent that reports them apart) are priced as cached, never as negative input.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_input_tokens;
        let uncached = usage.input_tokens.saturating_sub(cached);
        let cached_price = self
            .cached_input_usd_per_mtok
            .unwrap_or(self.input_usd_per_mtok);
        (uncached as f64 * self.input_usd_per_mtok
            + cached as f64 * cached_price
            + usage.output_tokens as f64 * self.output_usd_per_mtok)
            / 1_000_000.0
    }

    /// What is wrong with these prices: each one must be a finite number of 0 or more. The
    /// key path is `pricing."<model>".<key>`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        [
            ("input_usd_per_mtok", Some(self.input_usd_per_mtok)),
            ("cached_input_usd_per_mtok", self.cached_input_usd_per_mtok),
            ("output_usd_per_mtok", Some(self.output_usd_per_mtok)),
        ]
        .into_iter()
        .filter_map(|(key, v)| {
            let v = v?;
            (!v.is_finite() || v < 0.0).then(|| {
                (
                    key,
                    format!("expected a number of dollars of 0 or more, found {v}"),
                )
            })
        })
        .collect()
    }
}

/// How an attempt's cost was arrived at.
#[derive(Debug, Clone, PartialEq)]
pub enum Cost {
    /// The agent said what it cost.
    Reported(f64),
    /// Tokens times the price table's entry for the model.
    Priced {
        /// US dollars.
        usd: f64,
        /// The `[pricing]` entry used.
        model: String,
    },
    /// Neither: why, for people.
    Unknown(String),
}

impl Cost {
    /// Dollars, when known.
    pub fn usd(&self) -> Option<f64> {
        match self {
            Cost::Reported(usd) | Cost::Priced { usd, .. } => Some(*usd),
            Cost::Unknown(_) => None,
        }
    }
}

/// The cost of an attempt: the agent's own figure (`reported`) wins; else its tokens (`usage`,
/// `None` when it reported none) at `pricing`'s prices for `model`; else unknown, and why.
pub fn cost(
    reported: Option<f64>,
    usage: Option<&Usage>,
    model: Option<&str>,
    pricing: &Pricing,
) -> Cost {
    if let Some(usd) = reported.filter(|c| c.is_finite() && *c >= 0.0) {
        return Cost::Reported(usd);
    }
    let Some(usage) = usage else {
        return Cost::Unknown("the agent reported neither a cost nor tokens".into());
    };
    let Some(model) = model else {
        return Cost::Unknown(
            "the agent reported tokens but no cost, and the loop sets no `model` to price them \
             by (`[pricing.\"<model>\"]`)"
                .into(),
        );
    };
    match pricing.get(model) {
        Some(price) => Cost::Priced {
            usd: price.cost(usage),
            model: model.to_string(),
        },
        None => Cost::Unknown(format!(
            "the agent reported tokens but no cost, and the fleet file has no \
             `[pricing.\"{model}\"]` entry"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: f64, cached: Option<f64>, output: f64) -> Price {
        Price {
            input_usd_per_mtok: input,
            cached_input_usd_per_mtok: cached,
            output_usd_per_mtok: output,
        }
    }

    fn usage(input: u64, cached: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            cached_input_tokens: cached,
            output_tokens: output,
        }
    }

    #[test]
    fn tokens_times_prices_with_cached_input_at_its_own_price() {
        let p = price(1.25, Some(0.125), 10.0);
        // 1M uncached, 2M cached, 0.5M output.
        let c = p.cost(&usage(3_000_000, 2_000_000, 500_000));
        assert!((c - (1.25 + 0.25 + 5.0)).abs() < 1e-9, "{c}");
    }

    #[test]
    fn cached_price_defaults_to_the_input_price() {
        let p = price(2.0, None, 0.0);
        let c = p.cost(&usage(1_000_000, 600_000, 0));
        assert!((c - 2.0).abs() < 1e-9, "{c}");
    }

    #[test]
    fn more_cached_than_input_tokens_is_never_negative() {
        let p = price(1.0, Some(0.5), 0.0);
        let c = p.cost(&usage(100, 1_000_000, 0));
        assert!((c - 0.5).abs() < 1e-9, "{c}");
    }

    #[test]
    fn the_agents_own_cost_wins_over_the_table() {
        let mut table = Pricing::new();
        table.insert("m".into(), price(100.0, None, 100.0));
        let c = cost(Some(0.42), Some(&usage(1000, 0, 1000)), Some("m"), &table);
        assert_eq!(c, Cost::Reported(0.42));
    }

    #[test]
    fn tokens_are_priced_by_the_loops_model() {
        let mut table = Pricing::new();
        table.insert("gpt-5".into(), price(1.0, Some(0.1), 8.0));
        let c = cost(None, Some(&usage(2_000_000, 0, 0)), Some("gpt-5"), &table);
        assert_eq!(
            c,
            Cost::Priced {
                usd: 2.0,
                model: "gpt-5".into()
            }
        );
    }

    #[test]
    fn without_a_price_or_tokens_the_cost_is_unknown_not_zero() {
        let table = Pricing::new();
        let no_entry = cost(None, Some(&usage(1, 0, 1)), Some("gpt-5"), &table);
        assert_eq!(no_entry.usd(), None);
        assert!(
            matches!(&no_entry, Cost::Unknown(why) if why.contains("[pricing.\"gpt-5\"]")),
            "{no_entry:?}"
        );
        let no_model = cost(None, Some(&usage(1, 0, 1)), None, &table);
        assert!(matches!(&no_model, Cost::Unknown(why) if why.contains("`model`")));
        let nothing = cost(None, None, Some("gpt-5"), &table);
        assert!(matches!(&nothing, Cost::Unknown(why) if why.contains("neither")));
        // A nonsensical figure from the agent is not believed.
        let nan = cost(Some(f64::NAN), None, None, &table);
        assert_eq!(nan.usd(), None);
    }

    #[test]
    fn negative_or_infinite_prices_are_named() {
        let p = price(-1.0, Some(f64::INFINITY), 3.0);
        let keys: Vec<_> = p.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["input_usd_per_mtok", "cached_input_usd_per_mtok"]);
        assert!(price(0.0, None, 0.0).problems().is_empty());
    }
}
