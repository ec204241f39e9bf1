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
//! ```
//!
//! or exactly what `GET /api/projects/{id}/live_debugger_breakpoints/active/` returns:
//! `{"results": [{"id", "repository", "filename", "line_number", "enabled", "condition"}]}`
//! (the list may also be named `breakpoints`).
//!
//! [`watch_file`] re-reads the file whenever it changes (editors that replace the file are
//! handled: the parent directory is watched). A malformed file is reported and **the last good
//! set stays in force**.
use super::{Breakpoint, DesiredSet};
use notify::{RecursiveMode, Watcher};
use serde::Deserialize;
use std::collections::BTreeSet;
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
         file, line and optionally id, condition, enabled, repository)"
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
    /// Two breakpoints share an id.
    #[error("{what}: breakpoint id {id:?} appears twice; ids must be unique")]
    DuplicateId {
        /// What was parsed.
        what: String,
        /// The repeated id.
        id: String,
    },
    /// A line number of 0.
    #[error("{what}: breakpoint {id:?} has line 0; lines start at 1")]
    LineZero {
        /// What was parsed.
        what: String,
        /// The breakpoint's id.
        id: String,
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
    results: Option<Vec<ApiBreakpoint>>,
    breakpoints: Option<Vec<ApiBreakpoint>>,
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

#[derive(Deserialize)]
struct ApiBreakpoint {
    id: serde_json::Value,
    #[serde(default)]
    repository: Option<String>,
    filename: String,
    line_number: u32,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    condition: Option<String>,
}

/// A condition that is empty or only blanks means "no condition".
fn normalise_condition(c: Option<String>) -> Option<String> {
    c.filter(|c| !c.trim().is_empty())
}

fn finish(what: &str, items: Vec<Breakpoint>) -> Result<DesiredSet, FileError> {
    let mut seen = BTreeSet::new();
    for b in &items {
        if b.line == 0 {
            return Err(FileError::LineZero {
                what: what.into(),
                id: b.id.clone(),
            });
        }
        if !seen.insert(b.id.clone()) {
            return Err(FileError::DuplicateId {
                what: what.into(),
                id: b.id.clone(),
            });
        }
    }
    Ok(DesiredSet::from_breakpoints(items))
}

/// Parses PostHog's active-breakpoints answer (`results` or `breakpoints`). `what` names the
/// source in error messages. Any structural problem rejects the whole answer, so the caller can
/// keep its last good set. Pagination fields are ignored here (a file is one page); the poller
/// reads them with [`parse_active_page`].
pub fn parse_active_json(what: &str, body: &[u8]) -> Result<DesiredSet, FileError> {
    finish(what, parse_active_page(what, body)?.items)
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
    let mut items = Vec::with_capacity(list.len());
    for b in list {
        let id = match b.id {
            serde_json::Value::String(s) if !s.is_empty() => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(json_err(format!("breakpoint id {other} is not a string"))),
        };
        items.push(Breakpoint {
            id,
            file: b.filename,
            line: b.line_number,
            condition: normalise_condition(b.condition),
            enabled: b.enabled.unwrap_or(true),
            repository: b.repository.filter(|r| !r.is_empty()),
        });
    }
    Ok(ActivePage {
        items,
        has_more: answer.has_more,
        next: answer.next.filter(|n| !n.is_empty()),
    })
}

/// The set of the breakpoints of every page: duplicate ids and line 0 are errors, as in a file.
pub fn active_set(what: &str, items: Vec<Breakpoint>) -> Result<DesiredSet, FileError> {
    finish(what, items)
}

/// Parses the TOML form of the breakpoints file. `path` is used in error messages.
pub fn parse_toml(path: &Path, text: &str) -> Result<DesiredSet, FileError> {
    let file: TomlFile = toml::from_str(text).map_err(|source| FileError::Toml {
        path: path.to_owned(),
        source,
    })?;
    let items = file
        .breakpoint
        .into_iter()
        .map(|b| Breakpoint {
            id: b
                .id
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| Breakpoint::derived_id(&b.file, b.line)),
            file: b.file,
            line: b.line,
            condition: normalise_condition(b.condition),
            enabled: b.enabled,
            repository: b.repository,
        })
        .collect();
    finish(&path.display().to_string(), items)
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

/// Reads and parses the breakpoints file.
pub fn load_file(path: &Path) -> Result<DesiredSet, FileError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file_contents(path, &text)
}

/// Health of a watched breakpoints file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileStatus {
    /// Successful loads so far (the first one included).
    pub loads: u64,
    /// The last load's error, when the file is currently malformed (the last good set is in
    /// force meanwhile). `None` once a load succeeds again.
    pub last_error: Option<String>,
}

/// A watched breakpoints file. Dropping it stops watching.
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

/// Loads `path` and watches it for changes. Must be called inside a tokio runtime.
///
/// The first load must succeed (a daemon should not start with a broken file it was told to
/// use); afterwards a malformed file is logged once per distinct error, reported in
/// [`FileStatus::last_error`], and the last good set stays in force.
pub fn watch_file(path: &Path) -> Result<FileWatch, FileError> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let initial = load_file(&path)?;
    let (desired_tx, desired) = watch::channel(initial);
    let (status_tx, status) = watch::channel(FileStatus {
        loads: 1,
        last_error: None,
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let name = path.file_name().map(|n| n.to_owned());
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                if ev.paths.is_empty() || ev.paths.iter().any(|p| p.file_name() == name.as_deref())
                {
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
    let dir = path
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("/"));
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
            match load_file(&path) {
                Ok(set) => {
                    let changed = desired_tx.send_if_modified(|cur| {
                        if *cur == set {
                            false
                        } else {
                            *cur = set;
                            true
                        }
                    });
                    if changed {
                        tracing::info!(path = %path.display(), "breakpoints file reloaded");
                    }
                    status_tx.send_modify(|s| {
                        s.loads += 1;
                        s.last_error = None;
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
    fn toml_rejects_typos_and_duplicates() {
        let typo = parse_toml(Path::new("b.toml"), "[[breakpoint]]\nfile=\"x\"\nlin=3\n");
        assert!(matches!(typo, Err(FileError::Toml { .. })));
        let dup = parse_toml(
            Path::new("b.toml"),
            "[[breakpoint]]\nfile=\"x\"\nline=3\n[[breakpoint]]\nfile=\"x\"\nline=3\n",
        );
        assert!(matches!(dup, Err(FileError::DuplicateId { .. })));
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
        assert!(parse_active_json("t", br#"{"results":[{"id":"x","filename":"a"}]}"#).is_err());
    }
}
