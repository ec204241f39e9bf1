//! `cargo xtask demo`: the README's first command. Builds everything, starts the bundled sample
//! service (xtask/demo/shop), starts the agent in local mode with the bundled breakpoint, prints
//! the hits it captures, then stops everything.
use crate::util::{root, run};
use crate::{ebpf, helper};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Hits to show before stopping.
const HITS_WANTED: usize = 3;
/// How long to wait for them.
const DEADLINE: Duration = Duration::from_secs(30);

struct KillOnDrop(Child, &'static str);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SIGTERM first so the agent removes its breakpoints and flushes; then make sure.
        // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("xtask: {} did not stop on SIGTERM; killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The demo service's command, and how to find its pid. `LIBDEBUGGER_DEMO_PYTHON=3.14` (or
/// 3.13, 3.15) runs it on Debian unstable's interpreter in a container (its own mount and pid
/// namespaces, `pivot_root`ed into the test root filesystem, `xtask/src/rootfs.rs`); otherwise
/// on pyenv's 3.12 if present, else `python3`.
fn service_command(demo_dir: &std::path::Path) -> Result<(Command, String, bool)> {
    let Ok(minor) = std::env::var("LIBDEBUGGER_DEMO_PYTHON") else {
        let python = demo_python();
        let mut c = Command::new(&python);
        c.args(["-m", "shop.service"]).current_dir(demo_dir);
        return Ok((c, python.display().to_string(), false));
    };
    let Some(rootfs) = crate::rootfs::ensure(&crate::rootfs::SID_PYTHONS)? else {
        bail!("LIBDEBUGGER_DEMO_PYTHON={minor}: the Debian unstable root could not be built");
    };
    let python = format!("/usr/bin/python{minor}");
    if !rootfs.join(python.trim_start_matches('/')).exists() {
        bail!(
            "LIBDEBUGGER_DEMO_PYTHON={minor}: {python} is not in {}",
            rootfs.display()
        );
    }
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "-p",
        "libdebugger-tests",
        "--bin",
        "ldbg-container-init",
    ]))?;
    // The workspace is visible inside at /mnt/host/<workspace> (see the init's documentation).
    let inside = format!("/mnt/host{}", demo_dir.display());
    let mut c = Command::new("unshare");
    c.args(["--mount", "--pid", "--fork", "--kill-child", "--"])
        .arg(root().join("target/debug/ldbg-container-init"))
        .arg(&rootfs)
        .arg(&inside)
        .arg(root())
        .arg("--")
        .args([python.as_str(), "-m", "shop.service"])
        .current_dir("/");
    Ok((
        c,
        format!("{python} in a container on {}", rootfs.display()),
        true,
    ))
}

/// The host pid of the service started in a container: the descendant of `pid` running Python.
fn python_descendant(pid: u32) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut queue = vec![pid];
        while let Some(p) = queue.pop() {
            let exe = std::fs::read_link(format!("/proc/{p}/exe")).unwrap_or_default();
            if p != pid
                && exe
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("python"))
            {
                return Ok(p);
            }
            let children = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"));
            queue.extend(
                children
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        if Instant::now() >= deadline {
            bail!("the service's interpreter did not start under pid {pid}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The interpreter the demo service runs on: pyenv's 3.12 if present, else `python3`.
fn demo_python() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let pyenv = home.join(".pyenv/versions/3.12.1/bin/python3");
    if pyenv.exists() {
        pyenv
    } else {
        PathBuf::from("python3")
    }
}

pub fn run_demo() -> Result<()> {
    crate::util::ensure_debian_packages(crate::util::DEBIAN_PACKAGES)?;
    ebpf::build()?;
    helper::build()?;
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "-p",
        "libdebugger-agent",
    ]))?;
    let agent_bin = root().join("target/debug/libdebugger-agent");
    let demo_dir = root().join("xtask/demo");
    let out_dir = root().join("target/demo");
    std::fs::create_dir_all(&out_dir)?;
    let events = out_dir.join("events.jsonl");
    let _ = std::fs::remove_file(&events);

    let (mut command, python, in_container) = service_command(&demo_dir)?;
    eprintln!("xtask: starting the sample service (xtask/demo/shop) on {python}");
    let mut service = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {python}"))?;
    let mut first = String::new();
    BufReader::new(service.stdout.take().context("service stdout")?).read_line(&mut first)?;
    let service_pid = if in_container {
        python_descendant(service.id())?
    } else {
        service.id()
    };
    let service = KillOnDrop(service, "the sample service");
    eprintln!("xtask: {}", first.trim());

    eprintln!(
        "xtask: starting the agent in local mode: breakpoints from xtask/demo/breakpoints.toml, events to {}",
        events.display()
    );
    let agent = Command::new(&agent_bin)
        .args(["run", "--breakpoints"])
        .arg(demo_dir.join("breakpoints.toml"))
        .arg("--events-file")
        .arg(&events)
        // Only the demo's service: the agent's default is every CPython process on the host.
        .args(["--pid", &service_pid.to_string()])
        .spawn()
        .with_context(|| format!("starting {}", agent_bin.display()))?;
    let agent = KillOnDrop(agent, "the agent");

    let started = Instant::now();
    let mut hits = Vec::new();
    while hits.len() < HITS_WANTED {
        if started.elapsed() > DEADLINE {
            bail!(
                "no {HITS_WANTED} hits within {DEADLINE:?} (got {}); see the agent's log above and {}",
                hits.len(),
                events.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        hits = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "$data_breakpoint_hit")
            .collect();
    }
    drop(agent);
    drop(service);
    println!(
        "\nCaptured {} hits of breakpoint checkout-total (shop/cart.py:40 if subtotal > 50) in {:.1} s:\n",
        hits.len(),
        started.elapsed().as_secs_f64()
    );
    for hit in hits.iter().take(HITS_WANTED) {
        let p = &hit["properties"];
        println!(
            "thread {} ({}), pid {}",
            p["$thread_name"].as_str().unwrap_or("?"),
            p["$thread_id"],
            p["$pid"]
        );
        println!("  stack (innermost first):");
        for frame in p["$stack_trace"].as_array().into_iter().flatten().take(4) {
            println!(
                "    {}:{} in {}",
                frame[0].as_str().unwrap_or("?"),
                frame[2],
                frame[1].as_str().unwrap_or("?")
            );
        }
        println!("  locals:");
        if let Some(locals) = p["$locals_variables"].as_object() {
            for (name, value) in locals {
                println!("    {name} = {value}");
            }
        }
        println!();
    }
    println!(
        "All events (JSON Lines, as they would be sent to PostHog): {}",
        events.display()
    );
    Ok(())
}
