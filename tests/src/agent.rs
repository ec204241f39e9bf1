//! Running the real `libdebugger-agent` binary and real Python scripts, with deadlines.
use crate::python::Interpreter;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// True when running as root (the eBPF tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The agent binary under test: `ldbg-agent-under-test`, which `cargo test -p
/// libdebugger-tests` builds next to the test executables (`target/<profile>/`), running the
/// same `libdebugger_agent::cli::main` as `libdebugger-agent`.
pub fn agent_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // Test executables live in target/<profile>/deps/; binaries in target/<profile>/.
    exe.ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("ldbg-agent-under-test"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "ldbg-agent-under-test not found near {}: run the tests with `cargo test -p libdebugger-tests`",
                exe.display()
            )
        })
}

/// Lines of a child's stream, read on a thread so they can be awaited with a deadline.
pub struct Lines {
    rx: Receiver<String>,
    /// Every line seen so far (for failure messages).
    pub seen: Vec<String>,
}

impl Lines {
    pub fn new(stream: impl Read + Send + 'static) -> Self {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits until a line satisfying `pred` arrives; fails at the deadline or at end of stream.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "timed out after {timeout:?} waiting for {what}; saw: {:?}",
                        self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!(
                        "stream ended while waiting for {what}; saw: {:?}",
                        self.seen
                    )
                }
            }
        }
    }
}

/// A Python script running as a child: stdin piped (the script blocks reading it), stdout read
/// line by line. Killed on drop.
pub struct PyProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    pub stdout: Lines,
    /// The interpreter's host pid when it is not `child` (a container's).
    python_pid: Option<i32>,
}

impl PyProcess {
    /// Runs `python script` with the script's directory as working directory.
    pub fn start(python: &Path, script: &Path) -> Result<Self> {
        let mut cmd = Command::new(python);
        cmd.arg(script)
            .current_dir(script.parent().unwrap_or(Path::new("/")));
        Self::start_command(cmd)
    }

    /// Runs `script` (a host path) on `interp`, on the host or in its container, with the
    /// script's directory as working directory.
    pub fn start_on(interp: &Interpreter, script: &Path) -> Result<Self> {
        let mut cmd = interp.command(script.parent().unwrap_or(Path::new("/")));
        cmd.arg(interp.guest(script));
        Self::start_interp(interp, cmd)
    }

    /// Runs `cmd`, made by [`Interpreter::command`]; [`PyProcess::pid`] is then the
    /// interpreter's host pid also in a container.
    pub fn start_interp(interp: &Interpreter, cmd: Command) -> Result<Self> {
        let mut p = Self::start_command(cmd)?;
        if interp.in_container() {
            p.python_pid = Some(interp.python_pid(p.child.id())?);
        }
        Ok(p)
    }

    /// Runs a prepared command (stdin and stdout are piped here).
    pub fn start_command(mut cmd: Command) -> Result<Self> {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stdin = child.stdin.take();
        let stdout = Lines::new(child.stdout.take().context("python stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
            python_pid: None,
        })
    }

    /// The interpreter's host pid.
    pub fn pid(&self) -> i32 {
        self.python_pid.unwrap_or(self.child.id() as i32)
    }

    /// Writes one line to the script's stdin.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()?;
        Ok(())
    }
}

impl Drop for PyProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Output of one agent run.
#[derive(Debug)]
pub struct AgentOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the agent with `args` to completion (deadline `timeout`).
pub fn run_agent(args: &[&str], timeout: Duration) -> Result<AgentOutput> {
    let mut child = Command::new(agent_binary()?)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting libdebugger-agent")?;
    let out = collect(&mut child);
    let err = collect_err(&mut child);
    let status = wait_with_deadline(&mut child, timeout)?;
    Ok(AgentOutput {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn collect(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut s = child.stdout.take();
    std::thread::spawn(move || {
        let mut buf = String::new();
        if let Some(s) = s.as_mut() {
            let _ = s.read_to_string(&mut buf);
        }
        buf
    })
}

fn collect_err(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut s = child.stderr.take();
    std::thread::spawn(move || {
        let mut buf = String::new();
        if let Some(s) = s.as_mut() {
            let _ = s.read_to_string(&mut buf);
        }
        buf
    })
}

/// Waits for `child` to exit; kills it and fails at the deadline.
pub fn wait_with_deadline(
    child: &mut Child,
    timeout: Duration,
) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("libdebugger-agent did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `trace` whose readiness line was seen: the probe is attached.
pub struct RunningTrace {
    child: Child,
    stdout: Option<std::thread::JoinHandle<String>>,
    pub stderr: Lines,
}

impl RunningTrace {
    /// Starts `libdebugger-agent trace <pid> --json <extra...>` and waits (deadline) for its
    /// readiness line on stderr.
    pub fn start(pid: i32, extra: &[&str]) -> Result<Self> {
        let pid_s = pid.to_string();
        let mut args = vec!["trace", pid_s.as_str(), "--json"];
        args.extend_from_slice(extra);
        let mut child = Command::new(agent_binary()?)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting libdebugger-agent trace")?;
        let stdout = collect(&mut child);
        let mut stderr = Lines::new(child.stderr.take().context("agent stderr")?);
        stderr.wait_for("the trace readiness line", Duration::from_secs(60), |l| {
            l.starts_with("libdebugger-agent: tracing pid")
        })?;
        Ok(Self {
            child,
            stdout: Some(stdout),
            stderr,
        })
    }

    /// Waits for the trace to finish; returns its exit status and stdout.
    pub fn finish(mut self, timeout: Duration) -> Result<(std::process::ExitStatus, String)> {
        let status = wait_with_deadline(&mut self.child, timeout)?;
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok((status, stdout))
    }
}

impl Drop for RunningTrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
