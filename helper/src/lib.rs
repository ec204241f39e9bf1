//! libdebugger's helper: the part that runs inside the target CPython interpreter.
use pyo3::prelude::*;

pub mod py311;

#[pymodule]
fn libdebugger_helper(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py311::register_test_functions(m)?;
    Ok(())
}
