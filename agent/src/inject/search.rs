//! Step 2 of an injection: finding a thread at a safe point, one thread at a time.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use tracing::{debug, warn};

use super::hijack::Hijack;
use super::maps::Mapping;
use super::safepoint::{self, Ranges, Refusal};
use super::tracee::{Stop, Tracee, WaitError};
use super::{InjectError, Injector, alive, tracer_of};

impl Injector {
    /// Step 2: seizes threads one at a time until one is at a safe point.
    pub(super) fn find_safe_thread(
        &mut self,
        maps: &[Mapping],
        ranges: &Ranges,
    ) -> Result<Hijack, InjectError> {
        let pid = self.pid;
        let deadline = Instant::now() + self.options.safe_point_timeout;
        let mut refusals: HashMap<String, usize> = HashMap::new();
        let mut threads_seen = 0;
        loop {
            // Threads that were slow to stop (a loaded machine can delay a stop past
            // `stop_timeout`) are examined as soon as they have stopped.
            for mut t in std::mem::take(&mut self.unstopped) {
                match t.wait(Instant::now()) {
                    Ok(stop) => match self.examine(t, stop, maps, ranges)? {
                        Ok(h) => return Ok(h),
                        Err(why) => *refusals.entry(why).or_default() += 1,
                    },
                    Err(WaitError::Timeout) => self.unstopped.push(t),
                    Err(WaitError::Errno(source)) => {
                        return Err(InjectError::Ptrace {
                            pid,
                            tid: t.tid.as_raw(),
                            op: "waitpid",
                            source,
                        });
                    }
                }
            }
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
            Ok(stop) => self.examine(t, stop, maps, ranges),
            Err(WaitError::Timeout) => {
                self.unstopped.push(t);
                Ok(Err("slow to stop".into()))
            }
            Err(WaitError::Errno(source)) => Err(InjectError::Ptrace {
                pid,
                tid,
                op: "waitpid",
                source,
            }),
        }
    }

    /// Classifies a thread that just reported `stop`; hijacks it if it is at a safe point,
    /// otherwise detaches it (the kernel restarts its syscall).
    fn examine(
        &mut self,
        t: Tracee,
        stop: Stop,
        maps: &[Mapping],
        ranges: &Ranges,
    ) -> Result<Result<Hijack, String>, InjectError> {
        let pid = self.pid;
        let tid = t.tid.as_raw();
        match stop {
            Stop::Event(_) => {}
            Stop::Signal(sig) => {
                // A signal raced with our interrupt: let it through untouched.
                let _ = t.detach(Some(sig));
                return Ok(Err("receiving a signal".into()));
            }
            Stop::Exited => {
                if !alive(pid) {
                    return Err(InjectError::ProcessExited { pid });
                }
                return Ok(Err("exited".into()));
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
        // Stack room: from rsp down to the start of the mapping that holds it. A thread started
        // after `maps` was read has its stack in a newer mapping: read the maps again then.
        let room_in = |maps: &[Mapping]| {
            maps.iter()
                .find(|m| m.contains(regs.rsp))
                .map(|m| regs.rsp - m.start)
        };
        let room = room_in(maps)
            .or_else(|| super::maps::read(pid).ok().and_then(|m| room_in(&m)))
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
    pub(super) fn release_unstopped(&mut self) {
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
    match state {
        // Uninterruptible sleep: it would not stop for PTRACE_INTERRUPT until it wakes.
        Some('D') => return Prescreen::Skip(Refusal::NotAWaitSyscall),
        // Job-control stop or another tracer's stop: hijacking would resume it.
        Some('T' | 't') => return Prescreen::Skip(Refusal::Stopped),
        _ => {}
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
