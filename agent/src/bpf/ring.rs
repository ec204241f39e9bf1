//! Readers of the programs' ring buffers, typed by record.
use super::BpfError;
use aya::maps::{MapData, RingBuf};
use libdebugger_common::bpf::{
    EmitRecordHeader, FrameEntryRecord, ProcEventRecord, proc_event_kind,
};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};

/// A record type that can be decoded from ring-buffer bytes.
pub trait Record: Sized {
    /// The ring buffer map holding these records.
    const MAP: &'static str;
    /// Decodes one ring-buffer entry; `None` for a malformed (short) one.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// Reads a `#[repr(C)]` plain-data value from the front of `bytes`.
fn read_pod<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `T: Pod` (every bit pattern valid, no padding), and `bytes` holds at least
    // size_of::<T>() bytes; read_unaligned copes with the ring's 8-byte alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A watched code object was entered.
pub type FrameEvent = FrameEntryRecord;

impl Record for FrameEntryRecord {
    const MAP: &'static str = "FRAME_EVENTS";
    fn decode(bytes: &[u8]) -> Option<Self> {
        read_pod(bytes)
    }
}

/// A process lifecycle event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcEvent {
    /// Process `pid` called `execve` successfully.
    Exec { pid: u32 },
    /// Task `child` was created by process `parent` (a process or a thread: see
    /// [`libdebugger_common::bpf::ProcEventRecord`]).
    Fork { child: u32, parent: u32 },
    /// Process `pid` exited (its thread-group leader exited).
    Exit { pid: u32 },
}

impl Record for ProcEvent {
    const MAP: &'static str = "PROC_EVENTS";
    fn decode(bytes: &[u8]) -> Option<Self> {
        let r: ProcEventRecord = read_pod(bytes)?;
        match r.kind {
            proc_event_kind::EXEC => Some(Self::Exec { pid: r.tgid }),
            proc_event_kind::FORK => Some(Self::Fork {
                child: r.tgid,
                parent: r.parent_tgid,
            }),
            proc_event_kind::EXIT => Some(Self::Exit { pid: r.tgid }),
            _ => None,
        }
    }
}

/// One `ldbg_emit` call: who made it and the bytes it passed (cut to `MAX_CHUNK`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmitChunk {
    pub tgid: u32,
    pub tid: u32,
    /// The `len` the helper passed; larger than `payload.len()` if the probe cut it.
    pub requested_len: u32,
    /// The bytes copied: a `helper_abi::ChunkHeader` and its data.
    pub payload: Vec<u8>,
}

impl Record for EmitChunk {
    const MAP: &'static str = "EMIT_EVENTS";
    fn decode(bytes: &[u8]) -> Option<Self> {
        let h: EmitRecordHeader = read_pod(bytes)?;
        let data = bytes.get(size_of::<EmitRecordHeader>()..)?;
        let payload = data.get(..h.len as usize)?.to_vec();
        Some(Self {
            tgid: h.tgid,
            tid: h.tid,
            requested_len: h.requested_len,
            payload,
        })
    }
}

/// A ring buffer taken out of the loaded object, read without blocking.
pub struct RingReader<T> {
    ring: RingBuf<MapData>,
    /// Entries that failed to decode (should stay 0: a layout mismatch otherwise).
    pub malformed: u64,
    _record: PhantomData<T>,
}

impl<T> std::fmt::Debug for RingReader<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReader")
            .field("malformed", &self.malformed)
            .finish_non_exhaustive()
    }
}

impl<T: Record> RingReader<T> {
    pub(super) fn new(ebpf: &mut aya::Ebpf) -> Result<Self, BpfError> {
        let map = ebpf
            .take_map(T::MAP)
            .ok_or(BpfError::MissingMap { name: T::MAP })?;
        let ring = RingBuf::try_from(map).map_err(|source| BpfError::Map {
            name: T::MAP,
            source,
        })?;
        Ok(Self {
            ring,
            malformed: 0,
            _record: PhantomData,
        })
    }

    /// Every record available now (possibly none).
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            match T::decode(&item) {
                Some(r) => out.push(r),
                None => self.malformed += 1,
            }
        }
        out
    }

    /// Waits until records are available (tokio), then returns them all.
    pub fn into_async(self) -> std::io::Result<AsyncRingReader<T>> {
        // SAFETY: the fd is the ring buffer's map fd, owned by `self.ring`, which the AsyncFd
        // owns for its whole life; `as_raw_fd` always returns that same fd.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(self, tokio::io::Interest::READABLE)
        }?;
        Ok(AsyncRingReader { fd })
    }
}

impl<T> AsRawFd for RingReader<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

/// A [`RingReader`] driven by the tokio reactor.
pub struct AsyncRingReader<T> {
    fd: tokio::io::unix::AsyncFd<RingReader<T>>,
}

impl<T: Record> AsyncRingReader<T> {
    /// Waits for at least one record and returns every record available.
    pub async fn next_batch(&mut self) -> std::io::Result<Vec<T>> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let batch = guard.get_inner_mut().drain();
            guard.clear_ready();
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }
}
