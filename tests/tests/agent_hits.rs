//! Local mode end to end: a breakpoint from the breakpoints file is hit in real processes on
//! every supported interpreter, with the right locals, redaction, stack and location.
use anyhow::{Result, ensure};
use libdebugger_tests::local::{Bp, Scenario, marker_line};
use libdebugger_tests::require_agent_env;
use serde_json::json;

#[test]
fn file_breakpoint_hits_with_locals_stack_and_redaction() -> Result<()> {
    require_agent_env!();
    let line = marker_line("agent_mod.py", "BP:checkout")?;
    let mut s = Scenario::new("file-hit")
        .breakpoint(Bp::marker("agent_mod.py", "BP:checkout").id("checkout"))
        .start()?;
    s.wait_armed("checkout")?;
    s.each_target(|t| t.cmd("call 3", "called").map(drop))?;
    s.expect_hit("checkout", |t, hit| {
        let p = hit.props();
        ensure!(p["$file_path"] == "python/agent_mod.py", "$file_path");
        ensure!(p["$line_number"] == line, "$line_number");
        ensure!(p["$pid"] == t.pid(), "$pid");
        let order = hit.local("order_id").as_i64().unwrap_or(-1);
        ensure!((0..3).contains(&order), "order_id");
        ensure!(hit.local("amount") == json!(21), "amount");
        ensure!(
            hit.local("password") == json!("[redacted]"),
            "password not redacted"
        );
        ensure!(hit.local("items") == json!([order, 21, "widget"]), "items");
        ensure!(
            hit.local("meta") == json!({"order": order, "currency": "EUR"}),
            "meta"
        );
        ensure!(
            hit.local("total").is_null(),
            "total is not assigned yet at the line"
        );
        let stack = hit.stack();
        ensure!(stack.len() >= 3, "stack too short");
        ensure!(
            stack[0].0.ends_with("tests/python/agent_mod.py"),
            "frame 0 file"
        );
        ensure!(
            stack[0].1 == "checkout" && stack[0].2 == u64::from(line),
            "frame 0"
        );
        ensure!(
            stack[1].0.ends_with("tests/python/agent_target.py") && stack[1].1 == "call_checkout",
            "frame 1"
        );
        ensure!(stack[2].1 == "commands", "frame 2");
        ensure!(
            p["$python_version"]
                .as_str()
                .is_some_and(|v| v.starts_with(&format!("3.{}.", t.interp.version.1))),
            "$python_version"
        );
        Ok(())
    })?;
    Ok(())
}
