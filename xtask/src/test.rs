//! `cargo xtask test`: everything CI checks, in the order that fails fastest.
use crate::util::{root, run};
use crate::{browser, dist, ebpf, helper, manifests, rootfs, wheel};
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
    // The Python package's tests install it into a virtual environment per interpreter.
    wheel::build()?;
    browser::ensure()?;
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
    // Root filesystems for the container tests and the package install test; the tests find
    // them through the environment and say they are skipped when one is missing.
    let mut test = Command::new(cargo);
    for spec in rootfs::FOR_TESTS {
        if let Some(path) = rootfs::ensure(spec)? {
            test.env(rootfs::env_var(spec), path);
        }
    }
    // The release artifacts (the install test installs the .deb) and the manifests' validator.
    let artifacts = dist::build()?;
    test.env(dist::DEB_ENV_VAR, &artifacts.deb)
        .env(dist::TARBALL_ENV_VAR, &artifacts.tarball)
        .env(manifests::ENV_VAR, manifests::ensure_validator()?);
    run(test
        .current_dir(root())
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(args))?;
    Ok(())
}
