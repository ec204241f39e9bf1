//! The web UI in a real browser: the sample service (xtask/demo/shop) on CPython 3.12, the
//! agent attached to it with `--ui 127.0.0.1:0`, and headless Chromium driven through
//! `tests/browser/ui.mjs` (playwright-core, installed by `cargo xtask test` with `npm ci`).
//! The script clicks through the UI by role and name and asserts each step; this test then
//! checks the same story from the agent's side (hits and logpoint messages in the events file,
//! both probes gone from `break list`, `libdebugger-agent ui` printing the URL). Screenshots: target/ui-browser/.
use anyhow::{Context, Result, ensure};
use libdebugger_tests::agent::{PyProcess, workspace_root};
use libdebugger_tests::local::{Agent, Hit};
use libdebugger_tests::require_agent_env;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Why the browser cannot be driven here, if it cannot.
fn browser_missing() -> Option<String> {
    if !std::path::Path::new(CHROMIUM).exists() {
        return Some(format!(
            "{CHROMIUM} is missing (Debian's chromium package; `cargo xtask test` installs it)"
        ));
    }
    let pw = workspace_root().join("tests/browser/node_modules/playwright-core");
    if !pw.exists() {
        return Some(format!(
            "{} is missing (run `npm ci` in tests/browser; `cargo xtask test` does)",
            pw.display()
        ));
    }
    None
}

fn python312() -> Option<PathBuf> {
    libdebugger_tests::python::supported()
        .into_iter()
        .find(|i| i.version == (3, 12))
        .map(|i| i.path)
}

#[test]
fn set_a_breakpoint_by_clicking_a_line_and_watch_the_hits() -> Result<()> {
    require_agent_env!();
    if let Some(why) = browser_missing() {
        eprintln!("skipping: {why}");
        return Ok(());
    }
    let Some(python) = python312() else {
        eprintln!("skipping: pyenv's CPython 3.12.1 (the demo service's interpreter) is missing");
        return Ok(());
    };
    let demo = workspace_root().join("xtask/demo");
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "shop.service"]).current_dir(&demo);
    let mut service = PyProcess::start_command(cmd)?;
    service.stdout.wait_for(
        "the service's readiness line",
        Duration::from_secs(30),
        |l| l.starts_with("shop service running"),
    )?;
    let pid = service.pid();
    let agent = Agent::start_with_ui(pid)?;
    let url = agent.ui_url()?;
    let url_file = agent.runtime_dir().join("ui.url");
    let printed = agent.cli(&["ui"])?;
    ensure!(
        printed.ok && printed.stdout.trim() == url,
        "`libdebugger-agent ui` printed {printed:?}, the agent serves {url}"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&url_file)?.permissions());
    ensure!(
        mode & 0o777 == 0o600,
        "{} is {mode:o}, not 0600",
        url_file.display()
    );

    let cart = demo.join("shop/cart.py");
    let shots = workspace_root().join("target/ui-browser");
    let out = Command::new("node")
        .arg("ui.mjs")
        .current_dir(workspace_root().join("tests/browser"))
        .env("UI_URL", &url)
        .env("SERVICE_PID", pid.to_string())
        .env("CART_FILE", &cart)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", CHROMIUM)
        .output()
        .context("running node tests/browser/ui.mjs")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    ensure!(
        out.status.success() && stdout.contains("browser test passed"),
        "the browser test failed ({}); screenshots in {}\nstdout:\n{stdout}\nstderr:\n{stderr}\nagent log:\n{}",
        out.status,
        shots.display(),
        agent.log_tail(30)
    );

    // The agent's side of the story: the hits the page showed were real deliveries, with the
    // condition applied; the breakpoint set in the page is gone again.
    let id = format!("{}:40", cart.display());
    let hits: Vec<Hit> = agent
        .events()
        .into_iter()
        .map(Hit)
        .filter(|h| h.is_hit() && h.breakpoint_id() == id && h.pid() == pid)
        .collect();
    ensure!(
        hits.len() >= 2,
        "{} hits of {id} in the events file",
        hits.len()
    );
    ensure!(
        hits.iter()
            .all(|h| h.local("subtotal").as_f64().is_some_and(|s| s > 50.0)),
        "a hit with subtotal <= 50 despite the condition"
    );
    // The logpoint's messages, rendered by the helper as the page showed them.
    let log_id = format!("{id}:log");
    let messages: Vec<String> = agent
        .events()
        .into_iter()
        .filter(|e| {
            e["event"] == "$data_logpoint_hit" && e["properties"]["$breakpoint_id"] == *log_id
        })
        .filter_map(|e| e["properties"]["$message"].as_str().map(str::to_string))
        .collect();
    ensure!(
        messages.len() >= 2 && messages.iter().all(|m| m.starts_with("customer ")),
        "messages of {log_id} in the events file: {messages:?}"
    );
    let list = agent.cli(&["break", "list", "--json"])?;
    ensure!(list.ok, "break list: {list:?}");
    ensure!(
        !list.stdout.contains(&id),
        "the breakpoint or logpoint removed in the page is still listed: {}",
        list.stdout
    );
    for shot in [
        "ui-hits.png",
        "ui-paused.png",
        "ui-logpoint.png",
        "ui-removed.png",
    ] {
        ensure!(shots.join(shot).is_file(), "no screenshot {shot}");
    }
    Ok(())
}
