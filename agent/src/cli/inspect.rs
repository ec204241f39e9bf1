//! `inspect <pid> [--json]`.
use clap::Args;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The process to inspect.
    pub pid: i32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: InspectArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`inspect` is not available yet in this build")
}
