//! `status` and `tail`: talk to the running agent over its control socket.
use clap::Args;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// Print raw JSON lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: StatusArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`status` is not available yet in this build")
}

pub fn tail(_args: TailArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`tail` is not available yet in this build")
}
