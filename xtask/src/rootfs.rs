//! Debian root filesystems for the tests, built with `mmdebstrap` and cached.
//!
//! Two uses: Debian unstable's CPython builds (3.13, 3.14, 3.15: glibc newer than this host's, so
//! they only run inside their own root) for the container tests, and a fresh Debian stable root
//! for the package install test. A root is built once and kept in a cache directory outside the
//! clone (`/var/cache/libdebugger-test-rootfs/`, or `$LIBDEBUGGER_ROOTFS_CACHE`); it is rebuilt
//! only when missing or when its spec (suite, mirror, package list) changes. The spec is written
//! last, so an interrupted build is never mistaken for a finished one.
//!
//! A machine that cannot reach the archive gets one line saying which tests cannot run and why;
//! the tests see no `LIBDEBUGGER_ROOTFS_<NAME>` variable and report themselves as skipped. With
//! `LIBDEBUGGER_REQUIRE_ROOTFS=1` (set by `.ci/run`, whose machine has the access) a failed build
//! fails the run instead.
use crate::util::{ensure_debian_packages, run};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One root filesystem the tests use.
pub struct Spec {
    /// Short name: the cache folder and the environment variable `LIBDEBUGGER_ROOTFS_<NAME>`.
    pub name: &'static str,
    /// Debian suite, e.g. `sid` or `bookworm`.
    pub suite: &'static str,
    /// Packages installed on top of the `apt` variant.
    pub packages: &'static [&'static str],
    /// Which tests need it (for the "could not run" line).
    pub used_by: &'static str,
}

/// Debian unstable's interpreters for the container tests (issue 11).
pub const SID_PYTHONS: Spec = Spec {
    name: "sid-python",
    suite: "sid",
    packages: &["python3.13", "python3.14", "python3.15"],
    used_by: "the container tests on Debian unstable's CPython 3.13, 3.14 and 3.15",
};

/// The roots `cargo xtask test` builds and hands to `cargo test`.
pub const FOR_TESTS: &[&Spec] = &[&SID_PYTHONS];

/// The file that records what a finished root was built from.
const SPEC_FILE: &str = ".libdebugger-rootfs-spec";

/// The environment variable through which the tests find a root.
pub fn env_var(spec: &Spec) -> String {
    format!(
        "LIBDEBUGGER_ROOTFS_{}",
        spec.name.to_ascii_uppercase().replace('-', "_")
    )
}

fn cache_dir() -> PathBuf {
    std::env::var_os("LIBDEBUGGER_ROOTFS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/libdebugger-test-rootfs"))
}

/// The Debian mirror this host's apt already uses (the first `URIs:` or `deb` line naming a
/// `/debian` archive), so that the root comes from the same place as the host's packages.
fn host_mirror() -> String {
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        texts.extend(paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    texts.extend(std::fs::read_to_string("/etc/apt/sources.list").ok());
    for text in &texts {
        for line in text.lines().map(str::trim) {
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            };
            if let Some(uri) = uri.filter(|u| u.trim_end_matches('/').ends_with("/debian")) {
                return uri.to_string();
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

fn spec_text(spec: &Spec, mirror: &str) -> String {
    format!(
        "suite={}\nmirror={mirror}\npackages={}\n",
        spec.suite,
        spec.packages.join(",")
    )
}

/// Builds `spec`'s root if it is missing or out of date and returns its path; `Ok(None)` (after
/// one line on stderr) when it cannot be built here and the run does not require it.
pub fn ensure(spec: &Spec) -> Result<Option<PathBuf>> {
    match build(spec) {
        Ok(path) => Ok(Some(path)),
        Err(e) if std::env::var("LIBDEBUGGER_REQUIRE_ROOTFS").as_deref() == Ok("1") => {
            Err(e.context(format!("could not build the {} root filesystem", spec.name)))
        }
        Err(e) => {
            eprintln!(
                "xtask: SKIPPING {}: the {} root filesystem (Debian {}) could not be built: {e:#}",
                spec.used_by, spec.name, spec.suite
            );
            Ok(None)
        }
    }
}

fn build(spec: &Spec) -> Result<PathBuf> {
    let dir = cache_dir().join(spec.name);
    let mirror = host_mirror();
    let want = spec_text(spec, &mirror);
    if std::fs::read_to_string(dir.join(SPEC_FILE)).ok().as_deref() == Some(want.as_str()) {
        return Ok(dir);
    }
    ensure_debian_packages(&["mmdebstrap"])?;
    if dir.exists() {
        eprintln!(
            "xtask: rebuilding {} (missing or built from another spec)",
            dir.display()
        );
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove the old {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.parent().unwrap_or(Path::new("/")))?;
    let started = std::time::Instant::now();
    let partial = dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    let result = run(Command::new("mmdebstrap")
        .args(["--variant=apt", "--quiet"])
        // The archive may be a frozen snapshot whose Release file has expired.
        .arg("--aptopt=Acquire::Check-Valid-Until \"false\"")
        .arg(format!("--include={}", spec.packages.join(",")))
        .arg(spec.suite)
        .arg(&partial)
        .arg(&mirror)
        .stdin(std::process::Stdio::null()));
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&partial);
        bail!("mmdebstrap from {mirror} failed: {e:#}");
    }
    std::fs::rename(&partial, &dir)?;
    std::fs::write(dir.join(SPEC_FILE), want)?;
    eprintln!(
        "xtask: built {} in {:.0} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_text_changes_with_the_package_list() {
        let a = spec_text(&SID_PYTHONS, "http://m/debian");
        let other = Spec {
            packages: &["python3.14"],
            ..SID_PYTHONS
        };
        assert_ne!(a, spec_text(&other, "http://m/debian"));
        assert!(a.contains("packages=python3.13,python3.14,python3.15"));
        assert_eq!(env_var(&SID_PYTHONS), "LIBDEBUGGER_ROOTFS_SID_PYTHON");
    }
}
