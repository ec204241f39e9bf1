//! `frame_entry`: uprobe on `_PyEval_EvalFrameDefault(tstate, frame, throwflag)`.
//!
//! Counts entries per (process, code object) in `CODE_COUNTS`, reports entries of watched code
//! objects to `FRAME_EVENTS`, and runs the per-process overhead governor: entries are counted
//! per one-second window and, above the process's budget, `tripped` is set, a
//! [`GOVERNOR_TRIPPED_CODE`] record wakes the agent so it detaches the probe at once, and until
//! then the probe does nothing for that process (early return; the uprobe's trap itself, about
//! 0.5 µs per entry, remains until the detach).
use crate::maps::{CODE_COUNTS, FRAME_EVENTS, GOVERNOR, PY_OFFSETS, WATCHED, count_drop};
use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_FORCE_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};
use libdebugger_common::bpf::{
    CodeKey, FrameEntryRecord, GOVERNOR_TRIPPED_CODE, GovernorState, drop_counter,
};

const WINDOW_NS: u64 = 1_000_000_000;

/// The frame-entry probe as a `uprobe.multi` program (Linux 6.6+), which the agent prefers:
/// detaching a uprobe-multi link takes the breakpoint out of the process at once and only then
/// waits for the kernel's RCU grace periods, whereas a perf-event uprobe stays in place for a
/// tasks-trace RCU grace period (`perf_event_detach_bpf_prog` waits before the event is
/// released): 20–60 ms of traps for a busy process after a governor trip. The price: a process
/// forked while its parent is traced keeps the breakpoint for as long as the parent's link
/// exists (measured on Linux 6.18: 453 ns per frame entry in the child instead of 56; the multi
/// link's pid filter does not take it out of the child's memory, the perf-event uprobe's does),
/// so the agent re-attaches the parent's probe when it forks.
#[uprobe(multi)]
pub fn frame_entry_multi(ctx: ProbeContext) -> u32 {
    match try_frame_entry(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// The same probe as a perf-event uprobe, for kernels without uprobe-multi links.
#[uprobe]
pub fn frame_entry(ctx: ProbeContext) -> u32 {
    match try_frame_entry(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

/// Adds 1 to the counter behind `ptr`.
///
/// A plain increment, not an atomic one: the frame-entry probe of one process only fires in a
/// thread that holds that process's GIL (free-threaded builds are refused by the agent), so two
/// CPUs never increment the same process's counters at once. (The exception, 3.12+
/// sub-interpreters with their own GIL, can at worst lose a count.) `core::sync::atomic` has no
/// `fetch_add` on the bpf target.
#[inline(always)]
fn inc(ptr: *mut u64) {
    // SAFETY: `ptr` comes from a successful map lookup: valid and 8-byte aligned map memory,
    // which the kernel keeps alive for the duration of the program.
    unsafe { *ptr += 1 };
}

/// Tells the agent, once per trip, that the governor tripped for `tgid`: a record whose `code`
/// is [`GOVERNOR_TRIPPED_CODE`], submitted with a forced wake-up so the agent's ring reader runs
/// now rather than at its next poll. If the ring is full the agent still finds the trip by
/// polling `GOVERNOR`, later.
#[inline(always)]
fn notify_tripped(tgid: u32, now: u64) {
    submit_record(
        tgid,
        GOVERNOR_TRIPPED_CODE,
        now,
        u64::from(BPF_RB_FORCE_WAKEUP),
    );
}

/// One `FrameEntryRecord` on the frame ring (`flags`: the ring's wake-up flags); a full ring is
/// counted.
#[inline(always)]
fn submit_record(tgid: u32, code: u64, now: u64, flags: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    match FRAME_EVENTS.reserve::<FrameEntryRecord>(0) {
        Some(mut entry) => {
            entry.write(FrameEntryRecord {
                tgid,
                tid,
                code,
                ktime_ns: now,
            });
            entry.submit(flags);
        }
        None => count_drop(drop_counter::FRAME_RING_FULL),
    }
}

fn try_frame_entry(ctx: &ProbeContext) -> Result<(), ()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: read-only use of a plain-data map value.
    let Some(offsets) = (unsafe { PY_OFFSETS.get(&tgid) }) else {
        return Ok(()); // not a process we trace (the uprobe is pid-scoped; this is a guard)
    };
    let (frame_code, tag_mask, budget) = (
        offsets.frame_code,
        offsets.code_tag_mask,
        offsets.entries_budget_per_sec,
    );

    // Governor.
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let gov = match GOVERNOR.get_ptr_mut(&tgid) {
        Some(gov) => gov,
        None => {
            let fresh = GovernorState {
                window_start_ns: now,
                ..GovernorState::default()
            };
            // Another CPU may have inserted it meanwhile: NOEXIST keeps theirs.
            let _ = GOVERNOR.insert(&tgid, &fresh, BPF_NOEXIST.into());
            GOVERNOR.get_ptr_mut(&tgid).ok_or(())?
        }
    };
    // SAFETY: `gov` is a valid map value pointer (see `inc`); one process's entries are
    // serialised by its GIL, so no other CPU updates this process's state meanwhile.
    unsafe {
        if (*gov).tripped != 0 {
            return Ok(());
        }
        if now.wrapping_sub((*gov).window_start_ns) >= WINDOW_NS {
            (*gov).window_start_ns = now;
            (*gov).window_entries = 0;
        }
        inc(&raw mut (*gov).window_entries);
        inc(&raw mut (*gov).total_entries);
        if budget != 0 && (*gov).window_entries > u64::from(budget) {
            (*gov).tripped = 1;
            notify_tripped(tgid, now);
            return Ok(());
        }
    }

    // frame->f_code / f_executable.
    let frame: u64 = ctx.arg(1).ok_or(())?;
    // SAFETY: bpf_probe_read_user checks the address; a bad pointer only makes it fail.
    let code = match unsafe {
        bpf_probe_read_user((frame.wrapping_add(u64::from(frame_code))) as *const u64)
    } {
        Ok(code) => code & !u64::from(tag_mask),
        Err(_) => {
            count_drop(drop_counter::FRAME_READ_FAILED);
            return Err(());
        }
    };
    if code == 0 {
        return Ok(());
    }
    let key = CodeKey {
        tgid,
        _pad: 0,
        code,
    };
    match CODE_COUNTS.get_ptr_mut(&key) {
        Some(count) => inc(count),
        None => {
            if CODE_COUNTS.insert(&key, &1, BPF_NOEXIST.into()).is_err() {
                // Lost the race with another CPU (EEXIST): add to theirs.
                match CODE_COUNTS.get_ptr_mut(&key) {
                    Some(count) => inc(count),
                    None => count_drop(drop_counter::COUNTER_INSERT_FAILED),
                }
            }
        }
    }

    if WATCHED.get_ptr(&key).is_some() {
        submit_record(tgid, code, now, 0);
    }
    Ok(())
}
