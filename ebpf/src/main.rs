//! eBPF programs of libdebugger. Built for `bpfel-unknown-none` by `cargo xtask build-ebpf`; on
//! the host this file compiles to an empty program so `cargo clippy --workspace` can check it.
//!
//! | program | kind | attached to | output |
//! |---|---|---|---|
//! | `frame_entry_multi` (Linux 6.6+), else `frame_entry` | uprobe.multi / uprobe | `_PyEval_EvalFrameDefault`, one process at a time | `CODE_COUNTS`, `GOVERNOR`, `FRAME_EVENTS` |
//! | `ldbg_emit` | uprobe | the helper's exported `ldbg_emit(ptr, len)` | `EMIT_EVENTS` |
//! | `sched_process_exec` / `_fork` / `_exit` | tracepoints | `sched/*` | `PROC_EVENTS` |
//!
//! Every map is declared in `maps.rs`; the layouts of keys, values and records live in
//! `libdebugger_common::bpf` and are shared with the agent.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod emit;
#[cfg(target_arch = "bpf")]
mod frame_entry;
#[cfg(target_arch = "bpf")]
mod lifecycle;
#[cfg(target_arch = "bpf")]
mod maps;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: eBPF programs cannot panic at run time (the verifier rejects unbounded code paths);
    // this handler is only needed to link.
    unsafe { core::hint::unreachable_unchecked() }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
