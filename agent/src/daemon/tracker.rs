//! Per-breakpoint state across processes: what each helper said (STATUS, STATS and
//! CODE_OBJECTS messages) and the kernel's entry counts, folded into one status per breakpoint
//! for `status`, `break list` and the `$data_breakpoint_status` events.
//!
//! Folding rule, per breakpoint: `armed` if armed in at least one process (`throttled` if every
//! armed process throttles it), else `error` if any process reports an error (its reason),
//! else `pending` (no process has the file loaded yet, or no helper reported yet).
use crate::breakpoints::DesiredSet;
use crate::delivery::event::HitSummary;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Counters the helper keeps per breakpoint (names as the helper sends them).
pub const COUNTERS: [&str; 8] = [
    "hits",
    "captured",
    "rate_limited",
    "condition_false",
    "condition_errors",
    "throttled",
    "dropped",
    "process_capped",
];

#[derive(Clone, Debug, Default)]
struct PerProcess {
    status: Option<String>,
    reason: Option<String>,
    code_objects: Vec<u64>,
    counters: Map<String, Value>,
    last_condition_error: Option<String>,
}

/// The folded status of one breakpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Folded {
    pub status: String,
    pub error: Option<String>,
}

/// State of every breakpoint in every process.
#[derive(Default)]
pub struct Tracker {
    /// breakpoint id → pid → what that process's helper said.
    by_bp: BTreeMap<String, BTreeMap<i32, PerProcess>>,
    /// breakpoint id → kernel-counted function entries (summed over processes).
    entries: BTreeMap<String, u64>,
    /// Last folded status sent per breakpoint, to report only changes.
    reported: BTreeMap<String, Folded>,
    /// Breakpoints not armed on this host, with why (another repository).
    skipped: BTreeMap<String, String>,
    /// Breakpoints that cannot be armed anywhere, with why (line 0, no filename, an entry its
    /// source could not read): an `error` status of their own.
    invalid: BTreeMap<String, String>,
    /// A status or the code objects of a breakpoint changed since [`Tracker::take_changed`]
    /// (counters alone do not count).
    changed: bool,
}

impl Tracker {
    fn slot(&mut self, id: &str, pid: i32) -> &mut PerProcess {
        // Every hit comes here: no key allocation once the breakpoint is known.
        if !self.by_bp.contains_key(id) {
            self.by_bp.insert(id.to_owned(), Default::default());
        }
        self.by_bp
            .get_mut(id)
            .expect("inserted above")
            .entry(pid)
            .or_default()
    }

    /// Applies a STATUS message (`{"breakpoints": [{id, status, reason, counters, …}]}`).
    pub fn on_status(&mut self, pid: i32, msg: &Value) {
        self.changed = true;
        tracing::debug!(
            pid,
            scan_us = ?msg.get("scan_us"),
            scan_objects = ?msg.get("scan_objects"),
            helper = ?msg.get("timing"),
            "helper status"
        );
        for b in msg["breakpoints"].as_array().into_iter().flatten() {
            let Some(id) = b["id"].as_str() else { continue };
            let p = self.slot(id, pid);
            p.status = b["status"].as_str().map(str::to_owned);
            p.reason = b["reason"].as_str().map(str::to_owned);
            if let Some(c) = b["counters"].as_object() {
                p.counters = c.clone();
            }
            p.last_condition_error = b["last_condition_error"].as_str().map(str::to_owned);
        }
    }

    /// Applies a STATS message (`{"breakpoints": [{id, counters}]}`).
    pub fn on_stats(&mut self, pid: i32, msg: &Value) {
        for b in msg["breakpoints"].as_array().into_iter().flatten() {
            let (Some(id), Some(c)) = (b["id"].as_str(), b["counters"].as_object()) else {
                continue;
            };
            self.slot(id, pid).counters = c.clone();
        }
    }

    /// Applies the counters every hit carries (`$hit_count`, `$captured_count`,
    /// `$condition_false_count`, `$rate_limited_count`), so `status` is current between the
    /// helper's periodic STATS messages.
    pub fn on_hit(&mut self, pid: i32, hit: &HitSummary) {
        let Some(id) = hit.breakpoint_id.as_deref() else {
            return;
        };
        let counters = &mut self.slot(id, pid).counters;
        for (value, name) in [
            (hit.hits, "hits"),
            (hit.captured, "captured"),
            (hit.condition_false, "condition_false"),
            (hit.rate_limited, "rate_limited"),
        ] {
            let Some(n) = value else { continue };
            match counters.get_mut(name) {
                Some(v) => *v = json!(n),
                None => {
                    counters.insert(name.into(), json!(n));
                }
            }
        }
    }

    /// Applies a CODE_OBJECTS message; returns the code object addresses now armed in `pid`.
    pub fn on_code_objects(&mut self, pid: i32, msg: &Value) -> Vec<u64> {
        self.changed = true;
        let mut all = Vec::new();
        for b in msg["breakpoints"].as_array().into_iter().flatten() {
            let Some(id) = b["id"].as_str() else { continue };
            // `code_objects`: the originals; `running`: what new frames execute (on 3.11 the
            // instrumented copies). The kernel counts entries of either.
            let mut codes: Vec<u64> = ["code_objects", "running"]
                .iter()
                .flat_map(|k| b[*k].as_array().into_iter().flatten())
                .filter_map(Value::as_u64)
                .collect();
            codes.sort_unstable();
            codes.dedup();
            all.extend(&codes);
            self.slot(id, pid).code_objects = codes;
        }
        all
    }

    /// Which breakpoint (if any) armed code object `code` in `pid`.
    pub fn breakpoint_of_code(&self, pid: i32, code: u64) -> Option<&str> {
        self.by_bp.iter().find_map(|(id, procs)| {
            procs
                .get(&pid)
                .filter(|p| p.code_objects.contains(&code))
                .map(|_| id.as_str())
        })
    }

    /// Whether a status or code objects changed since the last call (and resets it).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Whether the helper of `pid` reported at least one breakpoint armed (or throttled).
    pub fn armed_in(&self, pid: i32) -> bool {
        self.by_bp.values().any(|procs| {
            procs
                .get(&pid)
                .is_some_and(|p| matches!(p.status.as_deref(), Some("armed" | "throttled")))
        })
    }

    /// Replaces the kernel-counted entries per breakpoint; true if they changed.
    pub fn set_entries(&mut self, entries: BTreeMap<String, u64>) -> bool {
        let changed = self.entries != entries;
        self.entries = entries;
        changed
    }

    /// Forgets a process that exited (its counters leave the totals).
    pub fn forget_process(&mut self, pid: i32) {
        for procs in self.by_bp.values_mut() {
            procs.remove(&pid);
        }
    }

    /// Forgets breakpoints no longer desired.
    pub fn retain(&mut self, desired: &DesiredSet) {
        self.by_bp.retain(|id, _| desired.get(id).is_some());
        self.reported.retain(|id, _| desired.get(id).is_some());
    }

    /// Sets the breakpoints not armed on this host, with the reason.
    pub fn set_skipped(&mut self, skipped: BTreeMap<String, String>) {
        self.skipped = skipped;
    }

    /// Sets the breakpoints that cannot be armed, with the reason.
    pub fn set_invalid(&mut self, invalid: BTreeMap<String, String>) {
        self.invalid = invalid;
    }

    /// The folded status of `id`.
    pub fn fold(&self, id: &str, enabled: bool) -> Folded {
        if let Some(reason) = self.invalid.get(id) {
            return Folded {
                status: "error".into(),
                error: Some(reason.clone()),
            };
        }
        if !enabled {
            return Folded {
                status: "disabled".into(),
                error: None,
            };
        }
        if let Some(reason) = self.skipped.get(id) {
            return Folded {
                status: "skipped".into(),
                error: Some(reason.clone()),
            };
        }
        let procs = self.by_bp.get(id);
        let statuses = || procs.into_iter().flat_map(|m| m.values());
        let armed: Vec<_> = statuses()
            .filter(|p| matches!(p.status.as_deref(), Some("armed" | "throttled")))
            .collect();
        if !armed.is_empty() {
            let all_throttled = armed
                .iter()
                .all(|p| p.status.as_deref() == Some("throttled"));
            return Folded {
                status: if all_throttled { "throttled" } else { "armed" }.into(),
                error: None,
            };
        }
        if let Some(p) = statuses().find(|p| p.status.as_deref() == Some("error")) {
            return Folded {
                status: "error".into(),
                error: p.reason.clone(),
            };
        }
        Folded {
            status: "pending".into(),
            error: statuses().find_map(|p| p.reason.clone()),
        }
    }

    /// Breakpoints whose folded status changed since the last call (for status events).
    pub fn changes(&mut self, desired: &DesiredSet) -> Vec<(String, Folded)> {
        let mut out = Vec::new();
        for b in desired.breakpoints.values() {
            let now = self.fold(&b.id, b.enabled);
            if self.reported.get(&b.id) != Some(&now) {
                self.reported.insert(b.id.clone(), now.clone());
                out.push((b.id.clone(), now));
            }
        }
        out
    }

    /// `break list` / `status` view of every desired breakpoint.
    pub fn view(&self, desired: &DesiredSet) -> Value {
        let list: Vec<Value> = desired
            .breakpoints
            .values()
            .map(|b| {
                let folded = self.fold(&b.id, b.enabled);
                let mut totals = Map::new();
                for name in COUNTERS {
                    let sum: u64 = self
                        .by_bp
                        .get(&b.id)
                        .into_iter()
                        .flat_map(|m| m.values())
                        .filter_map(|p| p.counters.get(name).and_then(Value::as_u64))
                        .sum();
                    totals.insert(name.into(), json!(sum));
                }
                totals.insert(
                    "entries".into(),
                    json!(self.entries.get(&b.id).copied().unwrap_or(0)),
                );
                let processes: Vec<Value> = self
                    .by_bp
                    .get(&b.id)
                    .into_iter()
                    .flatten()
                    .map(|(pid, p)| {
                        json!({
                            "pid": pid,
                            "status": p.status,
                            "reason": p.reason,
                            "code_objects": p.code_objects.len(),
                            "counters": p.counters,
                            "last_condition_error": p.last_condition_error,
                        })
                    })
                    .collect();
                json!({
                    "id": b.id,
                    "kind": b.kind(),
                    "file": b.file,
                    "line": b.line,
                    "condition": b.condition,
                    "message": b.message,
                    "enabled": b.enabled,
                    "source": b.source,
                    "status": folded.status,
                    "error": folded.error,
                    "counters": totals,
                    "counters_help": {
                        "hits": "times a thread reached the line (helper)",
                        "captured": "snapshots (logpoints: messages) taken and queued for delivery (helper)",
                        "dropped": "hits that passed the limits but found the helper's queue full: no snapshot taken (helper)",
                        "entries": format!("calls of the breakpoint's functions entered from C, counted in the kernel by the frame-entry probe; Python-to-Python calls are not counted (CPython 3.11+ inlines them), nor calls after the governor detached the probe from a process entering more than {} frames/s (see the process's frame_probe)", super::ENTRIES_BUDGET_PER_SEC),
                    },
                    "processes": processes,
                })
            })
            .collect();
        Value::Array(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breakpoints::Breakpoint;

    fn set() -> DesiredSet {
        DesiredSet::from_breakpoints([Breakpoint {
            id: "b".into(),
            file: "shop/cart.py".into(),
            line: 40,
            condition: None,
            enabled: true,
            ..Default::default()
        }])
    }

    #[test]
    fn armed_anywhere_wins_and_errors_show_their_reason() {
        let mut t = Tracker::default();
        let d = set();
        assert_eq!(t.fold("b", true).status, "pending");
        t.on_status(1, &json!({"breakpoints": [{"id": "b", "status": "error", "reason": "no code on line 40"}]}));
        assert_eq!(
            t.fold("b", true),
            Folded {
                status: "error".into(),
                error: Some("no code on line 40".into())
            }
        );
        t.on_status(
            2,
            &json!({"breakpoints": [{"id": "b", "status": "armed", "counters": {"hits": 3}}]}),
        );
        assert_eq!(t.fold("b", true).status, "armed");
        t.on_stats(
            1,
            &json!({"breakpoints": [{"id": "b", "counters": {"hits": 4}}]}),
        );
        let view = t.view(&d);
        assert_eq!(view[0]["counters"]["hits"], 7);
        t.forget_process(2);
        assert_eq!(t.fold("b", true).status, "error");
        assert_eq!(t.fold("b", false).status, "disabled");
    }

    #[test]
    fn hits_keep_the_counters_current() {
        let mut t = Tracker::default();
        let hit = HitSummary {
            breakpoint_id: Some("b".into()),
            hits: Some(8),
            captured: Some(2),
            condition_false: Some(6),
            rate_limited: None,
        };
        t.on_hit(3, &hit);
        let view = t.view(&set());
        assert_eq!(view[0]["counters"]["hits"], 8);
        assert_eq!(view[0]["counters"]["condition_false"], 6);
    }

    #[test]
    fn changes_are_reported_once() {
        let mut t = Tracker::default();
        let d = set();
        assert_eq!(t.changes(&d).len(), 1); // pending, first time
        assert!(t.changes(&d).is_empty());
        t.on_status(1, &json!({"breakpoints": [{"id": "b", "status": "armed"}]}));
        let c = t.changes(&d);
        assert_eq!(
            c,
            vec![(
                "b".to_string(),
                Folded {
                    status: "armed".into(),
                    error: None
                }
            )]
        );
        assert!(t.changes(&d).is_empty());
    }

    #[test]
    fn code_objects_map_back_to_their_breakpoint() {
        let mut t = Tracker::default();
        let codes = t.on_code_objects(
            5,
            &json!({"breakpoints": [{"id": "b", "code_objects": [10, 20]}]}),
        );
        assert_eq!(codes, vec![10, 20]);
        assert_eq!(t.breakpoint_of_code(5, 20), Some("b"));
        assert_eq!(t.breakpoint_of_code(6, 20), None);
    }
}
