//! B5: pipeline throughput, helper → `ldbg_emit` uprobe → ring buffer → agent → sink, for two
//! sinks: the JSON Lines events file, and PostHog's `/batch/` (a counting stand-in on loopback,
//! `posthog_stub.rs`). Emitters (`b5_emitter.py`) hit a breakpoint in a loop, each in its own
//! process, at 1, 10 and 50 processes; the agent's `[capture]` settings lift the helper's rate
//! limits (`pieces::AGENT_CAPTURE_UNLIMITED`) so the pipeline is what is measured.
//!
//! Per run: throughput = events that arrived / (time from "go" to the last arrival); loss =
//! breakpoint calls made − events that arrived. A run at 5,000 events/s (one process) checks
//! zero loss; the runs at maximum rate report the loss there.
use crate::bench::agent::{Agent, Breakpoint, HitCounter};
use crate::bench::pieces::AGENT_CAPTURE_UNLIMITED;
use crate::bench::posthog_stub::{self, Stub};
use crate::bench::pyproc::{Proc, Python, args, num, scripts_dir};
use crate::bench::report::{Row, Verdict};
use crate::bench::{AgentPieces, Ctx};
use anyhow::{Result, anyhow};
use std::time::{Duration, Instant};

const BP_ID: &str = "b5-emit";
const SCRIPT: &str = "b5_emitter.py";

#[derive(Clone, Copy, PartialEq)]
enum Sink {
    File,
    Posthog,
}

impl Sink {
    fn label(self) -> &'static str {
        match self {
            Sink::File => "helper → events file",
            Sink::Posthog => "helper → PostHog /batch/ (loopback stand-in)",
        }
    }
}

struct Outcome {
    calls: u64,
    received: u64,
    /// Seconds from "go" to the last arrival.
    span_s: f64,
    status: serde_json::Value,
}

fn emit_line() -> Result<(String, u32)> {
    let path = scripts_dir().join(SCRIPT);
    let text = std::fs::read_to_string(&path)?;
    let line = text
        .lines()
        .zip(1..)
        .find(|(l, _)| l.contains("# bench: emit line"))
        .map(|(_, n)| n)
        .ok_or_else(|| anyhow!("{SCRIPT} has no `# bench: emit line` marker"))?;
    Ok((path.display().to_string(), line))
}

/// One run: a fresh agent (fresh events file), `procs` emitters at `rate` each (0 = max).
/// What one run does.
struct Spec<'a> {
    sink: Sink,
    /// Emitter processes.
    procs: usize,
    /// Breakpoint hits per second per process (0 = as fast as it can).
    rate: f64,
    /// Seconds of emitting.
    duration: f64,
    /// Names the run's scratch directory.
    tag: &'a str,
}

fn one_run(ctx: &Ctx, bin: &AgentPieces, py: &Python, spec: &Spec<'_>) -> Result<Outcome> {
    let Spec {
        sink,
        procs,
        rate,
        duration,
        tag,
    } = *spec;
    let (file, line) = emit_line()?;
    let bp = Breakpoint {
        id: BP_ID.into(),
        file: file.clone(),
        line,
        condition: None,
    };
    let dir = ctx.work_dir.join(format!("b5-{tag}"));
    let (stub, agent) = match sink {
        Sink::File => (
            None,
            Agent::start(
                &bin.bin,
                &bin.helper,
                &dir,
                std::slice::from_ref(&bp),
                AGENT_CAPTURE_UNLIMITED,
                &ctx.log_dir,
            )?,
        ),
        Sink::Posthog => {
            let api = serde_json::json!([{
                "id": BP_ID, "repository": null, "filename": file, "line_number": line,
                "enabled": true, "condition": null
            }]);
            let stub = Stub::start(api, BP_ID)?;
            let env = [
                ("POSTHOG_HOST", stub.url()),
                ("POSTHOG_API_HOST", stub.url()),
                ("POSTHOG_INGEST_HOST", stub.url()),
                ("POSTHOG_API_KEY", posthog_stub::PROJECT_KEY.to_owned()),
                (
                    "POSTHOG_PERSONAL_API_KEY",
                    posthog_stub::PERSONAL_KEY.to_owned(),
                ),
                ("POSTHOG_PROJECT_ID", posthog_stub::PROJECT_ID.to_string()),
                ("LIBDEBUGGER_POLL_INTERVAL", "1".to_owned()),
            ];
            let agent = Agent::start_with(
                &bin.bin,
                &bin.helper,
                &dir,
                None,
                AGENT_CAPTURE_UNLIMITED,
                &env,
                &ctx.log_dir,
            )?;
            (Some(stub), agent)
        }
    };
    let a = args([
        "--rate".to_owned(),
        rate.to_string(),
        "--duration".to_owned(),
        duration.to_string(),
        "--wait-go".to_owned(),
    ]);
    let mut emitters = Vec::with_capacity(procs);
    for _ in 0..procs {
        emitters.push(Proc::script(py, SCRIPT, &a, &[], &ctx.log_dir)?);
    }
    for e in &mut emitters {
        let ready = e.next_json(Duration::from_secs(60))?;
        let pid = num(&ready, "/ready")? as u32;
        agent.wait_armed(pid, &[BP_ID.to_owned()], Duration::from_secs(30))?;
    }
    let mut counter = HitCounter::new(&agent.events_file, BP_ID);
    let received = |counter: &mut HitCounter| -> Result<u64> {
        match &stub {
            Some(s) => Ok(s.hits()),
            None => counter.poll(),
        }
    };
    let before = received(&mut counter)?;
    let t0 = Instant::now();
    for e in &mut emitters {
        e.go()?;
    }
    let mut calls = 0;
    for e in &mut emitters {
        let v = e.next_json(Duration::from_secs_f64(duration + 60.0))?;
        calls += num(&v, "/calls")? as u64;
    }
    // Drain: until nothing new arrives for 2 s (at most 60 s).
    let mut last = received(&mut counter)?;
    let mut last_change = t0.elapsed();
    let drain_start = Instant::now();
    while drain_start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(250));
        let now = received(&mut counter)?;
        if now != last {
            last = now;
            last_change = t0.elapsed();
        } else if t0.elapsed() - last_change > Duration::from_secs(2) {
            break;
        }
    }
    let status = agent.status().unwrap_or_default();
    drop(emitters);
    agent.stop()?;
    // The events file of a max-rate run is large: keep the disk free.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Outcome {
        calls,
        received: last - before,
        span_s: last_change.as_secs_f64().max(duration),
        status,
    })
}

pub fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    let duration = ctx.pick(30.0, 3.0);
    let counts: &[usize] = if ctx.quick { &[1] } else { &[1, 10, 50] };
    let py = ctx.main_python().cloned();
    let ready: Result<(AgentPieces, Python), String> = match (ctx.agent(), py) {
        (Err(why), _) => Err(why),
        (_, None) => Err("no supported Python interpreter installed".into()),
        (Ok(pieces), Some(py)) => Ok((pieces, py)),
    };
    for sink in [Sink::File, Sink::Posthog] {
        for &procs in counts {
            let mut row = Row::new(
                "B5",
                format!(
                    "{}, max rate, {procs} process{}",
                    sink.label(),
                    if procs == 1 { "" } else { "es" }
                ),
                "events/s",
            )
            .target("≥ 20,000 events/s; loss reported");
            let (bin, py) = match &ready {
                Err(why) => {
                    rows.push(row.not_available(why.clone()));
                    continue;
                }
                Ok(x) => x,
            };
            row = row.python(&py.version);
            let tag = format!(
                "{}-max-{procs}",
                if sink == Sink::File {
                    "file"
                } else {
                    "posthog"
                }
            );
            rows.push(match one_run(ctx, bin, py, &Spec { sink, procs, rate: 0.0, duration, tag: &tag }) {
                Err(e) => row.not_available(format!("{e:#}")),
                Ok(o) => {
                    let rate = o.received as f64 / o.span_s;
                    let lost = o.calls.saturating_sub(o.received);
                    let mut row = row
                        .runs(1)
                        .verdict(Verdict::check(rate >= 20_000.0))
                        .note(format!(
                            "{} events in {:.1} s ({duration} s of emitting); {} breakpoint calls; lost {lost} ({:.2} %)",
                            o.received,
                            o.span_s,
                            o.calls,
                            100.0 * lost as f64 / o.calls.max(1) as f64
                        ))
                        .raw(serde_json::json!({"calls": o.calls, "received": o.received, "lost": lost, "span_s": o.span_s, "agent_status": o.status}));
                    row.value = Some(rate);
                    row.samples = Some(o.received as usize);
                    row
                }
            });
        }
        // Zero loss at 5,000 events/s.
        let mut row = Row::new(
            "B5",
            format!("{}, 5,000 events/s, 1 process: lost", sink.label()),
            "events",
        )
        .target("0 lost");
        let (bin, py) = match &ready {
            Err(why) => {
                rows.push(row.not_available(why.clone()));
                continue;
            }
            Ok(x) => x,
        };
        row = row.python(&py.version);
        let tag = format!(
            "{}-5000",
            if sink == Sink::File {
                "file"
            } else {
                "posthog"
            }
        );
        rows.push(match one_run(ctx, bin, py, &Spec { sink, procs: 1, rate: 5000.0, duration, tag: &tag }) {
            Err(e) => row.not_available(format!("{e:#}")),
            Ok(o) => {
                let lost = o.calls.saturating_sub(o.received);
                let mut row = row
                    .runs(1)
                    .verdict(Verdict::check(lost == 0))
                    .note(format!("{} calls, {} events arrived over {duration} s", o.calls, o.received))
                    .raw(serde_json::json!({"calls": o.calls, "received": o.received, "lost": lost, "agent_status": o.status}));
                row.value = Some(lost as f64);
                row.samples = Some(o.calls as usize);
                row
            }
        });
    }
}
