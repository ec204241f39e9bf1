//! `ui`: prints the running agent's web UI URL with its access token (like `jupyter server
//! list`), read from the root-only file the agent writes at start.
use clap::Args;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct UiArgs {}

pub fn run(_args: UiArgs) -> anyhow::Result<ExitCode> {
    println!("{}", crate::ui::read_url(&crate::paths::ui_url_file())?);
    Ok(ExitCode::SUCCESS)
}
