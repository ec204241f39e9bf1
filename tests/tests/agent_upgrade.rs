//! Upgrades lose nothing: an agent stopped with SIGTERM while PostHog is unreachable leaves its
//! undelivered events in the spool; the next agent — a different build, here one whose helper
//! file on disk is not the one loaded in the process — adopts the helper already in the running
//! process (no second injection), sends the spool, and captures again. A helper of an
//! incompatible build (its control block announces another ABI) is not replaced: it is disarmed
//! through the header every ABI shares, and `status` says so.
//!
//! PostHog mode against the project's test server on loopback, a real CPython target
//! (`tests/fixtures/posthog/target.py`), every agent scoped with `--pid`.
use anyhow::{Context, Result, bail, ensure};
use libdebugger_common::helper_abi::{ABI_VERSION, DISARM, control_offsets};
use libdebugger_tests::local::{helper_mappings, process_entry};
use libdebugger_tests::posthog_e2e::{
    AgentDirs, AgentOptions, PosthogAgent, Target, all_seqs, breakpoint, has_status, marked_line,
    seq_of, skip_reason,
};
use libdebugger_tests::posthog_server::{Fault, PosthogServer};
use libdebugger_tests::python::{self, Interpreter};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ARMED_TIMEOUT: Duration = Duration::from_secs(60);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

fn interpreter() -> Result<Interpreter> {
    let all = python::supported();
    all.iter()
        .find(|i| i.label == "pyenv-3.12.1")
        .or(all.first())
        .cloned()
        .context("no supported CPython (3.11+) on this machine")
}

/// SIGTERM, then waits (deadline) for the agent to exit.
fn sigterm(agent: &mut PosthogAgent) -> Result<()> {
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(agent.pid(), libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.alive() {
        ensure!(
            Instant::now() < deadline,
            "the agent did not exit within 30 s of SIGTERM; log:\n{}",
            agent.log.lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The staged helper with 4 KiB appended: a valid library whose file differs from the one a
/// previous agent loaded (what an upgraded package puts on disk).
fn other_build_of_the_helper(dir: &std::path::Path) -> Result<PathBuf> {
    let staged = libdebugger_tests::helper::helper_dir()?.join("libdebugger_helper.abi3.so");
    let mut bytes = std::fs::read(&staged)?;
    bytes.extend_from_slice(&[0u8; 4096]);
    let path = dir.join("libdebugger_helper.abi3.so");
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// Bytes in the spool's segment files (`spool/<sink>/*.seg`).
fn spooled_bytes(dirs: &AgentDirs) -> u64 {
    let sinks = std::fs::read_dir(dirs.spool())
        .into_iter()
        .flatten()
        .flatten();
    sinks
        .flat_map(|sink| {
            std::fs::read_dir(sink.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn sigterm_and_a_new_build_adopt_the_helper_and_send_the_spool_then_an_incompatible_helper_is_disarmed()
-> Result<()> {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return Ok(());
    }
    let interp = interpreter()?;
    let id = "5d2c7b1e-8f3a-4c6d-9e0b-1a2b3c4d5e16";
    let server = PosthogServer::start()?;
    server.set_breakpoints(vec![breakpoint(id, marked_line("hit")?, None, true)]);
    let mut target = Target::start(&interp)?;
    let pid = target.pid();
    let dirs = AgentDirs::new()?;
    let mut old = PosthogAgent::start(&server, pid, &dirs, &AgentOptions::default())?;
    ensure!(
        server.wait_events(ARMED_TIMEOUT, |ev| has_status(ev, id, "armed")),
        "never armed; log:\n{}",
        old.log.lines().join("\n")
    );

    // PostHog goes away; hits pile up in the spool; the old agent is stopped as systemd does.
    server.set_batch_down(Some(Fault::Status(503)));
    let seqs = target.burst(5)?;
    ensure!(
        server.wait_attempted(DELIVERY_TIMEOUT, |ev| all_seqs(ev, id, &seqs)),
        "the old agent never tried to send the burst"
    );
    let spooled: HashSet<String> = server
        .attempted_events()
        .iter()
        .filter(|e| seq_of(e).is_some_and(|q| seqs.contains(&q)))
        .filter_map(|e| e["uuid"].as_str().map(str::to_owned))
        .collect();
    sigterm(&mut old)?;
    let old_log = old.log.lines().join("\n");
    ensure!(
        old_log.contains("events flushed"),
        "no flush at SIGTERM:\n{old_log}"
    );
    let queued: u64 = old_log
        .lines()
        .filter(|l| l.contains("events flushed"))
        .find_map(|l| {
            l.split("queued=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    ensure!(
        queued >= spooled.len() as u64 && spooled_bytes(&dirs) > 0,
        "the 5 undelivered events are not in the spool after SIGTERM:\n{old_log}"
    );
    ensure!(target.alive(), "the target died with the old agent");
    ensure!(helper_mappings(pid)? == 1, "helper mappings after the stop");
    drop(old);

    // The new build: another helper file on disk, the same spool; PostHog is back.
    server.set_batch_down(None);
    let tmp = tempfile::tempdir()?;
    let new_helper = other_build_of_the_helper(tmp.path())?;
    let opts = AgentOptions {
        extra_args: vec!["--helper".into(), new_helper.display().to_string()],
        ..AgentOptions::default()
    };
    let new = PosthogAgent::start(&server, pid, &dirs, &opts)?;
    new.log
        .wait_for("adopted the helper already loaded", ARMED_TIMEOUT)
        .with_context(|| new.log.lines().join("\n"))?;
    ensure!(
        server.wait_events(DELIVERY_TIMEOUT, |ev| {
            let got: HashSet<&str> = ev.iter().filter_map(|e| e["uuid"].as_str()).collect();
            spooled.iter().all(|u| got.contains(u.as_str()))
        }),
        "the spooled events were not delivered by the new agent; log:\n{}",
        new.log.lines().join("\n")
    );
    let more = target.burst(2)?;
    ensure!(
        server.wait_events(DELIVERY_TIMEOUT, |ev| all_seqs(ev, id, &more)),
        "no hits through the adopted helper; log:\n{}",
        new.log.lines().join("\n")
    );
    ensure!(helper_mappings(pid)? == 1, "a second helper was injected");
    let st = new.status()?;
    let p = process_entry(&st, pid).context("target not in status")?;
    ensure!(p["attach_state"] == "attached", "{p:#}");

    // An incompatible build: the process keeps a helper whose control block says another ABI
    // (here: the field rewritten in the running process, as an older build would have left it),
    // with its breakpoints still armed (the agent died with kill -9).
    let loaded = libdebugger_agent::inject::find_loaded_helper(pid, &new_helper)?
        .context("the helper is not found in the target")?;
    new.kill9()?;
    let addr = loaded.control_addr;
    libdebugger_agent::remote::write(
        pid,
        addr + control_offsets::ABI_VERSION as u64,
        &(ABI_VERSION + 1).to_le_bytes(),
    )?;
    let before =
        libdebugger_agent::remote::read_u64(pid, addr + control_offsets::GENERATION as u64)?;
    let third = PosthogAgent::start(&server, pid, &dirs, &AgentOptions::default())?;
    let deadline = Instant::now() + ARMED_TIMEOUT;
    let entry = loop {
        let st = third.status()?;
        if let Some(p) = process_entry(&st, pid).filter(|p| p["attach_state"] == "incompatible") {
            break p.clone();
        }
        if Instant::now() > deadline {
            bail!(
                "the process never showed as incompatible: {st:#}\nlog:\n{}",
                third.log.lines().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let reason = entry["reason"].as_str().unwrap_or_default();
    ensure!(
        reason.contains(&format!("helper ABI {}", ABI_VERSION + 1))
            && reason.contains("disarmed")
            && reason.contains("restart the process"),
        "status reason: {reason}"
    );
    // The helper applied the disarm document the agent published through the shared header.
    let read = |off: usize| libdebugger_agent::remote::read_u64(pid, addr + off as u64);
    let generation = read(control_offsets::GENERATION)?;
    ensure!(
        generation > before && generation % 2 == 0,
        "generation {before} → {generation}"
    );
    ensure!(
        read(control_offsets::APPLIED_GENERATION)? >= generation,
        "the disarm was not applied"
    );
    let len = libdebugger_agent::remote::read_u32(pid, addr + control_offsets::DATA_LEN as u64)?;
    let mut data = vec![0u8; len as usize];
    libdebugger_agent::remote::read(pid, addr + control_offsets::DATA as u64, &mut data)?;
    ensure!(
        data == DISARM,
        "control data: {}",
        String::from_utf8_lossy(&data)
    );
    // Left alone: one helper, the process runs on.
    ensure!(
        helper_mappings(pid)? == 1,
        "a second helper next to the incompatible one"
    );
    target.burst(2)?;
    ensure!(target.alive(), "the target died");
    Ok(())
}
