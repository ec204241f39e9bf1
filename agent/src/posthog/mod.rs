//! PostHog: configuration ([`config`]), the Live Debugger API poller ([`poller`]) and the
//! project key's verification ([`keycheck`]).
//!
//! How `run` plugs the pieces together:
//!
//! ```ignore
//! let settings = posthog::config::load(&args.posthog)?;          // flags > env > agent.toml
//! let delivery = delivery::Delivery::start(&settings, args.events_file.as_deref())?;
//! let events = delivery.sender();                                // FanOut: send(Event)
//! let desired: watch::Receiver<DesiredSet> = match &settings.mode {
//!     Mode::PostHog(ph) => posthog::Poller::start(posthog::PollerConfig::from_settings(ph)?)?.desired,
//!     Mode::Local => breakpoints::file::watch_file(&path)?.desired,  // keep the FileWatch alive
//! };
//! // per hit:   events.send(Event::hit_from_json(&settings.distinct_id, &msg, extensions)?)
//! // statuses:  StatusReporter::new(sender, &settings.distinct_id, interval, ext).report(update)
//! // matching:  settings.path_matcher.resolve(&bp, code_object_paths)
//! // SIGTERM:   delivery.shutdown(Duration::from_secs(5)).await
//! ```
pub mod config;
pub mod keycheck;
pub mod poller;

pub use config::{
    AgentSettings, ConfigError, Mode, PosthogArgs, PosthogBreakpoints, PosthogSettings, ProjectId,
};
pub use keycheck::{KeyStatus, check_project_key};
pub use poller::{Poller, PollerConfig, PollerError, PollerStatus};
