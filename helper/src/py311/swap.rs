//! Putting a rewritten code object in place of the original wherever it is used, and back.
//!
//! "Used" means: the `__code__` of a function object (found among the objects the garbage
//! collector tracks, so decorators, `functools.wraps`, bound methods, `staticmethod` and
//! `classmethod` wrappers, closures — anything that holds the function — are covered without
//! knowing attribute names), and a `LOAD_CONST` feeding `MAKE_FUNCTION` in the code object that
//! creates such functions (so closures created later get the new code). Code objects are not
//! tracked by the garbage collector, so those parents are found by walking the nested code of
//! every live function's code.
//!
//! A parent is replaced by a *derived* copy: its root (the original parent, or an instrumented
//! copy of it) with some nested-code constants substituted, and the marker
//! [`DERIVED_MARKER`] plus the root appended to `co_consts`. Every change recomputes the copy from
//! the root and the substitutions still wanted, and a parent with none left is the root itself
//! again. So swaps can be restored in any order (two armed closures of one function, a function
//! armed together with its closure) and, once all are restored, every function has its identical
//! original code object back.

use super::bytecode::{OpcodeTable, decode_instructions};
use super::{opcode_table, require_311, require_code};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use std::collections::{HashMap, HashSet};

/// Second-to-last constant of a derived parent copy; the last one is its root.
pub const DERIVED_MARKER: &str = "libdebugger:py311:derived";

/// A swap in effect: [`Swap::restore`] puts the original objects back. Dropping it without
/// calling `restore` leaves the new code in place for good.
#[derive(Debug)]
#[must_use = "dropping a Swap leaves the instrumented code in place; call restore()"]
pub struct Swap {
    old: Py<PyAny>,
    new: Py<PyAny>,
    /// Whether some live function got the new code, directly or through a parent.
    used: bool,
}

/// The function objects an operation works on, and the nesting of their code objects.
struct Heap<'py> {
    functions: Vec<Bound<'py, PyAny>>,
    /// Code object (by address) -> the code objects whose `co_consts` hold it, with the index.
    parents: HashMap<usize, Vec<(Bound<'py, PyAny>, usize)>>,
    /// Root (by address) -> the derived copies of it that live code uses.
    derived: HashMap<usize, Vec<Bound<'py, PyAny>>>,
}

impl<'py> Heap<'py> {
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
            derived: HashMap::new(),
        })
    }

    /// Every live function, which code objects nest which, and the derived copies.
    fn full(py: Python<'py>, frozen: usize) -> PyResult<Self> {
        let code_type = py.import("types")?.getattr("CodeType")?;
        let functions = live_functions(py, frozen)?;
        let mut parents: HashMap<usize, Vec<(Bound<'py, PyAny>, usize)>> = HashMap::new();
        let mut derived: HashMap<usize, Vec<Bound<'py, PyAny>>> = HashMap::new();
        let mut seen: HashSet<usize> = HashSet::new();
        let mut stack: Vec<Bound<'py, PyAny>> = Vec::new();
        for f in &functions {
            let code = f.getattr("__code__")?;
            if seen.insert(code.as_ptr() as usize) {
                stack.push(code);
            }
        }
        while let Some(code) = stack.pop() {
            let consts = code.getattr("co_consts")?.cast_into::<PyTuple>()?;
            if let Some(root) = derived_root(&consts)? {
                derived
                    .entry(root.as_ptr() as usize)
                    .or_default()
                    .push(code.clone());
            }
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
        Ok(Heap {
            functions,
            parents,
            derived,
        })
    }
}

/// The root of a derived copy, from its constants (`None` if it is not one).
fn derived_root<'py>(consts: &Bound<'py, PyTuple>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let n = consts.len();
    if n < 2 {
        return Ok(None);
    }
    let marker = consts.get_item(n - 2)?;
    // Exact str only: never compares through a user-defined __eq__.
    let is_marker = marker.is_exact_instance_of::<PyString>()
        && marker.cast::<PyString>()?.to_cow()? == DERIVED_MARKER;
    is_marker.then(|| consts.get_item(n - 1)).transpose()
}

/// Nested-code substitutions: (index in `co_consts`, the code object put there).
type Subs<'py> = Vec<(usize, Bound<'py, PyAny>)>;

/// A code object's root and the nested-code substitutions that make it (none for a root).
fn root_and_subs<'py>(code: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Subs<'py>)> {
    let consts = code.getattr("co_consts")?.cast_into::<PyTuple>()?;
    let Some(root) = derived_root(&consts)? else {
        return Ok((code.clone(), Vec::new()));
    };
    let root_consts = root.getattr("co_consts")?.cast_into::<PyTuple>()?;
    let mut subs = Vec::new();
    for (i, c) in root_consts.iter().enumerate() {
        let mine = consts.get_item(i)?;
        if !mine.is(&c) {
            subs.push((i, mine));
        }
    }
    Ok((root, subs))
}

/// `root` with `subs` applied: `root` itself when there are none, else a derived copy.
fn derive<'py>(
    py: Python<'py>,
    root: &Bound<'py, PyAny>,
    subs: &[(usize, Bound<'py, PyAny>)],
) -> PyResult<Bound<'py, PyAny>> {
    if subs.is_empty() {
        return Ok(root.clone());
    }
    let consts = root.getattr("co_consts")?.cast_into::<PyTuple>()?;
    let mut items: Vec<Bound<'py, PyAny>> = consts.iter().collect();
    for (i, c) in subs {
        if let Some(slot) = items.get_mut(*i) {
            *slot = c.clone();
        }
    }
    items.push(PyString::new(py, DERIVED_MARKER).into_any());
    items.push(root.clone());
    let kwargs = PyDict::new(py);
    kwargs.set_item("co_consts", PyTuple::new(py, items)?)?;
    root.call_method("replace", (), Some(&kwargs))
}

/// The code object a live function's code was made from by this module: the root of a derived
/// parent copy, then the original of an instrumented copy, repeatedly. Returns `code` itself for
/// code this module did not make.
pub fn original_code<'py>(code: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let mut current = code.clone();
    for _ in 0..MAX_NESTING {
        let (root, _) = root_and_subs(&current)?;
        let next = super::instrumented_original(&root)?.unwrap_or_else(|| root.clone());
        if next.is(&current) {
            return Ok(current);
        }
        current = next;
    }
    Err(pyo3::exceptions::PyRecursionError::new_err(
        "code objects derived from each other too many times",
    ))
}

fn function_type(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("types")?.getattr("FunctionType")
}

/// Whether live functions' code can hold `code` as nested code: the compiler gives everything
/// defined inside a function (closures, lambdas, comprehensions, methods of local classes) a
/// qualified name with `<locals>`. Module-level functions and methods of module-level classes
/// are nested only in module and class bodies, which have already run.
fn may_be_nested_in_a_function(code: &Bound<'_, PyAny>) -> PyResult<bool> {
    let qualname: String = code.getattr("co_qualname")?.extract()?;
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
    code: &Bound<'_, PyAny>,
    ops: &OpcodeTable,
) -> PyResult<Vec<usize>> {
    let co_code: Vec<u8> = code.getattr("co_code")?.extract()?;
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
/// old_code (found through gc.get_referrers / gc.get_objects — not attribute names), and the
/// co_consts of parent code objects that contain it (recursively: a new parent code object is
/// built and swapped into the parent's functions), so that closures created later use the new
/// code too. Returns a record that puts the exact original objects back.
///
/// `old_code` is an original code object or an instrumented copy that was swapped in (never a
/// derived parent copy; map what live functions hold through [`original_code`]). Functions whose
/// code is a derived copy of `old_code` get the same copy of `new_code`. On error, whatever was
/// already swapped is put back before returning.
pub fn swap_in<'py>(
    py: Python<'py>,
    old_code: &Bound<'py, PyAny>,
    new_code: &Bound<'py, PyAny>,
) -> PyResult<Swap> {
    require_311(py)?;
    require_code(py, old_code)?;
    require_code(py, new_code)?;
    match rebase(py, old_code, new_code) {
        Ok(used) => Ok(Swap {
            old: old_code.clone().unbind(),
            new: new_code.clone().unbind(),
            used,
        }),
        Err(e) => {
            if let Err(undo) = rebase(py, new_code, old_code) {
                tracing::warn!(error = %undo, "could not undo a partial code swap");
            }
            Err(e)
        }
    }
}

/// Nesting deeper than this is not real code (the compiler's own limit is far lower in practice).
const MAX_NESTING: usize = 100;

/// One replacement operation.
struct Rebase<'a, 'py> {
    py: Python<'py>,
    ops: &'a OpcodeTable,
    heap: Heap<'py>,
    /// Parent (by address, as in the heap) -> what it has been replaced by in this operation.
    replaced: HashMap<usize, Bound<'py, PyAny>>,
}

/// Makes every user of `from` (directly, or through derived parent copies) use `to` instead.
/// Returns whether anything was changed.
fn rebase<'py>(
    py: Python<'py>,
    from: &Bound<'py, PyAny>,
    to: &Bound<'py, PyAny>,
) -> PyResult<bool> {
    let ops = opcode_table(py)?;
    let frozen: usize = py
        .import("gc")?
        .call_method0("get_freeze_count")?
        .extract()?;
    // Only code nested in a function can have live parents, and only code that itself creates
    // functions can have derived copies; anything else is found by `gc.get_referrers`.
    let full = frozen > 0
        || may_be_nested_in_a_function(from)?
        || !function_const_indices(from, ops)?.is_empty();
    let heap = if full {
        Heap::full(py, frozen)?
    } else {
        Heap::referrers_of(py, from)?
    };
    let mut op = Rebase {
        py,
        ops,
        heap,
        replaced: HashMap::new(),
    };
    // Each code object that stands for `from` in live code, and what replaces it.
    let mut conversions: Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> =
        vec![(from.clone(), to.clone())];
    for d in op
        .heap
        .derived
        .get(&(from.as_ptr() as usize))
        .into_iter()
        .flatten()
    {
        let (_, subs) = root_and_subs(d)?;
        conversions.push((d.clone(), derive(py, to, &subs)?));
    }
    let code_attr = "__code__";
    let mut used = false;
    for f in &op.heap.functions {
        let code = f.getattr(code_attr)?;
        if let Some((_, new)) = conversions.iter().find(|(old, _)| old.is(&code)) {
            f.setattr(code_attr, new)?;
            used = true;
        }
    }
    for (old, new) in &conversions {
        let users = op
            .heap
            .parents
            .get(&(old.as_ptr() as usize))
            .cloned()
            .unwrap_or_default();
        for (parent, index) in users {
            if op.makes_function(&parent, index)? {
                used |= op.set_child(&parent, index, new, 0)?;
            }
        }
    }
    Ok(used)
}

impl<'py> Rebase<'_, 'py> {
    fn makes_function(&self, code: &Bound<'py, PyAny>, index: usize) -> PyResult<bool> {
        Ok(function_const_indices(code, self.ops)?.contains(&index))
    }

    /// Makes `parent` (as found in the heap) create its functions at `index` from `child`:
    /// recomputes it from its root, swaps the result into its functions and, recursively, into
    /// its own parents. Returns whether anything uses it.
    fn set_child(
        &mut self,
        parent: &Bound<'py, PyAny>,
        index: usize,
        child: &Bound<'py, PyAny>,
        depth: usize,
    ) -> PyResult<bool> {
        if depth > MAX_NESTING {
            return Err(pyo3::exceptions::PyRecursionError::new_err(
                "code objects nested too deeply to swap",
            ));
        }
        let py = self.py;
        let key = parent.as_ptr() as usize;
        let current = self
            .replaced
            .get(&key)
            .cloned()
            .unwrap_or_else(|| parent.clone());
        let code_attr = "__code__";
        let mut users = Vec::new();
        for f in &self.heap.functions {
            if f.getattr(code_attr)?.is(&current) {
                users.push(f.clone());
            }
        }
        let grandparents: Vec<(Bound<'py, PyAny>, usize)> = match self.heap.parents.get(&key) {
            Some(g) => {
                let mut out = Vec::new();
                for (gp, j) in g {
                    if self.makes_function(gp, *j)? {
                        out.push((gp.clone(), *j));
                    }
                }
                out
            }
            None => Vec::new(),
        };
        if users.is_empty() && grandparents.is_empty() {
            // Not used by anything live (e.g. an original kept only as the `code` argument of an
            // instrumented copy): leave it alone, make no copy.
            return Ok(false);
        }
        let (root, mut subs) = root_and_subs(&current)?;
        let root_consts = root.getattr("co_consts")?.cast_into::<PyTuple>()?;
        subs.retain(|(i, _)| *i != index);
        if !root_consts.get_item(index)?.is(child) {
            subs.push((index, child.clone()));
            subs.sort_by_key(|(i, _)| *i);
        }
        let target = derive(py, &root, &subs)?;
        self.replaced.insert(key, target.clone());
        for f in &users {
            f.setattr(code_attr, &target)?;
        }
        for (gp, j) in grandparents {
            self.set_child(&gp, j, &target, depth + 1)?;
        }
        Ok(true)
    }
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
    /// and parents are recomputed without this substitution — their identical originals once no
    /// other swap needs a copy. Swaps may be restored in any order. Frames still running the new
    /// code keep it until they finish.
    pub fn restore(self, py: Python<'_>) -> PyResult<()> {
        let old = self.old.bind(py);
        let new = self.new.bind(py);
        rebase(py, new, old).map(|_| ())
    }
}
