//! Local mode end to end: changing and removing breakpoints through the watched file and the
//! CLI, and bad input (each with a clear status, the agent serving everything else).
use anyhow::{Context, Result, ensure};
use libdebugger_tests::local::{
    Agent, Bp, Hit, Running, Scenario, Target, bp_entry, bp_process, breakpoints_toml, marker_line,
    process_entry, script,
};
use libdebugger_tests::python;
use libdebugger_tests::require_agent_env;
use serde_json::Value;
use std::time::Duration;

/// Sends `ping S` until a hit of the sentinel `ping` breakpoint with `marker == ping-S` arrives
/// from the target: proof that the helper applied the set that contains it. Returns the hit's
/// position in the events file.
fn sync_with_ping(agent: &Agent, t: &mut Target, seq: u32) -> Result<usize> {
    let pid = t.pid();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        t.cmd(&format!("ping {seq}"), "pinged")?;
        let events = agent.events();
        if let Some(pos) = events.iter().position(|e| {
            let h = Hit(e.clone());
            h.is_hit() && h.breakpoint_id() == "ping" && h.pid() == pid && h.local("seq") == seq
        }) {
            return Ok(pos);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no hit of ping {seq} from {pid}; status {:#}\nlog:\n{}",
            agent.status().unwrap_or_default(),
            agent.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn checkout_hits_after(s: &Running, pid: i32, from: usize) -> Vec<Hit> {
    s.agent.events()[from..]
        .iter()
        .map(|e| Hit(e.clone()))
        .filter(|h| h.is_hit() && h.breakpoint_id() == "checkout" && h.pid() == pid)
        .collect()
}

#[test]
fn file_changes_condition_then_removes_the_breakpoint() -> Result<()> {
    require_agent_env!();
    let ping = Bp::marker("agent_mod.py", "BP:ping").id("ping");
    let even = Bp::marker("agent_mod.py", "BP:checkout")
        .id("checkout")
        .condition("order_id % 2 == 0");
    let mut s = Scenario::new("file-change")
        .breakpoint(ping.clone())
        .breakpoint(even.clone())
        .start()?;
    s.wait_armed("checkout")?;
    s.each_target(|t| t.cmd("call 4", "called").map(drop))?;
    s.expect_hit("checkout", |_, h| {
        ensure!(
            h.local("order_id").as_i64().is_some_and(|o| o % 2 == 0),
            "condition not applied"
        );
        Ok(())
    })?;

    // A file entry cannot be removed from the CLI.
    let rm = s.agent.cli(&["break", "rm", "checkout"])?;
    ensure!(
        !rm.ok && rm.stderr.contains("breakpoints file"),
        "break rm of a file breakpoint: {rm:?}"
    );

    // Change the condition in the file: once the new set is applied, only odd order ids hit.
    let odd = even.clone().condition("order_id % 2 == 1");
    s.agent
        .write_breakpoints(&breakpoints_toml(&[ping.clone().id("ping"), odd]))?;
    let n = s.targets.len();
    for i in 0..n {
        let pid = s.targets[i].pid();
        let seq = 100 + i as u32;
        // The ping sentinel was already armed: wait for the condition change to be applied by
        // calling until an odd hit shows up, then check nothing even follows it.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let first_odd = loop {
            s.targets[i].cmd("call 4", "called")?;
            let _ = sync_with_ping(&s.agent, &mut s.targets[i], seq)?;
            let hits = checkout_hits_after(&s, pid, 0);
            if let Some(p) = hits
                .iter()
                .position(|h| h.local("order_id").as_i64().is_some_and(|o| o % 2 == 1))
            {
                break (hits, p);
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "condition change not applied in {pid}"
            );
        };
        let (hits, p) = first_odd;
        ensure!(
            hits[p..]
                .iter()
                .all(|h| h.local("order_id").as_i64().is_some_and(|o| o % 2 == 1)),
            "{}: even order ids after the condition changed",
            s.targets[i].interp.label
        );
        ensure!(
            hits[p].props()["$condition"] == "order_id % 2 == 1",
            "$condition of the hit"
        );
    }

    // Remove it from the file: the ping sentinel proves the new set is applied, then calls of
    // checkout produce nothing.
    s.agent.write_breakpoints(&breakpoints_toml(&[ping]))?;
    s.agent
        .wait_status("checkout gone from status", Duration::from_secs(10), |st| {
            bp_entry(st, "checkout").is_none()
        })?;
    for i in 0..n {
        let pid = s.targets[i].pid();
        // Removal applied once a ping sent after the file change hits... and then no checkout
        // hits between two pings.
        let a = sync_with_ping(&s.agent, &mut s.targets[i], 200 + i as u32)?;
        s.targets[i].cmd("call 6", "called")?;
        let b = sync_with_ping(&s.agent, &mut s.targets[i], 300 + i as u32)?;
        let stray = checkout_hits_after(&s, pid, a)
            .into_iter()
            .filter(|h| {
                s.agent.events()[a..b]
                    .iter()
                    .any(|e| e["uuid"] == h.0["uuid"])
            })
            .count();
        ensure!(
            stray == 0,
            "{}: {stray} hits after the breakpoint was removed",
            s.targets[i].interp.label
        );
    }
    Ok(())
}

#[test]
fn cli_adds_lists_and_removes_breakpoints() -> Result<()> {
    require_agent_env!();
    let line = marker_line("agent_mod.py", "BP:checkout")?;
    let mut s = Scenario::new("cli").cli_only().start()?;
    let loc = format!("python/agent_mod.py:{line}");
    let add = s.agent.cli(&[
        "break",
        "add",
        &loc,
        "--if",
        "order_id == 2",
        "--id",
        "cli-co",
    ])?;
    ensure!(add.ok, "break add failed: {add:?}");
    s.wait_armed("cli-co")?;
    s.each_target(|t| t.cmd("call 5", "called").map(drop))?;
    s.expect_hit("cli-co", |_, h| {
        ensure!(h.local("order_id") == 2, "order_id");
        ensure!(h.props()["$line_number"] == line, "$line_number");
        ensure!(
            h.props()["$file_path"] == "python/agent_mod.py",
            "$file_path"
        );
        Ok(())
    })?;
    // Counters (hits = line reached, before the condition) arrive with the helpers' stats.
    let n = s.targets.len() as u64;
    let want_hits = 5 * n;
    let listed = s
        .agent
        .wait_status("break list counters", Duration::from_secs(15), |st| {
            bp_entry(st, "cli-co").is_some_and(|b| {
                b["counters"]["hits"].as_u64() >= Some(want_hits)
                    && b["counters"]["captured"].as_u64() >= Some(n)
            })
        });
    let list = s.agent.cli(&["break", "list", "--json"])?;
    ensure!(list.ok, "break list failed: {list:?}");
    let v: Value = list.json()?;
    let b = bp_entry(&v, "cli-co").context("cli-co not listed")?;
    ensure!(b["status"] == "armed", "status: {b:#}");
    ensure!(
        b["condition"] == "order_id == 2" && b["line"] == line,
        "listed breakpoint: {b:#}"
    );
    for key in [
        "hits",
        "captured",
        "condition_false",
        "rate_limited",
        "dropped",
        "entries",
    ] {
        ensure!(b["counters"][key].is_u64(), "counter {key} missing: {b:#}");
    }
    listed?;
    let rm = s.agent.cli(&["break", "rm", "cli-co"])?;
    ensure!(rm.ok, "break rm failed: {rm:?}");
    let list = s.agent.cli(&["break", "list", "--json"])?.json()?;
    ensure!(
        bp_entry(&list, "cli-co").is_none(),
        "still listed after rm: {list:#}"
    );
    let again = s.agent.cli(&["break", "rm", "cli-co"])?;
    ensure!(
        !again.ok && again.stderr.contains("no breakpoint with id cli-co"),
        "second rm: {again:?}"
    );
    let bad = s.agent.cli(&["break", "add", "agent_mod.py"])?;
    ensure!(
        !bad.ok && !bad.stderr.is_empty(),
        "break add without a line: {bad:?}"
    );
    Ok(())
}

#[test]
fn bad_input_is_reported_and_everything_else_keeps_working() -> Result<()> {
    require_agent_env!();
    let nocode = marker_line("agent_mod.py", "BP:nocode")?;
    let good = Bp::marker("agent_mod.py", "BP:checkout").id("good");
    let bps = vec![
        good.clone(),
        Bp::at("python/no_such_module_anywhere.py", 3).id("missing"),
        Bp::marker("agent_mod.py", "BP:nocode").id("nocode"),
        Bp::marker("agent_mod.py", "BP:ping")
            .id("badcond")
            .condition("order_id ==="),
    ];
    let mut sc = Scenario::new("bad-input");
    for b in &bps {
        sc = sc.breakpoint(b.clone());
    }
    let mut s = sc.start()?;
    // A 3.10 process in the agent's scope.
    let old = match python::python310() {
        Some(i) => Some(Target::start(&i, "ldbg-e2e-py310")?),
        None => {
            eprintln!("3.10 part skipped: pyenv 3.10.13 is not installed");
            None
        }
    };
    let mut agent_pids: Vec<i32> = s.targets.iter().map(Target::pid).collect();
    if let Some(o) = &old {
        agent_pids.push(o.pid());
        // Restart the agent with the 3.10 pid in scope too.
        s.agent.sigterm(Duration::from_secs(15))?;
        s.agent.config.pids = agent_pids.clone();
        s.agent.spawn()?;
    }
    s.wait_armed("good")?;
    let st = s
        .agent
        .wait_status("nocode and badcond errors", Duration::from_secs(15), |st| {
            ["nocode", "badcond"]
                .iter()
                .all(|id| bp_entry(st, id).is_some_and(|b| b["status"] == "error"))
        })?;
    let err = |id: &str| {
        bp_entry(&st, id)
            .and_then(|b| b["error"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let nocode_err = err("nocode");
    ensure!(
        nocode_err.contains(&nocode.to_string()),
        "nocode error does not name the line: {nocode_err}"
    );
    ensure!(
        nocode_err.contains(&(nocode - 2).to_string())
            && nocode_err.contains(&(nocode + 2).to_string()),
        "nocode error does not name the nearest lines with code ({} and {}): {nocode_err}",
        nocode - 2,
        nocode + 2
    );
    let cond_err = err("badcond");
    ensure!(
        cond_err.to_lowercase().contains("condition") || cond_err.to_lowercase().contains("syntax"),
        "condition error unclear: {cond_err}"
    );
    let missing = bp_entry(&st, "missing").context("missing not listed")?;
    ensure!(
        missing["status"] == "pending",
        "a file no process has loaded stays pending: {missing:#}"
    );
    ensure!(
        missing["processes"]
            .as_array()
            .is_some_and(|ps| ps.iter().all(|p| p["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no_such_module_anywhere.py")))),
        "pending reason should name the file: {missing:#}"
    );
    if let Some(o) = &old {
        let p = process_entry(&st, o.pid()).context("the 3.10 process is not listed")?;
        ensure!(p["attach_state"] == "unsupported", "3.10: {p:#}");
        ensure!(
            p["reason"].as_str().is_some_and(|r| r.contains("3.10")),
            "3.10 reason: {p:#}"
        );
        ensure!(o.alive(), "the 3.10 process was harmed");
    }
    s.each_target(|t| t.cmd("call 2", "called").map(drop))?;
    s.expect_hit("good", |_, _| Ok(()))?;

    // A malformed file: the last good set stays in force (and the agent says so).
    let before = s.agent.events().len();
    s.agent
        .write_breakpoints("[[breakpoint]\nfile = \"x.py\"\nline = \n")?;
    let st = s.agent.wait_status(
        "the malformed file reported in status",
        Duration::from_secs(15),
        |st| {
            st["breakpoints_file"]["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
        },
    )?;
    ensure!(
        st["breakpoints_file"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("last good")),
        "status should say the last good set stays in force: {:#}",
        st["breakpoints_file"]
    );
    ensure!(
        s.agent
            .log()
            .contains("the last good breakpoint set stays in force"),
        "no error logged for the malformed file; log:\n{}",
        s.agent.log_tail(30)
    );
    let st = s.agent.status()?;
    ensure!(
        bp_entry(&st, "good").is_some_and(|b| b["status"] == "armed"),
        "good breakpoint lost: {st:#}"
    );
    s.each_target(|t| t.cmd("call 2", "called").map(drop))?;
    let old: std::collections::HashSet<String> = s.agent.events()[..before]
        .iter()
        .map(|e| e["uuid"].to_string())
        .collect();
    for t in &s.targets {
        let pid = t.pid();
        s.agent.wait_event(
            "a hit after the malformed file",
            Duration::from_secs(20),
            |e| {
                let h = Hit(e.clone());
                h.is_hit()
                    && h.pid() == pid
                    && h.breakpoint_id() == "good"
                    && !old.contains(&e["uuid"].to_string())
            },
        )?;
    }
    Ok(())
}

/// `--source-root` restricts which files match: with another directory as the only root the
/// breakpoint stays pending in every process and never fires; restarted with the targets'
/// directory as root, it arms and hits.
#[test]
fn source_roots_restrict_which_files_match() -> Result<()> {
    require_agent_env!();
    let here = script("agent_mod.py");
    let here = here
        .parent()
        .context("script dir")?
        .to_string_lossy()
        .into_owned();
    let elsewhere = "/srv/ldbg-e2e-elsewhere";
    let mut s = Scenario::new("roots")
        .breakpoint(Bp::marker("agent_mod.py", "BP:checkout").id("co"))
        .agent_args(&["--source-root", elsewhere])
        .start()?;
    let pids: Vec<i32> = s.targets.iter().map(Target::pid).collect();
    s.agent.wait_status(
        "co pending in every process",
        Duration::from_secs(20),
        |st| {
            pids.iter()
                .all(|pid| bp_process(st, "co", *pid).is_some_and(|p| p["status"] == "pending"))
        },
    )?;
    s.each_target(|t| t.cmd("call 5", "called").map(drop))?;
    let hits = s
        .agent
        .events()
        .iter()
        .filter(|e| Hit((*e).clone()).is_hit())
        .count();
    ensure!(hits == 0, "{hits} hits of a file outside the source roots");

    s.agent.sigterm(Duration::from_secs(15))?;
    // The root as the targets see it: the same path on the host, under /mnt/host in the
    // container (a source root names paths in the target's own filesystem).
    s.agent.config.extra_args = vec![
        "--source-root".into(),
        here.clone(),
        "--source-root".into(),
        format!("{}{here}", libdebugger_tests::python::HOST_IN_CONTAINER),
    ];
    s.agent.spawn()?;
    s.wait_armed("co")?;
    s.each_target(|t| t.cmd("call 5", "called").map(drop))?;
    s.expect_hit("co", |_, _| Ok(()))?;
    Ok(())
}
