//! Injection of the helper into a running CPython process, and the control block the agent
//! writes into it afterwards.
//!
//! # How [`inject`] works
//!
//! 1. **Already there?** `/proc/<pid>/maps` is scanned for the helper (the memfd named
//!    [`MEMFD_NAME`], or the helper's own path) and its `LDBG_CONTROL` magic is checked. Found →
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
//!    stopped, and only for microseconds unless it is chosen.
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
//!
//! Never leaving the target worse off: every wait has a deadline; any failure after the hijack
//! restores the registers and detaches; if a thread cannot even be stopped again, the
//! injector's thread exits and the kernel detaches every tracee it still holds.
pub mod control;
pub mod elf;
pub mod maps;
pub mod pep768;
pub mod remote;
pub mod safepoint;
mod tracee;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libdebugger_common::helper_abi::{ABI_VERSION, CONTROL_MAGIC, control_offsets};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use tracing::{debug, info, warn};

use elf::Elf;
use maps::Mapping;
use safepoint::{Ranges, Refusal, SafePoint};
use tracee::{FpuState, Stop, Tracee, WaitError};

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
    /// protocol before resorting to ptrace. Default true. **Untested** (no 3.14 here).
    pub remote_exec: bool,
    /// How long a PEP 768 request may stay unserved (every thread blocked in C) before it is
    /// withdrawn and ptrace is used. Default 300 ms.
    pub remote_exec_timeout: Duration,
}

impl Default for InjectOptions {
    fn default() -> Self {
        Self {
            safe_point_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_millis(50),
            call_timeout: Duration::from_secs(2),
            remote_exec: true,
            remote_exec_timeout: Duration::from_millis(300),
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
        "cannot ptrace process {pid}{}: run the agent as root, and detach any debugger from the process",
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
    /// An ELF file could not be read.
    #[error("cannot read ELF file {path}")]
    ReadElf {
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
        source: std::io::Error,
    },
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
    let elf = Elf::of_mapping(pid, m)?;
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
    let control_addr = bias + sym(CONTROL_SYMBOL)?.value;
    let attach_addr = bias + sym(ATTACH_SYMBOL)?.value;
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

/// Addresses in the target the injected calls need.
struct TargetSymbols {
    errno_location: Option<u64>,
    memfd_create: Option<u64>,
    /// libc's `syscall()`: the fallback for `memfd_create` on glibc < 2.27.
    syscall: Option<u64>,
    close: u64,
    dlopen: u64,
    /// Extra `dlopen` flags: `__RTLD_DLOPEN` when only glibc's private `__libc_dlopen_mode`
    /// exists (glibc < 2.34 without libdl loaded).
    dlopen_extra_flags: u64,
    dlerror: Option<u64>,
    ranges: Ranges,
}

/// `__RTLD_DLOPEN` (glibc's dlfcn.h): marks a `__libc_dlopen_mode` call as a user `dlopen`.
const RTLD_DLOPEN_PRIVATE: u64 = 0x8000_0000;
const RTLD_NOW: u64 = 2;
const MFD_CLOEXEC: u64 = 1;
const SYS_MEMFD_CREATE: u64 = 319;

/// glibc's lock-wait functions; only named in unstripped or debug-info symbol tables.
const LOCK_WAIT_FUNCTIONS: &[&str] = &[
    "__lll_lock_wait",
    "__lll_lock_wait_private",
    "__lll_timedlock_wait",
    "__lll_clocklock_wait",
    "__lll_robust_lock_wait",
    "__pthread_mutex_lock_full",
];

impl TargetSymbols {
    fn resolve(pid: i32, maps: &[Mapping]) -> Result<Self, InjectError> {
        let libc_map = maps::find_object(maps, |m| maps::is_libc(m.file_name()))
            .ok_or(InjectError::NoLibc { pid })?;
        let libc = Elf::of_mapping(pid, libc_map)?;
        let bias = libc
            .load_bias(libc_map.start)
            .ok_or_else(|| InjectError::BadElf {
                origin: libc_map.path.clone(),
                reason: "no PT_LOAD segment maps file offset 0".into(),
            })?;
        let found = libc.symbols(&[
            "dlopen",
            "dlerror",
            "__libc_dlopen_mode",
            "__errno_location",
            "memfd_create",
            "syscall",
            "close",
        ]);
        let in_libc = |name: &str| found.get(name).map(|s| bias + s.value);
        let missing = |symbol: &str| InjectError::MissingSymbol {
            object: libc_map.path.clone(),
            symbol: symbol.into(),
        };

        // dlopen: in libc since glibc 2.34 (and always in musl); before that in libdl.so.2,
        // which CPython links; last resort glibc's private __libc_dlopen_mode.
        let (dlopen, dlerror, dlopen_extra_flags) = if let Some(d) = in_libc("dlopen") {
            (d, in_libc("dlerror"), 0)
        } else if let Some((d, e)) =
            maps::find_object(maps, |m| m.file_name().starts_with("libdl.")).and_then(|m| {
                let elf = Elf::of_mapping(pid, m).ok()?;
                let b = elf.load_bias(m.start)?;
                let d = elf.symbol("dlopen")?;
                Some((b + d.value, elf.symbol("dlerror").map(|e| b + e.value)))
            })
        {
            (d, e, 0)
        } else if let Some(d) = in_libc("__libc_dlopen_mode") {
            (d, None, RTLD_DLOPEN_PRIVATE)
        } else {
            return Err(missing("dlopen"));
        };

        let mut ranges = Ranges::default();
        if let Some(ld) = maps::find_object(maps, |m| maps::is_glibc_loader(m.file_name())) {
            ranges.loader = maps::text_ranges(maps, ld);
        }
        for s in libc
            .symbols(LOCK_WAIT_FUNCTIONS)
            .values()
            .filter(|s| s.size > 0)
        {
            ranges
                .lock_wait
                .push((bias + s.value, bias + s.value + s.size));
        }
        ranges.eval = eval_loop_ranges(pid, maps);
        if ranges.eval.is_empty() {
            warn!(
                pid,
                "_PyEval_EvalFrameDefault not found: only threads blocked in a wait can be used"
            );
        }
        Ok(Self {
            errno_location: in_libc("__errno_location"),
            memfd_create: in_libc("memfd_create"),
            syscall: in_libc("syscall"),
            close: in_libc("close").ok_or_else(|| missing("close"))?,
            dlopen,
            dlopen_extra_flags,
            dlerror,
            ranges,
        })
    }
}

/// `[start, end)` of `_PyEval_EvalFrameDefault` in libpython (pyenv's shared builds) or in the
/// executable (static builds such as Debian's `/usr/bin/python3.11`, which exports it in
/// `.dynsym` with its size).
fn eval_loop_ranges(pid: i32, maps: &[Mapping]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    for m in maps.iter().filter(|m| {
        m.offset == 0
            && m.inode != 0
            && (m.file_name().starts_with("libpython3")
                || exe.as_deref().is_some_and(|e| m.path == e))
    }) {
        // One object may have several offset-0 lines only if mapped twice; dedupe by path.
        if out.iter().any(|(p, _)| p == &m.path) {
            continue;
        }
        if let Ok(elf) = Elf::of_mapping(pid, m)
            && let (Some(bias), Some(s)) = (
                elf.load_bias(m.start),
                elf.symbol("_PyEval_EvalFrameDefault"),
            )
            && s.size > 0
        {
            out.push((m.path.clone(), (bias + s.value, bias + s.value + s.size)));
        }
    }
    out.into_iter().map(|(_, r)| r).collect()
}

/// The injection state machine, run on its own thread.
struct Injector {
    pid: i32,
    options: InjectOptions,
    start: Instant,
    /// Threads that did not stop after `PTRACE_INTERRUPT` in time; detached when they do.
    unstopped: Vec<Tracee>,
}

impl Injector {
    fn new(pid: i32, options: InjectOptions) -> Self {
        Self {
            pid,
            options,
            start: Instant::now(),
            unstopped: Vec::new(),
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
            let result: Result<i32, InjectError> = (|| {
                let errno = hj.save_errno(&syms)?;
                let rc = hj.call(loaded.attach_addr, &[], "ldbg_attach")? as i32;
                hj.restore_errno(errno);
                Ok(rc)
            })();
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

        // CPython 3.14+: the interpreter's own remote-exec protocol, no ptrace stop at all.
        if self.options.remote_exec {
            match pep768::probe(pid, &maps) {
                Ok(Some(ds)) => match self.via_remote_exec(&ds, helper_so, &canonical) {
                    Ok(injected) => return Ok(injected),
                    Err(e) => {
                        warn!(pid, error = %e, "PEP 768 remote exec did not load the helper; using ptrace")
                    }
                },
                Ok(None) => {}
                Err(e) => warn!(pid, error = %e, "PEP 768 remote exec unavailable; using ptrace"),
            }
        }

        // The helper's own symbols, from the agent's copy (the bytes we are about to load).
        let helper = Elf::read(helper_so)?;
        let helper_sym = |name: &str| {
            helper
                .symbol(name)
                .ok_or_else(|| InjectError::MissingSymbol {
                    object: helper_so.display().to_string(),
                    symbol: name.into(),
                })
        };
        let attach_sym = helper_sym(ATTACH_SYMBOL)?;
        helper_sym(CONTROL_SYMBOL)?;
        let syms = TargetSymbols::resolve(pid, &maps)?;

        // Step 2: a thread at a safe point.
        let mut hj = self.find_safe_thread(&maps, &syms.ranges)?;
        let hijacked = hj.info;
        debug!(pid, tid = hijacked.tid, safe_point = ?hijacked.safe_point, after = ?self.start.elapsed(), "hijacking");

        // Step 3: the calls. Whatever happens, `finish` restores the thread.
        let result = load_and_attach(&mut hj, &syms, &helper, attach_sym.value);
        let restored = hj.finish();
        let (inode, rc) = result?;
        restored?;
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
        let deadline = Instant::now() + self.options.remote_exec_timeout;
        loop {
            if let Some(l) = attached(&read_maps(pid)?)? {
                // The mapping keeps the staged file's inode alive; the files can go.
                drop(staged);
                return Ok(Injected {
                    pid,
                    outcome: Outcome::Loaded,
                    method: Method::RemoteExec,
                    helper_base: l.base,
                    control_addr: l.control_addr,
                    mapping: l.mapping,
                    hijacked: None,
                    attach_result: None,
                    elapsed: self.start.elapsed(),
                });
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // Withdraw, then look once more: a thread may have started the script just before.
        ds.withdraw()?;
        std::thread::sleep(Duration::from_millis(20));
        if let Some(l) = attached(&read_maps(pid)?)? {
            drop(staged);
            return Ok(Injected {
                pid,
                outcome: Outcome::Loaded,
                method: Method::RemoteExec,
                helper_base: l.base,
                control_addr: l.control_addr,
                mapping: l.mapping,
                hijacked: None,
                attach_result: None,
                elapsed: self.start.elapsed(),
            });
        }
        Err(InjectError::RemoteExecNotRun {
            pid,
            timeout: self.options.remote_exec_timeout,
        })
    }

    /// Step 2: seizes threads one at a time until one is at a safe point.
    fn find_safe_thread(
        &mut self,
        maps: &[Mapping],
        ranges: &Ranges,
    ) -> Result<Hijack, InjectError> {
        let pid = self.pid;
        let deadline = Instant::now() + self.options.safe_point_timeout;
        let mut refusals: HashMap<String, usize> = HashMap::new();
        let mut threads_seen = 0;
        loop {
            let tids = list_threads(pid)?;
            threads_seen = threads_seen.max(tids.len());
            // Blocked threads whose wait qualifies first, then running ones; never interrupt a
            // thread that /proc already shows cannot qualify.
            let mut blocked = Vec::new();
            let mut running = Vec::new();
            for tid in tids {
                if self.unstopped.iter().any(|t| t.tid.as_raw() == tid) {
                    continue;
                }
                match prescreen(pid, tid) {
                    Prescreen::Blocked => blocked.push(tid),
                    Prescreen::Running => running.push(tid),
                    Prescreen::Skip(why) => *refusals.entry(why.to_string()).or_default() += 1,
                }
            }
            for tid in blocked.into_iter().chain(running) {
                if Instant::now() >= deadline {
                    break;
                }
                match self.try_thread(tid, maps, ranges)? {
                    Ok(h) => return Ok(h),
                    Err(why) => *refusals.entry(why).or_default() += 1,
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut summary: Vec<String> = refusals
            .into_iter()
            .map(|(why, n)| format!("{n}× {why}"))
            .collect();
        summary.sort();
        Err(InjectError::NoSafePoint {
            pid,
            waited: self.options.safe_point_timeout,
            summary: format!("{threads_seen} threads; refused: {}", summary.join(", ")),
        })
    }

    /// Seizes and interrupts one thread; `Ok(Ok(hijack))` when it is at a safe point,
    /// `Ok(Err(reason))` when it was released, `Err` on a fatal error.
    fn try_thread(
        &mut self,
        tid: i32,
        maps: &[Mapping],
        ranges: &Ranges,
    ) -> Result<Result<Hijack, String>, InjectError> {
        let pid = self.pid;
        let mut t = match Tracee::seize(tid) {
            Ok(t) => t,
            Err(Errno::ESRCH) => {
                if !alive(pid) {
                    return Err(InjectError::ProcessExited { pid });
                }
                return Ok(Err("exited".into()));
            }
            Err(Errno::EPERM) => {
                return Err(InjectError::NotPermitted {
                    pid,
                    tracer: tracer_of(pid, tid),
                });
            }
            Err(source) => {
                return Err(InjectError::Ptrace {
                    pid,
                    tid,
                    op: "SEIZE",
                    source,
                });
            }
        };
        match t.interrupt(Instant::now() + self.options.stop_timeout) {
            Ok(Stop::Event(_)) => {}
            Ok(Stop::Signal(sig)) => {
                // A signal raced with our interrupt: let it through untouched.
                let _ = t.detach(Some(sig));
                return Ok(Err("receiving a signal".into()));
            }
            Ok(Stop::Exited) => {
                if !alive(pid) {
                    return Err(InjectError::ProcessExited { pid });
                }
                return Ok(Err("exited".into()));
            }
            Err(WaitError::Timeout) => {
                self.unstopped.push(t);
                return Ok(Err("did not stop in time".into()));
            }
            Err(WaitError::Errno(source)) => {
                return Err(InjectError::Ptrace {
                    pid,
                    tid,
                    op: "waitpid",
                    source,
                });
            }
        }
        let regs = match t.getregs() {
            Ok(r) => r,
            Err(source) => {
                let _ = t.detach(None);
                if !alive(pid) {
                    return Err(InjectError::ProcessExited { pid });
                }
                return Err(InjectError::Ptrace {
                    pid,
                    tid,
                    op: "GETREGS",
                    source,
                });
            }
        };
        let sregs = safepoint::Regs {
            rip: regs.rip,
            rsp: regs.rsp,
            rax: regs.rax,
            orig_rax: regs.orig_rax,
            args: [regs.rdi, regs.rsi, regs.rdx, regs.r10],
        };
        // Stack room: from rsp down to the start of the mapping that holds it.
        let room = maps
            .iter()
            .find(|m| m.contains(regs.rsp))
            .map(|m| regs.rsp - m.start)
            .unwrap_or(0);
        match safepoint::classify(&sregs, ranges, room) {
            Ok(point) => {
                let fpu = match t.save_fpu() {
                    Ok(f) => Some(f),
                    Err(e) => {
                        warn!(pid, tid, error = %e, "cannot save the FPU state; continuing without");
                        None
                    }
                };
                Ok(Ok(Hijack::new(pid, t, regs, fpu, point, &self.options)))
            }
            Err(refusal) => {
                debug!(pid, tid, %refusal, rip = format_args!("{:#x}", regs.rip), "not a safe point");
                let _ = t.detach(None);
                Ok(Err(refusal.to_string()))
            }
        }
    }

    /// Detaches threads that did not stop in time, waiting a little for their stop. Any left are
    /// detached by the kernel when this thread exits.
    fn release_unstopped(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(200);
        for mut t in self.unstopped.drain(..) {
            match t.wait(deadline) {
                Ok(Stop::Event(_)) => {
                    let _ = t.detach(None);
                }
                Ok(Stop::Signal(sig)) => {
                    let _ = t.detach(Some(sig));
                }
                Ok(Stop::Exited) => {}
                Err(_) => warn!(
                    pid = self.pid,
                    tid = t.tid.as_raw(),
                    "thread still not stopped; the kernel detaches it when the injector thread exits"
                ),
            }
        }
    }
}

/// What `/proc/<pid>/task/<tid>` says about a thread before we touch it.
enum Prescreen {
    /// Blocked in a wait syscall that can qualify.
    Blocked,
    /// Running (or runnable) in user space: must be interrupted to see where.
    Running,
    /// Cannot qualify right now.
    Skip(Refusal),
}

fn prescreen(pid: i32, tid: i32) -> Prescreen {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.trim_start().chars().next());
    if state == Some('D') {
        // Uninterruptible sleep: it would not stop for PTRACE_INTERRUPT until it wakes.
        return Prescreen::Skip(Refusal::NotAWaitSyscall);
    }
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).unwrap_or_default();
    match safepoint::parse_proc_syscall(&text) {
        Some((nr, args)) => match safepoint::classify_syscall(nr, args) {
            Ok(_) => Prescreen::Blocked,
            Err(r) => Prescreen::Skip(r),
        },
        None => Prescreen::Running,
    }
}

fn list_threads(pid: i32) -> Result<Vec<i32>, InjectError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|_| InjectError::ProcessExited { pid })?;
    let mut tids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// Step 3 for a fresh load: memfd, copy, dlopen, close, ldbg_attach. Returns the memfd's inode
/// (to find its mapping afterwards) and `ldbg_attach`'s result.
fn load_and_attach(
    hj: &mut Hijack,
    syms: &TargetSymbols,
    helper: &Elf,
    attach_value: u64,
) -> Result<(u64, i32), InjectError> {
    let pid = hj.pid;
    let errno = hj.save_errno(syms)?;

    let name = hj.push_c_string(MEMFD_NAME)?;
    let fd = match (syms.memfd_create, syms.syscall) {
        (Some(f), _) => hj.call(f, &[name, MFD_CLOEXEC], "memfd_create")?,
        (None, Some(s)) => hj.call(
            s,
            &[SYS_MEMFD_CREATE, name, MFD_CLOEXEC],
            "syscall(memfd_create)",
        )?,
        (None, None) => {
            return Err(InjectError::MissingSymbol {
                object: "libc".into(),
                symbol: "memfd_create".into(),
            });
        }
    } as i32;
    if fd < 0 {
        let e = errno
            .map(|(addr, _)| remote::read_u32(pid, addr).unwrap_or(0) as i32)
            .unwrap_or(0);
        hj.restore_errno(errno);
        return Err(InjectError::MemfdCreate { pid, errno: e });
    }

    let result = (|| {
        // The agent fills the memfd through the target's fd table (root: ptrace access mode).
        let fd_path = format!("/proc/{pid}/fd/{fd}");
        let write_err = |source| InjectError::WriteMemfd { pid, fd, source };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&fd_path)
            .map_err(write_err)?;
        f.write_all(helper.bytes()).map_err(write_err)?;
        let inode = std::os::unix::fs::MetadataExt::ino(&f.metadata().map_err(write_err)?);
        drop(f);

        let path = hj.push_c_string(&format!("/proc/self/fd/{fd}"))?;
        let handle = hj.call(
            syms.dlopen,
            &[path, RTLD_NOW | syms.dlopen_extra_flags],
            "dlopen",
        )?;
        if handle == 0 {
            let message = match syms.dlerror {
                Some(dlerror) => {
                    let msg = hj.call(dlerror, &[], "dlerror")?;
                    if msg == 0 {
                        "(no dlerror message)".to_string()
                    } else {
                        remote::read_c_string(pid, msg, 4096)
                            .unwrap_or_else(|e| format!("(dlerror unreadable: {e})"))
                    }
                }
                None => "(no dlerror in this libc)".to_string(),
            };
            return Err(InjectError::Dlopen { pid, message });
        }
        // The helper's load bias: its memfd mapping at file offset 0.
        let maps = read_maps(pid)?;
        let m = maps
            .iter()
            .filter(|m| m.inode == inode && m.offset == 0)
            .min_by_key(|m| m.start)
            .ok_or(InjectError::HelperNotMapped { pid })?;
        let bias = helper
            .load_bias(m.start)
            .ok_or(InjectError::HelperNotMapped { pid })?;
        Ok((inode, bias))
    })();
    // The mapping keeps the memfd alive; the descriptor itself must not leak into the app.
    let closed = hj.call(syms.close, &[fd as u64], "close");
    let (inode, bias) = result?;
    closed?;

    let rc = hj.call(bias + attach_value, &[], "ldbg_attach")? as i32;
    hj.restore_errno(errno);
    Ok((inode, rc))
}

/// A hijacked thread: saved state, and the area below its stack pointer we use.
struct Hijack {
    pid: i32,
    tracee: Tracee,
    saved: libc::user_regs_struct,
    fpu: Option<FpuState>,
    info: Hijacked,
    /// Next free byte of the scratch area (grows down).
    scratch_top: u64,
    scratch_floor: u64,
    /// 16-byte aligned stack pointer for the injected calls (below the scratch area).
    call_sp: u64,
    call_timeout: Duration,
    /// A signal that arrived while we held the thread, delivered on detach.
    pending_signal: Option<Signal>,
}

/// Bytes the x86_64 SysV ABI lets a function use below `rsp` without moving it.
const RED_ZONE: u64 = 128;
/// Scratch area for the strings passed to the injected calls.
const SCRATCH: u64 = 4096;
/// Bits of `eflags`: trap (single-step) and direction flag; both must be clear on a call.
const EFLAGS_TF: u64 = 1 << 8;
const EFLAGS_DF: u64 = 1 << 10;

impl Hijack {
    fn new(
        pid: i32,
        tracee: Tracee,
        saved: libc::user_regs_struct,
        fpu: Option<FpuState>,
        safe_point: SafePoint,
        options: &InjectOptions,
    ) -> Self {
        let scratch_top = (saved.rsp - RED_ZONE) & !15;
        let scratch_floor = scratch_top - SCRATCH;
        Self {
            pid,
            info: Hijacked {
                tid: tracee.tid.as_raw(),
                safe_point,
            },
            tracee,
            saved,
            fpu,
            scratch_top,
            scratch_floor,
            call_sp: scratch_floor & !15,
            call_timeout: options.call_timeout,
            pending_signal: None,
        }
    }

    fn tid(&self) -> i32 {
        self.tracee.tid.as_raw()
    }

    fn ptrace_err(&self, op: &'static str) -> impl Fn(Errno) -> InjectError + '_ {
        move |source| {
            if !alive(self.pid) {
                InjectError::ProcessExited { pid: self.pid }
            } else {
                InjectError::Ptrace {
                    pid: self.pid,
                    tid: self.tid(),
                    op,
                    source,
                }
            }
        }
    }

    /// Copies a NUL-terminated string into the scratch area; returns its address.
    fn push_c_string(&mut self, s: &str) -> Result<u64, InjectError> {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        let len = bytes.len() as u64;
        let addr = (self.scratch_top - len) & !7;
        if addr < self.scratch_floor {
            return Err(InjectError::Memory {
                pid: self.pid,
                addr,
                source: std::io::Error::other("scratch area full"),
            });
        }
        remote::write(self.pid, addr, &bytes).map_err(|source| InjectError::Memory {
            pid: self.pid,
            addr,
            source,
        })?;
        self.scratch_top = addr;
        Ok(addr)
    }

    /// Calls `func(args...)` on the hijacked thread and returns `rax`.
    fn call(&mut self, func: u64, args: &[u64], name: &'static str) -> Result<u64, InjectError> {
        let pid = self.pid;
        let sp = self.call_sp - 8;
        remote::write(pid, sp, &0u64.to_le_bytes()).map_err(|source| InjectError::Memory {
            pid,
            addr: sp,
            source,
        })?;
        let mut r = self.saved;
        r.rip = func;
        r.rsp = sp;
        r.rax = 0;
        r.orig_rax = u64::MAX;
        r.eflags &= !(EFLAGS_TF | EFLAGS_DF);
        let regs = [
            &mut r.rdi, &mut r.rsi, &mut r.rdx, &mut r.rcx, &mut r.r8, &mut r.r9,
        ];
        for (slot, &a) in regs.into_iter().zip(args) {
            *slot = a;
        }
        self.tracee.setregs(r).map_err(self.ptrace_err("SETREGS"))?;
        self.tracee.cont(None).map_err(self.ptrace_err("CONT"))?;
        let deadline = Instant::now() + self.call_timeout;
        loop {
            match self.tracee.wait(deadline) {
                Ok(Stop::Signal(Signal::SIGSEGV)) => {
                    let now = self.tracee.getregs().map_err(self.ptrace_err("GETREGS"))?;
                    if now.rip == 0 && now.rsp == sp + 8 {
                        return Ok(now.rax);
                    }
                    return Err(InjectError::CallCrashed {
                        pid,
                        tid: self.tid(),
                        function: name,
                        signal: Signal::SIGSEGV,
                        rip: now.rip,
                    });
                }
                Ok(Stop::Signal(
                    sig @ (Signal::SIGBUS | Signal::SIGILL | Signal::SIGFPE | Signal::SIGABRT),
                )) => {
                    let now = self.tracee.getregs().map_err(self.ptrace_err("GETREGS"))?;
                    return Err(InjectError::CallCrashed {
                        pid,
                        tid: self.tid(),
                        function: name,
                        signal: sig,
                        rip: now.rip,
                    });
                }
                Ok(Stop::Signal(sig)) => {
                    // An application signal (SIGCHLD, SIGALRM, SIGINT...): hold it and deliver
                    // it on detach, so no application handler runs inside our call.
                    debug!(
                        pid,
                        tid = self.tid(),
                        ?sig,
                        "deferring a signal until after the injection"
                    );
                    if self.pending_signal.is_some() {
                        // A second one: let it through now rather than lose it.
                        self.tracee
                            .cont(Some(sig))
                            .map_err(self.ptrace_err("CONT"))?;
                    } else {
                        self.pending_signal = Some(sig);
                        self.tracee.cont(None).map_err(self.ptrace_err("CONT"))?;
                    }
                }
                Ok(Stop::Event(_)) => {
                    // A group-stop (SIGSTOP to the process) while we run: finish our call first;
                    // the kernel re-applies the stop to this thread when we detach.
                    self.tracee.cont(None).map_err(self.ptrace_err("CONT"))?;
                }
                Ok(Stop::Exited) => return Err(InjectError::ProcessExited { pid }),
                Err(WaitError::Timeout) => {
                    return Err(InjectError::CallTimedOut {
                        pid,
                        tid: self.tid(),
                        function: name,
                        timeout: self.call_timeout,
                    });
                }
                Err(WaitError::Errno(e)) => return Err(self.ptrace_err("waitpid")(e)),
            }
        }
    }

    /// Reads the thread's errno (address, value), so it can be put back: the interrupted code
    /// may be between a failing call and its `errno` read.
    fn save_errno(&mut self, syms: &TargetSymbols) -> Result<Option<(u64, u32)>, InjectError> {
        let Some(f) = syms.errno_location else {
            return Ok(None);
        };
        let addr = self.call(f, &[], "__errno_location")?;
        Ok(remote::read_u32(self.pid, addr).ok().map(|v| (addr, v)))
    }

    fn restore_errno(&mut self, saved: Option<(u64, u32)>) {
        if let Some((addr, v)) = saved
            && let Err(e) = remote::write(self.pid, addr, &v.to_le_bytes())
        {
            warn!(pid = self.pid, error = %e, "cannot restore errno");
        }
    }

    /// Step 4: puts the thread back exactly as it was and detaches.
    fn finish(mut self) -> Result<(), InjectError> {
        let pid = self.pid;
        if self.tracee.gone {
            return Err(InjectError::ProcessExited { pid });
        }
        if !self.tracee.stopped {
            // Our call is still running (it timed out): stop it where it is.
            match self
                .tracee
                .interrupt(Instant::now() + Duration::from_secs(1))
            {
                Ok(Stop::Event(_)) => {}
                Ok(Stop::Signal(sig)) => {
                    self.pending_signal.get_or_insert(sig);
                }
                Ok(Stop::Exited) => return Err(InjectError::ProcessExited { pid }),
                Err(_) => {
                    warn!(
                        pid,
                        tid = self.tid(),
                        "hijacked thread did not stop; it is detached when the injector thread exits"
                    );
                    return Err(InjectError::CallTimedOut {
                        pid,
                        tid: self.tid(),
                        function: "restore",
                        timeout: Duration::from_secs(1),
                    });
                }
            }
        }
        if let Some(fpu) = &self.fpu
            && let Err(e) = self.tracee.restore_fpu(fpu)
        {
            warn!(pid, tid = self.tid(), error = %e, "cannot restore the FPU state");
        }
        // Unchanged, orig_rax included: the kernel applies its own syscall-restart logic when
        // the thread leaves this stop (see the module documentation, step 4).
        self.tracee
            .setregs(self.saved)
            .map_err(self.ptrace_err("SETREGS"))?;
        let sig = self.pending_signal;
        let tid = self.tid();
        self.tracee.detach(sig).map_err(|source| {
            if !alive(pid) {
                InjectError::ProcessExited { pid }
            } else {
                InjectError::Ptrace {
                    pid,
                    tid,
                    op: "DETACH",
                    source,
                }
            }
        })
    }
}
