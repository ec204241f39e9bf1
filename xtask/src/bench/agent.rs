//! The agent as the figures drive it: local mode (`run --breakpoints FILE --events-file FILE`),
//! private runtime/state directories (so it never meets another agent on the host), selectors
//! limited to benchmark processes, `status --json` for readiness, /proc for its footprint.
use crate::bench::pyproc::{Proc, TAG};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One breakpoint of the local breakpoints file.
#[derive(Clone, Debug)]
pub struct Breakpoint {
    pub id: String,
    pub file: String,
    pub line: u32,
    pub condition: Option<String>,
}

/// A running agent.
pub struct Agent {
    proc: Proc,
    dir: PathBuf,
    pub breakpoints_file: PathBuf,
    pub events_file: PathBuf,
}

/// `s` as a regular expression matching it literally (the meta characters `regex::escape`
/// escapes).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// TOML basic string (JSON string escapes are a subset TOML accepts).
fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The breakpoints file's text.
pub fn breakpoints_toml(bps: &[Breakpoint]) -> String {
    let mut out = String::from("# written by cargo xtask bench\n");
    for b in bps {
        out += &format!(
            "\n[[breakpoint]]\nid = {}\nfile = {}\nline = {}\n",
            toml_str(&b.id),
            toml_str(&b.file),
            b.line
        );
        if let Some(c) = &b.condition {
            out += &format!("condition = {}\n", toml_str(c));
        }
    }
    out
}

impl Agent {
    /// Starts the agent in local mode in `dir` with `bps` armed from the start; `extra_config`
    /// is appended to its configuration file. Waits (≤ 30 s) until it answers `status`.
    pub fn start(
        bin: &Path,
        helper: &Path,
        dir: &Path,
        bps: &[Breakpoint],
        extra_config: &str,
        log_dir: &Path,
    ) -> Result<Self> {
        Self::start_with(bin, helper, dir, Some(bps), extra_config, &[], log_dir)
    }

    /// [`Agent::start`] with extra environment variables. `bps` None: no local breakpoints file
    /// (with PostHog credentials in `extra_env` the agent takes its breakpoints from PostHog).
    #[allow(clippy::too_many_arguments)] // one call site each; a struct would only rename them
    pub fn start_with(
        bin: &Path,
        helper: &Path,
        dir: &Path,
        bps: Option<&[Breakpoint]>,
        extra_config: &str,
        extra_env: &[(&str, String)],
        log_dir: &Path,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("agent.toml");
        // Only processes that carry the bench tag: a benchmark must never inject into the
        // other Python processes on this host.
        // `source_roots`: breakpoints only ever match files of the benchmark.
        std::fs::write(
            &config,
            format!(
                "[breakpoints]\nsource_roots = [{}, {}]\n\n{extra_config}",
                toml_str(&crate::bench::pyproc::scripts_dir().display().to_string()),
                toml_str(&dir.display().to_string()),
            ),
        )?;
        let breakpoints_file = dir.join("breakpoints.toml");
        let local = bps.is_some();
        std::fs::write(&breakpoints_file, breakpoints_toml(bps.unwrap_or_default()))?;
        let events_file = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&events_file);
        let mut cmd = Command::new(bin);
        cmd.arg("run");
        if local {
            cmd.arg("--breakpoints").arg(&breakpoints_file);
        }
        // Only processes that carry the bench tag: a benchmark must never inject into the
        // other Python processes on this host. Only this checkout's scripts, too: benchmarks
        // of other checkouts running on the same host carry the tag as well, and two agents
        // injecting into each other's targets spoil both figures. (`=`: the pattern may start
        // with dashes.)
        let scripts = crate::bench::pyproc::scripts_dir().display().to_string();
        cmd.arg(format!("--cmdline={}.*{TAG}", regex_escape(&scripts)))
            .arg("--helper")
            .arg(helper)
            .arg("--events-file")
            .arg(&events_file);
        Self::env(&mut cmd, dir);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(cmd, "agent", log_dir)?;
        let mut agent = Self {
            proc,
            dir: dir.to_owned(),
            breakpoints_file,
            events_file,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if agent.proc.exited() {
                bail!("agent exited at start: {}", agent.proc.stderr_tail());
            }
            if let Ok(st) = agent.status() {
                agent.guard(&st)?;
                return Ok(agent);
            }
            if Instant::now() >= deadline {
                bail!(
                    "agent did not answer `status` within 30 s: {}",
                    agent.proc.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn env(cmd: &mut Command, dir: &Path) {
        cmd.env("LIBDEBUGGER_RUNTIME_DIR", dir.join("run"))
            .env("LIBDEBUGGER_STATE_DIR", dir.join("state"))
            .env("LIBDEBUGGER_CONFIG", dir.join("agent.toml"))
            // `LIBDEBUGGER_BENCH_LOG` (e.g. `libdebugger_agent=debug`) to study a figure in the
            // agent's log (target/bench/logs/agent.stderr): the attach timeline, for one.
            .env(
                "LIBDEBUGGER_LOG",
                std::env::var("LIBDEBUGGER_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            );
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The agent's status report, asked on its control socket directly (the protocol of
    /// `libdebugger-agent status`: one JSON request line, one JSON answer line): polling it
    /// costs microseconds instead of a process start, so B4's latencies are not inflated.
    pub fn status(&self) -> Result<Value> {
        use std::io::{BufRead, BufReader, Write};
        let path = self.dir.join("run").join("agent.sock");
        let mut s = std::os::unix::net::UnixStream::connect(&path)
            .with_context(|| format!("connecting to {}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"{\"op\":\"status\"}\n")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        let answer: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("the control socket answered {line:?}"))?;
        match answer["result"].as_str() {
            Some("ok") => Ok(answer["value"].clone()),
            _ => bail!("`status` refused: {answer}"),
        }
    }

    /// Fails if the agent has selected a process that is not a benchmark process (one it would
    /// inject into, is injecting or has injected): it does not honour `--cmdline`, and must not
    /// go on touching other people's Python processes. Processes it only looked at and left
    /// alone (`unsupported`, `ignored`) are fine. The caller drops the agent (SIGTERM).
    fn guard(&self, status: &Value) -> Result<()> {
        for p in status["processes"].as_array().into_iter().flatten() {
            let Some(pid) = p["pid"].as_u64() else {
                continue;
            };
            if matches!(p["attach_state"].as_str(), Some("unsupported" | "ignored")) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue; // gone
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if !cmdline.contains(TAG) {
                bail!(
                    "the agent selected pid {pid} ({}), which is not a benchmark process: it does not honour `--cmdline`; stopped it to leave other processes alone",
                    cmdline.trim()
                );
            }
        }
        Ok(())
    }

    /// Replaces the breakpoints file atomically (the agent watches it).
    pub fn set_breakpoints(&self, bps: &[Breakpoint]) -> Result<()> {
        let tmp = self.dir.join(".breakpoints.toml.tmp");
        std::fs::write(&tmp, breakpoints_toml(bps))?;
        std::fs::rename(&tmp, &self.breakpoints_file)?;
        Ok(())
    }

    /// Polls `status` until every breakpoint of `ids` is armed in process `pid`; returns how
    /// long that took. Polls as fast as `status` answers (a few ms).
    pub fn wait_armed(&self, pid: u32, ids: &[String], timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            if let Ok(st) = self.status() {
                self.guard(&st)?;
                if ids.iter().all(|id| armed_in(&st, pid, id)) {
                    return Ok(t0.elapsed());
                }
            }
            if t0.elapsed() >= timeout {
                let st = self.status().map(|s| s.to_string()).unwrap_or_default();
                bail!(
                    "breakpoints {ids:?} not armed in pid {pid} within {timeout:?}; status: {}",
                    &st[..st.len().min(400)]
                );
            }
        }
    }

    /// Polls `status` until process `pid` is listed (the agent knows of it).
    pub fn wait_known(&self, pid: u32, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            if let Ok(st) = self.status() {
                self.guard(&st)?;
                if process_entry(&st, pid).is_some() {
                    return Ok(());
                }
            }
            if t0.elapsed() >= timeout {
                bail!("the agent did not list pid {pid} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident set size (VmRSS), KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        proc_rss_kib(self.pid())
    }

    /// utime + stime, clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64> {
        proc_cpu_ticks(self.pid())
    }

    /// SIGTERM, then wait ≤ 30 s (it removes its breakpoints from every process first).
    pub fn stop(mut self) -> Result<()> {
        self.proc.terminate(Duration::from_secs(30)).map(|_| ())
    }
}

impl Drop for Agent {
    /// SIGTERM (the agent removes its breakpoints from every process on the way out), not the
    /// SIGKILL a dropped [`Proc`] gets.
    fn drop(&mut self) {
        let _ = self.proc.terminate(Duration::from_secs(30));
    }
}

/// The status entry of process `pid`.
pub fn process_entry(status: &Value, pid: u32) -> Option<&Value> {
    status["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"].as_u64() == Some(u64::from(pid)))
}

/// Whether breakpoint `id` is armed in process `pid`. Accepts a per-process breakpoint list
/// (`processes[].breakpoints[]`) or, failing that, the process being attached and the
/// breakpoint's overall status being `armed`.
pub fn armed_in(status: &Value, pid: u32, id: &str) -> bool {
    let Some(p) = process_entry(status, pid) else {
        return false;
    };
    let is_armed = |b: &Value| b["id"].as_str() == Some(id) && b["status"] == "armed";
    if let Some(list) = p["breakpoints"].as_array() {
        return list.iter().any(is_armed);
    }
    let attached = p["attach_state"]
        .as_str()
        .is_some_and(|s| s.contains("attached") || s.contains("armed"));
    attached
        && status["breakpoints"]
            .as_array()
            .is_some_and(|l| l.iter().any(is_armed))
}

/// VmRSS of `pid`, KiB.
pub fn proc_rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// utime + stime of `pid` (all threads), clock ticks.
pub fn proc_cpu_ticks(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15 (1-based) → indexes 11, 12.
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

/// Clock ticks per second (for /proc/<pid>/stat times).
pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Counts `$data_breakpoint_hit` events of one breakpoint id as they are appended to a JSON
/// Lines file, reading only what is new at each poll (B5's events files grow by hundreds of MB).
pub struct HitCounter {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    id: String,
    /// `id` as a JSON string, for a cheap substring pre-filter.
    id_needle: String,
    pub count: u64,
}

impl HitCounter {
    pub fn new(path: &Path, id: &str) -> Self {
        Self {
            path: path.to_owned(),
            offset: 0,
            partial: Vec::new(),
            id: id.to_owned(),
            id_needle: serde_json::Value::String(id.to_owned()).to_string(),
            count: 0,
        }
    }

    /// Reads what was appended since the last poll; returns the total count.
    pub fn poll(&mut self) -> Result<u64> {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Ok(self.count);
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        let n = f.read_to_end(&mut buf)?;
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(self.count);
        };
        let rest = self.partial.split_off(last_nl + 1);
        for line in self.partial.split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line);
            // Both substrings, then a parse to be sure (the id could appear in a captured value).
            if line.contains("$data_breakpoint_hit") && line.contains(&self.id_needle) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["event"] == "$data_breakpoint_hit"
                    && v["properties"]["$breakpoint_id"].as_str() == Some(self.id.as_str())
                {
                    self.count += 1;
                }
            }
        }
        self.partial = rest;
        Ok(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn breakpoints_file_is_toml_with_escapes() {
        let t = breakpoints_toml(&[Breakpoint {
            id: "b\"1".into(),
            file: "/a b/c.py".into(),
            line: 7,
            condition: Some("x > 1".into()),
        }]);
        assert!(t.contains("[[breakpoint]]\nid = \"b\\\"1\"\nfile = \"/a b/c.py\"\nline = 7\ncondition = \"x > 1\"\n"), "{t}");
    }

    #[test]
    fn regex_escape_matches_literally() {
        assert_eq!(
            regex_escape("/work/wt/a+b (1)/x.y-z"),
            r"/work/wt/a\+b \(1\)/x\.y\-z"
        );
    }

    #[test]
    fn armed_detection() {
        let per_process =
            json!({"processes": [{"pid": 5, "breakpoints": [{"id": "a", "status": "armed"}]}]});
        assert!(armed_in(&per_process, 5, "a"));
        assert!(!armed_in(&per_process, 6, "a"));
        assert!(!armed_in(&per_process, 5, "b"));
        let global = json!({
            "processes": [{"pid": 5, "attach_state": "attached"}, {"pid": 6, "attach_state": "injecting"}],
            "breakpoints": [{"id": "a", "status": "armed"}, {"id": "b", "status": "pending"}]
        });
        assert!(armed_in(&global, 5, "a"));
        assert!(!armed_in(&global, 6, "a"));
        assert!(!armed_in(&global, 5, "b"));
    }

    #[test]
    fn own_footprint_is_readable() {
        let pid = std::process::id();
        assert!(proc_rss_kib(pid).expect("rss") > 0);
        proc_cpu_ticks(pid).expect("cpu ticks");
    }

    #[test]
    fn hit_counter_reads_increments_and_waits_for_whole_lines() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("e.jsonl");
        let mut c = HitCounter::new(&p, "a");
        assert_eq!(c.poll().expect("no file yet"), 0);
        let hit = "{\"event\":\"$data_breakpoint_hit\",\"properties\":{\"$breakpoint_id\":\"a\"}}";
        let mut f = std::fs::File::create(&p).expect("create");
        write!(f, "{hit}\n{}", &hit[..10]).expect("write");
        assert_eq!(c.poll().expect("poll"), 1);
        write!(f, "{}\n{hit}\n", &hit[10..]).expect("write");
        assert_eq!(c.poll().expect("poll"), 3);
        writeln!(f, "{}", hit.replace("\"a\"", "\"ab\"")).expect("write");
        assert_eq!(c.poll().expect("poll"), 3);
    }
}
