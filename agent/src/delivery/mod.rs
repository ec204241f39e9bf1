//! Delivery: from an event to PostHog (or the events file, or the terminal) without losing it.
//!
//! One path serves every sink, so they behave alike:
//!
//! ```text
//!  producers ──EventSender::send──▶ spool (disk, fsync ≤ fsync_interval) ──▶ batcher ──▶ Sink
//!                (size-fitted,                                   (≤ batch_size events,   (PostHog /batch/,
//!                 acknowledged once written)                      ≤ flush_interval,       JSON Lines file,
//!                                                                 ≤ max_request_bytes)    terminal)
//! ```
//!
//! * [`EventSender::send`] fits the event under [`event::MAX_EVENT_BYTES`] (cutting the largest
//!   captured values first) and appends it to the [`spool`]; it returns only after the write, so
//!   an acknowledged event survives `kill -9` of the agent.
//! * The delivery task reads the spool oldest first, forms batches and hands them to the
//!   [`Sink`]. It retries [`SinkError::Retryable`] failures forever with exponential backoff and
//!   full jitter (honouring `Retry-After` as a minimum); the events stay in the spool meanwhile.
//! * [`SinkError::Rejected`] (HTTP 400/413): the batch is **bisected** until the offending events
//!   are isolated; only those are dropped and counted (`dropped_rejected`), the rest is delivered.
//!   This costs O(k log n) extra requests for k bad events, and a 400 should be rare (our own
//!   encoding bug), so saving the good events is worth it.
//! * [`SinkError::Misconfigured`] (HTTP 401/403/404): reported once, clearly; delivery pauses
//!   and re-checks every `misconfigured_recheck` (5 min by default) instead of retrying in a
//!   storm. The events stay in the spool, so fixing the key and restarting delivers them.
//! * Shutdown ([`PipelineHandle::shutdown`]): sends what the spool holds until a deadline; what
//!   is left stays on disk for the next start.
pub mod event;
pub mod setup;
pub mod sinks;
pub mod spool;
pub mod status;

pub use event::{Event, HitError, StatusLimiter, StatusUpdate};
pub use setup::{Delivery, FanOut, SetupError};
pub use sinks::{AnySink, JsonLinesSink, PosthogSink, TerminalSink};
pub use status::StatusReporter;

use spool::{Position, Spool, SpoolError, SpoolReader};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Delivery settings. [`DeliveryConfig::new`] gives the documented defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryConfig {
    /// Spool directory (default [`crate::paths::spool_dir`]). One agent per directory.
    pub spool_dir: PathBuf,
    /// Most bytes the spool may hold on disk (default 256 MiB); beyond, new events are dropped.
    pub spool_max_bytes: u64,
    /// Size at which the spool starts a new segment (default 8 MiB).
    pub segment_bytes: u64,
    /// Longest time between an append and its `fdatasync` (default 100 ms).
    pub fsync_interval: Duration,
    /// A batch is sent at the latest this long after its first event was read (default 1 s).
    pub flush_interval: Duration,
    /// A batch is sent as soon as it holds this many events (default 100).
    pub batch_size: usize,
    /// Largest request body before compression (default 5 MiB).
    pub max_request_bytes: usize,
    /// Largest encoded event (default 900 KiB).
    pub max_event_bytes: usize,
    /// First retry delay (default 500 ms); doubles per failed attempt.
    pub retry_initial: Duration,
    /// Longest retry delay (default 60 s).
    pub retry_max: Duration,
    /// Delay between re-checks while the sink is misconfigured (default 5 min).
    pub misconfigured_recheck: Duration,
}

impl DeliveryConfig {
    /// The defaults, with the given spool directory.
    pub fn new(spool_dir: PathBuf) -> Self {
        Self {
            spool_dir,
            spool_max_bytes: 256 * 1024 * 1024,
            segment_bytes: 8 * 1024 * 1024,
            fsync_interval: Duration::from_millis(100),
            flush_interval: Duration::from_secs(1),
            batch_size: 100,
            max_request_bytes: 5 * 1024 * 1024,
            max_event_bytes: event::MAX_EVENT_BYTES,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(60),
            misconfigured_recheck: Duration::from_secs(300),
        }
    }

    /// The same settings with the spool in `spool_dir/<name>`: one pipeline per sink (e.g.
    /// `posthog` and `events-file` when both are wanted), each with its own spool.
    pub fn with_subdir(&self, name: &str) -> Self {
        Self {
            spool_dir: self.spool_dir.join(name),
            ..self.clone()
        }
    }
}

/// Live counters (shared, lock-free); [`PipelineHandle::stats`] snapshots them.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events accepted into the spool since start.
    pub accepted: AtomicU64,
    /// Events in the spool not yet delivered (including those left by a previous run).
    pub queued: AtomicU64,
    /// Events the sink accepted.
    pub delivered: AtomicU64,
    /// Failed delivery attempts that will be retried.
    pub retried: AtomicU64,
    /// Events dropped because the spool was full.
    pub dropped_spool_full: AtomicU64,
    /// Events dropped because the sink rejected them (HTTP 400 after bisecting).
    pub dropped_rejected: AtomicU64,
    /// Events dropped because they could not be made small enough.
    pub dropped_oversize: AtomicU64,
    /// Torn or corrupt spool records skipped (left by a crash).
    pub corrupt: AtomicU64,
    /// Bytes the spool holds on disk.
    pub spool_bytes: AtomicU64,
    /// Events whose captured values were cut to fit.
    pub truncated: AtomicU64,
}

/// A snapshot of the counters, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryStats {
    /// See [`Counters::accepted`].
    pub accepted: u64,
    /// See [`Counters::queued`].
    pub queued: u64,
    /// See [`Counters::delivered`].
    pub delivered: u64,
    /// See [`Counters::retried`].
    pub retried: u64,
    /// See [`Counters::dropped_spool_full`].
    pub dropped_spool_full: u64,
    /// See [`Counters::dropped_rejected`].
    pub dropped_rejected: u64,
    /// See [`Counters::dropped_oversize`].
    pub dropped_oversize: u64,
    /// See [`Counters::corrupt`].
    pub corrupt: u64,
    /// See [`Counters::spool_bytes`].
    pub spool_bytes: u64,
    /// See [`Counters::truncated`].
    pub truncated: u64,
    /// The last delivery error, cleared by the next success.
    pub last_error: Option<String>,
}

impl Counters {
    fn snapshot(&self, last_error: Option<String>) -> DeliveryStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DeliveryStats {
            accepted: l(&self.accepted),
            queued: l(&self.queued),
            delivered: l(&self.delivered),
            retried: l(&self.retried),
            dropped_spool_full: l(&self.dropped_spool_full),
            dropped_rejected: l(&self.dropped_rejected),
            dropped_oversize: l(&self.dropped_oversize),
            corrupt: l(&self.corrupt),
            spool_bytes: l(&self.spool_bytes),
            truncated: l(&self.truncated),
            last_error,
        }
    }
}

/// Why a sink could not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Temporary (5xx, 408, 429, network, I/O): retry later, no sooner than `retry_after`.
    #[error("{reason}")]
    Retryable {
        /// What happened.
        reason: String,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The batch itself is bad (HTTP 400/413): retrying it unchanged cannot succeed.
    #[error("{reason}")]
    Rejected {
        /// What happened.
        reason: String,
    },
    /// The sink's settings are wrong (HTTP 401/403/404): nothing will succeed until fixed.
    #[error("{reason}")]
    Misconfigured {
        /// What happened and what to fix.
        reason: String,
    },
}

/// Where batches go. Implementations: [`PosthogSink`], [`JsonLinesSink`], [`TerminalSink`],
/// and [`AnySink`] to choose at run time.
pub trait Sink: Send + 'static {
    /// Short name for logs (`posthog`, `events-file`, `terminal`).
    fn name(&self) -> &str;
    /// Delivers a batch, all or nothing. Each item is one event's JSON, as [`Event::to_json`]
    /// writes it (the spool holds events encoded; sinks that send JSON copy the bytes through).
    fn deliver(&mut self, batch: &[Vec<u8>]) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Errors starting the pipeline or accepting an event.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The spool could not be opened or written (includes a full spool).
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The event is too large even after truncation (dropped, counted).
    #[error(transparent)]
    TooLarge(#[from] event::TooLarge),
    /// The pipeline was shut down.
    #[error("the delivery pipeline is shut down")]
    Closed,
}

/// Anything events can be handed to: [`EventSender`] (one pipeline) or [`FanOut`] (all).
pub trait Enqueue: Send + Sync + 'static {
    /// Accepts an event; `Ok` means it is durable (spooled).
    fn enqueue(&self, event: Event) -> Result<(), DeliveryError>;
}

impl Enqueue for EventSender {
    fn enqueue(&self, event: Event) -> Result<(), DeliveryError> {
        self.send(event)
    }
}

impl Enqueue for FanOut {
    fn enqueue(&self, event: Event) -> Result<(), DeliveryError> {
        self.send(event)
    }
}

/// The producers' side: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct EventSender {
    spool: Arc<Spool>,
    counters: Arc<Counters>,
    max_event_bytes: usize,
    closed: watch::Receiver<bool>,
}

impl EventSender {
    /// Fits `event` under the size limit and appends it to the spool. `Ok` means the event is
    /// durable against a crash of the agent. This is a short blocking file write (no network).
    pub fn send(&self, event: Event) -> Result<(), DeliveryError> {
        if *self.closed.borrow() {
            return Err(DeliveryError::Closed);
        }
        let bytes = self.fit(event)?;
        self.spool.append(&bytes)?;
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Appends already-encoded events (each exactly as [`Event::to_json`] writes one, e.g.
    /// [`event::encode_hit`]'s) with one write: the way a burst of hits is spooled. An event
    /// over the size limit is decoded and fitted first (see [`event::fit_event`]). Returns how
    /// many became durable, and the first error met: the events that did not (too large even
    /// when fitted, or the spool full or failing) were dropped and counted.
    pub fn send_encoded(&self, events: &[&[u8]]) -> (usize, Option<DeliveryError>) {
        if events.is_empty() {
            return (0, None);
        }
        if *self.closed.borrow() {
            return (0, Some(DeliveryError::Closed));
        }
        let mut fitted: Vec<std::borrow::Cow<'_, [u8]>> = Vec::with_capacity(events.len());
        let mut first_err = None;
        for e in events {
            if e.len() <= self.max_event_bytes {
                fitted.push(std::borrow::Cow::Borrowed(*e));
                continue;
            }
            let parsed = match serde_json::from_slice::<Event>(e) {
                Ok(ev) => self.fit(ev),
                Err(source) => {
                    self.counters
                        .dropped_oversize
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "an oversized event is not a readable event ({source}); dropped"
                    );
                    continue;
                }
            };
            match parsed {
                Ok(b) => fitted.push(std::borrow::Cow::Owned(b)),
                Err(err) => {
                    first_err.get_or_insert(err);
                }
            }
        }
        let refs: Vec<&[u8]> = fitted.iter().map(|c| c.as_ref()).collect();
        let (n, err) = self.spool.append_many(&refs);
        self.counters
            .accepted
            .fetch_add(n as u64, Ordering::Relaxed);
        (n, err.map(DeliveryError::from).or(first_err))
    }

    /// The event's encoding, cut to the size limit (counted when cut or dropped).
    fn fit(&self, mut event: Event) -> Result<Vec<u8>, DeliveryError> {
        let had_marker = event.properties.contains_key("$truncated");
        let bytes = match event::fit_event(&mut event, self.max_event_bytes) {
            Ok(b) => b,
            Err(e) => {
                self.counters
                    .dropped_oversize
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{e}; dropped");
                return Err(e.into());
            }
        };
        if !had_marker && event.properties.contains_key("$truncated") {
            self.counters.truncated.fetch_add(1, Ordering::Relaxed);
        }
        Ok(bytes)
    }
}

/// Controls a running pipeline.
pub struct PipelineHandle {
    counters: Arc<Counters>,
    last_error: Arc<Mutex<Option<String>>>,
    shutdown_tx: watch::Sender<Option<Instant>>,
    closed_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    fsync_task: tokio::task::JoinHandle<()>,
    spool: Arc<Spool>,
}

impl PipelineHandle {
    /// A snapshot of the counters.
    pub fn stats(&self) -> DeliveryStats {
        let err = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.counters.snapshot(err)
    }

    /// Stops accepting events, sends what the spool holds until `deadline` passes (without
    /// waiting for the flush interval), fsyncs, and returns the final counters. Undelivered
    /// events stay in the spool for the next start. The spool directory's lock is released once
    /// every [`EventSender`] is dropped too.
    pub async fn shutdown(self, deadline: Duration) -> DeliveryStats {
        let _ = self.closed_tx.send(true);
        let _ = self.shutdown_tx.send(Some(Instant::now() + deadline));
        let mut task = self.task;
        if tokio::time::timeout(deadline + Duration::from_millis(500), &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
        self.fsync_task.abort();
        let _ = self.fsync_task.await;
        self.spool.sync();
        let err = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.counters.snapshot(err)
    }
}

/// The delivery pipeline.
pub struct Pipeline;

impl Pipeline {
    /// Opens the spool and starts the delivery and fsync tasks on the current tokio runtime.
    /// Events left in the spool by a previous run are delivered first.
    pub fn start<S: Sink>(
        config: DeliveryConfig,
        sink: S,
    ) -> Result<(EventSender, PipelineHandle), DeliveryError> {
        let counters = Arc::new(Counters::default());
        let spool = Spool::open(
            &config.spool_dir,
            config.spool_max_bytes,
            config.segment_bytes,
            counters.clone(),
        )?;
        let (closed_tx, closed_rx) = watch::channel(false);
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let last_error = Arc::new(Mutex::new(None));
        let sender = EventSender {
            spool: spool.clone(),
            counters: counters.clone(),
            max_event_bytes: config.max_event_bytes,
            closed: closed_rx,
        };
        let fsync_spool = spool.clone();
        let fsync_every = config.fsync_interval;
        let fsync_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(fsync_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let s = fsync_spool.clone();
                let _ = tokio::task::spawn_blocking(move || s.sync()).await;
            }
        });
        let mut config = config;
        config.batch_size = config.batch_size.max(1);
        config.max_request_bytes = config.max_request_bytes.max(1);
        let worker = Worker {
            reader: spool.reader(),
            spool: spool.clone(),
            sink,
            config,
            counters: counters.clone(),
            last_error: last_error.clone(),
            shutdown: shutdown_rx,
            held: None,
            skipped: None,
            misconfigured_reported: false,
        };
        let task = tokio::spawn(worker.run());
        Ok((
            sender,
            PipelineHandle {
                counters,
                last_error,
                shutdown_tx,
                closed_tx,
                task,
                fsync_task,
                spool,
            },
        ))
    }
}

/// Exponential backoff with full jitter: a random delay in `[d/2, d]` with
/// `d = min(max, initial · 2^attempt)`.
pub fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let d = initial
        .checked_mul(1u32 << attempt.min(20))
        .unwrap_or(max)
        .min(max);
    let half = d / 2;
    half + half.mul_f64(random_unit())
}

/// `interval` ±10 %, at random: polls of a fleet started together spread out.
pub fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * random_unit())
}

/// A random number in `[0, 1)` (from the OS RNG via uuid v4; no extra dependency).
fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// Retry delay after a retryable failure: the backoff, or `Retry-After` if that is longer.
fn retry_delay(cfg: &DeliveryConfig, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let b = backoff(cfg.retry_initial, cfg.retry_max, attempt);
    match retry_after {
        // Honour the server, but do not let a hostile value park us for days.
        Some(ra) => b.max(ra.min(Duration::from_secs(3600))),
        None => b,
    }
}

/// Resolves when shutdown is requested; never, if the handle is gone without asking.
async fn shutdown_changed(rx: &mut watch::Receiver<Option<Instant>>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

struct Worker<S: Sink> {
    spool: Arc<Spool>,
    reader: SpoolReader,
    sink: S,
    config: DeliveryConfig,
    counters: Arc<Counters>,
    last_error: Arc<Mutex<Option<String>>>,
    shutdown: watch::Receiver<Option<Instant>>,
    /// A record read but not fitting in the previous batch.
    held: Option<(Vec<u8>, Position)>,
    misconfigured_reported: bool,
    /// Records skipped as unreadable since the last commit: the position after the last one and
    /// how many. Committed with the next batch (committing earlier would also mark the
    /// undelivered events of the batch being built as done).
    skipped: Option<(Position, u64)>,
}

enum Wait {
    Ready,
    Deadline,
}

impl<S: Sink> Worker<S> {
    fn deadline(&self) -> Option<Instant> {
        *self.shutdown.borrow()
    }

    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// Sleeps `d`, or less when shutdown's deadline comes first. Returns `Deadline` then.
    async fn sleep(&mut self, d: Duration) -> Wait {
        let until = Instant::now() + d;
        loop {
            if let Some(dl) = self.deadline()
                && dl <= until
            {
                tokio::time::sleep_until(dl).await;
                return Wait::Deadline;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return Wait::Ready,
                _ = shutdown_changed(&mut self.shutdown) => {}
            }
        }
    }

    fn next_event(&mut self) -> Option<(Vec<u8>, Position)> {
        if let Some(h) = self.held.take() {
            return Some(h);
        }
        loop {
            match self.reader.next_record() {
                Ok(Some((bytes, pos))) => {
                    if looks_like_event(&bytes) {
                        return Some((bytes, pos));
                    }
                    // A record with a valid checksum that is not an event: written by an
                    // incompatible version. Skip it, counted.
                    self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                    let n = self.skipped.map_or(0, |(_, n)| n);
                    self.skipped = Some((pos, n + 1));
                    tracing::warn!("skipping a spool record that is not an event");
                }
                Ok(None) => return None,
                Err(e) => {
                    self.set_error(Some(e.to_string()));
                    tracing::error!("{e}");
                    return None;
                }
            }
        }
    }

    async fn run(mut self) {
        loop {
            // Collect a batch.
            let mut batch: Vec<Vec<u8>> = Vec::new();
            let mut bytes = 0usize;
            let mut end: Option<Position> = None;
            let mut first_at: Option<Instant> = None;
            loop {
                if batch.len() >= self.config.batch_size {
                    break;
                }
                match self.next_event() {
                    Some((ev, pos)) => {
                        let len = ev.len();
                        // 1 KiB for the request's envelope (api_key, sent_at, brackets).
                        let budget = self.config.max_request_bytes.saturating_sub(1024);
                        if !batch.is_empty() && bytes + len + 1 > budget {
                            self.held = Some((ev, pos));
                            break;
                        }
                        bytes += len + 1;
                        batch.push(ev);
                        end = Some(pos);
                        first_at.get_or_insert_with(Instant::now);
                    }
                    None => {
                        if batch.is_empty()
                            && let Some((pos, n)) = self.skipped.take()
                        {
                            self.spool.commit(pos, n);
                        }
                        let shutting_down = self.deadline().is_some();
                        if shutting_down {
                            if batch.is_empty() {
                                return;
                            }
                            break;
                        }
                        let flush_at = first_at.map(|t| t + self.config.flush_interval);
                        if flush_at.is_some_and(|t| t <= Instant::now()) {
                            break;
                        }
                        let appended = self.spool.appended.notified();
                        tokio::select! {
                            _ = appended => {}
                            _ = async {
                                match flush_at {
                                    Some(t) => tokio::time::sleep_until(t).await,
                                    None => std::future::pending::<()>().await,
                                }
                            } => {}
                            _ = shutdown_changed(&mut self.shutdown) => {}
                        }
                    }
                }
            }
            let Some(mut end) = end else { continue };
            let mut n = batch.len() as u64;
            if !self.deliver(batch).await {
                // Shutdown deadline reached: the batch stays in the spool.
                return;
            }
            if let Some((pos, k)) = self.skipped.take() {
                end = end.max(pos);
                n += k;
            }
            self.spool.commit(end, n);
        }
    }

    /// Delivers a batch, bisecting rejected ones. Returns false when the shutdown deadline
    /// passed before it was delivered.
    async fn deliver(&mut self, batch: Vec<Vec<u8>>) -> bool {
        let mut stack = vec![batch];
        while let Some(b) = stack.pop() {
            let mut attempt = 0u32;
            loop {
                if self.deadline().is_some_and(|d| d <= Instant::now()) {
                    return false;
                }
                match self.sink.deliver(&b).await {
                    Ok(()) => {
                        self.counters
                            .delivered
                            .fetch_add(b.len() as u64, Ordering::Relaxed);
                        if self.misconfigured_reported || attempt > 0 {
                            tracing::info!(sink = self.sink.name(), "delivery works again");
                        }
                        self.misconfigured_reported = false;
                        self.set_error(None);
                        break;
                    }
                    Err(SinkError::Retryable {
                        reason,
                        retry_after,
                    }) => {
                        self.counters.retried.fetch_add(1, Ordering::Relaxed);
                        let delay = retry_delay(&self.config, attempt, retry_after);
                        if attempt == 0 {
                            tracing::warn!(
                                sink = self.sink.name(),
                                "delivery failed ({reason}); events stay in the spool, retrying \
                                 with backoff"
                            );
                        } else {
                            tracing::debug!(sink = self.sink.name(), ?delay, "retry: {reason}");
                        }
                        self.set_error(Some(reason));
                        attempt = attempt.saturating_add(1);
                        if let Wait::Deadline = self.sleep(delay).await {
                            return false;
                        }
                    }
                    Err(SinkError::Rejected { reason }) => {
                        if b.len() > 1 {
                            let mut first = b;
                            let second = first.split_off(first.len() / 2);
                            stack.push(second);
                            stack.push(first);
                        } else {
                            self.counters
                                .dropped_rejected
                                .fetch_add(b.len() as u64, Ordering::Relaxed);
                            tracing::warn!(
                                sink = self.sink.name(),
                                uuid = %b.first().and_then(|e| event_uuid(e)).unwrap_or_default(),
                                "the sink rejected an event ({reason}); dropped"
                            );
                            self.set_error(Some(reason));
                        }
                        break;
                    }
                    Err(SinkError::Misconfigured { reason }) => {
                        self.counters.retried.fetch_add(1, Ordering::Relaxed);
                        if !self.misconfigured_reported {
                            tracing::error!(
                                sink = self.sink.name(),
                                "{reason}. Delivery is paused (events stay in the spool) and \
                                 re-checked every {:?}",
                                self.config.misconfigured_recheck
                            );
                            self.misconfigured_reported = true;
                        }
                        self.set_error(Some(reason));
                        let recheck = self.config.misconfigured_recheck;
                        if let Wait::Deadline = self.sleep(recheck).await {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }
}

/// Whether a spool record is an encoded event: every encoder (serde for [`Event`],
/// [`event::encode_hit`]) starts with its `event` field. A cheap check instead of a parse: the
/// record's checksum already vouches for its bytes; this only tells events from records of an
/// incompatible version.
fn looks_like_event(bytes: &[u8]) -> bool {
    bytes.starts_with(b"{\"event\":") && bytes.ends_with(b"}")
}

/// The `uuid` of an encoded event, for logs.
fn event_uuid(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        uuid: String,
    }
    serde_json::from_slice::<Id>(bytes).ok().map(|i| i.uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(5);
        for a in 0..30 {
            let d = backoff(i, m, a);
            let cap = i.saturating_mul(1 << a.min(20)).min(m);
            assert!(d >= cap / 2 && d <= cap, "attempt {a}: {d:?}");
        }
        let cfg = DeliveryConfig::new("/x".into());
        assert!(retry_delay(&cfg, 0, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
    }
}
