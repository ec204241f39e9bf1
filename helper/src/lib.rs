//! libdebugger's helper: the part that runs inside the target CPython interpreter.
use pyo3::prelude::*;

#[pymodule]
fn libdebugger_helper(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
