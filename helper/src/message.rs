//! A logpoint's message template: literal text with `{expression}` holes, each an expression of
//! the condition language (`condition.rs`), evaluated with its rules (`eval.rs`: no user code).
//!
//! * `{{` and `}}` are literal braces; `{expr!r}` quotes strings (`'abc'`), `{expr}` / `{expr!s}`
//!   print them as they are. Format specs (`{x:.2f}`) are rejected at parse time.
//! * A value is rendered from what the capture encoder copies ([`crate::capture::Capturer`], with
//!   the logpoint's limits), never through the object's `__repr__` / `__format__` / `__str__`:
//!   `shop.cart.Cart(coupon='X', items=[…])`.
//! * An expression reading a sensitive name (a name, attribute or string key the redactor
//!   matches) renders as `[redacted]` without being evaluated; sensitive fields inside a value are
//!   redacted by the capture.
//! * An expression that fails renders as `{expr!error: why}`; the rest of the message is still
//!   rendered and sent.
//!
//! All holes are parsed as one list expression, so they share one name table (and one
//! local-variable mask per code object) with the hit path's scope.
use crate::capture::Capturer;
use crate::condition::{self, Condition, Expr, Lit, ParseError};
use crate::eval::{CVal, Scope, eval_expr};
use crate::redact::Redactor;
use crate::value::{REDACTED, Value};
use std::fmt::Write;

/// How a hole's value is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion {
    /// `{x}` / `{x!s}`: a top-level string as it is.
    Str,
    /// `{x!r}`: strings quoted.
    Repr,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    /// Hole `index` of [`Template::exprs`]; `source` as written (trimmed).
    Hole {
        index: usize,
        source: String,
        conversion: Conversion,
    },
}

/// A parsed message template.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pub source: String,
    pub parts: Vec<Part>,
    /// Every hole's expression as one list (`Expr::List`), sharing `names`; None without holes.
    pub exprs: Option<Condition>,
}

fn perr<T>(column: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        column,
        message: message.into(),
    })
}

/// Parses a template; columns in errors are 1-based characters of the whole template.
pub fn parse(src: &str) -> Result<Template, ParseError> {
    if src.trim().is_empty() {
        return perr(1, "empty message");
    }
    let chars: Vec<char> = src.chars().collect();
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut holes: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '}' {
            if chars.get(i + 1) == Some(&'}') {
                text.push('}');
                i += 2;
                continue;
            }
            return perr(i + 1, "single `}` in the message: write `}}` for a brace");
        }
        if c != '{' {
            text.push(c);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'{') {
            text.push('{');
            i += 2;
            continue;
        }
        // A hole: up to the `}` at bracket depth 0 outside string literals.
        let open = i;
        let start = i + 1;
        let mut depth = 0usize;
        let mut quote: Option<char> = None;
        let mut j = start;
        let mut conv_at = None;
        while j < chars.len() {
            let d = chars[j];
            if let Some(q) = quote {
                if d == '\\' {
                    j += 1;
                } else if d == q {
                    quote = None;
                }
            } else {
                match d {
                    '\'' | '"' => quote = Some(d),
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' => depth = depth.saturating_sub(1),
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    '!' if depth == 0 && chars.get(j + 1) != Some(&'=') => {
                        conv_at = Some(j);
                        break;
                    }
                    ':' if depth == 0 => {
                        return perr(
                            j + 1,
                            "format specs (`{x:…}`) are not supported in messages; values are rendered with the capture limits",
                        );
                    }
                    _ => {}
                }
            }
            j += 1;
        }
        let end = conv_at.unwrap_or(j);
        let mut conversion = Conversion::Str;
        if let Some(b) = conv_at {
            let flag = chars.get(b + 1).copied();
            conversion = match flag {
                Some('r') | Some('a') => Conversion::Repr,
                Some('s') => Conversion::Str,
                _ => return perr(b + 1, "after `!` expected `r`, `s` or `a`"),
            };
            j = b + 2;
        }
        if chars.get(j) != Some(&'}') {
            return perr(open + 1, "`{` is not closed by a `}`");
        }
        let expr: String = chars[start..end].iter().collect();
        if let Err(e) = condition::parse(&expr) {
            let column = if expr.trim().is_empty() {
                open + 1
            } else {
                start + e.column
            };
            let message = e
                .message
                .replace("empty condition", "empty `{}`")
                .replace(" in conditions", " in messages");
            return perr(column, message);
        }
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(Part::Hole {
            index: holes.len(),
            source: expr.trim().to_string(),
            conversion,
        });
        holes.push(expr);
        i = j + 1;
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    let exprs = if holes.is_empty() {
        None
    } else {
        let list = format!("[{}]", holes.join(", "));
        let c = condition::parse(&list).map_err(|e| ParseError {
            column: 1,
            message: e.message,
        })?;
        match &c.expr {
            Expr::List(items) if items.len() == holes.len() => Some(c),
            _ => return perr(1, "each `{…}` holds exactly one expression"),
        }
    };
    Ok(Template {
        source: src.to_string(),
        parts,
        exprs,
    })
}

impl Template {
    /// The names the holes read (index order of [`Condition::names`]).
    pub fn names(&self) -> &[String] {
        self.exprs.as_ref().map(|c| &c.names[..]).unwrap_or(&[])
    }

    fn hole(&self, index: usize) -> Option<&Expr> {
        match &self.exprs.as_ref()?.expr {
            Expr::List(items) => items.get(index),
            _ => None,
        }
    }

    /// Whether hole `index` reads a name, attribute or string key the redactor matches.
    pub fn reads_sensitive(&self, index: usize, redactor: &Redactor) -> bool {
        let (Some(c), Some(e)) = (&self.exprs, self.hole(index)) else {
            return false;
        };
        let mut idents = Vec::new();
        identifiers(e, c, &mut idents);
        idents.iter().any(|n| redactor.is_sensitive(n))
    }

    /// Renders the message in `scope`, each hole's value captured by `cap` (which holds the
    /// limits and the redactor). At most `max_chars` characters (then `…`).
    pub fn render(
        &self,
        scope: &mut Scope<'_, '_>,
        cap: &mut Capturer<'_, '_>,
        redactor: &Redactor,
        max_chars: usize,
    ) -> String {
        let mut out = String::with_capacity(self.source.len() + 32);
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Hole {
                    index,
                    source,
                    conversion,
                } => {
                    if self.reads_sensitive(*index, redactor) {
                        out.push_str(REDACTED);
                        continue;
                    }
                    let (Some(c), Some(e)) = (&self.exprs, self.hole(*index)) else {
                        continue;
                    };
                    match eval_expr(e, c, scope) {
                        Ok(v) => render_cval(&mut out, &v, *conversion, cap),
                        Err(err) => {
                            let _ = write!(out, "{{{source}!error: {err}}}");
                        }
                    }
                }
            }
            if out.chars().count() > max_chars {
                let cut: String = out.chars().take(max_chars).collect();
                return cut + "…";
            }
        }
        out
    }
}

/// Names, attribute names and literal string keys an expression reads.
fn identifiers<'a>(e: &'a Expr, c: &'a Condition, out: &mut Vec<&'a str>) {
    match e {
        Expr::Name(i) => {
            if let Some(n) = c.names.get(*i) {
                out.push(n);
            }
        }
        Expr::Attr(b, a) => {
            out.push(a);
            identifiers(b, c, out);
        }
        Expr::Index(b, k) => {
            if let Expr::Lit(Lit::Str(s)) = &**k {
                out.push(s);
            }
            identifiers(b, c, out);
            identifiers(k, c, out);
        }
        Expr::Neg(x) | Expr::Pos(x) | Expr::Not(x) | Expr::Len(x) | Expr::IsInstance(x, _) => {
            identifiers(x, c, out)
        }
        Expr::Bin(_, a, b) => {
            identifiers(a, c, out);
            identifiers(b, c, out);
        }
        Expr::And(xs) | Expr::Or(xs) | Expr::Tuple(xs) | Expr::List(xs) => {
            xs.iter().for_each(|x| identifiers(x, c, out))
        }
        Expr::Compare(a, rest) => {
            identifiers(a, c, out);
            rest.iter().for_each(|(_, x)| identifiers(x, c, out));
        }
        Expr::Lit(_) => {}
    }
}

fn render_cval(out: &mut String, v: &CVal<'_>, conv: Conversion, cap: &mut Capturer<'_, '_>) {
    match v {
        CVal::None => out.push_str("None"),
        CVal::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        CVal::Int(i) => {
            let _ = write!(out, "{i}");
        }
        CVal::Float(f) => float(out, *f),
        CVal::Str(s) => match conv {
            Conversion::Str => out.push_str(s),
            Conversion::Repr => quoted(out, s),
        },
        CVal::Seq(items) => {
            out.push('(');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_cval(out, x, Conversion::Repr, cap);
            }
            if items.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        CVal::Obj(o) => {
            // SAFETY: GIL held (the hit path); `o` is a live reference for the call.
            let value = unsafe { cap.value(o.as_ptr(), 1) };
            render_value(out, &value, conv == Conversion::Repr);
        }
    }
}

fn float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("nan");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "inf" } else { "-inf" });
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        let _ = write!(out, "{f:.1}");
    } else {
        let _ = write!(out, "{f}");
    }
}

/// A string as Python's `repr` writes it: single quotes, or double quotes when it holds a
/// single quote and no double quote.
fn quoted(out: &mut String, s: &str) {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(q);
    for ch in s.chars() {
        match ch {
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(q);
}

/// Renders a captured value the way Python would print it, from the copy (no user code):
/// objects as `module.Type(field=value, …)`, cut parts as markers.
pub fn render_value(out: &mut String, v: &Value, quote: bool) {
    let more = |out: &mut String, n: usize, first: bool| {
        if n > 0 {
            if !first {
                out.push_str(", ");
            }
            let _ = write!(out, "…+{n}");
        }
    };
    match v {
        Value::None => out.push_str("None"),
        Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::BigInt(s) => out.push_str(s),
        Value::Float(f) => float(out, *f),
        Value::Str { s, more: m } => {
            if quote {
                quoted(out, s);
            } else {
                out.push_str(s);
            }
            if *m > 0 {
                let _ = write!(out, "…(+{m} chars)");
            }
        }
        Value::List { items, more: m } => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_value(out, x, true);
            }
            more(out, *m, items.is_empty());
            out.push(']');
        }
        Value::Dict { entries, more: m } => {
            out.push('{');
            for (i, (k, x)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                quoted(out, k);
                out.push_str(": ");
                render_value(out, x, true);
            }
            more(out, *m, entries.is_empty());
            out.push('}');
        }
        Value::Object {
            type_name,
            fields,
            more: m,
        } => {
            out.push_str(type_name);
            out.push('(');
            for (i, (k, x)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push('=');
                render_value(out, x, true);
            }
            more(out, *m, fields.is_empty());
            out.push(')');
        }
        Value::Redacted => out.push_str(REDACTED),
        Value::Cut { reason, type_name } => {
            let _ = write!(out, "<{type_name}: cut ({})>", reason.as_str());
        }
        Value::Cycle { .. } => out.push_str("<cycle>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_errors_name_the_column() {
        let t =
            parse("subtotal={subtotal} coupon={cart.coupon!r} n={len(cart.items)} {{x}}").unwrap();
        assert_eq!(t.names(), ["subtotal", "cart"]);
        assert_eq!(t.parts.len(), 7);
        assert_eq!(t.parts[6], Part::Text(" {x}".into()));
        assert!(matches!(
            &t.parts[3],
            Part::Hole { index: 1, conversion: Conversion::Repr, source, .. } if source == "cart.coupon"
        ));
        assert!(parse("no holes").unwrap().exprs.is_none());
        assert!(parse("a={x != 1}").is_ok());
        assert!(parse("a={d['}']}").is_ok());
        let e = parse("a={x:.2f}").unwrap_err();
        assert_eq!(e.column, 5);
        assert!(e.message.contains("format specs"));
        assert_eq!(parse("a={x").unwrap_err().column, 3);
        assert!(parse("a}").unwrap_err().message.contains("`}}`"));
        let e = parse("v={foo()}").unwrap_err();
        assert!(e.column >= 4, "{e:?}");
        assert!(parse("v={}").unwrap_err().message.contains("empty"));
        assert!(parse("v={x!q}").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn values_render_like_python_without_running_it() {
        let mut s = String::new();
        render_value(
            &mut s,
            &Value::Object {
                type_name: "shop.Cart".into(),
                fields: vec![
                    (
                        "coupon".into(),
                        Value::Str {
                            s: "X'\"".into(),
                            more: 0,
                        },
                    ),
                    ("token".into(), Value::Redacted),
                    (
                        "items".into(),
                        Value::List {
                            items: vec![Value::Int(1), Value::Float(2.0)],
                            more: 3,
                        },
                    ),
                ],
                more: 0,
            },
            true,
        );
        assert_eq!(
            s,
            "shop.Cart(coupon='X\\'\"', token=[redacted], items=[1, 2.0, …+3])"
        );
    }

    #[test]
    fn sensitive_names_anywhere_in_a_hole() {
        let r = Redactor::new(&[], &[]);
        let t = parse("{user.password} {d['api_key']} {user.id}").unwrap();
        assert!(t.reads_sensitive(0, &r));
        assert!(t.reads_sensitive(1, &r));
        assert!(!t.reads_sensitive(2, &r));
    }
}
