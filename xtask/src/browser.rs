//! What the web UI's browser test (tests/tests/ui_browser.rs) needs besides the Debian packages
//! of [`crate::util::DEBIAN_PACKAGES`] (chromium, nodejs): npm, and playwright-core at the
//! version pinned in tests/browser/package-lock.json (`npm ci`, into tests/browser/node_modules).
use crate::util::{ensure_debian_packages, output, root, run};
use anyhow::Result;
use std::process::Command;

pub fn ensure() -> Result<()> {
    // Debian ships npm apart from nodejs; NodeSource's nodejs package carries its own (and
    // conflicts with Debian's npm), so the package is installed only when the command is missing.
    if output(Command::new("npm").arg("--version")).is_none() {
        ensure_debian_packages(&["npm"])?;
    }
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(root().join("tests/browser")))
}
