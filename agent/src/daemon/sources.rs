//! Questions to a helper about the source files of its process, for the web UI's file browser:
//! which files have code loaded, and which lines of one of them carry code. The questions ride
//! in the control JSON (`"sources": [{"id", "file"}, ...]`, published to that one process; a
//! control block holds one message, so every publish repeats all the questions still waiting);
//! the helper answers each with a `SOURCES` message (`helper/src/sources.rs`), which completes
//! the waiting request. A process without a helper gets one for the question when the asker allows it
//! (`attach`; the read-only UI does not), as a breakpoint would load it.
use super::{AttachState, Owner};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a question waits for the helper's answer (an attach included).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// One question from the control handler.
#[derive(Debug)]
pub struct Question {
    pub pid: i32,
    /// None: the list of files; Some: the lines of this file that carry code.
    pub file: Option<String>,
    /// Whether the helper may be loaded for this question.
    pub attach: bool,
}

type Reply = oneshot::Sender<Result<Value, String>>;

struct Waiting {
    pid: i32,
    file: Option<String>,
    deadline: Instant,
    reply: Reply,
}

/// Questions in flight and the processes the helper was loaded into for them.
#[derive(Default)]
pub struct Questions {
    next_id: u64,
    waiting: HashMap<u64, Waiting>,
    /// Processes the web UI looked into: they keep wanting a helper with no breakpoint.
    browsed: BTreeSet<i32>,
}

impl Questions {
    /// Whether `pid` should get a helper although no breakpoint exists.
    pub fn wants_helper(&self, pid: i32) -> bool {
        self.browsed.contains(&pid)
    }

    /// A `SOURCES` message from `pid`'s helper.
    pub fn answered(&mut self, pid: i32, data: &[u8]) {
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            tracing::warn!(pid, "unreadable sources answer from the helper");
            return;
        };
        let Some(id) = v["id"].as_u64() else { return };
        if self.waiting.get(&id).is_some_and(|w| w.pid == pid)
            && let Some(w) = self.waiting.remove(&id)
        {
            let _ = w.reply.send(Ok(v));
        }
    }

    /// Fails every question to `pid` (it exited, or the helper could not be loaded).
    pub fn fail_process(&mut self, pid: i32, why: &str) {
        self.browsed.remove(&pid);
        let ids: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.pid == pid)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(w) = self.waiting.remove(&id) {
                let _ = w.reply.send(Err(format!("pid {pid}: {why}")));
            }
        }
    }

    /// Fails the questions past their deadline.
    pub fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(w) = self.waiting.remove(&id) {
                let _ = w.reply.send(Err(format!(
                    "the helper in pid {} did not answer within {} s",
                    w.pid,
                    ANSWER_TIMEOUT.as_secs()
                )));
            }
        }
    }
}

/// The control JSON with questions added.
fn with_questions(control: &[u8], questions: &[(u64, Option<&str>)]) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(control).unwrap_or_else(|_| serde_json::json!({}));
    v["sources"] = questions
        .iter()
        .map(|(id, file)| serde_json::json!({"id": id, "file": file}))
        .collect();
    serde_json::to_vec(&v).unwrap_or_default()
}

impl Owner {
    /// A question from the control handler: asked now when the helper runs, after the attach
    /// otherwise.
    pub(super) fn sources_question(&mut self, q: Question, reply: Reply) {
        let Some(entry) = self.registry.entries.get(&q.pid) else {
            let _ = reply.send(Err(format!(
                "pid {} is not a Python process this agent debugs",
                q.pid
            )));
            return;
        };
        let refusal = match &entry.state {
            AttachState::Unsupported(r) => Some(format!("not debuggable: {r}")),
            AttachState::Ignored(v) => Some(format!("not debugged: {v:?}")),
            AttachState::Failed { reason, .. } => {
                Some(format!("the helper could not be loaded: {reason}"))
            }
            AttachState::Idle if !q.attach => {
                Some("the helper is not loaded (no breakpoint yet) and this UI is read-only".into())
            }
            _ => None,
        };
        if let Some(why) = refusal {
            let _ = reply.send(Err(format!("pid {}: {why}", q.pid)));
            return;
        }
        let attached = matches!(entry.state, AttachState::Attached { .. });
        self.sources.next_id += 1;
        let id = self.sources.next_id;
        self.sources.waiting.insert(
            id,
            Waiting {
                pid: q.pid,
                file: q.file,
                deadline: Instant::now() + ANSWER_TIMEOUT,
                reply,
            },
        );
        if attached {
            self.sources_attached(q.pid);
        } else {
            self.sources.browsed.insert(q.pid);
            self.attach_wanted();
        }
    }

    /// `pid`'s helper runs: publishes the control JSON with every question waiting for it. Also
    /// after the desired set was published (which carries no questions).
    pub(super) fn sources_attached(&mut self, pid: i32) {
        let Some(AttachState::Attached { link, published }) =
            self.registry.entries.get_mut(&pid).map(|e| &mut e.state)
        else {
            return;
        };
        let mut questions: Vec<(u64, Option<&str>)> = self
            .sources
            .waiting
            .iter()
            .filter(|(_, w)| w.pid == pid)
            .map(|(id, w)| (*id, w.file.as_deref()))
            .collect();
        if questions.is_empty() {
            return;
        }
        questions.sort_unstable_by_key(|q| q.0);
        match link.publish(&with_questions(&self.control, &questions)) {
            Ok(g) => *published = g,
            Err(e) => tracing::warn!(pid, "cannot ask the helper for its sources: {e}"),
        }
    }

    /// Processes with questions waiting.
    pub(super) fn sources_waiting_pids(&self) -> BTreeSet<i32> {
        self.sources.waiting.values().map(|w| w.pid).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_reach_the_question_of_their_process_only() {
        let mut qs = Questions::default();
        let (tx, mut rx) = oneshot::channel();
        qs.waiting.insert(
            1,
            Waiting {
                pid: 10,
                file: None,
                deadline: Instant::now() + ANSWER_TIMEOUT,
                reply: tx,
            },
        );
        qs.answered(11, br#"{"id": 1, "files": []}"#);
        assert!(rx.try_recv().is_err(), "another process's answer");
        qs.answered(10, br#"{"id": 1, "files": ["/a.py"]}"#);
        assert_eq!(rx.try_recv().unwrap().unwrap()["files"][0], "/a.py");

        let (tx, mut rx) = oneshot::channel();
        qs.waiting.insert(
            2,
            Waiting {
                pid: 10,
                file: None,
                deadline: Instant::now(),
                reply: tx,
            },
        );
        qs.expire(Instant::now());
        assert!(
            rx.try_recv()
                .unwrap()
                .unwrap_err()
                .contains("did not answer")
        );
        let v: Value = serde_json::from_slice(&with_questions(
            br#"{"breakpoints": []}"#,
            &[(3, Some("/x.py")), (4, None)],
        ))
        .unwrap();
        assert_eq!(
            v["sources"],
            serde_json::json!([{"id": 3, "file": "/x.py"}, {"id": 4, "file": null}])
        );
        assert_eq!(v["breakpoints"], serde_json::json!([]));
    }
}
