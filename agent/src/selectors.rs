//! Which processes the agent may debug.
//!
//! Default: every supported CPython process on the host, except those started with
//! `LIBDEBUGGER_DISABLE=1` in their environment (read from `/proc/<pid>/environ`, i.e. the
//! environment the process was started with). Users narrow this down with include/exclude rules
//! on pid, executable, command line (regular expression) and cgroup (a path prefix). A process is
//! debugged when it matches no exclude rule and, if any include rule exists, at least one.
use serde::Deserialize;

/// One matching rule. Every field that is set must match.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Exact process id.
    pub pid: Option<i32>,
    /// Executable path, exact or by its file name (`python3.12` matches `/usr/bin/python3.12`).
    pub exe: Option<String>,
    /// Regular expression searched in the command line (arguments joined with spaces).
    pub cmdline: Option<String>,
    /// cgroup path prefix (as in `/proc/<pid>/cgroup`, e.g. `/system.slice/shop.service`).
    pub cgroup: Option<String>,
}

/// Include/exclude rules (config file `[selectors]`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Selectors {
    #[serde(default)]
    pub include: Vec<Rule>,
    #[serde(default)]
    pub exclude: Vec<Rule>,
}

/// Errors in the selector configuration.
#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    /// A `cmdline` pattern is not a valid regular expression.
    #[error("selector cmdline pattern `{pattern}` is not a valid regular expression: {source}")]
    BadPattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
}

/// What the rules look at, read once per process.
#[derive(Clone, Debug, Default)]
pub struct ProcessFacts {
    pub pid: i32,
    pub exe: String,
    pub cmdline: String,
    pub cgroups: Vec<String>,
    /// `LIBDEBUGGER_DISABLE=1` was in the process's start environment.
    pub opted_out: bool,
}

impl ProcessFacts {
    /// Reads the facts from /proc. A process that vanished or cannot be read yields None.
    pub fn read(pid: i32) -> Option<Self> {
        let proc = procfs::process::Process::new(pid).ok()?;
        let exe = proc
            .exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cmdline = proc.cmdline().map(|v| v.join(" ")).unwrap_or_default();
        let cgroups = proc
            .cgroups()
            .map(|c| c.into_iter().map(|g| g.pathname).collect())
            .unwrap_or_default();
        let opted_out = proc
            .environ()
            .map(|env| {
                env.get(std::ffi::OsStr::new("LIBDEBUGGER_DISABLE"))
                    .is_some_and(|v| v == "1")
            })
            .unwrap_or(false);
        Some(Self {
            pid,
            exe,
            cmdline,
            cgroups,
            opted_out,
        })
    }
}

/// Compiled selectors.
pub struct Matcher {
    include: Vec<CompiledRule>,
    exclude: Vec<CompiledRule>,
}

struct CompiledRule {
    rule: Rule,
    cmdline: Option<regex::Regex>,
}

/// Why a process is not debugged (shown in `status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Debug,
    OptedOut,
    Excluded,
    NotIncluded,
}

impl Matcher {
    pub fn new(s: &Selectors) -> Result<Self, SelectorError> {
        let compile = |rules: &[Rule]| {
            rules
                .iter()
                .map(|r| {
                    let cmdline = r
                        .cmdline
                        .as_ref()
                        .map(|p| {
                            regex::Regex::new(p).map_err(|source| SelectorError::BadPattern {
                                pattern: p.clone(),
                                source,
                            })
                        })
                        .transpose()?;
                    Ok(CompiledRule {
                        rule: r.clone(),
                        cmdline,
                    })
                })
                .collect::<Result<Vec<_>, SelectorError>>()
        };
        Ok(Self {
            include: compile(&s.include)?,
            exclude: compile(&s.exclude)?,
        })
    }

    pub fn verdict(&self, p: &ProcessFacts) -> Verdict {
        if p.opted_out {
            Verdict::OptedOut
        } else if self.exclude.iter().any(|r| r.matches(p)) {
            Verdict::Excluded
        } else if !self.include.is_empty() && !self.include.iter().any(|r| r.matches(p)) {
            Verdict::NotIncluded
        } else {
            Verdict::Debug
        }
    }
}

impl CompiledRule {
    fn matches(&self, p: &ProcessFacts) -> bool {
        let r = &self.rule;
        r.pid.is_none_or(|pid| pid == p.pid)
            && r.exe.as_ref().is_none_or(|e| {
                p.exe == *e || std::path::Path::new(&p.exe).file_name() == Some(e.as_ref())
            })
            && self
                .cmdline
                .as_ref()
                .is_none_or(|re| re.is_match(&p.cmdline))
            && r.cgroup
                .as_ref()
                .is_none_or(|c| p.cgroups.iter().any(|g| g.starts_with(c.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ProcessFacts {
        ProcessFacts {
            pid: 42,
            exe: "/usr/bin/python3.12".into(),
            cmdline: "python3.12 -m gunicorn shop.wsgi".into(),
            cgroups: vec!["/system.slice/shop.service".into()],
            opted_out: false,
        }
    }

    fn rule(f: impl FnOnce(&mut Rule)) -> Rule {
        let mut r = Rule::default();
        f(&mut r);
        r
    }

    #[test]
    fn default_debugs_everything_but_opted_out_processes() {
        let m = Matcher::new(&Selectors::default()).unwrap();
        assert_eq!(m.verdict(&facts()), Verdict::Debug);
        let mut p = facts();
        p.opted_out = true;
        assert_eq!(m.verdict(&p), Verdict::OptedOut);
    }

    #[test]
    fn include_and_exclude_rules_combine() {
        let s = Selectors {
            include: vec![rule(|r| r.cmdline = Some("gunicorn".into()))],
            exclude: vec![rule(|r| r.pid = Some(7))],
        };
        let m = Matcher::new(&s).unwrap();
        assert_eq!(m.verdict(&facts()), Verdict::Debug);
        let mut other = facts();
        other.cmdline = "python3 worker.py".into();
        assert_eq!(m.verdict(&other), Verdict::NotIncluded);
        let mut seven = facts();
        seven.pid = 7;
        assert_eq!(m.verdict(&seven), Verdict::Excluded);

        let by_exe = Matcher::new(&Selectors {
            include: vec![rule(|r| r.exe = Some("python3.12".into()))],
            exclude: vec![rule(|r| r.cgroup = Some("/system.slice/batch".into()))],
        })
        .unwrap();
        assert_eq!(by_exe.verdict(&facts()), Verdict::Debug);
    }

    #[test]
    fn a_bad_pattern_is_reported_with_the_pattern() {
        let err = Matcher::new(&Selectors {
            include: vec![rule(|r| r.cmdline = Some("(".into()))],
            exclude: vec![],
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("`(`"), "{err}");
    }

    #[test]
    fn facts_of_this_process_are_read_from_proc() {
        let me = ProcessFacts::read(std::process::id() as i32).unwrap();
        assert!(!me.exe.is_empty());
        assert!(!me.cmdline.is_empty());
    }
}
