//! Running the measurement scripts of `xtask/bench/` (and the agent) as child processes: one
//! JSON object per stdout line, read with deadlines, children killed when dropped.
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// One CPython interpreter the figures run on.
#[derive(Clone, Debug)]
pub struct Python {
    /// "3.12.1"
    pub version: String,
    pub path: PathBuf,
}

/// The interpreters the figures are measured on: pyenv's 3.11.7, 3.12.1 and 3.13.0 (shared
/// libpython builds, like most production images). Missing ones are returned as errors so that
/// their rows say so.
pub fn interpreters() -> Vec<Result<Python, (String, String)>> {
    let home = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))
        .unwrap_or_else(|| PathBuf::from("/root/.pyenv"));
    ["3.11.7", "3.12.1", "3.13.0"]
        .into_iter()
        .map(|v| {
            let path = home.join("versions").join(v).join("bin/python3");
            if path.exists() {
                Ok(Python {
                    version: v.to_owned(),
                    path,
                })
            } else {
                Err((
                    v.to_owned(),
                    format!(
                        "interpreter missing: {} (pyenv install {v})",
                        path.display()
                    ),
                ))
            }
        })
        .collect()
}

/// The folder of the measurement scripts.
pub fn scripts_dir() -> PathBuf {
    crate::util::root().join("xtask/bench")
}

/// Marks benchmark processes in their command line (see `_benchlib.TAG`).
pub const TAG: &str = "--libdebugger-bench";

/// A running child whose stdout is read line by line on a thread.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    what: String,
    stderr_path: PathBuf,
}

impl Proc {
    /// Starts `cmd` with piped stdin/stdout; stderr goes to `<log_dir>/<name>.stderr`.
    pub fn spawn(mut cmd: Command, name: &str, log_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(log_dir)?;
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        // Program and arguments (not the environment `{cmd:?}` would show), for messages.
        let what = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe for {what}"))?;
        let stdin = child.stdin.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines: rx,
            what,
            stderr_path,
        })
    }

    /// Starts a script of `xtask/bench/` with `python`, tagged as a benchmark process.
    pub fn script(
        python: &Python,
        script: &str,
        args: &[String],
        env: &[(&str, String)],
        log_dir: &Path,
    ) -> Result<Self> {
        let mut cmd = Command::new(&python.path);
        cmd.arg(scripts_dir().join(script)).args(args).arg(TAG);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let name = format!(
            "{}-{}",
            script.trim_end_matches(".py"),
            python.version.replace('.', "_")
        );
        Self::spawn(cmd, &name, log_dir)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line that is a JSON object, within `timeout`. A `{"error": ...}` object
    /// becomes an error with that message; so does the process exiting first.
    pub fn next_json(&mut self, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    if !v.is_object() {
                        continue;
                    }
                    if let Some(e) = v.get("error").and_then(Value::as_str) {
                        bail!("{e}");
                    }
                    return Ok(v);
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("no result within {timeout:?} from {}", self.what)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    bail!(
                        "{} exited ({}) without a result; stderr: {}",
                        self.what,
                        status.map_or_else(|| "?".into(), |s| s.to_string()),
                        self.stderr_tail()
                    )
                }
            }
        }
    }

    /// The next stdout line within `timeout`; None once stdout is closed.
    pub fn next_line(&mut self, timeout: Duration) -> Result<Option<String>> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(Some(line)),
            Err(RecvTimeoutError::Timeout) => {
                bail!("no output within {timeout:?} from {}", self.what)
            }
            Err(RecvTimeoutError::Disconnected) => Ok(None),
        }
    }

    /// The next stdout JSON value (any JSON, not only objects), reading until the stream ends:
    /// `trace --json` pretty-prints one array over many lines.
    pub fn next_json_value(&mut self, timeout: Duration) -> Result<Value> {
        let mut text = String::new();
        let deadline = Instant::now() + timeout;
        while let Some(line) = self.next_line(deadline.saturating_duration_since(Instant::now()))? {
            text.push_str(&line);
            text.push('\n');
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                return Ok(v);
            }
        }
        serde_json::from_str(&text)
            .map_err(|e| anyhow!("no JSON from trace ({e}): {}", self.stderr_tail()))
    }

    /// Writes one line to the child's stdin (the `--wait-go` handshake).
    pub fn go(&mut self) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("stdin of {} is closed", self.what))?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for the child to exit, up to `timeout`; kills it after that.
    pub fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                bail!("{} did not exit within {timeout:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit (then SIGKILL).
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id(), libc::SIGTERM);
        }
        self.wait(timeout)
    }

    /// Whether the child has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the child's stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        if tail.is_empty() {
            "(empty)".into()
        } else {
            tail.join(" | ")
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Sends `sig` to `pid` (a child this process started).
pub fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and has no memory effects; `pid` is a child we
    // started and have not reaped yet, so it cannot have been recycled for another process.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Runs a script to completion and returns its last JSON object.
pub fn run_script(
    python: &Python,
    script: &str,
    args: &[String],
    env: &[(&str, String)],
    log_dir: &Path,
    timeout: Duration,
) -> Result<Value> {
    let mut p = Proc::script(python, script, args, env, log_dir)?;
    let v = p.next_json(timeout)?;
    p.wait(Duration::from_secs(10))?;
    Ok(v)
}

/// Converts `&["--a", "1"]`-like literals into owned arguments.
pub fn args<I: IntoIterator<Item = S>, S: ToString>(items: I) -> Vec<String> {
    items.into_iter().map(|s| s.to_string()).collect()
}

/// The number at `path` (a JSON pointer) in `v`.
pub fn num(v: &Value, path: &str) -> Result<f64> {
    v.pointer(path)
        .and_then(Value::as_f64)
        .ok_or_else(|| anyhow!("result has no number at {path}: {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn reads_json_lines_and_skips_other_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Proc::spawn(
            sh("echo starting; echo '[1]'; echo '{\"ready\": 7}'; read x; echo \"{\\\"got\\\": \\\"$x\\\"}\""),
            "t",
            dir.path(),
        )
        .expect("spawn");
        let v = p.next_json(Duration::from_secs(10)).expect("ready line");
        assert_eq!(v["ready"], 7);
        p.go().expect("go");
        let v = p.next_json(Duration::from_secs(10)).expect("result");
        assert_eq!(v["got"], "go");
        assert!(p.wait(Duration::from_secs(10)).expect("exit").success());
    }

    #[test]
    fn error_objects_and_early_exit_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Proc::spawn(
            sh("echo '{\"error\": \"helper not built\"}'"),
            "e",
            dir.path(),
        )
        .expect("spawn");
        let err = p
            .next_json(Duration::from_secs(10))
            .expect_err("error object");
        assert_eq!(err.to_string(), "helper not built");

        let mut p = Proc::spawn(sh("echo oops >&2; exit 4"), "x", dir.path()).expect("spawn");
        let err = p.next_json(Duration::from_secs(10)).expect_err("no result");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("without a result") && msg.contains("oops"),
            "{msg}"
        );
    }

    #[test]
    fn silence_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Proc::spawn(sh("read x"), "s", dir.path()).expect("spawn");
        let err = p
            .next_json(Duration::from_millis(200))
            .expect_err("timeout");
        assert!(err.to_string().contains("no result within"), "{err}");
        // Dropping the Proc kills the child (it would wait on stdin forever).
    }
}
