//! Wiring for `run`: the sinks the settings ask for, one pipeline (and spool) per sink, and a
//! fan-out sender feeding them all.
//!
//! | settings | sinks (spool subdirectory) |
//! |---|---|
//! | PostHog mode | [`PosthogSink`] (`posthog`) |
//! | `--events-file FILE` | [`JsonLinesSink`] (`events-file`) |
//! | local mode without `--events-file` | [`TerminalSink`] (`terminal`) |
use super::{
    AnySink, DeliveryError, DeliveryStats, Event, EventSender, JsonLinesSink, Pipeline,
    PipelineHandle, PosthogSink, TerminalSink,
};
use crate::posthog::config::{AgentSettings, Mode};
use std::path::Path;
use std::time::Duration;

/// Errors setting the sinks up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The HTTP client for PostHog could not be built.
    #[error("cannot create the HTTP client for PostHog: {0}")]
    Http(#[source] reqwest::Error),
    /// The events file cannot be opened.
    #[error("cannot open the events file {path}: {source}")]
    EventsFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A pipeline could not start (its spool).
    #[error(transparent)]
    Pipeline(#[from] DeliveryError),
}

/// Every running pipeline.
pub struct Delivery {
    pipelines: Vec<(String, EventSender, PipelineHandle)>,
}

/// Sends each event to every pipeline. Cheap to clone.
#[derive(Clone)]
pub struct FanOut {
    senders: Vec<EventSender>,
}

impl FanOut {
    /// Spools `event` in every pipeline. `Ok` when every pipeline accepted it; otherwise the
    /// first error (the others still got it).
    pub fn send(&self, event: Event) -> Result<(), DeliveryError> {
        let mut first_err = None;
        if let Some((last, rest)) = self.senders.split_last() {
            for s in rest {
                if let Err(e) = s.send(event.clone()) {
                    first_err.get_or_insert(e);
                }
            }
            if let Err(e) = last.send(event) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Spools already-encoded events in every pipeline (see [`EventSender::send_encoded`]).
    /// Returns the first error of any pipeline, with how many events it did not take.
    pub fn send_encoded(&self, events: &[&[u8]]) -> Option<(usize, DeliveryError)> {
        let mut first_err = None;
        for s in &self.senders {
            let (n, err) = s.send_encoded(events);
            if let Some(e) = err {
                first_err.get_or_insert((events.len() - n, e));
            }
        }
        first_err
    }
}

impl Delivery {
    /// Starts the pipelines `settings` and `events_file` call for (see the module table).
    pub fn start(settings: &AgentSettings, events_file: Option<&Path>) -> Result<Self, SetupError> {
        let mut sinks: Vec<(&str, AnySink)> = Vec::new();
        if let Mode::PostHog(ph) = &settings.mode {
            let sink =
                PosthogSink::new(&ph.ingest_host, ph.api_key.clone()).map_err(SetupError::Http)?;
            sinks.push(("posthog", AnySink::Posthog(sink)));
        }
        match events_file {
            Some(path) => {
                let sink = JsonLinesSink::open(path).map_err(|source| SetupError::EventsFile {
                    path: path.to_owned(),
                    source,
                })?;
                sinks.push(("events-file", AnySink::JsonLines(sink)));
            }
            None if settings.mode == Mode::Local => {
                sinks.push(("terminal", AnySink::Terminal(TerminalSink::stdout())));
            }
            None => {}
        }
        let mut pipelines = Vec::new();
        for (name, sink) in sinks {
            let (tx, handle) = Pipeline::start(settings.delivery.with_subdir(name), sink)?;
            pipelines.push((name.to_owned(), tx, handle));
        }
        Ok(Self { pipelines })
    }

    /// The producers' sender.
    pub fn sender(&self) -> FanOut {
        FanOut {
            senders: self.pipelines.iter().map(|(_, s, _)| s.clone()).collect(),
        }
    }

    /// Counters per sink, for `status`.
    pub fn stats(&self) -> Vec<(String, DeliveryStats)> {
        self.pipelines
            .iter()
            .map(|(n, _, h)| (n.clone(), h.stats()))
            .collect()
    }

    /// Shuts every pipeline down (SIGTERM): flushes until `deadline`, concurrently.
    pub async fn shutdown(self, deadline: Duration) -> Vec<(String, DeliveryStats)> {
        let mut tasks = Vec::new();
        for (name, tx, handle) in self.pipelines {
            drop(tx);
            tasks.push(tokio::spawn(async move {
                (name, handle.shutdown(deadline).await)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            if let Ok(r) = t.await {
                out.push(r);
            }
        }
        out
    }
}
