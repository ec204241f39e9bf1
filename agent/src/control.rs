//! The local control socket: `break add|list|rm`, `status` and `tail` talk to the running agent
//! through it. One JSON request per connection, one line each; the answer is one JSON line, or for
//! `tail` a stream of JSON lines (one event each) until the client goes away.
//!
//! Only root can use it: the runtime directory is 0700 root, the socket 0600, and the server
//! checks the peer's uid (`SO_PEERCRED`) as well, in case the directory was pre-created by someone
//! else.
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;

/// A request from the CLI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Add (or replace, same id) a breakpoint.
    BreakAdd {
        file: String,
        line: u32,
        condition: Option<String>,
        id: Option<String>,
    },
    /// Add (or replace, same id) a logpoint: a location and a message (new in issue 14; the
    /// other requests are unchanged).
    LogAdd {
        file: String,
        line: u32,
        message: String,
        condition: Option<String>,
        id: Option<String>,
        #[serde(default)]
        rate: Option<u32>,
    },
    /// List breakpoints with their status.
    BreakList,
    /// Remove a breakpoint by id.
    BreakRm { id: String },
    /// The agent's status report.
    Status,
    /// Stream events as they arrive.
    Tail,
}

/// The answer to a request (except `tail`, which streams events).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok { value: serde_json::Value },
    Error { message: String },
}

/// What the server asks of the running agent. Implemented by the daemon (`crate::daemon`).
pub trait ControlHandler: Send + Sync + 'static {
    /// Adds a breakpoint; returns its description (with its id).
    fn break_add(
        &self,
        file: String,
        line: u32,
        condition: Option<String>,
        id: Option<String>,
    ) -> Result<serde_json::Value, String>;
    /// Adds a logpoint (a breakpoint whose action is `message`); returns its description.
    fn log_add(&self, bp: crate::breakpoints::Breakpoint) -> Result<serde_json::Value, String> {
        let _ = bp;
        Err("this agent does not take logpoints".into())
    }
    /// Lists breakpoints and their status.
    fn break_list(&self) -> serde_json::Value;
    /// Removes a breakpoint.
    fn break_rm(&self, id: &str) -> Result<serde_json::Value, String>;
    /// The status report.
    fn status(&self) -> serde_json::Value;
    /// Events (hits and status changes) as they are delivered.
    fn subscribe(&self) -> broadcast::Receiver<Arc<serde_json::Value>>;
    /// Ids of the breakpoints this agent may change (added with `break add` or the web UI; not
    /// those of the breakpoints file or PostHog).
    fn editable(&self) -> Vec<String> {
        Vec::new()
    }
    /// Asks the helper in `pid` for its loaded source files (`file` None) or the lines of `file`
    /// that carry code; `attach` lets the agent load the helper for that. The helper's answer:
    /// `{"files": [...]}`, `{"file": .., "lines": [...]}` or `{"error": ..}`.
    fn sources(
        &self,
        pid: i32,
        file: Option<String>,
        attach: bool,
    ) -> Result<serde_json::Value, String> {
        let _ = (pid, file, attach);
        Err("this agent does not list source files".into())
    }
}

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The runtime directory or socket could not be created.
    #[error("cannot create the control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The agent is not running (or not reachable through its socket).
    #[error(
        "cannot reach the agent at {path}: {source} (is `libdebugger-agent` running? the socket is root-only: use sudo)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The conversation with the agent failed midway.
    #[error("talking to the agent at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The agent answered something this client does not understand.
    #[error("the agent sent an unreadable answer: {source}")]
    Protocol {
        #[source]
        source: serde_json::Error,
    },
    /// The agent refused the request.
    #[error("{message}")]
    Refused { message: String },
}

/// Binds the control socket at `path` (creating its directory 0700) and serves requests until
/// the returned task is aborted.
pub fn serve(
    path: &Path,
    handler: Arc<dyn ControlHandler>,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    let bind_err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(bind_err)?;
    }
    // A stale socket from a previous run (kill -9) would make bind fail.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(bind_err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!("control socket: accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                if let Err(err) = handle_connection(stream, handler).await {
                    tracing::debug!("control socket: connection ended: {err}");
                }
            });
        }
    }))
}

async fn handle_connection(
    stream: UnixStream,
    handler: Arc<dyn ControlHandler>,
) -> std::io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let (read, mut write) = stream.into_split();
    if uid != 0 && uid != nix::unistd::geteuid().as_raw() {
        let answer = Response::Error {
            message: format!("permission denied: uid {uid} may not control the agent (root only)"),
        };
        return write_line(&mut write, &answer).await;
    }
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read);
    // A request is small; refuse to buffer an unbounded line from a broken client.
    let n = (&mut reader).take(64 * 1024).read_line(&mut line).await?;
    if n == 0 {
        return Ok(());
    }
    let request: Request = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(err) => {
            let answer = Response::Error {
                message: format!("malformed request: {err}"),
            };
            return write_line(&mut write, &answer).await;
        }
    };
    let answer = match request {
        Request::BreakAdd {
            file,
            line,
            condition,
            id,
        } => into_response(handler.break_add(file, line, condition, id)),
        Request::LogAdd {
            file,
            line,
            message,
            condition,
            id,
            rate,
        } => into_response(handler.log_add(crate::breakpoints::Breakpoint {
            id: id.unwrap_or_else(|| crate::breakpoints::Breakpoint::derived_id(&file, line)),
            file,
            line,
            condition: condition.filter(|c| !c.trim().is_empty()),
            message: Some(message),
            rate,
            enabled: true,
            source: "cli".into(),
            ..Default::default()
        })),
        Request::BreakList => Response::Ok {
            value: handler.break_list(),
        },
        Request::BreakRm { id } => into_response(handler.break_rm(&id)),
        Request::Status => Response::Ok {
            value: handler.status(),
        },
        Request::Tail => {
            let mut events = handler.subscribe();
            write_line(
                &mut write,
                &Response::Ok {
                    value: serde_json::Value::Null,
                },
            )
            .await?;
            loop {
                match events.recv().await {
                    Ok(event) => write_line(&mut write, &*event).await?,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let note = serde_json::json!({"event": "$tail_lagged", "skipped": n});
                        write_line(&mut write, &note).await?;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
    };
    write_line(&mut write, &answer).await
}

fn into_response(r: Result<serde_json::Value, String>) -> Response {
    match r {
        Ok(value) => Response::Ok { value },
        Err(message) => Response::Error { message },
    }
}

async fn write_line<W: tokio::io::AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    value: &T,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    w.write_all(&bytes).await
}

/// Sends `request` to the agent at `path` and returns its answer's value.
pub fn call(path: &Path, request: &Request) -> Result<serde_json::Value, ControlError> {
    let (mut reader, _) = connect_and_send(path, request)?;
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    parse_answer(&line)
}

/// Sends a `tail` request and calls `on_event` for each event line until the agent stops or
/// `on_event` returns false.
pub fn tail(
    path: &Path,
    mut on_event: impl FnMut(serde_json::Value) -> bool,
) -> Result<(), ControlError> {
    let (mut reader, _) = connect_and_send(path, &Request::Tail)?;
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io)?;
    parse_answer(&line)?;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Ok(());
        }
        let event = serde_json::from_str(line.trim())
            .map_err(|source| ControlError::Protocol { source })?;
        if !on_event(event) {
            return Ok(());
        }
    }
}

fn connect_and_send(
    path: &Path,
    request: &Request,
) -> Result<(BufReader<std::os::unix::net::UnixStream>, ()), ControlError> {
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| ControlError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let mut bytes =
        serde_json::to_vec(request).map_err(|source| ControlError::Protocol { source })?;
    bytes.push(b'\n');
    stream
        .write_all(&bytes)
        .map_err(|source| ControlError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok((BufReader::new(stream), ()))
}

fn parse_answer(line: &str) -> Result<serde_json::Value, ControlError> {
    match serde_json::from_str(line.trim()).map_err(|source| ControlError::Protocol { source })? {
        Response::Ok { value } => Ok(value),
        Response::Error { message } => Err(ControlError::Refused { message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    struct Fake {
        added: Mutex<Vec<(String, u32, Option<String>)>>,
        events: broadcast::Sender<Arc<serde_json::Value>>,
    }

    impl ControlHandler for Fake {
        fn break_add(
            &self,
            file: String,
            line: u32,
            condition: Option<String>,
            id: Option<String>,
        ) -> Result<serde_json::Value, String> {
            if line == 0 {
                return Err("line numbers start at 1".into());
            }
            self.added.lock().push((file.clone(), line, condition));
            Ok(serde_json::json!({"id": id.unwrap_or_else(|| format!("{file}:{line}"))}))
        }
        fn break_list(&self) -> serde_json::Value {
            serde_json::json!(self.added.lock().len())
        }
        fn break_rm(&self, id: &str) -> Result<serde_json::Value, String> {
            Err(format!("no breakpoint with id {id}"))
        }
        fn status(&self) -> serde_json::Value {
            serde_json::json!({"processes": []})
        }
        fn subscribe(&self) -> broadcast::Receiver<Arc<serde_json::Value>> {
            self.events.subscribe()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_round_trip_and_errors_reach_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run/agent.sock");
        let (events, _) = broadcast::channel(16);
        let fake = Arc::new(Fake {
            added: Mutex::new(Vec::new()),
            events: events.clone(),
        });
        let server = serve(&sock, fake.clone()).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let s = sock.clone();
        let added = tokio::task::spawn_blocking(move || {
            call(
                &s,
                &Request::BreakAdd {
                    file: "shop/cart.py".into(),
                    line: 42,
                    condition: Some("total > 100".into()),
                    id: None,
                },
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(added["id"], "shop/cart.py:42");
        assert_eq!(
            fake.added.lock()[0],
            ("shop/cart.py".into(), 42, Some("total > 100".into()))
        );

        let s = sock.clone();
        let err =
            tokio::task::spawn_blocking(move || call(&s, &Request::BreakRm { id: "x".into() }))
                .await
                .unwrap()
                .unwrap_err();
        assert_eq!(err.to_string(), "no breakpoint with id x");

        // tail: events published after the subscription arrive in order.
        let s = sock.clone();
        let tail = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            tail(&s, |e| {
                got.push(e);
                got.len() < 2
            })
            .map(|_| got)
        });
        // Publish until the subscriber is there (readiness, not a fixed sleep).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while events.receiver_count() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "tail never subscribed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        events.send(Arc::new(serde_json::json!({"n": 1}))).unwrap();
        events.send(Arc::new(serde_json::json!({"n": 2}))).unwrap();
        let got = tail.await.unwrap().unwrap();
        assert_eq!(
            got,
            vec![serde_json::json!({"n": 1}), serde_json::json!({"n": 2})]
        );
        server.abort();
    }

    #[test]
    fn connecting_to_a_missing_agent_says_what_to_do() {
        let err = call(Path::new("/nonexistent/agent.sock"), &Request::Status).unwrap_err();
        assert!(
            err.to_string().contains("is `libdebugger-agent` running?"),
            "{err}"
        );
    }
}
