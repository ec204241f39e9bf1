//! B2: the cost of one snapshot of the reference frame (10 locals, stack depth 20), and how it
//! grows with 100 and 1,000 locals; beside it, a plain-Python capture of the same frame
//! (`json` + `repr`, `traceback.extract_stack`) for reference. Script: `b2_capture.py`.
use crate::bench::pieces::helper_env;
use crate::bench::pyproc::{args, num, run_script};
use crate::bench::report::{Row, Verdict};
use crate::bench::stats::Summary;
use crate::bench::{Ctx, per_python};
use anyhow::{Result, anyhow};
use serde_json::Value;
use std::time::Duration;

const SCRIPT: &str = "b2_capture.py";
const DEPTH: u32 = 20;

fn summary(v: &Value, key: &str) -> Result<Summary> {
    let s = &v[key];
    Ok(Summary {
        n: num(s, "/n")? as usize,
        median: num(s, "/median")?,
        p99: num(s, "/p99")?,
        min: num(s, "/min")?,
        max: num(s, "/max")?,
    })
}

pub fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    let helper = ctx.helper();
    for locals in [10u32, 100, 1000] {
        let frame = if locals == 10 {
            "reference frame (10 locals)".to_owned()
        } else {
            format!("{locals} locals")
        };
        let iterations: u32 = match (ctx.quick, locals) {
            (true, _) => 200,
            (false, 10) => 5000,
            (false, 100) => 3000,
            (false, _) => 1000,
        };
        let a = args([
            "--locals".to_owned(),
            locals.to_string(),
            "--depth".to_owned(),
            DEPTH.to_string(),
            "--iterations".to_owned(),
            iterations.to_string(),
        ]);
        // The libdebugger snapshot.
        per_python(
            ctx,
            rows,
            || {
                Row::new("B2", format!("snapshot, {frame}, depth {DEPTH}"), "µs").target(
                    if locals == 10 {
                        "median ≤ 5 µs, p99 ≤ 50 µs"
                    } else {
                        "reported (growth)"
                    },
                )
            },
            |py, row| {
                let dir = match &helper {
                    Ok(d) => d,
                    Err(why) => return row.not_available(why.clone()),
                };
                let mut a = a.clone();
                a.extend(args(["--mode", "helper", "--rounds", "10"]));
                let workdir = ctx.work_dir.join(format!("b2-{}-{locals}", py.version));
                a.extend(["--workdir".to_owned(), workdir.display().to_string()]);
                let _ = std::fs::create_dir_all(&workdir);
                let r = run_script(
                    py,
                    SCRIPT,
                    &a,
                    &helper_env(dir, true),
                    &ctx.log_dir,
                    Duration::from_secs(300),
                )
                .and_then(|v| {
                    // Every armed call must have taken a snapshot, or the figure would mix in
                    // rate-limited calls.
                    let calls = num(&v, "/armed_calls")?;
                    let captured = num(&v, "/captured")?;
                    if captured < calls {
                        return Err(anyhow!(
                            "only {captured} of {calls} armed calls took a snapshot: the rate limits were not lifted (HELPER_BP_EXTRA / HELPER_SETTINGS in xtask/src/bench/pieces.rs)"
                        ));
                    }
                    Ok((summary(&v, "capture_ns")?, v))
                });
                match r {
                    Ok((s, v)) => {
                        let verdict = if locals == 10 {
                            Verdict::check(s.median <= 5_000.0 && s.p99 <= 50_000.0)
                        } else {
                            Verdict::Info
                        };
                        let cpu = v["cpu_ns_per_snapshot"]["median"]
                            .as_f64()
                            .unwrap_or(f64::NAN);
                        let bytes = v["event_bytes"].as_f64().unwrap_or(f64::NAN);
                        row.summary(&s, 1e-3)
                            .runs(1)
                            .verdict(verdict)
                            .note(format!(
                                "on the application thread: armed call minus median unarmed call (wall); process CPU per snapshot incl. the encoder thread: {:.2} µs (median of rounds); event {bytes:.0} bytes",
                                cpu / 1e3
                            ))
                            .raw(v)
                    }
                    Err(e) => row.not_available(format!("{e:#}")),
                }
            },
        );
        // The plain-Python reference.
        per_python(
            ctx,
            rows,
            || {
                Row::new(
                    "B2",
                    format!("plain-Python capture (json+repr), {frame}, depth {DEPTH}"),
                    "µs",
                )
                .target("reference")
            },
            |py, row| {
                let mut a = a.clone();
                a.extend(args(["--mode", "plain"]));
                let workdir = ctx.work_dir.join(format!("b2-{}-{locals}", py.version));
                let _ = std::fs::create_dir_all(&workdir);
                a.extend(["--workdir".to_owned(), workdir.display().to_string()]);
                let r = run_script(py, SCRIPT, &a, &[], &ctx.log_dir, Duration::from_secs(300))
                    .and_then(|v| {
                        let depth = num(&v, "/stack_depth")?;
                        if depth != f64::from(DEPTH) {
                            return Err(anyhow!("the frame ran at depth {depth}, not {DEPTH}"));
                        }
                        Ok((summary(&v, "capture_ns")?, v))
                    });
                match r {
                    Ok((s, v)) => {
                        let bytes = v["event_bytes"].as_f64().unwrap_or(0.0);
                        row.summary(&s, 1e-3)
                            .runs(1)
                            .note(format!("one capture timed alone with perf_counter_ns; {bytes:.0} bytes of JSON each"))
                            .raw(v)
                    }
                    Err(e) => row.not_available(format!("{e:#}")),
                }
            },
        );
    }
}
