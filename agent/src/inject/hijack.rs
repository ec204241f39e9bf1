//! A hijacked thread: calling functions in it and putting it back exactly as it was.
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use tracing::{debug, warn};

use super::safepoint::SafePoint;
use super::symbols::TargetSymbols;
use super::tracee::{FpuState, Stop, Tracee, WaitError};
use super::{Hijacked, InjectError, InjectOptions, alive, remote};

/// A hijacked thread: saved state, and the area below its stack pointer we use.
pub(super) struct Hijack {
    pub(super) pid: i32,
    tracee: Tracee,
    saved: libc::user_regs_struct,
    fpu: Option<FpuState>,
    pub(super) info: Hijacked,
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
    pub(super) fn new(
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

    pub(super) fn tid(&self) -> i32 {
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
    pub(super) fn push_c_string(&mut self, s: &str) -> Result<u64, InjectError> {
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
    pub(super) fn call(
        &mut self,
        func: u64,
        args: &[u64],
        name: &'static str,
    ) -> Result<u64, InjectError> {
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
    pub(super) fn save_errno(
        &mut self,
        syms: &TargetSymbols,
    ) -> Result<Option<(u64, u32)>, InjectError> {
        let Some(f) = syms.errno_location else {
            return Ok(None);
        };
        let addr = self.call(f, &[], "__errno_location")?;
        Ok(remote::read_u32(self.pid, addr).ok().map(|v| (addr, v)))
    }

    pub(super) fn restore_errno(&mut self, saved: Option<(u64, u32)>) {
        if let Some((addr, v)) = saved
            && let Err(e) = remote::write(self.pid, addr, &v.to_le_bytes())
        {
            warn!(pid = self.pid, error = %e, "cannot restore errno");
        }
    }

    /// Step 4: puts the thread back exactly as it was and detaches.
    pub(super) fn finish(mut self) -> Result<(), InjectError> {
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
