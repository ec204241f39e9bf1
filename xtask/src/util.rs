//! Small helpers for running commands and locating the workspace.
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// Runs `cmd`, echoing it first; fails with the exit status if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", render(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{}`", render(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", render(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout, or None if it cannot start or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Debian packages the tests and the demo use: gcc/libc6-dev (the injection tests build a small
/// stand-in library), util-linux (`unshare` for the mount-namespace test), procps, and Debian's
/// own static `python3.11` (one of the interpreters under test), binutils (`strip` for the
/// staged helper), chromium and nodejs (the web UI's browser test drives Chromium with
/// playwright-core; see `crate::browser`).
pub const DEBIAN_PACKAGES: &[&str] = &[
    "gcc",
    "libc6-dev",
    "util-linux",
    "procps",
    "python3.11",
    "binutils",
    "chromium",
    "nodejs",
];

/// Installs the Debian packages in `names` that are missing (idempotent; needs root).
pub fn ensure_debian_packages(names: &[&str]) -> Result<()> {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", n]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
