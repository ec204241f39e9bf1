//! B5: pipeline throughput, helper → `ldbg_emit` uprobe → ring buffer → agent → sink, for two
//! sinks: the JSON Lines events file, and PostHog's `/batch/` (a counting stand-in on loopback,
//! `posthog_stub.rs`). Emitters (`b5_emitter.py`) hit a breakpoint in a loop, each in its own
//! process, at 1, 10 and 50 processes; the agent's `[capture]` settings lift the helper's rate
//! limits ([`capture_config`]) so the pipeline is what is measured.
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

/// `[capture]` of B5's agent: no rate limit or CPU budget in the helper (as
/// `pieces::AGENT_CAPTURE_UNLIMITED`), with the helper's default 256-message queue instead of
/// 65,536: a deep queue per process holds hundreds of MB per emitter at max rate, takes a
/// minute to drain after a run at 50 processes, and its encoding takes the CPU the agent needs
/// (the same code at 10 processes, events file: 18,492 events/s with 4,096-message queues,
/// about 33,000 with 256).
fn capture_config() -> String {
    AGENT_CAPTURE_UNLIMITED.replace("queue_capacity = 65536", "queue_capacity = 256")
}
const SCRIPT: &str = "b5_emitter.py";

#[derive(Clone, Copy, PartialEq)]
enum Sink {
    File,
    Posthog,
}

impl Sink {
    /// Names the run's scratch directory.
    fn tag(self) -> &'static str {
        match self {
            Sink::File => "file",
            Sink::Posthog => "posthog",
        }
    }

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

impl Outcome {
    /// A counter of the breakpoint in the agent's status (summed over what the helpers
    /// reported), if present.
    fn counter(&self, name: &str) -> Option<u64> {
        self.status["breakpoints"]
            .as_array()?
            .iter()
            .find(|b| b["id"] == BP_ID)?["counters"][name]
            .as_u64()
    }

    /// Hits that entered the pipeline: snapshots the helpers queued (`captured`) plus those
    /// their full queue turned away (`dropped`, not captured at all); 0 if the status has no
    /// `captured` ([`capped_by_helper`] makes such a run N/A).
    fn captured(&self) -> u64 {
        self.counter("captured").unwrap_or(0) + self.counter("dropped").unwrap_or(0)
    }

    /// Snapshots that entered the pipeline and did not arrive.
    fn lost(&self) -> u64 {
        self.captured().saturating_sub(self.received)
    }

    /// Calls the helpers' budgets turned away (rate-limited, process cap, CPU throttle): then the helper, not the pipeline, set the
    /// rate.
    fn rate_limited(&self) -> u64 {
        self.counter("rate_limited").unwrap_or(0)
            + self.counter("process_capped").unwrap_or(0)
            + self.counter("throttled").unwrap_or(0)
    }

    fn describe(&self) -> String {
        format!(
            "{} breakpoint calls, {} passed the helpers' limits, {} rate-limited in the helper, {} arrived, {} lost in the pipeline",
            self.calls,
            self.captured(),
            self.rate_limited(),
            self.received,
            self.lost()
        )
    }

    fn raw(&self) -> serde_json::Value {
        serde_json::json!({
            "calls": self.calls, "captured": self.captured(), "rate_limited": self.rate_limited(),
            "received": self.received, "lost": self.lost(), "span_s": self.span_s,
            "agent_status": self.status
        })
    }
}

/// Why a run says nothing about the pipeline, if it does not.
fn capped_by_helper(o: &Outcome) -> Option<String> {
    if o.counter("hits").unwrap_or(0) < o.calls {
        return Some(format!(
            "the helpers' counters in the agent's status do not account for every call ({} hits reported of {} calls, 25 s after the end): loss cannot be told from rate limiting ({} arrived)",
            o.counter("hits").unwrap_or(0),
            o.calls,
            o.received
        ));
    }
    if o.counter("captured").is_none() {
        return Some(format!(
            "the agent's status has no `captured` counter for the breakpoint: loss cannot be told from rate limiting ({} calls, {} arrived)",
            o.calls, o.received
        ));
    }
    (o.rate_limited() > 0).then(|| {
        format!(
            "the helper's rate limits, not the pipeline, set the rate ({}); the agent gives the helper no way to lift them: `[capture]` reaches it as settings.capture, which it ignores, and breakpoints carry no limits",
            o.describe()
        )
    })
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
                &capture_config(),
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
                &capture_config(),
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
        "--linger".to_owned(),
    ]);
    let mut emitters = Vec::with_capacity(procs);
    for _ in 0..procs {
        emitters.push(Proc::script(py, SCRIPT, &a, &[], &ctx.log_dir)?);
    }
    for e in &mut emitters {
        let ready = e.next_json(Duration::from_secs(60))?;
        let pid = num(&ready, "/ready")? as u32;
        // Attaching 50 processes on a loaded 2-core machine takes a while (that is B4's figure).
        agent.wait_armed(pid, &[BP_ID.to_owned()], Duration::from_secs(60))?;
    }
    let mut counter = HitCounter::new(&agent.events_file, BP_ID);
    let received = |counter: &mut HitCounter| -> Result<u64> {
        match &stub {
            Some(s) => Ok(s.hits()),
            None => counter.poll(),
        }
    };
    let before = received(&mut counter)?;
    // What tells arrivals apart cheaply while draining: the stand-in's count, or the events
    // file's length (counting its lines parses each one, in the xtask's debug build: for a
    // max-rate run that took longer than the drain itself and inflated the span).
    let events_file = agent.events_file.clone();
    let progress = || -> u64 {
        match &stub {
            Some(s) => s.hits(),
            None => std::fs::metadata(&events_file).map_or(0, |m| m.len()),
        }
    };
    let t0 = Instant::now();
    let go_wall = std::time::SystemTime::now();
    for e in &mut emitters {
        e.go()?;
    }
    let mut calls = 0;
    for e in &mut emitters {
        let v = e.next_json(Duration::from_secs_f64(duration + 60.0))?;
        calls += num(&v, "/calls")? as u64;
    }
    // Drain: until nothing new arrives for 2 s (at most 60 s).
    let mut seen = progress();
    let mut last_change = t0.elapsed();
    let drain_start = Instant::now();
    while drain_start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(250));
        let now = progress();
        if now != seen {
            seen = now;
            last_change = t0.elapsed();
        } else if t0.elapsed() - last_change > Duration::from_secs(2) {
            break;
        }
    }
    let last = received(&mut counter)?;
    // The events file: its last write is the last arrival (the poll above only bounds it).
    if stub.is_none()
        && let Some(at) = std::fs::metadata(&events_file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.duration_since(go_wall).ok())
    {
        last_change = at;
    }
    // Counters while the emitters still live (they linger until told to exit). The helpers
    // report them every 10 s: wait (≤ 25 s) until they account for every call.
    let hits_of = |st: &serde_json::Value| {
        st["breakpoints"]
            .as_array()
            .and_then(|l| l.iter().find(|b| b["id"] == BP_ID))
            .and_then(|b| b["counters"]["hits"].as_u64())
            .unwrap_or(0)
    };
    let mut status = agent.status().unwrap_or_default();
    let wait = Instant::now();
    while hits_of(&status) < calls && wait.elapsed() < Duration::from_secs(25) {
        std::thread::sleep(Duration::from_millis(250));
        status = agent.status().unwrap_or_default();
    }
    for e in &mut emitters {
        let _ = e.go();
    }
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

/// N/A with the reason, keeping what was observed in `raw`.
fn return_na(row: Row, why: String, raw: serde_json::Value) -> Row {
    row.not_available(why).raw(raw)
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
    // Once a run shows the helper's budgets, not the pipeline, set the rate, the other runs
    // would show the same: they are reported N/A without spending 30 s each. (A run whose
    // counters merely came late says nothing about the others: they still run.)
    let mut capped: Option<String> = None;
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
            if let Some(why) = &capped {
                rows.push(row.not_available(format!("not run: {why}")));
                continue;
            }
            let tag = format!("{}-max-{procs}", sink.tag());
            rows.push(
                match one_run(
                    ctx,
                    bin,
                    py,
                    &Spec {
                        sink,
                        procs,
                        rate: 0.0,
                        duration,
                        tag: &tag,
                    },
                ) {
                    Err(e) => row.not_available(format!("{e:#}")),
                    Ok(o) => {
                        if let Some(why) = capped_by_helper(&o) {
                            if o.rate_limited() > 0 {
                                capped = Some(why.clone());
                            }
                            return_na(row, why, o.raw())
                        } else {
                            let rate = o.received as f64 / o.span_s;
                            let mut row = row
                                .runs(1)
                                .verdict(Verdict::check(rate >= 20_000.0))
                                .note(format!(
                                    "{} over {:.1} s ({duration} s of emitting); loss {:.3} %",
                                    o.describe(),
                                    o.span_s,
                                    100.0 * o.lost() as f64 / o.captured().max(1) as f64
                                ))
                                .raw(o.raw());
                            row.value = Some(rate);
                            row.samples = Some(o.received as usize);
                            row
                        }
                    }
                },
            );
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
        if let Some(why) = &capped {
            rows.push(row.not_available(format!("not run: {why}")));
            continue;
        }
        let tag = format!("{}-5000", sink.tag());
        rows.push(
            match one_run(
                ctx,
                bin,
                py,
                &Spec {
                    sink,
                    procs: 1,
                    rate: 5000.0,
                    duration,
                    tag: &tag,
                },
            ) {
                Err(e) => row.not_available(format!("{e:#}")),
                Ok(o) => {
                    if let Some(why) = capped_by_helper(&o) {
                        if o.rate_limited() > 0 {
                            capped = Some(why.clone());
                        }
                        return_na(row, why, o.raw())
                    } else {
                        let mut row = row
                            .runs(1)
                            .verdict(Verdict::check(o.lost() == 0))
                            .note(format!("{} over {duration} s", o.describe()))
                            .raw(o.raw());
                        row.value = Some(o.lost() as f64);
                        row.samples = Some(o.captured() as usize);
                        row
                    }
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(counters: serde_json::Value, calls: u64, received: u64) -> Outcome {
        Outcome {
            calls,
            received,
            span_s: 30.0,
            status: json!({"breakpoints": [{"id": BP_ID, "counters": counters}]}),
        }
    }

    #[test]
    fn the_capture_config_shrinks_the_queue() {
        let c = capture_config();
        assert!(
            c.contains("queue_capacity = 256") && !c.contains("65536"),
            "{c}"
        );
    }

    #[test]
    fn pipeline_loss_is_snapshots_taken_minus_arrived() {
        let o = outcome(
            json!({"hits": 100, "captured": 100, "rate_limited": 0}),
            100,
            97,
        );
        assert_eq!(o.lost(), 3);
        assert!(capped_by_helper(&o).is_none());
        // Hits a full helper queue turned away (not captured) are lost in the pipeline too.
        let o = outcome(
            json!({"hits": 100, "captured": 60, "dropped": 40, "rate_limited": 0}),
            100,
            55,
        );
        assert_eq!(o.lost(), 45);
    }

    #[test]
    fn rate_limited_runs_do_not_measure_the_pipeline() {
        let o = outcome(
            json!({"hits": 100, "captured": 10, "rate_limited": 90}),
            100,
            10,
        );
        let why = capped_by_helper(&o).expect("capped");
        assert!(why.contains("90 rate-limited"), "{why}");
        let o = outcome(
            json!({"hits": 100, "captured": 50, "process_capped": 50}),
            100,
            50,
        );
        assert!(capped_by_helper(&o).is_some());
    }

    #[test]
    fn stale_or_missing_counters_are_not_taken_for_zero_loss() {
        // The helpers report every few seconds: counters behind the calls say nothing.
        let o = outcome(json!({"hits": 40, "captured": 40}), 100, 100);
        assert!(capped_by_helper(&o).is_some_and(|w| w.contains("do not account")));
        let o = outcome(json!({"hits": 100}), 100, 100);
        assert!(capped_by_helper(&o).is_some_and(|w| w.contains("no `captured`")));
    }
}
