//! Event assembly: turns the records the `ldbg_emit` uprobe writes to the ring buffer back into
//! the helper's messages.
//!
//! A record ([`EmitChunk`], decoded by `bpf::ring`) carries the pid and tid the eBPF program saw
//! and the bytes the helper passed to `ldbg_emit`: one or more chunks back to back, each a
//! [`ChunkHeader`] and that chunk's data (the helper packs small messages into one call).
//! A message larger than one chunk arrives as several records with the same `(pid, msg_id)`.
//! Chunks of one message come from one thread in order, but nothing here relies on that.
//!
//! Memory is bounded: at most [`Limits::max_pending_bytes`] of incomplete messages are held;
//! beyond that, and for messages left incomplete longer than [`Limits::max_age`], the message is
//! dropped and counted in [`Counters`] (never silently).
use crate::bpf::ring::EmitChunk;
use libdebugger_common::helper_abi::{ABI_VERSION, CHUNK_HEADER_LEN, CHUNK_MAGIC, ChunkHeader};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A whole message from one helper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The process the helper runs in, as the kernel sees it (host pid namespace).
    pub pid: u32,
    /// The thread that emitted the last chunk.
    pub tid: u32,
    /// One of `libdebugger_common::helper_abi::message_kind`.
    pub kind: u16,
    pub msg_id: u64,
    pub data: Vec<u8>,
}

/// Bounds of the assembler.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of incomplete messages held at most.
    pub max_pending_bytes: usize,
    /// An incomplete message older than this is dropped.
    pub max_age: Duration,
    /// Largest message accepted (a larger `total_len` is refused at its first chunk).
    pub max_message_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pending_bytes: 64 * 1024 * 1024,
            max_age: Duration::from_secs(10),
            max_message_len: 16 * 1024 * 1024,
        }
    }
}

/// What the assembler saw, for `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Records received.
    pub records: u64,
    /// Messages completed.
    pub messages: u64,
    /// Records that were not a valid chunk (bad magic, ABI version, lengths).
    pub malformed: u64,
    /// Records whose data the uprobe cut (the helper passed more than a chunk's maximum).
    pub truncated: u64,
    /// Incomplete messages dropped (too old, over the memory bound, or their process exited).
    pub incomplete_dropped: u64,
}

struct Pending {
    kind: u16,
    total_chunks: u32,
    total_len: usize,
    received: u32,
    /// Chunk data by sequence number.
    chunks: Vec<Option<Vec<u8>>>,
    bytes: usize,
    started: Instant,
}

/// Reassembles chunked messages.
pub struct Assembler {
    limits: Limits,
    pending: HashMap<(u32, u64), Pending>,
    pending_bytes: usize,
    counters: Counters,
}

impl Assembler {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pending: HashMap::new(),
            pending_bytes: 0,
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Feeds one ring-buffer record (one or more chunks back to back); appends to `out` every
    /// message a chunk of it completes.
    pub fn push(&mut self, rec: &EmitChunk, now: Instant, out: &mut Vec<Message>) {
        self.counters.records += 1;
        if rec.requested_len as usize > rec.payload.len() {
            self.counters.truncated += 1;
            return;
        }
        let mut rest = rec.payload.as_slice();
        loop {
            let Some((chunk, data, tail)) = parse(rest) else {
                self.counters.malformed += 1;
                return;
            };
            if let Some(m) = self.chunk(rec, &chunk, data, now) {
                out.push(m);
            }
            if tail.is_empty() {
                return;
            }
            rest = tail;
        }
    }

    /// One chunk of a record; returns the message it completes.
    fn chunk(
        &mut self,
        rec: &EmitChunk,
        chunk: &ChunkHeader,
        data: &[u8],
        now: Instant,
    ) -> Option<Message> {
        let total_len = chunk.total_len as usize;
        if chunk.total_chunks == 0
            || chunk.seq >= chunk.total_chunks
            || total_len > self.limits.max_message_len
        {
            self.counters.malformed += 1;
            return None;
        }
        if chunk.total_chunks == 1 {
            if data.len() != total_len {
                self.counters.malformed += 1;
                return None;
            }
            self.counters.messages += 1;
            return Some(Message {
                pid: rec.tgid,
                tid: rec.tid,
                kind: chunk.kind,
                msg_id: chunk.msg_id,
                data: data.to_vec(),
            });
        }
        self.expire(now);
        let key = (rec.tgid, chunk.msg_id);
        if self.pending_bytes + data.len() > self.limits.max_pending_bytes {
            // Make room by dropping the oldest incomplete message(s).
            while self.pending_bytes + data.len() > self.limits.max_pending_bytes {
                let Some(oldest) = self
                    .pending
                    .iter()
                    .min_by_key(|(_, p)| p.started)
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                self.drop_pending(oldest);
            }
        }
        let entry = self.pending.entry(key).or_insert_with(|| Pending {
            kind: chunk.kind,
            total_chunks: chunk.total_chunks,
            total_len,
            received: 0,
            chunks: vec![None; chunk.total_chunks as usize],
            bytes: 0,
            started: now,
        });
        if entry.total_chunks != chunk.total_chunks || entry.total_len != total_len {
            self.counters.malformed += 1;
            return None;
        }
        let slot = &mut entry.chunks[chunk.seq as usize];
        if slot.is_none() {
            *slot = Some(data.to_vec());
            entry.received += 1;
            entry.bytes += data.len();
            self.pending_bytes += data.len();
        }
        if entry.received < entry.total_chunks {
            return None;
        }
        let done = self.pending.remove(&key)?;
        self.pending_bytes -= done.bytes;
        let data: Vec<u8> = done.chunks.into_iter().flatten().flatten().collect();
        if data.len() != done.total_len {
            self.counters.malformed += 1;
            return None;
        }
        self.counters.messages += 1;
        Some(Message {
            pid: rec.tgid,
            tid: rec.tid,
            kind: done.kind,
            msg_id: chunk.msg_id,
            data,
        })
    }

    /// Drops incomplete messages older than the age limit.
    pub fn expire(&mut self, now: Instant) {
        let max_age = self.limits.max_age;
        let old: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.started) > max_age)
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            self.drop_pending(k);
        }
    }

    /// Forgets everything pending for a process that exited.
    pub fn forget_process(&mut self, pid: u32) {
        let keys: Vec<_> = self
            .pending
            .keys()
            .filter(|k| k.0 == pid)
            .copied()
            .collect();
        for k in keys {
            self.drop_pending(k);
        }
    }

    fn drop_pending(&mut self, key: (u32, u64)) {
        if let Some(p) = self.pending.remove(&key) {
            self.pending_bytes -= p.bytes;
            self.counters.incomplete_dropped += 1;
        }
    }
}

/// The first chunk of `payload`: its header, its data and what follows it.
fn parse(payload: &[u8]) -> Option<(ChunkHeader, &[u8], &[u8])> {
    let chunk_bytes = payload.get(..CHUNK_HEADER_LEN)?;
    // SAFETY: `chunk_bytes` is exactly size_of::<ChunkHeader>() bytes; the type is repr(C) with
    // only integer fields, so any bytes are a valid value; read_unaligned needs no alignment.
    let chunk: ChunkHeader = unsafe { std::ptr::read_unaligned(chunk_bytes.as_ptr().cast()) };
    if chunk.magic != CHUNK_MAGIC || u32::from(chunk.abi_version) != ABI_VERSION {
        return None;
    }
    let end = CHUNK_HEADER_LEN.checked_add(chunk.data_len as usize)?;
    let data = payload.get(CHUNK_HEADER_LEN..end)?;
    Some((chunk, data, &payload[end..]))
}

/// Encodes a message as the records the uprobe would produce; used by tests and benchmarks.
pub fn encode_records(
    pid: u32,
    tid: u32,
    kind: u16,
    msg_id: u64,
    data: &[u8],
    max_data: usize,
) -> Vec<EmitChunk> {
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(max_data).collect()
    };
    let total = chunks.len() as u32;
    chunks
        .iter()
        .enumerate()
        .map(|(seq, part)| {
            let chunk = ChunkHeader {
                magic: CHUNK_MAGIC,
                abi_version: ABI_VERSION as u16,
                kind,
                msg_id,
                seq: seq as u32,
                total_chunks: total,
                total_len: data.len() as u32,
                data_len: part.len() as u32,
            };
            let mut payload = Vec::with_capacity(CHUNK_HEADER_LEN + part.len());
            payload.extend_from_slice(pod_bytes(&chunk));
            payload.extend_from_slice(part);
            EmitChunk {
                tgid: pid,
                tid,
                requested_len: payload.len() as u32,
                payload,
            }
        })
        .collect()
}

fn pod_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: only called with the repr(C) integer-only headers above, which have explicit
    // padding fields and hence no uninitialised bytes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libdebugger_common::helper_abi::{MAX_CHUNK, MAX_CHUNK_DATA, message_kind};

    /// Pushes a record that completes at most one message.
    fn push1(a: &mut Assembler, rec: &EmitChunk, now: Instant) -> Option<Message> {
        let mut out = Vec::new();
        a.push(rec, now, &mut out);
        assert!(out.len() <= 1, "{out:?}");
        out.pop()
    }

    /// Packs the records' payloads into records of at most MAX_CHUNK bytes, as the helper does.
    fn pack(recs: &[EmitChunk]) -> Vec<EmitChunk> {
        let mut out: Vec<EmitChunk> = Vec::new();
        for r in recs {
            match out.last_mut() {
                Some(last) if last.payload.len() + r.payload.len() <= MAX_CHUNK => {
                    last.payload.extend_from_slice(&r.payload);
                    last.requested_len = last.payload.len() as u32;
                }
                _ => out.push(r.clone()),
            }
        }
        out
    }

    #[test]
    fn a_record_packing_several_chunks_yields_every_message() {
        let mut a = Assembler::new(Limits::default());
        let now = Instant::now();
        let mut recs = Vec::new();
        for id in 0..30u64 {
            recs.extend(encode_records(
                4,
                5,
                message_kind::HIT,
                id,
                &[id as u8; 700],
                MAX_CHUNK_DATA,
            ));
        }
        // A multi-chunk message in between, its last part packed with the small ones after it.
        recs.extend(encode_records(
            4,
            5,
            message_kind::HIT,
            99,
            &[9u8; 20_000],
            MAX_CHUNK_DATA,
        ));
        recs.extend(encode_records(
            4,
            5,
            message_kind::STATS,
            100,
            b"{}",
            MAX_CHUNK_DATA,
        ));
        let packed = pack(&recs);
        assert!(packed.len() < 5, "{} records", packed.len());
        let mut out = Vec::new();
        for r in &packed {
            a.push(r, now, &mut out);
        }
        assert_eq!(out.len(), 32);
        assert!(
            out[..30]
                .iter()
                .enumerate()
                .all(|(i, m)| m.msg_id == i as u64 && m.data == [i as u8; 700])
        );
        assert_eq!((out[30].msg_id, out[30].data.len()), (99, 20_000));
        assert_eq!(
            (out[31].kind, out[31].data.as_slice()),
            (message_kind::STATS, &b"{}"[..])
        );
        assert_eq!(a.counters().malformed, 0);
        // A record whose second chunk is cut short: the first message still arrives, the rest is
        // counted as malformed.
        let mut two = pack(&[
            encode_records(4, 5, 1, 200, b"{\"a\":1}", MAX_CHUNK_DATA).remove(0),
            encode_records(4, 5, 1, 201, b"{\"b\":2}", MAX_CHUNK_DATA).remove(0),
        ])
        .remove(0);
        two.payload.truncate(two.payload.len() - 2);
        two.requested_len = two.payload.len() as u32;
        out.clear();
        a.push(&two, now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(a.counters().malformed, 1);
    }

    #[test]
    fn single_and_multi_chunk_messages_reassemble_in_any_order() {
        let mut a = Assembler::new(Limits::default());
        let now = Instant::now();
        let small = encode_records(7, 8, message_kind::HIT, 1, b"{\"a\":1}", MAX_CHUNK_DATA);
        assert_eq!(small.len(), 1);
        let m = push1(&mut a, &small[0], now).unwrap();
        assert_eq!(
            (m.pid, m.tid, m.kind, m.data.as_slice()),
            (7, 8, message_kind::HIT, &b"{\"a\":1}"[..])
        );

        let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let mut recs = encode_records(7, 9, message_kind::HIT, 2, &big, MAX_CHUNK_DATA);
        assert_eq!(recs.len(), 4);
        recs.swap(0, 3);
        let mut out = None;
        for r in &recs {
            assert!(out.is_none());
            out = push1(&mut a, r, now);
        }
        assert_eq!(out.unwrap().data, big);
        assert_eq!(a.counters().messages, 2);
        assert_eq!(a.pending_bytes, 0);
    }

    #[test]
    fn the_same_msg_id_from_two_processes_does_not_mix() {
        let mut a = Assembler::new(Limits::default());
        let now = Instant::now();
        let x = encode_records(1, 1, message_kind::HIT, 5, &[1u8; 40_000], MAX_CHUNK_DATA);
        let y = encode_records(2, 2, message_kind::HIT, 5, &[2u8; 40_000], MAX_CHUNK_DATA);
        let mut done = Vec::new();
        for (rx, ry) in x.iter().zip(&y) {
            done.extend(push1(&mut a, rx, now));
            done.extend(push1(&mut a, ry, now));
        }
        assert_eq!(done.len(), 2);
        assert!(
            done.iter()
                .all(|m| m.data.iter().all(|b| *b as u32 == m.pid))
        );
    }

    #[test]
    fn garbage_truncation_and_stale_messages_are_counted_not_silent() {
        let mut a = Assembler::new(Limits {
            max_age: Duration::from_secs(1),
            ..Limits::default()
        });
        let now = Instant::now();
        let mut short = encode_records(1, 1, 1, 1, b"x", 100).remove(0);
        short.payload.truncate(3);
        short.requested_len = 3;
        assert!(push1(&mut a, &short, now).is_none());
        let mut bad = encode_records(1, 1, 1, 1, b"x", 100).remove(0);
        bad.payload[0] ^= 0xff; // break the magic
        assert!(push1(&mut a, &bad, now).is_none());
        assert_eq!(a.counters().malformed, 2);

        let mut cut = encode_records(1, 1, 1, 2, b"abc", 100).remove(0);
        cut.requested_len = 100_000; // the helper passed more than the uprobe copies
        assert!(push1(&mut a, &cut, now).is_none());
        assert_eq!(a.counters().truncated, 1);

        let parts = encode_records(1, 1, 1, 3, &[0u8; 40_000], MAX_CHUNK_DATA);
        assert!(push1(&mut a, &parts[0], now).is_none());
        a.expire(now + Duration::from_secs(2));
        assert_eq!(a.counters().incomplete_dropped, 1);
        assert_eq!(a.pending_bytes, 0);
    }

    #[test]
    fn memory_is_bounded_by_dropping_the_oldest_incomplete_message() {
        let mut a = Assembler::new(Limits {
            max_pending_bytes: 20_000,
            ..Limits::default()
        });
        let t0 = Instant::now();
        let first = encode_records(1, 1, 1, 1, &[0u8; 40_000], MAX_CHUNK_DATA);
        let second = encode_records(1, 1, 1, 2, &[0u8; 40_000], MAX_CHUNK_DATA);
        push1(&mut a, &first[0], t0);
        push1(&mut a, &second[0], t0 + Duration::from_millis(1));
        assert_eq!(a.counters().incomplete_dropped, 1);
        assert!(a.pending_bytes <= 20_000);
    }
}
