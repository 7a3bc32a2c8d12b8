//! One file a command, and the one enum that dispatches them.

/// `eprintln!` for `run` and `serve`: a stderr whose reader has gone (`loopd run 2>&1 | head`)
/// loses the line, where `eprintln!` would panic loopd with its agents running.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod client;
mod control;
mod detail;
mod docs;
mod exit;
pub(crate) mod fleet_start;
mod hint;
mod init;
mod insights;
mod logs;
mod new;
mod progress;
mod recover;
mod report;
mod report_html;
mod rollback;
mod run;
mod serve;
mod shutdown;
mod source;
mod status;
pub mod style;
mod table;
mod target;
mod top;
mod validate;
pub mod why;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use exit::Exit;

/// Supervisor daemon for fleets of unattended AI coding loops.
#[derive(Debug, Parser)]
#[command(name = "loopd", version, about)]
pub struct Cli {
    /// The fleet file (default `./loopd.toml`). Commands also take it as their first argument:
    /// one that ends in `.toml` or holds a `/`, or one word more than the names they take.
    #[arg(short = 'c', long = "config", env = "LOOPD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log filter (tracing's env-filter syntax), e.g. `info` or `loopd_actors=debug`.
    #[arg(long, env = "LOOPD_LOG", global = true)]
    pub log: Option<String>,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// Colour states and outcomes: `auto` on a terminal unless `NO_COLOR` is set.
    #[arg(long, global = true, value_enum, default_value_t = style::ColorChoice::Auto)]
    pub color: style::ColorChoice,
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
    /// Show loops and tests; `status LOOP` one loop in detail, `status LOOP TEST` one test.
    #[command(override_usage = "loopd status [CONFIG] [LOOP [TEST]] [--json]")]
    Status(status::StatusArgs),
    /// Show a loop's attempts: outcome, duration, exit status, cost, transcript, commit.
    #[command(override_usage = "loopd attempts [CONFIG] LOOP [TEST] [--json]")]
    Attempts(status::AttemptsArgs),
    /// Write the whole state as JSON to stdout.
    Export(ConfigArg),
    /// Rebuild a lost store from the workdirs' git history: passed tests and their commits.
    Recover(ConfigArg),
    /// Run the fleet as a daemon and serve the HTTP API until SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
    /// List loops: state, progress, current test, attempts, cost.
    Ls(client::LsArgs),
    /// Start a loop, or every loop (undoes stop and pause; restarts a crashed loop).
    #[command(override_usage = "loopd start [CONFIG] (LOOP | all | --all) [--json]")]
    Start(control::LoopArgs),
    /// Stop a loop, or every loop, at once (the running attempt is interrupted).
    #[command(override_usage = "loopd stop [CONFIG] (LOOP | all | --all) [--json]")]
    Stop(control::LoopArgs),
    /// Pause a loop, or every loop: the running attempt finishes, no new one starts (`--now`
    /// interrupts it).
    #[command(override_usage = "loopd pause [CONFIG] (LOOP | all | --all) [--now] [--json]")]
    Pause(control::PauseArgs),
    /// Resume a paused loop, or every loop.
    #[command(override_usage = "loopd resume [CONFIG] (LOOP | all | --all) [--json]")]
    Resume(control::LoopArgs),
    /// Make a test pending again, its counted attempts cleared.
    #[command(override_usage = "loopd reset [CONFIG] LOOP TEST [--json]")]
    Reset(control::TestArgs),
    /// Return LOOP's workdir to the checkpoint made when TEST passed; later passes reopen.
    #[command(override_usage = "loopd rollback [CONFIG] LOOP TEST [--json]")]
    Rollback(control::TestArgs),
    /// Set a test aside (`skipped`), releasing its dependents.
    #[command(override_usage = "loopd skip [CONFIG] LOOP TEST [--json]")]
    Skip(control::TestArgs),
    /// Add tests to a running loop (tests-file format, validated by the daemon).
    #[command(override_usage = "loopd add-test [CONFIG] LOOP (JSON | --file FILE) [--json]")]
    AddTest(control::AddTestArgs),
    /// Give a loop's (or one test's) next prompts guidance from a person; replaces the last.
    #[command(override_usage = "loopd hint [CONFIG] LOOP [TEST] (TEXT | --clear) [--json]")]
    Hint(hint::HintArgs),
    /// Create a loop from a template of the fleet's `templates_dir` (through the daemon).
    #[command(override_usage = "loopd new [CONFIG] LOOP --template NAME [--set KEY=VALUE]...")]
    New(new::NewArgs),
    /// Stop the daemon gracefully (as SIGTERM does) and wait until it is gone.
    Shutdown(shutdown::ShutdownArgs),
    /// Show an attempt's transcript, or follow the fleet live with `-f`.
    Logs(logs::LogsArgs),
    /// The fleet live in the terminal: loops, tests, the running attempt's tail, and keys to
    /// pause, resume, reset, skip and hint; one line per event when not on a terminal.
    #[command(override_usage = "loopd top [CONFIG] [--plain]")]
    Top(top::TopArgs),
    /// The most frequent failure patterns and the lessons learned.
    #[command(override_usage = "loopd insights [CONFIG] [LOOP] [--limit N] [--json]")]
    Insights(insights::InsightsArgs),
    /// The morning report: per loop what passed, failed, needs a person, cost and alerts in a
    /// period (default the last 24 h), and what it does now.
    #[command(
        override_usage = "loopd report [CONFIG] [--since DURATION|TIME] [--format md|html|json]"
    )]
    Report(report::ReportArgs),
    /// Print a shell completion script: `loopd completions bash > ~/.local/share/bash-completion/completions/loopd`.
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff): `loopd man | man -l -`.
    Man,
}

/// The optional positional fleet file that `run`, `serve`, `validate`, `status`, `export` and
/// `recover` take.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// The fleet file (default: `-c`, `LOOPD_CONFIG`, or `./loopd.toml`).
    pub file: Option<PathBuf>,
}

impl Command {
    /// Whether the command runs a fleet (`run`, `serve`): it supervises agents and serves the
    /// API, where a closed pipe or socket must be an error, never a signal that ends loopd.
    pub fn supervises(&self) -> bool {
        matches!(self, Command::Run(_) | Command::Serve(_))
    }
}

impl Cli {
    /// The fleet file: positional argument, then `-c`/`LOOPD_CONFIG`, then `./loopd.toml`.
    pub fn fleet_file(&self, positional: Option<&PathBuf>) -> PathBuf {
        self.fleet(positional).path
    }

    /// The fleet file, and whether a person named it (see [`target`]).
    fn fleet(&self, positional: Option<&PathBuf>) -> target::FleetRef {
        target::FleetRef::resolve(positional.cloned(), self.config.as_ref())
    }

    /// For commands that read the fleet file itself: the fleet, once it exists ("no fleet
    /// file found" otherwise, not a validation report).
    fn existing(&self, positional: Option<&PathBuf>, command: &str) -> Result<PathBuf, Exit> {
        let fleet = self.fleet(positional);
        fleet.require_file(command)?;
        Ok(fleet.path)
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
    let flag = args.config.as_ref();
    let existing = |positional: Option<&PathBuf>, command: &str| args.existing(positional, command);
    match &args.command {
        Command::Validate(a) => match existing(a.file.as_ref(), "validate") {
            Ok(file) => validate::run(&file),
            Err(code) => Ok(code),
        },
        Command::Init(a) => init::run(a),
        Command::Run(a) => match existing(a.file.as_ref(), "run") {
            Ok(file) => run::run(&file, a),
            Err(code) => Ok(code),
        },
        Command::Status(a) => status::status(flag, a),
        Command::Attempts(a) => status::attempts(flag, a),
        Command::Export(a) => status::export(&args.fleet(a.file.as_ref())),
        Command::Recover(a) => match existing(a.file.as_ref(), "recover") {
            Ok(file) => recover::run(&file),
            Err(code) => Ok(code),
        },
        Command::Serve(a) => match existing(a.file.as_ref(), "serve") {
            Ok(file) => serve::serve(&file, a),
            Err(code) => Ok(code),
        },
        Command::Ls(a) => client::ls(&args.fleet(a.file.as_ref()), a),
        Command::Start(a) => control::loop_action(flag, "start", a, ""),
        Command::Stop(a) => control::loop_action(flag, "stop", a, ""),
        Command::Pause(a) => control::loop_action(
            flag,
            "pause",
            &a.target,
            if a.now { "?now=true" } else { "" },
        ),
        Command::Resume(a) => control::loop_action(flag, "resume", a, ""),
        Command::Reset(a) => control::test_command(flag, "reset", a),
        Command::Rollback(a) => rollback::run(flag, a),
        Command::Skip(a) => control::test_command(flag, "skip", a),
        Command::AddTest(a) => control::add_test(flag, a),
        Command::Hint(a) => hint::run(flag, a),
        Command::New(a) => new::run(flag, a),
        Command::Shutdown(a) => shutdown::run(&args.fleet(a.file.as_ref()), a),
        Command::Logs(a) => logs::logs(&args.fleet_file(None), a),
        Command::Top(a) => top::top(&args.fleet(a.file.as_ref()), a),
        Command::Insights(a) => insights::insights(flag, a),
        Command::Report(a) => report::report(&args.fleet(a.file.as_ref()), a),
        Command::Completions(a) => docs::completions(a),
        Command::Man => docs::man(),
    }
}

/// Writes `text` to stdout; a reader that has gone (`loopd run | head -1`) ends the output
/// quietly instead of failing the command.
pub fn out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The snake_case word of a status, outcome or state, as in the JSON.
pub fn words<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}
