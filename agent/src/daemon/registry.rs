//! The process registry: which processes exist, which are CPython and debuggable, and where
//! each one is in the attach life cycle. Pure decisions over a [`Platform`], so it is tested with
//! a fake one.
use super::HelperLink;
use crate::selectors::{Matcher, ProcessFacts, Verdict};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What introspection found out about a supported CPython process.
#[derive(Clone, Debug)]
pub struct ProcessInfo {
    pub exe: String,
    pub python_version: String,
    /// The full introspection (symbols, offsets) the frame-entry probe needs; `None` for fakes.
    pub process: Option<std::sync::Arc<crate::python::PythonProcess>>,
}

/// The host, as the registry sees it.
pub trait Platform: Send + Sync + 'static {
    /// Every pid on the host.
    fn pids(&self) -> Vec<i32>;
    /// Whether `pid` names a thread of another process rather than a process (the kernel's fork
    /// tracepoint reports every new thread too; `/proc/<tid>` resolves for threads).
    fn is_thread(&self, _pid: i32) -> bool {
        false
    }
    /// The facts selectors look at; None if the process is gone.
    fn facts(&self, pid: i32) -> Option<ProcessFacts>;
    /// Ok for a supported CPython; Err(reason) for anything else. `None` when the process is
    /// not Python at all (not listed in status).
    fn inspect(&self, pid: i32) -> Option<Result<ProcessInfo, String>>;
    /// The process's start time (clock ticks since boot), to tell a reused pid from the process
    /// that had it before.
    fn start_time(&self, pid: i32) -> Option<u64>;
    /// Injects the helper (or finds the one already there) and returns a link to it.
    fn attach(&self, pid: i32) -> Result<Box<dyn HelperLink>, AttachError>;
    /// If `pid` debugs itself with the `libdebugger` Python package (its marker is active,
    /// [`crate::inprocess`]): why the agent leaves it alone.
    fn in_process(&self, _pid: i32) -> Option<String> {
        None
    }
}

/// Why [`Platform::attach`] gave no link.
#[derive(Debug)]
pub enum AttachError {
    /// Injection failed (retried after [`RETRY_AFTER`]).
    Failed(String),
    /// A helper of another build is loaded and cannot be driven by this agent (never retried;
    /// the reason says what was done with it and what to do).
    Incompatible(String),
}

impl From<String> for AttachError {
    fn from(reason: String) -> Self {
        AttachError::Failed(reason)
    }
}

/// Where a process is in the attach life cycle.
pub enum AttachState {
    /// Not debugged: unsupported interpreter (with the reason).
    Unsupported(String),
    /// Not debugged: the selectors say so.
    Ignored(Verdict),
    /// Not debugged: the process asked debuggers to stay out (CPython 3.14+ started with remote
    /// debugging disabled); the reason says so.
    Declined(String),
    /// Supported; no breakpoint yet, so no helper (the helper is injected only while at least
    /// one breakpoint exists).
    Idle,
    /// An injection is under way.
    Attaching,
    /// The helper runs; `published` is the generation of the last control write.
    Attached {
        link: Box<dyn HelperLink>,
        published: u64,
    },
    /// Injection failed; retried after `retry_at`.
    Failed { reason: String, retry_at: Instant },
    /// A helper of another libdebugger build is loaded (its control block's ABI differs): it was
    /// disarmed if its header allowed it, and is left alone; the process must restart to be
    /// debugged by this agent. Not retried.
    Incompatible(String),
    /// Not debugged by the agent, for the rest of its life: the process debugs itself with the
    /// `libdebugger` Python package ([`crate::inprocess`]).
    InProcess(String),
}

impl AttachState {
    pub fn label(&self) -> &'static str {
        match self {
            AttachState::Unsupported(_) => "unsupported",
            AttachState::Ignored(_) | AttachState::Declined(_) => "ignored",
            AttachState::Idle => "idle",
            AttachState::Attaching => "attaching",
            AttachState::Attached { .. } => "attached",
            AttachState::Failed { .. } => "failed",
            AttachState::Incompatible(_) => "incompatible",
            AttachState::InProcess(_) => "in-process",
        }
    }
}

/// One known Python process.
pub struct Entry {
    pub info: Option<ProcessInfo>,
    pub exe: String,
    pub state: AttachState,
    /// When the registry started tracking it.
    pub known_at: Instant,
    /// Its start time (clock ticks since boot), to tell a reused pid from this process.
    pub start_time: Option<u64>,
}

/// Delay before retrying a failed injection.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The registry.
pub struct Registry {
    pub entries: BTreeMap<i32, Entry>,
    /// Pids not to look at again: not Python, or not selected. With the process's start time (so
    /// a reused pid is looked at again). Rescans skip them; an exec forgets them.
    not_python: std::collections::HashMap<i32, u64>,
    matcher: Matcher,
    own_pid: i32,
}

impl Registry {
    pub fn new(matcher: Matcher) -> Self {
        Self {
            entries: BTreeMap::new(),
            not_python: std::collections::HashMap::new(),
            matcher,
            own_pid: std::process::id() as i32,
        }
    }

    /// Looks at a pid (new, or exec'd): decides whether it is a debuggable CPython.
    /// Returns true if the pid is now tracked.
    pub fn examine(&mut self, platform: &dyn Platform, pid: i32) -> bool {
        if pid == self.own_pid {
            return false;
        }
        // Looked at again (an exec/fork event and a rescan racing, a HELLO): a process already
        // tracked keeps its entry — above all its attach state, or a second injection would
        // start while the first runs.
        let start_time = platform.start_time(pid);
        if let Some(e) = self.entries.get(&pid)
            && e.start_time.is_some()
            && e.start_time == start_time
        {
            return true;
        }
        // Selectors first: their facts are a few /proc reads, while inspecting an interpreter
        // parses its ELF files. Every exec on the host reaches this point, so processes the
        // selectors exclude must stay cheap (and never be inspected).
        let Some(facts) = platform.facts(pid) else {
            self.entries.remove(&pid);
            return false;
        };
        let verdict = self.matcher.verdict(&facts);
        if verdict != Verdict::Debug {
            // Not inspected. Listed in `status` only when its executable says it is Python;
            // either way remembered, so rescans do not look at it again.
            if let Some(start) = start_time {
                self.not_python.insert(pid, start);
            }
            let file_name = std::path::Path::new(&facts.exe)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !file_name.contains("python") {
                self.entries.remove(&pid);
                return false;
            }
            self.entries.insert(
                pid,
                Entry {
                    info: None,
                    exe: facts.exe.clone(),
                    state: AttachState::Ignored(verdict),
                    known_at: Instant::now(),
                    start_time,
                },
            );
            return true;
        }
        let Some(inspected) = platform.inspect(pid) else {
            self.entries.remove(&pid);
            if let Some(start) = platform.start_time(pid) {
                self.not_python.insert(pid, start);
            }
            return false;
        };
        tracing::debug!(pid, supported = inspected.is_ok(), "process known");
        let state = match &inspected {
            Err(reason) => AttachState::Unsupported(reason.clone()),
            Ok(info) => match info.process.as_ref().and_then(|p| p.opted_out()) {
                Some(why) => {
                    tracing::info!(pid, "{why}");
                    AttachState::Declined(why)
                }
                None => AttachState::Idle,
            },
        };
        self.entries.insert(
            pid,
            Entry {
                info: inspected.ok(),
                exe: facts.exe.clone(),
                state,
                known_at: Instant::now(),
                start_time,
            },
        );
        true
    }

    /// The introspection of a tracked process (symbols, offsets), if it was inspected.
    pub fn inspected(&self, pid: i32) -> Option<std::sync::Arc<crate::python::PythonProcess>> {
        self.entries
            .get(&pid)
            .and_then(|e| e.info.as_ref())
            .and_then(|i| i.process.clone())
    }

    /// Forgets a process that exited or exec'd.
    pub fn remove(&mut self, pid: i32) -> Option<Entry> {
        self.not_python.remove(&pid);
        self.entries.remove(&pid)
    }

    /// Rescans /proc: examines new pids, forgets vanished ones.
    pub fn rescan(&mut self, platform: &dyn Platform) {
        let live: std::collections::BTreeSet<i32> = platform.pids().into_iter().collect();
        self.entries.retain(|pid, _| live.contains(pid));
        self.not_python.retain(|pid, _| live.contains(pid));
        for pid in live {
            if self.entries.contains_key(&pid) {
                continue;
            }
            if let Some(start) = self.not_python.get(&pid)
                && platform.start_time(pid) == Some(*start)
            {
                continue;
            }
            self.examine(platform, pid);
        }
    }

    /// Pids that should get a helper now (breakpoints exist, process idle or retry due).
    pub fn wanting_attach(&self, have_breakpoints: bool, now: Instant) -> Vec<i32> {
        if !have_breakpoints {
            return Vec::new();
        }
        self.entries
            .iter()
            .filter(|(_, e)| match &e.state {
                AttachState::Idle => true,
                AttachState::Failed { retry_at, .. } => *retry_at <= now,
                _ => false,
            })
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// The processes part of `status`.
    pub fn status(&self) -> Vec<Value> {
        self.entries
            .iter()
            .map(|(pid, e)| {
                let reason = match &e.state {
                    AttachState::Unsupported(r) | AttachState::Declined(r) => Some(r.clone()),
                    AttachState::Failed { reason, .. }
                    | AttachState::Incompatible(reason)
                    | AttachState::InProcess(reason) => Some(reason.clone()),
                    AttachState::Ignored(v) => Some(format!("not debugged: {v:?}")),
                    _ => None,
                };
                json!({
                    "pid": pid,
                    "exe": e.exe,
                    "python_version": e.info.as_ref().map(|i| i.python_version.clone()),
                    "build": e.info.as_ref().and_then(|i| i.process.as_ref()).map(|p| match p.linkage {
                        crate::python::Linkage::StaticExecutable => "static",
                        crate::python::Linkage::SharedLibrary => "shared",
                    }),
                    "attach_state": e.state.label(),
                    "reason": reason,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selectors::{Rule, Selectors};
    use parking_lot::Mutex;
    use std::collections::HashMap;

    /// What inspection says of a fake process: None = not Python, Ok(version), Err(reason).
    type Kind = Option<Result<&'static str, &'static str>>;

    /// A host with scripted processes: pid → (start time, kind).
    #[derive(Default)]
    struct FakeHost {
        procs: Mutex<HashMap<i32, (u64, Kind)>>,
        inspections: Mutex<Vec<i32>>,
    }

    impl Platform for FakeHost {
        fn pids(&self) -> Vec<i32> {
            self.procs.lock().keys().copied().collect()
        }
        fn facts(&self, pid: i32) -> Option<ProcessFacts> {
            self.procs.lock().get(&pid).map(|_| ProcessFacts {
                pid,
                exe: format!("/usr/bin/python-{pid}"),
                cmdline: format!("python app{pid}.py"),
                ..ProcessFacts::default()
            })
        }
        fn start_time(&self, pid: i32) -> Option<u64> {
            self.procs.lock().get(&pid).map(|p| p.0)
        }
        fn inspect(&self, pid: i32) -> Option<Result<ProcessInfo, String>> {
            self.inspections.lock().push(pid);
            let kind = self.procs.lock().get(&pid)?.1?;
            Some(
                kind.map(|v| ProcessInfo {
                    exe: format!("/usr/bin/python-{pid}"),
                    python_version: v.into(),
                    process: None,
                })
                .map_err(str::to_owned),
            )
        }
        fn attach(&self, _pid: i32) -> Result<Box<dyn HelperLink>, AttachError> {
            Err(String::from("not in this test").into())
        }
    }

    fn registry(include: Vec<Rule>) -> Registry {
        Registry::new(
            Matcher::new(&Selectors {
                include,
                exclude: vec![],
            })
            .unwrap(),
        )
    }

    #[test]
    fn rescans_do_not_re_inspect_non_python_processes_but_a_reused_pid_is_looked_at() {
        let host = FakeHost::default();
        host.procs.lock().insert(10, (100, None)); // bash
        host.procs.lock().insert(11, (100, Some(Ok("3.12.1"))));
        let mut r = registry(vec![]);
        r.rescan(&host);
        r.rescan(&host);
        let inspected = host.inspections.lock().clone();
        assert_eq!(
            inspected.iter().filter(|p| **p == 10).count(),
            1,
            "{inspected:?}"
        );
        assert_eq!(
            inspected.iter().filter(|p| **p == 11).count(),
            1,
            "{inspected:?}"
        );
        // pid 10 exits and is reused by a Python process.
        host.procs.lock().insert(10, (200, Some(Ok("3.11.7"))));
        r.rescan(&host);
        assert!(matches!(r.entries[&10].state, AttachState::Idle));
    }

    #[test]
    fn examining_a_tracked_process_again_keeps_its_attach_state() {
        let host = FakeHost::default();
        host.procs.lock().insert(30, (7, Some(Ok("3.12.1"))));
        let mut r = registry(vec![]);
        assert!(r.examine(&host, 30));
        r.entries.get_mut(&30).unwrap().state = AttachState::Attaching;
        // An exec/fork event and a rescan racing, or a HELLO: no second injection.
        assert!(r.examine(&host, 30));
        assert!(matches!(r.entries[&30].state, AttachState::Attaching));
        assert!(r.wanting_attach(true, Instant::now()).is_empty());
        assert_eq!(host.inspections.lock().len(), 1);
        // The pid reused by another process: looked at afresh.
        host.procs.lock().insert(30, (8, Some(Ok("3.13.0"))));
        assert!(r.examine(&host, 30));
        assert!(matches!(r.entries[&30].state, AttachState::Idle));
    }

    #[test]
    fn unsupported_ignored_and_attach_decisions() {
        let host = FakeHost::default();
        host.procs
            .lock()
            .insert(20, (1, Some(Err("CPython 3.10 is not supported"))));
        host.procs.lock().insert(21, (1, Some(Ok("3.12.1"))));
        host.procs.lock().insert(22, (1, Some(Ok("3.13.0"))));
        let mut r = registry(vec![
            Rule {
                pid: Some(20),
                ..Rule::default()
            },
            Rule {
                pid: Some(21),
                ..Rule::default()
            },
        ]);
        r.rescan(&host);
        assert!(matches!(&r.entries[&20].state, AttachState::Unsupported(m) if m.contains("3.10")));
        assert!(matches!(
            r.entries[&22].state,
            AttachState::Ignored(Verdict::NotIncluded)
        ));
        // The helper is injected only while a breakpoint exists, and only where selected.
        assert!(r.wanting_attach(false, Instant::now()).is_empty());
        assert_eq!(r.wanting_attach(true, Instant::now()), vec![21]);
        let status = r.status();
        assert_eq!(status.len(), 3);
        assert_eq!(status[0]["attach_state"], "unsupported");
        // A failed injection is retried only after RETRY_AFTER.
        r.entries.get_mut(&21).unwrap().state = AttachState::Failed {
            reason: "no safe point".into(),
            retry_at: Instant::now() + RETRY_AFTER,
        };
        assert!(r.wanting_attach(true, Instant::now()).is_empty());
        assert_eq!(
            r.wanting_attach(true, Instant::now() + RETRY_AFTER),
            vec![21]
        );
        // A helper of another build is never injected over, and `status` gives the reason.
        r.entries.get_mut(&21).unwrap().state =
            AttachState::Incompatible("helper ABI 1: disarmed; restart the process".into());
        assert!(
            r.wanting_attach(true, Instant::now() + 100 * RETRY_AFTER)
                .is_empty()
        );
        let p = r.status().into_iter().find(|p| p["pid"] == 21).unwrap();
        assert_eq!(p["attach_state"], "incompatible");
        assert_eq!(p["reason"], "helper ABI 1: disarmed; restart the process");
        // A process debugging itself in process is never attached again, and says why.
        r.entries.get_mut(&21).unwrap().state =
            AttachState::InProcess("in-process debugger active (…)".into());
        assert!(
            r.wanting_attach(true, Instant::now() + RETRY_AFTER * 100)
                .is_empty()
        );
        let status = r.status();
        let p21 = status.iter().find(|p| p["pid"] == 21).unwrap();
        assert_eq!(p21["attach_state"], "in-process");
        assert_eq!(p21["reason"], "in-process debugger active (…)");
    }
}
