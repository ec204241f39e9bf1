//! The agent → helper control path: the agent writes `LDBG_CONTROL` in the target with
//! `process_vm_writev` (the process is never stopped) under the seqlock protocol of
//! [`libdebugger_common::helper_abi::ControlBlock`]; the helper's thread polls it and acks by
//! writing `applied_generation`.
//!
//! Publishing, with `g` the last even generation:
//! 1. write `generation = g + 1` (odd: "being written"; a reader that sees it waits),
//! 2. write `data_len` and `data` (one `process_vm_writev` with two remote pieces),
//! 3. write `generation = g + 2` (even, new).
//!
//! Each step is a separate syscall, so they reach the target's memory in program order; on
//! x86_64 (TSO) the helper's CPU observes those stores in the same order. The helper copies the
//! data between two reads of `generation` and retries if they differ or are odd, so it never
//! applies a torn write. One writer per process (the agent) is assumed; a new agent continues
//! from the generation it finds (an odd one, left by an agent killed mid-write, is completed).
use std::time::{Duration, Instant};

use libdebugger_common::helper_abi::{
    ABI_VERSION, CONTROL_DATA_LEN, CONTROL_MAGIC, control_offsets,
};

use super::Injected;
use crate::remote::{self, RemoteError};

/// Why a control-block operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Reading or writing the block failed (most often: the process exited).
    #[error("cannot access the control block of process {pid} at {addr:#x}")]
    Memory {
        pid: i32,
        addr: u64,
        #[source]
        source: RemoteError,
    },
    /// The block does not carry the expected magic / ABI version.
    #[error(
        "process {pid}: the control block at {addr:#x} has magic {magic:#x} and ABI {abi}, expected {CONTROL_MAGIC:#x} and ABI {ABI_VERSION}: the helper is from another libdebugger version; restart the process"
    )]
    Mismatch {
        pid: i32,
        addr: u64,
        magic: u64,
        abi: u32,
    },
    /// The payload does not fit in the block.
    #[error("control data of {len} bytes does not fit the {CONTROL_DATA_LEN}-byte control block")]
    TooLarge { len: usize },
    /// The payload could not be serialised.
    #[error("cannot serialise the control data")]
    Json(#[source] serde_json::Error),
    /// The helper did not ack a generation in time.
    #[error(
        "the helper in process {pid} did not apply generation {generation} within {timeout:?} (last applied: {applied})"
    )]
    NotApplied {
        pid: i32,
        generation: u64,
        applied: u64,
        timeout: Duration,
    },
}

/// Writes the control block of one injected process.
#[derive(Debug)]
pub struct ControlWriter {
    pid: i32,
    addr: u64,
    /// Last even generation published (or found).
    generation: u64,
}

impl ControlWriter {
    /// Opens the control block of an injected process, checking magic and ABI version.
    pub fn new(injected: &Injected) -> Result<Self, ControlError> {
        Self::at(injected.pid, injected.control_addr)
    }

    /// Opens the control block at a known address.
    pub fn at(pid: i32, addr: u64) -> Result<Self, ControlError> {
        let mut w = Self {
            pid,
            addr,
            generation: 0,
        };
        let magic = w.read_u64(control_offsets::MAGIC)?;
        let abi = remote::read_u32(pid, addr + control_offsets::ABI_VERSION as u64)
            .map_err(|source| w.mem_err(source))?;
        if magic != CONTROL_MAGIC || abi != ABI_VERSION {
            return Err(ControlError::Mismatch {
                pid,
                addr,
                magic,
                abi,
            });
        }
        let g = w.read_u64(control_offsets::GENERATION)?;
        // Odd: a previous writer died mid-publish; the next publish starts from g (odd) and
        // ends even, so readers see a fresh generation either way.
        w.generation = g & !1;
        Ok(w)
    }

    /// Opens the control block of a helper of another ABI version, checking only the magic
    /// that guarantees the header's layout; for publishing
    /// [`libdebugger_common::helper_abi::DISARM`] and nothing else.
    pub fn foreign(pid: i32, addr: u64) -> Result<Self, ControlError> {
        let mut w = Self {
            pid,
            addr,
            generation: 0,
        };
        let magic = w.read_u64(control_offsets::MAGIC)?;
        if magic != CONTROL_MAGIC {
            let abi = remote::read_u32(pid, addr + control_offsets::ABI_VERSION as u64)
                .map_err(|source| w.mem_err(source))?;
            return Err(ControlError::Mismatch {
                pid,
                addr,
                magic,
                abi,
            });
        }
        w.generation = w.read_u64(control_offsets::GENERATION)? & !1;
        Ok(w)
    }

    /// The pid this writer targets.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The last generation published (or found when opened).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn mem_err(&self, source: RemoteError) -> ControlError {
        ControlError::Memory {
            pid: self.pid,
            addr: self.addr,
            source,
        }
    }

    fn read_u64(&self, off: usize) -> Result<u64, ControlError> {
        remote::read_u64(self.pid, self.addr + off as u64).map_err(|e| self.mem_err(e))
    }

    fn write_u64(&self, off: usize, v: u64) -> Result<(), ControlError> {
        remote::write(self.pid, self.addr + off as u64, &v.to_le_bytes())
            .map_err(|e| self.mem_err(e))
    }

    /// Publishes `data` under the seqlock protocol; returns the new (even) generation.
    pub fn publish(&mut self, data: &[u8]) -> Result<u64, ControlError> {
        if data.len() > CONTROL_DATA_LEN {
            return Err(ControlError::TooLarge { len: data.len() });
        }
        // If another writer (an older agent) moved the generation on, continue from there.
        let current = self.read_u64(control_offsets::GENERATION)?;
        let base = (current & !1).max(self.generation);
        let odd = base + 1;
        let even = base + 2;
        self.write_u64(control_offsets::GENERATION, odd)?;
        // data_len (u32) and data are one contiguous range (_pad between them is written as 0).
        let mut buf = Vec::with_capacity(8 + data.len());
        buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(data);
        debug_assert_eq!(control_offsets::DATA, control_offsets::DATA_LEN + 8);
        remote::write(self.pid, self.addr + control_offsets::DATA_LEN as u64, &buf)
            .map_err(|e| self.mem_err(e))?;
        self.write_u64(control_offsets::GENERATION, even)?;
        self.generation = even;
        Ok(even)
    }

    /// Serialises `value` as JSON and publishes it.
    pub fn publish_json<T: serde::Serialize>(&mut self, value: &T) -> Result<u64, ControlError> {
        let data = serde_json::to_vec(value).map_err(ControlError::Json)?;
        self.publish(&data)
    }

    /// The generation the helper last applied.
    pub fn applied(&self) -> Result<u64, ControlError> {
        self.read_u64(control_offsets::APPLIED_GENERATION)
    }

    /// Waits until the helper has applied `generation` (or a later one), polling every 2 ms.
    pub fn wait_applied(&self, generation: u64, timeout: Duration) -> Result<(), ControlError> {
        let deadline = Instant::now() + timeout;
        loop {
            let applied = self.applied()?;
            if applied >= generation {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ControlError::NotApplied {
                    pid: self.pid,
                    generation,
                    applied,
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use libdebugger_common::helper_abi::ControlBlock;

    use super::*;

    /// A control block in this very process (`process_vm_writev` to oneself needs no
    /// privilege), only ever accessed through a raw pointer since the kernel writes it behind
    /// the compiler's back.
    struct Block(*mut ControlBlock);

    impl Block {
        fn new(generation: u64, abi: u32) -> Self {
            // SAFETY: ControlBlock is plain integers and bytes, so all-zero is a valid value.
            let b: Box<ControlBlock> = unsafe { Box::new_zeroed().assume_init() };
            let p = Box::into_raw(b);
            // SAFETY: `p` is a valid, exclusively owned allocation.
            unsafe {
                (*p).magic = CONTROL_MAGIC;
                (*p).abi_version = abi;
                (*p).generation = generation;
            }
            Self(p)
        }

        fn addr(&self) -> u64 {
            self.0 as u64
        }

        /// (generation, data) as the helper would read them.
        fn read_back(&self) -> (u64, Vec<u8>) {
            // SAFETY: `self.0` is valid until Drop; volatile reads because the kernel wrote it.
            unsafe {
                let g = std::ptr::read_volatile(&raw const (*self.0).generation);
                let len = std::ptr::read_volatile(&raw const (*self.0).data_len) as usize;
                let data = &raw const (*self.0).data;
                let bytes = (0..len)
                    .map(|i| std::ptr::read_volatile(data.cast::<u8>().add(i)))
                    .collect();
                (g, bytes)
            }
        }
    }

    impl Drop for Block {
        fn drop(&mut self) {
            // SAFETY: created by Box::into_raw in `new`, freed once.
            drop(unsafe { Box::from_raw(self.0) });
        }
    }

    fn me() -> i32 {
        std::process::id() as i32
    }

    #[test]
    fn publishes_under_the_seqlock_protocol() {
        let b = Block::new(0, ABI_VERSION);
        let mut w = ControlWriter::at(me(), b.addr()).expect("open");
        assert_eq!(w.generation(), 0);
        let g1 = w.publish(b"{\"a\":1}").expect("publish");
        assert_eq!(g1, 2);
        assert_eq!(b.read_back(), (2, b"{\"a\":1}".to_vec()));
        let g2 = w
            .publish_json(&serde_json::json!({"b": [1, 2]}))
            .expect("publish");
        assert_eq!(g2, 4);
        assert_eq!(b.read_back(), (4, b"{\"b\":[1,2]}".to_vec()));
        // Nobody applies it here: the wait times out with a clear error.
        assert!(matches!(
            w.wait_applied(g2, Duration::from_millis(10)),
            Err(ControlError::NotApplied { applied: 0, .. })
        ));
    }

    #[test]
    fn a_new_writer_continues_and_completes_a_torn_generation() {
        // An agent died between writing the odd and the even generation.
        let b = Block::new(7, ABI_VERSION);
        let mut w = ControlWriter::at(me(), b.addr()).expect("open");
        assert_eq!(w.generation(), 6);
        assert_eq!(w.publish(b"x").expect("publish"), 8);
        assert_eq!(b.read_back(), (8, b"x".to_vec()));
    }

    #[test]
    fn a_helper_of_another_abi_can_be_disarmed_but_not_opened_normally() {
        let other = Block::new(5, ABI_VERSION + 1);
        assert!(ControlWriter::at(me(), other.addr()).is_err());
        let mut w = ControlWriter::foreign(me(), other.addr()).expect("same magic");
        let disarm = libdebugger_common::helper_abi::DISARM;
        assert_eq!(w.publish(disarm).expect("publish"), 6);
        assert_eq!(other.read_back(), (6, disarm.to_vec()));
        // Another magic: another header layout, never written.
        // SAFETY: `other.0` is valid until Drop.
        unsafe { (*other.0).magic = u64::from_le_bytes(*b"LDBGCTL2") };
        assert!(matches!(
            ControlWriter::foreign(me(), other.addr()),
            Err(ControlError::Mismatch { .. })
        ));
    }

    #[test]
    fn refuses_wrong_abi_and_oversized_data() {
        let bad = Block::new(0, ABI_VERSION + 1);
        assert!(matches!(
            ControlWriter::at(me(), bad.addr()),
            Err(ControlError::Mismatch { .. })
        ));
        let b = Block::new(0, ABI_VERSION);
        let mut w = ControlWriter::at(me(), b.addr()).expect("open");
        assert!(matches!(
            w.publish(&vec![b'x'; CONTROL_DATA_LEN + 1]),
            Err(ControlError::TooLarge { .. })
        ));
    }
}
