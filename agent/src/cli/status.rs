//! `status` and `tail`: talk to the running agent over its control socket.
use crate::control::{self, Request};
use clap::Args;
use serde_json::Value;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// Print raw JSON lines instead of the human-readable view.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let value = control::call(&crate::paths::control_socket(), &Request::Status)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("mode: {}", text(&value["mode"]));
    // Each breakpoint source's health: the line to read when breakpoints do not arrive.
    for (key, label) in [
        ("posthog", "PostHog breakpoints"),
        ("posthog_project_key", "PostHog project key"),
        ("breakpoints_file", "breakpoints file"),
        ("breakpoints_url", "breakpoints URL"),
    ] {
        let s = &value[key];
        if s.is_null() {
            continue;
        }
        let state = s["note"]
            .as_str()
            .or(s["last_error"].as_str())
            .or(s["error"].as_str())
            .unwrap_or("ok");
        println!("{label}: {state}");
        for (name, err) in s["errors"].as_object().into_iter().flatten() {
            println!("  {name}: {}", text(err));
        }
    }
    println!("processes:");
    for p in value["processes"].as_array().into_iter().flatten() {
        println!(
            "  {:>7}  python {:<8} {:<12} {}",
            text(&p["pid"]),
            text(&p["python_version"]),
            text(&p["attach_state"]),
            text(&p["exe"]),
        );
        if let Some(reason) = p["reason"].as_str() {
            println!("           {reason}");
        }
    }
    print_breakpoints(&value["breakpoints"]);
    if let Some(ring) = value.get("ring").filter(|r| !r.is_null()) {
        println!(
            "ring buffer: {} records, {} lost",
            text(&ring["records"]),
            text(&ring["lost"])
        );
    }
    if let Some(d) = value.get("delivery").filter(|d| !d.is_null()) {
        println!("delivery: {}", serde_json::to_string(d)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the breakpoints part of a status report.
pub fn print_breakpoints(list: &Value) {
    println!("breakpoints:");
    let Some(list) = list.as_array().filter(|l| !l.is_empty()) else {
        println!("  (none)");
        return;
    };
    for b in list {
        let cond = b["condition"]
            .as_str()
            .map(|c| format!(" if {c}"))
            .unwrap_or_default();
        let log = b["message"]
            .as_str()
            .map(|m| format!(" log {m:?}"))
            .unwrap_or_default();
        println!(
            "  {}  {}:{}{}{}  [{}]  from {}",
            text(&b["id"]),
            text(&b["file"]),
            text(&b["line"]),
            cond,
            log,
            text(&b["status"]),
            text(&b["source"])
        );
        if let Some(err) = b["error"].as_str() {
            println!("      error: {err}");
        }
        if let Some(c) = b.get("counters").filter(|c| c.is_object()) {
            println!(
                "      line hits (helper): {}  captured: {}  rate-limited: {}  condition false: {}  condition errors: {}  dropped: {}",
                text(&c["hits"]),
                text(&c["captured"]),
                text(&c["rate_limited"]),
                text(&c["condition_false"]),
                text(&c["condition_errors"]),
                text(&c["dropped"]),
            );
            println!(
                "      function entries from C (kernel probe; Python-to-Python calls are not counted): {}",
                text(&c["entries"])
            );
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // Stops quietly when stdout goes away (`tail | head`).
    control::tail(&crate::paths::control_socket(), |event| {
        let written = match serde_json::from_value::<crate::delivery::Event>(event.clone()) {
            Ok(ev) if !args.json => writeln!(out, "{}", crate::delivery::sinks::render(&ev)),
            _ => writeln!(out, "{event}"),
        };
        written.and_then(|_| out.flush()).is_ok()
    })?;
    Ok(ExitCode::SUCCESS)
}
