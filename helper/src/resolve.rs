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
}

impl CodeEntry {
    /// Lines with instructions (from `co_lines()`), computed once.
    pub fn lines(&self, py: Python<'_>) -> &BTreeSet<u32> {
        self.lines.get_or_init(|| code_lines(self.code.bind(py)))
    }
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
    while let Some(c) = stack.pop() {
        if !c.get_type().is(&code_type) || !seen.insert(c.as_ptr() as usize) {
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
        idx.by_file.entry(filename).or_default().push(CodeEntry {
            code: c.unbind(),
            lines: std::cell::OnceCell::new(),
        });
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

impl CodeIndex {
    /// co_filenames matching `bp_file`, grouped by the real file they name.
    pub fn matching_files(&self, bp_file: &str) -> Vec<(String, Vec<&str>)> {
        let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
        for f in self.by_file.keys() {
            let canon = self.canonical.get(f).map(String::as_str);
            if path_matches(bp_file, f, canon) {
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
    use super::path_matches;

    #[test]
    fn suffix_at_component_boundary() {
        assert!(path_matches("app/views.py", "/srv/app/views.py", None));
        assert!(path_matches("views.py", "/srv/app/views.py", None));
        assert!(path_matches("/srv/app/views.py", "/srv/app/views.py", None));
        assert!(path_matches("./app/views.py", "/srv/app/views.py", None));
        assert!(!path_matches("iews.py", "/srv/app/views.py", None));
        assert!(!path_matches("pp/views.py", "/srv/app/views.py", None));
        assert!(path_matches(
            "app/views.py",
            "/x/link.py",
            Some("/srv/app/views.py")
        ));
    }
}
