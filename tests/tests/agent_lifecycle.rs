//! Local mode end to end: agent SIGTERM (breakpoints removed, events flushed), `kill -9` and
//! restart (targets unharmed, one helper, hits resume), `status --json`, `tail --json`.
use anyhow::{Context, Result, ensure};
use libdebugger_tests::agent::Lines;
use libdebugger_tests::local::{
    Bp, Hit, Scenario, Target, bp_entry, helper_mappings, process_entry,
};
use libdebugger_tests::require_agent_env;
use serde_json::Value;
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn checkout() -> Bp {
    Bp::marker("agent_mod.py", "BP:checkout").id("co")
}

fn tools(t: &mut Target) -> Result<Value> {
    Ok(serde_json::from_str(&t.cmd("tools", "tools")?)?)
}

#[test]
fn sigterm_removes_breakpoints_and_flushes_events() -> Result<()> {
    require_agent_env!();
    let mut s = Scenario::new("sigterm").breakpoint(checkout()).start()?;
    s.wait_armed("co")?;
    s.each_target(|t| t.cmd("call 3", "called").map(drop))?;
    s.expect_hit("co", |_, _| Ok(()))?;
    let mut before = Vec::new();
    for t in &mut s.targets {
        before.push(tools(t)?);
    }
    let seen: HashSet<String> = s
        .agent
        .events()
        .iter()
        .map(|e| e["uuid"].to_string())
        .collect();
    let status = s.agent.sigterm(Duration::from_secs(20))?;
    ensure!(
        status.success(),
        "agent exit status after SIGTERM: {status}; log:\n{}",
        s.agent.log_tail(20)
    );
    let log = s.agent.log();
    ensure!(
        !log.contains("did not confirm removal"),
        "a helper did not confirm removal:\n{log}"
    );
    ensure!(log.contains("events flushed"), "no flush reported:\n{log}");
    // Every event seen before the stop is still in the file, every line is whole JSON.
    let text = std::fs::read_to_string(s.agent.events_path())?;
    for line in text.lines() {
        serde_json::from_str::<Value>(line).with_context(|| format!("torn line: {line}"))?;
    }
    let after: HashSet<String> = s
        .agent
        .events()
        .iter()
        .map(|e| e["uuid"].to_string())
        .collect();
    ensure!(seen.is_subset(&after), "events lost by the shutdown");
    for (t, b) in s.targets.iter_mut().zip(before) {
        ensure!(t.alive(), "{} died", t.interp.label);
        t.cmd("call 3", "called")?;
        if t.interp.version.1 >= 12 {
            ensure!(
                b.as_object().is_some_and(|m| !m.is_empty()),
                "{}: no sys.monitoring tool while armed: {b}",
                t.interp.label
            );
            let now = tools(t)?;
            for id in b.as_object().into_iter().flat_map(|m| m.keys()) {
                ensure!(
                    now.get(id).is_none(),
                    "{}: sys.monitoring tool {id} ({}) still held after SIGTERM: {now}",
                    t.interp.label,
                    b[id]
                );
            }
        }
    }
    Ok(())
}

#[test]
fn kill9_leaves_targets_unharmed_and_a_restart_resyncs_without_a_second_helper() -> Result<()> {
    require_agent_env!();
    let mut s = Scenario::new("kill9").breakpoint(checkout()).start()?;
    s.wait_armed("co")?;
    s.each_target(|t| t.cmd("workers 1", "workers").map(drop))?;
    s.expect_hit("co", |_, _| Ok(()))?;
    s.agent.kill9()?;
    let seen: HashSet<String> = s
        .agent
        .events()
        .iter()
        .map(|e| e["uuid"].to_string())
        .collect();
    for t in &mut s.targets {
        let a: u64 = t.cmd("alive", "alive")?.parse()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let b: u64 = t.cmd("alive", "alive")?.parse()?;
            if b > a {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{}: workers stopped calling after kill -9",
                t.interp.label
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        ensure!(
            helper_mappings(t.pid())? == 1,
            "{}: helper mappings",
            t.interp.label
        );
    }
    s.agent.spawn()?;
    s.wait_armed("co")?;
    for t in &s.targets {
        let pid = t.pid();
        s.agent
            .wait_event("a hit after the restart", Duration::from_secs(20), |e| {
                let h = Hit(e.clone());
                h.is_hit() && h.pid() == pid && !seen.contains(&e["uuid"].to_string())
            })
            .with_context(|| t.interp.label.clone())?;
        ensure!(
            helper_mappings(pid)? == 1,
            "{}: a second helper after the restart",
            t.interp.label
        );
        let st = s.agent.status()?;
        let p = process_entry(&st, pid).context("target not listed")?;
        ensure!(p["attach_state"] == "attached", "{}: {p:#}", t.interp.label);
    }
    Ok(())
}

#[test]
fn status_json_reports_processes_breakpoints_entries_and_limits() -> Result<()> {
    require_agent_env!();
    let mut s = Scenario::new("status").breakpoint(checkout()).start()?;
    s.wait_armed("co")?;
    s.each_target(|t| t.cmd("map 50", "mapped").map(drop))?;
    s.each_target(|t| t.cmd("call 200", "called").map(drop))?;
    let n = s.targets.len() as u64;
    let st = s.agent.wait_status(
        "hits and rate limiting counted",
        Duration::from_secs(20),
        |st| {
            bp_entry(st, "co").is_some_and(|b| {
                b["counters"]["hits"].as_u64() >= Some(250 * n)
                    && b["counters"]["rate_limited"].as_u64() > Some(0)
            })
        },
    )?;
    let out = s.agent.cli(&["status", "--json"])?;
    ensure!(out.ok, "status --json: {out:?}");
    let cli: Value = out.json()?;
    for t in &s.targets {
        let p = process_entry(&cli, t.pid())
            .with_context(|| format!("{} not listed: {cli:#}", t.interp.label))?;
        ensure!(p["attach_state"] == "attached", "{p:#}");
        ensure!(
            p["exe"].as_str().is_some_and(|e| e.contains("python")),
            "exe: {p:#}"
        );
        let v = format!("3.{}.", t.interp.version.1);
        ensure!(
            p["python_version"]
                .as_str()
                .is_some_and(|x| x.starts_with(&v)),
            "python_version: {p:#}"
        );
    }
    let b = bp_entry(&cli, "co").context("co not in status")?;
    ensure!(b["status"] == "armed", "{b:#}");
    for key in ["hits", "entries", "rate_limited", "dropped", "captured"] {
        ensure!(b["counters"][key].is_u64(), "counter {key}: {b:#}");
    }
    ensure!(cli["ring"]["lost"].is_u64(), "ring losses: {cli:#}");
    ensure!(bp_entry(&st, "co").is_some(), "status");
    Ok(())
}

#[test]
fn status_entries_count_calls_entered_from_c() -> Result<()> {
    require_agent_env!();
    let mut s = Scenario::new("entries").breakpoint(checkout()).start()?;
    s.wait_armed("co")?;
    s.each_target(|t| t.cmd("map 50", "mapped").map(drop))?;
    let n = s.targets.len() as u64;
    // Kernel frame-entry counts: map() enters checkout from C 50 times per process.
    s.agent
        .wait_status(
            "entries counted by the frame-entry probe",
            Duration::from_secs(20),
            |st| {
                bp_entry(st, "co")
                    .is_some_and(|b| b["counters"]["entries"].as_u64() >= Some(50 * n))
            },
        )
        .context("entries (kernel frame-entry counts) for calls from map()")?;
    Ok(())
}

#[test]
fn tail_json_streams_hits() -> Result<()> {
    require_agent_env!();
    let mut s = Scenario::new("tail").breakpoint(checkout()).start()?;
    s.wait_armed("co")?;
    let mut child = Command::new(libdebugger_tests::agent::agent_binary()?)
        .args(["tail", "--json"])
        .env("LIBDEBUGGER_RUNTIME_DIR", s.agent.runtime_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut lines = Lines::new(child.stdout.take().context("tail stdout")?);
    let result = (|| -> Result<()> {
        for t in &mut s.targets {
            let pid = t.pid();
            let deadline = Instant::now() + Duration::from_secs(20);
            // `tail` subscribes asynchronously: call until a hit of this pid streams by.
            loop {
                t.cmd("call 1", "called")?;
                let got = lines.wait_for("a hit on tail", Duration::from_millis(500), |l| {
                    serde_json::from_str::<Value>(l).is_ok_and(|v| {
                        v["event"] == "$data_breakpoint_hit" && v["properties"]["$pid"] == pid
                    })
                });
                if got.is_ok() {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "no hit of {pid} on tail: {:?}",
                    lines.seen
                );
            }
        }
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}
