//! The local breakpoints file, and the JSON shape of PostHog's active-breakpoints answer.
//!
//! Two formats are accepted (chosen by extension, `.json` / `.toml`, else by the first
//! non-blank character: `{` means JSON):
//!
//! ```toml
//! [[breakpoint]]
//! file = "app/views.py"        # repository-relative or absolute
//! line = 42
//! condition = "user.id == 7"   # optional
//! id = "checkout-bug"          # optional; default "app/views.py:42"
//! enabled = true               # optional; default true
//! repository = "acme/shop"     # optional
//!
//! [[logpoint]]                 # the same keys, and a message instead of a snapshot
//! file = "app/views.py"
//! line = 42
//! message = "user={user.id} items={len(items)}"
//! rate = 100                   # optional; messages per second (default 100)
//! ```
//!
//! or exactly what `GET /api/projects/{id}/live_debugger_breakpoints/active/` returns:
//! `{"results": [{"id", "repository", "filename", "line_number", "enabled", "condition"}]}`
//! (the list may also be named `breakpoints`); an entry with a `message` (and optionally a
//! `rate`) is a logpoint.
//!
//! `PATH` may also be a **directory**: every `*.toml` and `*.json` file in it (names starting
//! with `.` excluded), merged — what a Kubernetes ConfigMap mounted as a volume looks like, its
//! files symlinks into `..data/`, which the kubelet swaps atomically.
//!
//! [`watch_file`] re-reads the file (or directory) whenever it changes (editors that replace the
//! file and the ConfigMap `..data` swap are handled: the directory is watched). A malformed file
//! is reported by name and **keeps its last good content**.
//!
//! Per breakpoint, a bad entry is not the whole answer's problem: an entry with a field of the
//! wrong type, or an id defined twice (in one file or across a directory's files), becomes a
//! breakpoint whose [`Breakpoint::invalid`] says why — an error status for that id, while every
//! other breakpoint takes effect.
use super::{Breakpoint, DesiredSet};
use notify::{RecursiveMode, Watcher};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Errors reading or parsing breakpoints.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read the breakpoints file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is invalid or does not have the expected shape.
    #[error(
        "the breakpoints file {path} is not valid: {source} (expected [[breakpoint]] tables with \
         file, line and optionally id, condition, enabled, repository, and [[logpoint]] tables \
         with a message as well and optionally a rate)"
    )]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parse error, with its location.
        #[source]
        source: toml::de::Error,
    },
    /// The JSON is invalid or does not have PostHog's active-breakpoints shape.
    #[error("{what} is not a valid active-breakpoints answer: {reason}")]
    Json {
        /// What was parsed (a file path, or "PostHog's answer").
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// Setting up the file watcher failed.
    #[error("cannot watch the breakpoints file {path} for changes: {source}")]
    Watch {
        /// The file.
        path: PathBuf,
        /// The notify error.
        #[source]
        source: notify::Error,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    breakpoint: Vec<TomlBreakpoint>,
    #[serde(default)]
    logpoint: Vec<TomlLogpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlLogpoint {
    id: Option<String>,
    file: String,
    line: u32,
    message: String,
    condition: Option<String>,
    rate: Option<u32>,
    #[serde(default = "default_true")]
    enabled: bool,
    repository: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlBreakpoint {
    id: Option<String>,
    file: String,
    line: u32,
    condition: Option<String>,
    #[serde(default = "default_true")]
    enabled: bool,
    repository: Option<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
struct ApiAnswer {
    results: Option<Vec<serde_json::Value>>,
    breakpoints: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    next: Option<String>,
}

/// One page of PostHog's active-breakpoints answer.
#[derive(Debug)]
pub struct ActivePage {
    /// The breakpoints of this page, in the answer's order.
    pub items: Vec<Breakpoint>,
    /// `has_more`: the server holds breakpoints this page does not carry.
    pub has_more: bool,
    /// `next`: the URL of the next page, when the server names it (Django REST framework's
    /// pagination does).
    pub next: Option<String>,
}

/// A condition that is empty or only blanks means "no condition".
fn normalise_condition(c: Option<String>) -> Option<String> {
    c.filter(|c| !c.trim().is_empty())
}

/// The set of `items`; an id defined twice keeps its first entry, marked invalid.
fn finish(what: &str, items: Vec<Breakpoint>) -> DesiredSet {
    let mut set = DesiredSet::default();
    for b in items {
        match set.breakpoints.get_mut(&b.id) {
            Some(first) => {
                first.invalid = Some(format!(
                    "breakpoint id {:?} is defined twice in {what}; ids must be unique",
                    b.id
                ));
            }
            None => {
                set.breakpoints.insert(b.id.clone(), b);
            }
        }
    }
    set
}

/// One entry of an active-breakpoints answer. A field of the wrong type makes the entry
/// invalid (its id, or `filename:line_number`, or `#index`, carries the error), not the answer.
fn api_entry(index: usize, v: serde_json::Value) -> Breakpoint {
    use serde_json::Value;
    let mut problems: Vec<String> = Vec::new();
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    let filename = match field("filename") {
        Some(Value::String(f)) => f.clone(),
        Some(other) => {
            problems.push(format!("`filename` {other} is not a string"));
            String::new()
        }
        None => {
            problems.push("it has no `filename`".into());
            String::new()
        }
    };
    let line = match field("line_number") {
        Some(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => n,
            None => {
                problems.push(format!("`line_number` {n} is not a line number"));
                0
            }
        },
        None => {
            problems.push("it has no `line_number`".into());
            0
        }
    };
    let enabled = match field("enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            problems.push(format!("`enabled` {other} is not true or false"));
            false
        }
    };
    let condition = match field("condition") {
        None => None,
        Some(Value::String(c)) => normalise_condition(Some(c.clone())),
        Some(other) => {
            problems.push(format!("`condition` {other} is not a string"));
            None
        }
    };
    let message = match field("message") {
        None => None,
        Some(Value::String(m)) => Some(m.clone()),
        Some(other) => {
            problems.push(format!("`message` {other} is not a string"));
            None
        }
    };
    let rate = match field("rate") {
        None => None,
        Some(n) => match n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
        {
            Some(n) => Some(n),
            None => {
                problems.push(format!(
                    "`rate` {n} is not a positive whole number of messages per second"
                ));
                None
            }
        },
    };
    let repository = match field("repository") {
        None => None,
        Some(Value::String(r)) => Some(r.clone()).filter(|r| !r.is_empty()),
        Some(other) => {
            problems.push(format!("`repository` {other} is not a string"));
            None
        }
    };
    let id = match field("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        other => {
            problems.push(match other {
                Some(o) => format!("breakpoint id {o} is not a string"),
                None => "it has no `id`".into(),
            });
            if filename.is_empty() {
                format!("#{index}")
            } else {
                Breakpoint::derived_id(&filename, line)
            }
        }
    };
    Breakpoint {
        id,
        file: filename,
        line,
        condition,
        enabled,
        repository,
        source: String::new(),
        invalid: (!problems.is_empty()).then(|| format!("entry {index}: {}", problems.join("; "))),
        message,
        rate,
    }
}

/// Parses PostHog's active-breakpoints answer (`results` or `breakpoints`). `what` names the
/// source in error messages. An answer that is not that shape at all is an error (the caller
/// keeps its last good set); a bad entry is an invalid breakpoint of the set. Pagination fields
/// are ignored here (a file is one page); the poller reads them with [`parse_active_page`].
pub fn parse_active_json(what: &str, body: &[u8]) -> Result<DesiredSet, FileError> {
    Ok(finish(what, parse_active_page(what, body)?.items))
}

/// Parses one page of PostHog's active-breakpoints answer, with its pagination fields. Check
/// the whole set with [`active_set`] once every page is in.
pub fn parse_active_page(what: &str, body: &[u8]) -> Result<ActivePage, FileError> {
    let json_err = |reason: String| FileError::Json {
        what: what.into(),
        reason,
    };
    let answer: ApiAnswer = serde_json::from_slice(body).map_err(|e| json_err(e.to_string()))?;
    let list = answer
        .results
        .or(answer.breakpoints)
        .ok_or_else(|| json_err("it has neither a `results` nor a `breakpoints` list".into()))?;
    let items = list
        .into_iter()
        .enumerate()
        .map(|(i, v)| api_entry(i, v))
        .collect();
    Ok(ActivePage {
        items,
        has_more: answer.has_more,
        next: answer.next.filter(|n| !n.is_empty()),
    })
}

/// The set of the breakpoints of every page: a duplicate id is an invalid breakpoint, as in a
/// file.
pub fn active_set(what: &str, items: Vec<Breakpoint>) -> DesiredSet {
    finish(what, items)
}

/// Parses the TOML form of the breakpoints file. `path` is used in error messages.
pub fn parse_toml(path: &Path, text: &str) -> Result<DesiredSet, FileError> {
    let file: TomlFile = toml::from_str(text).map_err(|source| FileError::Toml {
        path: path.to_owned(),
        source,
    })?;
    let at = |b: TomlBreakpoint| Breakpoint {
        id: b
            .id
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| Breakpoint::derived_id(&b.file, b.line)),
        file: b.file,
        line: b.line,
        condition: normalise_condition(b.condition),
        enabled: b.enabled,
        repository: b.repository,
        ..Default::default()
    };
    let logpoints = file.logpoint.into_iter().map(|l| Breakpoint {
        message: Some(l.message),
        rate: l.rate,
        ..at(TomlBreakpoint {
            id: l.id,
            file: l.file,
            line: l.line,
            condition: l.condition,
            enabled: l.enabled,
            repository: l.repository,
        })
    });
    let items = file
        .breakpoint
        .into_iter()
        .map(at)
        .chain(logpoints)
        .collect();
    Ok(finish(&path.display().to_string(), items))
}

/// Parses breakpoints file contents, choosing the format by extension or content.
pub fn parse_file_contents(path: &Path, text: &str) -> Result<DesiredSet, FileError> {
    let json = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => true,
        Some("toml") => false,
        _ => text.trim_start().starts_with('{'),
    };
    if json {
        parse_active_json(&path.display().to_string(), text.as_bytes())
    } else {
        parse_toml(path, text)
    }
}

/// Reads and parses one breakpoints file; its breakpoints' source is `file PATH`.
pub fn load_file(path: &Path) -> Result<DesiredSet, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse_file_contents(path, &text)?.with_source(&format!("file {}", path.display())))
}

/// Whether a directory entry is a breakpoints file: `*.toml` or `*.json`, not hidden (a
/// ConfigMap's `..data` and `..2024_…` entries start with dots).
fn is_breakpoints_file(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".toml") || name.ends_with(".json"))
}

/// A watched directory's files: the last good set of each (by file name), and the error of
/// each file that does not parse now.
#[derive(Default)]
struct DirState {
    good: BTreeMap<String, DesiredSet>,
    errors: BTreeMap<String, String>,
}

impl DirState {
    /// Re-reads every breakpoints file of `dir`. A file that fails keeps its last good set; a
    /// file that is gone is forgotten.
    fn reload(&mut self, dir: &Path) -> Result<(), FileError> {
        let entries = std::fs::read_dir(dir).map_err(|source| FileError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let mut present = BTreeSet::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            // `metadata` follows symlinks (a ConfigMap's files are links into `..data/`).
            if !is_breakpoints_file(&name) || !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                continue;
            }
            present.insert(name.clone());
            match load_file(&path) {
                Ok(set) => {
                    self.good.insert(name.clone(), set);
                    self.errors.remove(&name);
                }
                Err(e) => {
                    self.errors.insert(name, e.to_string());
                }
            }
        }
        self.good.retain(|n, _| present.contains(n));
        self.errors.retain(|n, _| present.contains(n));
        Ok(())
    }

    /// Every file's breakpoints in one set; an id defined in two files is invalid (error status
    /// naming both), the first file's (by name) entry standing for it.
    fn merged(&self) -> DesiredSet {
        let mut out = DesiredSet::default();
        for set in self.good.values() {
            for (id, b) in &set.breakpoints {
                match out.breakpoints.get_mut(id) {
                    Some(first) => {
                        first.invalid = Some(format!(
                            "breakpoint id {id:?} is defined in both {} and {}; ids must be unique",
                            first.source.trim_start_matches("file "),
                            b.source.trim_start_matches("file ")
                        ));
                    }
                    None => {
                        out.breakpoints.insert(id.clone(), b.clone());
                    }
                }
            }
        }
        out
    }
}

/// Health of a watched breakpoints file or directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileStatus {
    /// Successful loads so far (the first one included).
    pub loads: u64,
    /// The last load's error, when the file (or some file of the directory) is currently
    /// malformed (the last good content is in force meanwhile). `None` once it loads again.
    pub last_error: Option<String>,
    /// A directory's files that do not parse now, by name, with the error.
    pub errors: BTreeMap<String, String>,
}

/// A watched breakpoints file or directory. Dropping it stops watching.
pub struct FileWatch {
    /// The desired set; changes whenever the file's breakpoints change.
    pub desired: watch::Receiver<DesiredSet>,
    /// Load status.
    pub status: watch::Receiver<FileStatus>,
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long to wait after a change notification before re-reading (editors write in steps).
const DEBOUNCE: Duration = Duration::from_millis(50);

/// What is watched: one file, or a directory of them.
enum Watched {
    File(PathBuf),
    Dir(PathBuf, DirState),
}

impl Watched {
    /// Loads it again: the set, and the errors by file (a single file's under its name).
    fn load(&mut self) -> Result<(DesiredSet, BTreeMap<String, String>), FileError> {
        match self {
            Watched::File(path) => load_file(path).map(|s| (s, BTreeMap::new())),
            Watched::Dir(dir, state) => {
                state.reload(dir)?;
                Ok((state.merged(), state.errors.clone()))
            }
        }
    }
}

/// Loads `path` (a file, or a directory of `*.toml` / `*.json` files) and watches it for
/// changes. Must be called inside a tokio runtime.
///
/// The first load must succeed (a daemon should not start with a broken file it was told to
/// use; in a directory, files that fail are reported and the others load); afterwards a
/// malformed file is logged once per distinct error, reported in [`FileStatus`], and its last
/// good content stays in force.
pub fn watch_file(path: &Path) -> Result<FileWatch, FileError> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let is_dir = path.is_dir();
    let mut target = if is_dir {
        Watched::Dir(path.clone(), DirState::default())
    } else {
        Watched::File(path.clone())
    };
    let (initial, errors) = target.load()?;
    for (name, e) in &errors {
        tracing::warn!(file = %name, "{e}; the file is skipped until it parses");
    }
    let (desired_tx, desired) = watch::channel(initial);
    let (status_tx, status) = watch::channel(FileStatus {
        loads: 1,
        last_error: (!errors.is_empty())
            .then(|| errors.values().cloned().collect::<Vec<_>>().join("; ")),
        errors,
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let name = path.file_name().map(|n| n.to_owned());
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                // A directory: any change in it. A file: its own name, or a `..`-entry of
                // its directory (the file is a ConfigMap symlink into `..data/`).
                let relevant = is_dir
                    || ev.paths.is_empty()
                    || ev.paths.iter().any(|p| {
                        p.file_name() == name.as_deref()
                            || p.file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with(".."))
                    });
                if relevant {
                    let _ = tx.send(());
                }
            }
            Err(_) => {
                let _ = tx.send(());
            }
        })
        .map_err(|source| FileError::Watch {
            path: path.clone(),
            source,
        })?;
    let dir = if is_dir {
        path.clone()
    } else {
        path.parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("/"))
    };
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| FileError::Watch {
            path: path.clone(),
            source,
        })?;
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            match target.load() {
                Ok((set, errors)) => {
                    let changed = desired_tx.send_if_modified(|cur| {
                        if *cur == set {
                            false
                        } else {
                            *cur = set;
                            true
                        }
                    });
                    if changed {
                        tracing::info!(path = %path.display(), "breakpoints reloaded");
                    }
                    status_tx.send_modify(|s| {
                        s.loads += 1;
                        for (name, e) in &errors {
                            if s.errors.get(name) != Some(e) {
                                tracing::warn!(
                                    "{e}; the last good content of {name} stays in force"
                                );
                            }
                        }
                        s.last_error = (!errors.is_empty())
                            .then(|| errors.values().cloned().collect::<Vec<_>>().join("; "));
                        s.errors = errors;
                    });
                }
                Err(err) => {
                    let msg = err.to_string();
                    status_tx.send_if_modified(|s| {
                        if s.last_error.as_deref() == Some(msg.as_str()) {
                            return false;
                        }
                        tracing::warn!("{msg}; the last good breakpoint set stays in force");
                        s.last_error = Some(msg.clone());
                        true
                    });
                }
            }
        }
    });
    Ok(FileWatch {
        desired,
        status,
        _watcher: watcher,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_derived_ids() {
        let set = parse_toml(
            Path::new("b.toml"),
            "[[breakpoint]]\nfile = \"app/x.py\"\nline = 4\ncondition = \"a > 1\"\n\
             [[breakpoint]]\nid = \"mine\"\nfile = \"y.py\"\nline = 2\nenabled = false\n",
        )
        .unwrap();
        let a = set.get("app/x.py:4").unwrap();
        assert_eq!(a.condition.as_deref(), Some("a > 1"));
        assert!(a.enabled);
        assert!(!set.get("mine").unwrap().enabled);
    }

    #[test]
    fn logpoints_from_toml_and_json() {
        let set = parse_toml(
            Path::new("b.toml"),
            "[[breakpoint]]\nfile = \"x.py\"\nline = 4\n\
             [[logpoint]]\nid = \"lp\"\nfile = \"x.py\"\nline = 5\nmessage = \"a={a}\"\n\
             condition = \"a > 1\"\nrate = 7\n",
        )
        .unwrap();
        assert_eq!(set.get("x.py:4").unwrap().kind(), "breakpoint");
        let lp = set.get("lp").unwrap();
        assert_eq!(
            (lp.kind(), lp.message.as_deref(), lp.rate, lp.line),
            ("logpoint", Some("a={a}"), Some(7), 5)
        );
        assert_eq!(lp.condition.as_deref(), Some("a > 1"));
        // A typo in a logpoint is the file's error, as for breakpoints; a logpoint needs a message.
        for bad in [
            "[[logpoint]]\nfile=\"x\"\nline=3\nmesage=\"m\"\n",
            "[[logpoint]]\nfile=\"x\"\nline=3\n",
        ] {
            assert!(matches!(
                parse_toml(Path::new("b.toml"), bad),
                Err(FileError::Toml { .. })
            ));
        }
        // The JSON shape (files, directories, URLs, PostHog): an entry with a message.
        let set = parse_active_json(
            "t",
            br#"{"results": [{"id": "a", "filename": "x.py", "line_number": 3, "message": "v={v}", "rate": 5},
                {"id": "b", "filename": "x.py", "line_number": 3, "message": 7},
                {"id": "c", "filename": "x.py", "line_number": 3, "message": "m", "rate": -1}]}"#,
        )
        .unwrap();
        let a = set.get("a").unwrap();
        assert_eq!(
            (a.message.as_deref(), a.rate, a.invalid.as_deref()),
            (Some("v={v}"), Some(5), None)
        );
        assert!(
            set.get("b")
                .unwrap()
                .invalid
                .as_deref()
                .unwrap()
                .contains("`message` 7")
        );
        assert!(
            set.get("c")
                .unwrap()
                .invalid
                .as_deref()
                .unwrap()
                .contains("`rate` -1")
        );
    }

    #[test]
    fn toml_rejects_typos_and_duplicates() {
        let typo = parse_toml(Path::new("b.toml"), "[[breakpoint]]\nfile=\"x\"\nlin=3\n");
        assert!(matches!(typo, Err(FileError::Toml { .. })));
        let dup = parse_toml(
            Path::new("b.toml"),
            "[[breakpoint]]\nfile=\"x\"\nline=3\n[[breakpoint]]\nfile=\"x\"\nline=3\n",
        );
        let dup = dup.unwrap();
        assert!(
            dup.get("x:3")
                .unwrap()
                .invalid
                .as_deref()
                .unwrap()
                .contains("twice")
        );
    }

    #[test]
    fn json_both_list_names() {
        for key in ["results", "breakpoints"] {
            let body = format!(
                r#"{{"{key}": [{{"id": "u1", "repository": null, "filename": "a/b.py",
                "line_number": 7, "enabled": true, "condition": ""}}], "count": 1}}"#
            );
            let set = parse_active_json("t", body.as_bytes()).unwrap();
            let b = set.get("u1").unwrap();
            assert_eq!(
                (b.file.as_str(), b.line, &b.condition),
                ("a/b.py", 7, &None)
            );
        }
        assert!(parse_active_json("t", b"{\"count\": 0}").is_err());
        assert!(parse_active_json("t", b"<html>").is_err());
        let no_line = parse_active_json("t", br#"{"results":[{"id":"x","filename":"a"}]}"#);
        assert!(no_line.unwrap().get("x").unwrap().invalid.is_some());
    }

    #[test]
    fn a_bad_entry_is_that_breakpoint_s_error_only() {
        let body = br#"{"results": [
            {"id": "good", "filename": "a.py", "line_number": 3},
            {"id": "zero", "filename": "a.py", "line_number": 0, "condition": null},
            {"id": "typed", "filename": "a.py", "line_number": "7"},
            {"id": "cond", "filename": "a.py", "line_number": 4, "condition": 42},
            {"filename": "b.py", "line_number": 9},
            {"id": "good", "filename": "c.py", "line_number": 1}
        ]}"#;
        let set = parse_active_json("t", body).unwrap();
        let invalid = |id: &str| set.get(id).unwrap().invalid.clone();
        assert!(invalid("good").unwrap().contains("twice"), "{set:?}");
        assert_eq!(set.get("good").unwrap().file, "a.py");
        // Line 0 is well-formed (PostHog allows it); `problem` reports it.
        assert_eq!(invalid("zero"), None);
        assert!(invalid("typed").unwrap().contains("line_number"));
        assert!(invalid("cond").unwrap().contains("condition"));
        assert!(invalid("b.py:9").unwrap().contains("no `id`"));
    }

    #[test]
    fn a_directory_merges_its_files_and_keeps_a_broken_one_s_last_content() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        w(
            "a.toml",
            "[[breakpoint]]\nid = \"a\"\nfile = \"x.py\"\nline = 1\n",
        );
        w(
            "b.json",
            r#"{"results": [{"id": "b", "filename": "y.py", "line_number": 2}]}"#,
        );
        w(".hidden.toml", "garbage");
        w("notes.txt", "garbage");
        let mut state = DirState::default();
        state.reload(dir.path()).unwrap();
        let set = state.merged();
        assert_eq!(set.len(), 2, "{set:?}");
        assert!(set.get("a").unwrap().source.ends_with("a.toml"));
        w("a.toml", "[[breakpoint]\n");
        w(
            "c.toml",
            "[[breakpoint]]\nid = \"b\"\nfile = \"z.py\"\nline = 3\n",
        );
        state.reload(dir.path()).unwrap();
        let set = state.merged();
        assert_eq!(
            set.get("a").unwrap().file,
            "x.py",
            "last good content of a.toml"
        );
        assert!(
            state.errors["a.toml"].contains("a.toml"),
            "{:?}",
            state.errors
        );
        let b = set.get("b").unwrap();
        assert!(b.invalid.as_deref().unwrap().contains("c.toml"), "{b:?}");
        std::fs::remove_file(dir.path().join("a.toml")).unwrap();
        state.reload(dir.path()).unwrap();
        assert!(state.merged().get("a").is_none() && state.errors.is_empty());
    }
}
