//! `ldbg_emit`: uprobe on the helper's exported `void ldbg_emit(const uint8_t *ptr, size_t len)`.
//! Copies `min(len, MAX_CHUNK)` bytes out of the helper into `EMIT_EVENTS`, after an
//! `EmitRecordHeader`. A full ring or a failed read is counted in `DROPS`, never silent.
use crate::maps::{EMIT_EVENTS, EMIT_SCRATCH, count_drop};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};
use libdebugger_common::{
    bpf::{EmitRecordHeader, drop_counter},
    helper_abi::MAX_CHUNK,
};

const HEADER_LEN: usize = core::mem::size_of::<EmitRecordHeader>();

#[uprobe]
pub fn ldbg_emit(ctx: ProbeContext) -> u32 {
    match try_ldbg_emit(&ctx) {
        Ok(()) | Err(()) => 0,
    }
}

fn try_ldbg_emit(ctx: &ProbeContext) -> Result<(), ()> {
    let ptr: u64 = ctx.arg(0).ok_or(())?;
    let requested: u64 = ctx.arg(1).ok_or(())?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let scratch = EMIT_SCRATCH.get_ptr_mut(0).ok_or(())?;
    // Bound the copy to the scratch buffer with a comparison the verifier sees. Without it
    // (passing `requested` through) the load fails at the bpf_probe_read_user call with:
    //   "R2 min value is negative, either use unsigned or 'var &= const'"
    // With it, the verifier knows len <= MAX_CHUNK, so both the read into the scratch value
    // (16 + MAX_CHUNK bytes) and the bpf_ringbuf_output of HEADER_LEN + len bytes are in bounds.
    let len = requested.min(MAX_CHUNK as u64);
    let header = EmitRecordHeader {
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        len: len as u32,
        requested_len: requested.min(u64::from(u32::MAX)) as u32,
    };
    // SAFETY: `scratch` is this CPU's EMIT_SCRATCH entry (header + MAX_CHUNK bytes); the header
    // fits at its start and the payload (len <= MAX_CHUNK) after it.
    unsafe {
        core::ptr::write_unaligned(scratch.cast::<EmitRecordHeader>(), header);
        let data = scratch.cast::<u8>().add(HEADER_LEN);
        if bpf_probe_read_user(data.cast(), len as u32, ptr as *const _) < 0 {
            count_drop(drop_counter::EMIT_READ_FAILED);
            return Err(());
        }
        let total = HEADER_LEN + len as usize;
        let record = core::slice::from_raw_parts(scratch.cast::<u8>(), total);
        if EMIT_EVENTS.output(record, 0).is_err() {
            count_drop(drop_counter::EMIT_RING_FULL);
        }
    }
    Ok(())
}
