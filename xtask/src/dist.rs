//! `cargo xtask dist`: the release artifacts under `target/dist/`.
//!
//! * `libdebugger-agent_<version>-1_amd64.deb`, built by `cargo-deb` (installed into
//!   `target/tools/` when missing) from `[package.metadata.deb]` in `agent/Cargo.toml`;
//! * `libdebugger-agent-<version>-x86_64-linux.tar.gz`, the same files at their paths from `/`
//!   (`sudo tar -C / -xzf …`).
//!
//! Both hold the release agent (`/usr/bin/libdebugger-agent`), the helper where the agent looks
//! for it (`/usr/lib/libdebugger/libdebugger_helper.abi3.so`), the systemd unit
//! (`deploy/systemd/`), the example `/etc/libdebugger/agent.toml` (0600; a conffile in the
//! `.deb`) and the agent's `--help` pages as `/usr/share/doc/libdebugger-agent/README`.
use crate::util::{output, root, run};
use crate::{ebpf, helper};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cargo-deb release the xtask installs (pinned: its manifest keys are part of our build).
const CARGO_DEB_VERSION: &str = "3.8.0";
/// The Debian package's name (`[package.metadata.deb] name`).
pub const PACKAGE: &str = "libdebugger-agent";
/// The version of every crate of the workspace.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The environment variables through which `cargo xtask test` hands the artifacts to the tests.
pub const DEB_ENV_VAR: &str = "LIBDEBUGGER_DEB";
pub const TARBALL_ENV_VAR: &str = "LIBDEBUGGER_TARBALL";

/// What `dist` produced.
pub struct Artifacts {
    pub deb: PathBuf,
    pub tarball: PathBuf,
}

/// One file of the package: where it comes from, where it goes (relative to `/`), its mode.
struct File {
    source: PathBuf,
    dest: &'static str,
    mode: u32,
}

fn dist_dir() -> PathBuf {
    root().join("target/dist")
}

/// Builds everything and writes the `.deb` and the tarball into `target/dist/`.
pub fn build() -> Result<Artifacts> {
    ebpf::build()?;
    let helper_so = helper::build()?;
    let cargo = env!("CARGO");
    run(Command::new(cargo).current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "libdebugger-agent",
    ]))?;
    let agent = root().join("target/release/libdebugger-agent");
    let dir = dist_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cleaning {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let readme = dir.join("README");
    std::fs::write(&readme, help_pages(&agent)?)?;
    // The tarball's copy, stripped like the .deb's (see `build_deb`).
    let staging = root().join("target/dist-staging");
    std::fs::create_dir_all(&staging)?;
    let stripped = staging.join("libdebugger-agent");
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(&agent))?;
    let files = [
        File {
            source: stripped,
            dest: "usr/bin/libdebugger-agent",
            mode: 0o755,
        },
        File {
            source: helper_so,
            dest: "usr/lib/libdebugger/libdebugger_helper.abi3.so",
            mode: 0o644,
        },
        File {
            source: root().join("deploy/systemd/libdebugger-agent.service"),
            dest: "usr/lib/systemd/system/libdebugger-agent.service",
            mode: 0o644,
        },
        File {
            source: root().join("deploy/agent.toml"),
            dest: "etc/libdebugger/agent.toml",
            mode: 0o600,
        },
        File {
            source: readme,
            dest: "usr/share/doc/libdebugger-agent/README",
            mode: 0o644,
        },
    ];
    let deb = build_deb(&dir)?;
    let tarball = dir.join(format!("{PACKAGE}-{VERSION}-x86_64-linux.tar.gz"));
    write_tarball(&tarball, &files)?;
    eprintln!("xtask: dist: {}", deb.display());
    eprintln!("xtask: dist: {}", tarball.display());
    Ok(Artifacts { deb, tarball })
}

/// `libdebugger-agent --help` and every subcommand's `--help`, as one man-page-like text.
fn help_pages(agent: &Path) -> Result<String> {
    let help = |args: &[&str]| -> Result<String> {
        output(Command::new(agent).args(args).env("NO_COLOR", "1"))
            .with_context(|| format!("{} {} failed", agent.display(), args.join(" ")))
    };
    let version = help(&["--version"])?;
    let mut text = format!(
        "{}\n\nInstalled files:\n  /usr/bin/libdebugger-agent                      the agent and its CLI\n  \
         /usr/lib/libdebugger/libdebugger_helper.abi3.so  the helper it injects into Python processes\n  \
         /usr/lib/systemd/system/libdebugger-agent.service the systemd unit\n  \
         /etc/libdebugger/agent.toml                     settings and PostHog keys (0600)\n  \
         /var/lib/libdebugger/spool                      undelivered events (kept on purge)\n  \
         /run/libdebugger/agent.sock                     the root-only control socket\n",
        version.trim()
    );
    let top = help(&["--help"])?;
    text.push_str(&format!("\nlibdebugger-agent --help\n\n{top}"));
    for sub in [
        "run", "inspect", "trace", "doctor", "break", "status", "tail",
    ] {
        let page = help(&[sub, "--help"])?;
        text.push_str(&format!("\n\nlibdebugger-agent {sub} --help\n\n{page}"));
    }
    Ok(text)
}

/// `target/tools/bin/cargo-deb` at [`CARGO_DEB_VERSION`], installed from crates.io if missing.
fn ensure_cargo_deb() -> Result<PathBuf> {
    let bin = ebpf::tools_dir().join("bin/cargo-deb");
    let have = output(Command::new(&bin).arg("--version"));
    if have
        .as_deref()
        .is_some_and(|v| v.contains(CARGO_DEB_VERSION))
    {
        return Ok(bin);
    }
    eprintln!("xtask: installing cargo-deb {CARGO_DEB_VERSION} into target/tools/");
    run(Command::new(env!("CARGO"))
        .args([
            "install",
            "--locked",
            "cargo-deb",
            "--version",
            CARGO_DEB_VERSION,
        ])
        .arg("--root")
        .arg(ebpf::tools_dir()))?;
    Ok(bin)
}

fn build_deb(dir: &Path) -> Result<PathBuf> {
    let cargo_deb = ensure_cargo_deb()?;
    run(Command::new(&cargo_deb)
        .current_dir(root())
        // --strip: the release profile keeps line tables (debug = 1) for backtraces in
        // development; the package ships the 10 MB stripped binary instead of 90 MB.
        .args([
            "-p",
            "libdebugger-agent",
            "--no-build",
            "--strip",
            "--output",
        ])
        .arg(dir))?;
    let debs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    match debs.as_slice() {
        [one] => Ok(one.clone()),
        other => bail!(
            "cargo-deb left {} .deb files in {}, expected one",
            other.len(),
            dir.display()
        ),
    }
}

/// The files at their paths relative to `/`, owned by root, with their modes, for `sudo tar -C /
/// -xzf …`. No directory entries: extracting one over an existing symlink (`/lib` on a merged-/usr
/// system) would replace the link; without them tar creates missing parents and follows links.
fn write_tarball(path: &Path, files: &[File]) -> Result<()> {
    let out =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for f in files {
        let data =
            std::fs::read(&f.source).with_context(|| format!("reading {}", f.source.display()))?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(f.mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("root")?;
        h.set_groupname("root")?;
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, f.dest, data.as_slice())?;
    }
    tar.into_inner()?.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tarball_lays_the_files_out_from_the_root_with_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("agent.toml");
        std::fs::write(&src, "x = 1\n").unwrap();
        let path = dir.path().join("t.tar.gz");
        write_tarball(
            &path,
            &[File {
                source: src,
                dest: "etc/libdebugger/agent.toml",
                mode: 0o600,
            }],
        )
        .unwrap();
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap());
        let mut archive = tar::Archive::new(gz);
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(entries, vec![("etc/libdebugger/agent.toml".into(), 0o600)]);
    }
}
