//! One file a command, and the one enum that dispatches them.

mod client;
mod exit;
pub(crate) mod fleet_start;
mod init;
mod insights;
mod logs;
mod new;
mod progress;
mod recover;
mod rollback;
mod run;
mod serve;
mod status;
mod validate;
pub mod why;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use exit::Exit;

/// Supervisor daemon for fleets of unattended AI coding loops.
#[derive(Debug, Parser)]
#[command(name = "loopd", version, about)]
pub struct Cli {
    /// The fleet file.
    #[arg(short = 'c', long = "config", env = "LOOPD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log filter (tracing's env-filter syntax), e.g. `info` or `loopd_actors=debug`.
    #[arg(long, env = "LOOPD_LOG", global = true)]
    pub log: Option<String>,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the fleet file, every loop and every tests file; list every problem.
    Validate(ConfigArg),
    /// Scaffold a new fleet with one loop in DIR (default: the current folder).
    Init(init::InitArgs),
    /// Run the fleet in the foreground until every loop is finished.
    Run(run::RunArgs),
    /// Show loops and tests (from the store).
    Status(status::StatusArgs),
    /// Show a loop's attempts: outcome, duration, exit status, cost, transcript, commit.
    Attempts(status::AttemptsArgs),
    /// Write the whole state as JSON to stdout.
    Export(ConfigArg),
    /// Rebuild a lost store from the workdirs' git history: passed tests and their commits.
    Recover(ConfigArg),
    /// Run the fleet as a daemon and serve the HTTP API until SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
    /// List loops: state, progress, current test, attempts, cost.
    Ls(client::LsArgs),
    /// Start a loop (undoes stop and pause; restarts a crashed loop).
    Start(client::LoopArgs),
    /// Stop a loop at once (its running attempt is interrupted).
    Stop(client::LoopArgs),
    /// Pause a loop: the running attempt finishes, no new one starts (`--now` interrupts it).
    Pause(client::PauseArgs),
    /// Resume a paused loop.
    Resume(client::LoopArgs),
    /// Make a test pending again, its counted attempts cleared.
    Reset(client::TestArgs),
    /// Return LOOP's workdir to the checkpoint made when TEST passed; later passes reopen.
    Rollback(client::TestArgs),
    /// Set a test aside (`skipped`), releasing its dependents.
    Skip(client::TestArgs),
    /// Add tests to a running loop (tests-file format, validated by the daemon).
    AddTest(client::AddTestArgs),
    /// Create a loop from a template of the fleet's `templates_dir` (through the daemon).
    New(new::NewArgs),
    /// Show an attempt's transcript, or follow the fleet live with `-f`.
    Logs(logs::LogsArgs),
    /// The most frequent failure patterns and the lessons learned (from the store).
    Insights(insights::InsightsArgs),
}

/// The optional positional fleet file that `run`, `serve`, `validate`, `status`, `export` and
/// `recover` take.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// The fleet file (default: `-c`, `LOOPD_CONFIG`, or `./loopd.toml`).
    pub file: Option<PathBuf>,
}

impl Cli {
    /// The fleet file: positional argument, then `-c`/`LOOPD_CONFIG`, then `./loopd.toml`.
    pub fn fleet_file(&self, positional: Option<&PathBuf>) -> PathBuf {
        positional
            .or(self.config.as_ref())
            .cloned()
            .unwrap_or_else(|| PathBuf::from("loopd.toml"))
    }
}

/// Sets up tracing: human-readable on a terminal, JSON lines with `--log-json`.
pub fn init_logging(args: &Cli) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(args.log.as_deref().unwrap_or("warn"))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the command and returns its exit code.
pub fn dispatch(args: Cli) -> anyhow::Result<Exit> {
    match &args.command {
        Command::Validate(a) => validate::run(&args.fleet_file(a.file.as_ref())),
        Command::Init(a) => init::run(a),
        Command::Run(a) => run::run(&args.fleet_file(a.file.as_ref()), a),
        Command::Status(a) => status::status(&args.fleet_file(a.file.as_ref()), a),
        Command::Attempts(a) => status::attempts(&args.fleet_file(None), a),
        Command::Export(a) => status::export(&args.fleet_file(a.file.as_ref())),
        Command::Recover(a) => recover::run(&args.fleet_file(a.file.as_ref())),
        Command::Serve(a) => serve::serve(&args.fleet_file(a.file.as_ref()), a),
        Command::Ls(a) => client::ls(&args.fleet_file(None), a),
        Command::Start(a) => client::loop_action(&args.fleet_file(None), "start", a),
        Command::Stop(a) => client::loop_action(&args.fleet_file(None), "stop", a),
        Command::Pause(a) => client::pause(&args.fleet_file(None), a),
        Command::Resume(a) => client::loop_action(&args.fleet_file(None), "resume", a),
        Command::Reset(a) => client::test_action(&args.fleet_file(None), "reset", a),
        Command::Rollback(a) => rollback::run(&args.fleet_file(None), a),
        Command::Skip(a) => client::test_action(&args.fleet_file(None), "skip", a),
        Command::AddTest(a) => client::add_test(&args.fleet_file(None), a),
        Command::New(a) => new::run(&args.fleet_file(None), a),
        Command::Logs(a) => logs::logs(&args.fleet_file(None), a),
        Command::Insights(a) => {
            let (config, lp) = a.split();
            insights::insights(&args.fleet_file(config.as_ref()), lp.as_deref(), a)
        }
    }
}

/// The snake_case word of a status, outcome or state, as in the JSON.
pub fn words<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}
