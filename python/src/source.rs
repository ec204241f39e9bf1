//! Where the in-process debugger's breakpoints come from: PostHog's Live Debugger API (the
//! agent's [`Poller`]: first fetch at once, paging, backoff, `Retry-After`, the agent's handling
//! of bad answers) or a breakpoints file (the agent's [`watch_file`]: re-read on every change,
//! the last good set kept on a bad edit).
//!
//! One source at a time runs on its own thread ("ldbg-source", a single-threaded tokio
//! runtime). Whenever its set changes it calls `on_change(control_json)` with the helper's
//! control JSON (as the agent writes it for its helper); whenever its health changes it calls
//! `on_status(status_json)`. Both run with the GIL, on that thread.
use crate::helper_json;
use libdebugger_agent::breakpoints::DesiredSet;
use libdebugger_agent::breakpoints::file::{FileStatus, watch_file};
use libdebugger_agent::posthog::config::{Secret, hosts};
use libdebugger_agent::posthog::{Poller, PollerConfig, PollerStatus, ProjectId};
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{oneshot, watch};

/// What a source thread reads.
enum Spec {
    Posthog(PollerConfig),
    File(PathBuf),
}

/// The running source: its stop signal and thread. Taken only with the GIL held (so a fork,
/// which holds the GIL, never finds it locked).
struct Running {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

static RUNNING: Mutex<Option<Running>> = Mutex::new(None);
/// The source's last health report (JSON), written with the GIL held.
static STATUS: Mutex<Option<Value>> = Mutex::new(None);

/// How long `stop_source` waits for the source thread to end.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts polling PostHog's active-breakpoints endpoint of the project the project key
/// `api_key` belongs to (`@current?token=…`, as the agent does), on the REST host that goes
/// with `host` (the client's host: `https://us.i.posthog.com` polls `https://us.posthog.com`).
/// Returns the endpoint polled. Replaces a running source.
#[pyfunction]
#[pyo3(signature = (host, personal_api_key, api_key, interval, on_change, on_status))]
pub fn start_posthog(
    py: Python<'_>,
    host: Option<String>,
    personal_api_key: String,
    api_key: String,
    interval: f64,
    on_change: Py<PyAny>,
    on_status: Py<PyAny>,
) -> PyResult<String> {
    if !(interval.is_finite() && interval > 0.0) {
        return Err(PyValueError::new_err(format!(
            "poll_interval must be a positive number of seconds, not {interval}"
        )));
    }
    let (api_host, _ingest) =
        hosts(host.as_deref(), None, None).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let interval = Duration::from_secs_f64(interval);
    let cfg = PollerConfig {
        api_host,
        personal_api_key: Secret::new(personal_api_key),
        api_key: Secret::new(api_key),
        project_id: ProjectId::Current,
        interval,
        max_backoff: Duration::from_secs(300).max(interval),
        request_timeout: Duration::from_secs(10),
    };
    let endpoint = cfg.endpoint();
    start(py, Spec::Posthog(cfg), on_change, on_status)?;
    Ok(endpoint)
}

/// Starts watching a breakpoints file (TOML, or PostHog's JSON answer). The first load must
/// succeed: a bad file raises ValueError here. Replaces a running source.
#[pyfunction]
pub fn start_file(
    py: Python<'_>,
    path: PathBuf,
    on_change: Py<PyAny>,
    on_status: Py<PyAny>,
) -> PyResult<()> {
    libdebugger_agent::breakpoints::file::load_file(&path)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let ready = start(py, Spec::File(path), on_change, on_status)?;
    // Return once the file is watched, so that an edit right after start() is seen.
    py.detach(move || {
        let _ = ready.recv_timeout(READY_TIMEOUT);
    });
    Ok(())
}

/// How long `start_file` waits for the watch to be in place.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the source thread; the returned channel receives one message once the source runs.
fn start(
    py: Python<'_>,
    spec: Spec,
    on_change: Py<PyAny>,
    on_status: Py<PyAny>,
) -> PyResult<std::sync::mpsc::Receiver<()>> {
    stop_source(py);
    *STATUS.lock() = None;
    let (stop, stop_rx) = oneshot::channel();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("ldbg-source".into())
        .spawn(move || run(spec, stop_rx, ready_tx, on_change, on_status))
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the source thread: {e}")))?;
    *RUNNING.lock() = Some(Running { stop, thread });
    Ok(ready)
}

/// Stops the running source (if any) and waits up to 2 s for its thread, without the GIL.
#[pyfunction]
pub fn stop_source(py: Python<'_>) {
    let Some(r) = RUNNING.lock().take() else {
        return;
    };
    let _ = r.stop.send(());
    let thread = r.thread;
    if thread.thread().id() == std::thread::current().id() {
        return; // stopped from a callback on the source thread itself: it ends on return
    }
    py.detach(move || {
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    });
}

/// The source's last health report (JSON text), or None before the first one.
#[pyfunction]
pub fn source_status() -> Option<String> {
    STATUS.lock().as_ref().map(Value::to_string)
}

/// `os.register_at_fork(after_in_child=...)`: the source thread does not exist in a child;
/// forget it (never drop: its state belongs to the parent). The Python layer starts a new one.
#[pyfunction]
pub fn source_after_fork_child() {
    if let Some(r) = RUNNING.lock().take() {
        std::mem::forget(r);
    }
}

/// Whether Python may be entered from this thread: not during or after interpreter exit.
fn python_usable() -> bool {
    // SAFETY: Py_IsInitialized has no preconditions.
    !libdebugger_helper::output::EXITING.load(SeqCst)
        && unsafe { pyo3::ffi::Py_IsInitialized() } != 0
}

/// Calls `f(arg)` with the GIL; a failing callback is printed, never propagated.
fn call(f: &Py<PyAny>, arg: String) {
    if !python_usable() {
        return;
    }
    Python::attach(|py| {
        if let Err(e) = f.call1(py, (arg,)) {
            e.print(py);
        }
    });
}

fn report(on_status: &Py<PyAny>, status: Value) {
    if !python_usable() {
        return;
    }
    let text = status.to_string();
    Python::attach(|_py| *STATUS.lock() = Some(status));
    call(on_status, text);
}

fn unix_secs(t: Option<SystemTime>) -> Value {
    t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

fn posthog_status(endpoint: &str, s: &PollerStatus) -> Value {
    json!({
        "source": "posthog",
        "endpoint": endpoint,
        "fetches": s.fetches,
        "failures": s.failures,
        "consecutive_failures": s.consecutive_failures,
        "last_success": unix_secs(s.last_success),
        "last_error": s.last_error,
        "auth_error": s.auth_error,
    })
}

fn file_status(path: &std::path::Path, s: &FileStatus) -> Value {
    json!({
        "source": "file",
        "path": path.display().to_string(),
        "loads": s.loads,
        "last_error": s.last_error,
    })
}

/// Forwards every change of `desired` and `status` until `stop` fires or the source ends.
async fn forward<S: Clone>(
    mut desired: watch::Receiver<DesiredSet>,
    mut status: watch::Receiver<S>,
    stop: &mut oneshot::Receiver<()>,
    on_change: &Py<PyAny>,
    on_status: &Py<PyAny>,
    describe: impl Fn(&S) -> Value,
) {
    // The file's first set is there at once; PostHog's arrives with the first fetch.
    let first = desired.borrow_and_update().clone();
    if !first.is_empty() {
        call(on_change, helper_json(&first));
    }
    let s = status.borrow_and_update().clone();
    report(on_status, describe(&s));
    loop {
        tokio::select! {
            _ = &mut *stop => return,
            r = desired.changed() => {
                if r.is_err() {
                    return;
                }
                let set = desired.borrow_and_update().clone();
                call(on_change, helper_json(&set));
            }
            r = status.changed() => {
                if r.is_err() {
                    return;
                }
                let s = status.borrow_and_update().clone();
                report(on_status, describe(&s));
            }
        }
    }
}

fn run(
    spec: Spec,
    mut stop: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<()>,
    on_change: Py<PyAny>,
    on_status: Py<PyAny>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report(
                &on_status,
                json!({"last_error": format!("cannot start the source's runtime: {e}")}),
            );
            return;
        }
    };
    rt.block_on(async {
        match spec {
            Spec::Posthog(cfg) => {
                let endpoint = cfg.endpoint();
                let poller = match Poller::start(cfg) {
                    Ok(p) => p,
                    Err(e) => {
                        report(
                            &on_status,
                            json!({"source": "posthog", "endpoint": endpoint, "last_error": e.to_string()}),
                        );
                        return;
                    }
                };
                let _ = ready.send(());
                let (desired, status) = (poller.desired.clone(), poller.status.clone());
                forward(desired, status, &mut stop, &on_change, &on_status, |s| {
                    posthog_status(&endpoint, s)
                })
                .await;
            }
            Spec::File(path) => {
                let fw = match watch_file(&path) {
                    Ok(w) => w,
                    Err(e) => {
                        report(
                            &on_status,
                            json!({"source": "file", "path": path.display().to_string(), "last_error": e.to_string()}),
                        );
                        return;
                    }
                };
                let _ = ready.send(());
                let (desired, status) = (fw.desired.clone(), fw.status.clone());
                forward(desired, status, &mut stop, &on_change, &on_status, |s| {
                    file_status(&path, s)
                })
                .await;
            }
        }
    });
    // In-flight requests and their resolver threads are not waited for.
    rt.shutdown_background();
}
