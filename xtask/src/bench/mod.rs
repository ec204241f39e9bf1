//! `cargo xtask bench [--quick] [--only B1,B2,...]`: the figures of issue 6.
//!
//! Each figure lives in its own file (`slowdown.rs`, `capture_cost.rs`, `hit_cost.rs`, `attach_latency.rs`, `delivery_rate.rs`, `idle_agent.rs`, `frame_probe.rs` for B1 ... B7) and adds rows to the report; the
//! Python side of each is a script in `xtask/bench/` that takes its parameters on the command line
//! and prints one JSON line. A figure whose piece (helper, agent, `trace`) is missing or broken
//! reports N/A with the reason. Methodology (see xtask/bench/README.md): slowdowns are measured
//! A/B in alternation (A B A B ...), as the median of per-pair ratios with min and max; latencies
//! and costs as median and p99 over many samples; every row says how many runs it rests on.
mod agent;
mod attach_latency;
mod capture_cost;
mod delivery_rate;
mod frame_probe;
mod hit_cost;
mod idle_agent;
mod pieces;
mod posthog_stub;
mod pyproc;
mod report;
mod slowdown;
mod stats;

use anyhow::{Result, bail};
use clap::Args;
use pieces::Pieces;
use pyproc::Python;
use report::{Machine, Report, Row};
use std::path::PathBuf;
use std::time::Instant;

/// Every figure, in report order.
pub const FIGURES: [&str; 7] = ["B1", "B2", "B3", "B4", "B5", "B6", "B7"];

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A fast smoke run (few samples, short windows): checks that everything runs, its numbers
    /// are not figures to quote.
    #[arg(long)]
    pub quick: bool,
    /// Only these figures, comma-separated (e.g. `B2,B3`).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Do not build the helper and the agent first; measure what is already built.
    #[arg(long)]
    pub no_build: bool,
    /// Where to write report.json and report.md [default: target/bench].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// What every figure gets: the run's settings, the interpreters, the pieces, scratch space.
pub struct Ctx {
    pub quick: bool,
    pub pythons: Vec<Result<Python, (String, String)>>,
    pub pieces: Pieces,
    /// Children's stderr logs.
    pub log_dir: PathBuf,
    /// Scratch files (generated modules, agent state).
    pub work_dir: PathBuf,
    pub root: bool,
}

impl Ctx {
    /// `full` normally, `quick` with --quick.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }

    /// The interpreter to use for figures measured on one version only (3.12, the version the
    /// issue's targets quote first).
    pub fn main_python(&self) -> Option<&Python> {
        let ok = || self.pythons.iter().filter_map(|p| p.as_ref().ok());
        ok().find(|p| p.version.starts_with("3.12"))
            .or_else(|| ok().next())
    }

    /// The helper directory (for PYTHONPATH), or the reason it is missing.
    pub fn helper(&self) -> Result<PathBuf, String> {
        self.pieces.helper(self.main_python())
    }

    /// The agent binary (for `trace`), or the reason it cannot be used.
    pub fn agent_bin(&self) -> Result<PathBuf, String> {
        if !self.root {
            return Err("needs root (the agent uses ptrace and eBPF): run as root".into());
        }
        self.pieces.agent()
    }

    /// The agent and the helper it injects, or the reason they cannot be used.
    pub fn agent(&self) -> Result<AgentPieces, String> {
        let bin = self.agent_bin()?;
        let helper = self.helper()?.join("libdebugger_helper.abi3.so");
        Ok(AgentPieces { bin, helper })
    }
}

/// What `libdebugger-agent run` needs.
pub struct AgentPieces {
    pub bin: PathBuf,
    /// The helper library it injects (`--helper`).
    pub helper: PathBuf,
}

/// Runs the selected figures, prints the table and writes the report.
pub fn run(args: BenchArgs) -> Result<()> {
    let selected: Vec<String> = if args.only.is_empty() {
        FIGURES.iter().map(|s| s.to_string()).collect()
    } else {
        args.only.iter().map(|s| s.trim().to_uppercase()).collect()
    };
    if let Some(bad) = selected.iter().find(|f| !FIGURES.contains(&f.as_str())) {
        bail!("unknown figure `{bad}` in --only: the figures are {FIGURES:?}");
    }
    let root = pieces::is_root();
    if !root {
        eprintln!(
            "xtask bench: not running as root: the agent's figures (B1 agent, B4-B7) will be N/A"
        );
    }
    let out_dir = args
        .out
        .unwrap_or_else(|| crate::util::root().join("target/bench"));
    let started = Instant::now();
    let mut machine = Machine::collect();
    let work_dir = out_dir.join("work");
    // Leftovers of an earlier run (agent state, generated modules) must not leak into this one.
    let _ = std::fs::remove_dir_all(&work_dir);
    let ctx = Ctx {
        quick: args.quick,
        pythons: pyproc::interpreters(),
        pieces: Pieces::new(!args.no_build),
        log_dir: out_dir.join("logs"),
        work_dir,
        root,
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut figure_s = Vec::new();
    for fig in &selected {
        let t0 = Instant::now();
        eprintln!("xtask bench: {fig} ...");
        let before = rows.len();
        match fig.as_str() {
            "B1" => slowdown::run(&ctx, &mut rows),
            "B2" => capture_cost::run(&ctx, &mut rows),
            "B3" => hit_cost::run(&ctx, &mut rows),
            "B4" => attach_latency::run(&ctx, &mut rows),
            "B5" => delivery_rate::run(&ctx, &mut rows),
            "B6" => idle_agent::run(&ctx, &mut rows),
            "B7" => frame_probe::run(&ctx, &mut rows),
            _ => unreachable!("checked against FIGURES above"),
        }
        let took = t0.elapsed().as_secs_f64();
        eprintln!(
            "xtask bench: {fig}: {} rows in {took:.1} s",
            rows.len() - before
        );
        figure_s.push((fig.clone(), took));
    }
    machine.loadavg_end = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let report = Report {
        schema: report::SCHEMA,
        machine,
        quick: args.quick,
        duration_s: started.elapsed().as_secs_f64(),
        build_s: ctx.pieces.build_s.get(),
        figure_s,
        rows,
    };
    report.write(&out_dir)?;
    println!("{}", report.table());
    print!("{}", report.notes_text());
    println!(
        "\nreport: {} ({:.0} s, of which {:.0} s building{})",
        out_dir.join("report.json").display(),
        report.duration_s,
        report.build_s,
        if args.quick { ", quick" } else { "" }
    );
    Ok(())
}

/// Rows for every interpreter: `measure` for those present, N/A rows for missing ones.
pub fn per_python(
    ctx: &Ctx,
    rows: &mut Vec<Row>,
    template: impl Fn() -> Row,
    mut measure: impl FnMut(&Python, Row) -> Row,
) {
    for p in &ctx.pythons {
        match p {
            Ok(python) => {
                let row = template().python(&python.version);
                rows.push(measure(python, row));
            }
            Err((version, why)) => rows.push(template().python(version).not_available(why)),
        }
    }
}
