//! The control path: applies the desired breakpoint set as a diff (resolve, arm, disarm),
//! reports statuses, and polls the agent's control block. Runs with the GIL held, never on the
//! hit path.
use crate::budget::{CpuBudget, TokenBucket};
use crate::condition;
use crate::hot::{BUDGETS, Binding, Bp, Counters, HOT, PROCESS, now_ns, py_minor};
use crate::output::{self, send_json};
use crate::redact::Redactor;
use crate::resolve::{self, CodeIndex};
use crate::spec::{BreakpointSpec, Desired, Settings};
use libdebugger_common::helper_abi::{ControlBlock, message_kind};
use parking_lot::Mutex;
use pyo3::prelude::*;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, LazyLock};

/// Errors of the control path (reported to the caller; never raised into the application).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The desired-state JSON does not parse.
    #[error("invalid breakpoint set: {source}")]
    InvalidJson {
        #[source]
        source: serde_json::Error,
    },
    /// The control path was entered again from inside itself (e.g. by an import it caused).
    #[error("breakpoint update skipped: the helper is already applying an update on this thread")]
    Reentrant,
    /// A Python call of the control path failed.
    #[error("python error while applying breakpoints: {message}")]
    Python { message: String },
}

impl From<PyErr> for ControlError {
    fn from(e: PyErr) -> Self {
        ControlError::Python {
            message: e.to_string(),
        }
    }
}

/// Resolution outcome of one breakpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Armed { code_objects: usize },
    Pending { reason: String },
    Error { reason: String },
}

/// A breakpoint the control path manages.
struct Managed {
    bp: Arc<Bp>,
    /// An error no re-resolution can fix (condition syntax, invalid line).
    permanent_error: bool,
    /// Code objects it is armed on (strong references keep their addresses unique).
    codes: Vec<Py<PyAny>>,
    /// Code objects (by address) where the line to arm is not the breakpoint's own line: the
    /// entry line of a decorated function for a breakpoint on its `def` line.
    arm_lines: HashMap<usize, u32>,
    status: Status,
}

/// One armed code object.
struct Armed {
    code: Py<PyAny>,
    lines: BTreeSet<u32>,
    /// 3.11: the swap that put the instrumented copy in place, and that copy.
    swap: Option<(crate::py311::Swap, Py<PyAny>)>,
}

struct State {
    bps: Vec<Managed>,
    armed: HashMap<usize, Armed>,
    tool_id: Option<u8>,
    callback: Option<Py<PyAny>>,
    start_callback: Option<Py<PyAny>>,
    settings: Settings,
    finder: Option<Py<PyAny>>,
    last_scan_us: u64,
    last_scan_objects: usize,
    import_hook_errors: u64,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(|| {
    Mutex::new(State {
        bps: Vec::new(),
        armed: HashMap::new(),
        tool_id: None,
        callback: None,
        start_callback: None,
        settings: Settings::default(),
        finder: None,
        last_scan_us: 0,
        last_scan_objects: 0,
        import_hook_errors: 0,
    })
});

fn status_json(m: &Managed) -> serde_json::Value {
    let mut v = json!({
        "id": m.bp.spec.id,
        "file": m.bp.spec.file,
        "line": m.bp.spec.line,
        "kind": if m.bp.spec.log.is_some() { "logpoint" } else { "breakpoint" },
    });
    let o = v.as_object_mut().map(|o| {
        match &m.status {
            Status::Armed { code_objects } => {
                let throttled = m.bp.throttled_now.load(Relaxed);
                o.insert(
                    "status".into(),
                    json!(if throttled { "throttled" } else { "armed" }),
                );
                o.insert("code_objects".into(), json!(code_objects));
            }
            Status::Pending { reason } => {
                o.insert("status".into(), json!("pending"));
                o.insert("reason".into(), json!(reason));
            }
            Status::Error { reason } => {
                o.insert("status".into(), json!("error"));
                o.insert("reason".into(), json!(reason));
            }
        }
        if let Some(l) = &m.bp.spec.log {
            o.insert("message".into(), json!(l.message));
        }
        o.insert("counters".into(), m.bp.counters.to_json());
        if let Some((e, _)) = m.bp.last_condition_error.lock().as_ref() {
            o.insert("last_condition_error".into(), json!(e));
        }
    });
    let _ = o;
    v
}

fn intern_all(py: Python<'_>, names: &[String]) -> Vec<Py<PyAny>> {
    names
        .iter()
        .map(|n| pyo3::types::PyString::intern(py, n).into_any().unbind())
        .collect()
}

fn new_bp(py: Python<'_>, spec: BreakpointSpec) -> (Arc<Bp>, Option<Status>) {
    let limits_spec = spec.limits.clone().unwrap_or_default();
    let mut err = None;
    let condition = match spec.condition_source() {
        None => None,
        Some(src) => match condition::parse(src) {
            Ok(c) => Some(c),
            Err(e) => {
                err = Some(Status::Error {
                    reason: format!(
                        "condition syntax error at column {}: {} (condition: {src})",
                        e.column, e.message
                    ),
                });
                None
            }
        },
    };
    let cond_names = condition
        .as_ref()
        .map(|c| intern_all(py, &c.names))
        .unwrap_or_default();
    // The action: a logpoint's message parses like a condition, its holes reported by column.
    let log = spec
        .log
        .as_ref()
        .and_then(|l| match crate::message::parse(&l.message) {
            Ok(template) => Some(crate::hot::LogAction {
                names: intern_all(py, template.names()),
                template,
            }),
            Err(e) => {
                err = Some(Status::Error {
                    reason: format!(
                        "message syntax error at column {}: {} (message: {})",
                        e.column, e.message, l.message
                    ),
                });
                None
            }
        });
    if spec.line_number().is_none() {
        err = Some(Status::Error {
            reason: format!("line {} is not a positive line number", spec.line),
        });
    }
    // A logpoint's rate limit is its own (default 100/s), not the snapshots' `limits.rate`.
    let (rate, burst) = match &spec.log {
        Some(l) => (l.rate(), l.rate()),
        None => (limits_spec.rate(), limits_spec.burst()),
    };
    let bp = Arc::new(Bp {
        limits: limits_spec.capture_limits(),
        rate,
        burst,
        bucket: Mutex::new(TokenBucket::new(rate, burst, now_ns())),
        log,
        condition,
        cond_names,
        spec,
        counters: Counters::default(),
        last_condition_error: Mutex::new(None),
        throttled_now: false.into(),
    });
    (bp, err)
}

/// Resolves one breakpoint against the index: (code objects with the line to arm in each,
/// status).
fn resolve_bp(py: Python<'_>, idx: &CodeIndex, bp: &Bp) -> (Vec<(Py<PyAny>, u32)>, Status) {
    let Some(line) = bp.spec.line_number() else {
        return (
            Vec::new(),
            Status::Error {
                reason: "invalid line".into(),
            },
        );
    };
    let file = &bp.spec.file;
    let groups = idx.matching_files(file, &bp.spec.roots);
    if groups.is_empty() {
        if file.starts_with('/') && !std::path::Path::new(file).exists() {
            return (
                Vec::new(),
                Status::Error {
                    reason: format!(
                        "file not found: {file} does not exist and no loaded code comes from it; check the path (absolute paths must be as the process sees them)"
                    ),
                },
            );
        }
        return (
            Vec::new(),
            Status::Pending {
                reason: format!(
                    "no code from {file} is loaded in this process yet; the breakpoint arms when the module is imported"
                ),
            },
        );
    }
    if groups.len() > 1 {
        let cands: Vec<&str> = groups.iter().map(|(k, _)| k.as_str()).collect();
        return (
            Vec::new(),
            Status::Error {
                reason: format!(
                    "ambiguous path {file}: it matches {} files: {}; give more of the path",
                    cands.len(),
                    cands.join(", ")
                ),
            },
        );
    }
    let mut codes = Vec::new();
    let mut all_lines = BTreeSet::new();
    for f in &groups[0].1 {
        let source = resolve::Source::new(f);
        if let Some(entries) = idx.by_file.get(*f) {
            for e in entries {
                if let Some(at) = e.arm_line(py, &source, line) {
                    codes.push((e.code.clone_ref(py), at));
                }
            }
            if codes.is_empty() {
                for e in entries {
                    all_lines.extend(e.breakpoint_lines(py, &source));
                }
            }
        }
    }
    if !codes.is_empty() {
        let n = codes.len();
        return (codes, Status::Armed { code_objects: n });
    }
    let real = groups[0].0.clone();
    if module_level_line(py, &real, line) {
        return (
            Vec::new(),
            Status::Error {
                reason: format!(
                    "line {line} of {real} is module-level code (or a class body, or a decorator of a module-level function or method): it ran when the module was imported and runs again only on reload; put the breakpoint on a line inside a function, or on its `def` line to stop at every call"
                ),
            },
        );
    }
    let below = all_lines.range(..line).next_back();
    let above = all_lines.range(line..).next();
    let near: Vec<String> = [below, above]
        .into_iter()
        .flatten()
        .map(|l| l.to_string())
        .collect();
    (
        Vec::new(),
        Status::Error {
            reason: format!(
                "no code on line {line} of {real}; nearest lines with code: {}",
                if near.is_empty() {
                    "none".into()
                } else {
                    near.join(", ")
                }
            ),
        },
    )
}

/// Whether `line` has instructions in `path`'s module body or class bodies (compiles the source;
/// no execution).
fn module_level_line(py: Python<'_>, path: &str, line: u32) -> bool {
    let Ok(src) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(builtins) = py.import("builtins") else {
        return false;
    };
    match builtins
        .getattr("compile")
        .and_then(|c| c.call1((src, path, "exec")))
    {
        Ok(code) => resolve::runs_once_lines(&code).contains(&line),
        Err(_) => false,
    }
}

/// For each of `names`: whether it is a local, cell or free variable of `code`.
fn is_local_mask(py: Python<'_>, code: &Py<PyAny>, names: &[String]) -> Arc<[bool]> {
    if names.is_empty() {
        return Arc::from(Vec::new());
    }
    let code = code.bind(py);
    let mut locals: Vec<String> = Vec::new();
    for attr in ["co_varnames", "co_cellvars", "co_freevars"] {
        if let Ok(t) = code.getattr(attr)
            && let Ok(v) = t.extract::<Vec<String>>()
        {
            locals.extend(v);
        }
    }
    names.iter().map(|n| locals.contains(n)).collect()
}

fn monitoring<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
    py.import("sys")?.getattr("monitoring")
}

fn line_event(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    monitoring(py)?.getattr("events")?.getattr("LINE")
}

/// A builtin function object wrapping a `METH_FASTCALL` Rust function.
fn make_callback(
    py: Python<'_>,
    name: &'static std::ffi::CStr,
    f: pyo3::ffi::PyCFunctionFast,
) -> PyResult<Py<PyAny>> {
    let def = Box::leak(Box::new(pyo3::ffi::PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: pyo3::ffi::PyMethodDefPointer { PyCFunctionFast: f },
        ml_flags: pyo3::ffi::METH_FASTCALL,
        ml_doc: std::ptr::null(),
    }));
    // SAFETY: `def` is leaked (lives forever) and describes a METH_FASTCALL function.
    let f = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyCFunction_NewEx(def, std::ptr::null_mut(), std::ptr::null_mut()),
        )?
    };
    Ok(f.unbind())
}

/// The LINE callback object (`hot::line_callback`), also the 3.11 patcher's hook.
fn callback(py: Python<'_>, st: &mut State) -> PyResult<Py<PyAny>> {
    if let Some(c) = &st.callback {
        return Ok(c.clone_ref(py));
    }
    let f = make_callback(py, c"libdebugger_line", crate::hot::line_callback)?;
    st.callback = Some(f.clone_ref(py));
    Ok(f)
}

/// The PY_START callback object (`hot::start_callback`, 3.12+).
fn start_callback(py: Python<'_>, st: &mut State) -> PyResult<Py<PyAny>> {
    if let Some(c) = &st.start_callback {
        return Ok(c.clone_ref(py));
    }
    let f = make_callback(py, c"libdebugger_start", crate::hot::start_callback)?;
    st.start_callback = Some(f.clone_ref(py));
    Ok(f)
}

fn event(py: Python<'_>, name: &str) -> PyResult<u64> {
    monitoring(py)?.getattr("events")?.getattr(name)?.extract()
}

/// The entry line of a code object (the line of its first instruction, `RESUME`: a function's
/// `def` line, or its first decorator's) when `lines` contains it and sys.monitoring would not
/// report it once per call by itself: PY_START is then enabled for the code object and reported
/// as a hit on that line, so a breakpoint there fires once per call, at entry (arguments bound),
/// as 3.11's patcher does.
///
/// * 3.12 reports LINE for the first line only when it has instructions beyond the prologue
///   (one-line functions, lambdas, class bodies); a `def` line alone never gets one.
/// * 3.13 reports no LINE for anything on the first line; when the body shares it, a LINE may
///   still follow PY_START in the same frame, which the callback counts once.
fn start_line(py: Python<'_>, code: &Py<PyAny>, lines: &BTreeSet<u32>) -> Option<u32> {
    if py_minor() < 12 {
        return None;
    }
    let code = code.bind(py);
    let first = code
        .call_method0("co_lines")
        .ok()?
        .try_iter()
        .ok()?
        .flatten()
        .find_map(|t| {
            t.extract::<(i64, i64, Option<i64>)>()
                .ok()
                .and_then(|x| x.2)
        })?;
    let first = u32::try_from(first).ok()?;
    if !lines.contains(&first) {
        return None;
    }
    const PROLOGUE: &[&str] = &[
        "RESUME",
        "RETURN_GENERATOR",
        "POP_TOP",
        "COPY_FREE_VARS",
        "MAKE_CELL",
        "NOP",
        "CACHE",
    ];
    let instrs = py
        .import("dis")
        .ok()?
        .call_method1("get_instructions", (code,))
        .ok()?;
    for ins in instrs.try_iter().ok()?.flatten() {
        let line: Option<u32> = ins
            .getattr("positions")
            .and_then(|p| p.getattr("lineno"))
            .and_then(|l| l.extract())
            .ok()
            .flatten();
        let name: String = ins
            .getattr("opname")
            .and_then(|n| n.extract())
            .unwrap_or_default();
        if line == Some(first) && !PROLOGUE.contains(&name.as_str()) {
            // The body shares the first line: 3.12 reports its LINE, 3.13 does not.
            return (py_minor() >= 13).then_some(first);
        }
    }
    Some(first)
}

/// Takes a sys.monitoring tool id nobody holds (5 down to 0) and registers the LINE callback.
fn acquire_tool(py: Python<'_>, st: &mut State) -> Result<u8, String> {
    if let Some(id) = st.tool_id {
        return Ok(id);
    }
    let cb = callback(py, st).map_err(|e| e.to_string())?;
    let mon = monitoring(py).map_err(|e| e.to_string())?;
    for id in (0u8..=5).rev() {
        let free = mon
            .call_method1("get_tool", (id,))
            .map(|t| t.is_none())
            .unwrap_or(false);
        if !free {
            continue;
        }
        if mon
            .call_method1("use_tool_id", (id, "libdebugger"))
            .is_err()
        {
            continue;
        }
        let ev = line_event(py).map_err(|e| e.to_string())?;
        if let Err(e) = mon.call_method1("register_callback", (id, ev, cb.bind(py))) {
            let _ = mon.call_method1("free_tool_id", (id,));
            return Err(e.to_string());
        }
        if py_minor() >= 12 {
            let scb = start_callback(py, st).map_err(|e| e.to_string())?;
            let ev = event(py, "PY_START").map_err(|e| e.to_string())?;
            if let Err(e) = mon.call_method1("register_callback", (id, ev, scb.bind(py))) {
                let _ = mon.call_method1("free_tool_id", (id,));
                return Err(e.to_string());
            }
        }
        if let Ok(d) = mon.getattr("DISABLE") {
            let _ = crate::hot::DISABLE.set(d.as_ptr() as usize);
            std::mem::forget(d);
        }
        st.tool_id = Some(id);
        return Ok(id);
    }
    Err("no free sys.monitoring tool id: all six (0-5) are taken by other tools (debuggers, profilers, coverage); stop one of them".into())
}

fn release_tool(py: Python<'_>, st: &mut State) {
    if let Some(id) = st.tool_id.take()
        && let Ok(mon) = monitoring(py)
    {
        if let Ok(ev) = line_event(py) {
            let _ = mon.call_method1("register_callback", (id, ev, py.None()));
        }
        if py_minor() >= 12
            && let Ok(ev) = event(py, "PY_START")
        {
            let _ = mon.call_method1("register_callback", (id, ev, py.None()));
        }
        let _ = mon.call_method1("free_tool_id", (id,));
    }
}

fn arm_code(
    py: Python<'_>,
    st: &mut State,
    code: &Py<PyAny>,
    lines: &BTreeSet<u32>,
) -> Result<Option<(crate::py311::Swap, Py<PyAny>)>, String> {
    if py_minor() >= 12 {
        let id = st.tool_id.ok_or("no tool id")?;
        let mut ev = event(py, "LINE").map_err(|e| e.to_string())?;
        if start_line(py, code, lines).is_some() {
            ev |= event(py, "PY_START").map_err(|e| e.to_string())?;
        }
        monitoring(py)
            .and_then(|m| m.call_method1("set_local_events", (id, code.bind(py), ev)))
            .map_err(|e| e.to_string())?;
        Ok(None)
    } else if MANUAL_HOOK.load(SeqCst) {
        // Test mode (see `set_manual_hook`): the code stays as it is; the test calls the hook.
        Ok(None)
    } else {
        let cb = callback(py, st).map_err(|e| e.to_string())?;
        let lines: Vec<u32> = lines.iter().copied().collect();
        let new = crate::py311::instrument(py, code.bind(py), &lines, cb.bind(py))
            .map_err(|e| e.to_string())?;
        let swap = crate::py311::swap_in(py, code.bind(py), &new).map_err(|e| e.to_string())?;
        Ok(Some((swap, new.unbind())))
    }
}

/// 3.11 test mode: "arm" without patching, so tests can drive the hit path on 3.11 by calling
/// the hook themselves, exactly as the patched bytecode will (`hook(code, line)`).
static MANUAL_HOOK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Enables the 3.11 test mode and returns the hook (the same callback the patcher inserts).
pub fn set_manual_hook(py: Python<'_>, on: bool) -> PyResult<Py<PyAny>> {
    MANUAL_HOOK.store(on, SeqCst);
    let Some(mut st) = lock_state(py) else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err("busy"));
    };
    callback(py, &mut st)
}

fn disarm(py: Python<'_>, st: &State, a: Armed) {
    if let Some((swap, _instrumented)) = a.swap {
        if let Err(e) = swap.restore(py) {
            // Reported to the agent; never printed into the application's stderr.
            send_json(
                message_kind::STATUS,
                json!({"error": format!("could not restore the original code object: {e}")})
                    .to_string(),
            );
        }
    } else if let Some(id) = st.tool_id {
        let _ = monitoring(py)
            .and_then(|m| m.call_method1("set_local_events", (id, a.code.bind(py), 0)));
    }
}

/// Applies a desired set (control block JSON or `set_breakpoints`). Returns the statuses.
pub fn apply(py: Python<'_>, desired: Desired) -> Result<serde_json::Value, ControlError> {
    apply_inner(py, Some(desired), None)
}

/// After a module executed (import or reload): re-resolve every breakpoint on its file.
pub fn on_module_exec(py: Python<'_>, filename: &str) {
    let _ = apply_inner(py, None, Some(filename));
}

/// Thread currently holding STATE (0 when free), to refuse re-entrant use from the same thread
/// (e.g. an import triggered while the control path runs).
static STATE_OWNER: AtomicU64 = AtomicU64::new(0);

fn thread_key() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as u64 }
}

/// Holds STATE and records the owner thread.
struct StateGuard(parking_lot::MutexGuard<'static, State>);

impl Drop for StateGuard {
    fn drop(&mut self) {
        STATE_OWNER.store(0, SeqCst);
    }
}

impl std::ops::Deref for StateGuard {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0
    }
}

impl std::ops::DerefMut for StateGuard {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.0
    }
}

/// Locks STATE without ever blocking while holding the GIL: the control path calls Python
/// (which may switch threads), so another thread can hold STATE while waiting for the GIL.
/// Returns None on re-entrant use from the thread that holds it.
fn lock_state(py: Python<'_>) -> Option<StateGuard> {
    let me = thread_key();
    loop {
        if let Some(g) = STATE.try_lock() {
            STATE_OWNER.store(me, SeqCst);
            return Some(StateGuard(g));
        }
        if STATE_OWNER.load(SeqCst) == me {
            return None;
        }
        // Wait for the holder without the GIL, then retry with it.
        py.detach(|| drop(STATE.lock()));
    }
}

fn apply_inner(
    py: Python<'_>,
    desired: Option<Desired>,
    module_file: Option<&str>,
) -> Result<serde_json::Value, ControlError> {
    let Some(mut st) = lock_state(py) else {
        return Err(ControlError::Reentrant);
    };
    let mut changed = false;
    if let Some(d) = &desired
        && let Some(s) = &d.settings
        && *s != st.settings
    {
        st.settings = s.clone();
        let mut b = BUDGETS.lock();
        b.process = TokenBucket::new(s.process_rate, s.process_rate.max(1.0), now_ns());
        b.cpu = CpuBudget::new(s.cpu_budget);
        drop(b);
        HOT.lock().redactor = Arc::new(Redactor::new(&s.redact_add, &s.redact_exclude));
        crate::capture::clear_redact_cache();
        crate::output::set_capacity(s.queue_capacity);
    }
    let mut to_resolve: Vec<usize> = Vec::new();
    if let Some(d) = desired {
        let old = std::mem::take(&mut st.bps);
        let mut keep: HashMap<String, Managed> = HashMap::new();
        for m in old {
            if d.breakpoints.iter().any(|s| *s == m.bp.spec) {
                keep.insert(m.bp.spec.id.clone(), m);
            } else {
                changed = true;
            }
        }
        for spec in d.breakpoints {
            if let Some(m) = keep.remove(&spec.id) {
                // Retry anything not armed (pending, no tool id, file not loaded...).
                if !m.permanent_error && !matches!(m.status, Status::Armed { .. }) {
                    to_resolve.push(st.bps.len());
                }
                st.bps.push(m);
                continue;
            }
            changed = true;
            let (bp, err) = new_bp(py, spec);
            let status = err.clone().unwrap_or(Status::Pending {
                reason: "not resolved yet".into(),
            });
            if err.is_none() {
                to_resolve.push(st.bps.len());
            }
            st.bps.push(Managed {
                bp,
                permanent_error: err.is_some(),
                codes: Vec::new(),
                arm_lines: HashMap::new(),
                status,
            });
        }
    }
    if let Some(f) = module_file {
        for (i, m) in st.bps.iter().enumerate() {
            let canon = std::fs::canonicalize(f).ok();
            let canon = canon.as_deref().and_then(|p| p.to_str());
            if !m.permanent_error
                && resolve::path_matches(&m.bp.spec.file, f, canon)
                && resolve::under_roots(&m.bp.spec.roots, f, canon)
            {
                to_resolve.push(i);
            }
        }
    }
    if !to_resolve.is_empty() {
        let idx = resolve::scan(py)?;
        st.last_scan_us = idx.scan_us;
        st.last_scan_objects = idx.objects_scanned;
        // 3.11: functions now run our instrumented copies; a scan finds those, so map them back
        // to the originals the table and the swaps are keyed by.
        let originals: crate::fasthash::FastMap<usize, Py<PyAny>> = st
            .armed
            .values()
            .filter_map(|a| {
                a.swap
                    .as_ref()
                    .map(|(_, new)| (new.as_ptr() as usize, a.code.clone_ref(py)))
            })
            .collect();
        for i in to_resolve {
            let (codes, status) = resolve_bp(py, &idx, &st.bps[i].bp);
            let codes: Vec<(Py<PyAny>, u32)> = codes
                .into_iter()
                .map(|(c, at)| match originals.get(&(c.as_ptr() as usize)) {
                    Some(orig) => (orig.clone_ref(py), at),
                    None => (c, at),
                })
                .collect();
            let m = &mut st.bps[i];
            let bp_line = m.bp.spec.line_number();
            // The scan found every code object that can still run (old versions still referenced
            // after a reload included); anything else is released.
            let mut unique: Vec<Py<PyAny>> = Vec::with_capacity(codes.len());
            m.arm_lines.clear();
            for (c, at) in codes {
                if !unique.iter().any(|x| x.as_ptr() == c.as_ptr()) {
                    if Some(at) != bp_line {
                        m.arm_lines.insert(c.as_ptr() as usize, at);
                    }
                    unique.push(c);
                }
            }
            m.codes = unique;
            m.status = if m.codes.is_empty() {
                status
            } else {
                Status::Armed {
                    code_objects: m.codes.len(),
                }
            };
            changed = true;
        }
    }
    if changed {
        rearm(py, &mut st);
    }
    *WATCHED.lock() = st.bps.iter().map(|m| m.bp.spec.file.clone()).collect();
    let statuses: Vec<serde_json::Value> = st.bps.iter().map(status_json).collect();
    let code_objects: Vec<serde_json::Value> = st
        .bps
        .iter()
        .filter(|m| !m.codes.is_empty())
        .map(|m| {
            let originals: Vec<usize> = m.codes.iter().map(|c| c.as_ptr() as usize).collect();
            // What new frames actually execute: on 3.11 the instrumented copy swapped in for the
            // original (the agent's frame-entry probe counts entries per code object address).
            let running: Vec<usize> = originals
                .iter()
                .map(|addr| {
                    st.armed
                        .get(addr)
                        .and_then(|a| a.swap.as_ref())
                        .map_or(*addr, |(_, copy)| copy.as_ptr() as usize)
                })
                .collect();
            json!({"id": m.bp.spec.id, "code_objects": originals, "running": running})
        })
        .collect();
    let out = json!({"breakpoints": statuses, "scan_us": st.last_scan_us, "scan_objects": st.last_scan_objects});
    if changed {
        send_json(message_kind::STATUS, out.to_string());
        send_json(
            message_kind::CODE_OBJECTS,
            json!({"breakpoints": code_objects}).to_string(),
        );
        wake_output();
    }
    // The import hook last, once the status is on its way: creating its class runs Python
    // code, and in a busy process any stretch of Python code may hand the GIL to the running
    // threads for a while.
    update_finder(py, &mut st);
    drop(st);
    Ok(out)
}

/// Has the helper thread deliver what is queued now rather than after its idle sleep.
fn wake_output() {
    if std::thread::current().name() == Some(HELPER_THREAD) {
        // Our own thread: its next park returns at once. (It never takes the lock `wake`
        // takes, see `output::spawn`.)
        std::thread::current().unpark();
    } else {
        output::wake();
    }
}

/// Recomputes the hot table and the set of armed code objects from the managed breakpoints,
/// arming and disarming the difference.
fn rearm(py: Python<'_>, st: &mut State) {
    // Desired: code ptr → (code, lines).
    let mut want: HashMap<usize, (Py<PyAny>, BTreeSet<u32>)> = HashMap::new();
    let mut table: HashMap<(usize, u32), Vec<Binding>> = HashMap::new();
    for m in &st.bps {
        let Some(line) = m.bp.spec.line_number() else {
            continue;
        };
        for c in &m.codes {
            let key = c.as_ptr() as usize;
            let line = m.arm_lines.get(&key).copied().unwrap_or(line);
            want.entry(key)
                .or_insert_with(|| (c.clone_ref(py), BTreeSet::new()))
                .1
                .insert(line);
            table.entry((key, line)).or_default().push(Binding {
                bp: m.bp.clone(),
                is_local: is_local_mask(
                    py,
                    c,
                    m.bp.condition.as_ref().map(|c| &c.names[..]).unwrap_or(&[]),
                ),
                msg_is_local: is_local_mask(
                    py,
                    c,
                    m.bp.log.as_ref().map(|l| l.template.names()).unwrap_or(&[]),
                ),
            });
        }
    }
    // Tool id (3.12+) when anything is wanted.
    if py_minor() >= 12
        && !want.is_empty()
        && st.tool_id.is_none()
        && let Err(reason) = acquire_tool(py, st)
    {
        for m in &mut st.bps {
            if !m.codes.is_empty() {
                m.codes.clear();
                m.status = Status::Error {
                    reason: reason.clone(),
                };
            }
        }
        HOT.lock().table.clear();
        return;
    }
    // Disarm code objects no longer wanted, or whose line set changed on 3.11: there the
    // original (never a copy: the scan indexes originals only) is instrumented again with the
    // full set of lines after the old copy was restored, so a parent and its nested function
    // can be armed at the same time, in any order, and removing everything puts the identical
    // original code objects back (`tests/python/rearm.py`).
    let current: Vec<usize> = st.armed.keys().copied().collect();
    for k in current {
        let drop_it = match want.get(&k) {
            None => true,
            Some((_, lines)) => {
                py_minor() < 12 && st.armed.get(&k).is_some_and(|a| a.lines != *lines)
            }
        };
        if drop_it && let Some(a) = st.armed.remove(&k) {
            disarm(py, st, a);
        }
    }
    let mut failed: HashMap<usize, String> = HashMap::new();
    for (k, (code, lines)) in want {
        if let Some(a) = st.armed.get(&k) {
            if a.lines != lines && py_minor() >= 12 {
                // The event set may change (PY_START for a first-line breakpoint).
                if let Err(e) = arm_code(py, st, &code, &lines) {
                    failed.insert(k, e);
                }
            }
            if let Some(a) = st.armed.get_mut(&k) {
                a.lines = lines;
            }
            continue;
        }
        match arm_code(py, st, &code, &lines) {
            Ok(swap) => {
                st.armed.insert(k, Armed { code, lines, swap });
            }
            Err(e) => {
                failed.insert(k, e);
            }
        }
    }
    if !failed.is_empty() {
        for m in &mut st.bps {
            m.codes
                .retain(|c| !failed.contains_key(&(c.as_ptr() as usize)));
            if m.codes.is_empty() && matches!(m.status, Status::Armed { .. }) {
                let reason = failed.values().next().cloned().unwrap_or_default();
                m.status = Status::Error {
                    reason: format!("could not arm: {reason}"),
                };
            } else if !m.codes.is_empty() {
                m.status = Status::Armed {
                    code_objects: m.codes.len(),
                };
            }
        }
        for k in failed.keys() {
            table.retain(|(c, _), _| c != k);
        }
    }
    let start_lines: crate::fasthash::FastMap<usize, u32> = st
        .armed
        .iter()
        .filter_map(|(k, a)| start_line(py, &a.code, &a.lines).map(|l| (*k, l)))
        .collect();
    let mut hot = HOT.lock();
    hot.table = table.into_iter().map(|(k, v)| (k, Arc::from(v))).collect();
    hot.start_lines = start_lines;
    drop(hot);
    if py_minor() >= 12 {
        if st.armed.is_empty() {
            release_tool(py, st);
        } else if let Ok(m) = monitoring(py) {
            // Lines disabled earlier (DISABLE) must report again now that the set changed.
            let _ = m.call_method0("restart_events");
        }
    }
}

/// Installs the import finder while some breakpoint exists, removes it otherwise.
fn update_finder(py: Python<'_>, st: &mut State) {
    let want = !st.bps.is_empty();
    match (want, st.finder.is_some()) {
        (true, false) => match crate::importhook::install(py) {
            Ok(f) => st.finder = Some(f),
            Err(_) => st.import_hook_errors += 1,
        },
        (false, true) => {
            if let Some(f) = st.finder.take() {
                crate::importhook::uninstall(py, f.bind(py));
            }
        }
        _ => {}
    }
}

/// Whether an imported file is named by any breakpoint (the finder asks before wrapping).
/// (Reads its own small list, never STATE: an import can happen while STATE is held.)
pub fn wants_file(origin: &str) -> bool {
    let files = WATCHED.lock().clone();
    if files.is_empty() {
        return false;
    }
    let canon = std::fs::canonicalize(origin).ok();
    let canon = canon.as_deref().and_then(|p| p.to_str());
    files
        .iter()
        .any(|f| resolve::path_matches(f, origin, canon))
}

/// Files named by breakpoints, for the import finder; never locked across Python calls.
static WATCHED: LazyLock<Mutex<Vec<String>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// Status of every breakpoint plus process counters.
pub fn status(py: Python<'_>) -> serde_json::Value {
    let Some(st) = lock_state(py) else {
        return json!({"error": "busy"});
    };
    let hook_errors = st.import_hook_errors
        + st.finder
            .as_ref()
            .and_then(|f| f.bind(py).getattr("errors").ok())
            .and_then(|e| e.extract::<u64>().ok())
            .unwrap_or(0);
    json!({
        "breakpoints": st.bps.iter().map(status_json).collect::<Vec<_>>(),
        "process": {
            "tool_id": st.tool_id,
            "armed_code_objects": st.armed.len(),
            "callbacks": PROCESS.callbacks.load(Relaxed),
            "callback_errors": PROCESS.callback_errors.load(Relaxed),
            "dropped": PROCESS.dropped.load(Relaxed),
            "capture_us_total": PROCESS.capture_ns_total.load(Relaxed) / 1000,
            "import_hook_errors": hook_errors,
            "last_scan_us": st.last_scan_us,
            "last_scan_objects": st.last_scan_objects,
            "pid": std::process::id(),
            "helper_thread_alive": output::THREAD_ALIVE.load(std::sync::atomic::Ordering::SeqCst),
        }
    })
}

/// Counters for the periodic STATS message (helper thread; takes the GIL briefly).
pub fn stats_json() -> Option<String> {
    if output::EXITING.load(Relaxed) {
        return None;
    }
    Python::attach(stats_json_locked)
}

fn stats_json_locked(py: Python<'_>) -> Option<String> {
    let st = lock_state(py)?;
    if st.bps.is_empty() {
        return None;
    }
    let v: Vec<serde_json::Value> = st.bps.iter().map(status_json).collect();
    Some(json!({"breakpoints": v, "pid": std::process::id()}).to_string())
}

/// Removes everything: breakpoints, callbacks, tool id, finder.
pub fn shutdown(py: Python<'_>) {
    let _ = apply_inner(
        py,
        Some(Desired {
            breakpoints: Vec::new(),
            settings: None,
            sources: Vec::new(),
        }),
        None,
    );
    let Some(mut st) = lock_state(py) else {
        return;
    };
    release_tool(py, &mut st);
    if let Some(f) = st.finder.take() {
        crate::importhook::uninstall(py, f.bind(py));
    }
    let mut hot = HOT.lock();
    hot.table.clear();
    hot.start_lines.clear();
}

/// In a forked child: fresh budgets and counters; breakpoints stay armed.
pub fn after_fork() {
    let st = match STATE.try_lock() {
        Some(g) => g,
        None => {
            // Held by a thread that does not exist in this child (it was waiting for the GIL
            // inside the control path when the parent forked): release it on its behalf.
            // SAFETY: no thread of this process holds the guard; the child has one thread.
            unsafe { STATE.force_unlock() };
            STATE.lock()
        }
    };
    STATE_OWNER.store(0, SeqCst);
    let settings = st.settings.clone();
    for m in &st.bps {
        m.bp.counters.reset();
        *m.bp.bucket.lock() = TokenBucket::new(m.bp.rate, m.bp.burst, now_ns());
        *m.bp.last_condition_error.lock() = None;
    }
    drop(st);
    let mut b = BUDGETS.lock();
    b.process = TokenBucket::new(
        settings.process_rate,
        settings.process_rate.max(1.0),
        now_ns(),
    );
    b.cpu = CpuBudget::new(settings.cpu_budget);
    drop(b);
    for c in [
        &PROCESS.callbacks,
        &PROCESS.callback_errors,
        &PROCESS.dropped,
        &PROCESS.capture_ns_total,
    ] {
        c.store(0, Relaxed);
    }
    output::after_fork(settings.queue_capacity);
}

/// Queue capacity from the settings.
pub fn queue_capacity(py: Python<'_>) -> usize {
    lock_state(py)
        .map(|s| s.settings.queue_capacity)
        .unwrap_or(256)
}

static LAST_GEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The control block's seqlock generation: 0 before the agent's first write, odd while it
/// writes (or, right after injection, while it prepares the first block: the injector marks it
/// odd before `ldbg_attach`, see [`await_first_control`]).
pub fn control_generation() -> u64 {
    let cb = std::ptr::addr_of!(output::LDBG_CONTROL).cast::<ControlBlock>();
    // SAFETY: `LDBG_CONTROL` is a `#[repr(transparent)]` wrapper of `UnsafeCell<ControlBlock>`,
    // which has the layout of `ControlBlock`; a volatile read of one aligned u64 field of a
    // static that another process writes (torn values are impossible for an aligned u64 on
    // x86-64, and an odd one only means "being written").
    unsafe { std::ptr::read_volatile(&raw const (*cb).generation) }
}

/// Whether the agent has published a control block the helper has not applied yet.
fn control_pending() -> bool {
    let g = control_generation();
    g != 0 && g.is_multiple_of(2) && g != LAST_GEN.load(Relaxed)
}

/// Helper thread: applies a new control block message, if any.
pub fn poll() {
    poll_applied();
}

/// Applies a new control block message, if any; true if one was applied. Its STATUS goes out at
/// once: the helper thread is woken instead of finishing its idle sleep (up to 50 ms).
pub fn poll_applied() -> bool {
    let last = LAST_GEN.load(Relaxed);
    let Some((generation, data)) = output::read_control(last) else {
        return false;
    };
    // The attach thread and the helper thread may both see the first block: one applies it.
    if LAST_GEN
        .compare_exchange(last, generation, SeqCst, SeqCst)
        .is_err()
    {
        return false;
    }
    if output::EXITING.load(Relaxed) {
        return false;
    }
    let parsed: Result<Desired, _> = serde_json::from_slice(&data);
    // Everything with the GIL held: the queue's and the helper thread's locks are only ever
    // taken with it (a fork, which holds the GIL, never finds them locked).
    Python::attach(|py| {
        let result = parsed
            .map_err(|source| ControlError::InvalidJson { source })
            .and_then(|mut d| {
                let questions = std::mem::take(&mut d.sources);
                let applied = apply(py, d);
                crate::sources::answer(py, &questions);
                applied
            });
        if let Err(e) = result {
            send_json(
                message_kind::STATUS,
                json!({"error": e.to_string(), "generation": generation}).to_string(),
            );
        }
        output::write_control_ack(Some(generation));
        wake_output();
    });
    true
}

/// The name `output` gives the helper thread.
const HELPER_THREAD: &str = "ldbg-helper";

/// How long the attach thread waits for the agent's first control block once the injector
/// announced it.
const FIRST_CONTROL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Attach thread, right after `ldbg_attach` (no GIL held): whether the injector announced a
/// first control block (the generation is odd: the agent attaches its `ldbg_emit` probe, then
/// publishes). Read before anything else, so a block published meanwhile is not missed.
pub fn first_control_announced() -> bool {
    let g = control_generation();
    g % 2 == 1 || (g != 0 && g != LAST_GEN.load(Relaxed))
}

/// Attach thread, without the GIL, once [`first_control_announced`]: waits (≤
/// [`FIRST_CONTROL_WAIT`]) until the agent has published the announced block, so that one GIL
/// acquisition both imports the helper and arms. In a busy process each acquisition is a wait
/// for a turn among the running threads (on 3.11 up to a switch interval per busy thread); the
/// agent publishes within milliseconds of the injection (once its `ldbg_emit` probe is attached,
/// which is also what the helper's first messages need).
pub fn wait_first_control_published() {
    let deadline = std::time::Instant::now() + FIRST_CONTROL_WAIT;
    while control_generation() % 2 == 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
}

/// Attach thread, with the GIL (right after the module is initialised): applies the first
/// control block if the agent published it already — arming in the same GIL hold as the import,
/// which in a busy process saves a whole wait for the GIL. Returns true if applied.
pub fn apply_first_control_now() -> bool {
    control_pending() && poll_applied()
}

/// Attach thread, without the GIL: waits (≤ [`FIRST_CONTROL_WAIT`]) for the announced block and
/// applies it. The helper thread's regular poll would also apply it, up to 100 ms later.
pub fn await_first_control() {
    let deadline = std::time::Instant::now() + FIRST_CONTROL_WAIT;
    loop {
        if control_pending() {
            poll_applied();
            return;
        }
        let g = control_generation();
        if (g != 0 && g.is_multiple_of(2)) || std::time::Instant::now() >= deadline {
            return; // applied by the helper thread meanwhile, or the agent never published
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
