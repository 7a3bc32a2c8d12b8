//! A `loopd serve` started by a test on port 0 (tests/api_e2e.rs, factory.rs, reload.rs, webhooks.rs).

#![allow(dead_code)] // each test binary uses a different part of this module

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::{wait_until, Fleet, WAIT};

/// A `loopd serve` the test started; killed when dropped.
pub struct Daemon {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    log: PathBuf,
}

impl Daemon {
    /// `loopd serve loopd.toml --bind 127.0.0.1:0` in the fleet's folder, with `env` added;
    /// returns once `daemon.json` has its address.
    pub fn start(fleet: &Fleet, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_on(fleet, "127.0.0.1:0", env)
    }

    /// [`Daemon::start`] listening on `bind`.
    pub fn start_on(fleet: &Fleet, bind: &str, env: &[(&str, &str)]) -> Daemon {
        let log = fleet.root().join("serve.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = fleet.loopd(&["serve", "loopd.toml", "--bind", bind]);
        cmd.envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().expect("spawn loopd serve");
        let info = fleet.state_dir().join("daemon.json");
        let mut addr = String::new();
        let mut daemon = Daemon {
            child,
            addr: String::new(),
            log,
        };
        wait_until("daemon.json with an address", WAIT, || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("loopd serve exited ({status})\n{}", daemon.log());
            }
            let Ok(text) = std::fs::read_to_string(&info) else {
                return false;
            };
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            match v["addr"].as_str() {
                Some(a) if v["pid"] == daemon.child.id() => {
                    addr = a.to_string();
                    true
                }
                _ => false,
            }
        });
        daemon.addr = addr;
        daemon
    }

    /// `http://ADDR/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code (within 30 s).
    pub fn terminate(self) -> i32 {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        self.exit_code()
    }

    /// The exit code once it ends by itself (within 30 s; it is asked to end elsewhere).
    pub fn exit_code(mut self) -> i32 {
        for _ in 0..1500 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("loopd serve did not stop\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The API token of the fleet's daemon.
pub fn token(fleet: &Fleet) -> String {
    std::fs::read_to_string(fleet.state_dir().join("token")).unwrap()
}

/// A blocking HTTP client with a timeout.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}
