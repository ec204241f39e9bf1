//! `cargo xtask build-wheel`: builds the `libdebugger` Python package (`python/`) with maturin
//! into `target/wheels/` (one abi3 wheel for CPython 3.11+).
//!
//! maturin comes from PyPI, pinned, into a virtual environment under `target/tools/` (created
//! once; reinstalled only when the pinned version is not the one there). The package links
//! the agent's library, whose build script embeds the eBPF object: that is built first.
use crate::util::{output, root, run};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The maturin release the wheel is built with.
pub const MATURIN_VERSION: &str = "1.16.0";

/// Interpreters the maturin environment may be created with, first found wins (Debian's
/// `python3.11` and its `venv` module are installed by the xtask's Debian package list).
const VENV_PYTHONS: &[&str] = &["/usr/bin/python3.11", "/usr/bin/python3"];

/// Where the built wheels go.
pub fn wheels_dir() -> PathBuf {
    root().join("target/wheels")
}

fn venv_dir() -> PathBuf {
    root().join("target/tools/maturin-venv")
}

/// The maturin executable, installed if missing or of another version.
pub fn ensure_maturin() -> Result<PathBuf> {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    if !python.exists() {
        // Debian's python3.11 needs its `venv` module from a package of its own.
        crate::util::ensure_debian_packages(&["python3.11", "python3.11-venv"])?;
        let base = VENV_PYTHONS
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "no Python to create {} with (looked for {})",
                    venv.display(),
                    VENV_PYTHONS.join(", ")
                )
            })?;
        std::fs::create_dir_all(venv.parent().unwrap_or(&venv))?;
        run(Command::new(base).args(["-m", "venv"]).arg(&venv))?;
    }
    let maturin = venv.join("bin/maturin");
    let have = output(Command::new(&maturin).arg("--version"));
    if !have.is_some_and(|v| v.split_whitespace().nth(1) == Some(MATURIN_VERSION)) {
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("maturin=={MATURIN_VERSION}"),
        ]))?;
    }
    Ok(maturin)
}

/// Builds the wheel (release, stripped) and returns its path.
pub fn build() -> Result<PathBuf> {
    crate::ebpf::build()?;
    let maturin = ensure_maturin()?;
    let out = wheels_dir();
    std::fs::create_dir_all(&out)?;
    let version = env!("CARGO_PKG_VERSION");
    // Only this build's wheel may be found afterwards.
    for e in std::fs::read_dir(&out)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("libdebugger-{version}-")) && name.ends_with(".whl") {
            std::fs::remove_file(e.path())?;
        }
    }
    run(Command::new(&maturin)
        .current_dir(root())
        .args(["build", "--release", "--strip", "--manifest-path"])
        .arg(root().join("python/Cargo.toml"))
        .arg("--out")
        .arg(&out)
        .env("CARGO", env!("CARGO")))?;
    let wheel = std::fs::read_dir(&out)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().map(|n| n.to_string_lossy()).is_some_and(|n| {
                n.starts_with(&format!("libdebugger-{version}-")) && n.ends_with(".whl")
            })
        });
    match wheel {
        Some(w) => {
            eprintln!("xtask: wheel: {}", w.display());
            Ok(w)
        }
        None => bail!(
            "maturin finished but no libdebugger-{version}-*.whl is in {}",
            out.display()
        ),
    }
}
