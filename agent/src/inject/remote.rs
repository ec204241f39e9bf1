//! Reading and writing another process's memory with `process_vm_readv` / `process_vm_writev`
//! (no ptrace stop needed; root, or the same user with ptrace access).
use std::io::{IoSlice, IoSliceMut};

use nix::sys::uio::{RemoteIoVec, process_vm_readv, process_vm_writev};
use nix::unistd::Pid;

/// Reads exactly `buf.len()` bytes at `addr`.
pub fn read(pid: i32, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let len = buf.len();
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    let n = process_vm_readv(Pid::from_raw(pid), &mut [IoSliceMut::new(buf)], &remote)
        .map_err(std::io::Error::from)?;
    if n != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("short read: {n} of {len} bytes at {addr:#x}"),
        ));
    }
    Ok(())
}

/// Reads a little-endian `u64` at `addr`.
pub fn read_u64(pid: i32, addr: u64) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    read(pid, addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Reads a little-endian `u32` at `addr`.
pub fn read_u32(pid: i32, addr: u64) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    read(pid, addr, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Writes all of `data` at `addr` in one `process_vm_writev` call.
pub fn write(pid: i32, addr: u64, data: &[u8]) -> std::io::Result<()> {
    let remote = [RemoteIoVec {
        base: addr as usize,
        len: data.len(),
    }];
    let n = process_vm_writev(Pid::from_raw(pid), &[IoSlice::new(data)], &remote)
        .map_err(std::io::Error::from)?;
    if n != data.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes at {addr:#x}", data.len()),
        ));
    }
    Ok(())
}

/// Reads a NUL-terminated string of at most `max` bytes at `addr` (lossy UTF-8). Reads in
/// small pieces so a string near the end of a mapping does not fail as a whole.
pub fn read_c_string(pid: i32, addr: u64, max: usize) -> std::io::Result<String> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 256];
    while out.len() < max {
        // Stay inside the current page so the read cannot cross into an unmapped one.
        let at = addr + out.len() as u64;
        let to_page_end = (0x1000 - (at & 0xfff)) as usize;
        let n = chunk.len().min(to_page_end).min(max - out.len());
        read(pid, at, &mut chunk[..n])?;
        if let Some(z) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..z]);
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
