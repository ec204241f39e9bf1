//! The command line. Every subcommand's handler lives in its own file here; the work itself lives
//! in the library modules they call.
mod breakcmd;
mod doctor;
mod inspect;
mod journal;
mod run;
mod status;
mod trace;
mod ui;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// `--version`: the package version and the commit it was built from (see `build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("LIBDEBUGGER_COMMIT"),
    ")"
);

/// libdebugger-agent: live debugging for every CPython 3.11+ process on this host.
#[derive(Parser)]
#[command(
    name = "libdebugger-agent",
    version = VERSION,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Options of `run`, the default subcommand.
    #[command(flatten)]
    run: run::RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the default): find Python processes, arm breakpoints, deliver hits.
    Run(Box<run::RunArgs>),
    /// Describe a process: is it CPython, which version, how the agent would attach.
    Inspect(inspect::InspectArgs),
    /// Count frame entries per code object in a process with the frame-entry eBPF probe.
    Trace(trace::TraceArgs),
    /// Check whether this host can run the agent, and list its CPython processes.
    Doctor(doctor::DoctorArgs),
    /// Add, list or remove breakpoints of the running agent (local mode).
    #[command(subcommand)]
    Break(breakcmd::BreakCommand),
    /// Add logpoints to the running agent (local mode): a message at every hit, no snapshot.
    #[command(subcommand)]
    Log(breakcmd::LogCommand),
    /// Show the running agent's processes, breakpoints and counters.
    Status(status::StatusArgs),
    /// Print hits as the running agent receives them.
    Tail(status::TailArgs),
    /// Print the URL (with its access token) of the running agent's web UI.
    Ui(ui::UiArgs),
}

/// Parses the command line, sets up logging and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        None => run::run(cli.run),
        Some(Command::Run(args)) => run::run(*args),
        Some(Command::Inspect(args)) => inspect::run(args),
        Some(Command::Trace(args)) => trace::run(args),
        Some(Command::Doctor(args)) => doctor::run(args),
        Some(Command::Break(cmd)) => breakcmd::run(cmd),
        Some(Command::Log(cmd)) => breakcmd::run_log(cmd),
        Some(Command::Status(args)) => status::run(args),
        Some(Command::Tail(args)) => status::tail(args),
        Some(Command::Ui(args)) => ui::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("libdebugger-agent: error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, "outer: inner", leaving out a cause whose text the message before
/// it already contains (most of our errors name their source in their own text).
fn error_chain(err: &anyhow::Error) -> String {
    let mut msg = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}

/// Logs go to stderr; `LIBDEBUGGER_LOG` takes an env-filter expression (default `info`). When
/// stderr is the journal (systemd sets `$JOURNAL_STREAM` to its device and inode), each line
/// starts with its syslog priority (`<3>` error … `<7>` debug), which journald records as the
/// entry's level (`journalctl -p warning`), and carries no timestamp or colours of its own.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIBDEBUGGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if journal::stderr_is_journal() {
        builder
            .with_ansi(false)
            .event_format(journal::Prefixed(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the configuration file /x: {source}")]
    struct Named {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = anyhow::Error::new(Named { source: io() });
        assert_eq!(
            error_chain(&err),
            format!("cannot read the configuration file /x: {}", io())
        );
        let err = anyhow::Error::new(io()).context("opening /y");
        assert_eq!(error_chain(&err), format!("opening /y: {}", io()));
    }
}
