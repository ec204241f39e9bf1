//! B7: the frame-entry probe (`libdebugger-agent trace <pid>`).
//!
//! * Cost per entry: `b7_entries.py` times `list(map(f, range(10**6)))` (every call of `f`
//!   enters `_PyEval_EvalFrameDefault` from C) in process CPU time, without and with `trace
//!   --budget 0` attached (no governor, so the probe stays attached for the whole run), A/B in
//!   alternation; cost = t(with) − t(without) per entry, per pair. Each B run is checked against
//!   trace's own count: the probe must have seen every entry of `f`, or the pair is discarded.
//! * Governor: `trace` with its default budget on the same loop (millions of entries/s) must
//!   detach the probe, and on a paced loop below the budget must not. Its stderr says the budget
//!   and how long it stayed attached.
use crate::bench::pyproc::{Proc, Python, args, num};
use crate::bench::report::{Row, Verdict};
use crate::bench::stats::{AbResult, Summary};
use crate::bench::{Ctx, per_python};
use anyhow::{Result, bail};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Params {
    entries: u64,
    reps: u32,
}

/// What one run of the workload measured.
struct Run {
    ns_per_entry: f64,
    wall_s: f64,
    /// Entries of `f` that trace counted (with trace only).
    traced_f: Option<u64>,
}

/// Starts `trace` on `pid` and waits for its readiness line ("tracing pid ...", stderr).
fn start_trace(
    ctx: &Ctx,
    bin: &Path,
    py: &Python,
    pid: u32,
    extra: &[&str],
) -> Result<(Proc, std::path::PathBuf)> {
    let mut cmd = Command::new(bin);
    cmd.args(["trace", &pid.to_string(), "--json"]).args(extra);
    let name = format!("trace-{}", py.version);
    let t = Proc::spawn(cmd, &name, &ctx.log_dir)?;
    let stderr = ctx.log_dir.join(format!("{name}.stderr"));
    let t0 = Instant::now();
    let mut t = t;
    while t0.elapsed() < Duration::from_secs(20) {
        let text = std::fs::read_to_string(&stderr).unwrap_or_default();
        if text.contains("tracing pid") {
            return Ok((t, stderr));
        }
        if t.exited() {
            bail!("`trace` exited: {}", t.stderr_tail());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!(
        "`trace` did not print its readiness line within 20 s: {}",
        t.stderr_tail()
    )
}

/// The entries of `f` in b7_entries.py that trace's JSON lists.
fn f_entries(trace_json: &Value) -> u64 {
    trace_json
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["qualname"] == "f"
                && e["filename"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("b7_entries.py"))
        })
        .filter_map(|e| e["entries"].as_u64())
        .sum()
}

/// One run of the workload; with `trace --budget 0` attached if `bin` is given. `trace_for`:
/// how long trace stays attached (longer than the workload).
fn one_run(ctx: &Ctx, py: &Python, p: &Params, bin: Option<&Path>, trace_for: f64) -> Result<Run> {
    let a = args([
        "--entries".to_owned(),
        p.entries.to_string(),
        "--reps".to_owned(),
        p.reps.to_string(),
        "--wait-go".to_owned(),
        "--linger".to_owned(),
    ]);
    let mut w = Proc::script(py, "b7_entries.py", &a, &[], &ctx.log_dir)?;
    let ready = w.next_json(Duration::from_secs(30))?;
    let pid = num(&ready, "/ready")? as u32;
    let mut trace = None;
    if let Some(bin) = bin {
        let duration = format!("{trace_for:.1}");
        trace = Some(
            start_trace(
                ctx,
                bin,
                py,
                pid,
                &["--budget", "0", "--duration", &duration],
            )?
            .0,
        );
    }
    w.go()?;
    let v = w.next_json(Duration::from_secs(300))?;
    let mut traced_f = None;
    if let Some(mut t) = trace {
        // The workload lingers until trace has read the code objects' names out of it.
        let json = t.next_json_value(Duration::from_secs_f64(trace_for + 30.0))?;
        traced_f = Some(f_entries(&json));
    }
    w.go()?;
    w.wait(Duration::from_secs(10))?;
    Ok(Run {
        ns_per_entry: num(&v, "/ns_per_entry/median")?,
        wall_s: num(&v, "/wall_s")?,
        traced_f,
    })
}

/// Governor check on `py`: (tripped at full speed, seconds attached, budget text; tripped
/// below the budget).
fn governor(ctx: &Ctx, py: &Python, bin: &Path) -> Result<(bool, String, bool, f64)> {
    // Full speed: millions of entries per second.
    let a = args(["--entries", "1000000", "--reps", "3", "--wait-go"]);
    let mut w = Proc::script(py, "b7_entries.py", &a, &[], &ctx.log_dir)?;
    let pid = num(&w.next_json(Duration::from_secs(30))?, "/ready")? as u32;
    let (mut t, stderr) = start_trace(ctx, bin, py, pid, &["--duration", "20"])?;
    w.go()?;
    w.next_json(Duration::from_secs(300))?;
    t.wait(Duration::from_secs(30))?;
    let text = std::fs::read_to_string(&stderr).unwrap_or_default();
    let trip_line = text
        .lines()
        .find(|l| l.contains("GOVERNOR TRIPPED"))
        .map(|l| l.trim_start_matches("libdebugger-agent: ").to_owned());
    // Below the budget (default 20,000/s): 10,000 entries/s for 3 s.
    let a = args(["--rate", "10000", "--seconds", "3", "--wait-go"]);
    let mut w = Proc::script(py, "b7_entries.py", &a, &[], &ctx.log_dir)?;
    let pid = num(&w.next_json(Duration::from_secs(30))?, "/ready")? as u32;
    let (mut t, stderr) = start_trace(ctx, bin, py, pid, &["--duration", "3.5"])?;
    w.go()?;
    let paced = w.next_json(Duration::from_secs(60))?;
    t.wait(Duration::from_secs(30))?;
    let slow_tripped = std::fs::read_to_string(&stderr)
        .unwrap_or_default()
        .contains("GOVERNOR TRIPPED");
    Ok((
        trip_line.is_some(),
        trip_line.unwrap_or_default(),
        slow_tripped,
        num(&paced, "/rate")?,
    ))
}

pub fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    let p = Params {
        entries: 1_000_000,
        reps: ctx.pick(3, 2),
    };
    let pairs = ctx.pick(4, 1);
    let agent = ctx.agent_bin();
    per_python(
        ctx,
        rows,
        || {
            Row::new(
                "B7",
                "frame-entry probe: cost per entry (trace --budget 0)",
                "ns/entry",
            )
            .target("reported")
        },
        |py, row| {
            let bin = match &agent {
                Ok(b) => b,
                Err(why) => return row.not_available(why.clone()),
            };
            let mut a_ns = Vec::new();
            let mut b_ns = Vec::new();
            let mut discarded = 0;
            let mut last_err = None;
            // trace counts for a fixed time: long enough to cover the traced run, which is
            // many times slower than the untraced one. The first estimate is generous, later
            // ones follow the traced runs measured so far.
            let mut last_traced_wall: Option<f64> = None;
            for _ in 0..pairs {
                let pair = one_run(ctx, py, &p, None, 0.0).and_then(|a| {
                    let trace_for = match last_traced_wall {
                        None => a.wall_s * 25.0 + 3.0,
                        Some(w) => w * 2.0 + 2.0,
                    }
                    .min(120.0);
                    let b = one_run(ctx, py, &p, Some(bin), trace_for)?;
                    last_traced_wall = Some(b.wall_s);
                    Ok((a, b))
                });
                match pair {
                    Ok((a, b)) => {
                        let expected = p.entries * u64::from(p.reps);
                        if b.traced_f.unwrap_or(0) < expected {
                            discarded += 1;
                            last_err = Some(format!(
                                "trace counted {} of {expected} entries of f",
                                b.traced_f.unwrap_or(0)
                            ));
                            continue;
                        }
                        a_ns.push(a.ns_per_entry);
                        b_ns.push(b.ns_per_entry);
                    }
                    Err(e) => {
                        discarded += 1;
                        last_err = Some(format!("{e:#}"));
                    }
                }
            }
            let diffs: Vec<f64> = a_ns.iter().zip(&b_ns).map(|(a, b)| b - a).collect();
            let Some(s) = Summary::of(&diffs) else {
                return row.not_available(last_err.unwrap_or_else(|| "no complete pair".into()));
            };
            let mut row = row.runs(diffs.len());
            row.value = Some(s.median);
            row.median = Some(s.median);
            row.min = Some(s.min);
            row.max = Some(s.max);
            let base = Summary::of(&a_ns).map_or(0.0, |s| s.median);
            row = row.note(format!(
                "A/B pairs: map() loop of {} entries × {} in process CPU time; without the probe {base:.1} ns/entry",
                p.entries, p.reps
            ));
            if let Some(r) = AbResult::from_runs(a_ns, b_ns) {
                row = row.note(format!(
                    "loop slowdown ×{:.1} (median of pairs)",
                    r.ratio.median
                ));
                row.pair_ratios = r.ratios.clone();
                row.ab = Some(r);
            }
            if discarded > 0 {
                row = row.note(format!(
                    "{discarded} pair(s) discarded: {}",
                    last_err.unwrap_or_default()
                ));
            }
            row
        },
    );
    per_python(
        ctx,
        rows,
        || {
            Row::new(
                "B7",
                "governor: detaches above its budget, not below",
                "entries/s",
            )
            .target("reported")
        },
        |py, row| {
            let bin = match &agent {
                Ok(b) => b,
                Err(why) => return row.not_available(why.clone()),
            };
            match governor(ctx, py, bin) {
                Err(e) => row.not_available(format!("{e:#}")),
                Ok((tripped, line, slow_tripped, slow_rate)) => {
                    // The budget, from "entered more than N frames in one second".
                    let budget = line
                        .split("more than ")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|n| n.parse::<f64>().ok());
                    let ok = tripped && !slow_tripped;
                    let mut row =
                        row.runs(2)
                            .verdict(if ok { Verdict::Info } else { Verdict::Miss });
                    row.value = budget;
                    row = row.note(if tripped {
                        format!("map() loop at full speed: {line}")
                    } else {
                        "map() loop at full speed: the governor did NOT trip".to_owned()
                    });
                    row.note(format!(
                        "paced loop at {slow_rate:.0} entries/s for 3 s: {}",
                        if slow_tripped {
                            "governor TRIPPED (it should not)"
                        } else {
                            "not tripped"
                        }
                    ))
                }
            }
        },
    );
}
