//! Running the in-process helper tests: a Python script under `tests/python/` runs in a real
//! interpreter with the staged helper (`cargo xtask build-helper` → `target/helper/`) on its
//! path, drives `libdebugger_helper` with an in-process sink, and prints one line
//! `RESULT <json>` (or `SKIP <reason>`). The Rust test asserts on that JSON.
use crate::python::Interpreter;
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Builds and stages the helper once per test process; returns the directory to put on
/// `sys.path`.
pub fn helper_dir() -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .current_dir(root())
            .args(["xtask", "build-helper"])
            .status()
            .map_err(|e| format!("running cargo xtask build-helper: {e}"))?;
        if !status.success() {
            return Err(format!("cargo xtask build-helper failed: {status}"));
        }
        Ok(root().join("target/helper"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// What a script reported.
#[derive(Debug)]
pub enum Outcome {
    /// The script printed `SKIP <reason>`.
    Skip(String),
    /// The JSON after `RESULT `.
    Result(serde_json::Value),
}

/// Runs `tests/python/<script>` under `interp` with `args`; fails after `timeout`.
pub fn run_script(
    interp: &Interpreter,
    script: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<Outcome> {
    let dir = helper_dir()?;
    let py_dir = root().join("tests/python");
    let mut path = interp.guest(&dir);
    path.push(":");
    path.push(interp.guest(&py_dir));
    let mut child = interp
        .command(&py_dir)
        .arg(interp.guest(py_dir.join(script)))
        .args(args)
        .env("PYTHONPATH", path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", interp.path.display()))?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} {script}: timed out after {timeout:?}; stderr:\n{}",
                interp.label,
                t_err.join().unwrap_or_default()
            );
        }
        // Polling the child's exit; the deadline above bounds the wait.
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    for line in stdout.lines() {
        if let Some(r) = line.strip_prefix("SKIP ") {
            return Ok(Outcome::Skip(r.to_string()));
        }
    }
    if !status.success() {
        bail!(
            "{} {script} exited with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            interp.label
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .with_context(|| {
            format!(
                "{} {script}: no RESULT line\nstdout:\n{stdout}\nstderr:\n{stderr}",
                interp.label
            )
        })?;
    let v = serde_json::from_str(line)
        .with_context(|| format!("{} {script}: RESULT is not JSON: {line}", interp.label))?;
    Ok(Outcome::Result(v))
}

/// Runs `script` on every supported interpreter (optionally only 3.12+) and hands each result
/// to `check`; skipped interpreters print one line saying why.
pub fn on_each_interpreter(
    script: &str,
    min_minor: u32,
    mut check: impl FnMut(&Interpreter, &serde_json::Value),
) {
    for interp in crate::python::supported() {
        if interp.version.1 < min_minor {
            eprintln!(
                "skipping {} for {script}: needs 3.{min_minor}+",
                interp.label
            );
            continue;
        }
        match run_script(&interp, script, &[], Duration::from_secs(180)) {
            Ok(Outcome::Skip(why)) => eprintln!("skipping {} for {script}: {why}", interp.label),
            Ok(Outcome::Result(v)) => {
                check(&interp, &v);
                eprintln!("{}: {script} passed", interp.label);
            }
            Err(e) => panic!("{e:#}"),
        }
    }
}
