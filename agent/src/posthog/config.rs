//! Agent settings: PostHog credentials and hosts, breakpoint matching, delivery, and the capture
//! settings passed through to the helper.
//!
//! Every setting can come from three places; the first one that sets it wins:
//!
//! 1. a command-line flag (`--posthog-host`, ...; see [`PosthogArgs`]),
//! 2. an environment variable (`POSTHOG_HOST`, ...; empty values count as unset),
//! 3. the configuration file, [`crate::paths::CONFIG_FILE`] unless `--config-file` says otherwise:
//!
//! ```toml
//! [posthog]
//! host = "https://eu.posthog.com"   # POSTHOG_HOST; default https://us.posthog.com
//! # api_host = "..."                # POSTHOG_API_HOST: REST API host (default: derived from host)
//! # ingest_host = "..."             # POSTHOG_INGEST_HOST: /batch/ host (default: derived from host)
//! api_key = "phc_..."               # POSTHOG_API_KEY: the project API key (sends events)
//! personal_api_key = "phx_..."      # POSTHOG_PERSONAL_API_KEY: scope live_debugger:read (or a
//!                                   # project secret key phs_...); without it and project_id,
//!                                   # hits go to PostHog and breakpoints come from elsewhere
//! project_id = 12345                # POSTHOG_PROJECT_ID: numeric id, or "@current"
//! poll_interval_secs = 30           # LIBDEBUGGER_POLL_INTERVAL (breakpoints from PostHog or a URL)
//! distinct_id = "host-web-1"        # LIBDEBUGGER_DISTINCT_ID; default "libdebugger-<hostname>"
//!
//! [breakpoints]
//! source_roots = ["/srv/app"]       # only files under these match (default: anywhere)
//! repository = "acme/shop"          # ignore breakpoints of other repositories
//! url = "https://cfg.internal/bps.json"   # --breakpoints-url: polled like PostHog's endpoint
//! url_token = "..."                 # LIBDEBUGGER_BREAKPOINTS_TOKEN: `Authorization: Bearer` for url
//!
//! [delivery]
//! flush_interval_ms = 1000          # send a batch at least this often
//! batch_size = 100                  # ... or as soon as it holds this many events
//! spool_dir = "/var/lib/libdebugger/spool"   # LIBDEBUGGER_SPOOL_DIR
//! spool_max_bytes = 268435456       # 256 MiB; when full, new events are dropped and counted
//!
//! [agent]
//! nice = -5                         # scheduling priority of the agent's threads (-20..19); see
//!                                   # DEFAULT_NICE
//!
//! [ui]
//! listen = "127.0.0.1:7788"         # serve the web UI here (default: off; port 0 = any free)
//! read_only = false                 # serve everything, change nothing (--ui-read-only)
//!
//! [capture]      # passed to the helper as is (limits)
//! [redaction]    # passed to the helper as is
//! ```
//!
//! Mode: with PostHog's project key ([`Mode::PostHog`]) the agent sends events to PostHog, and
//! with the personal key and project id too it polls PostHog's Live Debugger for breakpoints
//! ([`PosthogSettings::breakpoints`]); with none of them it runs in [`Mode::Local`]. Breakpoint
//! files, directories and URLs combine with either. A partial or inconsistent
//! set is a [`ConfigError`] naming the setting and how to set it. Unknown keys in the file are
//! warnings naming the key ([`AgentSettings::warnings`]).
use crate::breakpoints::pathmatch::PathMatcher;
use crate::delivery::DeliveryConfig;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// PostHog and delivery flags of `run` (flattened into `RunArgs`). Strings are boxed to keep
/// `RunArgs` small (clippy's `large_enum_variant` on the CLI's `Command`).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct PosthogArgs {
    /// Agent configuration file [default: /etc/libdebugger/agent.toml; env LIBDEBUGGER_CONFIG]
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<Box<Path>>,
    #[arg(
        long,
        value_name = "URL",
        help = "PostHog host, e.g. https://eu.posthog.com or your self-hosted URL [env POSTHOG_HOST]"
    )]
    pub posthog_host: Option<Box<str>>,
    /// REST API host override (default: derived from --posthog-host) [env POSTHOG_API_HOST]
    #[arg(long, value_name = "URL")]
    pub posthog_api_host: Option<Box<str>>,
    /// Ingestion host override (default: derived from --posthog-host) [env POSTHOG_INGEST_HOST]
    #[arg(long, value_name = "URL")]
    pub posthog_ingest_host: Option<Box<str>>,
    /// Project API key, phc_... (prefer the env var: flags show in `ps`) [env POSTHOG_API_KEY]
    #[arg(long, value_name = "KEY")]
    pub posthog_api_key: Option<Box<str>>,
    /// Personal API key with scope live_debugger:read, phx_... (or a project secret key, phs_...) [env POSTHOG_PERSONAL_API_KEY]
    #[arg(long, value_name = "KEY")]
    pub posthog_personal_api_key: Option<Box<str>>,
    /// Numeric project id, or @current [env POSTHOG_PROJECT_ID]
    #[arg(long, value_name = "ID")]
    pub posthog_project_id: Option<Box<str>>,
    /// Seconds between breakpoint fetches from PostHog or --breakpoints-url, ±10 % jitter [default: 30; env LIBDEBUGGER_POLL_INTERVAL]
    #[arg(long, value_name = "SECS")]
    pub poll_interval: Option<f64>,
    #[arg(
        long,
        value_name = "ID",
        help = "distinct_id of the events [default: libdebugger-<hostname>; env LIBDEBUGGER_DISTINCT_ID]"
    )]
    pub distinct_id: Option<Box<str>>,
    /// Only files under this directory match breakpoints (repeatable)
    #[arg(long = "source-root", value_name = "DIR")]
    pub source_roots: Vec<PathBuf>,
    /// The repository (owner/repo) this host runs; other repositories' breakpoints are ignored
    #[arg(long, value_name = "OWNER/REPO")]
    pub repository: Option<Box<str>>,
    /// Directory of the durable event spool [default: /var/lib/libdebugger/spool; env LIBDEBUGGER_SPOOL_DIR]
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<Box<Path>>,
}

/// A secret string: shown as `phc_…(redacted)` in `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself (for headers and request bodies only).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix: String = self.0.chars().take(4).collect();
        write!(f, "{prefix}…(redacted)")
    }
}

/// Which project the poller asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectId {
    /// A numeric project id.
    Numeric(u64),
    /// `@current`: the key owner's last-used project, pinned with `?token=<project key>`.
    Current,
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProjectId::Numeric(n) => write!(f, "{n}"),
            ProjectId::Current => f.write_str("@current"),
        }
    }
}

/// Resolved PostHog connection settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PosthogSettings {
    /// REST API base URL, no trailing slash (e.g. `https://us.posthog.com`).
    pub api_host: String,
    /// Ingestion base URL, no trailing slash (e.g. `https://us.i.posthog.com`).
    pub ingest_host: String,
    /// Project API key (`phc_…`): sends events.
    pub api_key: Secret,
    /// Where PostHog's Live Debugger breakpoints are read, when they are (`None`: hits go to
    /// PostHog, breakpoints come from files, URLs or the CLI).
    pub breakpoints: Option<PosthogBreakpoints>,
    /// Time between breakpoint fetches.
    pub poll_interval: Duration,
}

/// The credentials of PostHog's active-breakpoints endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct PosthogBreakpoints {
    /// Personal API key (`phx_…`, scope `live_debugger:read`) or project secret key (`phs_…`).
    pub personal_api_key: Secret,
    /// The project.
    pub project_id: ProjectId,
}

/// Where breakpoints come from and events go.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    /// Breakpoints from PostHog, events to PostHog.
    PostHog(PosthogSettings),
    /// No PostHog credentials: breakpoints from the local file / CLI, events to the events file
    /// or the terminal.
    Local,
}

/// Everything the agent needs from configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSettings {
    /// PostHog or local.
    pub mode: Mode,
    /// `distinct_id` of every event.
    pub distinct_id: String,
    /// `source_roots` / `repository` restrictions of breakpoint path matching.
    pub path_matcher: PathMatcher,
    /// Batching and spool settings.
    pub delivery: DeliveryConfig,
    /// The `[capture]` table, passed to the helper untouched (JSON object; empty by default).
    pub capture: serde_json::Value,
    /// The `[redaction]` table, passed to the helper untouched (JSON object; empty by default).
    pub redaction: serde_json::Value,
    /// Warnings found while reading the configuration (unknown keys, unusual key prefixes).
    /// [`load`] also logs them.
    pub warnings: Vec<String>,
    /// The configuration file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Nice value of the agent's threads (`[agent] nice`, default [`DEFAULT_NICE`]).
    pub nice: i32,
    /// `[breakpoints] url`: a URL serving the JSON of PostHog's active endpoint, polled.
    pub breakpoints_url: Option<String>,
    /// Bearer token for [`AgentSettings::breakpoints_url`] (`LIBDEBUGGER_BREAKPOINTS_TOKEN`, or
    /// `[breakpoints] url_token`).
    pub breakpoints_url_token: Option<Secret>,
    /// Time between fetches of [`AgentSettings::breakpoints_url`] (the poll interval).
    pub poll_interval: Duration,
    /// `[ui] listen`: where to serve the web UI (off when None; `run --ui` overrides it).
    pub ui_listen: Option<std::net::SocketAddr>,
    /// `[ui] read_only` (`run --ui-read-only` also sets it).
    pub ui_read_only: bool,
}

/// The agent's default nice value: a little ahead of the applications. Its work is bounded by
/// the helpers' budgets (by default 100 snapshots/s and 2 % of a CPU per process), and on a host
/// whose CPUs the applications saturate it must still drain the ring buffers before the helpers'
/// queues overflow: at nice 0 it gets one share among all their threads. As auditd's
/// `priority_boost`; `[agent] nice = 0` turns it off.
pub const DEFAULT_NICE: i32 = -5;

/// Configuration errors. Each names the setting and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting required by the others is missing.
    #[error("{setting} is not set: {why} (set {})", spellings(setting))]
    Missing {
        /// The setting, as its environment variable name (e.g. `POSTHOG_PROJECT_ID`).
        setting: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
    /// A setting has an unusable value.
    #[error("{setting} = {value:?} is not valid: {why}")]
    Invalid {
        /// The setting, as its environment variable name or file key.
        setting: &'static str,
        /// The offending value (keys are shortened to their prefix).
        value: String,
        /// What is expected instead.
        why: String,
    },
    /// The configuration file named explicitly (or an existing default one) cannot be read.
    #[error("cannot read the configuration file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or a value has the wrong type.
    #[error("the configuration file {path} is not valid: {source}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The parse error, with its location.
        #[source]
        source: Box<toml::de::Error>,
    },
}

/// The three spellings of a setting, for error messages.
fn spellings(setting: &str) -> String {
    let (flag, key) = match setting {
        "POSTHOG_HOST" => ("--posthog-host", "posthog.host"),
        "POSTHOG_API_KEY" => ("--posthog-api-key", "posthog.api_key"),
        "POSTHOG_PERSONAL_API_KEY" => ("--posthog-personal-api-key", "posthog.personal_api_key"),
        "POSTHOG_PROJECT_ID" => ("--posthog-project-id", "posthog.project_id"),
        _ => ("", ""),
    };
    format!("the environment variable {setting}, the flag {flag}, or {key} in agent.toml")
}

/// The configuration file's shape. All fields optional; defaults as documented in the module.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct FileConfig {
    agent: FileAgent,
    posthog: FilePosthog,
    breakpoints: FileBreakpoints,
    delivery: FileDelivery,
    ui: FileUi,
    capture: Option<toml::Table>,
    redaction: Option<toml::Table>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct FileAgent {
    nice: Option<i64>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct FilePosthog {
    host: Option<String>,
    api_host: Option<String>,
    ingest_host: Option<String>,
    api_key: Option<String>,
    personal_api_key: Option<String>,
    project_id: Option<toml::Value>,
    poll_interval_secs: Option<f64>,
    distinct_id: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct FileUi {
    listen: Option<String>,
    read_only: Option<bool>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct FileBreakpoints {
    source_roots: Vec<PathBuf>,
    repository: Option<String>,
    url: Option<String>,
    url_token: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct FileDelivery {
    flush_interval_ms: Option<u64>,
    batch_size: Option<usize>,
    spool_dir: Option<PathBuf>,
    spool_max_bytes: Option<u64>,
}

/// Keys the file may hold, per section; `capture` and `redaction` are passed through unchecked.
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    ("agent", &["nice"]),
    (
        "posthog",
        &[
            "host",
            "api_host",
            "ingest_host",
            "api_key",
            "personal_api_key",
            "project_id",
            "poll_interval_secs",
            "distinct_id",
        ],
    ),
    (
        "breakpoints",
        &["source_roots", "repository", "url", "url_token"],
    ),
    ("ui", &["listen", "read_only"]),
    (
        "delivery",
        &[
            "flush_interval_ms",
            "batch_size",
            "spool_dir",
            "spool_max_bytes",
        ],
    ),
    ("capture", &[]),
    ("redaction", &[]),
];

fn unknown_keys(table: &toml::Table, path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (section, value) in table {
        let Some((_, keys)) = KNOWN_KEYS.iter().find(|(s, _)| s == section) else {
            out.push(format!(
                "unknown key `{section}` in {}: ignored (known sections: agent, posthog, \
                 breakpoints, delivery, capture, redaction)",
                path.display()
            ));
            continue;
        };
        if keys.is_empty() {
            continue;
        }
        if let toml::Value::Table(t) = value {
            for key in t.keys().filter(|k| !keys.contains(&k.as_str())) {
                out.push(format!(
                    "unknown key `{section}.{key}` in {}: ignored",
                    path.display()
                ));
            }
        }
    }
    out
}

/// Where a configuration value comes from: the process environment in production, a map in tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for [`resolve`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Reads the configuration (flags, environment, file) and logs its warnings.
pub fn load(args: &PosthogArgs) -> Result<AgentSettings, ConfigError> {
    let settings = resolve(args, &process_env)?;
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    Ok(settings)
}

/// Resolves the settings from `args`, `env` and the configuration file (read from disk: the
/// `--config-file` / `LIBDEBUGGER_CONFIG` path, which must exist, or the default path, which may
/// be absent).
pub fn resolve(args: &PosthogArgs, env: EnvLookup<'_>) -> Result<AgentSettings, ConfigError> {
    let env_nonempty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let (path, explicit) = match args
        .config_file
        .as_deref()
        .map(Path::to_owned)
        .or_else(|| env_nonempty("LIBDEBUGGER_CONFIG").map(PathBuf::from))
    {
        Some(p) => (p, true),
        None => (PathBuf::from(crate::paths::CONFIG_FILE), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(ConfigError::ReadFile { path, source }),
    };
    resolve_with_file(args, env, text.as_deref().map(|t| (path.as_path(), t)))
}

/// Like [`resolve`] with the file's contents given (`None` = no file). For tests and `doctor`.
pub fn resolve_with_file(
    args: &PosthogArgs,
    env: EnvLookup<'_>,
    file: Option<(&Path, &str)>,
) -> Result<AgentSettings, ConfigError> {
    let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let mut warnings = Vec::new();
    let parsed = match file {
        Some((path, text)) => {
            let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::ParseFile {
                path: path.to_owned(),
                source: Box::new(e),
            })?;
            warnings.extend(unknown_keys(&table, path));
            FileConfig::deserialize(toml::Value::Table(table)).map_err(|e| {
                ConfigError::ParseFile {
                    path: path.to_owned(),
                    source: Box::new(e),
                }
            })?
        }
        None => FileConfig::default(),
    };
    let fp = &parsed.posthog;

    let pick = |flag: &Option<Box<str>>, var: &str, file: &Option<String>| {
        flag.as_deref()
            .map(str::to_owned)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| env(var))
            .or_else(|| file.clone().filter(|v| !v.trim().is_empty()))
            .map(|v| v.trim().to_owned())
    };
    let host = pick(&args.posthog_host, "POSTHOG_HOST", &fp.host);
    let api_host = pick(&args.posthog_api_host, "POSTHOG_API_HOST", &fp.api_host);
    let ingest_host = pick(
        &args.posthog_ingest_host,
        "POSTHOG_INGEST_HOST",
        &fp.ingest_host,
    );
    let api_key = pick(&args.posthog_api_key, "POSTHOG_API_KEY", &fp.api_key);
    let personal = pick(
        &args.posthog_personal_api_key,
        "POSTHOG_PERSONAL_API_KEY",
        &fp.personal_api_key,
    );
    let file_project = match &fp.project_id {
        Some(toml::Value::Integer(n)) => Some(n.to_string()),
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ConfigError::Invalid {
                setting: "posthog.project_id",
                value: other.to_string(),
                why: "expected a number or \"@current\"".into(),
            });
        }
        None => None,
    };
    let project = pick(
        &args.posthog_project_id,
        "POSTHOG_PROJECT_ID",
        &file_project,
    );

    let poll_secs = match args.poll_interval {
        Some(s) => Some(s),
        None => match env("LIBDEBUGGER_POLL_INTERVAL") {
            Some(v) => Some(v.trim().parse::<f64>().map_err(|_| ConfigError::Invalid {
                setting: "LIBDEBUGGER_POLL_INTERVAL",
                value: v.clone(),
                why: "expected a number of seconds".into(),
            })?),
            None => fp.poll_interval_secs,
        },
    };
    let poll_interval = match poll_secs {
        None => DEFAULT_POLL_INTERVAL,
        Some(s) if s.is_finite() && (0.05..=86_400.0).contains(&s) => Duration::from_secs_f64(s),
        Some(s) => {
            return Err(ConfigError::Invalid {
                setting: "poll interval",
                value: s.to_string(),
                why: "expected seconds between 0.05 and 86400".into(),
            });
        }
    };

    let mode = if api_key.is_none() && personal.is_none() && project.is_none() {
        Mode::Local
    } else {
        let api_key = api_key.ok_or(ConfigError::Missing {
            setting: "POSTHOG_API_KEY",
            why: "sending hits to PostHog needs the project API key (phc_…, in Project settings)",
        })?;
        check_key_kind(&api_key, "POSTHOG_API_KEY", &["phc_"], &mut warnings)?;
        let breakpoints = match (personal, project) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    setting: "POSTHOG_PERSONAL_API_KEY",
                    why: "reading breakpoints from PostHog needs a personal API key (phx_…) with \
                          scope live_debugger:read, or a project secret key (phs_…); without \
                          it and POSTHOG_PROJECT_ID, breakpoints come from --breakpoints or \
                          --breakpoints-url",
                });
            }
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    setting: "POSTHOG_PROJECT_ID",
                    why: "the personal API key needs a project: its numeric id (Project \
                          settings) or @current",
                });
            }
            (Some(personal), Some(project)) => {
                check_key_kind(
                    &personal,
                    "POSTHOG_PERSONAL_API_KEY",
                    &["phx_", "phs_"],
                    &mut warnings,
                )?;
                Some(PosthogBreakpoints {
                    personal_api_key: Secret::new(personal),
                    project_id: parse_project_id(&project)?,
                })
            }
        };
        let (api_host, ingest_host) = hosts(host.as_deref(), api_host, ingest_host)?;
        Mode::PostHog(PosthogSettings {
            api_host,
            ingest_host,
            api_key: Secret::new(api_key),
            breakpoints,
            poll_interval,
        })
    };

    let distinct_id = args
        .distinct_id
        .as_deref()
        .map(str::to_owned)
        .filter(|v| !v.trim().is_empty())
        .or_else(|| env("LIBDEBUGGER_DISTINCT_ID"))
        .or_else(|| fp.distinct_id.clone().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| format!("libdebugger-{}", hostname()));

    let source_roots = if args.source_roots.is_empty() {
        parsed.breakpoints.source_roots.clone()
    } else {
        args.source_roots.clone()
    };
    let repository = args
        .repository
        .as_deref()
        .map(str::to_owned)
        .or_else(|| parsed.breakpoints.repository.clone())
        .filter(|r| !r.trim().is_empty());

    let fd = &parsed.delivery;
    let mut delivery = DeliveryConfig::new(
        args.spool_dir
            .as_deref()
            .map(Path::to_owned)
            .or_else(|| env("LIBDEBUGGER_SPOOL_DIR").map(PathBuf::from))
            .or_else(|| fd.spool_dir.clone())
            .unwrap_or_else(crate::paths::spool_dir),
    );
    if let Some(ms) = fd.flush_interval_ms {
        if ms == 0 {
            return Err(ConfigError::Invalid {
                setting: "delivery.flush_interval_ms",
                value: "0".into(),
                why: "expected at least 1 ms".into(),
            });
        }
        delivery.flush_interval = Duration::from_millis(ms);
    }
    if let Some(n) = fd.batch_size {
        if !(1..=1000).contains(&n) {
            return Err(ConfigError::Invalid {
                setting: "delivery.batch_size",
                value: n.to_string(),
                why: "expected 1 to 1000 events".into(),
            });
        }
        delivery.batch_size = n;
    }
    if let Some(n) = fd.spool_max_bytes {
        if n < 1024 * 1024 {
            return Err(ConfigError::Invalid {
                setting: "delivery.spool_max_bytes",
                value: n.to_string(),
                why: "expected at least 1 MiB (1048576)".into(),
            });
        }
        delivery.spool_max_bytes = n;
    }

    let nice = match parsed.agent.nice {
        None => DEFAULT_NICE,
        Some(n) if (-20..=19).contains(&n) => n as i32,
        Some(n) => {
            return Err(ConfigError::Invalid {
                setting: "agent.nice",
                value: n.to_string(),
                why: "expected a nice value from -20 to 19".into(),
            });
        }
    };
    let ui_listen = match &parsed.ui.listen {
        None => None,
        Some(s) => Some(s.parse().map_err(|_| {
            ConfigError::Invalid {
            setting: "ui.listen",
            value: s.clone(),
            why: "expected an address and port, e.g. \"127.0.0.1:7788\" (port 0 picks a free one)"
                .into(),
        }
        })?),
    };
    let to_json = |t: &Option<toml::Table>| {
        t.as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()))
    };
    Ok(AgentSettings {
        mode,
        distinct_id,
        path_matcher: PathMatcher::new(source_roots, repository),
        delivery,
        capture: to_json(&parsed.capture),
        redaction: to_json(&parsed.redaction),
        warnings,
        config_file: file.map(|(p, _)| p.to_owned()),
        nice,
        breakpoints_url: parsed
            .breakpoints
            .url
            .clone()
            .filter(|u| !u.trim().is_empty()),
        breakpoints_url_token: env("LIBDEBUGGER_BREAKPOINTS_TOKEN")
            .or_else(|| parsed.breakpoints.url_token.clone())
            .filter(|t| !t.trim().is_empty())
            .map(|t| Secret::new(t.trim())),
        poll_interval,
        ui_listen,
        ui_read_only: parsed.ui.read_only.unwrap_or(false),
    })
}

/// Default time between breakpoint fetches. PostHog allows a personal API key 480 requests a
/// minute and 4,800 an hour: at 30 s, one fetch (one page) per host is 120 an hour, so one key
/// serves 40 hosts (13 at 10 s).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Default PostHog host when credentials are set but no host is (PostHog Cloud US, as the SDKs).
pub const DEFAULT_HOST: &str = "https://us.posthog.com";

/// What a key's prefix says it is, for messages.
fn key_kind(key: &str) -> Option<(&'static str, &'static str)> {
    [
        ("phc_", "a project API key (phc_…)"),
        ("phx_", "a personal API key (phx_…)"),
        ("phs_", "a project secret key (phs_…)"),
    ]
    .into_iter()
    .find(|(p, _)| key.starts_with(p))
}

/// A key of a known PostHog kind other than `want` is an error naming both; an unknown prefix
/// is a warning.
fn check_key_kind(
    key: &str,
    setting: &'static str,
    want: &[&str],
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let takes = if want.contains(&"phc_") {
        "the project API key (phc_…)"
    } else {
        "a personal API key (phx_…) or a project secret key (phs_…)"
    };
    match key_kind(key) {
        Some((prefix, _)) if want.contains(&prefix) => Ok(()),
        Some((prefix, what)) => Err(ConfigError::Invalid {
            setting,
            value: format!("{prefix}…"),
            why: format!("this is {what}; {setting} takes {takes}"),
        }),
        None => {
            warnings.push(format!(
                "{setting} does not start with {}; PostHog's keys of this kind usually do",
                want.join(" or ")
            ));
            Ok(())
        }
    }
}

fn parse_project_id(v: &str) -> Result<ProjectId, ConfigError> {
    if v.eq_ignore_ascii_case("@current") {
        return Ok(ProjectId::Current);
    }
    v.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(ProjectId::Numeric)
        .ok_or_else(|| ConfigError::Invalid {
            setting: "POSTHOG_PROJECT_ID",
            value: v.into(),
            why: "expected the numeric project id (Project settings → Project ID) or @current"
                .into(),
        })
}

/// Normalises a host setting into a base URL: adds `https://` when no scheme is given, removes
/// trailing slashes.
fn normalise_host(setting: &'static str, v: &str) -> Result<String, ConfigError> {
    let v = v.trim().trim_end_matches('/');
    let url = if v.contains("://") {
        v.to_owned()
    } else {
        format!("https://{v}")
    };
    let rest = url.split_once("://");
    match rest {
        Some(("http" | "https", r)) if !r.is_empty() && !r.contains(char::is_whitespace) => Ok(url),
        _ => Err(ConfigError::Invalid {
            setting,
            value: v.into(),
            why: "expected a URL such as https://eu.posthog.com or http://posthog.internal:8000"
                .into(),
        }),
    }
}

/// The REST and ingestion hosts. PostHog Cloud's regions are derived from either host name
/// (`us.posthog.com` ↔ `us.i.posthog.com`, `eu` likewise; `app.posthog.com` is US); any other
/// host serves both (self-hosted). Explicit overrides win.
pub fn hosts(
    host: Option<&str>,
    api_override: Option<String>,
    ingest_override: Option<String>,
) -> Result<(String, String), ConfigError> {
    let base = normalise_host("POSTHOG_HOST", host.unwrap_or(DEFAULT_HOST))?;
    let name = base
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(&base)
        .to_ascii_lowercase();
    let region = match name.as_str() {
        "us.posthog.com" | "us.i.posthog.com" | "app.posthog.com" => Some("us"),
        "eu.posthog.com" | "eu.i.posthog.com" => Some("eu"),
        _ => None,
    };
    let (api, ingest) = match region {
        Some(r) => (
            format!("https://{r}.posthog.com"),
            format!("https://{r}.i.posthog.com"),
        ),
        None => (base.clone(), base),
    };
    let api = match api_override {
        Some(v) => normalise_host("POSTHOG_API_HOST", &v)?,
        None => api,
    };
    let ingest = match ingest_override {
        Some(v) => normalise_host("POSTHOG_INGEST_HOST", &v)?,
        None => ingest,
    };
    Ok((api, ingest))
}

/// This host's name (from the kernel), or `unknown-host`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_hosts_are_derived() {
        let us = (
            "https://us.posthog.com".into(),
            "https://us.i.posthog.com".into(),
        );
        assert_eq!(hosts(None, None, None).unwrap(), us);
        assert_eq!(hosts(Some("us.i.posthog.com/"), None, None).unwrap(), us);
        let eu = hosts(Some("https://eu.posthog.com"), None, None).unwrap();
        assert_eq!(eu.1, "https://eu.i.posthog.com");
        let own = hosts(Some("http://ph.local:8000"), None, None).unwrap();
        assert_eq!(
            own,
            ("http://ph.local:8000".into(), "http://ph.local:8000".into())
        );
        let o = hosts(Some("eu.posthog.com"), None, Some("http://proxy".into())).unwrap();
        assert_eq!(o, ("https://eu.posthog.com".into(), "http://proxy".into()));
        assert!(hosts(Some("ftp://x"), None, None).is_err());
    }

    /// The settings from an agent.toml holding `text`, with no flags and no environment.
    fn from_file_text(text: &str) -> Result<AgentSettings, ConfigError> {
        resolve_with_file(
            &PosthogArgs::default(),
            &|_: &str| None,
            Some((Path::new("/etc/agent.toml"), text)),
        )
    }

    #[test]
    fn the_agent_nice_value_defaults_to_a_small_boost_and_is_checked() {
        let at = from_file_text;
        assert_eq!(at("").unwrap().nice, DEFAULT_NICE);
        assert_eq!(at("[agent]\nnice = 0\n").unwrap().nice, 0);
        assert_eq!(at("[agent]\nnice = 19\n").unwrap().nice, 19);
        let err = at("[agent]\nnice = -21\n").unwrap_err().to_string();
        assert!(
            err.contains("agent.nice") && err.contains("-20 to 19"),
            "{err}"
        );
        let warned = at("[agent]\nniceness = 1\n").unwrap().warnings;
        assert!(
            warned.iter().any(|w| w.contains("agent.niceness")),
            "{warned:?}"
        );
    }

    #[test]
    fn the_ui_is_off_by_default_and_its_address_is_checked() {
        let at = from_file_text;
        let off = at("").unwrap();
        assert_eq!((off.ui_listen, off.ui_read_only), (None, false));
        let on = at("[ui]\nlisten = \"127.0.0.1:7788\"\nread_only = true\n").unwrap();
        assert_eq!(on.ui_listen, Some("127.0.0.1:7788".parse().unwrap()));
        assert!(on.ui_read_only);
        let err = at("[ui]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ui.listen") && err.contains("127.0.0.1:7788"),
            "{err}"
        );
    }
}
