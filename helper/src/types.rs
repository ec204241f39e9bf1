//! Per-type facts the capture needs (display name, `__slots__` member descriptors), computed once
//! per type without running user code and cached by type pointer.
//!
//! Everything here runs with the GIL held.
use crate::fasthash::FastMap;
use parking_lot::Mutex;
use pyo3::ffi;
use pyo3::prelude::*;
use std::sync::{Arc, OnceLock};

/// What the capture knows about one type.
pub struct TypeInfo {
    /// Keeps the type alive so its address is not reused while cached.
    _ty: Py<PyAny>,
    /// `module.Qualname`.
    pub name: Arc<str>,
    /// `__slots__` member descriptors of the type and its bases: (attribute name, descriptor).
    pub slots: Vec<(String, Py<PyAny>)>,
}

const MAX_TYPES: usize = 4096;

fn cache() -> &'static Mutex<FastMap<usize, Arc<TypeInfo>>> {
    static C: OnceLock<Mutex<FastMap<usize, Arc<TypeInfo>>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(FastMap::default()))
}

/// Drops every cached type (shutdown, fork).
pub fn clear() {
    cache().lock().clear();
}

/// `types.MemberDescriptorType` (the C type of `__slots__` entries).
/// `types.MemberDescriptorType`, resolved by [`init`] at module load (never on the hit path:
/// an import there could run user code through an overridden `__import__`).
static MEMBER_DESCRIPTOR: OnceLock<usize> = OnceLock::new();

/// `types.CodeType`, resolved by [`init`].
static CODE_TYPE: OnceLock<usize> = OnceLock::new();

/// Resolves what the hit path needs from the `types` module. Called at module load.
pub fn init(py: Python<'_>) {
    member_descriptor_type(py);
    CODE_TYPE.get_or_init(|| {
        py.import("types")
            .and_then(|m| m.getattr("CodeType"))
            .map(|t| {
                let p = t.as_ptr() as usize;
                // A builtin type: keep the reference for the life of the process.
                std::mem::forget(t);
                p
            })
            .unwrap_or(0)
    });
}

/// Whether `o` is exactly a code object.
///
/// # Safety
/// `o` is a live object.
pub unsafe fn is_code(o: *mut ffi::PyObject) -> bool {
    let t = CODE_TYPE.get().copied().unwrap_or(0);
    // SAFETY: reading the type of a live object.
    t != 0 && unsafe { ffi::Py_TYPE(o) } as usize == t
}

fn member_descriptor_type(py: Python<'_>) -> *mut ffi::PyTypeObject {
    let t = *MEMBER_DESCRIPTOR.get_or_init(|| {
        py.import("types")
            .and_then(|m| m.getattr("MemberDescriptorType"))
            .map(|t| {
                let p = t.as_ptr() as usize;
                // Keep it alive for the life of the process (a builtin type anyway).
                std::mem::forget(t);
                p
            })
            .unwrap_or(0)
    });
    t as *mut ffi::PyTypeObject
}

/// Facts about `tp`, from the cache or computed now.
///
/// # Safety
/// `tp` must be a valid type object and the GIL must be held.
pub unsafe fn info(py: Python<'_>, tp: *mut ffi::PyTypeObject) -> Arc<TypeInfo> {
    let key = tp as usize;
    if let Some(i) = cache().lock().get(&key) {
        return i.clone();
    }
    // SAFETY: caller guarantees `tp` is a live type object; we take a new reference.
    let ty = unsafe { Bound::from_borrowed_ptr(py, tp.cast()) };
    let info = Arc::new(TypeInfo {
        name: type_name(&ty).into(),
        slots: slots(py, &ty),
        _ty: ty.unbind(),
    });
    let mut c = cache().lock();
    if c.len() >= MAX_TYPES {
        c.clear();
    }
    c.insert(key, info.clone());
    info
}

/// Whether `ty`'s metaclass is exactly `type`, so that attribute lookups on the type object go
/// through `type`'s own C getters (a user metaclass could define `__getattribute__`).
fn plain_metaclass(ty: &Bound<'_, PyAny>) -> bool {
    // SAFETY: reading the type of a live object.
    unsafe { ffi::Py_TYPE(ty.as_ptr()) == &raw mut ffi::PyType_Type }
}

fn type_name(ty: &Bound<'_, PyAny>) -> String {
    if plain_metaclass(ty) {
        let module = ty
            .getattr("__module__")
            .ok()
            .and_then(|m| m.extract::<String>().ok());
        let qual = ty
            .getattr("__qualname__")
            .ok()
            .and_then(|m| m.extract::<String>().ok());
        if let (Some(m), Some(q)) = (module, qual) {
            return format!("{m}.{q}");
        }
    }
    // SAFETY: PyType_GetQualName reads the type's stored name (C, no user code); `ty` is a type.
    let q = unsafe { ffi::PyType_GetQualName(ty.as_ptr().cast()) };
    if q.is_null() {
        // SAFETY: clearing the error PyType_GetQualName set.
        unsafe { ffi::PyErr_Clear() };
        return "?".into();
    }
    // SAFETY: new reference returned above.
    let q = unsafe { Bound::from_owned_ptr(ty.py(), q) };
    q.extract::<String>().unwrap_or_else(|_| "?".into())
}

fn slots(py: Python<'_>, ty: &Bound<'_, PyAny>) -> Vec<(String, Py<PyAny>)> {
    let mut out = Vec::new();
    if !plain_metaclass(ty) {
        return out;
    }
    let mdt = member_descriptor_type(py);
    let Ok(mro) = ty.getattr("__mro__") else {
        return out;
    };
    let Ok(mro) = mro.cast_into::<pyo3::types::PyTuple>() else {
        return out;
    };
    for cls in mro.iter() {
        if !plain_metaclass(&cls) {
            continue;
        }
        let Ok(d) = cls.getattr("__dict__") else {
            continue;
        };
        let Ok(names) = d.get_item("__slots__") else {
            continue;
        };
        let names: Vec<String> = if let Ok(s) = names.extract::<String>() {
            vec![s]
        } else if let Ok(t) = names.cast::<pyo3::types::PyTuple>() {
            t.iter()
                .filter_map(|n| n.extract::<String>().ok())
                .collect()
        } else if let Ok(l) = names.cast::<pyo3::types::PyList>() {
            l.iter()
                .filter_map(|n| n.extract::<String>().ok())
                .collect()
        } else {
            continue;
        };
        let cls_name: String = cls
            .getattr("__name__")
            .ok()
            .and_then(|n| n.extract().ok())
            .unwrap_or_default();
        for n in names {
            if n == "__dict__" || n == "__weakref__" {
                continue;
            }
            // Private names are mangled in the class dict.
            let key = if n.starts_with("__") && !n.ends_with("__") {
                format!("_{}{}", cls_name.trim_start_matches('_'), n)
            } else {
                n.clone()
            };
            if let Ok(desc) = d.get_item(&key) {
                // SAFETY: reading the type of a live object.
                if unsafe { ffi::Py_TYPE(desc.as_ptr()) } == mdt
                    && !out.iter().any(|(k, _)| *k == n)
                {
                    out.push((n, desc.unbind()));
                }
            }
        }
    }
    out
}

/// Reads a `__slots__` member of `obj` through the member descriptor's C getter (it reads the
/// object at the slot's offset). Returns a new reference, or None when the slot is unset.
///
/// # Safety
/// GIL held; `desc` a member descriptor taken from `obj`'s type; `obj` alive.
pub unsafe fn read_slot(
    desc: *mut ffi::PyObject,
    obj: *mut ffi::PyObject,
) -> Option<*mut ffi::PyObject> {
    // SAFETY: `desc` is a member_descriptor, a static C type whose tp_descr_get is C code.
    unsafe {
        let tp = ffi::Py_TYPE(desc);
        let get = ffi::PyType_GetSlot(tp, ffi::Py_tp_descr_get);
        if get.is_null() {
            return None;
        }
        let get: ffi::descrgetfunc = std::mem::transmute(get);
        let r = get(desc, obj, ffi::Py_TYPE(obj).cast());
        if r.is_null() {
            ffi::PyErr_Clear();
            None
        } else {
            Some(r)
        }
    }
}
