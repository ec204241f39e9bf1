//! The helper's own thread: encodes snapshots to JSON without the GIL, hands every message to
//! `ldbg_emit` in chunks (and to the test sink, if one is set), and polls the control block.
use crate::hot::{PROCESS, Snapshot};
use crate::value::encode_str;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, unbounded};
use libdebugger_common::helper_abi::{
    ABI_VERSION, CHUNK_HEADER_LEN, CHUNK_MAGIC, CONTROL_DATA_LEN, CONTROL_MAGIC, ChunkHeader,
    ControlBlock, MAX_CHUNK, MAX_CHUNK_DATA, message_kind,
};
use parking_lot::Mutex;
use pyo3::prelude::*;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant};

/// What the helper thread processes.
pub enum Msg {
    /// A snapshot to encode and emit.
    Hit(Box<Snapshot>),
    /// A logpoint's message to encode and emit.
    Log(Box<crate::hot::LogLine>),
    /// An already-encoded message of the given kind.
    Encoded { kind: u16, json: String },
    /// Acknowledge once everything queued before it has been delivered.
    Flush(Sender<()>),
}

/// The queue's sending side; taken only with the GIL held (so a fork, which holds the GIL, never
/// finds it locked).
static TX: LazyLock<Mutex<Option<Sender<Msg>>>> = LazyLock::new(|| Mutex::new(None));
/// The test sink (a Python callable), locked only with the GIL held. Set it with [`set_sink`].
pub static SINK: LazyLock<Mutex<Option<Py<PyAny>>>> = LazyLock::new(|| Mutex::new(None));
/// Whether [`SINK`] holds a callable: lets the helper thread skip taking the GIL (a wait of up
/// to the interpreter's switch interval, 5 ms, behind a busy application thread) when there is
/// no test sink to call, which is always the case in production.
static HAS_SINK: AtomicBool = AtomicBool::new(false);

/// Installs (or with `None` removes) the test sink. Call with the GIL held.
pub fn set_sink(sink: Option<Py<PyAny>>) {
    let mut slot = SINK.lock();
    HAS_SINK.store(sink.is_some(), SeqCst);
    *slot = sink;
}
/// Set at interpreter exit: the helper thread must not take the GIL any more.
pub static EXITING: AtomicBool = AtomicBool::new(false);
/// Whether the current helper thread runs (reported in `status()`).
pub static THREAD_ALIVE: AtomicBool = AtomicBool::new(false);
static MSG_ID: AtomicU64 = AtomicU64::new(1);
/// Generation of the helper thread: a thread whose generation is stale exits.
static THREAD_GEN: AtomicU64 = AtomicU64::new(0);

/// Snapshots the helper thread is done with, while it is busy: the application thread that
/// queues the next hit frees them ([`try_send`]). A snapshot is allocated by an application
/// thread; freed on the helper thread, each of its blocks goes back to the application
/// thread's malloc arena under that arena's lock, and at a high hit rate the helper thread
/// spent most of its time asleep on that lock (profiled: 91 % of its context switches in
/// `__lll_lock_wait_private`). Taken only with the GIL held, like [`TX`].
type Grave = (Sender<Box<Snapshot>>, Receiver<Box<Snapshot>>);
static GRAVE: LazyLock<Mutex<Option<Grave>>> = LazyLock::new(|| Mutex::new(None));
/// Snapshots the graveyard holds at most (what it holds is freed within a few hits).
const GRAVE_CAPACITY: usize = 64;
/// Snapshots an application thread frees per hit it queues (more than the one it adds).
const FREES_PER_HIT: usize = 4;

/// The graveyard's sending side for a new helper thread (creating it if needed).
fn grave_sender() -> Sender<Box<Snapshot>> {
    let mut g = GRAVE.lock();
    g.get_or_insert_with(|| bounded(GRAVE_CAPACITY)).0.clone()
}

/// Messages the queue to the helper thread holds at most (`queue_capacity` of the settings).
/// The channel itself is unbounded, so that a new capacity applies at once (a bounded channel
/// is sized when created); senders, who hold the GIL, check its length against this.
static CAPACITY: AtomicUsize = AtomicUsize::new(256);

/// Sets the queue's capacity (at least 1); applies to the next message queued.
pub fn set_capacity(capacity: usize) {
    CAPACITY.store(capacity.max(1), SeqCst);
}

/// Queues a message without blocking; false if the queue is full or absent. Frees a few
/// snapshots the helper thread finished with (see [`GRAVE`]).
pub fn try_send(m: Msg) -> bool {
    let sent = {
        let tx = TX.lock();
        match tx.as_ref() {
            Some(tx) if tx.len() < CAPACITY.load(Relaxed) => match tx.try_send(m) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            },
            _ => false,
        }
    };
    if let Some((_, rx)) = GRAVE.lock().as_ref() {
        for _ in 0..FREES_PER_HIT {
            match rx.try_recv() {
                Ok(done) => drop(done),
                Err(_) => break,
            }
        }
    }
    sent
}

/// Whether a hit queued now would be dropped (the queue to the helper thread is full, or there
/// is none): the application thread then skips the snapshot it could not deliver.
pub fn queue_full() -> bool {
    TX.lock()
        .as_ref()
        .is_none_or(|tx| tx.len() >= CAPACITY.load(Relaxed))
}

/// Queues an encoded message.
pub fn send_json(kind: u16, json: String) {
    if !try_send(Msg::Encoded { kind, json }) {
        PROCESS.dropped.fetch_add(1, Relaxed);
    }
}

/// Starts the helper thread (and its queue) unless it runs already. Call with the GIL held.
pub fn ensure_thread(capacity: usize) {
    let mut tx = TX.lock();
    if tx.is_some() {
        return;
    }
    set_capacity(capacity);
    let (s, r) = unbounded();
    *tx = Some(s);
    spawn(r);
}

/// In a forked child: the parent's thread does not exist here. Forget (never drop: its internal
/// state may be mid-operation) the old queue and start a new thread.
pub fn after_fork(capacity: usize) {
    // The parent's thread had parked its queue for the fork (or was still running): neither it
    // nor its queue exists for this process.
    let mut parked = match PARKED.try_lock() {
        Some(g) => g,
        None => {
            // SAFETY: only a thread that does not exist in this child (the single-threaded
            // child of a fork) can have held it.
            unsafe { PARKED.force_unlock() };
            PARKED.lock()
        }
    };
    PAUSE.store(false, SeqCst);
    if let Some(old) = parked.take() {
        std::mem::forget(old);
    }
    drop(parked);
    // 3.13: a restart still pending from an earlier fork belongs to the parent's queue.
    if let Some(r) = DEFERRED.try_lock().and_then(|mut d| d.take()) {
        std::mem::forget(r);
    }
    if let Some(h) = JOIN.lock().take() {
        // Never detached or joined: that thread is not part of this process.
        std::mem::forget(h);
    }
    let mut tx = TX.lock();
    if let Some(old) = tx.take() {
        std::mem::forget(old);
    }
    // The parent's helper thread may have been using the graveyard (never drop it here).
    if let Some(old) = GRAVE.try_lock().and_then(|mut g| g.take()) {
        std::mem::forget(old);
    }
    set_capacity(capacity);
    let (s, r) = unbounded();
    *tx = Some(s);
    spawn(r);
}

/// Stops the helper thread (shutdown): drops the sender; the thread drains and exits.
pub fn stop_thread() {
    THREAD_GEN.fetch_add(1, SeqCst);
    TX.lock().take();
    THREAD_ALIVE.store(false, SeqCst);
    wake();
}

fn spawn(r: Receiver<Msg>) {
    let generation = THREAD_GEN.fetch_add(1, SeqCst) + 1;
    let grave = grave_sender();
    let res = std::thread::Builder::new()
        .name("ldbg-helper".into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            HELPER_TID.store(unsafe { libc::gettid() }, SeqCst);
            THREAD_ALIVE.store(true, SeqCst);
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(r, generation, grave)
            }));
            if let Err(p) = res {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let msg = serde_json::json!({"error": format!("helper thread stopped: {msg}")});
                emit_chunks(message_kind::STATUS, msg.to_string().as_bytes());
            }
            if THREAD_GEN.load(SeqCst) == generation {
                THREAD_ALIVE.store(false, SeqCst);
            }
        });
    match res {
        // Recorded by the spawning thread (which holds the GIL): the helper thread itself never
        // takes these locks, so a fork cannot find them held.
        Ok(handle) => {
            *HELPER.lock() = Some(handle.thread().clone());
            *JOIN.lock() = Some(handle);
        }
        Err(_) => {
            PROCESS.dropped.fetch_add(1, Relaxed);
        }
    }
}

fn run(r: Receiver<Msg>, generation: u64, grave: Sender<Box<Snapshot>>) {
    let mut last_poll = Instant::now();
    let mut last_stats = Instant::now();
    let mut batch: Vec<(u16, String)> = Vec::new();
    let mut acks: Vec<Sender<()>> = Vec::new();
    // The thread never blocks in the channel: a blocked receiver would make every sender on an
    // application thread pay a futex wake-up (a syscall) per hit. It sleeps instead, 2 ms while
    // busy, backing off to 50 ms when idle, and drains what arrived.
    let mut idle = Duration::from_millis(2);
    // Whether the last round was busy: then finished snapshots go to the graveyard.
    let mut busy = false;
    loop {
        let mut got = false;
        let mut drained = 0usize;
        loop {
            let m = match r.try_recv() {
                Ok(m) => m,
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return,
            };
            got = true;
            drained += 1;
            match m {
                Msg::Hit(s) => {
                    let json = encode_hit(&s);
                    // Busy: let the application thread free it (see GRAVE); otherwise (or
                    // with the graveyard full) free it here.
                    if busy && let Err(e) = grave.try_send(s) {
                        drop(e.into_inner());
                    }
                    batch.push((message_kind::HIT, json));
                }
                Msg::Log(l) => batch.push((message_kind::LOG_HIT, encode_log(&l))),
                Msg::Encoded { kind, json } => batch.push((kind, json)),
                Msg::Flush(ack) => acks.push(ack),
            }
            if batch.len() >= 512 {
                break;
            }
        }
        if !batch.is_empty() {
            deliver(&mut batch);
        }
        for a in acks.drain(..) {
            let _ = a.send(());
        }
        if THREAD_GEN.load(SeqCst) != generation {
            return;
        }
        if PAUSE.load(SeqCst) {
            // A fork is about to happen: hand the queue back and exit (see `pause_for_fork`).
            let mut parked = PARKED.lock();
            if PAUSE.load(SeqCst) {
                *parked = Some(r);
                return;
            }
        }
        if last_poll.elapsed() >= Duration::from_millis(50) {
            last_poll = Instant::now();
            crate::control::poll();
        }
        if last_stats.elapsed() >= Duration::from_secs(10) {
            last_stats = Instant::now();
            if let Some(json) = crate::control::stats_json() {
                batch.push((message_kind::STATS, json));
                deliver(&mut batch);
            }
        }
        busy = drained >= BUSY_DRAIN;
        if busy {
            // The application produces faster than one tick drains: sleeping now would let the
            // bounded queue overflow (dropping snapshots). Go round again at once; senders still
            // never wake this thread (it does not block in the channel).
            std::thread::yield_now();
            continue;
        }
        idle = if got {
            Duration::from_millis(2)
        } else {
            (idle * 2).min(Duration::from_millis(50))
        };
        std::thread::park_timeout(idle);
    }
}

/// Messages drained in one round from which the thread counts as busy and skips its sleep.
const BUSY_DRAIN: usize = 32;

/// Set by the before-fork hook: the helper thread parks its queue in `PARKED` and exits.
static PAUSE: AtomicBool = AtomicBool::new(false);
/// The queue of a helper thread that exited for a fork, until the thread is started again.
/// `PAUSE` is cleared and the queue taken under this lock, so a thread deciding to park cannot
/// miss the restart.
static PARKED: LazyLock<Mutex<Option<Receiver<Msg>>>> = LazyLock::new(|| Mutex::new(None));
/// The current helper thread's handle (to wait for its exit) and kernel thread id.
static JOIN: LazyLock<Mutex<Option<std::thread::JoinHandle<()>>>> =
    LazyLock::new(|| Mutex::new(None));
static HELPER_TID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// How long the before-fork hook waits for the helper thread to exit before forking anyway.
const FORK_PAUSE_TIMEOUT: Duration = Duration::from_millis(500);

/// `os.register_at_fork(before=...)`: stops the helper thread for the duration of the fork, so
/// the child never inherits state the thread was in the middle of changing, and so CPython
/// 3.12+ does not count it as a thread (its "This process is multi-threaded, use of fork() may
/// lead to deadlocks in the child" DeprecationWarning reads the kernel's thread count,
/// `/proc/self/stat`). The queue is kept; [`resume_after_fork`] starts a thread on it again.
/// Waits (without the GIL) at most `FORK_PAUSE_TIMEOUT`; a thread that does not stop in time
/// just keeps running.
pub fn pause_for_fork(py: Python<'_>) {
    if TX.lock().is_none() || EXITING.load(SeqCst) {
        return;
    }
    let Some(handle) = JOIN.lock().take() else {
        return;
    };
    if handle.thread().id() == std::thread::current().id() {
        // Forking from the helper thread itself (a test sink): nothing to wait for.
        *JOIN.lock() = Some(handle);
        return;
    }
    PAUSE.store(true, SeqCst);
    wake();
    let handle = py.detach(move || {
        let deadline = Instant::now() + FORK_PAUSE_TIMEOUT;
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(50));
        }
        if !handle.is_finished() {
            return Some(handle);
        }
        let _ = handle.join();
        // Read after the join: a thread that had not started yet when the fork began has set
        // it by now.
        let tid = HELPER_TID.load(SeqCst);
        // The kernel unhashes an exited thread slightly after `join` returns (the join wakes
        // on the thread's tid being cleared, before it is reaped); wait until it is gone from
        // the thread list CPython reads.
        let task = format!("/proc/self/task/{tid}");
        let gone_by = Instant::now() + Duration::from_millis(50);
        while tid > 0 && std::path::Path::new(&task).exists() && Instant::now() < gone_by {
            std::thread::sleep(Duration::from_micros(20));
        }
        None
    });
    if let Some(h) = handle {
        *JOIN.lock() = Some(h);
    }
}

/// `os.register_at_fork(after_in_parent=...)`: starts the helper thread again on its queue.
/// 3.13 counts threads after the `after_in_parent` hooks ran, so there the start is deferred to
/// a pending call (run by the main thread when it next runs Python code, after `os.fork()`
/// returned); 3.11/3.12 start it right away.
pub fn resume_after_fork() {
    let r = {
        let mut parked = PARKED.lock();
        PAUSE.store(false, SeqCst);
        parked.take()
    };
    let Some(r) = r else {
        return;
    };
    if crate::hot::py_minor() >= 13 {
        *DEFERRED.lock() = Some(r);
        // SAFETY: a valid `extern "C"` callback without argument; called with the GIL held.
        let queued =
            unsafe { pyo3::ffi::Py_AddPendingCall(Some(start_deferred), std::ptr::null_mut()) };
        // Not queued (the pending-call queue is full): start it now.
        if queued != 0
            && let Some(r) = DEFERRED.lock().take()
        {
            spawn(r);
        }
    } else {
        spawn(r);
    }
}

/// 3.13: the queue whose thread starts in a pending call after a fork.
static DEFERRED: LazyLock<Mutex<Option<Receiver<Msg>>>> = LazyLock::new(|| Mutex::new(None));

extern "C" fn start_deferred(_: *mut std::ffi::c_void) -> std::ffi::c_int {
    if let Some(r) = DEFERRED.lock().take() {
        spawn(r);
    }
    0
}

/// The current helper thread, to wake it early (flush, control changes).
static HELPER: LazyLock<Mutex<Option<std::thread::Thread>>> = LazyLock::new(|| Mutex::new(None));

/// Wakes the helper thread now instead of at its next tick.
pub fn wake() {
    if let Some(t) = HELPER.lock().as_ref() {
        t.unpark();
    }
}

fn kind_name(kind: u16) -> &'static str {
    match kind {
        message_kind::HIT => "hit",
        message_kind::STATUS => "status",
        message_kind::HELLO => "hello",
        message_kind::STATS => "stats",
        message_kind::CODE_OBJECTS => "code_objects",
        message_kind::SOURCES => "sources",
        message_kind::LOG_HIT => "log",
        _ => "other",
    }
}

/// Emits each message through `ldbg_emit` (several small messages per call, see
/// [`Packer`]) and, if set, the test sink; empties `batch`.
fn deliver(batch: &mut Vec<(u16, String)>) {
    let mut packer = Packer::default();
    for (kind, json) in batch.iter() {
        let msg_id = MSG_ID.fetch_add(1, Relaxed);
        for_each_chunk(*kind, msg_id, json.as_bytes(), |chunk| packer.push(chunk));
    }
    packer.flush();
    if !HAS_SINK.load(Relaxed) {
        batch.clear();
        return;
    }
    // SAFETY: Py_IsInitialized has no preconditions.
    if EXITING.load(Relaxed) || unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
        batch.clear();
        return;
    }
    Python::attach(|py| {
        let sink = SINK.lock().as_ref().map(|s| s.clone_ref(py));
        if let Some(sink) = sink {
            for (kind, json) in batch.drain(..) {
                if let Err(e) = sink.call1(py, (kind_name(kind), json)) {
                    // A failing test sink must not kill the thread.
                    e.print(py);
                }
            }
        }
    });
    batch.clear();
}

/// Splits `data` into `ldbg_emit` chunks, one call each.
pub fn emit_chunks(kind: u16, data: &[u8]) {
    let msg_id = MSG_ID.fetch_add(1, Relaxed);
    for_each_chunk(kind, msg_id, data, emit);
}

/// One `ldbg_emit` call (one uprobe hit, one ring-buffer record).
fn emit(record: &[u8]) {
    let f: extern "C" fn(*const u8, usize) =
        std::hint::black_box(ldbg_emit as extern "C" fn(*const u8, usize));
    f(record.as_ptr(), record.len());
}

/// Packs consecutive chunks into one `ldbg_emit` call of at most [`MAX_CHUNK`] bytes (ABI 2:
/// a record carries one or more whole chunks back to back). Each call costs a uprobe trap
/// (microseconds), so a hit of a few hundred bytes paid mostly for the trap before.
#[derive(Default)]
pub struct Packer {
    buf: Vec<u8>,
}

impl Packer {
    /// Adds one chunk (header + data, at most [`MAX_CHUNK`] bytes), emitting what is packed
    /// first if it would not fit.
    pub fn push(&mut self, chunk: &[u8]) {
        self.push_with(chunk, emit);
    }

    /// Emits what is packed.
    pub fn flush(&mut self) {
        self.flush_with(emit);
    }

    fn push_with(&mut self, chunk: &[u8], mut out: impl FnMut(&[u8])) {
        if !self.buf.is_empty() && self.buf.len() + chunk.len() > MAX_CHUNK {
            self.flush_with(&mut out);
        }
        self.buf.extend_from_slice(chunk);
    }

    fn flush_with(&mut self, mut out: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            out(&self.buf);
            self.buf.clear();
        }
    }
}

/// Calls `f` with each chunk (header + data) of message `msg_id`.
pub fn for_each_chunk(kind: u16, msg_id: u64, data: &[u8], mut f: impl FnMut(&[u8])) {
    let total_chunks = data.len().div_ceil(MAX_CHUNK_DATA).max(1);
    let mut buf = Vec::with_capacity(CHUNK_HEADER_LEN + data.len().min(MAX_CHUNK_DATA));
    for seq in 0..total_chunks {
        let part = &data
            [(seq * MAX_CHUNK_DATA).min(data.len())..((seq + 1) * MAX_CHUNK_DATA).min(data.len())];
        let h = ChunkHeader {
            magic: CHUNK_MAGIC,
            abi_version: ABI_VERSION as u16,
            kind,
            msg_id,
            seq: seq as u32,
            total_chunks: total_chunks as u32,
            total_len: data.len() as u32,
            data_len: part.len() as u32,
        };
        buf.clear();
        // SAFETY: ChunkHeader is repr(C) and Copy, made only of integers with no padding
        // (4+2+2+8+4+4+4+4 = 32 bytes); we view its bytes for the wire.
        buf.extend_from_slice(unsafe {
            std::slice::from_raw_parts((&h as *const ChunkHeader).cast::<u8>(), CHUNK_HEADER_LEN)
        });
        buf.extend_from_slice(part);
        f(&buf);
    }
}

/// The transport: a no-op the agent's eBPF uprobe reads (`ptr`, `len` in rdi/rsi).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn ldbg_emit(ptr: *const u8, len: usize) {
    std::hint::black_box((ptr, len));
}

/// `LDBG_CONTROL`: the agent writes it with process_vm_writev (see `helper_abi::ControlBlock`).
#[repr(transparent)]
pub struct SharedControl(UnsafeCell<ControlBlock>);
// SAFETY: the block is written by another process (the agent) and read by the helper thread
// through volatile reads under the seqlock protocol; no Rust references to its contents escape.
unsafe impl Sync for SharedControl {}

#[unsafe(no_mangle)]
pub static LDBG_CONTROL: SharedControl = SharedControl(UnsafeCell::new(ControlBlock {
    magic: CONTROL_MAGIC,
    abi_version: ABI_VERSION,
    helper_pid: 0,
    generation: 0,
    applied_generation: 0,
    data_len: 0,
    _pad: 0,
    data: [0; CONTROL_DATA_LEN],
}));

/// Reads a new control message if the agent published one since `last`. Returns (generation,
/// data).
pub fn read_control(last: u64) -> Option<(u64, Vec<u8>)> {
    let cb = LDBG_CONTROL.0.get();
    for _ in 0..8 {
        // SAFETY: volatile reads of fields of a static that another process may write; the
        // seqlock re-check discards torn reads.
        unsafe {
            let g1 = std::ptr::read_volatile(&raw const (*cb).generation);
            if g1 == last || g1 % 2 == 1 {
                if g1 % 2 == 1 {
                    std::thread::yield_now();
                    continue;
                }
                return None;
            }
            std::sync::atomic::fence(SeqCst);
            let len =
                (std::ptr::read_volatile(&raw const (*cb).data_len) as usize).min(CONTROL_DATA_LEN);
            let mut data = vec![0u8; len];
            std::ptr::copy_nonoverlapping(
                (&raw const (*cb).data).cast::<u8>(),
                data.as_mut_ptr(),
                len,
            );
            std::sync::atomic::fence(SeqCst);
            let g2 = std::ptr::read_volatile(&raw const (*cb).generation);
            if g1 == g2 {
                return Some((g1, data));
            }
        }
    }
    None
}

/// Records the generation applied and our pid in the control block.
pub fn write_control_ack(generation: Option<u64>) {
    let cb = LDBG_CONTROL.0.get();
    // SAFETY: volatile writes of fields the agent only reads.
    unsafe {
        std::ptr::write_volatile(&raw mut (*cb).helper_pid, std::process::id());
        if let Some(g) = generation {
            std::ptr::write_volatile(&raw mut (*cb).applied_generation, g);
        }
    }
}

/// A clone of the queue's sender (call with the GIL held).
pub fn sender() -> Option<Sender<Msg>> {
    TX.lock().clone()
}

/// The process id hits report (updated in a forked child); lock-free because the helper thread
/// reads it without the GIL and a fork may happen at any moment.
pub static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// `major.minor.micro` of the interpreter.
pub static PYTHON_VERSION: OnceLock<String> = OnceLock::new();

fn rfc3339(unix_ns: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `$breakpoint_id`, `$file_path`, `$line_number` of a hit's breakpoint (the start of its
/// properties object).
fn encode_location(o: &mut String, bp: &crate::hot::Bp) {
    o.push_str("{\"$breakpoint_id\":");
    encode_str(o, &bp.spec.id);
    o.push_str(",\"$file_path\":");
    encode_str(o, &bp.spec.file);
    o.push_str(",\"$line_number\":");
    o.push_str(&bp.spec.line.to_string());
}

/// `$pid` and `$python_version`, and the closing brace.
fn encode_process(o: &mut String) {
    use std::fmt::Write;
    let _ = write!(o, ",\"$pid\":{},\"$python_version\":", PID.load(Relaxed));
    encode_str(
        o,
        PYTHON_VERSION.get().map(String::as_str).unwrap_or_default(),
    );
    o.push('}');
}

/// The `properties` object of a `$data_logpoint_hit` event: the rendered message, no locals and
/// no stack.
pub fn encode_log(l: &crate::hot::LogLine) -> String {
    use std::fmt::Write;
    let mut o = String::with_capacity(256 + l.message.len());
    let bp = &l.bp;
    encode_location(&mut o, bp);
    o.push_str(",\"$message\":");
    encode_str(&mut o, &l.message);
    if let Some(log) = &bp.log {
        o.push_str(",\"$message_template\":");
        encode_str(&mut o, &log.template.source);
    }
    o.push_str(",\"$timestamp\":");
    encode_str(&mut o, &rfc3339(l.unix_ns));
    let _ = write!(o, ",\"$thread_id\":{},\"$thread_name\":", l.thread_id);
    encode_str(&mut o, &l.thread_name);
    let c = &bp.counters;
    let _ = write!(
        o,
        ",\"$hit_count\":{},\"$captured_count\":{},\"$rate_limited_count\":{},\"$condition_false_count\":{},\"$capture_us\":{:.1}",
        l.hit_count,
        c.captured.load(Relaxed),
        c.rate_limited.load(Relaxed),
        c.condition_false.load(Relaxed),
        l.capture_ns as f64 / 1000.0
    );
    if let Some(c) = &bp.condition {
        o.push_str(",\"$condition\":");
        encode_str(&mut o, &c.source);
    }
    encode_process(&mut o);
    o
}

/// The `properties` object of a `$data_breakpoint_hit` event, frames and locals in PostHog's
/// shape ([`crate::posthog`]).
pub fn encode_hit(s: &Snapshot) -> String {
    use std::fmt::Write;
    let mut o = String::with_capacity(1024);
    let bp = &s.bp;
    encode_location(&mut o, bp);
    o.push_str(",\"$locals_variables\":");
    crate::posthog::encode_locals(&mut o, &s.locals);
    o.push_str(",\"$stack_trace\":");
    crate::posthog::encode_stack(&mut o, &s.stack);
    o.push_str(",\"$timestamp\":");
    encode_str(&mut o, &rfc3339(s.unix_ns));
    let _ = write!(o, ",\"$thread_id\":{},\"$thread_name\":", s.thread_id);
    encode_str(&mut o, &s.thread_name);
    let c = &bp.counters;
    let _ = write!(
        o,
        ",\"$hit_count\":{},\"$captured_count\":{},\"$rate_limited_count\":{},\"$condition_false_count\":{},\"$capture_us\":{:.1}",
        s.hit_count,
        c.captured.load(Relaxed),
        c.rate_limited.load(Relaxed),
        c.condition_false.load(Relaxed),
        s.capture_ns as f64 / 1000.0
    );
    if s.cuts.any() {
        let t = &s.cuts;
        let _ = write!(
            o,
            ",\"$truncated\":{{\"depth\":{},\"items\":{},\"strings\":{},\"size\":{},\"deadline\":{},\"cycles\":{}}}",
            t.depth, t.items, t.strings, t.size, t.deadline, t.cycles
        );
    }
    if s.locals_more > 0 {
        // Locals past `max_fields`: counted here, not as a pseudo-local (PostHog lists every
        // key of `$locals_variables` as a variable).
        let _ = write!(o, ",\"$locals_not_captured\":{}", s.locals_more);
    }
    if !s.redacted.is_empty() {
        o.push_str(",\"$redacted\":[");
        for (i, n) in s.redacted.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            encode_str(&mut o, n);
        }
        o.push(']');
    }
    if let Some(c) = &bp.condition {
        o.push_str(",\"$condition\":");
        encode_str(&mut o, &c.source);
    }
    encode_process(&mut o);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble() {
        let data: Vec<u8> = (0..(MAX_CHUNK_DATA * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut chunks = Vec::new();
        for_each_chunk(message_kind::HIT, 42, &data, |c| chunks.push(c.to_vec()));
        assert_eq!(chunks.len(), 3);
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.len() <= MAX_CHUNK);
            // SAFETY: test reads a header we wrote; read_unaligned handles alignment.
            let h: ChunkHeader = unsafe { std::ptr::read_unaligned(c.as_ptr().cast()) };
            assert_eq!(h.magic, CHUNK_MAGIC);
            assert_eq!(h.kind, message_kind::HIT);
            assert_eq!(h.msg_id, 42);
            assert_eq!(h.seq as usize, i);
            assert_eq!(h.total_chunks, 3);
            assert_eq!(h.total_len as usize, data.len());
            assert_eq!(h.data_len as usize, c.len() - CHUNK_HEADER_LEN);
            out.extend_from_slice(&c[CHUNK_HEADER_LEN..]);
        }
        assert_eq!(out, data);
        let mut empty = Vec::new();
        for_each_chunk(message_kind::HELLO, 1, &[], |c| empty.push(c.len()));
        assert_eq!(empty, vec![CHUNK_HEADER_LEN]);
    }

    #[test]
    fn packed_records_hold_whole_chunks_up_to_the_limit() {
        let mut records: Vec<Vec<u8>> = Vec::new();
        let mut p = Packer::default();
        let small = vec![b'x'; 700];
        let big = vec![b'y'; MAX_CHUNK_DATA + 10];
        let mut chunks = Vec::new();
        for (id, data) in [(1u64, &small), (2, &big), (3, &small), (4, &small)] {
            for_each_chunk(message_kind::HIT, id, data, |c| chunks.push(c.to_vec()));
        }
        for c in &chunks {
            p.push_with(c, |r| records.push(r.to_vec()));
        }
        p.flush_with(|r| records.push(r.to_vec()));
        // small | big part 1 (full) | big part 2 + small + small
        assert_eq!(records.len(), 3);
        assert!(records.iter().all(|r| r.len() <= MAX_CHUNK));
        assert_eq!(records.concat(), chunks.concat());
        assert_eq!(records[2].len(), CHUNK_HEADER_LEN * 3 + 10 + 1400);
    }
}
