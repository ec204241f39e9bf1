//! The marker by which the `libdebugger` Python package (`pip install libdebugger`, crate
//! `python/`) tells a host agent that it debugs its process itself.
//!
//! The package's native module exports `LDBG_INPROCESS`, an [`InProcessMarker`]. Its `active`
//! field is 1 while a `LiveDebuggerManager` has started (breakpoints armed in process) and 0
//! otherwise. The agent finds the module in `/proc/<pid>/maps` (a file named `_native.*.so` in
//! a directory named `libdebugger`), reads the marker with `process_vm_readv` and, while it is
//! active, leaves the process alone from then on: it injects nothing, withdraws its breakpoints
//! from a helper it injected earlier, and reports the process as "in-process debugger active".

/// The exported symbol's name.
pub const SYMBOL: &str = "LDBG_INPROCESS";
/// `InProcessMarker::magic`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"LDBGINPR");
/// The directory the package's native module lives in (the package itself).
pub const PACKAGE_DIR: &str = "libdebugger";
/// The native module's file name starts with this (`_native.abi3.so`).
pub const MODULE_PREFIX: &str = "_native.";

/// The marker's layout. The package's copy uses atomics for `active` and `pid` (same size and
/// alignment).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InProcessMarker {
    /// [`MAGIC`].
    pub magic: u64,
    /// 1 while the in-process debugger is started, else 0.
    pub active: u32,
    /// The pid that started it (as that process sees itself).
    pub pid: u32,
}

/// Field offsets, for readers in another process.
pub mod offsets {
    use super::InProcessMarker;
    pub const MAGIC: usize = core::mem::offset_of!(InProcessMarker, magic);
    pub const ACTIVE: usize = core::mem::offset_of!(InProcessMarker, active);
    pub const PID: usize = core::mem::offset_of!(InProcessMarker, pid);
}
