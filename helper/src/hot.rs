//! The hit path: the callback sys.monitoring (3.12+) or the patched bytecode (3.11) calls with
//! `(code, line)` on the application thread. Condition → rate limits → CPU budget → capture →
//! queue to the helper thread. Never raises, never blocks, never runs user code.
use crate::budget::{CpuBudget, TokenBucket};
use crate::capture::{Capturer, Limits, Truncations};
use crate::condition::Condition;
use crate::eval::{Scope, eval_condition};
use crate::fasthash::FastMap;
use crate::output::{self, Msg};
use crate::redact::Redactor;
use crate::spec::BreakpointSpec;
use crate::value::Value;
use parking_lot::Mutex;
use pyo3::ffi;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Instant;

/// Counters of every outcome of a breakpoint's hits.
#[derive(Default, Debug)]
pub struct Counters {
    pub hits: AtomicU64,
    pub captured: AtomicU64,
    pub rate_limited: AtomicU64,
    pub process_capped: AtomicU64,
    pub condition_false: AtomicU64,
    pub condition_errors: AtomicU64,
    pub throttled: AtomicU64,
    pub dropped: AtomicU64,
    pub deadline_cut: AtomicU64,
}

impl Counters {
    pub fn reset(&self) {
        for c in [
            &self.hits,
            &self.captured,
            &self.rate_limited,
            &self.process_capped,
            &self.condition_false,
            &self.condition_errors,
            &self.throttled,
            &self.dropped,
            &self.deadline_cut,
        ] {
            c.store(0, Relaxed);
        }
    }
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "hits": self.hits.load(Relaxed),
            "captured": self.captured.load(Relaxed),
            "rate_limited": self.rate_limited.load(Relaxed),
            "process_capped": self.process_capped.load(Relaxed),
            "condition_false": self.condition_false.load(Relaxed),
            "condition_errors": self.condition_errors.load(Relaxed),
            "throttled": self.throttled.load(Relaxed),
            "dropped": self.dropped.load(Relaxed),
            "deadline_cut": self.deadline_cut.load(Relaxed),
        })
    }
}

/// An active breakpoint as the hit path sees it.
pub struct Bp {
    pub spec: BreakpointSpec,
    pub limits: Limits,
    pub condition: Option<Condition>,
    /// The condition's names as interned Python strings.
    pub cond_names: Vec<Py<PyAny>>,
    pub rate: f64,
    pub burst: f64,
    pub bucket: Mutex<TokenBucket>,
    pub counters: Counters,
    /// Last condition evaluation error and when it was recorded (ns, monotonic).
    pub last_condition_error: Mutex<Option<(String, u64)>>,
    /// Whether the CPU budget skipped this breakpoint's last firing hit.
    pub throttled_now: std::sync::atomic::AtomicBool,
    /// The action when it is not a snapshot: a logpoint's message (`spec.log`).
    pub log: Option<LogAction>,
}

/// A logpoint's action: its parsed template and the template's names as interned strings.
pub struct LogAction {
    pub template: crate::message::Template,
    pub names: Vec<Py<PyAny>>,
}

/// A logpoint's rendered message on its way to the encoder thread.
pub struct LogLine {
    pub bp: Arc<Bp>,
    pub message: String,
    pub thread_id: u64,
    pub thread_name: String,
    pub unix_ns: i128,
    pub hit_count: u64,
    pub capture_ns: u64,
}

/// One (code object, line) → breakpoint binding.
#[derive(Clone)]
pub struct Binding {
    pub bp: Arc<Bp>,
    /// For each condition name: whether it is a local/cell/free variable of this code object.
    pub is_local: Arc<[bool]>,
    /// The same for the names of a logpoint's message.
    pub msg_is_local: Arc<[bool]>,
}

/// What the callback reads; replaced wholesale by the control path. Never locked while Python
/// code runs.
pub struct Hot {
    pub table: FastMap<(usize, u32), Arc<[Binding]>>,
    /// 3.12+: code objects with a breakpoint on their entry line that sys.monitoring does not
    /// report once per call as a LINE event (see `control::start_line`): PY_START stands in.
    pub start_lines: FastMap<usize, u32>,
    pub redactor: Arc<Redactor>,
}

pub static HOT: LazyLock<Mutex<Hot>> = LazyLock::new(|| {
    Mutex::new(Hot {
        table: FastMap::default(),
        start_lines: FastMap::default(),
        redactor: Arc::new(Redactor::default()),
    })
});

/// Process-wide budgets.
pub struct Budgets {
    pub process: TokenBucket,
    pub cpu: CpuBudget,
}

pub static BUDGETS: LazyLock<Mutex<Budgets>> = LazyLock::new(|| {
    Mutex::new(Budgets {
        process: TokenBucket::new(100.0, 100.0, now_ns()),
        cpu: CpuBudget::new(0.02),
    })
});

/// Process-wide counters.
#[derive(Default)]
pub struct ProcessCounters {
    pub callbacks: AtomicU64,
    pub callback_errors: AtomicU64,
    pub dropped: AtomicU64,
    pub capture_ns_total: AtomicU64,
}

pub static PROCESS: LazyLock<ProcessCounters> = LazyLock::new(ProcessCounters::default);

/// Monotonic nanoseconds since the helper loaded.
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// CPython minor version (11, 12, 13...).
pub static PY_MINOR: OnceLock<u32> = OnceLock::new();

pub fn py_minor() -> u32 {
    PY_MINOR.get().copied().unwrap_or(12)
}

/// `sys.monitoring.DISABLE`, when running on 3.12+.
pub static DISABLE: OnceLock<usize> = OnceLock::new();

/// A captured snapshot on its way to the encoder thread.
pub struct Snapshot {
    pub bp: Arc<Bp>,
    pub locals: Vec<(String, Value)>,
    pub locals_more: usize,
    pub stack: Vec<(Arc<str>, Arc<str>, i32)>,
    pub thread_id: u64,
    pub thread_name: String,
    pub unix_ns: i128,
    pub cuts: Truncations,
    pub redacted: Vec<String>,
    pub hit_count: u64,
    pub capture_ns: u64,
}

thread_local! {
    /// (frame, code) of the last PY_START reported on this thread (entry-line breakpoints).
    static LAST_START: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// The `METH_FASTCALL` entry point: `callback(code, line)` (sys.monitoring LINE, and the
/// call the 3.11 patcher inserts).
///
/// # Safety
/// Called by CPython with the GIL held and `nargs` valid argument pointers.
pub unsafe extern "C" fn line_callback(
    _slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: forwarded from CPython.
    unsafe { entry(args, nargs, false) }
}

/// The `METH_FASTCALL` entry point for sys.monitoring PY_START: `callback(code, offset)`.
///
/// # Safety
/// Called by CPython with the GIL held and `nargs` valid argument pointers.
pub unsafe extern "C" fn start_callback(
    _slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: forwarded from CPython.
    unsafe { entry(args, nargs, true) }
}

/// # Safety
/// GIL held; `args` has `nargs` valid pointers.
unsafe fn entry(
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    start: bool,
) -> *mut ffi::PyObject {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: CPython passes `nargs` valid pointers with the GIL held.
        unsafe { callback_body(args, nargs, start) }
    });
    let disable = matches!(r, Ok(true));
    if r.is_err() {
        PROCESS.callback_errors.fetch_add(1, Relaxed);
    }
    // SAFETY: GIL held; any stray exception is cleared so nothing reaches the application.
    unsafe {
        if !ffi::PyErr_Occurred().is_null() {
            ffi::PyErr_Clear();
            PROCESS.callback_errors.fetch_add(1, Relaxed);
        }
        if disable && let Some(&d) = DISABLE.get() {
            let d = d as *mut ffi::PyObject;
            ffi::Py_INCREF(d);
            return d;
        }
        let none = ffi::Py_None();
        ffi::Py_INCREF(none);
        none
    }
}

/// Returns true when the line has no breakpoint (so sys.monitoring may disable it).
///
/// # Safety
/// GIL held; `args` has `nargs` valid pointers.
unsafe fn callback_body(
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
    start: bool,
) -> bool {
    if nargs < 2 {
        return false;
    }
    // SAFETY: nargs >= 2 checked above.
    let (code, line) = unsafe { (*args, *args.add(1)) };
    // SAFETY: GIL held; the borrowed current frame is only compared by address.
    let current_frame = || unsafe { ffi::PyEval_GetFrame() } as usize;
    let line = if start {
        match HOT.lock().start_lines.get(&(code as usize)) {
            Some(l) => {
                LAST_START.with(|c| c.set((current_frame(), code as usize)));
                *l as std::ffi::c_long
            }
            None => return true,
        }
    } else {
        // SAFETY: `line` is an int object from CPython (or our patched bytecode).
        let line = unsafe { ffi::PyLong_AsLong(line) };
        // 3.13 sometimes also reports LINE for the first line after PY_START in the same frame:
        // that entry was already counted.
        if HOT.lock().start_lines.get(&(code as usize)) == Some(&(line as u32))
            && LAST_START.with(|c| c.get()) == (current_frame(), code as usize)
        {
            LAST_START.with(|c| c.set((0, 0)));
            return false;
        }
        line
    };
    if line < 0 {
        // SAFETY: clear a possible conversion error.
        unsafe { ffi::PyErr_Clear() };
        return false;
    }
    PROCESS.callbacks.fetch_add(1, Relaxed);
    let bindings = {
        let hot = HOT.lock();
        match hot.table.get(&(code as usize, line as u32)) {
            Some(b) => (b.clone(), hot.redactor.clone()),
            None => return py_minor() >= 12,
        }
    };
    // SAFETY: the GIL is held by the caller (CPython calling our callback).
    let py = unsafe { Python::assume_attached() };
    for b in bindings.0.iter() {
        on_hit(py, b, &bindings.1);
    }
    false
}

fn on_hit(py: Python<'_>, b: &Binding, redactor: &Redactor) {
    let bp = &b.bp;
    let hit_count = bp.counters.hits.fetch_add(1, Relaxed) + 1;
    // SAFETY: GIL held; PyEval_GetFrame returns the borrowed current frame (the one that hit).
    // Fetched only when needed: on 3.12+ it materialises a frame object.
    let current_frame = || unsafe { ffi::PyEval_GetFrame() };
    if let Some(cond) = &bp.condition {
        let frame = current_frame();
        if frame.is_null() {
            return;
        }
        let mut scope = Scope::new(py, frame, &bp.cond_names, &b.is_local);
        match eval_condition(cond, &mut scope) {
            Ok(true) => {}
            Ok(false) => {
                bp.counters.condition_false.fetch_add(1, Relaxed);
                return;
            }
            Err(e) => {
                bp.counters.condition_errors.fetch_add(1, Relaxed);
                let now = now_ns();
                let mut last = bp.last_condition_error.lock();
                // Rate-limited: keep the first error, refresh at most once a second.
                if last
                    .as_ref()
                    .is_none_or(|(_, t)| now.saturating_sub(*t) > 1_000_000_000)
                {
                    *last = Some((e.to_string(), now));
                }
                return;
            }
        }
    }
    let now = now_ns();
    if !bp.bucket.lock().try_take(now) {
        bp.counters.rate_limited.fetch_add(1, Relaxed);
        return;
    }
    {
        let mut budgets = BUDGETS.lock();
        if budgets.cpu.exhausted(now) {
            bp.counters.throttled.fetch_add(1, Relaxed);
            bp.throttled_now.store(true, Relaxed);
            return;
        }
        if !budgets.process.try_take(now) {
            bp.counters.process_capped.fetch_add(1, Relaxed);
            return;
        }
    }
    bp.throttled_now.store(false, Relaxed);
    // A full queue would drop the snapshot: do not take it. At a hit rate the helper thread
    // cannot keep up with, snapshots that are thrown away cost the application thread most of
    // its hit time (and their frees the helper thread's allocator).
    if output::queue_full() {
        bp.counters.dropped.fetch_add(1, Relaxed);
        PROCESS.dropped.fetch_add(1, Relaxed);
        return;
    }
    let frame = current_frame();
    if frame.is_null() {
        return;
    }
    let start = Instant::now();
    // The action: a log line or a snapshot. Everything before (condition, limits, budgets) and
    // after (accounting, queueing) is the same for both.
    let msg = match &bp.log {
        Some(log) => Msg::Log(Box::new(log_line(
            py, frame, b, log, redactor, start, hit_count,
        ))),
        None => {
            let snap = capture(py, frame, bp, redactor, start, hit_count);
            if snap.cuts.deadline > 0 {
                bp.counters.deadline_cut.fetch_add(1, Relaxed);
            }
            Msg::Hit(Box::new(snap))
        }
    };
    let spent = start.elapsed().as_nanos() as u64;
    BUDGETS.lock().cpu.record(now, spent);
    PROCESS.capture_ns_total.fetch_add(spent, Relaxed);
    // `captured` counts snapshots on their way out (counted before queuing, so the snapshot's
    // own `$captured_count` includes it); `dropped` hits the full queue turned away.
    bp.counters.captured.fetch_add(1, Relaxed);
    if !output::try_send(msg) {
        bp.counters.captured.fetch_sub(1, Relaxed);
        bp.counters.dropped.fetch_add(1, Relaxed);
        PROCESS.dropped.fetch_add(1, Relaxed);
    }
}

/// Renders a logpoint's message in `frame` (the condition language's rules: no user code; values
/// through the capture encoder with the logpoint's limits, at most `max_string` characters each
/// and `max_bytes` in all).
fn log_line(
    py: Python<'_>,
    frame: *mut ffi::PyFrameObject,
    b: &Binding,
    log: &LogAction,
    redactor: &Redactor,
    start: Instant,
    hit_count: u64,
) -> LogLine {
    let bp = &b.bp;
    let unix_ns = unix_now_ns();
    // As for a capture: no finalizer may run while borrowed references are read.
    let _gc = GcPause::new();
    let mut cap = Capturer::new(py, &bp.limits, redactor, start);
    let mut scope = Scope::new(py, frame, &log.names, &b.msg_is_local);
    let message = log
        .template
        .render(&mut scope, &mut cap, redactor, bp.limits.max_bytes.max(64));
    let (thread_id, thread_name) = thread_identity(py);
    LogLine {
        bp: bp.clone(),
        message,
        thread_id,
        thread_name,
        unix_ns,
        hit_count,
        capture_ns: start.elapsed().as_nanos() as u64,
    }
}

fn unix_now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// The current thread's ident and name.
fn thread_identity(py: Python<'_>) -> (u64, String) {
    // SAFETY: GIL held.
    let thread_id = unsafe { ffi::PyThread_get_thread_ident() } as u64;
    let mut thread_name = thread_name(py, thread_id);
    // The initial OS thread is CPython's main thread; checked only when `threading` has no name
    // for this thread (e.g. it was never imported).
    let on_initial_thread = || {
        // SAFETY: getpid/gettid have no preconditions.
        unsafe { libc::getpid() == libc::gettid() }
    };
    if thread_name.is_empty()
        && (MAIN_THREAD_IDENT.get() == Some(&thread_id) || on_initial_thread())
    {
        thread_name = "MainThread".into();
    }
    (thread_id, thread_name)
}

/// Disables the cyclic GC for its lifetime (re-enables it on drop, also on unwind).
struct GcPause(bool);

impl GcPause {
    fn new() -> Self {
        // SAFETY: GIL held by the caller (the hit path).
        Self(unsafe { ffi::PyGC_Disable() } != 0)
    }
}

impl Drop for GcPause {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: GIL still held; re-enabling what we disabled.
            unsafe { ffi::PyGC_Enable() };
        }
    }
}

/// Copies locals, stack and thread identity of `frame`.
fn capture(
    py: Python<'_>,
    frame: *mut ffi::PyFrameObject,
    bp: &Arc<Bp>,
    redactor: &Redactor,
    start: Instant,
    hit_count: u64,
) -> Snapshot {
    let unix_ns = unix_now_ns();
    // SAFETY: GIL held. With the GC disabled no finalizer can run during the capture, so the
    // borrowed references read out of containers stay valid (see capture.rs).
    let _gc = GcPause::new();
    let mut cap = Capturer::new(py, &bp.limits, redactor, start);
    let (locals, locals_more) = {
        // SAFETY: `frame` is the live current frame; new references are released.
        unsafe {
            let l = crate::ffi::PyFrame_GetLocals(frame);
            if l.is_null() {
                ffi::PyErr_Clear();
                (Vec::new(), 0)
            } else if ffi::PyDict_Check(l) != 0 {
                let r = cap.capture_locals(l);
                ffi::Py_DECREF(l);
                r
            } else {
                // 3.13: a FrameLocalsProxy; copy it into a dict through its own C mapping methods.
                let d = ffi::PyDict_New();
                let r = if !d.is_null() && ffi::PyDict_Update(d, l) == 0 {
                    cap.capture_locals(d)
                } else {
                    ffi::PyErr_Clear();
                    (Vec::new(), 0)
                };
                if !d.is_null() {
                    ffi::Py_DECREF(d);
                }
                ffi::Py_DECREF(l);
                r
            }
        }
    };
    // SAFETY: frame is live; see `stack`.
    let stack = unsafe { stack(py, frame) };
    let (thread_id, thread_name) = thread_identity(py);
    Snapshot {
        bp: bp.clone(),
        locals,
        locals_more,
        stack,
        thread_id,
        thread_name,
        unix_ns,
        cuts: cap.cuts,
        redacted: cap.redacted,
        hit_count,
        capture_ns: start.elapsed().as_nanos() as u64,
    }
}

/// Facts about one code object seen on a stack: a strong reference (so its address is not
/// reused while cached), its filename and qualname, and a cache of instruction offset → line
/// (PyFrame_GetLineNumber decodes the line table linearly on every call).
struct CodeInfo {
    _code: Py<PyAny>,
    file: Arc<str>,
    qual: Arc<str>,
    lines: FastMap<i32, i32>,
}

static CODE_INFO: LazyLock<Mutex<FastMap<usize, CodeInfo>>> =
    LazyLock::new(|| Mutex::new(FastMap::default()));

/// Drops cached code-object facts (shutdown, fork).
pub fn clear_code_info() {
    CODE_INFO.lock().clear();
}

fn new_code_info(py: Python<'_>, code: *mut ffi::PyObject) -> CodeInfo {
    // SAFETY: code is a live code object (returned by PyFrame_GetCode).
    let c = unsafe { Bound::from_borrowed_ptr(py, code) };
    // Code object attributes are C members; no user code.
    let get = |name: &str| -> Arc<str> {
        c.getattr(name)
            .and_then(|v| v.extract::<String>())
            .unwrap_or_default()
            .into()
    };
    CodeInfo {
        file: get("co_filename"),
        qual: get("co_qualname"),
        lines: FastMap::default(),
        _code: c.unbind(),
    }
}

/// The stack, innermost first, at most 64 frames.
///
/// # Safety
/// GIL held; `frame` live.
unsafe fn stack(py: Python<'_>, frame: *mut ffi::PyFrameObject) -> Vec<(Arc<str>, Arc<str>, i32)> {
    let mut out = Vec::with_capacity(32);
    let mut cache = CODE_INFO.lock();
    if cache.len() > 4096 {
        cache.clear();
    }
    let mut entry = |code: *mut ffi::PyObject, lasti: i32, line: &mut dyn FnMut() -> i32| {
        let info = cache
            .entry(code as usize)
            .or_insert_with(|| new_code_info(py, code));
        let l = match info.lines.get(&lasti) {
            Some(l) => *l,
            None => {
                let l = line();
                if info.lines.len() < 128 {
                    info.lines.insert(lasti, l);
                }
                l
            }
        };
        (info.file.clone(), info.qual.clone(), l)
    };
    // 3.12+: walk the interpreter frames directly (no frame object is created for the
    // callers, which PyFrame_GetBack would allocate and the application would later free).
    if let (Some(api), Some(w)) = (crate::ffi::interp_frame_api(), crate::ffi::frame_walk()) {
        // SAFETY: `frame` is the live current frame object; its interpreter frame chain is
        // stable while we hold the GIL and run no Python code. Offsets are this interpreter's
        // (see `frame_walk`); shim/entry frames are skipped as CPython does.
        unsafe {
            let mut f = *((frame as *const u8).add(w.f_frame) as *const *mut u8);
            let mut n = 0;
            while !f.is_null() && out.len() < 64 && n < 10_000 {
                n += 1;
                let owner = *f.add(w.owner);
                if owner < w.first_shim_owner {
                    let code = (api.get_code)(f.cast());
                    if !code.is_null() {
                        if crate::types::is_code(code) {
                            let lasti = (api.get_lasti)(f.cast());
                            out.push(entry(code, lasti, &mut || (api.get_line)(f.cast())));
                        }
                        ffi::Py_DECREF(code);
                    } else {
                        ffi::PyErr_Clear();
                    }
                }
                f = *(f.add(w.previous) as *const *mut u8);
            }
        }
        return out;
    }
    // SAFETY: each frame is held by a new reference while used; codes likewise. Nothing here
    // runs Python code, so holding the cache lock is safe.
    unsafe {
        ffi::Py_INCREF(frame.cast());
        let mut f = frame;
        while !f.is_null() && out.len() < 64 {
            let code = ffi::PyFrame_GetCode(f);
            if !code.is_null() {
                let lasti = crate::ffi::PyFrame_GetLasti(f);
                out.push(entry(code.cast(), lasti, &mut || {
                    ffi::PyFrame_GetLineNumber(f)
                }));
                ffi::Py_DECREF(code.cast());
            }
            let back = crate::ffi::PyFrame_GetBack(f);
            ffi::Py_DECREF(f.cast());
            f = back;
        }
        if !f.is_null() {
            ffi::Py_DECREF(f.cast());
        }
    }
    out
}

/// The main thread's ident (resolved at module load), named "MainThread" even when `threading`
/// was never imported.
pub static MAIN_THREAD_IDENT: OnceLock<u64> = OnceLock::new();

/// Resolves [`MAIN_THREAD_IDENT`]: `_thread._get_main_thread_ident` (a C function, 3.12+);
/// else the `_ident` that `threading` stored on its main thread object, read from the instance
/// dict (`Thread.ident` is a property written in Python, and running Python code on this thread
/// can hand the GIL to the application's threads); else the current thread when it is the
/// process's initial thread.
pub fn init_main_thread(py: Python<'_>) {
    let module = |name: &str| {
        let modules = py.import("sys").ok()?.getattr("modules").ok()?;
        modules.get_item(name).ok().filter(|m| !m.is_none())
    };
    let ident = module("_thread")
        .and_then(|t| {
            t.getattr("__dict__")
                .ok()?
                .get_item("_get_main_thread_ident")
                .ok()
        })
        .and_then(|f| f.call0().ok()?.extract::<u64>().ok())
        .or_else(|| {
            let main = module("threading")?
                .getattr("__dict__")
                .ok()?
                .get_item("_main_thread")
                .ok()?;
            main.getattr("__dict__")
                .ok()?
                .get_item("_ident")
                .ok()?
                .extract::<u64>()
                .ok()
        })
        .or_else(|| {
            // SAFETY: getpid/gettid have no preconditions.
            let initial = unsafe { libc::getpid() == libc::gettid() };
            // SAFETY: GIL held.
            initial.then(|| unsafe { ffi::PyThread_get_thread_ident() } as u64)
        });
    if let Some(i) = ident {
        let _ = MAIN_THREAD_IDENT.set(i);
    }
}

/// The thread's name from `threading._active` (read from the dicts, no user code); the main
/// thread's name if it is not registered; "" if `threading` was never imported.
fn thread_name(py: Python<'_>, ident: u64) -> String {
    // SAFETY: dict reads under the GIL; borrowed references are used immediately.
    unsafe {
        let modules = ffi::PyImport_GetModuleDict();
        if modules.is_null() {
            return String::new();
        }
        let threading = ffi::PyDict_GetItemString(modules, c"threading".as_ptr());
        if threading.is_null() || ffi::PyModule_Check(threading) == 0 {
            return String::new();
        }
        let md = ffi::PyModule_GetDict(threading);
        if md.is_null() {
            return String::new();
        }
        let active = ffi::PyDict_GetItemString(md, c"_active".as_ptr());
        if active.is_null() || ffi::PyDict_Check(active) == 0 {
            return String::new();
        }
        let key = ffi::PyLong_FromUnsignedLongLong(ident);
        if key.is_null() {
            ffi::PyErr_Clear();
            return String::new();
        }
        let t = ffi::PyDict_GetItemWithError(active, key);
        ffi::Py_DECREF(key);
        if t.is_null() {
            ffi::PyErr_Clear();
            return String::new();
        }
        let d = ffi::PyObject_GenericGetDict(t, std::ptr::null_mut());
        if d.is_null() {
            ffi::PyErr_Clear();
            return String::new();
        }
        let d = Bound::from_owned_ptr(py, d);
        let n = ffi::PyDict_GetItemString(d.as_ptr(), c"_name".as_ptr());
        if n.is_null() || ffi::PyUnicode_Check(n) == 0 {
            return String::new();
        }
        let mut len: ffi::Py_ssize_t = 0;
        let p = ffi::PyUnicode_AsUTF8AndSize(n, &mut len);
        if p.is_null() {
            ffi::PyErr_Clear();
            return String::new();
        }
        String::from_utf8_lossy(std::slice::from_raw_parts(p.cast::<u8>(), len as usize))
            .into_owned()
    }
}
