//! The 3.11 exception table (`co_exceptiontable`), as written by `Python/compile.c`
//! (`assemble_exception_table`) and read by `Lib/dis.py` (`_parse_exception_table`); format
//! described in `Objects/exception_handling_notes.txt`. Checked against CPython 3.11.2 and 3.11.7.
//!
//! Each entry is four varints: start, length, target (all in code units) and
//! `depth << 1 | lasti`. A varint is big-endian 6-bit chunks, bit 6 (0x40) set on every chunk but
//! the last; the first byte of an entry also has bit 7 (0x80) set.

use super::RewriteError;

/// One row of the exception table: instructions in `start..end` (code units, `end` exclusive)
/// unwind to `target` with the value stack popped to `depth`, pushing `lasti` first if set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionEntry {
    pub start: u32,
    pub end: u32,
    pub target: u32,
    pub depth: u32,
    pub lasti: bool,
}

const CONTINUE: u8 = 0x40;
const ENTRY_START: u8 = 0x80;

/// Decodes a `co_exceptiontable`.
pub fn decode(bytes: &[u8]) -> Result<Vec<ExceptionEntry>, RewriteError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        if bytes[pos] & ENTRY_START == 0 {
            return Err(RewriteError::ExceptionTable {
                offset: pos,
                reason: "entry does not start with the 0x80 marker",
            });
        }
        let start = read_varint(bytes, &mut pos)?;
        let length = read_varint(bytes, &mut pos)?;
        let target = read_varint(bytes, &mut pos)?;
        let depth_lasti = read_varint(bytes, &mut pos)?;
        let end = start
            .checked_add(length)
            .ok_or(RewriteError::ExceptionTable {
                offset: pos,
                reason: "entry end overflows",
            })?;
        out.push(ExceptionEntry {
            start,
            end,
            target,
            depth: depth_lasti >> 1,
            lasti: depth_lasti & 1 == 1,
        });
    }
    Ok(out)
}

/// Encodes entries exactly as the 3.11 compiler does (so `encode(decode(b)) == b`).
pub fn encode(entries: &[ExceptionEntry]) -> Result<Vec<u8>, RewriteError> {
    let mut out = Vec::with_capacity(entries.len() * 4);
    for e in entries {
        if e.end <= e.start {
            return Err(RewriteError::ExceptionTable {
                offset: out.len(),
                reason: "empty or inverted range",
            });
        }
        write_varint(&mut out, e.start, ENTRY_START)?;
        write_varint(&mut out, e.end - e.start, 0)?;
        write_varint(&mut out, e.target, 0)?;
        write_varint(&mut out, (e.depth << 1) | u32::from(e.lasti), 0)?;
    }
    Ok(out)
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<u32, RewriteError> {
    let mut value: u32 = 0;
    loop {
        let Some(&b) = bytes.get(*pos) else {
            return Err(RewriteError::ExceptionTable {
                offset: *pos,
                reason: "truncated varint",
            });
        };
        *pos += 1;
        if value >= 1 << 26 {
            return Err(RewriteError::ExceptionTable {
                offset: *pos,
                reason: "varint too large",
            });
        }
        value = (value << 6) | u32::from(b & 0x3f);
        if b & CONTINUE == 0 {
            return Ok(value);
        }
    }
}

/// `write_except_varint` of compile.c: at most 30 bits, most significant chunk first.
fn write_varint(out: &mut Vec<u8>, value: u32, mut marker: u8) -> Result<(), RewriteError> {
    if value >= 1 << 30 {
        return Err(RewriteError::ExceptionTable {
            offset: out.len(),
            reason: "value does not fit the 30-bit varint",
        });
    }
    for shift in [24u32, 18, 12, 6] {
        if value >= 1 << shift {
            out.push((((value >> shift) & 0x3f) as u8) | CONTINUE | marker);
            marker = 0;
        }
    }
    out.push(((value & 0x3f) as u8) | marker);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::py311::testdata::SAMPLES;

    #[test]
    fn round_trips_real_tables() {
        for s in SAMPLES {
            let entries = decode(s.exceptiontable).expect("decodes");
            let expected: Vec<ExceptionEntry> = s
                .exceptions
                .iter()
                .map(|&(start, end, target, depth, lasti)| ExceptionEntry {
                    start,
                    end,
                    target,
                    depth,
                    lasti,
                })
                .collect();
            assert_eq!(entries, expected, "{}", s.name);
            assert_eq!(
                encode(&entries).expect("encodes"),
                s.exceptiontable,
                "{}",
                s.name
            );
        }
    }

    #[test]
    fn large_values_use_several_chunks() {
        let e = [ExceptionEntry {
            start: 70_000,
            end: 70_100,
            target: 5_000,
            depth: 3,
            lasti: true,
        }];
        let bytes = encode(&e).expect("encodes");
        assert_eq!(bytes[0] & 0xc0, 0xc0);
        assert_eq!(decode(&bytes).expect("decodes"), e);
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(&[0x01]).is_err());
        assert!(decode(&[0x81, 0x41]).is_err());
    }
}
