//! The daemon (`run`): keeps every debuggable CPython process's helper in sync with the desired
//! breakpoint set, and turns what the helpers emit into events.
//!
//! * [`registry`]: the processes the agent knows and their attach state (pure decisions over a
//!   [`Platform`], tested with a fake).
//! * [`tracker`]: per-breakpoint status and counters folded across processes.
//! * [`host`]: the real [`Platform`] (/proc, CPython introspection, ptrace injection, the
//!   control block).
//!
//! Concurrency: one tokio task owns the registry, the eBPF object and the assembler
//! ([`Daemon::run`]'s loop). Injections run on the blocking pool and report back through a
//! channel; the control socket reads snapshots from [`Shared`] and sends mutations as
//! [`Command`]s.
mod added;
pub mod host;
pub mod registry;
mod settings;
mod sources;
pub mod tracker;

pub use settings::{HelperSettings, control_json};

use crate::assembler::{Assembler, Limits, Message};
use crate::bpf::Bpf;
use crate::bpf::ring::{AsyncRingReader, EmitChunk, FrameEvent, ProcEvent};
use crate::breakpoints::{Breakpoint, DesiredSet};
use crate::delivery::event::{HIT_EVENT, LOG_EVENT, encode_event};
use crate::delivery::{Delivery, Event, FanOut, StatusReporter, StatusUpdate};
use libdebugger_common::bpf::GOVERNOR_TRIPPED_CODE;
use libdebugger_common::helper_abi::message_kind;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use registry::{AttachError, AttachState, Platform, ProcessInfo, Registry};

/// A link to one injected helper: publishes the desired set through its control block.
pub trait HelperLink: Send {
    /// Publishes `data` (the control JSON); returns the generation written.
    fn publish(&mut self, data: &[u8]) -> Result<u64, String>;
    /// The last generation the helper applied.
    fn applied(&self) -> Result<u64, String>;
    /// The helper's mapping in the target, for the `ldbg_emit` uprobe (a path the agent can
    /// open, e.g. `/proc/<pid>/map_files/<range>`).
    fn emit_target(&self) -> Option<PathBuf>;
    /// The file offset of `ldbg_emit` in [`HelperLink::emit_target`], if known (saves the
    /// probe's attach a read of the whole library).
    fn emit_offset(&self) -> Option<u64> {
        None
    }
}

/// Merges the source's set with breakpoints added from the CLI (CLI ids win).
pub fn merge(source: &DesiredSet, cli: &BTreeMap<String, Breakpoint>) -> DesiredSet {
    let mut out = source.clone();
    for (id, b) in cli {
        out.breakpoints.insert(id.clone(), b.clone());
    }
    out
}

/// What the daemon exposes to `status` and `break list`, refreshed by the owner task.
#[derive(Default)]
pub struct Shared {
    pub status: Mutex<Value>,
    pub breakpoints: Mutex<Value>,
    /// Ids of the breakpoints added from the CLI or the web UI (the ones `break rm` may remove).
    pub cli_ids: Mutex<Vec<String>>,
}

/// Requests from the control socket to the owner task.
pub enum Command {
    BreakAdd(Breakpoint, oneshot::Sender<Result<Value, String>>),
    BreakRm(String, oneshot::Sender<Result<Value, String>>),
    /// A question for one process's helper (see [`crate::control::ControlHandler::sources`]).
    Sources(sources::Question, oneshot::Sender<Result<Value, String>>),
}

/// Handler of the control socket: answers reads from [`Shared`], forwards mutations.
pub struct ControlBridge {
    pub shared: Arc<Shared>,
    pub commands: mpsc::Sender<Command>,
    pub events: broadcast::Sender<Arc<Value>>,
}

impl ControlBridge {
    fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<Value, String>>) -> Command,
    ) -> Result<Value, String> {
        let (tx, rx) = oneshot::channel();
        let gone = || "the agent is shutting down".to_string();
        // The socket handler runs on a tokio worker thread: block_in_place lets it wait.
        tokio::task::block_in_place(|| {
            self.commands.blocking_send(make(tx)).map_err(|_| gone())?;
            rx.blocking_recv().map_err(|_| gone())?
        })
    }
}

impl crate::control::ControlHandler for ControlBridge {
    fn break_add(
        &self,
        file: String,
        line: u32,
        condition: Option<String>,
        id: Option<String>,
    ) -> Result<Value, String> {
        let id = id.unwrap_or_else(|| Breakpoint::derived_id(&file, line));
        let bp = Breakpoint {
            id,
            file,
            line,
            condition,
            enabled: true,
            source: "cli".into(),
            ..Default::default()
        };
        self.ask(|tx| Command::BreakAdd(bp, tx))
    }
    fn log_add(&self, bp: Breakpoint) -> Result<Value, String> {
        self.ask(|tx| Command::BreakAdd(bp, tx))
    }
    fn break_list(&self) -> Value {
        self.shared.breakpoints.lock().clone()
    }
    fn break_rm(&self, id: &str) -> Result<Value, String> {
        let id = id.to_string();
        self.ask(|tx| Command::BreakRm(id, tx))
    }
    fn status(&self) -> Value {
        self.shared.status.lock().clone()
    }
    fn subscribe(&self) -> broadcast::Receiver<Arc<Value>> {
        self.events.subscribe()
    }
    fn editable(&self) -> Vec<String> {
        self.shared.cli_ids.lock().clone()
    }
    fn sources(&self, pid: i32, file: Option<String>, attach: bool) -> Result<Value, String> {
        let q = sources::Question { pid, file, attach };
        self.ask(|tx| Command::Sources(q, tx))
    }
}

/// How often the owner task rescans /proc for processes it missed (the eBPF lifecycle
/// tracepoints report exec/fork/exit at once; this is the safety net).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(2);
/// The same with the lifecycle tracepoints attached: a rescan reads every process's
/// `/proc/<pid>/stat`, which costs an idle agent more than everything else it does.
pub const RESCAN_INTERVAL_WITH_EBPF: Duration = Duration::from_secs(10);
/// How often the kernel's per-breakpoint entry counts are read (a walk of the whole
/// `CODE_COUNTS` map). The governors are checked on every tick.
const ENTRY_COUNTS_INTERVAL: Duration = Duration::from_secs(1);
/// Longest time the `status` snapshot goes without a refresh: changes refresh it at once; this
/// only bounds how stale the ring and delivery counters may get.
const SHARED_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// A new (exec'd or forked) process is examined after these delays: the dynamic loader maps
/// libpython only after exec returns, so an early look may not see Python yet.
const EXAMINE_DELAYS: [Duration; 4] = [
    Duration::from_millis(30),
    Duration::from_millis(150),
    Duration::from_millis(600),
    Duration::from_millis(2000),
];
/// Frame entries per second above which the frame-entry probe is detached from a process.
///
/// Every frame entry of a traced process (of any code object, from C) takes the uprobe's trap,
/// about 0.5 µs (B7), so this bounds what the entry counts may cost a process that is not busy:
/// at most ~1 ms of CPU per second (0.1 % of a core). A busier process pays for about this many
/// entries once, then the probe is detached (the kernel wakes the agent on the trip, see
/// [`GOVERNOR_TRIPPED_CODE`]) and its breakpoints' `entries` stop counting; line hits are not
/// affected. Measured before this bound (20,000/s, detach at the next 250 ms tick): a
/// request-handler workload entering ~450,000 frames/s from C paid 10–35 % of a 0.25 s run
/// (B1 on 3.11 with the agent attached).
pub const ENTRIES_BUDGET_PER_SEC: u32 = 2_000;
/// Least time between two `$data_breakpoint_status` events of one breakpoint (a status that
/// changes faster is sent once the interval has passed, latest value only).
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Injections run at the same time at most. Each takes a blocking-pool thread and its own
/// injector thread (with a malloc arena that outlives it): 50 processes attached at once left
/// the agent with 90 threads and its RSS with their arenas; with 2 cores more in parallel is
/// not faster anyway.
const MAX_INJECTIONS_IN_FLIGHT: usize = 4;
/// How long SIGTERM waits for helpers to confirm they removed their breakpoints.
const DISARM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long SIGTERM waits for events to be delivered.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the desired set comes from.
pub enum Source {
    /// A watched file or the PostHog poller: a watch channel (kept alive by `_guard`).
    Watch {
        rx: watch::Receiver<DesiredSet>,
        _guard: Box<dyn Send>,
    },
    /// Only breakpoints added from the CLI.
    CliOnly,
}

/// Everything [`Daemon::run`] needs.
pub struct Daemon {
    pub platform: Arc<dyn Platform>,
    pub source: Source,
    pub delivery: Delivery,
    pub distinct_id: String,
    /// Settings passed to every helper (`settings` of the control JSON).
    pub helper_settings: HelperSettings,
    pub selectors: crate::selectors::Matcher,
    pub mode_label: &'static str,
    /// Also show hits on the terminal (stdout is a terminal and events do not go to stdout).
    pub echo_to_terminal: bool,
    /// The watched breakpoints file's load status (local mode with `--breakpoints`), shown in
    /// `status` so a malformed file is visible where the user looks.
    pub file_status: Option<watch::Receiver<crate::breakpoints::file::FileStatus>>,
    /// Health of the PostHog poller, for `status` (PostHog mode).
    pub poller_status: Option<watch::Receiver<crate::posthog::PollerStatus>>,
    /// Health of the `--breakpoints-url` source.
    pub url_status: Option<watch::Receiver<crate::breakpoints::url::UrlStatus>>,
    /// Whether PostHog knows the project API key (PostHog mode).
    pub key_status: Option<watch::Receiver<crate::posthog::KeyStatus>>,
    /// Where breakpoints added with `break add` or the web UI are kept across restarts (local
    /// mode with a breakpoints file); None keeps them in memory only.
    pub added_store: Option<PathBuf>,
}

enum Injection {
    Done(i32, Result<Box<dyn HelperLink>, AttachError>),
    /// Not injected: the process debugs itself in process (the reason).
    InProcess(i32, String),
}

/// When each step of attaching one process happened, logged once (debug, "attach timeline")
/// when its first breakpoint is armed or the attach failed: where B4's latency goes.
struct Timeline {
    /// The later of: the breakpoint set changed, the process became known.
    start: Instant,
    marks: Vec<(&'static str, Instant)>,
}

impl Timeline {
    fn new(start: Instant) -> Self {
        Self {
            start,
            marks: Vec::with_capacity(6),
        }
    }

    fn mark(&mut self, step: &'static str) {
        self.marks.push((step, Instant::now()));
    }

    /// `step=ms step=ms …`, milliseconds since `start`.
    fn render(&self) -> String {
        self.marks
            .iter()
            .map(|(step, at)| {
                format!(
                    "{step}={:.1}",
                    at.duration_since(self.start).as_secs_f64() * 1e3
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

struct Owner {
    platform: Arc<dyn Platform>,
    registry: Registry,
    tracker: tracker::Tracker,
    bpf: Option<Bpf>,
    bpf_error: Option<String>,
    assembler: Assembler,
    cli_set: BTreeMap<String, Breakpoint>,
    source_set: DesiredSet,
    desired: DesiredSet,
    helper_settings: HelperSettings,
    control: Vec<u8>,
    sender: FanOut,
    /// `$data_breakpoint_status` events, at most one per breakpoint per [`STATUS_INTERVAL`].
    statuses: Arc<StatusReporter>,
    distinct_id: String,
    /// The host name as a JSON string (`$hostname` of every hit).
    hostname_json: String,
    events: broadcast::Sender<Arc<Value>>,
    shared: Arc<Shared>,
    inject_tx: mpsc::UnboundedSender<Injection>,
    /// Emit uprobe attached per helper mapping (one per injected process tree).
    emit_links: HashMap<i32, crate::bpf::EmitLink>,
    /// Processes to (re)examine: pid → attempt index and due time.
    examine_queue: BTreeMap<i32, (usize, Instant)>,
    last_rescan: Instant,
    delivery_errors: u64,
    mode_label: &'static str,
    echo_to_terminal: bool,
    governor_detached: BTreeMap<i32, u64>,
    file_status: Option<watch::Receiver<crate::breakpoints::file::FileStatus>>,
    poller_status: Option<watch::Receiver<crate::posthog::PollerStatus>>,
    url_status: Option<watch::Receiver<crate::breakpoints::url::UrlStatus>>,
    key_status: Option<watch::Receiver<crate::posthog::KeyStatus>>,
    /// The delivery pipelines (taken at shutdown to flush them).
    delivery: Option<Delivery>,
    /// Hits encoded from the ring-buffer batch being handled, spooled together at its end.
    hits: Vec<Vec<u8>>,
    /// When the desired set last changed.
    set_changed_at: Instant,
    /// Attach timelines of processes being attached, until armed (debug log).
    timelines: HashMap<i32, Timeline>,
    /// When the kernel's entry counts were last read.
    last_entry_counts: Instant,
    /// When `shared` was last refreshed.
    last_shared: Instant,
    /// The lifecycle ring buffer is read (exec/fork/exit arrive as they happen).
    proc_events_live: bool,
    /// Something `status` shows beyond counters changed (processes, attach states, the
    /// desired set): the next [`Owner::refresh_shared`] rebuilds the snapshot at once. Counter
    /// updates alone (STATS messages, hits) refresh it at most every
    /// [`SHARED_REFRESH_INTERVAL`]: 50 helpers' periodic STATS otherwise rebuilt the whole
    /// snapshot five times a second.
    shared_stale: bool,
    /// Questions to helpers about their source files (the web UI), and the processes the
    /// helper is loaded into for them although no breakpoint exists.
    sources: sources::Questions,
    /// See [`Daemon::added_store`].
    added_store: Option<PathBuf>,
    /// The last `STATUS=` line sent to the service manager ([`crate::service`]).
    service_status: String,
}

impl Daemon {
    /// Runs until SIGTERM/SIGINT; then removes every breakpoint from every process and flushes.
    /// `ui`: also serve the web UI over the same operations as the control socket.
    pub async fn run(
        self,
        control_socket: Option<PathBuf>,
        ui: Option<crate::ui::UiOptions>,
    ) -> anyhow::Result<()> {
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared::default());
        let (cmd_tx, mut cmd_rx) = mpsc::channel(16);
        let bridge: Arc<dyn crate::control::ControlHandler> = Arc::new(ControlBridge {
            shared: shared.clone(),
            commands: cmd_tx,
            events: events.clone(),
        });
        let server = match &control_socket {
            Some(path) => Some(crate::control::serve(path, bridge.clone())?),
            None => None,
        };
        // A UI that cannot be served is an error in the log; the agent debugs on without it.
        let ui_server = match &ui {
            Some(opts) => {
                match crate::ui::serve(opts, bridge.clone(), &crate::paths::ui_url_file()).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!("the web UI is not served: {e}");
                        None
                    }
                }
            }
            None => None,
        };
        drop(bridge);
        let (inject_tx, mut inject_rx) = mpsc::unbounded_channel();
        let (bpf, bpf_error) = match load_bpf() {
            Ok(b) => (Some(b), None),
            Err(e) => {
                tracing::error!(
                    "eBPF is unavailable: {e:#}. Hits cannot be carried out of processes; run `libdebugger-agent doctor`"
                );
                (None, Some(format!("{e:#}")))
            }
        };
        let hostname = crate::posthog::config::hostname();
        let mut owner = Owner {
            platform: self.platform,
            registry: Registry::new(self.selectors),
            tracker: tracker::Tracker::default(),
            bpf,
            bpf_error,
            assembler: Assembler::new(Limits::default()),
            source_set: DesiredSet::default(),
            desired: DesiredSet::default(),
            helper_settings: self.helper_settings,
            control: Vec::new(),
            sender: self.delivery.sender(),
            statuses: {
                let mut ext = Map::new();
                ext.insert("$hostname".into(), json!(hostname));
                ext.insert("$process_person_profile".into(), json!(false));
                StatusReporter::new(
                    self.delivery.sender(),
                    &self.distinct_id,
                    STATUS_INTERVAL,
                    ext,
                )
            },
            distinct_id: self.distinct_id,
            hostname_json: Value::String(hostname).to_string(),
            events,
            shared,
            inject_tx,
            emit_links: HashMap::new(),
            examine_queue: BTreeMap::new(),
            last_rescan: Instant::now(),
            delivery_errors: 0,
            mode_label: self.mode_label,
            echo_to_terminal: self.echo_to_terminal,
            governor_detached: BTreeMap::new(),
            file_status: self.file_status,
            poller_status: self.poller_status,
            url_status: self.url_status,
            key_status: self.key_status,
            delivery: None,
            hits: Vec::new(),
            set_changed_at: Instant::now(),
            timelines: HashMap::new(),
            last_entry_counts: Instant::now(),
            last_shared: Instant::now(),
            proc_events_live: false,
            shared_stale: true,
            sources: sources::Questions::default(),
            cli_set: added::load(self.added_store.as_deref()),
            added_store: self.added_store,
            service_status: String::new(),
        };
        let (mut emit_rx, mut proc_rx, mut frame_rx) = owner.readers();
        owner.proc_events_live = proc_rx.is_some();
        let mut source = self.source;
        if let Source::Watch { rx, .. } = &mut source {
            owner.source_set = rx.borrow_and_update().clone();
        }
        owner.delivery = Some(self.delivery);
        owner.registry.rescan(owner.platform.as_ref());
        owner.set_changed();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tracing::info!(
            mode = owner.mode_label,
            processes = owner.registry.entries.len(),
            breakpoints = owner.desired.len(),
            "agent running"
        );
        // The control socket answers and the eBPF programs are loaded: ready for systemd.
        owner.shared_stale = true;
        owner.refresh_shared();
        crate::service::ready(&owner.service_status);
        loop {
            tokio::select! {
                _ = sigterm.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                changed = source_changed(&mut source) => {
                    if let (true, Source::Watch { rx, .. }) = (changed, &mut source) {
                        owner.source_set = rx.borrow_and_update().clone();
                        owner.set_changed();
                    }
                }
                Some(cmd) = cmd_rx.recv() => owner.command(cmd),
                Some(injection) = inject_rx.recv() => match injection {
                    Injection::Done(pid, result) => owner.injected(pid, result),
                    Injection::InProcess(pid, reason) => owner.leave_in_process(pid, reason),
                },
                batch = next_batch(&mut emit_rx) => match batch {
                    Ok(chunks) => owner.emitted(chunks),
                    Err(e) => { tracing::error!("emit ring buffer: {e}"); emit_rx = None; }
                },
                batch = next_batch(&mut proc_rx) => match batch {
                    Ok(events) => owner.lifecycle(events),
                    Err(e) => { tracing::error!("lifecycle ring buffer: {e}"); proc_rx = None; }
                },
                batch = next_batch(&mut frame_rx) => match batch {
                    Ok(events) => owner.frame_events(&events),
                    Err(e) => { tracing::error!("frame-entry ring buffer: {e}"); frame_rx = None; }
                },
                _ = tick.tick() => owner.tick(),
            }
        }
        tracing::info!("stopping: removing breakpoints from every process");
        crate::service::stopping(
            "stopping: removing breakpoints from every process, flushing events",
        );
        owner.disarm_all().await;
        if let Some(server) = server {
            server.abort();
        }
        drop(ui_server);
        if let Some(path) = control_socket {
            let _ = std::fs::remove_file(path);
        }
        let delivery = owner.delivery.take();
        drop(owner);
        let stats = match delivery {
            Some(d) => d.shutdown(FLUSH_TIMEOUT).await,
            None => Vec::new(),
        };
        for (name, s) in stats {
            tracing::info!(sink = %name, delivered = s.delivered, queued = s.queued, dropped = s.dropped_spool_full, "events flushed");
        }
        Ok(())
    }
}

fn load_bpf() -> anyhow::Result<Bpf> {
    let mut bpf = Bpf::load()?;
    if let Some(pump) = bpf.take_log_pump() {
        tokio::spawn(async move {
            let _ = pump.run().await;
        });
    }
    bpf.attach_lifecycle()?;
    Ok(bpf)
}

async fn source_changed(source: &mut Source) -> bool {
    match source {
        Source::Watch { rx, .. } => rx.changed().await.is_ok(),
        Source::CliOnly => std::future::pending().await,
    }
}

async fn next_batch<T: crate::bpf::ring::Record>(
    reader: &mut Option<AsyncRingReader<T>>,
) -> std::io::Result<Vec<T>> {
    match reader {
        Some(r) => r.next_batch().await,
        None => std::future::pending().await,
    }
}

/// The owner's ring readers: `ldbg_emit` chunks, process lifecycle, frame-entry records.
type RingReaders = (
    Option<AsyncRingReader<EmitChunk>>,
    Option<AsyncRingReader<ProcEvent>>,
    Option<AsyncRingReader<FrameEvent>>,
);

impl Owner {
    fn readers(&mut self) -> RingReaders {
        let Some(bpf) = self.bpf.as_mut() else {
            return (None, None, None);
        };
        let emit = bpf.emit_events().ok().and_then(|r| r.into_async().ok());
        let procs = bpf.proc_events().ok().and_then(|r| r.into_async().ok());
        // Only governor trips arrive here: the daemon watches no code object one entry at a
        // time (its counts come from `CODE_COUNTS`).
        let frames = bpf.frame_events().ok().and_then(|r| r.into_async().ok());
        (emit, procs, frames)
    }

    /// The desired set changed (source or CLI): publish it everywhere, attach where needed.
    fn set_changed(&mut self) {
        let desired = merge(&self.source_set, &self.cli_set);
        for id in self.desired.breakpoints.keys() {
            if desired.get(id).is_none() {
                self.statuses.forget(id);
            }
        }
        self.tracker.retain(&desired);
        self.tracker.set_skipped(
            desired
                .breakpoints
                .values()
                .filter_map(|b| Some((b.id.clone(), self.helper_settings.skip_reason(b)?)))
                .collect(),
        );
        self.tracker.set_invalid(
            desired
                .breakpoints
                .values()
                .filter_map(|b| Some((b.id.clone(), self.helper_settings.invalid_reason(b)?)))
                .collect(),
        );
        self.desired = desired;
        *self.shared.cli_ids.lock() = self.cli_set.keys().cloned().collect();
        self.set_changed_at = Instant::now();
        self.shared_stale = true;
        tracing::debug!(breakpoints = self.desired.len(), "desired set changed");
        self.control = control_json(&self.desired, &self.helper_settings);
        let data = self.control.clone();
        for (pid, entry) in self.registry.entries.iter_mut() {
            if let AttachState::Attached { link, published } = &mut entry.state {
                match link.publish(&data) {
                    Ok(g) => *published = g,
                    Err(e) => tracing::warn!(pid, "cannot update the helper's breakpoints: {e}"),
                }
            }
        }
        // That publish replaced any questions still waiting for an answer: ask them again.
        for pid in self.sources_waiting_pids() {
            self.sources_attached(pid);
        }
        self.attach_wanted();
        self.report_changes();
        self.refresh_shared();
    }

    fn have_breakpoints(&self) -> bool {
        self.desired.enabled().next().is_some()
    }

    /// Starts injections for the processes that need a helper now, at most
    /// [`MAX_INJECTIONS_IN_FLIGHT`] at a time (the rest start as those finish).
    fn attach_wanted(&mut self) {
        let in_flight = self
            .registry
            .entries
            .values()
            .filter(|e| matches!(e.state, AttachState::Attaching))
            .count();
        // Processes whose helper the web UI asked for attach without a breakpoint.
        let have_breakpoints = self.have_breakpoints();
        let wanted = self.registry.wanting_attach(true, Instant::now());
        for pid in wanted
            .into_iter()
            .filter(|pid| have_breakpoints || self.sources.wants_helper(*pid))
            .take(MAX_INJECTIONS_IN_FLIGHT.saturating_sub(in_flight))
        {
            let known = match self.registry.entries.get_mut(&pid) {
                Some(e) => {
                    e.state = AttachState::Attaching;
                    e.known_at
                }
                None => Instant::now(),
            };
            let mut timeline = Timeline::new(self.set_changed_at.max(known));
            timeline.mark("inject_start");
            self.timelines.insert(pid, timeline);
            let platform = self.platform.clone();
            let tx = self.inject_tx.clone();
            tokio::task::spawn_blocking(move || {
                // A process that debugs itself with the Python package is left alone.
                let done = match platform.in_process(pid) {
                    Some(reason) => Injection::InProcess(pid, reason),
                    None => Injection::Done(pid, platform.attach(pid)),
                };
                let _ = tx.send(done);
            });
        }
    }

    /// `pid` debugs itself with the `libdebugger` Python package ([`crate::inprocess`]): the
    /// agent's breakpoints are withdrawn from a helper it injected earlier, and the process is
    /// left alone for the rest of its life (no hand-over back and forth between two debuggers:
    /// see `python/README.md`, "With the host agent").
    fn leave_in_process(&mut self, pid: i32, reason: String) {
        self.timelines.remove(&pid);
        let Some(entry) = self.registry.entries.get_mut(&pid) else {
            return;
        };
        if let AttachState::Attached { link, .. } = &mut entry.state {
            let empty = control_json(&DesiredSet::default(), &self.helper_settings);
            if let Err(e) = link.publish(&empty) {
                tracing::warn!(pid, "cannot withdraw the agent's breakpoints: {e}");
            }
        }
        tracing::info!(pid, "{reason}");
        entry.state = AttachState::InProcess(reason);
        self.shared_stale = true;
        self.attach_wanted();
        self.refresh_shared();
    }

    /// Attached processes whose in-process debugger started since: left alone from now on.
    fn check_in_process(&mut self) {
        let attached: Vec<i32> = self
            .registry
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.state, AttachState::Attached { .. }))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in attached {
            if let Some(reason) = self.platform.in_process(pid) {
                self.leave_in_process(pid, reason);
            }
        }
    }

    fn injected(&mut self, pid: i32, result: Result<Box<dyn HelperLink>, AttachError>) {
        let Some(entry) = self.registry.entries.get_mut(&pid) else {
            self.timelines.remove(&pid);
            return; // exited meanwhile
        };
        self.shared_stale = true;
        let mut timeline = self.timelines.get_mut(&pid);
        if let Some(t) = timeline.as_mut() {
            t.mark("injected");
        }
        match result {
            Ok(mut link) => {
                if let (Some(bpf), Some(target)) = (self.bpf.as_mut(), link.emit_target()) {
                    // One uprobe per helper mapping (a memfd per injected process); scoped to
                    // every process that maps it, so forked children are covered too.
                    if let std::collections::hash_map::Entry::Vacant(v) = self.emit_links.entry(pid)
                    {
                        let attached = match link.emit_offset() {
                            Some(offset) => bpf.attach_emit_at(&target, offset, None),
                            None => bpf.attach_emit(&target, None),
                        };
                        match attached {
                            Ok(l) => {
                                v.insert(l);
                            }
                            Err(e) => {
                                tracing::error!(pid, "cannot attach the ldbg_emit probe: {e}")
                            }
                        }
                    }
                }
                if let Some(t) = timeline.as_mut() {
                    t.mark("emit_probe");
                }
                let published = match link.publish(&self.control) {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::warn!(
                            pid,
                            "helper attached but the breakpoints were not published: {e}"
                        );
                        0
                    }
                };
                if let Some(t) = timeline.as_mut() {
                    t.mark("published");
                }
                tracing::info!(pid, "helper attached");
                entry.state = AttachState::Attached { link, published };
                self.sources_attached(pid);
            }
            Err(AttachError::Incompatible(reason)) => {
                tracing::warn!(pid, "{reason}");
                self.timelines.remove(&pid);
                entry.state = AttachState::Incompatible(reason);
            }
            Err(AttachError::Failed(reason)) => {
                tracing::warn!(pid, "injection failed: {reason}");
                if let Some(t) = self.timelines.remove(&pid) {
                    tracing::debug!(pid, timeline = %t.render(), "attach timeline (failed)");
                }
                self.sources.fail_process(pid, &reason);
                entry.state = AttachState::Failed {
                    reason,
                    retry_at: Instant::now() + registry::RETRY_AFTER,
                };
            }
        }
        // Processes held back by the in-flight limit.
        self.attach_wanted();
        self.refresh_shared();
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::BreakAdd(bp, reply) => {
                let view = json!({"id": bp.id, "kind": bp.kind(), "file": bp.file, "line": bp.line,
                    "condition": bp.condition, "message": bp.message});
                self.cli_set.insert(bp.id.clone(), bp);
                added::save(self.added_store.as_deref(), &self.cli_set);
                self.set_changed();
                let _ = reply.send(Ok(view));
            }
            Command::BreakRm(id, reply) => {
                let from_cli = self.cli_set.remove(&id).is_some();
                if from_cli {
                    added::save(self.added_store.as_deref(), &self.cli_set);
                    self.set_changed();
                    let _ = reply.send(Ok(json!({"id": id})));
                } else if let Some(b) = self.source_set.get(&id) {
                    let from = if let Some(path) = b.source.strip_prefix("file ") {
                        format!("the breakpoints file {path}")
                    } else if let Some(url) = b.source.strip_prefix("url ") {
                        format!("the breakpoints URL {url}")
                    } else {
                        "PostHog".to_string()
                    };
                    let _ = reply.send(Err(format!(
                        "breakpoint {id} comes from {from}; remove it there"
                    )));
                } else {
                    let _ = reply.send(Err(format!("no breakpoint with id {id}")));
                }
            }
            Command::Sources(q, reply) => self.sources_question(q, reply),
        }
    }

    fn emitted(&mut self, chunks: Vec<EmitChunk>) {
        let now = Instant::now();
        let mut messages = Vec::new();
        for c in &chunks {
            self.assembler.push(c, now, &mut messages);
        }
        for msg in messages {
            self.message(msg);
        }
        self.flush_hits();
    }

    fn message(&mut self, msg: Message) {
        let pid = msg.pid as i32;
        match msg.kind {
            message_kind::HIT | message_kind::LOG_HIT => {
                let pid_json = pid.to_string();
                let ext = [
                    ("$pid", pid_json.as_str()),
                    ("$hostname", self.hostname_json.as_str()),
                ];
                let name = if msg.kind == message_kind::LOG_HIT {
                    LOG_EVENT
                } else {
                    HIT_EVENT
                };
                match encode_event(name, &self.distinct_id, &msg.data, &ext) {
                    Ok(hit) => {
                        self.tracker.on_hit(pid, &hit.summary);
                        self.deliver(hit.json);
                    }
                    Err(e) => tracing::warn!(pid, "unreadable hit from the helper: {e}"),
                }
            }
            message_kind::STATUS | message_kind::STATS | message_kind::CODE_OBJECTS => {
                // Status events follow the hits before them.
                self.flush_hits();
                let Ok(v) = serde_json::from_slice::<Value>(&msg.data) else {
                    tracing::warn!(pid, kind = msg.kind, "unreadable message from the helper");
                    return;
                };
                match msg.kind {
                    message_kind::STATUS => self.tracker.on_status(pid, &v),
                    message_kind::STATS => self.tracker.on_stats(pid, &v),
                    _ => {
                        let codes = self.tracker.on_code_objects(pid, &v);
                        self.watch_codes(pid, &codes);
                    }
                }
                self.report_changes();
            }
            message_kind::SOURCES => self.sources.answered(pid, &msg.data),
            message_kind::HELLO => {
                tracing::debug!(pid, hello = %String::from_utf8_lossy(&msg.data), "helper says hello");
                // A forked child announces itself: make sure it is tracked and attached.
                if !self.registry.entries.contains_key(&pid) {
                    self.queue_examine(pid);
                }
            }
            other => tracing::debug!(pid, kind = other, "unknown message kind"),
        }
    }

    /// Attaches the frame-entry probe to a process with armed code objects, for the kernel-side
    /// entry counts (read from `CODE_COUNTS` per code object at each tick; the code objects are
    /// not put in `WATCHED`, whose per-entry ring records nothing here needs). Not again once
    /// the governor detached it from this process.
    fn watch_codes(&mut self, pid: i32, codes: &[u64]) {
        let Some(bpf) = self.bpf.as_mut() else { return };
        if codes.is_empty() || self.governor_detached.contains_key(&pid) {
            return;
        }
        if !bpf.traced().any(|p| p == pid) {
            // The registry's introspection of this process (symbols, offsets).
            let Some(process) = self.registry.inspected(pid) else {
                tracing::debug!(pid, "frame-entry probe not attached: process not inspected");
                return;
            };
            if let Err(e) = bpf.trace_process(&process, ENTRIES_BUDGET_PER_SEC) {
                tracing::warn!(pid, "frame-entry probe not attached: {e}");
            }
        }
    }

    /// Records from the frame-entry ring: a governor trip detaches the probe now, not at the
    /// next tick (each frame entry of the process takes the uprobe's trap until then).
    fn frame_events(&mut self, events: &[FrameEvent]) {
        if events.iter().any(|e| e.code == GOVERNOR_TRIPPED_CODE) {
            self.check_governors();
        }
    }

    /// Queues an encoded hit for [`Owner::flush_hits`]; shows it on the terminal and to `tail`
    /// subscribers (decoded only for them: with none, a hit is never decoded in the agent).
    fn deliver(&mut self, event: Vec<u8>) {
        if self.echo_to_terminal
            && let Ok(ev) = serde_json::from_slice::<Event>(&event)
        {
            println!("{}", crate::delivery::sinks::render(&ev));
        }
        if self.events.receiver_count() > 0 {
            let value = serde_json::from_slice::<Value>(&event).unwrap_or(Value::Null);
            let _ = self.events.send(Arc::new(value));
        }
        self.hits.push(event);
    }

    /// Spools the queued hits, one write per pipeline.
    fn flush_hits(&mut self) {
        if self.hits.is_empty() {
            return;
        }
        let refs: Vec<&[u8]> = self.hits.iter().map(Vec::as_slice).collect();
        if let Some((n, e)) = self.sender.send_encoded(&refs) {
            self.delivery_errors += n as u64;
            tracing::warn!(events = n, "events not accepted for delivery: {e}");
        }
        self.hits.clear();
    }

    fn report_changes(&mut self) {
        for (id, folded) in self.tracker.changes(&self.desired) {
            tracing::info!(breakpoint = %id, status = %folded.status, error = ?folded.error, "breakpoint status");
            let update = StatusUpdate {
                breakpoint_id: id,
                status: folded.status,
                error: folded.error,
            };
            if let Err(e) = self.statuses.report(update) {
                self.delivery_errors += 1;
                tracing::warn!("breakpoint status not accepted for delivery: {e}");
            }
        }
        self.statuses.tick();
        self.refresh_shared();
    }

    fn lifecycle(&mut self, events: Vec<ProcEvent>) {
        for ev in events {
            tracing::trace!(?ev, "lifecycle event");
            match ev {
                ProcEvent::Exec { pid } => {
                    // A new image: whatever we knew of this pid is void.
                    self.forget(pid as i32);
                    self.queue_examine(pid as i32);
                }
                ProcEvent::Fork { child, parent } => {
                    // The tracepoint fires for new threads as well; only processes count.
                    if self.platform.is_thread(child as i32) {
                        continue;
                    }
                    self.frame_probe_after_fork(parent as i32, child as i32);
                    let debugged = self
                        .registry
                        .entries
                        .get(&(parent as i32))
                        .is_some_and(|e| {
                            !matches!(e.state, AttachState::Ignored(_) | AttachState::Declined(_))
                        });
                    if debugged {
                        self.queue_examine(child as i32);
                    }
                }
                ProcEvent::Exit { pid } => self.forget(pid as i32),
            }
        }
    }

    /// A uprobe-multi frame-entry probe stays in the memory of a process forked while its
    /// parent is traced: the child would take the trap on every frame entry, uncounted, for as
    /// long as the parent's probe is attached. Re-attaching the parent's probe takes it out of
    /// the child (and of any other such child). Called for processes only (not new threads).
    fn frame_probe_after_fork(&mut self, parent: i32, child: i32) {
        let Some(bpf) = self.bpf.as_mut() else { return };
        if !bpf.frame_probe_follows_forks() || !bpf.traced().any(|p| p == parent) {
            return;
        }
        if self.platform.start_time(child).is_none() {
            return; // already gone (or a short-lived thread that has exited)
        }
        let Some(process) = self.registry.inspected(parent) else {
            return;
        };
        if let Err(e) = bpf
            .untrace_process(parent)
            .and_then(|()| bpf.trace_process(&process, ENTRIES_BUDGET_PER_SEC))
        {
            tracing::warn!(
                parent,
                child,
                "frame-entry probe not re-attached after a fork: {e}"
            );
        }
    }

    fn queue_examine(&mut self, pid: i32) {
        self.examine_queue
            .insert(pid, (0, Instant::now() + EXAMINE_DELAYS[0]));
    }

    fn forget(&mut self, pid: i32) {
        self.shared_stale = true;
        if self.registry.remove(pid).is_some() {
            tracing::debug!(pid, "process gone");
        }
        self.examine_queue.remove(&pid);
        self.sources.fail_process(pid, "the process exited");
        self.timelines.remove(&pid);
        self.tracker.forget_process(pid);
        self.assembler.forget_process(pid as u32);
        self.governor_detached.remove(&pid);
        if let Some(bpf) = self.bpf.as_mut() {
            if bpf.traced().any(|p| p == pid) {
                let _ = bpf.untrace_process(pid);
            }
            let _ = bpf.clear_code_counts(pid);
            if let Some(link) = self.emit_links.remove(&pid) {
                let _ = bpf.detach_emit(link);
            }
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        // New processes from exec/fork, examined once the loader had time to map libpython.
        let due: Vec<i32> = self
            .examine_queue
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            let attempt = self.examine_queue.remove(&pid).map_or(0, |(a, _)| a);
            tracing::trace!(
                pid,
                attempt,
                known = self.registry.entries.contains_key(&pid),
                "examining"
            );
            let tracked = self.registry.examine(self.platform.as_ref(), pid);
            self.shared_stale |= tracked;
            let next = attempt + 1;
            if !tracked
                && next < EXAMINE_DELAYS.len()
                && std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                self.examine_queue
                    .insert(pid, (next, now + EXAMINE_DELAYS[next]));
            }
        }
        let rescan_every = if self.proc_events_ok() {
            RESCAN_INTERVAL_WITH_EBPF
        } else {
            RESCAN_INTERVAL
        };
        if now.duration_since(self.last_rescan) >= rescan_every {
            self.last_rescan = now;
            let before: Vec<i32> = self.registry.entries.keys().copied().collect();
            let known = self.registry.entries.len();
            self.registry.rescan(self.platform.as_ref());
            self.check_in_process();
            self.shared_stale |= self.registry.entries.len() != known;
            for pid in before {
                if !self.registry.entries.contains_key(&pid) {
                    self.forget(pid);
                }
            }
        }
        self.assembler.expire(now);
        self.sources.expire(now);
        let entries_changed = self.check_governors();
        self.attach_wanted();
        // What changed status was reported (and `shared` refreshed) where it changed; a tick
        // only sends status events held back by their interval, and refreshes the counters
        // `status` shows now and then. (An idle agent with 50 processes spent most of its time
        // rebuilding that snapshot four times a second.)
        if entries_changed || now.duration_since(self.last_shared) >= SHARED_REFRESH_INTERVAL {
            self.report_changes();
        } else {
            self.statuses.tick();
        }
    }

    /// Whether the lifecycle tracepoints report exec/fork/exit (so rescans are a rare safety
    /// net).
    fn proc_events_ok(&self) -> bool {
        self.proc_events_live
    }

    /// Detaches the frame-entry probe from processes over their entry budget, and (every
    /// [`ENTRY_COUNTS_INTERVAL`]) reads the kernel's entry counts per breakpoint. Returns true if
    /// the counts changed.
    fn check_governors(&mut self) -> bool {
        let Some(bpf) = self.bpf.as_mut() else {
            return false;
        };
        let traced: Vec<i32> = bpf.traced().collect();
        for pid in traced {
            if let Ok(Some(g)) = bpf.governor(pid)
                && g.tripped
            {
                tracing::warn!(
                    pid,
                    window_entries = g.window_entries,
                    "frame-entry probe detached: over {ENTRIES_BUDGET_PER_SEC} entries/s (line hits are still captured; only the kernel entry counts stop)"
                );
                let _ = bpf.untrace_process(pid);
                self.governor_detached.insert(pid, g.window_entries);
                self.shared_stale = true;
            }
        }
        let now = Instant::now();
        if now.duration_since(self.last_entry_counts) < ENTRY_COUNTS_INTERVAL {
            return false;
        }
        self.last_entry_counts = now;
        // One walk of the map for every process (a walk per process cost a scan of the whole
        // hash table each, 200 a second with 50 processes).
        let Ok(counts) = bpf.all_code_counts() else {
            return false;
        };
        let mut entries: BTreeMap<String, u64> = BTreeMap::new();
        for (pid, code, n) in counts {
            if let Some(id) = self.tracker.breakpoint_of_code(pid, code) {
                *entries.entry(id.to_string()).or_default() += n;
            }
        }
        self.tracker.set_entries(entries)
    }

    fn refresh_shared(&mut self) {
        let urgent = std::mem::take(&mut self.shared_stale)
            | self.tracker.take_changed()
            | !self.timelines.is_empty();
        if !urgent && self.last_shared.elapsed() < SHARED_REFRESH_INTERVAL {
            return;
        }
        self.last_shared = Instant::now();
        if !self.timelines.is_empty() {
            let tracker = &self.tracker;
            self.timelines.retain(|pid, t| {
                if !tracker.armed_in(*pid) {
                    return true;
                }
                t.mark("armed");
                tracing::debug!(pid, timeline = %t.render(), "attach timeline (ms)");
                false
            });
        }
        let breakpoints = self.tracker.view(&self.desired);
        let drops = self.bpf.as_mut().and_then(|b| b.drops().ok());
        let a = self.assembler.counters();
        let mut processes = self.registry.status();
        for p in &mut processes {
            if let Some(n) = p["pid"]
                .as_i64()
                .and_then(|pid| self.governor_detached.get(&(pid as i32)))
            {
                p["frame_probe"] = json!(format!(
                    "detached by the governor: {n} frame entries in one second, over its budget of {ENTRIES_BUDGET_PER_SEC}/s (breakpoint entries counted until then; line hits unaffected)"
                ));
            }
        }
        *self.shared.status.lock() = json!({
            "mode": self.mode_label,
            "ebpf": self.bpf_error.as_deref().unwrap_or("ok"),
            "processes": processes,
            "breakpoints": breakpoints.clone(),
            "ring": {
                "records": a.records,
                "messages": a.messages,
                "lost": drops.map(|d| d.emit_ring_full + d.emit_read_failed).unwrap_or(0),
                "malformed": a.malformed,
                "truncated": a.truncated,
                "incomplete_dropped": a.incomplete_dropped,
            },
            "delivery": {
                "not_accepted": self.delivery_errors,
                "sinks": self.delivery.as_ref().map(|d| {
                    d.stats().into_iter().map(|(name, st)| (name, json!(st))).collect::<Map<_, _>>()
                }),
            },
        });
        if let Some(rx) = &self.poller_status {
            let ps = rx.borrow();
            self.shared.status.lock()["posthog"] = json!({
                "fetches": ps.fetches,
                "failures": ps.failures,
                "consecutive_failures": ps.consecutive_failures,
                "last_error": ps.last_error,
                "auth_error": ps.auth_error,
                "note": ps.note,
                "last_success": ps.last_success.map(|t| time::OffsetDateTime::from(t)
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()),
            });
        }
        if let Some(rx) = &self.file_status {
            let fs = rx.borrow();
            self.shared.status.lock()["breakpoints_file"] = json!({
                "loads": fs.loads,
                "error": fs.last_error,
                "errors": fs.errors,
                "note": fs.last_error.as_ref().map(|_| "malformed; the last good content of each file stays in force until it is fixed"),
            });
        }
        let rfc3339 = |t: std::time::SystemTime| {
            time::OffsetDateTime::from(t)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        if let Some(rx) = &self.url_status {
            let us = rx.borrow();
            self.shared.status.lock()["breakpoints_url"] = json!({
                "fetches": us.fetches,
                "not_modified": us.not_modified,
                "failures": us.failures,
                "consecutive_failures": us.consecutive_failures,
                "last_error": us.last_error,
                "last_success": us.last_success.map(rfc3339),
            });
        }
        if let Some(rx) = &self.key_status {
            let (state, error) = {
                let ks = rx.borrow();
                let (state, error) = ks.parts();
                (state, error.map(str::to_owned))
            };
            self.shared.status.lock()["posthog_project_key"] = json!({
                "status": state,
                "error": error,
                "note": error,
            });
        }
        *self.shared.breakpoints.lock() = breakpoints;
        let line = crate::service::summary(&self.shared.status.lock());
        crate::service::status(&mut self.service_status, line);
    }

    /// SIGTERM: every helper gets an empty set and goes dormant; waits (bounded) for them.
    async fn disarm_all(&mut self) {
        let empty = control_json(&DesiredSet::default(), &self.helper_settings);
        let mut waiting = Vec::new();
        for (pid, entry) in self.registry.entries.iter_mut() {
            if let AttachState::Attached { link, .. } = &mut entry.state {
                match link.publish(&empty) {
                    Ok(g) => waiting.push((*pid, g)),
                    Err(e) => tracing::warn!(pid, "could not remove breakpoints: {e}"),
                }
            }
        }
        let deadline = Instant::now() + DISARM_TIMEOUT;
        while !waiting.is_empty() && Instant::now() < deadline {
            waiting.retain(
                |(pid, g)| match self.registry.entries.get(pid).map(|e| &e.state) {
                    Some(AttachState::Attached { link, .. }) => {
                        link.applied().map(|a| a < *g).unwrap_or(false)
                    }
                    _ => false,
                },
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (pid, _) in waiting {
            tracing::warn!(
                pid,
                "helper did not confirm removal of its breakpoints in time"
            );
        }
        // Let the helpers' last STATUS messages (dormant) reach the ring before we stop.
        if let Some(bpf) = self.bpf.as_mut() {
            let pids: Vec<i32> = bpf.traced().collect();
            for pid in pids {
                let _ = bpf.untrace_process(pid);
            }
        }
    }
}
