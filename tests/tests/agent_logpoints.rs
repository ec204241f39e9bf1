//! Logpoints end to end in local mode: a `[[logpoint]]` from the breakpoints file and one from
//! `log add` reach the events file as `$data_logpoint_hit` events from real processes on every
//! supported interpreter; a message that does not parse is that logpoint's error status.
use anyhow::{Result, ensure};
use libdebugger_tests::local::{Bp, Scenario, bp_entry, marker_line};
use libdebugger_tests::require_agent_env;
use serde_json::Value;
use std::time::Duration;

const LOG_EVENT: &str = "$data_logpoint_hit";

fn is_log_of(e: &Value, id: &str, pid: i32) -> bool {
    e["event"] == LOG_EVENT
        && e["properties"]["$breakpoint_id"] == id
        && e["properties"]["$pid"] == pid
}

#[test]
fn file_and_cli_logpoints_send_messages() -> Result<()> {
    require_agent_env!();
    let line = marker_line("agent_mod.py", "BP:checkout")?;
    let mut s = Scenario::new("logpoints")
        .breakpoint(
            Bp::marker("agent_mod.py", "BP:checkout")
                .id("lp-file")
                .condition("order_id >= 1")
                .log("order={order_id} amount={amount!r} pw={password} n={len(items)} meta={meta} {missing}"),
        )
        .start()?;
    s.wait_armed("lp-file")?;
    s.each_target(|t| t.cmd("call 3", "called").map(drop))?;
    for t in &s.targets {
        let pid = t.pid();
        let ev = s
            .agent
            .wait_event("a logpoint message", Duration::from_secs(20), |e| {
                is_log_of(e, "lp-file", pid)
            })?;
        let p = &ev["properties"];
        let m = p["$message"].as_str().unwrap_or_default();
        ensure!(
            m.starts_with("order=1 amount=21 pw=[redacted] n=3 meta={'order': 1, 'currency': 'EUR'} {missing!error: name `missing` is not defined}"),
            "{}: message {m:?}",
            t.interp.label
        );
        ensure!(p["$file_path"] == "python/agent_mod.py", "{p:#}");
        ensure!(p["$line_number"] == line, "{p:#}");
        ensure!(
            p["$thread_name"].is_string() && p["$thread_id"].is_u64(),
            "{p:#}"
        );
        ensure!(p["$timestamp"].is_string(), "{p:#}");
        ensure!(
            p.get("$locals_variables").is_none() && p.get("$stack_trace").is_none(),
            "a logpoint sends no locals and no stack: {p:#}"
        );
        ensure!(!ev.to_string().contains("hunter2"), "secret in {ev}");
    }
    // order 0 was turned away by the condition, counted per logpoint.
    let st = s
        .agent
        .wait_status("counted logpoint hits", Duration::from_secs(20), |st| {
            bp_entry(st, "lp-file").is_some_and(|b| {
                b["counters"]["condition_false"].as_u64() >= Some(s.targets.len() as u64)
            })
        })?;
    let b = bp_entry(&st, "lp-file").expect("listed");
    ensure!(b["kind"] == "logpoint" && b["message"].is_string(), "{b:#}");
    ensure!(b["status"] == "armed", "{b:#}");

    // `log add` from the CLI; a bad message is its own error, the good one still works.
    let bad = s.agent.cli(&[
        "log",
        "add",
        &format!("python/agent_mod.py:{line}"),
        "x={foo()}",
        "--id",
        "lp-bad",
    ])?;
    ensure!(bad.ok, "log add: {bad:?}");
    let good = s.agent.cli(&[
        "log",
        "add",
        &format!("python/agent_mod.py:{line}"),
        "cli total-to-be {amount * 2}",
        "--id",
        "lp-cli",
        "--rate",
        "50",
    ])?;
    ensure!(
        good.ok && good.stdout.contains("added logpoint lp-cli"),
        "{good:?}"
    );
    s.wait_armed("lp-cli")?;
    let st = s
        .agent
        .wait_status("lp-bad's error", Duration::from_secs(20), |st| {
            bp_entry(st, "lp-bad").is_some_and(|b| b["status"] == "error")
        })?;
    let err = bp_entry(&st, "lp-bad").expect("listed")["error"].to_string();
    ensure!(err.contains("message syntax error at column"), "{err}");
    s.each_target(|t| t.cmd("call 1", "called").map(drop))?;
    for t in &s.targets {
        let pid = t.pid();
        let ev = s
            .agent
            .wait_event("a CLI logpoint message", Duration::from_secs(20), |e| {
                is_log_of(e, "lp-cli", pid)
            })?;
        ensure!(
            ev["properties"]["$message"] == "cli total-to-be 42",
            "{}: {ev:#}",
            t.interp.label
        );
    }
    let list = s.agent.cli(&["break", "list"])?;
    ensure!(
        list.stdout.contains("log \"cli total-to-be {amount * 2}\""),
        "{list:?}"
    );
    Ok(())
}
