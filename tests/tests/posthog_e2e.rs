//! PostHog mode end to end: the real agent (`run` with PostHog credentials) against the
//! PostHog-compatible test server on 127.0.0.1, debugging a real CPython process
//! (`tests/fixtures/posthog/target.py`). Every agent is scoped to its target with `--pid` and
//! has its own control socket and spool, so the tests can run next to each other and next to
//! other agents on the host.
//!
//! The target counts what it executes (its `burst` command answers with the seq numbers it
//! used, and each hit captures `seq` as a local), which is the side channel that proves "none
//! lost": every seq the target ran must arrive at `/batch/`.
//!
//! Needs root and the staged helper (`cargo xtask build-helper`); skips with one line otherwise.
use anyhow::{Context, Result, bail, ensure};
use libdebugger_tests::posthog_e2e::{
    AgentDirs, AgentOptions, HANDLERS, PosthogAgent, Target, all_seqs, breakpoint, event_time,
    has_status, hits, marked_line, missing_seqs, seq_of, skip_reason,
};
use libdebugger_tests::posthog_server::{Fault, PosthogServer};
use libdebugger_tests::python::{self, Interpreter};
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// Long enough for a busy 2-core CI machine; every wait returns as soon as its condition holds.
const ARMED_TIMEOUT: Duration = Duration::from_secs(30);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

macro_rules! require_env {
    () => {
        if let Some(why) = skip_reason() {
            eprintln!("skipping: {why}");
            return Ok(());
        }
    };
}

/// pyenv's 3.12.1 if present, else the first supported interpreter.
fn main_interpreter() -> Result<Interpreter> {
    let all = python::supported();
    all.iter()
        .find(|i| i.label == "pyenv-3.12.1")
        .or(all.first())
        .cloned()
        .context("no supported CPython (3.11+) on this machine")
}

/// Server + target + agent, with breakpoint `id` on the hit line armed.
struct Setup {
    server: PosthogServer,
    target: Target,
    dirs: AgentDirs,
    agent: PosthogAgent,
    line: u32,
}

fn setup(interp: &Interpreter, id: &str, condition: Option<&str>) -> Result<Setup> {
    let server = PosthogServer::start()?;
    let line = marked_line("hit")?;
    server.set_breakpoints(vec![breakpoint(id, line, condition, true)]);
    let target = Target::start(interp)?;
    let dirs = AgentDirs::new()?;
    let agent = PosthogAgent::start(&server, target.pid(), &dirs, &AgentOptions::default())?;
    wait_armed(&server, &agent, id, &interp.label)?;
    Ok(Setup {
        server,
        target,
        dirs,
        agent,
        line,
    })
}

fn wait_armed(server: &PosthogServer, agent: &PosthogAgent, id: &str, label: &str) -> Result<()> {
    if !server.wait_events(ARMED_TIMEOUT, |ev| has_status(ev, id, "armed")) {
        bail!(
            "{label}: no `$data_breakpoint_status` armed for {id} within {ARMED_TIMEOUT:?}; \
             events: {:?}\nagent log:\n{}",
            server.events(),
            agent.log.lines().join("\n")
        );
    }
    Ok(())
}

fn wait_seqs(
    server: &PosthogServer,
    agent: &PosthogAgent,
    id: &str,
    seqs: &std::ops::RangeInclusive<u64>,
    what: &str,
) -> Result<()> {
    if !server.wait_events(DELIVERY_TIMEOUT, |ev| all_seqs(ev, id, seqs)) {
        bail!(
            "{what}: seqs {:?} of {seqs:?} never arrived at /batch/; attempted while down: {}; \
             requests: {:?}\nagent log:\n{}",
            missing_seqs(&server.events(), id, seqs),
            server.attempted_events().len(),
            server
                .requests_to("/batch")
                .iter()
                .map(|r| r.status)
                .collect::<Vec<_>>(),
            agent.log.lines().join("\n")
        );
    }
    Ok(())
}

/// (1) Hits arrive with the properties PostHog's UI reads, on every supported interpreter.
#[test]
fn posthog_e2e_hits_carry_ui_properties() -> Result<()> {
    require_env!();
    let id = "6f1c2f7e-4d7a-4c55-9a57-0c6f4c7f9b01";
    for interp in python::supported() {
        let mut s = setup(&interp, id, None)?;
        let label = &interp.label;
        ensure!(
            s.target.handlers_path.starts_with('/')
                && s.target.handlers_path.ends_with(HANDLERS)
                && s.target.handlers_path != HANDLERS,
            "{label}: the process must see an absolute path, got {}",
            s.target.handlers_path
        );
        let seqs = s.target.burst(3)?;
        wait_seqs(&s.server, &s.agent, id, &seqs, label)?;
        let events = s.server.events();
        let hit = hits(&events, id)
            .find(|e| seq_of(e) == Some(*seqs.start()))
            .context("the first hit")?;
        let p = &hit["properties"];
        ensure!(p["$breakpoint_id"] == id, "{label}: {hit}");
        ensure!(
            p["$file_path"] == HANDLERS,
            "{label}: $file_path must be the breakpoint's filename as received: {hit}"
        );
        ensure!(
            p["$line_number"] == Value::from(s.line),
            "{label}: $line_number: {hit}"
        );
        let locals = p["$locals_variables"]
            .as_object()
            .with_context(|| format!("{label}: $locals_variables is not an object: {hit}"))?;
        ensure!(
            locals.contains_key("seq") && locals.contains_key("order") && locals.contains_key("total"),
            "{label}: locals {locals:?}"
        );
        ensure!(
            locals["user"] == format!("user-{}", seqs.start() % 3),
            "{label}: user local: {locals:?}"
        );
        let stack = p["$stack_trace"]
            .as_array()
            .with_context(|| format!("{label}: $stack_trace is not an array: {hit}"))?;
        ensure!(!stack.is_empty(), "{label}: empty stack");
        for frame in stack {
            let f = frame.as_array().with_context(|| {
                format!("{label}: a frame is not an array [file, function, line]: {frame}")
            })?;
            ensure!(
                f.len() == 3 && f[0].is_string() && f[1].is_string() && f[2].is_u64(),
                "{label}: frame {frame}"
            );
        }
        let names: Vec<&str> = stack.iter().filter_map(|f| f[1].as_str()).collect();
        ensure!(
            names.iter().any(|n| n.ends_with("handle")) && names.iter().any(|n| n.ends_with("call_once")),
            "{label}: stack functions {names:?}"
        );
        ensure!(
            event_time(hit).is_some() && p["$timestamp"].is_string(),
            "{label}: $timestamp: {hit}"
        );
        ensure!(
            p["$thread_id"].is_u64() || p["$thread_id"].is_i64(),
            "{label}: $thread_id: {hit}"
        );
        ensure!(p["$thread_name"] == "worker", "{label}: $thread_name: {hit}");
        ensure!(
            hit["distinct_id"] == s.agent.distinct_id.as_str(),
            "{label}: distinct_id: {hit}"
        );
        let uuid = hit["uuid"].as_str().unwrap_or("");
        ensure!(
            uuid::Uuid::parse_str(uuid).is_ok(),
            "{label}: uuid {uuid:?}"
        );
        ensure!(
            hit["timestamp"].as_str().is_some_and(|t| time::OffsetDateTime::parse(
                t,
                &time::format_description::well_known::Rfc3339
            )
            .is_ok()),
            "{label}: timestamp: {hit}"
        );
        ensure!(
            p["$process_person_profile"] == false,
            "{label}: $process_person_profile: {hit}"
        );
        // Every event (hits and statuses) is well-formed for /batch/ and unique.
        let mut uuids: Vec<&str> = events.iter().filter_map(|e| e["uuid"].as_str()).collect();
        let n = uuids.len();
        uuids.sort_unstable();
        uuids.dedup();
        ensure!(uuids.len() == n && n == events.len(), "{label}: duplicate or missing uuids");
        // /batch/ requests were gzip.
        ensure!(
            s.server
                .requests_to("/batch")
                .iter()
                .all(|r| r.content_encoding.as_deref() == Some("gzip")),
            "{label}: /batch/ requests without gzip"
        );
        ensure!(s.target.alive(), "{label}: the target died");
        eprintln!(
            "{label}: {} hits, first: {}",
            hits(&events, id).count(),
            serde_json::to_string(hit)?
        );
        drop(s.dirs);
    }
    Ok(())
}
