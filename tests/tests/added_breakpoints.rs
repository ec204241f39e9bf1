//! Breakpoints added with `break add` (or the web UI, which calls the same operation) survive a
//! restart of an agent that runs from a breakpoints file, and stay removable; the file's own
//! breakpoints stay read-only for the CLI.
use anyhow::{Result, ensure};
use libdebugger_tests::local::{Agent, AgentConfig};
use libdebugger_tests::require_agent_env;
use std::time::Duration;

#[test]
fn added_breakpoints_survive_a_restart() -> Result<()> {
    require_agent_env!();
    let mut agent = Agent::start(AgentConfig {
        // No process of this host is debugged: only the breakpoint bookkeeping is under test.
        cmdline: Some("^ldbg-no-such-process$".into()),
        breakpoints: Some(
            "[[breakpoint]]\nid = \"from-file\"\nfile = \"app/a.py\"\nline = 3\n".into(),
        ),
        ..AgentConfig::default()
    })?;
    let add = agent.cli(&[
        "break",
        "add",
        "app/b.py:7",
        "--if",
        "x > 1",
        "--id",
        "added",
    ])?;
    ensure!(add.ok, "break add: {add:?}");
    agent.sigterm(Duration::from_secs(15))?;
    agent.spawn()?;
    let list = agent.cli(&["break", "list", "--json"])?.json()?;
    let ids: Vec<&str> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["id"].as_str())
        .collect();
    ensure!(
        ids.contains(&"added") && ids.contains(&"from-file"),
        "after a restart: {ids:?}"
    );
    let added = list
        .as_array()
        .and_then(|l| l.iter().find(|b| b["id"] == "added"))
        .cloned()
        .unwrap_or_default();
    ensure!(
        added["condition"] == "x > 1" && added["line"] == 7,
        "restored as {added}"
    );
    let rm = agent.cli(&["break", "rm", "added"])?;
    ensure!(rm.ok, "break rm of the added breakpoint: {rm:?}");
    agent.sigterm(Duration::from_secs(15))?;
    agent.spawn()?;
    let list = agent.cli(&["break", "list", "--json"])?.json()?;
    ensure!(
        !list.to_string().contains("\"added\""),
        "a removed breakpoint came back after a restart: {list}"
    );
    Ok(())
}
