//! `doctor [--json]`.
use clap::Args;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: DoctorArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`doctor` is not available yet in this build")
}
