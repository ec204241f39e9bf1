//! `trace <pid> --duration <seconds> [--json]`.
use clap::Args;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The process to trace.
    pub pid: i32,
    /// How long to count, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: TraceArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`trace` is not available yet in this build")
}
