//! `run` (the default subcommand): the daemon.
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Local breakpoints file (TOML, or JSON as PostHog's active-breakpoints endpoint returns).
    #[arg(long, value_name = "FILE")]
    pub breakpoints: Option<PathBuf>,
    /// Write events as JSON Lines to FILE (`-` = stdout).
    #[arg(long, value_name = "FILE")]
    pub events_file: Option<PathBuf>,
    #[command(flatten)]
    pub posthog: crate::posthog::PosthogArgs,
}

pub fn run(_args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`run` is not available yet in this build")
}
