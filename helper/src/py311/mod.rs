//! Breakpoints on CPython 3.11 by rewriting code objects.
//!
//! 3.11 has no `sys.monitoring`, so a breakpoint is armed by building a new code object in which
//! the places where execution enters the breakpoint's line are preceded by a call
//! `hook(original_code, line)` ([`instrument`]), and by putting that code object wherever the
//! original is used ([`swap_in`]): the `__code__` of every function object that has it, and the
//! `co_consts` of the code objects that create such functions (closures made later get the new
//! code too). [`Swap::restore`] puts the identical original objects back.
//!
//! # Where the call goes
//!
//! Exactly where 3.11's own line tracer would report the line: before an instruction of that
//! line reached by falling through from another line, by a jump from another line, by a backward
//! jump (each loop iteration), at the first instruction after `RESUME`, or at an exception
//! handler whose first instruction is on that line (statically: when the protected range holds
//! instructions of another line, since the tracer compares with the line that raised). If the
//! same instruction is also reached by falling through from its own line (the
//! `for` header reached from `GET_ITER`), a `JUMP_FORWARD` lets that path skip the call, and jumps
//! from the same line land after it. So the hook fires as many times as `sys.settrace` reports
//! the line (checked by `tests/python/py311_instrument.py`), including duplicated code (the
//! bottom test of a `while` loop, `finally` bodies on the exception path). A breakpoint on the
//! `def` line (the line of `RESUME`) gets a call right after the prologue, so it fires once per
//! call — for generators and coroutines, at the first resume.
//!
//! Never inserted: before or inside the prologue (`RETURN_GENERATOR`, `MAKE_CELL`,
//! `COPY_FREE_VARS`, `RESUME`), before any later `RESUME` (generators resume right after
//! `YIELD_VALUE`), between `KW_NAMES` and the call that consumes it.
//!
//! For a decorated function, `co_firstlineno` and `RESUME` are on the first decorator's line and
//! the `def` line itself has no instruction in the function's code object.
//!
//! # What is kept exact
//!
//! Jumps are retargeted (with `EXTENDED_ARG` prefixes grown until every argument fits), the
//! exception table is shifted so the inserted call is covered by the same handler as the
//! instruction it precedes, and the location table is rebuilt so every original instruction keeps
//! its exact positions (tracebacks, `frame.f_lineno`); the inserted instructions carry the line
//! they belong to. The hook, the line numbers, [`INSTRUMENTED_MARKER`] and the original code
//! object are appended to `co_consts` ([`instrumented_original`] reads it back); `co_stacksize`
//! grows by 4.
//!
//! # Limits and costs
//!
//! * Frames already executing the old code are not affected (only new calls, and generators or
//!   coroutines created afterwards): a loop that is already running does not hit a breakpoint set
//!   while it runs. This is a 3.11 limitation (3.12+ uses `sys.monitoring`, which does).
//! * Module and class bodies that already ran are never re-run, so their lines cannot fire.
//! * Each armed line costs one call `hook(code, line)` every time it is entered: about 18 ns
//!   plus the hook's own work when the hook is a Python function (3.11 inlines the call), measured
//!   on 3.11.7 and 3.11.2. The rest of the function runs the same instructions as before, and the
//!   new code object is quickened and specialised like any other (checked by the tests).
//! * [`instrument`]: about 5 µs for a small function, 65 µs for a 1,300-code-unit one with all
//!   87 lines armed.
//! * [`swap_in`] and [`Swap::restore`] hold the GIL for one pass over the objects the garbage
//!   collector tracks. For code that nothing live can nest and that creates no functions
//!   (module-level functions and methods without closures) that pass is
//!   `gc.get_referrers(code)`; otherwise (`<locals>` in `co_qualname`, or nested code inside) it
//!   is `gc.get_objects()` plus a walk of every live function's nested code, to find parents and
//!   derived copies. Measured with 760,000 tracked objects and 50,000 functions on the 2-core
//!   test VM (best of 7, 3.11.7 and 3.11.2): 13–35 ms each way for a module-level function —
//!   the cost of `gc.get_referrers` alone, which varied from 12 to 27 ms with the machine's load
//!   — and 25–67 ms for a closure whose 50,000 instances are all swapped. When `gc.freeze()` is
//!   in effect (its permanent generation is invisible to both `gc` calls) the frozen objects are
//!   found by following references instead, which is slower (about 18 ms each way for 22,000
//!   frozen objects).
//! * Swaps can be restored in any order (parents are recomputed from their roots, see
//!   `swap.rs`); once all are restored every function has its identical original code back. To
//!   change the lines of an armed code object, instrument the original again and either restore
//!   then swap in the new copy, or `swap_in(armed_copy, new_copy)` and later restore both.
//! * Live functions hold instrumented and derived copies while armed: map what you find in
//!   `__code__` through [`original_code`] before instrumenting or swapping, and walk nested code
//!   with [`nested_code_objects`] (the copies hold extra code constants that are not nested
//!   code).

mod bytecode;
mod exctable;
mod linetable;
mod swap;
#[cfg(test)]
#[rustfmt::skip]
mod testdata;

use bytecode::{CodeParts, HookConsts, Inserted, JumpKind, OpcodeTable};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

pub use swap::{Swap, original_code, swap_in};

/// Why a code object could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// `co_code` is not valid 3.11 bytecode.
    #[error("malformed co_code at code unit {offset}: {reason}")]
    Code {
        /// Code unit where the problem was found.
        offset: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// `co_linetable` is not a valid 3.11 location table.
    #[error("malformed co_linetable at byte {offset}: {reason}")]
    LineTable {
        /// Byte of the table where the problem was found.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// `co_linetable` and `co_code` disagree on the code's length.
    #[error("co_linetable covers {table_units} code units but co_code has {code_units}")]
    LineTableLength {
        /// Units described by the location table.
        table_units: usize,
        /// Units in `co_code`.
        code_units: usize,
    },
    /// `co_exceptiontable` is not a valid 3.11 exception table.
    #[error("malformed co_exceptiontable at byte {offset}: {reason}")]
    ExceptionTable {
        /// Byte of the table where the problem was found.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A bug in the rewriter itself.
    #[error("internal error in the 3.11 bytecode rewriter: {what}")]
    Internal {
        /// What went wrong.
        what: &'static str,
    },
}

impl From<RewriteError> for PyErr {
    fn from(e: RewriteError) -> Self {
        PyValueError::new_err(format!(
            "libdebugger cannot set a breakpoint in this code object: {e}"
        ))
    }
}

/// Fails unless the running interpreter is CPython 3.11 (the only one whose bytecode this module
/// understands).
fn require_311(py: Python<'_>) -> PyResult<()> {
    let v = py.version_info();
    if (v.major, v.minor) == (3, 11) {
        Ok(())
    } else {
        Err(PyRuntimeError::new_err(format!(
            "libdebugger's bytecode patching is only for CPython 3.11 (this is {}.{}); 3.12+ uses sys.monitoring",
            v.major, v.minor
        )))
    }
}

/// The running interpreter's opcode metadata, read once.
///
/// Not a `PyOnceLock`: its first initialisation releases the GIL and takes it again, which in a
/// busy process is a wait among the running threads (tens of ms on 3.11) in the middle of
/// arming. Two threads racing here both compute the table; the first stored wins.
fn opcode_table(py: Python<'_>) -> PyResult<&'static OpcodeTable> {
    static TABLE: std::sync::OnceLock<OpcodeTable> = std::sync::OnceLock::new();
    if let Some(t) = TABLE.get() {
        return Ok(t);
    }
    let t = read_opcode_table(py)?;
    Ok(TABLE.get_or_init(|| t))
}

fn read_opcode_table(py: Python<'_>) -> PyResult<OpcodeTable> {
    // Importing `opcode` runs the import system's Python code on this thread, and in a busy
    // process every bytecode boundary can hand the GIL to the application's threads (each
    // hand-over costs up to a switch interval per busy thread). Every 3.11 final release has the same table
    // (checked against the interpreters here by `builtin_table_is_the_interpreters`): use it
    // unless the interpreter's own `opcode` module is loaded already or this is a pre-release.
    let loaded = py
        .import("sys")?
        .getattr("modules")?
        .cast_into::<PyDict>()?
        .get_item("opcode")?;
    let final_release = py.version_info().suffix.is_none();
    let Some(opcode) = loaded.filter(|m| !m.is_none()) else {
        if final_release {
            return Ok(OpcodeTable::cpython_3_11());
        }
        return read_opcode_module(&py.import("opcode")?);
    };
    read_opcode_module(opcode.cast::<PyModule>()?)
}

/// The opcode table as `opcode` (the interpreter's module) describes it.
fn read_opcode_module(opcode: &Bound<'_, PyModule>) -> PyResult<OpcodeTable> {
    let opmap = opcode.getattr("opmap")?.cast_into::<PyDict>()?;
    let op = |name: &str| -> PyResult<u8> {
        opmap
            .get_item(name)?
            .ok_or_else(|| PyRuntimeError::new_err(format!("opcode.opmap has no {name}")))?
            .extract::<u8>()
    };
    // Every field is overwritten below with what this interpreter says.
    let mut table = OpcodeTable::cpython_3_11();
    table.caches = [0; 256];
    for (i, n) in opcode
        .getattr("_inline_cache_entries")?
        .extract::<Vec<u8>>()?
        .into_iter()
        .enumerate()
        .take(256)
    {
        table.caches[i] = n;
    }
    let opname: Vec<String> = opcode.getattr("opname")?.extract()?;
    table.jump = [JumpKind::None; 256];
    for o in opcode.getattr("hasjrel")?.extract::<Vec<u8>>()? {
        let backward = opname
            .get(usize::from(o))
            .is_some_and(|n| n.contains("BACKWARD"));
        table.jump[usize::from(o)] = if backward {
            JumpKind::Backward
        } else {
            JumpKind::Forward
        };
    }
    for o in opcode.getattr("hasjabs")?.extract::<Vec<u8>>()? {
        table.jump[usize::from(o)] = JumpKind::Absolute;
    }
    table.no_fallthrough = [false; 256];
    for name in [
        "JUMP_FORWARD",
        "JUMP_BACKWARD",
        "JUMP_BACKWARD_NO_INTERRUPT",
        "RETURN_VALUE",
        "RAISE_VARARGS",
        "RERAISE",
    ] {
        table.no_fallthrough[usize::from(op(name)?)] = true;
    }
    table.extended_arg = op("EXTENDED_ARG")?;
    table.resume = op("RESUME")?;
    table.push_null = op("PUSH_NULL")?;
    table.load_const = op("LOAD_CONST")?;
    table.precall = op("PRECALL")?;
    table.call = op("CALL")?;
    table.pop_top = op("POP_TOP")?;
    table.jump_forward = op("JUMP_FORWARD")?;
    table.send = op("SEND")?;
    table.kw_names = op("KW_NAMES")?;
    table.make_function = op("MAKE_FUNCTION")?;
    Ok(table)
}

/// `types.CodeType`, checked by exact type (no user code runs).
fn require_code(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
    let code_type = py.import("types")?.getattr("CodeType")?;
    if obj.get_type().is(&code_type) {
        Ok(())
    } else {
        Err(PyTypeError::new_err(format!(
            "expected a code object, got {}",
            obj.get_type().name()?
        )))
    }
}

/// Second-to-last constant of an instrumented copy; the last one is the original code object.
pub const INSTRUMENTED_MARKER: &str = "libdebugger:py311:instrumented";

/// The original of a code object made by [`instrument`], or `None` for any other code object.
pub fn instrumented_original<'py>(code: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let consts = code.getattr("co_consts")?.cast_into::<PyTuple>()?;
    let n = consts.len();
    if n < 2 {
        return Ok(None);
    }
    let marker = consts.get_item(n - 2)?;
    // Exact str only: never compares through a user-defined __eq__.
    let is_marker = marker.is_exact_instance_of::<PyString>()
        && marker.cast::<PyString>()?.to_cow()? == INSTRUMENTED_MARKER;
    is_marker.then(|| consts.get_item(n - 1)).transpose()
}

/// Returns a new code object equal to `code` except that the first instruction of each line in
/// `lines` is preceded by a call `hook(code, line)` whose result is discarded, where `code` is the
/// ORIGINAL code object (a constant in the new one) and `line` an int.
///
/// "The first instruction of a line" is every place where 3.11's line tracer would report that
/// line (see the module documentation). Lines with no code are ignored. Instrument the ORIGINAL
/// code object with the full set of lines each time (not an already instrumented copy).
///
/// The hook must not raise: an exception from it propagates into the application at that line
/// (through the application's own `except` blocks). It becomes a constant of the new code object,
/// so it must be hashable if anything hashes code objects (`hash(code)` hashes `co_consts`).
pub fn instrument<'py>(
    py: Python<'py>,
    code: &Bound<'py, PyAny>,
    lines: &[u32],
    hook: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    instrument_detailed(py, code, lines, hook).map(|(c, _)| c)
}

/// The code objects of the functions `code` creates (nested functions, lambdas, comprehensions,
/// class bodies): its constants loaded by `LOAD_CONST` right before `MAKE_FUNCTION`.
///
/// Use this rather than "every code object in `co_consts`" when walking nested code on 3.11: an
/// instrumented copy also holds the ORIGINAL code object as a constant (the hook's first
/// argument), which is not nested code and must not be instrumented again.
pub fn nested_code_objects<'py>(
    py: Python<'py>,
    code: &Bound<'py, PyAny>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    require_311(py)?;
    require_code(py, code)?;
    let ops = opcode_table(py)?;
    let consts = code.getattr("co_consts")?.cast_into::<PyTuple>()?;
    swap::function_const_indices(code, ops)?
        .into_iter()
        .map(|i| consts.get_item(i))
        .collect()
}

/// [`instrument`], also returning where the calls went.
fn instrument_detailed<'py>(
    py: Python<'py>,
    code: &Bound<'py, PyAny>,
    lines: &[u32],
    hook: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Vec<Inserted>)> {
    require_311(py)?;
    require_code(py, code)?;
    let ops = opcode_table(py)?;
    let co_code = code.getattr("co_code")?.cast_into::<PyBytes>()?;
    let linetable = code.getattr("co_linetable")?.cast_into::<PyBytes>()?;
    let exceptiontable = code.getattr("co_exceptiontable")?.cast_into::<PyBytes>()?;
    let firstlineno: i32 = code.getattr("co_firstlineno")?.extract()?;
    let stacksize: u32 = code.getattr("co_stacksize")?.extract()?;
    let consts = code.getattr("co_consts")?.cast_into::<PyTuple>()?;

    let mut wanted: Vec<u32> = lines.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let base = u32::try_from(consts.len())
        .map_err(|_| PyValueError::new_err("co_consts is too large to add constants to"))?;
    // New constants: hook, the line numbers, INSTRUMENTED_MARKER, the original code object
    // (last, so that `instrumented_original` finds it).
    let n_lines = wanted.len() as u32;
    let hook_consts = HookConsts {
        hook: base,
        code: base + 2 + n_lines,
        lines: wanted
            .iter()
            .enumerate()
            .map(|(i, &l)| (l, base + 1 + i as u32))
            .collect(),
    };
    let rewritten = bytecode::instrument(
        CodeParts {
            code: co_code.as_bytes(),
            linetable: linetable.as_bytes(),
            exceptiontable: exceptiontable.as_bytes(),
            firstlineno,
        },
        ops,
        &hook_consts,
    )?;

    let mut new_consts: Vec<Bound<'py, PyAny>> = consts.iter().collect();
    new_consts.push(hook.clone());
    for &l in &wanted {
        new_consts.push(l.into_pyobject(py)?.into_any());
    }
    new_consts.push(PyString::new(py, INSTRUMENTED_MARKER).into_any());
    new_consts.push(code.clone());
    let kwargs = PyDict::new(py);
    kwargs.set_item("co_code", PyBytes::new(py, &rewritten.code))?;
    kwargs.set_item("co_consts", PyTuple::new(py, new_consts)?)?;
    kwargs.set_item("co_linetable", PyBytes::new(py, &rewritten.linetable))?;
    kwargs.set_item(
        "co_exceptiontable",
        PyBytes::new(py, &rewritten.exceptiontable),
    )?;
    kwargs.set_item("co_stacksize", stacksize + rewritten.extra_stack)?;
    let new_code = code.call_method("replace", (), Some(&kwargs))?;
    Ok((new_code, rewritten.inserted))
}

/// Checks the codecs on a real code object: decoding then encoding the location and exception
/// tables, and instrumenting no line, must give back the exact bytes. Used by the tests.
fn round_trips(py: Python<'_>, code: &Bound<'_, PyAny>) -> PyResult<bool> {
    require_code(py, code)?;
    let ops = opcode_table(py)?;
    let get = |name: &str| -> PyResult<Vec<u8>> {
        Ok(code
            .getattr(name)?
            .cast_into::<PyBytes>()?
            .as_bytes()
            .to_vec())
    };
    let co_code = get("co_code")?;
    let lt = get("co_linetable")?;
    let et = get("co_exceptiontable")?;
    let firstlineno: i32 = code.getattr("co_firstlineno")?.extract()?;
    let out = bytecode::instrument(
        CodeParts {
            code: &co_code,
            linetable: &lt,
            exceptiontable: &et,
            firstlineno,
        },
        ops,
        &HookConsts {
            hook: 0,
            code: 0,
            lines: Vec::new(),
        },
    )?;
    Ok(out.code == co_code && out.linetable == lt && out.exceptiontable == et)
}

/// A swap handed to Python by the private test functions.
#[pyclass(name = "Py311Swap", module = "libdebugger_helper")]
struct PySwap {
    inner: Option<Swap>,
}

#[pymethods]
impl PySwap {
    /// Puts the original code objects back; a second call does nothing.
    /// Whether some live function got the new code (see `Swap::is_effective`).
    #[getter]
    fn effective(&self) -> bool {
        self.inner.as_ref().is_some_and(Swap::is_effective)
    }

    fn restore(&mut self, py: Python<'_>) -> PyResult<()> {
        match self.inner.take() {
            Some(s) => s.restore(py),
            None => Ok(()),
        }
    }
}

/// `_py311_instrument(code, lines, hook) -> (new_code, [(line, offset_in_bytes, skip_jump)])`.
#[pyfunction]
fn _py311_instrument<'py>(
    py: Python<'py>,
    code: &Bound<'py, PyAny>,
    lines: Vec<u32>,
    hook: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyList>)> {
    let (new_code, inserted) = instrument_detailed(py, code, &lines, hook)?;
    let list = PyList::empty(py);
    for i in inserted {
        list.append((i.line, i.offset * 2, i.skip_jump))?;
    }
    Ok((new_code, list))
}

/// `_py311_swap(old_code, new_code) -> Py311Swap` (call `.restore()` on it).
#[pyfunction]
fn _py311_swap(
    py: Python<'_>,
    old_code: &Bound<'_, PyAny>,
    new_code: &Bound<'_, PyAny>,
) -> PyResult<PySwap> {
    Ok(PySwap {
        inner: Some(swap_in(py, old_code, new_code)?),
    })
}

/// `_py311_nested_code_objects(code) -> [code]`.
#[pyfunction]
fn _py311_nested_code_objects<'py>(
    py: Python<'py>,
    code: &Bound<'py, PyAny>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    nested_code_objects(py, code)
}

/// `_py311_original_code(code) -> code`.
#[pyfunction]
fn _py311_original_code<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    original_code(code)
}

/// `_py311_round_trips(code) -> bool`.
#[pyfunction]
fn _py311_round_trips(py: Python<'_>, code: &Bound<'_, PyAny>) -> PyResult<bool> {
    round_trips(py, code)
}

/// Adds the private test-only functions `_py311_instrument`, `_py311_swap`,
/// `_py311_round_trips`, `_py311_nested_code_objects` and `_py311_original_code` to the helper
/// module.
pub fn register_test_functions(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // `Py311Swap` is not added to the module: its type is created when `_py311_swap` first
    // returns one (tests only), not at every injection.
    crate::add_fn!(m, _py311_instrument);
    crate::add_fn!(m, _py311_swap);
    crate::add_fn!(m, _py311_round_trips);
    crate::add_fn!(m, _py311_nested_code_objects);
    crate::add_fn!(m, _py311_original_code);
    Ok(())
}
