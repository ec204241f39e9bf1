//! Every aya call of the agent lives in this module. It loads the eBPF object built from `ebpf/`
//! (embedded at build time), attaches its programs and reads its maps and ring buffers, behind a
//! typed API with no aya types in it.
//!
//! * Frame-entry probe: [`Bpf::trace_process`] / [`Bpf::untrace_process`] (pid-scoped uprobe on
//!   `_PyEval_EvalFrameDefault` + the per-process offsets and governor),
//!   [`Bpf::code_counts`], [`Bpf::governor`], [`Bpf::watch`] / [`Bpf::unwatch`], and
//!   [`Bpf::frame_events`] for entries of watched code objects.
//! * Transport out of the helper: [`Bpf::attach_emit`] and [`Bpf::emit_events`].
//! * Process lifecycle: [`Bpf::attach_lifecycle`] and [`Bpf::proc_events`].
//! * Losses: [`Bpf::drops`].
//! * eBPF logs: [`Bpf::take_log_pump`] (keep it alive; drain it).
//!
//! Pids: the programs see pids as the initial pid namespace numbers them
//! (`bpf_get_current_pid_tgid`), and pid-scoped uprobes take the agent's view of the pid. Both
//! agree when the agent runs in the host's pid namespace, as the root daemon does; a process in a
//! container is then addressed by its host pid.
pub mod logs;
pub mod ring;
pub mod tracefs;

use crate::python::PythonProcess;
use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, TracePoint, UProbe, uprobe::UProbeLinkId, uprobe::UProbeScope};
use libdebugger_common::bpf::{CodeKey, GovernorState, PyOffsets, TracepointOffsets, drop_counter};
use logs::{LogPump, TracingLog};
use ring::{EmitChunk, FrameEvent, ProcEvent, RingReader};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

/// The eBPF object, 8-byte aligned as aya's ELF parser requires.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/libdebugger-ebpf.o"));

/// Errors of the eBPF layer. Messages say what to do where the cause is the host.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The object could not be loaded (no CAP_BPF, BPF disabled, or a kernel too old for a map
    /// type such as ring buffers, which need Linux 5.8).
    #[error(
        "cannot load the eBPF object: {source}. Run as root (CAP_BPF and CAP_PERFMON) on Linux \
         5.8 or newer"
    )]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    /// A program failed to load (verifier) or attach.
    #[error("eBPF program `{program}`: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    /// The object lacks a program this agent expects (a mismatched build).
    #[error("the eBPF object has no program `{name}`; rebuild it with `cargo xtask build-ebpf`")]
    MissingProgram { name: &'static str },
    /// The object lacks a map this agent expects (a mismatched build), or it was taken already.
    #[error("the eBPF object has no map `{name}` (or it was taken already)")]
    MissingMap { name: &'static str },
    /// A map operation failed.
    #[error("eBPF map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// Setting up eBPF logs failed.
    #[error("eBPF logs: {source}")]
    Logs {
        #[source]
        source: aya_log::Error,
    },
    /// tracefs is not mounted and mounting it failed.
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and mounting it failed ({source}); mount it: `mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    Tracefs {
        #[source]
        source: nix::Error,
    },
    /// A tracepoint's format file could not be read or lacks a field.
    #[error("tracepoint format {path}: {detail}")]
    TracepointFormat { path: PathBuf, detail: String },
    /// The uprobe self-check could not run.
    #[error("uprobe check: {detail}")]
    UprobeCheck { detail: String },
    /// A pid that cannot be one (0 or negative).
    #[error("invalid pid {pid}")]
    InvalidPid { pid: i32 },
    /// [`Bpf::untrace_process`] for a process that is not traced.
    #[error("process {pid} is not traced")]
    NotTraced { pid: i32 },
}

/// The overhead governor's view of one traced process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Governor {
    /// Frame entries since the probe was attached (until it tripped).
    pub total_entries: u64,
    /// Entries in the current (or, once tripped, the offending) one-second window.
    pub window_entries: u64,
    /// The process exceeded its budget: the probe stopped counting; detach it and report.
    pub tripped: bool,
}

/// Records the programs could not deliver, summed over CPUs (see
/// [`libdebugger_common::bpf::drop_counter`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Drops {
    pub emit_ring_full: u64,
    pub emit_read_failed: u64,
    pub frame_ring_full: u64,
    pub proc_ring_full: u64,
    pub counter_insert_failed: u64,
    pub frame_read_failed: u64,
}

/// An attached `ldbg_emit` uprobe, for [`Bpf::detach_emit`].
#[derive(Debug)]
pub struct EmitLink {
    id: UProbeLinkId,
    /// The helper library it is attached to.
    pub helper: PathBuf,
    /// The process it is scoped to, or `None` for every process mapping that file.
    pub pid: Option<i32>,
}

/// The loaded eBPF object and its attachments.
pub struct Bpf {
    ebpf: aya::Ebpf,
    log_pump: Option<LogPump>,
    /// Frame-entry attachments per traced pid.
    traced: HashMap<i32, UProbeLinkId>,
    /// The frame-entry program in use: [`FRAME_ENTRY_MULTI`] where the kernel has uprobe-multi
    /// links, else [`FRAME_ENTRY`].
    frame_prog: &'static str,
    lifecycle_attached: bool,
}

impl std::fmt::Debug for Bpf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bpf")
            .field("traced", &self.traced.keys().collect::<Vec<_>>())
            .field("lifecycle_attached", &self.lifecycle_attached)
            .finish_non_exhaustive()
    }
}

/// The frame-entry probe as a perf-event uprobe (any kernel the agent supports).
const FRAME_ENTRY: &str = "frame_entry";
/// The same probe as a uprobe-multi program (Linux 6.6+), preferred: detaching it takes the
/// breakpoint out of the process before waiting for RCU grace periods, so a busy process stops
/// taking the trap at once when the governor trips (see `ebpf/src/frame_entry.rs`).
const FRAME_ENTRY_MULTI: &str = "frame_entry_multi";
const LDBG_EMIT: &str = "ldbg_emit";
/// (program, tracepoint category, tracepoint name)
const LIFECYCLE: [(&str, &str, &str); 3] = [
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_fork", "sched", "sched_process_fork"),
    ("sched_process_exit", "sched", "sched_process_exit"),
];

fn nonzero_pid(pid: i32) -> Result<NonZeroU32, BpfError> {
    u32::try_from(pid)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or(BpfError::InvalidPid { pid })
}

impl Bpf {
    /// Loads the embedded object, starts its log pump and loads (verifies) every program.
    /// Nothing is attached yet.
    pub fn load() -> Result<Self, BpfError> {
        let mut ebpf = aya::Ebpf::load(OBJECT).map_err(|source| BpfError::Load { source })?;
        let logger = aya_log::EbpfLogger::init_with_logger(&mut ebpf, TracingLog)
            .map_err(|source| BpfError::Logs { source })?;
        let mut bpf = Self {
            ebpf,
            log_pump: Some(LogPump::new(logger)),
            traced: HashMap::new(),
            frame_prog: FRAME_ENTRY_MULTI,
            lifecycle_attached: false,
        };
        if let Err(e) = bpf.uprobe(FRAME_ENTRY_MULTI)?.load() {
            tracing::debug!(
                "no uprobe-multi links ({e}): the frame-entry probe is a perf-event uprobe, which \
                 stays in a process for an RCU grace period after the governor detaches it"
            );
            bpf.frame_prog = FRAME_ENTRY;
            bpf.uprobe(FRAME_ENTRY)?
                .load()
                .map_err(|source| BpfError::Program {
                    program: FRAME_ENTRY,
                    source,
                })?;
        }
        bpf.uprobe(LDBG_EMIT)?
            .load()
            .map_err(|source| BpfError::Program {
                program: LDBG_EMIT,
                source,
            })?;
        for (name, _, _) in LIFECYCLE {
            bpf.tracepoint(name)?
                .load()
                .map_err(|source| BpfError::Program {
                    program: name,
                    source,
                })?;
        }
        Ok(bpf)
    }

    /// The eBPF log pump. Keep it alive as long as this `Bpf`, and drain it (its `run` future on
    /// a tokio runtime, or `flush` now and then). `None` after the first call.
    pub fn take_log_pump(&mut self) -> Option<LogPump> {
        self.log_pump.take()
    }

    /// Forwards pending eBPF log records into `tracing` (when the pump was not taken).
    pub fn flush_logs(&mut self) {
        if let Some(pump) = self.log_pump.as_mut() {
            pump.flush();
        }
    }

    fn uprobe(&mut self, name: &'static str) -> Result<&mut UProbe, BpfError> {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or(BpfError::MissingProgram { name })?;
        prog.try_into().map_err(|source| BpfError::Program {
            program: name,
            source,
        })
    }

    fn tracepoint(&mut self, name: &'static str) -> Result<&mut TracePoint, BpfError> {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or(BpfError::MissingProgram { name })?;
        prog.try_into().map_err(|source| BpfError::Program {
            program: name,
            source,
        })
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BpfHashMap<&mut MapData, K, V>, BpfError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(BpfError::MissingMap { name })?;
        BpfHashMap::try_from(map).map_err(|source| BpfError::Map { name, source })
    }

    // ---- frame-entry probe -------------------------------------------------------------------

    /// Starts counting frame entries in `process`: writes its offsets and budget
    /// (`entries_budget_per_sec`, 0 = no limit), resets its governor, and attaches the uprobe to
    /// `_PyEval_EvalFrameDefault` scoped to that pid. Idempotent.
    pub fn trace_process(
        &mut self,
        process: &PythonProcess,
        entries_budget_per_sec: u32,
    ) -> Result<(), BpfError> {
        let pid = process.pid;
        let tgid = nonzero_pid(pid)?;
        if self.traced.contains_key(&pid) {
            return Ok(());
        }
        self.set_offsets(pid, process.bpf_offsets(entries_budget_per_sec))?;
        self.reset_governor(pid)?;
        let offset = process.symbols.eval_frame_probe.file_offset;
        let path = process.interpreter.host_path.clone();
        let program = self.frame_prog;
        let link = self
            .uprobe(program)?
            .attach([offset], &path, UProbeScope::OneProcess(tgid))
            .map_err(|source| BpfError::Program { program, source })?;
        tracing::debug!(pid, path = %path.display(), offset, "frame-entry probe attached");
        self.traced.insert(pid, link);
        Ok(())
    }

    /// Detaches the frame-entry probe from `pid` and clears its offsets and governor. Its counters
    /// stay readable until [`Bpf::clear_code_counts`].
    pub fn untrace_process(&mut self, pid: i32) -> Result<(), BpfError> {
        let link = self
            .traced
            .remove(&pid)
            .ok_or(BpfError::NotTraced { pid })?;
        let program = self.frame_prog;
        self.uprobe(program)?
            .detach(link)
            .map_err(|source| BpfError::Program { program, source })?;
        self.clear_offsets(pid)?;
        let tgid = nonzero_pid(pid)?.get();
        let mut gov = self.hash_map::<u32, GovernorState>("GOVERNOR")?;
        ignore_missing(gov.remove(&tgid), "GOVERNOR")?;
        tracing::debug!(pid, "frame-entry probe detached");
        Ok(())
    }

    /// Whether the frame-entry probe is a uprobe-multi link, whose breakpoint stays in a child
    /// forked while its parent is traced until the parent's probe is re-attached
    /// ([`Bpf::untrace_process`] then [`Bpf::trace_process`]).
    pub fn frame_probe_follows_forks(&self) -> bool {
        self.frame_prog == FRAME_ENTRY_MULTI
    }

    /// The pids the frame-entry probe is attached to.
    pub fn traced(&self) -> impl Iterator<Item = i32> + '_ {
        self.traced.keys().copied()
    }

    /// Writes the per-process offsets the probe reads (it ignores processes without them).
    pub fn set_offsets(&mut self, pid: i32, offsets: PyOffsets) -> Result<(), BpfError> {
        let tgid = nonzero_pid(pid)?.get();
        self.hash_map::<u32, PyOffsets>("PY_OFFSETS")?
            .insert(&tgid, &offsets, 0)
            .map_err(|source| BpfError::Map {
                name: "PY_OFFSETS",
                source,
            })
    }

    /// Removes the per-process offsets (the probe then ignores the process).
    pub fn clear_offsets(&mut self, pid: i32) -> Result<(), BpfError> {
        let tgid = nonzero_pid(pid)?.get();
        let mut map = self.hash_map::<u32, PyOffsets>("PY_OFFSETS")?;
        ignore_missing(map.remove(&tgid), "PY_OFFSETS")
    }

    fn reset_governor(&mut self, pid: i32) -> Result<(), BpfError> {
        let tgid = nonzero_pid(pid)?.get();
        let mut map = self.hash_map::<u32, GovernorState>("GOVERNOR")?;
        ignore_missing(map.remove(&tgid), "GOVERNOR")
    }

    /// The governor state of `pid`, `None` before its first frame entry.
    pub fn governor(&mut self, pid: i32) -> Result<Option<Governor>, BpfError> {
        let tgid = nonzero_pid(pid)?.get();
        let map = self.hash_map::<u32, GovernorState>("GOVERNOR")?;
        match map.get(&tgid, 0) {
            Ok(g) => Ok(Some(Governor {
                total_entries: g.total_entries,
                window_entries: g.window_entries,
                tripped: g.tripped != 0,
            })),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(BpfError::Map {
                name: "GOVERNOR",
                source,
            }),
        }
    }

    /// Entry counts of `pid`'s code objects: (code object address, entries).
    pub fn code_counts(&mut self, pid: i32) -> Result<Vec<(u64, u64)>, BpfError> {
        let tgid = nonzero_pid(pid)?.get() as i32;
        let all = self.all_code_counts()?;
        Ok(all
            .into_iter()
            .filter(|(p, ..)| *p == tgid)
            .map(|(_, code, n)| (code, n))
            .collect())
    }

    /// Entry counts of every process's code objects: (pid, code object address, entries). One
    /// pass over the map (walking a hash map costs a scan of its buckets, whatever it holds).
    pub fn all_code_counts(&mut self) -> Result<Vec<(i32, u64, u64)>, BpfError> {
        let map = self.hash_map::<CodeKey, u64>("CODE_COUNTS")?;
        let mut out = Vec::new();
        for item in map.iter() {
            match item {
                Ok((key, count)) => out.push((key.tgid as i32, key.code, count)),
                // The LRU may evict the key being iterated; skip it.
                Err(MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(BpfError::Map {
                        name: "CODE_COUNTS",
                        source,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes `pid`'s counters.
    pub fn clear_code_counts(&mut self, pid: i32) -> Result<(), BpfError> {
        let tgid = nonzero_pid(pid)?.get();
        let mut map = self.hash_map::<CodeKey, u64>("CODE_COUNTS")?;
        let keys: Vec<CodeKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tgid == tgid)
            .collect();
        for key in keys {
            ignore_missing(map.remove(&key), "CODE_COUNTS")?;
        }
        Ok(())
    }

    /// Reports every entry of code object `code` in `pid` to [`Bpf::frame_events`].
    pub fn watch(&mut self, pid: i32, code: u64) -> Result<(), BpfError> {
        let key = CodeKey {
            tgid: nonzero_pid(pid)?.get(),
            _pad: 0,
            code,
        };
        self.hash_map::<CodeKey, u8>("WATCHED")?
            .insert(&key, &1, 0)
            .map_err(|source| BpfError::Map {
                name: "WATCHED",
                source,
            })
    }

    /// Stops reporting entries of `code` in `pid`.
    pub fn unwatch(&mut self, pid: i32, code: u64) -> Result<(), BpfError> {
        let key = CodeKey {
            tgid: nonzero_pid(pid)?.get(),
            _pad: 0,
            code,
        };
        let mut map = self.hash_map::<CodeKey, u8>("WATCHED")?;
        ignore_missing(map.remove(&key), "WATCHED")
    }

    /// The `FRAME_EVENTS` ring (entries of watched code objects). Once only.
    pub fn frame_events(&mut self) -> Result<RingReader<FrameEvent>, BpfError> {
        RingReader::new(&mut self.ebpf)
    }

    // ---- ldbg_emit -----------------------------------------------------------------------------

    /// Attaches the `ldbg_emit` uprobe to the helper library at `helper` (a path the agent can
    /// open, e.g. under `/proc/<pid>/root`), for one process or (`None`) every process that maps
    /// that file.
    pub fn attach_emit(&mut self, helper: &Path, pid: Option<i32>) -> Result<EmitLink, BpfError> {
        self.attach_emit_to("ldbg_emit", helper, pid)
    }

    /// [`Bpf::attach_emit`] at a known file offset of `ldbg_emit` in `helper` (the caller has
    /// the helper's ELF parsed already): saves reading and parsing the whole library again.
    pub fn attach_emit_at(
        &mut self,
        helper: &Path,
        file_offset: u64,
        pid: Option<i32>,
    ) -> Result<EmitLink, BpfError> {
        self.attach_emit_to(file_offset, helper, pid)
    }

    fn attach_emit_to<'a>(
        &mut self,
        point: impl Into<aya::programs::uprobe::UProbeAttachPoint<'a>>,
        helper: &Path,
        pid: Option<i32>,
    ) -> Result<EmitLink, BpfError> {
        let scope = match pid {
            Some(pid) => UProbeScope::OneProcess(nonzero_pid(pid)?),
            None => UProbeScope::AllProcesses,
        };
        let id = self
            .uprobe(LDBG_EMIT)?
            .attach([point], helper, scope)
            .map_err(|source| BpfError::Program {
                program: LDBG_EMIT,
                source,
            })?;
        Ok(EmitLink {
            id,
            helper: helper.to_path_buf(),
            pid,
        })
    }

    /// Detaches an `ldbg_emit` uprobe.
    pub fn detach_emit(&mut self, link: EmitLink) -> Result<(), BpfError> {
        self.uprobe(LDBG_EMIT)?
            .detach(link.id)
            .map_err(|source| BpfError::Program {
                program: LDBG_EMIT,
                source,
            })
    }

    /// The `EMIT_EVENTS` ring (chunks the helpers emitted). Once only.
    pub fn emit_events(&mut self) -> Result<RingReader<EmitChunk>, BpfError> {
        RingReader::new(&mut self.ebpf)
    }

    // ---- lifecycle -----------------------------------------------------------------------------

    /// Attaches the exec/fork/exit tracepoints (mounting tracefs if needed, and configuring the
    /// kernel-specific field offsets). Idempotent.
    pub fn attach_lifecycle(&mut self) -> Result<(), BpfError> {
        if self.lifecycle_attached {
            return Ok(());
        }
        tracefs::ensure_mounted()?;
        let fork_child_pid = tracefs::field_offset("sched", "sched_process_fork", "child_pid")?;
        let map = self
            .ebpf
            .map_mut("TP_OFFSETS")
            .ok_or(BpfError::MissingMap { name: "TP_OFFSETS" })?;
        let mut arr =
            Array::<_, TracepointOffsets>::try_from(map).map_err(|source| BpfError::Map {
                name: "TP_OFFSETS",
                source,
            })?;
        arr.set(
            0,
            &TracepointOffsets {
                fork_child_pid,
                _pad: 0,
            },
            0,
        )
        .map_err(|source| BpfError::Map {
            name: "TP_OFFSETS",
            source,
        })?;
        for (name, category, event) in LIFECYCLE {
            self.tracepoint(name)?
                .attach(category, event)
                .map_err(|source| BpfError::Program {
                    program: name,
                    source,
                })?;
        }
        self.lifecycle_attached = true;
        Ok(())
    }

    /// The `PROC_EVENTS` ring. Once only.
    pub fn proc_events(&mut self) -> Result<RingReader<ProcEvent>, BpfError> {
        RingReader::new(&mut self.ebpf)
    }

    // ---- host checks -------------------------------------------------------------------------

    /// Proves that uprobes work on this host: attaches the frame-entry program to `getpid` in
    /// this process's own libc, scoped to this process (the program ignores processes without
    /// offsets, so it does nothing), and detaches it. Returns the libc used.
    pub fn check_uprobes(&mut self) -> Result<PathBuf, BpfError> {
        let maps =
            std::fs::read_to_string("/proc/self/maps").map_err(|e| BpfError::UprobeCheck {
                detail: format!("reading /proc/self/maps: {e}"),
            })?;
        let libc = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| {
                let name = p.rsplit('/').next().unwrap_or_default();
                name.starts_with("libc.so") || name.starts_with("libc-")
            })
            .map(PathBuf::from)
            .ok_or_else(|| BpfError::UprobeCheck {
                detail: "no libc mapped in the agent".into(),
            })?;
        let program = self.frame_prog;
        let link = self
            .uprobe(program)?
            .attach(["getpid"], &libc, UProbeScope::CallingProcess)
            .map_err(|source| BpfError::Program { program, source })?;
        self.uprobe(program)?
            .detach(link)
            .map_err(|source| BpfError::Program { program, source })?;
        Ok(libc)
    }

    // ---- losses --------------------------------------------------------------------------------

    /// Records lost so far, summed over CPUs.
    pub fn drops(&mut self) -> Result<Drops, BpfError> {
        let map = self
            .ebpf
            .map_mut("DROPS")
            .ok_or(BpfError::MissingMap { name: "DROPS" })?;
        let arr = PerCpuArray::<_, u64>::try_from(map).map_err(|source| BpfError::Map {
            name: "DROPS",
            source,
        })?;
        let sum = |i: u32| -> Result<u64, BpfError> {
            arr.get(&i, 0)
                .map(|v| v.iter().sum())
                .map_err(|source| BpfError::Map {
                    name: "DROPS",
                    source,
                })
        };
        Ok(Drops {
            emit_ring_full: sum(drop_counter::EMIT_RING_FULL)?,
            emit_read_failed: sum(drop_counter::EMIT_READ_FAILED)?,
            frame_ring_full: sum(drop_counter::FRAME_RING_FULL)?,
            proc_ring_full: sum(drop_counter::PROC_RING_FULL)?,
            counter_insert_failed: sum(drop_counter::COUNTER_INSERT_FAILED)?,
            frame_read_failed: sum(drop_counter::FRAME_READ_FAILED)?,
        })
    }
}

/// A removal of a key that is not there is fine.
fn ignore_missing(result: Result<(), MapError>, name: &'static str) -> Result<(), BpfError> {
    match result {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(source) => Err(BpfError::Map { name, source }),
    }
}

#[cfg(test)]
mod tests;
