//! Reading another process's memory, and reading CPython objects out of it.
//!
//! [`ProcessMemory`] is the seam: [`RemoteMemory`] uses `process_vm_readv`; tests can read from a
//! byte buffer instead.
use super::offsets::CodeLayout;
use serde::Serialize;
use std::io::IoSliceMut;

/// Errors reading a target's memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// `process_vm_readv` failed (the process exited, the address is unmapped, or no permission).
    #[error("cannot read {len} bytes at {addr:#x} in pid {pid}: {source}")]
    Read {
        pid: i32,
        addr: u64,
        len: usize,
        #[source]
        source: nix::Error,
    },
    /// Fewer bytes than asked were readable (the range crosses into unmapped memory).
    #[error("short read at {addr:#x} in pid {pid}: {got} of {len} bytes")]
    Short {
        pid: i32,
        addr: u64,
        len: usize,
        got: usize,
    },
    /// The object at `addr` is not of the expected type.
    #[error("object at {addr:#x} is a `{found}`, expected a `{expected}`")]
    WrongType {
        addr: u64,
        expected: &'static str,
        found: String,
    },
    /// A `str` object in a form this reader does not handle (not compact, or a bad kind).
    #[error("unsupported str object at {addr:#x} (state {state:#x})")]
    UnsupportedStr { addr: u64, state: u32 },
}

/// Read access to a process's memory.
pub trait ProcessMemory {
    /// Fills `buf` from address `addr`, completely or not at all.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Reads a little-endian `u64`.
    fn read_u64(&self, addr: u64) -> Result<u64, MemoryError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a little-endian `u32`.
    fn read_u32(&self, addr: u64) -> Result<u32, MemoryError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

/// Another process's memory, through `process_vm_readv` (needs ptrace access to it).
#[derive(Clone, Copy, Debug)]
pub struct RemoteMemory {
    pid: i32,
}

impl RemoteMemory {
    pub fn new(pid: i32) -> Self {
        Self { pid }
    }
}

impl ProcessMemory for RemoteMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len();
        let remote = [nix::sys::uio::RemoteIoVec {
            base: addr as usize,
            len,
        }];
        let mut local = [IoSliceMut::new(buf)];
        let got = nix::sys::uio::process_vm_readv(
            nix::unistd::Pid::from_raw(self.pid),
            &mut local,
            &remote,
        )
        .map_err(|source| MemoryError::Read {
            pid: self.pid,
            addr,
            len,
            source,
        })?;
        if got != len {
            return Err(MemoryError::Short {
                pid: self.pid,
                addr,
                len,
                got,
            });
        }
        Ok(())
    }
}

/// `ob_type` in every `PyObject`, and `tp_name` in `PyTypeObject` (both stable since 3.0).
const OB_TYPE: u64 = 8;
const TP_NAME: u64 = 24;
/// Longest string this reader returns (characters); longer ones are cut.
pub const MAX_STR_CHARS: u64 = 4096;

/// A code object's identity, as `trace` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CodeInfo {
    pub filename: String,
    pub name: String,
    pub qualname: String,
    pub firstlineno: i32,
}

/// Reads a NUL-terminated C string of at most `max` bytes.
fn read_c_string(mem: &impl ProcessMemory, addr: u64, max: usize) -> Result<String, MemoryError> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 32];
    while out.len() < max {
        // Read byte by byte at the end of a page to avoid crossing into an unmapped one.
        let to_page_end = (0x1000 - ((addr + out.len() as u64) & 0xfff)) as usize;
        let n = chunk.len().min(to_page_end).min(max - out.len());
        mem.read(addr + out.len() as u64, &mut chunk[..n])?;
        if let Some(nul) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..nul]);
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The `tp_name` of the object's type.
pub fn type_name(mem: &impl ProcessMemory, obj: u64) -> Result<String, MemoryError> {
    let ty = mem.read_u64(obj + OB_TYPE)?;
    let name = mem.read_u64(ty + TP_NAME)?;
    read_c_string(mem, name, 64)
}

/// Reads a compact `str` object (every identifier and file name CPython creates is compact).
pub fn read_str(
    mem: &impl ProcessMemory,
    layout: &CodeLayout,
    obj: u64,
) -> Result<String, MemoryError> {
    let found = type_name(mem, obj)?;
    if found != "str" {
        return Err(MemoryError::WrongType {
            addr: obj,
            expected: "str",
            found,
        });
    }
    let length = mem.read_u64(obj + u64::from(layout.unicode_length))?;
    let state = mem.read_u32(obj + u64::from(layout.unicode_state))?;
    let kind = (state >> 2) & 7;
    let compact = (state >> 5) & 1 == 1;
    let ascii = (state >> 6) & 1 == 1;
    if !compact || !matches!(kind, 1 | 2 | 4) {
        return Err(MemoryError::UnsupportedStr { addr: obj, state });
    }
    let chars = length.min(MAX_STR_CHARS);
    let data = obj
        + u64::from(if ascii {
            layout.ascii_data
        } else {
            layout.compact_data
        });
    let mut buf = vec![0u8; (chars * u64::from(kind)) as usize];
    mem.read(data, &mut buf)?;
    Ok(match kind {
        1 => buf.iter().map(|&b| char::from(b)).collect(),
        2 => char::decode_utf16(
            buf.as_chunks::<2>()
                .0
                .iter()
                .map(|c| u16::from_le_bytes(*c)),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        _ => buf
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| char::from_u32(u32::from_le_bytes(*c)).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
    })
}

/// Reads a code object's file name, names and first line. Checks that `code` is a `code` object.
pub fn read_code(
    mem: &impl ProcessMemory,
    layout: &CodeLayout,
    code: u64,
) -> Result<CodeInfo, MemoryError> {
    let found = type_name(mem, code)?;
    if found != "code" {
        return Err(MemoryError::WrongType {
            addr: code,
            expected: "code",
            found,
        });
    }
    let field = |off: u32| mem.read_u64(code + u64::from(off));
    Ok(CodeInfo {
        filename: read_str(mem, layout, field(layout.filename)?)?,
        name: read_str(mem, layout, field(layout.name)?)?,
        qualname: read_str(mem, layout, field(layout.qualname)?)?,
        firstlineno: mem.read_u32(code + u64::from(layout.firstlineno))? as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::offsets::from_table;
    use crate::python::version::Version;

    /// A fake address space: one buffer at `BASE`.
    struct Fake(Vec<u8>);
    const BASE: u64 = 0x1000;

    impl ProcessMemory for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
            let start = addr.checked_sub(BASE).map(|s| s as usize);
            match start.and_then(|s| self.0.get(s..s + buf.len())) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(MemoryError::Short {
                    pid: 0,
                    addr,
                    len: buf.len(),
                    got: 0,
                }),
            }
        }
    }

    impl Fake {
        fn put(&mut self, at: u64, bytes: &[u8]) {
            let at = (at - BASE) as usize;
            self.0[at..at + bytes.len()].copy_from_slice(bytes);
        }
    }

    /// Builds a 3.12-layout compact str at 0x1100 whose type is named `str`.
    fn fake_str(kind: u32, ascii: bool, data: &[u8], length: u64) -> (Fake, CodeLayout) {
        let layout = from_table(Version::major_minor(3, 12)).expect("3.12").code;
        let mut m = Fake(vec![0; 0x1000]);
        let (obj, ty, name) = (0x1100, 0x1400, 0x1600);
        m.put(name, b"str\0");
        m.put(ty + TP_NAME, &name.to_le_bytes());
        m.put(obj + OB_TYPE, &ty.to_le_bytes());
        m.put(
            obj + u64::from(layout.unicode_length),
            &length.to_le_bytes(),
        );
        let state = (kind << 2) | (1 << 5) | (u32::from(ascii) << 6);
        m.put(obj + u64::from(layout.unicode_state), &state.to_le_bytes());
        let at = if ascii {
            layout.ascii_data
        } else {
            layout.compact_data
        };
        m.put(obj + u64::from(at), data);
        (m, layout)
    }

    #[test]
    fn reads_ascii_latin1_ucs2_and_ucs4_strings() {
        let (m, l) = fake_str(1, true, b"probe_me", 8);
        assert_eq!(read_str(&m, &l, 0x1100).expect("ascii"), "probe_me");
        let (m, l) = fake_str(1, false, &[0x63, 0x61, 0x66, 0xe9], 4);
        assert_eq!(read_str(&m, &l, 0x1100).expect("latin-1"), "café");
        let ucs2: Vec<u8> = "héllo→".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let (m, l) = fake_str(2, false, &ucs2, 6);
        assert_eq!(read_str(&m, &l, 0x1100).expect("ucs2"), "héllo→");
        let ucs4: Vec<u8> = "a🐍"
            .chars()
            .flat_map(|c| u32::from(c).to_le_bytes())
            .collect();
        let (m, l) = fake_str(4, false, &ucs4, 2);
        assert_eq!(read_str(&m, &l, 0x1100).expect("ucs4"), "a🐍");
    }

    #[test]
    fn refuses_other_types_and_non_compact_strings() {
        let (mut m, l) = fake_str(1, true, b"x", 1);
        m.put(0x1600, b"int\0");
        assert!(matches!(
            read_str(&m, &l, 0x1100),
            Err(MemoryError::WrongType { .. })
        ));
        let (mut m, l) = fake_str(1, true, b"x", 1);
        m.put(
            0x1100 + u64::from(l.unicode_state),
            &(1u32 << 2).to_le_bytes(),
        );
        assert!(matches!(
            read_str(&m, &l, 0x1100),
            Err(MemoryError::UnsupportedStr { .. })
        ));
        // A huge length is cut to MAX_STR_CHARS instead of allocating gigabytes (the fake has
        // fewer bytes, so the read fails cleanly).
        let (m, l) = fake_str(1, true, b"x", u64::MAX);
        assert!(read_str(&m, &l, 0x1100).is_err());
    }
}
