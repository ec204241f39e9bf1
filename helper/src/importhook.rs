//! Deferred breakpoints: a `sys.meta_path` finder, placed first, that asks the other finders for
//! the spec and, when the module's file is named by a breakpoint, wraps that spec's loader
//! instance's `exec_module` so the helper re-resolves breakpoints right after the module (or a
//! `importlib.reload` of it) executed. The finder never changes what is imported and swallows
//! (and counts) any failure of its own, so it cannot break an import.
use pyo3::prelude::*;
use pyo3::types::PyDict;

const FINDER_SRC: &str = r#"
import sys as _sys
from _thread import get_ident as _get_ident

class LibdebuggerFinder:
    """libdebugger: re-arms breakpoints when a module they name is imported or reloaded."""

    def __init__(self, wants, on_exec):
        self._wants = wants
        self._on_exec = on_exec
        self._busy = set()
        self.errors = 0

    def find_spec(self, name, path=None, target=None):
        tid = _get_ident()
        if tid in self._busy:
            return None
        self._busy.add(tid)
        try:
            spec = None
            for finder in list(_sys.meta_path):
                if finder is self:
                    continue
                find = getattr(finder, "find_spec", None)
                if find is None:
                    continue
                spec = find(name, path, target)
                if spec is not None:
                    break
            if spec is None:
                return None
            try:
                origin = spec.origin
                loader = spec.loader
                if origin and loader is not None and self._wants(origin):
                    orig = loader.exec_module
                    on_exec = self._on_exec
                    def exec_module(module, _orig=orig, _on=on_exec, _origin=origin):
                        _orig(module)
                        try:
                            _on(_origin)
                        except BaseException:
                            pass
                    loader.exec_module = exec_module
            except BaseException:
                self.errors += 1
            return spec
        except BaseException:
            # Let the regular finders do the import (and raise what they raise).
            self.errors += 1
            return None
        finally:
            self._busy.discard(tid)
"#;

#[pyfunction]
fn _ldbg_wants(origin: &str) -> bool {
    crate::control::wants_file(origin)
}

#[pyfunction]
fn _ldbg_on_exec(py: Python<'_>, origin: &str) {
    crate::control::on_module_exec(py, origin);
}

/// Creates the finder and puts it first on `sys.meta_path`.
pub fn install(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let ns = PyDict::new(py);
    let code = std::ffi::CString::new(FINDER_SRC)?;
    py.run(&code, Some(&ns), Some(&ns))?;
    let cls = ns
        .get_item("LibdebuggerFinder")?
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("finder class missing"))?;
    let wants = wrap_pyfunction!(_ldbg_wants, py)?;
    let on_exec = wrap_pyfunction!(_ldbg_on_exec, py)?;
    let finder = cls.call1((wants, on_exec))?;
    let meta_path = py.import("sys")?.getattr("meta_path")?;
    meta_path.call_method1("insert", (0, &finder))?;
    Ok(finder.unbind())
}

/// Removes the finder from `sys.meta_path`.
pub fn uninstall(py: Python<'_>, finder: &Bound<'_, PyAny>) {
    if let Ok(mp) = py.import("sys").and_then(|s| s.getattr("meta_path")) {
        let _ = mp.call_method1("remove", (finder,));
    }
}
