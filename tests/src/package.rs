//! The `libdebugger` Python package under test: its wheel (`cargo xtask build-wheel`, once per
//! test process) installed into a fresh virtual environment per interpreter, with the real
//! `posthog` package from PyPI, and scripts of `tests/python/package/` run there.
use crate::helper::{Outcome, root};
use crate::python::Interpreter;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Builds the wheel once per test process; returns its path.
pub fn wheel() -> Result<PathBuf> {
    static WHEEL: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    WHEEL
        .get_or_init(|| {
            let status = Command::new(env!("CARGO"))
                .current_dir(root())
                .args(["xtask", "build-wheel"])
                .status()
                .map_err(|e| format!("running cargo xtask build-wheel: {e}"))?;
            if !status.success() {
                return Err(format!("cargo xtask build-wheel failed: {status}"));
            }
            let prefix = format!("libdebugger-{}-", env!("CARGO_PKG_VERSION"));
            std::fs::read_dir(root().join("target/wheels"))
                .map_err(|e| format!("reading target/wheels: {e}"))?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
                })
                .ok_or_else(|| format!("no {prefix}*.whl in target/wheels"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A fresh virtual environment with the wheel (and, if asked, `posthog`) installed.
pub struct Venv {
    pub interp: Interpreter,
    pub dir: tempfile::TempDir,
}

/// Why a venv could not be made ready: a test failure, or (PyPI unreachable) a skip.
pub enum VenvError {
    /// Installing from PyPI failed: the test cannot run here.
    Skip(String),
    /// Anything else is a failure.
    Fail(anyhow::Error),
}

impl From<anyhow::Error> for VenvError {
    fn from(e: anyhow::Error) -> Self {
        VenvError::Fail(e)
    }
}

fn run_quiet(cmd: &mut Command, what: &str) -> Result<std::result::Result<(), String>> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot start"))?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
    Ok(Err(format!(
        "{what} failed ({}): {}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )))
}

impl Venv {
    /// `python -m venv`, then `pip install <wheel>` and, with `posthog`, the `posthog`
    /// package from PyPI.
    pub fn create(interp: &Interpreter, posthog: bool) -> std::result::Result<Self, VenvError> {
        let wheel = wheel()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("ldbg-venv-{}-", interp.label))
            .tempdir()
            .map_err(anyhow::Error::from)?;
        if let Err(e) = run_quiet(
            Command::new(&interp.path)
                .args(["-m", "venv"])
                .arg(dir.path()),
            &format!("{} -m venv", interp.label),
        )? {
            return Err(VenvError::Fail(anyhow::anyhow!(e)));
        }
        let venv = Venv {
            interp: interp.clone(),
            dir,
        };
        let pip = |args: &[&std::ffi::OsStr]| {
            let mut c = Command::new(venv.python());
            c.args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(args);
            c
        };
        if let Err(e) = run_quiet(
            &mut pip(&[wheel.as_os_str()]),
            &format!("{}: pip install {}", interp.label, wheel.display()),
        )? {
            return Err(VenvError::Fail(anyhow::anyhow!(e)));
        }
        if posthog
            && let Err(e) = run_quiet(
                &mut pip(&["posthog".as_ref()]),
                &format!("{}: pip install posthog (PyPI)", interp.label),
            )?
        {
            return Err(VenvError::Skip(e));
        }
        Ok(venv)
    }

    /// The environment's interpreter.
    pub fn python(&self) -> PathBuf {
        self.dir.path().join("bin/python")
    }

    /// Runs `tests/python/package/<script>` in this environment (working directory
    /// `tests/python`, so breakpoint paths like `package/<script>` match) with `env`; the
    /// script prints `RESULT <json>` or `SKIP <reason>`.
    pub fn run(&self, script: &str, env: &[(&str, &str)], timeout: Duration) -> Result<Outcome> {
        let cwd = root().join("tests/python");
        let mut cmd = Command::new(self.python());
        cmd.arg(cwd.join("package").join(script))
            .current_dir(&cwd)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("PYTHONPATH")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.python().display()))?;
        let label = format!("{} {script}", self.interp.label);
        let out = wait_output(child, timeout).with_context(|| label.clone())?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Some(r) = stdout.lines().find_map(|l| l.strip_prefix("SKIP ")) {
            return Ok(Outcome::Skip(r.to_string()));
        }
        if !out.status.success() {
            bail!(
                "{label} exited with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
                out.status
            );
        }
        let line = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("RESULT "))
            .with_context(|| {
                format!("{label}: no RESULT line\nstdout:\n{stdout}\nstderr:\n{stderr}")
            })?;
        Ok(Outcome::Result(serde_json::from_str(line).with_context(
            || format!("{label}: RESULT is not JSON: {line}\nstderr:\n{stderr}"),
        )?))
    }
}

/// Waits for `child` (deadline), collecting its output.
fn wait_output(mut child: std::process::Child, timeout: Duration) -> Result<std::process::Output> {
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
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
                "timed out after {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&t_err.join().unwrap_or_default())
            );
        }
        // Polling the child's exit; the deadline above bounds the wait.
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(std::process::Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}
