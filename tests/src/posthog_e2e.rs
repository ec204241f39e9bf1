//! Support for the PostHog-mode end-to-end tests (`tests/tests/posthog_e2e.rs`): the real agent
//! in PostHog mode against [`crate::posthog_server::PosthogServer`], scoped to one real Python
//! target (`tests/fixtures/posthog/target.py`), with its own control socket and spool.
use crate::agent::{Lines, agent_binary, is_root};
use crate::posthog_server::{PERSONAL_KEY, PROJECT_ID, PROJECT_KEY, PosthogServer};
use crate::python::Interpreter;
use anyhow::{Context, Result, bail};
use parking_lot::{Condvar, Mutex};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The fixtures of these tests.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/posthog")
}

/// The breakpoint's file as PostHog's UI names it: repository-relative.
pub const HANDLERS: &str = "app/handlers.py";

/// The line of `app/handlers.py` carrying `# LINE: <name>`.
pub fn marked_line(name: &str) -> Result<u32> {
    let path = fixtures().join(HANDLERS);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let marker = format!("# LINE: {name}");
    text.lines()
        .position(|l| l.trim_end().ends_with(&marker))
        .map(|i| i as u32 + 1)
        .with_context(|| format!("no `{marker}` in {}", path.display()))
}

/// Why this machine cannot run the PostHog end-to-end tests, if it cannot.
pub fn skip_reason() -> Option<String> {
    if !is_root() {
        return Some("PostHog e2e tests need root (ptrace injection, eBPF)".into());
    }
    let helper = crate::agent::workspace_root().join("target/helper/libdebugger_helper.abi3.so");
    if !helper.exists() {
        return Some(format!(
            "PostHog e2e tests need the helper at {} (run `cargo xtask build-helper`)",
            helper.display()
        ));
    }
    None
}

/// A breakpoint object as PostHog's active-breakpoints endpoint returns it.
pub fn breakpoint(id: &str, line: u32, condition: Option<&str>, enabled: bool) -> Value {
    json!({
        "id": id,
        "repository": "acme/shop",
        "filename": HANDLERS,
        "line_number": line,
        "enabled": enabled,
        "condition": condition,
    })
}

/// The Python target: `target.py` on `interp`, driven through stdin.
pub struct Target {
    child: Child,
    pid: i32,
    stdin: Option<ChildStdin>,
    pub stdout: Lines,
    /// Label of the interpreter.
    pub label: String,
    /// The absolute path the process sees for `app/handlers.py`.
    pub handlers_path: String,
}

impl Target {
    /// Starts the target and waits for its `ready` line.
    pub fn start(interp: &Interpreter) -> Result<Self> {
        let script = fixtures().join("target.py");
        let mut child = interp
            .command(&fixtures())
            .arg(interp.guest(&script))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {}", interp.label, script.display()))?;
        let stdin = child.stdin.take();
        let stdout = Lines::new(child.stdout.take().context("target stdout")?);
        let pid = interp.python_pid(child.id())?;
        let mut t = Self {
            child,
            pid,
            stdin,
            stdout,
            label: interp.label.clone(),
            handlers_path: String::new(),
        };
        let ready = t
            .stdout
            .wait_for("the target's ready line", Duration::from_secs(20), |l| {
                l.starts_with("ready ")
            })?;
        t.handlers_path = ready.split_whitespace().nth(2).unwrap_or("").to_owned();
        Ok(t)
    }

    /// The interpreter's host pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("target stdin closed")?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// `burst n`: runs the breakpoint line `n` times; returns the seq numbers it used.
    pub fn burst(&mut self, n: u32) -> Result<std::ops::RangeInclusive<u64>> {
        self.send(&format!("burst {n}"))?;
        let line = self
            .stdout
            .wait_for("the burst to finish", Duration::from_secs(20), |l| {
                l.starts_with("burst ")
            })?;
        let mut it = line.split_whitespace().skip(1).map(|v| v.parse::<u64>());
        match (it.next(), it.next()) {
            (Some(Ok(a)), Some(Ok(b))) => Ok(a..=b),
            _ => bail!("bad burst line {line:?}"),
        }
    }

    /// `loop hz`: runs the line continuously until [`Target::stop_loop`].
    pub fn start_loop(&mut self, hz: u32) -> Result<()> {
        self.send(&format!("loop {hz}"))?;
        self.stdout
            .wait_for("the loop to start", Duration::from_secs(10), |l| {
                l == "looping"
            })?;
        Ok(())
    }

    /// Stops the loop.
    pub fn stop_loop(&mut self) -> Result<()> {
        self.send("stop")?;
        self.stdout
            .wait_for("the loop to stop", Duration::from_secs(10), |l| {
                l.starts_with("stopped")
            })?;
        Ok(())
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's stderr, kept whole and awaitable.
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Log {
    fn follow(&self, stream: impl std::io::Read + Send + 'static) {
        let inner = self.inner.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                if std::env::var_os("LDBG_E2E_ECHO").is_some() {
                    eprintln!("agent| {line}");
                }
                inner.0.lock().push(line);
                inner.1.notify_all();
            }
        });
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.inner.0.lock().clone()
    }

    /// Lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.inner
            .0
            .lock()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Lines containing every one of `needles`.
    pub fn count_all(&self, needles: &[&str]) -> usize {
        self.inner
            .0
            .lock()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits until at least `n` lines contain `needle`.
    pub fn wait_count(&self, needle: &str, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.inner.0.lock();
        loop {
            if lines.iter().filter(|l| l.contains(needle)).count() >= n {
                return Ok(());
            }
            if self.inner.1.wait_until(&mut lines, deadline).timed_out() {
                bail!(
                    "fewer than {n} agent log lines containing {needle:?} within {timeout:?}; \
                     log:\n{}",
                    lines.join("\n")
                );
            }
        }
    }

    /// Waits until a line contains `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.inner.0.lock();
        loop {
            if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
                return Ok(l.clone());
            }
            if self.inner.1.wait_until(&mut lines, deadline).timed_out() {
                bail!(
                    "no agent log line containing {needle:?} within {timeout:?}; log:\n{}",
                    lines.join("\n")
                );
            }
        }
    }
}

/// Options of one agent run.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Seconds between breakpoint fetches.
    pub poll_interval: f64,
    /// The personal API key the agent uses.
    pub personal_key: String,
    /// The project API key the agent uses.
    pub project_key: String,
    /// `LIBDEBUGGER_LOG` (default: info, debug for delivery and the poller; `LDBG_E2E_LOG`
    /// overrides it).
    pub log_filter: Option<String>,
    /// Read breakpoints from PostHog (`--posthog-personal-api-key`, `--posthog-project-id`);
    /// without, hits go to PostHog and breakpoints come from `extra_args`' sources.
    pub posthog_breakpoints: bool,
    /// More arguments of `run` (`--breakpoints DIR`, `--breakpoints-url URL`, ...).
    pub extra_args: Vec<String>,
    /// More environment variables of the agent.
    pub env: Vec<(String, String)>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            poll_interval: 0.2,
            personal_key: PERSONAL_KEY.into(),
            project_key: PROJECT_KEY.into(),
            log_filter: None,
            posthog_breakpoints: true,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A directory for one agent's state: `run/` (control socket), `state/` (spool), `agent.toml`
/// (empty, so the host's /etc/libdebugger/agent.toml is not read).
pub struct AgentDirs {
    pub dir: tempfile::TempDir,
}

impl AgentDirs {
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("ldbg-ph-e2e-").tempdir()?;
        std::fs::write(dir.path().join("agent.toml"), "")?;
        Ok(Self { dir })
    }
    pub fn runtime(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn spool(&self) -> PathBuf {
        self.state().join("spool")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }
}

/// The agent in PostHog mode, scoped to one pid. Killed (SIGKILL) on drop.
pub struct PosthogAgent {
    child: Child,
    pub log: Log,
    runtime_dir: PathBuf,
    pub distinct_id: String,
}

impl PosthogAgent {
    /// Starts `libdebugger-agent run` against `server` for `pid`, and waits for "agent running".
    pub fn start(
        server: &PosthogServer,
        pid: i32,
        dirs: &AgentDirs,
        opts: &AgentOptions,
    ) -> Result<Self> {
        Self::start_for(server, &[pid], dirs, opts)
    }

    /// [`PosthogAgent::start`] for several processes.
    pub fn start_for(
        server: &PosthogServer,
        pids: &[i32],
        dirs: &AgentDirs,
        opts: &AgentOptions,
    ) -> Result<Self> {
        let distinct_id = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let mut cmd = Command::new(agent_binary()?);
        cmd.arg("run");
        for pid in pids {
            cmd.args(["--pid", &pid.to_string()]);
        }
        cmd.arg("--config-file")
            .arg(dirs.config())
            .args(["--posthog-host", &server.url()])
            .args(["--posthog-api-key", &opts.project_key]);
        if opts.posthog_breakpoints {
            cmd.args(["--posthog-personal-api-key", &opts.personal_key])
                .args(["--posthog-project-id", &PROJECT_ID.to_string()]);
        }
        cmd.args(&opts.extra_args)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .args(["--poll-interval", &opts.poll_interval.to_string()])
            .args(["--distinct-id", &distinct_id])
            .arg("--spool-dir")
            .arg(dirs.spool())
            .arg("--socket")
            .arg(dirs.runtime().join("agent.sock"))
            .env("LIBDEBUGGER_RUNTIME_DIR", dirs.runtime())
            .env("LIBDEBUGGER_STATE_DIR", dirs.state())
            .env(
                "LIBDEBUGGER_LOG",
                std::env::var("LDBG_E2E_LOG")
                    .ok()
                    .or_else(|| opts.log_filter.clone())
                    .unwrap_or_else(|| {
                        "info,libdebugger_agent::delivery=debug,libdebugger_agent::posthog=debug"
                            .into()
                    }),
            )
            .env("NO_COLOR", "1");
        for var in [
            "POSTHOG_HOST",
            "POSTHOG_API_HOST",
            "POSTHOG_INGEST_HOST",
            "POSTHOG_API_KEY",
            "POSTHOG_PERSONAL_API_KEY",
            "POSTHOG_PROJECT_ID",
            "LIBDEBUGGER_POLL_INTERVAL",
            "LIBDEBUGGER_SPOOL_DIR",
            "LIBDEBUGGER_CONFIG",
            "LIBDEBUGGER_HELPER",
            "LIBDEBUGGER_BREAKPOINTS_TOKEN",
        ] {
            if opts.env.iter().any(|(k, _)| k == var) {
                continue;
            }
            cmd.env_remove(var);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting libdebugger-agent run")?;
        let log = Log::default();
        log.follow(child.stderr.take().context("agent stderr")?);
        let mut agent = Self {
            child,
            log,
            runtime_dir: dirs.runtime(),
            distinct_id,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if agent.log.count("agent running") > 0 {
                return Ok(agent);
            }
            if let Ok(Some(st)) = agent.child.try_wait() {
                bail!(
                    "the agent exited ({st}) before running; log:\n{}",
                    agent.log.lines().join("\n")
                );
            }
            let _ = agent
                .log
                .wait_for("agent running", Duration::from_millis(100));
        }
        bail!(
            "the agent did not start within 30 s; log:\n{}",
            agent.log.lines().join("\n")
        )
    }

    /// `libdebugger-agent status --json` of this agent.
    pub fn status(&self) -> Result<Value> {
        let out = Command::new(agent_binary()?)
            .args(["status", "--json"])
            .env("LIBDEBUGGER_RUNTIME_DIR", &self.runtime_dir)
            .output()
            .context("running libdebugger-agent status --json")?;
        if !out.status.success() {
            bail!(
                "status --json failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("status --json is not JSON")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// True while the agent runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for PosthogAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Hit events of breakpoint `id` among `events`.
pub fn hits<'a>(events: &'a [Value], id: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events.iter().filter(move |e| {
        e["event"] == "$data_breakpoint_hit" && e["properties"]["$breakpoint_id"] == id
    })
}

/// The `seq` local of a hit event.
pub fn seq_of(event: &Value) -> Option<u64> {
    // Each local is a JSON string (its jsonpickle encoding).
    let text = event["properties"]["$locals_variables"]["seq"].as_str()?;
    serde_json::from_str::<Value>(text).ok()?.as_u64()
}

/// Status events of breakpoint `id` with status `status`.
pub fn has_status(events: &[Value], id: &str, status: &str) -> bool {
    events.iter().any(|e| {
        e["event"] == "$data_breakpoint_status"
            && e["properties"]["$breakpoint_id"] == id
            && e["properties"]["$status"] == status
    })
}

/// Whether every seq in `range` has a hit of `id` in `events`.
pub fn all_seqs(events: &[Value], id: &str, range: &std::ops::RangeInclusive<u64>) -> bool {
    let seen: std::collections::BTreeSet<u64> = hits(events, id).filter_map(seq_of).collect();
    range.clone().all(|s| seen.contains(&s))
}

/// The seqs of `range` missing from `events`.
pub fn missing_seqs(events: &[Value], id: &str, range: &std::ops::RangeInclusive<u64>) -> Vec<u64> {
    let seen: std::collections::BTreeSet<u64> = hits(events, id).filter_map(seq_of).collect();
    range.clone().filter(|s| !seen.contains(s)).collect()
}

/// An event's `$timestamp` (or `timestamp`) as wall-clock time.
pub fn event_time(event: &Value) -> Option<SystemTime> {
    let s = event["properties"]["$timestamp"]
        .as_str()
        .or_else(|| event["timestamp"].as_str())?;
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = t.unix_timestamp_nanos();
    u64::try_from(nanos)
        .ok()
        .map(|n| SystemTime::UNIX_EPOCH + Duration::from_nanos(n))
}
