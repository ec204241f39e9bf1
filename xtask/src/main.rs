//! `cargo xtask <task>`: the project's build tasks. Run through `./x <task>` on a fresh machine
//! (it installs the pinned host toolchain first).
mod bench;
mod browser;
mod demo;
mod ebpf;
mod helper;
mod rootfs;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "libdebugger build tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the pinned nightly and bpf-linker if missing, then build the eBPF object.
    BuildEbpf,
    /// Build the in-process helper (release) and stage it as an importable module.
    BuildHelper,
    /// Run the benchmarks (issue 6): prints a table, writes target/bench/report.json and
    /// report.md. Needs root for the agent's figures; about 15 minutes (`--quick`: a smoke run).
    Bench(bench::BenchArgs),
    /// Build everything and show a breakpoint hit in the bundled sample service (local mode).
    Demo {
        /// Instead of printing hits, serve the web UI on ADDR (default 127.0.0.1:7788) with the
        /// demo's breakpoint, print its URL and run until Ctrl-C.
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:7788")]
        ui: Option<String>,
    },
    /// Everything CI checks: formatting, clippy (host and eBPF), unit and end-to-end tests.
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::BuildEbpf => ebpf::build().map(|_| ()),
        Task::BuildHelper => helper::build().map(|_| ()),
        Task::Demo { ui } => demo::run_demo(ui.as_deref()),
        Task::Test { args } => test::run_all(&args),
        Task::Bench(args) => bench::run(args),
    }
}
