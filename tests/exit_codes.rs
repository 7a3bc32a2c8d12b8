//! Exit codes come from error types in one place (src/cli/exit.rs): invalid input is 2, a store
//! that cannot be made durable is 70, whatever command meets it.

mod common;

use common::{Fleet, Running, RUN_TIMEOUT};
use serde_json::json;

fn fleet() -> Fleet {
    Fleet::new()
        .tests(json!([
            {"id": "T1", "title": "one", "spec": "touch T1.done", "verify": "test -f T1.done"},
            {"id": "T2", "title": "two", "spec": "touch T2.done", "verify": "test -f T2.done"},
            {"id": "T3", "title": "three", "spec": "touch T3.done", "verify": "test -f T3.done"}
        ]))
        .agent("sleep 0.2; touch \"$LOOPD_TEST_ID.done\"")
        .write()
}

fn run_with_fault(fleet: &Fleet, fault: &str) -> common::Run {
    let mut cmd = fleet.loopd(&["run", "loopd.toml", "--plain"]);
    cmd.env("LOOPD_TEST_FAULT", fault);
    Running::spawn(cmd).wait(RUN_TIMEOUT)
}

#[test]
fn a_store_that_cannot_flush_mid_run_stops_the_run_with_the_internal_code() {
    let fleet = fleet();
    // The first few flushes go through (the loop starts, an attempt is recorded), then the
    // disk is full for good.
    let run = run_with_fault(&fleet, "fail:store_flush:*:100000:3");
    run.expect_code(70);
    assert!(
        run.stderr.contains("cannot make the store durable"),
        "{run}"
    );
    assert!(run.stderr.contains("No space left on device"), "{run}");
}

#[test]
fn a_store_that_cannot_flush_at_start_is_the_internal_code_too() {
    let fleet = fleet();
    let run = run_with_fault(&fleet, "fail:store_flush:*");
    run.expect_code(70);
    assert!(
        run.stderr.contains("cannot make the store durable"),
        "{run}"
    );
}

#[test]
fn invalid_input_is_still_2() {
    let fleet = fleet();
    std::fs::write(fleet.tests_file(), "{not json").unwrap();
    fleet.cmd(&["run", "loopd.toml", "--plain"]).expect_code(2);
}
