//! The 3.11 location table (`co_linetable`), format in `Objects/locations.md`; encoder mirrors
//! `write_location_info_entry` of `Python/compile.c` (3.11 writes one entry per instruction,
//! split into chunks of at most 8 code units, never merging instructions), so that
//! `encode(decode(t)) == t` for compiler output. Checked against CPython 3.11.2 and 3.11.7.

use super::RewriteError;

/// A source position as the 3.11 compiler stores it: -1 means "unknown" (shown as None by
/// `co_positions()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: i32,
    pub end_line: i32,
    pub col: i32,
    pub end_col: i32,
}

impl Pos {
    /// A position on `line` with no column information (the "no column" entry kind).
    pub fn line_only(line: i32) -> Self {
        Pos {
            line,
            end_line: line,
            col: -1,
            end_col: -1,
        }
    }
}

/// One code unit's location: `None` for "no location" (artificial instructions).
pub type UnitPos = Option<Pos>;

const KIND_ONE_LINE0: u8 = 10;
const KIND_NO_COLUMNS: u8 = 13;
const KIND_LONG: u8 = 14;
const KIND_NONE: u8 = 15;

/// Decodes a `co_linetable` into one location per code unit.
pub fn decode(bytes: &[u8], firstlineno: i32) -> Result<Vec<UnitPos>, RewriteError> {
    let err = |offset: usize, reason: &'static str| RewriteError::LineTable { offset, reason };
    let mut out = Vec::with_capacity(bytes.len());
    let mut line = firstlineno;
    let mut pos = 0;
    while pos < bytes.len() {
        let first = bytes[pos];
        if first & 0x80 == 0 {
            return Err(err(pos, "entry does not start with bit 7 set"));
        }
        pos += 1;
        let kind = (first >> 3) & 15;
        let len = usize::from(first & 7) + 1;
        let unit = match kind {
            0..=9 => {
                let b = *bytes.get(pos).ok_or(err(pos, "truncated short form"))?;
                pos += 1;
                let col = i32::from(kind) * 8 + i32::from((b >> 4) & 7);
                Some(Pos {
                    line,
                    end_line: line,
                    col,
                    end_col: col + i32::from(b & 15),
                })
            }
            KIND_ONE_LINE0..=12 => {
                let (Some(&col), Some(&end_col)) = (bytes.get(pos), bytes.get(pos + 1)) else {
                    return Err(err(pos, "truncated one-line form"));
                };
                pos += 2;
                line += i32::from(kind - KIND_ONE_LINE0);
                Some(Pos {
                    line,
                    end_line: line,
                    col: i32::from(col),
                    end_col: i32::from(end_col),
                })
            }
            KIND_NO_COLUMNS => {
                line += read_svarint(bytes, &mut pos)?;
                Some(Pos::line_only(line))
            }
            KIND_LONG => {
                line += read_svarint(bytes, &mut pos)?;
                let end_line = line + read_varint(bytes, &mut pos)?;
                let col = read_varint(bytes, &mut pos)? - 1;
                let end_col = read_varint(bytes, &mut pos)? - 1;
                Some(Pos {
                    line,
                    end_line,
                    col,
                    end_col,
                })
            }
            _ => None,
        };
        out.extend(std::iter::repeat_n(unit, len));
    }
    Ok(out)
}

/// Encodes one location per code unit. `is_instr_start(i)` says whether unit `i` starts an
/// instruction (EXTENDED_ARG prefixes included): like the compiler, entries never span two
/// instructions.
pub fn encode(
    units: &[UnitPos],
    is_instr_start: impl Fn(usize) -> bool,
    firstlineno: i32,
) -> Result<Vec<u8>, RewriteError> {
    let mut out = Vec::with_capacity(units.len() * 2);
    let mut line = firstlineno;
    let mut i = 0;
    while i < units.len() {
        let unit = units[i];
        let mut len = 1;
        while len < 8 && i + len < units.len() && !is_instr_start(i + len) && units[i + len] == unit
        {
            len += 1;
        }
        write_entry(&mut out, unit, len as u8, &mut line)?;
        i += len;
    }
    Ok(out)
}

fn first_byte(kind: u8, len: u8) -> u8 {
    0x80 | (kind << 3) | (len - 1)
}

fn write_entry(
    out: &mut Vec<u8>,
    unit: UnitPos,
    len: u8,
    line: &mut i32,
) -> Result<(), RewriteError> {
    let Some(p) = unit else {
        out.push(first_byte(KIND_NONE, len));
        return Ok(());
    };
    let delta = p.line - *line;
    if p.col < 0 || p.end_col < 0 {
        if p.end_line == p.line || p.end_line == -1 {
            out.push(first_byte(KIND_NO_COLUMNS, len));
            write_svarint(out, delta);
            *line = p.line;
            return Ok(());
        }
    } else if p.end_line == p.line {
        if delta == 0 && p.col < 80 && p.end_col - p.col < 16 && p.end_col >= p.col {
            out.push(first_byte((p.col / 8) as u8, len));
            out.push((((p.col % 8) as u8) << 4) | ((p.end_col - p.col) as u8));
            return Ok(());
        }
        if (0..3).contains(&delta) && p.col < 128 && p.end_col < 128 {
            out.push(first_byte(KIND_ONE_LINE0 + delta as u8, len));
            out.push(p.col as u8);
            out.push(p.end_col as u8);
            *line = p.line;
            return Ok(());
        }
    }
    if p.end_line < p.line {
        return Err(RewriteError::LineTable {
            offset: out.len(),
            reason: "end line before start line",
        });
    }
    out.push(first_byte(KIND_LONG, len));
    write_svarint(out, delta);
    write_varint(out, (p.end_line - p.line) as u32);
    write_varint(out, (p.col + 1) as u32);
    write_varint(out, (p.end_col + 1) as u32);
    *line = p.line;
    Ok(())
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<i32, RewriteError> {
    let mut value: u32 = 0;
    let mut shift = 0;
    loop {
        let Some(&b) = bytes.get(*pos) else {
            return Err(RewriteError::LineTable {
                offset: *pos,
                reason: "truncated varint",
            });
        };
        *pos += 1;
        if shift > 30 {
            return Err(RewriteError::LineTable {
                offset: *pos,
                reason: "varint too large",
            });
        }
        value |= u32::from(b & 0x3f) << shift;
        shift += 6;
        if b & 0x40 == 0 {
            return i32::try_from(value).map_err(|_| RewriteError::LineTable {
                offset: *pos,
                reason: "varint too large",
            });
        }
    }
}

fn read_svarint(bytes: &[u8], pos: &mut usize) -> Result<i32, RewriteError> {
    let v = read_varint(bytes, pos)?;
    Ok(if v & 1 == 1 { -(v >> 1) } else { v >> 1 })
}

fn write_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 64 {
        out.push(0x40 | (v & 0x3f) as u8);
        v >>= 6;
    }
    out.push(v as u8);
}

fn write_svarint(out: &mut Vec<u8>, v: i32) {
    let u = if v < 0 {
        (v.unsigned_abs() << 1) | 1
    } else {
        (v as u32) << 1
    };
    write_varint(out, u);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::py311::bytecode::{OpcodeTable, decode_instructions};
    use crate::py311::testdata::SAMPLES;

    fn as_positions(u: &UnitPos) -> (Option<i32>, Option<i32>, Option<i32>, Option<i32>) {
        let opt = |v: i32| (v >= 0).then_some(v);
        match u {
            None => (None, None, None, None),
            Some(p) => (opt(p.line), opt(p.end_line), opt(p.col), opt(p.end_col)),
        }
    }

    #[test]
    fn decodes_like_co_positions_and_round_trips() {
        let ops = OpcodeTable::cpython_3_11();
        for s in SAMPLES {
            let units = decode(s.linetable, s.firstlineno).expect("decodes");
            let got: Vec<_> = units.iter().map(as_positions).collect();
            assert_eq!(got, s.positions, "{}", s.name);
            let instrs = decode_instructions(s.code, &ops).expect("instructions");
            let mut starts = vec![false; units.len()];
            for ins in &instrs {
                starts[ins.offset as usize] = true;
            }
            let again = encode(&units, |i| starts[i], s.firstlineno).expect("encodes");
            assert_eq!(again, s.linetable, "{}", s.name);
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let units = vec![
            Some(Pos {
                line: 10,
                end_line: 10,
                col: 4,
                end_col: 9,
            }),
            Some(Pos {
                line: 11,
                end_line: 11,
                col: 100,
                end_col: 120,
            }),
            Some(Pos::line_only(5)),
            Some(Pos {
                line: 500,
                end_line: 503,
                col: 200,
                end_col: 3,
            }),
            None,
            Some(Pos {
                line: 1,
                end_line: 2,
                col: -1,
                end_col: -1,
            }),
        ];
        let bytes = encode(&units, |_| true, 10).expect("encodes");
        assert_eq!(decode(&bytes, 10).expect("decodes"), units);
    }
}
