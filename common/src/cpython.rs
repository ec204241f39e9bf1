//! What libdebugger knows about each CPython version, in one table ([`VERSIONS`]) used by the
//! agent (`agent/src/python/`, `agent/src/inject/pep768.rs`) and by the helper inside the target
//! (`helper/src/ffi.rs`).
//!
//! From 3.13 on, the interpreter describes its own struct layouts in `_Py_DebugOffsets` (the
//! first bytes of `_PyRuntime`, cookie `"xdebugpy"`): every offset is read from there, so a patch
//! release that moves a field keeps working. What is still known per minor version is only
//! *where each group of that struct starts* ([`DebugOffsetsLayout`]: groups gain fields between
//! minor versions, never within one), facts `_Py_DebugOffsets` does not carry (the frame owner
//! values, `PyFrameObject.f_frame`), and which arming and injection method the agent uses.
//! 3.11 and 3.12 have no `_Py_DebugOffsets`: their rows carry the offsets themselves
//! ([`StaticLayout`]), each checked on the builds named in the row's `checked_on`.
//!
//! Adding a CPython version is adding a row: dump the new `_Py_DebugOffsets`
//! (`Include/internal/pycore_debug_offsets.h` says which groups precede each one), fill in the
//! group starts, and run the test suites on it. A version without a row is refused with a clear
//! error ([`row`] returns `None`) rather than read with a guessed layout.

/// `_Py_DebugOffsets` cookie.
pub const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";

/// How breakpoints are armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arming {
    /// Instrumented copies of the code objects swapped in (`helper/src/py311/`): 3.11 has no
    /// `sys.monitoring`.
    BytecodeSwap,
    /// `sys.monitoring` LINE events on exactly the affected code objects (PEP 669, 3.12+).
    SysMonitoring,
}

/// How the helper gets into a running process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injection {
    /// ptrace: one thread hijacked at a safe point (`agent/src/inject/`).
    Ptrace,
    /// PEP 768's remote exec (`sys.remote_exec` protocol) while some thread is running Python
    /// code; ptrace otherwise, and whenever the request is not served in time.
    RemoteExecThenPtrace,
}

/// Where each group of `_Py_DebugOffsets` starts, as an index of `u64` words after the 8-byte
/// cookie (word 0 is `version`, word 1 `free_threaded`). Within a group the fields read here keep
/// their positions in every version with a row (checked on each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugOffsetsLayout {
    /// `runtime_state` {size, finalizing, interpreters_head}.
    pub runtime_state: usize,
    /// `interpreter_state` {size, id, next, threads_head, threads_main (3.14+), ...}.
    pub interpreter_state: usize,
    /// Whether `interpreter_state` has `threads_main` (3.14+).
    pub has_threads_main: bool,
    /// `thread_state` {size, prev, next, interp, current_frame, ...}.
    pub thread_state: usize,
    /// `interpreter_frame` {size, previous, executable, instr_ptr, localsplus, owner, ...}.
    pub interpreter_frame: usize,
    /// `code_object` {size, filename, name, qualname, linetable, firstlineno, ...}.
    pub code_object: usize,
    /// `unicode_object` {size, state, length, asciiobject_size}.
    pub unicode_object: usize,
    /// `debugger_support` {eval_breaker, remote_debugger_support, remote_debugging_enabled,
    /// debugger_pending_call, debugger_script_path, debugger_script_path_size} (3.14+, PEP 768).
    pub debugger_support: Option<usize>,
    /// Words to read (every group above included).
    pub words: usize,
}

/// Offsets of a version without `_Py_DebugOffsets` (x86_64, default build).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticLayout {
    pub frame: FrameOffsets,
    pub code: CodeOffsets,
}

/// One CPython minor version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionRow {
    /// 3.`minor`.
    pub minor: u8,
    /// Where the struct offsets come from.
    pub offsets: OffsetsSource,
    /// Frame owners from this value up are not Python frames (3.12/3.13 `FRAME_OWNED_BY_CSTACK`
    /// = 3; 3.14 `FRAME_OWNED_BY_INTERPRETER` = 3 and `FRAME_OWNED_BY_CSTACK` = 4; 3.15 only
    /// `FRAME_OWNED_BY_INTERPRETER` = 3). `Include/internal/pycore_frame.h` (3.12, 3.13),
    /// `pycore_interpframe_structs.h` (3.14+).
    pub first_shim_owner: u8,
    /// `PyFrameObject.f_frame` (after `PyObject_HEAD` and `f_back`; the same since 3.11).
    pub frame_object_f_frame: u32,
    /// Low bits to clear from `_PyInterpreterFrame.f_executable` (3.14 made it a tagged
    /// `_PyStackRef`; 0 before).
    pub code_tag_mask: u32,
    pub arming: Arming,
    pub injection: Injection,
    /// Builds the row was checked on.
    pub checked_on: &'static str,
    /// Why the row is what it is.
    pub reason: &'static str,
}

/// Where a version's struct offsets come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetsSource {
    /// The row's own table (3.11, 3.12).
    Static(StaticLayout),
    /// The interpreter's `_Py_DebugOffsets`, read with this layout (3.13+).
    DebugOffsets(DebugOffsetsLayout),
}

/// The version knowledge, one row per supported minor version.
pub const VERSIONS: &[VersionRow] = &[
    VersionRow {
        minor: 11,
        offsets: OffsetsSource::Static(StaticLayout {
            // `f_code` is the 5th pointer (after f_func, f_globals, f_builtins, f_locals);
            // `previous` the 7th (after f_code, frame_obj); `owner` a char after prev_instr,
            // stacktop (int) and is_entry (bool).
            frame: FrameOffsets {
                size: 72,
                previous: 48,
                executable: 32,
                owner: 69,
            },
            code: CodeOffsets {
                filename: 112,
                name: 120,
                qualname: 128,
                firstlineno: 72,
                unicode_state: 32,
                unicode_length: 16,
                // `PyASCIIObject` still has `wstr` (48 bytes); `PyCompactUnicodeObject` adds
                // utf8_length, utf8, wstr_length.
                ascii_data: 48,
                compact_data: 72,
            },
        }),
        first_shim_owner: 3,
        frame_object_f_frame: 24,
        code_tag_mask: 0,
        arming: Arming::BytecodeSwap,
        injection: Injection::Ptrace,
        checked_on: "pyenv 3.11.7 (shared), Debian 12 3.11.2 (static)",
        reason: "no _Py_DebugOffsets and no sys.monitoring: a static table, bytecode swap",
    },
    VersionRow {
        minor: 12,
        offsets: OffsetsSource::Static(StaticLayout {
            // `f_code` moved to offset 0, `previous` to 8; `owner` after 7 pointers + the
            // instruction pointer, `int stacktop` and `uint16_t return_offset`.
            frame: FrameOffsets {
                size: 72,
                previous: 8,
                executable: 0,
                owner: 70,
            },
            code: CodeOffsets {
                filename: 112,
                name: 120,
                qualname: 128,
                firstlineno: 68,
                unicode_state: 32,
                unicode_length: 16,
                // `wstr` is gone: `PyASCIIObject` 40 bytes, compact 56.
                ascii_data: 40,
                compact_data: 56,
            },
        }),
        first_shim_owner: 3,
        frame_object_f_frame: 24,
        code_tag_mask: 0,
        arming: Arming::SysMonitoring,
        injection: Injection::Ptrace,
        checked_on: "pyenv 3.12.1 (shared)",
        reason: "sys.monitoring arrives; still no _Py_DebugOffsets: a static table",
    },
    VersionRow {
        minor: 13,
        offsets: OffsetsSource::DebugOffsets(DebugOffsetsLayout {
            runtime_state: 2,
            interpreter_state: 5,
            has_threads_main: false,
            thread_state: 18,
            interpreter_frame: 27,
            code_object: 33,
            unicode_object: 66,
            debugger_support: None,
            words: 72,
        }),
        first_shim_owner: 3,
        frame_object_f_frame: 24,
        code_tag_mask: 0,
        arming: Arming::SysMonitoring,
        injection: Injection::Ptrace,
        checked_on: "pyenv 3.13.0 (shared), Debian unstable 3.13.18 (static, PGO+LTO)",
        reason: "_Py_DebugOffsets arrives (13 interpreter_state fields); no remote exec yet",
    },
    VersionRow {
        minor: 14,
        offsets: OffsetsSource::DebugOffsets(DebugOffsetsLayout {
            runtime_state: 2,
            interpreter_state: 5,
            has_threads_main: true,
            thread_state: 21,
            interpreter_frame: 30,
            code_object: 38,
            unicode_object: 76,
            debugger_support: Some(88),
            words: 94,
        }),
        first_shim_owner: 3,
        frame_object_f_frame: 24,
        code_tag_mask: 3,
        arming: Arming::SysMonitoring,
        injection: Injection::RemoteExecThenPtrace,
        checked_on: "Debian unstable 3.14.10 (static, PGO+LTO)",
        reason: "16 interpreter_state fields (threads_main, code_object_generation, \
                 tlbc_generation), set_object, gen_object, llist_node and debugger_support \
                 (PEP 768) groups; f_executable is a tagged _PyStackRef",
    },
    VersionRow {
        minor: 15,
        offsets: OffsetsSource::DebugOffsets(DebugOffsetsLayout {
            runtime_state: 2,
            interpreter_state: 5,
            has_threads_main: true,
            thread_state: 21,
            interpreter_frame: 38,
            code_object: 46,
            unicode_object: 88,
            debugger_support: Some(104),
            words: 110,
        }),
        first_shim_owner: 3,
        frame_object_f_frame: 24,
        code_tag_mask: 3,
        arming: Arming::SysMonitoring,
        injection: Injection::RemoteExecThenPtrace,
        checked_on: "Debian unstable 3.15.2 (static, PGO+LTO)",
        reason: "thread_state grew to 17 fields (base_frame, last_profiled_frame, GIL and \
                 exception state), type_object to 8, gc to 6: every later group moved",
    },
];

/// The row of CPython 3.`minor`, if this build of libdebugger knows it.
pub fn row(major: u8, minor: u8) -> Option<&'static VersionRow> {
    if major != 3 {
        return None;
    }
    VERSIONS.iter().find(|r| r.minor == minor)
}

/// The newest minor version with a row.
pub fn newest_minor() -> u8 {
    VERSIONS.iter().map(|r| r.minor).max().unwrap_or(0)
}

/// `_PyInterpreterFrame` offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameOffsets {
    pub size: u32,
    pub previous: u32,
    /// `f_code` (3.11, 3.12) / `f_executable` (3.13+).
    pub executable: u32,
    pub owner: u32,
}

/// Offsets inside a `PyCodeObject` and the `str` objects it points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeOffsets {
    /// `co_filename` (a `str`).
    pub filename: u32,
    /// `co_name` (a `str`).
    pub name: u32,
    /// `co_qualname` (a `str`).
    pub qualname: u32,
    /// `co_firstlineno` (a C `int`).
    pub firstlineno: u32,
    /// `PyASCIIObject.state` (a bitfield: kind at bits 2..5, compact bit 5, ascii bit 6).
    pub unicode_state: u32,
    /// `PyASCIIObject.length`.
    pub unicode_length: u32,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub ascii_data: u32,
    /// `sizeof(PyCompactUnicodeObject)`: where a compact non-ASCII string's characters start.
    pub compact_data: u32,
}

/// PEP 768's fields (`debugger_support`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteDebugOffsets {
    /// `PyThreadState.eval_breaker`.
    pub eval_breaker: u64,
    /// `PyThreadState.remote_debugger_support`.
    pub remote_debugger_support: u64,
    /// `PyInterpreterState.config.remote_debug` (an `int`: 0 when disabled).
    pub remote_debugging_enabled: u64,
    /// `_PyRemoteDebuggerSupport.debugger_pending_call` (an `int32_t`).
    pub debugger_pending_call: u64,
    /// `_PyRemoteDebuggerSupport.debugger_script_path` (a `char[]`).
    pub debugger_script_path: u64,
    /// Its size (`Py_MAX_SCRIPT_PATH_SIZE`).
    pub debugger_script_path_size: u64,
}

/// What `_Py_DebugOffsets` says, read with a row's [`DebugOffsetsLayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugOffsets {
    /// `PY_VERSION_HEX`.
    pub version_hex: u64,
    pub free_threaded: bool,
    /// `_PyRuntimeState.interpreters.head`.
    pub interpreters_head: u64,
    /// `PyInterpreterState.threads.head`.
    pub threads_head: u64,
    /// `PyInterpreterState.threads.main` (3.14+).
    pub threads_main: Option<u64>,
    /// `PyThreadState.next`.
    pub thread_next: u64,
    /// `PyThreadState.current_frame`.
    pub thread_current_frame: u64,
    pub frame: FrameOffsets,
    pub code: CodeOffsets,
    pub remote_debug: Option<RemoteDebugOffsets>,
}

/// Why `_Py_DebugOffsets` could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugOffsetsError {
    /// Fewer bytes than the layout needs, or no cookie (CPython before 3.13).
    NotThere,
    /// A value failed its sanity check: the layout is not the one the row describes.
    Implausible {
        /// The group whose values did not fit.
        group: &'static str,
    },
}

/// `PY_VERSION_HEX` and `free_threaded` from the start of `_Py_DebugOffsets` (cookie included),
/// whatever the minor version; `None` without the cookie.
pub fn debug_offsets_header(bytes: &[u8]) -> Option<(u64, bool)> {
    if bytes.len() < 24 || &bytes[..8] != DEBUG_COOKIE {
        return None;
    }
    Some((word(bytes, 0), word(bytes, 1) != 0))
}

/// Word `i` (after the cookie) of `_Py_DebugOffsets`; 0 past the end.
fn word(bytes: &[u8], i: usize) -> u64 {
    let at = 8 + i * 8;
    match bytes.get(at..at + 8) {
        Some(b) => {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_le_bytes(w)
        }
        None => 0,
    }
}

/// Bytes of `_Py_DebugOffsets` to read for `layout`, cookie included.
pub fn debug_offsets_len(layout: &DebugOffsetsLayout) -> usize {
    8 + layout.words * 8
}

/// Parses `_Py_DebugOffsets` (`bytes` from its cookie on) with `layout`, checking that every
/// group is where the layout says: `PyThreadState` starts `prev, next, interp` (offsets 0, 8,
/// 16) in every version, sizes are in range, offsets fall inside their struct.
pub fn parse_debug_offsets(
    bytes: &[u8],
    layout: &DebugOffsetsLayout,
) -> Result<DebugOffsets, DebugOffsetsError> {
    if bytes.len() < debug_offsets_len(layout) || &bytes[..8] != DEBUG_COOKIE {
        return Err(DebugOffsetsError::NotThere);
    }
    let w = |i: usize| word(bytes, i);
    let bad = |group| DebugOffsetsError::Implausible { group };
    let inside = |v: u64, size: u64, group| {
        if v < size {
            u32::try_from(v).map_err(|_| bad(group))
        } else {
            Err(bad(group))
        }
    };

    let rs = layout.runtime_state;
    let (runtime_size, interpreters_head) = (w(rs), w(rs + 2));
    if interpreters_head == 0 || interpreters_head >= runtime_size {
        return Err(bad("runtime_state"));
    }
    let is = layout.interpreter_state;
    let interp_size = w(is);
    let threads_head = w(is + 3);
    let threads_main = layout.has_threads_main.then(|| w(is + 4));
    if threads_head == 0
        || threads_head >= interp_size
        || threads_main.is_some_and(|m| m == 0 || m >= interp_size)
    {
        return Err(bad("interpreter_state"));
    }
    let ts = layout.thread_state;
    let tstate_size = w(ts);
    if !(64..1 << 16).contains(&tstate_size) || [w(ts + 1), w(ts + 2), w(ts + 3)] != [0, 8, 16] {
        return Err(bad("thread_state"));
    }
    let thread_current_frame = w(ts + 4);
    if thread_current_frame == 0 || thread_current_frame >= tstate_size {
        return Err(bad("thread_state"));
    }
    let fr = layout.interpreter_frame;
    let frame_size = w(fr);
    if !(40..=256).contains(&frame_size) {
        return Err(bad("interpreter_frame"));
    }
    let frame = FrameOffsets {
        size: frame_size as u32,
        previous: inside(w(fr + 1), frame_size, "interpreter_frame")?,
        executable: inside(w(fr + 2), frame_size, "interpreter_frame")?,
        owner: inside(w(fr + 5), frame_size, "interpreter_frame")?,
    };
    let co = layout.code_object;
    let code_size = w(co);
    if !(64..1024).contains(&code_size) {
        return Err(bad("code_object"));
    }
    let un = layout.unicode_object;
    let (unicode_size, ascii_size) = (w(un), w(un + 3));
    if !(16..128).contains(&ascii_size) || unicode_size <= ascii_size {
        return Err(bad("unicode_object"));
    }
    let ascii_data = ascii_size as u32;
    let code = CodeOffsets {
        filename: inside(w(co + 1), code_size, "code_object")?,
        name: inside(w(co + 2), code_size, "code_object")?,
        qualname: inside(w(co + 3), code_size, "code_object")?,
        firstlineno: inside(w(co + 5), code_size, "code_object")?,
        unicode_state: inside(w(un + 1), ascii_size, "unicode_object")?,
        unicode_length: inside(w(un + 2), ascii_size, "unicode_object")?,
        ascii_data,
        // PyCompactUnicodeObject = PyASCIIObject + Py_ssize_t utf8_length + char *utf8.
        compact_data: ascii_data + 16,
    };
    let remote_debug = match layout.debugger_support {
        None => None,
        Some(ds) => {
            let r = RemoteDebugOffsets {
                eval_breaker: w(ds),
                remote_debugger_support: w(ds + 1),
                remote_debugging_enabled: w(ds + 2),
                debugger_pending_call: w(ds + 3),
                debugger_script_path: w(ds + 4),
                debugger_script_path_size: w(ds + 5),
            };
            if r.eval_breaker >= tstate_size
                || r.remote_debugger_support >= tstate_size
                || r.remote_debugging_enabled == 0
                || r.remote_debugging_enabled >= interp_size
                || r.debugger_pending_call != 0
                || r.debugger_script_path != 4
                || !(64..=4096).contains(&r.debugger_script_path_size)
            {
                return Err(bad("debugger_support"));
            }
            Some(r)
        }
    };
    Ok(DebugOffsets {
        version_hex: w(0),
        free_threaded: w(1) != 0,
        interpreters_head,
        threads_head,
        threads_main,
        thread_next: w(ts + 2),
        thread_current_frame,
        frame,
        code,
        remote_debug,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first words of `_Py_DebugOffsets` as dumped from `.PyRuntime` of Debian unstable's
    /// builds (3.13.18, 3.14.10, 3.15.2): real tables, so every row's layout is checked against
    /// the interpreter it describes (the end-to-end tests check the same on live processes).
    const SID_313: &[u64] = &[
        0x030d12f0, 0, 283408, 608, 632, 194984, 7272, 7264, 7344, 7400, 7656, 7640, 7648, 16,
        7752, 0, 7768, 7760, 312, 0, 8, 16, 72, 152, 160, 232, 32, 80, 8, 0, 56, 72, 70, 208, 112,
        120, 128, 136, 68, 52, 96, 104, 200, 16, 8, 416, 24, 88, 168, 32, 24, 16, 40, 24, 16, 48,
        32, 40, 24, 16, 32, 16, 24, 40, 16, 32, 64, 32, 16, 40, 240, 200,
    ];
    const SID_314: &[u64] = &[
        0x030e0af0, 0, 316616, 784, 808, 225864, 7280, 7272, 7344, 7360, 7408, 7688, 7672, 7680,
        16, 7784, 0, 7800, 7792, 7992, 0, 832, 0, 8, 16, 72, 152, 160, 232, 32, 88, 8, 0, 56, 80,
        74, 64, 0, 216, 112, 120, 128, 136, 68, 52, 96, 104, 208, 0, 16, 8, 416, 24, 88, 168, 40,
        32, 16, 40, 24, 16, 200, 24, 40, 32, 48, 32, 40, 24, 16, 32, 16, 24, 40, 16, 32, 64, 32,
        16, 40, 264, 192, 160, 24, 72, 67, 0, 8, 24, 304, 8076, 0, 4, 512,
    ];
    const SID_315: &[u64] = &[
        0x030f02f0, 0, 346568, 912, 936, 226240, 7272, 7264, 7336, 7352, 7400, 7592, 7576, 7584,
        16, 7736, 0, 7752, 7744, 7944, 0, 888, 0, 8, 16, 72, 80, 88, 96, 176, 184, 256, 32, 36, 40,
        136, 288, 0, 88, 8, 0, 56, 80, 74, 64, 0, 216, 112, 120, 128, 136, 68, 52, 96, 104, 208, 0,
        16, 8, 424, 24, 88, 168, 32, 288, 944, 888, 40, 32, 16, 40, 24, 16, 200, 24, 40, 32, 48,
        32, 40, 24, 16, 32, 16, 24, 40, 16, 32, 64, 32, 16, 40, 56, 176, 112, 120, 1120, 104, 160,
        24, 72, 67, 0, 8, 24, 344, 8028, 0, 4, 512,
    ];

    fn bytes(words: &[u64]) -> [u8; 8 + 8 * 128] {
        let mut b = [0u8; 8 + 8 * 128];
        b[..8].copy_from_slice(DEBUG_COOKIE);
        for (i, w) in words.iter().enumerate() {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    fn parse(minor: u8, words: &[u64]) -> Result<DebugOffsets, DebugOffsetsError> {
        let Some(VersionRow {
            offsets: OffsetsSource::DebugOffsets(layout),
            ..
        }) = row(3, minor)
        else {
            panic!("3.{minor} reads _Py_DebugOffsets");
        };
        assert_eq!(layout.words, words.len(), "3.{minor}: words");
        parse_debug_offsets(&bytes(words)[..debug_offsets_len(layout)], layout)
    }

    #[test]
    fn every_row_reads_its_own_interpreter() {
        let d = parse(13, SID_313).expect("3.13");
        assert_eq!(
            (d.frame.executable, d.frame.previous, d.frame.owner),
            (0, 8, 70)
        );
        assert_eq!((d.code.filename, d.code.firstlineno), (112, 68));
        assert_eq!((d.threads_main, d.remote_debug), (None, None));
        let d = parse(14, SID_314).expect("3.14");
        assert_eq!(
            (d.frame.executable, d.frame.previous, d.frame.owner),
            (0, 8, 74)
        );
        assert_eq!((d.thread_current_frame, d.threads_main), (72, Some(7360)));
        let r = d.remote_debug.expect("3.14 has PEP 768");
        assert_eq!((r.eval_breaker, r.remote_debugger_support), (24, 304));
        assert_eq!(r.remote_debugging_enabled, 8076);
        let d = parse(15, SID_315).expect("3.15");
        assert_eq!(
            (d.frame.size, d.frame.owner, d.code.qualname),
            (88, 74, 128)
        );
        assert_eq!(
            d.remote_debug
                .map(|r| (r.remote_debugger_support, r.remote_debugging_enabled)),
            Some((344, 8028))
        );
        assert_eq!((d.code.ascii_data, d.code.unicode_state), (40, 32));
    }

    #[test]
    fn a_row_refuses_another_versions_table() {
        // 3.15's table read as 3.14's (the groups moved): refused, not misread.
        assert!(matches!(
            parse(14, &SID_315[..94]),
            Err(DebugOffsetsError::Implausible { .. })
        ));
        assert!(matches!(
            parse(15, &[SID_314, &[0; 16]].concat()),
            Err(DebugOffsetsError::Implausible { .. })
        ));
        assert_eq!(
            debug_offsets_header(&bytes(SID_314)),
            Some((0x030e0af0, false))
        );
        assert_eq!(debug_offsets_header(&[0; 64]), None);
        // A free-threaded build says so in word 1 (the agent refuses it before any layout).
        let mut ft = SID_314.to_vec();
        ft[1] = 1;
        assert_eq!(debug_offsets_header(&bytes(&ft)), Some((0x030e0af0, true)));
        assert_eq!(
            parse(14, &ft).map(|d| d.free_threaded),
            Ok(true),
            "the flag is reported, not hidden"
        );
    }

    #[test]
    fn rows_are_unique_and_cover_311_to_the_newest() {
        for minor in 11..=newest_minor() {
            assert_eq!(
                VERSIONS.iter().filter(|r| r.minor == minor).count(),
                1,
                "3.{minor}"
            );
        }
        assert!(row(3, 10).is_none() && row(2, 7).is_none());
        assert_eq!(row(3, 11).map(|r| r.arming), Some(Arming::BytecodeSwap));
    }
}
