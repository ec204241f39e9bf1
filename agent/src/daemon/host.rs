//! The real [`Platform`]: /proc, CPython introspection, ptrace injection and the control block.
use super::{HelperLink, Platform, ProcessInfo};
use crate::inject::{self, InjectOptions, control::ControlWriter};
use crate::python::{self, InspectError};
use crate::selectors::ProcessFacts;
use std::path::{Path, PathBuf};

/// The host platform, injecting the helper library at `helper_so`.
pub struct Host {
    pub helper_so: PathBuf,
    pub options: InjectOptions,
}

impl Platform for Host {
    fn pids(&self) -> Vec<i32> {
        procfs::process::all_processes()
            .map(|it| it.filter_map(|p| p.ok()).map(|p| p.pid).collect())
            .unwrap_or_default()
    }

    fn facts(&self, pid: i32) -> Option<ProcessFacts> {
        ProcessFacts::read(pid)
    }

    fn inspect(&self, pid: i32) -> Option<Result<ProcessInfo, String>> {
        match python::inspect(pid) {
            Ok(p) => Some(Ok(ProcessInfo {
                exe: p.exe.display().to_string(),
                python_version: p.version.to_string(),
            })),
            // Not Python at all (or gone, or unreadable): not listed.
            Err(
                InspectError::NotPython { .. }
                | InspectError::ProcessGone { .. }
                | InspectError::Proc { .. },
            ) => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }

    fn attach(&self, pid: i32) -> Result<Box<dyn HelperLink>, String> {
        let injected =
            inject::inject(pid, &self.helper_so, &self.options).map_err(|e| e.to_string())?;
        tracing::info!(
            pid,
            outcome = ?injected.outcome,
            method = ?injected.method,
            elapsed_ms = injected.elapsed.as_secs_f64() * 1000.0,
            "helper injected"
        );
        let writer = ControlWriter::new(&injected).map_err(|e| e.to_string())?;
        let emit_target = emit_target(pid, &injected.mapping, injected.helper_base);
        Ok(Box::new(Link {
            writer,
            emit_target,
        }))
    }
}

/// The helper's first mapping as a path the agent can open: `/proc/<pid>/map_files/<range>`
/// (the memfd lives only in the target).
fn emit_target(pid: i32, mapping: &str, base: u64) -> Option<PathBuf> {
    let maps = inject::maps::read(pid).ok()?;
    let m = maps
        .iter()
        .filter(|m| m.path == mapping || m.file_name() == mapping.trim_start_matches('/'))
        .filter(|m| m.offset == 0)
        .find(|m| m.start >= base)?;
    Some(m.map_file(pid))
}

struct Link {
    writer: ControlWriter,
    emit_target: Option<PathBuf>,
}

impl HelperLink for Link {
    fn publish(&mut self, data: &[u8]) -> Result<u64, String> {
        self.writer.publish(data).map_err(|e| e.to_string())
    }
    fn applied(&self) -> Result<u64, String> {
        self.writer.applied().map_err(|e| e.to_string())
    }
    fn emit_target(&self) -> Option<PathBuf> {
        self.emit_target.clone()
    }
}

/// Where the helper library is: `--helper`, `LIBDEBUGGER_HELPER`, next to the agent binary, or
/// `../helper/` from it (the layout `cargo xtask build-helper` stages in `target/`).
pub fn find_helper(explicit: Option<&Path>) -> Result<PathBuf, String> {
    const NAME: &str = "libdebugger_helper.abi3.so";
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    } else if let Some(p) = std::env::var_os("LIBDEBUGGER_HELPER") {
        candidates.push(PathBuf::from(p));
    } else if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join(NAME));
        candidates.push(dir.join("../helper").join(NAME));
        candidates.push(PathBuf::from("/usr/lib/libdebugger").join(NAME));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .ok_or_else(|| {
            format!(
                "the helper library {NAME} was not found (looked at {}); build it with `cargo xtask build-helper` or pass --helper PATH",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}
