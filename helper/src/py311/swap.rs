//! Putting a rewritten code object in place of the original wherever it is used, and back.
//!
//! "Used" means: the `__code__` of a function object (found among the objects the garbage
//! collector tracks, so decorators, `functools.wraps`, bound methods, `staticmethod` and
//! `classmethod` wrappers, closures — anything that holds the function — are covered without
//! knowing attribute names), and a `LOAD_CONST` feeding `MAKE_FUNCTION` in the code object that
//! creates such functions (so closures created later get the new code). A parent code object is
//! itself replaced by a copy with the new constant, swapped in the same way, recursively.
//! Code objects are not tracked by the garbage collector, so parents are found by walking the
//! nested code constants of every live function's code.

use super::bytecode::{OpcodeTable, decode_instructions};
use super::{opcode_table, require_311, require_code};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::collections::{HashMap, HashSet};

/// A swap in effect: [`Swap::restore`] puts the exact original objects back. Dropping it without
/// calling `restore` leaves the new code in place for good.
#[derive(Debug)]
#[must_use = "dropping a Swap leaves the instrumented code in place; call restore()"]
pub struct Swap {
    old: Py<PyAny>,
    new: Py<PyAny>,
    /// Parent code objects swapped for copies that create functions with the new code.
    parents: Vec<Swap>,
    /// Whether some live function got the new code, directly or through a parent.
    used: bool,
}

/// The function objects an operation works on, and the nesting of their code objects.
struct Heap<'py> {
    functions: Vec<Bound<'py, PyAny>>,
    /// Code object (by address) -> the code objects whose `co_consts` hold it, with the index.
    /// Empty for [`Heap::referrers_of`].
    parents: HashMap<usize, Vec<(Bound<'py, PyAny>, usize)>>,
}

impl<'py> Heap<'py> {
    /// The cheapest heap that still finds every user of `code`: the functions that refer to it
    /// (`gc.get_referrers`) when it cannot be nested in a live function's code, else everything.
    fn for_code(py: Python<'py>, code: &Bound<'py, PyAny>, need_parents: bool) -> PyResult<Self> {
        let gc = py.import("gc")?;
        let frozen: usize = gc.call_method0("get_freeze_count")?.extract()?;
        if need_parents || frozen > 0 {
            Self::full(py, frozen)
        } else {
            Self::referrers_of(py, code)
        }
    }

    /// Only the functions that refer to `code` (one C-level pass over the tracked objects).
    fn referrers_of(py: Python<'py>, code: &Bound<'py, PyAny>) -> PyResult<Self> {
        let function_type = function_type(py)?;
        let referrers = py
            .import("gc")?
            .call_method1("get_referrers", (code,))?
            .cast_into::<PyList>()?;
        let functions = referrers
            .iter()
            .filter(|o| o.get_type().is(&function_type))
            .collect();
        Ok(Heap {
            functions,
            parents: HashMap::new(),
        })
    }

    /// Every live function, and which code objects nest which.
    fn full(py: Python<'py>, frozen: usize) -> PyResult<Self> {
        let code_type = py.import("types")?.getattr("CodeType")?;
        let functions = live_functions(py, frozen)?;
        let mut parents: HashMap<usize, Vec<(Bound<'py, PyAny>, usize)>> = HashMap::new();
        let mut seen: HashSet<usize> = HashSet::new();
        let mut stack: Vec<Bound<'py, PyAny>> = Vec::new();
        for f in &functions {
            let code = f.getattr(intern!(py, "__code__"))?;
            if seen.insert(code.as_ptr() as usize) {
                stack.push(code);
            }
        }
        while let Some(code) = stack.pop() {
            let consts = code
                .getattr(intern!(py, "co_consts"))?
                .cast_into::<PyTuple>()?;
            for (i, c) in consts.iter().enumerate() {
                if !c.get_type().is(&code_type) {
                    continue;
                }
                parents
                    .entry(c.as_ptr() as usize)
                    .or_default()
                    .push((code.clone(), i));
                if seen.insert(c.as_ptr() as usize) {
                    stack.push(c);
                }
            }
        }
        Ok(Heap { functions, parents })
    }
}

fn function_type(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("types")?.getattr("FunctionType")
}

/// Whether live functions' code can hold `code` as nested code: the compiler gives everything
/// defined inside a function (closures, lambdas, comprehensions, methods of local classes) a
/// qualified name with `<locals>`. Module-level functions and methods of module-level classes
/// are nested only in module and class bodies, which have already run.
fn may_be_nested_in_a_function(py: Python<'_>, code: &Bound<'_, PyAny>) -> PyResult<bool> {
    let qualname: String = code.getattr(intern!(py, "co_qualname"))?.extract()?;
    Ok(qualname.contains("<locals>"))
}

/// Every live function object, by exact type (no user code runs). `gc.get_objects()` leaves out
/// the permanent generation that `gc.freeze()` fills (pre-fork servers freeze the whole
/// preloaded application), so when something is frozen, the frozen objects are found by
/// following references (`gc.get_referents`, which runs no user code either) from the unfrozen
/// ones and `sys.modules`.
fn live_functions(py: Python<'_>, frozen: usize) -> PyResult<Vec<Bound<'_, PyAny>>> {
    let function_type = function_type(py)?;
    let gc = py.import("gc")?;
    let tracked = gc.call_method0("get_objects")?.cast_into::<PyList>()?;
    if frozen == 0 {
        return Ok(tracked
            .iter()
            .filter(|o| o.get_type().is(&function_type))
            .collect());
    }
    let mut seen: HashSet<usize> = HashSet::with_capacity(tracked.len() + frozen);
    let mut out = Vec::new();
    let mut frontier: Vec<Bound<'_, PyAny>> = Vec::new();
    let roots = tracked
        .iter()
        .chain(std::iter::once(py.import("sys")?.getattr("modules")?));
    for obj in roots {
        if seen.insert(obj.as_ptr() as usize) {
            frontier.push(obj);
        }
    }
    drop(tracked);
    // Batches keep each get_referents call (and the list it returns) bounded.
    const BATCH: usize = 4096;
    let get_referents = gc.getattr("get_referents")?;
    while !frontier.is_empty() {
        let take = frontier.len().min(BATCH);
        let batch: Vec<Bound<'_, PyAny>> = frontier.drain(frontier.len() - take..).collect();
        for obj in &batch {
            if obj.get_type().is(&function_type) {
                out.push(obj.clone());
            }
        }
        let referents = get_referents
            .call1(PyTuple::new(py, batch)?)?
            .cast_into::<PyList>()?;
        for r in referents.iter() {
            if seen.insert(r.as_ptr() as usize) {
                frontier.push(r);
            }
        }
    }
    tracing::debug!(
        frozen,
        objects = seen.len(),
        functions = out.len(),
        "gc.freeze() is in effect: found frozen functions by traversal"
    );
    Ok(out)
}

/// Indices of the constants of `code` that a `LOAD_CONST` immediately followed by
/// `MAKE_FUNCTION` loads, i.e. the code of the functions, lambdas, comprehensions and class
/// bodies it creates (and not, e.g., the `code` argument of an inserted hook call, which must
/// keep pointing at the original).
pub(super) fn function_const_indices(
    py: Python<'_>,
    code: &Bound<'_, PyAny>,
    ops: &OpcodeTable,
) -> PyResult<Vec<usize>> {
    let co_code: Vec<u8> = code.getattr(intern!(py, "co_code"))?.extract()?;
    let instrs = decode_instructions(&co_code, ops)?;
    let mut out: Vec<usize> = instrs
        .windows(2)
        .filter(|w| w[0].op == ops.load_const && w[1].op == ops.make_function)
        .map(|w| w[0].arg as usize)
        .collect();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Replaces `old_code` by `new_code` wherever it is used: every function object whose __code__ is
/// old_code (found through gc.get_objects — not attribute names), and the co_consts of parent
/// code objects that contain it (recursively: a new parent code object is built and swapped into
/// the parent's functions), so that closures created later use the new code too. Returns a
/// record that puts the exact original objects back.
///
/// On error, whatever was already swapped is put back before returning.
pub fn swap_in<'py>(
    py: Python<'py>,
    old_code: &Bound<'py, PyAny>,
    new_code: &Bound<'py, PyAny>,
) -> PyResult<Swap> {
    require_311(py)?;
    require_code(py, old_code)?;
    require_code(py, new_code)?;
    let ops = opcode_table(py)?;
    let heap = Heap::for_code(py, old_code, may_be_nested_in_a_function(py, old_code)?)?;
    let mut swap = Swap {
        old: old_code.clone().unbind(),
        new: new_code.clone().unbind(),
        parents: Vec::new(),
        used: false,
    };
    match swap_with(py, &heap, ops, old_code, new_code, &mut swap, 0) {
        Ok(used) => {
            swap.used = used;
            Ok(swap)
        }
        Err(e) => {
            if let Err(undo) = swap.restore_with(py, &heap) {
                tracing::warn!(error = %undo, "could not undo a partial code swap");
            }
            Err(e)
        }
    }
}

/// Nesting deeper than this is not real code (the compiler's own limit is far lower in practice).
const MAX_NESTING: usize = 100;

fn swap_with<'py>(
    py: Python<'py>,
    heap: &Heap<'py>,
    ops: &OpcodeTable,
    old: &Bound<'py, PyAny>,
    new: &Bound<'py, PyAny>,
    record: &mut Swap,
    depth: usize,
) -> PyResult<bool> {
    if depth > MAX_NESTING {
        return Err(pyo3::exceptions::PyRecursionError::new_err(
            "code objects nested too deeply to swap",
        ));
    }
    let code_attr = intern!(py, "__code__");
    let mut used = false;
    for f in &heap.functions {
        if f.getattr(code_attr)?.is(old) {
            f.setattr(code_attr, new)?;
            used = true;
        }
    }
    let Some(parents) = heap.parents.get(&(old.as_ptr() as usize)) else {
        return Ok(used);
    };
    for (parent, index) in parents {
        if !function_const_indices(py, parent, ops)?.contains(index) {
            continue;
        }
        let consts = parent
            .getattr(intern!(py, "co_consts"))?
            .cast_into::<PyTuple>()?;
        let replaced: Vec<Bound<'py, PyAny>> = consts
            .iter()
            .enumerate()
            .map(|(i, c)| if i == *index { new.clone() } else { c })
            .collect();
        let kwargs = PyDict::new(py);
        kwargs.set_item("co_consts", PyTuple::new(py, replaced)?)?;
        let new_parent = parent.call_method(intern!(py, "replace"), (), Some(&kwargs))?;
        record.parents.push(Swap {
            old: parent.clone().unbind(),
            new: new_parent.clone().unbind(),
            parents: Vec::new(),
            used: true,
        });
        let child = record
            .parents
            .last_mut()
            .ok_or(super::RewriteError::Internal {
                what: "parent swap vanished",
            })?;
        if swap_with(py, heap, ops, parent, &new_parent, child, depth + 1)? {
            used = true;
        } else {
            // A parent no live function uses (e.g. an original kept only as the `code` argument
            // of an instrumented copy): nothing to swap, keep no copy.
            record.parents.pop();
        }
    }
    Ok(used)
}

impl Swap {
    /// Whether the swap reached anything: some live function now runs the new code, or will
    /// once a parent creates it. `false` means no function object uses the original code (a
    /// module or class body that already ran, or a function that no longer exists).
    pub fn is_effective(&self) -> bool {
        self.used
    }

    /// Puts the original code objects back: every function whose `__code__` is the new code
    /// (including closures created while the swap was in effect) gets the original object again,
    /// and likewise for the parents. Afterwards nothing this module created is referenced by a
    /// function (frames still running the new code keep it until they finish).
    pub fn restore(self, py: Python<'_>) -> PyResult<()> {
        let new = self.new.bind(py).clone();
        let heap = Heap::for_code(py, &new, !self.parents.is_empty())?;
        self.restore_with(py, &heap)
    }

    fn restore_with<'py>(self, py: Python<'py>, heap: &Heap<'py>) -> PyResult<()> {
        // Parents first, so no new closure with the new code can appear after the scan below.
        let mut first_error = None;
        for p in self.parents.into_iter().rev() {
            if let Err(e) = p.restore_with(py, heap) {
                first_error.get_or_insert(e);
            }
        }
        let code_attr = intern!(py, "__code__");
        let old = self.old.bind(py);
        let new = self.new.bind(py);
        for f in &heap.functions {
            let restored = f.getattr(code_attr).and_then(|c| {
                if c.is(new) {
                    f.setattr(code_attr, old)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = restored {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
