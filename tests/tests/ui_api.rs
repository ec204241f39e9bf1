//! The web UI's HTTP API on every supported interpreter (no browser: `ui_browser.rs` drives the
//! page): the helper's list of loaded files and code lines (3.11 arms by rewriting bytecode, so
//! its code objects are copies), a breakpoint added over HTTP whose hits arrive on the
//! Server-Sent Events stream, its removal, and a 404 for a file the process has not loaded.
use anyhow::{Context, Result, bail, ensure};
use libdebugger_tests::local::{Agent, Target, marker_line};
use libdebugger_tests::{python, require_agent_env};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

struct Ui {
    base: String,
    token: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Ui {
    fn of(agent: &Agent) -> Result<Self> {
        let url = agent.ui_url()?;
        let (base, token) = url.split_once("/?token=").context("a URL with a token")?;
        Ok(Self {
            base: base.into(),
            token: token.into(),
            http: reqwest::Client::new(),
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?,
        })
    }

    /// (status, JSON body) of a request.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        self.rt.block_on(async {
            let mut req = self
                .http
                .request(method, format!("{}{path}", self.base))
                .header("X-Libdebugger-Token", &self.token)
                .timeout(Duration::from_secs(30));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            Ok((status, resp.json().await.unwrap_or(Value::Null)))
        })
    }
}

#[test]
fn files_lines_and_hits_over_http_on_every_interpreter() -> Result<()> {
    require_agent_env!();
    let checkout = marker_line("agent_mod.py", "BP:checkout")?;
    let nocode = marker_line("agent_mod.py", "BP:nocode")?;
    for interp in python::supported() {
        let label = interp.label.clone();
        let mut target = Target::start(&interp, "ldbg-e2e-ui-api")?;
        // The module is imported on the first call.
        target.cmd("call 1", "called")?;
        let pid = target.pid();
        let agent = Agent::start_with_ui(pid)?;
        let ui = Ui::of(&agent)?;
        let (st, files) = ui.call(
            reqwest::Method::GET,
            &format!("/api/processes/{pid}/files"),
            None,
        )?;
        ensure!(st == 200, "{label}: files: {st} {files}");
        let module = files["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|f| f.ends_with("/tests/python/agent_mod.py"))
            .with_context(|| format!("{label}: agent_mod.py not among the loaded files {files}"))?
            .to_string();
        let q = |p: &str| p.replace('/', "%2F");
        let (st, src) = ui.call(
            reqwest::Method::GET,
            &format!("/api/processes/{pid}/source?path={}", q(&module)),
            None,
        )?;
        ensure!(st == 200, "{label}: source: {st} {src}");
        let lines: Vec<u64> = src["code_lines"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .collect();
        ensure!(
            lines.contains(&u64::from(checkout)) && !lines.contains(&u64::from(nocode)),
            "{label}: code lines {lines:?} (want {checkout}, not the comment line {nocode})"
        );
        ensure!(
            src["lines"][checkout as usize - 1]
                .as_str()
                .is_some_and(|l| l.contains("amount")),
            "{label}: line {checkout} is not the checkout line: {}",
            src["lines"][checkout as usize - 1]
        );
        let (st, e) = ui.call(
            reqwest::Method::GET,
            &format!("/api/processes/{pid}/source?path={}", q("/etc/hostname")),
            None,
        )?;
        ensure!(st == 404, "{label}: a file not loaded: {st} {e}");

        // A breakpoint added over HTTP; its hits on the event stream.
        let (st, added) = ui.call(
            reqwest::Method::POST,
            "/api/breakpoints",
            Some(json!({"file": module, "line": checkout, "condition": "order_id > 1"})),
        )?;
        ensure!(st == 201, "{label}: add: {st} {added}");
        let id = added["id"].as_str().context("an id")?.to_string();
        agent.wait_armed_in(&id, pid, Duration::from_secs(20))?;
        let hit = ui.rt.block_on(async {
            let mut stream = ui
                .http
                .get(format!("{}/api/events", ui.base))
                .header("X-Libdebugger-Token", &ui.token)
                .send()
                .await?;
            // The stream is subscribed once its headers arrived: calls made now are seen.
            target.cmd("call 3", "called")?;
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut buf = String::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let chunk = match tokio::time::timeout(left, stream.chunk()).await {
                    Ok(c) => c?,
                    Err(_) => bail!("{label}: no hit on the event stream; got {buf:?}"),
                };
                let Some(chunk) = chunk else {
                    bail!("{label}: the stream ended")
                };
                buf.push_str(&String::from_utf8_lossy(&chunk));
                for line in buf.lines() {
                    if let Some(data) = line.strip_prefix("data: ")
                        && let Ok(ev) = serde_json::from_str::<Value>(data)
                        && ev["properties"]["$breakpoint_id"] == id.as_str()
                    {
                        return Ok(ev);
                    }
                }
            }
        })?;
        // Each local is a JSON string (its jsonpickle encoding).
        let order = hit["properties"]["$locals_variables"]["order_id"]
            .as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|v| v.as_i64());
        ensure!(
            order.is_some_and(|o| o > 1),
            "{label}: the condition was not applied: {hit}"
        );
        let (st, gone) = ui.call(
            reqwest::Method::DELETE,
            &format!("/api/breakpoints/{}", q(&id).replace(':', "%3A")),
            None,
        )?;
        ensure!(st == 200, "{label}: remove: {st} {gone}");
        let (_, list) = ui.call(reqwest::Method::GET, "/api/breakpoints", None)?;
        ensure!(
            !list.to_string().contains(&id),
            "{label}: still listed after removal: {list}"
        );
        eprintln!("{label}: files, code lines, hits over SSE and removal ok");
    }
    Ok(())
}

/// A process in its own mount namespace (as in a container) whose source files exist only
/// there: the UI lists and shows them as the process sees them (`/proc/<pid>/root`), and says
/// the process is in a container.
#[test]
fn sources_are_read_as_a_process_in_its_own_mount_namespace_sees_them() -> Result<()> {
    require_agent_env!();
    if std::process::Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        eprintln!("skipping: `unshare --mount` does not work here (util-linux, CAP_SYS_ADMIN)");
        return Ok(());
    }
    let Some(interp) = python::supported()
        .into_iter()
        .find(|i| i.version == (3, 12))
    else {
        eprintln!("skipping: pyenv's CPython 3.12.1 is missing");
        return Ok(());
    };
    // Empty on the host; inside the namespace a tmpfs with a copy of the test scripts.
    let dir = tempfile::Builder::new()
        .prefix("ldbg-e2e-ui-ns-")
        .tempdir()?;
    let app = dir.path().join("app");
    let scripts = libdebugger_tests::agent::workspace_root().join("tests/python");
    let setup = format!(
        "mount -t tmpfs tmpfs {d} && mkdir {app} && cp {scripts}/*.py {app}/ && cd {app} && exec {py} {app}/agent_target.py ldbg-e2e-ui-ns",
        d = dir.path().display(),
        app = app.display(),
        scripts = scripts.display(),
        py = interp.path.display(),
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        &setup,
    ]);
    let mut target = libdebugger_tests::agent::PyProcess::start_command(cmd)?;
    target
        .stdout
        .wait_for("the target's ready line", Duration::from_secs(30), |l| {
            l.starts_with("ready ")
        })?;
    let pid = target.pid();
    target.send_line("call 1")?;
    target
        .stdout
        .wait_for("called", Duration::from_secs(30), |l| {
            l.starts_with("called")
        })?;
    let module = app.join("agent_mod.py");
    ensure!(
        !module.exists(),
        "{} is visible on the host",
        module.display()
    );
    let agent = Agent::start_with_ui(pid)?;
    let ui = Ui::of(&agent)?;
    let (st, state) = ui.call(reqwest::Method::GET, "/api/state", None)?;
    ensure!(st == 200, "state: {st} {state}");
    let me = state["status"]["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["pid"] == pid)
        .cloned()
        .unwrap_or_default();
    ensure!(me["container"] == true, "not shown as in a container: {me}");
    let (st, files) = ui.call(
        reqwest::Method::GET,
        &format!("/api/processes/{pid}/files"),
        None,
    )?;
    ensure!(
        st == 200 && files.to_string().contains(&module.display().to_string()),
        "files: {st} {files}"
    );
    let (st, src) = ui.call(
        reqwest::Method::GET,
        &format!(
            "/api/processes/{pid}/source?path={}",
            module.display().to_string().replace('/', "%2F")
        ),
        None,
    )?;
    ensure!(st == 200, "source: {st} {src}");
    let text = src["lines"].to_string();
    ensure!(
        text.contains("checkout") && text.contains("BP:checkout"),
        "not the namespace's agent_mod.py: {text:.200}"
    );
    Ok(())
}
