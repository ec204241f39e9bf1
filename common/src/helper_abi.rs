//! The contract between the helper (a shared library loaded into the target interpreter) and the
//! agent. The helper exports, with C linkage:
//!
//! * `void ldbg_emit(const uint8_t *ptr, size_t len)`: a no-op the agent's eBPF uprobe reads.
//!   Each call carries one or more chunks back to back (at most [`MAX_CHUNK`] bytes in all), each
//!   a [`ChunkHeader`] followed by `data_len` bytes: packing several small messages into one call
//!   saves a uprobe trap per message. A message larger than [`MAX_CHUNK_DATA`] is split into
//!   chunks with the same `msg_id` and increasing `seq`.
//! * `int ldbg_attach(void)`: called once by the injector (on any thread, GIL not required); it
//!   starts the helper's own thread, which takes the GIL when it needs it. Idempotent.
//! * `LDBG_CONTROL`: a [`ControlBlock`] the agent writes with `process_vm_writev` and the helper
//!   polls; see [`ControlBlock`] for the protocol.

/// Largest payload (one or more chunks) one `ldbg_emit` call may carry; the uprobe copies at most
/// this.
pub const MAX_CHUNK: usize = 16 * 1024;
/// Size of [`ChunkHeader`] in bytes.
pub const CHUNK_HEADER_LEN: usize = core::mem::size_of::<ChunkHeader>();
/// Largest data part of one chunk.
pub const MAX_CHUNK_DATA: usize = MAX_CHUNK - CHUNK_HEADER_LEN;
/// `ChunkHeader::magic`: "LDBG" little-endian.
pub const CHUNK_MAGIC: u32 = u32::from_le_bytes(*b"LDBG");
/// Version of this ABI; bumped on any layout or protocol change (2: an `ldbg_emit` call may
/// carry several chunks).
///
/// What stays the same across ABI versions, so that an agent can deal safely with a helper left
/// in a process by another build (an upgrade): as long as a control block starts with
/// [`CONTROL_MAGIC`], its header (`magic` … `data`, see [`control_offsets`]) keeps this layout
/// and seqlock protocol, and every helper applies [`DISARM`] by removing all its breakpoints.
/// An agent that finds a helper of another ABI behind that magic disarms it and does nothing
/// else with it (no probe on its `ldbg_emit`, whose chunks may differ); a new magic means a new
/// header, which no older agent touches.
pub const ABI_VERSION: u32 = 2;

/// The control data that every helper, of any ABI version, applies as "no breakpoints".
pub const DISARM: &[u8] = br#"{"breakpoints":[]}"#;

/// What a message is.
pub mod message_kind {
    /// A `$data_breakpoint_hit` `properties` object (JSON).
    pub const HIT: u16 = 1;
    /// Breakpoint statuses after an update or a change (JSON).
    pub const STATUS: u16 = 2;
    /// The helper announces itself after `ldbg_attach` (JSON: version, pid, python version).
    pub const HELLO: u16 = 3;
    /// Counters (hits, rate-limited, condition false, dropped...) (JSON).
    pub const STATS: u16 = 4;
    /// Code objects a breakpoint armed: lets the agent watch them with the frame-entry probe (JSON).
    pub const CODE_OBJECTS: u16 = 5;
    /// The answer to a `sources` request of the control JSON: the source files with code loaded
    /// in the process, or the lines of one of them that carry code (JSON; the web UI's file
    /// browser).
    pub const SOURCES: u16 = 6;
    /// A `$data_logpoint_hit` `properties` object (JSON): a logpoint's rendered message. An
    /// agent that does not know the kind ignores it.
    pub const LOG_HIT: u16 = 7;
}

/// Header of one `ldbg_emit` chunk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkHeader {
    /// [`CHUNK_MAGIC`].
    pub magic: u32,
    /// [`ABI_VERSION`].
    pub abi_version: u16,
    /// One of [`message_kind`].
    pub kind: u16,
    /// Unique per message within the process (a counter).
    pub msg_id: u64,
    /// Index of this chunk, from 0.
    pub seq: u32,
    /// Number of chunks of the message.
    pub total_chunks: u32,
    /// Length of the whole message (sum of all chunks' data).
    pub total_len: u32,
    /// Length of this chunk's data, which follows the header.
    pub data_len: u32,
}

/// Size of the control block's data area.
pub const CONTROL_DATA_LEN: usize = 1024 * 1024;
/// `ControlBlock::magic`: "LDBGCTL1".
pub const CONTROL_MAGIC: u64 = u64::from_le_bytes(*b"LDBGCTL1");

/// The block the agent writes into the helper (exported as `LDBG_CONTROL`).
///
/// Protocol (a seqlock, single writer = the agent): to publish, the agent writes `generation`
/// odd, then `data_len` and `data`, then `generation` even and greater than before. The helper
/// reads `generation` (even, changed since last seen), copies `data[..data_len]`, reads
/// `generation` again and retries if it changed. `data` is JSON (see the helper's `control.rs`):
/// the full desired breakpoint set and settings, applied as a diff.
#[repr(C)]
pub struct ControlBlock {
    /// [`CONTROL_MAGIC`], set by the helper at build time; the agent checks it before writing.
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// The helper's pid as it sees it (set at attach; lets the agent spot a forked child that
    /// still carries the parent's block).
    pub helper_pid: u32,
    /// Seqlock generation (see above).
    pub generation: u64,
    /// Last generation the helper applied (the helper writes it; the agent reads it).
    pub applied_generation: u64,
    /// Bytes of `data` in use.
    pub data_len: u32,
    pub _pad: u32,
    pub data: [u8; CONTROL_DATA_LEN],
}

/// Byte offsets of the [`ControlBlock`] fields, for the agent's `process_vm_writev` calls.
pub mod control_offsets {
    use super::ControlBlock;
    pub const MAGIC: usize = core::mem::offset_of!(ControlBlock, magic);
    pub const ABI_VERSION: usize = core::mem::offset_of!(ControlBlock, abi_version);
    pub const HELPER_PID: usize = core::mem::offset_of!(ControlBlock, helper_pid);
    pub const GENERATION: usize = core::mem::offset_of!(ControlBlock, generation);
    pub const APPLIED_GENERATION: usize = core::mem::offset_of!(ControlBlock, applied_generation);
    pub const DATA_LEN: usize = core::mem::offset_of!(ControlBlock, data_len);
    pub const DATA: usize = core::mem::offset_of!(ControlBlock, data);
}
