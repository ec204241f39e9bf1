//! `run` (the default subcommand): the daemon.
use crate::daemon::{Daemon, Source, host};
use crate::posthog::{Mode, Poller, PollerConfig};
use crate::selectors::{Matcher, Rule, Selectors};
use anyhow::Context;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// Local breakpoints file (TOML, or JSON as PostHog's active-breakpoints endpoint returns),
    /// watched for changes.
    #[arg(long, value_name = "FILE")]
    pub breakpoints: Option<PathBuf>,
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
    let (source, mode_label) = match (&settings.mode, &args.breakpoints) {
        (Mode::PostHog(ph), None) => {
            let poller = Poller::start(PollerConfig::from_settings(ph))?;
            let rx = poller.desired.clone();
            poller_status = Some(poller.status.clone());
            (
                Source::Watch {
                    rx,
                    _guard: Box::new(poller),
                },
                "posthog",
            )
        }
        (Mode::PostHog(_), Some(_)) => anyhow::bail!(
            "--breakpoints is for local mode, but PostHog credentials are configured (breakpoints come from PostHog); remove one of the two"
        ),
        (Mode::Local, Some(path)) => {
            let watch = crate::breakpoints::file::watch_file(path)?;
            let rx = watch.desired.clone();
            file_status = Some(watch.status.clone());
            (
                Source::Watch {
                    rx,
                    _guard: Box::new(watch),
                },
                "local",
            )
        }
        (Mode::Local, None) => (Source::CliOnly, "local"),
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
