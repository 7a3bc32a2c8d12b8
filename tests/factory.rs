//! The loop factory end to end: loops made from templates by a real `loopd serve` on port 0,
//! over HTTP and with `loopd new`.

mod common;
mod serving;

use common::{wait_until, Fleet, WAIT};
use serde_json::{json, Value};
use serving::{http, token, Daemon};

/// A fleet whose folder holds `loop-templates/svc.toml` (workdir and tests file from variables)
/// and `svc.json`, whose one test passes by creating `S1.done`.
fn fleet_with_template() -> Fleet {
    let fleet = Fleet::new()
        .tests(json!([{"id": "T1", "title": "T1", "spec": "x", "verify": "true"}]))
        .agent("touch \"$LOOPD_TEST_ID.done\"")
        .write();
    let dir = fleet.root().join("loop-templates");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("svc.toml"),
        "# {{commented}} placeholders need no value\n\
         name = \"{{name}}\"\n\
         workdir = \"../repos/{{name}}\"\n\
         init_workdir = true\n\
         tests_file = \"../{{tests}}.json\"\n\
         max_attempts = 1\n\
         [agent]\nkind = \"command\"\ncommand = [\"../agent.sh\"]\n",
    )
    .unwrap();
    std::fs::write(
        fleet.root().join("svc.json"),
        json!({"tests": [{"id": "S1", "title": "S1", "spec": "make S1",
                          "verify": "test -f S1.done"}]})
        .to_string(),
    )
    .unwrap();
    fleet
}

fn get(daemon: &Daemon, path: &str) -> Value {
    http().get(daemon.url(path)).send().unwrap().json().unwrap()
}

fn post(daemon: &Daemon, fleet: &Fleet, body: Value) -> (u16, Value) {
    let resp = http()
        .post(daemon.url("/api/loops"))
        .bearer_auth(token(fleet))
        .json(&body)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

#[test]
fn loops_are_made_from_templates_over_http_and_the_cli() {
    let fleet = fleet_with_template();
    let daemon = Daemon::start(&fleet, &[]);

    // Over HTTP, started: the workdir is created and the loop runs to its end.
    let (status, body) = post(
        &daemon,
        &fleet,
        json!({"template": "svc", "vars": {"name": "alpha", "tests": "svc"}, "start": true}),
    );
    assert_eq!(status, 201, "{body:#}\n{}", daemon.log());
    assert_eq!(body["name"], "alpha");
    assert!(fleet.root().join("repos/alpha/.git").is_dir());
    wait_until("alpha to pass S1", WAIT, || {
        get(&daemon, "/api/loops/alpha")["progress"]["passed"] == 1
    });
    assert!(fleet.root().join("repos/alpha/S1.done").is_file());

    // Through the CLI, not started: registered idle, its workdir created all the same.
    let made = fleet.cmd(&[
        "-c",
        "loopd.toml",
        "new",
        "beta",
        "--template",
        "svc",
        "--set",
        "tests=svc",
        "--json",
    ]);
    assert_eq!(made.code(), 0, "{made}");
    let view: Value = serde_json::from_str(&made.stdout).unwrap();
    assert_eq!(view["name"], "beta");
    assert_eq!(view["status"], "idle", "{view:#}");
    assert!(fleet.root().join("repos/beta/.git").is_dir());
    assert_eq!(get(&daemon, "/api/loops/beta")["progress"]["passed"], 0);
    let started = fleet.cmd(&["-c", "loopd.toml", "start", "beta"]);
    assert_eq!(started.code(), 0, "{started}");
    wait_until("beta to pass S1", WAIT, || {
        get(&daemon, "/api/loops/beta")["progress"]["passed"] == 1
    });

    // The same name twice: 409, through the CLI too.
    let again = fleet.cmd(&[
        "-c",
        "loopd.toml",
        "new",
        "beta",
        "--template",
        "svc",
        "--set",
        "tests=svc",
    ]);
    assert_eq!(again.code(), 2, "{again}");
    assert!(again.stderr.contains("conflict"), "{again}");

    // Missing variables: 422 listing each, and nothing registered.
    let (status, body) = post(
        &daemon,
        &fleet,
        json!({"template": "svc", "vars": {"name": "gamma"}}),
    );
    assert_eq!(status, 422, "{body:#}");
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["error"]["details"]["missing"], json!(["tests"]));
    assert_eq!(
        body["error"]["details"]["problems"][0]["pointer"],
        "/vars/tests"
    );
    let cli = fleet.cmd(&["-c", "loopd.toml", "new", "gamma", "--template", "svc"]);
    assert_eq!(cli.code(), 2, "{cli}");
    assert!(cli.stderr.contains("/vars/tests"), "{cli}");
    let resp = http().get(daemon.url("/api/loops/gamma")).send().unwrap();
    assert_eq!(resp.status(), 404);

    // A variable the template does not use is refused (a typo is not ignored).
    let (status, body) = post(
        &daemon,
        &fleet,
        json!({"template": "svc", "vars": {"name": "gamma", "tests": "svc", "tset": "x"}}),
    );
    assert_eq!(status, 422, "{body:#}");
    assert_eq!(body["error"]["details"]["unused"], json!(["tset"]));

    // A rendered loop that is not valid: 422 with pointers into the loop.
    let (status, body) = post(
        &daemon,
        &fleet,
        json!({"template": "svc", "vars": {"name": "gamma", "tests": "nope"}}),
    );
    assert_eq!(status, 422, "{body:#}");
    assert_eq!(
        body["error"]["details"]["problems"][0]["pointer"], "/tests_file",
        "{body:#}"
    );
    // A value cannot smuggle keys in: it stays inside its string, and the name is checked.
    let (status, body) = post(
        &daemon,
        &fleet,
        json!({"template": "svc", "vars": {"name": "x\"\nmax_attempts = 9\n#", "tests": "svc"}}),
    );
    assert_eq!(status, 422, "{body:#}");
    assert_eq!(body["error"]["details"]["problems"][0]["pointer"], "/name");

    // Unknown template: 404. A template name that is a path: 400.
    let (status, body) = post(
        &daemon,
        &fleet,
        json!({"template": "nope", "vars": {"name": "x"}}),
    );
    assert_eq!(status, 404, "{body:#}");
    assert_eq!(body["error"]["details"]["template"], "nope");
    let (status, body) = post(
        &daemon,
        &fleet,
        json!({"template": "../loop-templates/svc", "vars": {"name": "x", "tests": "svc"}}),
    );
    assert_eq!(status, 400, "{body:#}");
    assert_eq!(body["error"]["code"], "invalid_name");
    let cli = fleet.cmd(&["-c", "loopd.toml", "new", "x", "--template", "../svc"]);
    assert_eq!(cli.code(), 2, "{cli}");
    assert!(cli.stderr.contains("invalid_name"), "{cli}");

    // Loops made from templates are in the registry: they survive a restart.
    assert_eq!(daemon.terminate(), 0);
    let daemon = Daemon::start(&fleet, &[]);
    for name in ["alpha", "beta"] {
        let v = get(&daemon, &format!("/api/loops/{name}"));
        assert_eq!(v["progress"]["passed"], 1, "{name}: {v:#}");
    }
    assert_eq!(daemon.terminate(), 0);
}
