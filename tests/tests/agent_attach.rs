//! Local mode end to end: injection into busy, blocked and idle processes, deferred import, fork,
//! a mount-namespace target, targets exiting during capture and injection.
//!
//! The attach latency target (breakpoint known → armed: p50 ≤ 100 ms, p99 ≤ 1 s) is a figure of
//! `cargo xtask bench` (B4), not a test assertion: on a loaded 2-core machine a timed assertion
//! fails for reasons unrelated to the code. These tests assert that it arms at all (within a
//! generous deadline) and print how long it took.
use anyhow::{Context, Result, ensure};
use libdebugger_tests::local::{
    Agent, AgentConfig, Bp, Scenario, Target, arm_times, bp_entry, breakpoints_toml,
    helper_mappings, marker_line, unique_tag,
};
use libdebugger_tests::{python, require_agent_env};
use std::time::{Duration, Instant};

/// The target for breakpoint known → armed; exceeding it is reported, not failed.
const ARM_TARGET: Duration = Duration::from_secs(1);

/// For each interpreter in turn (one busy process at a time, as in the case, not four
/// competing for two cores): starts a target in `setup` state and an agent with no breakpoint,
/// adds the breakpoint from the CLI, measures breakpoint known (the CLI returned) → armed in
/// that process, then expects hits after `drive` (command, reply word).
fn injection_case(name: &str, setup: &[&str], drive: Option<(&str, &str)>) -> Result<()> {
    let line = marker_line("agent_mod.py", "BP:checkout")?;
    let loc = format!("python/agent_mod.py:{line}");
    let mut report = Vec::new();
    let mut over = Vec::new();
    for interp in python::supported() {
        let mut sc = Scenario::new(name)
            .interpreters(vec![interp.clone()])
            .cli_only();
        for c in setup {
            sc = sc.before_agent(c);
        }
        let mut s = sc.start()?;
        let pid = s.targets[0].pid();
        let add = s.agent.cli(&["break", "add", &loc, "--id", "co"])?;
        let known = Instant::now();
        ensure!(add.ok, "break add: {add:?}");
        let took = arm_times(&s.agent, "co", &[pid], known, Duration::from_secs(30))?[0];
        if let Some((cmd, reply)) = drive {
            s.each_target(|t| t.cmd(cmd, reply).map(drop))?;
        }
        s.expect_hit("co", |t, h| {
            ensure!(h.pid() == t.pid(), "pid");
            Ok(())
        })?;
        s.each_target(|t| {
            ensure!(
                helper_mappings(t.pid())? == 1,
                "not exactly one helper mapped"
            );
            ensure!(t.alive(), "target died");
            Ok(())
        })?;
        report.push(format!("{}={}ms", interp.label, took.as_millis()));
        if took > ARM_TARGET {
            over.push(interp.label.clone());
        }
    }
    eprintln!("[{name}] breakpoint known -> armed: {}", report.join(" "));
    if !over.is_empty() {
        eprintln!(
            "[{name}] note: armed later than the {} ms target on {over:?} (see `cargo xtask bench`, B4)",
            ARM_TARGET.as_millis()
        );
    }
    Ok(())
}

#[test]
fn busy_process_eight_threads_churning_the_allocator() -> Result<()> {
    require_agent_env!();
    injection_case("busy", &["churn 8"], None)
}

#[test]
fn main_thread_blocked_forever_workers_run_the_line() -> Result<()> {
    require_agent_env!();
    // The main thread is in threading.Event().wait() from the start; two workers call checkout.
    injection_case("blocked", &["workers 2"], None)
}

#[test]
fn fully_idle_process_then_calls_the_function() -> Result<()> {
    require_agent_env!();
    injection_case("idle", &[], Some(("call 3", "called")))
}

#[test]
fn deferred_import_arms_when_the_module_is_imported() -> Result<()> {
    require_agent_env!();
    let mut s = Scenario::new("deferred")
        .breakpoint(Bp::marker("agent_deferred.py", "BP:late").id("late"))
        .start()?;
    // Helper in, breakpoint pending: no process has the module yet.
    s.agent
        .wait_status("late pending everywhere", Duration::from_secs(30), |st| {
            bp_entry(st, "late").is_some_and(|b| {
                b["status"] == "pending"
                    && b["processes"]
                        .as_array()
                        .is_some_and(|p| p.len() == s.targets.len())
            })
        })?;
    s.each_target(|t| t.cmd("import", "imported").map(drop))?;
    s.wait_armed("late")?;
    s.expect_hit("late", |_, h| {
        ensure!(h.local("n").as_i64().is_some_and(|n| n > 0), "local n");
        ensure!(h.stack()[0].1 == "late", "innermost frame");
        Ok(())
    })
}

#[test]
fn forked_children_hit_with_their_own_pid() -> Result<()> {
    require_agent_env!();
    let mut s = Scenario::new("fork")
        .scope_by_cmdline()
        .breakpoint(Bp::marker("agent_mod.py", "BP:checkout").id("co"))
        .start()?;
    s.wait_armed("co")?;
    let mut children = Vec::new();
    for t in &mut s.targets {
        // The children's pids as the target prints them, on the host.
        let forked = t.cmd("fork", "forked")?.parse()?;
        let forked = t.host_pid(forked)?;
        let mp = t.cmd("mp", "mp")?.parse()?;
        let mp = t.host_pid(mp)?;
        children.push((t.interp.label.clone(), t.pid(), forked, mp));
    }
    let result = (|| -> Result<()> {
        for (label, parent, forked, mp) in &children {
            for (how, child) in [("os.fork", forked), ("multiprocessing fork", mp)] {
                let hit = s
                    .agent
                    .wait_hit("co", *child, |_| true)
                    .with_context(|| format!("{label}: {how} child {child} of {parent}"))?;
                ensure!(
                    hit.local("amount") == 7,
                    "{label}: the child's call (amount 7)"
                );
            }
        }
        Ok(())
    })();
    for (_, _, forked, mp) in &children {
        for pid in [forked, mp] {
            // SAFETY: kill has no memory preconditions; these are the test's own grandchildren.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
    result
}

#[test]
fn target_in_another_mount_namespace_with_the_helper_dir_hidden() -> Result<()> {
    require_agent_env!();
    if std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: unshare(1) is not installed");
        return Ok(());
    }
    let helper_dir = libdebugger_tests::helper::helper_dir()?;
    let tag = unique_tag("mntns");
    let hide = format!(
        "mount -t tmpfs none {} && exec \"$0\" \"$@\"",
        helper_dir.display()
    );
    let mut targets = Vec::new();
    // The host's interpreters: the container ones run in a mount namespace of their own in
    // every test (and their root has no mount(8)).
    for i in python::host() {
        targets.push(Target::start_with(
            &i,
            &tag,
            &[
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &hide,
            ],
        )?);
    }
    for t in &targets {
        let ours = std::fs::read_link("/proc/self/ns/mnt")?;
        let theirs = std::fs::read_link(format!("/proc/{}/ns/mnt", t.pid()))?;
        ensure!(
            ours != theirs,
            "{}: not in another mount namespace",
            t.interp.label
        );
    }
    let agent = Agent::start(AgentConfig {
        pids: targets.iter().map(Target::pid).collect(),
        cmdline: None,
        breakpoints: Some(breakpoints_toml(&[Bp::marker(
            "agent_mod.py",
            "BP:checkout",
        )
        .id("co")])),
        ..AgentConfig::default()
    })?;
    for t in &mut targets {
        agent.wait_armed_in("co", t.pid(), Duration::from_secs(30))?;
        t.cmd("call 2", "called")?;
        agent
            .wait_hit("co", t.pid(), |_| true)
            .with_context(|| t.interp.label.clone())?;
    }
    Ok(())
}

#[test]
fn targets_exiting_during_capture_or_injection_leave_the_agent_serving_others() -> Result<()> {
    require_agent_env!();
    let interps = python::supported();
    let tag = unique_tag("exit");
    let mut survivors = Vec::new();
    let mut victims = Vec::new();
    for i in &interps {
        survivors.push(Target::start(i, &tag)?);
        let mut v = Target::start(i, &tag)?;
        v.cmd("workers 4", "workers")?;
        victims.push(v);
    }
    // Victims that exit while being injected: started now, killed right after the breakpoint
    // reaches the agent.
    let mut injected_victims = Vec::new();
    for i in &interps {
        let mut v = Target::start(i, &tag)?;
        v.cmd("churn 2", "churn")?;
        injected_victims.push(v);
    }
    let all: Vec<i32> = survivors
        .iter()
        .chain(&victims)
        .chain(&injected_victims)
        .map(Target::pid)
        .collect();
    let agent = Agent::start(AgentConfig {
        pids: all,
        cmdline: None,
        breakpoints: None,
        ..AgentConfig::default()
    })?;
    let line = marker_line("agent_mod.py", "BP:checkout")?;
    let add = agent.cli(&[
        "break",
        "add",
        &format!("python/agent_mod.py:{line}"),
        "--id",
        "co",
    ])?;
    ensure!(add.ok, "break add: {add:?}");
    for v in &injected_victims {
        // SAFETY: kill has no memory preconditions; the pid is our own child.
        unsafe { libc::kill(v.pid(), libc::SIGKILL) };
    }
    // Victims exit while hits are being captured (4 workers hitting the line).
    for v in &mut victims {
        agent.wait_hit("co", v.pid(), |_| true)?;
        v.proc.send_line("exit")?;
    }
    for v in victims.iter().chain(&injected_victims) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while v.alive() {
            ensure!(Instant::now() < deadline, "victim {} did not exit", v.pid());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for t in &mut survivors {
        agent.wait_armed_in("co", t.pid(), Duration::from_secs(30))?;
        t.cmd("call 2", "called")?;
        agent
            .wait_hit("co", t.pid(), |_| true)
            .with_context(|| format!("survivor on {}", t.interp.label))?;
    }
    let gone: Vec<i32> = victims
        .iter()
        .chain(&injected_victims)
        .map(Target::pid)
        .collect();
    agent.wait_status("exited targets forgotten", Duration::from_secs(15), |st| {
        st["processes"]
            .as_array()
            .is_some_and(|ps| ps.iter().all(|p| !gone.iter().any(|g| p["pid"] == *g)))
    })?;
    Ok(())
}

/// A 3.14+ process started with remote debugging disabled asked debuggers to stay out: the
/// agent leaves it alone (no helper) while it debugs a process of the same interpreter next to
/// it, and `status` says why.
#[test]
fn remote_debug_disabled_is_left_alone_and_status_says_why() -> Result<()> {
    require_agent_env!();
    let interps: Vec<_> = python::supported()
        .into_iter()
        .filter(|i| i.version >= (3, 14))
        .collect();
    if interps.is_empty() {
        eprintln!("skipping: no CPython 3.14+ here (the container root is not built)");
        return Ok(());
    }
    let tag = unique_tag("nodebug");
    let mut pairs = Vec::new();
    for i in &interps {
        let out = Target::start_with(i, &tag, &["env", "PYTHON_DISABLE_REMOTE_DEBUG=1"])?;
        let debugged = Target::start(i, &tag)?;
        pairs.push((out, debugged));
    }
    let agent = Agent::start(AgentConfig {
        pids: pairs.iter().flat_map(|(a, b)| [a.pid(), b.pid()]).collect(),
        breakpoints: Some(breakpoints_toml(&[Bp::marker(
            "agent_mod.py",
            "BP:checkout",
        )
        .id("co")])),
        ..AgentConfig::default()
    })?;
    for (out, debugged) in &mut pairs {
        agent.wait_armed_in("co", debugged.pid(), Duration::from_secs(30))?;
        debugged.cmd("call 2", "called")?;
        agent.wait_hit("co", debugged.pid(), |_| true)?;
        let st = agent.status()?;
        let entry = st["processes"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["pid"] == out.pid()))
            .cloned()
            .with_context(|| format!("{}: pid {} not in status", out.interp.label, out.pid()))?;
        ensure!(
            entry["attach_state"] == "ignored"
                && entry["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("remote debugging disabled")),
            "{}: {entry}",
            out.interp.label
        );
        ensure!(
            helper_mappings(out.pid())? == 0,
            "{}: a helper was loaded into a process that opted out",
            out.interp.label
        );
        out.cmd("call 2", "called")?;
    }
    Ok(())
}
