//! CPython 3.11 breakpoints by bytecode patching (`helper/src/py311`), run on the real 3.11
//! interpreters (pyenv 3.11.7 and Debian's static 3.11.2) through the private test functions the
//! helper exposes (`_py311_instrument`, `_py311_swap`, `_py311_round_trips`).
//!
//! Needs the staged helper: `cargo xtask build-helper` (done by `cargo xtask test`).
use anyhow::{Context, Result, bail};
use libdebugger_tests::python::{Interpreter, supported};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Generous: the instrument script rewrites ~10,000 stdlib code objects (about 3 s here).
const DEADLINE: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The staged helper directory, or None (with a one-line reason) when it is not built.
fn helper_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LIBDEBUGGER_HELPER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/helper"));
    if dir.join("libdebugger_helper.abi3.so").exists() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: {} has no libdebugger_helper.abi3.so (run `cargo xtask build-helper`)",
            dir.display()
        );
        None
    }
}

/// Runs `python <args>` to completion within [`DEADLINE`]; returns stdout, fails with stderr.
fn run_python(py: &Interpreter, args: &[&std::ffi::OsStr]) -> Result<String> {
    // On the host or in its container (paths translated to what the interpreter sees).
    let mut child = py
        .command(&root())
        .args(args.iter().map(|a| py.guest(a)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", py.label))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > DEADLINE {
            child.kill().ok();
            child.wait().ok();
            bail!("{}: no result within {DEADLINE:?}", py.label);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out_reader
        .join()
        .map_err(|_| anyhow::anyhow!("stdout reader panicked"))??;
    let err = err_reader
        .join()
        .map_err(|_| anyhow::anyhow!("stderr reader panicked"))??;
    if !status.success() {
        bail!("{}: {status}\nstdout:\n{out}\nstderr:\n{err}", py.label);
    }
    Ok(out)
}

fn run_script_on_311(script: &str) -> Result<()> {
    let Some(dir) = helper_dir() else {
        return Ok(());
    };
    let script = root().join("tests/python").join(script);
    let pythons: Vec<Interpreter> = supported()
        .into_iter()
        .filter(|p| p.version == (3, 11))
        .collect();
    if pythons.is_empty() {
        eprintln!("skipping: no CPython 3.11 interpreter is installed on this machine");
        return Ok(());
    }
    for py in &pythons {
        let out = run_python(py, &[script.as_os_str(), dir.as_os_str()])?;
        let last = out.lines().last().unwrap_or_default();
        eprintln!("{}: {last}", py.label);
        if !last.starts_with("OK ") {
            bail!("{}: script did not finish with OK:\n{out}", py.label);
        }
    }
    Ok(())
}

/// Every line of every code object of a structural program, in turn: same results and
/// tracebacks, hook count equal to `sys.settrace`'s line events; stdlib codec round trips.
#[test]
fn instrumenting_each_line_matches_settrace() -> Result<()> {
    run_script_on_311("py311_instrument.py")
}

/// Functions, methods, static/class methods, properties, decorated functions, closures made
/// before and after, nested closures, generators, coroutines; exact restore.
#[test]
fn swap_in_reaches_every_user_of_a_code_object_and_restores_exactly() -> Result<()> {
    run_script_on_311("py311_swap.py")
}

/// On 3.12+ the 3.11 patcher refuses to run (those versions use `sys.monitoring`).
#[test]
fn other_versions_are_refused() -> Result<()> {
    let Some(dir) = helper_dir() else {
        return Ok(());
    };
    let snippet = "import sys\nsys.path.insert(0, sys.argv[1])\nimport libdebugger_helper as h\n\
        try:\n    h._py311_instrument((lambda: 1).__code__, [1], print)\n\
        except RuntimeError as e:\n    print('refused:', e)\n";
    let mut ran = false;
    for py in supported().into_iter().filter(|p| p.version != (3, 11)) {
        let out = run_python(&py, &["-c".as_ref(), snippet.as_ref(), dir.as_os_str()])?;
        if !out.contains("refused:") || !out.contains("only for CPython 3.11") {
            bail!("{}: expected a refusal, got {out:?}", py.label);
        }
        ran = true;
    }
    if !ran {
        eprintln!("skipping: no CPython 3.12+ interpreter is installed on this machine");
    }
    Ok(())
}
