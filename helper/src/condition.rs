//! Breakpoint conditions: a side-effect-free subset of Python expressions, parsed once in Rust.
//!
//! Accepted: names (locals, then globals, then builtins), literals (None, True, False, ints,
//! floats, strings, tuples and lists of those), attribute access, subscripts, comparisons
//! (chained, `in`, `not in`, `is`, `is not`), `and` / `or` / `not`, `+ - * / // %` and unary
//! `-` / `+`, `len(x)` and `isinstance(x, <builtin type or tuple of them>)`.
//! Rejected at parse time, with the column: any other call, dunder names and attributes,
//! `lambda`, `:=`, comprehensions, conditional expressions, `await` / `yield`, f-strings.
//! Evaluation lives in `eval.rs` (it reads Python objects).

/// A syntax or policy error in a condition, with its 1-based column.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("condition error at column {column}: {message}")]
pub struct ParseError {
    /// 1-based column (in characters) where the problem starts.
    pub column: usize,
    /// What is wrong and, where possible, what is allowed instead.
    pub message: String,
}

/// Builtin types `isinstance` may test against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltinType {
    Int,
    Float,
    Str,
    Bool,
    List,
    Tuple,
    Dict,
    Set,
    FrozenSet,
    Bytes,
    NoneType,
}

impl BuiltinType {
    fn from_name(n: &str) -> Option<Self> {
        Some(match n {
            "int" => Self::Int,
            "float" => Self::Float,
            "str" => Self::Str,
            "bool" => Self::Bool,
            "list" => Self::List,
            "tuple" => Self::Tuple,
            "dict" => Self::Dict,
            "set" => Self::Set,
            "frozenset" => Self::FrozenSet,
            "bytes" => Self::Bytes,
            "NoneType" => Self::NoneType,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Is,
    IsNot,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Lit(Lit),
    /// A name; the index into [`Condition::names`].
    Name(usize),
    Attr(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Pos(Box<Expr>),
    Not(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Compare(Box<Expr>, Vec<(CmpOp, Expr)>),
    Len(Box<Expr>),
    IsInstance(Box<Expr>, Vec<BuiltinType>),
    Tuple(Vec<Expr>),
    List(Vec<Expr>),
}

/// A parsed condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub source: String,
    pub expr: Expr,
    /// Distinct names the expression reads, in order of first use.
    pub names: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Name(String),
    Int(i64),
    Float(f64),
    Str(String),
    Op(&'static str),
    End,
}

const OPS: &[&str] = &[
    "**", "//", "==", "!=", "<=", ">=", ":=", "->", "<<", ">>", "+", "-", "*", "/", "%", "<", ">",
    "(", ")", "[", "]", "{", "}", ",", ".", ":", "=", "@", "&", "|", "^", "~", ";",
];

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        column,
        message: message.into(),
    })
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let s = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[s..i].iter().collect();
            // String prefixes.
            if i < chars.len() && (chars[i] == '\'' || chars[i] == '"') {
                let lw = word.to_ascii_lowercase();
                if lw.contains('f') {
                    return err(
                        col,
                        "f-strings are not allowed in conditions (they can run code)",
                    );
                }
                if lw == "r" || lw == "u" {
                    let (s, next) = string_lit(&chars, i, lw == "r")?;
                    out.push((Tok::Str(s), col));
                    i = next;
                    continue;
                }
                return err(col, format!("string prefix `{word}` is not supported"));
            }
            out.push((Tok::Name(word), col));
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let s = i;
            if c == '0' && matches!(chars.get(i + 1), Some('x' | 'X' | 'o' | 'O' | 'b' | 'B')) {
                let radix = match chars[i + 1] {
                    'x' | 'X' => 16,
                    'o' | 'O' => 8,
                    _ => 2,
                };
                i += 2;
                let ds = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let digits: String = chars[ds..i].iter().filter(|c| **c != '_').collect();
                let v = i64::from_str_radix(&digits, radix)
                    .or_else(|_| err(col, "invalid or too large integer literal"))?;
                out.push((Tok::Int(v), col));
                continue;
            }
            let mut is_float = false;
            while i < chars.len() {
                let d = chars[i];
                if d.is_ascii_digit() || d == '_' {
                    i += 1;
                } else if d == '.' && !is_float {
                    is_float = true;
                    i += 1;
                } else if (d == 'e' || d == 'E')
                    && chars
                        .get(i + 1)
                        .is_some_and(|n| n.is_ascii_digit() || *n == '-' || *n == '+')
                {
                    is_float = true;
                    i += 2;
                } else {
                    break;
                }
            }
            if i < chars.len() && (chars[i].is_alphabetic()) {
                return err(i + 1, "invalid number literal");
            }
            let text: String = chars[s..i].iter().filter(|c| **c != '_').collect();
            if is_float {
                let v: f64 = text
                    .parse()
                    .or_else(|_| err(col, "invalid float literal"))?;
                out.push((Tok::Float(v), col));
            } else {
                let v: i64 = text
                    .parse()
                    .or_else(|_| err(col, "integer literal too large (64-bit at most)"))?;
                out.push((Tok::Int(v), col));
            }
            continue;
        }
        if c == '\'' || c == '"' {
            let (s, next) = string_lit(&chars, i, false)?;
            out.push((Tok::Str(s), col));
            i = next;
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        match OPS.iter().find(|op| rest.starts_with(**op)) {
            Some(op) => {
                out.push((Tok::Op(op), col));
                i += op.chars().count();
            }
            None => return err(col, format!("unexpected character `{c}`")),
        }
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

fn string_lit(chars: &[char], start: usize, raw: bool) -> Result<(String, usize), ParseError> {
    let q = chars[start];
    let col = start + 1;
    if chars.get(start + 1) == Some(&q) && chars.get(start + 2) == Some(&q) {
        return err(col, "triple-quoted strings are not supported in conditions");
    }
    let mut i = start + 1;
    let mut s = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == q {
            return Ok((s, i + 1));
        }
        if c == '\\' && !raw {
            let n = chars.get(i + 1).copied();
            match n {
                Some('n') => s.push('\n'),
                Some('t') => s.push('\t'),
                Some('r') => s.push('\r'),
                Some('0') => s.push('\0'),
                Some('\\') => s.push('\\'),
                Some('\'') => s.push('\''),
                Some('"') => s.push('"'),
                _ => return err(i + 1, "unsupported escape sequence in string"),
            }
            i += 2;
            continue;
        }
        s.push(c);
        i += 1;
    }
    err(col, "unterminated string")
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    names: Vec<String>,
}

const FORBIDDEN_KEYWORDS: &[(&str, &str)] = &[
    ("lambda", "lambdas are not allowed in conditions"),
    ("for", "comprehensions are not allowed in conditions"),
    (
        "if",
        "conditional expressions (`a if c else b`) are not allowed; use `and`/`or`",
    ),
    (
        "else",
        "conditional expressions (`a if c else b`) are not allowed; use `and`/`or`",
    ),
    ("await", "`await` is not allowed in conditions"),
    ("yield", "`yield` is not allowed in conditions"),
    ("import", "`import` is not allowed in conditions"),
    ("from", "`from` is not allowed in conditions"),
    ("async", "`async` is not allowed in conditions"),
    ("del", "`del` is not allowed in conditions"),
    ("global", "`global` is not allowed in conditions"),
    ("nonlocal", "`nonlocal` is not allowed in conditions"),
    ("def", "`def` is not allowed in conditions"),
    ("class", "`class` is not allowed in conditions"),
    ("return", "`return` is not allowed in conditions"),
    ("assert", "`assert` is not allowed in conditions"),
    ("raise", "`raise` is not allowed in conditions"),
    ("with", "`with` is not allowed in conditions"),
    ("pass", "statements are not allowed in conditions"),
];

fn is_dunder(n: &str) -> bool {
    n.starts_with("__")
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }
    fn col(&self) -> usize {
        self.toks[self.pos].1
    }
    fn bump(&mut self) -> (Tok, usize) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Name(n) if n == kw)
    }
    fn expect_op(&mut self, op: &str) -> Result<(), ParseError> {
        if self.is_op(op) {
            self.bump();
            Ok(())
        } else {
            err(self.col(), format!("expected `{op}`"))
        }
    }

    fn check_forbidden(&self) -> Result<(), ParseError> {
        if let Tok::Name(n) = self.peek()
            && let Some((_, msg)) = FORBIDDEN_KEYWORDS.iter().find(|(k, _)| k == n)
        {
            return err(self.col(), *msg);
        }
        if self.is_op(":=") {
            return err(
                self.col(),
                "the walrus operator `:=` is not allowed in conditions",
            );
        }
        if self.is_op("=") {
            return err(
                self.col(),
                "assignment is not allowed in conditions (did you mean `==`?)",
            );
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        let e = self.or()?;
        self.check_forbidden()?;
        Ok(e)
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut v = vec![self.and()?];
        while self.is_kw("or") {
            self.bump();
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Expr::Or(v)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut v = vec![self.not()?];
        while self.is_kw("and") {
            self.bump();
            v.push(self.not()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Expr::And(v)
        })
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.is_kw("not") {
            self.bump();
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn cmp_op(&mut self) -> Result<Option<CmpOp>, ParseError> {
        let op = match self.peek() {
            Tok::Op("==") => CmpOp::Eq,
            Tok::Op("!=") => CmpOp::Ne,
            Tok::Op("<") => CmpOp::Lt,
            Tok::Op("<=") => CmpOp::Le,
            Tok::Op(">") => CmpOp::Gt,
            Tok::Op(">=") => CmpOp::Ge,
            Tok::Name(n) if n == "in" => CmpOp::In,
            Tok::Name(n) if n == "is" => {
                self.bump();
                if self.is_kw("not") {
                    self.bump();
                    return Ok(Some(CmpOp::IsNot));
                }
                return Ok(Some(CmpOp::Is));
            }
            Tok::Name(n) if n == "not" => {
                let col = self.col();
                self.bump();
                if self.is_kw("in") {
                    self.bump();
                    return Ok(Some(CmpOp::NotIn));
                }
                return err(col, "expected `not in`");
            }
            _ => return Ok(None),
        };
        self.bump();
        Ok(Some(op))
    }

    fn comparison(&mut self) -> Result<Expr, ParseError> {
        let first = self.arith()?;
        let mut rest = Vec::new();
        while let Some(op) = self.cmp_op()? {
            rest.push((op, self.arith()?));
        }
        Ok(if rest.is_empty() {
            first
        } else {
            Expr::Compare(Box::new(first), rest)
        })
    }

    fn arith(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.term()?;
        loop {
            let op = match self.peek() {
                Tok::Op("+") => BinOp::Add,
                Tok::Op("-") => BinOp::Sub,
                _ => break,
            };
            self.bump();
            e = Expr::Bin(op, Box::new(e), Box::new(self.term()?));
        }
        Ok(e)
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Op("*") => BinOp::Mul,
                Tok::Op("/") => BinOp::Div,
                Tok::Op("//") => BinOp::FloorDiv,
                Tok::Op("%") => BinOp::Mod,
                _ => break,
            };
            self.bump();
            e = Expr::Bin(op, Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.is_op("-") {
            self.bump();
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        if self.is_op("+") {
            self.bump();
            return Ok(Expr::Pos(Box::new(self.unary()?)));
        }
        let e = self.postfix()?;
        if self.is_op("**") {
            return err(self.col(), "`**` is not supported in conditions");
        }
        Ok(e)
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let start_col = self.col();
        let mut e = self.atom()?;
        loop {
            if self.is_op(".") {
                self.bump();
                let col = self.col();
                match self.bump().0 {
                    Tok::Name(n) => {
                        if is_dunder(&n) {
                            return err(
                                col,
                                format!("dunder attribute `{n}` is not allowed in conditions"),
                            );
                        }
                        e = Expr::Attr(Box::new(e), n);
                    }
                    _ => return err(col, "expected an attribute name after `.`"),
                }
            } else if self.is_op("[") {
                let col = self.col();
                self.bump();
                if self.is_op(":") {
                    return err(col, "slices are not supported in conditions");
                }
                let idx = self.or()?;
                if self.is_op(":") {
                    return err(col, "slices are not supported in conditions");
                }
                self.check_forbidden()?;
                self.expect_op("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else if self.is_op("(") {
                e = self.call(e, start_col)?;
            } else {
                return Ok(e);
            }
        }
    }

    fn call(&mut self, callee: Expr, col: usize) -> Result<Expr, ParseError> {
        let fname = match &callee {
            Expr::Name(i) => Some(self.names[*i].clone()),
            _ => None,
        };
        let allowed = matches!(fname.as_deref(), Some("len" | "isinstance"));
        if !allowed {
            return err(
                col,
                "function calls are not allowed in conditions (only len() and isinstance() on builtin types)",
            );
        }
        // The callee was recorded as a name read; it is a builtin here, not a variable.
        if let Expr::Name(i) = callee
            && i + 1 == self.names.len()
            && !self.names[..i].contains(&self.names[i])
        {
            self.names.pop();
        }
        self.bump(); // (
        let mut args = Vec::new();
        while !self.is_op(")") {
            if matches!(self.peek(), Tok::Op("*" | "**")) {
                return err(
                    self.col(),
                    "argument unpacking is not allowed in conditions",
                );
            }
            if let (Tok::Name(_), Some((Tok::Op("="), _))) =
                (self.peek(), self.toks.get(self.pos + 1))
            {
                return err(
                    self.col(),
                    "keyword arguments are not allowed in conditions",
                );
            }
            args.push(self.or()?);
            self.check_forbidden()?;
            if self.is_op(",") {
                self.bump();
            } else {
                break;
            }
        }
        self.expect_op(")")?;
        match fname.as_deref() {
            Some("len") => {
                if args.len() != 1 {
                    return err(col, "len() takes exactly one argument");
                }
                Ok(Expr::Len(Box::new(args.remove(0))))
            }
            _ => {
                if args.len() != 2 {
                    return err(col, "isinstance() takes exactly two arguments");
                }
                let types = args.pop().unwrap_or(Expr::Tuple(Vec::new()));
                let obj = args.remove(0);
                let mut out = Vec::new();
                let list = match types {
                    Expr::Tuple(v) => v,
                    other => vec![other],
                };
                for t in list {
                    let ty = match &t {
                        Expr::Name(i) => BuiltinType::from_name(&self.names[*i]),
                        _ => None,
                    };
                    match ty {
                        Some(ty) => {
                            if let Expr::Name(i) = t {
                                // Type names are builtins, not variables to look up.
                                if i + 1 == self.names.len() {
                                    self.names.pop();
                                }
                            }
                            out.push(ty)
                        }
                        None => {
                            return err(
                                col,
                                "isinstance() accepts only builtin types (int, float, str, bool, list, tuple, dict, set, frozenset, bytes, NoneType)",
                            );
                        }
                    }
                }
                Ok(Expr::IsInstance(Box::new(obj), out))
            }
        }
    }

    fn atom(&mut self) -> Result<Expr, ParseError> {
        self.check_forbidden()?;
        let col = self.col();
        let (t, _) = self.bump();
        match t {
            Tok::Int(i) => Ok(Expr::Lit(Lit::Int(i))),
            Tok::Float(f) => Ok(Expr::Lit(Lit::Float(f))),
            Tok::Str(mut s) => {
                // Adjacent literals concatenate.
                while let Tok::Str(more) = self.peek() {
                    s.push_str(more);
                    self.bump();
                }
                Ok(Expr::Lit(Lit::Str(s)))
            }
            Tok::Name(n) => match n.as_str() {
                "None" => Ok(Expr::Lit(Lit::None)),
                "True" => Ok(Expr::Lit(Lit::Bool(true))),
                "False" => Ok(Expr::Lit(Lit::Bool(false))),
                "and" | "or" | "not" | "in" | "is" => err(col, format!("unexpected keyword `{n}`")),
                _ if is_dunder(&n) => err(
                    col,
                    format!("dunder name `{n}` is not allowed in conditions"),
                ),
                _ => {
                    let idx = match self.names.iter().position(|x| *x == n) {
                        Some(i) => i,
                        None => {
                            self.names.push(n);
                            self.names.len() - 1
                        }
                    };
                    Ok(Expr::Name(idx))
                }
            },
            Tok::Op("(") => {
                if self.is_op(")") {
                    self.bump();
                    return Ok(Expr::Tuple(Vec::new()));
                }
                let first = self.or()?;
                self.check_forbidden()?;
                if self.is_op(")") {
                    self.bump();
                    return Ok(first);
                }
                let mut items = vec![first];
                while self.is_op(",") {
                    self.bump();
                    if self.is_op(")") {
                        break;
                    }
                    items.push(self.or()?);
                    self.check_forbidden()?;
                }
                self.expect_op(")")?;
                Ok(Expr::Tuple(items))
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                while !self.is_op("]") {
                    items.push(self.or()?);
                    self.check_forbidden()?;
                    if self.is_op(",") {
                        self.bump();
                    } else {
                        break;
                    }
                }
                self.expect_op("]")?;
                Ok(Expr::List(items))
            }
            Tok::Op("{") => err(col, "dict and set displays are not supported in conditions"),
            Tok::Op(o) => err(col, format!("unexpected `{o}`")),
            Tok::End => err(col, "unexpected end of condition"),
        }
    }
}

/// Parses `src`; see the module documentation for the accepted language.
pub fn parse(src: &str) -> Result<Condition, ParseError> {
    if src.trim().is_empty() {
        return err(1, "empty condition");
    }
    let toks = tokenize(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        names: Vec::new(),
    };
    let expr = p.expr()?;
    if !matches!(p.peek(), Tok::End) {
        return err(p.col(), "unexpected text after the end of the expression");
    }
    Ok(Condition {
        source: src.to_string(),
        expr,
        names: p.names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_language() {
        for src in [
            "x > 3",
            "a < b <= c",
            "user.name == 'bob' and not flags['x']",
            "len(items) >= 10 or items[0] is None",
            "isinstance(v, (int, float)) and v % 2 == 0",
            "'abc' in s and k not in d",
            "x is not None",
            "-x + 2 * (y // 3) - 1.5e3 / z",
            "name == \"a\\nb\" ",
            "t in (1, 2, 3) or t in [4, 5]",
            "0x1f == 31",
        ] {
            parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        }
    }

    #[test]
    fn names_are_collected_without_builtins() {
        let c = parse("len(items) > n and isinstance(x, int)").unwrap();
        assert_eq!(c.names, vec!["items", "n", "x"]);
    }

    #[test]
    fn rejects_side_effects_with_column() {
        let cases = [
            ("__import__('os').system('id')", 1),
            ("os.system('id')", 1),
            ("open('/etc/passwd')", 1),
            ("x.__class__", 3),
            ("x.__dict__['a']", 3),
            ("(lambda: 1)()", 2),
            ("(y := 3)", 4),
            ("[a for a in b]", 4),
            ("a if b else c", 3),
            ("f'{x}'", 1),
            ("x.append(1)", 1),
            ("getattr(x, 'y')", 1),
            ("len(x, y)", 1),
            ("isinstance(x, MyClass)", 1),
            ("print(x)", 1),
            ("x = 1", 3),
            ("del x", 1),
            ("{1: 2}", 1),
            ("x ** 10 ** 10", 3),
            ("x[1:2]", 2),
            ("len(*a)", 5),
            ("__builtins__", 1),
            ("eval('1')", 1),
            ("exec('1')", 1),
            ("await x", 1),
            ("x; y", 2),
        ];
        for (src, col) in cases {
            match parse(src) {
                Ok(c) => panic!("{src} was accepted: {c:?}"),
                Err(e) => assert_eq!(e.column, col, "{src}: {e}"),
            }
        }
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(parse("x >").unwrap_err().column, 4);
        assert_eq!(parse("'abc").unwrap_err().column, 1);
        assert_eq!(parse("x ) ").unwrap_err().column, 3);
        assert!(parse("").is_err());
    }
}
