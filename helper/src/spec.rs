//! The desired state the helper is given: breakpoints and settings. Same JSON shape whether it
//! comes from `set_breakpoints()` or from the agent's control block:
//!
//! ```json
//! {"breakpoints": [{"id": "…", "file": "app/views.py", "line": 42,
//!                   "condition": "user.id == 7",
//!                   "limits": {"max_depth": 3, "max_items": 100, "max_string": 255,
//!                              "max_fields": 20, "max_bytes": 65536, "deadline_ms": 10,
//!                              "rate": 5, "burst": 10}}],
//!  "settings": {"redact_add": ["iban"], "redact_exclude": ["pin"],
//!               "process_rate": 100, "cpu_budget": 0.02}}
//! ```
//! `filename` / `line_number` (PostHog's names) are accepted for `file` / `line`.
//!
//! A breakpoint is a **location** (`file`, `line`) and an **action**: a snapshot (the default) or,
//! with `"log": {"message": "total={total}", "rate": 100}`, a log line (a logpoint). The
//! location decides arming; the action only what the hit path does once a hit passes the
//! condition and the limits.
use crate::capture::Limits;
use serde::Deserialize;

/// One desired breakpoint.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct BreakpointSpec {
    pub id: String,
    #[serde(alias = "filename")]
    pub file: String,
    /// The line as received (echoed back verbatim in `$line_number`).
    #[serde(alias = "line_number")]
    pub line: serde_json::Value,
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub limits: Option<LimitsSpec>,
    /// Source roots (absolute directories): when non-empty, only files under one of them match
    /// (the agent's `source_roots` setting).
    #[serde(default)]
    pub roots: Vec<String>,
    /// The action when it is not a snapshot: a log message (a logpoint).
    #[serde(default)]
    pub log: Option<LogSpec>,
}

/// A logpoint's action: the message template (`message.rs`) and its rate limit.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSpec {
    pub message: String,
    /// Messages per second (token bucket rate and burst); default [`LogSpec::DEFAULT_RATE`].
    #[serde(default)]
    pub rate: Option<f64>,
}

impl LogSpec {
    /// Default messages per second per logpoint.
    pub const DEFAULT_RATE: f64 = 100.0;
    pub fn rate(&self) -> f64 {
        self.rate
            .filter(|r| r.is_finite() && *r > 0.0)
            .unwrap_or(Self::DEFAULT_RATE)
    }
}

impl BreakpointSpec {
    /// The line as a number, if it is one (a JSON number or a numeric string).
    pub fn line_number(&self) -> Option<u32> {
        match &self.line {
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// The condition, or None when absent or blank.
    pub fn condition_source(&self) -> Option<&str> {
        self.condition.as_deref().filter(|c| !c.trim().is_empty())
    }
}

/// Per-breakpoint limits; absent fields take the defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    pub max_depth: Option<u32>,
    pub max_items: Option<usize>,
    pub max_string: Option<usize>,
    pub max_fields: Option<usize>,
    pub max_bytes: Option<usize>,
    pub deadline_ms: Option<f64>,
    /// Snapshots per second (token bucket rate); default 5.
    pub rate: Option<f64>,
    /// Token bucket burst; default 10.
    pub burst: Option<f64>,
}

impl LimitsSpec {
    pub fn capture_limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            max_depth: self.max_depth.unwrap_or(d.max_depth),
            max_items: self.max_items.unwrap_or(d.max_items),
            max_string: self.max_string.unwrap_or(d.max_string),
            max_fields: self.max_fields.unwrap_or(d.max_fields),
            max_bytes: self.max_bytes.unwrap_or(d.max_bytes),
            deadline_us: self
                .deadline_ms
                .map(|ms| (ms * 1000.0).max(0.0) as u64)
                .unwrap_or(d.deadline_us),
        }
    }
    pub fn rate(&self) -> f64 {
        self.rate.unwrap_or(5.0)
    }
    pub fn burst(&self) -> f64 {
        self.burst.unwrap_or(10.0)
    }
}

/// Process-wide settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
pub struct Settings {
    /// Extra sensitive identifiers.
    pub redact_add: Vec<String>,
    /// Default identifiers not to redact.
    pub redact_exclude: Vec<String>,
    /// Snapshots per second for the whole process; default 100.
    pub process_rate: f64,
    /// Fraction of wall time capture may use over 10 s; default 0.02.
    pub cpu_budget: f64,
    /// Capacity of the queue between application threads and the encoder thread.
    pub queue_capacity: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            redact_add: Vec::new(),
            redact_exclude: Vec::new(),
            process_rate: 100.0,
            cpu_budget: 0.02,
            queue_capacity: 256,
        }
    }
}

/// The control message: full desired set plus optional settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Desired {
    #[serde(default)]
    pub breakpoints: Vec<BreakpointSpec>,
    #[serde(default)]
    pub settings: Option<Settings>,
    /// Questions of the agent's web UI, each answered by its `id` (see `crate::sources`).
    #[serde(default)]
    pub sources: Vec<crate::sources::SourcesRequest>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spellings() {
        let d: Desired = serde_json::from_str(
            r#"{"breakpoints":[{"id":"a","filename":"x.py","line_number":"12"},
                {"id":"b","file":"y.py","line":3,"condition":"x > 1","limits":{"rate":1}},
                {"id":"c","file":"y.py","line":4,"log":{"message":"x={x}"}}],
                "settings":{"process_rate":7}}"#,
        )
        .unwrap();
        assert_eq!(d.breakpoints[0].line_number(), Some(12));
        assert_eq!(d.breakpoints[1].line_number(), Some(3));
        assert_eq!(d.breakpoints[1].limits.as_ref().unwrap().rate(), 1.0);
        assert_eq!(d.breakpoints[0].log, None);
        let log = d.breakpoints[2].log.as_ref().unwrap();
        assert_eq!((log.message.as_str(), log.rate()), ("x={x}", 100.0));
        let s = d.settings.unwrap();
        assert_eq!(s.process_rate, 7.0);
        assert_eq!(s.cpu_budget, 0.02);
    }
}
