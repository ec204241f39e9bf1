//! One ptrace-seized thread of the target, with deadlines on every wait.
//!
//! Facts this relies on:
//! * ptrace is per *thread* and the tracer is a *thread*: every request for a tracee must come
//!   from the thread that seized it, and when that thread exits the kernel detaches all of its
//!   tracees (`exit_ptrace`), clearing a pending `PTRACE_INTERRUPT`. [`super::inject`] therefore
//!   runs on a dedicated thread, which is also the last-resort clean-up.
//! * `PTRACE_SEIZE` does not stop the thread and does not send a signal (unlike `PTRACE_ATTACH`,
//!   whose `SIGSTOP` the application could observe); `PTRACE_INTERRUPT` stops it with a
//!   `PTRACE_EVENT_STOP`, reported by `waitpid(__WALL)` as status `SIGTRAP | EVENT_STOP << 16`.
//! * A thread interrupted while blocked in a syscall stops in `get_signal()` *before* the
//!   kernel's restart fix-up: `rax` holds `-ERESTART*` (or `-EINTR`), `orig_rax` the syscall
//!   number and `rip` the instruction after `syscall`. The fix-up (`rip -= 2`, `rax = orig_rax`)
//!   happens in `arch_do_signal_or_restart()` when the thread resumes and no signal handler runs
//!   — using whatever registers are in place then.
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// `PTRACE_EVENT_STOP` (linux/ptrace.h).
const PTRACE_EVENT_STOP: i32 = 128;
/// `NT_X86_XSTATE` (linux/elf.h): the full FPU/SSE/AVX/AVX-512/AMX state.
const NT_X86_XSTATE: libc::c_int = 0x202;
/// `NT_PRFPREG`: the legacy FXSAVE area (x87 + SSE), the fallback without XSAVE.
const NT_PRFPREG: libc::c_int = 2;
/// Large enough for any XSAVE layout (AMX tiles included); the kernel shrinks `iov_len`.
const XSTATE_BUF: usize = 32 * 1024;

/// What a wait on a tracee returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Stopped by our `PTRACE_INTERRUPT` (or a group-stop, with its signal).
    Event(Signal),
    /// Signal-delivery-stop: the thread is about to receive this signal.
    Signal(Signal),
    /// The thread (or the whole process) exited.
    Exited,
}

/// Why a wait on a tracee failed.
#[derive(Debug)]
pub enum WaitError {
    /// No stop before the deadline; the thread is still running.
    Timeout,
    /// `waitpid` failed (not `ECHILD`, which is reported as [`Stop::Exited`]).
    Errno(Errno),
}

/// A seized thread.
pub struct Tracee {
    pub tid: Pid,
    /// Whether the thread is currently in a ptrace-stop (requests other than interrupt need it).
    pub stopped: bool,
    /// The thread is gone; nothing to detach.
    pub gone: bool,
}

impl Tracee {
    /// `PTRACE_SEIZE` with no options: no `EXITKILL` (the target must survive an agent crash),
    /// no `TRACECLONE` (the helper's own thread must not be traced).
    pub fn seize(tid: i32) -> Result<Self, Errno> {
        let tid = Pid::from_raw(tid);
        ptrace::seize(tid, ptrace::Options::empty())?;
        Ok(Self {
            tid,
            stopped: false,
            gone: false,
        })
    }

    /// Sends `PTRACE_INTERRUPT` and waits for the stop until `deadline`.
    pub fn interrupt(&mut self, deadline: Instant) -> Result<Stop, WaitError> {
        ptrace::interrupt(self.tid).map_err(WaitError::Errno)?;
        self.wait(deadline)
    }

    /// Waits for the next stop of this thread until `deadline`, polling with `WNOHANG` (a
    /// blocking `waitpid` could hang forever on a thread in uninterruptible sleep).
    pub fn wait(&mut self, deadline: Instant) -> Result<Stop, WaitError> {
        let mut pause = Duration::from_micros(20);
        loop {
            match waitpid(self.tid, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(WaitStatus::PtraceEvent(_, sig, PTRACE_EVENT_STOP)) => {
                    self.stopped = true;
                    return Ok(Stop::Event(sig));
                }
                Ok(WaitStatus::PtraceEvent(_, sig, _)) => {
                    self.stopped = true;
                    return Ok(Stop::Event(sig));
                }
                Ok(WaitStatus::Stopped(_, sig)) => {
                    self.stopped = true;
                    return Ok(Stop::Signal(sig));
                }
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                    self.gone = true;
                    self.stopped = false;
                    return Ok(Stop::Exited);
                }
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(e) => return Err(WaitError::Errno(e)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_micros(500));
        }
    }

    pub fn getregs(&self) -> Result<libc::user_regs_struct, Errno> {
        ptrace::getregs(self.tid)
    }

    pub fn setregs(&self, regs: libc::user_regs_struct) -> Result<(), Errno> {
        ptrace::setregs(self.tid, regs)
    }

    /// Resumes the thread, delivering `sig` if given.
    pub fn cont(&mut self, sig: Option<Signal>) -> Result<(), Errno> {
        ptrace::cont(self.tid, sig)?;
        self.stopped = false;
        Ok(())
    }

    /// Detaches from a stopped thread (delivering `sig` if given); the thread resumes.
    pub fn detach(mut self, sig: Option<Signal>) -> Result<(), Errno> {
        self.gone = true;
        ptrace::detach(self.tid, sig)
    }

    /// Saves the extended FPU state (the injected code may use SSE/AVX: glibc's string
    /// functions do, and `vzeroupper` clears the upper halves of the ymm registers, which
    /// `PTRACE_GETREGS` does not cover).
    pub fn save_fpu(&self) -> Result<FpuState, Errno> {
        for note in [NT_X86_XSTATE, NT_PRFPREG] {
            let mut buf = vec![0u8; XSTATE_BUF];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            // SAFETY: PTRACE_GETREGSET writes at most `iov_len` bytes into `buf`, which lives
            // for the whole call, and updates `iov_len` to the size written.
            let rc = unsafe {
                libc::ptrace(
                    libc::PTRACE_GETREGSET,
                    self.tid.as_raw(),
                    note as usize as *mut libc::c_void,
                    &mut iov as *mut libc::iovec as *mut libc::c_void,
                )
            };
            if rc == 0 {
                buf.truncate(iov.iov_len);
                return Ok(FpuState { note, buf });
            }
            let e = Errno::last();
            if e != Errno::EINVAL && e != Errno::ENODEV {
                return Err(e);
            }
        }
        Err(Errno::EINVAL)
    }

    /// Restores a state saved by [`Tracee::save_fpu`].
    pub fn restore_fpu(&self, state: &FpuState) -> Result<(), Errno> {
        let mut buf = state.buf.clone();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: PTRACE_SETREGSET only reads `iov_len` bytes from `buf`, which outlives the
        // call; the contents came from PTRACE_GETREGSET on the same thread.
        let rc = unsafe {
            libc::ptrace(
                libc::PTRACE_SETREGSET,
                self.tid.as_raw(),
                state.note as usize as *mut libc::c_void,
                &mut iov as *mut libc::iovec as *mut libc::c_void,
            )
        };
        if rc == 0 { Ok(()) } else { Err(Errno::last()) }
    }
}

/// A saved FPU/vector register state.
pub struct FpuState {
    note: libc::c_int,
    buf: Vec<u8>,
}
