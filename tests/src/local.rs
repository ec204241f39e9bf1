//! End-to-end support for the agent's local mode: a real `libdebugger-agent run` scoped to the
//! test's own Python processes, its events file, its control socket, and a small expectation DSL.
//!
//! ```ignore
//! let mut s = Scenario::new("file-hit")
//!     .interpreters(python::supported())
//!     .breakpoint(Bp::marker("agent_mod.py", "BP:checkout").id("co"))
//!     .start()?;
//! s.each_target(|t| t.cmd("workers 1", "workers"))?;
//! s.expect_hit("co", |hit| hit.local("total") == json!(42))?;
//! ```
//!
//! Every wait has a deadline; nothing sleeps for a fixed time to "let things settle".
use crate::agent::{agent_binary, workspace_root};
use crate::python::Interpreter;
use anyhow::{Context, Result, bail};
use libdebugger_agent::control::{self, Request};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// How long an agent may take to come up (load eBPF, scan /proc) on a loaded machine.
pub const AGENT_START: Duration = Duration::from_secs(60);
/// Default deadline for an expected event.
pub const EVENT_WAIT: Duration = Duration::from_secs(20);

/// Why an end-to-end agent test cannot run here, if it cannot ([`crate::skip::agent_env`]).
pub fn skip_reason() -> Option<String> {
    crate::skip::agent_env()
}

/// Returns early (skipping the test with one line) when the machine cannot run it.
#[macro_export]
macro_rules! require_agent_env {
    () => {
        $crate::skip_if!($crate::skip::agent_env())
    };
}

/// `tests/python/<name>`.
pub fn script(name: &str) -> PathBuf {
    workspace_root().join("tests/python").join(name)
}

/// The 1-based line of `tests/python/<file>` that carries `# <marker>`.
pub fn marker_line(file: &str, marker: &str) -> Result<u32> {
    let text = std::fs::read_to_string(script(file))?;
    let needle = format!("# {marker}");
    text.lines()
        .position(|l| l.contains(&needle))
        .map(|i| i as u32 + 1)
        .with_context(|| format!("no `{needle}` in {file}"))
}

/// One breakpoint as written to the breakpoints file or added from the CLI.
#[derive(Clone, Debug)]
pub struct Bp {
    pub id: String,
    pub file: String,
    pub line: u32,
    pub condition: Option<String>,
    /// A logpoint's message (then a `[[logpoint]]`).
    pub message: Option<String>,
}

impl Bp {
    /// A breakpoint on the line of `tests/python/<file>` marked `# <marker>`; the file is given
    /// as the suffix `python/<file>` (matched at a path boundary).
    pub fn marker(file: &str, marker: &str) -> Self {
        let line = marker_line(file, marker).unwrap_or(0);
        Self::at(&format!("python/{file}"), line)
    }

    pub fn at(file: &str, line: u32) -> Self {
        Self {
            id: format!("{file}:{line}"),
            file: file.into(),
            line,
            condition: None,
            message: None,
        }
    }

    /// Makes it a logpoint with this message.
    pub fn log(mut self, message: &str) -> Self {
        self.message = Some(message.into());
        self
    }

    pub fn id(mut self, id: &str) -> Self {
        self.id = id.into();
        self
    }

    pub fn condition(mut self, c: &str) -> Self {
        self.condition = Some(c.into());
        self
    }

    fn toml(&self) -> String {
        let table = if self.message.is_some() {
            "logpoint"
        } else {
            "breakpoint"
        };
        let mut s = format!(
            "[[{table}]]\nid = {:?}\nfile = {:?}\nline = {}\n",
            self.id, self.file, self.line
        );
        if let Some(c) = &self.condition {
            s.push_str(&format!("condition = {c:?}\n"));
        }
        if let Some(m) = &self.message {
            s.push_str(&format!("message = {m:?}\n"));
        }
        s
    }
}

/// The breakpoints file's TOML for `bps`.
pub fn breakpoints_toml(bps: &[Bp]) -> String {
    bps.iter().map(Bp::toml).collect::<Vec<_>>().join("\n")
}

/// A target process running `tests/python/agent_target.py` (see its docstring for commands).
pub struct Target {
    pub interp: Interpreter,
    pub proc: crate::agent::PyProcess,
}

impl Target {
    /// Starts the target and waits for its `ready` line. `tag` goes on its command line (for
    /// `--cmdline` scoping; forked children keep it).
    pub fn start(interp: &Interpreter, tag: &str) -> Result<Self> {
        Self::start_with(interp, tag, &[])
    }

    /// Starts the target under `wrapper` (e.g. `["unshare", "--mount", "--"]`); the wrapper
    /// must end up exec'ing the interpreter with the arguments that follow it.
    pub fn start_with(interp: &Interpreter, tag: &str, wrapper: &[&str]) -> Result<Self> {
        let script = script("agent_target.py");
        let cwd = script.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut cmd = interp.command_with(&cwd, wrapper);
        cmd.arg(interp.guest(&script)).arg(tag);
        let proc = crate::agent::PyProcess::start_interp(interp, cmd)?;
        let mut t = Self {
            interp: interp.clone(),
            proc,
        };
        t.proc
            .stdout
            .wait_for("the target's ready line", Duration::from_secs(30), |l| {
                l.starts_with("ready ")
            })?;
        Ok(t)
    }

    /// The Python process's host pid (for a wrapped target on the host, the pid the ready line
    /// printed; in a container that line has the pid inside it).
    pub fn pid(&self) -> i32 {
        if self.interp.in_container() {
            return self.proc.pid();
        }
        self.proc
            .stdout
            .seen
            .iter()
            .find_map(|l| l.strip_prefix("ready ")?.trim().parse().ok())
            .unwrap_or_else(|| self.proc.pid())
    }

    /// The host pid of a process this target started and reported by its own `os.getpid()`:
    /// the same number on the host, the descendant whose innermost `NSpid` it is in a container.
    pub fn host_pid(&self, pid_inside: i32) -> Result<i32> {
        if !self.interp.in_container() {
            return Ok(pid_inside);
        }
        let what = format!(
            "{}: a descendant of {} that is pid {pid_inside} in its namespace",
            self.interp.label,
            self.pid()
        );
        crate::wait::until(&what, Duration::from_secs(10), || {
            crate::python::host_pid_of(self.pid(), pid_inside).ok_or("no such descendant yet")
        })
    }

    /// Sends `command` and waits for the answer line starting with `reply`; returns the rest.
    pub fn cmd(&mut self, command: &str, reply: &str) -> Result<String> {
        self.proc.send_line(command)?;
        let prefix = format!("{reply} ");
        let label = format!("{}: reply `{reply}` to `{command}`", self.interp.label);
        let line = self
            .proc
            .stdout
            .wait_for(&label, Duration::from_secs(30), |l| {
                l.starts_with(&prefix) || l == reply
            })?;
        Ok(line
            .strip_prefix(&prefix)
            .unwrap_or_default()
            .trim()
            .to_string())
    }

    /// Still running (not a zombie).
    pub fn alive(&self) -> bool {
        process_alive(self.pid())
    }
}

/// True while `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Distinct helper files (memfd inodes) mapped into `pid`: 1 after an injection, whatever the
/// number of agents that attached.
pub fn helper_mappings(pid: i32) -> Result<usize> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut inodes: Vec<&str> = maps
        .lines()
        .filter(|l| l.contains("libdebugger-helper") || l.contains("libdebugger_helper"))
        .filter_map(|l| l.split_whitespace().nth(4))
        .collect();
    inodes.sort_unstable();
    inodes.dedup();
    Ok(inodes.len())
}

/// How the agent is started.
#[derive(Clone, Debug, Default)]
pub struct AgentConfig {
    pub pids: Vec<i32>,
    pub cmdline: Option<String>,
    /// Initial breakpoints file contents; `None` = CLI-only mode (no `--breakpoints`).
    pub breakpoints: Option<String>,
    /// More arguments for `run`, e.g. `--source-root DIR`.
    pub extra_args: Vec<String>,
}

/// A running `libdebugger-agent run` in its own temp directories (runtime, state, files).
pub struct Agent {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: AgentConfig,
    pub stderr_path: PathBuf,
}

impl Agent {
    pub fn breakpoints_path(&self) -> PathBuf {
        self.dir.path().join("breakpoints.toml")
    }
    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("agent.sock")
    }

    /// Starts an agent in fresh temp directories and waits until it answers `status`.
    pub fn start(config: AgentConfig) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("ldbg-e2e-").tempdir()?;
        let mut agent = Self {
            child: None,
            stderr_path: dir.path().join("agent.stderr"),
            dir,
            config,
        };
        if let Some(text) = &agent.config.breakpoints {
            std::fs::write(agent.breakpoints_path(), text)?;
        }
        agent.spawn()?;
        Ok(agent)
    }

    /// (Re)starts the agent process with the same directories and configuration.
    pub fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(agent_binary()?);
        cmd.arg("run").arg("--events-file").arg(self.events_path());
        if self.config.breakpoints.is_some() {
            cmd.arg("--breakpoints").arg(self.breakpoints_path());
        }
        for pid in &self.config.pids {
            cmd.arg("--pid").arg(pid.to_string());
        }
        if let Some(re) = &self.config.cmdline {
            cmd.arg("--cmdline").arg(re);
        }
        cmd.args(&self.config.extra_args);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)?;
        cmd.env("LIBDEBUGGER_RUNTIME_DIR", self.runtime_dir())
            .env("LIBDEBUGGER_STATE_DIR", self.dir.path().join("state"))
            .env(
                "LIBDEBUGGER_HELPER",
                crate::helper::helper_dir()?.join("libdebugger_helper.abi3.so"),
            )
            .env("RUST_LOG", "info,libdebugger_agent=debug")
            .env_remove("POSTHOG_API_KEY")
            .env_remove("POSTHOG_PERSONAL_API_KEY")
            .env_remove("POSTHOG_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        self.child = Some(cmd.spawn().context("starting libdebugger-agent run")?);
        self.wait_status("the agent to answer status", AGENT_START, |s| {
            s.get("processes").is_some()
        })?;
        Ok(())
    }

    /// The agent's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Last `n` lines of the agent's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// One control request.
    pub fn call(&self, req: &Request) -> Result<Value> {
        control::call(&self.socket(), req).map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn status(&self) -> Result<Value> {
        self.call(&Request::Status)
    }

    /// Polls `status` until `pred` holds (deadline).
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        loop {
            if let Some(child) = &self.child
                && let Ok(Some(_)) = self.child_status(child.id())
            {
                bail!(
                    "the agent exited while waiting for {what}; log:\n{}",
                    self.log_tail(40)
                );
            }
            if let Ok(s) = self.status() {
                if pred(&s) {
                    return Ok(s);
                }
                last = s;
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; last status: {last:#}\nagent log:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn child_status(&self, pid: u32) -> Result<Option<()>> {
        Ok((!process_alive(pid as i32)).then_some(()))
    }

    /// Runs the agent's CLI (`break ...`, `status`, `tail`) against this agent's socket.
    pub fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        let out = Command::new(agent_binary()?)
            .args(args)
            .env("LIBDEBUGGER_RUNTIME_DIR", self.runtime_dir())
            .output()
            .context("running the agent CLI")?;
        Ok(CliOutput {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        })
    }

    /// Rewrites the breakpoints file atomically (temp file + rename in the same directory).
    pub fn write_breakpoints(&self, text: &str) -> Result<()> {
        let tmp = self.dir.path().join(".breakpoints.toml.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.breakpoints_path())?;
        Ok(())
    }

    /// Every event in the events file so far.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.events_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for an event satisfying `pred` in the events file (deadline).
    pub fn wait_event(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(&pred) {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                let events = self.events();
                let summary: Vec<String> = events
                    .iter()
                    .rev()
                    .take(12)
                    .map(|e| {
                        format!(
                            "{} {} {} pid={}",
                            e["event"],
                            e["properties"]["$breakpoint_id"],
                            e["properties"]["$status"],
                            e["properties"]["$pid"]
                        )
                    })
                    .collect();
                bail!(
                    "timed out after {timeout:?} waiting for {what}; {} events, last: {summary:#?}\nstatus: {:#}\nagent log:\n{}",
                    events.len(),
                    self.status().unwrap_or(Value::Null),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for a hit of breakpoint `id` from `pid` that satisfies `pred`.
    pub fn wait_hit(&self, id: &str, pid: i32, pred: impl Fn(&Hit) -> bool) -> Result<Hit> {
        let what = format!("a hit of {id} from pid {pid}");
        self.wait_event(&what, EVENT_WAIT, |e| {
            let h = Hit(e.clone());
            h.is_hit() && h.breakpoint_id() == id && h.pid() == pid && pred(&h)
        })
        .map(Hit)
    }

    /// Hits of `id` from `pid` in the events file so far.
    pub fn hits(&self, id: &str, pid: i32) -> Vec<Hit> {
        self.events()
            .into_iter()
            .map(Hit)
            .filter(|h| h.is_hit() && h.breakpoint_id() == id && h.pid() == pid)
            .collect()
    }

    /// Waits until breakpoint `id` is `status` in `pid` (per-process status in `status --json`).
    pub fn wait_armed_in(&self, id: &str, pid: i32, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        self.wait_status(&format!("{id} armed in pid {pid}"), timeout, |s| {
            bp_process(s, id, pid)
                .is_some_and(|p| p["status"] == "armed" && p["code_objects"].as_u64() > Some(0))
        })?;
        Ok(start.elapsed())
    }

    /// Sends SIGTERM and waits (deadline) for the agent to exit.
    pub fn sigterm(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("agent not running")?;
        // SAFETY: kill has no memory preconditions; the pid is our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = crate::agent::wait_with_deadline(child, timeout)?;
        self.child = None;
        Ok(status)
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) -> Result<()> {
        let mut child = self.child.take().context("agent not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in `sigterm`.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if crate::agent::wait_with_deadline(&mut child, Duration::from_secs(10)).is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One breakpoint's entry in `status --json` / `break list --json`.
pub fn bp_entry<'a>(status_or_list: &'a Value, id: &str) -> Option<&'a Value> {
    let list = status_or_list
        .get("breakpoints")
        .unwrap_or(status_or_list)
        .as_array()?;
    list.iter().find(|b| b["id"] == id)
}

/// The per-process part of a breakpoint's status entry.
pub fn bp_process<'a>(status: &'a Value, id: &str, pid: i32) -> Option<&'a Value> {
    bp_entry(status, id)?["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)
}

/// A process's entry in `status --json`.
pub fn process_entry(status: &Value, pid: i32) -> Option<&Value> {
    status["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)
}

/// Output of one CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("CLI output is not JSON: {self:?}"))
    }
}

/// A `$data_breakpoint_hit` event with readable accessors.
#[derive(Clone, Debug)]
pub struct Hit(pub Value);

impl Hit {
    pub fn props(&self) -> &Value {
        &self.0["properties"]
    }
    pub fn is_hit(&self) -> bool {
        self.0["event"] == "$data_breakpoint_hit"
    }
    pub fn breakpoint_id(&self) -> &str {
        self.props()["$breakpoint_id"].as_str().unwrap_or_default()
    }
    pub fn pid(&self) -> i32 {
        self.props()["$pid"].as_i64().unwrap_or(-1) as i32
    }
    /// A local's value, decoded from the JSON string (jsonpickle's encoding) the hit carries
    /// (`Null` when absent or not such a string).
    pub fn local(&self, name: &str) -> Value {
        self.props()["$locals_variables"][name]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null)
    }
    /// `(file, function, line)` frames, innermost first, read from PostHog's frame objects.
    pub fn stack(&self) -> Vec<(String, String, u64)> {
        self.props()["$stack_trace"]
            .as_array()
            .map(|frames| {
                frames
                    .iter()
                    .map(|f| {
                        (
                            f["file"].as_str().unwrap_or_default().to_string(),
                            f["function"].as_str().unwrap_or_default().to_string(),
                            f["line"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC timestamp `YYYY-MM-DDTHH:MM:SS.fffZ`.
pub fn rfc3339_ms(ts: &str) -> Option<i64> {
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A scenario: targets on some interpreters, one agent scoped to them, breakpoints.
pub struct Scenario {
    name: String,
    interpreters: Vec<Interpreter>,
    breakpoints: Option<Vec<Bp>>,
    setup: Vec<String>,
    by_cmdline: bool,
    agent_args: Vec<String>,
}

/// A started scenario.
pub struct Running {
    pub name: String,
    pub targets: Vec<Target>,
    pub agent: Agent,
}

impl Scenario {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            interpreters: crate::python::supported(),
            breakpoints: Some(Vec::new()),
            setup: Vec::new(),
            by_cmdline: false,
            agent_args: Vec::new(),
        }
    }

    /// Targets on these interpreters (default: every supported one).
    pub fn interpreters(mut self, i: Vec<Interpreter>) -> Self {
        self.interpreters = i;
        self
    }

    /// A breakpoint in the initial breakpoints file.
    pub fn breakpoint(mut self, bp: Bp) -> Self {
        self.breakpoints.get_or_insert_with(Vec::new).push(bp);
        self
    }

    /// No breakpoints file: breakpoints come from the CLI only.
    pub fn cli_only(mut self) -> Self {
        self.breakpoints = None;
        self
    }

    /// A target command run (and its reply awaited) before the agent starts, e.g. `workers 2`.
    pub fn before_agent(mut self, command: &str) -> Self {
        self.setup.push(command.into());
        self
    }

    /// More arguments for the agent's `run`.
    pub fn agent_args(mut self, args: &[&str]) -> Self {
        self.agent_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Scope the agent with `--cmdline <unique tag>` instead of `--pid` (so forked children
    /// are debugged too).
    pub fn scope_by_cmdline(mut self) -> Self {
        self.by_cmdline = true;
        self
    }

    pub fn start(self) -> Result<Running> {
        let tag = unique_tag(&self.name);
        let mut targets = Vec::new();
        for interp in &self.interpreters {
            let mut t = Target::start(interp, &tag)?;
            for c in &self.setup {
                let word = c.split_whitespace().next().unwrap_or_default();
                t.cmd(c, word)?;
            }
            targets.push(t);
        }
        let agent = Agent::start(AgentConfig {
            pids: if self.by_cmdline {
                Vec::new()
            } else {
                targets.iter().map(Target::pid).collect()
            },
            cmdline: self.by_cmdline.then(|| format!("agent_target\\.py {tag}$")),
            breakpoints: self.breakpoints.as_deref().map(breakpoints_toml),
            extra_args: self.agent_args,
        })?;
        Ok(Running {
            name: self.name,
            targets,
            agent,
        })
    }
}

impl Running {
    /// Runs `f` on every target, naming the interpreter in any error.
    pub fn each_target(&mut self, mut f: impl FnMut(&mut Target) -> Result<()>) -> Result<()> {
        for t in &mut self.targets {
            let label = t.interp.label.clone();
            f(t).with_context(|| format!("[{}] on {label}", self.name))?;
        }
        Ok(())
    }

    /// Waits until `id` is armed in every target; returns the slowest wait.
    pub fn wait_armed(&self, id: &str) -> Result<Duration> {
        let mut slowest = Duration::ZERO;
        for t in &self.targets {
            let took = self
                .agent
                .wait_armed_in(id, t.pid(), EVENT_WAIT)
                .with_context(|| format!("[{}] on {}", self.name, t.interp.label))?;
            slowest = slowest.max(took);
        }
        Ok(slowest)
    }

    /// Expects a hit of `id` from every target; `check` returns an error describing what is
    /// wrong with the hit.
    pub fn expect_hit(&self, id: &str, check: impl Fn(&Target, &Hit) -> Result<()>) -> Result<()> {
        for t in &self.targets {
            let hit = self
                .agent
                .wait_hit(id, t.pid(), |_| true)
                .with_context(|| format!("[{}] on {}", self.name, t.interp.label))?;
            check(t, &hit).with_context(|| {
                format!(
                    "[{}] on {}: unexpected hit {:#}",
                    self.name, t.interp.label, hit.0
                )
            })?;
        }
        Ok(())
    }
}

/// A tag unique to this test run and scenario, for a target's command line.
pub fn unique_tag(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("ldbg-e2e-{name}-{}-{n}", std::process::id())
}

/// For each pid, how long after `since` breakpoint `id` was first seen armed there (polling
/// `status`; deadline `timeout`).
pub fn arm_times(
    agent: &Agent,
    id: &str,
    pids: &[i32],
    since: Instant,
    timeout: Duration,
) -> Result<Vec<Duration>> {
    let mut times: Vec<Option<Duration>> = vec![None; pids.len()];
    let deadline = since + timeout;
    loop {
        if let Ok(s) = agent.status() {
            let now = since.elapsed();
            for (i, pid) in pids.iter().enumerate() {
                if times[i].is_none()
                    && bp_process(&s, id, *pid).is_some_and(|p| p["status"] == "armed")
                {
                    times[i] = Some(now);
                }
            }
            if times.iter().all(Option::is_some) {
                return Ok(times.into_iter().flatten().collect());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{id} not armed in every pid of {pids:?} within {timeout:?}: {times:?}\nstatus: {s:#}\nagent log:\n{}",
                    agent.log_tail(40)
                );
            }
        } else if Instant::now() >= deadline {
            bail!(
                "the agent stopped answering status; log:\n{}",
                agent.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The web UI's tests (`ui_api.rs`, `ui_browser.rs`).
impl Agent {
    /// Starts an agent that debugs `pid` only and serves the web UI on a free loopback port.
    pub fn start_with_ui(pid: i32) -> Result<Self> {
        Self::start(AgentConfig {
            pids: vec![pid],
            extra_args: vec!["--ui".into(), "127.0.0.1:0".into()],
            ..AgentConfig::default()
        })
    }

    /// The URL (with its token) the agent wrote for its web UI, waited for with a deadline.
    pub fn ui_url(&self) -> Result<String> {
        let file = self.runtime_dir().join("ui.url");
        crate::wait::until(
            &format!("the agent to write {}", file.display()),
            Duration::from_secs(10),
            || match std::fs::read_to_string(&file) {
                Ok(s) => Ok(s.trim().to_string()),
                Err(e) => Err(format!("{e}; agent log:\n{}", self.log_tail(20))),
            },
        )
    }
}
