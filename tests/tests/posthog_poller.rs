//! The Live Debugger API poller against the PostHog-compatible test server.
use libdebugger_agent::breakpoints::DesiredSet;
use libdebugger_agent::posthog::config::Secret;
use libdebugger_agent::posthog::{Poller, PollerConfig, ProjectId};
use libdebugger_tests::posthog_server::{self, Fault, Paging, PosthogServer};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

fn config(server: &PosthogServer, interval: Duration) -> PollerConfig {
    PollerConfig {
        api_host: server.url(),
        personal_api_key: Secret::new(posthog_server::PERSONAL_KEY),
        api_key: Secret::new(posthog_server::PROJECT_KEY),
        project_id: ProjectId::Numeric(server.project_id()),
        interval,
        max_backoff: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    }
}

fn bp(id: &str, file: &str, line: u32, cond: Option<&str>, enabled: bool) -> Value {
    json!({"id": id, "repository": "acme/shop", "filename": file, "line_number": line,
           "enabled": enabled, "condition": cond})
}

async fn wait_set(
    rx: &mut watch::Receiver<DesiredSet>,
    what: &str,
    pred: impl FnMut(&DesiredSet) -> bool,
) -> DesiredSet {
    let res = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(pred))
        .await
        .map(|r| r.map(|s| s.clone()));
    match res {
        Ok(Ok(set)) => set,
        _ => panic!("timed out waiting for: {what}; set is {:?}", *rx.borrow()),
    }
}

#[tokio::test]
async fn first_fetch_is_immediate() {
    let server = PosthogServer::start().unwrap();
    server.set_breakpoints(vec![bp("b1", "app/x.py", 10, None, true)]);
    // A long interval: only the immediate first fetch can deliver the set in time.
    let t0 = tokio::time::Instant::now();
    let mut poller = Poller::start(config(&server, Duration::from_secs(3600))).unwrap();
    let set = wait_set(&mut poller.desired, "the first set", |s| s.len() == 1).await;
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "first fetch took {:?}",
        t0.elapsed()
    );
    let b = set.get("b1").unwrap();
    assert_eq!((b.file.as_str(), b.line), ("app/x.py", 10));
    assert_eq!(b.repository.as_deref(), Some("acme/shop"));
    assert_eq!(server.breakpoint_requests().len(), 1);
    let st = poller.status.borrow().clone();
    assert_eq!((st.fetches, st.failures), (1, 0));
    assert!(st.last_success.is_some());
}

#[tokio::test]
async fn every_kind_of_change_is_published() {
    let server = PosthogServer::start().unwrap();
    server.set_breakpoints(vec![
        bp("a", "app/x.py", 10, None, true),
        bp("b", "app/y.py", 20, Some("n > 1"), true),
    ]);
    let mut poller = Poller::start(config(&server, Duration::from_millis(100))).unwrap();
    wait_set(&mut poller.desired, "a and b", |s| s.len() == 2).await;

    // Condition-only edit.
    server.set_breakpoints(vec![
        bp("a", "app/x.py", 10, Some("user.id == 7"), true),
        bp("b", "app/y.py", 20, Some("n > 1"), true),
    ]);
    wait_set(&mut poller.desired, "a's new condition", |s| {
        s.get("a").and_then(|b| b.condition.as_deref()) == Some("user.id == 7")
    })
    .await;

    // Condition removed again (null), and line moved: both are changes.
    server.set_breakpoints(vec![
        bp("a", "app/x.py", 11, None, true),
        bp("b", "app/y.py", 20, Some("n > 1"), true),
    ]);
    wait_set(&mut poller.desired, "a without condition on line 11", |s| {
        s.get("a")
            .is_some_and(|b| b.condition.is_none() && b.line == 11)
    })
    .await;

    // Disable b: the active endpoint stops listing it, so it must leave the enabled set.
    server.set_breakpoints(vec![
        bp("a", "app/x.py", 11, None, true),
        bp("b", "app/y.py", 20, Some("n > 1"), false),
    ]);
    let set = wait_set(&mut poller.desired, "b disabled", |s| {
        s.enabled().all(|b| b.id != "b")
    })
    .await;
    assert!(set.get("a").is_some());

    // Delete everything.
    server.set_breakpoints(vec![]);
    wait_set(&mut poller.desired, "empty set", DesiredSet::is_empty).await;
}

#[tokio::test]
async fn current_project_sends_token_and_breakpoints_key_is_accepted() {
    let server = PosthogServer::start().unwrap();
    server.set_list_key("breakpoints");
    server.set_breakpoints(vec![bp("c", "svc/z.py", 3, None, true)]);
    let mut cfg = config(&server, Duration::from_secs(3600));
    cfg.project_id = ProjectId::Current;
    let mut poller = Poller::start(cfg).unwrap();
    wait_set(&mut poller.desired, "set via @current", |s| {
        s.get("c").is_some()
    })
    .await;
    let reqs = server.breakpoint_requests();
    assert_eq!(
        reqs[0].path,
        "/api/projects/@current/live_debugger_breakpoints/active/"
    );
    assert_eq!(
        reqs[0].query.as_deref(),
        Some(format!("token={}", posthog_server::PROJECT_KEY).as_str())
    );
    assert_eq!(server.current_without_token(), 0);
}

/// Makes the server answer `body` and waits until the poller counted it as a failure; returns
/// the error the poller's status shows.
async fn answer_fails(server: &PosthogServer, poller: &Poller, body: &str) -> String {
    server.set_breakpoints_raw(Some((200, body)));
    let before = poller.status.borrow().failures;
    let mut st = poller.status.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        st.wait_for(|s| s.failures > before),
    )
    .await
    .unwrap_or_else(|_| panic!("the answer {body:?} was not fetched"))
    .unwrap();
    let err = poller.status.borrow().last_error.clone();
    err.unwrap_or_default()
}

#[tokio::test]
async fn malformed_answer_keeps_the_last_good_set() {
    let server = PosthogServer::start().unwrap();
    server.set_breakpoints(vec![bp("a", "app/x.py", 10, None, true)]);
    let mut poller = Poller::start(config(&server, Duration::from_millis(50))).unwrap();
    wait_set(&mut poller.desired, "a", |s| s.len() == 1).await;
    let good = poller.desired.borrow().clone();

    for body in ["{not json", r#"{"count": 0}"#, "<html>"] {
        let err = answer_fails(&server, &poller, body).await;
        assert_eq!(*poller.desired.borrow(), good, "after answer {body:?}");
        assert!(err.contains("not a valid"), "{err}");
    }
    // A bad entry is that breakpoint's error; the rest of the answer takes effect.
    server.set_breakpoints_raw(Some((
        200,
        r#"{"results": [{"id": "x"}, {"id": "c", "filename": "app/z.py", "line_number": 0}]}"#,
    )));
    let set = wait_set(&mut poller.desired, "x and c", |s| s.get("c").is_some()).await;
    assert!(
        set.get("x")
            .unwrap()
            .invalid
            .as_deref()
            .unwrap()
            .contains("filename")
    );
    assert!(
        set.get("c").unwrap().invalid.is_none(),
        "line 0 is valid in PostHog"
    );
    assert_eq!(set.get("c").unwrap().source, "posthog");
    // A 500 keeps it too; then a good answer replaces it.
    server.set_breakpoints_raw(None);
    server.fail_breakpoints(Fault::Status(500), 1);
    server.set_breakpoints(vec![bp("b", "app/y.py", 1, None, true)]);
    wait_set(&mut poller.desired, "b after recovery", |s| {
        s.get("b").is_some() && s.len() == 1
    })
    .await;
    assert!(poller.status.borrow().last_error.is_none());
}

/// An answer that says `has_more` is read to its last page, through `next` links or, without
/// them, `offset`; with `@current`, every page carries the project token.
#[tokio::test]
async fn paged_answers_are_read_to_the_last_page() {
    let many: Vec<Value> = (1..=250)
        .map(|i| bp(&format!("bp{i}"), "app/x.py", i, None, true))
        .collect();
    for next_link in [true, false] {
        let server = PosthogServer::start().unwrap();
        server.set_breakpoints(many.clone());
        server.set_paging(Some(Paging {
            page_size: 100,
            next_link,
        }));
        let mut cfg = config(&server, Duration::from_secs(3600));
        cfg.project_id = ProjectId::Current;
        let mut poller = Poller::start(cfg).unwrap();
        let set = wait_set(&mut poller.desired, "all 250", |s| !s.is_empty()).await;
        assert_eq!(
            set.len(),
            250,
            "next_link={next_link}: one set with every page"
        );
        assert!(set.get("bp1").is_some() && set.get("bp250").is_some());
        let reqs = server.breakpoint_requests();
        assert_eq!(reqs.len(), 3, "next_link={next_link}: {reqs:?}");
        let token = format!("token={}", posthog_server::PROJECT_KEY);
        for (r, offset) in reqs
            .iter()
            .zip([None, Some("offset=100"), Some("offset=200")])
        {
            let q = r.query.as_deref().unwrap_or("");
            assert_eq!(q.matches(&token).count(), 1, "{q}");
            match offset {
                Some(o) => assert!(q.split('&').any(|kv| kv == o), "{q} lacks {o}"),
                None => assert!(!q.contains("offset="), "{q}"),
            }
        }
        assert_eq!(server.current_without_token(), 0);
    }
}

/// An incomplete answer (`has_more` with an empty page) and a `next` link to another host are
/// errors: the set in force stays, and the personal key is not sent elsewhere.
#[tokio::test]
async fn incomplete_pages_keep_the_last_good_set() {
    let server = PosthogServer::start().unwrap();
    server.set_breakpoints(vec![bp("a", "app/x.py", 10, None, true)]);
    let mut poller = Poller::start(config(&server, Duration::from_millis(50))).unwrap();
    wait_set(&mut poller.desired, "a", |s| s.len() == 1).await;
    let good = poller.desired.borrow().clone();
    let one = r#"{"id": "b", "filename": "app/y.py", "line_number": 2}"#;
    let bodies = [
        (
            r#"{"results": [], "has_more": true}"#.to_string(),
            "no breakpoints",
        ),
        (
            format!(r#"{{"results": [{one}], "has_more": true, "next": "http://192.0.2.1/p"}}"#),
            "another host",
        ),
    ];
    for (body, expected) in &bodies {
        let err = answer_fails(&server, &poller, body).await;
        assert_eq!(*poller.desired.borrow(), good, "after answer {body}");
        assert!(err.contains(expected), "{err}");
    }
}

/// Collects log output of the current thread's tracing subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

#[tokio::test]
async fn unauthorized_is_reported_once_and_backs_off() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The test runtime is single-threaded, so the poller task logs through this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = PosthogServer::start().unwrap();
    let mut cfg = config(&server, Duration::from_millis(50));
    cfg.personal_api_key = Secret::new("phx_wrong");
    let poller = Poller::start(cfg).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let n = server.breakpoint_requests().len();
    // Without backoff a 50 ms interval makes ~50 requests in 2.5 s; with it, 4 to 8.
    assert!((2..=10).contains(&n), "{n} requests in 2.5 s");
    assert!(server.breakpoint_requests().iter().all(|r| r.status == 401));
    let st = poller.status.borrow().clone();
    assert!(st.auth_error);
    assert_eq!(st.failures as usize, n);
    let err = st.last_error.unwrap();
    assert!(
        err.contains("HTTP 401") && err.contains("live_debugger:read"),
        "{err}"
    );
    assert!(
        err.contains("Invalid personal API key"),
        "the server's detail is shown: {err}"
    );

    let text = logs.text();
    let errors = text.lines().filter(|l| l.contains("ERROR")).count();
    assert_eq!(
        errors, 1,
        "the 401 is logged once, not per request:\n{text}"
    );
    assert!(
        !text.contains("phx_wrong"),
        "the key must not be logged:\n{text}"
    );
}

#[tokio::test]
async fn forbidden_project_names_the_project_setting() {
    let server = PosthogServer::start().unwrap();
    let mut cfg = config(&server, Duration::from_secs(3600));
    cfg.project_id = ProjectId::Numeric(1);
    let poller = Poller::start(cfg).unwrap();
    let mut st = poller.status.clone();
    let s = tokio::time::timeout(Duration::from_secs(5), st.wait_for(|s| s.failures > 0))
        .await
        .unwrap()
        .unwrap()
        .clone();
    let err = s.last_error.unwrap();
    assert!(
        err.contains("HTTP 403") && err.contains("POSTHOG_PROJECT_ID"),
        "{err}"
    );
    assert!(s.auth_error);
}

#[tokio::test]
async fn rate_limit_retry_after_is_honoured() {
    let server = PosthogServer::start().unwrap();
    server.fail_breakpoints(
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    );
    server.set_breakpoints(vec![bp("a", "app/x.py", 10, None, true)]);
    let mut poller = Poller::start(config(&server, Duration::from_millis(50))).unwrap();
    wait_set(&mut poller.desired, "a after the 429", |s| s.len() == 1).await;
    let reqs = server.breakpoint_requests();
    assert_eq!(reqs[0].status, 429);
    let gap = reqs[1].at - reqs[0].at;
    // The 50 ms interval's backoff alone would retry within 50 ms.
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
}

/// PostHog's per-key limit (480 requests a minute, 4,800 an hour): a 429's `Retry-After` is
/// honoured, the next attempt waits that long instead of the (short) backoff.
#[tokio::test]
async fn the_servers_rate_limit_is_waited_out() {
    let server = PosthogServer::start().unwrap();
    server.set_breakpoints(vec![bp("a", "app/x.py", 10, None, true)]);
    server.set_rate_limit(Some(posthog_server::RateLimit {
        requests: 2,
        window: Duration::from_secs(3),
    }));
    let mut cfg = config(&server, Duration::from_millis(50));
    cfg.max_backoff = Duration::from_secs(30);
    let _poller = Poller::start(cfg).unwrap();
    // Two answers, a 429, and the attempt after it.
    assert!(
        server
            .wait_requests_async(Duration::from_secs(20), |r| r.len() >= 4)
            .await,
        "{:?}",
        server.requests()
    );
    let reqs = server.breakpoint_requests();
    let statuses: Vec<u16> = reqs.iter().map(|r| r.status).collect();
    let limited = statuses.iter().position(|s| *s == 429).expect("a 429");
    let gap = reqs[limited + 1].at.duration_since(reqs[limited].at);
    // The 429 said to come back when the window frees a slot (about 3 s after the first
    // request); the backoff alone would retry after 25–50 ms.
    assert!(
        gap >= Duration::from_millis(1500),
        "retried {gap:?} after the 429 ({statuses:?})"
    );
    assert_eq!(reqs[limited + 1].status, 200, "{statuses:?}");
}

/// A PostHog that retired the Live Debugger answers 404 on the active endpoint: the poller's
/// status carries the one line saying so, the set in force stays, and it asks again only after
/// RETIRED_RECHECK.
#[tokio::test]
async fn retired_endpoint_is_a_status_line() {
    use libdebugger_agent::posthog::poller::RETIRED;
    let server = PosthogServer::start().unwrap();
    server.set_breakpoints(vec![bp("a", "app/x.py", 10, None, true)]);
    let mut poller = Poller::start(config(&server, Duration::from_millis(50))).unwrap();
    wait_set(&mut poller.desired, "a", |s| s.len() == 1).await;
    server.set_retired(true);
    let mut st = poller.status.clone();
    tokio::time::timeout(
        Duration::from_secs(10),
        st.wait_for(|s| s.note.as_deref() == Some(RETIRED)),
    )
    .await
    .expect("the retired note")
    .unwrap();
    assert!(RETIRED.contains("hits are still sent"));
    assert_eq!(poller.desired.borrow().len(), 1, "the set in force stays");
    let err = poller.status.borrow().last_error.clone().unwrap();
    assert!(err.contains("HTTP 404"), "{err}");
    assert!(!poller.status.borrow().auth_error);
}

/// The active endpoint takes the project secret key (`phs_…`) as well as a personal key
/// (PostHog's `ProjectSecretAPIKeyAuthentication`).
#[tokio::test]
async fn a_project_secret_key_reads_the_breakpoints() {
    let server = PosthogServer::start().unwrap();
    server.set_breakpoints(vec![bp("a", "app/x.py", 10, None, true)]);
    let mut cfg = config(&server, Duration::from_secs(3600));
    cfg.personal_api_key = Secret::new(posthog_server::PROJECT_SECRET_KEY);
    let mut poller = Poller::start(cfg).unwrap();
    let set = wait_set(&mut poller.desired, "a with phs_", |s| s.len() == 1).await;
    assert_eq!(set.get("a").unwrap().source, "posthog");
    assert!(server.breakpoint_requests().iter().all(|r| r.status == 200));
}

/// `enabled: false` breakpoints are not in PostHog's default answer; the poller asks for the
/// default (enabled only), so a disabled breakpoint leaves the set.
#[tokio::test]
async fn disabled_breakpoints_leave_the_default_answer() {
    let server = PosthogServer::start().unwrap();
    server.set_breakpoints(vec![
        bp("a", "app/x.py", 10, None, true),
        bp("b", "app/x.py", 11, None, false),
    ]);
    let mut poller = Poller::start(config(&server, Duration::from_secs(3600))).unwrap();
    let set = wait_set(&mut poller.desired, "a only", |s| !s.is_empty()).await;
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set.get("a").is_some());
}
