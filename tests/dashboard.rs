//! The dashboard in a real headless Chromium (issue 12): the built loopd binary with scripted
//! agents, Debian's chromium driven over WebDriver (tests/browser). The pages are addressed by
//! the dashboard contract's selectors (`tr[data-loop]`, `[data-state]`, `#transcript .line`,
//! `button[data-action]`, `body[data-live]`, ...), never by their look.
//!
//! The agents wait for gate files (`gate-LOOP-TEST` in the fleet's folder), so each test decides
//! when an attempt moves on and what the page must show meanwhile. Every check of what loopd did
//! goes through its API, not through the page.

mod browser;
mod common;
mod serving;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use browser::{js_str, Browser, PAGE_WAIT};
use common::{test_entry, wait_until, Fleet, LOOP, WAIT};
use serde_json::{json, Value};
use serving::{http, token, Daemon};

/// The agent of every test here: says which test it starts, waits for `gate-LOOP-TEST`, says
/// it goes on, waits for `gate-LOOP-TEST-2` when `hold-LOOP-TEST` exists, and passes by creating
/// `TEST.done`, except a test named `FAIL*`, which leaves nothing and fails its verify unless
/// `fix-LOOP` exists.
const GATED_AGENT: &str = r#"echo "agent of $LOOPD_LOOP starts $LOOPD_TEST_ID (attempt $LOOPD_ATTEMPT)"
echo "reading the spec of $LOOPD_TEST_ID"
while [ ! -f "$ROOT/gate-$LOOPD_LOOP-$LOOPD_TEST_ID" ]; do sleep 0.05; done
echo "second line from $LOOPD_TEST_ID, still working"
if [ -f "$ROOT/hold-$LOOPD_LOOP-$LOOPD_TEST_ID" ]; then
  while [ ! -f "$ROOT/gate-$LOOPD_LOOP-$LOOPD_TEST_ID-2" ]; do sleep 0.05; done
fi
case "$LOOPD_TEST_ID" in FAIL*) [ -f "$ROOT/fix-$LOOPD_LOOP" ] || { echo "giving up on $LOOPD_TEST_ID"; exit 0; } ;; esac
touch "$LOOPD_TEST_ID.done"
echo "done with $LOOPD_TEST_ID""#;

/// The screenshots' agent: the gates and outcomes of [`GATED_AGENT`], speaking Claude Code's
/// stream-json (run as the claude-code preset), so that the attempt view has assistant text,
/// tool calls and results to render and the cost view has spend to show.
const STREAM_AGENT: &str = r#"say() { printf '{"type":"assistant","message":{"role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"%s"}],"usage":{"input_tokens":1800,"output_tokens":120}}}\n' "$1"; }
tool() { printf '{"type":"assistant","message":{"role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"tool_use","id":"tu%s","name":"Bash","input":{"command":"%s"}}],"usage":{"input_tokens":900,"output_tokens":40}}}\n' "$1" "$2"; }
result() { printf '{"type":"user","message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"tu%s","content":"%s"}]}}\n' "$1" "$2"; }
finish() { printf '{"type":"result","subtype":"success","is_error":false,"num_turns":4,"result":"%s","total_cost_usd":%s,"usage":{"input_tokens":5400,"output_tokens":420}}\n' "$1" "$2"; }
say "Reading the spec of $LOOPD_TEST_ID and the code it touches."
tool 1 "grep -rn handler src/"
result 1 "src/api.rs:41: fn handler() -> Status"
while [ ! -f "$ROOT/gate-$LOOPD_LOOP-$LOOPD_TEST_ID" ]; do sleep 0.05; done
say "The handler returns 500 on an empty body; changing it to answer 400."
tool 2 "cargo test api::empty_body"
if [ -f "$ROOT/hold-$LOOPD_LOOP-$LOOPD_TEST_ID" ]; then
  while [ ! -f "$ROOT/gate-$LOOPD_LOOP-$LOOPD_TEST_ID-2" ]; do sleep 0.05; done
fi
case "$LOOPD_TEST_ID" in FAIL*) [ -f "$ROOT/fix-$LOOPD_LOOP" ] || { result 2 "test api::empty_body ... FAILED"; finish "could not make it pass" 0.21; exit 0; } ;; esac
result 2 "test api::empty_body ... ok"
touch "$LOOPD_TEST_ID.done"
say "Done: $LOOPD_TEST_ID passes."
finish "made $LOOPD_TEST_ID pass" "0.$(( ${#LOOPD_LOOP} * 7 + ${#LOOPD_TEST_ID} * 3 ))""#;

/// The tests of every loop: T1, then T2 behind it.
fn two_tests() -> Value {
    json!([
        test_entry("T1", "test -f T1.done", &[]),
        test_entry("T2", "test -f T2.done", &["T1"]),
    ])
}

/// A fleet of the loop `main` plus `others`, each in its own workdir, with `tests` and the
/// gated agent.
fn gated_fleet(tests: Value, others: &[&str]) -> Fleet {
    fleet_with(GATED_AGENT, tests, others)
}

/// [`gated_fleet`] with another agent script.
fn fleet_with(agent: &str, tests: Value, others: &[&str]) -> Fleet {
    let fleet = Fleet::new().tests(tests).agent(agent).write();
    // Every loop runs at once (the default is one agent at a time).
    let mut toml = std::fs::read_to_string(fleet.config_file())
        .unwrap()
        .replacen("[fleet]\n", "[fleet]\nmax_concurrent_agents = 4\n", 1);
    for name in others {
        toml.push_str(&format!(
            "\n[[loops]]\nname = \"{name}\"\nworkdir = \"work-{name}\"\ninit_workdir = true\n\
             tests_file = \"tests.json\"\nmax_attempts = 1\nkill_grace = \"1s\"\n\
             [loops.agent]\nkind = \"command\"\ncommand = [\"./agent.sh\"]\n"
        ));
    }
    std::fs::write(fleet.config_file(), toml).unwrap();
    fleet
}

/// Lets the agent of `lp`'s `test` go on (`suffix` "" for the first gate, "-2" for the second).
fn open_gate(fleet: &Fleet, lp: &str, test: &str, suffix: &str) {
    std::fs::write(fleet.root().join(format!("gate-{lp}-{test}{suffix}")), "").unwrap();
}

/// `GET /api/loops/NAME` with the token.
fn api_loop(daemon: &Daemon, fleet: &Fleet, name: &str) -> Value {
    let resp = http()
        .get(daemon.url(&format!("/api/loops/{name}")))
        .bearer_auth(token(fleet))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "GET /api/loops/{name}");
    resp.json().unwrap()
}

/// Waits until `cond` holds for `GET /api/loops/NAME` and returns it.
fn wait_api(
    daemon: &Daemon,
    fleet: &Fleet,
    name: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    wait_until(what, WAIT, || {
        last = api_loop(daemon, fleet, name);
        cond(&last)
    });
    last
}

/// The status of `test` in a loop's API view.
fn test_status(lp: &Value, test: &str) -> String {
    lp["tests"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["id"] == test))
        .and_then(|t| t["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Waits for the page's live connection to the journal.
fn wait_live(browser: &Browser) {
    browser.wait_attr("body", "data-live", "connected");
}

/// A selector of the fleet view's row of `lp`.
fn row(lp: &str) -> String {
    format!("#fleet tr[data-loop={}]", js_str(lp))
}

/// The computed colours of the first element matching `css` and of everything inside it, as
/// one string: it changes when a status changes the element's colour, whichever property the
/// stylesheet uses for it.
fn colours(browser: &Browser, css: &str) -> String {
    browser
        .js(
            "const e = document.querySelector(arguments[0]); if (!e) return '';
             return [e, ...e.querySelectorAll('*')].map(x => { const s = getComputedStyle(x);
               return [s.color, s.backgroundColor, s.fill, s.stroke, s.borderLeftColor].join(' '); }).join('|');",
            vec![css.into()],
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Signs in through the login form with the fleet's token; returns on the fleet view, signed in.
fn sign_in(browser: &Browser, daemon: &Daemon, fleet: &Fleet) {
    browser.goto(&daemon.url("/login"));
    browser.fill("input[name=token]", token(fleet).trim());
    browser.click("form button[type=submit], form input[type=submit]");
    browser.wait_attr("body", "data-signed-in", "true");
    assert!(
        !browser.url().contains("/login"),
        "the login form should lead away from itself, it is on {}",
        browser.url()
    );
    // HttpOnly: the page's scripts cannot read the session cookie.
    let cookies = browser.js("return document.cookie;", vec![]);
    assert!(
        !cookies
            .as_str()
            .unwrap_or_default()
            .contains("loopd_session"),
        "the session cookie is readable by scripts: {cookies}"
    );
}

#[test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
fn the_browser_reads_loopd_and_leaves_no_process_behind() {
    let fleet = Fleet::new()
        .tests(json!([test_entry("T1", "true", &[])]))
        .write();
    let daemon = Daemon::start(&fleet, &[]);
    let browser = Browser::start();
    browser.goto(&daemon.url("/api/openapi.json"));
    assert!(
        browser.body_text().contains("\"openapi\""),
        "{}",
        browser.body_text()
    );
    let started = browser.processes();
    assert!(
        started.len() >= 2,
        "chromedriver and at least one Chromium process: {started:?}"
    );
    drop(browser);
    let left = common::alive(&started);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
fn the_fleet_view_lists_the_running_loops_and_a_pass_recolours_without_a_reload() {
    let fleet = gated_fleet(two_tests(), &["beta", "gamma"]);
    let daemon = Daemon::start(&fleet, &[]);
    for lp in [LOOP, "beta", "gamma"] {
        wait_api(&daemon, &fleet, lp, &format!("{lp} to run T1"), |l| {
            l["current_test"] == "T1"
        });
    }
    let browser = Browser::start();
    browser.goto(&daemon.url("/"));
    wait_live(&browser);
    for lp in [LOOP, "beta", "gamma"] {
        browser.wait_attr(&row(lp), "data-state", "running");
        browser.wait_text(&format!("{} [data-field=test]", row(lp)), "T1");
        browser.wait_for(&format!("{} [data-field=attempt]", row(lp)));
        browser.wait_for(&format!("{} [data-field=progress]", row(lp)));
    }
    assert_eq!(
        browser.count("#fleet tr[data-loop]"),
        3,
        "one row a loop: {:?}",
        browser.attrs("#fleet tr[data-loop]", "data-loop")
    );

    // The fleet view follows the journal: beta passes both tests and finishes, on the page
    // loaded before, with the same `window`.
    browser.mark_window();
    let running_colours = colours(&browser, &row("beta"));
    open_gate(&fleet, "beta", "T1", "");
    open_gate(&fleet, "beta", "T2", "");
    wait_api(&daemon, &fleet, "beta", "beta to finish", |l| {
        l["status"] == "finished"
    });
    browser.wait_attr(&row("beta"), "data-state", "finished");
    assert!(browser.window_marked(), "the fleet view was reloaded");
    assert_ne!(
        colours(&browser, &row("beta")),
        running_colours,
        "a finished loop's row looks like a running one"
    );
    assert_eq!(
        browser.attr(&row(LOOP), "data-state").as_deref(),
        Some("running")
    );

    // The loop view: T1 of `main` turns from running to passed in the table and the graph,
    // with a colour of its own, without a reload.
    browser.goto(&daemon.url(&format!("/loops/{LOOP}")));
    wait_live(&browser);
    let t1_row = "table#tests tr[data-test=\"T1\"]";
    let t1_node = "svg#graph g.node[data-test=\"T1\"]";
    browser.wait_attr(t1_row, "data-status", "running");
    browser.wait_attr(t1_node, "data-status", "running");
    browser.wait_attr("table#tests tr[data-test=\"T2\"]", "data-status", "pending");
    browser.wait_for("svg#graph [data-edge=\"T1->T2\"]");
    browser.mark_window();
    let (row_before, node_before) = (colours(&browser, t1_row), colours(&browser, t1_node));
    open_gate(&fleet, LOOP, "T1", "");
    wait_api(&daemon, &fleet, LOOP, "main's T1 to pass", |l| {
        test_status(l, "T1") == "passed"
    });
    browser.wait_attr(t1_row, "data-status", "passed");
    browser.wait_attr(t1_node, "data-status", "passed");
    assert!(browser.window_marked(), "the loop view was reloaded");
    assert_ne!(
        colours(&browser, t1_row),
        row_before,
        "a passed test's row looks running"
    );
    assert_ne!(
        colours(&browser, t1_node),
        node_before,
        "a passed test's node looks running"
    );
    // T2 runs now, on the same page.
    browser.wait_attr("table#tests tr[data-test=\"T2\"]", "data-status", "running");
    assert!(browser.window_marked(), "the loop view was reloaded");
}

#[test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
fn the_attempt_view_renders_the_transcript_while_the_agent_prints() {
    let fleet = gated_fleet(json!([test_entry("T1", "test -f T1.done", &[])]), &[]);
    std::fs::write(fleet.root().join(format!("hold-{LOOP}-T1")), "").unwrap();
    let daemon = Daemon::start(&fleet, &[]);
    wait_api(&daemon, &fleet, LOOP, "T1 to run", |l| {
        l["current_test"] == "T1"
    });
    common::wait_for_text(&fleet.transcript("T1", 1), "reading the spec of T1");

    let browser = Browser::start();
    browser.goto(&daemon.url(&format!("/loops/{LOOP}/tests/T1/attempts/1")));
    wait_live(&browser);
    // Its transcript is its own: the attempt view keeps a stream of its own (as every page
    // does where SharedWorker is missing).
    assert_eq!(browser.attr("body", "data-stream").as_deref(), Some("own"));
    browser.wait_text("#transcript", "agent of main starts T1 (attempt 1)");
    browser.wait_text("#transcript", "reading the spec of T1");
    assert!(
        browser.count("#transcript .line") >= 2,
        "one .line a rendered line: {:?}",
        browser.texts("#transcript .line")
    );
    assert!(
        !browser
            .texts("#transcript .line")
            .iter()
            .any(|l| l.contains("still working")),
        "a line the agent has not printed yet"
    );
    browser.mark_window();

    // The agent prints its next line while the attempt still runs: it appears on the page.
    open_gate(&fleet, LOOP, "T1", "");
    browser.wait_text("#transcript", "second line from T1, still working");
    assert!(browser.window_marked(), "the attempt view was reloaded");
    let lp = api_loop(&daemon, &fleet, LOOP);
    assert_eq!(
        lp["current_test"], "T1",
        "the attempt ended too soon: {lp:#}"
    );
    let lines = browser.texts("#transcript .line");
    let first = lines.iter().position(|l| l.contains("reading the spec"));
    let second = lines.iter().position(|l| l.contains("second line from T1"));
    assert!(
        first.is_some() && first < second,
        "the lines in the agent's order: {lines:?}"
    );

    // Once it ends, the attempt's outcome, verify and fingerprint sections are there.
    open_gate(&fleet, LOOP, "T1", "-2");
    wait_api(&daemon, &fleet, LOOP, "T1 to pass", |l| {
        test_status(l, "T1") == "passed"
    });
    browser.goto(&daemon.url(&format!("/loops/{LOOP}/tests/T1/attempts/1")));
    browser.wait_text("#outcome", "passed");
    browser.wait_text("#transcript", "done with T1");
    for section in ["#verify", "#diff", "#fingerprint"] {
        browser.wait_for(section);
    }
}

#[test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
fn a_pause_button_pauses_the_loop_once_signed_in() {
    let fleet = gated_fleet(two_tests(), &[]);
    let daemon = Daemon::start(&fleet, &[]);
    wait_api(&daemon, &fleet, LOOP, "T1 to run", |l| {
        l["current_test"] == "T1"
    });
    let browser = Browser::start();

    // Read-only without the cookie (loopback): the page shows, signed out.
    browser.goto(&daemon.url("/"));
    browser.wait_attr("body", "data-signed-in", "false");
    browser.wait_for(&row(LOOP));

    sign_in(&browser, &daemon, &fleet);
    browser.goto(&daemon.url("/"));
    wait_live(&browser);
    browser.wait_attr(&row(LOOP), "data-state", "running");
    browser.mark_window();
    browser.click(&format!(
        "button[data-action=pause][data-loop={}]",
        js_str(LOOP)
    ));
    let lp = wait_api(&daemon, &fleet, LOOP, "the loop to be paused", |l| {
        l["status"] == "paused"
    });
    assert_eq!(lp["reason"], "by_user", "{lp:#}");
    browser.wait_attr(&row(LOOP), "data-state", "paused");
    assert!(browser.window_marked(), "pausing reloaded the fleet view");

    // Paused means no new attempt: T1 finishes, T2 does not start.
    open_gate(&fleet, LOOP, "T1", "");
    let lp = wait_api(&daemon, &fleet, LOOP, "T1 to pass", |l| {
        test_status(l, "T1") == "passed"
    });
    assert_eq!(test_status(&lp, "T2"), "pending", "{lp:#}");

    // And resume from the same page.
    browser.click(&format!(
        "button[data-action=resume][data-loop={}]",
        js_str(LOOP)
    ));
    wait_api(&daemon, &fleet, LOOP, "T2 to run after resume", |l| {
        l["current_test"] == "T2"
    });
    browser.wait_attr(&row(LOOP), "data-state", "running");
}

#[test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
fn eight_tabs_of_one_browser_share_one_stream_and_all_follow_a_pause() {
    // A browser holds at most 6 HTTP/1.1 connections to a host: with a stream a tab, the 7th
    // tab's page never loaded (its `goto` below would time out).
    const TABS: usize = 8;
    let fleet = gated_fleet(two_tests(), &["beta"]);
    let daemon = Daemon::start(&fleet, &[]);
    for lp in [LOOP, "beta"] {
        wait_api(&daemon, &fleet, lp, &format!("{lp} to run T1"), |l| {
            l["current_test"] == "T1"
        });
    }
    let browser = Browser::start();
    let mut tabs = vec![browser.current_tab()];
    for i in 0..TABS {
        if i > 0 {
            tabs.push(browser.open_tab());
        }
        browser.goto(&daemon.url("/"));
        wait_live(&browser);
        browser.wait_attr(&row(LOOP), "data-state", "running");
        assert_eq!(
            browser.attr("body", "data-stream").as_deref(),
            Some("shared"),
            "tab {i} follows the journal on a stream of its own"
        );
        browser.mark_window();
    }
    // Every tab is still connected once all are open.
    for (i, tab) in tabs.iter().enumerate() {
        browser.switch_to(tab);
        assert_eq!(
            browser.attr("body", "data-live").as_deref(),
            Some("connected"),
            "tab {i}"
        );
    }

    let paused = http()
        .post(daemon.url(&format!("/api/loops/{LOOP}/pause")))
        .bearer_auth(token(&fleet))
        .send()
        .unwrap();
    assert!(paused.status().is_success(), "pause: {}", paused.status());
    wait_api(&daemon, &fleet, LOOP, "the loop to be paused", |l| {
        l["status"] == "paused"
    });
    for (i, tab) in tabs.iter().enumerate() {
        browser.switch_to(tab);
        browser.wait_attr(&row(LOOP), "data-state", "paused");
        assert!(browser.window_marked(), "tab {i} was reloaded");
        assert_eq!(
            browser.attr(&row("beta"), "data-state").as_deref(),
            Some("running"),
            "tab {i}: beta was not paused"
        );
    }

    // A loop's page follows its loop over the same shared stream (of the whole fleet): the
    // attempt the pause let finish turns T1 to passed there.
    browser.switch_to(&tabs[0]);
    browser.goto(&daemon.url(&format!("/loops/{LOOP}")));
    wait_live(&browser);
    assert_eq!(
        browser.attr("body", "data-stream").as_deref(),
        Some("shared")
    );
    open_gate(&fleet, LOOP, "T1", "");
    wait_api(&daemon, &fleet, LOOP, "main's T1 to pass", |l| {
        test_status(l, "T1") == "passed"
    });
    browser.wait_attr("table#tests tr[data-test=\"T1\"]", "data-status", "passed");
}

/// A second web server: answers every GET with `page` (the attacker's site).
struct EvilSite {
    port: u16,
}

impl EvilSite {
    fn start(page: String) -> EvilSite {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let page = std::sync::Arc::new(page);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let page = page.clone();
                // A thread a connection: Chromium opens connections it sends nothing on (a
                // preconnect), which must not hold up the next page load.
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    // The request line and headers; the page has no body to read.
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    );
                });
            }
        });
        EvilSite { port }
    }
}

/// What the attacker's page does to `target` (loopd's pause URL): a cross-site `fetch` as
/// text/plain (a "simple" request: no preflight, sent with whatever cookie the browser sends),
/// a JSON one with the dashboard's header (needs a CORS preflight loopd must not grant), and a
/// form that posts itself.
fn evil_page(target: &str) -> String {
    let target = js_str(target);
    format!(
        r#"<!doctype html><html><body>
<form id="evil" method="post" action={target} enctype="text/plain"><input name='{{"now":true}}' value="x"></form>
<script>
window.attacks = {{}};
async function attack() {{
  try {{
    const r = await fetch({target}, {{method: "POST", mode: "no-cors", credentials: "include",
      headers: {{"Content-Type": "text/plain"}}, body: '{{"now": true}}'}});
    window.attacks.plain = "sent:" + r.type;
  }} catch (e) {{ window.attacks.plain = "error:" + e; }}
  try {{
    const r = await fetch({target}, {{method: "POST", credentials: "include",
      headers: {{"Content-Type": "application/json", "X-Loopd-Request": "dashboard"}}, body: "{{}}"}});
    window.attacks.json = "status:" + r.status;
  }} catch (e) {{ window.attacks.json = "blocked:" + e; }}
  window.attacks.done = true;
}}
attack();
</script></body></html>"#
    )
}

#[test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
fn a_cross_site_post_changes_nothing() {
    let fleet = gated_fleet(two_tests(), &[]);
    let daemon = Daemon::start(&fleet, &[]);
    wait_api(&daemon, &fleet, LOOP, "T1 to run", |l| {
        l["current_test"] == "T1"
    });
    let pause = daemon.url(&format!("/api/loops/{LOOP}/pause"));
    let evil = EvilSite::start(evil_page(&pause));
    let browser = Browser::start();

    let attack = |site: &str| {
        browser.goto(site);
        let results = browser.wait_js(
            "the attacker's page to have tried",
            PAGE_WAIT,
            "window.attacks && window.attacks.done && window.attacks",
        );
        // The text/plain fetch went out (an opaque answer, not a network error): it reached
        // loopd, which must have refused it.
        assert_eq!(results["plain"], "sent:opaque", "{site}: {results}");
        assert!(
            results["json"]
                .as_str()
                .unwrap_or_default()
                .starts_with("blocked:"),
            "{site}: a cross-site JSON request got through CORS: {results}"
        );
        // The form navigates the browser to loopd's answer.
        browser.js(
            "document.getElementById('evil').submit(); return null;",
            vec![],
        );
        let status = browser.wait_js(
            "the form's answer from loopd",
            PAGE_WAIT,
            &format!(
                "location.href === {} && document.readyState === 'complete' && \
                 performance.getEntriesByType('navigation')[0].responseStatus",
                js_str(&pause)
            ),
        );
        let status = status.as_u64().unwrap_or(0);
        assert!(
            status == 401 || status == 403,
            "{site}: loopd answered the cross-site form with {status}"
        );
        let lp = api_loop(&daemon, &fleet, LOOP);
        assert_eq!(lp["status"], "running", "{site} paused the loop: {lp:#}");
        assert_eq!(lp["current_test"], "T1", "{site} changed the loop: {lp:#}");
    };

    // Without the cookie: another site (localhost is not 127.0.0.1's site).
    attack(&format!("http://localhost:{}/", evil.port));

    // With the cookie: signed in, then a page on another port of the same host (same-site,
    // so the SameSite=Strict cookie goes along): still refused.
    sign_in(&browser, &daemon, &fleet);
    attack(&format!("http://127.0.0.1:{}/", evil.port));
    attack(&format!("http://localhost:{}/", evil.port));

    // The same browser, signed in, pauses from the dashboard itself: the refusals above were
    // for where the requests came from, not a dashboard that cannot act.
    browser.goto(&daemon.url("/"));
    wait_live(&browser);
    browser.click(&format!(
        "button[data-action=pause][data-loop={}]",
        js_str(LOOP)
    ));
    wait_api(&daemon, &fleet, LOOP, "the dashboard's pause", |l| {
        l["status"] == "paused"
    });
}

/// Where the screenshots of a test run go: `target/screenshots/` (`CARGO_TARGET_DIR` honoured).
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("screenshots")
}

#[test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
fn screenshots_of_the_main_views() {
    // Three loops in three states: `main` passed T1, failed FAIL-1 and runs T2 (a live
    // transcript) with T3 blocked; `beta` passed everything; `gamma` is paused in T2.
    let tests = json!([
        test_entry("T1", "test -f T1.done", &[]),
        test_entry("FAIL-1", "test -f FAIL-1.done", &[]),
        test_entry("T2", "test -f T2.done", &["T1"]),
        test_entry("T3", "test -f T3.done", &["FAIL-1", "T2"]),
    ]);
    let fleet = fleet_with(STREAM_AGENT, tests, &["beta", "gamma"]);
    fleet.use_claude_code_preset();
    std::fs::write(fleet.root().join(format!("hold-{LOOP}-T2")), "").unwrap();
    std::fs::write(fleet.root().join("fix-beta"), "").unwrap();
    for (lp, gates) in [
        (LOOP, &["T1", "FAIL-1", "T2"][..]),
        ("beta", &["T1", "FAIL-1", "T2", "T3"][..]),
        ("gamma", &["T1", "FAIL-1"][..]),
    ] {
        for g in gates {
            open_gate(&fleet, lp, g, "");
        }
    }
    let daemon = Daemon::start(&fleet, &[]);
    wait_api(&daemon, &fleet, LOOP, "main to hold in T2", |l| {
        l["current_test"] == "T2" && test_status(l, "FAIL-1") == "failed"
    });
    common::wait_for_text(&fleet.transcript("T2", 1), "api::empty_body");
    wait_api(&daemon, &fleet, "beta", "beta to finish", |l| {
        l["status"] == "finished"
    });
    wait_api(&daemon, &fleet, "gamma", "gamma to run T2", |l| {
        l["current_test"] == "T2"
    });
    let paused = http()
        .post(daemon.url("/api/loops/gamma/pause?now=true"))
        .bearer_auth(token(&fleet))
        .send()
        .unwrap();
    assert!(
        paused.status().is_success(),
        "pause gamma: {}",
        paused.status()
    );
    wait_api(&daemon, &fleet, "gamma", "gamma to be paused", |l| {
        l["status"] == "paused" && l["current_test"].is_null()
    });

    let browser = Browser::start();
    // Signed in, as a person who acts sees the pages (the buttons on).
    sign_in(&browser, &daemon, &fleet);
    let dir = screenshot_dir();
    let shots = [
        ("fleet", "/".to_string(), "#fleet tr[data-loop]"),
        ("loop", format!("/loops/{LOOP}"), "svg#graph g.node"),
        (
            "attempt",
            format!("/loops/{LOOP}/tests/T2/attempts/1"),
            "#transcript .line",
        ),
        ("timeline", "/timeline".to_string(), "nav"),
        ("cost", "/cost".to_string(), "nav"),
        ("insights", "/insights".to_string(), "nav"),
        ("alerts", "/alerts".to_string(), "nav"),
    ];
    for (name, path, ready) in &shots {
        browser.goto(&daemon.url(path));
        wait_live(&browser);
        browser.wait_for(ready);
        browser.wait_for("#alerts-count");
        browser.wait_for("button#notify");
        let file = dir.join(format!("{name}.png"));
        browser.screenshot(&file);
        let png = std::fs::read(&file).unwrap();
        assert!(
            png.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            file.display()
        );
    }
    // `LOOPD_UPDATE_SCREENSHOTS=1`: the README's copies under docs/screenshots/ too.
    if std::env::var_os("LOOPD_UPDATE_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&docs).unwrap();
        for (name, _, _) in &shots {
            let file = format!("{name}.png");
            std::fs::copy(dir.join(&file), docs.join(&file)).unwrap();
        }
    }
    open_gate(&fleet, LOOP, "T2", "-2");
}
