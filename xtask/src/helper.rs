//! `cargo xtask build-helper`: builds the PyO3 helper and stages it as an importable module.
use crate::util::{root, run};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Directory where the helper is staged as `libdebugger_helper.abi3.so` (put it on PYTHONPATH).
pub fn staged_dir() -> PathBuf {
    root().join("target/helper")
}

/// Builds the helper in release mode and copies it to [`staged_dir`]. Returns the staged path.
///
/// Built as an extension module (`PYO3_BUILD_EXTENSION_MODULE`): it takes CPython's symbols from
/// the process it is loaded into instead of naming the build machine's `libpython3.11.so` as a
/// dependency, which made the loader pull a second, wrong libpython into 3.12+ processes (or
/// fail where no libpython3.11 is installed) and the `.deb` depend on libpython3.11. (Only the
/// release cdylib: the helper's unit tests are executables and do link libpython.)
pub fn build() -> Result<PathBuf> {
    run(Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "--release", "-p", "libdebugger-helper"])
        .env("PYO3_BUILD_EXTENSION_MODULE", "1"))?;
    let built = root().join("target/release/liblibdebugger_helper.so");
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
