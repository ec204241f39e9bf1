//! The delivery pipeline (spool → batches → sink) against the PostHog-compatible test server.
use libdebugger_agent::delivery::{
    DeliveryConfig, DeliveryError, Event, JsonLinesSink, Pipeline, PosthogSink, StatusUpdate,
};
use libdebugger_agent::posthog::config::Secret;
use libdebugger_tests::posthog_server::{self, Fault, PosthogServer};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn config(dir: &std::path::Path) -> DeliveryConfig {
    let mut c = DeliveryConfig::new(dir.to_owned());
    c.flush_interval = Duration::from_millis(200);
    c.retry_initial = Duration::from_millis(50);
    c.retry_max = Duration::from_millis(400);
    c
}

fn sink(server: &PosthogServer) -> PosthogSink {
    PosthogSink::new(&server.url(), Secret::new(posthog_server::PROJECT_KEY)).unwrap()
}

fn hit(i: usize) -> Event {
    let Value::Object(props) = json!({
        "$breakpoint_id": "0190a6c5-0000-7000-8000-000000000001",
        "$file_path": "app/views.py",
        "$line_number": 42,
        "$locals_variables": {"i": i, "user": {"py/object": "app.User", "id": 7}},
        "$stack_trace": [["app/views.py", "handler", 42]],
        "$timestamp": "2026-11-24T07:00:00Z",
        "$thread_id": 140001,
        "$thread_name": "MainThread",
    }) else {
        unreachable!()
    };
    Event::hit("test-host", props, [("$pid".to_string(), json!(1234))])
}

fn uuids(events: &[Value]) -> HashSet<String> {
    events
        .iter()
        .filter_map(|e| e["uuid"].as_str().map(str::to_owned))
        .collect()
}

fn all_delivered(sent: &HashSet<String>) -> impl Fn(&[Value]) -> bool + '_ {
    move |evs| sent.is_subset(&uuids(evs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_gzipped_and_at_most_100_events() {
    let server = PosthogServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tx, handle) = Pipeline::start(config(dir.path()), sink(&server)).unwrap();
    let mut sent = HashSet::new();
    for i in 0..250 {
        let ev = hit(i);
        sent.insert(ev.uuid.to_string());
        tx.send(ev).unwrap();
    }
    assert!(
        server
            .wait_events_async(Duration::from_secs(10), all_delivered(&sent))
            .await
    );
    let batches = server.requests_to("/batch/");
    assert!(
        batches
            .iter()
            .all(|r| r.content_encoding.as_deref() == Some("gzip"))
    );
    assert!(
        batches
            .iter()
            .all(|r| r.batch_len.is_some_and(|n| n <= 100))
    );
    assert!(batches.len() >= 3, "{} requests", batches.len());
    let ev = &server.events()[0];
    assert_eq!(ev["event"], "$data_breakpoint_hit");
    assert_eq!(ev["distinct_id"], "test-host");
    assert_eq!(ev["properties"]["$process_person_profile"], json!(false));
    assert_eq!(ev["properties"]["$file_path"], "app/views.py");
    assert_eq!(ev["properties"]["$line_number"], 42);
    assert_eq!(ev["timestamp"], "2026-11-24T07:00:00Z");

    // A lone event goes out after the flush interval, without waiting for 100.
    let lone = hit(999);
    let id = lone.uuid.to_string();
    let t0 = Instant::now();
    tx.send(lone).unwrap();
    assert!(
        server
            .wait_events_async(Duration::from_secs(5), |e| uuids(e).contains(&id))
            .await
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
    let stats = handle.shutdown(Duration::from_secs(2)).await;
    assert_eq!(stats.delivered, 251);
    assert_eq!(stats.queued, 0);
    assert_eq!(stats.dropped_spool_full + stats.dropped_rejected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_then_recovery_deliver_every_event() {
    let server = PosthogServer::start().unwrap();
    server.fail_batch(Fault::Status(500), 3);
    server.fail_batch(Fault::DropConnection, 2);
    server.fail_batch(Fault::Status(503), 1);
    server.fail_batch(Fault::Status(408), 1);
    server.fail_batch(Fault::Slow(Duration::from_millis(300)), 1);
    let dir = tempfile::tempdir().unwrap();
    let (tx, handle) = Pipeline::start(config(dir.path()), sink(&server)).unwrap();
    let mut sent = HashSet::new();
    for i in 0..150 {
        let ev = hit(i);
        sent.insert(ev.uuid.to_string());
        tx.send(ev).unwrap();
    }
    assert!(
        server
            .wait_events_async(Duration::from_secs(20), all_delivered(&sent))
            .await,
        "missing: {}",
        sent.difference(&uuids(&server.events())).count()
    );
    let stats = handle.shutdown(Duration::from_secs(2)).await;
    assert!(stats.retried >= 7, "{stats:?}");
    assert_eq!(stats.queued, 0);
    assert!(stats.last_error.is_none(), "{stats:?}");
    let failed: Vec<u16> = server
        .requests_to("/batch/")
        .iter()
        .map(|r| r.status)
        .filter(|s| *s != 200)
        .collect();
    assert_eq!(failed, vec![500, 500, 500, 0, 0, 503, 408]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let server = PosthogServer::start().unwrap();
    server.fail_batch(
        Fault::TooManyRequests {
            retry_after_secs: 2,
        },
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let (tx, handle) = Pipeline::start(config(dir.path()), sink(&server)).unwrap();
    let ev = hit(1);
    let id = ev.uuid.to_string();
    tx.send(ev).unwrap();
    assert!(
        server
            .wait_events_async(Duration::from_secs(10), |e| uuids(e).contains(&id))
            .await
    );
    let reqs = server.requests_to("/batch/");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].status, 429);
    let gap = reqs[1].at - reqs[0].at;
    // The backoff alone would retry after ≤ 50 ms.
    assert!(gap >= Duration::from_millis(1950), "retried after {gap:?}");
    handle.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_project_key_is_reported_once_without_a_retry_storm() {
    let server = PosthogServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A key capture refuses (a personal key: rust/capture/src/token.rs); an unknown phc_ key
    // would get 200 (see the agent's key check).
    let bad = PosthogSink::new(&server.url(), Secret::new("phx_personal_by_mistake")).unwrap();
    let (tx, handle) = Pipeline::start(config(dir.path()), bad).unwrap();
    for i in 0..10 {
        tx.send(hit(i)).unwrap();
    }
    assert!(
        server
            .wait_requests_async(Duration::from_secs(5), |r| !r.is_empty())
            .await
    );
    // Give a storm every chance to show: the retry backoff is 50 ms.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.requests_to("/batch/").len(), 1);
    let stats = handle.stats();
    let err = stats.last_error.clone().unwrap();
    assert!(
        err.contains("HTTP 401") && err.contains("POSTHOG_API_KEY"),
        "{err}"
    );
    assert_eq!(stats.queued, 10, "the events stay in the spool: {stats:?}");
    assert_eq!(stats.delivered, 0);
    handle.shutdown(Duration::from_millis(200)).await;
    drop(tx);

    // Restarted with the right key, the spooled events are delivered.
    let (_tx, handle) = Pipeline::start(config(dir.path()), sink(&server)).unwrap();
    assert!(
        server
            .wait_events_async(Duration::from_secs(5), |e| e.len() == 10)
            .await
    );
    handle.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_event_is_isolated_by_bisection() {
    let server = PosthogServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tx, handle) = Pipeline::start(config(dir.path()), sink(&server)).unwrap();
    let mut good = HashSet::new();
    for i in 0..20 {
        let mut ev = hit(i);
        if i == 13 {
            // The capture service answers 400 for a batch holding an event without distinct_id.
            ev.distinct_id = String::new();
        } else {
            good.insert(ev.uuid.to_string());
        }
        tx.send(ev).unwrap();
    }
    assert!(
        server
            .wait_events_async(Duration::from_secs(10), all_delivered(&good))
            .await
    );
    let stats = handle.shutdown(Duration::from_secs(1)).await;
    assert_eq!(stats.dropped_rejected, 1, "{stats:?}");
    assert_eq!(stats.delivered, 19);
    assert_eq!(server.events().len(), 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_drops_and_counts() {
    let server = PosthogServer::start().unwrap();
    server.set_batch_down(Some(Fault::Status(503)));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.spool_max_bytes = 64 * 1024;
    cfg.segment_bytes = 16 * 1024;
    let (tx, handle) = Pipeline::start(cfg, sink(&server)).unwrap();
    let mut accepted = HashSet::new();
    let mut refused = 0;
    for i in 0..200 {
        let ev = hit(i);
        let id = ev.uuid.to_string();
        match tx.send(ev) {
            Ok(()) => {
                accepted.insert(id);
            }
            Err(DeliveryError::Spool(e)) => {
                assert!(e.to_string().contains("spool is full"), "{e}");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0 && !accepted.is_empty(), "{refused} refused");
    let stats = handle.stats();
    assert_eq!(stats.dropped_spool_full, refused);
    assert!(stats.spool_bytes <= 64 * 1024, "{stats:?}");
    // PostHog comes back: everything accepted is delivered, and the spool empties.
    server.set_batch_down(None);
    assert!(
        server
            .wait_events_async(Duration::from_secs(15), all_delivered(&accepted))
            .await
    );
    let stats = handle.shutdown(Duration::from_secs(1)).await;
    assert_eq!(stats.queued, 0);
    assert!(stats.spool_bytes < 1024, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_captures_are_cut_and_marked() {
    let server = PosthogServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tx, handle) = Pipeline::start(config(dir.path()), sink(&server)).unwrap();
    let mut ev = hit(0);
    let locals = ev
        .properties
        .get_mut("$locals_variables")
        .and_then(Value::as_object_mut)
        .unwrap();
    locals.insert("blob".into(), json!("z".repeat(2 * 1024 * 1024)));
    locals.insert("small".into(), json!("kept"));
    tx.send(ev).unwrap();
    assert!(
        server
            .wait_events_async(Duration::from_secs(10), |e| e.len() == 1)
            .await
    );
    let got = &server.events()[0];
    assert!(got.to_string().len() < 900 * 1024);
    let p = &got["properties"];
    assert_eq!(p["$truncated"], json!(true));
    assert_eq!(p["$truncated_variables"], json!(["blob"]));
    assert_eq!(p["$locals_variables"]["small"], "kept");
    // The marker is a local's value like any other: a JSON string (of a string).
    let marker: Value = serde_json::from_str(p["$locals_variables"]["blob"].as_str().unwrap())
        .expect("the marker is a JSON string");
    assert!(
        marker.as_str().unwrap().starts_with("<truncated"),
        "{marker}"
    );
    let stats = handle.shutdown(Duration::from_secs(1)).await;
    assert_eq!(stats.truncated, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_without_waiting_for_the_interval() {
    let server = PosthogServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush_interval = Duration::from_secs(3600);
    let (tx, handle) = Pipeline::start(cfg, sink(&server)).unwrap();
    for i in 0..5 {
        tx.send(hit(i)).unwrap();
    }
    let t0 = Instant::now();
    let stats = handle.shutdown(Duration::from_secs(5)).await;
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(stats.delivered, 5);
    assert_eq!(server.events().len(), 5);
    assert!(matches!(tx.send(hit(6)), Err(DeliveryError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_file_gets_the_same_events_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let sink = JsonLinesSink::open(&out).unwrap();
    let (tx, handle) = Pipeline::start(config(&dir.path().join("spool")), sink).unwrap();
    let mut sent = Vec::new();
    for i in 0..3 {
        let ev = hit(i);
        sent.push(ev.uuid.to_string());
        tx.send(ev).unwrap();
    }
    let status = StatusUpdate {
        breakpoint_id: "b1".into(),
        status: "error".into(),
        error: Some("app/x.py matches 2 files".into()),
    };
    let st = Event::breakpoint_status("test-host", &status, Map::new());
    sent.push(st.uuid.to_string());
    tx.send(st).unwrap();
    let stats = handle.shutdown(Duration::from_secs(2)).await;
    assert_eq!(stats.delivered, 4);
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<String> = lines
        .iter()
        .map(|e| e["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, sent, "same events, same order");
    let last = &lines[3];
    assert_eq!(last["event"], "$data_breakpoint_status");
    assert_eq!(last["properties"]["$breakpoint_id"], "b1");
    assert_eq!(last["properties"]["$status"], "error");
    assert_eq!(last["properties"]["$error"], "app/x.py matches 2 files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakpoint_statuses_are_rate_limited_per_breakpoint() {
    use libdebugger_agent::delivery::StatusReporter;
    let server = PosthogServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tx, handle) = Pipeline::start(config(dir.path()), sink(&server)).unwrap();
    let reporter = StatusReporter::new(tx, "test-host", Duration::from_millis(300), Map::new());
    let st = |id: &str, status: &str, error: Option<&str>| StatusUpdate {
        breakpoint_id: id.into(),
        status: status.into(),
        error: error.map(Into::into),
    };
    assert!(reporter.report(st("b1", "pending", None)).unwrap());
    assert!(
        !reporter.report(st("b1", "pending", None)).unwrap(),
        "unchanged"
    );
    assert!(
        !reporter.report(st("b1", "armed", None)).unwrap(),
        "too soon"
    );
    assert!(
        !reporter
            .report(st("b1", "error", Some("matches 2 files")))
            .unwrap()
    );
    assert!(
        reporter.report(st("b2", "armed", None)).unwrap(),
        "per breakpoint"
    );
    // The held status (the latest, "error") goes out once the interval has passed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while reporter.tick() == 0 {
        assert!(
            Instant::now() < deadline,
            "the held status was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server
            .wait_events_async(Duration::from_secs(5), |e| e.len() == 3)
            .await
    );
    let got: Vec<(String, String, Value)> = server
        .events()
        .iter()
        .map(|e| {
            let p = &e["properties"];
            assert_eq!(e["event"], "$data_breakpoint_status");
            (
                p["$breakpoint_id"].as_str().unwrap().to_owned(),
                p["$status"].as_str().unwrap().to_owned(),
                p["$error"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("b1".into(), "pending".into(), Value::Null),
            ("b2".into(), "armed".into(), Value::Null),
            ("b1".into(), "error".into(), json!("matches 2 files")),
        ]
    );
    drop(reporter);
    handle.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_wire_posthog_and_events_file_together() {
    use libdebugger_agent::delivery::Delivery;
    use libdebugger_agent::posthog::PosthogArgs;
    use libdebugger_agent::posthog::config::resolve_with_file;
    let server = PosthogServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let url = server.url();
    let project = server.project_id().to_string();
    let spool_s = spool.display().to_string();
    let env = move |k: &str| -> Option<String> {
        Some(match k {
            "POSTHOG_HOST" => url.clone(),
            "POSTHOG_API_KEY" => posthog_server::PROJECT_KEY.into(),
            "POSTHOG_PERSONAL_API_KEY" => posthog_server::PERSONAL_KEY.into(),
            "POSTHOG_PROJECT_ID" => project.clone(),
            "LIBDEBUGGER_SPOOL_DIR" => spool_s.clone(),
            _ => return None,
        })
    };
    let file = Some((
        std::path::Path::new("agent.toml"),
        "[delivery]\nflush_interval_ms = 100\n",
    ));
    let settings = resolve_with_file(&PosthogArgs::default(), &env, file).unwrap();
    let events_file = dir.path().join("events.jsonl");
    let delivery = Delivery::start(&settings, Some(&events_file)).unwrap();
    let ev = hit(1);
    let id = ev.uuid.to_string();
    delivery.sender().send(ev).unwrap();
    assert!(
        server
            .wait_events_async(Duration::from_secs(10), |e| uuids(e).contains(&id))
            .await
    );
    let stats = delivery.shutdown(Duration::from_secs(2)).await;
    let names: Vec<&str> = stats.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["posthog", "events-file"]);
    assert!(stats.iter().all(|(_, s)| s.delivered == 1), "{stats:?}");
    assert!(std::fs::read_to_string(&events_file).unwrap().contains(&id));
    assert!(spool.join("posthog").is_dir() && spool.join("events-file").is_dir());
}

/// Throughput of the acknowledged path (fit + spool append) and of delivery to the test server.
/// Run with `cargo test -p libdebugger-tests --test delivery_pipeline -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn measure_throughput() {
    let server = PosthogServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    server.set_batch_down(Some(Fault::Status(503)));
    let (tx, handle) = Pipeline::start(config(dir.path()), sink(&server)).unwrap();
    let n = 50_000;
    let events: Vec<Event> = (0..n).map(hit).collect();
    let bytes: usize = events.iter().map(|e| e.to_json().len()).sum();
    let t0 = Instant::now();
    for ev in events {
        tx.send(ev).unwrap();
    }
    let send = t0.elapsed();
    println!(
        "send: {n} events ({} KiB) in {send:?} = {:.1} µs/event",
        bytes / 1024,
        send.as_secs_f64() * 1e6 / n as f64
    );
    server.set_batch_down(None);
    let t1 = Instant::now();
    assert!(
        server
            .wait_events_async(Duration::from_secs(120), |e| e.len() >= n)
            .await
    );
    let d = t1.elapsed();
    println!(
        "deliver after recovery: {n} events in {d:?} = {:.0} events/s",
        n as f64 / d.as_secs_f64()
    );
    println!("{:?}", handle.shutdown(Duration::from_secs(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_spool_records_are_skipped_and_counted() {
    use libdebugger_agent::delivery::Counters;
    use libdebugger_agent::delivery::spool::Spool;
    use std::sync::Arc;
    let server = PosthogServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (hit(1), hit(2));
    {
        // A previous (or foreign) writer left a record with a valid checksum that is no event.
        let spool =
            Spool::open(dir.path(), 1 << 20, 1 << 20, Arc::new(Counters::default())).unwrap();
        spool.append(&a.to_json()).unwrap();
        spool.append(b"{\"not\": \"an event\"}").unwrap();
        spool.append(&b.to_json()).unwrap();
    }
    let (_tx, handle) = Pipeline::start(config(dir.path()), sink(&server)).unwrap();
    let want: HashSet<String> = [a.uuid.to_string(), b.uuid.to_string()].into();
    assert!(
        server
            .wait_events_async(Duration::from_secs(10), all_delivered(&want))
            .await
    );
    let stats = handle.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        (stats.delivered, stats.corrupt, stats.queued),
        (2, 1, 0),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_stay_under_5_mib() {
    let server = PosthogServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.flush_interval = Duration::from_secs(3600);
    let (tx, handle) = Pipeline::start(cfg, sink(&server)).unwrap();
    let mut sent = HashSet::new();
    for i in 0..20 {
        let mut ev = hit(i);
        // ~600 KiB each, under the per-event limit: 20 of them are ~12 MiB.
        ev.properties["$locals_variables"]["blob"] = json!("q".repeat(600 * 1024));
        sent.insert(ev.uuid.to_string());
        tx.send(ev).unwrap();
    }
    let stats = handle.shutdown(Duration::from_secs(20)).await;
    assert_eq!(stats.delivered, 20, "{stats:?}");
    assert_eq!(stats.truncated, 0);
    assert!(all_delivered(&sent)(&server.events()));
    let sizes: Vec<usize> = server
        .requests_to("/batch/")
        .iter()
        .filter_map(|r| r.body_bytes)
        .collect();
    assert!(sizes.len() >= 3, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s < 5 * 1024 * 1024), "{sizes:?}");
}
