//! Is a stopped thread at a point where it may run `dlopen` + `pthread_create`?
//!
//! Interrupting a thread that holds a libc-internal lock (a malloc arena, the loader's
//! `dl_load_lock`, a stdio lock) and making it call code that takes the same lock deadlocks the
//! process, or — for the loader's *recursive* lock — corrupts the loader state mid-`dlopen`.
//! So a thread is hijacked only where it provably holds none of them:
//!
//! (a) its `rip` is inside `_PyEval_EvalFrameDefault`: the bytecode loop itself, which runs with
//!     the GIL and never inside libc (it only *calls* into libc, and a call is a different `rip`);
//! (b) it is blocked in a syscall that is a *wait* (futex, sleep, poll family, socket/pipe I/O,
//!     child wait — [`WAIT_SYSCALLS`]), interrupted with a restart code or `EINTR`, and that wait
//!     is not a lock acquisition:
//!     * glibc's `__lll_lock_wait[_private]` (every internal lock, and `pthread_mutex_lock`) waits
//!       with `futex(addr, FUTEX_WAIT[_PRIVATE], 2, NULL)`; glibc's condition variables,
//!       semaphores (`threading.Lock`/`Event`) and `pthread_join` wait with `FUTEX_WAIT_BITSET`.
//!       musl's internal `__lock` waits with `FUTEX_WAIT` on a negative value. So `FUTEX_WAIT`
//!       with value 2 or a negative value and no timeout is refused, and so are the PI-lock ops.
//!       This works on stripped libcs (Debian's `libc.so.6` has no `.symtab`, so
//!       `__lll_lock_wait` cannot be found by name); when symbols *are* available the injector
//!       also refuses `rip` inside the named lock-wait functions ([`Ranges::lock_wait`]).
//!     * a syscall instruction inside the dynamic loader (`ld-linux`) is refused: the loader does
//!       its own file I/O while holding `dl_load_lock`.
//!     * `clone`/`fork` are not in the list: `fork()` holds every malloc lock around `clone`,
//!       which returns `-ERESTARTNOINTR` when interrupted.
//!
//! Both cases also need room on the stack for the injected call frames.

/// x86_64 errno values the kernel leaves in `rax` of a thread interrupted in a syscall
/// (include/linux/errno.h; never seen by user space).
pub const ERESTARTSYS: i64 = 512;
pub const ERESTARTNOINTR: i64 = 513;
pub const ERESTARTNOHAND: i64 = 514;
pub const ERESTART_RESTARTBLOCK: i64 = 516;
pub const EINTR: i64 = 4;

/// Blocking syscalls (x86_64 numbers) during which a thread holds no libc-internal lock.
pub const WAIT_SYSCALLS: &[(u64, &str)] = &[
    (0, "read"),
    (1, "write"),
    (7, "poll"),
    (17, "pread64"),
    (19, "readv"),
    (20, "writev"),
    (23, "select"),
    (34, "pause"),
    (35, "nanosleep"),
    (42, "connect"),
    (43, "accept"),
    (44, "sendto"),
    (45, "recvfrom"),
    (46, "sendmsg"),
    (47, "recvmsg"),
    (61, "wait4"),
    (128, "rt_sigtimedwait"),
    (130, "rt_sigsuspend"),
    (202, "futex"),
    (230, "clock_nanosleep"),
    (232, "epoll_wait"),
    (247, "waitid"),
    (270, "pselect6"),
    (271, "ppoll"),
    (281, "epoll_pwait"),
    (288, "accept4"),
    (299, "recvmmsg"),
    (441, "epoll_pwait2"),
    (449, "futex_waitv"),
];

const SYS_FUTEX: u64 = 202;
const FUTEX_CMD_MASK: u64 = !(128 | 256); // ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
const FUTEX_WAIT: u64 = 0;
const FUTEX_LOCK_PI: u64 = 6;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAIT_REQUEUE_PI: u64 = 11;
const FUTEX_LOCK_PI2: u64 = 13;

/// The registers the classification looks at (a subset of `user_regs_struct`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub rip: u64,
    pub rsp: u64,
    pub rax: u64,
    pub orig_rax: u64,
    /// Syscall arguments 1–4 (`rdi`, `rsi`, `rdx`, `r10`).
    pub args: [u64; 4],
}

/// Address ranges in the target that the classification needs.
#[derive(Clone, Debug, Default)]
pub struct Ranges {
    /// `_PyEval_EvalFrameDefault` `[start, end)` (several if the process maps more than one
    /// interpreter, which does not happen in practice).
    pub eval: Vec<(u64, u64)>,
    /// Executable mappings of the dynamic loader.
    pub loader: Vec<(u64, u64)>,
    /// libc's lock-wait functions, when its symbol table names them.
    pub lock_wait: Vec<(u64, u64)>,
}

fn inside(ranges: &[(u64, u64)], addr: u64) -> bool {
    ranges.iter().any(|&(s, e)| s <= addr && addr < e)
}

/// How the thread's interrupted syscall must be resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Not in a syscall (`orig_rax == -1`): just restore the registers.
    Plain,
    /// In a syscall the kernel restarts (`rip -= 2`, `rax = orig_rax`): -ERESTARTSYS,
    /// -ERESTARTNOINTR, -ERESTARTNOHAND.
    Restart,
    /// In a syscall the kernel resumes with `restart_syscall` (-ERESTART_RESTARTBLOCK: relative
    /// sleeps and timed futex waits; the remaining time lives in the task's restart block).
    RestartBlock,
    /// The syscall already failed with `EINTR` (e.g. `epoll_wait` when ptrace interrupted it);
    /// the caller sees `EINTR`, exactly as after any ptrace attach, and CPython retries (PEP 475).
    Eintr,
}

/// Why a thread was hijacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SafePoint {
    /// Case (a): executing bytecode in `_PyEval_EvalFrameDefault`.
    EvalLoop,
    /// Case (b): blocked in the named wait syscall.
    Syscall { name: &'static str, resume: Resume },
}

/// Why a thread was not hijacked (for the "no safe point" error and the logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Running code other than the eval loop (C code, libc, the allocator...).
    RunningOtherCode,
    /// In a syscall that is not a known wait (or one that completed).
    NotAWaitSyscall,
    /// Waiting for a lock (`__lll_lock_wait`, a PI mutex, musl `__lock`).
    LockWait,
    /// Inside the dynamic loader.
    InLoader,
    /// Not enough stack below `rsp` for the injected calls.
    NoStackRoom,
    /// Stopped (SIGSTOP, or traced by someone else): resuming it would break job control.
    Stopped,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::RunningOtherCode => "running C code outside the eval loop",
            Refusal::NotAWaitSyscall => "in a syscall that is not a wait",
            Refusal::LockWait => "waiting for a lock",
            Refusal::InLoader => "inside the dynamic loader",
            Refusal::NoStackRoom => "too little stack left",
            Refusal::Stopped => "stopped (SIGSTOP or another tracer)",
        })
    }
}

/// Stack needed below `rsp` for the injected calls: the 128-byte red zone, the scratch area and
/// the frames of `dlopen` (which relocates the helper: a few KiB) and `pthread_create`.
pub const STACK_NEEDED: u64 = 64 * 1024;

/// Classifies a wait syscall from its number and arguments (also used on the unstopped thread's
/// `/proc/<pid>/task/<tid>/syscall` to avoid interrupting threads that cannot qualify).
pub fn classify_syscall(nr: u64, args: [u64; 4]) -> Result<&'static str, Refusal> {
    let name = WAIT_SYSCALLS
        .iter()
        .find(|&&(n, _)| n == nr)
        .map(|&(_, name)| name)
        .ok_or(Refusal::NotAWaitSyscall)?;
    if nr == SYS_FUTEX {
        let [_, op, val, timeout] = args;
        let cmd = op & FUTEX_CMD_MASK;
        match cmd {
            FUTEX_WAIT_BITSET => {}
            FUTEX_WAIT => {
                let lock_value = val == 2 || (val as u32 as i32) < 0;
                if lock_value && timeout == 0 {
                    return Err(Refusal::LockWait);
                }
            }
            FUTEX_LOCK_PI | FUTEX_LOCK_PI2 | FUTEX_WAIT_REQUEUE_PI => {
                return Err(Refusal::LockWait);
            }
            _ => return Err(Refusal::NotAWaitSyscall),
        }
    }
    Ok(name)
}

/// Classifies a thread stopped by `PTRACE_INTERRUPT`. `stack_room` is the number of bytes
/// between `rsp` and the low end of the stack mapping that contains it.
pub fn classify(regs: &Regs, ranges: &Ranges, stack_room: u64) -> Result<SafePoint, Refusal> {
    if inside(&ranges.loader, regs.rip) {
        return Err(Refusal::InLoader);
    }
    if inside(&ranges.lock_wait, regs.rip) {
        return Err(Refusal::LockWait);
    }
    let point = if inside(&ranges.eval, regs.rip) {
        SafePoint::EvalLoop
    } else {
        if regs.orig_rax as i64 == -1 {
            return Err(Refusal::RunningOtherCode);
        }
        let resume = match -(regs.rax as i64) {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => Resume::Restart,
            ERESTART_RESTARTBLOCK => Resume::RestartBlock,
            EINTR => Resume::Eintr,
            // The syscall completed; the thread is on its way back to libc code.
            _ => return Err(Refusal::NotAWaitSyscall),
        };
        let name = classify_syscall(regs.orig_rax, regs.args)?;
        SafePoint::Syscall { name, resume }
    };
    if stack_room < STACK_NEEDED {
        return Err(Refusal::NoStackRoom);
    }
    Ok(point)
}

/// Parses `/proc/<pid>/task/<tid>/syscall`: `Some((nr, args))` for a thread blocked in a syscall,
/// `None` when it is running or in user space.
pub fn parse_proc_syscall(text: &str) -> Option<(u64, [u64; 4])> {
    let mut it = text.split_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 4];
    for a in &mut args {
        *a = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some((nr as u64, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_syscall(nr: u64, rax: i64, args: [u64; 4]) -> Regs {
        Regs {
            rip: 0x7000_0000_1000,
            rsp: 0x7ffd_0000_0000,
            rax: rax as u64,
            orig_rax: nr,
            args,
        }
    }

    #[test]
    fn sleeping_and_waiting_threads_are_safe() {
        let r = Ranges::default();
        // time.sleep: clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, ...) -> -ERESTARTNOHAND
        let sleep = in_syscall(230, -ERESTARTNOHAND, [1, 1, 0x1000, 0]);
        assert_eq!(
            classify(&sleep, &r, 1 << 20),
            Ok(SafePoint::Syscall {
                name: "clock_nanosleep",
                resume: Resume::Restart
            })
        );
        // Event.wait(): sem_wait -> futex(FUTEX_WAIT_BITSET|PRIVATE, 0, NULL) -> -ERESTARTSYS
        let sem = in_syscall(202, -ERESTARTSYS, [0x5000, 9 | 128, 0, 0]);
        assert!(classify(&sem, &r, 1 << 20).is_ok());
        // A relative nanosleep restarts through restart_syscall.
        let ns = in_syscall(35, -ERESTART_RESTARTBLOCK, [0x5000, 0, 0, 0]);
        assert_eq!(
            classify(&ns, &r, 1 << 20),
            Ok(SafePoint::Syscall {
                name: "nanosleep",
                resume: Resume::RestartBlock
            })
        );
        let ep = in_syscall(232, -EINTR, [3, 0x5000, 8, 0]);
        assert!(matches!(
            classify(&ep, &r, 1 << 20),
            Ok(SafePoint::Syscall {
                resume: Resume::Eintr,
                ..
            })
        ));
    }

    #[test]
    fn lock_waits_and_forks_are_refused() {
        let r = Ranges::default();
        // __lll_lock_wait_private: futex(addr, FUTEX_WAIT_PRIVATE, 2, NULL)
        let lll = in_syscall(202, -ERESTARTSYS, [0x5000, 128, 2, 0]);
        assert_eq!(classify(&lll, &r, 1 << 20), Err(Refusal::LockWait));
        // musl __lock: FUTEX_WAIT on INT_MIN + n
        let musl = in_syscall(202, -ERESTARTSYS, [0x5000, 128, 0x8000_0001, 0]);
        assert_eq!(classify(&musl, &r, 1 << 20), Err(Refusal::LockWait));
        let pi = in_syscall(202, -ERESTARTSYS, [0x5000, 6 | 128, 0, 0]);
        assert_eq!(classify(&pi, &r, 1 << 20), Err(Refusal::LockWait));
        // fork() holds the malloc locks around clone, which restarts with -ERESTARTNOINTR.
        let fork = in_syscall(56, -ERESTARTNOINTR, [0; 4]);
        assert_eq!(classify(&fork, &r, 1 << 20), Err(Refusal::NotAWaitSyscall));
        // A completed syscall (rax = result) is not a blocked wait.
        let done = in_syscall(0, 10, [0; 4]);
        assert_eq!(classify(&done, &r, 1 << 20), Err(Refusal::NotAWaitSyscall));
    }

    #[test]
    fn eval_loop_is_safe_other_user_code_is_not() {
        let r = Ranges {
            eval: vec![(0x1000, 0x9000)],
            loader: vec![(0x20000, 0x30000)],
            lock_wait: vec![(0x40000, 0x40100)],
        };
        let mut regs = Regs {
            rip: 0x1234,
            rsp: 0x7ffd_0000_0000,
            orig_rax: u64::MAX,
            ..Regs::default()
        };
        assert_eq!(classify(&regs, &r, 1 << 20), Ok(SafePoint::EvalLoop));
        assert_eq!(classify(&regs, &r, 100), Err(Refusal::NoStackRoom));
        regs.rip = 0x9000;
        assert_eq!(classify(&regs, &r, 1 << 20), Err(Refusal::RunningOtherCode));
        // A read() whose syscall instruction is in the loader: it may hold dl_load_lock.
        let mut ld = in_syscall(0, -ERESTARTSYS, [3, 0x5000, 64, 0]);
        ld.rip = 0x20010;
        assert_eq!(classify(&ld, &r, 1 << 20), Err(Refusal::InLoader));
        let mut lw = in_syscall(202, -ERESTARTSYS, [0x5000, 9, 0, 0]);
        lw.rip = 0x40050;
        assert_eq!(classify(&lw, &r, 1 << 20), Err(Refusal::LockWait));
    }

    #[test]
    fn parses_proc_syscall() {
        assert_eq!(
            parse_proc_syscall("202 0x7f00 0x89 0x0 0x0 0x0 0x0 0x7ffd 0x7f12\n"),
            Some((202, [0x7f00, 0x89, 0, 0]))
        );
        assert_eq!(parse_proc_syscall("running\n"), None);
        assert_eq!(parse_proc_syscall("-1 0x7ffd 0x7f12\n"), None);
    }
}
