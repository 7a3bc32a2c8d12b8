//! Command agents: `api_error_exit_codes`, `api_error_patterns`, `billing_patterns`,
//! `cost_patterns`, `token_patterns` and the `LOOPD_RESULT_FILE` they may write.
//!
//! Cost and token matches are added up over the run (an agent such as aider prints one line per
//! request); the result file, when it names a cost or tokens, wins over the patterns.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use regex::RegexSet;
use serde_json::Value;

use super::{truncate_chars, AgentReport, LineEvent, ProviderFailure, MAX_SUMMARY_CHARS};
use crate::config::AgentConfig;

/// Result files larger than this are not read.
const MAX_RESULT_FILE: u64 = 1024 * 1024;
/// Longest piece of evidence kept from an output line.
const MAX_EVIDENCE: usize = 500;

#[derive(Debug)]
pub(super) struct CommandWatcher {
    /// Exit codes that mean the API failed.
    api_exit_codes: Vec<i32>,
    /// `api_error_patterns`, the valid ones.
    api: RegexSet,
    /// `billing_patterns`, the valid ones.
    billing: RegexSet,
    /// The first line that matched a billing pattern.
    billing_line: Option<String>,
    /// The first line that matched an API error pattern, and the status it names.
    api_line: Option<(Option<u16>, String)>,
    /// `cost_patterns`, the valid ones.
    cost: Vec<regex::Regex>,
    /// `token_patterns`, the valid ones.
    tokens: Vec<regex::Regex>,
    /// Dollars the cost patterns matched, added up (`None`: no match).
    cost_seen: Option<f64>,
    /// Input, cached and output tokens the token patterns matched, added up (`None`: no match).
    tokens_seen: Option<[u64; 3]>,
    /// Invalid patterns, and what the result file was like.
    notes: Vec<String>,
}

/// The valid patterns of `patterns` as one case-insensitive set; a note for each invalid one.
///
/// Compiled once per distinct pattern list and cached for the life of the process: a loop's
/// patterns are the same on every attempt, and building the automata (even for an empty list)
/// was among the largest user-space costs of an attempt in loopd's profile. A clone of a cached
/// set shares its automata.
fn compile(key: &str, patterns: &[String], notes: &mut Vec<String>) -> RegexSet {
    type Cache = HashMap<(String, Vec<String>), (RegexSet, Vec<String>)>;
    /// A bound on the cache, for a daemon whose config is reloaded with ever new patterns.
    const MAX_CACHED: usize = 256;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let cache_key = (key.to_string(), patterns.to_vec());
    if let Some((set, cached_notes)) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&cache_key)
    {
        notes.extend(cached_notes.iter().cloned());
        return set.clone();
    }
    let mut own_notes = Vec::new();
    let valid: Vec<&String> = patterns
        .iter()
        .filter(|p| match regex::Regex::new(p) {
            Ok(_) => true,
            Err(e) => {
                own_notes.push(format!("ignored invalid {key} entry {p:?}: {e}"));
                false
            }
        })
        .collect();
    // Case-insensitive: providers capitalise their messages as they like ("Credit balance is too
    // low"); a pattern that must be exact can say `(?-i)`.
    let set = regex::RegexSetBuilder::new(valid)
        .case_insensitive(true)
        .build()
        .unwrap_or_else(|_| RegexSet::empty());
    notes.extend(own_notes.iter().cloned());
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= MAX_CACHED {
        cache.clear();
    }
    cache.insert(cache_key, (set.clone(), own_notes));
    set
}

/// The valid patterns of `patterns`, each compiled on its own (their groups are read), case
/// insensitive; a note for each invalid one.
fn compile_each(key: &str, patterns: &[String], notes: &mut Vec<String>) -> Vec<regex::Regex> {
    patterns
        .iter()
        .filter_map(
            |p| match regex::RegexBuilder::new(p).case_insensitive(true).build() {
                Ok(re) => Some(re),
                Err(e) => {
                    notes.push(format!("ignored invalid {key} entry {p:?}: {e}"));
                    None
                }
            },
        )
        .collect()
}

/// A count as agents print them: `1234`, `1,234`, `1_234`, `2.3k`, `1.1M` (rounded to a whole
/// token). `None` for anything else.
pub(crate) fn parse_count(text: &str) -> Option<u64> {
    let t = text.trim().replace([',', '_'], "");
    let (number, scale) = match t.char_indices().last()? {
        (i, 'k' | 'K') => (&t[..i], 1e3),
        (i, 'm' | 'M') => (&t[..i], 1e6),
        _ => (t.as_str(), 1.0),
    };
    let n: f64 = number.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0 && n * scale < u64::MAX as f64).then(|| (n * scale).round() as u64)
}

/// Dollars as agents print them: `0.0123`, `$0.01`, `1,000.50`.
fn parse_usd(text: &str) -> Option<f64> {
    let t = text.trim().trim_start_matches('$').replace(',', "");
    t.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

/// An HTTP status worth naming in a line: 429 or 5xx.
pub(super) fn status_in(text: &str) -> Option<u16> {
    static STATUS: OnceLock<regex::Regex> = OnceLock::new();
    let re = STATUS.get_or_init(|| regex::Regex::new(r"\b(429|5[0-9]{2})\b").expect("valid"));
    re.captures(text)?.get(1)?.as_str().parse().ok()
}

impl CommandWatcher {
    pub(super) fn new(cfg: &AgentConfig) -> Self {
        let mut notes = Vec::new();
        let (codes, api, billing, cost, tokens) = match cfg {
            AgentConfig::Command {
                api_error_exit_codes,
                api_error_patterns,
                billing_patterns,
                cost_patterns,
                token_patterns,
                ..
            } => (
                api_error_exit_codes.clone(),
                compile("api_error_patterns", api_error_patterns, &mut notes),
                compile("billing_patterns", billing_patterns, &mut notes),
                compile_each("cost_patterns", cost_patterns, &mut notes),
                compile_each("token_patterns", token_patterns, &mut notes),
            ),
            _ => (
                Vec::new(),
                RegexSet::empty(),
                RegexSet::empty(),
                Vec::new(),
                Vec::new(),
            ),
        };
        CommandWatcher {
            api_exit_codes: codes,
            api,
            billing,
            billing_line: None,
            api_line: None,
            cost,
            tokens,
            cost_seen: None,
            tokens_seen: None,
            notes,
        }
    }

    pub(super) fn line(&mut self, line: &str) -> LineEvent {
        self.read_usage(line);
        if self.billing.is_match(line) {
            self.billing_line
                .get_or_insert_with(|| truncate_chars(line, MAX_EVIDENCE));
            return LineEvent::Billing;
        }
        if self.api.is_match(line) {
            let status = status_in(line);
            self.api_line
                .get_or_insert_with(|| (status, truncate_chars(line, MAX_EVIDENCE)));
            return LineEvent::ApiError { status };
        }
        LineEvent::Output
    }

    /// Adds what the cost and token patterns find in `line`.
    fn read_usage(&mut self, line: &str) {
        for re in &self.cost {
            for caps in re.captures_iter(line) {
                if let Some(usd) = caps.name("usd").and_then(|m| parse_usd(m.as_str())) {
                    *self.cost_seen.get_or_insert(0.0) += usd;
                }
            }
        }
        for re in &self.tokens {
            for caps in re.captures_iter(line) {
                let counts = ["input", "cached", "output"]
                    .map(|g| caps.name(g).and_then(|m| parse_count(m.as_str())));
                if counts.iter().all(Option::is_none) {
                    continue;
                }
                let seen = self.tokens_seen.get_or_insert([0; 3]);
                for (slot, n) in seen.iter_mut().zip(counts) {
                    *slot = slot.saturating_add(n.unwrap_or(0));
                }
            }
        }
    }

    pub(super) fn finish(mut self, exit_code: Option<i32>, result_file: &Path) -> AgentReport {
        let mut report = AgentReport {
            is_error: exit_code != Some(0),
            cost_usd: self.cost_seen,
            ..AgentReport::default()
        };
        if let Some([input, cached, output]) = self.tokens_seen {
            report.tokens_reported = true;
            // Cached input is part of the input; an agent that prints it apart may print more
            // cached than fresh input tokens.
            report.input_tokens = input.max(cached);
            report.cached_input_tokens = cached;
            report.output_tokens = output;
        }
        read_result_file(result_file, &mut report, &mut self.notes);
        report.provider_failure = if let Some(message) = self.billing_line {
            Some(ProviderFailure::OutOfCredits { message })
        } else if let Some(code) = exit_code.filter(|c| self.api_exit_codes.contains(c)) {
            Some(ProviderFailure::ApiError {
                status: self.api_line.as_ref().and_then(|(s, _)| *s),
                message: format!("exit code {code} is one of api_error_exit_codes"),
            })
        } else {
            self.api_line
                .map(|(status, message)| ProviderFailure::ApiError { status, message })
        };
        report.notes = self.notes;
        report
    }
}

/// Fills cost, tokens and summary from `{"cost_usd", "input_tokens", "output_tokens",
/// "summary"}` (all optional). A missing file says nothing; a malformed one is a note.
pub(super) fn read_result_file(path: &Path, report: &mut AgentReport, notes: &mut Vec<String>) {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            notes.push(format!("cannot read result file {}: {e}", path.display()));
            return;
        }
    };
    let mut text = String::new();
    if let Err(e) = file.take(MAX_RESULT_FILE + 1).read_to_string(&mut text) {
        notes.push(format!("cannot read result file {}: {e}", path.display()));
        return;
    }
    if text.len() as u64 > MAX_RESULT_FILE {
        notes.push(format!(
            "result file {} is larger than {MAX_RESULT_FILE} bytes; ignored",
            path.display()
        ));
        return;
    }
    if text.trim().is_empty() {
        return;
    }
    let value: Value = match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => {
            notes.push(format!(
                "result file {} is not a JSON object; ignored",
                path.display()
            ));
            return;
        }
        Err(e) => {
            notes.push(format!(
                "result file {} is not valid JSON ({e}); ignored",
                path.display()
            ));
            return;
        }
    };
    let mut bad = |key: &str, expected: &str| {
        notes.push(format!(
            "result file {}: \"{key}\" should be {expected}; ignored",
            path.display()
        ))
    };
    match value.get("cost_usd") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_f64().filter(|c| c.is_finite() && *c >= 0.0) {
            Some(cost) => report.cost_usd = Some(cost),
            None => bad("cost_usd", "a non-negative number"),
        },
    }
    for (key, slot) in [
        ("input_tokens", &mut report.input_tokens),
        ("output_tokens", &mut report.output_tokens),
    ] {
        match value.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) => {
                    *slot = n;
                    report.tokens_reported = true;
                }
                None => bad(key, "a non-negative integer"),
            },
        }
    }
    match value.get("summary") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => report.summary = Some(truncate_chars(s, MAX_SUMMARY_CHARS)),
        Some(_) => bad("summary", "a string"),
    }
}
