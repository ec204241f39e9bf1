//! Embeds the eBPF object built by `cargo xtask build-ebpf`. This build script does not build it
//! (that needs a nightly toolchain and bpf-linker); it stops with a message naming the command.
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let obj = manifest.join("../target/ebpf/bpfel-unknown-none/release/libdebugger-ebpf");
    println!("cargo:rerun-if-changed={}", obj.display());
    if !obj.exists() {
        panic!(
            "\n\nThe eBPF object is missing: {}\nBuild it first with:  cargo xtask build-ebpf   (or ./x build-ebpf on a fresh machine)\n\n",
            obj.display()
        );
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("libdebugger-ebpf.o");
    std::fs::copy(&obj, &out).expect("copy the eBPF object into OUT_DIR");
}
