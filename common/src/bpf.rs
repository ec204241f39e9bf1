//! BPF map keys/values and ring-buffer records.

/// Per-process CPython struct offsets the frame-entry probe needs, filled by the agent from
/// `_Py_DebugOffsets` (3.13+) or the version table (3.11/3.12). Map `PY_OFFSETS`, key: tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyOffsets {
    /// Offset of the code object pointer in `_PyInterpreterFrame` (`f_code` / `f_executable`).
    pub frame_code: u32,
    /// Low bits to clear from the pointer read at `frame_code` (3.14 stores a tagged
    /// `_PyStackRef` there: 3; earlier versions: 0).
    pub code_tag_mask: u32,
    /// Entries per second above which the governor trips for this process (0 = no limit).
    pub entries_budget_per_sec: u32,
    pub _pad: u32,
}

/// Key of the per-(process, code object) entry counters and of the watched set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CodeKey {
    pub tgid: u32,
    pub _pad: u32,
    /// Address of the `PyCodeObject` in the target.
    pub code: u64,
}

/// Overhead governor state per process (map `GOVERNOR`, key: tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GovernorState {
    /// Start of the current one-second window (bpf_ktime_get_ns).
    pub window_start_ns: u64,
    /// Entries seen in the current window.
    pub window_entries: u64,
    /// Total entries since attach.
    pub total_entries: u64,
    /// Set to 1 by the probe when a window exceeded the budget; the agent detaches and reports.
    pub tripped: u32,
    pub _pad: u32,
}

/// Record sent to the `FRAME_EVENTS` ring buffer when a watched code object is entered, and once
/// when the governor trips for a process (then `code` is [`GOVERNOR_TRIPPED_CODE`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameEntryRecord {
    pub tgid: u32,
    pub tid: u32,
    pub code: u64,
    pub ktime_ns: u64,
}

/// `FrameEntryRecord::code` of the record the frame-entry probe sends, with a forced wake-up,
/// the moment the governor trips for `tgid` (no code object lives at address 0, and the probe
/// never reports a null code pointer as an entry). The agent detaches the probe on it at once:
/// until it does, every frame entry of the process still takes the uprobe's trap (~0.5 µs), so
/// a detach at the agent's next poll would let a busy process pay for tens of thousands more.
pub const GOVERNOR_TRIPPED_CODE: u64 = 0;

/// Kind of a process lifecycle record.
pub mod proc_event_kind {
    pub const EXEC: u32 = 1;
    pub const FORK: u32 = 2;
    pub const EXIT: u32 = 3;
}

/// Record sent to the `PROC_EVENTS` ring buffer by the exec/fork/exit tracepoints.
///
/// * EXEC (`sched/sched_process_exec`): `tgid` is the process that called `execve`
///   successfully (its new image is mapped).
/// * FORK (`sched/sched_process_fork`): `tgid` is the new task's id, `parent_tgid` the forking
///   process. The tracepoint also fires for new threads (`clone(CLONE_THREAD)`); those have
///   `/proc/<tgid>/status` `Tgid` equal to `parent_tgid` and can be ignored by the reader.
/// * EXIT (`sched/sched_process_exit`): only thread-group leaders: the process is exiting.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcEventRecord {
    /// One of [`proc_event_kind`].
    pub kind: u32,
    /// The process (tgid) the event is about (the new task for FORK).
    pub tgid: u32,
    /// The parent (FORK) or 0.
    pub parent_tgid: u32,
    pub _pad: u32,
}

/// Field offsets inside tracepoint records that differ between kernels, read by the agent from
/// `/sys/kernel/tracing/events/<group>/<name>/format` (map `TP_OFFSETS`, one entry at index 0).
/// A zero offset means "not configured": the program then does nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// `child_pid` in `sched_process_fork` (20 on Linux 6.18, 24 on kernels with `char[16]`
    /// comm fields).
    pub fork_child_pid: u32,
    pub _pad: u32,
}

/// Indices of the per-CPU `DROPS` counters: records the programs could not deliver. Never
/// silent: the agent sums them over CPUs and reports them.
pub mod drop_counter {
    /// `EMIT_EVENTS` ring buffer was full: an `ldbg_emit` chunk was lost.
    pub const EMIT_RING_FULL: u32 = 0;
    /// `bpf_probe_read_user` of an `ldbg_emit` payload failed (e.g. paged out).
    pub const EMIT_READ_FAILED: u32 = 1;
    /// `FRAME_EVENTS` ring buffer was full.
    pub const FRAME_RING_FULL: u32 = 2;
    /// `PROC_EVENTS` ring buffer was full.
    pub const PROC_RING_FULL: u32 = 3;
    /// A new (process, code object) counter could not be inserted into `CODE_COUNTS`.
    pub const COUNTER_INSERT_FAILED: u32 = 4;
    /// Reading the code pointer out of a frame failed.
    pub const FRAME_READ_FAILED: u32 = 5;
    /// Number of counters (size of the `DROPS` array).
    pub const COUNT: u32 = 8;
}

/// Header the `ldbg_emit` uprobe puts before the bytes it copies out of the helper.
/// The payload (a [`crate::helper_abi::ChunkHeader`] and its data) follows in the same record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmitRecordHeader {
    pub tgid: u32,
    pub tid: u32,
    /// Bytes of payload copied after this header (≤ [`crate::helper_abi::MAX_CHUNK`]).
    pub len: u32,
    /// The `len` argument the helper passed (may exceed `len` if it was cut).
    pub requested_len: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], Copy, contain only integers, and have explicit
    // padding fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::PyOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CodeKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GovernorState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FrameEntryRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcEventRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EmitRecordHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TracepointOffsets {}
}
