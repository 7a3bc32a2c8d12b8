//! The page shell every view shares (head, `nav`, the live and sign-in markers, the alerts
//! count, the notifications button), a view's regions, and small formatting helpers.

use std::collections::HashMap;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use serde::Serialize;

use crate::api::auth::Access;

/// The views, in the order of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// `/`.
    Fleet,
    /// `/timeline`.
    Timeline,
    /// `/cost`.
    Cost,
    /// `/insights`.
    Insights,
    /// `/alerts`.
    Alerts,
    /// `/login`.
    Login,
}

const LINKS: [(Nav, &str, &str); 5] = [
    (Nav::Fleet, "/", "Fleet"),
    (Nav::Timeline, "/timeline", "Timeline"),
    (Nav::Cost, "/cost", "Cost"),
    (Nav::Insights, "/insights", "Insights"),
    (Nav::Alerts, "/alerts", "Alerts"),
];

/// What a page says about itself to the script (`<body data-*>`).
#[derive(Debug, Default, Clone)]
pub struct Live {
    /// The journal's last event id when the page was rendered: the stream starts after it,
    /// so nothing between the render and the connection is lost.
    pub after: u64,
    /// The loop the page is about (its events only).
    pub loop_name: Option<String>,
    /// The test the page is about.
    pub test: Option<String>,
    /// The attempt the page is about.
    pub attempt: Option<u32>,
    /// The page follows running transcripts (rendered server-side).
    pub transcripts: bool,
    /// The page does not follow events at all (the sign-in form).
    pub quiet: bool,
}

/// One page: its title, where it sits in the navigation, who looks, and its content.
pub struct Page {
    /// The `<title>` and the heading.
    pub title: String,
    /// The navigation entry shown as current.
    pub nav: Nav,
    /// Signed in or not.
    pub access: Access,
    /// The alerts of the last day, for `#alerts-count`.
    pub alerts: usize,
    /// What the script needs to follow the page live.
    pub live: Live,
    /// The view's content.
    pub body: Markup,
}

impl Page {
    /// The whole HTML document.
    pub fn render(self) -> Markup {
        let signed = if self.access.signed_in {
            "true"
        } else {
            "false"
        };
        let nav = self.nav;
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.title) " · loopd" }
                    link rel="stylesheet" href="/assets/app.css";
                    script src="/assets/app.js" defer {}
                }
                body data-live=(if self.live.quiet { "lost" } else { "connecting" }) data-signed-in=(signed)
                    data-quiet=[self.live.quiet.then_some("true")]
                    data-after=(self.live.after)
                    data-loop=[self.live.loop_name.as_deref()]
                    data-test=[self.live.test.as_deref()]
                    data-attempt=[self.live.attempt]
                    data-transcripts=[self.live.transcripts.then_some("true")] {
                    header {
                        nav {
                            a.brand href="/" { "loopd" }
                            @for (n, href, label) in LINKS {
                                a href=(href) aria-current=[(n == nav).then_some("page")] {
                                    (label)
                                    @if n == Nav::Alerts {
                                        " " span #alerts-count.count { (self.alerts) }
                                    }
                                }
                            }
                            span.spacer {}
                            span.live title="live updates" { span.dot {} span.live-text {} }
                            button #notify type="button" title="browser notifications when a test needs a person, a loop crashes or runs out of credits" { "Notify me" }
                            @if self.access.signed_in {
                                button #logout type="button" { "Sign out" }
                            } @else if nav != Nav::Login {
                                a.signin href="/login" { "Sign in" }
                            }
                        }
                    }
                    main {
                        h1 { (self.title) }
                        @if !self.access.signed_in && nav != Nav::Login {
                            p.readonly { "Read-only: " a href="/login" { "sign in" } " with the token to act." }
                        }
                        (self.body)
                    }
                }
            }
        }
    }
}

/// A page's answer: the document, with headers that keep it from being framed, sniffed or
/// cached, and a Content-Security-Policy that runs only the embedded scripts (the page's and
/// the shared worker of the event stream, `worker-src 'self'`; so a `<script>`
/// an agent smuggled into a test name or a transcript would not run even if it were not
/// escaped; it is escaped).
pub fn respond(markup: Markup) -> Response {
    with_page_headers(markup.into_response())
}

/// [`respond`]'s headers on any answer that is HTML.
pub fn with_page_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; \
             img-src 'self' data:; connect-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with the sign-in form, which
    // the CSRF check refuses. `same-origin` still tells other sites nothing.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `?fragment=NAME`: the page's region NAME alone (what the script swaps in when an event
/// says it changed), else the whole page.
pub fn fragment(q: &HashMap<String, String>) -> Option<&str> {
    q.get("fragment").map(String::as_str)
}

/// A region the script refreshes: `<section id=r-NAME data-region=NAME data-on=EVENTS>`, whose
/// page answers `?fragment=NAME` with it alone. `on` lists the event kinds that change it
/// (comma separated).
pub fn region(id: &str, on: &str, content: Markup) -> Markup {
    region_every(id, on, None, content)
}

/// A [`region`] that costs more to render (it reads many records): the script fetches it
/// again at most every `gather_ms` milliseconds, however many events arrive.
pub fn region_every(id: &str, on: &str, gather_ms: Option<u32>, content: Markup) -> Markup {
    html! {
        section id=(format!("r-{id}")) data-region=(id) data-on=(on) data-gather=[gather_ms] { (content) }
    }
}

/// A serde enum's snake_case word (`needs_human`).
pub fn word<T: Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Dollars as people read them: `$0.0421`, `$12.30`.
pub fn usd(v: f64) -> String {
    if v != 0.0 && v.abs() < 1.0 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

/// `3 s`, `4 min`, `2 h 5 min`, `3 d`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d", s / 86_400),
    }
}

/// `2026-12-02 03:14:07Z` and, for the script, the RFC 3339 time in `datetime`.
pub fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%SZ")) }
    }
}

/// Links to the pages before and after `page` (of `pages`), keeping the other parameters.
pub fn pager(base: &str, params: &[(&str, &str)], page: usize, pages: usize) -> Markup {
    let link = |n: usize| {
        let mut q: Vec<String> = params
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        q.push(format!("page={n}"));
        format!("{base}?{}", q.join("&"))
    };
    html! {
        @if pages > 1 {
            nav.pager aria-label="pages" {
                @if page > 1 { a rel="prev" href=(link(page - 1)) { "← previous" } }
                span { "page " (page) " of " (pages) }
                @if page < pages { a rel="next" href=(link(page + 1)) { "next →" } }
            }
        }
    }
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `?page=N` (1 when absent or not a number).
pub fn page_number(q: &HashMap<String, String>) -> usize {
    q.get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_for_people() {
        assert_eq!(usd(0.0421), "$0.0421");
        assert_eq!(usd(12.3), "$12.30");
        assert_eq!(usd(0.0), "$0.00");
        assert_eq!(duration(5.2), "5 s");
        assert_eq!(duration(7_500.0), "2 h 5 min");
        assert_eq!(urlencode("a b&c"), "a%20b%26c");
    }
}
