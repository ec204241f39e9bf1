//! CPython introspection of a running process.
//!
//! [`inspect`] answers, for a pid: is it CPython, which version, where is the interpreter code
//! (static executable or shared `libpython`), where are the functions the agent probes or calls,
//! and which struct offsets the eBPF programs and the code-object reader need. Everything is read
//! from the process's files through `/proc/<pid>/root` (so processes in other mount namespaces
//! work) and from `/proc/<pid>/maps`; nothing is executed in the target.
//!
//! Version ladder (each step logged with `tracing::debug!`):
//! 1. the `Py_Version` symbol (3.11+; `const unsigned long` = `PY_VERSION_HEX`) read from the
//!    ELF file at its file offset;
//! 2. `_Py_DebugOffsets.version` (3.13+; `"xdebugpy"` at the start of `_PyRuntime`);
//! 3. the file name (`libpython3.10.so.1.0`, `python3.10`): major.minor only.
//!
//! Struct offsets: [`offsets`] (from `_Py_DebugOffsets` on 3.13+, the version table's own rows
//! on 3.11 and 3.12). Which versions are supported, and how each is attached and armed:
//! `libdebugger_common::cpython::VERSIONS`, one row per minor version.
//!
//! Refused, each with its reason (and nothing is written into the process): CPython before 3.11,
//! a minor version newer than the table, free-threaded builds, builds with `Py_TRACE_REFS`
//! (their `PyObject` header differs), a `_Py_DebugOffsets` that does not fit its row. A 3.14+
//! process started with remote debugging disabled (`PYTHON_DISABLE_REMOTE_DEBUG`,
//! `-X disable-remote-debug`) is inspected but marked [`RemoteDebug::Disabled`]: the daemon
//! leaves it alone.
//!
//! Users: `inspect` / `trace` / `doctor` (CLI), the process registry and the injector (which need
//! [`Symbols`] runtime addresses and [`PythonProcess::interpreter`]).
pub mod memory;
pub mod offsets;
pub mod version;

use crate::elf::{Elf, ElfError, ElfKind, ElfSymbol};
use libdebugger_common::bpf::PyOffsets;
use libdebugger_common::cpython::{self, Arming, DebugOffsetsError, Injection, VersionRow};
use offsets::Layout;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tracing::debug;
pub use version::Version;

/// The oldest supported CPython (Python→Python call inlining and `_PyInterpreterFrame` arrived
/// in 3.11; the offsets tables start there).
pub const MIN_SUPPORTED: (u8, u8) = (3, 11);

/// The frame-entry governor's default budget: entries per second per process.
pub const DEFAULT_ENTRIES_BUDGET_PER_SEC: u32 = 20_000;

/// `endbr64`: CET builds start functions with it; a uprobe is placed just after it.
const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// The symbols [`inspect`] looks up in the interpreter's ELF file.
pub const WANTED_SYMBOLS: &[&str] = &[
    "_PyEval_EvalFrameDefault",
    "Py_Version",
    "_PyRuntime",
    "Py_AddPendingCall",
    "PyRun_SimpleString",
    "PyGILState_Ensure",
    "PyGILState_Release",
    "PyEval_SaveThread",
    // Debug builds (`Py_REF_DEBUG`) define it; only they do.
    "_Py_NegativeRefcount",
    // `Py_TRACE_REFS` builds (a different `PyObject` header) define it; only they do.
    "_Py_PrintReferences",
];

/// An ELF file that may hold the interpreter, with the [`WANTED_SYMBOLS`] looked up once: one
/// pass over the symbol tables instead of one per name (a libpython with debug info has tens of
/// thousands of `.symtab` entries).
struct ElfImage {
    elf: Elf,
    symbols: HashMap<String, ElfSymbol>,
}

impl ElfImage {
    /// Maps and parses `path` (a path the agent can open, e.g. under `/proc/<pid>/root`).
    fn open(path: &Path) -> Result<Self, ElfError> {
        let elf = Elf::open(path)?;
        let symbols = elf.symbols(WANTED_SYMBOLS);
        Ok(Self { elf, symbols })
    }

    /// A defined symbol from [`WANTED_SYMBOLS`], from `.dynsym` or `.symtab`.
    fn symbol(&self, name: &str) -> Option<ElfSymbol> {
        self.symbols.get(name).copied()
    }

    /// Start address and size of the `.PyRuntime` data (the `_PyRuntime` symbol, else the
    /// section of that name). On 3.13+ it starts with `_Py_DebugOffsets`.
    fn py_runtime(&self) -> Option<(u64, u64)> {
        self.symbol("_PyRuntime")
            .map(|s| (s.vaddr, s.size))
            .or_else(|| self.elf.section(".PyRuntime"))
    }
}

impl std::ops::Deref for ElfImage {
    type Target = Elf;

    fn deref(&self) -> &Elf {
        &self.elf
    }
}

/// Why a process cannot be inspected or is not supported. Each message names the process and
/// says what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The process does not exist (any more).
    #[error("process {pid} does not exist (it may have exited)")]
    ProcessGone { pid: i32 },
    /// The agent may not read the process's `/proc` entries or files.
    #[error(
        "permission denied reading {path} of process {pid}: run the agent as root (it needs \
         CAP_SYS_PTRACE to look into other users' processes)"
    )]
    PermissionDenied { pid: i32, path: PathBuf },
    /// Reading `/proc/<pid>/...` failed for another reason.
    #[error("cannot read /proc entries of process {pid}: {source}")]
    Proc {
        pid: i32,
        #[source]
        source: procfs::ProcError,
    },
    /// The interpreter's ELF file could not be read or parsed.
    #[error("process {pid}: {source}")]
    Elf {
        pid: i32,
        #[source]
        source: ElfError,
    },
    /// Neither the executable nor a mapped `libpython` holds the CPython evaluator.
    #[error(
        "process {pid} ({exe}) is not a CPython interpreter: neither it nor a mapped libpython \
         defines _PyEval_EvalFrameDefault"
    )]
    NotPython { pid: i32, exe: PathBuf },
    /// PyPy (its JIT has no `_PyEval_EvalFrameDefault` and no CPython object layout).
    #[error(
        "process {pid} ({exe}) runs PyPy, which is not supported: libdebugger needs CPython 3.11+"
    )]
    PyPy { pid: i32, exe: PathBuf },
    /// CPython older than 3.11.
    #[error(
        "CPython {version} is not supported (pid {pid}, {path}): libdebugger needs {}.{}+",
        MIN_SUPPORTED.0,
        MIN_SUPPORTED.1
    )]
    UnsupportedVersion {
        pid: i32,
        /// The interpreter file as the target sees it.
        path: PathBuf,
        version: Version,
    },
    /// A free-threaded (`--disable-gil`, `python3.13t`) build.
    #[error(
        "CPython {version} free-threaded build is not supported (pid {pid}, {path}): use the \
         default (GIL) build of CPython 3.11+"
    )]
    FreeThreaded {
        pid: i32,
        path: PathBuf,
        version: Version,
    },
    /// A minor version newer than the version table (`libdebugger_common::cpython`).
    #[error(
        "CPython {version} is newer than this libdebugger knows (pid {pid}, {path}): it supports \
         3.11 to 3.{newest}; update libdebugger"
    )]
    NewerThanKnown {
        pid: i32,
        path: PathBuf,
        version: Version,
        newest: u8,
    },
    /// A build with `Py_TRACE_REFS`: every object has two more pointers in its header.
    #[error(
        "CPython {version} built with Py_TRACE_REFS is not supported (pid {pid}, {path}): its \
         object header differs from the release build's; use a release or plain debug build"
    )]
    TraceRefs {
        pid: i32,
        path: PathBuf,
        version: Version,
    },
    /// No step of the version ladder worked.
    #[error(
        "cannot tell the CPython version of process {pid} ({path}): no Py_Version symbol, no \
         _Py_DebugOffsets, and the file name has no version in it"
    )]
    UnknownVersion { pid: i32, path: PathBuf },
    /// A symbol the agent needs is missing from the interpreter's ELF file.
    #[error("{path} (process {pid}) does not define {symbol}, which libdebugger needs")]
    MissingSymbol {
        pid: i32,
        path: PathBuf,
        symbol: &'static str,
    },
    /// A symbol's address is not backed by the file (should not happen for functions).
    #[error("{symbol} in {path} (process {pid}) is not in a loadable segment of the file")]
    SymbolNotInFile {
        pid: i32,
        path: PathBuf,
        symbol: &'static str,
    },
    /// The interpreter's file is not mapped in the process (it was replaced while running?).
    #[error("{path} is not mapped at file offset 0 in process {pid}; cannot find its load address")]
    NotMapped { pid: i32, path: PathBuf },
    /// `_Py_DebugOffsets` is present but its layout is not one this agent knows.
    #[error(
        "CPython {version} (pid {pid}, {path}): its _Py_DebugOffsets layout is not one this \
         agent knows (the {group} group does not fit); update libdebugger"
    )]
    UnknownDebugOffsets {
        pid: i32,
        path: PathBuf,
        version: Version,
        /// The group whose values did not fit the version's row.
        group: &'static str,
    },
    /// A supported-looking version without an offsets table entry (e.g. a 3.13 without
    /// `_Py_DebugOffsets`).
    #[error("CPython {version} (pid {pid}, {path}): no struct offsets known for this version")]
    NoOffsets {
        pid: i32,
        path: PathBuf,
        version: Version,
    },
}

impl InspectError {
    /// True when the process was inspected and found unsupported (as opposed to an error
    /// inspecting it: gone, permission denied, unreadable files).
    pub fn is_unsupported(&self) -> bool {
        !matches!(
            self,
            Self::ProcessGone { .. }
                | Self::PermissionDenied { .. }
                | Self::Proc { .. }
                | Self::Elf { .. }
        )
    }

    /// True when the process is some Python (CPython of any version, or PyPy), supported or not.
    pub fn is_python(&self) -> bool {
        self.is_unsupported() && !matches!(self, Self::NotPython { .. })
    }

    /// The version, when it was found before the process was rejected.
    pub fn version(&self) -> Option<Version> {
        match self {
            Self::UnsupportedVersion { version, .. }
            | Self::FreeThreaded { version, .. }
            | Self::UnknownDebugOffsets { version, .. }
            | Self::NewerThanKnown { version, .. }
            | Self::TraceRefs { version, .. }
            | Self::NoOffsets { version, .. } => Some(*version),
            _ => None,
        }
    }
}

/// Where the interpreter's code lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Linkage {
    /// The executable itself holds the interpreter (Debian's `/usr/bin/python3.11`).
    StaticExecutable,
    /// A shared `libpython3.X.so` holds it (pyenv, most source builds with `--enable-shared`).
    SharedLibrary,
}

/// The ELF file holding the interpreter, and where it is loaded in the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InterpreterImage {
    /// The path as the target sees it (in its mount namespace).
    pub path: PathBuf,
    /// The same file as the agent reaches it: `/proc/<pid>/root/<path>`. Uprobes attach here.
    pub host_path: PathBuf,
    /// Added to a link-time address (`st_value`) gives the runtime address (0 for non-PIE).
    pub load_bias: u64,
    /// `ET_DYN` (position independent) rather than `ET_EXEC`.
    pub position_independent: bool,
}

/// A function or object in the interpreter's ELF file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Symbol {
    /// Offset in the ELF file (what uprobes take).
    pub file_offset: u64,
    /// Address in the target's memory.
    pub address: u64,
}

/// The symbols the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Symbols {
    /// `_PyEval_EvalFrameDefault`, where the function starts.
    pub eval_frame: Symbol,
    /// Where to attach the frame-entry uprobe: `eval_frame`, or 4 bytes later when the function
    /// starts with `endbr64`.
    pub eval_frame_probe: Symbol,
    /// `Py_AddPendingCall`.
    pub add_pending_call: Symbol,
    /// `PyRun_SimpleString`.
    pub run_simple_string: Symbol,
    /// `PyGILState_Ensure`.
    pub gil_state_ensure: Symbol,
    /// `PyGILState_Release`.
    pub gil_state_release: Symbol,
    /// `PyEval_SaveThread`.
    pub eval_save_thread: Symbol,
}

/// Which step of the version ladder gave the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionSource {
    PyVersionSymbol,
    DebugOffsets,
    FileName,
}

/// A supported CPython process, as [`inspect`] found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PythonProcess {
    pub pid: i32,
    /// The executable as the target sees it (`/proc/<pid>/exe`).
    pub exe: PathBuf,
    pub version: Version,
    pub version_source: VersionSource,
    pub linkage: Linkage,
    /// Whether the executable is position independent.
    pub pie: bool,
    pub interpreter: InterpreterImage,
    pub symbols: Symbols,
    /// Struct offsets (frame, code object, str).
    pub layout: Layout,
    /// Release or debug build.
    pub build: BuildKind,
    /// How the agent attaches to and arms this version (its row of the version table).
    pub plan: Plan,
    /// PEP 768 (3.14+): whether the process allows remote debugging.
    pub remote_debug: RemoteDebug,
}

/// Which kind of CPython build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildKind {
    Release,
    /// `--with-pydebug` (`Py_REF_DEBUG`): the same object layout as a release build.
    Debug,
}

/// How the agent attaches to and arms a process, from its version's row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// `ptrace`, or `remote_exec_then_ptrace` (PEP 768 when a thread is running Python code).
    pub injection: &'static str,
    /// `bytecode_swap` (3.11) or `sys_monitoring`.
    pub arming: &'static str,
    /// Why (the row's reason).
    pub reason: &'static str,
}

impl Plan {
    fn of(row: &VersionRow) -> Self {
        Self {
            injection: match row.injection {
                Injection::Ptrace => "ptrace",
                Injection::RemoteExecThenPtrace => "remote_exec_then_ptrace",
            },
            arming: match row.arming {
                Arming::BytecodeSwap => "bytecode_swap",
                Arming::SysMonitoring => "sys_monitoring",
            },
            reason: row.reason,
        }
    }
}

/// PEP 768's remote debugging switch of a 3.14+ process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteDebug {
    /// Before 3.14 there is no such switch.
    NotApplicable,
    Enabled,
    /// Started with `PYTHON_DISABLE_REMOTE_DEBUG` or `-X disable-remote-debug`: the process has
    /// asked debuggers to stay out, and the agent does.
    Disabled,
    /// The switch could not be read (no interpreter yet, or the memory is not readable).
    Unknown,
}

impl PythonProcess {
    /// Why the agent leaves this process alone although it is supported, if it does.
    pub fn opted_out(&self) -> Option<String> {
        (self.remote_debug == RemoteDebug::Disabled).then(|| {
            format!(
                "process {} (CPython {}) has remote debugging disabled \
                 (PYTHON_DISABLE_REMOTE_DEBUG or -X disable-remote-debug): it asked debuggers \
                 to stay out, so libdebugger leaves it alone",
                self.pid, self.version
            )
        })
    }
}

impl PythonProcess {
    /// The per-process record the frame-entry eBPF probe reads (map `PY_OFFSETS`, key tgid).
    pub fn bpf_offsets(&self, entries_budget_per_sec: u32) -> PyOffsets {
        PyOffsets {
            frame_code: self.layout.frame_code,
            code_tag_mask: self.layout.code_tag_mask,
            entries_budget_per_sec,
            _pad: 0,
        }
    }
}

/// A file mapped in the target.
struct Mapping {
    /// The path as the target sees it.
    path: PathBuf,
    start: u64,
    offset: u64,
}

fn proc_err(pid: i32, err: procfs::ProcError) -> InspectError {
    match err {
        procfs::ProcError::NotFound(_) => InspectError::ProcessGone { pid },
        procfs::ProcError::PermissionDenied(path) => InspectError::PermissionDenied {
            pid,
            path: path.unwrap_or_else(|| PathBuf::from(format!("/proc/{pid}"))),
        },
        source => InspectError::Proc { pid, source },
    }
}

fn elf_err(pid: i32, source: ElfError) -> InspectError {
    match source {
        ElfError::Open { path, source }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            InspectError::PermissionDenied { pid, path }
        }
        ElfError::Open { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound
                && !Path::new(&format!("/proc/{pid}")).exists() =>
        {
            InspectError::ProcessGone { pid }
        }
        source => InspectError::Elf { pid, source },
    }
}

/// `/proc/<pid>/root` + a path as the target sees it.
pub fn host_path(pid: i32, target_path: &Path) -> PathBuf {
    let rel = target_path.strip_prefix("/").unwrap_or(target_path);
    PathBuf::from(format!("/proc/{pid}/root")).join(rel)
}

/// The file name of a path, as UTF-8 (lossy).
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn mappings(pid: i32, process: &procfs::process::Process) -> Result<Vec<Mapping>, InspectError> {
    let maps = process.maps().map_err(|e| proc_err(pid, e))?;
    Ok(maps
        .into_iter()
        .filter_map(|m| match m.pathname {
            procfs::process::MMapPath::Path(path) => Some(Mapping {
                path,
                start: m.address.0,
                offset: m.offset,
            }),
            _ => None,
        })
        .collect())
}

/// Strips the " (deleted)" suffix the kernel adds to replaced files.
fn undeleted(path: PathBuf) -> PathBuf {
    match path.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(s) => PathBuf::from(s),
        None => path,
    }
}

/// Inspects process `pid`: see the module documentation. `Ok` only for a supported CPython.
pub fn inspect(pid: i32) -> Result<PythonProcess, InspectError> {
    let process = procfs::process::Process::new(pid).map_err(|e| proc_err(pid, e))?;
    let exe = undeleted(process.exe().map_err(|e| proc_err(pid, e))?);
    let maps = mappings(pid, &process)?;
    debug!(pid, exe = %exe.display(), mappings = maps.len(), "inspecting");

    let is_pypy = |p: &Path| file_name(p).to_ascii_lowercase().contains("pypy");
    if is_pypy(&exe) || maps.iter().any(|m| is_pypy(&m.path)) {
        return Err(InspectError::PyPy { pid, exe });
    }

    // Which file holds the interpreter: the executable (static) or a mapped libpython (shared).
    let exe_image = ElfImage::open(&host_path(pid, &exe)).map_err(|e| elf_err(pid, e))?;
    let pie = exe_image.kind() == ElfKind::Dynamic;
    let (linkage, image, image_path) = if exe_image.symbol("_PyEval_EvalFrameDefault").is_some() {
        debug!(
            pid,
            "the executable defines _PyEval_EvalFrameDefault: static build"
        );
        (Linkage::StaticExecutable, exe_image, exe.clone())
    } else {
        let lib = maps
            .iter()
            .map(|m| undeleted(m.path.clone()))
            .find(|p| file_name(p).starts_with("libpython"));
        let Some(lib) = lib else {
            return Err(InspectError::NotPython { pid, exe });
        };
        debug!(pid, lib = %lib.display(), "shared build: the interpreter is in libpython");
        let image = ElfImage::open(&host_path(pid, &lib)).map_err(|e| elf_err(pid, e))?;
        if image.symbol("_PyEval_EvalFrameDefault").is_none() {
            return Err(InspectError::NotPython { pid, exe });
        }
        (Linkage::SharedLibrary, image, lib)
    };

    // Version ladder.
    let runtime = image.py_runtime();
    let header = runtime.and_then(|(vaddr, size)| {
        (size >= 24)
            .then(|| image.read_at_vaddr(vaddr, 24))
            .flatten()
            .and_then(cpython::debug_offsets_header)
    });
    let name_info = version::parse_name(&file_name(&image_path))
        .or_else(|| version::parse_name(&file_name(&exe)));
    let py_version_sym = image.symbol("Py_Version").and_then(|s| {
        let bytes = image.read_at_vaddr(s.vaddr, 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        Version::from_hex(u64::from_le_bytes(b) as u32)
    });
    // Each step is logged whatever it finds, so `LIBDEBUGGER_LOG=libdebugger_agent=debug`
    // shows why a version was (or was not) recognised.
    let from_debug_offsets = header.and_then(|(hex, _)| Version::from_hex(hex as u32));
    debug!(
        pid,
        path = %image_path.display(),
        step1_py_version = ?py_version_sym.map(|v| v.to_string()),
        step2_debug_offsets = ?from_debug_offsets.map(|v| v.to_string()),
        step3_file_name = ?name_info.map(|n| n.version.to_string()),
        "version ladder"
    );
    let (version, version_source) = if let Some(v) = py_version_sym {
        debug!(pid, %v, "version from step 1, the Py_Version symbol");
        (v, VersionSource::PyVersionSymbol)
    } else if let Some(v) = from_debug_offsets {
        debug!(pid, %v, "no Py_Version symbol; version from step 2, _Py_DebugOffsets");
        (v, VersionSource::DebugOffsets)
    } else if let Some(n) = name_info {
        debug!(
            pid,
            v = %n.version,
            "no Py_Version, no _Py_DebugOffsets; version from step 3, the file name"
        );
        (n.version, VersionSource::FileName)
    } else {
        debug!(pid, "no step of the version ladder found a version");
        return Err(InspectError::UnknownVersion {
            pid,
            path: image_path,
        });
    };

    let free_threaded =
        header.is_some_and(|(_, ft)| ft) || name_info.is_some_and(|n| n.free_threaded);
    if free_threaded {
        return Err(InspectError::FreeThreaded {
            pid,
            path: image_path,
            version,
        });
    }
    if version.mm() < MIN_SUPPORTED {
        return Err(InspectError::UnsupportedVersion {
            pid,
            path: image_path,
            version,
        });
    }
    let Some(row) = cpython::row(version.major, version.minor) else {
        return Err(InspectError::NewerThanKnown {
            pid,
            path: image_path,
            version,
            newest: cpython::newest_minor(),
        });
    };
    if image.symbol("_Py_PrintReferences").is_some() {
        return Err(InspectError::TraceRefs {
            pid,
            path: image_path,
            version,
        });
    }
    let build = if image.symbol("_Py_NegativeRefcount").is_some() {
        BuildKind::Debug
    } else {
        BuildKind::Release
    };

    let mut debug_offsets = None;
    let layout = match &row.offsets {
        cpython::OffsetsSource::Static(s) => {
            let layout = offsets::from_static(row, s);
            debug!(pid, ?layout, "struct offsets from the version table");
            layout
        }
        cpython::OffsetsSource::DebugOffsets(l) => {
            let len = cpython::debug_offsets_len(l) as u64;
            let bytes = runtime
                .filter(|&(_, size)| size >= len)
                .and_then(|(vaddr, _)| image.read_at_vaddr(vaddr, len));
            match bytes.map(|b| cpython::parse_debug_offsets(b, l)) {
                Some(Ok(d)) => {
                    let layout = offsets::from_debug_offsets(row, &d);
                    debug!(pid, ?layout, "struct offsets from _Py_DebugOffsets");
                    debug_offsets = Some(d);
                    layout
                }
                Some(Err(DebugOffsetsError::Implausible { group })) => {
                    return Err(InspectError::UnknownDebugOffsets {
                        pid,
                        path: image_path,
                        version,
                        group,
                    });
                }
                None | Some(Err(DebugOffsetsError::NotThere)) => {
                    return Err(InspectError::NoOffsets {
                        pid,
                        path: image_path,
                        version,
                    });
                }
            }
        }
    };

    // Load bias: the mapping of the file at offset 0 starts at the first PT_LOAD's page.
    let load_bias = if image.kind() == ElfKind::Executable {
        0
    } else {
        let map = maps
            .iter()
            .find(|m| m.offset == 0 && undeleted(m.path.clone()) == image_path)
            .ok_or_else(|| InspectError::NotMapped {
                pid,
                path: image_path.clone(),
            })?;
        map.start.wrapping_sub(image.first_load_vaddr())
    };
    let interpreter = InterpreterImage {
        path: image_path.clone(),
        host_path: image.path().to_path_buf(),
        load_bias,
        position_independent: image.kind() == ElfKind::Dynamic,
    };

    let symbol = |name: &'static str| -> Result<Symbol, InspectError> {
        let sym = image
            .symbol(name)
            .ok_or_else(|| InspectError::MissingSymbol {
                pid,
                path: image_path.clone(),
                symbol: name,
            })?;
        let file_offset =
            image
                .file_offset(sym.vaddr)
                .ok_or_else(|| InspectError::SymbolNotInFile {
                    pid,
                    path: image_path.clone(),
                    symbol: name,
                })?;
        Ok(Symbol {
            file_offset,
            address: sym.vaddr.wrapping_add(load_bias),
        })
    };
    let eval_frame = symbol("_PyEval_EvalFrameDefault")?;
    let eval_frame_probe = if image.read_at_offset(eval_frame.file_offset, 4) == Some(&ENDBR64[..])
    {
        debug!(
            pid,
            "_PyEval_EvalFrameDefault starts with endbr64: probing 4 bytes later"
        );
        Symbol {
            file_offset: eval_frame.file_offset + 4,
            address: eval_frame.address + 4,
        }
    } else {
        eval_frame
    };
    let symbols = Symbols {
        eval_frame,
        eval_frame_probe,
        add_pending_call: symbol("Py_AddPendingCall")?,
        run_simple_string: symbol("PyRun_SimpleString")?,
        gil_state_ensure: symbol("PyGILState_Ensure")?,
        gil_state_release: symbol("PyGILState_Release")?,
        eval_save_thread: symbol("PyEval_SaveThread")?,
    };
    let remote_debug = match (debug_offsets.and_then(|d| d.remote_debug), runtime) {
        (Some(r), Some((vaddr, _))) => {
            let runtime_addr = vaddr.wrapping_add(load_bias);
            remote_debug_switch(pid, runtime_addr, debug_offsets, r)
        }
        _ => RemoteDebug::NotApplicable,
    };
    Ok(PythonProcess {
        pid,
        exe,
        version,
        version_source,
        linkage,
        pie,
        interpreter,
        symbols,
        layout,
        build,
        plan: Plan::of(row),
        remote_debug,
    })
}

/// Reads `interp->config.remote_debug` of the main interpreter (PEP 768).
fn remote_debug_switch(
    pid: i32,
    runtime: u64,
    d: Option<cpython::DebugOffsets>,
    r: cpython::RemoteDebugOffsets,
) -> RemoteDebug {
    let Some(d) = d else {
        return RemoteDebug::NotApplicable;
    };
    let read = || -> Option<u32> {
        let interp = crate::remote::read_u64(pid, runtime + d.interpreters_head).ok()?;
        if interp == 0 {
            return None;
        }
        crate::remote::read_u32(pid, interp + r.remote_debugging_enabled).ok()
    };
    match read() {
        Some(0) => RemoteDebug::Disabled,
        Some(_) => RemoteDebug::Enabled,
        None => RemoteDebug::Unknown,
    }
}

/// One process found by [`scan`].
#[derive(Debug)]
pub struct ScannedProcess {
    pub pid: i32,
    /// The executable as the target sees it, when readable.
    pub exe: Option<PathBuf>,
    pub result: Result<PythonProcess, InspectError>,
}

/// Every process on the host that looks like Python (its executable or a mapping is named
/// `python*`, `libpython*` or `pypy*`), inspected. Processes that vanish meanwhile are skipped.
pub fn scan() -> Vec<ScannedProcess> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for process in all.flatten() {
        let pid = process.pid();
        if pid == me {
            continue;
        }
        let exe = process.exe().ok().map(undeleted);
        let looks_python = |p: &Path| {
            let n = file_name(p).to_ascii_lowercase();
            n.starts_with("python") || n.starts_with("libpython") || n.contains("pypy")
        };
        let by_exe = exe.as_deref().is_some_and(looks_python);
        let by_maps = !by_exe
            && process.maps().is_ok_and(|maps| {
                maps.into_iter().any(|m| {
                    matches!(&m.pathname, procfs::process::MMapPath::Path(p) if looks_python(p))
                })
            });
        if !by_exe && !by_maps {
            continue;
        }
        let result = inspect(pid);
        if matches!(
            result,
            Err(InspectError::ProcessGone { .. }) | Err(InspectError::NotPython { .. })
        ) {
            continue;
        }
        out.push(ScannedProcess { pid, exe, result });
    }
    out
}

#[cfg(test)]
mod tests;
