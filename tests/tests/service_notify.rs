//! The agent under a service manager, with the protocol systemd speaks (no systemd needed: the
//! test plays its part): `READY=1` arrives on `$NOTIFY_SOCKET` only once the control socket
//! answers, `STATUS=` lines describe the agent, SIGTERM brings `STOPPING=1` and a clean exit; with
//! stderr being "the journal" (`$JOURNAL_STREAM` names its device and inode) every log line
//! starts with its syslog priority.
use anyhow::{Context, Result, bail, ensure};
use libdebugger_tests::agent::{agent_binary, wait_with_deadline};
use libdebugger_tests::require_agent_env;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Datagrams received on the notify socket until one satisfies `pred` (deadline `timeout`).
fn wait_notify(
    sock: &UnixDatagram,
    seen: &mut Vec<String>,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no matching notification within {timeout:?}; got {seen:?}");
        }
        sock.set_read_timeout(Some(left))?;
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(msg.clone());
                if pred(&msg) {
                    return Ok(msg);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[test]
fn ready_after_the_socket_answers_status_lines_stopping_and_journal_levels() -> Result<()> {
    require_agent_env!();
    let dir = tempfile::Builder::new().prefix("ldbg-notify-").tempdir()?;
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path)?;
    let runtime = dir.path().join("run");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "")?;
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path)?;
    let meta = std::fs::metadata(&stderr_path)?;
    // Scoped to this test's own pid (not Python): the agent debugs nothing else on the host.
    let mut child = Command::new(agent_binary()?)
        .args(["run", "--pid", &std::process::id().to_string()])
        .arg("--config-file")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("LIBDEBUGGER_RUNTIME_DIR", &runtime)
        .env("LIBDEBUGGER_STATE_DIR", dir.path().join("state"))
        .env("LIBDEBUGGER_LOG", "info")
        .env_remove("POSTHOG_API_KEY")
        .env_remove("POSTHOG_PERSONAL_API_KEY")
        .env_remove("POSTHOG_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .context("starting libdebugger-agent run")?;
    let mut seen = Vec::new();
    let result = (|| -> Result<()> {
        let ready = wait_notify(&notify, &mut seen, Duration::from_secs(60), |m| {
            m.lines().any(|l| l == "READY=1")
        })?;
        // Ready means the control socket answers: `status` works at once.
        let status = Command::new(agent_binary()?)
            .args(["status", "--json"])
            .env("LIBDEBUGGER_RUNTIME_DIR", &runtime)
            .output()?;
        ensure!(
            status.status.success(),
            "status right after READY=1 failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        let line = ready
            .lines()
            .find_map(|l| l.strip_prefix("STATUS="))
            .with_context(|| format!("READY=1 came without a STATUS= line: {ready:?}"))?;
        ensure!(
            line.starts_with("local mode: 0 breakpoints, 0 of "),
            "first status line: {line:?}"
        );
        // A breakpoint added: the status line follows.
        let add = Command::new(agent_binary()?)
            .args(["break", "add", "/nowhere/app.py:3"])
            .env("LIBDEBUGGER_RUNTIME_DIR", &runtime)
            .output()?;
        ensure!(
            add.status.success(),
            "break add: {}",
            String::from_utf8_lossy(&add.stderr)
        );
        wait_notify(&notify, &mut seen, Duration::from_secs(20), |m| {
            m.starts_with("STATUS=local mode: 1 breakpoint,")
        })?;
        // SIGTERM: STOPPING=1, then a clean exit.
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_notify(&notify, &mut seen, Duration::from_secs(20), |m| {
            m.lines().any(|l| l == "STOPPING=1")
        })?;
        let exit = wait_with_deadline(&mut child, Duration::from_secs(30))?;
        ensure!(exit.success(), "exit after SIGTERM: {exit}");
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&stderr_path)?;
    result.with_context(|| format!("agent log:\n{log}"))?;
    // Every line carries its priority; "agent running" is info (6), and no timestamps or colours.
    ensure!(!log.is_empty(), "no log lines");
    for l in log.lines() {
        ensure!(
            l.len() > 3 && l.starts_with('<') && l.as_bytes()[2] == b'>' && !l.contains('\x1b'),
            "a log line without a priority prefix: {l:?}\n{log}"
        );
    }
    ensure!(
        log.lines()
            .any(|l| l.starts_with("<6>") && l.contains("agent running")),
        "\"agent running\" not logged at priority 6:\n{log}"
    );
    Ok(())
}
