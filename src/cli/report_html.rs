//! `loopd report --format html`: the morning report as one self-contained HTML document, to
//! mail or to open from a file. Its style is inline and it has no script and nothing to fetch;
//! its `Content-Security-Policy` forbids both, as a second wall behind the escaping. Everything
//! an agent or a person wrote (test titles, diagnoses, failure lines, alerts, hints) is escaped.

use std::fmt::Write;

use loopd_actors::view::{LoopReport, ReportDoc};

use super::report::{attempts_line, hint_target, not_passed, quiet, seconds, stamp};
use super::words;

/// The page's style: readable on paper and on a phone, colours only as a second cue.
const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;\
padding:0 1em;color:#1d1d1f}h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;\
padding-bottom:.2em;margin-top:2em}table{border-collapse:collapse;margin:.5em 0}\
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}\
td.n{text-align:right}code,pre{font:13px ui-monospace,monospace;background:#f4f4f6}\
pre{padding:.5em;white-space:pre-wrap}.muted{color:#666}.state{font-weight:600}\
.passed{color:#106b21}.failed,.crashed{color:#a4161a}.needs_human,.paused{color:#9a5b00}";

/// The report as an HTML document.
pub fn render(doc: &ReportDoc) -> String {
    let mut out = String::new();
    let period = format!("{} to {}", stamp(doc.since), stamp(doc.generated_at));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>loopd report {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>loopd report</h1>\n<p class=\"muted\">Period: {}</p>\n",
        encode_text(&period),
        encode_text(&period)
    );
    let t = &doc.totals;
    let _ = write!(
        out,
        "<table>\n<tr><th>Attempts</th><th>Cost</th><th>Time</th><th>Passed</th><th>Failed</th>\
         <th>Waiting for a person</th><th>Skipped</th><th>Alerts</th></tr>\n\
         <tr><td class=\"n\">{}</td><td class=\"n\">${:.2}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n</table>\n",
        t.attempts,
        t.cost_usd,
        seconds(t.duration_ms),
        t.passed,
        t.failed,
        t.needs_human,
        t.skipped,
        t.alerts
    );
    for l in &doc.loops {
        render_loop(&mut out, l);
    }
    if !doc.fleet_alerts.is_empty() {
        out.push_str("<h2>Fleet alerts</h2>\n<ul>\n");
        for a in &doc.fleet_alerts {
            let lp = if a.loop_name.is_empty() {
                String::new()
            } else {
                format!("{}: ", a.loop_name)
            };
            let _ = writeln!(
                out,
                "<li>{} {}{}</li>",
                stamp(a.at),
                encode_text(&lp),
                encode_text(&a.message)
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn render_loop(out: &mut String, l: &LoopReport) {
    let p = &l.now.progress;
    let state = words(&l.now.status);
    let _ = write!(
        out,
        "<section>\n<h2>{}</h2>\n<p>Now: <span class=\"state {}\">{}</span>{}, {}/{} passed",
        encode_text(&l.name),
        encode_text(&state),
        encode_text(&state),
        l.now
            .reason
            .as_ref()
            .map(|r| format!(" ({})", encode_text(&r.to_string())))
            .unwrap_or_default(),
        p.passed,
        p.total
    );
    for (n, what) in not_passed(p) {
        let _ = write!(out, ", {n} {what}");
    }
    if let Some(t) = &l.now.current_test {
        let _ = write!(out, ", attempting <code>{}</code>", encode_text(t));
        if let (Some(n), Some(at)) = (l.now.current_attempt, l.now.attempt_started_at) {
            let _ = write!(out, " (attempt {n} since {})", stamp(at));
        }
    }
    out.push_str("</p>\n");
    if quiet(l) {
        out.push_str("<p class=\"muted\">Nothing happened in the period.</p>\n");
    } else {
        render_period(out, l);
    }
    if !l.hints.is_empty() {
        out.push_str("<h3>Hints</h3>\n<ul>\n");
        for h in &l.hints {
            let _ = writeln!(
                out,
                "<li><strong>{}</strong> (by {}, {}):<pre>{}</pre></li>",
                encode_text(hint_target(h)),
                encode_text(&h.author),
                stamp(h.at),
                encode_text(&h.text)
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");
}

fn render_period(out: &mut String, l: &LoopReport) {
    let _ = writeln!(out, "<p>{}</p>", encode_text(&attempts_line(l)));
    if !l.passed.is_empty() {
        out.push_str(
            "<h3>Passed</h3>\n<table>\n<tr><th>Test</th><th>Title</th><th>Attempt</th>\
             <th>Commit</th><th>At</th></tr>\n",
        );
        for t in &l.passed {
            let commit = t.commit.as_deref().map(|c| &c[..c.len().min(12)]);
            let _ = writeln!(
                out,
                "<tr><td class=\"passed\">{}</td><td>{}</td><td class=\"n\">{}</td>\
                 <td><code>{}</code></td><td>{}</td></tr>",
                encode_text(&t.id),
                encode_text(&t.title),
                t.attempt,
                encode_text(commit.unwrap_or("")),
                stamp(t.at)
            );
        }
        out.push_str("</table>\n");
    }
    for (title, class, list) in [
        ("Failed", "failed", &l.failed),
        ("Needs a person", "needs_human", &l.needs_human),
        ("Skipped", "skipped", &l.skipped),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "<h3>{title}</h3>\n<ul>");
        for t in list {
            let _ = write!(
                out,
                "<li><span class=\"{class}\">{}</span> {}",
                encode_text(&t.id),
                encode_text(&t.title)
            );
            if let Some(r) = &t.reason {
                let _ = write!(out, ": {}", encode_text(r));
            }
            if let Some(d) = &t.diagnosis {
                let _ = write!(out, "<pre>{}</pre>", encode_text(d));
            }
            out.push_str("</li>\n");
        }
        out.push_str("</ul>\n");
    }
    if !l.slowest.is_empty() {
        out.push_str(
            "<h3>Slowest tests</h3>\n<table>\n<tr><th>Test</th><th>Time</th><th>Attempts</th></tr>\n",
        );
        for s in &l.slowest {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                encode_text(&s.id),
                seconds(s.duration_ms),
                s.attempts
            );
        }
        out.push_str("</table>\n");
    }
    if !l.patterns.is_empty() {
        out.push_str(
            "<h3>Most frequent failures</h3>\n<table>\n<tr><th>Count</th><th>Failure</th>\
             <th>Tests</th></tr>\n",
        );
        for f in &l.patterns {
            let _ = writeln!(
                out,
                "<tr><td class=\"n\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
                f.count,
                encode_text(&f.example),
                encode_text(&f.tests.join(", "))
            );
        }
        out.push_str("</table>\n");
    }
    if !l.alerts.is_empty() {
        out.push_str("<h3>Alerts</h3>\n<ul>\n");
        for a in &l.alerts {
            let test = a
                .test_id
                .as_deref()
                .map(|t| format!("{t}: "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<li>{} {}{}</li>",
                stamp(a.at),
                encode_text(&test),
                encode_text(&a.message)
            );
        }
        out.push_str("</ul>\n");
    }
}

/// `text` escaped for HTML text and quoted attributes (`&`, `<`, `>`, `"`), by maud's escaper,
/// the one the dashboard's pages use.
fn encode_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    maud::Escaper::new(&mut out)
        .write_str(text)
        .expect("writing to a String cannot fail");
    out
}
