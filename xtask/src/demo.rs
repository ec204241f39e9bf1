//! `cargo xtask demo`: the README's first command. Builds everything, starts the bundled sample
//! service (xtask/demo/shop), starts the agent in local mode with the bundled breakpoint, prints
//! the hits it captures, then stops everything. With `--ui [ADDR]` it serves the agent's web UI
//! instead, with the demo's breakpoint already set, prints its URL and runs until Ctrl-C.
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

pub fn run_demo(ui: Option<&str>) -> Result<()> {
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
    let mut agent = Command::new(&agent_bin);
    agent
        .args(["run", "--breakpoints"])
        .arg(demo_dir.join("breakpoints.toml"))
        .arg("--events-file")
        .arg(&events)
        // Only the demo's service: the agent's default is every CPython process on the host.
        .args(["--pid", &service_pid.to_string()]);
    if let Some(addr) = ui {
        // Its own runtime directory (socket, UI URL), next to the events: an agent already
        // running on this host keeps /run/libdebugger.
        let run_dir = out_dir.join("run");
        let _ = std::fs::remove_file(run_dir.join("ui.url"));
        agent
            .args(["--ui", addr])
            .env("LIBDEBUGGER_RUNTIME_DIR", &run_dir);
        let agent = KillOnDrop(
            agent
                .spawn()
                .with_context(|| format!("starting {}", agent_bin.display()))?,
            "the agent",
        );
        return serve_ui(agent, service, &run_dir, &events);
    }
    let agent = KillOnDrop(
        agent
            .spawn()
            .with_context(|| format!("starting {}", agent_bin.display()))?,
        "the agent",
    );

    let started = Instant::now();
    let mut hits = Vec::new();
    let mut logs = Vec::new();
    while hits.len() < HITS_WANTED || logs.is_empty() {
        if started.elapsed() > DEADLINE {
            bail!(
                "no {HITS_WANTED} hits and a logpoint message within {DEADLINE:?} (got {} hits, {} messages); see the agent's log above and {}",
                hits.len(),
                logs.len(),
                events.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let all: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect();
        let named = |name: &str| -> Vec<serde_json::Value> {
            all.iter().filter(|e| e["event"] == name).cloned().collect()
        };
        hits = named("$data_breakpoint_hit");
        logs = named("$data_logpoint_hit");
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
        // Frames are PostHog's objects ({file, function, line, "0", "1", "2"}).
        for frame in p["$stack_trace"].as_array().into_iter().flatten().take(4) {
            println!(
                "    {}:{} in {}",
                frame["file"].as_str().unwrap_or("?"),
                frame["line"],
                frame["function"].as_str().unwrap_or("?")
            );
        }
        println!("  locals:");
        if let Some(locals) = p["$locals_variables"].as_object() {
            // Each value is a JSON string holding the local's jsonpickle encoding.
            for (name, value) in locals {
                let decoded = value
                    .as_str()
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                    .unwrap_or_else(|| value.clone());
                println!("    {name} = {decoded}");
            }
        }
        println!();
    }
    println!(
        "Logpoint checkout-log (shop/cart.py:40), {} messages so far, the first ones:\n",
        logs.len()
    );
    for log in logs.iter().take(5) {
        let p = &log["properties"];
        println!(
            "  [{}] {}",
            p["$thread_name"].as_str().unwrap_or("?"),
            p["$message"].as_str().unwrap_or("?")
        );
    }
    println!();
    println!(
        "All events (JSON Lines, as they would be sent to PostHog): {}",
        events.display()
    );
    Ok(())
}

/// `demo --ui`: waits for the UI's URL and the first hit of the demo's breakpoint, prints the
/// URL, then runs until the agent stops (Ctrl-C stops the agent and the service with it).
fn serve_ui(
    mut agent: KillOnDrop,
    _service: KillOnDrop,
    run_dir: &std::path::Path,
    events: &std::path::Path,
) -> Result<()> {
    let url_file = run_dir.join("ui.url");
    let started = Instant::now();
    let url = loop {
        if let Ok(s) = std::fs::read_to_string(&url_file) {
            break s.trim().to_string();
        }
        if let Some(status) = agent.0.try_wait()? {
            bail!("the agent exited ({status}) before serving the UI; see its log above");
        }
        if started.elapsed() > DEADLINE {
            bail!(
                "the agent wrote no {} within {DEADLINE:?}",
                url_file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    while !std::fs::read_to_string(events)
        .unwrap_or_default()
        .contains("$data_breakpoint_hit")
    {
        if started.elapsed() > DEADLINE {
            bail!("no hit of the demo's breakpoint within {DEADLINE:?}; see the agent's log above");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "\nThe web UI of the agent attached to the sample service (breakpoint checkout-total on shop/cart.py:40 is set and hitting):\n\n    {url}\n\nOpen it in a browser on this host (or through `ssh -L {port}:127.0.0.1:{port}`). Ctrl-C stops the demo.",
        port = url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|h| h.rsplit(':').next())
            .unwrap_or("7788"),
    );
    let status = agent.0.wait()?;
    eprintln!("xtask: the agent stopped ({status})");
    Ok(())
}
