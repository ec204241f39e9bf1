//! What the helper is told besides the breakpoints (`[capture]`, `[redaction]`, roots,
//! repository) and the control JSON built from the desired set.
use crate::breakpoints::{Breakpoint, DesiredSet};
use serde_json::{Map, Value, json};
use std::path::PathBuf;

/// What the helper is told besides the breakpoints, from the configuration's `[capture]` and
/// `[redaction]` tables (shape documented in `helper/src/spec.rs`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HelperSettings {
    /// Process-wide: `redact_add`, `redact_exclude`, `process_rate`, `cpu_budget`,
    /// `queue_capacity`.
    pub settings: Map<String, Value>,
    /// Per-breakpoint capture limits applied to every breakpoint: `max_depth`, `max_items`,
    /// `max_string`, `max_fields`, `max_bytes`, `deadline_ms`, `rate`, `burst`.
    pub limits: Map<String, Value>,
    /// `source_roots`: only files under these directories match a breakpoint (empty = any).
    pub roots: Vec<String>,
    /// `repository` this host runs: breakpoints of another repository are not armed.
    pub repository: Option<String>,
}

impl HelperSettings {
    /// Why a breakpoint cannot be armed at all ([`crate::breakpoints::problem`]): an error
    /// status for it, the others unaffected.
    pub fn invalid_reason(&self, b: &Breakpoint) -> Option<String> {
        let roots: Vec<PathBuf> = self.roots.iter().map(PathBuf::from).collect();
        crate::breakpoints::problem(b, &roots)
    }

    /// Why a breakpoint is not armed on this host, if it belongs to another repository.
    pub fn skip_reason(&self, b: &Breakpoint) -> Option<String> {
        match (&self.repository, &b.repository) {
            (Some(mine), Some(theirs)) if !mine.eq_ignore_ascii_case(theirs) => Some(format!(
                "breakpoint of repository {theirs}; this host is configured for {mine}"
            )),
            _ => None,
        }
    }
}

/// `[capture]` keys that are per-breakpoint limits.
const LIMIT_KEYS: [&str; 8] = [
    "max_depth",
    "max_items",
    "max_string",
    "max_fields",
    "max_bytes",
    "deadline_ms",
    "rate",
    "burst",
];
/// `[capture]` keys that are process-wide budgets.
const PROCESS_KEYS: [&str; 3] = ["process_rate", "cpu_budget", "queue_capacity"];

impl HelperSettings {
    /// Maps the configuration tables onto the helper's fields; unknown keys are warned about.
    pub fn from_config(capture: &Value, redaction: &Value) -> Self {
        let mut out = Self::default();
        for (k, v) in capture.as_object().into_iter().flatten() {
            if k == "limits" {
                // `[capture.limits]`: the per-breakpoint limits as a nested table.
                for (lk, lv) in v.as_object().into_iter().flatten() {
                    if LIMIT_KEYS.contains(&lk.as_str()) {
                        out.limits.insert(lk.clone(), lv.clone());
                    } else {
                        tracing::warn!(
                            "unknown key `{lk}` in [capture.limits] (known: {LIMIT_KEYS:?})"
                        );
                    }
                }
            } else if LIMIT_KEYS.contains(&k.as_str()) {
                out.limits.insert(k.clone(), v.clone());
            } else if PROCESS_KEYS.contains(&k.as_str()) {
                out.settings.insert(k.clone(), v.clone());
            } else {
                tracing::warn!(
                    "unknown key `{k}` in [capture] (known: {LIMIT_KEYS:?}, {PROCESS_KEYS:?})"
                );
            }
        }
        for (k, v) in redaction.as_object().into_iter().flatten() {
            match k.as_str() {
                "add" => out.settings.insert("redact_add".into(), v.clone()),
                "exclude" => out.settings.insert("redact_exclude".into(), v.clone()),
                _ => {
                    tracing::warn!("unknown key `{k}` in [redaction] (known: add, exclude)");
                    None
                }
            };
        }
        out
    }
}

/// The control JSON the helper applies: the full desired set, applied as a diff on its side
/// (shape documented in `helper/src/spec.rs`).
pub fn control_json(set: &DesiredSet, helper: &HelperSettings) -> Vec<u8> {
    let breakpoints: Vec<Value> = set
        .enabled()
        .filter(|b| helper.skip_reason(b).is_none() && helper.invalid_reason(b).is_none())
        .map(|b: &Breakpoint| {
            let mut v = json!({
                "id": b.id,
                "file": b.file,
                "line": b.line,
                "condition": b.condition,
            });
            if !helper.limits.is_empty() {
                v["limits"] = Value::Object(helper.limits.clone());
            }
            if !helper.roots.is_empty() {
                v["roots"] = json!(helper.roots);
            }
            // The action: a logpoint's message (helper/src/spec.rs `log`).
            if let Some(m) = &b.message {
                v["log"] = json!({"message": m, "rate": b.rate});
            }
            v
        })
        .collect();
    serde_json::to_vec(&json!({ "breakpoints": breakpoints, "settings": helper.settings }))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_tables_map_onto_the_helpers_fields() {
        let h = HelperSettings::from_config(
            &json!({"rate": 1000, "burst": 2000, "max_depth": 5, "process_rate": 20000}),
            &json!({"add": ["iban"], "exclude": ["pin"]}),
        );
        let set = DesiredSet::from_breakpoints([Breakpoint {
            id: "b".into(),
            file: "a.py".into(),
            line: 3,
            condition: None,
            enabled: true,
            ..Default::default()
        }]);
        let v: Value = serde_json::from_slice(&control_json(&set, &h)).unwrap();
        assert_eq!(
            v["breakpoints"][0]["limits"],
            json!({"rate": 1000, "burst": 2000, "max_depth": 5})
        );
        assert!(v["breakpoints"][0].get("log").is_none());
        // A logpoint's action goes as `log` (helper/src/spec.rs), its location as for any.
        let lp = DesiredSet::from_breakpoints([Breakpoint {
            id: "l".into(),
            file: "a.py".into(),
            line: 3,
            enabled: true,
            message: Some("x={x}".into()),
            rate: Some(9),
            ..Default::default()
        }]);
        let v: Value = serde_json::from_slice(&control_json(&lp, &h)).unwrap();
        assert_eq!(
            v["breakpoints"][0]["log"],
            json!({"message": "x={x}", "rate": 9})
        );
        assert_eq!(
            v["settings"],
            json!({"process_rate": 20000, "redact_add": ["iban"], "redact_exclude": ["pin"]})
        );
        let nested = HelperSettings::from_config(
            &json!({"process_rate": 1e9, "limits": {"rate": 1e9, "burst": 1e9}}),
            &Value::Null,
        );
        assert_eq!(
            nested.limits,
            json!({"rate": 1e9, "burst": 1e9})
                .as_object()
                .unwrap()
                .clone()
        );
        assert_eq!(nested.settings["process_rate"], 1e9);
        let mut restricted = HelperSettings {
            roots: vec!["/srv/app".into()],
            repository: Some("acme/shop".into()),
            ..HelperSettings::default()
        };
        let v: Value = serde_json::from_slice(&control_json(&set, &restricted)).unwrap();
        assert_eq!(v["breakpoints"][0]["roots"], json!(["/srv/app"]));
        let mut other = set.clone();
        other.breakpoints.get_mut("b").unwrap().repository = Some("acme/other".into());
        let v: Value = serde_json::from_slice(&control_json(&other, &restricted)).unwrap();
        assert_eq!(v["breakpoints"], json!([]));
        restricted.repository = Some("ACME/Other".into());
        let v: Value = serde_json::from_slice(&control_json(&other, &restricted)).unwrap();
        assert_eq!(v["breakpoints"].as_array().map(Vec::len), Some(1));
        let none: Value =
            serde_json::from_slice(&control_json(&set, &HelperSettings::default())).unwrap();
        assert!(none["breakpoints"][0].get("limits").is_none());
    }
}
