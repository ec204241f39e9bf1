//! `LDBG_INPROCESS`: tells a host agent that this process is debugged in process (layout and
//! protocol: `common/src/inprocess.rs`).
use libdebugger_common::inprocess::MAGIC;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

/// The marker as this process holds it: `InProcessMarker`'s layout, with atomics.
#[repr(C)]
pub struct Marker {
    magic: AtomicU64,
    active: AtomicU32,
    pid: AtomicU32,
}

/// Read by the agent with `process_vm_readv` (symbol `libdebugger_common::inprocess::SYMBOL`).
#[unsafe(no_mangle)]
#[used]
pub static LDBG_INPROCESS: Marker = Marker {
    magic: AtomicU64::new(MAGIC),
    active: AtomicU32::new(0),
    pid: AtomicU32::new(0),
};

/// Marks the in-process debugger started (breakpoints armed here) or stopped.
#[pyfunction]
pub fn set_active(active: bool) {
    LDBG_INPROCESS.pid.store(std::process::id(), SeqCst);
    LDBG_INPROCESS.active.store(u32::from(active), SeqCst);
}

/// Whether the marker says started.
#[pyfunction]
pub fn is_active() -> bool {
    LDBG_INPROCESS.active.load(SeqCst) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use libdebugger_common::inprocess::{InProcessMarker, offsets};

    #[test]
    fn layout_matches_the_shared_one() {
        assert_eq!(
            std::mem::size_of::<Marker>(),
            std::mem::size_of::<InProcessMarker>()
        );
        assert_eq!(std::mem::offset_of!(Marker, magic), offsets::MAGIC);
        assert_eq!(std::mem::offset_of!(Marker, active), offsets::ACTIVE);
        assert_eq!(std::mem::offset_of!(Marker, pid), offsets::PID);
    }
}
