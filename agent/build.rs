//! Embeds the eBPF object built by `cargo xtask build-ebpf`. This build script does not build it
//! (that needs a nightly toolchain and bpf-linker); it stops with a message naming the command.
//! It also records the commit the agent is built from, for `libdebugger-agent --version`.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    commit();
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

/// `LIBDEBUGGER_COMMIT`: `$LIBDEBUGGER_COMMIT` when set (a build from a tarball of the sources),
/// else `git rev-parse --short=12 HEAD`, else "unknown". Rebuilt when HEAD moves.
fn commit() {
    println!("cargo:rerun-if-env-changed=LIBDEBUGGER_COMMIT");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    // HEAD itself, the branch file it points to (a worktree keeps them apart) and packed-refs;
    // only files that exist (cargo reruns a script whose watched file is missing every time).
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    for name in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(p) = git(&["rev-parse", "--git-path", name])
            && std::path::Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    let commit = std::env::var("LIBDEBUGGER_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=LIBDEBUGGER_COMMIT={commit}");
}
