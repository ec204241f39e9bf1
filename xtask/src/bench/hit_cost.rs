//! B3: the cost of a hit that captures nothing: rate-limited, or with a false condition; and of a
//! logpoint hit that renders a message of three expressions (reported, with its ratio to the same
//! loop unprobed, measured in the same run).
//! Script: `b3_hotline.py` (a hot line run N times; pairs of unarmed/armed loops; cost per hit =
//! (t_armed − t_unarmed) / N; value = median over pairs).
use crate::bench::pieces::helper_env;
use crate::bench::pyproc::{args, num, run_script};
use crate::bench::report::{Row, Verdict};
use crate::bench::{Ctx, per_python};
use std::time::Duration;

pub fn run(ctx: &Ctx, rows: &mut Vec<Row>) {
    let helper = ctx.helper();
    let iterations: u32 = ctx.pick(1_000_000, 100_000);
    let pairs: u32 = ctx.pick(10, 2);
    for (kind, what, target) in [
        (
            "ratelimited",
            "hit turned away by the rate limit",
            Some(500.0),
        ),
        (
            "false-condition",
            "hit whose condition is false",
            Some(500.0),
        ),
        (
            "logpoint",
            "logpoint hit, message of three expressions (rendered, encoded, emitted)",
            None,
        ),
    ] {
        // The logpoint loop flushes every 200 hits: fewer iterations keep it as long as the others.
        let iterations = if target.is_none() {
            iterations / 20
        } else {
            iterations
        };
        per_python(
            ctx,
            rows,
            || {
                let row = Row::new("B3", format!("cost per {what}"), "µs");
                if target.is_some() {
                    row.target("≤ 0.5 µs")
                } else {
                    row.target("reported")
                }
            },
            |py, row| {
                let dir = match &helper {
                    Ok(d) => d,
                    Err(why) => return row.not_available(why.clone()),
                };
                let a = args([
                    "--kind".to_owned(),
                    kind.to_owned(),
                    "--iterations".to_owned(),
                    iterations.to_string(),
                    "--pairs".to_owned(),
                    pairs.to_string(),
                ]);
                let r = run_script(
                    py,
                    "b3_hotline.py",
                    &a,
                    &helper_env(dir, false),
                    &ctx.log_dir,
                    Duration::from_secs(300),
                )
                .and_then(|v| {
                    Ok((
                        num(&v, "/per_hit_ns/median")?,
                        num(&v, "/per_hit_ns/min")?,
                        num(&v, "/per_hit_ns/max")?,
                        v,
                    ))
                });
                match r {
                    Ok((median, min, max, v)) => {
                        let mut row = row.runs(pairs as usize);
                        if let Some(t) = target {
                            row = row.verdict(Verdict::check(median <= t));
                        }
                        row.value = Some(median / 1e3);
                        row.median = row.value;
                        row.min = Some(min / 1e3);
                        row.max = Some(max / 1e3);
                        row.samples = Some(pairs as usize * iterations as usize);
                        let captured = v["captured"].as_u64().unwrap_or(0);
                        let ratio = v["ratio"].as_f64().unwrap_or(0.0);
                        let taken = if target.is_some() {
                            "snapshots taken"
                        } else {
                            "messages sent"
                        };
                        row.note(format!(
                            "{iterations} hits per loop, {pairs} unarmed/armed pairs; {captured} {taken} in all (included); armed/unarmed CPU time of the loop {ratio:.2}×"
                        ))
                        .raw(v)
                    }
                    Err(e) => row.not_available(format!("{e:#}")),
                }
            },
        );
    }
}
