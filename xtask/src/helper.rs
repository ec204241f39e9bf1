//! `cargo xtask build-helper`: builds the PyO3 helper and stages it as an importable module.
use crate::util::{root, run};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Directory where the helper is staged as `libdebugger_helper.abi3.so` (put it on PYTHONPATH).
pub fn staged_dir() -> PathBuf {
    root().join("target/helper")
}

/// Where the helper is built: its own target directory, because it is built as a Python
/// extension module (`PYO3_BUILD_EXTENSION_MODULE`), which changes how PyO3 itself is built; in
/// the shared `target/` every switch between this and `cargo test` would rebuild PyO3.
fn target_dir() -> PathBuf {
    root().join("target/helper-build")
}

/// Builds the helper in release mode and copies it to [`staged_dir`]. Returns the staged path.
///
/// As an extension module it does not link `libpython` (no `DT_NEEDED` entry): the symbols come
/// from the interpreter it is loaded into, whichever version, static or shared. Linked, it would
/// need the build machine's `libpython3.11.so.1.0` in every target (absent in a container, and a
/// second interpreter mapped into a 3.12+ process where it exists).
pub fn build() -> Result<PathBuf> {
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .env("PYO3_BUILD_EXTENSION_MODULE", "1")
        .arg("build")
        .arg("--target-dir")
        .arg(target_dir())
        .args(["--release", "-p", "libdebugger-helper"]))?;
    let built = target_dir().join("release/liblibdebugger_helper.so");
    let dir = staged_dir();
    std::fs::create_dir_all(&dir)?;
    let staged = dir.join("libdebugger_helper.abi3.so");
    // Copy to a temporary name and rename, so a process that has the old file mapped keeps it.
    let tmp = dir.join(".libdebugger_helper.abi3.so.tmp");
    std::fs::copy(&built, &tmp).with_context(|| format!("copying {}", built.display()))?;
    // The agent copies the helper into a memfd in every process it debugs: without its debug
    // information it is ~2.4 MB instead of ~15 MB. The dynamic symbols (ldbg_emit, ldbg_attach,
    // LDBG_CONTROL, PyInit_libdebugger_helper) stay.
    run(Command::new("strip").arg("--strip-unneeded").arg(&tmp))?;
    std::fs::rename(&tmp, &staged)?;
    eprintln!("xtask: helper: {}", staged.display());
    Ok(staged)
}
