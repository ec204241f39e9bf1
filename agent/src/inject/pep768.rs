//! CPython 3.14+: PEP 768's "safe external debugger interface" (`sys.remote_exec` protocol),
//! used instead of ptrace when the interpreter offers it.
//!
//! Tested end to end on Debian unstable's 3.14.10 and 3.15.2 (`tests/tests/inject_e2e.rs`, the
//! `remote_exec_*` tests). Every offset is read from the interpreter's own `_Py_DebugOffsets`,
//! with the group positions of its version's row (`libdebugger_common::cpython::VERSIONS`) and
//! validated before use; when anything does not match, [`probe`] says so and the caller falls
//! back to ptrace.
//!
//! Protocol (CPython's `Python/remote_debug.h` / `sys.remote_exec`):
//! 1. `_PyRuntime` starts with `_Py_DebugOffsets` (cookie `xdebugpy`, `version` =
//!    `PY_VERSION_HEX`); it lives in the `.PyRuntime` ELF section of libpython or of a static
//!    executable.
//! 2. `interp = *(runtime + runtime_state.interpreters_head)`; remote debugging must be enabled:
//!    `*(int *)(interp + debugger_support.remote_debugging_enabled)` (off with
//!    `PYTHON_DISABLE_REMOTE_DEBUG`, `-X disable-remote-debug` or a build without it).
//! 3. For a thread state `ts`: write the script path (NUL-terminated, shorter than
//!    `debugger_script_path_size`) at `ts + remote_debugger_support + debugger_script_path`,
//!    then `int32 1` at `ts + remote_debugger_support + debugger_pending_call`, then set
//!    `_PY_EVAL_PLEASE_STOP_BIT` in `ts + eval_breaker`. At its next eval-breaker check that
//!    thread runs the script with the GIL held.
//!
//! The request goes to *every* thread state, not only the main thread: a thread blocked in C
//! (the main thread in `Event().wait()`) never checks its eval breaker, and pending work must
//! not depend on the main thread. The script is idempotent (`ldbg_attach` is), so whichever
//! thread runs it first loads the helper and the others find it loaded. A process whose threads
//! all stay blocked never runs it: [`super::inject`] then withdraws the request and falls back
//! to ptrace.
//!
//! The script and the helper are staged in a private directory under the *target's* `/tmp`
//! (through `/proc/<pid>/root`, so this works across mount namespaces), owned by the target's
//! user, and removed once the helper is mapped.
//!
//! Known race (shared with CPython's own client): `eval_breaker` is updated with a
//! read-modify-write through `process_vm_writev`, not an atomic OR; a bit the target sets in
//! between can be lost. Every other bit is re-derived by the interpreter (GIL drop requests are
//! re-sent on the next timeout), so the effect is a delay, not a hang.
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::maps::{self, Mapping};
use crate::remote::{self, RemoteError};
use libdebugger_common::cpython;

/// `_PY_EVAL_PLEASE_STOP_BIT` (Include/internal/pycore_ceval.h, 3.13–3.14).
const EVAL_PLEASE_STOP_BIT: u64 = 1 << 5;
/// File name the staged helper gets; [`super`] recognises a mapping with this name as the helper.
pub const STAGED_HELPER_NAME: &str = "libdebugger-helper.so";
/// Why the PEP 768 path cannot be used or failed.
#[derive(Debug, thiserror::Error)]
pub enum Pep768Error {
    /// The process has remote debugging disabled.
    #[error(
        "process {pid} has remote debugging disabled (PYTHON_DISABLE_REMOTE_DEBUG or -X disable-remote-debug)"
    )]
    Disabled { pid: i32 },
    /// Free-threaded builds are not supported.
    #[error("process {pid} runs a free-threaded CPython build, which libdebugger does not support")]
    FreeThreaded { pid: i32 },
    /// The offsets table does not have a layout this code knows.
    #[error("process {pid}: unrecognised _Py_DebugOffsets layout for version {version:#x}: {what}")]
    UnknownLayout {
        pid: i32,
        version: u64,
        what: String,
    },
    /// Reading or writing the target failed.
    #[error("cannot access memory of process {pid} at {addr:#x}")]
    Memory {
        pid: i32,
        addr: u64,
        #[source]
        source: RemoteError,
    },
    /// Staging the script or helper in the target's filesystem failed.
    #[error("cannot stage files for process {pid} in {dir}")]
    Stage {
        pid: i32,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The script path does not fit the interpreter's buffer.
    #[error("script path {path} is longer than the interpreter's {size}-byte buffer")]
    PathTooLong { path: String, size: u64 },
}

/// What the interpreter says about itself: where to write a remote-exec request.
#[derive(Clone, Debug)]
pub struct DebugSupport {
    pub pid: i32,
    /// `PY_VERSION_HEX` of the target.
    pub version: u64,
    /// The (main) interpreter state.
    interp: u64,
    enabled: u64,
    threads_head: u64,
    threads_main: u64,
    tstate_next: u64,
    eval_breaker: u64,
    support: u64,
    pending: u64,
    path: u64,
    path_size: u64,
}

/// `PY_VERSION_HEX` from the target's `_Py_DebugOffsets` (CPython 3.13+), if it has them.
pub fn debug_offsets_version(pid: i32, maps: &[Mapping]) -> Option<u64> {
    let runtime = runtime_address(pid, maps)?;
    let mut head = [0u8; 16];
    remote::read(pid, runtime, &mut head).ok()?;
    (&head[..8] == b"xdebugpy")
        .then(|| u64::from_le_bytes(head[8..16].try_into().unwrap_or_default()))
}

/// Reads `_Py_DebugOffsets` of `pid`. `Ok(None)`: not a CPython ≥ 3.14 (use ptrace).
pub fn probe(pid: i32, maps: &[Mapping]) -> Result<Option<DebugSupport>, Pep768Error> {
    let Some(runtime) = runtime_address(pid, maps) else {
        return Ok(None);
    };
    let mem = |addr: u64| move |source| Pep768Error::Memory { pid, addr, source };
    let mut head = [0u8; 24];
    remote::read(pid, runtime, &mut head).map_err(mem(runtime))?;
    let Some((version, free_threaded)) = cpython::debug_offsets_header(&head) else {
        return Ok(None);
    };
    let Some(layout) = cpython::row(3, (version >> 16) as u8)
        .filter(|_| version >> 24 == 3)
        .and_then(|row| match &row.offsets {
            cpython::OffsetsSource::DebugOffsets(l) if l.debugger_support.is_some() => Some(l),
            _ => None,
        })
    else {
        // Before 3.14 (no remote exec), or a version without a row (inspect refuses it).
        return Ok(None);
    };
    if free_threaded {
        return Err(Pep768Error::FreeThreaded { pid });
    }
    let mut raw = vec![0u8; cpython::debug_offsets_len(layout)];
    remote::read(pid, runtime, &mut raw).map_err(mem(runtime))?;
    let d = cpython::parse_debug_offsets(&raw, layout).map_err(|e| Pep768Error::UnknownLayout {
        pid,
        version,
        what: format!("{e:?}"),
    })?;
    let (Some(r), Some(threads_main)) = (d.remote_debug, d.threads_main) else {
        return Ok(None);
    };
    let interp_ptr = runtime + d.interpreters_head;
    let interp = remote::read_u64(pid, interp_ptr).map_err(mem(interp_ptr))?;
    if interp == 0 {
        return Ok(None);
    }
    Ok(Some(DebugSupport {
        pid,
        version,
        interp,
        enabled: r.remote_debugging_enabled,
        threads_head: d.threads_head,
        threads_main,
        tstate_next: d.thread_next,
        eval_breaker: r.eval_breaker,
        support: r.remote_debugger_support,
        pending: r.debugger_pending_call,
        path: r.debugger_script_path,
        path_size: r.debugger_script_path_size,
    }))
}

/// Where `_PyRuntime` is in the target: the `.PyRuntime` section (or the `_PyRuntime` symbol)
/// of libpython or of the executable.
fn runtime_address(pid: i32, maps: &[Mapping]) -> Option<u64> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    maps.iter()
        .filter(|m| {
            m.offset == 0
                && m.inode != 0
                && (m.file_name().starts_with("libpython3")
                    || exe.as_deref().is_some_and(|e| m.path == e))
        })
        .find_map(|m| {
            let elf = m.open_elf(pid).ok()?;
            let bias = elf.load_bias(m.start)?;
            let addr = elf
                .section_address(".PyRuntime")
                .or_else(|| elf.symbol("_PyRuntime").map(|s| s.vaddr))?;
            Some(bias + addr)
        })
}

impl DebugSupport {
    fn mem(&self, addr: u64) -> impl Fn(RemoteError) -> Pep768Error {
        let pid = self.pid;
        move |source| Pep768Error::Memory { pid, addr, source }
    }

    /// Whether the target allows remote execution.
    pub fn enabled(&self) -> Result<bool, Pep768Error> {
        let a = self.interp + self.enabled;
        Ok(remote::read_u32(self.pid, a).map_err(self.mem(a))? != 0)
    }

    /// The thread states of the main interpreter, main thread first.
    fn thread_states(&self) -> Result<Vec<u64>, Pep768Error> {
        let mut out = Vec::new();
        let main_ptr = self.interp + self.threads_main;
        let main = remote::read_u64(self.pid, main_ptr).map_err(self.mem(main_ptr))?;
        if main != 0 {
            out.push(main);
        }
        let head_ptr = self.interp + self.threads_head;
        let mut ts = remote::read_u64(self.pid, head_ptr).map_err(self.mem(head_ptr))?;
        // Bounded walk: the list can change under us (we do not hold the runtime lock).
        for _ in 0..4096 {
            if ts == 0 {
                break;
            }
            if !out.contains(&ts) {
                out.push(ts);
            }
            let next = ts + self.tstate_next;
            ts = remote::read_u64(self.pid, next).map_err(self.mem(next))?;
        }
        Ok(out)
    }

    /// Asks every thread to run `script` (a path valid *inside* the target) at its next
    /// eval-breaker check. Returns the number of thread states written.
    pub fn request(&self, script: &str) -> Result<usize, Pep768Error> {
        if !self.enabled()? {
            return Err(Pep768Error::Disabled { pid: self.pid });
        }
        if script.len() as u64 >= self.path_size {
            return Err(Pep768Error::PathTooLong {
                path: script.into(),
                size: self.path_size,
            });
        }
        let mut path = script.as_bytes().to_vec();
        path.push(0);
        let states = self.thread_states()?;
        for &ts in &states {
            let support = ts + self.support;
            let a = support + self.path;
            remote::write(self.pid, a, &path).map_err(self.mem(a))?;
            let a = support + self.pending;
            remote::write(self.pid, a, &1i32.to_le_bytes()).map_err(self.mem(a))?;
            let a = ts + self.eval_breaker;
            let eb = remote::read_u64(self.pid, a).map_err(self.mem(a))?;
            remote::write(self.pid, a, &(eb | EVAL_PLEASE_STOP_BIT).to_le_bytes())
                .map_err(self.mem(a))?;
        }
        Ok(states.len())
    }

    /// Withdraws a request that no thread has run yet (clears every pending flag).
    pub fn withdraw(&self) -> Result<(), Pep768Error> {
        for ts in self.thread_states()? {
            let a = ts + self.support + self.pending;
            remote::write(self.pid, a, &0i32.to_le_bytes()).map_err(self.mem(a))?;
        }
        Ok(())
    }
}

/// Files staged in the target's filesystem; removed on drop.
pub struct Staged {
    /// The directory as the agent sees it (`/proc/<pid>/root/tmp/...`).
    host_dir: PathBuf,
    /// The script's path as the target sees it.
    pub script_in_target: String,
    /// The helper's path as the target sees it.
    pub helper_in_target: String,
}

impl Staged {
    /// The staged helper as the agent sees it.
    pub fn helper_on_host(&self) -> PathBuf {
        self.host_dir.join(STAGED_HELPER_NAME)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.host_dir);
    }
}

/// Copies the helper and a loader script into a fresh directory under the target's `/tmp`,
/// readable only by the target's user.
pub fn stage(pid: i32, helper_so: &Path) -> Result<Staged, Pep768Error> {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let in_target = format!("/tmp/libdebugger-{pid}-{nonce:08x}");
    let host_dir = PathBuf::from(format!("/proc/{pid}/root{in_target}"));
    let err = |source| Pep768Error::Stage {
        pid,
        dir: host_dir.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&host_dir)
        .map_err(err)?;
    let so_in_target = format!("{in_target}/{STAGED_HELPER_NAME}");
    let staged = Staged {
        host_dir: host_dir.clone(),
        script_in_target: format!("{in_target}/attach.py"),
        helper_in_target: so_in_target.clone(),
    };
    std::fs::copy(helper_so, host_dir.join(STAGED_HELPER_NAME)).map_err(err)?;
    // Runs inside the target with the GIL; must never raise into the application (the
    // interpreter reports a failing script through sys.unraisablehook, nothing else).
    let script = format!(
        "try:\n    import ctypes as _c, os as _o\n    _c.CDLL({so:?}, mode=_o.RTLD_NOW).ldbg_attach()\nexcept BaseException:\n    pass\n",
        so = so_in_target
    );
    std::fs::write(host_dir.join("attach.py"), script).map_err(err)?;
    // Owned by the target's user (it runs as that user and must read both files).
    let (uid, gid) = owner_of(pid);
    for p in [
        host_dir.clone(),
        host_dir.join("attach.py"),
        host_dir.join(STAGED_HELPER_NAME),
    ] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(err)?;
        let mode = if p == host_dir { 0o700 } else { 0o400 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    Ok(staged)
}

/// Effective uid and gid of `pid` (`Uid:`/`Gid:` second column), root if unreadable.
fn owner_of(pid: i32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Uid:"), field("Gid:"))
}

/// Whether a mapping is a helper staged by [`stage`].
pub fn is_staged_helper(m: &Mapping) -> bool {
    maps::Mapping::file_name(m) == STAGED_HELPER_NAME
}
