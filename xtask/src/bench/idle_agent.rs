//! B6: the agent's footprint with idle attached processes (`b6_idle.py`) and 10 breakpoints
//! armed in each, at 1, 10 and 50 processes: VmRSS from /proc/<agent>/status (the largest seen
//! during the window) and CPU from /proc/<agent>/stat utime+stime over the window.
use crate::bench::agent::{Agent, Breakpoint, clock_ticks_per_s};
use crate::bench::pyproc::{Proc, Python, num};
use crate::bench::report::{Row, Verdict};
use crate::bench::{AgentPieces, Ctx};
use anyhow::{Result, anyhow};
use std::time::{Duration, Instant};

struct Footprint {
    rss_kib: u64,
    cpu_percent: f64,
    window_s: f64,
    /// How stopping the agent went (it removes the breakpoints from every process first).
    stop_note: Option<String>,
}

fn measure(
    ctx: &Ctx,
    bin: &AgentPieces,
    py: &Python,
    procs: usize,
    window: Duration,
) -> Result<Footprint> {
    let mut targets = Vec::with_capacity(procs);
    for _ in 0..procs {
        targets.push(Proc::script(py, "b6_idle.py", &[], &[], &ctx.log_dir)?);
    }
    let mut pids = Vec::with_capacity(procs);
    let mut bps = Vec::new();
    for t in &mut targets {
        let ready = t.next_json(Duration::from_secs(60))?;
        pids.push(num(&ready, "/ready")? as u32);
        if bps.is_empty() {
            let file = ready["file"]
                .as_str()
                .ok_or_else(|| anyhow!("no file in {ready}"))?;
            let lines = ready["lines"]
                .as_array()
                .ok_or_else(|| anyhow!("no lines in {ready}"))?;
            bps = lines
                .iter()
                .zip(0..)
                .map(|(l, i)| Breakpoint {
                    id: format!("b6-idle-{i}"),
                    file: file.to_owned(),
                    line: l.as_u64().unwrap_or(0) as u32,
                    condition: None,
                })
                .collect();
        }
    }
    if bps.len() != 10 {
        return Err(anyhow!(
            "b6_idle.py should mark 10 lines, found {}",
            bps.len()
        ));
    }
    let ids: Vec<String> = bps.iter().map(|b| b.id.clone()).collect();
    let agent = Agent::start(
        &bin.bin,
        &bin.helper,
        &ctx.work_dir.join(format!("b6-{procs}")),
        &bps,
        "",
        &ctx.log_dir,
    )?;
    for &pid in &pids {
        agent.wait_armed(pid, &ids, Duration::from_secs(60))?;
    }
    // Let the attach work settle, then measure an idle window (no `status` calls inside it:
    // they would be the agent's work).
    std::thread::sleep(Duration::from_secs(2));
    let ticks0 = agent.cpu_ticks()?;
    let t0 = Instant::now();
    let mut rss = agent.rss_kib()?;
    while t0.elapsed() < window {
        std::thread::sleep(Duration::from_millis(500));
        rss = rss.max(agent.rss_kib()?);
    }
    let window_s = t0.elapsed().as_secs_f64();
    let ticks = agent.cpu_ticks()? - ticks0;
    // Stop the agent while the targets live: it removes its breakpoints from each on the way
    // out. The measurement is done; a slow stop is worth a note, not the figure.
    let t_stop = Instant::now();
    let stop_note = match agent.stop() {
        Ok(()) => None,
        Err(e) => Some(format!(
            "stopping the agent (SIGTERM) took longer than allowed: {e:#}"
        )),
    }
    .or_else(|| {
        let s = t_stop.elapsed().as_secs_f64();
        (s > 2.0).then(|| format!("the agent took {s:.1} s to stop (SIGTERM)"))
    });
    drop(targets);
    Ok(Footprint {
        rss_kib: rss,
        cpu_percent: 100.0 * ticks as f64 / clock_ticks_per_s() / window_s,
        window_s,
        stop_note,
    })
}

pub fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    let window = Duration::from_secs(ctx.pick(15, 3));
    let counts: &[usize] = if ctx.quick { &[1] } else { &[1, 10, 50] };
    let ready: Result<(AgentPieces, Python), String> = match (ctx.agent(), ctx.main_python()) {
        (Err(why), _) => Err(why),
        (_, None) => Err("no supported Python interpreter installed".into()),
        (Ok(pieces), Some(py)) => Ok((pieces, py.clone())),
    };
    for &procs in counts {
        let what = format!(
            "{procs} idle attached process{}, 10 bps",
            if procs == 1 { "" } else { "es" }
        );
        let rss_row = Row::new("B6", format!("agent RSS, {what}"), "MB").target("≤ 30 MB");
        let cpu_row = Row::new("B6", format!("agent CPU, {what}"), "% of a core").target("≤ 1 %");
        let (bin, py) = match &ready {
            Err(why) => {
                rows.push(rss_row.not_available(why.clone()));
                rows.push(cpu_row.not_available(why.clone()));
                continue;
            }
            Ok(x) => x,
        };
        let (rss_row, cpu_row) = (rss_row.python(&py.version), cpu_row.python(&py.version));
        match measure(ctx, bin, py, procs, window) {
            Err(e) => {
                let why = format!("{e:#}");
                rows.push(rss_row.not_available(why.clone()));
                rows.push(cpu_row.not_available(why));
            }
            Ok(f) => {
                let mb = f.rss_kib as f64 / 1024.0;
                let mut r = rss_row
                    .runs(1)
                    .verdict(Verdict::check(mb <= 30.0))
                    .note(format!(
                        "largest VmRSS seen over a {:.0} s window",
                        f.window_s
                    ));
                r.value = Some(mb);
                if let Some(n) = &f.stop_note {
                    r = r.note(n.clone());
                }
                rows.push(r);
                let mut c = cpu_row
                    .runs(1)
                    .verdict(Verdict::check(f.cpu_percent <= 1.0))
                    .note(format!(
                        "utime+stime over a {:.0} s idle window",
                        f.window_s
                    ));
                c.value = Some(f.cpu_percent);
                rows.push(c);
            }
        }
    }
}
