//! The `libdebugger` Python package (`pip install libdebugger`, crate `python/`): its wheel in a
//! fresh virtual environment per interpreter with the real `posthog` package from PyPI, the
//! original library's quick start against the PostHog test server, local mode, and its
//! coexistence with a host agent (whose events it must agree with).
use anyhow::{Context, Result};
use libdebugger_tests::helper::Outcome;
use libdebugger_tests::local::{self, Agent, AgentConfig, Bp, breakpoints_toml};
use libdebugger_tests::package::{Venv, VenvError};
use libdebugger_tests::posthog_server::{PERSONAL_KEY, PROJECT_KEY, PosthogServer};
use libdebugger_tests::python::{self, Interpreter};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// A venv for `interp`, or `None` (printed as a skip) when PyPI cannot be reached.
fn venv(interp: &Interpreter, posthog: bool) -> Result<Option<Venv>> {
    match Venv::create(interp, posthog) {
        Ok(v) => Ok(Some(v)),
        Err(VenvError::Skip(why)) => {
            eprintln!("skipping {}: {why}", interp.label);
            Ok(None)
        }
        Err(VenvError::Fail(e)) => Err(e),
    }
}

fn result(outcome: Outcome, label: &str) -> Option<Value> {
    match outcome {
        Outcome::Result(v) => Some(v),
        Outcome::Skip(why) => {
            eprintln!("skipping {label}: {why}");
            None
        }
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The original quick start (`Posthog(...)`, `LiveDebuggerManager(client=client,
/// poll_interval=30)`, `start()`, `stop()`) with the wheel and the real posthog package, on
/// every interpreter: breakpoints come from the test server's Live Debugger endpoint, hits
/// arrive at its `/batch/` as `$data_breakpoint_hit` events with the properties the package
/// builds (compared with its sink's events, which the coexistence test compares with the
/// agent's); local mode on the same environment.
#[test]
fn quick_start_and_local_mode_on_every_interpreter() -> Result<()> {
    let line = local::marker_line("package/quickstart_app.py", "BP:quickstart")?;
    let interps = host_interpreters();
    if interps.is_empty() {
        eprintln!("skipping: no supported interpreter is installed");
        return Ok(());
    }
    for interp in &interps {
        let Some(venv) = venv(interp, true)? else {
            continue;
        };
        let server = PosthogServer::start()?;
        let id = "0195d3f0-7c1e-7a2b-9b1e-3f5a6c7d8e9f";
        server.set_breakpoints(vec![json!({
            "id": id,
            "repository": "acme/shop",
            "filename": "package/quickstart_app.py",
            "line_number": line,
            "enabled": true,
            "condition": "n > 2",
        })]);
        let url = server.url();
        let Some(r) = result(
            venv.run(
                "quickstart_app.py",
                &[
                    ("POSTHOG_HOST", &url),
                    ("POSTHOG_API_KEY", PROJECT_KEY),
                    ("POSTHOG_PERSONAL_API_KEY", PERSONAL_KEY),
                    ("LDBG_BREAKPOINT_ID", id),
                ],
                Duration::from_secs(120),
            )?,
            &interp.label,
        ) else {
            continue;
        };
        let label = &interp.label;
        // The breakpoint as the manager holds it (the original's Breakpoint fields).
        assert_eq!(
            r["breakpoints"],
            json!([{"uuid": id, "filename": "package/quickstart_app.py", "lineno": line,
                    "conditional_expr": "n > 2"}]),
            "{label}"
        );
        assert_eq!(r["enabled_after_stop"], false, "{label}");
        let bp = &r["status"]["breakpoints"][0];
        assert_eq!(bp["status"], "armed", "{label}: {r}");
        assert_eq!(bp["counters"]["hits"], 5, "{label}: {bp}");
        assert_eq!(bp["counters"]["condition_false"], 3, "{label}: {bp}");
        assert_eq!(bp["counters"]["captured"], 2, "{label}: {bp}");
        assert_eq!(r["status"]["delivery_errors"], 0, "{label}");
        // Fetched from the agent's endpoint with the client's keys (first fetch at start).
        let fetches = server.breakpoint_requests();
        assert!(!fetches.is_empty(), "{label}: no breakpoints request");
        assert_eq!(
            server.current_without_token(),
            0,
            "{label}: @current without ?token="
        );
        // The hits, through the client's capture(): exactly the two with n > 2.
        let hits = |evs: &[Value]| -> Vec<Value> {
            evs.iter()
                .filter(|e| e["event"] == "$data_breakpoint_hit")
                .cloned()
                .collect()
        };
        assert!(
            server.wait_events(Duration::from_secs(20), |e| hits(e).len() >= 2),
            "{label}: hits did not arrive: {:#?}",
            server.events()
        );
        let hits = hits(&server.events());
        assert_eq!(hits.len(), 2, "{label}: {hits:#?}");
        let mut ns: Vec<i64> = Vec::new();
        for h in &hits {
            let p = &h["properties"];
            assert_eq!(p["$breakpoint_id"], id, "{label}");
            assert_eq!(p["$file_path"], "package/quickstart_app.py", "{label}");
            assert_eq!(p["$line_number"], line, "{label}");
            assert_eq!(p["$condition"], "n > 2", "{label}");
            assert_eq!(p["$process_person_profile"], false, "{label}");
            assert!(p["$hostname"].is_string(), "{label}: {p}");
            assert!(
                h["distinct_id"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("libdebugger-")),
                "{label}: {h}"
            );
            assert!(
                uuid::Uuid::parse_str(h["uuid"].as_str().unwrap_or("")).is_ok(),
                "{label}"
            );
            // Redacted, and the secret nowhere in the event.
            let secret = p["$locals_variables"]["secret_token"].to_string();
            assert!(secret.contains("redacted"), "{label}: {secret}");
            assert!(
                !h.to_string().contains("s3cr3t-value"),
                "{label}: secret leaked: {h}"
            );
            let n = &p["$locals_variables"]["n"];
            ns.push(
                n.as_i64()
                    .or_else(|| n.as_str()?.parse().ok())
                    .unwrap_or(-1),
            );
            // The client sets its own library name (documented in python/README.md).
            assert_eq!(p["$lib"], "posthog-python", "{label}");
        }
        ns.sort_unstable();
        assert_eq!(ns, [3, 4], "{label}");

        // Local mode: a list of Breakpoints and a TOML file, a sink, bad input, status().
        let Some(l) = result(
            venv.run("local_mode.py", &[], Duration::from_secs(120))?,
            &format!("{label} local_mode.py"),
        ) else {
            continue;
        };
        assert_eq!(l["version"], env!("CARGO_PKG_VERSION"), "{label}");
        for (case, want) in [
            ("no_client_no_sink", "needs a PostHog client"),
            ("sink_without_breakpoints", "needs breakpoints="),
            ("bad_interval", "poll_interval must be positive"),
            ("not_a_breakpoint", "must be Breakpoint objects"),
            (
                "missing_file",
                "cannot read the breakpoints file /nonexistent/breakpoints.toml",
            ),
        ] {
            let got = l["errors"][case].as_str().unwrap_or_default();
            assert!(got.contains(want), "{label}: {case}: {got:?}");
        }
        assert_eq!(
            l["list_status"]["breakpoints"][0]["status"], "armed",
            "{label}"
        );
        let events = l["list_events"].as_array().context("list_events")?;
        assert_eq!(
            events.len(),
            2,
            "{label}: condition qty > 1 over qty 0..3: {events:#?}"
        );
        for e in events {
            assert_eq!(e["event"], "$data_breakpoint_hit", "{label}");
            assert_eq!(e["properties"]["$breakpoint_id"], "local-1", "{label}");
            let key = e["properties"]["$locals_variables"]["api_key"].to_string();
            assert!(key.contains("redacted"), "{label}: {key}");
        }
        assert_eq!(
            l["after_stop"]["breakpoints"],
            json!([]),
            "{label}: still armed after stop()"
        );
        assert_eq!(
            l["file_events"].as_array().map(Vec::len),
            Some(1),
            "{label}: {l}"
        );
        assert_eq!(
            l["file_events"][0]["properties"]["$breakpoint_id"], "file-1",
            "{label}"
        );
        assert_eq!(
            l["after_edit"],
            json!(["file-2"]),
            "{label}: the edit was not applied"
        );
        assert_eq!(
            l["after_bad_edit"],
            json!(["file-3"]),
            "{label}: a bad edit changed the set (file-3: the forked child's edit)"
        );
        // A forked child: still armed, and its own watcher applies an edit.
        assert_eq!(
            l["fork_child"]["hit"],
            json!(["file-2"]),
            "{label}: {}",
            l["fork_child"]
        );
        assert_eq!(
            l["fork_child"]["after_edit"],
            json!(["file-3"]),
            "{label}: {}",
            l["fork_child"]
        );
        let err = l["file_source"]["last_error"].as_str().unwrap_or_default();
        assert!(err.contains("is not valid"), "{label}: {err}");
        // What PostHog received carries every property the package builds (the sink's events),
        // plus only what the client adds itself.
        let sink_keys = keys(&events[0]["properties"]);
        let posthog_keys = keys(&hits[0]["properties"]);
        let missing: Vec<_> = sink_keys.difference(&posthog_keys).collect();
        assert!(
            missing.is_empty(),
            "{label}: lost on the way to PostHog: {missing:?}"
        );
    }
    Ok(())
}

/// Parses the JSON after `events ` of the coexistence target.
fn events_of(reply: &str) -> Result<Vec<Value>> {
    serde_json::from_str(reply).context("events reply")
}

/// A process with the package and a host agent: the agent's helper arms first and its hit is
/// captured; then the process starts its in-process debugger: the agent's breakpoints are
/// withdrawn (no further agent hits), the agent reports "in-process debugger active" in
/// `status` and `inspect`, the in-process event for the same line agrees with the agent's
/// (same properties and values, but for timing); after `stop()` the agent still leaves it
/// alone. A second process that starts its debugger before the agent is never injected.
#[test]
fn agent_leaves_an_in_process_debugger_alone() -> Result<()> {
    libdebugger_tests::require_agent_env!();
    let interps = host_interpreters();
    let Some(interp) = interps
        .iter()
        .find(|i| i.version.1 >= 12)
        .or(interps.first())
    else {
        eprintln!("skipping: no supported interpreter is installed");
        return Ok(());
    };
    let Some(venv) = venv(interp, false)? else {
        return Ok(());
    };
    let file = "package/coexist_app.py";
    let line = local::marker_line(file, "BP:coexist")?;
    let start = || -> Result<libdebugger_tests::agent::PyProcess> {
        let cwd = libdebugger_tests::agent::workspace_root().join("tests/python");
        let mut cmd = std::process::Command::new(venv.python());
        cmd.arg(cwd.join(file)).current_dir(&cwd);
        let mut p = libdebugger_tests::agent::PyProcess::start_command(cmd)?;
        p.stdout
            .wait_for("the target's ready line", Duration::from_secs(30), |l| {
                l.starts_with("ready ")
            })?;
        Ok(p)
    };
    let cmd =
        |p: &mut libdebugger_tests::agent::PyProcess, c: &str, reply: &str| -> Result<String> {
            p.send_line(c)?;
            let prefix = format!("{reply} ");
            let l = p.stdout.wait_for(
                &format!("`{reply}` to `{c}`"),
                Duration::from_secs(30),
                |l| l.starts_with(&prefix) || l == reply,
            )?;
            Ok(l.strip_prefix(&prefix).unwrap_or_default().to_string())
        };
    let mut first = start()?;
    let mut second = start()?;
    // The second process debugs itself before the agent starts.
    cmd(
        &mut second,
        &format!("start_inprocess early {line}"),
        "started",
    )?;
    let (p1, p2) = (first.pid(), second.pid());
    let agent = Agent::start(AgentConfig {
        pids: vec![p1, p2],
        breakpoints: Some(breakpoints_toml(&[Bp::at(file, line).id("cmp")])),
        ..AgentConfig::default()
    })?;
    agent.wait_armed_in("cmp", p1, Duration::from_secs(60))?;
    cmd(&mut first, "call 3", "called")?;
    let from_agent = agent.wait_hit("cmp", p1, |_| true)?;

    // In process now: the agent's helper is disarmed at once.
    cmd(
        &mut first,
        &format!("start_inprocess cmp {line}"),
        "started",
    )?;
    cmd(&mut first, "call 3", "called")?;
    let events = events_of(&cmd(&mut first, "events", "events")?)?;
    let in_process = events.first().context("no in-process event")?.clone();
    let in_process_state = |pid: i32| {
        move |s: &Value| {
            local::process_entry(s, pid).is_some_and(|p| {
                p["attach_state"] == "in-process"
                    && p["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("in-process debugger active"))
            })
        }
    };
    agent.wait_status(
        "the first process reported in-process",
        Duration::from_secs(40),
        in_process_state(p1),
    )?;
    agent.wait_status(
        "the second process reported in-process",
        Duration::from_secs(40),
        in_process_state(p2),
    )?;
    assert_eq!(
        local::helper_mappings(p2)?,
        0,
        "the agent injected a process debugging itself"
    );
    cmd(&mut first, "call 4", "called")?;
    let events = events_of(&cmd(&mut first, "events", "events")?)?;
    assert_eq!(events.len(), 2, "in-process hits: {events:#?}");
    assert_eq!(
        agent.hits("cmp", p1).len(),
        1,
        "the agent captured after the in-process start"
    );
    let inspect = libdebugger_tests::agent::run_agent(
        &["inspect", &p1.to_string(), "--json"],
        Duration::from_secs(30),
    )?;
    let inspect: Value = serde_json::from_str(&inspect.stdout)
        .with_context(|| format!("inspect --json: {inspect:?}"))?;
    assert_eq!(inspect["in_process"]["active"], true, "{inspect:#}");
    assert!(
        inspect["in_process"]["status"]
            .as_str()
            .is_some_and(|s| s.contains("in-process debugger active")),
        "{inspect:#}"
    );

    // The same hit, in process and by the agent: the same event but for timing.
    assert_eq!(in_process["event"], from_agent.0["event"]);
    assert_eq!(in_process["distinct_id"], from_agent.0["distinct_id"]);
    let (a, b) = (from_agent.props(), &in_process["properties"]);
    assert_eq!(keys(a), keys(b), "agent: {a:#}\nin process: {b:#}");
    for k in keys(a) {
        if ["$timestamp", "$capture_us"].contains(&k.as_str()) {
            continue;
        }
        assert_eq!(a[&k], b[&k], "{k} differs: agent {a:#}\nin process {b:#}");
    }

    // Stopped: the agent still leaves the process alone (no hand-over back and forth).
    cmd(&mut first, "stop", "stopped")?;
    cmd(&mut first, "call 5", "called")?;
    let helper = cmd(&mut first, "agent_helper", "agent_helper")?;
    let helper: Value = serde_json::from_str(&helper).context("agent_helper reply")?;
    assert_eq!(
        helper["breakpoints"],
        json!([]),
        "the agent re-armed its helper: {helper:#}"
    );
    let s = agent.status()?;
    assert!(in_process_state(p1)(&s), "{s:#}");
    assert_eq!(
        agent.hits("cmp", p1).len(),
        1,
        "the agent captured after the stop"
    );
    Ok(())
}

/// The host's interpreters: the package is installed with the interpreter's own `venv` and pip,
/// which the container root (Debian unstable's bare `python3.X` packages) does not carry.
fn host_interpreters() -> Vec<python::Interpreter> {
    let (host, container): (Vec<_>, Vec<_>) = python::supported()
        .into_iter()
        .partition(|i| !i.in_container());
    for i in &container {
        eprintln!(
            "skipping {} for the wheel: the container root has no ensurepip (Debian's python3.X-venv) to make a venv with",
            i.label
        );
    }
    host
}
