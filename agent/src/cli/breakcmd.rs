//! `break add|list|rm`: talks to the running agent over its control socket.
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum BreakCommand {
    /// Add a breakpoint: FILE:LINE, optionally with a condition.
    Add {
        /// FILE:LINE (FILE absolute, or a suffix at a path boundary).
        location: String,
        /// Condition (a Python expression evaluated without side effects).
        #[arg(long = "if", value_name = "EXPR")]
        condition: Option<String>,
        /// Id of the breakpoint (default: derived from FILE:LINE).
        #[arg(long)]
        id: Option<String>,
    },
    /// List breakpoints and their status.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a breakpoint by id.
    Rm { id: String },
}

pub fn run(_cmd: BreakCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`break` is not available yet in this build")
}
