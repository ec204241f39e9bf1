//! Evaluating a parsed [`Condition`] in a frame, reading Python objects without side effects.
//!
//! Values read from Python become [`CVal`]s: scalars are copied, everything else is kept as an
//! object reference and only inspected through storage reads (see `capture.rs`). Equality and
//! ordering are defined on scalars only; `==` between two non-scalar objects is identity.
use crate::condition::{BinOp, BuiltinType, CmpOp, Condition, Expr, Lit};
use crate::types;
use pyo3::ffi;
use pyo3::prelude::*;

/// Why a condition could not be evaluated (the hit does not fire; counted and reported).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A name is neither a local, a global nor a builtin.
    #[error("name `{name}` is not defined")]
    NameNotFound { name: String },
    /// An attribute is not in the instance `__dict__` / `__slots__`.
    #[error("object of type {type_name} has no readable attribute `{attr}`")]
    NoAttribute { type_name: String, attr: String },
    /// An operation is not defined on these operand types without running their code.
    #[error("unsupported operation: {what}")]
    Unsupported { what: String },
    /// A subscript is out of range or a key is missing.
    #[error("lookup failed: {what}")]
    Lookup { what: String },
    /// Arithmetic overflow or division by zero.
    #[error("arithmetic error: {what}")]
    Arithmetic { what: String },
}

fn unsupported<T>(what: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError::Unsupported { what: what.into() })
}

/// A value during evaluation.
pub enum CVal<'py> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<CVal<'py>>),
    Obj(Bound<'py, PyAny>),
}

impl CVal<'_> {
    fn kind(&self) -> &'static str {
        match self {
            CVal::None => "None",
            CVal::Bool(_) => "bool",
            CVal::Int(_) => "int",
            CVal::Float(_) => "float",
            CVal::Str(_) => "str",
            CVal::Seq(_) => "tuple",
            CVal::Obj(_) => "object",
        }
    }
}

/// Where names are looked up.
pub struct Scope<'a, 'py> {
    pub py: Python<'py>,
    pub frame: *mut ffi::PyFrameObject,
    /// The condition's names as interned Python strings (same order as `Condition::names`).
    pub names: &'a [Py<PyAny>],
    /// Per name: whether it is a local/cell/free variable of the code object (else global).
    pub is_local: &'a [bool],
    locals: Option<Bound<'py, PyAny>>,
}

impl<'a, 'py> Scope<'a, 'py> {
    pub fn new(
        py: Python<'py>,
        frame: *mut ffi::PyFrameObject,
        names: &'a [Py<PyAny>],
        is_local: &'a [bool],
    ) -> Self {
        Self {
            py,
            frame,
            names,
            is_local,
            locals: None,
        }
    }

    fn lookup(&mut self, idx: usize, cond: &Condition) -> Result<CVal<'py>, EvalError> {
        let py = self.py;
        let name = self.names[idx].bind(py);
        let not_found = || EvalError::NameNotFound {
            name: cond.names[idx].clone(),
        };
        // SAFETY: frame is the live current frame; every function returns a new reference or
        // NULL with an exception we clear.
        unsafe {
            if self.is_local.get(idx).copied().unwrap_or(true) {
                if let Some(get_var) = crate::ffi::frame_get_var() {
                    let r = get_var(self.frame, name.as_ptr());
                    if !r.is_null() {
                        return Ok(to_cval(Bound::from_owned_ptr(py, r)));
                    }
                    ffi::PyErr_Clear();
                } else {
                    if self.locals.is_none() {
                        let l = crate::ffi::PyFrame_GetLocals(self.frame);
                        if l.is_null() {
                            ffi::PyErr_Clear();
                        } else {
                            self.locals = Some(Bound::from_owned_ptr(py, l));
                        }
                    }
                    if let Some(l) = &self.locals
                        && ffi::PyDict_Check(l.as_ptr()) != 0
                    {
                        let r = ffi::PyDict_GetItemWithError(l.as_ptr(), name.as_ptr());
                        if !r.is_null() {
                            return Ok(to_cval(Bound::from_borrowed_ptr(py, r)));
                        }
                        ffi::PyErr_Clear();
                    }
                }
            }
            for getter in [
                crate::ffi::PyFrame_GetGlobals,
                crate::ffi::PyFrame_GetBuiltins,
            ] {
                let d = getter(self.frame);
                if d.is_null() {
                    ffi::PyErr_Clear();
                    continue;
                }
                let d = Bound::from_owned_ptr(py, d);
                if ffi::PyDict_Check(d.as_ptr()) != 0 {
                    let r = ffi::PyDict_GetItemWithError(d.as_ptr(), name.as_ptr());
                    if !r.is_null() {
                        return Ok(to_cval(Bound::from_borrowed_ptr(py, r)));
                    }
                    ffi::PyErr_Clear();
                }
            }
        }
        Err(not_found())
    }
}

/// Converts a Python object: scalars (exact or subclass, read from storage) are copied.
fn to_cval(o: Bound<'_, PyAny>) -> CVal<'_> {
    let p = o.as_ptr();
    // SAFETY: type tests and storage reads on a live object.
    unsafe {
        if p == ffi::Py_None() {
            return CVal::None;
        }
        if p == ffi::Py_True() || p == ffi::Py_False() {
            return CVal::Bool(p == ffi::Py_True());
        }
        if ffi::PyLong_Check(p) != 0 {
            let mut of = 0;
            let v = ffi::PyLong_AsLongLongAndOverflow(p, &mut of);
            if of == 0 && !(v == -1 && !ffi::PyErr_Occurred().is_null()) {
                return CVal::Int(v);
            }
            ffi::PyErr_Clear();
            return CVal::Obj(o);
        }
        if ffi::PyFloat_Check(p) != 0 {
            return CVal::Float(ffi::PyFloat_AsDouble(p));
        }
        if ffi::PyUnicode_Check(p) != 0 {
            let mut n: ffi::Py_ssize_t = 0;
            let s = ffi::PyUnicode_AsUTF8AndSize(p, &mut n);
            if !s.is_null() {
                let bytes = std::slice::from_raw_parts(s.cast::<u8>(), n as usize);
                return CVal::Str(String::from_utf8_lossy(bytes).into_owned());
            }
            ffi::PyErr_Clear();
        }
    }
    CVal::Obj(o)
}

/// Evaluates `cond` to a truth value.
pub fn eval_condition(cond: &Condition, scope: &mut Scope<'_, '_>) -> Result<bool, EvalError> {
    let v = eval(&cond.expr, cond, scope)?;
    truthy(&v)
}

/// Evaluates one expression of `cond` (a hole of a logpoint message, see `message.rs`).
pub fn eval_expr<'py>(
    e: &Expr,
    cond: &Condition,
    scope: &mut Scope<'_, 'py>,
) -> Result<CVal<'py>, EvalError> {
    eval(e, cond, scope)
}

fn truthy(v: &CVal<'_>) -> Result<bool, EvalError> {
    Ok(match v {
        CVal::None => false,
        CVal::Bool(b) => *b,
        CVal::Int(i) => *i != 0,
        CVal::Float(f) => *f != 0.0,
        CVal::Str(s) => !s.is_empty(),
        CVal::Seq(s) => !s.is_empty(),
        CVal::Obj(o) => {
            if let Some(n) = builtin_len(o) {
                n != 0
            } else {
                let p = o.as_ptr();
                // SAFETY: slot lookups on a live type.
                let has_hooks = unsafe {
                    let tp = ffi::Py_TYPE(p);
                    !ffi::PyType_GetSlot(tp, ffi::Py_nb_bool).is_null()
                        || !ffi::PyType_GetSlot(tp, ffi::Py_mp_length).is_null()
                        || !ffi::PyType_GetSlot(tp, ffi::Py_sq_length).is_null()
                };
                // SAFETY: clear any error PyType_GetSlot may set on static types.
                unsafe { ffi::PyErr_Clear() };
                if has_hooks {
                    return unsupported(
                        "the truth value of this object needs its __bool__/__len__; compare it explicitly",
                    );
                }
                true
            }
        }
    })
}

/// Length of builtin containers and strings (exact or subclass) from storage; None otherwise.
fn builtin_len(o: &Bound<'_, PyAny>) -> Option<usize> {
    let p = o.as_ptr();
    // SAFETY: storage-size reads on a live object of the tested type.
    unsafe {
        let n = if ffi::PyList_Check(p) != 0 {
            ffi::PyList_Size(p)
        } else if ffi::PyTuple_Check(p) != 0 {
            ffi::PyTuple_Size(p)
        } else if ffi::PyDict_Check(p) != 0 {
            ffi::PyDict_Size(p)
        } else if ffi::PyAnySet_Check(p) != 0 {
            ffi::PySet_Size(p)
        } else if ffi::PyUnicode_Check(p) != 0 {
            ffi::PyUnicode_GetLength(p)
        } else if ffi::PyBytes_Check(p) != 0 {
            ffi::PyBytes_Size(p)
        } else {
            return None;
        };
        Some(n.max(0) as usize)
    }
}

fn eval<'py>(
    e: &Expr,
    cond: &Condition,
    scope: &mut Scope<'_, 'py>,
) -> Result<CVal<'py>, EvalError> {
    let py = scope.py;
    Ok(match e {
        Expr::Lit(l) => match l {
            Lit::None => CVal::None,
            Lit::Bool(b) => CVal::Bool(*b),
            Lit::Int(i) => CVal::Int(*i),
            Lit::Float(f) => CVal::Float(*f),
            Lit::Str(s) => CVal::Str(s.clone()),
        },
        Expr::Name(i) => scope.lookup(*i, cond)?,
        Expr::Attr(base, attr) => {
            let b = eval(base, cond, scope)?;
            let CVal::Obj(o) = b else {
                return unsupported(format!(
                    "attribute `{attr}` of a {} value (only object fields are readable)",
                    b.kind()
                ));
            };
            get_attr(py, &o, attr)?
        }
        Expr::Index(base, idx) => {
            let b = eval(base, cond, scope)?;
            let i = eval(idx, cond, scope)?;
            subscript(py, b, i)?
        }
        Expr::Neg(x) => match eval(x, cond, scope)? {
            CVal::Int(i) => CVal::Int(i.checked_neg().ok_or(EvalError::Arithmetic {
                what: "integer overflow".into(),
            })?),
            CVal::Float(f) => CVal::Float(-f),
            CVal::Bool(b) => CVal::Int(-(b as i64)),
            v => return unsupported(format!("unary - on {}", v.kind())),
        },
        Expr::Pos(x) => match eval(x, cond, scope)? {
            v @ (CVal::Int(_) | CVal::Float(_)) => v,
            CVal::Bool(b) => CVal::Int(b as i64),
            v => return unsupported(format!("unary + on {}", v.kind())),
        },
        Expr::Not(x) => CVal::Bool(!truthy(&eval(x, cond, scope)?)?),
        Expr::And(items) => {
            let mut last = CVal::Bool(true);
            for it in items {
                last = eval(it, cond, scope)?;
                if !truthy(&last)? {
                    return Ok(last);
                }
            }
            last
        }
        Expr::Or(items) => {
            let mut last = CVal::Bool(false);
            for it in items {
                last = eval(it, cond, scope)?;
                if truthy(&last)? {
                    return Ok(last);
                }
            }
            last
        }
        Expr::Bin(op, a, b) => {
            let a = eval(a, cond, scope)?;
            let b = eval(b, cond, scope)?;
            binop(*op, a, b)?
        }
        Expr::Compare(first, rest) => {
            let mut left = eval(first, cond, scope)?;
            for (op, r) in rest {
                let right = eval(r, cond, scope)?;
                if !compare(*op, &left, &right)? {
                    return Ok(CVal::Bool(false));
                }
                left = right;
            }
            CVal::Bool(true)
        }
        Expr::Len(x) => match eval(x, cond, scope)? {
            CVal::Str(s) => CVal::Int(s.chars().count() as i64),
            CVal::Seq(s) => CVal::Int(s.len() as i64),
            CVal::Obj(o) => match builtin_len(&o) {
                Some(n) => CVal::Int(n as i64),
                None => {
                    return unsupported(
                        "len() of an object that is not a builtin container or string",
                    );
                }
            },
            v => return unsupported(format!("len() of {}", v.kind())),
        },
        Expr::IsInstance(x, tys) => {
            let v = eval(x, cond, scope)?;
            CVal::Bool(tys.iter().any(|t| is_instance(&v, *t)))
        }
        Expr::Tuple(items) | Expr::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                out.push(eval(it, cond, scope)?);
            }
            CVal::Seq(out)
        }
    })
}

fn is_instance(v: &CVal<'_>, t: BuiltinType) -> bool {
    match v {
        CVal::None => t == BuiltinType::NoneType,
        CVal::Bool(_) => matches!(t, BuiltinType::Bool | BuiltinType::Int),
        CVal::Int(_) => t == BuiltinType::Int,
        CVal::Float(_) => t == BuiltinType::Float,
        CVal::Str(_) => t == BuiltinType::Str,
        CVal::Seq(_) => matches!(t, BuiltinType::Tuple | BuiltinType::List),
        CVal::Obj(o) => {
            let p = o.as_ptr();
            // SAFETY: flag-based type tests on a live object.
            unsafe {
                match t {
                    BuiltinType::Int => ffi::PyLong_Check(p) != 0,
                    BuiltinType::Float => ffi::PyFloat_Check(p) != 0,
                    BuiltinType::Str => ffi::PyUnicode_Check(p) != 0,
                    BuiltinType::Bool => ffi::PyBool_Check(p) != 0,
                    BuiltinType::List => ffi::PyList_Check(p) != 0,
                    BuiltinType::Tuple => ffi::PyTuple_Check(p) != 0,
                    BuiltinType::Dict => ffi::PyDict_Check(p) != 0,
                    BuiltinType::Set => ffi::PySet_Check(p) != 0,
                    BuiltinType::FrozenSet => ffi::PyFrozenSet_Check(p) != 0,
                    BuiltinType::Bytes => ffi::PyBytes_Check(p) != 0,
                    BuiltinType::NoneType => false,
                }
            }
        }
    }
}

fn get_attr<'py>(
    py: Python<'py>,
    o: &Bound<'py, PyAny>,
    attr: &str,
) -> Result<CVal<'py>, EvalError> {
    let p = o.as_ptr();
    // SAFETY: instance-dict and slot reads (C code) on a live object; see capture.rs.
    unsafe {
        let tp = ffi::Py_TYPE(p);
        let is_module = ffi::PyModule_Check(p) != 0;
        let heap = ffi::PyType_GetFlags(tp) & ffi::Py_TPFLAGS_HEAPTYPE != 0;
        if heap || is_module {
            let d = if is_module {
                let d = ffi::PyModule_GetDict(p);
                if d.is_null() {
                    std::ptr::null_mut()
                } else {
                    ffi::Py_INCREF(d);
                    d
                }
            } else {
                ffi::PyObject_GenericGetDict(p, std::ptr::null_mut())
            };
            if d.is_null() {
                ffi::PyErr_Clear();
            } else {
                let d = Bound::from_owned_ptr(py, d);
                if ffi::PyDict_Check(d.as_ptr()) != 0 {
                    let r = ffi::PyDict_GetItemString(d.as_ptr(), cstr(attr).as_ptr());
                    if !r.is_null() {
                        return Ok(to_cval(Bound::from_borrowed_ptr(py, r)));
                    }
                }
            }
            let info = types::info(py, tp);
            if let Some((_, desc)) = info.slots.iter().find(|(n, _)| n == attr)
                && let Some(v) = types::read_slot(desc.as_ptr(), p)
            {
                return Ok(to_cval(Bound::from_owned_ptr(py, v)));
            }
        }
        Err(EvalError::NoAttribute {
            type_name: types::info(py, tp).name.to_string(),
            attr: attr.to_string(),
        })
    }
}

fn cstr(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s.replace('\0', "")).unwrap_or_default()
}

fn subscript<'py>(py: Python<'py>, b: CVal<'py>, i: CVal<'py>) -> Result<CVal<'py>, EvalError> {
    let lookup = |what: String| EvalError::Lookup { what };
    match (&b, &i) {
        (CVal::Seq(s), CVal::Int(n)) => {
            let idx = norm_index(*n, s.len()).ok_or_else(|| lookup("index out of range".into()))?;
            return unsupported_or(s.get(idx).map(clone_scalar));
        }
        (CVal::Str(s), CVal::Int(n)) => {
            let chars: Vec<char> = s.chars().collect();
            let idx =
                norm_index(*n, chars.len()).ok_or_else(|| lookup("index out of range".into()))?;
            return Ok(CVal::Str(chars[idx].to_string()));
        }
        _ => {}
    }
    let CVal::Obj(o) = &b else {
        return unsupported(format!("subscript of {}", b.kind()));
    };
    let p = o.as_ptr();
    // SAFETY: storage reads on live builtin containers (exact or subclass).
    unsafe {
        if ffi::PyList_Check(p) != 0 || ffi::PyTuple_Check(p) != 0 {
            let CVal::Int(n) = i else {
                return unsupported("list/tuple indices must be integers");
            };
            let is_list = ffi::PyList_Check(p) != 0;
            let len = if is_list {
                ffi::PyList_Size(p)
            } else {
                ffi::PyTuple_Size(p)
            }
            .max(0) as usize;
            let idx = norm_index(n, len).ok_or_else(|| lookup("index out of range".into()))?;
            let r = if is_list {
                ffi::PyList_GetItem(p, idx as ffi::Py_ssize_t)
            } else {
                ffi::PyTuple_GetItem(p, idx as ffi::Py_ssize_t)
            };
            if r.is_null() {
                ffi::PyErr_Clear();
                return Err(lookup("index out of range".into()));
            }
            return Ok(to_cval(Bound::from_borrowed_ptr(py, r)));
        }
        if ffi::PyDict_Check(p) != 0 {
            // Only scalar keys: hashing and comparing them is C code. (A user key object with an
            // identical hash would have its __eq__ called by the dict lookup; documented.)
            let key: Bound<'py, PyAny> = match &i {
                CVal::Str(s) => pyo3::types::PyString::new(py, s).into_any(),
                CVal::Int(n) => n
                    .into_pyobject(py)
                    .map_err(|_| lookup("key".into()))?
                    .into_any(),
                CVal::Bool(v) => pyo3::types::PyBool::new(py, *v).to_owned().into_any(),
                CVal::None => py.None().into_bound(py),
                _ => return unsupported("dict keys in conditions must be str, int, bool or None"),
            };
            let r = ffi::PyDict_GetItemWithError(p, key.as_ptr());
            if r.is_null() {
                ffi::PyErr_Clear();
                return Err(lookup("key not found".into()));
            }
            return Ok(to_cval(Bound::from_borrowed_ptr(py, r)));
        }
    }
    unsupported("subscript of an object that is not a builtin list, tuple, dict or str")
}

fn unsupported_or<'py>(v: Option<CVal<'py>>) -> Result<CVal<'py>, EvalError> {
    v.map_or_else(|| unsupported("nested sequence element"), Ok)
}

fn clone_scalar<'py>(v: &CVal<'py>) -> CVal<'py> {
    match v {
        CVal::None => CVal::None,
        CVal::Bool(b) => CVal::Bool(*b),
        CVal::Int(i) => CVal::Int(*i),
        CVal::Float(f) => CVal::Float(*f),
        CVal::Str(s) => CVal::Str(s.clone()),
        CVal::Seq(s) => CVal::Seq(s.iter().map(clone_scalar).collect()),
        CVal::Obj(o) => CVal::Obj(o.clone()),
    }
}

fn norm_index(n: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if n < 0 { n + len } else { n };
    (0..len).contains(&i).then_some(i as usize)
}

fn num(v: &CVal<'_>) -> Option<f64> {
    match v {
        CVal::Bool(b) => Some(*b as i64 as f64),
        CVal::Int(i) => Some(*i as f64),
        CVal::Float(f) => Some(*f),
        _ => None,
    }
}

fn int(v: &CVal<'_>) -> Option<i64> {
    match v {
        CVal::Bool(b) => Some(*b as i64),
        CVal::Int(i) => Some(*i),
        _ => None,
    }
}

fn binop<'py>(op: BinOp, a: CVal<'py>, b: CVal<'py>) -> Result<CVal<'py>, EvalError> {
    let overflow = || EvalError::Arithmetic {
        what: "integer overflow".into(),
    };
    if let (Some(x), Some(y)) = (int(&a), int(&b)) {
        return Ok(CVal::Int(match op {
            BinOp::Add => x.checked_add(y).ok_or_else(overflow)?,
            BinOp::Sub => x.checked_sub(y).ok_or_else(overflow)?,
            BinOp::Mul => x.checked_mul(y).ok_or_else(overflow)?,
            BinOp::Div => {
                if y == 0 {
                    return Err(EvalError::Arithmetic {
                        what: "division by zero".into(),
                    });
                }
                return Ok(CVal::Float(x as f64 / y as f64));
            }
            BinOp::FloorDiv | BinOp::Mod => {
                if y == 0 {
                    return Err(EvalError::Arithmetic {
                        what: "division by zero".into(),
                    });
                }
                let q = x.checked_div_euclid(y).ok_or_else(overflow)?;
                // Python floors toward negative infinity; the remainder has the divisor's sign.
                let (q, r) = {
                    let r = x - q * y;
                    if r != 0 && ((r < 0) != (y < 0)) {
                        (q - 1, r + y)
                    } else {
                        (q, r)
                    }
                };
                if op == BinOp::FloorDiv { q } else { r }
            }
        }));
    }
    if let (Some(x), Some(y)) = (num(&a), num(&b)) {
        return Ok(CVal::Float(match op {
            BinOp::Add => x + y,
            BinOp::Sub => x - y,
            BinOp::Mul => x * y,
            BinOp::Div | BinOp::FloorDiv | BinOp::Mod if y == 0.0 => {
                return Err(EvalError::Arithmetic {
                    what: "division by zero".into(),
                });
            }
            BinOp::Div => x / y,
            BinOp::FloorDiv => (x / y).floor(),
            BinOp::Mod => x - y * (x / y).floor(),
        }));
    }
    match (op, &a, &b) {
        (BinOp::Add, CVal::Str(x), CVal::Str(y)) => Ok(CVal::Str(format!("{x}{y}"))),
        (BinOp::Mul, CVal::Str(s), CVal::Int(n)) | (BinOp::Mul, CVal::Int(n), CVal::Str(s)) => {
            let n = (*n).max(0) as usize;
            if s.len().saturating_mul(n) > 1 << 20 {
                return Err(EvalError::Arithmetic {
                    what: "string repetition larger than 1 MiB".into(),
                });
            }
            Ok(CVal::Str(s.repeat(n)))
        }
        _ => unsupported(format!("{op:?} on {} and {}", a.kind(), b.kind())),
    }
}

fn scalar_eq(a: &CVal<'_>, b: &CVal<'_>) -> Result<bool, EvalError> {
    Ok(match (a, b) {
        (CVal::None, CVal::None) => true,
        (CVal::Str(x), CVal::Str(y)) => x == y,
        (CVal::Seq(x), CVal::Seq(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for (p, q) in x.iter().zip(y) {
                if !scalar_eq(p, q)? {
                    return Ok(false);
                }
            }
            true
        }
        (CVal::Obj(x), CVal::Obj(y)) => x.as_ptr() == y.as_ptr(),
        (CVal::Obj(_), CVal::None) | (CVal::None, CVal::Obj(_)) => false,
        (CVal::Obj(_), _) | (_, CVal::Obj(_)) => {
            return unsupported("== between an object and a value (only scalars compare by value)");
        }
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => match (int(a), int(b)) {
                (Some(i), Some(j)) => i == j,
                _ => x == y,
            },
            _ => false,
        },
    })
}

fn contains(needle: &CVal<'_>, hay: &CVal<'_>) -> Result<bool, EvalError> {
    match hay {
        CVal::Str(h) => match needle {
            CVal::Str(n) => Ok(h.contains(n.as_str())),
            _ => unsupported("`in <str>` needs a str on the left"),
        },
        CVal::Seq(items) => {
            for it in items {
                if scalar_eq(needle, it).unwrap_or(false) {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        CVal::Obj(o) => {
            let p = o.as_ptr();
            let py = o.py();
            // SAFETY: storage iteration of builtin containers (exact or subclass).
            unsafe {
                if ffi::PyDict_Check(p) != 0 {
                    let mut pos = 0;
                    let mut k = std::ptr::null_mut();
                    let mut v = std::ptr::null_mut();
                    let mut n = 0;
                    while ffi::PyDict_Next(p, &mut pos, &mut k, &mut v) != 0 {
                        n += 1;
                        if n > 100_000 {
                            return unsupported("`in` on a dict of more than 100000 keys");
                        }
                        let kv = to_cval(Bound::from_borrowed_ptr(py, k));
                        if scalar_eq(needle, &kv).unwrap_or(false) {
                            return Ok(true);
                        }
                    }
                    return Ok(false);
                }
                if ffi::PyList_Check(p) != 0 || ffi::PyTuple_Check(p) != 0 {
                    let is_list = ffi::PyList_Check(p) != 0;
                    let len = if is_list {
                        ffi::PyList_Size(p)
                    } else {
                        ffi::PyTuple_Size(p)
                    };
                    if len > 100_000 {
                        return unsupported("`in` on a sequence of more than 100000 items");
                    }
                    for i in 0..len {
                        let it = if is_list {
                            ffi::PyList_GetItem(p, i)
                        } else {
                            ffi::PyTuple_GetItem(p, i)
                        };
                        if it.is_null() {
                            ffi::PyErr_Clear();
                            break;
                        }
                        let iv = to_cval(Bound::from_borrowed_ptr(py, it));
                        if scalar_eq(needle, &iv).unwrap_or(false) {
                            return Ok(true);
                        }
                    }
                    return Ok(false);
                }
                if ffi::PyAnySet_Check(p) != 0 {
                    let base: *mut ffi::PyTypeObject = if ffi::PyFrozenSet_Check(p) != 0 {
                        &raw mut ffi::PyFrozenSet_Type
                    } else {
                        &raw mut ffi::PySet_Type
                    };
                    let iter = ffi::PyType_GetSlot(base, ffi::Py_tp_iter);
                    if iter.is_null() {
                        return unsupported("set iteration");
                    }
                    let iter: ffi::getiterfunc = std::mem::transmute(iter);
                    let it = iter(p);
                    if it.is_null() {
                        ffi::PyErr_Clear();
                        return unsupported("set iteration");
                    }
                    let it = Bound::from_owned_ptr(py, it);
                    loop {
                        let x = ffi::PyIter_Next(it.as_ptr());
                        if x.is_null() {
                            ffi::PyErr_Clear();
                            return Ok(false);
                        }
                        let xv = to_cval(Bound::from_owned_ptr(py, x));
                        if scalar_eq(needle, &xv).unwrap_or(false) {
                            return Ok(true);
                        }
                    }
                }
            }
            unsupported("`in` on an object that is not a builtin container")
        }
        _ => unsupported(format!("`in` on {}", hay.kind())),
    }
}

fn compare(op: CmpOp, a: &CVal<'_>, b: &CVal<'_>) -> Result<bool, EvalError> {
    match op {
        CmpOp::Eq => scalar_eq(a, b),
        CmpOp::Ne => scalar_eq(a, b).map(|x| !x),
        CmpOp::In => contains(a, b),
        CmpOp::NotIn => contains(a, b).map(|x| !x),
        CmpOp::Is | CmpOp::IsNot => {
            let same = match (a, b) {
                (CVal::None, CVal::None) => true,
                (CVal::Bool(x), CVal::Bool(y)) => x == y,
                (CVal::Obj(x), CVal::Obj(y)) => x.as_ptr() == y.as_ptr(),
                (CVal::None | CVal::Bool(_), _) | (_, CVal::None | CVal::Bool(_)) => false,
                _ => {
                    return unsupported(
                        "`is` compares with None, True, False or another object only",
                    );
                }
            };
            Ok(if op == CmpOp::Is { same } else { !same })
        }
        CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => {
            let ord = match (a, b) {
                (CVal::Str(x), CVal::Str(y)) => x.cmp(y),
                _ => match (int(a), int(b)) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    _ => match (num(a), num(b)) {
                        (Some(x), Some(y)) => match x.partial_cmp(&y) {
                            Some(o) => o,
                            None => return Ok(false),
                        },
                        _ => {
                            return unsupported(format!(
                                "ordering between {} and {}",
                                a.kind(),
                                b.kind()
                            ));
                        }
                    },
                },
            };
            use std::cmp::Ordering::*;
            Ok(match op {
                CmpOp::Lt => ord == Less,
                CmpOp::Le => ord != Greater,
                CmpOp::Gt => ord == Greater,
                _ => ord != Less,
            })
        }
    }
}
