//! The durable on-disk spool: every event is written here before the producer is told it was
//! accepted, and removed only once a sink has delivered it.
//!
//! Layout of the spool directory (created 0700):
//!
//! * `lock`: held with `flock` by the one agent using the directory.
//! * `NNNNNNNNNNNNNNNN.seg`: segments, numbered in write order. Each starts with the 8-byte magic
//!   `LDBGSPL1`, then records: `len: u32 LE`, `crc32(payload): u32 LE`, `payload` (one event's
//!   JSON). The writer only ever appends to the newest ("active") segment and starts a new one
//!   when it reaches `segment_bytes`, and at every start (so a segment torn by a crash is never
//!   appended to).
//! * `cursor`: `"<segment> <offset>"`, how far delivery got inside the oldest segment (written
//!   without fsync: losing it only means re-sending a few events, which PostHog deduplicates by
//!   `uuid`).
//!
//! Crash safety: a record is acknowledged once `write(2)` returned, so it is in the page cache and
//! survives `kill -9` of the agent; a background task `fdatasync`s the active segment every
//! `fsync_interval` (100 ms by default), bounding what a power loss can take. A torn last record
//! (short, or checksum mismatch) ends its segment: it is skipped, counted and logged.
//!
//! Bounded: when the segments on disk would exceed `max_bytes`, new events are refused with
//! [`SpoolError::Full`] and counted as dropped.
use super::Counters;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

/// Magic at the start of every segment.
const SEGMENT_MAGIC: &[u8; 8] = b"LDBGSPL1";
/// Bytes before the first record of a segment.
pub const SEGMENT_HEADER: u64 = SEGMENT_MAGIC.len() as u64;
/// Bytes of a record header (length + checksum).
pub const RECORD_HEADER: u64 = 8;
/// Buffer of the delivery task's segment reader.
const READ_BUFFER: usize = 256 * 1024;
/// A record longer than this is corruption (events are < 1 MiB).
const MAX_RECORD: u32 = 16 * 1024 * 1024;

/// Spool errors.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory cannot be created or read.
    #[error(
        "cannot use the spool directory {dir}: {source} (run the agent as root, or choose another \
         directory with --spool-dir or LIBDEBUGGER_SPOOL_DIR)"
    )]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the spool's lock.
    #[error(
        "the spool directory {dir} is in use by another libdebugger-agent; stop it, or give this \
         one its own --spool-dir"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The spool is full; the event was dropped (and counted).
    #[error("the spool is full ({used} of {max} bytes); event dropped")]
    Full {
        /// Bytes in use.
        used: u64,
        /// The configured maximum.
        max: u64,
    },
    /// Writing or reading a segment failed.
    #[error("spool I/O error on {path}: {source}")]
    Io {
        /// The segment or file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A point in the spool: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Segment number.
    pub segment: u64,
    /// Byte offset within the segment.
    pub offset: u64,
}

struct WriterState {
    file: File,
    active: u64,
    active_len: u64,
    /// Size of every segment on disk, the active one included.
    sizes: BTreeMap<u64, u64>,
    dirty: bool,
    /// A segment was created without syncing the directory (see [`Spool::commit`]); the next
    /// [`Spool::sync`] does it.
    dir_dirty: bool,
}

impl WriterState {
    fn total(&self) -> u64 {
        self.sizes.values().sum()
    }
}

/// The spool. Shared (`Arc`) between the producers' [`super::EventSender`]s, the fsync task and
/// the delivery task's [`SpoolReader`].
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<WriterState>,
    /// Signalled after every append.
    pub(crate) appended: tokio::sync::Notify,
    counters: Arc<Counters>,
    start: Position,
    _lock: File,
}

fn segment_path(dir: &Path, seg: u64) -> PathBuf {
    dir.join(format!("{seg:016}.seg"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, takes its lock, and starts a fresh active
    /// segment. Events already on disk are counted as queued; [`Spool::reader`] delivers them
    /// first, oldest first.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        counters: Arc<Counters>,
    ) -> Result<Arc<Spool>, SpoolError> {
        let dir_err = |source| SpoolError::Dir {
            dir: dir.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("lock"))
            .map_err(dir_err)?;
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(SpoolError::Locked {
                dir: dir.to_owned(),
            });
        }
        let mut sizes = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let name = entry.file_name();
            let Some(seg) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let len = entry.metadata().map_err(dir_err)?.len();
            if len <= SEGMENT_HEADER {
                // Empty (or a header torn at creation): nothing to deliver.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            sizes.insert(seg, len);
        }
        let start = read_cursor(dir)
            .filter(|p| {
                sizes
                    .get(&p.segment)
                    .is_some_and(|len| p.offset >= SEGMENT_HEADER && p.offset <= *len)
            })
            .or_else(|| {
                sizes.keys().next().map(|s| Position {
                    segment: *s,
                    offset: SEGMENT_HEADER,
                })
            });
        // Segments entirely before the cursor were delivered already.
        if let Some(p) = start {
            let stale: Vec<u64> = sizes.range(..p.segment).map(|(s, _)| *s).collect();
            for s in stale {
                let _ = std::fs::remove_file(segment_path(dir, s));
                sizes.remove(&s);
            }
        }
        let active = sizes.keys().next_back().map_or(1, |s| s + 1);
        let file = create_segment(dir, active, true)?;
        sizes.insert(active, SEGMENT_HEADER);
        let start = start.unwrap_or(Position {
            segment: active,
            offset: SEGMENT_HEADER,
        });
        let state = WriterState {
            file,
            active,
            active_len: SEGMENT_HEADER,
            sizes,
            dirty: false,
            dir_dirty: false,
        };
        counters.spool_bytes.store(state.total(), Ordering::Relaxed);
        let spool = Arc::new(Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes,
            state: Mutex::new(state),
            appended: tokio::sync::Notify::new(),
            counters: counters.clone(),
            start,
            _lock: lock,
        });
        // Count what a previous run left behind.
        let mut reader = spool.reader();
        reader.quiet = true;
        let mut queued = 0u64;
        while let Ok(Some(_)) = reader.next_record() {
            queued += 1;
        }
        counters.queued.store(queued, Ordering::Relaxed);
        if queued > 0 {
            tracing::info!(
                events = queued,
                dir = %dir.display(),
                "the spool holds undelivered events from a previous run; delivering them first"
            );
        }
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, WriterState> {
        // A panic while holding the lock leaves the state consistent enough: at worst the
        // active segment ends in a torn record, which readers skip.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record (an encoded event). Returns once it is written (page cache); see the
    /// module documentation for when it reaches the disk.
    pub fn append(&self, payload: &[u8]) -> Result<(), SpoolError> {
        match self.append_many(&[payload]) {
            (_, Some(e)) => Err(e),
            (_, None) => Ok(()),
        }
    }

    /// Appends records in order with one `write(2)` per segment they land in (a burst of events
    /// costs one system call, not one each). Returns how many were written — a prefix — and,
    /// if not all, why the next one was not: the spool is full (those left are dropped and
    /// counted) or a write failed (the records of that write are lost; the segment is closed).
    pub fn append_many(&self, payloads: &[&[u8]]) -> (usize, Option<SpoolError>) {
        let mut st = self.lock();
        let mut done = 0usize;
        let mut buf: Vec<u8> = Vec::new();
        // Records in `buf`, and the segment length once `buf` is written.
        let mut pending = 0usize;
        let mut error = None;
        for payload in payloads {
            let rec_len = RECORD_HEADER + payload.len() as u64;
            let total = st.total() + buf.len() as u64;
            if total + rec_len > self.max_bytes {
                error = Some(SpoolError::Full {
                    used: total,
                    max: self.max_bytes,
                });
                break;
            }
            let len_after = st.active_len + buf.len() as u64;
            if len_after > SEGMENT_HEADER && len_after + rec_len > self.segment_bytes {
                if let Err(e) = self.write_buf(&mut st, &mut buf, pending) {
                    error = Some(e);
                    pending = 0;
                    break;
                }
                done += pending;
                pending = 0;
                if let Err(e) = self.roll(&mut st) {
                    error = Some(e);
                    break;
                }
            }
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&flate2_crc(payload).to_le_bytes());
            buf.extend_from_slice(payload);
            pending += 1;
        }
        if error.is_none() || pending > 0 {
            match self.write_buf(&mut st, &mut buf, pending) {
                Ok(()) => done += pending,
                Err(e) => error = error.or(Some(e)),
            }
        }
        drop(st);
        let dropped = (payloads.len() - done) as u64;
        if let Some(SpoolError::Full { used, max }) = &error {
            let n = self
                .counters
                .dropped_spool_full
                .fetch_add(dropped, Ordering::Relaxed);
            // Logged at the first drop and each time the count passes a power of two.
            if n == 0 || n.ilog2() != (n + dropped).ilog2() {
                tracing::warn!(
                    dropped = n + dropped,
                    used,
                    max,
                    dir = %self.dir.display(),
                    "the event spool is full (is PostHog unreachable?); new events are dropped"
                );
            }
        }
        if done > 0 {
            self.appended.notify_one();
        }
        (done, error)
    }

    /// Writes `buf` (whole records) to the active segment and accounts for them; on failure the
    /// segment may end in a partial record: it is closed (readers skip a torn tail) and writing
    /// continues in a fresh one.
    fn write_buf(
        &self,
        st: &mut WriterState,
        buf: &mut Vec<u8>,
        records: usize,
    ) -> Result<(), SpoolError> {
        if buf.is_empty() {
            return Ok(());
        }
        let active = st.active;
        if let Err(source) = st.file.write_all(buf) {
            buf.clear();
            let _ = self.roll(st);
            return Err(SpoolError::Io {
                path: segment_path(&self.dir, active),
                source,
            });
        }
        st.active_len += buf.len() as u64;
        buf.clear();
        let len = st.active_len;
        st.sizes.insert(active, len);
        st.dirty = true;
        self.counters
            .spool_bytes
            .store(st.total(), Ordering::Relaxed);
        self.counters
            .queued
            .fetch_add(records as u64, Ordering::Relaxed);
        Ok(())
    }

    fn roll(&self, st: &mut WriterState) -> Result<(), SpoolError> {
        let _ = st.file.sync_data();
        self.start_segment(st, true)
    }

    /// Starts the next segment. `sync`: make its directory entry durable now; otherwise the
    /// next [`Spool::sync`] (at most `fsync_interval` later, the bound on what a power loss can
    /// take anyway) does.
    fn start_segment(&self, st: &mut WriterState, sync: bool) -> Result<(), SpoolError> {
        let next = st.active + 1;
        st.file = create_segment(&self.dir, next, sync)?;
        if !sync {
            st.dir_dirty = true;
        }
        st.active = next;
        st.active_len = SEGMENT_HEADER;
        st.sizes.insert(next, SEGMENT_HEADER);
        st.dirty = false;
        Ok(())
    }

    /// `fdatasync`s the active segment if anything was appended since the last call (and the
    /// directory, if a segment was started without).
    pub fn sync(&self) {
        let file = {
            let mut st = self.lock();
            if std::mem::take(&mut st.dir_dirty) {
                sync_dir(&self.dir);
            }
            if !st.dirty {
                return;
            }
            st.dirty = false;
            st.file.try_clone()
        };
        if let Ok(f) = file
            && let Err(e) = f.sync_data()
        {
            tracing::warn!(error = %e, "fdatasync of the event spool failed");
        }
    }

    /// Records that every record before `pos` was delivered (or given up on): `records` of them
    /// since the last commit. Fully delivered segments are deleted.
    pub fn commit(&self, pos: Position, records: u64) {
        let _ = self
            .counters
            .queued
            .try_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(records))
            });
        let mut st = self.lock();
        let done: Vec<u64> = st.sizes.range(..pos.segment).map(|(s, _)| *s).collect();
        for s in done {
            let _ = std::fs::remove_file(segment_path(&self.dir, s));
            st.sizes.remove(&s);
        }
        let consumed = st.sizes.get(&pos.segment).is_some_and(|l| *l == pos.offset);
        let mut cursor = Some(pos);
        if consumed && pos.segment != st.active {
            let _ = std::fs::remove_file(segment_path(&self.dir, pos.segment));
            st.sizes.remove(&pos.segment);
            cursor = None;
        } else if consumed && pos.offset > SEGMENT_HEADER {
            // Everything written so far is delivered: start a fresh segment, drop the old one.
            // Neither is synced here (this runs under the lock the producers append under, once
            // per delivered batch): the old one is deleted, and the new one's directory entry
            // is synced by the fsync task.
            let old = st.active;
            if self.start_segment(&mut st, false).is_ok() {
                let _ = std::fs::remove_file(segment_path(&self.dir, old));
                st.sizes.remove(&old);
                cursor = None;
            }
        }
        self.counters
            .spool_bytes
            .store(st.total(), Ordering::Relaxed);
        drop(st);
        let path = self.dir.join("cursor");
        match cursor {
            Some(p) => {
                let _ = std::fs::write(&path, format!("{} {}\n", p.segment, p.offset));
            }
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// A reader positioned at the oldest undelivered record.
    pub fn reader(self: &Arc<Self>) -> SpoolReader {
        SpoolReader {
            spool: self.clone(),
            pos: self.start,
            file: None,
            quiet: false,
        }
    }

    fn active(&self) -> (u64, u64) {
        let st = self.lock();
        (st.active, st.active_len)
    }

    fn next_segment_after(&self, seg: u64) -> Option<u64> {
        let st = self.lock();
        st.sizes.range(seg + 1..).next().map(|(s, _)| *s)
    }
}

fn flate2_crc(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

fn create_segment(dir: &Path, seg: u64, sync: bool) -> Result<File, SpoolError> {
    let path = segment_path(dir, seg);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    f.write_all(SEGMENT_MAGIC).map_err(io_err(&path))?;
    if sync {
        sync_dir(dir);
    }
    Ok(f)
}

fn read_cursor(dir: &Path) -> Option<Position> {
    let text = std::fs::read_to_string(dir.join("cursor")).ok()?;
    let (s, o) = text.trim().split_once(' ')?;
    Some(Position {
        segment: s.parse().ok()?,
        offset: o.parse().ok()?,
    })
}

/// Reads records oldest first. Only the delivery task reads.
pub struct SpoolReader {
    spool: Arc<Spool>,
    pos: Position,
    /// The open segment: its number, a buffered reader, and the offset the reader is at (reads
    /// continue from there without a seek; records are read through a buffer, not with two
    /// system calls each).
    file: Option<(u64, std::io::BufReader<File>, u64)>,
    /// Counting pass at open: torn records are reported by the delivering reader only.
    quiet: bool,
}

enum ReadOutcome {
    Record(Vec<u8>),
    /// Nothing more in this segment (for now, if it is the active one).
    End,
    /// A torn or corrupt record: the rest of the segment is unusable.
    Torn(&'static str),
}

impl SpoolReader {
    /// Where the next record will be read from.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// The next record and the position just after it, or `None` when everything written so far
    /// has been read.
    pub fn next_record(&mut self) -> Result<Option<(Vec<u8>, Position)>, SpoolError> {
        loop {
            let (active, active_len) = self.spool.active();
            let limit = (self.pos.segment == active).then_some(active_len);
            match self.read_one(limit)? {
                ReadOutcome::Record(r) => return Ok(Some((r, self.pos))),
                ReadOutcome::End if self.pos.segment == active => return Ok(None),
                ReadOutcome::End => {}
                ReadOutcome::Torn(_) if self.quiet => {
                    if self.pos.segment == active {
                        return Ok(None);
                    }
                }
                ReadOutcome::Torn(why) => {
                    self.spool.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        segment = self.pos.segment,
                        offset = self.pos.offset,
                        "skipping a {why} record at the end of a spool segment (left by a crash)"
                    );
                    if self.pos.segment == active {
                        return Ok(None);
                    }
                }
            }
            match self.spool.next_segment_after(self.pos.segment) {
                Some(next) => {
                    self.pos = Position {
                        segment: next,
                        offset: SEGMENT_HEADER,
                    };
                    self.file = None;
                }
                None => return Ok(None),
            }
        }
    }

    fn read_one(&mut self, limit: Option<u64>) -> Result<ReadOutcome, SpoolError> {
        if let Some(limit) = limit
            && self.pos.offset + RECORD_HEADER > limit
        {
            return Ok(ReadOutcome::End);
        }
        let path = segment_path(&self.spool.dir, self.pos.segment);
        if self.file.as_ref().map(|(s, _, _)| *s) != Some(self.pos.segment) {
            match File::open(&path) {
                Ok(f) => {
                    self.file = Some((
                        self.pos.segment,
                        std::io::BufReader::with_capacity(READ_BUFFER, f),
                        0,
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(ReadOutcome::End);
                }
                Err(source) => return Err(SpoolError::Io { path, source }),
            }
        }
        let Some((_, file, at)) = self.file.as_mut() else {
            return Ok(ReadOutcome::End);
        };
        if *at != self.pos.offset {
            file.seek(SeekFrom::Start(self.pos.offset))
                .map_err(io_err(&path))?;
            *at = self.pos.offset;
        }
        let mut header = [0u8; RECORD_HEADER as usize];
        let n = read_full(file, &mut header).map_err(io_err(&path))?;
        *at += n as u64;
        match n {
            0 => return Ok(ReadOutcome::End),
            n if n < header.len() => return Ok(ReadOutcome::Torn("torn")),
            _ => {}
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD {
            return Ok(ReadOutcome::Torn("corrupt"));
        }
        let mut payload = vec![0u8; len as usize];
        let n = read_full(file, &mut payload).map_err(io_err(&path))?;
        *at += n as u64;
        if n < payload.len() {
            return Ok(ReadOutcome::Torn("torn"));
        }
        if flate2_crc(&payload) != crc {
            return Ok(ReadOutcome::Torn("corrupt"));
        }
        self.pos.offset += RECORD_HEADER + u64::from(len);
        Ok(ReadOutcome::Record(payload))
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path, max: u64, seg: u64) -> Arc<Spool> {
        Spool::open(dir, max, seg, Arc::new(Counters::default())).unwrap()
    }

    fn drain(r: &mut SpoolReader) -> Vec<(Vec<u8>, Position)> {
        std::iter::from_fn(|| r.next_record().unwrap()).collect()
    }

    #[test]
    fn order_commit_and_recovery() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = open(d.path(), 1 << 20, 64);
            for i in 0..10u8 {
                s.append(&[i; 20]).unwrap();
            }
            let mut r = s.reader();
            let got = drain(&mut r);
            assert_eq!(got.len(), 10);
            assert!(got.iter().enumerate().all(|(i, (p, _))| p[0] == i as u8));
            // Deliver the first three only.
            s.commit(got[2].1, 3);
            assert_eq!(s.counters.queued.load(Ordering::Relaxed), 7);
        }
        let s = open(d.path(), 1 << 20, 64);
        assert_eq!(s.counters.queued.load(Ordering::Relaxed), 7);
        let mut r = s.reader();
        let got = drain(&mut r);
        assert_eq!(
            got.iter().map(|(p, _)| p[0]).collect::<Vec<_>>(),
            (3..10).collect::<Vec<_>>()
        );
        let end = got.last().unwrap().1;
        s.commit(end, 7);
        s.append(b"new").unwrap();
        assert_eq!(drain(&mut r).len(), 1);
    }

    #[test]
    fn torn_tail_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = open(d.path(), 1 << 20, 1 << 20);
            s.append(b"one").unwrap();
            s.append(b"two").unwrap();
        }
        // Simulate a crash in the middle of a write: a record header promising more bytes.
        let seg = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.extension().is_some_and(|e| e == "seg") && std::fs::metadata(p).unwrap().len() > 8
            })
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[50, 0, 0, 0, 1, 2, 3, 4, b'x']).unwrap();
        drop(f);
        let s = open(d.path(), 1 << 20, 1 << 20);
        s.append(b"three").unwrap();
        let mut r = s.reader();
        let got: Vec<Vec<u8>> = drain(&mut r).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            got,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert_eq!(s.counters.corrupt.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn full_spool_drops_and_counts() {
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path(), 199, 1 << 20); // 8 (header) + 3 × 48 fit, a 4th does not
        let mut ok = 0;
        for _ in 0..10 {
            if s.append(&[0u8; 40]).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 3);
        assert_eq!(s.counters.dropped_spool_full.load(Ordering::Relaxed), 7);
        assert!(matches!(s.append(&[0u8; 40]), Err(SpoolError::Full { .. })));
        assert!(matches!(
            Spool::open(d.path(), 199, 1 << 20, Arc::new(Counters::default())),
            Err(SpoolError::Locked { .. })
        ));
    }
}
