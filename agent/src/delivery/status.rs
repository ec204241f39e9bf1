//! Breakpoint status reporting: `$data_breakpoint_status` events, rate-limited per breakpoint.
use super::event::{Event, StatusLimiter, StatusUpdate};
use super::{DeliveryError, Enqueue};
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sends `$data_breakpoint_status` events through a pipeline, at most one per breakpoint per
/// `min_interval`, and only when the status changed (see [`StatusLimiter`]). A status held back
/// by the rate limit is sent by [`StatusReporter::tick`] (or the task of
/// [`StatusReporter::spawn_ticker`]) once its interval has passed.
pub struct StatusReporter {
    limiter: Mutex<StatusLimiter>,
    sender: Box<dyn Enqueue>,
    distinct_id: String,
    extensions: Map<String, Value>,
}

impl StatusReporter {
    /// A reporter sending through `sender` (an [`super::EventSender`] or a
    /// [`super::FanOut`]); `extensions` are added to every event (e.g. `$hostname`).
    pub fn new(
        sender: impl Enqueue,
        distinct_id: &str,
        min_interval: Duration,
        extensions: Map<String, Value>,
    ) -> Arc<Self> {
        Arc::new(Self {
            limiter: Mutex::new(StatusLimiter::new(min_interval)),
            sender: Box::new(sender),
            distinct_id: distinct_id.into(),
            extensions,
        })
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, StatusLimiter> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, update: &StatusUpdate) -> Result<(), DeliveryError> {
        let ev = Event::breakpoint_status(&self.distinct_id, update, self.extensions.clone());
        self.sender.enqueue(ev)
    }

    /// Reports a breakpoint's status. Returns whether an event was sent now.
    pub fn report(&self, update: StatusUpdate) -> Result<bool, DeliveryError> {
        let due = self.limiter().offer(update, Instant::now());
        match due {
            Some(u) => self.send(&u).map(|_| true),
            None => Ok(false),
        }
    }

    /// Forgets a deleted breakpoint.
    pub fn forget(&self, breakpoint_id: &str) {
        self.limiter().forget(breakpoint_id);
    }

    /// Sends the held statuses whose interval has passed; returns how many.
    pub fn tick(&self) -> usize {
        let due = self.limiter().due(Instant::now());
        let mut n = 0;
        for u in &due {
            match self.send(u) {
                Ok(()) => n += 1,
                Err(e) => tracing::debug!("breakpoint status not sent: {e}"),
            }
        }
        n
    }

    /// Calls [`StatusReporter::tick`] every `every` on the current tokio runtime.
    pub fn spawn_ticker(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                me.tick();
            }
        })
    }
}
