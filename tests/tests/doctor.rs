//! `doctor`: on this machine (root, Linux 6.18) every check passes and the CPython processes
//! we start are listed with their support status.
use libdebugger_tests::agent::{PyProcess, is_root, run_agent};
use libdebugger_tests::python::{python310, supported};
use serde_json::Value;
use std::time::Duration;

#[test]
fn doctor_passes_and_lists_python_processes() {
    if !is_root() {
        eprintln!("skipping: doctor's BPF checks need root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("idle.py");
    std::fs::write(
        &script,
        "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n",
    )
    .expect("script");
    let mut children = Vec::new();
    for interp in supported().into_iter().take(1).chain(python310()) {
        let mut py = PyProcess::start_on(&interp, &script).expect("python");
        py.stdout
            .wait_for("ready", Duration::from_secs(20), |l| l == "ready")
            .expect("ready");
        children.push(py);
    }
    let out = run_agent(&["doctor", "--json"], Duration::from_secs(60)).expect("doctor");
    let v: Value = serde_json::from_str(&out.stdout).expect("doctor JSON");
    assert!(out.status.success(), "{v}\n{}", out.stderr);
    assert_eq!(v["can_run"], true);
    let checks = v["checks"].as_array().expect("checks");
    for name in [
        "kernel",
        "CAP_BPF",
        "CAP_PERFMON",
        "CAP_SYS_PTRACE",
        "eBPF",
        "uprobes",
        "ring buffers",
    ] {
        let c = checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {v}"));
        assert_eq!(c["status"], "ok", "{c}");
    }
    assert!(checks.iter().any(|c| c["name"] == "ptrace restrictions"));
    let procs = v["python_processes"].as_array().expect("python_processes");
    for child in &children {
        let p = procs
            .iter()
            .find(|p| p["pid"] == child.pid())
            .unwrap_or_else(|| panic!("pid {} not listed: {v}", child.pid()));
        let is_310 = p["python_version"] == "3.10";
        assert_eq!(p["supported"], !is_310, "{p}");
        if is_310 {
            assert!(
                p["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("needs 3.11+"))
            );
        }
    }
}
