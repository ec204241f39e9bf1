//! PostHog: configuration ([`config`]) and the Live Debugger API poller ([`poller`]).
//!
//! How `run` plugs it together (PostHog mode):
//!
//! ```ignore
//! let settings = posthog::config::load(&args.posthog)?;
//! if let posthog::config::Mode::PostHog(ph) = &settings.mode {
//!     let poller = posthog::Poller::start(posthog::PollerConfig::from_settings(ph))?;
//!     // poller.desired: watch::Receiver<DesiredSet>, poller.status: watch::Receiver<PollerStatus>
//!     let sink = delivery::PosthogSink::new(&ph.ingest_host, ph.api_key.clone())?;
//!     let (events, handle) = delivery::Pipeline::start(settings.delivery.clone(), sink)?;
//! }
//! ```
pub mod config;
pub mod poller;

pub use config::{AgentSettings, ConfigError, Mode, PosthogArgs, PosthogSettings, ProjectId};
pub use poller::{Poller, PollerConfig, PollerError, PollerStatus};
