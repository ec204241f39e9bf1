//! The sinks: PostHog's `/batch/`, a JSON Lines file (`-` = stdout), and the terminal.
use super::{Event, Sink, SinkError};
use crate::posthog::config::Secret;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Sends batches to `POST {ingest_host}/batch/`, gzip-compressed, and classifies the answer as
/// POSTHOG.md says: 2xx ok; 400/413 rejected; 401/403/404 misconfigured; 408, 429, 5xx and network
/// errors retryable (with `Retry-After`).
pub struct PosthogSink {
    client: reqwest::Client,
    url: String,
    api_key: Secret,
}

/// The HTTP client every PostHog call uses: rustls, a user agent naming libdebugger, timeouts.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("libdebugger-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .build()
}

impl PosthogSink {
    /// A sink posting to `{ingest_host}/batch/` with the project API key.
    pub fn new(ingest_host: &str, api_key: Secret) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: http_client(Duration::from_secs(30))?,
            url: format!("{}/batch/", ingest_host.trim_end_matches('/')),
            api_key,
        })
    }

    /// The gzip-compressed request body: `{"api_key":…,"batch":[events],"sent_at":…}` (capture
    /// reads `sent_at`, as posthog-python sends it; `sentAt` is ignored), the
    /// encoded events copied in as they are (no decoding and re-encoding per event).
    fn body(&self, batch: &[Vec<u8>]) -> Result<Vec<u8>, std::io::Error> {
        let events: usize = batch.iter().map(|e| e.len() + 1).sum();
        let mut gz = GzEncoder::new(Vec::with_capacity(events / 4 + 64), Compression::fast());
        gz.write_all(b"{\"api_key\":")?;
        serde_json::to_writer(&mut gz, self.api_key.expose())?;
        gz.write_all(b",\"batch\":[")?;
        for (i, e) in batch.iter().enumerate() {
            if i > 0 {
                gz.write_all(b",")?;
            }
            gz.write_all(e)?;
        }
        gz.write_all(b"],\"sent_at\":")?;
        serde_json::to_writer(&mut gz, &super::event::now_rfc3339())?;
        gz.write_all(b"}")?;
        gz.finish()
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(v, &fmt).ok()?.assume_utc();
    let d = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(d).unwrap_or(Duration::ZERO))
}

impl Sink for PosthogSink {
    fn name(&self) -> &str {
        "posthog"
    }

    async fn deliver(&mut self, batch: &[Vec<u8>]) -> Result<(), SinkError> {
        let body = self.body(batch).map_err(|e| SinkError::Rejected {
            reason: format!("cannot encode the batch: {e}"),
        })?;
        let resp = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .body(body)
            .send()
            .await
            .map_err(|e| SinkError::Retryable {
                reason: format!("POST {}: {}", self.url, error_chain(&e)),
                retry_after: None,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = resp.text().await.unwrap_or_default();
        let detail: String = text.chars().take(300).collect();
        let code = status.as_u16();
        let reason = format!("POST {} answered HTTP {code}: {detail}", self.url);
        Err(match code {
            400 | 413 | 422 => SinkError::Rejected { reason },
            401 | 403 => SinkError::Misconfigured {
                reason: format!(
                    "PostHog refused the project API key (HTTP {code} from {}): check \
                     POSTHOG_API_KEY (the project key phc_…, Project settings) and that \
                     POSTHOG_HOST is the region of that project",
                    self.url
                ),
            },
            404 | 405 => SinkError::Misconfigured {
                reason: format!(
                    "{} is not a PostHog ingestion endpoint (HTTP {code}): check POSTHOG_HOST / \
                     POSTHOG_INGEST_HOST",
                    self.url
                ),
            },
            _ => SinkError::Retryable {
                reason,
                retry_after,
            },
        })
    }
}

/// `error: cause: cause` for a reqwest error (its Display omits the causes).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let _ = write!(s, ": {c}");
        src = c.source();
    }
    s
}

/// Writes each event as one JSON line to a file (appending) or to stdout (`-`).
pub struct JsonLinesSink {
    out: Box<dyn Write + Send>,
    name: String,
}

impl JsonLinesSink {
    /// Opens `path` for appending (created 0600), or stdout for `-`.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if path == Path::new("-") {
            return Ok(Self {
                out: Box::new(std::io::stdout()),
                name: "stdout".into(),
            });
        }
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            out: Box::new(f),
            name: format!("events-file {}", path.display()),
        })
    }

    /// Writes to any writer (tests, pipes).
    pub fn from_writer(out: Box<dyn Write + Send>) -> Self {
        Self {
            out,
            name: "events-file".into(),
        }
    }
}

impl Sink for JsonLinesSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&mut self, batch: &[Vec<u8>]) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(batch.iter().map(|e| e.len() + 1).sum());
        for ev in batch {
            buf.extend_from_slice(ev);
            buf.push(b'\n');
        }
        self.out
            .write_all(&buf)
            .and_then(|_| self.out.flush())
            .map_err(|e| SinkError::Retryable {
                reason: format!("writing to {}: {e}", self.name),
                retry_after: None,
            })
    }
}

/// Prints events for a human: one header line per hit, its locals as a tree, its stack.
pub struct TerminalSink {
    out: Box<dyn Write + Send>,
}

impl TerminalSink {
    /// Prints to stdout.
    pub fn stdout() -> Self {
        Self {
            out: Box::new(std::io::stdout()),
        }
    }

    /// Prints to any writer.
    pub fn from_writer(out: Box<dyn Write + Send>) -> Self {
        Self { out }
    }
}

impl Sink for TerminalSink {
    fn name(&self) -> &str {
        "terminal"
    }

    async fn deliver(&mut self, batch: &[Vec<u8>]) -> Result<(), SinkError> {
        let mut s = String::new();
        for ev in batch {
            match serde_json::from_slice::<Event>(ev) {
                Ok(ev) => s.push_str(&render(&ev)),
                Err(e) => tracing::debug!("not shown on the terminal, unreadable event: {e}"),
            }
        }
        self.out
            .write_all(s.as_bytes())
            .and_then(|_| self.out.flush())
            .map_err(|e| SinkError::Retryable {
                reason: format!("writing to the terminal: {e}"),
                retry_after: None,
            })
    }
}

const TREE_MAX_DEPTH: usize = 6;
const TREE_MAX_CHILDREN: usize = 30;

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Object(_) | Value::Array(_) => None,
        Value::String(s) if s.chars().count() > 200 => {
            let cut: String = s.chars().take(200).collect();
            Some(format!("{cut:?}…"))
        }
        other => Some(other.to_string()),
    }
}

fn children(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| !k.starts_with("py/"))
            .map(|(k, v)| (k.clone(), v))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("[{i}]"), v))
            .collect(),
        _ => Vec::new(),
    }
}

fn label(v: &Value) -> String {
    match v {
        Value::Object(m) => match m.get("py/object").and_then(Value::as_str) {
            Some(t) => t.to_owned(),
            None => format!("dict ({} keys)", m.len()),
        },
        Value::Array(a) => format!("list ({} items)", a.len()),
        other => scalar(other).unwrap_or_default(),
    }
}

fn tree(out: &mut String, prefix: &str, name: &str, v: &Value, last: bool, depth: usize) {
    let branch = if last { "└─ " } else { "├─ " };
    let _ = writeln!(out, "{prefix}{branch}{name}: {}", label(v));
    if depth >= TREE_MAX_DEPTH {
        return;
    }
    let kids = children(v);
    let child_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
    let shown = kids.len().min(TREE_MAX_CHILDREN);
    for (i, (k, c)) in kids.iter().take(shown).enumerate() {
        let is_last = i + 1 == shown && kids.len() <= TREE_MAX_CHILDREN;
        tree(out, &child_prefix, k, c, is_last, depth + 1);
    }
    if kids.len() > TREE_MAX_CHILDREN {
        let _ = writeln!(
            out,
            "{child_prefix}└─ … {} more",
            kids.len() - TREE_MAX_CHILDREN
        );
    }
}

/// Renders one event for the terminal.
pub fn render(ev: &Event) -> String {
    let p = &ev.properties;
    let get = |k: &str| {
        p.get(k)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    };
    let mut out = String::new();
    if ev.event == super::event::STATUS_EVENT {
        let _ = writeln!(
            out,
            "{} breakpoint {} → {}{}",
            ev.timestamp,
            get("$breakpoint_id").unwrap_or_default(),
            get("$status").unwrap_or_default(),
            match p.get("$error") {
                Some(Value::String(e)) => format!(" ({e})"),
                _ => String::new(),
            }
        );
        return out;
    }
    let log = ev.event == super::event::LOG_EVENT;
    let _ = writeln!(
        out,
        "● {} {}:{}  thread {} ({})  {} {}{}",
        ev.timestamp,
        get("$file_path").unwrap_or_else(|| "?".into()),
        get("$line_number").unwrap_or_else(|| "?".into()),
        get("$thread_name").unwrap_or_else(|| "?".into()),
        get("$thread_id").unwrap_or_else(|| "?".into()),
        if log { "logpoint" } else { "breakpoint" },
        get("$breakpoint_id").unwrap_or_default(),
        get("$pid")
            .map(|p| format!("  pid {p}"))
            .unwrap_or_default(),
    );
    if let Some(Value::String(m)) = p.get("$message") {
        let _ = writeln!(out, "  {m}");
    }
    if let Some(Value::Object(locals)) = p.get("$locals_variables") {
        let _ = writeln!(out, "  locals");
        let n = locals.len();
        for (i, (k, v)) in locals.iter().enumerate() {
            tree(
                &mut out,
                "  ",
                k,
                &super::event::decode_local(v),
                i + 1 == n,
                1,
            );
        }
    }
    if let Some(Value::Array(frames)) = p.get("$stack_trace") {
        let _ = writeln!(out, "  stack (innermost first)");
        for f in frames.iter().take(30) {
            match super::event::frame_parts(f) {
                Some((file, func, line)) => {
                    let _ = writeln!(out, "    {file}:{line} in {func}");
                }
                None => {
                    let _ = writeln!(out, "    {f}");
                }
            }
        }
    }
    if p.get("$truncated") == Some(&Value::Bool(true)) {
        let _ = writeln!(out, "  (captured values were truncated to fit)");
    }
    out
}

/// A sink chosen at run time.
pub enum AnySink {
    /// PostHog `/batch/`.
    Posthog(PosthogSink),
    /// JSON Lines file or stdout.
    JsonLines(JsonLinesSink),
    /// The terminal pretty-printer.
    Terminal(TerminalSink),
}

impl Sink for AnySink {
    fn name(&self) -> &str {
        match self {
            AnySink::Posthog(s) => s.name(),
            AnySink::JsonLines(s) => s.name(),
            AnySink::Terminal(s) => s.name(),
        }
    }

    async fn deliver(&mut self, batch: &[Vec<u8>]) -> Result<(), SinkError> {
        match self {
            AnySink::Posthog(s) => s.deliver(batch).await,
            AnySink::JsonLines(s) => s.deliver(batch).await,
            AnySink::Terminal(s) => s.deliver(batch).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn terminal_renders_a_tree() {
        let Value::Object(props) = json!({
            "$file_path": "app/x.py", "$line_number": 4, "$thread_name": "MainThread",
            "$thread_id": 1, "$breakpoint_id": "b1",
            // As the helper sends them: locals as JSON strings, frames as PostHog's objects
            // (and an older array frame).
            "$locals_variables": {"user": json!({"py/object": "app.User", "id": 7,
                "tags": ["a", "b"]}).to_string(), "n": "3"},
            "$stack_trace": [{"file": "app/x.py", "function": "f", "line": 4,
                "0": "app/x.py", "1": "f", "2": 4}, ["app/main.py", "<module>", 9]]
        }) else {
            unreachable!()
        };
        let ev = Event::new(super::super::event::HIT_EVENT, "d", props);
        let text = render(&ev);
        let expected_tail = "  locals\n  ├─ n: 3\n  └─ user: app.User\n     ├─ id: 7\n     └─ tags: list (2 items)\n        ├─ [0]: \"a\"\n        └─ [1]: \"b\"\n  stack (innermost first)\n    app/x.py:4 in f\n    app/main.py:9 in <module>\n";
        assert!(text.ends_with(expected_tail), "{text}");
        assert!(text.contains("app/x.py:4  thread MainThread (1)  breakpoint b1"));
    }
}
