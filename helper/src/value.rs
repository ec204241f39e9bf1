//! The value tree a capture produces on the application thread, and its JSON encoding (done on
//! the helper's own thread, without the GIL).
use std::sync::Arc;

/// Why a part of a snapshot was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Nesting deeper than the breakpoint's depth limit.
    Depth,
    /// The snapshot reached its byte budget.
    Size,
    /// The capture reached its time budget.
    Deadline,
}

impl Cut {
    pub fn as_str(self) -> &'static str {
        match self {
            Cut::Depth => "depth",
            Cut::Size => "size",
            Cut::Deadline => "deadline",
        }
    }
}

/// A captured value, copied out of the interpreter.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An int beyond 64 bits: its decimal digits, or a description when it is too large to print.
    BigInt(String),
    Float(f64),
    /// A string; `more` is the number of characters cut off (0 when complete).
    Str {
        s: String,
        more: usize,
    },
    /// list, tuple, set, frozenset; `more` items were cut off.
    List {
        items: Vec<Value>,
        more: usize,
    },
    /// dict (keys rendered as strings); `more` entries were cut off.
    Dict {
        entries: Vec<(String, Value)>,
        more: usize,
    },
    /// Any other object: its type and the fields read from `__dict__` / `__slots__`.
    Object {
        type_name: Arc<str>,
        fields: Vec<(String, Value)>,
        more: usize,
    },
    /// The value of a sensitive name.
    Redacted,
    /// A value not captured, and why; `type_name` says what it was.
    Cut {
        reason: Cut,
        type_name: Arc<str>,
    },
    /// A container already being captured higher up (a reference cycle).
    Cycle {
        type_name: Arc<str>,
    },
}

/// Marker written in place of a redacted value.
pub const REDACTED: &str = "[redacted]";

/// Appends `v` as JSON.
pub fn encode(out: &mut String, v: &Value) {
    match v {
        Value::None => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Int(i) => {
            use std::fmt::Write;
            let _ = write!(out, "{i}");
        }
        Value::BigInt(s) => encode_str(out, s),
        Value::Float(f) => {
            if f.is_nan() {
                out.push_str("\"NaN\"");
            } else if f.is_infinite() {
                out.push_str(if *f > 0.0 {
                    "\"Infinity\""
                } else {
                    "\"-Infinity\""
                });
            } else {
                use std::fmt::Write;
                // `{:?}` keeps a decimal point (1.0), so it reads back as a float.
                let _ = write!(out, "{f:?}");
            }
        }
        Value::Str { s, more } => {
            if *more == 0 {
                encode_str(out, s);
            } else {
                let mut t = String::with_capacity(s.len() + 40);
                t.push_str(s);
                use std::fmt::Write;
                let _ = write!(t, "…[{more} more chars]");
                encode_str(out, &t);
            }
        }
        Value::List { items, more } => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                encode(out, it);
            }
            if *more > 0 {
                if !items.is_empty() {
                    out.push(',');
                }
                cut_marker(out, "items", *more);
            }
            out.push(']');
        }
        Value::Dict { entries, more } => {
            out.push('{');
            encode_fields(out, entries, *more, false);
            out.push('}');
        }
        Value::Object {
            type_name,
            fields,
            more,
        } => {
            out.push_str("{\"py/object\":");
            encode_str(out, type_name);
            encode_fields(out, fields, *more, true);
            out.push('}');
        }
        Value::Redacted => encode_str(out, REDACTED),
        Value::Cut { reason, type_name } => {
            out.push_str("{\"py/object\":");
            encode_str(out, type_name);
            out.push_str(",\"py/cut\":");
            encode_str(out, reason.as_str());
            out.push('}');
        }
        Value::Cycle { type_name } => {
            out.push_str("{\"py/object\":");
            encode_str(out, type_name);
            out.push_str(",\"py/cycle\":true}");
        }
    }
}

/// Appends a JSON object of `entries` (plus a cut marker when `more` > 0).
pub fn encode_entries(out: &mut String, entries: &[(String, Value)], more: usize) {
    out.push('{');
    encode_fields(out, entries, more, false);
    out.push('}');
}

fn cut_marker(out: &mut String, reason: &str, more: usize) {
    use std::fmt::Write;
    let _ = write!(out, "{{\"py/cut\":\"{reason}\",\"more\":{more}}}");
}

fn encode_fields(out: &mut String, fields: &[(String, Value)], more: usize, after_first: bool) {
    let mut first = !after_first;
    for (k, v) in fields {
        if !first {
            out.push(',');
        }
        first = false;
        encode_str(out, k);
        out.push(':');
        encode(out, v);
    }
    if more > 0 {
        if !first {
            out.push(',');
        }
        out.push_str("\"py/cut\":");
        cut_marker(out, "items", more);
    }
}

/// Appends `s` as a JSON string literal.
pub fn encode_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> serde_json::Value {
        let mut s = String::new();
        encode(&mut s, v);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("invalid JSON {s}: {e}"))
    }

    #[test]
    fn scalars() {
        assert_eq!(enc(&Value::Float(f64::NAN)), serde_json::json!("NaN"));
        assert_eq!(
            enc(&Value::Float(f64::NEG_INFINITY)),
            serde_json::json!("-Infinity")
        );
        assert_eq!(enc(&Value::Float(1.0)), serde_json::json!(1.0));
        assert_eq!(enc(&Value::Int(-3)), serde_json::json!(-3));
        assert_eq!(
            enc(&Value::Str {
                s: "a\"b\\\n\u{1}é".into(),
                more: 0
            }),
            serde_json::json!("a\"b\\\n\u{1}é")
        );
    }

    #[test]
    fn containers_and_markers() {
        let v = Value::Object {
            type_name: "app.User".into(),
            fields: vec![
                (
                    "name".into(),
                    Value::Str {
                        s: "ab".into(),
                        more: 3,
                    },
                ),
                (
                    "tags".into(),
                    Value::List {
                        items: vec![Value::Int(1)],
                        more: 9,
                    },
                ),
                ("password".into(), Value::Redacted),
                (
                    "deep".into(),
                    Value::Cut {
                        reason: Cut::Depth,
                        type_name: "builtins.dict".into(),
                    },
                ),
            ],
            more: 2,
        };
        assert_eq!(
            enc(&v),
            serde_json::json!({
                "py/object": "app.User",
                "name": "ab…[3 more chars]",
                "tags": [1, {"py/cut": "items", "more": 9}],
                "password": "[redacted]",
                "deep": {"py/object": "builtins.dict", "py/cut": "depth"},
                "py/cut": {"py/cut": "items", "more": 2}
            })
        );
    }
}
