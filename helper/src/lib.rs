//! libdebugger's helper: the part that runs inside the target CPython interpreter.
//!
//! * `control` applies the desired breakpoint set (from `set_breakpoints()` or the agent's
//!   control block): `resolve` finds the code objects through the garbage collector; arming uses
//!   `sys.monitoring` LINE events on exactly those code objects (3.12+) or the `py311` bytecode
//!   patcher (3.11: frames already running the old code are not affected).
//! * `hot` is the hit path on the application thread: `condition`/`eval` (a side-effect-free
//!   expression subset), `budget` (token buckets, CPU budget), `capture` (values copied into a
//!   `value::Value` tree without running user code, `redact`ed).
//! * `output` is the helper's own thread: encodes snapshots to JSON without the GIL and emits
//!   them through `ldbg_emit` (the eBPF uprobe's target), polls `LDBG_CONTROL`.
//! * `importhook` arms deferred breakpoints when their module is imported or reloaded.
//!
//! Python API (module `libdebugger_helper`): `set_breakpoints(list, settings=None)`,
//! `status()`, `set_sink(callable | None)`, `flush(timeout=5.0)`, `shutdown()`.
//! C API: `ldbg_attach()`, `ldbg_emit(ptr, len)`, `LDBG_CONTROL`.
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

pub mod budget;
pub mod capture;
pub mod condition;
pub mod control;
pub mod eval;
pub mod fasthash;
pub mod ffi;
pub mod hot;
pub mod importhook;
pub mod message;
pub mod output;
pub mod posthog;
pub mod py311;
pub mod redact;
pub mod resolve;
pub mod sources;
pub mod spec;
pub mod types;
pub mod value;

pub use output::{LDBG_CONTROL, ldbg_emit};

/// JSON text → Python object (through the `json` module; only our own data).
fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (v.to_string(),))
}

/// Applies the full desired breakpoint set (a list of dicts: id, file, line, optional condition
/// and limits) as a diff; idempotent. Returns the status of each breakpoint.
#[pyfunction]
#[pyo3(signature = (breakpoints, settings=None))]
fn set_breakpoints<'py>(
    py: Python<'py>,
    breakpoints: &Bound<'py, PyAny>,
    settings: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let json = py.import("json")?;
    let bps: String = json.call_method1("dumps", (breakpoints,))?.extract()?;
    let settings: String = match settings {
        Some(s) => json.call_method1("dumps", (s,))?.extract()?,
        None => "null".into(),
    };
    let text = format!("{{\"breakpoints\":{bps},\"settings\":{settings}}}");
    let desired: spec::Desired = serde_json::from_str(&text).map_err(|e| {
        pyo3::exceptions::PyValueError::new_err(format!("invalid breakpoints: {e}"))
    })?;
    output::ensure_thread(control::queue_capacity(py));
    let out = control::apply(py, desired)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    json_to_py(py, &out["breakpoints"])
}

/// Status and counters of every breakpoint, and process counters.
#[pyfunction]
fn status(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    json_to_py(py, &control::status(py))
}

/// Installs (or with None removes) an in-process sink: `sink(kind, json_text)`, called on the
/// helper's own thread for every message (kinds: hit, status, hello, stats, code_objects).
#[pyfunction]
fn set_sink(sink: Option<Py<PyAny>>) {
    output::set_sink(sink);
}

/// Waits until every message queued so far was delivered. Returns False on timeout.
#[pyfunction]
#[pyo3(signature = (timeout=5.0))]
fn flush(py: Python<'_>, timeout: f64) -> bool {
    let (s, r) = crossbeam_channel::bounded(1);
    let Some(tx) = output::sender() else {
        return false;
    };
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
    py.detach(move || {
        // The queue may be full: wait for room, then for the acknowledgement.
        let sent = tx.send_deadline(output::Msg::Flush(s), deadline).is_ok();
        output::wake();
        sent && r.recv_deadline(deadline).is_ok()
    })
}

/// Removes every breakpoint, callback, tool id and import hook.
#[pyfunction]
fn shutdown(py: Python<'_>) {
    control::shutdown(py);
    // Deliver what is queued, then stop the helper thread (set_breakpoints starts a new one).
    let _ = flush(py, 2.0);
    output::stop_thread();
    output::set_sink(None);
    types::clear();
    hot::clear_code_info();
    capture::clear_redact_cache();
}

/// Tests only (3.11, until the bytecode patcher is merged): breakpoints are recorded without
/// patching, and the returned hook — the very callback the patcher inserts as
/// `hook(code, line)` — is called by the test at the breakpoint line.
#[pyfunction]
#[pyo3(signature = (on=true))]
fn _test_manual_hook(py: Python<'_>, on: bool) -> PyResult<Py<PyAny>> {
    control::set_manual_hook(py, on)
}

/// `os.register_at_fork(after_in_child=...)`: the helper thread does not survive a fork.
#[pyfunction]
fn _after_fork_child() {
    output::PID.store(std::process::id(), SeqCst);
    control::after_fork();
    output::write_control_ack(None);
}

/// `os.register_at_fork(before=...)`: the helper thread exits for the fork (see
/// `output::pause_for_fork`).
#[pyfunction]
fn _before_fork(py: Python<'_>) {
    output::pause_for_fork(py);
}

/// `os.register_at_fork(after_in_parent=...)`: the helper thread starts again.
#[pyfunction]
fn _after_fork_parent() {
    output::resume_after_fork();
}

/// Interpreter exit: the helper thread must stop taking the GIL.
#[pyfunction]
fn _at_exit() {
    output::EXITING.store(true, SeqCst);
}

/// Adds a `#[pyfunction]` to the module under its own name.
///
/// Not `add_function`: that reads the name through PyO3's interned `__name__` and appends it to
/// `__all__` (also interned), and the first use of an interned string releases the GIL and takes
/// it again, which in a busy process is a wait among the running threads (see `clippy.toml`).
macro_rules! add_fn {
    ($m:expr, $f:ident) => {
        $m.setattr(stringify!($f), wrap_pyfunction!($f, $m)?)?
    };
}
pub(crate) use add_fn;

#[pymodule]
fn libdebugger_helper(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_module(m)
}

/// Fills `m` with the helper's Python API and initialises the helper for this process (once):
/// the body of the `libdebugger_helper` module, also used by the `libdebugger` Python package's
/// native module (`python/`), which links this crate.
pub fn init_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    add_fn!(m, set_breakpoints);
    add_fn!(m, status);
    add_fn!(m, set_sink);
    add_fn!(m, flush);
    add_fn!(m, shutdown);
    add_fn!(m, _after_fork_child);
    add_fn!(m, _before_fork);
    add_fn!(m, _after_fork_parent);
    add_fn!(m, _test_manual_hook);
    add_fn!(m, _at_exit);
    py311::register_test_functions(m)?;
    init_process(py, m)?;
    Ok(())
}

static INITIALISED: AtomicBool = AtomicBool::new(false);

fn init_process(py: Python<'_>, m: &Bound<'_, PyModule>) -> PyResult<()> {
    if INITIALISED.swap(true, SeqCst) {
        return Ok(());
    }
    let vi = py.import("sys")?.getattr("version_info")?;
    let (major, minor, micro): (u32, u32, u32) = (
        vi.getattr("major")?.extract()?,
        vi.getattr("minor")?.extract()?,
        vi.getattr("micro")?.extract()?,
    );
    let _ = hot::PY_MINOR.set(minor);
    types::init(py);
    capture::init(py);
    hot::init_main_thread(py);
    output::PID.store(std::process::id(), SeqCst);
    let _ = output::PYTHON_VERSION.set(format!("{major}.{minor}.{micro}"));
    hot::now_ns();
    let os = py.import("os")?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("before", m.getattr("_before_fork")?)?;
    kwargs.set_item("after_in_parent", m.getattr("_after_fork_parent")?)?;
    kwargs.set_item("after_in_child", m.getattr("_after_fork_child")?)?;
    os.call_method("register_at_fork", (), Some(&kwargs))?;
    py.import("atexit")?
        .call_method1("register", (m.getattr("_at_exit")?,))?;
    output::write_control_ack(None);
    output::ensure_thread(control::queue_capacity(py));
    output::send_json(
        libdebugger_common::helper_abi::message_kind::HELLO,
        serde_json::json!({
            "helper_version": env!("CARGO_PKG_VERSION"),
            "abi_version": libdebugger_common::helper_abi::ABI_VERSION,
            "pid": std::process::id(),
            "python_version": format!("{major}.{minor}.{micro}"),
            "gil_wait_us": GIL_WAIT_US.load(SeqCst),
        })
        .to_string(),
    );
    Ok(())
}

static ATTACHED: AtomicBool = AtomicBool::new(false);
/// How long the attach thread waited for the GIL (µs), reported in HELLO.
static GIL_WAIT_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Called by the injector on any thread, without the GIL. Starts (once) a thread that takes the
/// GIL, imports this very file as `libdebugger_helper` (registering it in `sys.modules`, which
/// starts the helper thread and emits HELLO) and returns. If the injector marked the control
/// block "being written" before the call, that thread also applies the agent's first block: in
/// the same GIL hold when it is there already, else as soon as it arrives (≤ 2 s). Returns 0,
/// or -1 if the thread could not be started.
#[unsafe(no_mangle)]
pub extern "C" fn ldbg_attach() -> std::ffi::c_int {
    if ATTACHED.swap(true, SeqCst) {
        return 0;
    }
    let r = std::thread::Builder::new()
        .name("ldbg-attach".into())
        .spawn(|| {
            // SAFETY: Py_IsInitialized has no preconditions.
            if unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
                return;
            }
            // The agent's first control block follows the injection (announced by the injector):
            // wait for it without the GIL, then import and apply it in one GIL hold (or, if it
            // never came, import and apply it as soon as it arrives). One GIL acquisition, not
            // two or the helper thread's later poll: in a busy process each one waits for its
            // turn among the running threads.
            let announced = control::first_control_announced();
            if announced {
                control::wait_first_control_published();
            }
            let called = std::time::Instant::now();
            let applied = Python::attach(|py| {
                GIL_WAIT_US.store(called.elapsed().as_micros() as u64, SeqCst);
                if let Err(e) = import_self(py) {
                    // No queue exists yet: emit directly for the agent.
                    let msg = serde_json::json!({"error": format!("ldbg_attach: importing the helper failed: {e}")});
                    output::emit_chunks(
                        libdebugger_common::helper_abi::message_kind::STATUS,
                        msg.to_string().as_bytes(),
                    );
                    return true;
                }
                control::apply_first_control_now()
            });
            if announced && !applied {
                control::await_first_control();
            }
        });
    match r {
        Ok(_) => 0,
        Err(_) => {
            ATTACHED.store(false, SeqCst);
            -1
        }
    }
}

/// Creates the `libdebugger_helper` module from this library's own module definition and
/// registers it in `sys.modules`.
///
/// Not through `importlib`'s file loaders: the injector loads the helper from a memfd
/// (`/proc/self/fd/<n>`, closed right after `dlopen`), a path no loader recognises and that no
/// longer exists. The definition is what `PyInit_libdebugger_helper` returns (PyO3 uses
/// multi-phase initialisation), turned into a module with the stable-ABI calls CPython's own
/// extension loader uses.
fn import_self(py: Python<'_>) -> PyResult<()> {
    use pyo3::ffi;
    let sys = py.import("sys")?;
    let modules = sys.getattr("modules")?;
    if modules.contains("libdebugger_helper").unwrap_or(false) {
        return Ok(());
    }
    unsafe extern "C" {
        fn PyInit_libdebugger_helper() -> *mut ffi::PyObject;
    }
    // The spec only needs a `name`. A `types.SimpleNamespace` (the type of
    // `sys.implementation`, so no import) rather than `importlib.machinery.ModuleSpec`: that
    // would import a module and run Python code, and in a busy process every stretch of Python
    // code on this thread can cost a whole wait for the GIL among the running threads.
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("name", "libdebugger_helper")?;
    let spec = sys
        .getattr("implementation")?
        .get_type()
        .call((), Some(&kwargs))?;
    // SAFETY: PyInit_libdebugger_helper is this library's own module init function (generated by
    // #[pymodule]); with multi-phase init it returns the PyModuleDef (initialised by
    // PyModuleDef_Init), valid for the life of the library, which is never unloaded.
    let def = unsafe { PyInit_libdebugger_helper() }.cast::<ffi::PyModuleDef>();
    if def.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: def is a valid module definition and spec a live ModuleSpec; the GIL is held.
    let raw = unsafe { ffi::PyModule_FromDefAndSpec2(def, spec.as_ptr(), ffi::PYTHON_ABI_VERSION) };
    // SAFETY: raw is a new reference or NULL with an exception set.
    let module = unsafe { Bound::from_owned_ptr_or_err(py, raw) }?;
    // SAFETY: module was created from def; the GIL is held.
    if unsafe { ffi::PyModule_ExecDef(module.as_ptr(), def) } != 0 {
        return Err(PyErr::fetch(py));
    }
    modules.set_item("libdebugger_helper", &module)?;
    Ok(())
}
