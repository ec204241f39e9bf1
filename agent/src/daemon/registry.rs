//! The process registry: which processes exist, which are CPython and debuggable, and where
//! each one is in the attach life cycle. Pure decisions over a [`Platform`], so it is tested with
//! a fake one.
use super::HelperLink;
use crate::selectors::{Matcher, ProcessFacts, Verdict};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What introspection found out about a supported CPython process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessInfo {
    pub exe: String,
    pub python_version: String,
}

/// The host, as the registry sees it.
pub trait Platform: Send + Sync + 'static {
    /// Every pid on the host.
    fn pids(&self) -> Vec<i32>;
    /// The facts selectors look at; None if the process is gone.
    fn facts(&self, pid: i32) -> Option<ProcessFacts>;
    /// Ok for a supported CPython; Err(reason) for anything else. `None` when the process is
    /// not Python at all (not listed in status).
    fn inspect(&self, pid: i32) -> Option<Result<ProcessInfo, String>>;
    /// Injects the helper (or finds the one already there) and returns a link to it.
    fn attach(&self, pid: i32) -> Result<Box<dyn HelperLink>, String>;
}

/// Where a process is in the attach life cycle.
pub enum AttachState {
    /// Not debugged: unsupported interpreter (with the reason).
    Unsupported(String),
    /// Not debugged: the selectors say so.
    Ignored(Verdict),
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
}

impl AttachState {
    pub fn label(&self) -> &'static str {
        match self {
            AttachState::Unsupported(_) => "unsupported",
            AttachState::Ignored(_) => "ignored",
            AttachState::Idle => "idle",
            AttachState::Attaching => "attaching",
            AttachState::Attached { .. } => "attached",
            AttachState::Failed { .. } => "failed",
        }
    }
}

/// One known Python process.
pub struct Entry {
    pub info: Option<ProcessInfo>,
    pub exe: String,
    pub state: AttachState,
}

/// Delay before retrying a failed injection.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The registry.
pub struct Registry {
    pub entries: BTreeMap<i32, Entry>,
    matcher: Matcher,
    own_pid: i32,
}

impl Registry {
    pub fn new(matcher: Matcher) -> Self {
        Self {
            entries: BTreeMap::new(),
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
        let Some(inspected) = platform.inspect(pid) else {
            self.entries.remove(&pid);
            return false;
        };
        let facts = platform.facts(pid);
        let exe = facts.as_ref().map(|f| f.exe.clone()).unwrap_or_default();
        let state = match (&inspected, &facts) {
            (Err(reason), _) => AttachState::Unsupported(reason.clone()),
            (Ok(_), None) => return false,
            (Ok(_), Some(f)) => match self.matcher.verdict(f) {
                Verdict::Debug => AttachState::Idle,
                other => AttachState::Ignored(other),
            },
        };
        self.entries.insert(
            pid,
            Entry {
                info: inspected.ok(),
                exe,
                state,
            },
        );
        true
    }

    /// Forgets a process that exited.
    pub fn remove(&mut self, pid: i32) -> Option<Entry> {
        self.entries.remove(&pid)
    }

    /// Rescans /proc: examines new pids, forgets vanished ones.
    pub fn rescan(&mut self, platform: &dyn Platform) {
        let live: std::collections::BTreeSet<i32> = platform.pids().into_iter().collect();
        self.entries.retain(|pid, _| live.contains(pid));
        for pid in live {
            if !self.entries.contains_key(&pid) {
                self.examine(platform, pid);
            }
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
                    AttachState::Unsupported(r) => Some(r.clone()),
                    AttachState::Failed { reason, .. } => Some(reason.clone()),
                    AttachState::Ignored(v) => Some(format!("not debugged: {v:?}")),
                    _ => None,
                };
                json!({
                    "pid": pid,
                    "exe": e.exe,
                    "python_version": e.info.as_ref().map(|i| i.python_version.clone()),
                    "attach_state": e.state.label(),
                    "reason": reason,
                })
            })
            .collect()
    }
}
