//! B7: the frame-entry probe. Cost per entry: `b7_entries.py` times `list(map(f, range(10**6)))`
//! (every call of `f` enters `_PyEval_EvalFrameDefault` from C) without and with
//! `libdebugger-agent trace <pid>` attached, A/B in alternation; cost = t(with) − t(without) per
//! entry, per pair. Governor: whatever `trace --json` reports about detaching (its threshold and
//! whether it detached during the run) is reported as is.
use crate::bench::pyproc::{Proc, Python, args, num};
use crate::bench::report::Row;
use crate::bench::stats::{AbResult, Summary, alternate};
use crate::bench::{Ctx, per_python};
use anyhow::{Result, anyhow, bail};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Params {
    entries: u64,
    reps: u32,
}

/// One run of the workload; with `trace` attached if `bin` is given. Returns (ns per entry,
/// trace's JSON).
fn one_run(ctx: &Ctx, py: &Python, p: &Params, bin: Option<&Path>) -> Result<(f64, Value)> {
    let a = args([
        "--entries".to_owned(),
        p.entries.to_string(),
        "--reps".to_owned(),
        p.reps.to_string(),
        "--wait-go".to_owned(),
    ]);
    let mut w = Proc::script(py, "b7_entries.py", &a, &[], &ctx.log_dir)?;
    let ready = w.next_json(Duration::from_secs(30))?;
    let pid = num(&ready, "/ready")? as u32;
    let mut trace = None;
    if let Some(bin) = bin {
        // Long enough to cover the whole measured part; stopped when it is over.
        let mut cmd = Command::new(bin);
        cmd.args(["trace", &pid.to_string(), "--duration", "120", "--json"])
            .env("LIBDEBUGGER_LOG", "info");
        let mut t = Proc::spawn(cmd, &format!("trace-{}", py.version), &ctx.log_dir)?;
        wait_attached(
            &mut t,
            &ctx.log_dir.join(format!("trace-{}.stderr", py.version)),
        )?;
        trace = Some(t);
    }
    w.go()?;
    let v = w.next_json(Duration::from_secs(300))?;
    let mut trace_json = Value::Null;
    if let Some(mut t) = trace {
        // SIGINT/SIGTERM ends the count early; trace then prints its JSON.
        crate::bench::pyproc::signal(t.pid(), libc::SIGINT);
        trace_json = t.next_json(Duration::from_secs(30)).unwrap_or(Value::Null);
        let _ = t.terminate(Duration::from_secs(5));
    }
    Ok((num(&v, "/ns_per_entry/median")?, trace_json))
}

/// Waits (≤ 10 s) until `trace` says on stderr that it is attached, or fails with its error.
fn wait_attached(t: &mut Proc, stderr: &Path) -> Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if t.exited() {
            bail!("`trace` exited: {}", t.stderr_tail());
        }
        let text = std::fs::read_to_string(stderr)
            .unwrap_or_default()
            .to_lowercase();
        if text.contains("attached") || text.contains("tracing") || text.contains("counting") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "`trace` did not report being attached within 10 s (stderr: {})",
        t.stderr_tail()
    )
}

/// The first value under a key that mentions the governor or detaching, anywhere in `v`.
fn governor_fields(v: &Value, out: &mut serde_json::Map<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let kl = k.to_lowercase();
                if kl.contains("governor") || kl.contains("detach") {
                    out.insert(k.clone(), x.clone());
                } else {
                    governor_fields(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| governor_fields(x, out)),
        _ => {}
    }
}

pub fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    let p = Params {
        entries: 1_000_000,
        reps: ctx.pick(5, 2),
    };
    let pairs = ctx.pick(5, 1);
    let agent = ctx.agent();
    let mut governors: Vec<(String, serde_json::Map<String, Value>)> = Vec::new();
    let mut failures: Vec<(String, String)> = Vec::new();
    // Without the probe: what a frame entry from C costs anyway (always measurable).
    per_python(
        ctx,
        rows,
        || Row::new("B7", "C→Python call through map(), no probe", "ns/entry").target("reference"),
        |py, row| {
            let runs: Result<Vec<f64>> = (0..pairs)
                .map(|_| one_run(ctx, py, &p, None).map(|r| r.0))
                .collect();
            match runs.and_then(|r| Summary::of(&r).ok_or_else(|| anyhow!("no runs"))) {
                Ok(s) => {
                    let mut row = row.runs(pairs);
                    row.value = Some(s.median);
                    row.median = Some(s.median);
                    row.min = Some(s.min);
                    row.max = Some(s.max);
                    row.note(format!(
                        "median of {} × list(map(f, range({}))) per run",
                        p.reps, p.entries
                    ))
                }
                Err(e) => row.not_available(format!("{e:#}")),
            }
        },
    );
    per_python(
        ctx,
        rows,
        || {
            Row::new(
                "B7",
                "frame-entry probe cost per entry (trace attached)",
                "ns/entry",
            )
            .target("reported")
        },
        |py, row| {
            let bin = match &agent {
                Ok(b) => b,
                Err(why) => return row.not_available(why.clone()),
            };
            let mut traces = Vec::new();
            let r = alternate(
                pairs,
                |_| one_run(ctx, py, &p, None).map(|r| r.0),
                |_| {
                    one_run(ctx, py, &p, Some(bin)).map(|(ns, t)| {
                        traces.push(t);
                        ns
                    })
                },
            );
            match r {
                Err(e) => {
                    let why = format!("{e:#}");
                    failures.push((py.version.clone(), why.clone()));
                    row.not_available(why)
                }
                Ok((a, b)) => {
                    let diffs: Vec<f64> = a.iter().zip(&b).map(|(a, b)| b - a).collect();
                    let Some(s) = Summary::of(&diffs) else {
                        return row.not_available("no complete pair");
                    };
                    let ratio = AbResult::from_runs(a, b);
                    let mut gov = serde_json::Map::new();
                    traces.iter().for_each(|t| governor_fields(t, &mut gov));
                    let mut row = row.runs(pairs);
                    row.value = Some(s.median);
                    row.median = Some(s.median);
                    row.min = Some(s.min);
                    row.max = Some(s.max);
                    if let Some(r) = &ratio {
                        row = row.note(format!(
                            "slowdown of the map() loop: ×{:.2} (median of pairs)",
                            r.ratio.median
                        ));
                        row.pair_ratios = r.ratios.clone();
                    }
                    row = row.note(if gov.is_empty() {
                        "trace --json reports no governor/detach fields".to_owned()
                    } else {
                        format!(
                            "governor (from trace --json): {}",
                            Value::Object(gov.clone())
                        )
                    });
                    governors.push((py.version.clone(), gov));
                    row.raw(
                        serde_json::json!({"ab": ratio, "per_pair_ns": diffs, "traces": traces}),
                    )
                }
            }
        },
    );
    // The governor's detach rate, as trace reports it (one row per version it was seen on).
    per_python(
        ctx,
        rows,
        || {
            Row::new(
                "B7",
                "governor: entry rate at which the probe is detached",
                "entries/s",
            )
            .target("reported")
        },
        |py, row| {
            if let Err(why) = &agent {
                return row.not_available(why.clone());
            }
            let Some((_, gov)) = governors.iter().find(|(v, _)| *v == py.version) else {
                let why = failures
                    .iter()
                    .find(|(v, _)| *v == py.version)
                    .map_or("the probe-cost run above did not complete", |(_, w)| {
                        w.as_str()
                    });
                return row.not_available(why.to_owned());
            };
            let rate = gov.iter().find_map(|(k, v)| {
                let k = k.to_lowercase();
                (k.contains("per_s") || k.contains("rate") || k.contains("limit"))
                    .then(|| v.as_f64())
                    .flatten()
            });
            match rate {
                Some(r) => {
                    let mut row = row.runs(pairs).note(format!("from trace --json: {}", Value::Object(gov.clone())));
                    row.value = Some(r);
                    row
                }
                None => row.not_available("trace --json reports no governor rate (a field named *governor*/*detach* with a per-second limit)"),
            }
        },
    );
}
