//! The pieces the figures measure, found (and built, unless `--no-build`) on first use. A piece
//! that is missing or broken yields the reason its figures are N/A, never a number.
use crate::bench::pyproc::{Python, scripts_dir};
use crate::util::{output, root, run};
use crate::{ebpf, helper};
use std::cell::OnceCell;
use std::path::PathBuf;
use std::process::Command;

/// Why a piece is not available, as the report's N/A note says it.
pub type Missing = String;

/// Per-breakpoint settings (JSON, merged into each breakpoint dict B2 passes to
/// `set_breakpoints`, through `LIBDEBUGGER_BENCH_BP_EXTRA`) and process settings (the second
/// argument of `set_breakpoints`, through `LIBDEBUGGER_BENCH_SETTINGS`) that lift the rate
/// limits, so that every armed call of B2 takes a snapshot (B2 checks it with the helper's
/// `captured` counter and reports N/A otherwise). Names as in the helper's `spec.rs`.
pub const HELPER_BP_EXTRA: &str = r#"{"limits": {"rate": 1e9, "burst": 1e9}}"#;
/// See [`HELPER_BP_EXTRA`].
pub const HELPER_SETTINGS: &str =
    r#"{"process_rate": 1e9, "cpu_budget": 1.0, "queue_capacity": 65536}"#;

/// `[capture]` settings written into the agent's configuration for B5 (passed to the helper as
/// is): B5 measures the pipeline, so the helper's rate limits and CPU budget must not be what
/// limits it. Names as in the helper's `spec.rs` (process settings, and `limits` for every
/// breakpoint); adjust here if the agent maps `[capture]` differently.
pub const AGENT_CAPTURE_UNLIMITED: &str = "\
[capture]
process_rate = 1e9
cpu_budget = 1.0
queue_capacity = 65536

[capture.limits]
rate = 1e9
burst = 1e9
";

/// Finds and builds pieces lazily, once each.
pub struct Pieces {
    build: bool,
    /// Seconds spent building (not part of the 15-minute measuring budget).
    pub build_s: std::cell::Cell<f64>,
    helper: OnceCell<Result<PathBuf, Missing>>,
    agent: OnceCell<Result<PathBuf, Missing>>,
}

impl Pieces {
    /// `build`: build what a figure needs before measuring it (`cargo xtask bench` does; tests
    /// and `--no-build` use what is already there).
    pub fn new(build: bool) -> Self {
        Self {
            build,
            build_s: std::cell::Cell::new(0.0),
            helper: OnceCell::new(),
            agent: OnceCell::new(),
        }
    }

    /// The directory to put on PYTHONPATH to import `libdebugger_helper`, if the helper is built
    /// and has the interface the figures use.
    pub fn helper(&self, probe_with: Option<&Python>) -> Result<PathBuf, Missing> {
        self.helper
            .get_or_init(|| self.timed(|| find_helper(self.build, probe_with)))
            .clone()
    }

    /// The agent binary, if it is built.
    pub fn agent(&self) -> Result<PathBuf, Missing> {
        self.agent
            .get_or_init(|| self.timed(|| find_agent(self.build)))
            .clone()
    }

    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let t0 = std::time::Instant::now();
        let out = f();
        self.build_s
            .set(self.build_s.get() + t0.elapsed().as_secs_f64());
        out
    }
}

fn find_helper(build: bool, probe_with: Option<&Python>) -> Result<PathBuf, Missing> {
    if build && let Err(e) = helper::build() {
        return Err(format!("helper build failed: {e:#}"));
    }
    let dir = helper::staged_dir();
    let so = dir.join("libdebugger_helper.abi3.so");
    if !so.exists() {
        return Err(format!(
            "helper not built: {} missing (run `cargo xtask build-helper`)",
            so.strip_prefix(root()).unwrap_or(&so).display()
        ));
    }
    let Some(python) = probe_with else {
        return Ok(dir);
    };
    // The helper crate exists from the start as an empty module: check for the interface.
    let probe = "import libdebugger_helper as h; \
                 print(','.join(n for n in ('set_breakpoints','status','set_sink') if not hasattr(h, n)))";
    let out = output(
        Command::new(&python.path)
            .args(["-c", probe])
            .env("PYTHONPATH", &dir),
    );
    match out.as_deref().map(str::trim) {
        Some("") => Ok(dir),
        Some(missing) => Err(format!(
            "helper built but lacks {missing} (issue 3 not landed in this tree)"
        )),
        None => Err(format!(
            "helper does not import on Python {} (python -c 'import libdebugger_helper' fails)",
            python.version
        )),
    }
}

fn find_agent(build: bool) -> Result<PathBuf, Missing> {
    if build {
        if let Err(e) = ebpf::build() {
            return Err(format!("eBPF build failed: {e:#}"));
        }
        if let Err(e) = run(Command::new(env!("CARGO")).current_dir(root()).args([
            "build",
            "--release",
            "-p",
            "libdebugger-agent",
        ])) {
            return Err(format!("agent build failed: {e:#}"));
        }
    }
    // Release if present (what the figures should be measured on), else a debug build.
    ["target/release/libdebugger-agent", "target/debug/libdebugger-agent"]
        .into_iter()
        .map(|p| root().join(p))
        .find(|p| p.exists())
        .ok_or_else(|| {
            "agent not built: target/release/libdebugger-agent missing (cargo build --release -p libdebugger-agent)".into()
        })
}

/// Whether this process runs as root (the agent needs it: ptrace, eBPF).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The environment of a bench script that imports the helper; `unlimited` lifts the rate
/// limits (B2).
pub fn helper_env(helper_dir: &std::path::Path, unlimited: bool) -> Vec<(&'static str, String)> {
    let mut env = vec![(
        "PYTHONPATH",
        format!("{}:{}", helper_dir.display(), scripts_dir().display()),
    )];
    if unlimited {
        env.push(("LIBDEBUGGER_BENCH_BP_EXTRA", HELPER_BP_EXTRA.to_owned()));
        env.push(("LIBDEBUGGER_BENCH_SETTINGS", HELPER_SETTINGS.to_owned()));
    }
    env
}
