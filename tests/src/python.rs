//! The CPython interpreters the tests run against: the host's four, and Debian unstable's three
//! inside a container.
//!
//! A container interpreter lives in the root filesystem `cargo xtask test` builds
//! (`LIBDEBUGGER_ROOTFS_SID_PYTHON`, see `xtask/src/rootfs.rs`): glibc 2.42, static non-PIE
//! stripped executables. [`Interpreter::command`] starts it the way a container runtime would:
//! `unshare --mount --pid --fork --kill-child ldbg-container-init ...` gives it its own mount and
//! pid namespaces and `pivot_root`s into the root (`src/bin/container_init.rs`), so its files are
//! reachable from the host only through `/proc/<pid>/root` and its pid inside (2) is not the
//! host's. The host's temporary directory and the workspace are visible inside at `/mnt/host/…`
//! ([`Interpreter::guest`] translates paths for arguments and environment variables).
use anyhow::Result;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One interpreter under test.
#[derive(Clone, Debug)]
pub struct Interpreter {
    /// Short label used in test output, e.g. `pyenv-3.12.1`, `debian-3.11`, `sid-3.14`.
    pub label: String,
    /// The executable: a host path, or for a container interpreter its path inside the root.
    pub path: PathBuf,
    /// (major, minor)
    pub version: (u32, u32),
    /// The root filesystem of a container interpreter (`None`: it runs on the host).
    pub root: Option<PathBuf>,
}

/// Where host directories appear inside a test container.
pub const HOST_IN_CONTAINER: &str = "/mnt/host";

/// The environment variable naming the Debian unstable root (set by `cargo xtask test`).
pub const SID_ROOTFS_ENV: &str = "LIBDEBUGGER_ROOTFS_SID_PYTHON";

impl Interpreter {
    /// True for an interpreter that runs in a container.
    pub fn in_container(&self) -> bool {
        self.root.is_some()
    }

    /// The path under which the interpreter sees the host path `host`: the same path on the
    /// host, `/mnt/host/<host>` in a container (for paths under the shared directories).
    pub fn guest(&self, host: impl AsRef<OsStr>) -> OsString {
        let host = host.as_ref();
        if self.root.is_none() {
            return host.to_owned();
        }
        let p = Path::new(host);
        if shared_dirs().iter().any(|d| p.starts_with(d)) {
            let mut s = OsString::from(HOST_IN_CONTAINER);
            s.push(host);
            s
        } else {
            host.to_owned()
        }
    }

    /// A command that runs this interpreter in `cwd` (a host path; translated with
    /// [`Interpreter::guest`]). Arguments added to it go to the interpreter; path arguments and
    /// environment values must be translated with [`Interpreter::guest`] by the caller.
    pub fn command(&self, cwd: &Path) -> Command {
        self.command_with(cwd, &[])
    }

    /// [`Interpreter::command`] with `wrapper` (e.g. `["unshare", "--mount", "--"]`, which must
    /// exec what follows it) between the container's init and the interpreter.
    pub fn command_with(&self, cwd: &Path, wrapper: &[&str]) -> Command {
        let Some(root) = &self.root else {
            let mut c = match wrapper.split_first() {
                Some((first, rest)) => {
                    let mut c = Command::new(first);
                    c.args(rest).arg(&self.path);
                    c
                }
                None => Command::new(&self.path),
            };
            c.current_dir(cwd);
            return c;
        };
        let mut c = Command::new("unshare");
        c.args(["--mount", "--pid", "--fork", "--kill-child", "--"])
            .arg(container_init())
            .arg(root)
            .arg(self.guest(cwd))
            .args(shared_dirs())
            .arg("--")
            .args(wrapper)
            .arg(&self.path)
            // The host's working directory of `unshare` itself.
            .current_dir("/");
        c
    }

    /// The host pid of the interpreter started as `child` by [`Interpreter::command`]: `child`
    /// itself on the host; in a container the descendant running the interpreter (waited for,
    /// with a deadline, until it has exec'd).
    pub fn python_pid(&self, child: u32) -> Result<i32> {
        if self.root.is_none() {
            return Ok(child as i32);
        }
        self.python_descendant(child)
    }

    /// The first descendant of `child` running a Python interpreter (e.g. under `unshare
    /// --fork`), waited for with a deadline.
    pub fn python_descendant(&self, child: u32) -> Result<i32> {
        let name = "python";
        crate::wait::until_every(
            &format!("{}: a process running {name} under pid {child}", self.label),
            Duration::from_secs(30),
            Duration::from_millis(2),
            || descendant_named(child as i32, name).ok_or("none yet"),
        )
    }
}

/// Host directories shared with the test containers: the temporary directory (the tests' files)
/// and the workspace (scripts and fixtures).
pub fn shared_dirs() -> Vec<PathBuf> {
    let mut v = vec![std::env::temp_dir(), crate::agent::workspace_root()];
    v.dedup();
    v
}

/// `ldbg-container-init`, built by `cargo test` next to the test executables.
fn container_init() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("ldbg-container-init"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("ldbg-container-init"))
}

/// The first descendant of `pid` (breadth first) whose executable's name starts with `name`.
fn descendant_named(pid: i32, name: &str) -> Option<i32> {
    descendant(pid, |p| {
        std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| {
            e.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(name))
        })
    })
}

/// The host pid of the process that `ns_pid` names in the pid namespace of `ancestor` (its own
/// descendant, e.g. a child a container's Python forked and printed `os.getpid()` of).
pub fn host_pid_of(ancestor: i32, ns_pid: i32) -> Option<i32> {
    let want = ns_pid.to_string();
    descendant(ancestor, |p| {
        std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("NSpid:"))
                .and_then(|l| l.split_whitespace().last())
                == Some(want.as_str())
        })
    })
}

/// The first proper descendant of `pid` (breadth first, at most 64 looked at) matching `hit`.
fn descendant(pid: i32, hit: impl Fn(i32) -> bool) -> Option<i32> {
    let mut queue = vec![pid];
    let mut i = 0;
    while i < queue.len() && i < 64 {
        let p = queue[i];
        i += 1;
        if p != pid && hit(p) {
            return Some(p);
        }
        let tasks = std::fs::read_dir(format!("/proc/{p}/task")).ok()?;
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            queue.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    None
}

/// The supported interpreters present on this machine: pyenv's 3.11.7, 3.12.1, 3.13.0,
/// Debian's static `/usr/bin/python3.11`, and Debian unstable's 3.13, 3.14 and 3.15 in a
/// container. Missing ones are reported once on stderr.
pub fn supported() -> Vec<Interpreter> {
    let mut out = host();
    out.extend(container());
    out
}

/// The host's interpreters only.
pub fn host() -> Vec<Interpreter> {
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

/// Debian unstable's 3.13, 3.14 and 3.15, run in a container on the root named by
/// [`SID_ROOTFS_ENV`]; none (with one line saying why) when it is not set.
pub fn container() -> Vec<Interpreter> {
    let Some(root) = std::env::var_os(SID_ROOTFS_ENV).map(PathBuf::from) else {
        eprintln!(
            "skipping the container interpreters (Debian unstable's 3.13, 3.14, 3.15): \
             {SID_ROOTFS_ENV} is not set (`cargo xtask test` builds that root and sets it)"
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for minor in [13, 14, 15] {
        let path = PathBuf::from(format!("/usr/bin/python3.{minor}"));
        let label = format!("sid-3.{minor}");
        let on_host = root.join(path.strip_prefix("/").unwrap_or(&path));
        if on_host.exists() {
            out.push(Interpreter {
                label,
                path,
                version: (3, minor),
                root: Some(root.clone()),
            });
        } else {
            eprintln!(
                "skipping {label}: {} is not in the root {}",
                path.display(),
                root.display()
            );
        }
    }
    out
}

/// The container interpreter of minor version `minor`, or `None` with one line saying why.
pub fn container_minor(minor: u32) -> Option<Interpreter> {
    container().into_iter().find(|i| i.version == (3, minor))
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
            root: None,
        });
    } else {
        eprintln!(
            "skipping {label}: {} is not installed on this machine",
            path.display()
        );
    }
}

/// The interpreter a single-interpreter end-to-end test uses: pyenv's 3.12.1 if present, else
/// the first supported one.
pub fn main_interpreter() -> anyhow::Result<Interpreter> {
    let all = supported();
    all.iter()
        .find(|i| i.label == "pyenv-3.12.1")
        .or(all.first())
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no supported CPython (3.11+) on this machine"))
}
