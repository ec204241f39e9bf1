//! `trace <pid>`: counts frame entries per code object with the frame-entry eBPF probe for a
//! while, then names the code objects by reading them out of the target's memory.
//!
//! Only entries of `_PyEval_EvalFrameDefault` are counted: frames entered from C (module code,
//! callbacks such as `map`/`sorted(key=)`, C extensions, thread targets, generator resumes on
//! 3.11). Python→Python calls are inlined by the interpreter since 3.11 and are not seen.
use crate::bpf::{Bpf, BpfError, Drops, Governor};
use crate::python::memory::{MemoryError, RemoteMemory, read_code};
use crate::python::{self, InspectError, PythonProcess};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Errors of [`trace`].
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The process is not a supported CPython (or cannot be inspected).
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// Loading or attaching the probe failed.
    #[error(transparent)]
    Bpf(#[from] BpfError),
}

/// What to trace and for how long.
#[derive(Clone, Copy, Debug)]
pub struct TraceOptions {
    pub duration: Duration,
    /// Governor budget: frame entries per second above which the probe is detached (0 = none).
    pub entries_budget_per_sec: u32,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(5),
            entries_budget_per_sec: python::DEFAULT_ENTRIES_BUDGET_PER_SEC,
        }
    }
}

/// One code object and how often it was entered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceEntry {
    pub filename: String,
    pub qualname: String,
    pub firstlineno: i32,
    pub entries: u64,
    /// Address of the `PyCodeObject` in the target.
    pub code_address: u64,
    /// Why the code object could not be read (it was freed, or the process exited); the names
    /// are then placeholders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
}

/// Result of [`trace`].
#[derive(Clone, Debug, Serialize)]
pub struct TraceReport {
    pub pid: i32,
    pub python_version: String,
    /// How long the probe was attached.
    pub traced_for: Duration,
    /// Code objects, most entered first.
    pub entries: Vec<TraceEntry>,
    pub governor: Governor,
    /// The budget the governor enforced.
    pub entries_budget_per_sec: u32,
    /// The process exited before the end.
    pub process_exited: bool,
    pub drops: Drops,
}

/// How often the governor and the process are checked while tracing.
const POLL: Duration = Duration::from_millis(50);

/// Attaches the frame-entry probe to `pid` for `options.duration` (less if the governor trips
/// or the process exits), then reads and names the counters. `on_attached` runs once the probe
/// is live (the CLI prints a readiness line there).
pub fn trace(
    pid: i32,
    options: TraceOptions,
    on_attached: impl FnOnce(&PythonProcess),
) -> Result<TraceReport, TraceError> {
    let process = python::inspect(pid)?;
    let mut bpf = Bpf::load()?;
    bpf.trace_process(&process, options.entries_budget_per_sec)?;
    let started = Instant::now();
    on_attached(&process);
    let mut process_exited = false;
    let mut governor = Governor::default();
    loop {
        bpf.flush_logs();
        let elapsed = started.elapsed();
        if elapsed >= options.duration {
            break;
        }
        std::thread::sleep(POLL.min(options.duration - elapsed));
        if let Some(g) = bpf.governor(pid)? {
            governor = g;
            if g.tripped {
                tracing::warn!(
                    pid,
                    budget = options.entries_budget_per_sec,
                    "overhead governor tripped: detaching the frame-entry probe"
                );
                break;
            }
        }
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            process_exited = true;
            break;
        }
    }
    let traced_for = started.elapsed();
    if let Some(g) = bpf.governor(pid)? {
        governor = g;
    }
    let counts = bpf.code_counts(pid)?;
    // Detaching fails only if the process vanished in a way the kernel already cleaned up.
    if let Err(err) = bpf.untrace_process(pid) {
        tracing::debug!(pid, %err, "detaching the frame-entry probe");
    }
    let drops = bpf.drops()?;

    let mem = RemoteMemory::new(pid);
    let mut entries: Vec<TraceEntry> = counts
        .into_iter()
        .map(|(code, count)| resolve(&mem, &process, code, count))
        .collect();
    entries.sort_by(|a, b| {
        b.entries
            .cmp(&a.entries)
            .then_with(|| a.filename.cmp(&b.filename))
            .then_with(|| a.firstlineno.cmp(&b.firstlineno))
    });
    Ok(TraceReport {
        pid,
        python_version: process.version.to_string(),
        traced_for,
        entries,
        governor,
        entries_budget_per_sec: options.entries_budget_per_sec,
        process_exited,
        drops,
    })
}

fn resolve(mem: &RemoteMemory, process: &PythonProcess, code: u64, entries: u64) -> TraceEntry {
    match read_code(mem, &process.layout.code, code) {
        Ok(info) => TraceEntry {
            filename: info.filename,
            qualname: info.qualname,
            firstlineno: info.firstlineno,
            entries,
            code_address: code,
            unresolved: None,
        },
        Err(err) => {
            let reason = match err {
                MemoryError::Read { .. } | MemoryError::Short { .. } => {
                    "code object no longer readable".to_string()
                }
                other => other.to_string(),
            };
            TraceEntry {
                filename: "<unresolved>".into(),
                qualname: "<unresolved>".into(),
                firstlineno: 0,
                entries,
                code_address: code,
                unresolved: Some(reason),
            }
        }
    }
}
