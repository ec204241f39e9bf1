//! The CPython interpreters the tests run against.
use std::path::PathBuf;

/// One interpreter under test.
#[derive(Clone, Debug)]
pub struct Interpreter {
    /// Short label used in test output, e.g. `pyenv-3.12.1` or `debian-3.11`.
    pub label: String,
    pub path: PathBuf,
    /// (major, minor)
    pub version: (u32, u32),
}

/// The supported interpreters present on this machine: pyenv's 3.11.7, 3.12.1, 3.13.0 and
/// Debian's static `/usr/bin/python3.11`. Missing ones are reported once on stderr.
pub fn supported() -> Vec<Interpreter> {
    let home = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))
        .unwrap_or_else(|| PathBuf::from("/root/.pyenv"));
    let mut out = Vec::new();
    for (v, minor) in [("3.11.7", 11), ("3.12.1", 12), ("3.13.0", 13)] {
        let path = home.join("versions").join(v).join("bin/python3");
        push(&mut out, format!("pyenv-{v}"), path, (3, minor));
    }
    push(
        &mut out,
        "debian-3.11".into(),
        PathBuf::from("/usr/bin/python3.11"),
        (3, 11),
    );
    out
}

/// pyenv's 3.10.13, for the "unsupported version" tests.
pub fn python310() -> Option<Interpreter> {
    let mut v = Vec::new();
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    push(
        &mut v,
        "pyenv-3.10.13".into(),
        home.join(".pyenv/versions/3.10.13/bin/python3"),
        (3, 10),
    );
    v.pop()
}

fn push(out: &mut Vec<Interpreter>, label: String, path: PathBuf, version: (u32, u32)) {
    if path.exists() {
        out.push(Interpreter {
            label,
            path,
            version,
        });
    } else {
        eprintln!(
            "skipping {label}: {} is not installed on this machine",
            path.display()
        );
    }
}
