//! Resolution of (file, line) to code objects, through the garbage collector: every function
//! object the collector tracks (plain functions, methods, static/class methods, property
//! accessors, closures, lambdas, generators, coroutines, async generators, functions hidden
//! inside decorator wrappers — all are function objects somewhere), plus the code of frames
//! currently executing, and recursively every code object in their `co_consts` (nested
//! functions, 3.11 comprehensions).
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

/// One code object and (computed on first use: most files are never asked about) the lines it
/// has instructions on.
pub struct CodeEntry {
    pub code: Py<PyAny>,
    lines: std::cell::OnceCell<BTreeSet<u32>>,
    /// For a decorated function: (first decorator line = the line of its entry, `def` line).
    decorated: std::cell::OnceCell<Option<(u32, u32)>>,
}

impl CodeEntry {
    fn new(code: Py<PyAny>) -> Self {
        CodeEntry {
            code,
            lines: std::cell::OnceCell::new(),
            decorated: std::cell::OnceCell::new(),
        }
    }

    /// Lines with instructions (from `co_lines()`), computed once.
    pub fn lines(&self, py: Python<'_>) -> &BTreeSet<u32> {
        self.lines.get_or_init(|| code_lines(self.code.bind(py)))
    }

    /// (first decorator line, `def` line) when this is a decorated function: its entry (`RESUME`)
    /// is on the decorator's line and the `def` line has no instruction in it.
    fn decorated(&self, py: Python<'_>, source: &Source) -> Option<(u32, u32)> {
        *self.decorated.get_or_init(|| {
            let code = self.code.bind(py);
            let flags: u32 = code.getattr("co_flags").ok()?.extract().ok()?;
            if flags & CO_OPTIMIZED == 0 {
                return None; // module or class body
            }
            let first: u32 = code.getattr("co_firstlineno").ok()?.extract().ok()?;
            decorated_def_line(source.lines()?, first).map(|def| (first, def))
        })
    }

    /// Lines a breakpoint can name in this code object: the lines with instructions, except
    /// that for a decorated function the `def` line stands for the entry and the decorator line
    /// does not (decorators run in the enclosing code, when the `def` statement executes).
    pub fn breakpoint_lines(&self, py: Python<'_>, source: &Source) -> BTreeSet<u32> {
        let mut lines = self.lines(py).clone();
        if let Some((first, def)) = self.decorated(py, source) {
            lines.remove(&first);
            lines.insert(def);
        }
        lines
    }

    /// The line to arm for a breakpoint on `line` (the entry line for the `def` line of a
    /// decorated function), or None when this code object has nothing on that line.
    pub fn arm_line(&self, py: Python<'_>, source: &Source, line: u32) -> Option<u32> {
        match self.decorated(py, source) {
            // A one-line function has its body on the `def` line: that line's own event.
            Some((first, def)) if line == def && !self.lines(py).contains(&def) => Some(first),
            Some((first, _)) if line == first => None,
            _ => self.lines(py).contains(&line).then_some(line),
        }
    }
}

/// `co_flags` bit of functions (also lambdas and 3.11 comprehensions), not module/class bodies.
const CO_OPTIMIZED: u32 = 0x1;

/// A source file's lines, read on first use (from disk only: never through a module's loader,
/// which could be user code).
pub struct Source {
    path: String,
    lines: std::cell::OnceCell<Option<Vec<String>>>,
}

impl Source {
    pub fn new(path: &str) -> Self {
        Source {
            path: path.to_string(),
            lines: std::cell::OnceCell::new(),
        }
    }

    fn lines(&self) -> Option<&[String]> {
        self.lines
            .get_or_init(|| {
                std::fs::read_to_string(&self.path)
                    .ok()
                    .map(|s| s.lines().map(str::to_string).collect())
            })
            .as_deref()
    }
}

/// For a function whose first line (`co_firstlineno`, 1-based) is a decorator, the line of its
/// `def` keyword: the first later line at the decorator's indentation that starts with `def` or
/// `async def` (lines in between are further decorators or a decorator's continuation lines).
/// None when the first line is not a decorator or no such line follows.
pub fn decorated_def_line(lines: &[String], first: u32) -> Option<u32> {
    let start = usize::try_from(first).ok()?.checked_sub(1)?;
    let deco = lines.get(start)?;
    let body = deco.trim_start();
    if !body.starts_with('@') {
        return None;
    }
    let indent = &deco[..deco.len() - body.len()];
    const MAX_DECORATOR_LINES: usize = 500;
    for (i, l) in lines
        .iter()
        .enumerate()
        .skip(start + 1)
        .take(MAX_DECORATOR_LINES)
    {
        let Some(rest) = l.strip_prefix(indent) else {
            continue;
        };
        if rest.starts_with(|c: char| c.is_whitespace()) {
            continue;
        }
        let rest = rest
            .strip_prefix("async")
            .filter(|r| r.starts_with(|c: char| c.is_whitespace()))
            .map(str::trim_start)
            .unwrap_or(rest);
        if rest
            .strip_prefix("def")
            .is_some_and(|r| r.starts_with(|c: char| c.is_whitespace()))
        {
            return u32::try_from(i + 1).ok();
        }
        if rest.starts_with("class") {
            return None;
        }
    }
    None
}

/// All code objects found by a scan, grouped by `co_filename`.
#[derive(Default)]
pub struct CodeIndex {
    pub by_file: HashMap<String, Vec<CodeEntry>>,
    /// canonical path → co_filenames that resolve to it.
    canonical: HashMap<String, String>,
    pub scan_us: u64,
    pub objects_scanned: usize,
}

/// Scans the process. Runs with the GIL held; calls only C functions of builtin types.
pub fn scan(py: Python<'_>) -> PyResult<CodeIndex> {
    let start = Instant::now();
    let gc = py.import("gc")?;
    let objs = gc.call_method0("get_objects")?;
    let objs = objs.cast_into::<PyList>()?;
    let func_type = py.import("types")?.getattr("FunctionType")?;
    let code_type = py.import("types")?.getattr("CodeType")?;
    let mut seen: HashSet<usize> = HashSet::new();
    let mut idx = CodeIndex {
        objects_scanned: objs.len(),
        ..Default::default()
    };
    let mut stack: Vec<Bound<'_, PyAny>> = Vec::new();
    for o in objs.iter() {
        if o.get_type().is(&func_type)
            && let Ok(c) = o.getattr("__code__")
        {
            stack.push(c);
        }
    }
    drop(objs);
    // Frames running right now (a loop whose function object is gone, module code...).
    if let Ok(frames) = py.import("sys")?.call_method0("_current_frames")
        && let Ok(d) = frames.cast_into::<pyo3::types::PyDict>()
    {
        for (_, mut f) in d.iter() {
            for _ in 0..256 {
                if f.is_none() {
                    break;
                }
                if let Ok(c) = f.getattr("f_code") {
                    stack.push(c);
                }
                match f.getattr("f_back") {
                    Ok(b) => f = b,
                    Err(_) => break,
                }
            }
        }
    }
    // 3.11: live functions and running frames may hold the patcher's instrumented copies and
    // derived parent copies; breakpoints are always armed on (and keyed by) the originals, so
    // only originals are indexed. Their `co_consts` hold only real nested code (the copies also
    // hold the original itself and other non-nested constants, which is why copies are never
    // walked).
    let is_311 = crate::hot::py_minor() == 11;
    while let Some(mut c) = stack.pop() {
        if !c.get_type().is(&code_type) {
            continue;
        }
        if is_311 {
            match crate::py311::original_code(&c) {
                Ok(o) => c = o,
                Err(_) => continue,
            }
        }
        if !seen.insert(c.as_ptr() as usize) {
            continue;
        }
        if let Ok(consts) = c.getattr("co_consts")
            && let Ok(t) = consts.cast_into::<PyTuple>()
        {
            for k in t.iter() {
                if k.get_type().is(&code_type) {
                    stack.push(k);
                }
            }
        }
        let filename: String = match c.getattr("co_filename").and_then(|f| f.extract()) {
            Ok(f) => f,
            Err(_) => continue,
        };
        idx.by_file
            .entry(filename)
            .or_default()
            .push(CodeEntry::new(c.unbind()));
    }
    for f in idx.by_file.keys() {
        if let Ok(c) = std::fs::canonicalize(f) {
            idx.canonical
                .insert(f.clone(), c.to_string_lossy().into_owned());
        }
    }
    idx.scan_us = start.elapsed().as_micros() as u64;
    Ok(idx)
}

/// Lines that have instructions in `code` (from `co_lines()`).
pub fn code_lines(code: &Bound<'_, PyAny>) -> BTreeSet<u32> {
    let mut lines = BTreeSet::new();
    if let Ok(it) = code.call_method0("co_lines").and_then(|i| i.try_iter()) {
        for t in it.flatten() {
            if let Ok((_, _, l)) = t.extract::<(i64, i64, Option<i64>)>()
                && let Some(l) = l.and_then(|l| u32::try_from(l).ok())
                && l > 0
            {
                lines.insert(l);
            }
        }
    }
    lines
}

/// Lines with instructions in a module's code and the class bodies nested in it (code that runs
/// once, at import), not in functions.
pub fn runs_once_lines(module: &Bound<'_, PyAny>) -> BTreeSet<u32> {
    let mut lines = BTreeSet::new();
    let mut stack = vec![module.clone()];
    while let Some(c) = stack.pop() {
        lines.extend(code_lines(&c));
        if let Ok(consts) = c.getattr("co_consts")
            && let Ok(t) = consts.cast_into::<PyTuple>()
        {
            for k in t.iter() {
                let flags = k.getattr("co_flags").and_then(|f| f.extract::<u32>()).ok();
                if k.hasattr("co_lines").unwrap_or(false)
                    && flags.is_some_and(|f| f & CO_OPTIMIZED == 0)
                {
                    stack.push(k);
                }
            }
        }
    }
    lines
}

/// Whether a breakpoint path names `co_filename`: equal, or a suffix at a path-component
/// boundary, compared both as written and after resolving symlinks.
pub fn path_matches(bp_file: &str, co_filename: &str, co_canonical: Option<&str>) -> bool {
    let want = bp_file.trim_start_matches("./");
    if want.is_empty() {
        return false;
    }
    let suffix = |path: &str| {
        path == want
            || (path.ends_with(want)
                && (want.starts_with('/') || path[..path.len() - want.len()].ends_with('/')))
    };
    if suffix(co_filename) || co_canonical.is_some_and(suffix) {
        return true;
    }
    if want.starts_with('/')
        && let (Ok(a), Some(b)) = (std::fs::canonicalize(want), co_canonical)
    {
        return a.to_string_lossy() == b;
    }
    false
}

/// Whether `path` (or its canonical form) lies under one of `roots` at a path-component
/// boundary; true when `roots` is empty (no restriction).
pub fn under_roots(roots: &[String], path: &str, canonical: Option<&str>) -> bool {
    let under = |p: &str, root: &str| {
        let root = root.trim_end_matches('/');
        p.strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    roots.is_empty()
        || roots
            .iter()
            .any(|r| under(path, r) || canonical.is_some_and(|c| under(c, r)))
}

impl CodeIndex {
    /// co_filenames matching `bp_file` (under one of `roots`, when given), grouped by the real
    /// file they name.
    pub fn matching_files(&self, bp_file: &str, roots: &[String]) -> Vec<(String, Vec<&str>)> {
        let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
        for f in self.by_file.keys() {
            let canon = self.canonical.get(f).map(String::as_str);
            if path_matches(bp_file, f, canon) && under_roots(roots, f, canon) {
                let key = canon.unwrap_or(f).to_string();
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push(f),
                    None => groups.push((key, vec![f])),
                }
            }
        }
        groups.sort();
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::{decorated_def_line, path_matches, under_roots};

    #[test]
    fn def_line_of_decorated_functions() {
        let src: Vec<String> = [
            "@a",                  // 1
            "def f(x):",           // 2
            "    pass",            // 3
            "class C:",            // 4
            "    @b(",             // 5
            "        1,",          // 6
            "    )",               // 7
            "    @c",              // 8
            "    async  def g():", // 9
            "        pass",        // 10
            "@dataclass",          // 11
            "class D:",            // 12
            "    def h(): pass",   // 13
            "@d",                  // 14
            "def\tk(): pass",      // 15
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(decorated_def_line(&src, 1), Some(2));
        assert_eq!(decorated_def_line(&src, 5), Some(9));
        assert_eq!(decorated_def_line(&src, 2), None, "not a decorator");
        assert_eq!(decorated_def_line(&src, 11), None, "class decorator");
        assert_eq!(decorated_def_line(&src, 13), None);
        assert_eq!(decorated_def_line(&src, 14), Some(15));
        assert_eq!(decorated_def_line(&src, 0), None);
        assert_eq!(decorated_def_line(&src, 99), None);
    }

    #[test]
    fn suffix_at_component_boundary() {
        assert!(path_matches("app/views.py", "/srv/app/views.py", None));
        assert!(path_matches("views.py", "/srv/app/views.py", None));
        assert!(path_matches("/srv/app/views.py", "/srv/app/views.py", None));
        assert!(path_matches("./app/views.py", "/srv/app/views.py", None));
        assert!(!path_matches("iews.py", "/srv/app/views.py", None));
        assert!(!path_matches("pp/views.py", "/srv/app/views.py", None));
        let roots = vec!["/srv/app".to_string()];
        assert!(under_roots(&[], "/x/views.py", None));
        assert!(under_roots(&roots, "/srv/app/views.py", None));
        assert!(!under_roots(&roots, "/srv/app2/views.py", None));
        assert!(under_roots(
            &roots,
            "/link/views.py",
            Some("/srv/app/views.py")
        ));
        assert!(under_roots(
            &["/srv/app/".to_string()],
            "/srv/app/a/b.py",
            None
        ));
        assert!(path_matches(
            "app/views.py",
            "/x/link.py",
            Some("/srv/app/views.py")
        ));
    }
}
