//! A PostHog-compatible test server on 127.0.0.1 (never another interface).
//!
//! It serves the endpoints the agent uses, validating as PostHog does (PostHog/posthog's files
//! named where they decide it):
//!
//! * `GET /api/projects/{id|@current}/live_debugger_breakpoints/active/`
//!   (`products/live_debugger/backend/api.py`, `active_breakpoints`): needs `Authorization:
//!   Bearer <personal key>` or the project secret key (`phs_…`, its
//!   `ProjectSecretAPIKeyAuthentication`), else 401 `{"detail": …}`; a numeric id must be the
//!   server's project (else 403); `@current` takes `?token=<project key>` (a wrong token is a 401;
//!   requests without one are counted in [`PosthogServer::current_without_token`]). Answers
//!   `{"results": [...], "count", "has_more": false}` (or `breakpoints` as the list name, see
//!   [`PosthogServer::set_list_key`]), filtered by `repository` and `filename`, and by `enabled`
//!   like the real endpoint: `enabled=true` (the default) returns the enabled breakpoints,
//!   `enabled=false` **all** of them. [`PosthogServer::set_paging`] splits the answer into pages
//!   (`offset`, `has_more`, optionally `next`), which PostHog does not do today.
//!   [`PosthogServer::set_rate_limit`] applies PostHog's per-key request limit (429 with
//!   `Retry-After`); [`PosthogServer::set_retired`] makes it a PostHog that retired the Live
//!   Debugger (404 for the endpoint, everything else unchanged).
//! * `POST /batch/` (`rust/capture/`): gzip (`Content-Encoding: gzip`) or plain JSON, body ≤ 20 MB
//!   (else 413); `api_key` missing → 400; a malformed key → 401 (`rust/capture/src/token.rs`:
//!   empty, over 64 characters, not ASCII, a `phx_` personal key, a NUL); a **well-formed key
//!   the server does not know → 200**, its events dropped ([`PosthogServer::dropped_events`]),
//!   as capture does (it does not look keys up at the edge); every event needs `event` and
//!   `distinct_id` (else 400, and nothing of the batch is recorded). Accepted events of the
//!   project key are recorded ([`PosthogServer::events`]).
//! * `POST /flags/` (`rust/feature-flags/`): `{"api_key", "distinct_id"}`; 200 for the project
//!   key, 401 for any other (`src/api/errors.rs`: `TokenValidationError`) — how the agent checks
//!   the key.
//! * Any other `GET` path set with [`PosthogServer::set_static`]: a static file (the stand-in
//!   for the object store or file server `--breakpoints-url` polls), with `ETag` and
//!   `If-None-Match` → 304, and an optional bearer token.
//!
//! Faults are injected per endpoint: queued one-shot faults ([`PosthogServer::fail_batch`]) and a
//! persistent one ([`PosthogServer::set_batch_down`]), likewise for the breakpoints endpoint;
//! [`PosthogServer::set_breakpoints_raw`] makes it answer a fixed (e.g. malformed) body.
//!
//! The server runs on its own thread and runtime, so sync and async tests can use it alike; the
//! handle is `Send + Sync`.
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use parking_lot::{Condvar, Mutex};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `/batch/` body limit of PostHog's capture service.
pub const BATCH_BODY_LIMIT: usize = 20 * 1024 * 1024;

/// One injected fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status with `{"detail": "injected fault"}`.
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    TooManyRequests {
        /// The `Retry-After` value in seconds.
        retry_after_secs: u64,
    },
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// Close the connection without answering.
    DropConnection,
    /// 401 with PostHog's detail for a bad key.
    Unauthorized,
}

/// What the server saw of one request.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Arrival time.
    pub at: Instant,
    /// Arrival time on the wall clock (to compare with events' `$timestamp`).
    pub wall: std::time::SystemTime,
    /// Method and path.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The status answered (0 = connection dropped).
    pub status: u16,
    /// `Content-Encoding` of the request.
    pub content_encoding: Option<String>,
    /// For accepted `/batch/` requests: the number of events.
    pub batch_len: Option<usize>,
    /// For `/batch/` requests: the body size after decompression.
    pub body_bytes: Option<usize>,
    /// For accepted `/batch/` requests: the envelope's `sent_at` (capture ignores `sentAt`).
    pub sent_at: Option<String>,
}

#[derive(Default)]
struct Faults {
    queued: VecDeque<Fault>,
    persistent: Option<Fault>,
}

impl Faults {
    fn next(&mut self) -> Option<Fault> {
        self.queued.pop_front().or_else(|| self.persistent.clone())
    }
}

struct State {
    personal_key: String,
    project_key: String,
    project_id: u64,
    breakpoints: Mutex<Vec<Value>>,
    list_key: Mutex<String>,
    paging: Mutex<Option<Paging>>,
    raw_breakpoints: Mutex<Option<(u16, String)>>,
    batch_faults: Mutex<Faults>,
    bp_faults: Mutex<Faults>,
    events: Mutex<Vec<Value>>,
    attempted: Mutex<Vec<Value>>,
    requests: Mutex<Vec<RequestRecord>>,
    changed: Condvar,
    changed_lock: Mutex<()>,
    current_without_token: Mutex<u64>,
    dropped: Mutex<Vec<Value>>,
    retired: Mutex<bool>,
    rate_limit: Mutex<Option<RateLimit>>,
    api_calls: Mutex<VecDeque<Instant>>,
    statics: Mutex<std::collections::HashMap<String, StaticFile>>,
}

/// A file [`PosthogServer::set_static`] serves.
#[derive(Clone, Debug)]
struct StaticFile {
    body: String,
    token: Option<String>,
}

/// PostHog's per-key limit on its REST API (480 requests a minute and 4,800 an hour for a
/// personal API key): at most `requests` in any `window`; over it, 429 with `Retry-After` (the
/// seconds until the oldest request leaves the window).
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub requests: usize,
    /// The window.
    pub window: Duration,
}

/// How the breakpoints endpoint pages its answer: `page_size` breakpoints per page, from the
/// `offset` query parameter; `"has_more": true` on every page but the last, and with
/// `next_link` a Django-REST-framework-style `next` URL (else the client must add `offset`).
#[derive(Clone, Copy, Debug)]
pub struct Paging {
    /// Breakpoints per page (at least 1).
    pub page_size: usize,
    /// Whether pages carry a `next` URL.
    pub next_link: bool,
}

/// A running test server. Dropping it stops the server.
pub struct PosthogServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The personal API key the server accepts by default.
pub const PERSONAL_KEY: &str = "phx_test_personal_key";
/// The project secret key the active endpoint accepts too.
pub const PROJECT_SECRET_KEY: &str = "phs_test_project_secret";
/// The project API key the server accepts by default.
pub const PROJECT_KEY: &str = "phc_test_project_key";
/// The project id the server serves by default.
pub const PROJECT_ID: u64 = 4242;

/// A dropped connection: returning it from the service makes hyper close the connection.
#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}
impl std::error::Error for Dropped {}

type Resp = Response<Full<Bytes>>;

fn json_resp(status: u16, body: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn detail(status: u16, msg: &str) -> Resp {
    json_resp(status, &json!({"type": "validation_error", "detail": msg}))
}

impl PosthogServer {
    /// Starts a server with the default keys and project ([`PERSONAL_KEY`], [`PROJECT_KEY`],
    /// [`PROJECT_ID`]).
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(PERSONAL_KEY, PROJECT_KEY, PROJECT_ID)
    }

    /// Starts a server accepting these credentials.
    pub fn start_with(
        personal_key: &str,
        project_key: &str,
        project_id: u64,
    ) -> anyhow::Result<Self> {
        let state = Arc::new(State {
            personal_key: personal_key.into(),
            project_key: project_key.into(),
            project_id,
            breakpoints: Mutex::new(Vec::new()),
            list_key: Mutex::new("results".into()),
            paging: Mutex::new(None),
            raw_breakpoints: Mutex::new(None),
            batch_faults: Mutex::new(Faults::default()),
            bp_faults: Mutex::new(Faults::default()),
            events: Mutex::new(Vec::new()),
            attempted: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            changed_lock: Mutex::new(()),
            current_without_token: Mutex::new(0),
            dropped: Mutex::new(Vec::new()),
            retired: Mutex::new(false),
            rate_limit: Mutex::new(None),
            api_calls: Mutex::new(VecDeque::new()),
            statics: Mutex::new(Default::default()),
        });
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("posthog-test-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let mut stop_rx = stop_rx;
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            acc = listener.accept() => {
                                let Ok((stream, _)) = acc else { continue };
                                let st = st.clone();
                                tokio::spawn(async move {
                                    let svc = hyper::service::service_fn(move |req| {
                                        let st = st.clone();
                                        async move { handle(st, req).await }
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                        .await;
                                });
                            }
                        }
                    }
                });
            })?;
        Ok(Self {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`: use it as both the REST and the ingestion host.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The project id served.
    pub fn project_id(&self) -> u64 {
        self.state.project_id
    }

    /// Replaces the breakpoint list (objects as the API returns them).
    pub fn set_breakpoints(&self, list: Vec<Value>) {
        *self.state.breakpoints.lock() = list;
    }

    /// Names the list `results` (default) or `breakpoints`.
    pub fn set_list_key(&self, key: &str) {
        *self.state.list_key.lock() = key.into();
    }

    /// Splits the breakpoints answer into pages (`None`: one page, as PostHog answers today).
    pub fn set_paging(&self, paging: Option<Paging>) {
        *self.state.paging.lock() = paging;
    }

    /// Makes the breakpoints endpoint answer `status` with `body` as is (`None`: back to normal).
    pub fn set_breakpoints_raw(&self, raw: Option<(u16, &str)>) {
        *self.state.raw_breakpoints.lock() = raw.map(|(s, b)| (s, b.to_owned()));
    }

    /// Queues `fault` for the next `times` `/batch/` requests.
    pub fn fail_batch(&self, fault: Fault, times: usize) {
        self.state
            .batch_faults
            .lock()
            .queued
            .extend(std::iter::repeat_n(fault, times));
    }

    /// Makes every `/batch/` request fail with `fault` until called with `None`.
    pub fn set_batch_down(&self, fault: Option<Fault>) {
        self.state.batch_faults.lock().persistent = fault;
    }

    /// Queues `fault` for the next `times` breakpoints requests.
    pub fn fail_breakpoints(&self, fault: Fault, times: usize) {
        self.state
            .bp_faults
            .lock()
            .queued
            .extend(std::iter::repeat_n(fault, times));
    }

    /// Makes every breakpoints request fail with `fault` until called with `None`.
    pub fn set_breakpoints_down(&self, fault: Option<Fault>) {
        self.state.bp_faults.lock().persistent = fault;
    }

    /// Events accepted (200) for a well-formed key the server does not know, and dropped, as
    /// PostHog's capture does.
    pub fn dropped_events(&self) -> Vec<Value> {
        self.state.dropped.lock().clone()
    }

    /// Waits until `pred(dropped events)` holds or `timeout` passes (blocking).
    pub fn wait_dropped(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        self.wait_until(timeout, || pred(&self.state.dropped.lock()))
    }

    /// A PostHog that retired the Live Debugger: the active endpoint answers 404 (`true`), or
    /// is back (`false`).
    pub fn set_retired(&self, retired: bool) {
        *self.state.retired.lock() = retired;
    }

    /// Applies (or with `None` lifts) a rate limit to the active endpoint.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        *self.state.rate_limit.lock() = limit;
        self.state.api_calls.lock().clear();
    }

    /// Serves `body` at `path` (GET), with an `ETag` of its content; with `token`, only to
    /// `Authorization: Bearer <token>` (else 401). `None` removes it (404).
    pub fn set_static(&self, path: &str, body: Option<&str>, token: Option<&str>) {
        let mut statics = self.state.statics.lock();
        match body {
            Some(b) => {
                statics.insert(
                    path.to_owned(),
                    StaticFile {
                        body: b.to_owned(),
                        token: token.map(str::to_owned),
                    },
                );
            }
            None => {
                statics.remove(path);
            }
        }
    }

    /// Every event accepted so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.state.events.lock().clone()
    }

    /// Events of `/batch/` requests answered with an injected fault (other than
    /// [`Fault::Slow`]): what the agent tried to send while PostHog was down. Readable bodies
    /// only; nothing here counts as delivered.
    pub fn attempted_events(&self) -> Vec<Value> {
        self.state.attempted.lock().clone()
    }

    /// Waits until `pred(attempted events)` holds or `timeout` passes (blocking).
    pub fn wait_attempted(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        self.wait_until(timeout, || pred(&self.state.attempted.lock()))
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.requests.lock().clone()
    }

    /// Requests to paths starting with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    /// Requests to the breakpoints endpoint.
    pub fn breakpoint_requests(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/live_debugger_breakpoints/active/"))
            .collect()
    }

    /// `@current` requests that came without `?token=`.
    pub fn current_without_token(&self) -> u64 {
        *self.state.current_without_token.lock()
    }

    /// Waits until `pred(events)` holds or `timeout` passes; returns whether it held. Blocking:
    /// from async code use [`PosthogServer::wait_events_async`].
    pub fn wait_events(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        self.wait_until(timeout, || pred(&self.state.events.lock()))
    }

    /// Waits until `pred(requests)` holds or `timeout` passes (blocking).
    pub fn wait_requests(
        &self,
        timeout: Duration,
        pred: impl Fn(&[RequestRecord]) -> bool,
    ) -> bool {
        self.wait_until(timeout, || pred(&self.state.requests.lock()))
    }

    /// [`PosthogServer::wait_events`] for async tests (checks every 10 ms until the deadline).
    pub async fn wait_events_async(
        &self,
        timeout: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> bool {
        self.wait_until_async(timeout, || pred(&self.state.events.lock()))
            .await
    }

    /// [`PosthogServer::wait_requests`] for async tests.
    pub async fn wait_requests_async(
        &self,
        timeout: Duration,
        pred: impl Fn(&[RequestRecord]) -> bool,
    ) -> bool {
        self.wait_until_async(timeout, || pred(&self.state.requests.lock()))
            .await
    }
}

impl PosthogServer {
    /// Waits until `done()` holds or `timeout` passes, woken by every recorded request.
    fn wait_until(&self, timeout: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.state.changed_lock.lock();
        loop {
            if done() {
                return true;
            }
            if self
                .state
                .changed
                .wait_until(&mut guard, deadline)
                .timed_out()
            {
                return done();
            }
        }
    }

    /// [`PosthogServer::wait_until`] for async tests (checks every 10 ms until the deadline).
    async fn wait_until_async(&self, timeout: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for PosthogServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn record(st: &State, req: &hyper::http::request::Parts, status: u16, batch: BatchFacts) {
    let BatchFacts {
        len: batch_len,
        bytes: body_bytes,
        sent_at,
    } = batch;
    st.requests.lock().push(RequestRecord {
        at: Instant::now(),
        wall: std::time::SystemTime::now(),
        method: req.method.to_string(),
        path: req.uri.path().to_owned(),
        query: req.uri.query().map(str::to_owned),
        status,
        content_encoding: req
            .headers
            .get(hyper::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        batch_len,
        body_bytes,
        sent_at,
    });
    let _g = st.changed_lock.lock();
    st.changed.notify_all();
}

/// Applies a fault: `Some(response)` to answer it, `Err` to drop the connection, `None` to go on.
async fn apply_fault(fault: Option<Fault>) -> Result<Option<Resp>, Dropped> {
    match fault {
        None => Ok(None),
        Some(Fault::Status(code)) => Ok(Some(detail(code, "injected fault"))),
        Some(Fault::Unauthorized) => Ok(Some(detail(401, "Invalid personal API key."))),
        Some(Fault::TooManyRequests { retry_after_secs }) => {
            let mut r = detail(429, "Rate limit exceeded");
            if let Ok(v) = hyper::header::HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
            }
            Ok(Some(r))
        }
        Some(Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            Ok(None)
        }
        Some(Fault::DropConnection) => Err(Dropped),
    }
}

async fn handle(st: Arc<State>, req: Request<Incoming>) -> Result<Resp, Dropped> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let mut facts = BatchFacts::default();
    let result = if parts.method == Method::POST && (path == "/batch/" || path == "/batch") {
        let fault = st.batch_faults.lock().next();
        // A faulted request's body is read first, so tests can see what was attempted.
        let body = match &fault {
            None | Some(Fault::Slow(_)) => Some(body),
            Some(_) => {
                if let Ok(raw) = Limited::new(body, BATCH_BODY_LIMIT).collect().await {
                    let events = decode_events(&parts, &raw.to_bytes());
                    st.attempted.lock().extend(events);
                }
                None
            }
        };
        match apply_fault(fault).await {
            Err(d) => Err(d),
            Ok(Some(r)) => Ok(r),
            // (A fault that read the body always answers or drops: `body` is Some here.)
            Ok(None) => match body {
                Some(body) => {
                    let (resp, f) = batch(&st, &parts, body).await;
                    facts = f;
                    Ok(resp)
                }
                None => Err(Dropped),
            },
        }
    } else if parts.method == Method::GET
        && path.starts_with("/api/projects/")
        && path.ends_with("/live_debugger_breakpoints/active/")
    {
        let fault = st.bp_faults.lock().next();
        match apply_fault(fault).await {
            Err(d) => Err(d),
            Ok(Some(r)) => Ok(r),
            Ok(None) => Ok(active_breakpoints(&st, &parts)),
        }
    } else if parts.method == Method::POST && (path == "/flags/" || path == "/flags") {
        Ok(flags(&st, body).await)
    } else if parts.method == Method::GET
        && let Some(file) = st.statics.lock().get(&path).cloned()
    {
        Ok(static_file(&parts, &file))
    } else {
        Ok(detail(404, "Not found."))
    };
    record(
        &st,
        &parts,
        result.as_ref().map(|r| r.status().as_u16()).unwrap_or(0),
        facts,
    );
    result
}

fn query_param(parts: &hyper::http::request::Parts, name: &str) -> Option<String> {
    parts.uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.replace("%2F", "/").replace("%2f", "/"))
    })
}

/// `POST /flags/`: 200 for the project key, 401 for a key the server does not know.
async fn flags(st: &State, body: Incoming) -> Resp {
    let Ok(raw) = Limited::new(body, 1024 * 1024).collect().await else {
        return detail(400, "Failed to decode request.");
    };
    let Ok(v) = serde_json::from_slice::<Value>(&raw.to_bytes()) else {
        return detail(400, "Failed to parse request.");
    };
    match v.get("api_key").or(v.get("token")).and_then(Value::as_str) {
        None => detail(
            401,
            "No API token provided. Please include a valid API token in your request.",
        ),
        Some(k) if k.trim() == st.project_key => json_resp(
            200,
            &json!({"flags": {}, "errorsWhileComputingFlags": false, "requestId": "test"}),
        ),
        Some(_) => detail(
            401,
            "The provided API key is invalid or has expired. Please check your API key and try again.",
        ),
    }
}

/// A [`PosthogServer::set_static`] file, with `ETag` / `If-None-Match`.
fn static_file(parts: &hyper::http::request::Parts, file: &StaticFile) -> Resp {
    if let Some(token) = &file.token {
        let auth = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if auth != format!("Bearer {token}") {
            return detail(401, "Unauthorized.");
        }
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    file.body.hash(&mut h);
    let etag = format!("\"{:016x}\"", h.finish());
    let matches = parts
        .headers
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut r = if matches {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from(file.body.clone())));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        r
    };
    if let Ok(v) = hyper::header::HeaderValue::from_str(&etag) {
        r.headers_mut().insert(hyper::header::ETAG, v);
    }
    r
}

/// PostHog's per-key REST limit: `Some(429)` when this request is over it.
fn rate_limited(st: &State) -> Option<Resp> {
    let limit = (*st.rate_limit.lock())?;
    let now = Instant::now();
    let mut calls = st.api_calls.lock();
    while calls
        .front()
        .is_some_and(|t| now.duration_since(*t) >= limit.window)
    {
        calls.pop_front();
    }
    if calls.len() < limit.requests {
        calls.push_back(now);
        return None;
    }
    let wait = calls
        .front()
        .map(|t| limit.window.saturating_sub(now.duration_since(*t)))
        .unwrap_or(limit.window);
    let mut r = detail(
        429,
        "Request was throttled. Expected available in some seconds.",
    );
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    Some(r)
}

fn active_breakpoints(st: &State, parts: &hyper::http::request::Parts) -> Resp {
    if *st.retired.lock() {
        // A PostHog whose Live Debugger is retired has no such route.
        return detail(404, "Not found.");
    }
    let auth = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {}", st.personal_key)
        && auth != format!("Bearer {PROJECT_SECRET_KEY}")
    {
        return detail(401, "Invalid personal API key.");
    }
    if let Some(r) = rate_limited(st) {
        return r;
    }
    let project = parts
        .uri
        .path()
        .trim_start_matches("/api/projects/")
        .split('/')
        .next()
        .unwrap_or("");
    if project == "@current" {
        match query_param(parts, "token") {
            Some(t) if t == st.project_key => {}
            Some(_) => {
                return detail(
                    401,
                    "Project API key invalid. You can find your project API key in PostHog project settings.",
                );
            }
            None => *st.current_without_token.lock() += 1,
        }
    } else if project != st.project_id.to_string() {
        return detail(403, "You don't have access to the project.");
    }
    if let Some((status, body)) = st.raw_breakpoints.lock().clone() {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        return r;
    }
    // `enabled=false` lifts the filter (all breakpoints); only `true` (the default) filters.
    let only_enabled = query_param(parts, "enabled").is_none_or(|v| v != "false");
    let repository = query_param(parts, "repository");
    let filename = query_param(parts, "filename");
    let list: Vec<Value> = st
        .breakpoints
        .lock()
        .iter()
        .filter(|b| !only_enabled || b.get("enabled").and_then(Value::as_bool).unwrap_or(true))
        .filter(|b| {
            repository
                .as_deref()
                .is_none_or(|r| b.get("repository").and_then(Value::as_str) == Some(r))
        })
        .filter(|b| {
            filename
                .as_deref()
                .is_none_or(|f| b.get("filename").and_then(Value::as_str) == Some(f))
        })
        .cloned()
        .collect();
    let key = st.list_key.lock().clone();
    let Some(paging) = *st.paging.lock() else {
        return json_resp(
            200,
            &json!({ key: list.clone(), "count": list.len(), "has_more": false }),
        );
    };
    let offset: usize = query_param(parts, "offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let end = (offset + paging.page_size.max(1)).min(list.len());
    let page = list.get(offset.min(end)..end).unwrap_or_default().to_vec();
    let has_more = end < list.len();
    let mut body = json!({ key: page, "count": list.len(), "has_more": has_more });
    if has_more && paging.next_link {
        let host = parts
            .headers
            .get(hyper::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1");
        let mut query: Vec<String> = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("offset="))
            .map(str::to_owned)
            .collect();
        query.push(format!("offset={end}"));
        body["next"] = json!(format!(
            "http://{host}{}?{}",
            parts.uri.path(),
            query.join("&")
        ));
    }
    json_resp(200, &body)
}

/// The events of a `/batch/` body (gzip or plain), or none when it is unreadable.
fn decode_events(parts: &hyper::http::request::Parts, raw: &[u8]) -> Vec<Value> {
    let gzip = parts
        .headers
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let mut data = Vec::new();
    if gzip {
        let dec = flate2::read::GzDecoder::new(raw);
        if dec
            .take(BATCH_BODY_LIMIT as u64 + 1)
            .read_to_end(&mut data)
            .is_err()
        {
            return Vec::new();
        }
    } else {
        data.extend_from_slice(raw);
    }
    serde_json::from_slice::<Value>(&data)
        .ok()
        .and_then(|v| v.get("batch").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// What an accepted `/batch/` request carried.
#[derive(Default)]
struct BatchFacts {
    len: Option<usize>,
    bytes: Option<usize>,
    sent_at: Option<String>,
}

fn reject(status: u16, msg: &str) -> (Resp, BatchFacts) {
    (detail(status, msg), BatchFacts::default())
}

async fn batch(
    st: &State,
    parts: &hyper::http::request::Parts,
    body: Incoming,
) -> (Resp, BatchFacts) {
    let raw = match Limited::new(body, BATCH_BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reject(413, "Request body too large (limit 20 MB)."),
    };
    let gzip = parts
        .headers
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let data = if gzip {
        let mut out = Vec::new();
        let dec = flate2::read::GzDecoder::new(&raw[..]);
        match dec.take(BATCH_BODY_LIMIT as u64 + 1).read_to_end(&mut out) {
            Ok(_) if out.len() > BATCH_BODY_LIMIT => {
                return reject(413, "Request body too large (limit 20 MB).");
            }
            Ok(_) => out,
            Err(e) => return reject(400, &format!("Invalid gzip body: {e}")),
        }
    } else {
        raw.to_vec()
    };
    let payload: Value = match serde_json::from_slice(&data) {
        Ok(v) => v,
        Err(e) => return reject(400, &format!("Malformed request data: {e}")),
    };
    let Some(api_key) = payload.get("api_key").and_then(Value::as_str) else {
        return reject(400, "API key is missing (api_key).");
    };
    // Capture checks only the key's shape (`validate_token`); an unknown well-formed key is
    // accepted and its events dropped downstream.
    let api_key = api_key.trim();
    if api_key.is_empty()
        || api_key.len() > 64
        || !api_key.is_ascii()
        || api_key.starts_with("phx_")
        || api_key.contains('\0')
    {
        return reject(401, "Project API key invalid.");
    }
    let known = api_key == st.project_key;
    let Some(batch) = payload.get("batch").and_then(Value::as_array) else {
        return reject(400, "batch is missing or not a list.");
    };
    for (i, ev) in batch.iter().enumerate() {
        if ev
            .get("event")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return reject(400, &format!("event {i}: `event` is required."));
        }
        let distinct_ok = match ev.get("distinct_id") {
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Number(_)) => true,
            _ => false,
        };
        if !distinct_ok {
            return reject(400, &format!("event {i}: `distinct_id` is required."));
        }
    }
    if known {
        st.events.lock().extend(batch.iter().cloned());
    } else {
        st.dropped.lock().extend(batch.iter().cloned());
    }
    (
        json_resp(200, &json!({"status": 1})),
        BatchFacts {
            len: Some(batch.len()),
            bytes: Some(data.len()),
            sent_at: payload
                .get("sent_at")
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
    )
}
