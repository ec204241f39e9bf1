//! The PostHog shape of a hit: how PostHog's Live Debugger reads `$stack_trace` frames and
//! `$locals_variables` values. Every producer of `$data_breakpoint_hit` properties (the helper
//! thread's [`crate::output::encode_hit`], and anything else in this crate that sends hits
//! without the agent) encodes them with these functions, so PostHog gets one shape.
//!
//! * A frame is an object carrying both readers' keys: `file`, `function`, `line` (PostHog's
//!   hit listing, `products/live_debugger/backend/models.py`, `get_breakpoint_hits`) and `"0"`,
//!   `"1"`, `"2"` (its state inspector, `products/live_debugger/frontend/StateInspector.tsx`,
//!   reads `frame[0]`, `frame[1]`, `frame[2]`).
//! * Each local's value is a JSON **string** holding the value in jsonpickle's encoding (what
//!   the original Python library sent, one `jsonpickle.dumps` per local): PostHog's renderer
//!   (`products/live_debugger/frontend/serde.ts`, `parseJsonPickleVariable`) parses it, shows
//!   `py/object` as the type badge and hides the `py/*` bookkeeping keys (cuts, cycles).
use crate::value::{Value, encode, encode_str};
use std::fmt::Write;

/// Appends one `$stack_trace` frame.
pub fn encode_frame(out: &mut String, file: &str, function: &str, line: i32) {
    out.push_str("{\"file\":");
    encode_str(out, file);
    out.push_str(",\"function\":");
    encode_str(out, function);
    let _ = write!(out, ",\"line\":{line},\"0\":");
    encode_str(out, file);
    out.push_str(",\"1\":");
    encode_str(out, function);
    let _ = write!(out, ",\"2\":{line}}}");
}

/// Appends a `$stack_trace` array of `(file, function, line)` frames, innermost first.
pub fn encode_stack<F: AsRef<str>, Q: AsRef<str>>(out: &mut String, frames: &[(F, Q, i32)]) {
    out.push('[');
    for (i, (f, q, l)) in frames.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        encode_frame(out, f.as_ref(), q.as_ref(), *l);
    }
    out.push(']');
}

/// Appends one local's value: a JSON string holding its jsonpickle encoding.
pub fn encode_local(out: &mut String, v: &Value, scratch: &mut String) {
    scratch.clear();
    encode(scratch, v);
    encode_str(out, scratch);
}

/// Appends the `$locals_variables` object: name → [`encode_local`].
pub fn encode_locals(out: &mut String, locals: &[(String, Value)]) {
    let mut scratch = String::with_capacity(256);
    out.push('{');
    for (i, (k, v)) in locals.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        encode_str(out, k);
        out.push(':');
        encode_local(out, v, &mut scratch);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_carry_both_readers_keys() {
        let mut s = String::new();
        encode_stack(
            &mut s,
            &[("/srv/app/x.py", "f", 3), ("/srv/app/m.py", "<module>", 9)],
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v[0],
            json!({"file": "/srv/app/x.py", "function": "f", "line": 3,
                   "0": "/srv/app/x.py", "1": "f", "2": 3})
        );
        assert_eq!(v[1]["function"], "<module>");
    }

    #[test]
    fn locals_are_strings_of_jsonpickle() {
        let mut s = String::new();
        let locals = vec![
            ("n".to_string(), Value::Int(4)),
            (
                "s".to_string(),
                Value::Str {
                    s: "a\"b".into(),
                    more: 0,
                },
            ),
            (
                "u".to_string(),
                Value::Object {
                    type_name: "app.User".into(),
                    fields: vec![("token".into(), Value::Redacted)],
                    more: 0,
                },
            ),
        ];
        encode_locals(&mut s, &locals);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["n"], json!("4"));
        assert_eq!(v["s"], json!("\"a\\\"b\""));
        let u: serde_json::Value = serde_json::from_str(v["u"].as_str().unwrap()).unwrap();
        assert_eq!(u, json!({"py/object": "app.User", "token": "[redacted]"}));
    }
}
