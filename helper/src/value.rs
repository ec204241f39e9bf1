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
    /// A container already being captured higher up (a reference cycle); `ancestor` is its
    /// position on the path from the local (0 = the local itself).
    Cycle {
        ancestor: usize,
    },
}

/// Marker written in place of a redacted value.
pub const REDACTED: &str = "[redacted]";

/// Appends `v` as JSON, in jsonpickle's encoding: objects as `{"py/object": type, field: …}`,
/// a reference cycle as jsonpickle's back-reference `{"py/id": n}`, where `n` numbers the
/// containers (lists, dicts, objects) of the value from 1 in encoding order, as jsonpickle
/// numbers them; cuts as `py/`-prefixed keys (`{"py/object": type, "py/cut": "depth"}`), which
/// jsonpickle readers such as PostHog's locals renderer treat as bookkeeping.
pub fn encode(out: &mut String, v: &Value) {
    encode_numbered(out, v, &mut Refs::default());
}

/// Container numbering while encoding one value (see [`encode`]).
#[derive(Default)]
struct Refs {
    /// The number the next container gets, minus one.
    seen: u32,
    /// The numbers of the containers from the value's root to the one being encoded.
    path: Vec<u32>,
}

impl Refs {
    fn enter(&mut self) {
        self.seen += 1;
        self.path.push(self.seen);
    }
    fn leave(&mut self) {
        self.path.pop();
    }
}

fn encode_numbered(out: &mut String, v: &Value, refs: &mut Refs) {
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
            refs.enter();
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                encode_numbered(out, it, refs);
            }
            if *more > 0 {
                if !items.is_empty() {
                    out.push(',');
                }
                cut_marker(out, "items", *more);
            }
            out.push(']');
            refs.leave();
        }
        Value::Dict { entries, more } => {
            refs.enter();
            out.push('{');
            encode_fields(out, entries, *more, false, refs);
            out.push('}');
            refs.leave();
        }
        Value::Object {
            type_name,
            fields,
            more,
        } => {
            refs.enter();
            out.push_str("{\"py/object\":");
            encode_str(out, type_name);
            encode_fields(out, fields, *more, true, refs);
            out.push('}');
            refs.leave();
        }
        Value::Redacted => encode_str(out, REDACTED),
        Value::Cut { reason, type_name } => {
            out.push_str("{\"py/object\":");
            encode_str(out, type_name);
            out.push_str(",\"py/cut\":");
            encode_str(out, reason.as_str());
            out.push('}');
        }
        Value::Cycle { ancestor } => {
            use std::fmt::Write;
            // An ancestor outside the path cannot happen (the capture records where it found
            // it); 1 (the value itself) keeps the reference well-formed anyway.
            let id = refs.path.get(*ancestor).copied().unwrap_or(1);
            let _ = write!(out, "{{\"py/id\":{id}}}");
        }
    }
}

fn cut_marker(out: &mut String, reason: &str, more: usize) {
    use std::fmt::Write;
    let _ = write!(out, "{{\"py/cut\":\"{reason}\",\"more\":{more}}}");
}

fn encode_fields(
    out: &mut String,
    fields: &[(String, Value)],
    more: usize,
    after_first: bool,
    refs: &mut Refs,
) {
    let mut first = !after_first;
    for (k, v) in fields {
        if !first {
            out.push(',');
        }
        first = false;
        encode_str(out, k);
        out.push(':');
        encode_numbered(out, v, refs);
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

    #[test]
    fn cycles_refer_back_as_jsonpickle_numbers_containers() {
        // node = {"kids": [node_a]}, node_a = App(me=node_a, up=node): containers numbered in
        // encoding order (dict 1, list 2, object 3).
        let v = Value::Dict {
            entries: vec![(
                "kids".into(),
                Value::List {
                    items: vec![Value::Object {
                        type_name: "app.Node".into(),
                        fields: vec![
                            ("me".into(), Value::Cycle { ancestor: 2 }),
                            ("up".into(), Value::Cycle { ancestor: 0 }),
                        ],
                        more: 0,
                    }],
                    more: 0,
                },
            )],
            more: 0,
        };
        assert_eq!(
            enc(&v),
            serde_json::json!({"kids": [{"py/object": "app.Node", "me": {"py/id": 3}, "up": {"py/id": 1}}]})
        );
    }
}
