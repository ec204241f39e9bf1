//! PostHog as it really is, and breakpoints for a fleet: the real agent against the PostHog test
//! server (which behaves like PostHog on each point, see `posthog_server_contract.rs`), scoped
//! to one real Python target (`tests/fixtures/posthog/target.py`).
//!
//! * A hit of the sample service read by PostHog's own parsing rules (written from PostHog's
//!   code, files cited at [`posthog_reads_the_hit`]).
//! * Robust breakpoint lists: an unusable breakpoint is its own error status; the others arm.
//! * A wrong project key is reported once, loudly, naming the setting (at start and in
//!   `doctor`), and the agent keeps running.
//! * A PostHog that retired the Live Debugger: one status line, a slow re-check, hits still
//!   sent, breakpoints from a ConfigMap-shaped directory.
//! * A breakpoint dropped into a ConfigMap-shaped directory (the kubelet's atomic `..data`
//!   symlink swap) arms in the running process within a second.
//! * Sources combine (PostHog, a directory, a URL with ETag and a bearer token), and `status`
//!   names each breakpoint's source.
use anyhow::{Context, Result, bail, ensure};
use libdebugger_tests::posthog_e2e::{
    AgentDirs, AgentOptions, HANDLERS, PosthogAgent, Target, breakpoint, has_status, hits,
    marked_line, skip_reason,
};
use libdebugger_tests::posthog_server::{PROJECT_KEY, PosthogServer};
use libdebugger_tests::python;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const ARMED_TIMEOUT: Duration = Duration::from_secs(60);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

macro_rules! require_env {
    () => {
        libdebugger_tests::skip_if!(skip_reason())
    };
}

/// The entry of `id` in `status --json`'s breakpoints, once `pred` holds for it.
fn wait_breakpoint(
    agent: &PosthogAgent,
    id: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    loop {
        if let Ok(st) = agent.status() {
            last = st["breakpoints"]
                .as_array()
                .and_then(|l| l.iter().find(|b| b["id"] == id).cloned())
                .unwrap_or(Value::Null);
            if pred(&last) {
                return Ok(last);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "breakpoint {id}: condition not met within {timeout:?}; last entry {last:#}\nlog:\n{}",
                agent.log.lines().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_is(want: &'static str) -> impl Fn(&Value) -> bool {
    move |b: &Value| b["status"] == want
}

// ---------------------------------------------------------------------------------------------
// PostHog's parsing rules, written from PostHog/posthog's code.
// ---------------------------------------------------------------------------------------------

/// What PostHog's hit listing makes of one `$data_breakpoint_hit`:
/// `products/live_debugger/backend/models.py`, `LiveDebuggerBreakpoint.get_breakpoint_hits`.
/// It selects `properties.$breakpoint_id`, `.$line_number`, `.$file_path`,
/// `arrayElement(JSONExtractArrayRaw(properties, '$stack_trace'), 1)` (the first frame, raw
/// JSON), `.$locals_variables` and `.$stack_trace` (HogQL hands JSON objects and arrays over as
/// JSON text), then per row: `stack_first = json.loads(row[5])`, `function_name =
/// stack_first.get("function", "") if isinstance(stack_first, dict) else ""` (older versions;
/// the newest index `frame["function"]` and raise on a non-object), `locals = json.loads(…)`,
/// `line_number = int(row[3]) if row[3] else None`; a row that raises is skipped (or, newest,
/// the listing answers 500).
struct ListedHit {
    breakpoint_id: Value,
    line_number: Option<i64>,
    filename: Value,
    function_name: String,
    variables: Map<String, Value>,
    stack_trace: Vec<Value>,
}

fn posthog_lists(event: &Value) -> Result<ListedHit> {
    let p = &event["properties"];
    // JSONExtractArrayRaw then json.loads: the first frame as PostHog sees it.
    let stack_first = p["$stack_trace"]
        .as_array()
        .and_then(|s| s.first())
        .cloned()
        .unwrap_or(Value::Null);
    // The newest listing indexes the frame: a non-object is its HTTP 500.
    let function_name = stack_first
        .as_object()
        .context("the first frame is not an object: PostHog's newest hit listing raises on it")?
        .get("function")
        .context("the first frame has no `function`: PostHog shows an empty function")?
        .as_str()
        .context("`function` is not a string")?
        .to_owned();
    let line_number = match &p["$line_number"] {
        // `int(row[3]) if row[3] else None`
        Value::Number(n) if n.as_i64() != Some(0) => Some(n.as_i64().context("int()")?),
        _ => None,
    };
    Ok(ListedHit {
        breakpoint_id: p["$breakpoint_id"].clone(),
        line_number,
        filename: p["$file_path"].clone(),
        function_name,
        variables: p["$locals_variables"]
            .as_object()
            .cloned()
            .context("json.loads($locals_variables) is not a dict")?,
        stack_trace: p["$stack_trace"]
            .as_array()
            .cloned()
            .context("json.loads($stack_trace) is not a list")?,
    })
}

/// `products/live_debugger/frontend/serde.ts`, `parseJsonPickleVariable`: a value that is not a
/// string is shown as it is (`py/object` then shows as an ordinary key, no type badge); a
/// string is `JSON.parse`d: a primitive is simple, an object is complex with `typeName` =
/// `parsed['py/object']` and every `py/*` key removed, recursively (`cleanJsonPickleMetadata`).
/// Returns (complex, typeName, cleaned value).
fn parse_jsonpickle_variable(value: &Value) -> (bool, Option<String>, Value) {
    let Value::String(text) = value else {
        return (value.is_object() || value.is_array(), None, value.clone());
    };
    match serde_json::from_str::<Value>(text) {
        Ok(parsed @ (Value::Object(_) | Value::Array(_))) => {
            let type_name = parsed.get("py/object").map(|t| match t {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            (true, type_name, clean_jsonpickle_metadata(&parsed))
        }
        Ok(simple) => (false, None, simple),
        Err(_) => (false, None, value.clone()),
    }
}

fn clean_jsonpickle_metadata(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(clean_jsonpickle_metadata).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !k.starts_with("py/"))
                .map(|(k, v)| (k.clone(), clean_jsonpickle_metadata(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `products/live_debugger/frontend/StateInspector.tsx`: each frame is read as `frame[1]`
/// (function), `frame[0]` (file), `frame[2]` (line, shown when truthy). On a JavaScript object
/// `frame[0]` is its key `"0"`.
fn state_inspector_frame(frame: &Value) -> (Value, Value, Value) {
    let at = |i: usize| match frame {
        Value::Array(a) => a.get(i).cloned().unwrap_or(Value::Null),
        Value::Object(o) => o.get(&i.to_string()).cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (at(0), at(1), at(2))
}

/// (1) One hit of the sample service, read the way PostHog's hit listing, locals renderer and
/// state inspector read it: every field shows.
#[test]
fn posthog_reads_the_hit() -> Result<()> {
    require_env!();
    let interp = python::main_interpreter()?;
    let id = "0a1b2c3d-0000-4000-8000-00000000f001";
    let line = marked_line("hit")?;
    let server = PosthogServer::start()?;
    server.set_breakpoints(vec![breakpoint(id, line, None, true)]);
    let mut target = Target::start(&interp)?;
    let dirs = AgentDirs::new()?;
    let agent = PosthogAgent::start(&server, target.pid(), &dirs, &AgentOptions::default())?;
    ensure!(
        server.wait_events(ARMED_TIMEOUT, |ev| has_status(ev, id, "armed")),
        "not armed; log:\n{}",
        agent.log.lines().join("\n")
    );
    target.burst(1)?;
    ensure!(
        server.wait_events(DELIVERY_TIMEOUT, |ev| hits(ev, id).next().is_some()),
        "no hit"
    );
    let events = server.events();
    let hit = hits(&events, id).next().context("a hit")?.clone();

    // The hit listing.
    let listed = posthog_lists(&hit)?;
    ensure!(listed.breakpoint_id == id, "{hit}");
    ensure!(
        listed.filename == HANDLERS && listed.line_number == Some(line.into()),
        "the UI places a hit on the line only when $file_path/$line_number echo the breakpoint"
    );
    ensure!(
        listed.function_name.ends_with("handle"),
        "the listing's function: {:?}",
        listed.function_name
    );
    ensure!(listed.stack_trace.len() >= 2, "{:?}", listed.stack_trace);

    // The locals renderer.
    let var = |name: &str| {
        listed
            .variables
            .get(name)
            .map(parse_jsonpickle_variable)
            .with_context(|| format!("no local {name}: {:?}", listed.variables))
    };
    let (complex, type_name, order) = var("order")?;
    ensure!(
        complex && type_name.as_deref() == Some("app.handlers.Order"),
        "the type badge of `order`: {type_name:?} ({order})"
    );
    ensure!(
        !order.to_string().contains("py/"),
        "py/* bookkeeping shows: {order}"
    );
    ensure!(
        order["items"].is_array() && order["seq"].is_u64(),
        "{order}"
    );
    let (complex, _, user) = var("user")?;
    ensure!(
        !complex && user.as_str().is_some_and(|u| u.starts_with("user-")),
        "`user` is a simple string: {user}"
    );
    let (complex, _, total) = var("total")?;
    ensure!(!complex && total.is_u64(), "`total`: {total}");

    // The state inspector.
    for frame in &listed.stack_trace {
        let (file, function, line_no) = state_inspector_frame(frame);
        ensure!(
            file.is_string() && function.is_string() && line_no.is_u64(),
            "the state inspector reads frame[0..2] of {frame}"
        );
        ensure!(
            file == frame["file"] && function == frame["function"] && line_no == frame["line"],
            "both readers see the same frame: {frame}"
        );
    }
    let (_, function, line_no) = state_inspector_frame(&listed.stack_trace[0]);
    ensure!(
        function.as_str().is_some_and(|f| f.ends_with("handle")) && line_no == line,
        "innermost frame {:?}",
        listed.stack_trace[0]
    );

    // posthog-python's conventions: `sent_at` on the envelope, no geolocation.
    ensure!(
        hit["properties"]["$geoip_disable"] == true,
        "$geoip_disable: {hit}"
    );
    let batches = server.requests_to("/batch");
    ensure!(
        batches
            .iter()
            .filter(|r| r.status == 200)
            .all(|r| r.sent_at.is_some()),
        "every batch carries sent_at: {batches:?}"
    );
    Ok(())
}

/// (2) One PostHog answer with unusable breakpoints: each is an error status of its own, sent
/// as a `$data_breakpoint_status` and shown in `status`; the good one arms and captures.
#[test]
fn an_unusable_breakpoint_does_not_stop_the_others() -> Result<()> {
    require_env!();
    let interp = python::main_interpreter()?;
    let good = "0a1b2c3d-0000-4000-8000-00000000f002";
    let line = marked_line("hit")?;
    let server = PosthogServer::start()?;
    let mut zero = breakpoint("zero", 0, None, true);
    zero["id"] = json!("b-zero");
    let mut empty = breakpoint("b-empty", line, None, true);
    empty["filename"] = json!("");
    let mut outside = breakpoint("b-outside", line, None, true);
    outside["filename"] = json!("/opt/elsewhere/app/handlers.py");
    let bad_condition = breakpoint("b-cond", line, Some("seq >"), true);
    let mut typed = breakpoint("b-typed", line, None, true);
    typed["line_number"] = json!("seventeen");
    server.set_breakpoints(vec![
        breakpoint(good, line, None, true),
        zero,
        empty,
        outside,
        bad_condition,
        typed,
    ]);
    let mut target = Target::start(&interp)?;
    let root = Path::new(&target.handlers_path)
        .parent()
        .and_then(Path::parent)
        .context("the fixture's root")?
        .display()
        .to_string();
    let dirs = AgentDirs::new()?;
    let opts = AgentOptions {
        extra_args: vec!["--source-root".into(), root],
        ..AgentOptions::default()
    };
    let agent = PosthogAgent::start(&server, target.pid(), &dirs, &opts)?;
    ensure!(
        server.wait_events(ARMED_TIMEOUT, |ev| has_status(ev, good, "armed")),
        "the good breakpoint did not arm; log:\n{}",
        agent.log.lines().join("\n")
    );
    for (id, why) in [
        ("b-zero", "line 0"),
        ("b-empty", "empty filename"),
        ("b-outside", "outside the source roots"),
        ("b-cond", "condition syntax error"),
        ("b-typed", "line_number"),
    ] {
        let b = wait_breakpoint(&agent, id, ARMED_TIMEOUT, status_is("error"))?;
        ensure!(
            b["error"].as_str().is_some_and(|e| e.contains(why)),
            "{id}: the error must say {why:?}: {b}"
        );
        ensure!(b["source"] == "posthog", "{id}: {b}");
        ensure!(
            server.wait_events(DELIVERY_TIMEOUT, |ev| has_status(ev, id, "error")),
            "{id}: no error status event"
        );
    }
    target.burst(2)?;
    ensure!(
        server.wait_events(DELIVERY_TIMEOUT, |ev| hits(ev, good).count() >= 2),
        "the good breakpoint's hits"
    );
    ensure!(
        hits(&server.events(), "b-cond").next().is_none(),
        "a breakpoint with a bad condition never captures"
    );
    Ok(())
}

/// (4) A well-formed project key PostHog does not know: capture answers 200 and drops the
/// events, so the agent asks the feature-flag endpoint and says so once, naming
/// POSTHOG_API_KEY, and keeps running; `doctor` says it too.
#[test]
fn a_wrong_project_key_is_loud() -> Result<()> {
    require_env!();
    let interp = python::main_interpreter()?;
    let id = "0a1b2c3d-0000-4000-8000-00000000f004";
    let server = PosthogServer::start()?;
    server.set_breakpoints(vec![breakpoint(id, marked_line("hit")?, None, true)]);
    let mut target = Target::start(&interp)?;
    let dirs = AgentDirs::new()?;
    let opts = AgentOptions {
        project_key: "phc_of_another_region".into(),
        ..AgentOptions::default()
    };
    let mut agent = PosthogAgent::start(&server, target.pid(), &dirs, &opts)?;
    agent.log.wait_for(
        "PostHog does not know the project API key",
        DELIVERY_TIMEOUT,
    )?;
    wait_breakpoint(&agent, id, ARMED_TIMEOUT, status_is("armed"))?;
    target.burst(2)?;
    ensure!(
        server.wait_dropped(DELIVERY_TIMEOUT, |ev| hits(ev, id).count() >= 2),
        "the hits were sent (and dropped by the server, as PostHog does)"
    );
    ensure!(server.events().is_empty(), "nothing recorded for the key");
    ensure!(
        agent.log.count_all(&[
            "ERROR",
            "PostHog does not know the project API key",
            "POSTHOG_API_KEY",
        ]) == 1,
        "reported once, naming the setting; log:\n{}",
        agent.log.lines().join("\n")
    );
    let st = agent.status()?;
    ensure!(
        st["posthog_project_key"]["status"] == "invalid"
            && st["posthog_project_key"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("POSTHOG_API_KEY")),
        "status: {:#}",
        st["posthog_project_key"]
    );
    ensure!(agent.alive(), "the agent keeps running");

    // `doctor` with the same settings (environment, as an operator runs it).
    let out = std::process::Command::new(libdebugger_tests::agent::agent_binary()?)
        .args(["doctor", "--json"])
        .env("LIBDEBUGGER_CONFIG", dirs.config())
        .env("POSTHOG_HOST", server.url())
        .env("POSTHOG_API_KEY", "phc_of_another_region")
        .env(
            "POSTHOG_PERSONAL_API_KEY",
            libdebugger_tests::posthog_server::PERSONAL_KEY,
        )
        .env("POSTHOG_PROJECT_ID", server.project_id().to_string())
        .output()?;
    let report: Value = serde_json::from_slice(&out.stdout).context("doctor --json")?;
    let check = |name: &str| -> Value {
        report["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
            .unwrap_or(Value::Null)
    };
    let key = check("posthog project key");
    ensure!(
        key["status"] == "fail"
            && key["detail"]
                .as_str()
                .is_some_and(|d| d.contains("POSTHOG_API_KEY")),
        "doctor's key check: {key}"
    );
    let bps = check("posthog breakpoints");
    ensure!(bps["status"] == "ok", "the personal key works: {bps}");
    Ok(())
}

/// Writes a Kubernetes ConfigMap volume's layout in `dir`: the files in a fresh
/// `..<generation>` directory, `..data` pointing at it (swapped atomically: a new symlink
/// renamed over the old one, as the kubelet's AtomicWriter does), and each key a symlink
/// `name -> ..data/name`.
fn configmap_write(dir: &Path, generation: u32, files: &[(&str, &str)]) -> Result<()> {
    let gen_dir = format!("..2026_12_02_00_00_{generation:02}.{generation}");
    std::fs::create_dir(dir.join(&gen_dir))?;
    for (name, text) in files {
        std::fs::write(dir.join(&gen_dir).join(name), text)?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&gen_dir, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link)?;
        }
    }
    // Keys gone from the ConfigMap lose their symlink.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !files.iter().any(|(n, _)| *n == name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn toml_bp(id: &str, line: u32, condition: Option<&str>) -> String {
    let cond = condition
        .map(|c| format!("condition = {c:?}\n"))
        .unwrap_or_default();
    format!("[[breakpoint]]\nid = {id:?}\nfile = {HANDLERS:?}\nline = {line}\n{cond}")
}

/// (6) A breakpoint dropped into a ConfigMap-shaped directory arms in the running process
/// within a second; an edit through the `..data` swap takes effect; a file that stops parsing
/// keeps its last good content and is named in `status`. Hits go to PostHog (project key only:
/// breakpoints from the directory, as for a PostHog that retired the Live Debugger).
#[test]
fn a_configmap_breakpoint_arms_within_a_second() -> Result<()> {
    require_env!();
    let interp = python::main_interpreter()?;
    let server = PosthogServer::start()?;
    let hit_line = marked_line("hit")?;
    let probe_line = marked_line("probe")?;
    let cm = tempfile::Builder::new()
        .prefix("ldbg-configmap-")
        .tempdir()?;
    // A first key, so the helper is in the process already: what is timed is the directory
    // change reaching a running process.
    configmap_write(
        cm.path(),
        1,
        &[("base.toml", &toml_bp("base", probe_line, None))],
    )?;
    let mut target = Target::start(&interp)?;
    let dirs = AgentDirs::new()?;
    let opts = AgentOptions {
        posthog_breakpoints: false,
        extra_args: vec!["--breakpoints".into(), cm.path().display().to_string()],
        ..AgentOptions::default()
    };
    let agent = PosthogAgent::start(&server, target.pid(), &dirs, &opts)?;
    let base = wait_breakpoint(&agent, "base", ARMED_TIMEOUT, status_is("armed"))?;
    ensure!(
        base["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("file ") && s.ends_with("base.toml")),
        "{base}"
    );

    // A new key appears: the kubelet writes a new generation and swaps `..data`.
    let dropped = Instant::now();
    configmap_write(
        cm.path(),
        2,
        &[
            ("base.toml", &toml_bp("base", probe_line, None)),
            ("checkout.toml", &toml_bp("checkout", hit_line, None)),
        ],
    )?;
    wait_breakpoint(
        &agent,
        "checkout",
        Duration::from_secs(10),
        status_is("armed"),
    )?;
    let took = dropped.elapsed();
    eprintln!(
        "dropped into the ConfigMap → armed: {} ms",
        took.as_millis()
    );
    ensure!(
        took <= Duration::from_secs(1),
        "armed {} ms after the ..data swap (must be within a second)",
        took.as_millis()
    );
    let seqs = target.burst(2)?;
    ensure!(
        server.wait_events(DELIVERY_TIMEOUT, |ev| hits(ev, "checkout").count() >= 2),
        "hits of the ConfigMap breakpoint reach PostHog"
    );

    // An edit through the swap (a condition that holds for no seq) takes effect.
    configmap_write(
        cm.path(),
        3,
        &[
            ("base.toml", &toml_bp("base", probe_line, None)),
            (
                "checkout.toml",
                &toml_bp("checkout", hit_line, Some("seq < 0")),
            ),
        ],
    )?;
    wait_breakpoint(&agent, "checkout", Duration::from_secs(10), |b| {
        b["condition"] == "seq < 0" && b["status"] == "armed"
    })?;
    // `status` shows the desired set at once; the helper applies it a moment later. Run bursts
    // until one passes the line with no `checkout` hit (the base breakpoint's hits mark that it
    // ran through the helper), within a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let burst = target.burst(3)?;
        let of_burst = |h: &Value| {
            libdebugger_tests::posthog_e2e::seq_of(h).is_some_and(|s| burst.contains(&s))
        };
        ensure!(
            server.wait_events(DELIVERY_TIMEOUT, |ev| hits(ev, "base")
                .filter(|h| of_burst(h))
                .count()
                >= 3),
            "the burst {burst:?} did not run through the helper"
        );
        if !hits(&server.events(), "checkout").any(|h| of_burst(&h.clone())) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the edited condition (seq < 0) never took effect (first burst {seqs:?})"
        );
    }
    // A broken file keeps its last good content and is named in `status`.
    configmap_write(
        cm.path(),
        4,
        &[
            ("base.toml", &toml_bp("base", probe_line, None)),
            ("checkout.toml", "[[breakpoint]\nthis is not TOML"),
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = agent.status()?;
        let errors = &st["breakpoints_file"]["errors"];
        if errors["checkout.toml"].is_string() {
            let b = st["breakpoints"]
                .as_array()
                .and_then(|l| l.iter().find(|b| b["id"] == "checkout").cloned())
                .context("checkout kept")?;
            ensure!(b["condition"] == "seq < 0", "last good content: {b}");
            break;
        }
        ensure!(Instant::now() < deadline, "no file error in status: {st:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// (5, 6) A PostHog that retired the Live Debugger (404 on the active endpoint): one status
/// line, no error storm, hits still sent; breakpoints from a directory and a URL (ETag, bearer
/// token) at once, each shown with its source; an id both define is an error for that id.
#[test]
fn retired_live_debugger_with_breakpoints_from_a_directory_and_a_url() -> Result<()> {
    require_env!();
    let interp = python::main_interpreter()?;
    let server = PosthogServer::start()?;
    server.set_retired(true);
    let hit_line = marked_line("hit")?;
    let probe_line = marked_line("probe")?;
    let dir = tempfile::Builder::new().prefix("ldbg-bps-dir-").tempdir()?;
    std::fs::write(
        dir.path().join("a.toml"),
        format!(
            "{}{}",
            toml_bp("from-dir", hit_line, None),
            toml_bp("shared", probe_line, None)
        ),
    )?;
    let answer = |ids: &[(&str, u32)]| {
        let list: Vec<Value> = ids
            .iter()
            .map(|(id, l)| breakpoint(id, *l, None, true))
            .collect();
        json!({"results": list, "count": ids.len(), "has_more": false}).to_string()
    };
    server.set_static(
        "/fleet/breakpoints.json",
        Some(&answer(&[("from-url", probe_line), ("shared", hit_line)])),
        Some("s3cret-token"),
    );
    let mut target = Target::start(&interp)?;
    let dirs = AgentDirs::new()?;
    let url = format!("{}/fleet/breakpoints.json", server.url());
    let opts = AgentOptions {
        extra_args: vec![
            "--breakpoints".into(),
            dir.path().display().to_string(),
            "--breakpoints-url".into(),
            url.clone(),
        ],
        env: vec![(
            "LIBDEBUGGER_BREAKPOINTS_TOKEN".into(),
            "s3cret-token".into(),
        )],
        ..AgentOptions::default()
    };
    let agent = PosthogAgent::start(&server, target.pid(), &dirs, &opts)?;
    let d = wait_breakpoint(&agent, "from-dir", ARMED_TIMEOUT, status_is("armed"))?;
    ensure!(
        d["source"].as_str().is_some_and(|s| s.ends_with("a.toml")),
        "{d}"
    );
    let u = wait_breakpoint(&agent, "from-url", ARMED_TIMEOUT, status_is("armed"))?;
    ensure!(u["source"] == format!("url {url}"), "{u}");
    let shared = wait_breakpoint(&agent, "shared", ARMED_TIMEOUT, status_is("error"))?;
    ensure!(
        shared["error"]
            .as_str()
            .is_some_and(|e| e.contains("two sources") && e.contains("a.toml") && e.contains(&url)),
        "{shared}"
    );
    // The retired endpoint: one status line, hits still sent.
    agent.log.wait_for(
        "no longer serves Live Debugger breakpoints",
        DELIVERY_TIMEOUT,
    )?;
    target.burst(2)?;
    ensure!(
        server.wait_events(DELIVERY_TIMEOUT, |ev| hits(ev, "from-dir").count() >= 2
            && hits(ev, "from-url").count() >= 2),
        "hits from both sources reach PostHog"
    );
    let st = agent.status()?;
    ensure!(
        st["posthog"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("take breakpoints from a file, a directory or a URL")),
        "status: {:#}",
        st["posthog"]
    );
    // Polled every 0.2 s, the URL answers 304 once nothing changed.
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    while agent.status()?["breakpoints_url"]["not_modified"]
        .as_u64()
        .unwrap_or(0)
        < 2
    {
        ensure!(Instant::now() < deadline, "no 304 from the URL");
        std::thread::sleep(Duration::from_millis(50));
    }
    // No error storm: with a 0.2 s poll interval the retired endpoint was asked once.
    let asked = server.breakpoint_requests().len();
    ensure!(
        asked == 1,
        "the retired endpoint was asked {asked} times (a slow re-check, not a storm)"
    );
    ensure!(
        agent
            .log
            .count("no longer serves Live Debugger breakpoints")
            == 1,
        "one status line; log:\n{}",
        agent.log.lines().join("\n")
    );
    // A change at the URL arrives (new ETag).
    server.set_static(
        "/fleet/breakpoints.json",
        Some(&answer(&[("from-url", probe_line), ("url-2", hit_line)])),
        Some("s3cret-token"),
    );
    wait_breakpoint(&agent, "url-2", ARMED_TIMEOUT, status_is("armed"))?;
    wait_breakpoint(&agent, "shared", ARMED_TIMEOUT, |b| {
        b["status"] == "armed" && b["source"].as_str().is_some_and(|s| s.ends_with("a.toml"))
    })?;
    ensure!(
        server.current_without_token() == 0 && PROJECT_KEY.starts_with("phc_"),
        "sanity"
    );
    Ok(())
}
