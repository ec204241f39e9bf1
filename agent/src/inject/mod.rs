//! Injection of the helper into a running CPython process, and the control block the agent
//! writes into it afterwards.
//!
//! # How [`inject`] works
//!
//! 0. **CPython 3.14+** ([`pep768`]): a process with remote debugging disabled is refused
//!    ([`InjectError::RemoteDebugDisabled`], nothing written). Otherwise, when some thread of the
//!    process is running, PEP 768's remote exec is used instead of ptrace (no thread is stopped;
//!    the interpreter runs the loader at its own safe point); if no thread serves the request
//!    within [`InjectOptions::remote_exec_timeout`], it is withdrawn and the steps below run.
//!    A process whose threads all wait goes to ptrace directly: a waiting thread is a safe point
//!    at once, and the request would wait for nothing.
//! 1. **Already there?** `/proc/<pid>/maps` is scanned for the helper (the memfd named
//!    [`MEMFD_NAME`], a staged `libdebugger-helper.so`, or the helper's own path) and its
//!    `LDBG_CONTROL` magic is checked. Found →
//!    returned as is ([`Outcome::AlreadyLoaded`]): an agent restart never loads a second copy.
//!    If the block's `helper_pid` is not the process's own pid (a child forked from an injected
//!    parent, whose helper thread did not survive `fork`), only `ldbg_attach` is called
//!    ([`Outcome::Reattached`]).
//! 2. **Find a safe point.** One thread at a time is `PTRACE_SEIZE`d, `PTRACE_INTERRUPT`ed and
//!    classified ([`safepoint`]): either executing bytecode in `_PyEval_EvalFrameDefault`, or
//!    blocked in a wait syscall that is not a lock wait. Threads whose
//!    `/proc/<pid>/task/<tid>/syscall` already shows they cannot qualify are never interrupted.
//!    Refused threads are detached at once (the kernel restarts their syscall). Threads that are
//!    blocked in a wait are tried first (that is every thread waiting for the GIL in a busy
//!    process, and every thread of an idle one), then running ones; rounds repeat every 2 ms
//!    until [`InjectOptions::safe_point_timeout`]. Only the thread being examined is ever
//!    stopped, and only for microseconds unless it is chosen. A thread slow to stop (a loaded
//!    machine) is not waited for: the search moves on and examines it once its stop arrives.
//! 3. **Hijack it.** Save its registers and FPU state. For each call: registers = saved, `rip`
//!    = function, arguments in `rdi, rsi, ...`, `rax = 0` (variadic convention), direction flag
//!    clear, `orig_rax = -1` (so the kernel does not apply its syscall-restart fix-up to this
//!    context when it resumes), `rsp` below the 128-byte red zone and a 4 KiB scratch area
//!    (strings live there), 16-byte aligned minus 8 for a pushed return address of 0. The
//!    function returns to address 0, faults, and the `SIGSEGV` signal-delivery-stop at
//!    `rip == 0` (with `rsp` just past the return address) ends the call; the signal is never
//!    delivered. Calls made, in order: `__errno_location` (errno is saved and restored),
//!    `memfd_create("libdebugger-helper", MFD_CLOEXEC)`, then the agent writes the helper's bytes
//!    into `/proc/<pid>/fd/<n>`, then `dlopen("/proc/self/fd/<n>", RTLD_NOW)`, `dlerror()` if
//!    that failed, `close(n)`, and finally the helper's `ldbg_attach()` (its address: the memfd
//!    mapping's load bias from `/proc/<pid>/maps` + the symbol value from the helper's ELF).
//!    With [`InjectOptions::announce_control`] (the daemon), the helper's control block is
//!    marked "being written" (generation 1) just before `ldbg_attach`: the helper waits for the
//!    agent's first block and arms at start-up, in the same GIL hold as its import when the
//!    block is there by then (the agent writes it once its `ldbg_emit` probe is attached).
//! 4. **Restore.** The saved registers go back *unchanged*, `orig_rax` included, while the
//!    thread sits in that last `SIGSEGV` stop; we then detach suppressing the signal. The kernel
//!    continues `get_signal()`, finds no signal to deliver, and runs its own syscall-restart
//!    logic on the restored registers exactly as it would have without us: `-ERESTARTSYS`,
//!    `-ERESTARTNOINTR`, `-ERESTARTNOHAND` → `rip -= 2`, `rax = orig_rax`;
//!    `-ERESTART_RESTARTBLOCK` → `restart_syscall` (relative sleeps resume with the remaining
//!    time from the task's restart block); `-EINTR` stays `EINTR`. Doing this ourselves instead
//!    would be wrong in one case: when another signal with a handler is pending, the kernel
//!    must decide between `EINTR` and restart (`SA_RESTART`), and it does so here.
//!
//! Why a memfd: the target may live in another mount namespace (a container) where the agent's
//! helper path does not exist. A memfd created *in the target* is reachable from the agent
//! through `/proc/<pid>/fd/<n>` and from the target as `/proc/self/fd/<n>`; nothing is written
//! to the container's filesystem, and `/proc/<pid>/maps` shows `/memfd:libdebugger-helper`.
//! If that fails (no `memfd_create`, a seccomp filter, no `/proc` inside the container), the
//! helper is copied to a private directory under the target's own `/tmp` through
//! `/proc/<pid>/root`, dlopened from there and deleted ([`LoadVia`]).
//!
//! Measured (release build, 20 fresh processes per case and interpreter — pyenv 3.11.7, 3.12.1,
//! 3.13.0, Debian 3.11 — on a 2-core VM shared with other builds; "attach" = `inject()` called
//! → `ldbg_attach` returned in the target; "GIL" = the stand-in helper's thread then ran
//! Python code):
//!
//! | case | attach p50 | attach p99 | GIL p50 | GIL p99 |
//! |---|---|---|---|---|
//! | (a) 8 threads churning json/bytes | 3.3–6.0 ms | 6.5–16 ms | 66–91 ms | 235–266 ms |
//! | (b) main thread in `Event().wait()` | 2.6–8.7 ms | 6–29 ms | 15–22 ms | 31–73 ms |
//! | (c) every thread sleeping | 2.8–5.1 ms | 5.7–24 ms | 2.8–6 ms | 7–24 ms |
//!
//! In case (a) the helper's thread waits its turn for the GIL among 8 busy threads (CPython
//! hands it round in 5 ms switch intervals); that is the helper's time, not the injector's.
//!
//! Hard-won facts:
//! * Debian's `libc.so.6` is stripped: `__lll_lock_wait` cannot be found by name. Lock waits are
//!   recognised by their futex arguments instead ([`safepoint`]).
//! * `clone` returns `-ERESTARTNOINTR` when interrupted — and `fork()` holds every malloc lock
//!   around it. "Interrupted with a restart code" alone is not a safe point; only known waits are.
//! * Reading libpython (30 MB) whole per injection cost 30–70 ms; the ELF files are mapped.
//! * Once the helper's thread exists, CPython 3.12+ warns (`DeprecationWarning`) on `os.fork()`
//!   from `__main__`, because it counts the OS threads in `/proc/self/stat`.
//!
//! Never leaving the target worse off: every wait has a deadline; any failure after the hijack
//! restores the registers and detaches; if a thread cannot even be stopped again, the
//! injector's thread exits and the kernel detaches every tracee it still holds.
pub mod control;
mod hijack;
mod load;
pub mod maps;
pub mod pep768;
pub mod safepoint;
mod search;
mod symbols;
mod tracee;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libdebugger_common::helper_abi::{ABI_VERSION, CONTROL_MAGIC, control_offsets};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use tracing::{debug, info, warn};

use crate::elf::{Elf, ElfError};
use crate::remote::{self, RemoteError};
use load::{LoadFrom, load_and_attach};
use maps::Mapping;
use safepoint::SafePoint;
use symbols::TargetSymbols;
use tracee::Tracee;

/// Name of the memfd the helper is loaded from; `/proc/<pid>/maps` shows
/// `/memfd:libdebugger-helper (deleted)`.
pub const MEMFD_NAME: &str = "libdebugger-helper";

/// The helper's exported entry point, `int ldbg_attach(void)`.
pub const ATTACH_SYMBOL: &str = "ldbg_attach";
/// The helper's exported control block.
pub const CONTROL_SYMBOL: &str = "LDBG_CONTROL";

/// Tunables of [`inject`].
#[derive(Clone, Debug)]
pub struct InjectOptions {
    /// Longest time spent looking for a thread at a safe point. Default 1 s.
    pub safe_point_timeout: Duration,
    /// Longest time one thread may take to stop after `PTRACE_INTERRUPT` before it is skipped
    /// (a thread in uninterruptible sleep). Default 50 ms.
    pub stop_timeout: Duration,
    /// Longest time one injected call (`dlopen`, `ldbg_attach`...) may run. Default 2 s: loading
    /// the helper takes a few ms; more means something is badly wrong in the target.
    pub call_timeout: Duration,
    /// On CPython 3.14+, ask the interpreter to load the helper through PEP 768's remote-exec
    /// protocol before resorting to ptrace (when a thread is running). Default true.
    pub remote_exec: bool,
    /// How long a PEP 768 request may stay unserved (every thread blocked in C) before it is
    /// withdrawn and ptrace is used. Default 300 ms.
    pub remote_exec_timeout: Duration,
    /// Where the ptrace path loads the helper from. Default: a memfd, with a staged file as
    /// fallback.
    pub load_via: LoadVia,
    /// The caller publishes the first control block right after [`inject`] returns: the
    /// helper, told so before `ldbg_attach` (its block's generation is set odd), waits for it
    /// and applies it at start-up rather than at its first poll. Default false (the helper's
    /// start is not held up for a block that may never come).
    pub announce_control: bool,
}

impl Default for InjectOptions {
    fn default() -> Self {
        Self {
            safe_point_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_millis(50),
            call_timeout: Duration::from_secs(2),
            remote_exec: true,
            remote_exec_timeout: Duration::from_millis(300),
            load_via: LoadVia::Memfd,
            announce_control: false,
        }
    }
}

/// What [`inject`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The helper was loaded and `ldbg_attach` called.
    Loaded,
    /// The helper was already loaded and attached (e.g. by a previous agent); nothing was done.
    AlreadyLoaded,
    /// The helper was loaded but not attached in this process (a forked child): only
    /// `ldbg_attach` was called.
    Reattached,
}

/// How the helper got into the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Found already loaded; nothing done.
    None,
    /// ptrace hijack of one thread at a safe point.
    Ptrace,
    /// PEP 768 remote exec (CPython 3.14+).
    RemoteExec,
}

/// The thread that ran the injected calls, and why it was safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hijacked {
    pub tid: i32,
    pub safe_point: SafePoint,
}

/// An injected process: where its helper and control block are.
#[derive(Clone, Debug)]
pub struct Injected {
    pub pid: i32,
    pub outcome: Outcome,
    /// How the helper was loaded (or attached).
    pub method: Method,
    /// Load bias of the helper in the target.
    pub helper_base: u64,
    /// Address of `LDBG_CONTROL` in the target.
    pub control_addr: u64,
    /// The helper's mapping as `/proc/<pid>/maps` names it.
    pub mapping: String,
    /// The hijacked thread (none for [`Outcome::AlreadyLoaded`]).
    pub hijacked: Option<Hijacked>,
    /// `ldbg_attach`'s return value (none for [`Outcome::AlreadyLoaded`]).
    pub attach_result: Option<i32>,
    /// Time from the call of [`inject`] until `ldbg_attach` returned in the target.
    pub elapsed: Duration,
}

/// Why an injection failed. Whatever the variant, the target was left running with its
/// registers restored.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The process exited (or was never there).
    #[error("process {pid} exited during injection")]
    ProcessExited { pid: i32 },
    /// ptrace is not allowed: another tracer (a debugger, py-spy) holds the thread, or the agent
    /// lacks CAP_SYS_PTRACE.
    #[error(
        "cannot ptrace process {pid}{}: run the agent as root (CAP_SYS_PTRACE), detach any debugger from the process, and check that kernel.yama.ptrace_scope is below 3",
        tracer.map(|t| format!(" (already traced by pid {t})")).unwrap_or_default()
    )]
    NotPermitted { pid: i32, tracer: Option<i32> },
    /// No thread reached a safe point in time.
    #[error(
        "no thread of process {pid} reached a safe point within {waited:?} ({summary}); the process was not changed, try again"
    )]
    NoSafePoint {
        pid: i32,
        waited: Duration,
        summary: String,
    },
    /// `/proc/<pid>/maps` could not be read.
    #[error("cannot read /proc/{pid}/maps")]
    ReadMaps {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    /// An ELF file could not be opened, mapped or parsed.
    #[error(transparent)]
    Elf {
        #[from]
        source: ElfError,
    },
    /// A file the injector needs could not be read (e.g. the staged helper's inode).
    #[error("cannot read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not a usable ELF file.
    #[error("{origin} is not a valid ELF file: {reason}")]
    BadElf { origin: String, reason: String },
    /// The target maps no C library the injector knows (glibc or musl).
    #[error("process {pid} has no C library mapped that libdebugger knows (glibc or musl)")]
    NoLibc { pid: i32 },
    /// A required symbol is missing.
    #[error("{symbol} not found in {object}")]
    MissingSymbol { object: String, symbol: String },
    /// A ptrace request failed.
    #[error("ptrace {op} on thread {tid} of process {pid} failed")]
    Ptrace {
        pid: i32,
        tid: i32,
        op: &'static str,
        #[source]
        source: Errno,
    },
    /// Reading or writing the target's memory failed.
    #[error("cannot access memory of process {pid} at {addr:#x}")]
    Memory {
        pid: i32,
        addr: u64,
        #[source]
        source: RemoteError,
    },
    /// A string argument of an injected call does not fit the scratch area below the hijacked
    /// thread's stack pointer.
    #[error(
        "a {len}-byte string does not fit the {available} bytes left in the scratch area of process {pid}"
    )]
    ScratchFull { pid: i32, len: u64, available: u64 },
    /// An injected call did not return in time; the thread was interrupted and restored, but the
    /// call was abandoned midway.
    #[error("{function} did not return within {timeout:?} in thread {tid} of process {pid}")]
    CallTimedOut {
        pid: i32,
        tid: i32,
        function: &'static str,
        timeout: Duration,
    },
    /// An injected call crashed (a signal other than the expected return fault).
    #[error(
        "{function} crashed with {signal:?} at {rip:#x} in thread {tid} of process {pid}; the thread was restored"
    )]
    CallCrashed {
        pid: i32,
        tid: i32,
        function: &'static str,
        signal: Signal,
        rip: u64,
    },
    /// `memfd_create` failed in the target.
    #[error("memfd_create failed in process {pid} (errno {errno})")]
    MemfdCreate { pid: i32, errno: i32 },
    /// Copying the helper into the target's memfd failed.
    #[error("cannot write the helper into /proc/{pid}/fd/{fd}")]
    WriteMemfd {
        pid: i32,
        fd: i32,
        #[source]
        source: std::io::Error,
    },
    /// `dlopen` failed in the target.
    #[error("dlopen of the helper failed in process {pid}: {message}")]
    Dlopen { pid: i32, message: String },
    /// `ldbg_attach` returned an error.
    #[error("ldbg_attach returned {code} in process {pid}")]
    AttachFailed { pid: i32, code: i32 },
    /// The helper is mapped but its control block is not one this agent understands.
    #[error(
        "the helper in process {pid} ({mapping}) has control block magic {magic:#x}, ABI {abi}; this agent needs magic {CONTROL_MAGIC:#x}, ABI {ABI_VERSION}: restart the process to load the current helper"
    )]
    HelperMismatch {
        pid: i32,
        mapping: String,
        magic: u64,
        abi: u32,
        /// Address of its `LDBG_CONTROL` (to disarm it when the magic is known, see
        /// [`libdebugger_common::helper_abi::DISARM`]).
        control_addr: u64,
    },
    /// The helper was loaded but its mapping could not be found afterwards.
    #[error(
        "the helper was loaded into process {pid} but no mapping of it appears in /proc/{pid}/maps"
    )]
    HelperNotMapped { pid: i32 },
    /// The PEP 768 path failed (the caller falls back to ptrace; this is only returned when
    /// ptrace is impossible too).
    #[error(transparent)]
    RemoteExec(#[from] pep768::Pep768Error),
    /// A CPython 3.14+ process started with remote debugging disabled: nothing was written.
    #[error(
        "process {pid} has remote debugging disabled (PYTHON_DISABLE_REMOTE_DEBUG or -X \
         disable-remote-debug): it asked debuggers to stay out, so libdebugger leaves it alone"
    )]
    RemoteDebugDisabled { pid: i32 },
    /// A PEP 768 request was not served in time (every thread blocked in C code).
    #[error("no thread of process {pid} ran the remote-exec request within {timeout:?}")]
    RemoteExecNotRun { pid: i32, timeout: Duration },
    /// The injector thread could not be started or panicked.
    #[error("the injector thread failed: {reason}")]
    Thread { reason: String },
}

/// Loads the helper `helper_so` into process `pid` exactly once and calls its `ldbg_attach`.
/// Blocks the caller for at most about `safe_point_timeout + 2 × call_timeout`; the target is
/// never stopped as a whole, and the hijacked thread only for the duration of the calls.
pub fn inject(
    pid: i32,
    helper_so: &Path,
    options: &InjectOptions,
) -> Result<Injected, InjectError> {
    let helper_so = helper_so.to_path_buf();
    let options = options.clone();
    // A dedicated thread: ptrace requests must come from the thread that seized the tracee, and
    // that thread's exit detaches whatever it still holds (see `tracee`).
    std::thread::Builder::new()
        .name(format!("ldbg-inject-{pid}"))
        .spawn(move || Injector::new(pid, options).run(&helper_so))
        .map_err(|e| InjectError::Thread {
            reason: e.to_string(),
        })?
        .join()
        .map_err(|_| InjectError::Thread {
            reason: "panicked".into(),
        })?
}

/// The helper as found in a target's address space.
#[derive(Clone, Debug)]
pub struct LoadedHelper {
    pub base: u64,
    pub control_addr: u64,
    pub attach_addr: u64,
    pub mapping: String,
    /// `LDBG_CONTROL.helper_pid`: the pid (as the target sees it) that last ran `ldbg_attach`,
    /// 0 if never.
    pub helper_pid: u32,
}

/// Whether a mapping is (the first page of) the helper: the memfd the injector creates, or the
/// helper file itself (a process started with the helper preloaded).
fn is_helper_mapping(m: &Mapping, helper_canonical: &str) -> bool {
    m.offset == 0
        && m.inode != 0
        && (m.file_name() == format!("memfd:{MEMFD_NAME}")
            || m.path == helper_canonical
            || pep768::is_staged_helper(m))
}

/// Finds an already loaded helper in `pid` and validates its control block.
pub fn find_loaded_helper(pid: i32, helper_so: &Path) -> Result<Option<LoadedHelper>, InjectError> {
    let maps = read_maps(pid)?;
    find_loaded_in(pid, &maps, &maps::canonical(helper_so), None)
}

fn find_loaded_in(
    pid: i32,
    maps: &[Mapping],
    helper_canonical: &str,
    inode: Option<u64>,
) -> Result<Option<LoadedHelper>, InjectError> {
    let Some(m) = maps
        .iter()
        .filter(|m| is_helper_mapping(m, helper_canonical))
        .filter(|m| inode.is_none_or(|i| m.inode == i))
        .min_by_key(|m| m.start)
    else {
        return Ok(None);
    };
    // The symbols come from the *mapped* file, not the agent's copy: a previous agent may have
    // injected a different build.
    let elf = m.open_elf(pid)?;
    let bias = elf.load_bias(m.start).ok_or_else(|| InjectError::BadElf {
        origin: m.path.clone(),
        reason: "no PT_LOAD segment maps file offset 0".into(),
    })?;
    let sym = |name: &str| {
        elf.symbol(name).ok_or_else(|| InjectError::MissingSymbol {
            object: m.path.clone(),
            symbol: name.into(),
        })
    };
    let control_addr = bias + sym(CONTROL_SYMBOL)?.vaddr;
    let attach_addr = bias + sym(ATTACH_SYMBOL)?.vaddr;
    let mem = |addr: u64| move |source| InjectError::Memory { pid, addr, source };
    let magic = remote::read_u64(pid, control_addr + control_offsets::MAGIC as u64)
        .map_err(mem(control_addr))?;
    let abi = remote::read_u32(pid, control_addr + control_offsets::ABI_VERSION as u64)
        .map_err(mem(control_addr))?;
    if magic != CONTROL_MAGIC || abi != ABI_VERSION {
        return Err(InjectError::HelperMismatch {
            pid,
            mapping: m.path.clone(),
            magic,
            abi,
            control_addr,
        });
    }
    let helper_pid = remote::read_u32(pid, control_addr + control_offsets::HELPER_PID as u64)
        .map_err(mem(control_addr))?;
    Ok(Some(LoadedHelper {
        base: bias,
        control_addr,
        attach_addr,
        mapping: m.path.clone(),
        helper_pid,
    }))
}

fn read_maps(pid: i32) -> Result<Vec<Mapping>, InjectError> {
    maps::read(pid).map_err(|source| {
        if !alive(pid) {
            InjectError::ProcessExited { pid }
        } else {
            InjectError::ReadMaps { pid, source }
        }
    })
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ..." — comm may contain spaces and parentheses: split at the last ')'.
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|st| st != 'Z' && st != 'X'),
        Err(_) => false,
    }
}

/// The pid of `pid` in its own pid namespace (last field of `NSpid:`), which is what the
/// helper's `getpid()` returns.
fn namespace_pid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// Whether `pid` is busy: a thread running or runnable (`R` in `/proc/<pid>/task/<tid>/stat`)
/// now and again 2 ms later (a waiting process's timer wake-ups are shorter than that).
fn any_thread_running(pid: i32) -> bool {
    let running_now = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
                    == Some('R')
            })
        })
    };
    running_now() && {
        std::thread::sleep(Duration::from_millis(2));
        running_now()
    }
}

/// `TracerPid:` of a thread, for the "already traced" error.
fn tracer_of(pid: i32, tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("TracerPid:"))?;
    line.split_whitespace()
        .last()?
        .parse()
        .ok()
        .filter(|&t| t != 0)
}

/// The injection state machine, run on its own thread.
pub(super) struct Injector {
    pub(super) pid: i32,
    pub(super) options: InjectOptions,
    pub(super) start: Instant,
    /// Threads that did not stop after `PTRACE_INTERRUPT` in time; detached when they do.
    pub(super) unstopped: Vec<Tracee>,
    /// The files of a PEP 768 request that was not served in time: a thread may have taken
    /// it just before the withdrawal and still be running the loader script (`import ctypes`
    /// alone takes many GIL turns in a busy process). The ptrace fallback loads this same
    /// file, so that both yield one copy of the helper; removed afterwards.
    pub(super) unserved_stage: Option<pep768::Staged>,
}

impl Injector {
    fn new(pid: i32, options: InjectOptions) -> Self {
        Self {
            pid,
            options,
            start: Instant::now(),
            unstopped: Vec::new(),
            unserved_stage: None,
        }
    }

    fn run(mut self, helper_so: &Path) -> Result<Injected, InjectError> {
        let result = self.run_inner(helper_so);
        self.release_unstopped();
        if let Err(e) = &result {
            if !alive(self.pid) {
                return Err(InjectError::ProcessExited { pid: self.pid });
            }
            debug!(pid = self.pid, error = %e, "injection failed");
        }
        result
    }

    fn run_inner(&mut self, helper_so: &Path) -> Result<Injected, InjectError> {
        let pid = self.pid;
        let canonical = maps::canonical(helper_so);
        let maps = read_maps(pid)?;

        // Step 1: already loaded (agent restart) or loaded but not attached (forked child)?
        if let Some(loaded) = find_loaded_in(pid, &maps, &canonical, None)? {
            let ns_pid = namespace_pid(pid);
            if ns_pid.is_none() || ns_pid == Some(loaded.helper_pid) {
                info!(pid, mapping = %loaded.mapping, "helper already loaded");
                return Ok(Injected {
                    pid,
                    outcome: Outcome::AlreadyLoaded,
                    method: Method::None,
                    helper_base: loaded.base,
                    control_addr: loaded.control_addr,
                    mapping: loaded.mapping,
                    hijacked: None,
                    attach_result: None,
                    elapsed: self.start.elapsed(),
                });
            }
            let syms = TargetSymbols::resolve(pid, &maps)?;
            let mut hj = self.find_safe_thread(&maps, &syms.ranges)?;
            let hijacked = hj.info;
            let result = hj.save_errno(&syms).and_then(|errno| {
                let rc = hj.call(loaded.attach_addr, &[], "ldbg_attach");
                hj.restore_errno(errno);
                rc.map(|rc| rc as i32)
            });
            let restored = hj.finish();
            let rc = result?;
            restored?;
            if rc != 0 {
                return Err(InjectError::AttachFailed { pid, code: rc });
            }
            return Ok(Injected {
                pid,
                outcome: Outcome::Reattached,
                method: Method::Ptrace,
                helper_base: loaded.base,
                control_addr: loaded.control_addr,
                mapping: loaded.mapping,
                hijacked: Some(hijacked),
                attach_result: Some(rc),
                elapsed: self.start.elapsed(),
            });
        }

        // CPython 3.14+: a process started with remote debugging disabled asked debuggers to
        // stay out, whatever the method. Otherwise the interpreter's own remote-exec protocol
        // (no ptrace stop at all) while some thread is running, so that one of them serves the
        // request at its next eval-breaker check; a process whose threads all wait would never
        // serve it, and ptrace finds a safe point there at once (a thread in a wait).
        match pep768::probe(pid, &maps) {
            Ok(Some(ds)) => {
                if !ds.enabled()? {
                    return Err(InjectError::RemoteDebugDisabled { pid });
                }
                if self.options.remote_exec && any_thread_running(pid) {
                    match self.via_remote_exec(&ds, helper_so, &canonical) {
                        Ok(injected) => return Ok(injected),
                        Err(e) => {
                            warn!(pid, error = %e, "PEP 768 remote exec did not load the helper; using ptrace")
                        }
                    }
                } else if self.options.remote_exec {
                    debug!(pid, "no thread is running: ptrace rather than PEP 768");
                }
            }
            Ok(None) => {}
            Err(e) if self.options.remote_exec => {
                warn!(pid, error = %e, "PEP 768 remote exec unavailable; using ptrace")
            }
            Err(e) => debug!(pid, error = %e, "no PEP 768 debugger support"),
        }

        // The helper's own symbols, from the agent's copy (the bytes we are about to load).
        // Mapped, not read: a 2.4 MB heap buffer per injection, freed on a short-lived thread,
        // stays in that thread's malloc arena (the agent's RSS grew with every injection).
        let helper = Elf::open(helper_so)?;
        let helper_sym = |name: &str| {
            helper
                .symbol(name)
                .ok_or_else(|| InjectError::MissingSymbol {
                    object: helper_so.display().to_string(),
                    symbol: name.into(),
                })
        };
        let attach_sym = helper_sym(ATTACH_SYMBOL)?;
        let control_sym = helper_sym(CONTROL_SYMBOL)?;
        let syms = TargetSymbols::resolve(pid, &maps)?;

        // Step 2: a thread at a safe point.
        let mut hj = self.find_safe_thread(&maps, &syms.ranges)?;
        let hijacked = hj.info;
        debug!(pid, tid = hijacked.tid, safe_point = ?hijacked.safe_point, after = ?self.start.elapsed(), "hijacking");

        // Step 3: the calls. Whatever happens, `finish` restores the thread.
        let result = load_and_attach(
            &mut hj,
            &syms,
            &helper,
            helper_so,
            attach_sym.vaddr,
            match &self.unserved_stage {
                Some(staged) => LoadFrom::Staged(staged),
                None => LoadFrom::Via(self.options.load_via),
            },
            self.options.announce_control.then_some(control_sym.vaddr),
        );
        let restored = hj.finish();
        let (inode, rc) = result?;
        restored?;
        // Mapped now (the mapping keeps the inode): the staged files can go.
        self.unserved_stage = None;
        let elapsed = self.start.elapsed();

        let maps = read_maps(pid)?;
        let loaded = find_loaded_in(pid, &maps, &canonical, Some(inode))?
            .ok_or(InjectError::HelperNotMapped { pid })?;
        if rc != 0 {
            return Err(InjectError::AttachFailed { pid, code: rc });
        }
        info!(pid, tid = hijacked.tid, safe_point = ?hijacked.safe_point, ?elapsed, "helper injected");
        Ok(Injected {
            pid,
            outcome: Outcome::Loaded,
            method: Method::Ptrace,
            helper_base: loaded.base,
            control_addr: loaded.control_addr,
            mapping: loaded.mapping,
            hijacked: Some(hijacked),
            attach_result: Some(rc),
            elapsed,
        })
    }

    /// CPython 3.14+: stages the helper and a loader script in the target's `/tmp`, asks every
    /// thread to run it (see [`pep768`]) and waits for the helper to attach.
    fn via_remote_exec(
        &mut self,
        ds: &pep768::DebugSupport,
        helper_so: &Path,
        canonical: &str,
    ) -> Result<Injected, InjectError> {
        let pid = self.pid;
        let staged = pep768::stage(pid, helper_so)?;
        let threads = ds.request(&staged.script_in_target)?;
        debug!(
            pid,
            threads,
            version = format_args!("{:#x}", ds.version),
            "PEP 768 request written"
        );
        let ns_pid = namespace_pid(pid);
        let attached = |maps: &[Mapping]| -> Result<Option<LoadedHelper>, InjectError> {
            Ok(find_loaded_in(pid, maps, canonical, None)?
                .filter(|l| ns_pid.is_none() || ns_pid == Some(l.helper_pid)))
        };
        let start = self.start;
        let injected = |l: LoadedHelper| Injected {
            pid,
            outcome: Outcome::Loaded,
            method: Method::RemoteExec,
            helper_base: l.base,
            control_addr: l.control_addr,
            mapping: l.mapping,
            hijacked: None,
            attach_result: None,
            elapsed: start.elapsed(),
        };
        let deadline = Instant::now() + self.options.remote_exec_timeout;
        loop {
            if let Some(l) = attached(&read_maps(pid)?)? {
                // The other threads' requests are withdrawn before the files go: a thread
                // reaching its request after that would have CPython report the missing
                // script on the application's stderr. A thread that took its request just
                // before the withdrawal opens the script within microseconds; the grace
                // period covers it. The mapping keeps the staged helper's inode alive.
                ds.withdraw()?;
                std::thread::sleep(Duration::from_millis(20));
                drop(staged);
                // Named as the maps name it now (`... (deleted)`): the daemon finds the mapping
                // for its `ldbg_emit` probe by this name.
                let l = attached(&read_maps(pid)?)?.unwrap_or(l);
                return Ok(injected(l));
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // Withdraw, then look once more: a thread may have started the script just before.
        ds.withdraw()?;
        std::thread::sleep(Duration::from_millis(20));
        if attached(&read_maps(pid)?)?.is_some() {
            drop(staged);
            if let Some(l) = attached(&read_maps(pid)?)? {
                return Ok(injected(l));
            }
        } else {
            self.unserved_stage = Some(staged);
        }
        Err(InjectError::RemoteExecNotRun {
            pid,
            timeout: self.options.remote_exec_timeout,
        })
    }
}

pub use load::LoadVia;
