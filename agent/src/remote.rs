//! Reading and writing another process's memory with `process_vm_readv` / `process_vm_writev`
//! (no ptrace stop needed; root, or the same user with ptrace access).
//!
//! Two ways in, over the same primitives:
//! * free functions taking a pid ([`read`], [`read_u64`], [`read_u32`], [`write`],
//!   [`read_c_string`]), used by [`crate::inject`];
//! * the [`ProcessMemory`] trait, the seam of the CPython object readers in
//!   [`crate::python::memory`]: [`RemoteMemory`] implements it with `process_vm_readv`, and unit
//!   tests implement it over a byte buffer.
use std::io::{IoSlice, IoSliceMut};

use nix::sys::uio::{RemoteIoVec, process_vm_readv, process_vm_writev};
use nix::unistd::Pid;

/// Errors reading or writing a target's memory.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// `process_vm_readv` failed (the process exited, the address is unmapped, or no permission).
    #[error("cannot read {len} bytes at {addr:#x} in pid {pid}: {source}")]
    Read {
        /// The target process.
        pid: i32,
        /// First address read.
        addr: u64,
        /// Bytes asked for.
        len: usize,
        #[source]
        source: nix::Error,
    },
    /// Fewer bytes than asked were readable (the range crosses into unmapped memory).
    #[error("short read at {addr:#x} in pid {pid}: {got} of {len} bytes")]
    Short {
        /// The target process.
        pid: i32,
        /// First address read.
        addr: u64,
        /// Bytes asked for.
        len: usize,
        /// Bytes read.
        got: usize,
    },
    /// `process_vm_writev` failed (the process exited, the address is unmapped or read-only, or
    /// no permission).
    #[error("cannot write {len} bytes at {addr:#x} in pid {pid}: {source}")]
    Write {
        /// The target process.
        pid: i32,
        /// First address written.
        addr: u64,
        /// Bytes to write.
        len: usize,
        #[source]
        source: nix::Error,
    },
    /// Fewer bytes than given were written (the range crosses into unwritable memory).
    #[error("short write at {addr:#x} in pid {pid}: {wrote} of {len} bytes")]
    ShortWrite {
        /// The target process.
        pid: i32,
        /// First address written.
        addr: u64,
        /// Bytes to write.
        len: usize,
        /// Bytes written.
        wrote: usize,
    },
}

/// Read access to a process's memory.
pub trait ProcessMemory {
    /// Fills `buf` from address `addr`, completely or not at all.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), RemoteError>;

    /// Reads a little-endian `u64`.
    fn read_u64(&self, addr: u64) -> Result<u64, RemoteError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a little-endian `u32`.
    fn read_u32(&self, addr: u64) -> Result<u32, RemoteError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads a NUL-terminated string of at most `max` bytes at `addr` (lossy UTF-8). Reads in
    /// small pieces that never cross a page boundary, so a string near the end of a mapping
    /// does not fail as a whole.
    fn read_c_string(&self, addr: u64, max: usize) -> Result<String, RemoteError> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 256];
        while out.len() < max {
            let at = addr + out.len() as u64;
            let to_page_end = (0x1000 - (at & 0xfff)) as usize;
            let n = chunk.len().min(to_page_end).min(max - out.len());
            self.read(at, &mut chunk[..n])?;
            if let Some(z) = chunk[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..z]);
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&chunk[..n]);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Another process's memory, through `process_vm_readv` (needs ptrace access to it).
#[derive(Clone, Copy, Debug)]
pub struct RemoteMemory {
    pid: i32,
}

impl RemoteMemory {
    /// The memory of process `pid`.
    pub fn new(pid: i32) -> Self {
        Self { pid }
    }
}

impl ProcessMemory for RemoteMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), RemoteError> {
        read(self.pid, addr, buf)
    }
}

/// Reads exactly `buf.len()` bytes at `addr` in one `process_vm_readv` call.
pub fn read(pid: i32, addr: u64, buf: &mut [u8]) -> Result<(), RemoteError> {
    let len = buf.len();
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let got = process_vm_readv(Pid::from_raw(pid), &mut [IoSliceMut::new(buf)], &remote).map_err(
        |source| RemoteError::Read {
            pid,
            addr,
            len,
            source,
        },
    )?;
    if got != len {
        return Err(RemoteError::Short {
            pid,
            addr,
            len,
            got,
        });
    }
    Ok(())
}

/// Reads a little-endian `u64` at `addr`.
pub fn read_u64(pid: i32, addr: u64) -> Result<u64, RemoteError> {
    RemoteMemory::new(pid).read_u64(addr)
}

/// Reads a little-endian `u32` at `addr`.
pub fn read_u32(pid: i32, addr: u64) -> Result<u32, RemoteError> {
    RemoteMemory::new(pid).read_u32(addr)
}

/// Reads a NUL-terminated string of at most `max` bytes at `addr` (lossy UTF-8); see
/// [`ProcessMemory::read_c_string`].
pub fn read_c_string(pid: i32, addr: u64, max: usize) -> Result<String, RemoteError> {
    RemoteMemory::new(pid).read_c_string(addr, max)
}

/// Writes all of `data` at `addr` in one `process_vm_writev` call.
pub fn write(pid: i32, addr: u64, data: &[u8]) -> Result<(), RemoteError> {
    let len = data.len();
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let wrote = process_vm_writev(Pid::from_raw(pid), &[IoSlice::new(data)], &remote).map_err(
        |source| RemoteError::Write {
            pid,
            addr,
            len,
            source,
        },
    )?;
    if wrote != len {
        return Err(RemoteError::ShortWrite {
            pid,
            addr,
            len,
            wrote,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_our_own_memory() {
        let pid = std::process::id() as i32;
        let mut target = *b"hello\0world and more";
        let addr = target.as_mut_ptr() as u64;
        assert_eq!(read_c_string(pid, addr, 64).expect("c string"), "hello");
        assert_eq!(read_c_string(pid, addr, 3).expect("cut string"), "hel");
        write(pid, addr, b"HE").expect("write");
        assert_eq!(
            read_u32(pid, addr).expect("u32"),
            u32::from_le_bytes(*b"HEll")
        );
        assert!(matches!(
            read(pid, 0, &mut [0u8; 8]),
            Err(RemoteError::Read { .. })
        ));
    }
}
