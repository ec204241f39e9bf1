//! Pure byte-level rewriting of 3.11 bytecode: decoding `co_code`, choosing where a line's hook
//! call goes, inserting it, and fixing up jumps, `EXTENDED_ARG` prefixes, the exception table
//! and the location table. No Python here: the opcode metadata comes in as an [`OpcodeTable`].
//!
//! 3.11 facts relied on (checked against 3.11.2 and 3.11.7, `Lib/dis.py`, `Python/compile.c`,
//! `Python/ceval.c`):
//! * a code unit is two bytes (opcode, arg); `EXTENDED_ARG` prefixes supply the high bytes of the
//!   next instruction's argument; instructions are followed by `_inline_cache_entries[op]` zeroed
//!   CACHE units in `co_code`;
//! * every jump is relative: forward `target = after + arg`, backward `target = after - arg`,
//!   where `after` is the unit after the jump's opcode and its caches (3.11 jumps have none);
//!   jump targets are the first unit of an instruction, prefixes included;
//! * the line tracer (`maybe_call_line_trace`) reports a line when the instruction's line differs
//!   from the previously executed one, or on a backward jump that does not land on `SEND`, and
//!   always for the first instruction after the first `RESUME`.

use super::RewriteError;
use super::exctable::{self, ExceptionEntry};
use super::linetable::{self, Pos, UnitPos};

/// How an opcode jumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JumpKind {
    /// Not a jump.
    None,
    /// Relative, forwards.
    Forward,
    /// Relative, backwards.
    Backward,
    /// Absolute, in code units (none in 3.11; kept so that a table that has some still works).
    Absolute,
}

/// Opcode metadata of the running interpreter.
#[derive(Clone, Debug)]
pub struct OpcodeTable {
    /// Inline cache units after each opcode.
    pub caches: [u8; 256],
    pub jump: [JumpKind; 256],
    /// Opcodes after which execution never continues with the next instruction.
    pub no_fallthrough: [bool; 256],
    pub extended_arg: u8,
    pub resume: u8,
    pub push_null: u8,
    pub load_const: u8,
    pub precall: u8,
    pub call: u8,
    pub pop_top: u8,
    pub jump_forward: u8,
    pub send: u8,
    pub kw_names: u8,
    pub make_function: u8,
}

impl OpcodeTable {
    /// The table of every CPython 3.11 final release (checked against 3.11.2 and 3.11.7 by
    /// `builtin_table_is_the_interpreters`). Used unless the interpreter's own `opcode` module is
    /// already loaded (see `py311::opcode_table`).
    pub fn cpython_3_11() -> Self {
        let mut caches = [0u8; 256];
        for (op, n) in [
            (25, 4),
            (60, 1),
            (92, 1),
            (95, 4),
            (106, 4),
            (107, 2),
            (116, 5),
            (122, 1),
            (160, 10),
            (166, 1),
            (171, 4),
        ] {
            caches[op] = n;
        }
        let mut jump = [JumpKind::None; 256];
        for op in [93, 110, 111, 112, 114, 115, 123, 128, 129] {
            jump[op] = JumpKind::Forward;
        }
        for op in [134, 140, 173, 174, 175, 176] {
            jump[op] = JumpKind::Backward;
        }
        let mut no_fallthrough = [false; 256];
        for op in [110, 140, 134, 83, 130, 119] {
            no_fallthrough[op] = true;
        }
        OpcodeTable {
            caches,
            jump,
            no_fallthrough,
            extended_arg: 144,
            resume: 151,
            push_null: 2,
            load_const: 100,
            precall: 166,
            call: 171,
            pop_top: 1,
            jump_forward: 110,
            send: 123,
            kw_names: 172,
            make_function: 132,
        }
    }
}

/// One logical instruction of `co_code`, its `EXTENDED_ARG` prefixes included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instr {
    /// Code unit of the first prefix (or of the opcode when there is none).
    pub offset: u32,
    pub op: u8,
    /// The full argument, prefixes folded in.
    pub arg: u32,
    pub n_ext: u32,
    pub n_cache: u32,
}

impl Instr {
    /// Code units taken, prefixes and caches included.
    pub fn size(&self) -> u32 {
        self.n_ext + 1 + self.n_cache
    }

    /// The unit after the opcode and its caches: what relative jumps count from.
    pub fn after(&self) -> u32 {
        self.offset + self.size()
    }

    /// Where this instruction jumps, in code units, if it is a jump.
    pub fn target(&self, ops: &OpcodeTable) -> Option<i64> {
        match ops.jump[usize::from(self.op)] {
            JumpKind::None => None,
            JumpKind::Forward => Some(i64::from(self.after()) + i64::from(self.arg)),
            JumpKind::Backward => Some(i64::from(self.after()) - i64::from(self.arg)),
            JumpKind::Absolute => Some(i64::from(self.arg)),
        }
    }
}

/// Splits `co_code` into logical instructions.
pub fn decode_instructions(code: &[u8], ops: &OpcodeTable) -> Result<Vec<Instr>, RewriteError> {
    if !code.len().is_multiple_of(2) {
        return Err(RewriteError::Code {
            offset: code.len() as u32 / 2,
            reason: "odd number of bytes",
        });
    }
    let units = (code.len() / 2) as u32;
    let mut out = Vec::with_capacity(code.len() / 4);
    let mut i = 0u32;
    while i < units {
        let start = i;
        let mut arg = 0u32;
        let mut n_ext = 0u32;
        loop {
            let (Some(&op), Some(&a)) = (code.get(2 * i as usize), code.get(2 * i as usize + 1))
            else {
                return Err(RewriteError::Code {
                    offset: i,
                    reason: "EXTENDED_ARG at the end of the code",
                });
            };
            arg = (arg << 8) | u32::from(a);
            i += 1;
            if op == ops.extended_arg {
                n_ext += 1;
                if n_ext > 3 {
                    return Err(RewriteError::Code {
                        offset: start,
                        reason: "more than three EXTENDED_ARG prefixes",
                    });
                }
                continue;
            }
            let n_cache = u32::from(ops.caches[usize::from(op)]);
            if i + n_cache > units {
                return Err(RewriteError::Code {
                    offset: start,
                    reason: "inline caches run past the end of the code",
                });
            }
            i += n_cache;
            out.push(Instr {
                offset: start,
                op,
                arg,
                n_ext,
                n_cache,
            });
            break;
        }
    }
    Ok(out)
}

/// The code object's parts that the rewrite changes.
#[derive(Clone, Copy, Debug)]
pub struct CodeParts<'a> {
    pub code: &'a [u8],
    pub linetable: &'a [u8],
    pub exceptiontable: &'a [u8],
    pub firstlineno: i32,
}

/// What to insert: for each requested line, the `co_consts` index of its int; plus the indices
/// of the hook and of the original code object.
#[derive(Clone, Debug)]
pub struct HookConsts {
    pub hook: u32,
    pub code: u32,
    /// (line, index of the int constant `line`).
    pub lines: Vec<(u32, u32)>,
}

/// Where a call was inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inserted {
    pub line: u32,
    /// Code unit of the inserted `PUSH_NULL` in the new code.
    pub offset: u32,
    /// Whether a `JUMP_FORWARD` in front of it lets fall-through from the same line skip it.
    pub skip_jump: bool,
}

/// The rewritten parts.
#[derive(Clone, Debug)]
pub struct Rewritten {
    pub code: Vec<u8>,
    pub linetable: Vec<u8>,
    pub exceptiontable: Vec<u8>,
    /// How much `co_stacksize` must grow.
    pub extra_stack: u32,
    pub inserted: Vec<Inserted>,
}

/// Value-stack slots the inserted call needs above whatever is there: NULL, hook, code, line.
pub const HOOK_CALL_STACK: u32 = 4;

#[derive(Clone, Copy, Debug)]
enum Source {
    /// Original instruction `k`.
    Orig(usize),
    /// Inserted, located on this line.
    Synth(i32),
}

#[derive(Clone, Copy, Debug)]
struct Item {
    op: u8,
    arg: u32,
    n_ext: u32,
    n_cache: u32,
    /// Item index this jump goes to.
    target: Option<usize>,
    source: Source,
}

fn ext_needed(arg: u32) -> u32 {
    match arg {
        0..=0xff => 0,
        0x100..=0xffff => 1,
        0x1_0000..=0xff_ffff => 2,
        _ => 3,
    }
}

/// Inserts `hook(code, line)` before each place where execution enters one of the requested
/// lines (see the module documentation for the rule), keeping everything else intact.
pub fn instrument(
    parts: CodeParts<'_>,
    ops: &OpcodeTable,
    consts: &HookConsts,
) -> Result<Rewritten, RewriteError> {
    let instrs = decode_instructions(parts.code, ops)?;
    let n_units = (parts.code.len() / 2) as u32;
    let units_pos = linetable::decode(parts.linetable, parts.firstlineno)?;
    if units_pos.len() != n_units as usize {
        return Err(RewriteError::LineTableLength {
            table_units: units_pos.len(),
            code_units: n_units as usize,
        });
    }
    let exceptions = exctable::decode(parts.exceptiontable)?;

    // Code unit -> instruction index, for jump targets and exception table offsets.
    let mut index_at = vec![usize::MAX; n_units as usize + 1];
    for (k, ins) in instrs.iter().enumerate() {
        index_at[ins.offset as usize] = k;
    }
    index_at[n_units as usize] = instrs.len();
    let instr_index = |unit: i64, what: &'static str| -> Result<usize, RewriteError> {
        usize::try_from(unit)
            .ok()
            .and_then(|u| index_at.get(u).copied())
            .filter(|&k| k != usize::MAX)
            .ok_or(RewriteError::Code {
                offset: u32::try_from(unit).unwrap_or(u32::MAX),
                reason: what,
            })
    };
    let line_of = |k: usize| -> Option<i32> {
        units_pos[instrs[k].offset as usize]
            .map(|p| p.line)
            .filter(|&l| l >= 0)
    };

    // Incoming edges.
    let mut jump_target = vec![None; instrs.len()];
    let mut jumps_into: Vec<Vec<usize>> = vec![Vec::new(); instrs.len()];
    for (j, ins) in instrs.iter().enumerate() {
        if let Some(t) = ins.target(ops) {
            let k = instr_index(t, "jump target is not the start of an instruction")?;
            if k >= instrs.len() {
                return Err(RewriteError::Code {
                    offset: ins.offset,
                    reason: "jump past the end of the code",
                });
            }
            jump_target[j] = Some(k);
            jumps_into[k].push(j);
        }
    }
    // Handler -> the lines of the instructions that unwind to it. The tracer compares the
    // handler's line with the line of the instruction that raised.
    let mut raised_from: Vec<Vec<Option<i32>>> = vec![Vec::new(); instrs.len()];
    for e in &exceptions {
        let k = instr_index(
            i64::from(e.target),
            "handler is not the start of an instruction",
        )?;
        let first = instr_index(
            i64::from(e.start),
            "exception range does not start at an instruction",
        )?;
        let last = instr_index(
            i64::from(e.end),
            "exception range does not end at an instruction",
        )?;
        if k < instrs.len() {
            for r in first..last {
                let l = line_of(r);
                if !raised_from[k].contains(&l) {
                    raised_from[k].push(l);
                }
            }
        }
    }

    // The prologue (RETURN_GENERATOR, MAKE_CELL, COPY_FREE_VARS, ... up to the first RESUME)
    // never gets a call before it.
    let body_start = instrs
        .iter()
        .position(|i| i.op == ops.resume)
        .map_or(0, |k| k + 1);

    let line_const = |line: i32| -> Option<u32> {
        consts
            .lines
            .iter()
            .find(|(l, _)| i64::from(*l) == i64::from(line))
            .map(|&(_, c)| c)
    };

    // Decide the blocks. blocks[k] = (line, const, skip_jump); def_block: line for after RESUME.
    let mut blocks: Vec<Option<(i32, u32, bool)>> = vec![None; instrs.len()];
    let mut jump_enters = vec![true; instrs.len()];
    for k in body_start..instrs.len() {
        let Some(line) = line_of(k) else { continue };
        let Some(c) = line_const(line) else { continue };
        if instrs[k].op == ops.resume {
            // Generators resume at the instruction after YIELD_VALUE, which must be RESUME.
            continue;
        }
        if k > 0 && instrs[k - 1].op == ops.kw_names {
            // KW_NAMES hands its tuple to the next PRECALL/CALL through interpreter state:
            // nothing may run in between.
            continue;
        }
        let mut enters = false;
        let mut fallthrough_skips = false;
        if k == body_start {
            enters = true;
        } else if !ops.no_fallthrough[usize::from(instrs[k - 1].op)] {
            if line_of(k - 1) != Some(line) {
                enters = true;
            } else {
                fallthrough_skips = true;
            }
        }
        for &j in &jumps_into[k] {
            // As in ceval's maybe_call_line_trace: the target is before the jump's opcode.
            let backward = instrs[k].offset < instrs[j].offset + instrs[j].n_ext;
            let e = line_of(j) != Some(line) || (backward && instrs[k].op != ops.send);
            jump_enters[j] = e;
            enters |= e;
        }
        enters |= raised_from[k]
            .iter()
            .any(|&l| l.is_some() && l != Some(line));
        if enters {
            blocks[k] = Some((line, c, fallthrough_skips));
        }
    }
    let def_block = if body_start > 0 && body_start < instrs.len() {
        (0..body_start)
            .filter_map(line_of)
            .find(|&l| line_of(body_start) != Some(l) && line_const(l).is_some())
            .and_then(|l| line_const(l).map(|c| (l, c)))
    } else {
        None
    };

    // Build the new instruction sequence.
    let mut items: Vec<Item> = Vec::with_capacity(instrs.len() + 16);
    let mut region_start = vec![0usize; instrs.len() + 1];
    let mut enter_item = vec![0usize; instrs.len() + 1];
    let mut orig_item = vec![0usize; instrs.len() + 1];
    let mut inserted_items: Vec<(usize, u32, bool)> = Vec::new();
    let synth = |op: u8, arg: u32, line: i32| Item {
        op,
        arg,
        n_ext: ext_needed(arg),
        n_cache: u32::from(ops.caches[usize::from(op)]),
        target: None,
        source: Source::Synth(line),
    };
    let push_call = |items: &mut Vec<Item>, line: i32, line_c: u32| {
        items.push(synth(ops.push_null, 0, line));
        items.push(synth(ops.load_const, consts.hook, line));
        items.push(synth(ops.load_const, consts.code, line));
        items.push(synth(ops.load_const, line_c, line));
        items.push(synth(ops.precall, 2, line));
        items.push(synth(ops.call, 2, line));
        items.push(synth(ops.pop_top, 0, line));
    };
    let mut skip_jumps: Vec<usize> = Vec::new();
    for (k, ins) in instrs.iter().enumerate() {
        region_start[k] = items.len();
        if k == body_start
            && let Some((l, c)) = def_block
        {
            inserted_items.push((items.len(), l as u32, false));
            push_call(&mut items, l, c);
        }
        enter_item[k] = items.len();
        if let Some((l, c, skip)) = blocks[k] {
            if skip {
                skip_jumps.push(items.len());
                items.push(synth(ops.jump_forward, 0, l));
            }
            enter_item[k] = items.len();
            inserted_items.push((items.len(), l as u32, skip));
            push_call(&mut items, l, c);
        }
        orig_item[k] = items.len();
        items.push(Item {
            op: ins.op,
            arg: ins.arg,
            n_ext: ins.n_ext,
            n_cache: ins.n_cache,
            target: None,
            source: Source::Orig(k),
        });
    }
    let end_item = items.len();
    region_start[instrs.len()] = end_item;
    enter_item[instrs.len()] = end_item;
    orig_item[instrs.len()] = end_item;
    for &s in &skip_jumps {
        // The original instruction right after the call it jumps over.
        items[s].target = Some(s + 8);
    }
    for (j, t) in jump_target.iter().enumerate() {
        if let Some(k) = *t {
            items[orig_item[j]].target = Some(if jump_enters[j] {
                enter_item[k]
            } else {
                orig_item[k]
            });
        }
    }

    // Lay out until every jump argument fits its prefixes (prefixes only ever grow).
    let mut offsets = vec![0u32; items.len() + 1];
    loop {
        let mut off = 0u32;
        for (i, it) in items.iter().enumerate() {
            offsets[i] = off;
            off += it.n_ext + 1 + it.n_cache;
        }
        offsets[items.len()] = off;
        let mut changed = false;
        for i in 0..items.len() {
            let Some(t) = items[i].target else { continue };
            let it = items[i];
            let after = i64::from(offsets[i] + it.n_ext + 1 + it.n_cache);
            let target = i64::from(offsets[t]);
            let arg = match ops.jump[usize::from(it.op)] {
                JumpKind::Forward => target - after,
                JumpKind::Backward => after - target,
                JumpKind::Absolute => target,
                JumpKind::None => {
                    return Err(RewriteError::Internal {
                        what: "jump target on a non-jump",
                    });
                }
            };
            let arg = u32::try_from(arg).map_err(|_| RewriteError::Code {
                offset: offsets[i],
                reason: "jump would change direction",
            })?;
            items[i].arg = arg;
            let need = ext_needed(arg);
            if need > it.n_ext {
                items[i].n_ext = need;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }

    // Emit code and per-unit positions.
    let total = offsets[items.len()] as usize;
    let mut code = Vec::with_capacity(total * 2);
    let mut positions: Vec<UnitPos> = Vec::with_capacity(total);
    let mut starts = vec![false; total + 1];
    for (i, it) in items.iter().enumerate() {
        starts[offsets[i] as usize] = true;
        for e in (1..=it.n_ext).rev() {
            code.push(ops.extended_arg);
            code.push(((it.arg >> (8 * e)) & 0xff) as u8);
        }
        code.push(it.op);
        code.push((it.arg & 0xff) as u8);
        for _ in 0..it.n_cache {
            code.extend_from_slice(&[0, 0]);
        }
        match it.source {
            Source::Synth(line) => {
                let size = (it.n_ext + 1 + it.n_cache) as usize;
                positions.extend(std::iter::repeat_n(Some(Pos::line_only(line)), size));
            }
            Source::Orig(k) => {
                let ins = instrs[k];
                let orig = &units_pos[ins.offset as usize..(ins.offset + ins.size()) as usize];
                let grown = (it.n_ext - ins.n_ext) as usize;
                positions.extend(std::iter::repeat_n(orig[0], grown));
                positions.extend_from_slice(orig);
            }
        }
    }
    let linetable = linetable::encode(&positions, |u| starts[u], parts.firstlineno)?;

    let map = |unit: u32, table: &[usize]| -> Result<u32, RewriteError> {
        let k = instr_index(
            i64::from(unit),
            "exception table offset is not the start of an instruction",
        )?;
        Ok(offsets[table[k]])
    };
    let mut new_exc = Vec::with_capacity(exceptions.len());
    for e in &exceptions {
        new_exc.push(ExceptionEntry {
            start: map(e.start, &region_start)?,
            end: map(e.end, &region_start)?,
            target: map(e.target, &enter_item)?,
            depth: e.depth,
            lasti: e.lasti,
        });
    }
    let exceptiontable = exctable::encode(&new_exc)?;

    let inserted: Vec<Inserted> = inserted_items
        .iter()
        .map(|&(i, line, skip_jump)| Inserted {
            line,
            offset: offsets[i],
            skip_jump,
        })
        .collect();
    Ok(Rewritten {
        code,
        linetable,
        exceptiontable,
        extra_stack: if inserted.is_empty() {
            0
        } else {
            HOOK_CALL_STACK
        },
        inserted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::py311::testdata::SAMPLES;
    use std::collections::HashMap;

    const HOOK: u32 = 300;

    fn consts_for(lines: &[u32]) -> HookConsts {
        HookConsts {
            hook: HOOK,
            code: HOOK + 1,
            lines: lines
                .iter()
                .enumerate()
                .map(|(i, &l)| (l, HOOK + 2 + i as u32))
                .collect(),
        }
    }

    fn parts(s: &crate::py311::testdata::Sample) -> CodeParts<'_> {
        CodeParts {
            code: s.code,
            linetable: s.linetable,
            exceptiontable: s.exceptiontable,
            firstlineno: s.firstlineno,
        }
    }

    /// The built-in table is what each 3.11 interpreter here says in its `opcode` module (the
    /// same derivation as `py311::read_opcode_module`).
    #[test]
    fn builtin_table_is_the_interpreters() {
        const DUMP: &str = r#"
import json, opcode
m = opcode.opmap
jump = {o: ("b" if "BACKWARD" in opcode.opname[o] else "f") for o in opcode.hasjrel}
jump.update({o: "a" for o in opcode.hasjabs})
nf = ["JUMP_FORWARD", "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT", "RETURN_VALUE",
      "RAISE_VARARGS", "RERAISE"]
named = ["EXTENDED_ARG", "RESUME", "PUSH_NULL", "LOAD_CONST", "PRECALL", "CALL", "POP_TOP",
         "JUMP_FORWARD", "SEND", "KW_NAMES", "MAKE_FUNCTION"]
print(json.dumps({"caches": list(opcode._inline_cache_entries), "jump": jump,
                  "nf": sorted(m[n] for n in nf), "named": [m[n] for n in named]}))
"#;
        let home = std::env::var("HOME").unwrap_or_default();
        let pythons = [
            format!("{home}/.pyenv/versions/3.11.7/bin/python3"),
            "/usr/bin/python3.11".to_string(),
        ];
        let ops = OpcodeTable::cpython_3_11();
        let mut checked = 0;
        for py in pythons.iter().filter(|p| std::path::Path::new(p).exists()) {
            let out = std::process::Command::new(py)
                .args(["-c", DUMP])
                .output()
                .expect("run python");
            assert!(out.status.success(), "{py}: {out:?}");
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            let caches: Vec<u8> = serde_json::from_value(v["caches"].clone()).expect("caches");
            let mut want = [0u8; 256];
            want[..caches.len()].copy_from_slice(&caches);
            assert_eq!(ops.caches, want, "{py}: inline caches");
            for op in 0..256usize {
                let kind = match v["jump"][op.to_string()].as_str() {
                    Some("f") => JumpKind::Forward,
                    Some("b") => JumpKind::Backward,
                    Some("a") => JumpKind::Absolute,
                    _ => JumpKind::None,
                };
                assert_eq!(ops.jump[op], kind, "{py}: jump kind of opcode {op}");
            }
            let nf: Vec<usize> = serde_json::from_value(v["nf"].clone()).expect("nf");
            let mine: Vec<usize> = (0..256).filter(|&o| ops.no_fallthrough[o]).collect();
            assert_eq!(mine, nf, "{py}: no-fallthrough opcodes");
            let named: Vec<u8> = serde_json::from_value(v["named"].clone()).expect("named");
            let mine = [
                ops.extended_arg,
                ops.resume,
                ops.push_null,
                ops.load_const,
                ops.precall,
                ops.call,
                ops.pop_top,
                ops.jump_forward,
                ops.send,
                ops.kw_names,
                ops.make_function,
            ];
            assert_eq!(mine.to_vec(), named, "{py}: named opcodes");
            checked += 1;
        }
        if checked == 0 {
            eprintln!(
                "skipping: no CPython 3.11 interpreter here (pyenv 3.11.7, /usr/bin/python3.11)"
            );
        }
    }

    #[test]
    fn decodes_real_code() {
        let ops = OpcodeTable::cpython_3_11();
        for s in SAMPLES {
            let instrs = decode_instructions(s.code, &ops).expect("decodes");
            let units: u32 = instrs.iter().map(Instr::size).sum();
            assert_eq!(units as usize * 2, s.code.len(), "{}", s.name);
            assert_eq!(instrs[0].offset, 0);
        }
        let big = SAMPLES
            .iter()
            .find(|s| s.name == "big")
            .expect("big sample");
        let instrs = decode_instructions(big.code, &ops).expect("decodes");
        assert!(
            instrs
                .iter()
                .any(|i| i.n_ext > 0 && ops.jump[usize::from(i.op)] != JumpKind::None),
            "the big sample must exercise jumps with EXTENDED_ARG"
        );
    }

    #[test]
    fn no_lines_is_identity() {
        let ops = OpcodeTable::cpython_3_11();
        for s in SAMPLES {
            let out = instrument(parts(s), &ops, &consts_for(&[])).expect("rewrites");
            assert_eq!(out.code, s.code, "{}", s.name);
            assert_eq!(out.linetable, s.linetable, "{}", s.name);
            assert_eq!(out.exceptiontable, s.exceptiontable, "{}", s.name);
            assert_eq!(out.extra_stack, 0);
            assert!(out.inserted.is_empty());
        }
    }

    /// Checks a rewrite against its original: removing the inserted instructions gives back the
    /// original instruction stream with the same positions; every jump and handler lands on the
    /// original target or on the call inserted just before it; exception ranges cover the same
    /// original instructions.
    fn check(s: &crate::py311::testdata::Sample, lines: &[u32]) -> Rewritten {
        let ops = OpcodeTable::cpython_3_11();
        let out = instrument(parts(s), &ops, &consts_for(lines)).expect("rewrites");
        let old = decode_instructions(s.code, &ops).expect("old");
        let new = decode_instructions(&out.code, &ops).expect("new");
        let old_pos = linetable::decode(s.linetable, s.firstlineno).expect("old positions");
        let new_pos = linetable::decode(&out.linetable, s.firstlineno).expect("new positions");
        assert_eq!(
            new_pos.len() * 2,
            out.code.len(),
            "{}: table length",
            s.name
        );

        // Classify new instructions: inserted (skip jump + 7-instruction call) or original.
        let mut synthetic = vec![false; new.len()];
        let starts: Vec<u32> = out.inserted.iter().map(|i| i.offset).collect();
        for (n, ins) in new.iter().enumerate() {
            if let Some(at) = out.inserted.iter().find(|i| i.offset == ins.offset) {
                let first = if at.skip_jump { n - 1 } else { n };
                synthetic[first..n + 7].fill(true);
                assert_eq!(new[n].op, ops.push_null);
                assert_eq!(new[n + 1].arg, HOOK);
                assert_eq!(new[n + 2].arg, HOOK + 1);
                assert_eq!(new[n + 4].op, ops.precall);
                assert_eq!(new[n + 5].op, ops.call);
                assert_eq!(new[n + 6].op, ops.pop_top);
                for ins in &new[first..n + 7] {
                    let p = new_pos[ins.offset as usize].expect("inserted code has a line");
                    assert_eq!(p.line as u32, at.line);
                }
                if at.skip_jump {
                    assert_eq!(new[n - 1].op, ops.jump_forward);
                    assert_eq!(new[n - 1].target(&ops), Some(i64::from(new[n + 7].offset)));
                }
            }
        }
        let kept: Vec<usize> = (0..new.len()).filter(|&n| !synthetic[n]).collect();
        assert_eq!(
            kept.len(),
            old.len(),
            "{}: original instructions kept",
            s.name
        );
        // new offset -> old instruction index, and "landing spots" for each old instruction.
        let mut old_of_new_offset = HashMap::new();
        for (k, &n) in kept.iter().enumerate() {
            old_of_new_offset.insert(new[n].offset, k);
        }
        let lands_on = |new_target: i64, old_k: usize| -> bool {
            let n = kept[old_k];
            if i64::from(new[n].offset) == new_target {
                return true;
            }
            // Or the PUSH_NULL of a call inserted right before it.
            starts.iter().any(|&st| {
                i64::from(st) == new_target
                    && new.iter().position(|i| i.offset == st) == Some(n - 7)
            })
        };
        for (k, &n) in kept.iter().enumerate() {
            let (o, m) = (old[k], new[n]);
            assert_eq!(o.op, m.op, "{}: op of instruction {k}", s.name);
            assert_eq!(
                old_pos[o.offset as usize],
                new_pos[m.offset as usize + (m.n_ext - o.n_ext) as usize],
                "{}: position of instruction {k}",
                s.name
            );
            for u in 0..o.size() {
                assert_eq!(
                    old_pos[(o.offset + u) as usize],
                    new_pos[(m.offset + (m.n_ext - o.n_ext) + u) as usize]
                );
            }
            match o.target(&ops) {
                None => assert_eq!(o.arg, m.arg, "{}: arg of instruction {k}", s.name),
                Some(t) => {
                    let tk = old
                        .iter()
                        .position(|i| i64::from(i.offset) == t)
                        .expect("old target");
                    let nt = m.target(&ops).expect("still a jump");
                    assert!(lands_on(nt, tk), "{}: jump {k} lands on {nt}", s.name);
                }
            }
        }
        let old_exc = exctable::decode(s.exceptiontable).expect("old table");
        let new_exc = exctable::decode(&out.exceptiontable).expect("new table");
        assert_eq!(old_exc.len(), new_exc.len());
        for (a, b) in old_exc.iter().zip(&new_exc) {
            assert_eq!((a.depth, a.lasti), (b.depth, b.lasti));
            let covered_old: Vec<usize> = (0..old.len())
                .filter(|&k| old[k].offset >= a.start && old[k].offset < a.end)
                .collect();
            let covered_new: Vec<usize> = (0..old.len())
                .filter(|&k| new[kept[k]].offset >= b.start && new[kept[k]].offset < b.end)
                .collect();
            assert_eq!(covered_old, covered_new, "{}: exception range", s.name);
            let tk = old
                .iter()
                .position(|i| i.offset == a.target)
                .expect("handler");
            assert!(lands_on(i64::from(b.target), tk));
            // An inserted call sits in the range of the instruction it precedes.
            for at in &out.inserted {
                let n = new
                    .iter()
                    .position(|i| i.offset == at.offset)
                    .expect("inserted");
                let inside = new[kept.iter().copied().find(|&m| m > n).expect("followed")].offset;
                let call_in = at.offset >= b.start && at.offset < b.end;
                let instr_in = inside >= b.start && inside < b.end;
                assert_eq!(
                    call_in, instr_in,
                    "{}: call at {} vs handler range",
                    s.name, at.offset
                );
            }
        }
        out
    }

    fn lines_of(s: &crate::py311::testdata::Sample) -> Vec<u32> {
        let mut v: Vec<u32> = s
            .positions
            .iter()
            .filter_map(|p| p.0)
            .map(|l| l as u32)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    #[test]
    fn every_line_of_real_code_keeps_jumps_tables_and_positions() {
        for s in SAMPLES {
            let lines = lines_of(s);
            for &l in &lines {
                let out = check(s, &[l]);
                assert!(!out.inserted.is_empty(), "{}: line {l} got no call", s.name);
                assert_eq!(out.extra_stack, HOOK_CALL_STACK);
            }
            let all = check(s, &lines);
            assert!(all.inserted.len() >= lines.len());
        }
    }

    #[test]
    fn def_line_goes_after_resume() {
        let s = SAMPLES.iter().find(|s| s.name == "gen").expect("gen");
        let ops = OpcodeTable::cpython_3_11();
        let out = check(s, &[s.firstlineno as u32]);
        let new = decode_instructions(&out.code, &ops).expect("new");
        let resume = new.iter().position(|i| i.op == ops.resume).expect("resume");
        assert_eq!(out.inserted.len(), 1);
        assert_eq!(out.inserted[0].offset, new[resume + 1].offset);
        assert_eq!(new[0].op, 75, "RETURN_GENERATOR still first");
    }

    #[test]
    fn loops_reenter_and_same_line_fallthrough_skips() {
        // `for` header: reached from GET_ITER (same line) and by the backward jump.
        let s = SAMPLES
            .iter()
            .find(|s| s.name == "structural")
            .expect("structural");
        let for_line = s.firstlineno as u32 + 3;
        let out = check(s, &[for_line]);
        assert_eq!(out.inserted.len(), 2, "{:?}", out.inserted);
        assert!(!out.inserted[0].skip_jump);
        assert!(out.inserted[1].skip_jump);
    }

    /// A hand-made function: `NOP`s on line 1, then a long forward jump whose argument grows past
    /// one byte once calls are inserted, then a backward jump over all of it.
    #[test]
    fn extended_arg_grows_to_a_fixed_point() {
        let ops = OpcodeTable::cpython_3_11();
        let nop = 9u8;
        let n_nops = 120u32;
        let mut code = vec![ops.resume, 0, ops.jump_forward, (n_nops * 2) as u8];
        let mut pos = vec![Some(Pos::line_only(1)), Some(Pos::line_only(2))];
        for i in 0..n_nops * 2 {
            code.extend_from_slice(&[nop, 0]);
            pos.push(Some(Pos::line_only(3 + i as i32)));
        }
        // Backward jump to the first NOP: after = 2 + 2*n + 2 units; target = 2.
        let back = 2 * n_nops + 2;
        code.extend_from_slice(&[
            ops.extended_arg,
            (back >> 8) as u8,
            140,
            (back & 0xff) as u8,
        ]);
        pos.push(Some(Pos::line_only(1000)));
        pos.push(Some(Pos::line_only(1000)));
        code.extend_from_slice(&[83, 0]);
        pos.push(Some(Pos::line_only(1000)));
        let starts: Vec<bool> = {
            let instrs = decode_instructions(&code, &ops).expect("decodes");
            let mut v = vec![false; pos.len()];
            for i in instrs {
                v[i.offset as usize] = true;
            }
            v
        };
        let linetable = linetable::encode(&pos, |u| starts[u], 1).expect("encodes");
        let lines: Vec<u32> = (3..3 + 2 * n_nops).step_by(2).collect();
        let out = instrument(
            CodeParts {
                code: &code,
                linetable: &linetable,
                exceptiontable: &[],
                firstlineno: 1,
            },
            &ops,
            &consts_for(&lines),
        )
        .expect("rewrites");
        let new = decode_instructions(&out.code, &ops).expect("new");
        let fwd = new[1];
        assert_eq!(fwd.op, ops.jump_forward);
        assert_eq!(fwd.n_ext, 1, "forward jump grew a prefix");
        let ret = new.last().expect("return");
        assert_eq!(ret.op, 83);
        assert_eq!(fwd.target(&ops), Some(i64::from(new[new.len() - 2].offset)));
        let backj = new[new.len() - 2];
        assert_eq!(backj.op, 140);
        // The first NOP (line 3) is requested and is the backward target: it lands on its call.
        assert_eq!(backj.target(&ops), Some(i64::from(out.inserted[0].offset)));
        assert_eq!(out.inserted.len(), lines.len());
        // Consts beyond 255 need prefixes on the inserted LOAD_CONSTs too.
        assert!(new.iter().any(|i| i.op == ops.load_const && i.n_ext == 1));
    }
}
