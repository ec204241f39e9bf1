//! The JSON messages between the agent and the helper, typed once for both sides (feature
//! `protocol`). They describe the wire format as it is at protocol version 1; the binary framing
//! (chunks, message kinds, the control block) is in [`crate::helper_abi`].
//!
//! * agent → helper, through the control block: [`Control`];
//! * helper → agent, through `ldbg_emit`: [`Hello`] (`HELLO`), [`Status`] (`STATUS`),
//!   [`Stats`] (`STATS`), [`CodeObjects`] (`CODE_OBJECTS`), [`SourcesAnswer`] (`SOURCES`); hits
//!   (`HIT`, `LOG_HIT`) are written by the helper's fast encoder and named in [`hit_props`].
//!
//! Not yet used by the agent or the helper (issue 13). Two drifts this module settles, still to
//! be fixed in code when the sides adopt it: the agent reads a `"timing"` field from STATUS that
//! no helper sends ([`Status`] has none), and agent/src/delivery/event.rs assumes the helper
//! writes a hit's properties sorted, which it does not (see [`hit_props`] for the real order).
use alloc::{string::String, vec::Vec};
use serde::{Deserialize, Serialize};

/// Version of these messages; the helper reports it in [`Hello::protocol_version`]. A HELLO
/// without it comes from a helper older than this module (version 0, same messages).
pub const PROTOCOL_VERSION: u32 = 1;

/// The control message: the full desired set (applied as a diff), settings, UI questions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Control {
    #[serde(default)]
    pub breakpoints: Vec<BreakpointSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourcesRequest>,
}

/// One desired breakpoint: a location (`file`, `line`) and an action (snapshot, or `log`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BreakpointSpec {
    pub id: String,
    #[serde(alias = "filename")]
    pub file: String,
    /// The line as received: a number or a numeric string (echoed back in `$line_number`).
    #[serde(alias = "line_number")]
    pub line: serde_json::Value,
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogAction>,
}

/// A logpoint's action: the message template and its rate (messages per second).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogAction {
    pub message: String,
    #[serde(default)]
    pub rate: Option<f64>,
}

/// Per-breakpoint limits (`[capture]` / `[capture.limits]`); absent fields take the defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_string: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fields: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
}

/// Process-wide settings; every field optional on the wire (the helper has defaults).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact_add: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact_exclude: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_budget: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<usize>,
}

/// `[redaction]` in `agent.toml`; unknown keys are rejected.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// `[capture]` in `agent.toml`: limits (flat or as `[capture.limits]`) and process budgets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_string: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fields: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_budget: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<usize>,
}

/// A question of the agent's web UI: files with code loaded (no `file`) or a file's lines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourcesRequest {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `SOURCES`: the answer to one [`SourcesRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourcesAnswer {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `HELLO`, sent once after attach.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub helper_version: String,
    pub abi_version: u32,
    /// [`PROTOCOL_VERSION`] of the helper; 0 when absent (a helper older than this field).
    #[serde(default)]
    pub protocol_version: u32,
    pub pid: u32,
    pub python_version: String,
    pub gil_wait_us: u64,
}

/// The nine counters of a breakpoint's hits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub hits: u64,
    pub captured: u64,
    pub rate_limited: u64,
    pub process_capped: u64,
    pub condition_false: u64,
    pub condition_errors: u64,
    pub throttled: u64,
    pub dropped: u64,
    pub deadline_cut: u64,
}

/// Kind of a breakpoint, by its action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BreakpointKind {
    Breakpoint,
    Logpoint,
}

/// Resolution state of a breakpoint in one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Armed,
    Throttled,
    Pending,
    Error,
}

/// One breakpoint's status (in `STATUS` and `STATS`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BreakpointStatus {
    pub id: String,
    pub file: String,
    pub line: serde_json::Value,
    pub kind: BreakpointKind,
    pub status: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_objects: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub counters: Counters,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_condition_error: Option<String>,
}

/// `STATUS`: after a change, every breakpoint; or an error applying a control message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Status {
    Applied {
        breakpoints: Vec<BreakpointStatus>,
        scan_us: u64,
        scan_objects: usize,
    },
    Failed {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<u64>,
    },
}

/// `STATS`: the periodic counters (same per-breakpoint shape as `STATUS`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub breakpoints: Vec<BreakpointStatus>,
    pub pid: u32,
}

/// `CODE_OBJECTS`: the code objects each breakpoint is armed on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeObjects {
    pub breakpoints: Vec<ArmedCode>,
}

/// Addresses of the originals and of what new frames execute (3.11: instrumented copies).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmedCode {
    pub id: String,
    pub code_objects: Vec<u64>,
    pub running: Vec<u64>,
}

/// Property names of `HIT` / `LOG_HIT` messages, in the order the helper writes them (not
/// sorted: `$thread_name` comes before `$hit_count`). Optional ones are marked.
pub mod hit_props {
    pub const BREAKPOINT_ID: &str = "$breakpoint_id";
    pub const FILE_PATH: &str = "$file_path";
    pub const LINE_NUMBER: &str = "$line_number";
    /// HIT only.
    pub const LOCALS: &str = "$locals_variables";
    /// HIT only.
    pub const STACK: &str = "$stack_trace";
    /// LOG_HIT only.
    pub const MESSAGE: &str = "$message";
    /// LOG_HIT only, optional.
    pub const MESSAGE_TEMPLATE: &str = "$message_template";
    pub const TIMESTAMP: &str = "$timestamp";
    pub const THREAD_ID: &str = "$thread_id";
    pub const THREAD_NAME: &str = "$thread_name";
    pub const HIT_COUNT: &str = "$hit_count";
    pub const CAPTURED_COUNT: &str = "$captured_count";
    pub const RATE_LIMITED_COUNT: &str = "$rate_limited_count";
    pub const CONDITION_FALSE_COUNT: &str = "$condition_false_count";
    pub const CAPTURE_US: &str = "$capture_us";
    /// HIT only, optional.
    pub const TRUNCATED: &str = "$truncated";
    /// HIT only, optional.
    pub const LOCALS_NOT_CAPTURED: &str = "$locals_not_captured";
    /// HIT only, optional.
    pub const REDACTED: &str = "$redacted";
    /// Optional.
    pub const CONDITION: &str = "$condition";
    pub const PID: &str = "$pid";
    pub const PYTHON_VERSION: &str = "$python_version";
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::DeserializeOwned;

    /// Parses `wire`, checks it serializes back to the same JSON value and parses again equal.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + core::fmt::Debug>(wire: &str) -> T {
        let v: T = serde_json::from_str(wire).unwrap();
        let again = serde_json::to_string(&v).unwrap();
        let a: serde_json::Value = serde_json::from_str(wire).unwrap();
        let b: serde_json::Value = serde_json::from_str(&again).unwrap();
        assert_eq!(a, b);
        assert_eq!(serde_json::from_str::<T>(&again).unwrap(), v);
        v
    }

    #[test]
    fn control() {
        let c: Control = round_trip(
            r#"{"breakpoints":[{"id":"b","file":"a.py","line":3,"condition":null,
               "limits":{"rate":1000.0,"max_depth":5},"roots":["/srv"],
               "log":{"message":"x={x}","rate":9.0}}],
               "settings":{"process_rate":20000.0,"redact_add":["iban"]},
               "sources":[{"id":7},{"id":8,"file":"/srv/a.py"}]}"#,
        );
        assert_eq!(c.breakpoints[0].limits.as_ref().unwrap().max_depth, Some(5));
        let p: Control = serde_json::from_str(
            r#"{"breakpoints":[{"id":"a","filename":"x.py","line_number":"12"}]}"#,
        )
        .unwrap();
        assert_eq!(p.breakpoints[0].file, "x.py");
        assert!(serde_json::from_slice::<Control>(crate::helper_abi::DISARM).is_ok());
    }

    #[test]
    fn config_tables_reject_unknown_keys() {
        let c: CaptureConfig =
            round_trip(r#"{"rate":5.0,"limits":{"burst":2.0},"process_rate":1.0}"#);
        assert_eq!(c.limits.unwrap().burst, Some(2.0));
        assert!(serde_json::from_str::<CaptureConfig>(r#"{"rat":5}"#).is_err());
        assert!(serde_json::from_str::<CaptureConfig>(r#"{"limits":{"nope":1}}"#).is_err());
        let r: RedactionConfig = round_trip(r#"{"add":["iban"],"exclude":["pin"]}"#);
        assert_eq!(r.exclude, ["pin"]);
        assert!(serde_json::from_str::<RedactionConfig>(r#"{"ad":[]}"#).is_err());
    }

    #[test]
    fn hello() {
        let h: Hello = round_trip(
            r#"{"helper_version":"0.1.0","abi_version":2,"protocol_version":1,"pid":4,
               "python_version":"3.12.1","gil_wait_us":3}"#,
        );
        assert_eq!(h.protocol_version, PROTOCOL_VERSION);
        let old: Hello = serde_json::from_str(
            r#"{"helper_version":"0.1.0","abi_version":2,"pid":4,"python_version":"3.12.1","gil_wait_us":3}"#,
        )
        .unwrap();
        assert_eq!(old.protocol_version, 0);
    }

    const BP_STATUS: &str = r#"{"id":"b","file":"a.py","line":3,"kind":"logpoint","status":"armed",
        "code_objects":1,"message":"x={x}","last_condition_error":"NameError: y",
        "counters":{"hits":1,"captured":1,"rate_limited":0,"process_capped":0,"condition_false":0,
        "condition_errors":0,"throttled":0,"dropped":0,"deadline_cut":0}}"#;

    #[test]
    fn status_and_stats() {
        let s: Status = round_trip(&alloc::format!(
            r#"{{"breakpoints":[{BP_STATUS}],"scan_us":10,"scan_objects":99}}"#
        ));
        assert!(
            matches!(&s, Status::Applied { breakpoints, .. } if breakpoints[0].status == State::Armed)
        );
        let e: Status = round_trip(r#"{"error":"invalid breakpoint set","generation":4}"#);
        assert!(matches!(
            e,
            Status::Failed {
                generation: Some(4),
                ..
            }
        ));
        let st: Stats = round_trip(&alloc::format!(
            r#"{{"breakpoints":[{BP_STATUS}],"pid":9}}"#
        ));
        assert_eq!(st.breakpoints[0].kind, BreakpointKind::Logpoint);
    }

    #[test]
    fn code_objects_and_sources() {
        let c: CodeObjects =
            round_trip(r#"{"breakpoints":[{"id":"b","code_objects":[1,2],"running":[3,2]}]}"#);
        assert_eq!(c.breakpoints[0].running, [3, 2]);
        let a: SourcesAnswer = round_trip(r#"{"id":7,"files":["/srv/a.py"]}"#);
        assert_eq!(a.files.unwrap().len(), 1);
        let l: SourcesAnswer = round_trip(r#"{"id":8,"file":"/srv/a.py","lines":[1,3]}"#);
        assert_eq!(l.lines.unwrap(), [1, 3]);
        let _: SourcesAnswer = round_trip(r#"{"id":9,"error":"no code loaded"}"#);
    }
}
