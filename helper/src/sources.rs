//! Answers the agent's `sources` requests (its web UI's file browser), carried in the control
//! JSON as `"sources": [{"id": 7}, {"id": 8, "file": "/srv/app/cart.py"}]` (every question the
//! agent still waits for: a control block holds one message, so a newer one must repeat them):
//!
//! * without `file`: the source files with code loaded in this process (every `co_filename` the
//!   code-object scan of `crate::resolve` finds, the same files a breakpoint can name);
//! * with `file`: the lines of that file a breakpoint can name (as the resolver sees them), or
//!   an error when the process has no code loaded from it.
//!
//! The answer is a `SOURCES` message `{"id": 7, "files": [...]}` / `{"id": 7, "file": ..,
//! "lines": [...]}` / `{"id": 7, "error": ".."}`. Only the scan's C-API reads run: no user code.
use crate::output::send_json;
use crate::resolve::{CodeIndex, Source, scan};
use libdebugger_common::helper_abi::message_kind;
use pyo3::prelude::*;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeSet;

/// One question of the agent; `id` pairs it with its answer.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SourcesRequest {
    pub id: u64,
    #[serde(default)]
    pub file: Option<String>,
}

/// Scans the process's code objects once and sends the answer to each question (GIL held).
pub fn answer(py: Python<'_>, questions: &[SourcesRequest]) {
    if questions.is_empty() {
        return;
    }
    let idx = scan(py);
    for q in questions {
        let answer = match &idx {
            Ok(idx) => answer_json(py, idx, q),
            Err(e) => json!({"id": q.id, "error": format!("code-object scan failed: {e}")}),
        };
        send_json(message_kind::SOURCES, answer.to_string());
    }
}

fn answer_json(py: Python<'_>, idx: &CodeIndex, req: &SourcesRequest) -> serde_json::Value {
    match &req.file {
        None => {
            // `<frozen importlib._bootstrap>`, `<string>`: no file to show.
            let mut files: Vec<&String> =
                idx.by_file.keys().filter(|f| !f.starts_with('<')).collect();
            files.sort();
            json!({"id": req.id, "files": files})
        }
        Some(file) => match idx.by_file.get(file) {
            None => json!({"id": req.id, "file": file,
                "error": format!("{file} has no code loaded in this process")}),
            Some(entries) => {
                let source = Source::new(file);
                let mut lines = BTreeSet::new();
                for e in entries {
                    lines.extend(e.breakpoint_lines(py, &source));
                }
                json!({"id": req.id, "file": file, "lines": lines})
            }
        },
    }
}
