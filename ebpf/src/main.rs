//! eBPF programs of libdebugger. Built for `bpfel-unknown-none` by `cargo xtask build-ebpf`; on
//! the host this file compiles to an empty program so `cargo clippy --workspace` can check it.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: eBPF programs cannot panic at run time (the verifier rejects unbounded code paths);
    // this handler is only needed to link.
    unsafe { core::hint::unreachable_unchecked() }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
