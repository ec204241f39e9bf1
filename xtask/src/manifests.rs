//! The Kubernetes manifests' validator: `kubernetes-validate` from PyPI, in a virtualenv under
//! `target/tools/` (created once, reinstalled only when the pinned version changes). The test
//! that runs it on `deploy/kubernetes/` finds it through `LIBDEBUGGER_KUBERNETES_VALIDATE`.
use crate::ebpf::tools_dir;
use crate::util::{ensure_debian_packages, output, run};
use anyhow::Result;
use std::path::PathBuf;
use std::process::Command;

/// The validator's release (its schemas go up to Kubernetes 1.37).
const VERSION: &str = "1.37.0";
/// The environment variable the tests read.
pub const ENV_VAR: &str = "LIBDEBUGGER_KUBERNETES_VALIDATE";

/// Returns the `kubernetes-validate` executable, installing it if missing.
pub fn ensure_validator() -> Result<PathBuf> {
    let venv = tools_dir().join("kubernetes-validate");
    let bin = venv.join("bin/kubernetes-validate");
    if output(Command::new(&bin).arg("--version")).is_some_and(|v| v.contains(VERSION)) {
        return Ok(bin);
    }
    // Debian's python3 needs python3-venv for `-m venv` (ensurepip).
    ensure_debian_packages(&["python3", "python3-venv"])?;
    if venv.exists() {
        std::fs::remove_dir_all(&venv)?;
    }
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("kubernetes-validate=={VERSION}")))?;
    Ok(bin)
}
