//! `--breakpoints-url URL`: polls any HTTP(S) URL that serves the JSON of PostHog's
//! active-breakpoints endpoint (a static file server, an object store, an internal service).
//!
//! * `ETag` / `If-None-Match`: an unchanged answer is a `304` and costs no parsing.
//! * An optional bearer token (`LIBDEBUGGER_BREAKPOINTS_TOKEN` or `[breakpoints] url_token`).
//! * The poller's rules: fetch at start, then every interval (±10 % jitter); errors back off
//!   exponentially, `Retry-After` honoured; the set in force stays until a good answer; each
//!   failure streak is logged once; a bad entry is that breakpoint's error status only.
//! * The URL's query (a signed object-store URL carries credentials there) is never logged.
use super::DesiredSet;
use super::file::parse_active_json;
use crate::delivery::sinks::{error_chain, http_client, parse_retry_after};
use crate::delivery::{backoff, jittered};
use crate::posthog::config::Secret;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// What the URL source needs.
#[derive(Clone, Debug)]
pub struct UrlConfig {
    /// The URL (http or https).
    pub url: reqwest::Url,
    /// `Authorization: Bearer` token, if the server wants one.
    pub token: Option<Secret>,
    /// Time between fetches.
    pub interval: Duration,
    /// Longest delay between attempts while failing.
    pub max_backoff: Duration,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

impl UrlConfig {
    /// A source for `url` polled every `interval`, with default backoff (up to 5 min) and
    /// timeout (10 s). A URL that is not http(s) is an error naming the flag.
    pub fn new(url: &str, token: Option<Secret>, interval: Duration) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url.trim()).map_err(|e| {
            format!("--breakpoints-url {url:?} is not a URL: {e} (expected http:// or https://)")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "--breakpoints-url {url:?}: only http:// and https:// URLs are polled"
            ));
        }
        Ok(Self {
            url: parsed,
            token,
            interval,
            max_backoff: Duration::from_secs(300).max(interval),
            request_timeout: Duration::from_secs(10),
        })
    }

    /// The URL without its query and credentials (safe to log; the breakpoints' source).
    pub fn display(&self) -> String {
        let mut u = self.url.clone();
        u.set_query(None);
        let _ = u.set_password(None);
        let _ = u.set_username("");
        u.to_string()
    }
}

/// The URL source's health, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlStatus {
    /// Fetches attempted.
    pub fetches: u64,
    /// `304 Not Modified` answers among them.
    pub not_modified: u64,
    /// Fetches that failed.
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// When the last good answer (200 or 304) arrived.
    pub last_success: Option<SystemTime>,
    /// The current error (cleared by a good answer).
    pub last_error: Option<String>,
}

/// A polled URL. Dropping it stops polling.
pub struct UrlSource {
    /// The breakpoints the URL serves.
    pub desired: watch::Receiver<DesiredSet>,
    /// Health.
    pub status: watch::Receiver<UrlStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UrlSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts polling on the current tokio runtime; the first fetch is immediate.
pub fn start(cfg: UrlConfig) -> Result<UrlSource, reqwest::Error> {
    let client = http_client(cfg.request_timeout)?;
    let (desired_tx, desired) = watch::channel(DesiredSet::default());
    let (status_tx, status) = watch::channel(UrlStatus::default());
    let task = tokio::spawn(poll(client, cfg, desired_tx, status_tx));
    Ok(UrlSource {
        desired,
        status,
        task,
    })
}

/// One answer: new content with its ETag, unchanged, or an error with any `Retry-After`.
enum Fetched {
    Changed(DesiredSet, Option<String>),
    NotModified,
}

async fn fetch_once(
    client: &reqwest::Client,
    cfg: &UrlConfig,
    etag: Option<&str>,
) -> Result<Fetched, (String, Option<Duration>)> {
    let shown = cfg.display();
    let mut req = client
        .get(cfg.url.clone())
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(t) = &cfg.token {
        req = req.bearer_auth(t.expose());
    }
    if let Some(e) = etag {
        req = req.header(reqwest::header::IF_NONE_MATCH, e);
    }
    let resp = req.send().await.map_err(|e| {
        (
            format!("GET {shown}: {}", error_chain(&e.without_url())),
            None,
        )
    })?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let new_etag = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp
        .bytes()
        .await
        .map_err(|e| (format!("GET {shown}: reading the answer: {e}"), None))?;
    if !status.is_success() {
        let detail: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        let code = status.as_u16();
        let hint = match code {
            401 | 403 => {
                "; set LIBDEBUGGER_BREAKPOINTS_TOKEN (or [breakpoints] url_token in agent.toml) \
                 to a token this server accepts"
            }
            404 => "; check --breakpoints-url",
            _ => "",
        };
        return Err((
            format!("GET {shown} answered HTTP {code}: {detail}{hint}"),
            retry_after,
        ));
    }
    let set = parse_active_json(&shown, &body).map_err(|e| (e.to_string(), None))?;
    Ok(Fetched::Changed(
        set.with_source(&format!("url {shown}")),
        new_etag,
    ))
}

async fn poll(
    client: reqwest::Client,
    cfg: UrlConfig,
    desired_tx: watch::Sender<DesiredSet>,
    status_tx: watch::Sender<UrlStatus>,
) {
    let mut etag: Option<String> = None;
    let mut failures: u32 = 0;
    let mut reported = false;
    loop {
        let delay = match fetch_once(&client, &cfg, etag.as_deref()).await {
            Ok(fetched) => {
                let unchanged = matches!(fetched, Fetched::NotModified);
                if let Fetched::Changed(set, tag) = fetched {
                    etag = tag;
                    let n = set.len();
                    if desired_tx.send_if_modified(|cur| {
                        let changed = *cur != set;
                        if changed {
                            *cur = set;
                        }
                        changed
                    }) {
                        tracing::info!(url = %cfg.display(), breakpoints = n, "breakpoints from the URL changed");
                    }
                }
                if std::mem::take(&mut reported) {
                    tracing::info!(url = %cfg.display(), "the breakpoints URL answers again");
                }
                failures = 0;
                status_tx.send_modify(|s| {
                    s.fetches += 1;
                    s.not_modified += u64::from(unchanged);
                    s.consecutive_failures = 0;
                    s.last_success = Some(SystemTime::now());
                    s.last_error = None;
                });
                jittered(cfg.interval)
            }
            Err((msg, retry_after)) => {
                if !reported {
                    tracing::warn!("{msg}; retrying with backoff, the breakpoints in force stay");
                    reported = true;
                } else {
                    tracing::debug!("breakpoints URL failed again: {msg}");
                }
                status_tx.send_modify(|s| {
                    s.fetches += 1;
                    s.failures += 1;
                    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                    s.last_error = Some(msg);
                });
                let max = cfg.max_backoff.max(cfg.interval);
                let d = backoff(cfg.interval, max, failures);
                failures = failures.saturating_add(1);
                retry_after.map_or(d, |ra| d.max(ra.min(max)))
            }
        };
        tokio::time::sleep(delay).await;
    }
}
