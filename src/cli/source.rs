//! Finding the daemon, and [`Source`]: what a read command reads, the daemon's API or the store,
//! so that each command is written once and prints the same in both modes.
//!
//! The daemon is found, in this order: `LOOPD_ADDR`; the fleet file's state directory
//! (`daemon.json`, while a live `run` or `serve` holds it); and, only when no fleet file was named
//! and `./loopd.toml` does not exist, the default address ([`DEFAULT_BIND`]). Without a daemon a
//! read command opens the fleet's store, and a write command says what to run.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use loopd_actors::config::{self, Fleet};
use loopd_actors::statedir::{self, DaemonInfo};
use loopd_actors::store::Store;
use loopd_actors::view::{
    self, AttemptsDoc, ExportDoc, InsightsDoc, LoopDetail, ReportDoc, StatusDoc, SummaryDoc,
};

use super::client::{Client, Failed};
use super::target::FleetRef;
use super::Exit;
use crate::api::auth::client_token;
use crate::api::server::DEFAULT_BIND;

/// A daemon that answers, and how it was found.
pub struct Daemon {
    /// Its API.
    pub client: Client,
    /// What the `daemon.json` of the state directory it holds said, when found through it
    /// (`shutdown` waits for that process to be gone; otherwise for the port to close).
    pub holder: Option<DaemonInfo>,
}

/// What [`discover`] found.
pub enum Found {
    /// A daemon to talk to.
    Daemon(Daemon),
    /// No daemon holds the fleet's state directory.
    NoDaemon {
        /// The fleet, loaded.
        fleet: Box<Fleet>,
        /// Where a daemon was looked for, for the message of a write command.
        tried: String,
    },
}

fn addr_env() -> Option<String> {
    std::env::var("LOOPD_ADDR")
        .ok()
        .filter(|a| !a.trim().is_empty())
}

/// Finds the daemon of `fleet` (see the module's doc). `quiet` keeps the line that says which
/// daemon was chosen off stderr (for `--json`); it is printed only when no fleet was named.
pub fn discover(fleet: &FleetRef, quiet: bool) -> Result<Found, Exit> {
    let say = |line: String| {
        if !quiet && !fleet.named {
            eprintln!("loopd: {line}");
        }
    };
    if let Some(addr) = addr_env() {
        say(format!("using the daemon at {addr} (LOOPD_ADDR)"));
        // The token file of the fleet's state directory, when the fleet is there to name it.
        let dir = config::load_fleet(&fleet.path)
            .ok()
            .map(|f| f.settings.state_dir);
        return Ok(Found::Daemon(Daemon {
            client: Client::new(&addr, client_token(dir.as_deref())),
            holder: None,
        }));
    }
    if !fleet.path.exists() {
        if fleet.named {
            return Err(fleet.require_file("").unwrap_err());
        }
        if answers(DEFAULT_BIND) {
            say(format!(
                "using the daemon at {DEFAULT_BIND} (default address)"
            ));
            // The token only from LOOPD_TOKEN: any local process may listen on this port, and
            // must not be handed a token file it names.
            return Ok(Found::Daemon(Daemon {
                client: Client::new(DEFAULT_BIND, client_token(None)),
                holder: None,
            }));
        }
        eprintln!(
            "loopd: no fleet file found (tried {}) and no daemon answers at {DEFAULT_BIND} (the default address); name the fleet with -c FILE or the daemon with LOOPD_ADDR",
            fleet.shown()
        );
        return Err(Exit::Invalid);
    }
    let loaded = config::load_fleet(&fleet.path).map_err(|report| {
        eprintln!("{report}");
        Exit::Invalid
    })?;
    let dir = loaded.settings.state_dir.clone();
    match statedir::live_daemon(&dir) {
        Some(info) => {
            let Some(addr) = info.addr.clone() else {
                eprintln!(
                    "loopd: `loopd {}` (pid {}) holds the state directory {} but serves no API; wait until it ends",
                    info.command,
                    info.pid,
                    dir.display()
                );
                return Err(Exit::NotAllPassed);
            };
            say(format!(
                "using the daemon at {addr} ({}'s daemon.json)",
                fleet.shown()
            ));
            Ok(Found::Daemon(Daemon {
                client: Client::new(&addr, client_token(Some(&dir))),
                holder: Some(info),
            }))
        }
        None => Ok(Found::NoDaemon {
            tried: format!(
                "LOOPD_ADDR is not set, no live daemon.json in {}",
                dir.display()
            ),
            fleet: Box::new(loaded),
        }),
    }
}

/// True when something accepts connections at `addr` within a second.
pub fn answers(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// The daemon of `fleet`, for a command that changes state; without one, says so and what to
/// run. `quiet` as for [`discover`].
pub fn daemon(fleet: &FleetRef, quiet: bool) -> Result<Daemon, Exit> {
    match discover(fleet, quiet)? {
        Found::Daemon(d) => Ok(d),
        Found::NoDaemon { tried, .. } => {
            eprintln!(
                "loopd: no daemon is running for {} ({tried}); start one with `loopd serve {}`",
                fleet.shown(),
                fleet.path.display()
            );
            Err(Exit::NotAllPassed)
        }
    }
}

/// Where a read command reads: the daemon's API, or the store when no daemon holds it. Both
/// answer with the same documents.
pub enum Source {
    /// A daemon answers.
    Daemon(Client),
    /// The store, opened read-write while no daemon holds it, and the fleet it belongs to.
    Store {
        /// The store.
        store: Store,
        /// The fleet file's loops, for the settings of `status LOOP`.
        fleet: Box<Fleet>,
    },
}

impl Source {
    /// The source of `fleet`'s state.
    pub fn open(fleet: &FleetRef, quiet: bool) -> Result<Source, Exit> {
        match discover(fleet, quiet)? {
            Found::Daemon(d) => Ok(Source::Daemon(d.client)),
            Found::NoDaemon { fleet: loaded, .. } => {
                if !quiet && !fleet.named {
                    eprintln!(
                        "loopd: no daemon is running for {}; reading its store",
                        fleet.shown()
                    );
                }
                let store = open_store(&loaded)?;
                Ok(Source::Store {
                    store,
                    fleet: loaded,
                })
            }
        }
    }

    /// Every loop with every attempt: `status --json`.
    pub fn status(&self) -> Result<StatusDoc, Failed> {
        match self {
            Source::Daemon(c) => c.status(),
            Source::Store { store, .. } => stored(view::status(store)),
        }
    }

    /// Every loop in the summary view: `ls --json`.
    pub fn summary(&self) -> Result<SummaryDoc, Failed> {
        match self {
            Source::Daemon(c) => c.summary(),
            Source::Store { store, .. } => stored(view::summary(store)),
        }
    }

    /// One loop in detail: `status LOOP --json`.
    pub fn detail(&self, name: &str) -> Result<LoopDetail, Failed> {
        match self {
            Source::Daemon(c) => c.get(&format!("/api/loops/{name}?view=detail")),
            Source::Store { store, fleet } => {
                let record = known_loop(store, name)?;
                let file_loop = fleet.loops.iter().find(|l| l.name == name);
                Ok(LoopDetail {
                    view: stored(view::loop_view(store, &record))?,
                    settings: record.config.as_ref().or(file_loop).map(Into::into),
                })
            }
        }
    }

    /// A loop's attempts (of one test), oldest first: `attempts --json`.
    pub fn attempts(&self, name: &str, test: Option<&str>) -> Result<AttemptsDoc, Failed> {
        match self {
            Source::Daemon(c) => c.attempts(name, test),
            Source::Store { store, .. } => {
                known_loop(store, name)?;
                let attempts = stored(store.list_attempts(name, test))?;
                Ok(AttemptsDoc { attempts })
            }
        }
    }

    /// Failure patterns (at most `limit`) and lessons, of the fleet or one loop: `insights`.
    pub fn insights(&self, name: Option<&str>, limit: usize) -> Result<InsightsDoc, Failed> {
        match self {
            Source::Daemon(c) => c.get(&match name {
                Some(l) => format!("/api/loops/{l}/insights?limit={limit}"),
                None => format!("/api/insights?limit={limit}"),
            }),
            Source::Store { store, .. } => {
                if let Some(l) = name {
                    known_loop(store, l)?;
                }
                stored(view::insights(store, name, limit))
            }
        }
    }

    /// The morning report of the period since `since`: `report`.
    pub fn report(&self, since: chrono::DateTime<chrono::Utc>) -> Result<ReportDoc, Failed> {
        match self {
            Source::Daemon(c) => c.get(&format!(
                "/api/report?since={}",
                super::report::stamp(since)
            )),
            Source::Store { store, .. } => stored(view::report(store, since, chrono::Utc::now())),
        }
    }

    /// The whole state as tests files plus progress: `export`.
    pub fn export(&self) -> Result<ExportDoc, Failed> {
        match self {
            Source::Daemon(c) => c.get("/api/export"),
            Source::Store { store, .. } => stored(view::export(store)),
        }
    }
}

/// The store's answer, its error explained.
fn stored<T>(r: Result<T, loopd_actors::store::StoreError>) -> Result<T, Failed> {
    r.map_err(|e| {
        let e = anyhow::Error::from(e);
        eprintln!("loopd: {e:#}");
        Failed(Exit::of_error(&e))
    })
}

fn known_loop(store: &Store, name: &str) -> Result<loopd_actors::model::LoopRecord, Failed> {
    stored(store.get_loop(name))?.ok_or_else(|| {
        eprintln!("loopd: no loop named `{name}` in the store");
        Failed(Exit::Invalid)
    })
}

/// Opens the store of `fleet`, unless a live `run`/`serve` holds it.
pub fn open_store(fleet: &Fleet) -> Result<Store, Exit> {
    let dir = &fleet.settings.state_dir;
    if let Some(d) = statedir::live_daemon(dir) {
        eprintln!(
            "loopd: `loopd {}` (pid {}) holds the state directory {}; ask it, or wait until it ends",
            d.command,
            d.pid,
            dir.display()
        );
        return Err(Exit::NotAllPassed);
    }
    let never_written = loopd_actors::generation::read(dir).is_ok_and(|r| r.is_none());
    if !dir.join("store").exists() && never_written {
        // No store and no record of one: the fleet never ran, or its ledger was lost with the
        // record; the workdirs' history tells which.
        super::fleet_start::refuse_forgotten("loopd", fleet, None)?;
        eprintln!(
            "loopd: no store at {} yet (the fleet has never run)",
            dir.join("store").display()
        );
        return Err(Exit::NotAllPassed);
    }
    let store = Store::open(dir).map_err(|e| {
        eprintln!("loopd: {e}");
        Exit::Invalid
    })?;
    super::fleet_start::refuse_forgotten("loopd", fleet, Some(&store))?;
    Ok(store)
}
