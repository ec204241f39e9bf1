//! Copying Python values into a [`Value`] tree at a hit, on the application thread, without
//! running user code.
//!
//! Rules that keep user code out:
//! * types are tested by pointer or by the type-flag bits (`PyLong_Check`...), never with
//!   `isinstance` (which honours `__instancecheck__`);
//! * containers are read from their storage: `PyDict_Next`, `PyList_GetItem`, `PyTuple_GetItem`,
//!   and sets through `set`'s own `tp_iter` slot, so subclasses' `__iter__` / `__getitem__` /
//!   `__len__` never run;
//! * objects' fields come from the instance dict (`PyObject_GenericGetDict`, never `getattr`) and
//!   from `__slots__` member descriptors (which read the slot at its offset);
//! * no `repr` / `str` of anything but exact ints (through `int`'s own slot).
//!
//! The garbage collector is disabled for the duration of a capture, so no finalizer can run
//! and mutate a container we hold a borrowed item of.
use crate::redact::Redactor;
use crate::types;
use crate::value::{Cut, Value};
use pyo3::ffi;
use pyo3::prelude::*;
use std::sync::Arc;
use std::time::Instant;

/// Redaction verdicts by str address for the current redactor (see `Capturer::redact_with`).
/// Only locked with the GIL held, never across Python calls.
type RedactCache = (usize, crate::fasthash::FastMap<usize, (Py<PyAny>, bool)>);
static REDACT_CACHE: std::sync::LazyLock<parking_lot::Mutex<RedactCache>> =
    std::sync::LazyLock::new(|| parking_lot::Mutex::new((0, crate::fasthash::FastMap::default())));

/// Drops the redaction cache (shutdown, settings change).
pub fn clear_redact_cache() {
    let mut c = REDACT_CACHE.lock();
    c.0 = 0;
    c.1.clear();
}

/// Per-breakpoint capture limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Containers nested deeper than this are cut (locals are depth 1).
    pub max_depth: u32,
    /// Items per list/tuple/set/dict.
    pub max_items: usize,
    /// Characters per string.
    pub max_string: usize,
    /// Fields per object.
    pub max_fields: usize,
    /// Approximate encoded bytes per snapshot.
    pub max_bytes: usize,
    /// Capture time budget per hit, in microseconds.
    pub deadline_us: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 3,
            max_items: 100,
            max_string: 255,
            max_fields: 20,
            max_bytes: 64 * 1024,
            deadline_us: 10_000,
        }
    }
}

/// Counts of every cut made in one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Truncations {
    pub depth: u32,
    pub items: u32,
    pub strings: u32,
    pub size: u32,
    pub deadline: u32,
    pub cycles: u32,
}

impl Truncations {
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// One capture in progress.
pub struct Capturer<'a, 'py> {
    py: Python<'py>,
    limits: &'a Limits,
    redactor: &'a Redactor,
    bytes: usize,
    deadline: Instant,
    nodes: u32,
    out_of_time: bool,
    ancestors: Vec<*mut ffi::PyObject>,
    pub cuts: Truncations,
    /// Names whose values were redacted (deduplicated, at most 32).
    pub redacted: Vec<String>,
}

impl<'a, 'py> Capturer<'a, 'py> {
    pub fn new(
        py: Python<'py>,
        limits: &'a Limits,
        redactor: &'a Redactor,
        start: Instant,
    ) -> Self {
        Self {
            py,
            limits,
            redactor,
            bytes: 0,
            deadline: start + std::time::Duration::from_micros(limits.deadline_us),
            nodes: 0,
            out_of_time: false,
            ancestors: Vec::with_capacity(8),
            cuts: Truncations::default(),
            redacted: Vec::new(),
        }
    }

    /// Whether a name's value must be redacted; records it if so.
    pub fn redact(&mut self, name: &str) -> bool {
        self.redact_with(name, std::ptr::null_mut())
    }

    /// Like [`Self::redact`]; `key` (when non-null) is the Python str the name came from: exact
    /// str keys (interned names, mostly) are cached by address, holding a reference so the
    /// address cannot be reused by another string while cached.
    fn redact_with(&mut self, name: &str, key: *mut ffi::PyObject) -> bool {
        let sensitive = if key.is_null() {
            self.redactor.is_sensitive(name)
        } else {
            let redactor_id = self.redactor as *const Redactor as usize;
            let mut cache = REDACT_CACHE.lock();
            if cache.0 != redactor_id || cache.1.len() >= 4096 {
                cache.0 = redactor_id;
                cache.1.clear();
            }
            match cache.1.get(&(key as usize)) {
                Some((_, v)) => *v,
                None => {
                    let v = self.redactor.is_sensitive(name);
                    // SAFETY: key is a live str; we keep a new reference in the cache.
                    let keep = unsafe { Bound::from_borrowed_ptr(self.py, key) }.unbind();
                    cache.1.insert(key as usize, (keep, v));
                    v
                }
            }
        };
        if sensitive {
            if self.redacted.len() < 32 && !self.redacted.iter().any(|n| n == name) {
                self.redacted.push(name.to_string());
            }
            true
        } else {
            false
        }
    }

    fn check_budget(&mut self) -> Option<Cut> {
        self.nodes += 1;
        if !self.out_of_time && self.nodes.is_multiple_of(32) && Instant::now() > self.deadline {
            self.out_of_time = true;
        }
        if self.out_of_time {
            self.cuts.deadline += 1;
            return Some(Cut::Deadline);
        }
        if self.bytes > self.limits.max_bytes {
            self.cuts.size += 1;
            return Some(Cut::Size);
        }
        None
    }

    /// Captures the dict `d` (exact or subclass) as name → value pairs, for locals.
    ///
    /// # Safety
    /// GIL held; `d` is a live dict.
    pub unsafe fn capture_locals(
        &mut self,
        d: *mut ffi::PyObject,
    ) -> (Vec<(String, Value)>, usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.dict_entries(d, 1, usize::MAX / 2) }
    }

    /// # Safety
    /// GIL held; `d` is a live dict (or subclass).
    unsafe fn dict_entries(
        &mut self,
        d: *mut ffi::PyObject,
        depth: u32,
        max: usize,
    ) -> (Vec<(String, Value)>, usize) {
        let mut entries = Vec::new();
        let mut pos: ffi::Py_ssize_t = 0;
        let mut k: *mut ffi::PyObject = std::ptr::null_mut();
        let mut v: *mut ffi::PyObject = std::ptr::null_mut();
        // SAFETY: PyDict_Size reads the dict's storage size (no __len__).
        let total = unsafe { ffi::PyDict_Size(d) }.max(0) as usize;
        // SAFETY: PyDict_Next iterates the dict's storage; borrowed k/v stay valid because no
        // Python code runs (GC is disabled during capture).
        while entries.len() < max && unsafe { ffi::PyDict_Next(d, &mut pos, &mut k, &mut v) } != 0 {
            // SAFETY: k is a live key.
            let key = unsafe { self.key_string(k) };
            self.bytes += key.len() + 4;
            // SAFETY: k is a live key; exact str keys may be cached by address.
            let cache_key = if unsafe { ffi::PyUnicode_CheckExact(k) } != 0 {
                k
            } else {
                std::ptr::null_mut()
            };
            let val = if self.redact_with(&key, cache_key) {
                Value::Redacted
            } else {
                // SAFETY: v is a live value.
                unsafe { self.value(v, depth) }
            };
            entries.push((key, val));
        }
        let more = total.saturating_sub(entries.len());
        if more > 0 && max < usize::MAX / 2 {
            self.cuts.items += 1;
        }
        (entries, more)
    }

    /// A dict key as a string: str keys as-is (truncated), scalars in their literal form, other
    /// keys as `<type>`.
    ///
    /// # Safety
    /// GIL held; `k` is live.
    unsafe fn key_string(&mut self, k: *mut ffi::PyObject) -> String {
        // SAFETY: type checks and storage reads on a live object.
        unsafe {
            if ffi::PyUnicode_Check(k) != 0 {
                let (s, _) = self.str_value(k);
                return s;
            }
            match self.value(k, u32::MAX - 1) {
                Value::Int(i) => i.to_string(),
                Value::BigInt(s) => s,
                Value::Float(f) => f.to_string(),
                Value::Bool(b) => if b { "True" } else { "False" }.into(),
                Value::None => "None".into(),
                _ => format!("<{}>", types::info(self.py, ffi::Py_TYPE(k)).name),
            }
        }
    }

    /// Reads a str (exact or subclass) from its storage, truncated to the limit.
    ///
    /// # Safety
    /// GIL held; `s` is a str.
    unsafe fn str_value(&mut self, s: *mut ffi::PyObject) -> (String, usize) {
        // SAFETY: str storage reads; new references are released.
        unsafe {
            let len = ffi::PyUnicode_GetLength(s).max(0) as usize;
            let max = self.limits.max_string;
            let (src, owned) = if len > max {
                let sub = ffi::PyUnicode_Substring(s, 0, max as ffi::Py_ssize_t);
                if sub.is_null() {
                    ffi::PyErr_Clear();
                    return ("<str>".into(), len);
                }
                (sub, true)
            } else {
                (s, false)
            };
            let mut n: ffi::Py_ssize_t = 0;
            let p = ffi::PyUnicode_AsUTF8AndSize(src, &mut n);
            let out = if p.is_null() {
                // Lone surrogates: not UTF-8 encodable.
                ffi::PyErr_Clear();
                let b = ffi::PyUnicode_AsEncodedString(
                    src,
                    c"utf-8".as_ptr(),
                    c"backslashreplace".as_ptr(),
                );
                if b.is_null() {
                    ffi::PyErr_Clear();
                    String::from("<str>")
                } else {
                    let mut bp: *mut std::ffi::c_char = std::ptr::null_mut();
                    let mut bn: ffi::Py_ssize_t = 0;
                    let s = if ffi::PyBytes_AsStringAndSize(b, &mut bp, &mut bn) == 0 {
                        String::from_utf8_lossy(std::slice::from_raw_parts(
                            bp.cast::<u8>(),
                            bn as usize,
                        ))
                        .into_owned()
                    } else {
                        ffi::PyErr_Clear();
                        String::from("<str>")
                    };
                    ffi::Py_DECREF(b);
                    s
                }
            } else {
                String::from_utf8_lossy(std::slice::from_raw_parts(p.cast::<u8>(), n as usize))
                    .into_owned()
            };
            if owned {
                ffi::Py_DECREF(src);
            }
            let more = len.saturating_sub(max);
            if more > 0 {
                self.cuts.strings += 1;
            }
            (out, more)
        }
    }

    fn type_name(&self, o: *mut ffi::PyObject) -> Arc<str> {
        // SAFETY: o is live (callers hold it); its type is a live type object.
        unsafe { types::info(self.py, ffi::Py_TYPE(o)).name.clone() }
    }

    /// Captures one value at `depth`.
    ///
    /// # Safety
    /// GIL held; `o` is live for the duration of the call.
    pub unsafe fn value(&mut self, o: *mut ffi::PyObject, depth: u32) -> Value {
        if let Some(cut) = self.check_budget() {
            return Value::Cut {
                reason: cut,
                type_name: self.type_name(o),
            };
        }
        // SAFETY: all reads below are of live objects' storage through C API functions that do
        // not dispatch to Python-level methods.
        unsafe {
            if o == ffi::Py_None() {
                self.bytes += 4;
                return Value::None;
            }
            if o == ffi::Py_True() || o == ffi::Py_False() {
                self.bytes += 5;
                return Value::Bool(o == ffi::Py_True());
            }
            if ffi::PyLong_Check(o) != 0 {
                self.bytes += 8;
                return int_value(self.py, o);
            }
            if ffi::PyFloat_Check(o) != 0 {
                self.bytes += 8;
                return Value::Float(ffi::PyFloat_AsDouble(o));
            }
            if ffi::PyUnicode_Check(o) != 0 {
                let (s, more) = self.str_value(o);
                self.bytes += s.len() + 2;
                return Value::Str { s, more };
            }
            if ffi::PyBytes_Check(o) != 0 {
                let mut p: *mut std::ffi::c_char = std::ptr::null_mut();
                let mut n: ffi::Py_ssize_t = 0;
                if ffi::PyBytes_AsStringAndSize(o, &mut p, &mut n) != 0 {
                    ffi::PyErr_Clear();
                    return Value::Str {
                        s: "<bytes>".into(),
                        more: 0,
                    };
                }
                let n = n.max(0) as usize;
                let take = n.min(self.limits.max_string);
                let s = String::from_utf8_lossy(std::slice::from_raw_parts(p.cast::<u8>(), take))
                    .into_owned();
                if n > take {
                    self.cuts.strings += 1;
                }
                self.bytes += s.len() + 2;
                return Value::Str { s, more: n - take };
            }
            let is_list = ffi::PyList_Check(o) != 0;
            let is_tuple = !is_list && ffi::PyTuple_Check(o) != 0;
            let is_dict = !is_list && !is_tuple && ffi::PyDict_Check(o) != 0;
            let is_set = !is_list && !is_tuple && !is_dict && ffi::PyAnySet_Check(o) != 0;
            let is_container = is_list || is_tuple || is_dict || is_set;
            if is_container && depth > self.limits.max_depth {
                self.cuts.depth += 1;
                return Value::Cut {
                    reason: Cut::Depth,
                    type_name: self.type_name(o),
                };
            }
            if let Some(ancestor) = self.ancestors.iter().position(|a| *a == o) {
                self.cuts.cycles += 1;
                return Value::Cycle { ancestor };
            }
            if is_list || is_tuple {
                self.ancestors.push(o);
                let total = if is_list {
                    ffi::PyList_Size(o)
                } else {
                    ffi::PyTuple_Size(o)
                }
                .max(0) as usize;
                let take = total.min(self.limits.max_items);
                let mut items = Vec::with_capacity(take);
                for i in 0..take {
                    let it = if is_list {
                        ffi::PyList_GetItem(o, i as ffi::Py_ssize_t)
                    } else {
                        ffi::PyTuple_GetItem(o, i as ffi::Py_ssize_t)
                    };
                    if it.is_null() {
                        ffi::PyErr_Clear();
                        break;
                    }
                    items.push(self.value(it, depth + 1));
                }
                self.ancestors.pop();
                let more = total - items.len();
                if more > 0 {
                    self.cuts.items += 1;
                }
                self.bytes += 2 + items.len();
                return Value::List { items, more };
            }
            if is_dict {
                self.ancestors.push(o);
                let (entries, more) = self.dict_entries(o, depth + 1, self.limits.max_items);
                self.ancestors.pop();
                self.bytes += 2;
                return Value::Dict { entries, more };
            }
            if is_set {
                self.ancestors.push(o);
                let v = self.set_items(o, depth);
                self.ancestors.pop();
                return v;
            }
            self.object(o, depth)
        }
    }

    /// # Safety
    /// GIL held; `o` is a set or frozenset (or subclass).
    unsafe fn set_items(&mut self, o: *mut ffi::PyObject, depth: u32) -> Value {
        // SAFETY: `set`'s own tp_iter (C) creates a set iterator over the storage, bypassing any
        // subclass `__iter__`; its tp_iternext is C as well.
        unsafe {
            let total = ffi::PySet_Size(o).max(0) as usize;
            let base: *mut ffi::PyTypeObject = if ffi::PyFrozenSet_Check(o) != 0 {
                &raw mut ffi::PyFrozenSet_Type
            } else {
                &raw mut ffi::PySet_Type
            };
            let iter = ffi::PyType_GetSlot(base, ffi::Py_tp_iter);
            let mut items = Vec::new();
            if !iter.is_null() {
                let iter: ffi::getiterfunc = std::mem::transmute(iter);
                let it = iter(o);
                if it.is_null() {
                    ffi::PyErr_Clear();
                } else {
                    while items.len() < self.limits.max_items {
                        let x = ffi::PyIter_Next(it);
                        if x.is_null() {
                            ffi::PyErr_Clear();
                            break;
                        }
                        items.push(self.value(x, depth + 1));
                        ffi::Py_DECREF(x);
                    }
                    ffi::Py_DECREF(it);
                }
            }
            let more = total.saturating_sub(items.len());
            if more > 0 {
                self.cuts.items += 1;
            }
            Value::List { items, more }
        }
    }

    /// Any other object: type name plus fields from the instance dict and `__slots__`.
    ///
    /// # Safety
    /// GIL held; `o` is live.
    unsafe fn object(&mut self, o: *mut ffi::PyObject, depth: u32) -> Value {
        // SAFETY: see the module documentation; every call below is C code reading storage.
        unsafe {
            let tp = ffi::Py_TYPE(o);
            let info = types::info(self.py, tp);
            let type_name = info.name.clone();
            self.bytes += type_name.len() + 16;
            if ffi::PyType_Check(o) != 0 {
                let t = types::info(self.py, o.cast());
                return Value::Object {
                    type_name,
                    fields: vec![(
                        "name".into(),
                        Value::Str {
                            s: t.name.to_string(),
                            more: 0,
                        },
                    )],
                    more: 0,
                };
            }
            if ffi::PyModule_Check(o) != 0 {
                let n = ffi::PyModule_GetNameObject(o);
                let mut fields = Vec::new();
                if n.is_null() {
                    ffi::PyErr_Clear();
                } else {
                    let (s, more) = self.str_value(n);
                    ffi::Py_DECREF(n);
                    fields.push(("name".into(), Value::Str { s, more }));
                }
                return Value::Object {
                    type_name,
                    fields,
                    more: 0,
                };
            }
            if depth > self.limits.max_depth {
                self.cuts.depth += 1;
                return Value::Cut {
                    reason: Cut::Depth,
                    type_name,
                };
            }
            if let Some(ancestor) = self.ancestors.iter().position(|a| *a == o) {
                self.cuts.cycles += 1;
                return Value::Cycle { ancestor };
            }
            self.ancestors.push(o);
            let mut fields = Vec::new();
            let mut more = 0;
            // Only heap types (classes defined in Python) carry user-visible fields; C objects
            // without a dict stay opaque.
            let d = if is_heap_type(tp) {
                ffi::PyObject_GenericGetDict(o, std::ptr::null_mut())
            } else {
                std::ptr::null_mut()
            };
            if d.is_null() {
                ffi::PyErr_Clear();
            } else {
                if ffi::PyDict_Check(d) != 0 {
                    let (e, m) = self.dict_entries(d, depth + 1, self.limits.max_fields);
                    fields = e;
                    more = m;
                }
                ffi::Py_DECREF(d);
            }
            for (name, desc) in &info.slots {
                if fields.len() >= self.limits.max_fields {
                    more += 1;
                    continue;
                }
                if let Some(v) = types::read_slot(desc.as_ptr(), o) {
                    let val = if self.redact(name) {
                        Value::Redacted
                    } else {
                        self.value(v, depth + 1)
                    };
                    ffi::Py_DECREF(v);
                    self.bytes += name.len() + 4;
                    fields.push((name.clone(), val));
                }
            }
            if more > 0 && fields.len() >= self.limits.max_fields && info.slots.is_empty() {
                // counted in dict_entries already
            } else if more > 0 {
                self.cuts.items += 1;
            }
            self.ancestors.pop();
            Value::Object {
                type_name,
                fields,
                more,
            }
        }
    }
}

fn is_heap_type(tp: *mut ffi::PyTypeObject) -> bool {
    // SAFETY: reading a live type's flags.
    unsafe { ffi::PyType_GetFlags(tp) & ffi::Py_TPFLAGS_HEAPTYPE != 0 }
}

/// An int (exact or subclass, including bool subclasses) read from its storage.
///
/// # Safety
/// GIL held; `o` passes `PyLong_Check`.
unsafe fn int_value(py: Python<'_>, o: *mut ffi::PyObject) -> Value {
    // SAFETY: PyLong_AsLongLongAndOverflow reads the digits directly for int instances.
    unsafe {
        let mut overflow: std::ffi::c_int = 0;
        let v = ffi::PyLong_AsLongLongAndOverflow(o, &mut overflow);
        if overflow == 0 {
            if v == -1 && !ffi::PyErr_Occurred().is_null() {
                ffi::PyErr_Clear();
                return Value::BigInt("<int>".into());
            }
            return Value::Int(v);
        }
        // Beyond 64 bits: print it through int's own repr (C) if it is not enormous.
        let bits = int_bit_length(py, o);
        match bits {
            Some(b) if b <= 4096 => {
                let repr = ffi::PyType_GetSlot(&raw mut ffi::PyLong_Type, ffi::Py_tp_repr);
                if repr.is_null() {
                    return Value::BigInt(format!("<int of {b} bits>"));
                }
                let repr: ffi::reprfunc = std::mem::transmute(repr);
                let s = repr(o);
                if s.is_null() {
                    ffi::PyErr_Clear();
                    return Value::BigInt(format!("<int of {b} bits>"));
                }
                let mut n: ffi::Py_ssize_t = 0;
                let p = ffi::PyUnicode_AsUTF8AndSize(s, &mut n);
                let out = if p.is_null() {
                    ffi::PyErr_Clear();
                    format!("<int of {b} bits>")
                } else {
                    String::from_utf8_lossy(std::slice::from_raw_parts(p.cast::<u8>(), n as usize))
                        .into_owned()
                };
                ffi::Py_DECREF(s);
                Value::BigInt(out)
            }
            Some(b) => Value::BigInt(format!("<int of {b} bits>")),
            None => Value::BigInt("<int>".into()),
        }
    }
}

/// `int.bit_length(o)` through `int`'s own method (never a subclass override).
static BIT_LENGTH: std::sync::OnceLock<Option<Py<PyAny>>> = std::sync::OnceLock::new();

/// Resolves `int.bit_length` at module load.
pub fn init(py: Python<'_>) {
    let _ = int_bit_length(py, std::ptr::null_mut());
}

fn int_bit_length(py: Python<'_>, o: *mut ffi::PyObject) -> Option<u64> {
    let m = BIT_LENGTH.get_or_init(|| {
        py.get_type::<pyo3::types::PyInt>()
            .getattr("bit_length")
            .ok()
            .map(Bound::unbind)
    });
    let m = m.as_ref()?.bind(py);
    if o.is_null() {
        return None;
    }
    // SAFETY: o is a live int; borrowed into a Bound for the call.
    let arg = unsafe { Bound::from_borrowed_ptr(py, o) };
    match m.call1((arg,)) {
        Ok(r) => r.extract::<u64>().ok(),
        Err(_) => None,
    }
}
