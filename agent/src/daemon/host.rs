//! The real [`Platform`]: /proc, CPython introspection, ptrace injection and the control block.
use super::{AttachError, HelperLink, Platform, ProcessInfo};
use crate::inject::{self, InjectError, InjectOptions, control::ControlWriter};
use crate::python;
use crate::selectors::ProcessFacts;
use libdebugger_common::helper_abi::{ABI_VERSION, CONTROL_MAGIC, DISARM};
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

    fn is_thread(&self, pid: i32) -> bool {
        thread_group(pid).is_some_and(|tgid| tgid != pid)
    }

    fn facts(&self, pid: i32) -> Option<ProcessFacts> {
        // A thread id resolves under /proc too: it is not a process of its own.
        if self.is_thread(pid) {
            return None;
        }
        ProcessFacts::read(pid)
    }

    fn start_time(&self, pid: i32) -> Option<u64> {
        procfs::process::Process::new(pid)
            .and_then(|p| p.stat())
            .map(|s| s.starttime)
            .ok()
    }

    fn inspect(&self, pid: i32) -> Option<Result<ProcessInfo, String>> {
        match python::inspect(pid) {
            Ok(p) => Some(Ok(ProcessInfo {
                exe: p.exe.display().to_string(),
                python_version: p.version.to_string(),
                process: Some(std::sync::Arc::new(p)),
            })),
            // Python, but not one the agent can debug: listed with the reason (logged once, here,
            // when the process is first looked at).
            Err(e) if e.is_python() => {
                tracing::info!(pid, "not debugged: {e}");
                Some(Err(e.to_string()))
            }
            // Not Python, gone, or unreadable (so not known to be Python): not listed.
            Err(e) => {
                tracing::trace!(pid, "not a debuggable Python: {e}");
                None
            }
        }
    }

    fn in_process(&self, pid: i32) -> Option<String> {
        crate::inprocess::detect(pid)
            .filter(|m| m.active)
            .map(|m| m.reason())
    }

    fn attach(&self, pid: i32) -> Result<Box<dyn HelperLink>, AttachError> {
        // The daemon publishes the desired set as soon as this returns (`Owner::injected`): the
        // helper waits for it and arms at start-up.
        let options = InjectOptions {
            announce_control: true,
            ..self.options.clone()
        };
        let injected = match inject::inject(pid, &self.helper_so, &options) {
            Ok(i) => i,
            Err(InjectError::HelperMismatch {
                magic,
                abi,
                control_addr,
                mapping,
                ..
            }) => return Err(incompatible(pid, &mapping, magic, abi, control_addr)),
            Err(e) => return Err(e.to_string().into()),
        };
        tracing::info!(
            pid,
            outcome = ?injected.outcome,
            method = ?injected.method,
            elapsed_ms = injected.elapsed.as_secs_f64() * 1000.0,
            "helper injected"
        );
        let mut writer = ControlWriter::new(&injected).map_err(|e| e.to_string())?;
        if injected.outcome == inject::Outcome::AlreadyLoaded {
            tracing::info!(
                pid,
                mapping = %injected.mapping,
                "adopted the helper already loaded (same ABI {ABI_VERSION}); no second injection"
            );
        }
        if injected.outcome == inject::Outcome::AlreadyLoaded {
            resync(pid, &mut writer);
        }
        let emit_target = emit_target(pid, &injected.mapping, injected.helper_base);
        let emit_offset = emit_target.as_deref().and_then(emit_offset);
        Ok(Box::new(Link {
            writer,
            emit_target,
            emit_offset,
        }))
    }
}

/// The thread group (process) `pid` belongs to: `Tgid:` of `/proc/<pid>/status`.
fn thread_group(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// A helper of another build is in `pid` (an upgrade while the process kept running): it is not
/// replaced (a second copy would fight the first over `sys.monitoring` and the import hooks),
/// and this agent cannot drive it. If its header is the stable one ([`CONTROL_MAGIC`]), it is
/// disarmed: [`DISARM`] published and, within [`RESYNC_TIMEOUT`], applied; its `ldbg_emit`
/// gets no probe. The reason says which of that happened and what to do.
fn incompatible(pid: i32, mapping: &str, magic: u64, abi: u32, addr: u64) -> AttachError {
    let found = format!(
        "a helper of another libdebugger build is loaded in process {pid} ({mapping}: helper ABI {abi}, this agent speaks ABI {ABI_VERSION})"
    );
    let restart = "restart the process to debug it with this agent";
    if magic != CONTROL_MAGIC {
        return AttachError::Incompatible(format!(
            "{found}, with an unknown control block (magic {magic:#x}): left as it is; {restart}"
        ));
    }
    let disarmed = ControlWriter::foreign(pid, addr)
        .map_err(|e| e.to_string())
        .and_then(|mut w| {
            let g = w.publish(DISARM).map_err(|e| e.to_string())?;
            w.wait_applied(g, RESYNC_TIMEOUT).map_err(|e| e.to_string())
        });
    AttachError::Incompatible(match disarmed {
        Ok(()) => format!("{found}: disarmed (its breakpoints were removed); {restart}"),
        Err(e) => format!("{found}: could not be disarmed ({e}); {restart}"),
    })
}

/// How long a re-attach waits for the helper to drop the previous agent's breakpoints.
const RESYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A helper left by a previous agent (restart, `kill -9`) still has that agent's breakpoints
/// armed and reports status only when its set changes: publishing the same set again would leave
/// this agent without any status (every breakpoint `pending`, no code objects for the entry
/// counts). So the old set is removed first (waiting until the helper applied it); the caller
/// then publishes the desired set, which the helper arms afresh and reports.
fn resync(pid: i32, writer: &mut ControlWriter) {
    let cleared = writer
        .publish(DISARM)
        .map_err(|e| e.to_string())
        .and_then(|g| {
            writer
                .wait_applied(g, RESYNC_TIMEOUT)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = cleared {
        tracing::warn!(pid, "re-sync with the helper already loaded: {e}");
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

/// The file offset of `ldbg_emit` in the helper mapped at `path` (the mapped file itself: a
/// previous agent may have loaded another build).
fn emit_offset(path: &Path) -> Option<u64> {
    let elf = crate::elf::Elf::open(path).ok()?;
    let sym = elf.symbol("ldbg_emit")?;
    elf.file_offset(sym.vaddr)
}

struct Link {
    writer: ControlWriter,
    emit_target: Option<PathBuf>,
    emit_offset: Option<u64>,
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
    fn emit_offset(&self) -> Option<u64> {
        self.emit_offset
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
