//! The web UI (`run --ui ADDR`, `[ui] listen`): a thin HTTP layer over the same operations the
//! control socket serves ([`crate::control::ControlHandler`]: `break add|list|rm`, `status`,
//! `tail`), plus the helper's source listing. Local to one host by design (loopback unless the
//! user names another address; reach a remote host with `ssh -L` or `kubectl port-forward`).
//!
//! * [`api`]: the routes (JSON, and the hit stream as Server-Sent Events).
//! * [`source`]: reading a file the process has loaded (through `/proc/<pid>/root`) and
//!   highlighting it (syntect).
//! * `assets/`: the page (plain HTML, CSS and an ES module, embedded in the binary).
//!
//! Access: a random token, generated at start, is needed by every request (`?token=` on the
//! first page load, which sets a `SameSite=Strict` cookie, or the `X-Libdebugger-Token`
//! header). Changes (POST, DELETE) need the header: a cookie alone, which another site could
//! make the browser send, is refused. The URL with the token is written root-only to
//! [`crate::paths::ui_url_file`]; `libdebugger-agent ui` prints it.
mod api;
#[path = "../../../helper/src/condition.rs"]
#[allow(dead_code)] // the agent uses the parser only (the helper's evaluator walks the rest)
mod condition;
mod source;

use crate::control::ControlHandler;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the UI is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UiOptions {
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Serve everything, change nothing.
    pub read_only: bool,
}

/// Errors starting the UI.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} for the web UI: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The URL file could not be written.
    #[error("cannot write the web UI's URL to {path}: {source}")]
    UrlFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The name of the header that carries the token.
pub const TOKEN_HEADER: &str = "x-libdebugger-token";
/// The cookie set on the first page load.
const TOKEN_COOKIE: &str = "libdebugger_token";

/// What every route sees.
struct App {
    handler: Arc<dyn ControlHandler>,
    token: String,
    read_only: bool,
}

/// A running UI server.
pub struct Server {
    /// The URL with its token.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
    url_file: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.url_file);
    }
}

/// Binds `opts.listen`, writes the URL (with a fresh token) to `url_file` (0600, its directory
/// 0700) and serves until the returned [`Server`] is dropped.
pub async fn serve(
    opts: &UiOptions,
    handler: Arc<dyn ControlHandler>,
    url_file: &Path,
) -> Result<Server, UiError> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| UiError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| UiError::Bind {
        addr: opts.listen,
        source,
    })?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let url = format!("http://{host}/?token={token}");
    write_url_file(url_file, &url).map_err(|source| UiError::UrlFile {
        path: url_file.to_path_buf(),
        source,
    })?;
    let app = Arc::new(App {
        handler,
        token,
        read_only: opts.read_only,
    });
    let router = api::router(app);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!("web UI server stopped: {e}");
        }
    });
    tracing::info!(
        %addr,
        read_only = opts.read_only,
        "web UI listening; `libdebugger-agent ui` prints its URL with the access token"
    );
    Ok(Server {
        url,
        task,
        url_file: url_file.to_path_buf(),
    })
}

fn write_url_file(path: &Path, url: &str) -> std::io::Result<()> {
    crate::paths::write_private(path, format!("{url}\n").as_bytes())
}

/// The URL of the running agent's UI (for `libdebugger-agent ui`).
pub fn read_url(url_file: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(url_file) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no web UI is running ({} does not exist): start the agent with `--ui 127.0.0.1:7788` or `[ui] listen` in agent.toml",
            url_file.display()
        ),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot read {} (it is root-only: use sudo)",
            url_file.display()
        ))),
    }
}

/// Compares two tokens in time independent of where they differ.
fn token_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens_compare_whole() {
        assert!(token_eq("abc", "abc"));
        assert!(!token_eq("abc", "abd"));
        assert!(!token_eq("abc", "ab"));
        assert!(!token_eq("", "a"));
    }

    /// A handler that records what the UI asked of it.
    #[derive(Default)]
    struct Fake {
        added: parking_lot::Mutex<Vec<(String, u32, Option<String>)>>,
        logpoints: parking_lot::Mutex<Vec<crate::breakpoints::Breakpoint>>,
    }

    impl ControlHandler for Fake {
        fn break_add(
            &self,
            file: String,
            line: u32,
            condition: Option<String>,
            _id: Option<String>,
        ) -> Result<serde_json::Value, String> {
            self.added.lock().push((file.clone(), line, condition));
            Ok(serde_json::json!({"id": format!("{file}:{line}")}))
        }
        fn log_add(&self, bp: crate::breakpoints::Breakpoint) -> Result<serde_json::Value, String> {
            let id = bp.id.clone();
            self.logpoints.lock().push(bp);
            Ok(serde_json::json!({ "id": id }))
        }
        fn break_list(&self) -> serde_json::Value {
            serde_json::json!([])
        }
        fn break_rm(&self, id: &str) -> Result<serde_json::Value, String> {
            Err(format!("no breakpoint with id {id}"))
        }
        fn status(&self) -> serde_json::Value {
            serde_json::json!({"processes": [], "breakpoints": []})
        }
        fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<serde_json::Value>> {
            tokio::sync::broadcast::channel(1).1
        }
    }

    async fn start(read_only: bool) -> (Server, Arc<Fake>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(Fake::default());
        let opts = UiOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            read_only,
        };
        let server = serve(&opts, fake.clone(), &dir.path().join("ui.url"))
            .await
            .unwrap();
        (server, fake, dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_request_needs_the_token_and_changes_need_the_header() {
        let (server, fake, _dir) = start(false).await;
        let (base, token) = server.url.split_once("/?token=").unwrap();
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("{base}{path}"));
        assert_eq!(get("/api/state").send().await.unwrap().status(), 401);
        let wrong = get("/api/state")
            .header(TOKEN_HEADER, "x")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        let page = get(&format!("/?token={token}")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let cookie = page.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        let cookie = cookie.split(';').next().unwrap().to_string();
        let state = get("/api/state")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(state.status(), 200);
        let body =
            serde_json::json!({"file": "/srv/cart.py", "line": 40, "condition": "subtotal > 50"});
        let post = |h: (&str, &str)| {
            http.post(format!("{base}/api/breakpoints"))
                .header(h.0, h.1)
                .json(&body)
        };
        let by_cookie = post(("cookie", &cookie)).send().await.unwrap();
        assert_eq!(by_cookie.status(), 403);
        assert!(fake.added.lock().is_empty());
        let by_header = post((TOKEN_HEADER, token)).send().await.unwrap();
        assert_eq!(by_header.status(), 201);
        assert_eq!(
            fake.added.lock()[0],
            ("/srv/cart.py".into(), 40, Some("subtotal > 50".into()))
        );
        // Refused with a message: a bad condition (the parser's column), a logpoint without a
        // message, a kind this agent does not have.
        for (bad, says) in [
            (
                serde_json::json!({"file": "/a.py", "line": 1, "condition": "x ==="}),
                "column",
            ),
            (
                serde_json::json!({"file": "/a.py", "line": 1, "kind": "logpoint", "message": " "}),
                "needs a message",
            ),
            (
                serde_json::json!({"file": "/a.py", "line": 1, "kind": "function_probe"}),
                "unknown probe kind",
            ),
        ] {
            let resp = http
                .post(format!("{base}/api/breakpoints"))
                .header(TOKEN_HEADER, token)
                .json(&bad)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 400);
            let msg: serde_json::Value = resp.json().await.unwrap();
            assert!(msg["error"].as_str().unwrap().contains(says), "{msg}");
        }
        let check: serde_json::Value = get("/api/condition?expr=len(x)%20%3E%20")
            .header(TOKEN_HEADER, token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(check["ok"], false);
        assert_eq!(fake.added.lock().len(), 1);
        assert!(fake.logpoints.lock().is_empty());
        // A logpoint: its own id next to the line's breakpoint, the message and condition kept.
        let log = http
            .post(format!("{base}/api/breakpoints"))
            .header(TOKEN_HEADER, token)
            .json(
                &serde_json::json!({"file": "/srv/cart.py", "line": 40, "kind": "logpoint",
                "message": "subtotal={subtotal}", "condition": "subtotal > 5"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(log.status(), 201);
        let logs = fake.logpoints.lock();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].id, "/srv/cart.py:40:log");
        assert_eq!(logs[0].message.as_deref(), Some("subtotal={subtotal}"));
        assert_eq!(logs[0].condition.as_deref(), Some("subtotal > 5"));
        assert_eq!(logs[0].kind(), "logpoint");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_only_ui_changes_nothing() {
        let (server, fake, _dir) = start(true).await;
        let (base, token) = server.url.split_once("/?token=").unwrap();
        let http = reqwest::Client::new();
        let post = http
            .post(format!("{base}/api/breakpoints"))
            .header(TOKEN_HEADER, token)
            .json(&serde_json::json!({"file": "/a.py", "line": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), 403);
        assert!(fake.added.lock().is_empty());
        let state: serde_json::Value = http
            .get(format!("{base}/api/state"))
            .header(TOKEN_HEADER, token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(state["read_only"], true);
    }

    #[test]
    fn the_url_file_is_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/ui.url");
        write_url_file(&path, "http://127.0.0.1:1/?token=x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_url(&path).unwrap(), "http://127.0.0.1:1/?token=x");
        let err = read_url(&dir.path().join("none")).unwrap_err().to_string();
        assert!(err.contains("--ui"), "{err}");
    }
}
