//! B1: slowdown of a realistic workload (`xtask/bench/b1_handler.py`, sync and asyncio) with 5
//! breakpoints armed on lines it never reaches.
//!
//! Three comparisons per Python version and variant, each A/B in alternation, value = median of
//! the per-pair ratios of the process CPU time (user + system, all threads) for a fixed number of
//! requests. CPU time, not wall time: on this shared 2-core machine identical runs differ by
//! ±30 % in wall time and ±2 % in CPU time (measured; see the A/A rows):
//! * A/A noise floor: both sides without any debugger: how far apart two identical runs are on
//!   this machine right now (a ratio outside it says nothing about libdebugger);
//! * helper in-process: the helper imported and the breakpoints set directly (what the agent
//!   does after injection, without the agent and eBPF);
//! * agent attached: the agent in local mode injects the helper and arms the breakpoints; the
//!   A runs start with `LIBDEBUGGER_DISABLE=1` so the same agent leaves them alone.
use crate::bench::agent::{Agent, Breakpoint};
use crate::bench::pieces::helper_env;
use crate::bench::pyproc::{Proc, Python, args, num, run_script, scripts_dir};
use crate::bench::report::{Row, Verdict};
use crate::bench::stats::{AbResult, alternate, percentile};
use crate::bench::{Ctx, per_python};
use anyhow::{Context, Result, anyhow};
use std::time::Duration;

const SCRIPT: &str = "b1_handler.py";
const TARGET: &str = "≤ 1.02 (3.11: ≤ 1.03)";

/// The target for `version`.
fn limit(version: &str) -> f64 {
    if version.starts_with("3.11") {
        1.03
    } else {
        1.02
    }
}

/// Lines of the workload marked `# bench: unreached` (where the 5 breakpoints go).
pub fn unreached_lines() -> Result<Vec<u32>> {
    let path = scripts_dir().join(SCRIPT);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<u32> = text
        .lines()
        .zip(1..)
        .filter(|(l, _)| l.contains("# bench: unreached"))
        .map(|(_, n)| n)
        .collect();
    if lines.len() != 5 {
        return Err(anyhow!(
            "{SCRIPT} should mark exactly 5 unreached lines, found {}",
            lines.len()
        ));
    }
    Ok(lines)
}

/// How one run is set up.
enum Side<'a> {
    /// No debugger at all.
    Plain,
    /// Helper imported, 5 breakpoints set in-process.
    Helper(&'a std::path::Path),
    /// Under the agent: `attached` false = opted out with LIBDEBUGGER_DISABLE=1.
    Agent { agent: &'a Agent, attached: bool },
}

struct Params {
    requests: usize,
    pairs: usize,
    aa_pairs: usize,
}

/// One run's process CPU time, and the part of it spent in the kernel (`None` if the script
/// did not report it). System time is where a uprobe's traps show up: the frame-entry probe's
/// cost under the agent was found there (see `xtask/bench/README.md`).
struct RunCpu {
    cpu_s: f64,
    system_s: Option<f64>,
}

fn one_run(ctx: &Ctx, py: &Python, variant: &str, p: &Params, side: &Side<'_>) -> Result<RunCpu> {
    let mut a = args(["--variant", variant, "--requests", &p.requests.to_string()]);
    let timeout = Duration::from_secs(120);
    let v = match side {
        Side::Plain => {
            let env = [("LIBDEBUGGER_DISABLE", "1".to_owned())];
            run_script(py, SCRIPT, &a, &env, &ctx.log_dir, timeout)?
        }
        Side::Helper(dir) => {
            a.push("--helper-breakpoints".into());
            run_script(
                py,
                SCRIPT,
                &a,
                &helper_env(dir, false),
                &ctx.log_dir,
                timeout,
            )?
        }
        Side::Agent { agent, attached } => {
            a.push("--wait-go".into());
            let mut env = Vec::new();
            if !attached {
                env.push(("LIBDEBUGGER_DISABLE", "1".to_owned()));
            }
            let mut proc = Proc::script(py, SCRIPT, &a, &env, &ctx.log_dir)?;
            let ready = proc.next_json(Duration::from_secs(30))?;
            if *attached {
                let pid = num(&ready, "/ready")? as u32;
                agent.wait_armed(pid, &bp_ids(), Duration::from_secs(10))?;
            }
            proc.go()?;
            let v = proc.next_json(timeout)?;
            proc.wait(Duration::from_secs(10))?;
            v
        }
    };
    Ok(RunCpu {
        cpu_s: num(&v, "/cpu_s")?,
        system_s: num(&v, "/system_s").ok(),
    })
}

fn bp_ids() -> Vec<String> {
    (1..=5).map(|n| format!("b1-unreached-{n}")).collect()
}

/// An A/B comparison and the pairs it had to leave out.
struct Compared {
    result: AbResult,
    /// System time of each run of the complete pairs, without / with.
    system_s: (Vec<f64>, Vec<f64>),
    /// Pairs whose A or B run failed (e.g. the agent did not arm in time), with the first error.
    failed: usize,
    first_error: Option<String>,
}

/// `pairs` A/B pairs in alternation. A pair whose run fails is left out and counted; with fewer
/// than half the pairs complete, the comparison fails with the first error.
fn ab(
    ctx: &Ctx,
    py: &Python,
    variant: &str,
    p: &Params,
    a: Side<'_>,
    b: Side<'_>,
    pairs: usize,
) -> Result<Compared> {
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    let mut first_error = None;
    let mut failed = 0;
    for _ in 0..pairs {
        let (mut pair_sa, mut pair_sb) = (None, None);
        let pair = alternate(
            1,
            |_| {
                let r = one_run(ctx, py, variant, p, &a)?;
                pair_sa = r.system_s;
                Ok::<_, anyhow::Error>(r.cpu_s)
            },
            |_| {
                let r = one_run(ctx, py, variant, p, &b)?;
                pair_sb = r.system_s;
                Ok(r.cpu_s)
            },
        );
        match pair {
            Ok((x, y)) => {
                ra.extend(x);
                rb.extend(y);
                sa.extend(pair_sa);
                sb.extend(pair_sb);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    if ra.len() * 2 < pairs {
        return Err(anyhow!(
            "{failed} of {pairs} pairs failed: {}",
            first_error.unwrap_or_default()
        ));
    }
    let result = AbResult::from_runs(ra, rb).ok_or_else(|| anyhow!("no complete pair"))?;
    Ok(Compared {
        result,
        system_s: (sa, sb),
        failed,
        first_error,
    })
}

/// "system time per run, median: without X ms, with Y ms", when both sides reported it.
fn system_note((a, b): &(Vec<f64>, Vec<f64>)) -> Option<String> {
    Some(format!(
        "kernel (system) time per run, median: without {:.1} ms, with {:.1} ms",
        percentile(a, 50.0)? * 1e3,
        percentile(b, 50.0)? * 1e3
    ))
}

fn row_from(row: Row, r: Result<Compared>, verdict: impl Fn(f64) -> Verdict) -> Row {
    match r {
        Ok(c) => {
            let v = verdict(c.result.ratio.median);
            let system = system_note(&c.system_s);
            let mut row = row.ab(c.result).verdict(v);
            if let Some(n) = system {
                row = row.note(n);
            }
            if let Some(e) = c.first_error {
                row = row.note(format!("{} pair(s) left out: {e}", c.failed));
            }
            row
        }
        Err(e) => row.not_available(format!("{e:#}")),
    }
}

pub fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    let p = Params {
        requests: ctx.pick(12_000, 3_000),
        pairs: ctx.pick(5, 2),
        aa_pairs: ctx.pick(2, 1),
    };
    let note = format!(
        "{} requests per run; value = median of per-pair ratios of process CPU time, with/without",
        p.requests
    );
    for variant in ["sync", "async"] {
        per_python(
            ctx,
            rows,
            || {
                Row::new("B1", format!("A/A noise floor, {variant} handler"), "ratio")
                    .target("reported")
                    .note(note.clone())
            },
            |py, row| {
                let r = ab(ctx, py, variant, &p, Side::Plain, Side::Plain, p.aa_pairs);
                row_from(row, r, |_| Verdict::Info)
            },
        );
        let helper = ctx.helper();
        per_python(
            ctx,
            rows,
            || {
                Row::new(
                    "B1",
                    format!("slowdown, {variant} handler, helper in-process + 5 unreached bps"),
                    "ratio",
                )
                .target(TARGET)
                .note(note.clone())
            },
            |py, row| match &helper {
                Err(why) => row.not_available(why.clone()),
                Ok(dir) => {
                    let r = ab(
                        ctx,
                        py,
                        variant,
                        &p,
                        Side::Plain,
                        Side::Helper(dir),
                        p.pairs,
                    );
                    row_from(row, r, |m| Verdict::check(m <= limit(&py.version)))
                }
            },
        );
    }
    agent_rows(ctx, rows, &p, &note);
}

fn agent_rows(ctx: &Ctx, rows: &mut Vec<Row>, p: &Params, note: &str) {
    let template = |variant: &str| {
        Row::new(
            "B1",
            format!("slowdown, {variant} handler, agent attached + 5 unreached bps"),
            "ratio",
        )
        .target(TARGET)
        .note(note.to_owned())
    };
    let started = ctx.agent().and_then(|pieces| {
        let lines = unreached_lines().map_err(|e| format!("{e:#}"))?;
        let file = scripts_dir().join(SCRIPT).display().to_string();
        let bps: Vec<Breakpoint> = lines
            .iter()
            .zip(bp_ids())
            .map(|(&line, id)| Breakpoint {
                id,
                file: file.clone(),
                line,
                condition: None,
            })
            .collect();
        Agent::start(
            &pieces.bin,
            &pieces.helper,
            &ctx.work_dir.join("b1-agent"),
            &bps,
            "",
            &ctx.log_dir,
        )
        .map_err(|e| format!("{e:#}"))
    });
    for variant in ["sync", "async"] {
        per_python(
            ctx,
            rows,
            || template(variant),
            |py, row| match &started {
                Err(why) => row.not_available(why.clone()),
                Ok(agent) => {
                    let r = ab(
                        ctx,
                        py,
                        variant,
                        p,
                        Side::Agent {
                            agent,
                            attached: false,
                        },
                        Side::Agent {
                            agent,
                            attached: true,
                        },
                        p.pairs,
                    );
                    row_from(row, r, |m| Verdict::check(m <= limit(&py.version)))
                }
            },
        );
    }
    if let Ok(agent) = started
        && let Err(e) = agent.stop()
    {
        eprintln!("xtask bench: B1: stopping the agent: {e:#}");
    }
}
