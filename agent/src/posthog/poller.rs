//! Polls PostHog's Live Debugger API for the active breakpoints.
//!
//! * The first fetch happens at start, then one every `interval` (30 s by default, ±10 %
//!   jitter so that a fleet started together does not poll in step).
//! * Every answer is compared with the set in force; any field change (a condition-only edit,
//!   `enabled` turning false, a deletion) publishes a new [`DesiredSet`] on the watch channel at
//!   once.
//! * Errors back off exponentially with jitter (from `interval` up to `max_backoff`; a
//!   `Retry-After` is honoured up to `max_backoff`), and the set in force stays. 401/403 are logged **once** with what to fix (the key, its scope
//!   `live_debugger:read`, the project id), other errors once per failure streak; the
//!   [`PollerStatus`] always carries the current error.
//! * A malformed answer (not JSON, no `results`/`breakpoints` list) counts as an error: the
//!   last good set stays in force. A bad entry is that breakpoint's error status only.
//! * 404: PostHog retired the Live Debugger in its newest versions (the active endpoint is
//!   gone; capture stays). One status line says so ([`RETIRED`]), hits are still sent, and the
//!   endpoint is checked again every [`RETIRED_RECHECK`], not in an error storm.
use super::config::{PosthogSettings, ProjectId, Secret};
use crate::breakpoints::DesiredSet;
use crate::breakpoints::file::{active_set, parse_active_page};
use crate::delivery::backoff;
use crate::delivery::jittered;
use crate::delivery::sinks::{error_chain, http_client, parse_retry_after};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// What the poller needs.
#[derive(Clone, Debug)]
pub struct PollerConfig {
    /// REST API base URL, e.g. `https://us.posthog.com`.
    pub api_host: String,
    /// Personal API key (`Authorization: Bearer`).
    pub personal_api_key: Secret,
    /// Project API key: pins `@current` with `?token=`.
    pub api_key: Secret,
    /// The project.
    pub project_id: ProjectId,
    /// Time between fetches.
    pub interval: Duration,
    /// Longest delay between attempts while failing (default 5 min, at least `interval`).
    pub max_backoff: Duration,
    /// Timeout of one request (default 10 s).
    pub request_timeout: Duration,
}

impl PollerConfig {
    /// The poller settings from resolved PostHog settings, with default backoff and timeout;
    /// `None` when PostHog's breakpoints are not read (no personal key and project id).
    pub fn from_settings(s: &PosthogSettings) -> Option<Self> {
        let b = s.breakpoints.as_ref()?;
        Some(Self {
            api_host: s.api_host.clone(),
            personal_api_key: b.personal_api_key.clone(),
            api_key: s.api_key.clone(),
            project_id: b.project_id.clone(),
            interval: s.poll_interval,
            max_backoff: Duration::from_secs(300).max(s.poll_interval),
            request_timeout: Duration::from_secs(10),
        })
    }

    /// The endpoint, without the query string (safe to log).
    pub fn endpoint(&self) -> String {
        format!(
            "{}/api/projects/{}/live_debugger_breakpoints/active/",
            self.api_host.trim_end_matches('/'),
            self.project_id
        )
    }
}

/// The poller's health, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollerStatus {
    /// Fetches attempted.
    pub fetches: u64,
    /// Fetches that failed (any reason).
    pub failures: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// When the last good answer arrived.
    pub last_success: Option<SystemTime>,
    /// The current error (cleared by a good answer).
    pub last_error: Option<String>,
    /// True while PostHog refuses the credentials (401/403).
    pub auth_error: bool,
    /// Set while the endpoint answers 404: [`RETIRED`].
    pub note: Option<String>,
}

/// The status line while PostHog answers 404 on the active endpoint.
pub const RETIRED: &str = "this PostHog no longer serves Live Debugger breakpoints; hits are \
    still sent; take breakpoints from a file, a directory or a URL (--breakpoints, \
    --breakpoints-url)";
/// How often a retired endpoint is asked again (PostHog may be downgraded, or the project id
/// corrected).
pub const RETIRED_RECHECK: Duration = Duration::from_secs(600);

/// Errors starting the poller.
#[derive(Debug, thiserror::Error)]
pub enum PollerError {
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot create the HTTP client for PostHog: {0}")]
    Client(#[source] reqwest::Error),
}

/// A running poller. Dropping it stops polling.
pub struct Poller {
    /// The breakpoints PostHog wants; changes only when some field of some breakpoint changes.
    pub desired: watch::Receiver<DesiredSet>,
    /// Health.
    pub status: watch::Receiver<PollerStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why one fetch failed.
#[derive(Debug)]
enum FetchError {
    /// 401/403: the credentials. Logged once.
    Auth(String),
    /// Anything else; `Retry-After` when the server sent one (429/503).
    Other(String, Option<Duration>),
    /// 404: the endpoint does not exist here (a PostHog that retired the Live Debugger).
    Retired(String),
}

impl Poller {
    /// Starts polling on the current tokio runtime; the first fetch is immediate.
    pub fn start(config: PollerConfig) -> Result<Poller, PollerError> {
        let client = http_client(config.request_timeout).map_err(PollerError::Client)?;
        let (desired_tx, desired) = watch::channel(DesiredSet::default());
        let (status_tx, status) = watch::channel(PollerStatus::default());
        let task = tokio::spawn(poll_loop(client, config, desired_tx, status_tx));
        Ok(Poller {
            desired,
            status,
            task,
        })
    }
}

/// Most pages one fetch follows: a server that keeps saying `has_more` is an error, not a loop.
const MAX_PAGES: usize = 100;

/// Fetches every page of the active breakpoints. PostHog answers one page with
/// `"has_more": false` today; when an answer says `has_more`, the next page is its `next` URL
/// (Django REST framework style, same origin only: the personal API key is never sent
/// elsewhere) or else the same endpoint with `offset` = the breakpoints received so far. The set
/// is published only once every page arrived, so a partial answer never removes breakpoints.
async fn fetch(client: &reqwest::Client, cfg: &PollerConfig) -> Result<DesiredSet, FetchError> {
    let endpoint = cfg.endpoint();
    let base = reqwest::Url::parse(&endpoint)
        .map_err(|e| FetchError::Other(format!("{endpoint} is not a valid URL: {e}"), None))?;
    let mut items = Vec::new();
    let mut next: Option<reqwest::Url> = None;
    for page in 1..=MAX_PAGES {
        let url = match next.take() {
            Some(u) => u,
            None => {
                let mut u = base.clone();
                if !items.is_empty() {
                    u.query_pairs_mut()
                        .append_pair("offset", &items.len().to_string());
                }
                u
            }
        };
        let body = fetch_page(client, cfg, url, &endpoint).await?;
        let what = if page == 1 {
            "PostHog's answer".to_string()
        } else {
            format!("page {page} of PostHog's answer")
        };
        let answer = parse_active_page(&what, &body)
            .map_err(|e| FetchError::Other(format!("GET {endpoint}: {e}"), None))?;
        let got = answer.items.len();
        items.extend(answer.items);
        if !answer.has_more {
            return Ok(active_set("PostHog's answer", items).with_source("posthog"));
        }
        if got == 0 {
            return Err(FetchError::Other(
                format!(
                    "GET {endpoint}: page {page} says `has_more` but carries no breakpoints; \
                     the answer is incomplete"
                ),
                None,
            ));
        }
        if let Some(n) = answer.next {
            let u = base.join(&n).map_err(|e| {
                FetchError::Other(format!("GET {endpoint}: `next` is not a URL: {e}"), None)
            })?;
            if u.origin() != base.origin() {
                return Err(FetchError::Other(
                    format!(
                        "GET {endpoint}: `next` points to another host ({}); not following it \
                         with the personal API key",
                        u.origin().ascii_serialization()
                    ),
                    None,
                ));
            }
            next = Some(u);
        }
    }
    Err(FetchError::Other(
        format!(
            "GET {endpoint}: still `has_more` after {MAX_PAGES} pages; the answer is incomplete"
        ),
        None,
    ))
}

/// One GET of the breakpoints endpoint (`url` carries any page parameters). `endpoint` is what
/// error messages show: never the query, which may hold the project key.
async fn fetch_page(
    client: &reqwest::Client,
    cfg: &PollerConfig,
    mut url: reqwest::Url,
    endpoint: &str,
) -> Result<Vec<u8>, FetchError> {
    if cfg.project_id == ProjectId::Current && !url.query_pairs().any(|(k, _)| k == "token") {
        url.query_pairs_mut()
            .append_pair("token", cfg.api_key.expose());
    }
    let resp = client
        .get(url)
        .bearer_auth(cfg.personal_api_key.expose())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| {
            FetchError::Other(
                format!("GET {endpoint}: {}", error_chain(&e.without_url())),
                None,
            )
        })?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = resp
        .bytes()
        .await
        .map_err(|e| FetchError::Other(format!("GET {endpoint}: reading the answer: {e}"), None))?;
    if status.is_success() {
        return Ok(body.to_vec());
    }
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
    let code = status.as_u16();
    Err(match code {
        401 => FetchError::Auth(format!(
            "PostHog rejected the personal API key (HTTP 401 from GET {endpoint}: {detail}). \
             Set POSTHOG_PERSONAL_API_KEY to a personal API key (phx_…) with scope \
             live_debugger:read, created in the same region as POSTHOG_HOST"
        )),
        403 => FetchError::Auth(format!(
            "PostHog refused access (HTTP 403 from GET {endpoint}: {detail}). Give the personal \
             API key the scope live_debugger:read and access to project {}, and check \
             POSTHOG_PROJECT_ID",
            cfg.project_id
        )),
        404 => FetchError::Retired(format!(
            "GET {endpoint} answered HTTP 404 ({detail}); if this PostHog still has the Live \
             Debugger, check POSTHOG_PROJECT_ID and POSTHOG_HOST"
        )),
        _ => FetchError::Other(
            format!("GET {endpoint} answered HTTP {code}: {detail}"),
            retry_after,
        ),
    })
}

/// One fetch of the active breakpoints, for `doctor`: the number of breakpoints, or what is
/// wrong (`Err((retired, message))`, `retired` for a 404: [`RETIRED`]).
pub async fn probe(cfg: &PollerConfig) -> Result<usize, (bool, String)> {
    let client = http_client(cfg.request_timeout)
        .map_err(|e| (false, format!("cannot create the HTTP client: {e}")))?;
    match fetch(&client, cfg).await {
        Ok(set) => Ok(set.len()),
        Err(FetchError::Auth(m)) | Err(FetchError::Other(m, _)) => Err((false, m)),
        Err(FetchError::Retired(m)) => Err((true, format!("{RETIRED} ({m})"))),
    }
}

async fn poll_loop(
    client: reqwest::Client,
    cfg: PollerConfig,
    desired_tx: watch::Sender<DesiredSet>,
    status_tx: watch::Sender<PollerStatus>,
) {
    let mut failures: u32 = 0;
    let mut reported: Option<String> = None;
    loop {
        let result = fetch(&client, &cfg).await;
        let delay = match result {
            Ok(set) => {
                let n = set.len();
                let changed = desired_tx.send_if_modified(|cur| {
                    if *cur == set {
                        false
                    } else {
                        *cur = set;
                        true
                    }
                });
                if changed {
                    tracing::info!(breakpoints = n, "breakpoints from PostHog changed");
                }
                if reported.take().is_some() {
                    tracing::info!("PostHog's breakpoints API answers again");
                }
                failures = 0;
                status_tx.send_modify(|s| {
                    s.fetches += 1;
                    s.consecutive_failures = 0;
                    s.last_success = Some(SystemTime::now());
                    s.last_error = None;
                    s.auth_error = false;
                    s.note = None;
                });
                jittered(cfg.interval)
            }
            Err(FetchError::Retired(detail)) => {
                if reported.as_deref() != Some(RETIRED) {
                    tracing::warn!("{RETIRED} ({detail}); asking again every {RETIRED_RECHECK:?}");
                    reported = Some(RETIRED.to_string());
                }
                status_tx.send_modify(|s| {
                    s.fetches += 1;
                    s.failures += 1;
                    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                    s.last_error = Some(detail);
                    s.auth_error = false;
                    s.note = Some(RETIRED.to_string());
                });
                RETIRED_RECHECK.max(cfg.interval)
            }
            Err(err) => {
                let (msg, auth, retry_after) = match err {
                    FetchError::Auth(m) => (m, true, None),
                    FetchError::Other(m, ra) => (m, false, ra),
                    FetchError::Retired(_) => unreachable!("handled above"),
                };
                // Auth errors: once per distinct message. Others: once per failure streak.
                let first_report = if auth {
                    reported.as_deref() != Some(msg.as_str())
                } else {
                    reported.is_none() || reported.as_deref() == Some(RETIRED)
                };
                if first_report {
                    if auth {
                        tracing::error!(
                            "{msg}. Retrying with backoff; the breakpoints in force stay"
                        );
                    } else {
                        tracing::warn!(
                            "{msg}; retrying with backoff, the breakpoints in force stay"
                        );
                    }
                    reported = Some(msg.clone());
                } else {
                    tracing::debug!("breakpoints fetch failed again: {msg}");
                }
                status_tx.send_modify(|s| {
                    s.fetches += 1;
                    s.failures += 1;
                    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                    s.last_error = Some(msg);
                    s.auth_error = auth;
                    s.note = None;
                });
                let max = cfg.max_backoff.max(cfg.interval);
                let d = backoff(cfg.interval, max, failures);
                failures = failures.saturating_add(1);
                // Honour Retry-After (429 from PostHog's rate limit), within reason.
                retry_after.map_or(d, |ra| d.max(ra.min(max)))
            }
        };
        tokio::time::sleep(delay).await;
    }
}
