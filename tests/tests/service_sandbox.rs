//! The systemd unit's restrictions, tried on the real agent. systemd is not PID 1 on this
//! project's machines, so `systemd-run -p …` cannot apply them; this test applies the same
//! restrictions with the kernel's own tools and checks that the agent still does its whole job
//! (inject the helper into a pyenv CPython under /root, arm a breakpoint, carry a hit out):
//!
//! * `CapabilityBoundingSet=` (read from the unit file) and `NoNewPrivileges=yes`: `setpriv`;
//! * `ProtectSystem=strict`: the root file system read-only, one writable directory (standing
//!   for `StateDirectory=`/`RuntimeDirectory=`);
//! * `ProtectHome=yes`: empty read-only `/root` and `/home` (the interpreter under test lives in
//!   `/root/.pyenv`: the agent must reach it through `/proc/<pid>/root`);
//! * `PrivateTmp=yes`: a private `/tmp`;
//! * `Nice=-5`: the agent's own `setpriority(-5)` must then need no `CAP_SYS_NICE`.
//!
//! Each in a private mount namespace of the agent alone (`unshare --mount`); the target runs
//! unrestricted, as an application would.
use anyhow::{Context, Result, bail, ensure};
use libdebugger_tests::agent::{agent_binary, wait_with_deadline, workspace_root};
use libdebugger_tests::local::{Bp, Hit, Target, breakpoints_toml};
use libdebugger_tests::python;
use libdebugger_tests::require_agent_env;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The unit's `CapabilityBoundingSet=` as setpriv's `--bounding-set` argument and as the
/// `CapEff` mask the kernel should report.
fn unit_capabilities() -> Result<(String, u64)> {
    let unit =
        std::fs::read_to_string(workspace_root().join("deploy/systemd/libdebugger-agent.service"))?;
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .context("no CapabilityBoundingSet= in the unit")?
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect();
    let bit = |name: &str| match name {
        "dac_read_search" => Ok(2),
        "sys_ptrace" => Ok(19),
        "sys_admin" => Ok(21),
        "perfmon" => Ok(38),
        "bpf" => Ok(39),
        "checkpoint_restore" => Ok(40),
        other => bail!("the unit names {other}, which this test does not know the bit of"),
    };
    let mut mask = 0u64;
    for c in &caps {
        mask |= 1 << bit(c)?;
    }
    let arg = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    Ok((arg, mask))
}

fn cap_eff(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff")?
        .trim();
    Ok(u64::from_str_radix(hex, 16)?)
}

#[test]
fn the_agent_works_with_the_units_capabilities_and_file_system_restrictions() -> Result<()> {
    require_agent_env!();
    let Some(interp) = python::supported()
        .into_iter()
        .find(|i| i.path.starts_with("/root/") || i.path.starts_with("/home/"))
    else {
        eprintln!("skipping: no CPython under /root or /home to check ProtectHome= against");
        return Ok(());
    };
    let (bounding, mask) = unit_capabilities()?;
    // The one writable directory, outside /tmp (which becomes private) and /root. The agent
    // and its helper are copied into it: the workspace itself may live under /tmp or /root
    // (a CI clone), where the sandbox hides it, as an installed agent lives in /usr.
    let dir = tempfile::Builder::new()
        .prefix("ldbg-sandbox-")
        .tempdir_in("/var/tmp")?;
    let w = dir.path();
    let agent_exe = w.join("bin").join(
        agent_binary()?
            .file_name()
            .context("the agent binary has no file name")?,
    );
    let helper_so = w.join("bin/libdebugger_helper.abi3.so");
    std::fs::create_dir_all(w.join("bin"))?;
    std::fs::copy(agent_binary()?, &agent_exe).context("copying the agent")?;
    std::fs::copy(
        workspace_root().join("target/helper/libdebugger_helper.abi3.so"),
        &helper_so,
    )
    .context("copying the staged helper (cargo xtask build-helper)")?;
    let bp = Bp::marker("agent_mod.py", "BP:checkout").id("sandboxed");
    std::fs::write(w.join("breakpoints.toml"), breakpoints_toml(&[bp]))?;
    std::fs::write(w.join("agent.toml"), "")?;
    let mut target = Target::start(&interp, "sandbox")?;
    let script = r#"set -e
W="$1"; shift
mount --make-rprivate /
mount --bind "$W" "$W"
mount -o remount,bind,ro /
mount -t tmpfs -o ro,mode=0755 tmpfs /root
mount -t tmpfs -o ro,mode=0755 tmpfs /home
mount -t tmpfs -o mode=1777 tmpfs /tmp
exec nice -n -5 setpriv --bounding-set="$BOUNDING" --inh-caps=-all --no-new-privs -- "$@"
"#;
    let stderr = std::fs::File::create(w.join("agent.log"))?;
    let mut agent = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(w)
        .arg(&agent_exe)
        .args(["run", "--pid", &target.pid().to_string()])
        .arg("--helper")
        .arg(&helper_so)
        .arg("--breakpoints")
        .arg(w.join("breakpoints.toml"))
        .arg("--events-file")
        .arg(w.join("events.jsonl"))
        .arg("--config-file")
        .arg(w.join("agent.toml"))
        .env("BOUNDING", &bounding)
        .env("LIBDEBUGGER_RUNTIME_DIR", w.join("run"))
        .env("LIBDEBUGGER_STATE_DIR", w.join("state"))
        .env("LIBDEBUGGER_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("LIBDEBUGGER_HELPER")
        .env_remove("POSTHOG_API_KEY")
        .env_remove("POSTHOG_PERSONAL_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("starting the sandboxed agent")?;
    let log = || std::fs::read_to_string(w.join("agent.log")).unwrap_or_default();
    let result = (|| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        // Armed in the target, then a hit out through the ring buffer into the events file.
        loop {
            ensure!(agent.try_wait()?.is_none(), "the agent exited:\n{}", log());
            if log().contains("status=armed") {
                break;
            }
            ensure!(Instant::now() < deadline, "never armed:\n{}", log());
            std::thread::sleep(Duration::from_millis(50));
        }
        // The agent process (the exec'd binary under unshare → nice → setpriv) holds exactly
        // the unit's capabilities.
        let agent_pid = std::fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == agent_exe)
                    && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.contains(&w.display().to_string()))
            })
            .context("the sandboxed agent's process not found")?;
        ensure!(
            cap_eff(agent_pid)? == mask,
            "CapEff {:#x}, the unit allows {mask:#x}",
            cap_eff(agent_pid)?
        );
        target.cmd("call 3", "called")?;
        loop {
            let text = std::fs::read_to_string(w.join("events.jsonl")).unwrap_or_default();
            let hit = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|e| {
                    Hit(e.clone()).is_hit() && e["properties"]["$breakpoint_id"] == "sandboxed"
                });
            if hit {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "no hit in the events file:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: kill has no memory preconditions; the pid is the agent's.
        unsafe { libc::kill(agent_pid as i32, libc::SIGTERM) };
        let exit = wait_with_deadline(&mut agent, Duration::from_secs(30))?;
        ensure!(exit.success(), "exit after SIGTERM: {exit}\n{}", log());
        Ok(())
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    result?;
    let log = log();
    for bad in [
        "cannot set the agent's scheduling priority",
        "injection failed",
        "cannot attach",
        "eBPF is unavailable",
        "ERROR",
    ] {
        ensure!(
            !log.contains(bad),
            "{bad:?} in the sandboxed agent's log:\n{log}"
        );
    }
    ensure!(target.alive(), "the target died");
    Ok(())
}
