//! Crash safety of the spool: a delivery process killed with SIGKILL while PostHog is down loses
//! no event it acknowledged; the next process delivers them.
//!
//! How: this test binary re-runs itself as the "agent" (the `child_delivery_process` test, which
//! does nothing unless `LDBG_DELIVERY_CHILD` is set). The child starts a real
//! `delivery::Pipeline` with a `PosthogSink`, sends events, prints `UUID <id>` for each event
//! `send` acknowledged, then `READY`, and waits to be killed. Using the test binary itself keeps
//! the child's code next to the test and needs no extra binary or hidden CLI subcommand.
use libdebugger_agent::delivery::{DeliveryConfig, Event, Pipeline, PosthogSink};
use libdebugger_agent::posthog::config::Secret;
use libdebugger_tests::posthog_server::{self, Fault, PosthogServer};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CHILD_ENV: &str = "LDBG_DELIVERY_CHILD";

/// The child side. A no-op in a normal test run.
#[test]
fn child_delivery_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    // spec: "<server url>|<spool dir>|<events to send>"
    let mut parts = spec.splitn(3, '|');
    let (url, dir, n) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().parse::<usize>().unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let mut cfg = DeliveryConfig::new(dir.into());
        cfg.flush_interval = Duration::from_millis(100);
        cfg.retry_initial = Duration::from_millis(50);
        cfg.retry_max = Duration::from_millis(200);
        // A small segment size, so the crash leaves several segments behind.
        cfg.segment_bytes = 8 * 1024;
        let sink = PosthogSink::new(&url, Secret::new(posthog_server::PROJECT_KEY)).unwrap();
        let (tx, _handle) = Pipeline::start(cfg, sink).unwrap();
        for i in 0..n {
            let Value::Object(props) = json!({"$breakpoint_id": "b", "$file_path": "a.py",
                "$line_number": 1, "$locals_variables": {"i": i}})
            else {
                unreachable!()
            };
            let ev = Event::hit("crash-test", props, []);
            let id = ev.uuid;
            tx.send(ev).unwrap();
            println!("UUID {id}");
        }
        println!("READY");
        std::future::pending::<()>().await;
    });
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the child and waits (deadline 60 s) for `READY`; returns it and the uuids it printed.
fn spawn_child(url: &str, dir: &std::path::Path, n: usize) -> (ChildGuard, Vec<String>) {
    let (child, ids, _) = spawn_child_until(url, dir, n, usize::MAX);
    (child, ids)
}

/// The uuid a child output line acknowledges, if it is one. (The harness prints
/// "test child_delivery_process ... " before the child's output, on the same line.)
fn uuid_of(line: &str) -> Option<String> {
    line.find("UUID ")
        .map(|at| line[at + 5..].trim().to_owned())
}

/// Like [`spawn_child`], but returns as soon as `until` uuids were printed (the child is still
/// sending).
fn spawn_child_until(
    url: &str,
    dir: &std::path::Path,
    n: usize,
    until: usize,
) -> (ChildGuard, Vec<String>, mpsc::Receiver<String>) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "child_delivery_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{url}|{}|{n}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = ChildGuard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut ids = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if uuid_of(&l).is_some() => {
                ids.extend(uuid_of(&l));
                if ids.len() >= until {
                    break;
                }
            }
            Ok(l) if l.trim_end().ends_with("READY") => break,
            Ok(_) => {}
            Err(e) => panic!("the child did not get ready: {e}"),
        }
    }
    (guard, ids, rx)
}

#[test]
fn kill_9_during_an_outage_loses_nothing() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let server = PosthogServer::start().unwrap();
    server.set_batch_down(Some(Fault::Status(503)));
    let dir = tempfile::tempdir().unwrap();

    let (mut child, ids) = spawn_child(&server.url(), dir.path(), 300);
    assert_eq!(ids.len(), 300);
    // Let it try (and fail) at least once, so the kill lands mid-retry.
    assert!(server.wait_requests(Duration::from_secs(10), |r| !r.is_empty()));
    // SIGKILL: no shutdown, no flush, no fsync beyond what already happened.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert!(server.events().is_empty());

    server.set_batch_down(None);
    let (_child2, more) = spawn_child(&server.url(), dir.path(), 0);
    assert!(more.is_empty());
    let want: HashSet<String> = ids.into_iter().collect();
    let ok = server.wait_events(Duration::from_secs(30), |evs| {
        let got: HashSet<&str> = evs.iter().filter_map(|e| e["uuid"].as_str()).collect();
        want.iter().all(|id| got.contains(id.as_str()))
    });
    let got: HashSet<String> = server
        .events()
        .iter()
        .filter_map(|e| e["uuid"].as_str().map(str::to_owned))
        .collect();
    assert!(ok, "lost {} of 300 events", want.difference(&got).count());
    // Delivered oldest first: the events of the first batch after recovery are the oldest.
    let first = server.events()[0]["properties"]["$locals_variables"]["i"].clone();
    assert_eq!(first, json!(0));
}

#[test]
fn kill_9_while_sending_loses_no_acknowledged_event() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let server = PosthogServer::start().unwrap();
    server.set_batch_down(Some(Fault::Status(503)));
    let dir = tempfile::tempdir().unwrap();
    // The child would send a million events; it is killed mid-stream once 2000 were
    // acknowledged.
    let (mut child, mut ids, rx) = spawn_child_until(&server.url(), dir.path(), 1_000_000, 2000);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // Every acknowledgement it printed before dying (the pipe is closed now, so this ends).
    ids.extend(rx.iter().filter_map(|l| uuid_of(&l)));
    assert!(ids.len() >= 2000);

    server.set_batch_down(None);
    let (_child2, _) = spawn_child(&server.url(), dir.path(), 0);
    let want: HashSet<String> = ids.into_iter().collect();
    let ok = server.wait_events(Duration::from_secs(60), |evs| {
        let got: HashSet<&str> = evs.iter().filter_map(|e| e["uuid"].as_str()).collect();
        want.iter().all(|id| got.contains(id.as_str()))
    });
    let got: HashSet<String> = server
        .events()
        .iter()
        .filter_map(|e| e["uuid"].as_str().map(str::to_owned))
        .collect();
    assert!(
        ok,
        "lost {} of {} acknowledged events",
        want.difference(&got).count(),
        want.len()
    );
}
