//! C API functions the helper needs beyond the limited API (`abi3-py311`).
//!
//! The helper is one binary for CPython 3.11, 3.12 and 3.13. Functions that every one of those
//! versions exports are declared here and resolved by the dynamic loader when the module is
//! loaded (an extension module leaves its libpython symbols undefined; static interpreters such
//! as Debian's `/usr/bin/python3.11` export them from the executable). Functions that only some
//! versions export (`PyFrame_GetVar`, 3.12+) are looked up at run time with
//! `dlsym(RTLD_DEFAULT, ...)`, so the same binary still loads on 3.11.
#![allow(non_snake_case)]

use pyo3::ffi::{PyFrameObject, PyObject};
use std::sync::OnceLock;

unsafe extern "C" {
    /// 3.9+: the caller's frame (new reference) or NULL.
    pub fn PyFrame_GetBack(frame: *mut PyFrameObject) -> *mut PyFrameObject;
    /// 3.11+: the frame's locals (new reference). 3.11/3.12: a dict (after fast-to-locals);
    /// 3.13: a `FrameLocalsProxy` (PEP 667).
    pub fn PyFrame_GetLocals(frame: *mut PyFrameObject) -> *mut PyObject;
    /// 3.11+: the frame's globals dict (new reference).
    pub fn PyFrame_GetGlobals(frame: *mut PyFrameObject) -> *mut PyObject;
    /// 3.11+: the frame's builtins dict (new reference).
    pub fn PyFrame_GetBuiltins(frame: *mut PyFrameObject) -> *mut PyObject;
}

/// `PyObject *PyFrame_GetVar(PyFrameObject *frame, PyObject *name)` (3.12+).
pub type GetVarFn = unsafe extern "C" fn(*mut PyFrameObject, *mut PyObject) -> *mut PyObject;

/// `PyFrame_GetVar` if this interpreter exports it (3.12+).
pub fn frame_get_var() -> Option<GetVarFn> {
    static F: OnceLock<Option<GetVarFn>> = OnceLock::new();
    *F.get_or_init(|| {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no preconditions; the
        // symbol, when present, has the C signature of `GetVarFn` (CPython 3.12+ headers).
        unsafe {
            let p = libc::dlsym(libc::RTLD_DEFAULT, c"PyFrame_GetVar".as_ptr());
            if p.is_null() {
                None
            } else {
                Some(std::mem::transmute::<*mut libc::c_void, GetVarFn>(p))
            }
        }
    })
}
