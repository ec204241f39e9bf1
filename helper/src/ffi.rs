//! C API functions the helper needs beyond the limited API (`abi3-py311`).
//!
//! The helper is one binary for CPython 3.11 to 3.15. Functions that every one of those
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
    /// 3.11+: the frame's last instruction offset (bytes), or -1.
    pub fn PyFrame_GetLasti(frame: *mut PyFrameObject) -> std::ffi::c_int;
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

/// `PyUnstable_InterpreterFrame_GetCode` / `_GetLasti` / `_GetLine` (3.12+): read an
/// interpreter frame without materialising a frame object for it.
#[derive(Clone, Copy)]
pub struct InterpFrameApi {
    /// Strong reference to the frame's code object.
    pub get_code: unsafe extern "C" fn(*mut std::ffi::c_void) -> *mut PyObject,
    /// Last instruction offset in bytes.
    pub get_lasti: unsafe extern "C" fn(*mut std::ffi::c_void) -> std::ffi::c_int,
    /// Current line number.
    pub get_line: unsafe extern "C" fn(*mut std::ffi::c_void) -> std::ffi::c_int,
}

/// The `PyUnstable_InterpreterFrame_*` functions, when exported (3.12+).
pub fn interp_frame_api() -> Option<InterpFrameApi> {
    static F: OnceLock<Option<InterpFrameApi>> = OnceLock::new();
    *F.get_or_init(|| {
        // SAFETY: dlsym lookups by NUL-terminated names; each symbol, when present, has the C
        // signature declared in CPython 3.12/3.13's `cpython/frameobject.h`.
        unsafe {
            let code = libc::dlsym(
                libc::RTLD_DEFAULT,
                c"PyUnstable_InterpreterFrame_GetCode".as_ptr(),
            );
            let lasti = libc::dlsym(
                libc::RTLD_DEFAULT,
                c"PyUnstable_InterpreterFrame_GetLasti".as_ptr(),
            );
            let line = libc::dlsym(
                libc::RTLD_DEFAULT,
                c"PyUnstable_InterpreterFrame_GetLine".as_ptr(),
            );
            if code.is_null() || lasti.is_null() || line.is_null() {
                return None;
            }
            Some(InterpFrameApi {
                get_code: std::mem::transmute::<
                    *mut libc::c_void,
                    unsafe extern "C" fn(*mut std::ffi::c_void) -> *mut PyObject,
                >(code),
                get_lasti: std::mem::transmute::<
                    *mut libc::c_void,
                    unsafe extern "C" fn(*mut std::ffi::c_void) -> std::ffi::c_int,
                >(lasti),
                get_line: std::mem::transmute::<
                    *mut libc::c_void,
                    unsafe extern "C" fn(*mut std::ffi::c_void) -> std::ffi::c_int,
                >(line),
            })
        }
    })
}

/// What the helper needs to walk `_PyInterpreterFrame`s itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameWalk {
    /// `PyFrameObject.f_frame`.
    pub f_frame: usize,
    /// `_PyInterpreterFrame.previous`.
    pub previous: usize,
    /// `_PyInterpreterFrame.owner` (a char).
    pub owner: usize,
    /// Owners from this value up are shim/entry frames, not Python code.
    pub first_shim_owner: u8,
}

/// The frame layout of this interpreter, from the version table
/// (`libdebugger_common::cpython`, shared with the agent): on 3.13+ read from the interpreter's
/// own `_Py_DebugOffsets` (found in-process through the exported `_PyRuntime`), on 3.12 the
/// table's row. `None` on 3.11, for a version without a row, or when `_Py_DebugOffsets` does not
/// fit its row: callers then walk frames with `PyFrame_GetBack`.
pub fn frame_walk() -> Option<FrameWalk> {
    static F: OnceLock<Option<FrameWalk>> = OnceLock::new();
    *F.get_or_init(|| {
        use libdebugger_common::cpython::{self, OffsetsSource};
        let minor = u8::try_from(crate::hot::py_minor()).ok()?;
        let row = cpython::row(3, minor).filter(|_| minor >= 12)?;
        let frame = match &row.offsets {
            OffsetsSource::Static(s) => s.frame,
            OffsetsSource::DebugOffsets(l) => {
                // SAFETY: dlsym by a NUL-terminated name; `_PyRuntime` is a data object of at
                // least `sizeof(_PyRuntimeState)` bytes (far more than `_Py_DebugOffsets`),
                // initialised before any extension module loads, and its leading
                // `_Py_DebugOffsets` is never written after start-up.
                let bytes = unsafe {
                    let p = libc::dlsym(libc::RTLD_DEFAULT, c"_PyRuntime".as_ptr());
                    if p.is_null() {
                        return None;
                    }
                    std::slice::from_raw_parts(p as *const u8, cpython::debug_offsets_len(l))
                };
                let d = cpython::parse_debug_offsets(bytes, l).ok()?;
                if d.version_hex >> 16 != 0x0300 | u64::from(minor) {
                    return None;
                }
                d.frame
            }
        };
        Some(FrameWalk {
            f_frame: row.frame_object_f_frame as usize,
            previous: frame.previous as usize,
            owner: frame.owner as usize,
            first_shim_owner: row.first_shim_owner,
        })
    })
}
