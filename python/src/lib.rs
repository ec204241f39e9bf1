//! `libdebugger._native`: the native module of the `libdebugger` Python package.
//!
//! It is the helper (`helper/`, linked in: the same arming, capture, conditions, redaction and
//! budgets the agent injects) plus what the agent does around it, taken from the agent's own
//! library so that both behave alike:
//!
//! * [`source`]: where breakpoints come from, on a thread of its own: PostHog's Live Debugger
//!   API through the agent's poller, or a breakpoints file through the agent's file watcher.
//! * [`hit_event`]: the `$data_breakpoint_hit` event the agent would send for a helper hit
//!   message (the agent's `Event::hit_from_json` and `fit_event`).
//! * [`marker`]: `LDBG_INPROCESS`, which tells a host agent that this process is debugged in
//!   process (see `common/src/inprocess.rs`).
//!
//! The Python layer (`libdebugger/__init__.py`) holds the API: `LiveDebuggerManager`,
//! `Breakpoint`.
use libdebugger_agent::breakpoints::DesiredSet;
use libdebugger_agent::daemon::{HelperSettings, control_json};
use libdebugger_agent::delivery::Event;
use libdebugger_agent::delivery::event::{MAX_EVENT_BYTES, fit_event};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

pub mod marker;
pub mod source;

/// Adds a `#[pyfunction]` to the module under its own name (not `add_function`, which interns
/// strings: see `clippy.toml`).
macro_rules! add_fn {
    ($m:expr, $f:path, $name:literal) => {
        $m.setattr($name, wrap_pyfunction!($f, $m)?)?
    };
}

/// The event (JSON text: `event`, `distinct_id`, `uuid`, `timestamp`, `properties`) the agent
/// builds for the helper's hit `message`, with `$hostname` as the agent adds it, cut to the
/// agent's event size limit.
#[pyfunction]
fn hit_event(message: &str, distinct_id: &str) -> PyResult<String> {
    let ext = [(
        "$hostname".to_string(),
        serde_json::Value::String(libdebugger_agent::posthog::config::hostname()),
    )];
    let mut ev = Event::hit_from_json(distinct_id, message.as_bytes(), ext)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let bytes = fit_event(&mut ev, MAX_EVENT_BYTES).map_err(|e| {
        PyValueError::new_err(format!(
            "the hit event is {} bytes even after truncation (limit {})",
            e.bytes, e.limit
        ))
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The distinct id the agent gives its events on this host: `libdebugger-<hostname>`.
#[pyfunction]
fn default_distinct_id() -> String {
    format!(
        "libdebugger-{}",
        libdebugger_agent::posthog::config::hostname()
    )
}

/// The control JSON (`{"breakpoints": [...], "settings": ...}`, the helper's shape) of a set, as
/// the agent writes it for its helper.
pub fn helper_json(set: &DesiredSet) -> String {
    String::from_utf8_lossy(&control_json(set, &HelperSettings::default())).into_owned()
}

/// Reads a breakpoints file (TOML, or PostHog's JSON answer) as the agent does; returns the
/// helper's control JSON. Raises ValueError with the agent's message when it is not valid.
#[pyfunction]
fn load_breakpoints_file(path: &str) -> PyResult<String> {
    libdebugger_agent::breakpoints::file::load_file(std::path::Path::new(path))
        .map(|set| helper_json(&set))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // set_breakpoints, status, set_sink, flush, shutdown, and the helper's fork hooks.
    libdebugger_helper::init_module(m)?;
    add_fn!(m, hit_event, "hit_event");
    add_fn!(m, default_distinct_id, "default_distinct_id");
    add_fn!(m, load_breakpoints_file, "load_breakpoints_file");
    add_fn!(m, source::start_posthog, "start_posthog");
    add_fn!(m, source::start_file, "start_file");
    add_fn!(m, source::stop_source, "stop_source");
    add_fn!(m, source::source_status, "source_status");
    add_fn!(
        m,
        source::source_after_fork_child,
        "_source_after_fork_child"
    );
    add_fn!(m, marker::set_active, "set_active");
    add_fn!(m, marker::is_active, "is_active");
    m.setattr("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
