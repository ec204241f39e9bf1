//! B4: attach latency, breakpoint known → armed, for a busy process (8 threads churning the
//! allocator in C), one whose main thread is blocked forever, and an idle one
//! (`b4_target.py --case busy|blocked|idle`). Each trial starts a fresh target, waits until the
//! agent lists it, then writes the breakpoint into the agent's breakpoints file and polls
//! `status --json` until it is armed in that process: the latency includes the agent noticing
//! the file, injecting the helper and the helper arming the line.
use crate::bench::agent::{Agent, Breakpoint};
use crate::bench::pyproc::{Proc, args, num};
use crate::bench::report::{Row, Verdict};
use crate::bench::stats::Summary;
use crate::bench::{Ctx, per_python};
use anyhow::{Result, anyhow};
use std::time::{Duration, Instant};

/// A trial that does not arm within this long counts as this long (and is noted).
const GIVE_UP: Duration = Duration::from_secs(5);

fn trial(
    ctx: &Ctx,
    agent: &Agent,
    py: &crate::bench::pyproc::Python,
    case: &str,
    n: usize,
) -> Result<Times> {
    let mut target = Proc::script(
        py,
        "b4_target.py",
        &args(["--case", case]),
        &[],
        &ctx.log_dir,
    )?;
    let ready = target.next_json(Duration::from_secs(30))?;
    let pid = num(&ready, "/ready")? as u32;
    let file = ready["file"]
        .as_str()
        .ok_or_else(|| anyhow!("no file in {ready}"))?
        .to_owned();
    let line = num(&ready, "/line")? as u32;
    agent.wait_known(pid, Duration::from_secs(10))?;
    let id = format!("b4-{case}-{}-{n}", py.version);
    let t0 = Instant::now();
    agent.set_breakpoints(&[Breakpoint {
        id: id.clone(),
        file,
        line,
        condition: None,
    }])?;
    let armed = wait_known_then_armed(agent, pid, &id, t0);
    agent.set_breakpoints(&[])?;
    drop(target);
    armed
}

/// One trial's times from writing the breakpoints file.
struct Times {
    /// The agent lists the breakpoint (it read the file: it knows of it).
    known: Duration,
    /// The breakpoint is armed in the target.
    armed: Duration,
}

/// Polls `status` (as fast as it answers) until breakpoint `id` is listed, then until it is
/// armed in `pid`.
fn wait_known_then_armed(agent: &Agent, pid: u32, id: &str, t0: Instant) -> Result<Times> {
    let mut known = None;
    loop {
        if let Ok(st) = agent.status() {
            let listed = || {
                st["breakpoints"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|b| b["id"] == id))
            };
            if known.is_none() && listed() {
                known = Some(t0.elapsed());
            }
            if crate::bench::agent::armed_in(&st, pid, id) {
                let armed = t0.elapsed();
                return Ok(Times {
                    known: known.unwrap_or(armed),
                    armed,
                });
            }
        }
        if t0.elapsed() >= GIVE_UP {
            let st = agent.status().map(|s| s.to_string()).unwrap_or_default();
            return Err(anyhow!(
                "breakpoint {id} not armed in pid {pid} within {GIVE_UP:?} (known to the agent after {known:?}); status: {}",
                &st[..st.len().min(400)]
            ));
        }
    }
}

pub fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    let trials = ctx.pick(10, 2);
    let started = ctx.agent().and_then(|pieces| {
        Agent::start(
            &pieces.bin,
            &pieces.helper,
            &ctx.work_dir.join("b4-agent"),
            &[],
            "",
            &ctx.log_dir,
        )
        .map_err(|e| format!("{e:#}"))
    });
    for case in ["busy", "blocked", "idle"] {
        let what = match case {
            "busy" => "busy process (8 threads churning in C)",
            "blocked" => "main thread blocked forever",
            _ => "idle process",
        };
        per_python(
            ctx,
            rows,
            || {
                Row::new("B4", format!("attach latency, {what}"), "ms")
                    .target("p50 ≤ 100 ms, p99 ≤ 1 s")
            },
            |py, row| {
                let agent = match &started {
                    Ok(a) => a,
                    Err(why) => return row.not_available(why.clone()),
                };
                // Known → armed (the figure), and file written → armed / → known (notes).
                let mut ms = Vec::new();
                let mut from_file = Vec::new();
                let mut noticed = Vec::new();
                let mut errors = Vec::new();
                let give_up = GIVE_UP.as_secs_f64() * 1e3;
                for n in 0..trials {
                    match trial(ctx, agent, py, case, n) {
                        Ok(t) => {
                            ms.push((t.armed - t.known).as_secs_f64() * 1e3);
                            from_file.push(t.armed.as_secs_f64() * 1e3);
                            noticed.push(t.known.as_secs_f64() * 1e3);
                        }
                        Err(e) => {
                            ms.push(give_up);
                            from_file.push(give_up);
                            errors.push(format!("{e:#}"));
                        }
                    }
                }
                if errors.len() == trials {
                    return row.not_available(errors.swap_remove(0));
                }
                let Some(s) = Summary::of(&ms) else {
                    return row.not_available("no trials");
                };
                let ok = s.median <= 100.0 && s.p99 <= 1000.0;
                let mut row = row
                    .summary(&s, 1.0)
                    .runs(trials)
                    .verdict(Verdict::check(ok));
                row.samples = None;
                row = row.note(
                    "one fresh process per trial; from the agent listing the breakpoint (it read the file) to armed in the process, both seen on its control socket",
                );
                if let (Some(f), Some(k)) = (Summary::of(&from_file), Summary::of(&noticed)) {
                    row = row.note(format!(
                        "from writing the breakpoints file: p50 {:.0} ms, p99 {:.0} ms (the agent listed the breakpoint after p50 {:.0} ms: its file watch debounces 50 ms)",
                        f.median, f.p99, k.median
                    ));
                }
                if !errors.is_empty() {
                    row = row.note(format!(
                        "{} of {trials} trials failed and count as {} s: {}",
                        errors.len(),
                        GIVE_UP.as_secs(),
                        errors[0]
                    ));
                }
                row
            },
        );
    }
    if let Ok(agent) = started
        && let Err(e) = agent.stop()
    {
        eprintln!("xtask bench: B4: stopping the agent: {e:#}");
    }
}
