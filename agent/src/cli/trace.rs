//! `trace <pid> --duration <seconds> [--json]`.
use crate::python::DEFAULT_ENTRIES_BUDGET_PER_SEC;
use crate::trace::{TraceOptions, TraceReport, trace};
use anyhow::Context;
use clap::Args;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The process to trace.
    pub pid: i32,
    /// How long to count, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Print JSON instead of a table: a list of {filename, qualname, firstlineno, entries,
    /// code_address}, most entered first.
    #[arg(long)]
    pub json: bool,
    /// Overhead governor: frame entries per second above which the probe is detached (0 = no
    /// limit).
    #[arg(long, default_value_t = DEFAULT_ENTRIES_BUDGET_PER_SEC)]
    pub budget: u32,
}

pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    if !(args.duration.is_finite() && args.duration > 0.0) {
        anyhow::bail!("--duration must be a positive number of seconds");
    }
    let options = TraceOptions {
        duration: Duration::from_secs_f64(args.duration),
        entries_budget_per_sec: args.budget,
    };
    let report = trace(args.pid, options, |p| {
        // Readiness line (on stderr, so --json output stays clean): the probe is live.
        eprintln!(
            "libdebugger-agent: tracing pid {} (CPython {}) for {:.1} s",
            p.pid, p.version, args.duration
        );
    })
    .with_context(|| format!("tracing pid {}", args.pid))?;
    report_governor(&report);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report.entries)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn report_governor(report: &TraceReport) {
    if report.governor.tripped {
        eprintln!(
            "libdebugger-agent: OVERHEAD GOVERNOR TRIPPED: pid {} entered more than {} frames in \
             one second; the probe was detached after {:.2} s, so the counts below are partial. \
             Raise the budget with --budget <entries/s> (0 = no limit) if this overhead is \
             acceptable.",
            report.pid,
            report.entries_budget_per_sec,
            report.traced_for.as_secs_f64()
        );
    }
    if report.process_exited {
        eprintln!(
            "libdebugger-agent: pid {} exited after {:.2} s; code objects may be unresolved",
            report.pid,
            report.traced_for.as_secs_f64()
        );
    }
    let d = report.drops;
    if d.counter_insert_failed + d.frame_read_failed > 0 {
        eprintln!(
            "libdebugger-agent: {} frame entries could not be counted (counter map full: {}, \
             unreadable frame: {})",
            d.counter_insert_failed + d.frame_read_failed,
            d.counter_insert_failed,
            d.frame_read_failed
        );
    }
}

fn print_table(out: &mut impl Write, report: &TraceReport) -> std::io::Result<()> {
    writeln!(
        out,
        "pid {} · CPython {} · {:.2} s · {} frame entries in {} code objects",
        report.pid,
        report.python_version,
        report.traced_for.as_secs_f64(),
        report.governor.total_entries,
        report.entries.len()
    )?;
    writeln!(out, "{:>10}  {:<40}  location", "entries", "qualname")?;
    for e in &report.entries {
        writeln!(
            out,
            "{:>10}  {:<40}  {}:{}",
            e.entries, e.qualname, e.filename, e.firstlineno
        )?;
    }
    Ok(())
}
