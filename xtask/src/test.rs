//! `cargo xtask test`: everything CI checks, in the order that fails fastest.
use crate::util::{root, run};
use crate::{ebpf, helper};
use anyhow::Result;
use std::process::Command;

pub fn run_all(args: &[String]) -> Result<()> {
    let cargo = env!("CARGO");
    run(Command::new(cargo)
        .current_dir(root())
        .args(["fmt", "--all", "--check"]))?;
    ebpf::build()?;
    ebpf::clippy()?;
    helper::build()?;
    run(Command::new(cargo).current_dir(root()).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(Command::new(cargo)
        .current_dir(root())
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(args))?;
    Ok(())
}
