//! `run` (the default subcommand): the daemon.
use crate::daemon::{Daemon, Source, host};
use crate::posthog::{KeyStatus, Mode, Poller, PollerConfig};
use crate::selectors::{Matcher, Rule, Selectors};
use anyhow::Context;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Breakpoints file (TOML, or JSON as PostHog's active-breakpoints endpoint returns), or a
    /// directory of such files (a Kubernetes ConfigMap volume), watched for changes.
    #[arg(long, value_name = "PATH")]
    pub breakpoints: Option<PathBuf>,
    /// Poll this http(s) URL for breakpoints in the JSON of PostHog's active endpoint (ETag
    /// aware; bearer token from LIBDEBUGGER_BREAKPOINTS_TOKEN) [agent.toml: breakpoints.url]
    #[arg(long, value_name = "URL")]
    pub breakpoints_url: Option<Box<str>>,
    /// Write events as JSON Lines to FILE (`-` = stdout).
    #[arg(long, value_name = "FILE")]
    pub events_file: Option<PathBuf>,
    /// The helper library to inject (default: next to this binary, or `../helper/`).
    #[arg(long, value_name = "PATH")]
    pub helper: Option<Box<std::path::Path>>,
    /// Debug only these processes (repeatable). Default: every CPython 3.11+ process.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<i32>,
    /// Debug only processes whose command line matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub cmdline: Option<Box<str>>,
    /// The control socket (default /run/libdebugger/agent.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<Box<std::path::Path>>,
    /// Serve the web UI at ADDR (e.g. 127.0.0.1:7788; port 0 picks a free one). Default: off,
    /// or `[ui] listen` of agent.toml. `libdebugger-agent ui` prints its URL with the token.
    #[arg(long, value_name = "ADDR")]
    pub ui: Option<std::net::SocketAddr>,
    /// The web UI shows everything but changes nothing.
    #[arg(long)]
    pub ui_read_only: bool,
    #[command(flatten)]
    pub posthog: crate::posthog::PosthogArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = crate::posthog::config::load(&args.posthog)?;
    // Before any thread starts: threads inherit their creator's nice value.
    set_nice(settings.nice);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ldbg-agent")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run_async(args, settings))?;
    Ok(ExitCode::SUCCESS)
}

/// Sets this thread's nice value (see [`crate::posthog::config::DEFAULT_NICE`]); a failure (not
/// root) is logged and the agent runs at its current priority.
fn set_nice(nice: i32) {
    // SAFETY: setpriority has no memory preconditions; `who = 0` is the calling thread on Linux.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r == 0 {
        tracing::debug!(nice, "scheduling priority set");
    } else {
        let e = std::io::Error::last_os_error();
        tracing::warn!(nice, "cannot set the agent's scheduling priority: {e}");
    }
}

async fn run_async(
    args: RunArgs,
    settings: crate::posthog::config::AgentSettings,
) -> anyhow::Result<()> {
    let helper_so = host::find_helper(args.helper.as_deref()).map_err(anyhow::Error::msg)?;
    let mut selectors = Selectors::default();
    for pid in &args.pids {
        selectors.include.push(Rule {
            pid: Some(*pid),
            ..Rule::default()
        });
    }
    if let Some(re) = &args.cmdline {
        selectors.include.push(Rule {
            cmdline: Some(re.to_string()),
            ..Rule::default()
        });
    }
    let selectors = Matcher::new(&selectors)?;
    let mut file_status = None;
    let mut poller_status = None;
    let mut url_status = None;
    let mut key_status = None;
    // Every source of breakpoints at once, merged: PostHog's Live Debugger, a file or
    // directory, a URL (and the CLI's, merged by the daemon).
    let mut sources = Vec::new();
    let mut guards: Vec<Box<dyn Send>> = Vec::new();
    let mode_label = match &settings.mode {
        Mode::PostHog(ph) => {
            // The project key: capture takes any well-formed key and drops the events of an
            // unknown one later; ask once, loudly, and keep running either way.
            let (tx, rx) = tokio::sync::watch::channel(KeyStatus::Pending);
            key_status = Some(rx);
            let (host, key) = (ph.ingest_host.clone(), ph.api_key.clone());
            tokio::spawn(async move {
                let status = crate::posthog::check_project_key(&host, &key).await;
                match &status {
                    KeyStatus::Invalid(m) => tracing::error!("{m}"),
                    KeyStatus::Unverified(m) => tracing::warn!("{m}"),
                    _ => tracing::debug!("PostHog knows the project API key"),
                }
                let _ = tx.send(status);
            });
            match PollerConfig::from_settings(ph) {
                Some(cfg) => {
                    let poller = Poller::start(cfg)?;
                    sources.push(poller.desired.clone());
                    poller_status = Some(poller.status.clone());
                    guards.push(Box::new(poller));
                }
                None => tracing::info!(
                    "POSTHOG_PERSONAL_API_KEY and POSTHOG_PROJECT_ID are not set: hits go to \
                     PostHog, breakpoints come from --breakpoints, --breakpoints-url or the CLI"
                ),
            }
            "posthog"
        }
        Mode::Local => "local",
    };
    if let Some(path) = &args.breakpoints {
        let watch = crate::breakpoints::file::watch_file(path)?;
        sources.push(watch.desired.clone());
        file_status = Some(watch.status.clone());
        guards.push(Box::new(watch));
    }
    if let Some(url) = args
        .breakpoints_url
        .as_deref()
        .map(str::to_owned)
        .or_else(|| settings.breakpoints_url.clone())
    {
        let cfg = crate::breakpoints::url::UrlConfig::new(
            &url,
            settings.breakpoints_url_token.clone(),
            settings.poll_interval,
        )
        .map_err(anyhow::Error::msg)?;
        let source = crate::breakpoints::url::start(cfg).context("the breakpoints URL")?;
        sources.push(source.desired.clone());
        url_status = Some(source.status.clone());
        guards.push(Box::new(source));
    }
    let source = if sources.is_empty() {
        Source::CliOnly
    } else {
        let merged = crate::breakpoints::sources::merge(sources);
        let rx = merged.desired.clone();
        guards.push(Box::new(merged));
        Source::Watch {
            rx,
            _guard: Box::new(guards),
        }
    };
    let events_to_stdout = args.events_file.as_deref() == Some(std::path::Path::new("-"));
    let echo_to_terminal =
        args.events_file.is_some() && !events_to_stdout && std::io::stdout().is_terminal();
    let delivery = crate::delivery::Delivery::start(&settings, args.events_file.as_deref())?;
    let mut helper_settings =
        crate::daemon::HelperSettings::from_config(&settings.capture, &settings.redaction);
    helper_settings.roots = settings
        .path_matcher
        .source_roots
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    helper_settings.repository = settings.path_matcher.repository.clone();
    let daemon = Daemon {
        platform: Arc::new(host::Host {
            helper_so,
            options: crate::inject::InjectOptions::default(),
        }),
        source,
        delivery,
        distinct_id: settings.distinct_id.clone(),
        helper_settings,
        selectors,
        mode_label,
        echo_to_terminal,
        file_status,
        poller_status,
        url_status,
        key_status,
        added_store: match (&settings.mode, &args.breakpoints) {
            (Mode::Local, Some(path)) => Some(crate::paths::added_breakpoints_file(path)),
            _ => None,
        },
    };
    let socket = args
        .socket
        .as_deref()
        .map(PathBuf::from)
        .unwrap_or_else(crate::paths::control_socket);
    let ui = args
        .ui
        .or(settings.ui_listen)
        .map(|listen| crate::ui::UiOptions {
            listen,
            read_only: args.ui_read_only || settings.ui_read_only,
        });
    daemon.run(Some(socket), ui).await
}
