//! The UI's routes. Every one goes through [`guard`] (token, read-only); JSON errors are
//! `{"error": "…"}` with a status code that says what went wrong.
use super::{App, TOKEN_COOKIE, TOKEN_HEADER, token_eq};
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::broadcast;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The probe kinds the UI offers on a code line: a snapshot breakpoint and a logpoint (a
/// message with `{expr}` holes). Function probes (issue 14) are not implemented in the helper
/// yet; when they are, they join this list with `"on": "def"` (offered on a `def` line only,
/// see `openEditor` in `assets/app.js`) and [`add_breakpoint`] forwards them.
fn kinds() -> Value {
    json!([
        {"kind": "snapshot", "label": "Breakpoint", "on": "code"},
        {"kind": "logpoint", "label": "Logpoint", "on": "code"},
    ])
}

pub(super) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route("/api/state", get(state))
        .route("/api/breakpoints", get(list).post(add_breakpoint))
        .route("/api/breakpoints/{id}", delete(remove_breakpoint))
        .route("/api/condition", get(check_condition))
        .route("/api/processes/{pid}/files", get(files))
        .route("/api/processes/{pid}/source", get(source))
        .route("/api/events", get(events))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// The token, from the header, the query (`?token=`) or the cookie.
fn token_from(req: &Request) -> (Option<&str>, Option<&str>, Option<&str>) {
    let header = req
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok());
    let query = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    let cookie = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='));
    (header, query, cookie)
}

/// Token check on every request; changes need the header and a writable UI. Sets the cookie
/// when the page is opened with `?token=`, and headers that keep the page to itself.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let (header, query, cookie) = token_from(&req);
    let good = |t: Option<&str>| t.is_some_and(|t| token_eq(t, &app.token));
    let by_header = good(header);
    let by_query = good(query);
    if !(by_header || by_query || good(cookie)) {
        return error(
            StatusCode::UNAUTHORIZED,
            "a valid access token is needed: open the URL `sudo libdebugger-agent ui` prints",
        );
    }
    let change = !matches!(*req.method(), Method::GET | Method::HEAD);
    if change && !by_header {
        return error(
            StatusCode::FORBIDDEN,
            format!("changes need the token in the {TOKEN_HEADER} header"),
        );
    }
    if change && app.read_only {
        return error(
            StatusCode::FORBIDDEN,
            "this UI is read-only (the agent runs with --ui-read-only)",
        );
    }
    let set_cookie = by_query && req.uri().path() == "/";
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if set_cookie
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{TOKEN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            app.token
        ))
    {
        h.insert(header::SET_COOKIE, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML).await
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Processes, breakpoints with their status and counters, what may be changed.
async fn state(State(app): State<Arc<App>>) -> Response {
    let mut status = app.handler.status();
    if let Some(procs) = status["processes"].as_array_mut() {
        for p in procs {
            if let Some(pid) = p["pid"].as_i64() {
                p["cmdline"] = json!(cmdline(pid));
                p["container"] = json!(in_container(pid));
            }
        }
    }
    Json(json!({
        "status": status,
        "editable": app.handler.editable(),
        "read_only": app.read_only,
        "kinds": kinds(),
    }))
    .into_response()
}

/// The command line, arguments separated by spaces (at most 1,000 characters).
fn cmdline(pid: i64) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let s: String = String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .replace('\0', " ");
    Some(s.chars().take(1000).collect())
}

/// Whether the process lives in another mount namespace than the agent (a container).
fn in_container(pid: i64) -> Option<bool> {
    let mine = std::fs::read_link("/proc/self/ns/mnt").ok()?;
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
    Some(mine != theirs)
}

async fn list(State(app): State<Arc<App>>) -> Response {
    Json(app.handler.break_list()).into_response()
}

#[derive(Deserialize)]
struct NewBreakpoint {
    file: String,
    line: u32,
    #[serde(default)]
    condition: Option<String>,
    /// `snapshot` (the default) or `logpoint`.
    #[serde(default)]
    kind: Option<String>,
    /// A logpoint's message template.
    #[serde(default)]
    message: Option<String>,
}

/// The id of a probe added in the page: `file:line` as `break add` derives it, and for a
/// logpoint `file:line:log`, so that a breakpoint and a logpoint on one line are two probes.
fn ui_id(kind: &str, file: &str, line: u32) -> String {
    let id = crate::breakpoints::Breakpoint::derived_id(file, line);
    if kind == "logpoint" {
        format!("{id}:log")
    } else {
        id
    }
}

async fn add_breakpoint(State(app): State<Arc<App>>, body: Json<NewBreakpoint>) -> Response {
    let Json(b) = body;
    let kind = b.kind.as_deref().unwrap_or("snapshot");
    if !matches!(kind, "snapshot" | "logpoint") {
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown probe kind `{kind}` (snapshot or logpoint)"),
        );
    }
    if b.line == 0 {
        return error(StatusCode::BAD_REQUEST, "line numbers start at 1");
    }
    let condition = b.condition.filter(|c| !c.trim().is_empty());
    if let Some(c) = &condition
        && let Err(e) = super::condition::parse(c)
    {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let handler = app.handler.clone();
    let id = ui_id(kind, &b.file, b.line);
    let added = if kind == "logpoint" {
        // The helper parses the message when it arms the logpoint; one that does not parse is
        // an `error` status with its column, shown in the page's table.
        let Some(message) = b.message.filter(|m| !m.trim().is_empty()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "a logpoint needs a message, e.g. `total={total}`",
            );
        };
        handler.log_add(crate::breakpoints::Breakpoint {
            id,
            file: b.file,
            line: b.line,
            condition,
            message: Some(message),
            enabled: true,
            source: "cli".into(),
            ..Default::default()
        })
    } else {
        handler.break_add(b.file, b.line, condition, Some(id))
    };
    match added {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn remove_breakpoint(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.handler.break_rm(&id) {
        Ok(v) => Json(v).into_response(),
        Err(e) if e.starts_with("no breakpoint") => error(StatusCode::NOT_FOUND, e),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

#[derive(Deserialize)]
struct ConditionQuery {
    expr: String,
}

/// Checks a condition with the helper's own parser, as the user types.
async fn check_condition(Query(q): Query<ConditionQuery>) -> Response {
    if q.expr.trim().is_empty() {
        return Json(json!({"ok": true})).into_response();
    }
    match super::condition::parse(&q.expr) {
        Ok(_) => Json(json!({"ok": true})),
        Err(e) => Json(json!({"ok": false, "error": e.to_string(), "column": e.column})),
    }
    .into_response()
}

/// Asks the helper of `pid` (loading it unless the UI is read-only); a refusal is a 409 (the
/// process cannot be looked into now).
fn ask_sources(app: &App, pid: i32, file: Option<String>) -> Result<Value, Box<Response>> {
    app.handler
        .sources(pid, file, !app.read_only)
        .map_err(|e| Box::new(error(StatusCode::CONFLICT, e)))
}

async fn files(State(app): State<Arc<App>>, Path(pid): Path<i32>) -> Response {
    match ask_sources(&app, pid, None) {
        Ok(v) if v.get("error").is_some() => {
            error(StatusCode::BAD_GATEWAY, v["error"].as_str().unwrap_or("?"))
        }
        Ok(v) => Json(json!({"pid": pid, "files": v["files"]})).into_response(),
        Err(resp) => *resp,
    }
}

#[derive(Deserialize)]
struct SourceQuery {
    path: String,
}

/// One loaded file, highlighted, with the lines that carry code. 404 for a file the process
/// has no code loaded from.
async fn source(
    State(app): State<Arc<App>>,
    Path(pid): Path<i32>,
    Query(q): Query<SourceQuery>,
) -> Response {
    let answer = match ask_sources(&app, pid, Some(q.path.clone())) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    if let Some(e) = answer["error"].as_str() {
        return error(StatusCode::NOT_FOUND, e);
    }
    let path = q.path;
    let read = tokio::task::spawn_blocking(move || super::source::read_highlighted(pid, &path))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match read {
        Ok(file) => Json(json!({
            "pid": pid,
            "path": file.path,
            "lines": file.lines,
            "code_lines": answer["lines"],
        }))
        .into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

/// Hits (and status events) as Server-Sent Events; `lagged` says how many this stream missed.
async fn events(State(app): State<Arc<App>>) -> Response {
    let rx = app.handler.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(ev) => Event::default().event("event").data(ev.to_string()),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                Event::default().event("lagged").data(n.to_string())
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::convert::Infallible>(event), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
