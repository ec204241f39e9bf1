//! Placeholder until the frame-entry, emit and lifecycle programs land.
use aya_ebpf::{macros::uprobe, programs::ProbeContext};

#[uprobe]
pub fn frame_entry(_ctx: ProbeContext) -> u32 {
    0
}
