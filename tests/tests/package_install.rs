//! The Debian package installed the way an operator installs it, into a fresh copy of a Debian
//! bookworm root filesystem with systemd (`cargo xtask test` builds the root once with
//! mmdebstrap, `cargo xtask dist` the `.deb`; they arrive as `LIBDEBUGGER_ROOTFS_BOOKWORM` and
//! `LIBDEBUGGER_DEB`): the files land where the unit and the agent expect them, the unit is
//! enabled and passes `systemd-analyze verify`, `doctor` runs there and finds the helper, an
//! edited conffile survives a reinstall and a removal, and a purge leaves only the spool and the
//! files the administrator added. Also: the tarball holds the same files with the same modes.
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use std::borrow::BorrowMut;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = "usr/lib/systemd/system/libdebugger-agent.service";
const HELPER: &str = "usr/lib/libdebugger/libdebugger_helper.abi3.so";
const CONFIG: &str = "etc/libdebugger/agent.toml";
const README: &str = "usr/share/doc/libdebugger-agent/README";

/// The artifacts and the root named by `rootfs_var` (when given), or one line saying why the
/// test cannot run here.
fn inputs(rootfs_var: Option<&str>) -> Option<(Option<PathBuf>, PathBuf, PathBuf)> {
    let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
    let skip = |why: &str| {
        eprintln!("skipping: {why}");
        None
    };
    if !libdebugger_tests::agent::is_root() {
        return skip("needs root (chroot, mounts, dpkg in the root filesystem)");
    }
    let (Some(deb), Some(tarball)) = (var("LIBDEBUGGER_DEB"), var("LIBDEBUGGER_TARBALL")) else {
        return skip(
            "LIBDEBUGGER_DEB / LIBDEBUGGER_TARBALL unset: run through `cargo xtask test`, which builds them with `cargo xtask dist`",
        );
    };
    let rootfs = rootfs_var.and_then(var);
    if let (Some(name), None) = (rootfs_var, &rootfs) {
        return skip(&format!(
            "{name} unset: that root filesystem could not be built (see the xtask's SKIPPING line)"
        ));
    }
    Some((rootfs, deb, tarball))
}

fn run(mut cmd: impl BorrowMut<Command>) -> Result<Output> {
    let cmd = cmd.borrow_mut();
    let what = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    Ok(out)
}

/// Runs `cmd`, failing with its output unless it succeeds; returns stdout.
fn ok(mut cmd: impl BorrowMut<Command>) -> Result<String> {
    let cmd = cmd.borrow_mut();
    let what = format!("{cmd:?}");
    let out = run(cmd)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fresh copy of the cached root, removed on drop.
struct Root {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Root {
    fn copy_of(cached: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ldbg-install-")
            .tempdir_in("/var/tmp")?;
        let path = dir.path().join("root");
        ok(Command::new("cp").arg("-a").arg(cached).arg(&path))?;
        Ok(Self { _dir: dir, path })
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// `chroot ROOT args…`, with the environment apt's scripts expect of a non-interactive run.
    fn chroot(&self, args: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.path)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LANG", "C.UTF-8");
        c
    }

    /// Like [`Root::chroot`], in a private mount namespace with the host's /proc, /sys and /dev
    /// bound in (what `doctor` needs to look at the kernel and the processes).
    fn chroot_with_kernel(&self, args: &[&str]) -> Command {
        let r = self.path.display().to_string();
        let script = format!(
            "set -e; for d in proc sys dev; do mount --rbind /$d '{r}'/$d; done; exec chroot '{r}' \"$@\""
        );
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(script)
            .arg("sh")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NO_COLOR", "1");
        c
    }

    fn installed(&self) -> Result<bool> {
        let out = run(self.chroot(&["dpkg-query", "-W", "-f=${Status}", "libdebugger-agent"]))?;
        Ok(String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
    }
}

fn mode(path: &Path) -> Result<u32> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("{} is missing", path.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

/// `doctor --json` in the root, from the installed files only: the helper is found at
/// `/usr/lib/libdebugger/` and the host can run the agent.
fn doctor_finds_the_installed_helper(root: &Root) -> Result<()> {
    let out = run(root.chroot_with_kernel(&["/usr/bin/libdebugger-agent", "doctor", "--json"]))?;
    let report: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "doctor --json in the root did not print JSON ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let helper = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "helper library"))
        .context("doctor has no helper check")?;
    ensure!(
        helper["status"] == "ok"
            && helper["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("/{HELPER}"))),
        "doctor's helper check in the installed root: {helper}"
    );
    ensure!(
        report["can_run"] == true && out.status.success(),
        "doctor in the installed root says the host cannot run the agent: {report:#}"
    );
    Ok(())
}

#[test]
fn the_deb_installs_runs_doctor_keeps_config_and_purges_cleanly() -> Result<()> {
    let Some((Some(cached), deb, _)) = inputs(Some("LIBDEBUGGER_ROOTFS_BOOKWORM")) else {
        return Ok(());
    };
    let root = Root::copy_of(&cached)?;
    std::fs::copy(&deb, root.file("tmp/libdebugger-agent.deb"))?;
    ensure!(!root.installed()?, "the fresh root already has the package");
    // The README's command (apt resolves the dependencies; all are in a base system).
    ok(root.chroot(&[
        "apt-get",
        "install",
        "-y",
        "-q",
        "/tmp/libdebugger-agent.deb",
    ]))?;
    ensure!(
        root.installed()?,
        "dpkg -i did not leave the package installed"
    );

    // The files, where the unit and the agent look for them.
    ensure!(mode(&root.file("usr/bin/libdebugger-agent"))? == 0o755);
    ensure!(mode(&root.file(HELPER))? == 0o644);
    ensure!(mode(&root.file(UNIT))? == 0o644);
    ensure!(
        mode(&root.file(CONFIG))? == 0o600,
        "agent.toml is {:o}",
        mode(&root.file(CONFIG))?
    );
    let shipped = std::fs::read_to_string(
        libdebugger_tests::agent::workspace_root().join("deploy/agent.toml"),
    )?;
    ensure!(std::fs::read_to_string(root.file(CONFIG))? == shipped);
    let readme = std::fs::read_to_string(root.file(README))?;
    for page in [
        "libdebugger-agent run --help",
        "libdebugger-agent doctor --help",
        "--breakpoints",
    ] {
        ensure!(readme.contains(page), "the README lacks {page:?}");
    }
    let unit = std::fs::read_to_string(root.file(UNIT))?;
    ensure!(unit.contains("ExecStart=/usr/bin/libdebugger-agent run"));
    let conffiles = ok(root.chroot(&["dpkg-query", "-W", "-f=${Conffiles}", "libdebugger-agent"]))?;
    ensure!(
        conffiles.contains("/etc/libdebugger/agent.toml"),
        "agent.toml is not a conffile: {conffiles:?}"
    );
    // deb-systemd-helper enabled the unit (systemd is not running in the chroot, so nothing was
    // started).
    let wants = root.file("etc/systemd/system/multi-user.target.wants/libdebugger-agent.service");
    ensure!(
        std::fs::symlink_metadata(&wants).is_ok(),
        "the unit was not enabled ({} missing)",
        wants.display()
    );
    let version = ok(root.chroot(&["libdebugger-agent", "--version"]))?;
    ensure!(
        version.starts_with(&format!(
            "libdebugger-agent {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "--version: {version}"
    );

    // The unit as systemd would load it from this root.
    let verify = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path.display()))
        .arg("libdebugger-agent.service"))?;
    let said = String::from_utf8_lossy(&verify.stderr).into_owned();
    ensure!(
        verify.status.success() && !said.contains("libdebugger-agent"),
        "systemd-analyze verify: {}:\n{said}",
        verify.status
    );

    doctor_finds_the_installed_helper(&root)?;

    // The administrator edits the config, adds a file, the agent has spooled events.
    let edited = format!("{shipped}\n[agent]\nnice = 0\n");
    std::fs::write(root.file(CONFIG), &edited)?;
    let own_file = root.file("etc/libdebugger/breakpoints.toml");
    std::fs::write(&own_file, "# the administrator's\n")?;
    let spool = root.file("var/lib/libdebugger/spool");
    std::fs::create_dir_all(&spool)?;
    std::fs::write(spool.join("00000001.seg"), b"an undelivered event\n")?;

    // A reinstall (what an upgrade does to an unchanged conffile) keeps the edit.
    ok(root.chroot(&["dpkg", "-i", "/tmp/libdebugger-agent.deb"]))?;
    ensure!(
        std::fs::read_to_string(root.file(CONFIG))? == edited,
        "the reinstall overwrote the edited agent.toml"
    );

    // remove: the program goes, the configuration stays.
    ok(root.chroot(&["dpkg", "--remove", "libdebugger-agent"]))?;
    for gone in ["usr/bin/libdebugger-agent", HELPER, UNIT, README] {
        ensure!(
            !root.file(gone).exists(),
            "/{gone} is still there after dpkg --remove"
        );
    }
    ensure!(
        std::fs::read_to_string(root.file(CONFIG))? == edited,
        "dpkg --remove touched agent.toml"
    );

    // purge: the conffile and the unit's enablement go too; the spool (data) and the
    // administrator's own file stay.
    ok(root.chroot(&["dpkg", "--purge", "libdebugger-agent"]))?;
    ensure!(!root.file(CONFIG).exists(), "agent.toml survived the purge");
    ensure!(
        std::fs::symlink_metadata(&wants).is_err(),
        "the unit is still enabled after the purge"
    );
    ensure!(
        own_file.exists(),
        "the purge removed a file the package does not own"
    );
    ensure!(
        spool.join("00000001.seg").exists(),
        "the purge removed the spool"
    );
    let status = run(root.chroot(&["dpkg-query", "-W", "-f=${Status}", "libdebugger-agent"]))?;
    let status = String::from_utf8_lossy(&status.stdout);
    ensure!(
        status.is_empty() || status.contains("not-installed"),
        "dpkg still knows the package after the purge: {status:?}"
    );
    Ok(())
}

#[test]
fn the_tarball_holds_the_same_files_from_the_root() -> Result<()> {
    let Some((_, _, tarball)) = inputs(None) else {
        return Ok(());
    };
    let listing = ok(Command::new("tar").arg("-tvzf").arg(&tarball))?;
    let entry = |path: &str| listing.lines().find(|l| l.ends_with(&format!(" {path}")));
    for (path, perms) in [
        ("usr/bin/libdebugger-agent", "-rwxr-xr-x"),
        (HELPER, "-rw-r--r--"),
        (UNIT, "-rw-r--r--"),
        (CONFIG, "-rw-------"),
        (README, "-rw-r--r--"),
    ] {
        let line = entry(path).with_context(|| format!("{path} not in the tarball:\n{listing}"))?;
        ensure!(
            line.starts_with(perms) && line.contains("root/root"),
            "{line}"
        );
    }
    ensure!(
        listing.lines().count() == 5,
        "unexpected entries:\n{listing}"
    );
    Ok(())
}

/// The container image's case (`deploy/Containerfile`: `debian:bookworm-slim`, no systemd): the
/// package installs, its scripts do not fail without systemd, and the agent runs there.
#[test]
fn the_deb_installs_and_runs_without_systemd() -> Result<()> {
    let Some((Some(cached), deb, _)) = inputs(Some("LIBDEBUGGER_ROOTFS_BOOKWORM_BARE")) else {
        return Ok(());
    };
    let root = Root::copy_of(&cached)?;
    ensure!(
        !root.file("lib/systemd/systemd").exists()
            && !root.file("usr/lib/systemd/systemd").exists(),
        "the bare root has systemd"
    );
    std::fs::copy(&deb, root.file("tmp/libdebugger-agent.deb"))?;
    ok(root.chroot(&["dpkg", "-i", "/tmp/libdebugger-agent.deb"]))?;
    ensure!(
        root.installed()?,
        "dpkg -i did not leave the package installed"
    );
    ensure!(mode(&root.file(CONFIG))? == 0o600);
    doctor_finds_the_installed_helper(&root)?;
    ok(root.chroot(&["dpkg", "--purge", "libdebugger-agent"]))?;
    ensure!(!root.file("usr/bin/libdebugger-agent").exists() && !root.file(CONFIG).exists());
    Ok(())
}
