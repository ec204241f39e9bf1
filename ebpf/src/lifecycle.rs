//! Process lifecycle tracepoints: `sched/sched_process_exec`, `sched/sched_process_fork` and
//! `sched/sched_process_exit` (thread-group leaders only) → `ProcEventRecord`s in `PROC_EVENTS`.
use crate::maps::{PROC_EVENTS, TP_OFFSETS, count_drop};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use aya_log_ebpf::debug;
use libdebugger_common::bpf::{ProcEventRecord, drop_counter, proc_event_kind};

fn send(kind: u32, tgid: u32, parent_tgid: u32) {
    let record = ProcEventRecord {
        kind,
        tgid,
        parent_tgid,
        _pad: 0,
    };
    if PROC_EVENTS.output(&record, 0).is_err() {
        count_drop(drop_counter::PROC_RING_FULL);
    }
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    // Current is the process that just exec'd.
    send(
        proc_event_kind::EXEC,
        (bpf_get_current_pid_tgid() >> 32) as u32,
        0,
    );
    0
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    match try_sched_process_fork(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_sched_process_fork(ctx: &TracePointContext) -> Result<(), ()> {
    let offset = TP_OFFSETS.get(0).ok_or(())?.fork_child_pid;
    if offset == 0 {
        debug!(ctx, "sched_process_fork: TP_OFFSETS not configured");
        return Err(());
    }
    // SAFETY: reads 4 bytes of the tracepoint record through bpf_probe_read (checked).
    let child: i32 = unsafe { ctx.read_at(offset as usize) }.map_err(|_| ())?;
    // Current is the parent.
    send(
        proc_event_kind::FORK,
        child as u32,
        (bpf_get_current_pid_tgid() >> 32) as u32,
    );
    Ok(())
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // Only the thread-group leader's exit means "the process is gone".
    if tgid == pid {
        send(proc_event_kind::EXIT, tgid, 0);
    }
    0
}
