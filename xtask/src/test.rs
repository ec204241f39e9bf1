//! `cargo xtask test`: everything CI checks, in the order that fails fastest.
use crate::util::{root, run};
use crate::{ebpf, helper, rootfs};
use anyhow::Result;
use std::process::Command;

pub fn run_all(args: &[String]) -> Result<()> {
    let cargo = env!("CARGO");
    crate::util::ensure_debian_packages(crate::util::DEBIAN_PACKAGES)?;
    run(Command::new(cargo)
        .current_dir(root())
        .args(["fmt", "--all", "--check"]))?;
    ebpf::build()?;
    ebpf::clippy()?;
    helper::build()?;
    // The end-to-end tests run the agent binary from target/debug.
    run(Command::new(cargo)
        .current_dir(root())
        .args(["build", "-p", "libdebugger-agent"]))?;
    run(Command::new(cargo).current_dir(root()).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Root filesystems for the container tests; the tests find them through the environment and
    // say they are skipped when one is missing.
    let mut test = Command::new(cargo);
    #[allow(clippy::single_element_loop)] // more roots come (issue 16's bookworm)
    for spec in [&rootfs::SID_PYTHONS] {
        if let Some(path) = rootfs::ensure(spec)? {
            test.env(rootfs::env_var(spec), path);
        }
    }
    run(test
        .current_dir(root())
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(args))?;
    Ok(())
}
