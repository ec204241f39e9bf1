//! `inspect`: real interpreters (no privileges needed: the processes are our children).
use libdebugger_tests::agent::{PyProcess, run_agent};
use libdebugger_tests::python::{python310, supported};
use serde_json::Value;
use std::time::Duration;

fn idle_script(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("idle.py");
    std::fs::write(
        &path,
        "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n",
    )
    .expect("write script");
    path
}

fn inspect_json(pid: i32) -> (bool, Value) {
    let out = run_agent(
        &["inspect", &pid.to_string(), "--json"],
        Duration::from_secs(30),
    )
    .expect("run inspect");
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("inspect JSON ({e}): {}\n{}", out.stdout, out.stderr));
    (out.status.success(), v)
}

#[test]
fn inspect_reports_every_supported_interpreter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = idle_script(dir.path());
    for interp in supported() {
        let mut py = PyProcess::start_on(&interp, &script).expect("python");
        py.stdout
            .wait_for("ready", Duration::from_secs(20), |l| l == "ready")
            .expect("ready");
        let (ok, v) = inspect_json(py.pid());
        assert!(ok, "{}: {v}", interp.label);
        assert_eq!(v["pid"], py.pid(), "{}", interp.label);
        assert_eq!(v["supported"], true, "{}: {v}", interp.label);
        assert!(v.get("reason").is_none(), "{}: {v}", interp.label);
        let version = v["python_version"].as_str().expect("python_version");
        let (major, minor) = interp.version;
        assert!(
            version.starts_with(&format!("{major}.{minor}.")),
            "{}: {version}",
            interp.label
        );
        if let Some(full) = interp.label.strip_prefix("pyenv-") {
            assert_eq!(version, full);
            assert_eq!(v["process"]["linkage"], "shared_library");
            assert_eq!(v["process"]["pie"], true);
        } else {
            assert_eq!(v["process"]["linkage"], "static_executable", "{v}");
            assert_eq!(v["process"]["pie"], false, "{v}");
        }
        let frame_code = v["process"]["layout"]["frame_code"].as_u64();
        assert_eq!(
            frame_code,
            Some(if minor == 11 { 32 } else { 0 }),
            "{}",
            interp.label
        );
        assert!(v["process"]["symbols"]["eval_frame"]["file_offset"].as_u64() > Some(0));
        // The plan comes from the version's row of the table.
        let p = &v["process"];
        assert_eq!(
            p["plan"]["injection"],
            if minor >= 14 {
                "remote_exec_then_ptrace"
            } else {
                "ptrace"
            },
            "{}",
            interp.label
        );
        assert_eq!(
            p["plan"]["arming"],
            if minor == 11 {
                "bytecode_swap"
            } else {
                "sys_monitoring"
            }
        );
        assert_eq!(
            p["remote_debug"],
            if minor >= 14 {
                "enabled"
            } else {
                "not_applicable"
            },
            "{}",
            interp.label
        );
        assert_eq!(p["build"], "release", "{}", interp.label);
        assert_eq!(
            p["layout"]["code_tag_mask"],
            if minor >= 14 { 3 } else { 0 },
            "{}",
            interp.label
        );
        assert_eq!(
            p["layout"]["source"],
            if minor >= 13 {
                "debug_offsets"
            } else {
                "table"
            },
            "{}",
            interp.label
        );
    }
}

/// `inspect` on a 3.14 process inside the container: its version, build, how it will be
/// attached and armed, and the paths the agent reaches it through (`/proc/<pid>/root`).
#[test]
fn inspect_text_of_a_314_process_in_a_container() {
    let Some(interp) = libdebugger_tests::python::container_minor(14) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut py = PyProcess::start_on(&interp, &idle_script(dir.path())).expect("python");
    py.stdout
        .wait_for("ready", Duration::from_secs(20), |l| l == "ready")
        .expect("ready");
    let out = run_agent(&["inspect", &py.pid().to_string()], Duration::from_secs(30))
        .expect("run inspect");
    assert!(out.status.success(), "{out:?}");
    let text = out.stdout;
    eprintln!("{text}");
    for want in [
        format!("pid {}: CPython 3.14.", py.pid()),
        "build:         release, static".into(),
        "attach:        PEP 768 remote exec".into(),
        "(remote debugging enabled)".into(),
        "arm:           sys.monitoring".into(),
        format!("agent path:    /proc/{}/root/usr/bin/python3.14", py.pid()),
        "offsets from:  DebugOffsets".into(),
    ] {
        assert!(text.contains(&want), "no `{want}` in:\n{text}");
    }
}

#[test]
fn inspect_gives_the_310_reason() {
    let Some(interp) = python310() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut py = PyProcess::start_on(&interp, &idle_script(dir.path())).expect("python");
    py.stdout
        .wait_for("ready", Duration::from_secs(20), |l| l == "ready")
        .expect("ready");
    let (ok, v) = inspect_json(py.pid());
    assert!(ok, "inspection itself succeeded: {v}");
    assert_eq!(v["supported"], false);
    assert_eq!(v["python_version"], "3.10");
    let reason = v["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with(&format!(
            "CPython 3.10 is not supported (pid {}, ",
            py.pid()
        )) && reason.ends_with("libdebugger needs 3.11+"),
        "{reason}"
    );
}

#[test]
fn inspect_says_when_it_is_not_python_or_gone() {
    let mut sleep = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    let pid = sleep.id() as i32;
    let (ok, v) = inspect_json(pid);
    assert!(ok);
    assert_eq!(v["supported"], false);
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("is not a CPython interpreter")),
        "{v}"
    );
    let _ = sleep.kill();
    let _ = sleep.wait();
    let (ok, v) = inspect_json(pid);
    assert!(!ok, "a vanished process is an error");
    assert!(
        v["reason"]
            .as_str()
            .is_some_and(|r| r.contains("does not exist")),
        "{v}"
    );
}
