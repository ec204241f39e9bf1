//! `cargo xtask build-ebpf`: installs what the eBPF build needs, idempotently, then builds it.
//!
//! The recipe (verified in ../shared/design/TOOLCHAIN.md): the pinned nightly with `rust-src`
//! compiles `ebpf/` with `-Z build-std=core` for `bpfel-unknown-none`; `bpf-linker` must use the
//! same LLVM major version, so it is built against that nightly's own `libLLVM` and installed
//! into `target/tools/` (Debian's LLVM does not match).
use crate::util::{output, root, run};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Reads the nightly channel pinned in `ebpf/rust-toolchain.toml`.
pub fn nightly() -> Result<String> {
    let path = root().join("ebpf/rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("channel").map(|v| {
                v.trim_start_matches([' ', '='])
                    .trim()
                    .trim_matches('"')
                    .to_string()
            })
        })
        .with_context(|| format!("no `channel` in {}", path.display()))
}

/// Installs the pinned nightly with rust-src if `rustup` does not have it yet.
pub fn ensure_nightly(channel: &str) -> Result<()> {
    let have = output(Command::new("rustup").args(["run", channel, "rustc", "--version"]));
    let has_src = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        channel,
    ]))
    .is_some_and(|s| s.lines().any(|l| l.starts_with("rust-src")));
    if have.is_none() || !has_src {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            channel,
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy,rustfmt",
        ]))?;
    }
    Ok(())
}

/// The nightly's sysroot and the name of its libLLVM (e.g. `LLVM-23-rust-1.101.0-nightly`).
fn llvm_of(channel: &str) -> Result<(PathBuf, String, String)> {
    let sysroot = output(
        Command::new("rustc")
            .arg(format!("+{channel}"))
            .args(["--print", "sysroot"]),
    )
    .context("`rustc --print sysroot` failed for the eBPF nightly")?;
    let sysroot = PathBuf::from(sysroot.trim());
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|n| n.starts_with("libLLVM-") && n.ends_with(".so"))
        .with_context(|| format!("no libLLVM-*.so in {}/lib", sysroot.display()))?;
    let name = lib
        .trim_start_matches("lib")
        .trim_end_matches(".so")
        .to_string();
    let major = name
        .trim_start_matches("LLVM-")
        .split(['-', '.'])
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((sysroot, name, major))
}

/// Directory holding the project's own tools (bpf-linker).
pub fn tools_dir() -> PathBuf {
    root().join("target/tools")
}

/// Builds bpf-linker against the nightly's libLLVM unless a working one is already installed.
pub fn ensure_bpf_linker(channel: &str) -> Result<PathBuf> {
    let (sysroot, llvm_lib, major) = llvm_of(channel)?;
    let bin = tools_dir().join("bin/bpf-linker");
    let stamp = tools_dir().join("bpf-linker.llvm");
    let stamp_ok = std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == llvm_lib);
    if bin.exists() && stamp_ok && output(Command::new(&bin).arg("--version")).is_some() {
        return Ok(bin);
    }
    let lib = sysroot.join("lib");
    let rustflags = format!(
        "-L {lib} -l dylib={llvm_lib} -C link-arg=-Wl,-rpath,{lib}",
        lib = lib.display()
    );
    run(Command::new("cargo")
        .arg(format!("+{channel}"))
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{major},no-llvm-linking"))
        .arg("--root")
        .arg(tools_dir())
        .env("RUSTFLAGS", rustflags)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO"))?;
    std::fs::write(&stamp, &llvm_lib)?;
    Ok(bin)
}

/// Where the built eBPF object lands (the agent's build script embeds it from here).
pub fn object_path() -> PathBuf {
    root().join("target/ebpf/bpfel-unknown-none/release/libdebugger-ebpf")
}

/// A `cargo +nightly` command set up for the eBPF crate (toolchain, PATH with bpf-linker).
pub fn cargo_nightly(channel: &str, bpf_linker: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bpf_linker.parent().expect("bin dir").to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    cmd.arg(format!("+{channel}"))
        .current_dir(root().join("ebpf"))
        .env("PATH", std::env::join_paths(paths).expect("PATH"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO");
    cmd
}

/// `cargo +nightly <subcommand>` for the eBPF crate on its target, with everything it needs
/// installed first.
fn ebpf_cargo(subcommand: &str) -> Result<Command> {
    let channel = nightly()?;
    ensure_nightly(&channel)?;
    let linker = ensure_bpf_linker(&channel)?;
    let mut cmd = cargo_nightly(&channel, &linker);
    cmd.args([
        subcommand,
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "-p",
        "libdebugger-ebpf",
        "--target-dir",
    ])
    .arg(root().join("target/ebpf"));
    Ok(cmd)
}

/// Installs what is missing and builds the eBPF object. Returns its path.
pub fn build() -> Result<PathBuf> {
    run(&mut ebpf_cargo("build")?)?;
    let obj = object_path();
    if !obj.exists() {
        bail!("the eBPF build succeeded but {} is missing", obj.display());
    }
    eprintln!("xtask: eBPF object: {}", obj.display());
    Ok(obj)
}

/// Clippy for the eBPF crate on its own target.
pub fn clippy() -> Result<()> {
    run(ebpf_cargo("clippy")?.args(["--", "-D", "warnings"]))
}
