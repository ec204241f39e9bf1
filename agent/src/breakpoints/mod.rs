//! The breakpoint model and the desired breakpoint set.
//!
//! A [`Breakpoint`] is what a source (PostHog's Live Debugger API, the local breakpoints file,
//! the CLI) says should be armed; a [`DesiredSet`] is the complete set one source wants right
//! now. Sources publish a new [`DesiredSet`] on a `tokio::sync::watch` channel whenever any field
//! of any breakpoint changes; consumers compute a [`Diff`] against what they applied last.
//!
//! * [`self::file`]: the local breakpoints file (TOML or PostHog's JSON) or a directory of them
//!   (a Kubernetes ConfigMap), watched for changes.
//! * [`url`]: a URL serving PostHog's JSON shape, polled with `ETag`.
//! * [`sources`]: several sources merged into one desired set.
//! * [`pathmatch`]: maps a breakpoint's repository-relative `file` to a code object's absolute
//!   path.
pub mod file;
pub mod pathmatch;
pub mod sources;
pub mod url;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One breakpoint as its source describes it.
///
/// `file` and `line` are kept exactly as received: PostHog's UI matches hits to breakpoints by
/// `$file_path == filename` and `$line_number == line_number`, so events must echo them verbatim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Breakpoint {
    /// Stable identifier: PostHog's UUID, or for local breakpoints the given id or `file:line`.
    pub id: String,
    /// Repository-relative (or absolute) path of the source file, as received.
    pub file: String,
    /// 1-based line number, as received.
    pub line: u32,
    /// Optional Python expression; the hit is captured only when it is true.
    pub condition: Option<String>,
    /// A disabled breakpoint stays in the set (so a change to `enabled` is visible) but is not
    /// armed.
    pub enabled: bool,
    /// `owner/repo` the breakpoint belongs to, when the source says so.
    pub repository: Option<String>,
    /// Where it comes from (`posthog`, `file /etc/…/x.toml`, `url https://…`, `cli`), shown in
    /// `status` and `break list`.
    #[serde(default)]
    pub source: String,
    /// Why its source's entry is unusable (a field of the wrong type, an id defined twice): an
    /// error status for this breakpoint only, never armed. See also [`problem`].
    #[serde(default)]
    pub invalid: Option<String>,
    /// The action, when it is not a snapshot: a logpoint's message template (`{expr}` holes of
    /// the condition language), sent as `$data_logpoint_hit`. The location (`file`, `line`) and
    /// everything else stay the same for both kinds.
    #[serde(default)]
    pub message: Option<String>,
    /// A logpoint's messages per second (default 100 in the helper).
    #[serde(default)]
    pub rate: Option<u32>,
}

impl Breakpoint {
    /// The id a local breakpoint gets when none is given: `file:line`.
    pub fn derived_id(file: &str, line: u32) -> String {
        format!("{file}:{line}")
    }

    /// `logpoint` for a breakpoint with a message, else `breakpoint` (shown in `status`).
    pub fn kind(&self) -> &'static str {
        if self.message.is_some() {
            "logpoint"
        } else {
            "breakpoint"
        }
    }
}

/// Why `b` cannot be armed, if it cannot: what its source said ([`Breakpoint::invalid`]), line
/// 0 (PostHog accepts it: its `line_number` is a PositiveIntegerField), an empty filename, or an
/// absolute filename outside every source root. An error status for that breakpoint only; a
/// condition that does not parse is reported the same way by the helper, which parses it.
pub fn problem(b: &Breakpoint, source_roots: &[std::path::PathBuf]) -> Option<String> {
    if let Some(why) = &b.invalid {
        return Some(why.clone());
    }
    if b.file.trim().is_empty() {
        return Some("the breakpoint has an empty filename".into());
    }
    if b.line == 0 {
        return Some(format!(
            "line 0 of {}: Python's lines start at 1, so this breakpoint can never be hit",
            b.file
        ));
    }
    let path = std::path::Path::new(&b.file);
    if path.is_absolute()
        && !source_roots.is_empty()
        && !source_roots.iter().any(|r| path.starts_with(r))
    {
        let roots: Vec<String> = source_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        return Some(format!(
            "{} is an absolute path outside the source roots ({}); no file of this host can \
             match it",
            b.file,
            roots.join(", ")
        ));
    }
    None
}

/// The complete set of breakpoints one source wants, keyed by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredSet {
    /// Breakpoints by id (ordered, so iteration and serialisation are deterministic).
    pub breakpoints: BTreeMap<String, Breakpoint>,
}

impl DesiredSet {
    /// Builds a set; a later breakpoint with the same id replaces an earlier one.
    pub fn from_breakpoints(items: impl IntoIterator<Item = Breakpoint>) -> Self {
        Self {
            breakpoints: items.into_iter().map(|b| (b.id.clone(), b)).collect(),
        }
    }

    /// The same set with every breakpoint's [`Breakpoint::source`] set to `source`.
    pub fn with_source(mut self, source: &str) -> Self {
        for b in self.breakpoints.values_mut() {
            b.source = source.to_owned();
        }
        self
    }

    /// Number of breakpoints (enabled or not).
    pub fn len(&self) -> usize {
        self.breakpoints.len()
    }

    /// True when the set holds no breakpoint.
    pub fn is_empty(&self) -> bool {
        self.breakpoints.is_empty()
    }

    /// A breakpoint by id.
    pub fn get(&self, id: &str) -> Option<&Breakpoint> {
        self.breakpoints.get(id)
    }

    /// The breakpoints that should be armed.
    pub fn enabled(&self) -> impl Iterator<Item = &Breakpoint> {
        self.breakpoints.values().filter(|b| b.enabled)
    }

    /// What changed from `old` to `self`. Any field change of a breakpoint (condition-only
    /// edits and `enabled` flips included) shows up in [`Diff::changed`].
    pub fn diff(&self, old: &DesiredSet) -> Diff {
        let mut diff = Diff::default();
        for (id, new) in &self.breakpoints {
            match old.breakpoints.get(id) {
                None => diff.added.push(new.clone()),
                Some(prev) if prev != new => diff.changed.push((prev.clone(), new.clone())),
                Some(_) => {}
            }
        }
        for (id, prev) in &old.breakpoints {
            if !self.breakpoints.contains_key(id) {
                diff.removed.push(prev.clone());
            }
        }
        diff
    }
}

/// The difference between two [`DesiredSet`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Breakpoints whose id is new.
    pub added: Vec<Breakpoint>,
    /// Breakpoints whose id disappeared.
    pub removed: Vec<Breakpoint>,
    /// `(old, new)` pairs of breakpoints whose id stayed but some field changed.
    pub changed: Vec<(Breakpoint, Breakpoint)>,
}

impl Diff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bp(id: &str, cond: Option<&str>, enabled: bool) -> Breakpoint {
        Breakpoint {
            id: id.into(),
            file: "app/x.py".into(),
            line: 3,
            condition: cond.map(Into::into),
            enabled,
            ..Default::default()
        }
    }

    #[test]
    fn problems_are_per_breakpoint() {
        let roots = [std::path::PathBuf::from("/srv/app")];
        let ok = bp("a", None, true);
        assert_eq!(problem(&ok, &roots), None);
        let zero = Breakpoint {
            line: 0,
            ..ok.clone()
        };
        assert!(problem(&zero, &roots).unwrap().contains("line 0"));
        let empty = Breakpoint {
            file: " ".into(),
            ..ok.clone()
        };
        assert!(problem(&empty, &roots).unwrap().contains("empty filename"));
        let outside = Breakpoint {
            file: "/opt/x.py".into(),
            ..ok.clone()
        };
        assert!(problem(&outside, &roots).unwrap().contains("/srv/app"));
        assert_eq!(problem(&outside, &[]), None);
        let inside = Breakpoint {
            file: "/srv/app/x.py".into(),
            ..ok.clone()
        };
        assert_eq!(problem(&inside, &roots), None);
        let said = Breakpoint {
            invalid: Some("bad".into()),
            ..ok
        };
        assert_eq!(problem(&said, &roots).as_deref(), Some("bad"));
    }

    #[test]
    fn diff_sees_every_kind_of_change() {
        let old = DesiredSet::from_breakpoints([bp("a", None, true), bp("b", None, true)]);
        let new = DesiredSet::from_breakpoints([bp("a", Some("x > 1"), true), bp("c", None, true)]);
        let d = new.diff(&old);
        assert_eq!(d.added, vec![bp("c", None, true)]);
        assert_eq!(d.removed, vec![bp("b", None, true)]);
        assert_eq!(
            d.changed,
            vec![(bp("a", None, true), bp("a", Some("x > 1"), true))]
        );
        let disabled = DesiredSet::from_breakpoints([bp("a", None, false), bp("b", None, true)]);
        assert_eq!(disabled.diff(&old).changed.len(), 1);
        assert!(old.diff(&old.clone()).is_empty());
    }
}
