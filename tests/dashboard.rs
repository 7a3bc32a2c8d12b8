//! The dashboard in a real headless Chromium (issue 12): the built loopd binary with scripted
//! agents, Debian's chromium driven over WebDriver (tests/browser).

mod browser;
mod common;
mod serving;

use browser::Browser;
use common::Fleet;
use serving::Daemon;

#[test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
fn the_browser_reads_loopd_and_leaves_no_process_behind() {
    let fleet = Fleet::new()
        .tests(serde_json::json!([common::test_entry("T1", "true", &[])]))
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
