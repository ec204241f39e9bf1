//! Every map of the eBPF object. Names are what the agent looks up (`agent/src/bpf/`).
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use libdebugger_common::{
    bpf::{CodeKey, GovernorState, PyOffsets, TracepointOffsets, drop_counter},
    helper_abi::MAX_CHUNK,
};

/// Largest number of processes traced at once with the frame-entry probe.
const MAX_TRACED: u32 = 4096;

/// Per-process CPython offsets, key tgid. The frame-entry probe ignores processes without one.
#[map]
pub static PY_OFFSETS: HashMap<u32, PyOffsets> = HashMap::with_max_entries(MAX_TRACED, 0);

/// Per-process overhead governor, key tgid.
#[map]
pub static GOVERNOR: HashMap<u32, GovernorState> = HashMap::with_max_entries(MAX_TRACED, 0);

/// Entries per (process, code object). LRU: under pressure the coldest counters go first.
#[map]
pub static CODE_COUNTS: LruHashMap<CodeKey, u64> = LruHashMap::with_max_entries(65536, 0);

/// Code objects whose entries are reported one by one in `FRAME_EVENTS` (value unused).
#[map]
pub static WATCHED: HashMap<CodeKey, u8> = HashMap::with_max_entries(16384, 0);

/// `FrameEntryRecord`s for watched code objects.
#[map]
pub static FRAME_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// `ldbg_emit` chunks: an `EmitRecordHeader` followed by the payload. 4 MiB hold at least 255
/// full-size records (about 6,000 typical hits, over a second at 5,000 hits/s) while the agent
/// drains them. The ring's pages are mapped twice into the agent (for wrap-around) and all of
/// them become resident once it has wrapped: the agent's RSS carries twice this size.
#[map]
pub static EMIT_EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Per-CPU staging area of `ldbg_emit`: header + the largest payload (too big for the 512-byte
/// eBPF stack).
#[map]
pub static EMIT_SCRATCH: PerCpuArray<[u8; EMIT_SCRATCH_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// Size of one `EMIT_SCRATCH` entry.
pub const EMIT_SCRATCH_LEN: usize =
    core::mem::size_of::<libdebugger_common::bpf::EmitRecordHeader>() + MAX_CHUNK;

/// Process lifecycle records.
#[map]
pub static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Kernel-specific tracepoint field offsets, filled by the agent (index 0).
#[map]
pub static TP_OFFSETS: Array<TracepointOffsets> = Array::with_max_entries(1, 0);

/// Records the programs could not deliver, per CPU (indices: `drop_counter`).
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_counter::COUNT, 0);

/// Counts one lost record.
#[inline(always)]
pub fn count_drop(index: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup: valid, aligned, and
        // only this CPU touches this slot (programs do not migrate while running).
        unsafe { *counter += 1 };
    }
}
