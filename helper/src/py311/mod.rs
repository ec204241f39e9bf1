//! Python 3.11 arming by bytecode patching. STUB: the real module is written in another branch
//! and replaces this file at merge; these signatures are the interface the rest of the helper
//! calls.
use pyo3::prelude::*;

const NOT_MERGED: &str = "3.11 support not merged yet";

/// Returns a new code object where the first instruction of each listed line is preceded by a
/// call `hook(original_code, line)` whose result is discarded.
pub fn instrument<'py>(
    _py: Python<'py>,
    _code: &Bound<'py, PyAny>,
    _lines: &[u32],
    _hook: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    Err(pyo3::exceptions::PyNotImplementedError::new_err(NOT_MERGED))
}

/// A swap of a code object for its instrumented copy, everywhere it is used.
pub struct Swap {
    _private: (),
}

/// Replaces `old_code` by `new_code` in functions' `__code__` and parents' `co_consts`.
pub fn swap_in(
    _py: Python<'_>,
    _old_code: &Bound<'_, PyAny>,
    _new_code: &Bound<'_, PyAny>,
) -> PyResult<Swap> {
    Err(pyo3::exceptions::PyNotImplementedError::new_err(NOT_MERGED))
}

impl Swap {
    /// Puts the exact originals back.
    pub fn restore(self, _py: Python<'_>) -> PyResult<()> {
        Err(pyo3::exceptions::PyNotImplementedError::new_err(NOT_MERGED))
    }
}
