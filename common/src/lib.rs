//! Types shared by the eBPF programs (`ebpf/`), the agent (`agent/`) and the in-process helper
//! (`helper/`). Everything here is `#[repr(C)]`, fixed-size and `no_std`: these are the wire
//! formats between the three. Change a layout here and all three follow.
//!
//! * [`bpf`]: keys and values of the BPF maps and the records the programs write to ring buffers.
//! * [`helper_abi`]: the contract between the helper (inside the target) and the agent: the
//!   chunks the helper hands to `ldbg_emit`, and the control block the agent writes.
//! * [`inprocess`]: the marker by which the `libdebugger` Python package tells the agent that it
//!   debugs its process itself.
//! * [`cpython`]: what is known about each CPython version (one table), and the reader of the
//!   interpreter's own `_Py_DebugOffsets`: the agent reads it from outside, the helper inside.
//! * [`protocol`] (feature `protocol`, needs `alloc`): the typed JSON messages between agent and
//!   helper.
#![no_std]

#[cfg(feature = "protocol")]
extern crate alloc;

pub mod bpf;
pub mod cpython;
pub mod helper_abi;
pub mod inprocess;
#[cfg(feature = "protocol")]
pub mod protocol;
