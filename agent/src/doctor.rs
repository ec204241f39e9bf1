//! `doctor`: can this host run the agent? Each check says what it found and, when it fails,
//! what to do. The checks try the real thing where they can (load the eBPF object, attach a
//! uprobe) rather than guess from versions.
use crate::bpf::{Bpf, tracefs};
use crate::python::{self, ScannedProcess};
use serde::Serialize;

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Works, with a caveat.
    Warn,
    /// The agent cannot run (or cannot do part of its job) until this is fixed.
    Fail,
}

/// One check.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do (for `Warn` and `Fail`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// A CPython (or other Python) process found on the host.
#[derive(Clone, Debug, Serialize)]
pub struct PythonProcessStatus {
    pub pid: i32,
    pub exe: Option<String>,
    pub python_version: Option<String>,
    pub supported: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Everything `doctor` found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub python_processes: Vec<PythonProcessStatus>,
    /// False when a check failed: the agent cannot run here as it is.
    pub can_run: bool,
}

/// Runs every check and scans the host's Python processes.
pub fn run() -> Report {
    let mut checks = vec![kernel()];
    checks.extend(capabilities());
    checks.push(ptrace_scope());
    checks.push(tracefs_check());
    checks.push(helper_check());
    checks.extend(bpf_checks());
    checks.extend(posthog_checks());
    let python_processes = python::scan().into_iter().map(status_of).collect();
    let can_run = checks.iter().all(|c| c.status != Status::Fail);
    Report {
        checks,
        python_processes,
        can_run,
    }
}

/// The PostHog settings (environment and agent.toml, as `run` reads them) and, when PostHog is
/// configured, its keys: the project key with the feature-flag endpoint (capture takes unknown
/// keys silently), the personal key with the active-breakpoints endpoint.
fn posthog_checks() -> Vec<Check> {
    use crate::posthog::{KeyStatus, Mode, PollerConfig, config};
    let settings = match config::resolve(&config::PosthogArgs::default(), &config::process_env) {
        Ok(s) => s,
        Err(e) => {
            return vec![Check::fail(
                "configuration",
                e.to_string(),
                "fix the setting named above",
            )];
        }
    };
    let Mode::PostHog(ph) = &settings.mode else {
        return vec![Check::ok(
            "posthog",
            "not configured: local mode (breakpoints from --breakpoints or the CLI)",
        )];
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return vec![Check::warn("posthog", format!("cannot check: {e}"), "-")],
    };
    let mut out = Vec::new();
    out.push(
        match rt.block_on(crate::posthog::check_project_key(
            &ph.ingest_host,
            &ph.api_key,
        )) {
            KeyStatus::Valid => Check::ok(
                "posthog project key",
                format!("{} knows POSTHOG_API_KEY", ph.ingest_host),
            ),
            KeyStatus::Invalid(m) => Check::fail(
                "posthog project key",
                m,
                "set POSTHOG_API_KEY (or POSTHOG_HOST)",
            ),
            KeyStatus::Unverified(m) => Check::warn(
                "posthog project key",
                m,
                "check the network path to POSTHOG_HOST",
            ),
            KeyStatus::Pending => Check::warn(
                "posthog project key",
                "not checked",
                "check the network path to POSTHOG_HOST",
            ),
        },
    );
    match PollerConfig::from_settings(ph) {
        None => out.push(Check::ok(
            "posthog breakpoints",
            "POSTHOG_PERSONAL_API_KEY not set: breakpoints come from --breakpoints, \
             --breakpoints-url or the CLI",
        )),
        Some(cfg) => out.push(match rt.block_on(crate::posthog::poller::probe(&cfg)) {
            Ok(n) => Check::ok(
                "posthog breakpoints",
                format!("{} answers with {n} active breakpoints", cfg.endpoint()),
            ),
            Err((true, m)) => Check::warn(
                "posthog breakpoints",
                m,
                "take breakpoints from --breakpoints PATH or --breakpoints-url URL",
            ),
            Err((false, m)) => Check::fail(
                "posthog breakpoints",
                m,
                "set POSTHOG_PERSONAL_API_KEY / POSTHOG_PROJECT_ID / POSTHOG_HOST as said above",
            ),
        }),
    }
    out
}

fn status_of(s: ScannedProcess) -> PythonProcessStatus {
    let exe = s.exe.map(|e| e.display().to_string());
    match s.result {
        Ok(p) => PythonProcessStatus {
            pid: s.pid,
            exe,
            python_version: Some(p.version.to_string()),
            supported: true,
            reason: None,
        },
        Err(e) => PythonProcessStatus {
            pid: s.pid,
            exe,
            python_version: e.version().map(|v| v.to_string()),
            supported: false,
            reason: Some(e.to_string()),
        },
    }
}

/// Linux 5.8 brought ring buffers, CAP_BPF and CAP_PERFMON.
const MIN_KERNEL: (u32, u32) = (5, 8);

fn kernel() -> Check {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    if version >= MIN_KERNEL {
        Check::ok("kernel", format!("Linux {release}"))
    } else {
        Check::fail(
            "kernel",
            format!("Linux {release}"),
            format!(
                "libdebugger needs Linux {}.{}+ (BPF ring buffers, CAP_BPF); upgrade the kernel",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
        )
    }
}

fn capabilities() -> Vec<Check> {
    use caps::{CapSet, Capability};
    let have = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
    let sys_admin = have(Capability::CAP_SYS_ADMIN);
    let mut out = Vec::new();
    for (cap, name, why) in [
        (
            Capability::CAP_BPF,
            "CAP_BPF",
            "load eBPF programs and maps",
        ),
        (
            Capability::CAP_PERFMON,
            "CAP_PERFMON",
            "attach uprobes and tracepoints",
        ),
        (
            Capability::CAP_SYS_PTRACE,
            "CAP_SYS_PTRACE",
            "read other processes' memory and inject the helper",
        ),
    ] {
        let check = if have(cap) {
            Check::ok(name, format!("present (needed to {why})"))
        } else if sys_admin && cap != Capability::CAP_SYS_PTRACE {
            Check::warn(
                name,
                format!("missing, but CAP_SYS_ADMIN covers it (needed to {why})"),
                format!("grant {name} instead of relying on CAP_SYS_ADMIN"),
            )
        } else {
            Check::fail(
                name,
                format!("missing (needed to {why})"),
                "run the agent as root (sudo libdebugger-agent) or grant it CAP_BPF, CAP_PERFMON \
                 and CAP_SYS_PTRACE",
            )
        };
        out.push(check);
    }
    out
}

fn ptrace_scope() -> Check {
    const NAME: &str = "ptrace restrictions";
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope") {
        Err(_) => Check::ok(NAME, "Yama is not enabled: no extra ptrace restrictions"),
        Ok(v) => match v.trim() {
            "0" => Check::ok(NAME, "yama ptrace_scope 0 (classic permissions)"),
            "1" => Check::ok(
                NAME,
                "yama ptrace_scope 1 (restricted to descendants; CAP_SYS_PTRACE overrides)",
            ),
            "2" => Check::ok(
                NAME,
                "yama ptrace_scope 2 (admin only: CAP_SYS_PTRACE needed)",
            ),
            "3" => Check::fail(
                NAME,
                "yama ptrace_scope 3: ptrace is disabled for everyone until reboot",
                "the helper cannot be injected; set kernel.yama.ptrace_scope=2 (or lower) in \
                 sysctl and reboot",
            ),
            other => Check::warn(
                NAME,
                format!("yama ptrace_scope {other} (unknown value)"),
                "check /proc/sys/kernel/yama/ptrace_scope",
            ),
        },
    }
}

fn tracefs_check() -> Check {
    const NAME: &str = "tracefs";
    if tracefs::is_mounted() {
        Check::ok(NAME, format!("mounted at {}", tracefs::TRACEFS))
    } else {
        Check::warn(
            NAME,
            format!("not mounted at {}", tracefs::TRACEFS),
            "the agent mounts it when it starts (as root); or: mount -t tracefs nodev \
             /sys/kernel/tracing",
        )
    }
}

/// The helper library the agent injects: found where `run` looks for it, an ELF file with the
/// helper's entry points, and built for this agent's ABI.
fn helper_check() -> Check {
    use libdebugger_common::helper_abi::{ABI_VERSION, CONTROL_MAGIC, control_offsets};
    const NAME: &str = "helper library";
    let path = match crate::daemon::host::find_helper(None) {
        Ok(p) => p,
        Err(e) => {
            return Check::fail(
                NAME,
                e,
                "install the package again (the helper ships as \
                 /usr/lib/libdebugger/libdebugger_helper.abi3.so), or set LIBDEBUGGER_HELPER",
            );
        }
    };
    let reinstall = "the file is not the helper of this agent's build: install the package again";
    let elf = match crate::elf::Elf::open(&path) {
        Ok(elf) => elf,
        Err(e) => return Check::fail(NAME, format!("{}: {e}", path.display()), reinstall),
    };
    let missing: Vec<&str> = [
        crate::inject::ATTACH_SYMBOL,
        crate::inject::CONTROL_SYMBOL,
        "ldbg_emit",
    ]
    .into_iter()
    .filter(|s| elf.symbol(s).is_none())
    .collect();
    if !missing.is_empty() {
        return Check::fail(
            NAME,
            format!("{} lacks {}", path.display(), missing.join(", ")),
            reinstall,
        );
    }
    // The control block's initial bytes (magic, ABI) as the file carries them.
    let header = elf
        .symbol(crate::inject::CONTROL_SYMBOL)
        .and_then(|s| elf.file_offset(s.vaddr))
        .and_then(|off| {
            let bytes = std::fs::read(&path).ok()?;
            let at = |o: usize, n: usize| bytes.get(off as usize + o..off as usize + o + n);
            let magic = u64::from_le_bytes(at(control_offsets::MAGIC, 8)?.try_into().ok()?);
            let abi = u32::from_le_bytes(at(control_offsets::ABI_VERSION, 4)?.try_into().ok()?);
            Some((magic, abi))
        });
    match header {
        Some((CONTROL_MAGIC, ABI_VERSION)) => Check::ok(
            NAME,
            format!("{} (helper ABI {ABI_VERSION})", path.display()),
        ),
        Some((magic, abi)) => Check::fail(
            NAME,
            format!(
                "{}: control block magic {magic:#x}, ABI {abi}; this agent speaks ABI {ABI_VERSION}",
                path.display()
            ),
            reinstall,
        ),
        None => Check::fail(
            NAME,
            format!("{}: cannot read its control block", path.display()),
            reinstall,
        ),
    }
}

fn bpf_checks() -> Vec<Check> {
    let mut out = Vec::new();
    let mut bpf = match Bpf::load() {
        Ok(bpf) => {
            out.push(Check::ok(
                "eBPF",
                "loaded the agent's eBPF object: maps created, every program verified",
            ));
            out.push(Check::ok(
                "ring buffers",
                "BPF_MAP_TYPE_RINGBUF maps created (FRAME_EVENTS, EMIT_EVENTS, PROC_EVENTS)",
            ));
            bpf
        }
        Err(e) => {
            out.push(Check::fail(
                "eBPF",
                e.to_string(),
                "run as root on Linux 5.8+ with BPF enabled (CONFIG_BPF_SYSCALL) and unprivileged \
                 limits not in the way (ulimit -l for kernels before 5.11)",
            ));
            return out;
        }
    };
    match bpf.check_uprobes() {
        Ok(libc) => out.push(Check::ok(
            "uprobes",
            format!(
                "attached and detached a pid-scoped uprobe on {}:getpid",
                libc.display()
            ),
        )),
        Err(e) => out.push(Check::fail(
            "uprobes",
            e.to_string(),
            "the kernel needs CONFIG_UPROBE_EVENTS; run as root",
        )),
    }
    match bpf.attach_lifecycle() {
        Ok(()) => out.push(Check::ok(
            "lifecycle tracepoints",
            "attached sched_process_exec/fork/exit",
        )),
        Err(e) => out.push(Check::warn(
            "lifecycle tracepoints",
            e.to_string(),
            "without them the agent finds new processes by scanning /proc (slower)",
        )),
    }
    out
}
